//! The command line as other tools script it: check, simulate, help.

use std::process::Command;

use crate::helpers::*;

fn autoprov() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autoprov"))
}

#[test]
fn check_reports_file_line_and_column() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("autoprov.toml"),
        "[times]\ngrace = 0\n\n[[phases]]\nid = \"up-date\"\nseq = 1\n",
    )
    .unwrap();
    let out = autoprov()
        .args(["check", "--site"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("autoprov.toml:5:"), "{text}");
    assert!(text.contains("error"), "{text}");

    std::fs::write(
        dir.path().join("autoprov.toml"),
        "[times]\ngrace = \"soon\"\n",
    )
    .unwrap();
    let out = autoprov()
        .args(["check", "--site"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("autoprov.toml:2:9"), "{text}");

    std::fs::write(dir.path().join("autoprov.toml"), SCENARIO_A).unwrap();
    std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
    let out = autoprov()
        .args(["check", "--site"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[tokio::test]
async fn simulate_prints_what_the_server_sends_and_records_nothing() {
    let app = TestApp::spawn(SCENARIO_A, scenario_a_scripts).await;
    let out = autoprov()
        .args(["simulate", "--site"])
        .arg(app.site())
        .args([
            "--type",
            "IP232",
            "--sn",
            "00-90-33-30-00-af",
            "--hwid",
            "IP232-30-00-af",
            "--ip",
            "10.0.0.5",
        ])
        .args(["--host", &app.addr.to_string()])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let simulated = String::from_utf8(out.stdout).unwrap();
    assert!(
        app.store.load("00-90-33-30-00-af").await.unwrap().is_none(),
        "simulate stores nothing"
    );
    let (_, served) = app
        .get("/update.php?type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5")
        .await;
    assert_eq!(simulated, served);

    let out = autoprov()
        .args(["simulate", "--explain", "--site"])
        .arg(app.site())
        .args([
            "--type",
            "IP232",
            "--sn",
            "00-90-33-30-00-af",
            "--phase",
            "update",
            "--prot",
            "137640",
        ])
        .output()
        .unwrap();
    let notes = String::from_utf8(out.stdout).unwrap();
    assert!(notes.contains("firmware 137640 good"), "{notes}");
    assert!(!notes.contains("config add"), "{notes}");
}

#[test]
fn every_command_has_help() {
    for cmd in ["serve", "check", "import-innovaphone", "simulate"] {
        let out = autoprov().args([cmd, "--help"]).output().unwrap();
        assert!(out.status.success(), "{cmd}");
        assert!(
            String::from_utf8_lossy(&out.stdout).contains("Usage"),
            "{cmd}"
        );
    }
}

#[test]
fn serve_creates_a_demo_site_and_prints_the_device_url() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path().join("demo");
    let mut child = autoprov()
        .args(["serve", "--listen", "127.0.0.1:0", "--site"])
        .arg(&site)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    use std::io::BufRead;
    let stdout = child.stdout.take().unwrap();
    let mut lines = std::io::BufReader::new(stdout).lines();
    let mut url_line = None;
    for _ in 0..10 {
        match lines.next() {
            Some(Ok(l)) if l.contains("update.php?type=#t&sn=#m&hwid=#h&ip=#i") => {
                url_line = Some(l);
                break;
            }
            Some(Ok(_)) => continue,
            _ => break,
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    assert!(url_line.is_some(), "serve prints the device URL");
    assert!(site.join("autoprov.toml").is_file());
    assert!(site.join("scripts").is_dir());
    assert!(site.join("fw").is_dir());
    assert!(site.join("autoprov.db").is_file());
}

#[tokio::test]
async fn devices_lists_the_inventory_with_missing_flag() {
    let toml = format!("{SCENARIO_A}\n[status]\nenabled = true\nmissing = 60\n")
        .replace("[status]\nenabled = true\n\n[backup]", "[backup]");
    let app = TestApp::spawn(&toml, scenario_a_scripts).await;
    app.get("/update.php?type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5")
        .await;
    // A device last seen two hours ago is missing.
    let mut old = autoprov_core::DeviceState::new("00-90-33-00-00-01", 0);
    old.seen = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as i64
        - 7200;
    app.store.save(&old).await.unwrap();
    // The CLI is another process: it reads what the server has written, not its queue.
    app.store.flush().await.unwrap();
    let text = app.cli(&["devices"]);
    let line = |sn: &str| {
        text.lines()
            .find(|l| l.starts_with(sn))
            .unwrap_or_default()
            .to_string()
    };
    assert!(line("00-90-33-30-00-af").contains("IP232"), "{text}");
    assert!(line("00-90-33-30-00-af").ends_with("present"), "{text}");
    assert!(line("00-90-33-00-00-01").ends_with("missing"), "{text}");
    assert!(text.contains("2 device(s)"));
}
