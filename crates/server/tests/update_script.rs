//! The update-script route over real HTTP, against the reference captures of scenario a
//! (shared/reference/innovaphone-golden, copied into crates/core/tests/golden). Host and port
//! are this server's; lines that depend on the age of the snippet files are masked.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use autoprov_core::Site;
use autoprov_server::{bind, AppState};
use autoprov_store::Store;

const REFERENCE_HOST: &str = "127.0.0.1:8091";

fn golden_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../core/tests/golden")
}

fn golden(name: &str) -> String {
    std::fs::read_to_string(golden_dir().join(name)).expect("golden file")
}

struct Running {
    base: String,
    host: String,
    dir: tempfile::TempDir,
    store: Store,
    _stop: tokio::sync::oneshot::Sender<()>,
}

async fn scenario_a() -> Running {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(
        golden_dir().join("scenario-a.toml"),
        dir.path().join("autoprov.toml"),
    )
    .unwrap();
    let scripts = dir.path().join("scripts");
    std::fs::create_dir_all(&scripts).unwrap();
    let two_days_ago = SystemTime::now() - Duration::from_secs(172_801);
    for (name, text) in [
        (
            "staging-all-default.txt",
            "# staging: set admin password\nconfig add CMD0 /user admin,s3cret\nconfig activate\nconfig rem CMD0 /user\n",
        ),
        (
            "update-phone-default.txt",
            "config add CMD0 /name This+is+a+Phone%21\n",
        ),
        (
            "update-all-hq.txt",
            "config add PHONE SIG /coder OPUS-WB,20,k1\n",
        ),
    ] {
        let p = scripts.join(name);
        std::fs::write(&p, text).unwrap();
        let f = std::fs::File::options().write(true).open(&p).unwrap();
        f.set_modified(two_days_ago).unwrap();
    }
    let site = Site::load(dir.path()).expect("scenario a loads");
    let db = autoprov_store::testing::test_database(&dir.path().join("autoprov.db")).await;
    let store = Store::connect(&db).await.unwrap();
    let bound = bind(&["127.0.0.1:0".parse().unwrap()]).await.unwrap();
    let addr = bound.local_addrs()[0];
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(bound.run(AppState::new(site, store.clone()), async move {
        let _ = rx.await;
    }));
    Running {
        base: format!("http://{addr}"),
        host: addr.to_string(),
        dir,
        store,
        _stop: tx,
    }
}

/// The golden text with this server's host (raw and URL-encoded) and the age lines masked.
fn expected(golden_text: &str, host: &str) -> String {
    let enc = |h: &str| h.replace(':', "%3A");
    mask(
        &golden_text
            .replace(REFERENCE_HOST, host)
            .replace(&enc(REFERENCE_HOST), &enc(host)),
    )
}

fn mask(text: &str) -> String {
    text.split("\r\n")
        .map(|l| {
            if l.starts_with("# > scripts/") {
                l.split(": ").next().unwrap_or(l).to_string() + ": <age>"
            } else if l.starts_with("# newest script (") {
                l.split(')').next().unwrap_or(l).to_string() + ") <age>"
            } else {
                l.to_string()
            }
        })
        .collect::<Vec<_>>()
        .join("\r\n")
}

async fn get(url: &str) -> (u16, String) {
    let r = reqwest::get(url).await.unwrap();
    (r.status().as_u16(), r.text().await.unwrap())
}

#[tokio::test]
async fn a1_no_arguments() {
    let s = scenario_a().await;
    let (status, body) = get(&format!("{}/update.php", s.base)).await;
    assert_eq!(status, 200);
    assert_eq!(body, expected(&golden("a1-no-args.txt"), &s.host));
}

#[tokio::test]
async fn a2_first_contact_then_a3_update_phase() {
    let s = scenario_a().await;
    let q = "type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5";
    let (status, body) = get(&format!("{}/update.php?{q}", s.base)).await;
    assert_eq!(status, 200);
    assert_eq!(
        mask(&body),
        expected(&golden("a2-new-device-staging.txt"), &s.host)
    );
    let state = s
        .store
        .load("00-90-33-30-00-af")
        .await
        .unwrap()
        .expect("state saved");
    assert_eq!(state.device.realip.as_deref(), Some("10.0.0.5"));
    assert_eq!(state.device.ip.as_deref(), Some("127.0.0.1"));

    let q3 = "polling=5&phase=update&type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5&env=hq&PROT=137640&BOOT=137640";
    let (status, body) = get(&format!("{}/update.php?{q3}", s.base)).await;
    assert_eq!(status, 200);
    assert_eq!(
        mask(&body),
        expected(&golden("a3-update-phase.txt"), &s.host)
    );
    assert!(s.dir.path().join("scripts").is_dir());
}
