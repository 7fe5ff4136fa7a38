//! Test harness: a real server on 127.0.0.1:0 with a fresh site directory and a fresh database
//! per test (an SQLite file in the site, or a new PostgreSQL database when the test command
//! exported `AUTOPROV_TEST_POSTGRES`), and a simulated innovaphone device that follows the
//! scripts it gets.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use autoprov_core::Site;
use autoprov_store::Store;

pub struct TestApp {
    pub addr: SocketAddr,
    pub dir: tempfile::TempDir,
    pub store: Store,
    /// Where the store lives (file path or PostgreSQL URL), kept across [`TestApp::restart`].
    pub db: String,
    pub client: reqwest::Client,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
}

/// Which database each running test site uses (only PostgreSQL ones are recorded).
static SITE_DBS: std::sync::Mutex<Vec<(PathBuf, String)>> = std::sync::Mutex::new(Vec::new());

/// Environment for an `autoprov` subprocess working on the site at `site`: names the test's
/// PostgreSQL database (`AUTOPROV_DATABASE`) when the site's server uses one, else nothing (the
/// command finds the site's SQLite file itself).
pub fn cli_env(site: impl AsRef<Path>) -> Vec<(&'static str, String)> {
    let site = site.as_ref();
    let dbs = SITE_DBS.lock().unwrap_or_else(|p| p.into_inner());
    dbs.iter()
        .rev()
        .find(|(dir, _)| dir == site)
        .map(|(_, db)| vec![("AUTOPROV_DATABASE", db.clone())])
        .unwrap_or_default()
}

/// Run `autoprov ARGS --site SITE` on the site's database (see [`cli_env`]) and return its
/// stdout; fails the test when the command fails.
pub fn run_cli(site: &Path, args: &[&str]) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .args(args)
        .arg("--site")
        .arg(site)
        .envs(cli_env(site))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A fresh database location for the site in `dir`: a new PostgreSQL database when the test
/// command started one, else the site's SQLite file.
pub async fn test_db_location(dir: &Path, site: &Site) -> String {
    autoprov_store::testing::test_database(&dir.join(&site.config.server.database)).await
}

/// Open the store at `location` the way `autoprov serve` does (write-behind of
/// `[server] state_batch_ms` on SQLite).
pub async fn open_server_store(site: &Site, location: &str) -> Store {
    let batch = site.config.server.state_batch_ms;
    let options = autoprov_store::StoreOptions {
        write_behind: (batch > 0).then(|| Duration::from_millis(batch)),
        ..Default::default()
    };
    Store::connect_with(location, &options)
        .await
        .expect("store opens")
}

impl Drop for TestApp {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

/// Write a snippet and date it `age` seconds back.
pub fn write_script(site: &Path, name: &str, text: &str, age: u64) {
    let p = site.join(name);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    let f = std::fs::File::options().write(true).open(&p).unwrap();
    f.set_modified(SystemTime::now() - Duration::from_secs(age))
        .unwrap();
}

/// The configuration of the reference's golden scenario a (shared with the core golden tests).
pub const SCENARIO_A: &str = include_str!("../../crates/core/tests/golden/scenario-a.toml");

/// The snippets of scenario a, two days old as in the reference capture.
pub fn scenario_a_scripts(site: &Path) {
    let age = 172_801;
    write_script(
        site,
        "scripts/staging-all-default.txt",
        "# staging: set admin password\nconfig add CMD0 /user admin,s3cret\nconfig activate\nconfig rem CMD0 /user\n",
        age,
    );
    write_script(
        site,
        "scripts/update-phone-default.txt",
        "config add CMD0 /name This+is+a+Phone%21\n",
        age,
    );
    write_script(
        site,
        "scripts/update-all-hq.txt",
        "config add PHONE SIG /coder OPUS-WB,20,k1\n",
        age,
    );
}

impl TestApp {
    /// Start a server on a new site with this configuration; `prepare` adds files first.
    pub async fn spawn(toml: &str, prepare: impl FnOnce(&Path)) -> TestApp {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("autoprov.toml"), toml).unwrap();
        std::fs::create_dir_all(dir.path().join("scripts")).unwrap();
        prepare(dir.path());
        Self::start(dir).await
    }

    /// Start a server on an existing site directory.
    pub async fn start(dir: tempfile::TempDir) -> TestApp {
        let site = Site::load(dir.path()).expect("site loads");
        let db = test_db_location(dir.path(), &site).await;
        TestApp::start_on(dir, db).await
    }

