//! Shared pieces of the zero-touch tests (SIP, mDNS, TFTP, DHCP): starting the side channels
//! next to a [`TestApp`], running `sipp`, and the rule for tools a test needs.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use autoprov_core::Site;
use autoprov_server::discovery::Discovery;

use crate::helpers::TestApp;

/// Whether `tool` can run. When it cannot: fail under CI (`./test.sh` installs every tool),
/// otherwise print why the test is skipped.
pub fn have_tool(tool: &str, test: &str) -> bool {
    let ok = std::process::Command::new("sh")
        .arg("-c")
        .arg(format!("command -v {tool}"))
        .stdout(Stdio::null())
        .status()
        .map(|s| s.success())
        .unwrap_or(false);
    if !ok {
        assert!(
            std::env::var_os("CI").is_none(),
            "{test}: `{tool}` is not installed (./test.sh installs it)"
        );
        eprintln!("SKIPPED {test}: `{tool}` is not installed (./test.sh installs it)");
    }
    ok
}

/// Start what the site's `[sip]`, `[mdns]` and `[tftp]` enable, next to the app's HTTP listener.
pub async fn start_side(app: &TestApp) -> Discovery {
    let site = Site::load(&app.site()).expect("site loads");
    let state = autoprov_server::AppState::new(site, app.store.clone());
    autoprov_server::discovery::start(&state, &[app.addr])
        .await
        .expect("side channels start")
}

pub fn scenario(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/e2e/sipp")
        .join(name)
}

/// The `autoprov` binary.
pub fn autoprov() -> tokio::process::Command {
    tokio::process::Command::new(env!("CARGO_BIN_EXE_autoprov"))
}

/// A UDP port that was free a moment ago.
pub fn free_udp_port() -> u16 {
    std::net::UdpSocket::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Run sipp with `args` (plus `-trace_logs -log_file LOG`), at most 20 s; returns whether it
/// succeeded and the lines its `<log>` actions wrote.
pub async fn sipp(args: &[String], log: &Path) -> (bool, Vec<String>) {
    let mut cmd = tokio::process::Command::new("sipp");
    cmd.args(args)
        .arg("-trace_logs")
        .arg("-log_file")
        .arg(log)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let out = tokio::time::timeout(Duration::from_secs(20), cmd.output())
        .await
        .expect("sipp finishes")
        .expect("sipp runs");
    if !out.status.success() {
        eprintln!("sipp stderr: {}", String::from_utf8_lossy(&out.stderr));
    }
    let lines = std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect();
    (out.status.success(), lines)
}

/// sipp arguments of a phone sending a plug-and-play SUBSCRIBE to `to`.
pub fn pnp_phone_args(
    to: SocketAddr,
    local_ip: &str,
    mac_user: &str,
    vendor: &str,
    model: &str,
    ua: &str,
) -> Vec<String> {
    [
        "-sf",
        scenario("pnp_phone.xml").to_str().unwrap(),
        "-i",
        local_ip,
        "-m",
        "1",
        "-timeout",
        "10s",
        "-timeout_error",
        "-nostdin",
        "-key",
        "mac_user",
        mac_user,
        "-key",
        "vendor",
        vendor,
        "-key",
        "model",
        model,
        "-key",
        "ua",
        ua,
        &to.to_string(),
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Wait until `f` returns `Some`, at most `secs` seconds.
pub async fn eventually<T, F, Fut>(secs: u64, mut f: F) -> Option<T>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Option<T>>,
{
    let end = tokio::time::Instant::now() + Duration::from_secs(secs);
    loop {
        if let Some(v) = f().await {
            return Some(v);
        }
        if tokio::time::Instant::now() >= end {
            return None;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
