//! The SIP plug-and-play multicast path for real: two network namespaces joined by a veth pair,
//! `autoprov serve` in one (joining 224.0.1.75 on its veth by interface name), `sipp` as a
//! booting phone in the other sending its SUBSCRIBE to 224.0.1.75:5060.
//!
//! Needs root and `ip netns`; skipped with a message where namespaces cannot be created, but
//! never when `CI` is set (then it fails).

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};

use crate::zt_support::{autoprov, eventually, have_tool, pnp_phone_args};

/// Namespaces and links of one test run, removed on drop (also when the test fails).
struct Netns {
    server: String,
    phone: String,
}

impl Drop for Netns {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the pair.
        for ns in [&self.server, &self.phone] {
            let _ = std::process::Command::new("ip")
                .args(["netns", "del", ns])
                .status();
        }
    }
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = std::process::Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

/// Build server-ns (10.237.x.1 on `veth`) and phone-ns (10.237.x.2), both with a multicast route
/// over the pair. `Err` = namespaces are not possible here.
fn setup(tag: &str) -> Result<(Netns, String), String> {
    let ns = Netns {
        server: format!("apsrv{tag}"),
        phone: format!("apph{tag}"),
    };
    ip(&["netns", "add", &ns.server])?;
    ip(&["netns", "add", &ns.phone])?;
    let (a, b) = (format!("aps{tag}"), format!("app{tag}"));
    ip(&["link", "add", &a, "type", "veth", "peer", "name", &b])?;
    ip(&["link", "set", &a, "netns", &ns.server])?;
    ip(&["link", "set", &b, "netns", &ns.phone])?;
    for (n, dev, addr) in [
        (&ns.server, &a, "10.237.0.1/24"),
        (&ns.phone, &b, "10.237.0.2/24"),
    ] {
        ip(&["-n", n, "addr", "add", addr, "dev", dev])?;
        ip(&["-n", n, "link", "set", "lo", "up"])?;
        ip(&["-n", n, "link", "set", dev, "up"])?;
        ip(&["-n", n, "route", "add", "224.0.0.0/4", "dev", dev])?;
    }
    Ok((ns, a))
}

#[tokio::test]
async fn pnp_over_multicast_in_network_namespaces() {
    const TEST: &str = "pnp_over_multicast_in_network_namespaces";
    if !have_tool("sipp", TEST) || !have_tool("ip", TEST) {
        return;
    }
    let tag = format!("{}", std::process::id() % 100_000);
    let (ns, veth) = match setup(&tag) {
        Ok(v) => v,
        Err(why) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{TEST}: network namespaces are needed in CI (run as root): {why}"
            );
            eprintln!("SKIPPED {TEST}: cannot create network namespaces here ({why})");
            return;
        }
    };
    let site = tempfile::tempdir().unwrap();
    std::fs::write(
        site.path().join("autoprov.toml"),
        format!(
            "[sip]\nenabled = true\nlisten = \"0.0.0.0:5060\"\nmulticast = true\n\
             interfaces = [\"{veth}\"]\n[provisioning]\nbase_url = \"http://10.237.0.1:8080\"\n"
        ),
    )
    .unwrap();
    std::fs::create_dir_all(site.path().join("scripts")).unwrap();
    let mut server = tokio::process::Command::new("ip")
        .args(["netns", "exec", &ns.server])
        .arg(autoprov().as_std().get_program())
        .args(["serve", "--site"])
        .arg(site.path())
        .args(["--listen", "127.0.0.1:0"])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(server.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(30), async {
        while let Ok(Some(l)) = lines.next_line().await {
            if l.contains("SIP plug-and-play on udp") {
                return Some(l);
            }
        }
        None
    })
    .await
    .ok()
    .flatten();
    let ready = ready.expect("serve starts the plug-and-play responder");
    assert!(ready.contains("multicast 224.0.1.75"), "{ready}");

    // The phone, in the other namespace, knows nothing but the multicast group.
    let log_dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "netns".to_string(),
        "exec".into(),
        ns.phone.clone(),
        "sipp".into(),
    ];
    args.extend(pnp_phone_args(
        "224.0.1.75:5060".parse().unwrap(),
        "10.237.0.2",
        "MAC%3a000413A11FA7",
        "snom",
        "snomD785",
        "snomD785/10.1.54.13",
    ));
    let log = log_dir.path().join("phone.log");
    let out = tokio::time::timeout(
        Duration::from_secs(20),
        tokio::process::Command::new("ip")
            .args(&args)
            .arg("-trace_logs")
            .arg("-log_file")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .output(),
    )
    .await
    .expect("sipp finishes")
    .unwrap();
    let logged = std::fs::read_to_string(&log).unwrap_or_default();
    assert!(
        out.status.success(),
        "sipp over multicast failed: {}\n{logged}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        logged
            .lines()
            .any(|l| l == "NOTIFY-BODY:http://10.237.0.1:8080/snom/"),
        "{logged}"
    );
    // The phone is in the inventory with its address in its own namespace.
    let store = autoprov_store::Store::open(&site.path().join("autoprov.db"))
        .await
        .unwrap();
    let st = eventually(5, || async {
        store.load("000413a11fa7").await.ok().flatten()
    })
    .await
    .expect("the phone is recorded");
    assert_eq!(st.device.ip.as_deref(), Some("10.237.0.2"));
    assert_eq!(st.model.as_deref(), Some("D785"));
    let _ = server.kill().await;
    drop(ns);
}
