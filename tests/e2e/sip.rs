//! SIP plug-and-play and check-sync against real SIP peers: `sipp` as the booting phone and as
//! the phone receiving a NOTIFY, a mass resync of 100 simulated phones, and bad input.
//! (The multicast path is tested in `sip_multicast`.)

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use autoprov_core::DeviceState;
use tokio::net::UdpSocket;

use crate::helpers::TestApp;
use crate::zt_support::{
    autoprov, eventually, free_udp_port, have_tool, pnp_phone_args, scenario, sipp, start_side,
};

const PNP_SITE: &str = r#"
[sip]
enabled = true
listen = "127.0.0.1:0"
multicast = false

[sip.pnp_urls]
yealink = "{base}/yealink/"
grandstream = "{base}/gs/"
"#;

#[tokio::test]
async fn pnp_answers_each_brand_with_its_url() {
    if !have_tool("sipp", "pnp_answers_each_brand_with_its_url") {
        return;
    }
    let app = TestApp::spawn(PNP_SITE, |_| {}).await;
    let side = start_side(&app).await;
    let (pnp, stats) = side.sip.clone().expect("PnP runs");
    let base = format!("http://{}", app.addr);
    // (URI user as the phone spells it, vendor, model, User-Agent, MAC, brand, expected URL)
    let phones = [
        (
            "MAC%3a000413A11FA7",
            "snom",
            "snomD120",
            "snomD120/10.1.54.13",
            "000413a11fa7",
            "snom",
            format!("{base}/snom/"),
        ),
        (
            "MAC001565aabbcc",
            "Yealink",
            "T21D",
            "Yealink SIP-T21P_E2 52.84.0.15",
            "001565aabbcc",
            "yealink",
            format!("{base}/yealink/"),
        ),
        (
            "MAC%3AC074AD112233",
            "Grandstream",
            "GRP2612W",
            "Grandstream GRP2612W 1.0.5.67",
            "c074ad112233",
            "grandstream",
            format!("{base}/gs/"),
        ),
        // Fanvil's default template keeps the phone-side $mac placeholder.
        (
            "MAC:0c:38:3e:07:e1:6c",
            "OEM",
            "OEM",
            "",
            "0c383e07e16c",
            "fanvil",
            format!("{base}/fanvil/$mac.cfg"),
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    let runs = phones
        .iter()
        .enumerate()
        .map(|(i, (user, vendor, model, ua, ..))| {
            let args = pnp_phone_args(pnp, "127.0.0.1", user, vendor, model, ua);
            let log = dir.path().join(format!("phone{i}.log"));
            async move { sipp(&args, &log).await }
        });
    let results = futures_util::future::join_all(runs).await;
    for ((ok, log), (user, _, _, _, mac, brand, url)) in results.into_iter().zip(&phones) {
        assert!(ok, "sipp as a {brand} phone ({user}) failed: {log:?}");
        let body = log
            .iter()
            .find_map(|l| l.strip_prefix("NOTIFY-BODY:"))
            .unwrap_or_else(|| panic!("no NOTIFY body logged for {user}: {log:?}"));
        assert_eq!(body, url, "URL sent to the {brand} phone");
        let st: DeviceState = eventually(5, || async {
            app.store
                .load(mac)
                .await
                .unwrap()
                .filter(|s| !s.msgs.is_empty())
        })
        .await
        .unwrap_or_else(|| panic!("{mac} is not in the inventory"));
        assert_eq!(st.vendor.as_deref(), Some(*brand));
        assert_eq!(st.device.ip.as_deref(), Some("127.0.0.1"));
        assert!(st.first_seen.is_some());
        assert!(
            st.msgs
                .iter()
                .any(|m| m.msg.starts_with("seen via SIP PnP from 127.0.0.1:")
                    && m.msg.ends_with(&format!("sent {url}"))),
            "{:?}",
            st.msgs
        );
    }
    assert_eq!(stats.notifies_sent.load(Ordering::Relaxed), 4);
    // sipp answers each NOTIFY with 200 OK, which ends its retransmissions.
    assert!(eventually(3, || async {
        (stats.notifies_answered.load(Ordering::Relaxed) == 4).then_some(())
    })
    .await
    .is_some());
    side.stop().await;
}

/// Run `autoprov notify` with these arguments; returns success and stdout.
async fn notify_cli(app: &TestApp, args: &[&str]) -> (bool, String) {
    // The CLI is another process: it reads what the server has written, not its queue.
    app.store.flush().await.unwrap();
    let out = autoprov()
        .arg("notify")
        .arg("--site")
        .arg(app.site())
        .envs(crate::helpers::cli_env(app.site()))
        .args(args)
        .output()
        .await
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        eprintln!("notify stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.success(), stdout)
}

fn sipp_uas_args(scenario_file: &str, port: u16) -> Vec<String> {
    [
        "-sf",
        scenario(scenario_file).to_str().unwrap(),
        "-i",
        "127.0.0.1",
        "-p",
        &port.to_string(),
        "-m",
        "1",
        "-timeout",
        "15s",
        "-timeout_error",
        "-nostdin",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

#[tokio::test]
async fn notify_delivers_check_sync_to_a_sipp_phone() {
    if !have_tool("sipp", "notify_delivers_check_sync_to_a_sipp_phone") {
        return;
    }
    let port = free_udp_port();
    let app = TestApp::spawn(&format!("[sip]\nnotify_port = {port}\n"), |_| {}).await;
    // A Snom phone known from an earlier contact, at 127.0.0.1.
    let mut st = DeviceState::new("000413a11fa7", 1);
    st.device.ip = Some("127.0.0.1".into());
    app.store.save(&st).await.unwrap();

    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("uas.log");
    let phone = tokio::spawn({
        let args = sipp_uas_args("phone_uas.xml", port);
        async move { sipp(&args, &log).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (ok, stdout) = notify_cli(&app, &["--device", "00:04:13:A1:1F:A7"]).await;
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("check-sync;reboot=false") && stdout.contains("accepted (200 OK)"),
        "{stdout}"
    );
    let (sipp_ok, log) = phone.await.unwrap();
    assert!(sipp_ok, "sipp did not accept the NOTIFY: {log:?}");
    assert!(
        log.iter().any(|l| l == "EVENT:check-sync;reboot=false"),
        "{log:?}"
    );
    let st = app.store.load("000413a11fa7").await.unwrap().unwrap();
    let expected =
        format!("SIP NOTIFY check-sync;reboot=false to 127.0.0.1:{port}: accepted (200 OK)");
    assert!(st.msgs.iter().any(|m| *m.msg == *expected), "{:?}", st.msgs);
}

#[tokio::test]
async fn notify_answers_a_digest_challenge() {
    if !have_tool("sipp", "notify_answers_a_digest_challenge") {
        return;
    }
    let port = free_udp_port();
    let app = TestApp::spawn(
        "[sip]\nnotify_user = \"admin\"\nnotify_password_file = \"secrets/sip\"\n",
        |dir| {
            std::fs::create_dir_all(dir.join("secrets")).unwrap();
            std::fs::write(dir.join("secrets/sip"), "s3cret\n").unwrap();
        },
    )
    .await;
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("uas.log");
    let phone = tokio::spawn({
        let args = sipp_uas_args("phone_uas_auth.xml", port);
        async move { sipp(&args, &log).await }
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let to = format!("127.0.0.1:{port}");
    let (ok, stdout) = notify_cli(
        &app,
        &["--to", &to, "--brand", "yealink", "--event", "reboot"],
    )
    .await;
    assert!(ok, "the phone refused the digest answer: {stdout}");
    assert!(
        stdout.contains("check-sync;reboot=true") && stdout.contains("accepted (200 OK)"),
        "{stdout}"
    );
    let (sipp_ok, log) = phone.await.unwrap();
    assert!(sipp_ok, "{log:?}");
}

/// 100 simulated phones on 127.0.0.2..=127.0.0.101 (same port), each answering 200 OK and
/// counting the NOTIFYs it gets.
async fn phones(n: u8) -> (u16, Vec<tokio::task::JoinHandle<Vec<String>>>) {
    let first = UdpSocket::bind("127.0.0.2:0").await.unwrap();
    let port = first.local_addr().unwrap().port();
    let mut socks = vec![first];
    for i in 3..(2 + n) {
        socks.push(
            UdpSocket::bind(format!("127.0.0.{i}:{port}"))
                .await
                .unwrap(),
        );
    }
    let handles = socks
        .into_iter()
        .map(|s| {
            tokio::spawn(async move {
                let mut events = Vec::new();
                let mut buf = vec![0u8; 65536];
                while let Ok(Ok((len, src))) =
                    tokio::time::timeout(Duration::from_secs(4), s.recv_from(&mut buf)).await
                {
                    let m = autoprov_server::sip::Message::parse(&buf[..len]).unwrap();
                    events.push(m.header("Event").unwrap_or_default().to_string());
                    let mut ok = autoprov_server::sip::Message::response(200, "OK");
                    for h in ["Via", "From", "To", "Call-ID", "CSeq"] {
                        ok.copy_from(&m, h);
                    }
                    s.send_to(&ok.to_bytes(), src).await.unwrap();
                }
                events
            })
        })
        .collect();
    (port, handles)
}

#[tokio::test]
async fn mass_resync_is_throttled() {
    let (port, handles) = phones(100).await;
    let app = TestApp::spawn(
        &format!("[sip]\nnotify_port = {port}\nnotify_rate = 5\n"),
        |_| {},
    )
    .await;
    for i in 0..100u32 {
        // Yealink MACs, one per simulated phone.
        let mut st = DeviceState::new(&format!("001565{i:06x}"), 1);
        st.device.ip = Some(format!("127.0.0.{}", i + 2));
        app.store.save(&st).await.unwrap();
    }
    let started = Instant::now();
    let (ok, stdout) = notify_cli(&app, &["--all", "--rate", "100"]).await;
    let took = started.elapsed();
    assert!(ok, "{stdout}");
    assert!(
        stdout.contains("100 NOTIFY target(s)") && stdout.contains("100 accepted"),
        "{stdout}"
    );
    // 100 starts at 100 per second: at least 99 intervals of 10 ms (loosely).
    assert!(
        took >= Duration::from_millis(900),
        "100 NOTIFYs at 100/s took only {took:?}"
    );
    for h in handles {
        let events = h.await.unwrap();
        assert_eq!(
            events,
            vec!["check-sync;reboot=false".to_string()],
            "each phone gets exactly one NOTIFY"
        );
    }
    let st = app.store.load("001565000063").await.unwrap().unwrap();
    assert!(
        st.msgs.iter().any(|m| m.msg.contains("accepted (200 OK)")),
        "{:?}",
        st.msgs
    );
}

#[tokio::test]
async fn notify_reports_unknown_and_unreachable_devices() {
    let port = free_udp_port();
    let app = TestApp::spawn(
        &format!("[sip]\nnotify_port = {port}\nnotify_timeout = 1\n"),
        |_| {},
    )
    .await;
    let (ok, stdout) = notify_cli(&app, &["--device", "001565999999"]).await;
    assert!(!ok, "{stdout}");
    // innovaphone devices poll; they are skipped, not failed.
    let mut st = DeviceState::new("00-90-33-30-00-af", 1);
    st.device.ip = Some("127.0.0.1".into());
    app.store.save(&st).await.unwrap();
    // A Yealink that does not answer.
    let mut st = DeviceState::new("001565000001", 1);
    st.device.ip = Some("127.0.0.1".into());
    app.store.save(&st).await.unwrap();
    let (ok, stdout) = notify_cli(&app, &["--all"]).await;
    assert!(!ok, "{stdout}");
    assert!(
        stdout.contains("skipped: innovaphone devices have no SIP NOTIFY"),
        "{stdout}"
    );
    assert!(stdout.contains("1 not accepted, 1 skipped"), "{stdout}");
    let st = app.store.load("001565000001").await.unwrap().unwrap();
    assert!(
        st.msgs.iter().any(|m| m
            .msg
            .starts_with("SIP NOTIFY check-sync;reboot=false to 127.0.0.1:")),
        "{:?}",
        st.msgs
    );
}

fn subscribe(user: &str, call_id: &str, event: &str) -> Vec<u8> {
    format!(
        "SUBSCRIBE sip:{user}@224.0.1.75 SIP/2.0\r\n\
         Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK{call_id}\r\n\
         From: <sip:{user}@224.0.1.75>;tag=t{call_id}\r\n\
         To: <sip:{user}@224.0.1.75>\r\n\
         Call-ID: {call_id}\r\n\
         CSeq: 1 SUBSCRIBE\r\n\
         Event: {event}\r\n\
         Content-Length: 0\r\n\r\n"
    )
    .into_bytes()
}

#[tokio::test]
async fn bad_sip_input_is_dropped_and_bounded() {
    let app = TestApp::spawn(
        "[sip]\nenabled = true\nlisten = \"127.0.0.1:0\"\nmulticast = false\nmax_per_second = 20\n",
        |_| {},
    )
    .await;
    let side = start_side(&app).await;
    let (pnp, stats) = side.sip.clone().unwrap();
    let phone = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let good = subscribe("MAC%3a000413A11FA7", "good", "ua-profile");
    let send = |b: Vec<u8>| {
        let phone = &phone;
        async move { phone.send_to(&b, pnp).await.unwrap() }
    };
    send(good[..good.len() / 2].to_vec()).await; // truncated
    let mut long = subscribe("MAC%3a000413A11FA7", "long", "ua-profile");
    long.extend(std::iter::repeat_n(b'x', 60_000)); // huge: over the size limit
    send(long).await;
    send(subscribe("MAC%3a000413A11FA7", "ev", "presence")).await; // wrong Event
    send(b"\x00\x01\x02garbage\r\n\r\n".to_vec()).await;
    send(b"OPTIONS sip:x@y SIP/2.0\r\nCall-ID: o\r\n\r\n".to_vec()).await;
    send(subscribe("alice", "nomac", "ua-profile")).await;
    // A flood of distinct phones: only max_per_second are answered, nothing piles up.
    let flood = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..3000u32 {
        let b = subscribe(
            &format!("MAC001565{i:06x}"),
            &format!("flood{i}"),
            "ua-profile",
        );
        let _ = flood.send_to(&b, pnp).await;
    }
    let received = eventually(5, || async {
        (stats.received.load(Ordering::Relaxed) >= 2000).then_some(())
    })
    .await;
    assert!(received.is_some(), "the responder stopped reading");
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(stats.malformed.load(Ordering::Relaxed) >= 3, "{stats:?}");
    assert!(stats.ignored.load(Ordering::Relaxed) >= 3, "{stats:?}");
    assert!(
        stats.rate_limited.load(Ordering::Relaxed) > 1000,
        "{stats:?}"
    );
    let answered = stats.answered.load(Ordering::Relaxed);
    assert!(
        answered <= 60,
        "rate limit not applied: {answered} answered"
    );
    assert!(stats.tracked.load(Ordering::Relaxed) <= 200, "{stats:?}");
    // Still serving: after the bucket refills a real phone gets its answer.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    send(good).await;
    let mut buf = vec![0u8; 65536];
    let mut got = Vec::new();
    while got.len() < 2 {
        let (n, _) = tokio::time::timeout(Duration::from_secs(3), phone.recv_from(&mut buf))
            .await
            .expect("answer after the flood")
            .unwrap();
        let m = autoprov_server::sip::Message::parse(&buf[..n]).unwrap();
        if m.header("Call-ID") == Some("good") {
            got.push(m);
        }
    }
    assert_eq!(got[0].status(), Some(200));
    assert_eq!(got[1].method(), Some("NOTIFY"));
    // The inventory got at most the answered phones, and HTTP is unaffected.
    let devices = app.store.list().await.unwrap().len();
    assert!(devices as u64 <= answered + 1, "{devices} devices recorded");
    assert_eq!(app.get("/healthz").await.0, 200);
    side.stop().await;
}

#[tokio::test]
async fn pnp_port_in_use_is_a_clear_error() {
    let taken = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = taken.local_addr().unwrap();
    let app = TestApp::spawn(
        &format!("[sip]\nenabled = true\nlisten = \"{addr}\"\nmulticast = false\n"),
        |_| {},
    )
    .await;
    let site = autoprov_core::Site::load(&app.site()).unwrap();
    let state = autoprov_server::AppState::new(site, app.store.clone());
    // Another process holds the port (without SO_REUSEADDR): serve must say so, not hang.
    let e = autoprov_server::discovery::start(&state, &[app.addr])
        .await
        .err()
        .expect("the port is taken");
    assert!(
        e.to_string()
            .contains("cannot listen for SIP plug-and-play"),
        "{e}"
    );
}
