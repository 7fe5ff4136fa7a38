//! End-to-end tests of the upload endpoints, firmware and health routes: the real server on
//! 127.0.0.1:0 with a temporary site and a real SQLite store.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use autoprov_core::Site;
use autoprov_server::{bind, AppState};
use autoprov_store::Store;

const SN: &str = "00-90-33-30-00-af";
const HWID: &str = "IP232-30-00-af";

struct TestApp {
    addr: SocketAddr,
    dir: tempfile::TempDir,
    store: Store,
    client: reqwest::Client,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl TestApp {
    async fn start(extra_toml: &str) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        let toml = format!(
            "[status]\nenabled = true\n\n[backup]\ndir = \"backup\"\n\n[customcerts]\ndir = \"certs\"\n\n{extra_toml}"
        );
        std::fs::write(dir.path().join("autoprov.toml"), toml).unwrap();
        let site = Site::load(dir.path()).expect("test site loads");
        let db = autoprov_store::testing::test_database(&dir.path().join("autoprov.db")).await;
        let store = Store::connect(&db).await.unwrap();
        let state = AppState::new(site, store.clone());
        let bound = bind(&["127.0.0.1:0".parse().unwrap()]).await.unwrap();
        let addr = bound.local_addrs()[0];
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(bound.run(state, async move {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            dir,
            store,
            client: reqwest::Client::new(),
            _stop: tx,
        }
    }

    fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    async fn put(&self, path_and_query: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = self
            .client
            .put(self.url(path_and_query))
            .body(body)
            .send()
            .await
            .unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    }

    async fn backup(&self, body: &str) -> (u16, String) {
        self.put(
            &format!("/update.php?mode=backup&hwid={HWID}&sn={SN}"),
            body.to_string(),
        )
        .await
    }

    fn backups(&self) -> Vec<String> {
        files_in(&self.path(&format!("backup/{HWID}")))
    }
}

fn files_in(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect(),
        Err(_) => Vec::new(),
    };
    v.sort();
    v
}

const CONFIG: &str = "config change CMD0 /name Phone\r\nvars create UPDATE/CHECK p 123\r\nconfig change UP1 /url x\r\nconfig change PHONE SIG /coder G711\r\n";

#[tokio::test]
async fn backup_twice_stores_one_file() {
    let app = TestApp::start("").await;
    let (status, body) = app.backup(CONFIG).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        format!(
            "# no saved files for {HWID} (backup/{HWID}/{HWID}.*.txt)\r\n\
             # saving backup/{HWID}/{HWID}.0.txt\r\n"
        )
    );
    let saved = std::fs::read_to_string(app.path(&format!("backup/{HWID}/{HWID}.0.txt"))).unwrap();
    assert_eq!(
        saved,
        "config change CMD0 /name Phone\r\nconfig change PHONE SIG /coder G711"
    );

    // only volatile lines differ: no change
    let (status, body) = app
        .backup(&CONFIG.replace("UPDATE/CHECK p 123", "UPDATE/CHECK p 456"))
        .await;
    assert_eq!(status, 200);
    let prefix = format!("# no change (newest backup/{HWID}/{HWID}.0.txt) ");
    assert!(body.starts_with(&prefix), "{body}");
    assert!(body.ends_with("\r\n"));
    let mtime: i64 = body[prefix.len()..].trim_end().parse().expect("mtime");
    assert!(mtime > 0);
    assert_eq!(app.backups(), vec![format!("{HWID}.0.txt")]);

    let state = app.store.load(SN).await.unwrap().expect("state stored");
    assert_eq!(state.device.backup, Some(mtime));
}

#[tokio::test]
async fn empty_first_backup_is_no_change() {
    let app = TestApp::start("").await;
    let (_, body) = app.backup("vars create UPDATE/X p 1\r\n\r\n").await;
    assert_eq!(
        body,
        format!(
            "# no saved files for {HWID} (backup/{HWID}/{HWID}.*.txt)\r\n# no change (newest ) \r\n"
        )
    );
    assert!(app.backups().is_empty());
}

