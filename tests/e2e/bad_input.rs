//! Bad input gets a clear message, in the response and the log, and loses nothing.

use std::time::{Duration, Instant};

use crate::helpers::*;

const DEV: &str = "type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5";

#[tokio::test]
async fn unknown_phase_and_environment() {
    let app = TestApp::spawn(SCENARIO_A, scenario_a_scripts).await;
    let (s, r) = app.get(&format!("/update.php?{DEV}&phase=bogus")).await;
    assert_eq!(s, 200);
    assert!(r.ends_with("# invalid phase: 'bogus'\r\n"), "{r}");
    assert!(
        !r.contains("config add UP1 /url"),
        "no rewrite on a bad phase: {r}"
    );
    let st = app
        .store
        .load("00-90-33-30-00-af")
        .await
        .unwrap()
        .expect("kept with the message");
    assert!(st.msgs.iter().any(|m| &*m.msg == "invalid phase: 'bogus'"));

    let (_, r) = app.get(&format!("/update.php?{DEV}&env=hq,mars")).await;
    assert!(
        r.ends_with("# invalid environment: 'mars' (hq,mars)\r\n"),
        "{r}"
    );
}

#[tokio::test]
async fn malformed_serial_is_refused_and_not_stored() {
    let app = TestApp::spawn(SCENARIO_A, scenario_a_scripts).await;
    for sn in ["..%2F..%2Fetc", "a%20b", "x%2Fy"] {
        let (s, r) = app
            .get(&format!(
                "/update.php?type=IP232&sn={sn}&hwid=IP232-1&ip=10.0.0.5"
            ))
            .await;
        assert_eq!(s, 200);
        assert!(r.contains("# invalid sn '"), "{r}");
        assert!(r.trim_end().ends_with("- exit"), "{r}");
    }
    assert!(app.store.list().await.unwrap().is_empty());
    let (_, r) = app
        .get("/update.php?type=..%2Fx&sn=00-90-33-30-00-af&hwid=h&ip=1")
        .await;
    assert!(r.contains("# invalid type '../x'"), "{r}");
}

#[tokio::test]
async fn missing_scripts_folder_still_answers() {
    let app = TestApp::spawn(SCENARIO_A, |site| {
        std::fs::remove_dir_all(site.join("scripts")).unwrap();
    })
    .await;
    let (s, r) = app.get(&format!("/update.php?{DEV}")).await;
    assert_eq!(s, 200);
    assert!(
        r.contains("# existing files (from scripts):\r\n\r\n"),
        "{r}"
    );
    assert!(r.contains("# end of all scripts"), "{r}");
}

#[tokio::test]
async fn unreadable_snippet_is_reported() {
    let app = TestApp::spawn(SCENARIO_A, |site| {
        scenario_a_scripts(site);
        // A directory where a snippet file is expected cannot be read (even by root).
        std::fs::create_dir_all(site.join("scripts/staging-phone-default.txt")).unwrap();
    })
    .await;
    let (s, r) = app.get(&format!("/update.php?{DEV}")).await;
    assert_eq!(s, 200);
    assert!(
        r.contains("# cannot read script 'scripts/staging-phone-default.txt'"),
        "{r}"
    );
    // The readable snippet is still delivered.
    assert!(
        r.contains("# begin script 'scripts/staging-all-default.txt'"),
        "{r}"
    );
}

#[tokio::test]
async fn oversized_upload_is_413_and_writes_nothing() {
    let toml = format!("{SCENARIO_A}\n[server]\nmax_upload_bytes = 1024\n");
    let app = TestApp::spawn(&toml, |_| {}).await;
    let big = "config change CMD0 /name x\r\n".repeat(200);
    let (s, r) = app
        .put(
            "/update.php?mode=backup&hwid=IP232-30-00-af&sn=00-90-33-30-00-af",
            big,
        )
        .await;
    assert_eq!(s, 413, "{r}");
    assert!(
        !app.site().join("backup/IP232-30-00-af").exists()
            || std::fs::read_dir(app.site().join("backup/IP232-30-00-af"))
                .unwrap()
                .next()
                .is_none()
    );
}

#[tokio::test]
async fn upload_targets_cannot_leave_the_certificate_folder() {
    let toml = format!("{SCENARIO_A}\n[customcerts]\ndir = \"certs\"\n");
    let app = TestApp::spawn(&toml, |site| {
        std::fs::create_dir_all(site.join("certs")).unwrap()
    })
    .await;
    let body = "X509/REQUEST pb 3082\r\n";
    for file in [
        "..%2Fescape.der",
        "%2Ftmp%2Fescape.der",
        "certs%2F..%2F..%2Fescape.der",
        "certs%2Fx.php",
    ] {
        let (s, r) = app
            .put(&format!("/update.php?mode=vardump&sn=00-90-33-30-00-af&var=X509/REQUEST&file={file}&proc=var2bin"), body)
            .await;
        assert_ne!(s, 200, "{file}: {r}");
        assert!(r.contains("- exit"), "{r}");
    }
    assert!(!app.site().join("escape.der").exists());
    assert!(!app.site().parent().unwrap().join("escape.der").exists());
    assert!(!std::path::Path::new("/tmp/escape.der").exists());
    // Inside the folder it works.
    let (s, r) = app
        .put("/update.php?mode=vardump&sn=00-90-33-30-00-af&var=X509/REQUEST&file=certs%2F00-90-33-30-00-af-request.p10.der&proc=var2bin", body)
        .await;
    assert_eq!(s, 200, "{r}");
    assert_eq!(
        std::fs::read(app.site().join("certs/00-90-33-30-00-af-request.p10.der")).unwrap(),
        vec![0x30, 0x82]
    );
}

#[tokio::test]
async fn master_that_times_out_gives_a_clear_message() {
    // A master that accepts connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = silent.local_addr().unwrap().port();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((s, _)) = silent.accept().await {
            held.push(s);
        }
    });
    let toml = format!(
        "[master]\ninfo = \"http://127.0.0.1:{port}/CMD0/box_info.xml\"\ntimeout = 1\n\n[status]\nenabled = true\n\n[times]\ngrace = 0\n"
    );
    let app = TestApp::spawn(&toml, |_| {}).await;
    let t0 = Instant::now();
    let (s, r) = app.get(&format!("/update.php?{DEV}")).await;
    assert!(
        t0.elapsed() < Duration::from_secs(5),
        "bounded by the timeout"
    );
    assert_eq!(s, 200);
    assert!(r.contains("# cannot get PBX info: "), "{r}");
    assert!(r.trim_end().ends_with("- exit"), "{r}");
    assert!(!r.contains("mod cmd UP0 prot"), "{r}");

    // With a cached answer the stale cache is used instead.
    std::fs::create_dir_all(app.site().join("cache")).unwrap();
    std::fs::write(
        app.site().join("cache/master-info.xml"),
        r#"<info><sys version="IP6010[13r2 [137640]], Bootcode[137641], Hardware[108]"/></info>"#,
    )
    .unwrap();
    let f = std::fs::File::options()
        .write(true)
        .open(app.site().join("cache/master-info.xml"))
        .unwrap();
    f.set_modified(std::time::SystemTime::now() - Duration::from_secs(7200))
        .unwrap();
    let (_, r) = app.get(&format!("/update.php?{DEV}")).await;
    assert!(r.contains("mod cmd UP0 prot "), "{r}");
    assert!(r.contains(" ser 137640\r\n"), "{r}");
    assert!(r.contains("mod cmd UP0 boot "), "{r}");
    assert!(r.contains(" ser 137641\r\n"), "{r}");
}
