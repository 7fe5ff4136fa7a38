//! Firmware and boot code from a real master device's `box_info.xml`, with its cache.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::*;

const DEV: &str = "type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5";

/// A master device answering `box_info.xml`; counts its requests.
async fn master(version: &'static str) -> (u16, Arc<AtomicUsize>, tokio::task::JoinHandle<()>) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = l.local_addr().unwrap().port();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    let task = tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            h.fetch_add(1, Ordering::SeqCst);
            let mut buf = [0u8; 2048];
            let _ = s.read(&mut buf).await;
            let body = format!(
                "<?xml version=\"1.0\"?><info><sys version=\"{version}\" temp=\"40\"/></info>"
            );
            let resp = format!(
                "HTTP/1.1 200 OK\r\nContent-Type: text/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                body.len()
            );
            let _ = s.write_all(resp.as_bytes()).await;
        }
    });
    (port, hits, task)
}

#[tokio::test]
async fn builds_come_from_the_master_and_are_cached() {
    let (port, hits, task) =
        master("IP6010[13r2 sr5 [13.7640]], Bootcode[137641], Hardware[108]").await;
    let toml = format!(
        "[master]\ninfo = \"http://127.0.0.1:{port}/CMD0/box_info.xml\"\nexpire = 3600\n\n[times]\ngrace = 0\n"
    );
    let app = TestApp::spawn(&toml, |_| {}).await;
    let (_, r) = app.get(&format!("/update.php?{DEV}")).await;
    assert!(r.contains("retrieving info online"), "{r}");
    assert!(
        r.contains(&format!(
            "mod cmd UP0 prot http://{}/fw/137640/ ser 137640\r\n",
            app.addr
        )),
        "{r}"
    );
    assert!(
        r.contains(&format!(
            "mod cmd UP0 boot http://{}/fw/137641/ ser 137641\r\n",
            app.addr
        )),
        "{r}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    assert!(
        app.site().join("cache/master-info.xml").is_file(),
        "answer cached"
    );

    // Within `expire` the cache answers; the master is not asked again.
    let (_, r) = app
        .get(&format!("/update.php?{DEV}&PROT=137640&BOOT=137641"))
        .await;
    assert!(r.contains("# firmware build info cache is current"), "{r}");
    assert!(
        r.contains("# firmware 137640 good") && r.contains("# boot code 137641 good"),
        "{r}"
    );
    assert_eq!(hits.load(Ordering::SeqCst), 1);
    task.abort();
}