#[tokio::test]
async fn retention_keeps_the_newest_ten() {
    let app = TestApp::start("").await;
    for i in 0..11 {
        let (status, body) = app
            .backup(&format!("config change CMD0 /name P{i}\r\n"))
            .await;
        assert_eq!(status, 200);
        assert!(
            body.contains(&format!("# saving backup/{HWID}/{HWID}.{i}.txt\r\n")),
            "{i}: {body}"
        );
        if i == 10 {
            assert!(
                body.contains(&format!("# removing backup/{HWID}/{HWID}.0.txt tnow=")),
                "{body}"
            );
        } else {
            assert!(!body.contains("removing"), "{i}: {body}");
        }
    }
    let mut expected: Vec<String> = (1..=10).map(|i| format!("{HWID}.{i}.txt")).collect();
    expected.sort();
    assert_eq!(app.backups(), expected);
    let newest =
        std::fs::read_to_string(app.path(&format!("backup/{HWID}/{HWID}.10.txt"))).unwrap();
    assert_eq!(newest, "config change CMD0 /name P10");
}

#[tokio::test]
async fn chunked_backup_is_accepted() {
    let app = TestApp::start("").await;
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = vec![
        Ok(b"config change CMD0 ".to_vec()),
        Ok(b"/name Chunked\r\n".to_vec()),
        Ok(b"config change PHONE SIG /coder G722\r\n".to_vec()),
    ];
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (status, text) = app
        .put(
            &format!("/upd/update.php?mode=backup&hwid={HWID}&sn={SN}"),
            body,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(text.contains("# saving"), "{text}");
    let saved = std::fs::read_to_string(app.path(&format!("backup/{HWID}/{HWID}.0.txt"))).unwrap();
    assert_eq!(
        saved,
        "config change CMD0 /name Chunked\r\nconfig change PHONE SIG /coder G722"
    );
}

#[tokio::test]
async fn oversized_upload_is_refused_and_nothing_written() {
    let app = TestApp::start("[server]\nmax_upload_bytes = 100\n").await;
    let big = "config change CMD0 /name X\r\n".repeat(20);
    let (status, text) = app.backup(&big).await;
    assert_eq!(status, 413, "{text}");
    assert!(text.contains("max_upload_bytes"), "{text}");
    assert!(app.backups().is_empty());

    // also when the size is not announced (chunked)
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = (0..20)
        .map(|_| Ok(b"config change CMD0 /name X\r\n".to_vec()))
        .collect();
    let body = reqwest::Body::wrap_stream(futures_util::stream::iter(chunks));
    let (status, _) = app
        .put(
            &format!("/update.php?mode=backup&hwid={HWID}&sn={SN}"),
            body,
        )
        .await;
    assert_eq!(status, 413);
    assert!(app.backups().is_empty());
}

#[tokio::test]
async fn backup_argument_checks() {
    let app = TestApp::start("").await;
    let (status, text) = app.put("/update.php?mode=backup&sn=x", "a").await;
    assert_eq!(status, 200);
    assert_eq!(
        text,
        "# need 'hwid' arg for mode=backup, use ?hwid=#h - exit\r\n"
    );
    let (status, text) = app.put("/update.php?mode=backup&hwid=..%2Fx", "a").await;
    assert_eq!(status, 400, "{text}");
    assert!(text.ends_with(" - exit\r\n"));
    assert!(files_in(&app.path("backup")).is_empty());
}

#[tokio::test]
async fn backups_off_without_dir() {
    let dir_off = "[backup]\ndir = \"\"\n";
    // the base config sets dir; a second [backup] table would be a TOML error, so build a
    // site without it
    let app = TestApp::start_without_backup(dir_off).await;
    let (_, text) = app.backup(CONFIG).await;
    assert_eq!(
        text,
        "# backup: no backup tag or no 'dir'  attribute in config - exit\r\n"
    );
}

impl TestApp {
    async fn start_without_backup(extra: &str) -> TestApp {
        let app = TestApp::start("").await;
        let toml = format!("[status]\nenabled = true\n\n{extra}");
        std::fs::write(app.path("autoprov.toml"), toml).unwrap();
        let site = Site::load(app.dir.path()).unwrap();
        let state = AppState::new(site, app.store.clone());
        let bound = bind(&["127.0.0.1:0".parse().unwrap()]).await.unwrap();
        let addr = bound.local_addrs()[0];
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(bound.run(state, async move {
            let _ = rx.await;
        }));
        TestApp {
            addr,
            _stop: tx,
            ..app
        }
    }
}

#[tokio::test]
async fn vardump_refuses_paths_outside_the_certificate_folder() {
    let app = TestApp::start("").await;
    let body = "X509/REQUESTERROR p 1\r\n";
    for file in [
        "../x",
        "%2Fetc%2Fx",
        "certs%2F..%2F..%2Fx",
        "backup%2Fx",
        "certs%2Fx.php",
    ] {
        let (status, text) = app
            .put(
                &format!("/update.php?mode=vardump&sn={SN}&var=X509/REQUESTERROR&file={file}"),
                body,
            )
            .await;
        assert_eq!(status, 400, "{file}: {text}");
        assert_eq!(
            text,
            "# ?file: filename must not point to external directory - exit\r\n"
        );
    }
    assert!(!app.path("x").exists());
    assert!(!app.dir.path().parent().unwrap().join("x").exists());
    assert!(!app.path("certs").exists());
    assert!(!app.path("backup").exists());
}

#[tokio::test]
async fn vardump_writes_der_and_pem() {
    let app = TestApp::start("").await;
    let body = "X509/REQUEST pb 3082010a0203\r\nX509/OTHER p 1\r\n";
    let file = format!("certs%2F{SN}-request.p10.der");
    let (status, text) = app
        .put(
            &format!(
                "/update.php?mode=vardump&sn={SN}&var=X509/REQUEST&file={file}&proc=var2bin&postproc=createPemFromDer"
            ),
            body,
        )
        .await;
    assert_eq!(status, 200, "{text}");
    assert!(
        text.starts_with(
            "# vardump (before proc) X509/REQUEST >\r\n# X509/REQUEST pb 3082010a0203\r\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("# processed (with 'var2bin') length: 6\r\n"),
        "{text}"
    );
    assert!(
        text.contains("# sucessfully post-processed (with 'createPemFromDer')\r\n"),
        "{text}"
    );
    assert!(
        text.ends_with(&format!(
        "# uploaded certs/{SN}-request.p10.der with proc=var2bin/postproc=createPemFromDer \r\n"
    )),
        "{text}"
    );
    let der = std::fs::read(app.path(&format!("certs/{SN}-request.p10.der"))).unwrap();
    assert_eq!(der, vec![0x30, 0x82, 0x01, 0x0a, 0x02, 0x03]);
    let pem = std::fs::read_to_string(app.path(&format!("certs/{SN}-request.p10.pem"))).unwrap();
    assert_eq!(
        pem,
        "-----BEGIN CERTIFICATE REQUEST-----\r\nMIIBCgID\r\n-----END CERTIFICATE REQUEST-----\r\n"
    );
    let state = app.store.load(SN).await.unwrap().expect("state");
    assert!(
        state
            .device
            .vars
            .iter()
            .any(|(n, _)| n == "var-x509-request"),
        "{:?}",
        state.device.vars
    );
    assert!(state
        .msgs
        .iter()
        .any(|m| m.msg.starts_with("uploaded certs/")));

    // a missing variable is reported, nothing more is written
    let (_, text) = app
        .put(
            &format!("/update.php?mode=vardump&sn={SN}&var=X509/NONE&file=certs%2Fnone"),
            body,
        )
        .await;
    assert!(
        text.ends_with("# failed to extract 'X509/NONE' from PUT data for mode=vardump - exit\r\n"),
        "{text}"
    );
    assert!(!app.path("certs/none").exists());
}

#[tokio::test]
async fn query_result_is_stored_in_the_state() {
    let app = TestApp::start("").await;
    let xml = "<info name=\"Reception\"/>\r\n";
    let (status, text) = app
        .put(&format!("/update.php?mode=query&sn={SN}&id=admin"), xml)
        .await;
    assert_eq!(status, 200);
    assert_eq!(
        text,
        format!(
            "# queries admin for {SN} saved\r\n# query admin >\r\n# <info name=\"Reception\"/>\r\n# \r\n# > query admin \r\n\r\n"
        )
    );
    let state = app.store.load(SN).await.unwrap().expect("state created");
    let q = state.query("admin").expect("query stored");
    assert_eq!(q.body, xml);
    assert!(q.seen > 0);

    let (_, text) = app
        .put(
            &format!("/update.php?mode=query&sn={SN}&id=admin"),
            "<info>",
        )
        .await;
    assert!(text.starts_with("# invalid xml: "), "{text}");
    assert!(text.ends_with(" - exit\r\n"), "{text}");
    let (_, text) = app.put("/update.php?mode=query&id=admin", xml).await;
    assert_eq!(
        text,
        "# need 'sn' arg for mode=query, use ?sn=#m - exit\r\n"
    );
    let (_, text) = app
        .put(&format!("/update.php?mode=query&sn={SN}"), xml)
        .await;
    assert_eq!(
        text,
        "# need 'id' arg for mode=query, go fix update.php - exit\r\n"
    );
}

#[tokio::test]
async fn mode_dispatch_on_every_update_path() {
    let app = TestApp::start("").await;
    for path in ["/update.php", "/mtls/upd/update.php", "/innovaphone/update"] {
        let r = app
            .client
            .get(app.url(&format!("{path}?mode=nonsense")))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
        assert!(r.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain"));
        assert_eq!(r.text().await.unwrap(), "# unknown cmd=nonsense - exit\r\n");
    }
    let r = app
        .client
        .get(app.url("/update.php?mode=status"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.text().await.unwrap(),
        "for user interface functions, call admin/admin.php instead"
    );
    let r = app
        .client
        .get(app.url("/nothing/here"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn firmware_files_with_range() {
    let app = TestApp::start("").await;
    std::fs::create_dir_all(app.path("fw/137640")).unwrap();
    std::fs::write(app.path("fw/137640/ip232.bin"), b"0123456789").unwrap();
    let r = app
        .client
        .get(app.url("/upd/fw/137640/ip232.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..], b"0123456789");
    let r = app
        .client
        .get(app.url("/fw/137640/ip232.bin"))
        .header("range", "bytes=2-4")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 206);
    assert_eq!(&r.bytes().await.unwrap()[..], b"234");
    let r = app
        .client
        .head(app.url("/fw/137640/ip232.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.headers()["content-length"], "10");
    let r = app
        .client
        .get(app.url("/fw/../autoprov.toml"))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status().as_u16(), 200);
    let r = app
        .client
        .get(app.url("/fw/%2e%2e/autoprov.toml"))
        .send()
        .await
        .unwrap();
    assert_ne!(r.status().as_u16(), 200);
    let r = app
        .client
        .get(app.url("/fw/137640/none.bin"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 404);
}

#[tokio::test]
async fn health() {
    let app = TestApp::start("").await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert_eq!(r.text().await.unwrap(), "ok");
    app.store.close().await;
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
}

#[tokio::test]
async fn several_listeners_and_bind_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("autoprov.toml"), "").unwrap();
    let site = Site::load(dir.path()).unwrap();
    let db = autoprov_store::testing::test_database(&dir.path().join("autoprov.db")).await;
    let store = Store::connect(&db).await.unwrap();
    let bound = bind(&[
        "127.0.0.1:0".parse().unwrap(),
        "127.0.0.1:0".parse().unwrap(),
    ])
    .await
    .unwrap();
    let addrs = bound.local_addrs();
    assert_eq!(addrs.len(), 2);
    assert_ne!(addrs[0].port(), addrs[1].port());

    // a taken port is reported with its address
    let err = match bind(&[addrs[0]]).await {
        Err(e) => e.to_string(),
        Ok(_) => panic!("port is in use"),
    };
    assert!(err.contains(&addrs[0].to_string()), "{err}");

    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(bound.run(AppState::new(site, store), async move {
        let _ = rx.await;
    }));
    let client = reqwest::Client::new();
    for a in &addrs {
        let r = client
            .get(format!("http://{a}/healthz"))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    tx.send(()).unwrap();
    tokio::time::timeout(std::time::Duration::from_secs(5), server)
        .await
        .expect("server stops")
        .unwrap()
        .unwrap();
}

#[tokio::test]
async fn update_script_route_never_takes_the_server_down() {
    let app = TestApp::start("").await;
    for path in [
        "/update.php?type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5",
        "/innovaphone/update",
    ] {
        let r = app.client.get(app.url(path)).send().await.unwrap();
        // 200 with the engine's script, or 500 while the engine cannot answer
        assert!([200, 500].contains(&r.status().as_u16()), "{}", r.status());
    }
    let r = app.client.get(app.url("/healthz")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}
