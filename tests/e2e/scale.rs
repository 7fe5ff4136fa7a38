//! Behaviour under load and failure (issue 4), checked for what happens, never for how fast:
//! the configuration budget answers overload with 503 + Retry-After at once; a `kill -9`
//! during polls loses at most the last write-behind window and leaves a consistent
//! database; two replicas on one PostgreSQL behave as one server (no lost update, no phase
//! skipped or repeated).

use std::collections::HashMap;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use crate::helpers::*;

const DEV: &str = "type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5";

#[tokio::test]
async fn overload_is_answered_at_once_with_503_and_retry_after() {
    // Every update script waits 3 s for the hook, so two requests fill the budget of two.
    let toml = r#"
[master]
info = ""
[times]
grace = 0
[server]
max_config_requests = 2
config_retry_after = 9
[scripting]
hook_command = ["sh", "-c", "cat >/dev/null; sleep 3; echo '{}'"]
hook_timeout = 10
"#;
    let app = Arc::new(TestApp::spawn(toml, |_| {}).await);
    let mut slow = Vec::new();
    for i in 0..2 {
        let app = app.clone();
        slow.push(tokio::spawn(async move {
            app.get(&format!(
                "/update.php?type=IP232&sn=00-90-33-30-00-0{i}&hwid=IP232-30-00-0{i}&ip=10.0.0.{i}"
            ))
            .await
        }));
    }
    tokio::time::sleep(Duration::from_millis(700)).await;

    // the third configuration request (an update script or a vendor file) is refused at once
    let t0 = Instant::now();
    for path in [
        format!("/update.php?{DEV}"),
        "/snom/snomD785.htm".to_string(),
    ] {
        let r = app.client.get(app.url(&path)).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 503, "{path}");
        assert_eq!(r.headers()["retry-after"], "9");
        assert_eq!(r.headers()["connection"], "close");
        assert!(r.text().await.unwrap().contains("busy"));
    }
    assert!(
        t0.elapsed() < Duration::from_secs(2),
        "overload must not wait for a slot"
    );
    // the health check is not configuration and is not refused
    assert_eq!(app.get("/healthz").await.0, 200);

    // the two slow ones were served, and the budget is free again afterwards
    for t in slow {
        assert_eq!(t.await.unwrap().0, 200);
    }
    assert_eq!(app.get(&format!("/update.php?{DEV}")).await.0, 200);

    // An operator sees the refusals in /metrics (which wants a token or a session).
    let r = app.client.get(app.url("/metrics")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.headers().contains_key("www-authenticate"));
    let text = metrics(&app).await;
    assert_eq!(
        sample(&text, r#"autoprov_refused_total{budget="config"}"#),
        2.0
    );
    assert_eq!(
        sample(&text, r#"autoprov_refused_total{budget="firmware"}"#),
        0.0
    );
    assert_eq!(
        sample(
            &text,
            r#"autoprov_requests_total{route="update",status="2xx"}"#
        ),
        3.0
    );
    assert_eq!(
        sample(
            &text,
            r#"autoprov_requests_total{route="update",status="5xx"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(
            &text,
            r#"autoprov_requests_total{route="vendor",status="5xx"}"#
        ),
        1.0
    );
    assert_eq!(
        sample(&text, r#"autoprov_budget_slots{budget="config"}"#),
        2.0
    );
    assert_eq!(
        sample(&text, r#"autoprov_budget_in_use{budget="config"}"#),
        0.0
    );
}

/// /metrics follows the write-behind and the state cache: polls are written in batches,
/// repeated polls of a device are answered from memory, and a device never seen before
/// costs the database nothing once the serials are known.
#[tokio::test]
async fn metrics_show_the_write_behind_and_the_caches() {
    let app = TestApp::spawn(SCENARIO_A, scenario_a_scripts).await;
    for round in 0..3 {
        for i in 0..4 {
            let q = format!(
                "/update.php?type=IP232&sn=00-90-33-31-00-0{i}&hwid=IP232-31-00-0{i}&ip=10.0.1.{i}"
            );
            assert_eq!(app.get(&q).await.0, 200, "round {round}");
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    // a vendor file twice: rendered once, then from the render cache
    let snom = "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-g9ba52f5 000413922D24 SXM:0 UXM:0)";
    for _ in 0..2 {
        let r = app
            .client
            .get(app.url("/snomD785.htm"))
            .header("user-agent", snom)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 200);
    }
    let text = metrics(&app).await;
    assert_eq!(
        sample(
            &text,
            r#"autoprov_requests_total{route="update",status="2xx"}"#
        ),
        12.0
    );
    assert_eq!(
        sample(
            &text,
            r#"autoprov_requests_total{route="vendor",status="2xx"}"#
        ),
        2.0
    );
    assert!(
        sample(
            &text,
            r#"autoprov_render_cache_lookups_total{result="hit"}"#
        ) >= 1.0
    );
    assert!(
        sample(
            &text,
            r#"autoprov_render_cache_lookups_total{result="miss"}"#
        ) >= 1.0
    );
    assert!(sample(&text, "autoprov_resident_memory_bytes") > 0.0);
    assert!(text.contains("autoprov_build_info{version=\""));
    if autoprov_store::is_postgres_url(&app.db) {
        // No write-behind on a shared database: every save is written at once.
        assert!(!text.contains("autoprov_state_batches_total"));
        return;
    }
    assert!(sample(&text, "autoprov_state_batches_total") >= 1.0);
    // each poll saved its device; the batches coalesce a device's saves within a window
    let written = sample(&text, "autoprov_state_writes_total");
    assert!((4.0..=12.0).contains(&written), "{written}");
    assert_eq!(sample(&text, "autoprov_state_batch_failures_total"), 0.0);
    // rounds 2 and 3 found every device in memory
    assert!(
        sample(
            &text,
            r#"autoprov_state_cache_lookups_total{result="memory"}"#
        ) >= 8.0
    );
    assert!(sample(&text, "autoprov_state_cache_entries") >= 4.0);
}

/// One HTTP/1.1 request on a raw connection; the status line's code, the head and whether
/// the server closed the connection after the answer.
async fn raw_request(
    conn: &mut tokio::net::TcpStream,
    path: &str,
    keep_alive: bool,
) -> Option<(u16, String)> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let req = format!(
        "GET {path} HTTP/1.1\r\nHost: t\r\nUser-Agent: Yealink SIP-T46S 66.86.0.15 001565000001\r\n{}\r\n",
        if keep_alive { "" } else { "Connection: close\r\n" }
    );
    conn.write_all(req.as_bytes()).await.ok()?;
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        let n = conn.read(&mut chunk).await.ok()?;
        if n == 0 {
            break;
        }
        buf.extend_from_slice(&chunk[..n]);
        let text = String::from_utf8_lossy(&buf);
        if let Some(end) = text.find("\r\n\r\n") {
            let len: usize = text[..end]
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse().ok())?
                })
                .unwrap_or(0);
            if buf.len() >= end + 4 + len {
                break;
            }
        }
    }
    let text = String::from_utf8_lossy(&buf).to_string();
    let code = text.split(' ').nth(1)?.parse().ok()?;
    Some((code, text))
}