    /// Start a server on an existing site directory and database.
    pub async fn start_on(dir: tempfile::TempDir, db: String) -> TestApp {
        let site = Site::load(dir.path()).expect("site loads");
        if autoprov_store::is_postgres_url(&db) {
            let mut dbs = SITE_DBS.lock().unwrap_or_else(|p| p.into_inner());
            dbs.push((dir.path().to_path_buf(), db.clone()));
        }
        let store = open_server_store(&site, &db).await;
        let state = autoprov_server::AppState::new(site, store.clone());
        let bound = autoprov_server::bind(&["127.0.0.1:0".parse().unwrap()])
            .await
            .expect("bind");
        let addr = bound.local_addrs()[0];
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        tokio::spawn(async move {
            let _ = bound
                .run(state, async {
                    let _ = rx.await;
                })
                .await;
        });
        TestApp {
            addr,
            dir,
            store,
            db,
            client: reqwest::Client::builder().no_proxy().build().unwrap(),
            shutdown: Some(tx),
        }
    }

    /// Stop this server and start a new one on the same site directory and database (e.g.
    /// after the test changed `autoprov.toml`). The new server listens on a new port.
    pub async fn restart(mut self) -> TestApp {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        // What the old server queued must be in the database before the new one reads it.
        self.store.close().await;
        let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().unwrap());
        TestApp::start_on(dir, self.db.clone()).await
    }

    /// Run `autoprov ARGS --site <this site>` (see [`run_cli`]). The command is another
    /// process: flush `self.store` first when it must see the server's latest writes.
    pub fn cli(&self, args: &[&str]) -> String {
        run_cli(&self.site(), args)
    }

    pub fn site(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    pub fn url(&self, path_and_query: &str) -> String {
        format!("http://{}{}", self.addr, path_and_query)
    }

    pub async fn get(&self, path_and_query: &str) -> (u16, String) {
        let r = self
            .client
            .get(self.url(path_and_query))
            .send()
            .await
            .expect("GET");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }

    pub async fn put(&self, path_and_query: &str, body: impl Into<reqwest::Body>) -> (u16, String) {
        let r = self
            .client
            .put(self.url(path_and_query))
            .body(body)
            .send()
            .await
            .expect("PUT");
        let status = r.status().as_u16();
        (status, r.text().await.unwrap())
    }
}

/// A simulated innovaphone device: it keeps its update URL, firmware, boot code and CHECK
/// variable, and follows the commands of each script the way the device firmware does.
pub struct Device {
    pub url: String,
    pub device_type: String,
    pub sn: String,
    pub hwid: String,
    pub ip: String,
    pub prot: Option<String>,
    pub boot: Option<String>,
    pub check: Option<String>,
    pub resets: u32,
}

impl Device {
    pub fn new(url: &str) -> Device {
        Device {
            url: url.to_string(),
            device_type: "IP232".into(),
            sn: "00-90-33-30-00-af".into(),
            hwid: "IP232-30-00-af".into(),
            ip: "10.0.0.5".into(),
            prot: None,
            boot: None,
            check: None,
            resets: 0,
        }
    }

    /// The URL as the device requests it: placeholders expanded, update serials appended.
    pub fn request_url(&self) -> String {
        let mut u = self
            .url
            .replace("#t", &self.device_type)
            .replace("#m", &self.sn)
            .replace("#h", &self.hwid)
            .replace("#i", &self.ip);
        for (k, v) in [
            ("PROT", &self.prot),
            ("BOOT", &self.boot),
            ("CHECK", &self.check),
        ] {
            if let Some(v) = v {
                u.push(if u.contains('?') { '&' } else { '?' });
                u.push_str(&format!("{k}={v}"));
            }
        }
        u
    }

    /// Poll once and execute the script. Returns the script.
    pub async fn poll(&mut self, client: &reqwest::Client) -> String {
        let body = client
            .get(self.request_url())
            .header("User-Agent", "innovaphone-IP232/137640")
            .send()
            .await
            .expect("poll")
            .text()
            .await
            .unwrap();
        self.execute(&body);
        body
    }

    fn execute(&mut self, script: &str) {
        let mut need_reset = false;
        for line in script.lines() {
            let line = line.trim_end_matches('\r');
            if line.starts_with('#') || line.is_empty() {
                continue;
            }
            let w: Vec<&str> = line.split(' ').collect();
            match w.as_slice() {
                ["config", "add", "UP1", "/url", enc] => {
                    self.url = percent_decode(enc);
                }
                ["mod", "cmd", "UP1", "check", "ser", serial] => {
                    if self.check.as_deref() == Some(*serial) {
                        return; // the device stops the script here
                    }
                    self.check = Some(serial.to_string());
                }
                ["mod", "cmd", "UP0", "prot", _url, "ser", build]
                    if self.prot.as_deref() != Some(*build) =>
                {
                    self.prot = Some(build.to_string());
                    need_reset = true;
                }
                ["mod", "cmd", "UP0", "boot", _url, "ser", build]
                    if self.boot.as_deref() != Some(*build) =>
                {
                    self.boot = Some(build.to_string());
                    need_reset = true;
                }
                ["iresetn"] if need_reset => {
                    self.resets += 1;
                    need_reset = false;
                }
                _ => {}
            }
        }
    }
}

