//! TFTP serves exactly what HTTP serves: a real client (curl's tftp://) downloads files that are
//! byte-identical to the HTTP responses, with and without the blksize/tsize options.

use std::process::Stdio;

use crate::helpers::TestApp;
use crate::zt_support::{have_tool, start_side};

async fn curl_tftp(args: &[&str]) -> (bool, Vec<u8>) {
    let out = tokio::process::Command::new("curl")
        .args(["-s", "--max-time", "20"])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .await
        .expect("curl runs");
    (out.status.success(), out.stdout)
}

#[tokio::test]
async fn tftp_serves_what_http_serves() {
    if !have_tool("curl", "tftp_serves_what_http_serves") {
        return;
    }
    // 200 KB of non-repeating bytes, not a multiple of any block size used below.
    let firmware: Vec<u8> = (0..200_001u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let app = TestApp::spawn(
        "[tftp]\nenabled = true\nlisten = \"127.0.0.1:0\"\n",
        |dir| {
            std::fs::create_dir_all(dir.join("fw/137640")).unwrap();
            std::fs::write(dir.join("fw/137640/ip232.bin"), &firmware).unwrap();
            std::fs::write(dir.join("fw/137640/exact.bin"), vec![7u8; 1024]).unwrap();
        },
    )
    .await;
    let side = start_side(&app).await;
    let tftp = side.tftp.expect("TFTP runs");
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    for name in [
        "fw/137640/ip232.bin",
        "fw/137640/exact.bin",
        "y000000000000.boot",
        "yealink/y000000000000.boot",
        "update.php",
    ] {
        let http = client
            .get(app.url(&format!("/{name}")))
            .send()
            .await
            .unwrap();
        assert_eq!(http.status(), 200, "HTTP GET /{name}");
        let http = http.bytes().await.unwrap();
        let url = format!("tftp://{tftp}/{name}");
        for opts in [
            vec!["--tftp-no-options"],
            vec!["--tftp-blksize", "1428"],
            vec!["--tftp-blksize", "512"],
        ] {
            let mut args = opts.clone();
            args.push(&url);
            let (ok, body) = curl_tftp(&args).await;
            assert!(ok, "curl {args:?} failed");
            assert_eq!(body.len(), http.len(), "{name} with {opts:?}: length");
            assert!(
                body == http,
                "{name} with {opts:?}: TFTP and HTTP bytes differ"
            );
        }
    }
    assert_eq!(
        client
            .get(app.url("/fw/137640/ip232.bin"))
            .send()
            .await
            .unwrap()
            .bytes()
            .await
            .unwrap(),
        firmware
    );
    // What HTTP does not have, TFTP does not have either; writes are refused.
    let (ok, _) = curl_tftp(&[&format!("tftp://{tftp}/fw/137640/missing.bin")]).await;
    assert!(!ok, "a missing file must fail");
    let upload = app.site().join("fw/137640/exact.bin");
    let (ok, _) = curl_tftp(&[
        "-T",
        upload.to_str().unwrap(),
        &format!("tftp://{tftp}/new.bin"),
    ])
    .await;
    assert!(!ok, "TFTP is read-only");
    assert!(!app.site().join("new.bin").exists());
    side.stop().await;
}
