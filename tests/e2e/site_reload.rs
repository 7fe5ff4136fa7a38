//! Issue 6: reloading the site while the server runs (`POST /api/v1/site/reload`, the web UI's
//! "Reload site" button is in `admin.rs`): a changed `autoprov.toml` takes effect for the next
//! device request; a broken one is refused with `file:line:column` and the old site serves on.

use autoprov_server::admin::auth;

use crate::helpers::{scenario_a_scripts, TestApp, SCENARIO_A};

async fn poll(app: &TestApp, sn: &str) -> String {
    let hwid = format!("IP232-{}", &sn[9..]);
    let (status, body) = app
        .get(&format!(
            "/update.php?type=IP232&sn={sn}&hwid={hwid}&ip=172.16.1.9"
        ))
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn reload(app: &TestApp, token: &str) -> (u16, serde_json::Value) {
    let r = app
        .client
        .post(app.url("/api/v1/site/reload"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn api_reload_changes_what_devices_get_and_refuses_a_broken_site() {
    let app = TestApp::spawn(SCENARIO_A, scenario_a_scripts).await;
    auth::set_password(&app.store, "admin", "reload password")
        .await
        .unwrap();
    let token = auth::create_token(&app.store, "admin", "reload")
        .await
        .unwrap();
    assert!(poll(&app, "00-90-33-30-00-01")
        .await
        .contains("# phase: staging,"));

    // Rename the first phase: the next device request sees it, no restart.
    let toml = SCENARIO_A.replace("id = \"staging\"", "id = \"prestage\"");
    assert_ne!(toml, SCENARIO_A);
    std::fs::write(app.site().join("autoprov.toml"), &toml).unwrap();
    // Not before the reload.
    assert!(poll(&app, "00-90-33-30-00-02")
        .await
        .contains("# phase: staging,"));
    let (status, body) = reload(&app, &token).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["reloaded"], true);
    assert_eq!(body["restart_needed"], serde_json::json!([]), "{body}");
    let after = poll(&app, "00-90-33-30-00-03").await;
    assert!(after.contains("# phase: prestage,"), "{after}");

    // A broken file: refused with file:line:column, the running site stays.
    std::fs::write(
        app.site().join("autoprov.toml"),
        format!("{toml}\n[[phases]]\nid = \"broken\"\nseq = \"not a number\"\n"),
    )
    .unwrap();
    let (status, body) = reload(&app, &token).await;
    assert_eq!(status, 422, "{body}");
    let err = body["error"].as_str().unwrap();
    let line = toml.lines().count() + 4;
    assert!(
        err.contains(&format!("autoprov.toml:{line}:")) && err.contains("error"),
        "expected autoprov.toml:{line}: in {err}"
    );
    assert!(poll(&app, "00-90-33-30-00-04")
        .await
        .contains("# phase: prestage,"));

    // A semantic error (unknown phase reference) is refused too.
    std::fs::write(
        app.site().join("autoprov.toml"),
        format!("{toml}\n[server]\nlisten = [\"127.0.0.1:1\"]\n[[phases]]\nid = \"prestage\"\nseq = 300\n"),
    )
    .unwrap();
    let (status, body) = reload(&app, &token).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("autoprov.toml:"),
        "{body}"
    );

    // Start-bound settings are reported as needing a restart; the rest is applied.
    std::fs::write(
        app.site().join("autoprov.toml"),
        format!(
            "{}\n[server]\nlisten = [\"127.0.0.1:1\"]\n",
            toml.replace("id = \"prestage\"", "id = \"stage2\"")
        ),
    )
    .unwrap();
    let (status, body) = reload(&app, &token).await;
    assert_eq!(status, 200, "{body}");
    let restart = body["restart_needed"].as_array().unwrap();
    assert_eq!(restart.len(), 1, "{body}");
    assert!(
        restart[0].as_str().unwrap().contains("[server] listen"),
        "{body}"
    );
    assert!(poll(&app, "00-90-33-30-00-05")
        .await
        .contains("# phase: stage2,"));

    // Without a token: 401, nothing reloaded.
    let r = app
        .client
        .post(app.url("/api/v1/site/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);

    // Every reload is in the audit log.
    let audit = app.store.audit_recent(20).await.unwrap();
    let ok = audit.iter().filter(|e| e.action == "reload-site").count();
    let failed = audit
        .iter()
        .filter(|e| e.action == "reload-site-failed")
        .count();
    assert_eq!((ok, failed), (2, 2), "{audit:?}");
    assert!(audit
        .iter()
        .any(|e| e.action == "reload-site-failed" && e.detail.contains("autoprov.toml:")));
}

/// `kill -HUP` of `autoprov serve` reloads the site like the API; a broken file is refused and
/// the running site stays.
#[cfg(unix)]
#[tokio::test]
async fn sighup_reloads_the_site_of_autoprov_serve() {
    use std::io::BufRead;
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("site");
    std::fs::create_dir_all(site.join("scripts")).unwrap();
    std::fs::write(site.join("autoprov.toml"), SCENARIO_A).unwrap();
    scenario_a_scripts(&site);
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .args(["serve", "--listen", "127.0.0.1:0", "--site"])
        .arg(&site)
        .env("AUTOPROV_ADMIN_PASSWORD", "sighup test password")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    struct Kill(std::process::Child);
    impl Drop for Kill {
        fn drop(&mut self) {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let stdout = child.stdout.take().unwrap();
    let child = Kill(child);
    let addr = tokio::task::spawn_blocking(move || {
        let mut lines = std::io::BufReader::new(stdout).lines();
        for l in lines.by_ref().take(10).map_while(Result::ok) {
            if let Some(a) = l.strip_prefix("autoprov: listening on ") {
                let a = a.split_whitespace().next().unwrap().to_string();
                // keep draining stdout so the server never blocks on a full pipe
                std::thread::spawn(move || lines.for_each(drop));
                return Some(a);
            }
        }
        None
    })
    .await
    .unwrap()
    .expect("serve prints its address");
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let phase = |sn: &'static str| {
        let http = http.clone();
        let addr = addr.clone();
        async move {
            let body = http
                .get(format!(
                    "http://{addr}/update.php?type=IP232&sn={sn}&hwid=IP232-{}&ip=10.0.0.1",
                    &sn[9..]
                ))
                .send()
                .await
                .unwrap()
                .text()
                .await
                .unwrap();
            body.lines()
                .find_map(|l| l.strip_prefix("# phase: "))
                .and_then(|l| l.split(',').next())
                .unwrap_or_default()
                .to_string()
        }
    };
    assert_eq!(phase("00-90-33-30-00-11").await, "staging");
    let hup = |pid: u32| {
        let ok = std::process::Command::new("kill")
            .args(["-HUP", &pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -HUP");
    };
    let pid = child.0.id();
    std::fs::write(
        site.join("autoprov.toml"),
        SCENARIO_A.replace("id = \"staging\"", "id = \"prestage\""),
    )
    .unwrap();
    hup(pid);
    let mut seen = String::new();
    for i in 0..50u32 {
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        // a new serial each time: a device keeps the phase it was given
        let sn: &'static str = Box::leak(format!("00-90-33-31-00-{:02x}", i).into_boxed_str());
        seen = phase(sn).await;
        if seen == "prestage" {
            break;
        }
    }
    assert_eq!(seen, "prestage", "SIGHUP reloaded the site");
    std::fs::write(site.join("autoprov.toml"), "[[phases]\nbroken").unwrap();
    hup(pid);
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    assert_eq!(phase("00-90-33-32-00-01").await, "prestage");
    drop(child);
}
