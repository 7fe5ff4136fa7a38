//! Per-device HTTP credentials (issue 5): a phone whose settings name `http_user` and
//! `http_password` gets its files only with those credentials, by Digest or Basic — checked with
//! curl's own implementations of both.

use crate::helpers::*;

const YEALINK_T46S: &str = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc";

const SITE: &str = r#"
[settings]
sip_server = "pbx.example.com"

[devices."001565aabbcc".settings]
http_user = "phone"
http_password = "s3cret"
lines.1 = { user = "201", password = "pw201" }
"#;

/// `curl` with extra arguments; returns (status, body).
async fn curl(url: &str, extra: &[&str]) -> (u16, String) {
    let out = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-S",
            "--noproxy",
            "*",
            "-A",
            YEALINK_T46S,
            "-w",
            "\n%{http_code}",
        ])
        .args(extra)
        .arg(url)
        .output()
        .await
        .expect("curl runs");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or((&text, "0"));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

#[tokio::test]
async fn device_files_need_the_devices_credentials() {
    let app = TestApp::spawn(SITE, |_| {}).await;
    let url = app.url("/001565aabbcc.cfg");

    let (status, body) = curl(&url, &[]).await;
    assert_eq!(status, 401, "{body}");
    assert!(body.contains("credentials required"), "{body}");
    let (status, _) = curl(&url, &["--digest", "-u", "phone:wrong"]).await;
    assert_eq!(status, 401);
    let (status, _) = curl(&url, &["--basic", "-u", "phone:wrong"]).await;
    assert_eq!(status, 401);

    let (status, digest) = curl(&url, &["--digest", "-u", "phone:s3cret"]).await;
    assert_eq!(status, 200, "{digest}");
    assert!(digest.contains("201"), "{digest}");
    let (status, basic) = curl(&url, &["--basic", "-u", "phone:s3cret"]).await;
    assert_eq!(status, 200);
    assert_eq!(basic, digest, "same file either way");

    // Files of other devices, without credentials configured, stay open.
    let (status, _) = curl(
        &app.url("/001565f429a4.cfg"),
        &["-A", "Yealink SIP-T56A 58.80.0.25 001565f429a4"],
    )
    .await;
    assert_eq!(status, 200);
}