pub fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' && i + 2 < b.len() {
            if let Ok(v) = u8::from_str_radix(&s[i + 1..i + 3], 16) {
                out.push(v);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Compare a response with a reference capture, loosely where the reference depends on time
/// or address: the capture's `127.0.0.1:<port>` is replaced by this server's address (raw and
/// URL-encoded), and the numbers in "`<N>s old`" and "`: <N> days`" are replaced by `N`.
pub fn assert_like_golden(actual: &str, golden_file: &str, addr: SocketAddr, golden_host: &str) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("crates/core/tests/golden")
        .join(golden_file);
    let expected = std::fs::read_to_string(path).unwrap();
    let expected = expected.replace(golden_host, &addr.to_string()).replace(
        &golden_host.replace(':', "%3A"),
        &addr.to_string().replace(':', "%3A"),
    );
    let norm = |s: &str| regex_lite_replace(s, " old", 's');
    assert_eq!(
        norm(actual),
        norm(&expected),
        "response differs from {golden_file}"
    );
}

/// Replace `<digits><unit><suffix>` by `N<unit><suffix>` and ages like `: 2 days` by `: N days`,
/// without a regex dependency.
fn regex_lite_replace(s: &str, suffix: &str, unit: char) -> String {
    let mut out = String::new();
    for line in s.split("\r\n") {
        let mut l = line.to_string();
        if let Some(p) = l.find(&format!("{unit}{suffix}")) {
            let start = l[..p].rfind(' ').map(|i| i + 1).unwrap_or(0);
            if l[start..p].chars().all(|c| c.is_ascii_digit()) {
                l = format!("{}N{}", &l[..start], &l[p..]);
            }
        }
        if l.starts_with("# > ") {
            if let Some(p) = l.rfind(": ") {
                l = format!("{}: AGE", &l[..p]);
            }
        }
        out.push_str(&l);
        out.push_str("\r\n");
    }
    out
}

/// Requests a1 to a4 of the reference captures against `app`, compared loosely with them.
pub async fn assert_answers_like_reference(app: &TestApp) {
    let dev = "type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5";
    let host = "127.0.0.1:8091";
    let (_, a1) = app.get("/update.php").await;
    assert_like_golden(&a1, "a1-no-args.txt", app.addr, host);
    let (_, a2) = app.get(&format!("/update.php?{dev}")).await;
    assert_like_golden(&a2, "a2-new-device-staging.txt", app.addr, host);
    let (_, a3) = app
        .get(&format!(
            "/update.php?polling=5&phase=update&{dev}&env=hq&PROT=137640&BOOT=137640"
        ))
        .await;
    assert_like_golden(&a3, "a3-update-phase.txt", app.addr, host);
    let md5 = a3
        .lines()
        .find_map(|l| l.strip_prefix("mod cmd UP1 check ser "))
        .expect("a3 sets the CHECK serial")
        .trim();
    let (_, a4) = app
        .get(&format!(
            "/update.php?polling=0&phase=update&{dev}&env=hq&PROT=137640&BOOT=137640&CHECK={md5}"
        ))
        .await;
    assert_like_golden(&a4, "a4-check-good.txt", app.addr, host);
}

/// `GET /metrics` with an API token.
pub async fn metrics(app: &TestApp) -> String {
    autoprov_server::admin::auth::set_password(&app.store, "admin", "metrics password")
        .await
        .unwrap();
    let token = autoprov_server::admin::auth::create_token(&app.store, "admin", "prometheus")
        .await
        .unwrap();
    let r = app
        .client
        .get(app.url("/metrics"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(r.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/plain; version=0.0.4"));
    r.text().await.unwrap()
}

/// The value of the sample `name{labels}` in a Prometheus text, which must be there once.
pub fn sample(text: &str, series: &str) -> f64 {
    let values: Vec<f64> = text
        .lines()
        .filter_map(|l| l.strip_prefix(series)?.strip_prefix(' ')?.parse().ok())
        .collect();
    assert_eq!(values.len(), 1, "{series} in:\n{text}");
    values[0]
}