/// Read until the server closes the connection (true) or `wait` passes (false).
async fn closed_by_server(conn: &mut tokio::net::TcpStream, wait: Duration) -> bool {
    use tokio::io::AsyncReadExt;
    let mut b = [0u8; 64];
    matches!(
        tokio::time::timeout(wait, conn.read(&mut b)).await,
        Ok(Ok(0)) | Ok(Err(_))
    )
}

#[tokio::test]
async fn connections_past_the_budget_get_503_at_once_and_a_freed_place_serves_again() {
    let toml = r#"
[server]
max_connections = 4
config_retry_after = 7
"#;
    let app = TestApp::spawn(toml, |_| {}).await;
    let connect = || tokio::net::TcpStream::connect(app.addr);

    // Four kept-alive connections take the budget.
    let mut held = Vec::new();
    for _ in 0..4 {
        let mut c = connect().await.unwrap();
        let (code, _) = raw_request(&mut c, "/healthz", true).await.unwrap();
        assert_eq!(code, 200);
        held.push(c);
    }
    // The fifth is answered 503 with Retry-After, even for a path that is not configuration,
    // and closed by the server.
    let t0 = Instant::now();
    let mut c = connect().await.unwrap();
    let (code, head) = raw_request(&mut c, "/healthz", true).await.unwrap();
    assert_eq!(code, 503, "{head}");
    let lower = head.to_ascii_lowercase();
    assert!(lower.contains("retry-after: 7\r\n"), "{head}");
    assert!(lower.contains("connection: close\r\n"), "{head}");
    assert!(closed_by_server(&mut c, Duration::from_secs(5)).await);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "the refusal must not wait"
    );
    // The held connections still work.
    let (code, _) = raw_request(&mut held[0], "/snom/snomD785.htm", true)
        .await
        .unwrap();
    assert_ne!(code, 503);

    // Fill the overflow (8 places) with connections that say nothing: the next connection is
    // left in the backlog, unanswered, until a place frees.
    let mut silent = Vec::new();
    for _ in 0..8 {
        silent.push(connect().await.unwrap());
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut waiting = connect().await.unwrap();
    let pending = tokio::spawn(async move {
        let r = raw_request(&mut waiting, "/healthz", false).await;
        (r, Instant::now())
    });
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        !pending.is_finished(),
        "past the overflow nothing is accepted"
    );
    // A served connection ends: its place goes to the waiting one, which is served.
    let freed_at = Instant::now();
    drop(held.pop());
    let (r, answered_at) = tokio::time::timeout(Duration::from_secs(10), pending)
        .await
        .expect("a freed place is used")
        .unwrap();
    assert_eq!(r.expect("an answer").0, 200);
    assert!(answered_at >= freed_at);

    // The silent refused connections are closed after at most 5 s without a request.
    for mut c in silent {
        assert!(closed_by_server(&mut c, Duration::from_secs(8)).await);
    }
    // With places free again, new connections are served.
    let mut c = connect().await.unwrap();
    assert_eq!(raw_request(&mut c, "/healthz", true).await.unwrap().0, 200);
    drop(c);
    drop(held);

    // /metrics counted the one refused request and shows the budget.
    let text = metrics(&app).await;
    assert_eq!(
        sample(&text, r#"autoprov_refused_total{budget="connections"}"#),
        1.0
    );
    assert_eq!(
        sample(&text, r#"autoprov_budget_slots{budget="connections"}"#),
        4.0
    );
    let open = sample(&text, r#"autoprov_budget_in_use{budget="connections"}"#);
    assert!((1.0..=4.0).contains(&open), "{open}");
}

#[tokio::test]
async fn an_idle_kept_alive_connection_is_closed_after_idle_timeout() {
    let app = TestApp::spawn("[server]\nidle_timeout = 1\n", |_| {}).await;
    let mut c = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    assert_eq!(raw_request(&mut c, "/healthz", true).await.unwrap().0, 200);
    // still open right after the answer, closed once idle for longer than a second
    assert!(!closed_by_server(&mut c, Duration::from_millis(300)).await);
    assert!(closed_by_server(&mut c, Duration::from_secs(5)).await);
    // one that never sends a request is closed too
    let mut c = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    assert!(closed_by_server(&mut c, Duration::from_secs(5)).await);
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn serve(site: &std::path::Path, port: u16) -> std::process::Child {
    Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .args(["serve", "--listen", &format!("127.0.0.1:{port}"), "--site"])
        .arg(site)
        .envs(cli_env(site))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

async fn wait_healthy(client: &reqwest::Client, port: u16) {
    for _ in 0..200 {
        if let Ok(r) = client
            .get(format!("http://127.0.0.1:{port}/healthz"))
            .send()
            .await
        {
            if r.status() == 200 {
                return;
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("server on port {port} did not come up");
}

/// Polls from many devices, `kill -9` in the middle, restart: every device whose answer came
/// back more than one write-behind window (plus scheduling slack) before the kill is stored,
/// and SQLite finds the file intact.
#[tokio::test]
async fn kill_9_during_polls_loses_at_most_the_last_batch_window() {
    if autoprov_store::testing::test_postgres().is_some() {
        return; // write-behind is SQLite's; PostgreSQL writes every poll at once
    }
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path();
    let window_ms = 200;
    std::fs::write(
        site.join("autoprov.toml"),
        format!("{SCENARIO_A}\n[server]\nstate_batch_ms = {window_ms}\n"),
    )
    .unwrap();
    scenario_a_scripts(site);
    let port = free_port();
    let mut child = serve(site, port);
    let client = reqwest::Client::builder().no_proxy().build().unwrap();
    wait_healthy(&client, port).await;

    // device serial -> when its first answer arrived
    let served: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for w in 0..4u32 {
        let (client, served, stop) = (client.clone(), served.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            let mut n = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let sn = format!("00-90-33-{w:02x}-{:02x}-{:02x}", n / 256, n % 256);
                let url = format!(
                    "http://127.0.0.1:{port}/update.php?type=IP232&sn={sn}&hwid=IP232-{w:02x}&ip=10.1.{w}.{}",
                    n % 250
                );
                let ok = match client.get(url).send().await {
                    Ok(r) => r.status() == 200 && r.bytes().await.is_ok(),
                    Err(_) => false,
                };
                if !ok {
                    break; // the server is gone
                }
                served.lock().unwrap().insert(sn, Instant::now());
                n += 1;
            }
        }));
    }
    tokio::time::sleep(Duration::from_millis(2500)).await;
    child.kill().unwrap(); // SIGKILL: no flush, no clean shutdown
    let killed = Instant::now();
    child.wait().unwrap();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }
    let served = served.lock().unwrap().clone();
    assert!(served.len() > 20, "only {} devices polled", served.len());

    // the file is intact (checked by SQLite itself, and through a restarted server)
    let db = site.join("autoprov.db");
    use sqlx::ConnectOptions;
    let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
        .filename(&db)
        .connect()
        .await
        .unwrap();
    let check: String = sqlx::query_scalar("PRAGMA integrity_check")
        .fetch_one(&mut conn)
        .await
        .unwrap();
    assert_eq!(check, "ok");
    let orphans: Vec<(String,)> = sqlx::query_as("PRAGMA foreign_key_check")
        .fetch_all(&mut conn)
        .await
        .unwrap_or_default();
    assert!(orphans.is_empty(), "{orphans:?}");
    drop(conn);

    let port2 = free_port();
    let mut child2 = serve(site, port2);
    wait_healthy(&client, port2).await;
    let store = autoprov_store::Store::open(&db).await.unwrap();
    let slack = Duration::from_millis(window_ms) + Duration::from_secs(1);
    let mut kept = 0;
    let mut lost_recent = 0;
    for (sn, at) in &served {
        let st = store.load(sn).await.unwrap();
        if killed.duration_since(*at) > slack {
            let st = st.unwrap_or_else(|| {
                panic!(
                    "{sn} was answered {:?} before the kill and is lost",
                    killed - *at
                )
            });
            assert_eq!(st.phase.as_deref(), Some("staging"), "{sn}");
            assert!(!st.msgs.is_empty(), "{sn}");
            kept += 1;
        } else if st.is_none() {
            lost_recent += 1;
        }
    }
    assert!(kept > 0, "no device was old enough to count");
    eprintln!("kill -9: {kept} devices kept, {lost_recent} of the last window lost");
    let _ = child2.kill();
    let _ = child2.wait();
}

/// Two servers sharing one PostgreSQL database: what one writes, the other sees; concurrent
/// polls of one device through both lose no update and take the phases exactly as sequential
/// polls do.
#[tokio::test]
async fn two_replicas_on_postgres_behave_as_one_server() {
    if autoprov_store::testing::test_postgres().is_none() {
        return; // replicas need a shared PostgreSQL (test.sh's second pass)
    }
    let a = TestApp::spawn(SCENARIO_A, scenario_a_scripts).await;
    // the second replica: same configuration and scripts, same database
    let copy = tempfile::tempdir().unwrap();
    for entry in walk(&a.site()) {
        let rel = entry.strip_prefix(a.site()).unwrap();
        let to = copy.path().join(rel);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(&entry, &to).unwrap();
        let mtime = std::fs::metadata(&entry).unwrap().modified().unwrap();
        std::fs::File::options()
            .write(true)
            .open(&to)
            .unwrap()
            .set_modified(mtime)
            .unwrap();
    }
    let b = TestApp::start_on(copy, a.db.clone()).await;

    // 1. a device's life alternating between the replicas: each poll continues where the
    //    other replica left off
    let mut dev = Device::new(&a.url("/upd/update.php"));
    dev.poll(&a.client).await; // URL rewrite only
    dev.url = dev.url.replace(&a.addr.to_string(), &b.addr.to_string());
    let s = dev.poll(&b.client).await; // staging, through b
    assert!(s.contains("staging-all-default.txt"), "{s}");
    let sn = "00-90-33-30-00-af";
    let st = a.store.load(sn).await.unwrap().expect("a sees b's write");
    assert_eq!(st.nextphase.as_deref(), Some("update"));
    dev.url = dev.url.replace(&b.addr.to_string(), &a.addr.to_string());
    let s = dev.poll(&a.client).await; // update phase, through a
    assert!(s.contains("update-phone-default.txt"), "{s}");
    assert_eq!(
        b.store.load(sn).await.unwrap().unwrap().phase.as_deref(),
        Some("update")
    );

    // 2. the same device polled 24 times at once through both replicas, compared with
    //    another device polled 24 times one after the other through one replica
    let polls = 24;
    let query = |sn: &str| {
        format!("/update.php?type=IP222&sn={sn}&hwid=IP222-{sn}&ip=10.0.0.9&phase=staging")
    };
    let mut tasks = Vec::new();
    let (a, b) = (Arc::new(a), Arc::new(b));
    for i in 0..polls {
        let app = if i % 2 == 0 { a.clone() } else { b.clone() };
        let q = query("00-90-33-44-00-01");
        tasks.push(tokio::spawn(async move { app.get(&q).await.0 }));
    }
    for t in tasks {
        assert_eq!(t.await.unwrap(), 200);
    }
    for _ in 0..polls {
        assert_eq!(a.get(&query("00-90-33-44-00-02")).await.0, 200);
    }
    let together = a.store.load("00-90-33-44-00-01").await.unwrap().unwrap();
    let alone = a.store.load("00-90-33-44-00-02").await.unwrap().unwrap();
    // The log is the detector: every poll appends its lines (and the reference's pruning
    // drops a deterministic few), so a lost update leaves a different log.
    let texts = |s: &autoprov_core::DeviceState| -> Vec<String> {
        s.msgs.iter().map(|m| m.msg.to_string()).collect()
    };
    assert!(
        texts(&alone).iter().filter(|m| m.is_empty()).count() > polls / 2,
        "{:?}",
        alone.msgs
    );
    assert_eq!(texts(&together), texts(&alone), "a poll's update was lost");
    assert_eq!(together.phase, alone.phase);
    assert_eq!(together.nextphase, alone.nextphase);
    assert_eq!(together.device.phase, alone.device.phase);
    let names = |s: &autoprov_core::DeviceState| -> Vec<String> {
        s.scripts.iter().map(|x| x.filename.clone()).collect()
    };
    assert_eq!(names(&together), names(&alone));
    let phases = |s: &autoprov_core::DeviceState| {
        s.msgs
            .iter()
            .filter(|m| m.msg.starts_with("phase: "))
            .count()
    };
    assert_eq!(phases(&together), phases(&alone), "{:?}", together.msgs);
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}
