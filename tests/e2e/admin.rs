//! Issue 6: the operators' web UI (`/admin`) and REST API (`/api/v1`): login and safety
//! (CSRF, rate limiting, cookie flags, nothing reachable without login except device-facing
//! endpoints), the seed's filter semantics, every documented API path, backups and their diff,
//! signed-certificate upload, the CLI over the same service layer.

use std::collections::HashMap;
use std::path::Path;
use std::process::Command;

use autoprov_server::admin::auth;
use reqwest::redirect::Policy;
use reqwest::StatusCode;

use crate::helpers::{TestApp, SCENARIO_A};

const PASSWORD: &str = "correct horse battery";

fn site_toml() -> String {
    format!("{SCENARIO_A}\n[customcerts]\ndir = \"certs\"\n")
}

fn autoprov() -> Command {
    Command::new(env!("CARGO_BIN_EXE_autoprov"))
}

/// A running server with an operator, three innovaphone devices and two backups of the first.
async fn fleet() -> TestApp {
    let app = TestApp::spawn(&site_toml(), crate::helpers::scenario_a_scripts).await;
    auth::set_password(&app.store, "admin", PASSWORD)
        .await
        .unwrap();
    for (ty, sn, ip) in [
        ("IP222", "00-90-33-22-00-01", "172.16.1.5"),
        ("IP232", "00-90-33-32-00-02", "172.16.1.6"),
        ("IP222", "00-90-33-22-00-03", "10.0.0.1"),
    ] {
        let hwid = format!("{ty}-{}", &sn[9..]);
        let (status, _) = app
            .get(&format!(
                "/update.php?type={ty}&sn={sn}&hwid={hwid}&ip={ip}"
            ))
            .await;
        assert_eq!(status, 200);
        // The engine records the peer address; give each device its own.
        let mut st = app.store.load(sn).await.unwrap().unwrap();
        st.device.ip = Some(ip.to_string());
        app.store.save(&st).await.unwrap();
    }
    let dir = app.site().join("backup/IP222-22-00-01");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("IP222-22-00-01.1.txt"),
        "config change CMD0 /name old\nconfig change PHONE SIG /coder G711\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("IP222-22-00-01.2.txt"),
        "config change CMD0 /name new\nconfig change PHONE SIG /coder G711\n",
    )
    .unwrap();
    app
}

/// A browser-like client: keeps cookies by hand, does not follow redirects.
struct Browser {
    http: reqwest::Client,
    base: String,
    cookies: HashMap<String, String>,
    set_cookie_lines: Vec<String>,
}

impl Browser {
    fn new(app: &TestApp) -> Browser {
        Browser {
            http: reqwest::Client::builder()
                .no_proxy()
                .redirect(Policy::none())
                .build()
                .unwrap(),
            base: app.url(""),
            cookies: HashMap::new(),
            set_cookie_lines: Vec::new(),
        }
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    fn absorb(&mut self, r: &reqwest::Response) {
        for v in r.headers().get_all("set-cookie") {
            let line = v.to_str().unwrap().to_string();
            let (kv, _) = line.split_once(';').unwrap_or((&line, ""));
            let (k, val) = kv.split_once('=').unwrap();
            if val.is_empty() {
                self.cookies.remove(k);
            } else {
                self.cookies.insert(k.to_string(), val.to_string());
            }
            self.set_cookie_lines.push(line);
        }
    }

    async fn get(&mut self, path: &str) -> (StatusCode, String) {
        let r = self
            .http
            .get(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .send()
            .await
            .unwrap();
        self.absorb(&r);
        let s = r.status();
        (s, r.text().await.unwrap())
    }

    async fn post(&mut self, path: &str, form: &[(&str, &str)]) -> reqwest::Response {
        let body: String = form
            .iter()
            .map(|(k, v)| format!("{}={}", enc(k), enc(v)))
            .collect::<Vec<_>>()
            .join("&");
        let r = self
            .http
            .post(format!("{}{path}", self.base))
            .header("cookie", self.cookie_header())
            .header("content-type", "application/x-www-form-urlencoded")
            .body(body)
            .send()
            .await
            .unwrap();
        self.absorb(&r);
        r
    }

    /// Log in; returns the CSRF token of the session.
    async fn login(&mut self, password: &str) -> reqwest::Response {
        let (_, page) = self.get("/admin/login").await;
        let csrf = hidden(&page, "csrf");
        self.post(
            "/admin/login",
            &[("csrf", &csrf), ("user", "admin"), ("password", password)],
        )
        .await
    }
}

fn enc(s: &str) -> String {
    autoprov_server::admin::enc(s)
}

/// The value of the first hidden input `name` in `html`.
fn hidden(html: &str, name: &str) -> String {
    let key = format!("name=\"{name}\" value=\"");
    let i = html
        .find(&key)
        .unwrap_or_else(|| panic!("no {name} in {html}"))
        + key.len();
    html[i..i + html[i..].find('"').unwrap()].to_string()
}

#[tokio::test]
async fn nothing_is_reachable_without_login_except_device_endpoints() {
    let app = fleet().await;
    let mut b = Browser::new(&app);
    for p in [
        "/admin",
        "/admin/devices",
        "/admin/devices/00-90-33-22-00-01",
        "/admin/devices/00-90-33-22-00-01/diff?old=IP222-22-00-01.1.txt&new=IP222-22-00-01.2.txt",
        "/admin/devices/00-90-33-22-00-01/backups/IP222-22-00-01.1.txt",
        "/admin/devices/00-90-33-22-00-01/csr",
        "/admin/devices/00-90-33-22-00-01/preview",
        "/admin/overview",
        "/admin/site",
        "/admin/audit",
    ] {
        let (s, body) = b.get(p).await;
        assert_eq!(s, StatusCode::SEE_OTHER, "{p}: {body}");
        assert!(!body.contains("00-90-33"), "{p} leaked: {body}");
    }
    for (m, p) in autoprov_server::api::openapi::PATHS {
        let p = p
            .replace("{sn}", "00-90-33-22-00-01")
            .replace("{name}", "IP222-22-00-01.1.txt");
        let r = b
            .http
            .request(m.to_uppercase().parse().unwrap(), format!("{}{p}", b.base))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{m} {p}");
    }
    // A wrong token is no better.
    let r = b
        .http
        .get(format!("{}/api/v1/devices", b.base))
        .bearer_auth("nope")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    // POST forms without a session go to the login page, nothing is deleted.
    let r = b
        .post("/admin/devices/00-90-33-22-00-01/forget", &[("csrf", "x")])
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(app.store.load("00-90-33-22-00-01").await.unwrap().is_some());
    // Device-facing endpoints need no login.
    assert_eq!(b.get("/healthz").await.0, StatusCode::OK);
    let (s, body) = b
        .get("/update.php?type=IP222&sn=00-90-33-22-00-01&hwid=IP222-22-00-01&ip=172.16.1.5")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(body.contains("mod cmd UP0"), "{body}");
}

#[tokio::test]
async fn login_cookie_flags_csrf_and_logout() {
    let app = fleet().await;
    let mut b = Browser::new(&app);
    // Login form without its CSRF token: refused.
    let (_, page) = b.get("/admin/login").await;
    assert!(b.set_cookie_lines[0].contains("HttpOnly"));
    let r = b
        .post("/admin/login", &[("user", "admin"), ("password", PASSWORD)])
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Cross-site login attempt: refused.
    let csrf = hidden(&page, "csrf");
    let r = b
        .http
        .post(format!("{}/admin/login", b.base))
        .header("cookie", b.cookie_header())
        .header("origin", "http://evil.example")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}&user=admin&password={}", enc(PASSWORD)))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);

    let r = b.login(PASSWORD).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let session = b
        .set_cookie_lines
        .iter()
        .rev()
        .find(|l| l.starts_with("autoprov_session=") && !l.starts_with("autoprov_session=;"))
        .expect("session cookie")
        .clone();
    assert!(session.contains("HttpOnly"), "{session}");
    assert!(session.contains("SameSite=Strict"), "{session}");
    assert!(session.contains("Path=/"), "{session}");
    assert!(!session.contains("Secure"), "plain HTTP: {session}");
    assert!(auth::set_cookie("a", "b", 1, true).contains("; Secure"));

    let (s, page) = b.get("/admin/devices/00-90-33-22-00-01").await;
    assert_eq!(s, StatusCode::OK);
    let csrf = hidden(&page, "csrf");
    // Forget without / with a wrong CSRF token: refused.
    let r = b.post("/admin/devices/00-90-33-22-00-01/forget", &[]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = b
        .post(
            "/admin/devices/00-90-33-22-00-01/forget",
            &[("csrf", "wrong")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    // Right token but cross-site (Sec-Fetch-Site): refused.
    let r = b
        .http
        .post(format!("{}/admin/devices/00-90-33-22-00-01/forget", b.base))
        .header("cookie", b.cookie_header())
        .header("sec-fetch-site", "cross-site")
        .header("content-type", "application/x-www-form-urlencoded")
        .body(format!("csrf={csrf}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    assert!(app.store.load("00-90-33-22-00-01").await.unwrap().is_some());
    // Right token, same origin: done and audited.
    let r = b
        .post(
            "/admin/devices/00-90-33-22-00-01/forget",
            &[("csrf", &csrf)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(app.store.load("00-90-33-22-00-01").await.unwrap().is_none());
    let (_, audit) = b.get("/admin/audit").await;
    assert!(audit.contains("forget-device"), "{audit}");
    assert!(audit.contains("00-90-33-22-00-01"), "{audit}");

    // Logout ends the session on the server too.
    let old_cookie = b.cookie_header();
    let r = b.post("/admin/logout", &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    let r = b
        .http
        .get(format!("{}/admin/devices", b.base))
        .header("cookie", old_cookie)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
}

#[tokio::test]
async fn wrong_passwords_are_rate_limited() {
    let app = fleet().await;
    let mut b = Browser::new(&app);
    for _ in 0..auth::MAX_FAILURES {
        let r = b.login("wrong password").await;
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
    }
    // Now even the right password is refused for a while.
    let r = b.login(PASSWORD).await;
    assert_eq!(r.status(), StatusCode::TOO_MANY_REQUESTS);
    assert!(r.headers().get("retry-after").is_some());
    let audit = app.store.audit_recent(50).await.unwrap();
    assert!(audit.iter().filter(|e| e.action == "login-failed").count() >= 5);
}

#[tokio::test]
async fn pages_filter_device_diff_preview_overview_site() {
    let app = fleet().await;
    let mut b = Browser::new(&app);
    assert_eq!(b.login(PASSWORD).await.status(), StatusCode::SEE_OTHER);
    let (s, list) = b.get("/admin/devices?filter=172.16.+ip222").await;
    assert_eq!(s, StatusCode::OK);
    assert!(list.contains("1 device(s)"), "{list}");
    assert!(list.contains("00-90-33-22-00-01"));
    assert!(!list.contains("00-90-33-32-00-02"));
    let (_, list) = b.get("/admin/devices?filter=present&sort=-ip").await;
    assert!(list.contains("3 device(s)"), "{list}");
    let (_, list) = b.get("/admin/devices?filter=missing").await;
    assert!(list.contains("0 device(s)"), "{list}");
    // Escaping: a filter with markup comes back escaped.
    let (_, list) = b.get("/admin/devices?filter=%3Cscript%3E").await;
    assert!(!list.contains("<script>"));
    assert!(list.contains("&lt;script&gt;"));

    let (s, page) = b.get("/admin/devices/00-90-33-22-00-01").await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("172.16.1.5"), "{page}");
    assert!(page.contains("IP222-22-00-01.2.txt"), "{page}");
    assert!(page.contains("id=\"scripts\""));
    let (s, diff) = b
        .get("/admin/devices/00-90-33-22-00-01/diff?old=IP222-22-00-01.1.txt&new=IP222-22-00-01.2.txt")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        diff.contains("<span class=\"del\">- config change CMD0 /name old</span>"),
        "{diff}"
    );
    assert!(
        diff.contains("<span class=\"add\">+ config change CMD0 /name new</span>"),
        "{diff}"
    );
    let (s, file) = b
        .get("/admin/devices/00-90-33-22-00-01/backups/IP222-22-00-01.1.txt")
        .await;
    assert_eq!(s, StatusCode::OK);
    assert!(file.contains("/name old"));
    let (s, _) = b
        .get("/admin/devices/00-90-33-22-00-01/backups/..%2F..%2Fautoprov.toml")
        .await;
    assert_eq!(s, StatusCode::NOT_FOUND);

    let before = app.store.load("00-90-33-22-00-01").await.unwrap();
    let (s, pv) = b.get("/admin/devices/00-90-33-22-00-01/preview").await;
    assert_eq!(s, StatusCode::OK);
    assert!(pv.contains("mod cmd UP0"), "{pv}");
    assert_eq!(
        app.store.load("00-90-33-22-00-01").await.unwrap(),
        before,
        "preview must not write state"
    );

    let (s, ov) = b.get("/admin/overview").await;
    assert_eq!(s, StatusCode::OK);
    assert!(ov.contains("<svg id=\"chart-firmware\""), "{ov}");
    assert!(ov.contains("IP222"));
    let (s, site) = b.get("/admin/site").await;
    assert_eq!(s, StatusCode::OK);
    assert!(
        site.contains("staging") && site.contains("update-phone-default.txt"),
        "{site}"
    );
    let (s, _) = b.get("/admin/devices/nosuch").await;
    assert_eq!(s, StatusCode::NOT_FOUND);
}

/// Make a device's CSR (DER) with openssl, as the device would have uploaded it.
/// The site page's "Reload site" button: applies a changed `autoprov.toml`, shows a broken
/// one's error with file:line:column and keeps the running site; CSRF like every form.
#[tokio::test]
async fn site_page_reload_button() {
    let app = fleet().await;
    let mut b = Browser::new(&app);
    b.login(PASSWORD).await;
    let (_, page) = b.get("/admin/site").await;
    assert!(page.contains("id=\"reload\""), "{page}");
    let csrf = hidden(&page, "csrf");
    let toml = site_toml().replace("id = \"staging\"", "id = \"prestage\"");
    std::fs::write(app.site().join("autoprov.toml"), &toml).unwrap();
    // Without the CSRF token: refused, nothing reloaded.
    let r = b.post("/admin/site/reload", &[("csrf", "wrong")]).await;
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let (_, page) = b.get("/admin/site").await;
    assert!(!page.contains("prestage"), "{page}");
    let r = b.post("/admin/site/reload", &[("csrf", &csrf)]).await;
    assert_eq!(r.status(), StatusCode::OK);
    let page = r.text().await.unwrap();
    assert!(page.contains("Site reloaded."), "{page}");
    assert!(page.contains("<td>prestage</td>"), "{page}");
    std::fs::write(
        app.site().join("autoprov.toml"),
        format!("{toml}\n[times]\ngrace = -5\n"),
    )
    .unwrap();
    let r = b.post("/admin/site/reload", &[("csrf", &csrf)]).await;
    let page = r.text().await.unwrap();
    assert!(page.contains("Reload refused"), "{page}");
    assert!(page.contains("autoprov.toml:"), "{page}");
    assert!(page.contains("<td>prestage</td>"), "{page}");
    let (_, audit) = b.get("/admin/audit").await;
    assert!(
        audit.contains("reload-site-failed") && audit.contains("ui: ok"),
        "{audit}"
    );
}

pub(crate) fn write_csr(site: &Path, sn: &str) {
    std::fs::create_dir_all(site.join("certs")).unwrap();
    let out = Command::new("openssl")
        .args(["req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout"])
        .arg(site.join("device.key"))
        .args([
            "-subj",
            &format!("/CN={}", sn.replace('-', "")),
            "-outform",
            "DER",
            "-out",
        ])
        .arg(site.join(format!("certs/{sn}-request.p10.der")))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The built-in CA signs the pending CSR; returns the certificate and removes the installed
/// file again, so that the test can upload it like an operator.
fn signed_cert(site: &Path, sn: &str) -> String {
    for args in [vec!["ca", "init"], vec!["ca", "sign", "--sn", sn]] {
        crate::helpers::run_cli(site, &args);
    }
    let p = site.join(format!("certs/{sn}-signedrequest.cer"));
    let pem = std::fs::read_to_string(&p).unwrap();
    std::fs::remove_file(&p).unwrap();
    pem
}

#[tokio::test]
async fn csr_download_and_signed_certificate_upload() {
    let app = fleet().await;
    let sn = "00-90-33-22-00-01";
    write_csr(&app.site(), sn);
    let pem = signed_cert(&app.site(), sn);
    let mut b = Browser::new(&app);
    b.login(PASSWORD).await;
    let (s, page) = b.get(&format!("/admin/devices/{sn}")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(page.contains("Pending CSR"), "{page}");
    let (s, csr) = b.get(&format!("/admin/devices/{sn}/csr")).await;
    assert_eq!(s, StatusCode::OK);
    assert!(csr.contains("BEGIN CERTIFICATE REQUEST"), "{csr}");
    let csrf = hidden(&page, "csrf");
    // Garbage is refused with a reason.
    let r = b
        .post(
            &format!("/admin/devices/{sn}/certificate"),
            &[("csrf", &csrf), ("pem", "not a certificate")],
        )
        .await;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let r = b
        .post(
            &format!("/admin/devices/{sn}/certificate"),
            &[("csrf", &csrf), ("pem", &pem)],
        )
        .await;
    assert_eq!(r.status(), StatusCode::SEE_OTHER);
    assert!(app
        .site()
        .join(format!("certs/{sn}-signedrequest.cer"))
        .exists());
    let (_, page) = b.get(&format!("/admin/devices/{sn}")).await;
    assert!(page.contains("id=\"signed\""), "{page}");
    let audit = app.store.audit_recent(10).await.unwrap();
    assert!(audit.iter().any(|e| e.action == "upload-certificate"));
}

#[tokio::test]
async fn api_every_documented_path_with_a_token() {
    let app = fleet().await;
    let sn = "00-90-33-22-00-01";
    write_csr(&app.site(), sn);
    let pem = signed_cert(&app.site(), sn);
    let token = auth::create_token(&app.store, "admin", "test")
        .await
        .unwrap();
    let http = reqwest::Client::builder().no_proxy().build().unwrap();
    let call = |m: &str, p: &str| {
        http.request(m.parse().unwrap(), app.url(p))
            .bearer_auth(&token)
    };
    let r = call("GET", "/api/v1/openapi.json").send().await.unwrap();
    assert_eq!(r.status(), 200);
    let doc: serde_json::Value = r.json().await.unwrap();
    // The document and the route list agree.
    let mut documented = Vec::new();
    for (path, ops) in doc["paths"].as_object().unwrap() {
        for m in ops.as_object().unwrap().keys() {
            documented.push((m.clone(), path.clone()));
        }
    }
    documented.sort();
    let mut listed: Vec<(String, String)> = autoprov_server::api::openapi::PATHS
        .iter()
        .map(|(m, p)| (m.to_string(), p.to_string()))
        .collect();
    listed.sort();
    assert_eq!(documented, listed);

    // Filter semantics from seed 003.
    let r = call("GET", "/api/v1/devices?filter=172.16.%20ip222")
        .send()
        .await
        .unwrap();
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["total"], 1, "{page}");
    assert_eq!(page["devices"][0]["sn"], sn);
    for (f, n) in [
        ("16", 2),
        ("17", 0),
        ("172", 2),
        ("IP232", 1),
        ("present", 3),
        ("missing", 0),
        ("ip222 PRESENT", 2),
        ("ip22", 0),
    ] {
        let r = call("GET", &format!("/api/v1/devices?filter={}", enc(f)))
            .send()
            .await
            .unwrap();
        let page: serde_json::Value = r.json().await.unwrap();
        assert_eq!(page["total"], n, "filter {f}: {page}");
    }
    // Sorting and paging.
    let r = call("GET", "/api/v1/devices?sort=-ip&limit=2")
        .send()
        .await
        .unwrap();
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["total"], 3);
    assert_eq!(page["devices"].as_array().unwrap().len(), 2);
    assert_eq!(page["devices"][0]["ip"], "172.16.1.6");
    let r = call("GET", "/api/v1/devices?offset=2&limit=5&sort=ip")
        .send()
        .await
        .unwrap();
    let page: serde_json::Value = r.json().await.unwrap();
    assert_eq!(page["devices"][0]["ip"], "172.16.1.6");
    assert_eq!(
        call("GET", "/api/v1/devices?sort=bogus")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );
    assert_eq!(
        call("GET", "/api/v1/devices?limit=x")
            .send()
            .await
            .unwrap()
            .status(),
        400
    );

    let r = call("GET", &format!("/api/v1/devices/{sn}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let d: serde_json::Value = r.json().await.unwrap();
    assert_eq!(d["summary"]["ip"], "172.16.1.5");
    assert_eq!(d["state"]["sn"], sn);
    let r = call("GET", &format!("/api/v1/devices/{sn}/backups"))
        .send()
        .await
        .unwrap();
    let l: serde_json::Value = r.json().await.unwrap();
    assert_eq!(l.as_array().unwrap().len(), 2, "{l}");
    let r = call(
        "GET",
        &format!("/api/v1/devices/{sn}/backups/IP222-22-00-01.2.txt"),
    )
    .send()
    .await
    .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("/name new"));
    let r = call(
        "GET",
        &format!("/api/v1/devices/{sn}/diff?old=IP222-22-00-01.1.txt&new=IP222-22-00-01.2.txt"),
    )
    .send()
    .await
    .unwrap();
    let diff: serde_json::Value = r.json().await.unwrap();
    assert_eq!(diff[0]["op"], "-");
    assert_eq!(diff[1]["op"], "+");
    let r = call("GET", &format!("/api/v1/devices/{sn}/csr"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert!(r.text().await.unwrap().contains("CERTIFICATE REQUEST"));
    let r = call("PUT", &format!("/api/v1/devices/{sn}/certificate"))
        .body("junk")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 400);
    let r = call("PUT", &format!("/api/v1/devices/{sn}/certificate"))
        .body(pem)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    let r = call("GET", &format!("/api/v1/devices/{sn}/certificate"))
        .send()
        .await
        .unwrap();
    let c: serde_json::Value = r.json().await.unwrap();
    assert!(c["signed_cn"].is_string(), "{c}");
    let r = call("GET", &format!("/api/v1/devices/{sn}/preview"))
        .send()
        .await
        .unwrap();
    let p: serde_json::Value = r.json().await.unwrap();
    assert!(p["body"].as_str().unwrap().contains("mod cmd UP0"), "{p}");
    let r = call("POST", &format!("/api/v1/devices/{sn}/resync"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let o: serde_json::Value = r.json().await.unwrap();
    assert!(o["outcome"].as_str().unwrap().contains("skipped"), "{o}");
    let r = call("DELETE", &format!("/api/v1/devices/{sn}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 204);
    let r = call("DELETE", &format!("/api/v1/devices/{sn}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = call("GET", "/api/v1/audit").send().await.unwrap();
    let a: serde_json::Value = r.json().await.unwrap();
    assert!(
        a.as_array()
            .unwrap()
            .iter()
            .any(|e| e["action"] == "forget-device"),
        "{a}"
    );

    // No documented path answers 5xx to unknown devices or odd input.
    for (m, p) in autoprov_server::api::openapi::PATHS {
        for (dev, name) in [("nosuch", "x"), ("..", "..%2F..%2Fx"), ("%00", "%FF")] {
            let p = p.replace("{sn}", dev).replace("{name}", name);
            let r = call(
                &m.to_uppercase(),
                &format!("{p}?filter=%FF&old=a&new=b&limit=-1"),
            )
            .send()
            .await
            .unwrap();
            assert!(r.status().as_u16() < 500, "{m} {p}: {}", r.status());
        }
    }
}

#[tokio::test]
async fn cookie_sessions_need_the_csrf_header_for_api_changes() {
    let app = fleet().await;
    let mut b = Browser::new(&app);
    b.login(PASSWORD).await;
    let (_, page) = b.get("/admin/devices").await;
    let csrf = hidden(&page, "csrf");
    let url = format!("{}/api/v1/devices/00-90-33-22-00-03", b.base);
    let r = b
        .http
        .delete(&url)
        .header("cookie", b.cookie_header())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let r = b
        .http
        .delete(&url)
        .header("cookie", b.cookie_header())
        .header("x-csrf-token", csrf)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
}

#[tokio::test]
async fn cli_devices_list_show_forget_and_backups() {
    let app = fleet().await;
    // The CLI is another process: it reads what the server has written, not its queue.
    app.store.flush().await.unwrap();
    let run = |args: &[&str]| app.cli(args);
    // The old form still works, and is `devices list`.
    let all = run(&["devices"]);
    assert!(all.contains("3 device(s)"), "{all}");
    let some = run(&["devices", "list", "172.16.", "ip222"]);
    assert!(
        some.contains("1 device(s)") && some.contains("00-90-33-22-00-01"),
        "{some}"
    );
    let json = run(&["devices", "list", "--json", "IP232"]);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(v.as_array().unwrap().len(), 1);
    let show = run(&["devices", "show", "00-90-33-22-00-03"]);
    assert!(show.contains("10.0.0.1"), "{show}");
    let l = run(&["backups", "list", "00-90-33-22-00-01"]);
    assert!(l.contains("IP222-22-00-01.1.txt"), "{l}");
    let d = run(&[
        "backups",
        "diff",
        "00-90-33-22-00-01",
        "IP222-22-00-01.1.txt",
        "IP222-22-00-01.2.txt",
    ]);
    assert!(
        d.contains("-config change CMD0 /name old") && d.contains("+config change CMD0 /name new"),
        "{d}"
    );
    let g = run(&[
        "backups",
        "get",
        "00-90-33-22-00-01",
        "IP222-22-00-01.2.txt",
    ]);
    assert!(g.contains("/name new"));
    run(&["devices", "forget", "00-90-33-22-00-03"]);
    assert!(app.store.load("00-90-33-22-00-03").await.unwrap().is_none());
    let t = run(&["admin", "token"]);
    assert_eq!(t.trim().len(), 64);
    let r = reqwest::Client::new()
        .get(app.url("/api/v1/devices"))
        .bearer_auth(t.trim())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test]
async fn first_run_creates_an_operator_only_once() {
    let store = autoprov_store::Store::open_memory().await.unwrap();
    // (No env password set in tests: a random one is generated and returned for printing.)
    if std::env::var(auth::PASSWORD_ENV).is_err() && std::env::var(auth::PASSWORD_FILE_ENV).is_err()
    {
        let pw = auth::ensure_admin(&store)
            .await
            .unwrap()
            .expect("generated");
        assert!(pw.len() >= 16);
        let u = store.user_get("admin").await.unwrap().unwrap();
        assert!(u.hash.starts_with("$argon2"));
        assert!(!u.hash.contains(&pw));
        assert!(auth::verify_password(&pw, &u.hash));
    }
    assert_eq!(auth::ensure_admin(&store).await.unwrap(), None);
}

/// Seed 003's `show` tags: the media and registration queries with their concat() columns.
const SHOW_QUERIES: &str = r#"
[[queries.query]]
id = "media"
title = "Media"
cmd = "mod cmd MEDIA xml-info"
applies = [{ value = "*" }]
show = [
  { title = "NAT", xpath = "concat(/state/queries/media/info/nat/@result, ' (', /state/queries/media/info/nat/@public-addr, ')')" },
  { title = "Server", xpath = "concat('STUN: ', /state/queries/media/info/@stun, ' TURN: ', /state/queries/media/info/@turn, ' (', /state/queries/media/info/@turn-user, ')')" },
]

[[queries.query]]
id = "registration"
title = "Registration"
cmd = "mod cmd PHONE/USER phone-regs /cmd phone-regs"
applies = [{ value = "*" }]
[[queries.query.show]]
title = "State: User/Number"
xpath = """concat(/state/queries/registration/info/reg[@id = "0"]/@state, ': ' , /state/queries/registration/info/reg[@id = "0"]/@h323, '/', /state/queries/registration/info/reg[@id = "0"]/@e164)"""
"#;

#[tokio::test]
async fn query_show_columns_in_list_page_api_and_cli() {
    let toml = format!("{}{SHOW_QUERIES}", site_toml());
    let app = TestApp::spawn(&toml, crate::helpers::scenario_a_scripts).await;
    auth::set_password(&app.store, "admin", PASSWORD)
        .await
        .unwrap();
    let (sn, other) = ("00-90-33-32-00-0a", "00-90-33-32-00-0b");
    for sn in [sn, other] {
        let hwid = format!("IP232-{}", &sn[9..]);
        let (s, _) = app
            .get(&format!(
                "/update.php?type=IP232&sn={sn}&hwid={hwid}&ip=172.16.1.9"
            ))
            .await;
        assert_eq!(s, 200);
    }
    // The device uploads its query results as the update script tells it (mode=query).
    let (s, r) = app
        .put(
            &format!("/update.php?mode=query&sn={sn}&id=media"),
            "<info stun=\"stun.example.com\" \
             turn=\"turn.example.com\" turn-user=\"alice\"><nat result=\"Full Cone\" \
             public-addr=\"203.0.113.7:5060\"/></info>",
        )
        .await;
    assert_eq!(s, 200, "{r}");
    assert!(r.contains("# queries media for"), "{r}");
    let (s, r) = app
        .put(
            &format!("/update.php?mode=query&sn={sn}&id=registration"),
            "<info><reg id=\"1\" state=\"Down\" h323=\"x\" e164=\"9\"/>\
             <reg id=\"0\" state=\"Up\" h323=\"Front &amp; desk\" e164=\"201\"/></info>",
        )
        .await;
    assert_eq!(s, 200, "{r}");
    let nat = "Full Cone (203.0.113.7:5060)";
    let server = "STUN: stun.example.com TURN: turn.example.com (alice)";

    // HTML: the titles head extra columns, the values fill them (escaped).
    let mut b = Browser::new(&app);
    b.login(PASSWORD).await;
    let (st, page) = b.get("/admin/devices").await;
    assert_eq!(st, StatusCode::OK);
    assert!(page.contains("<th class=\"show\">NAT</th>"), "{page}");
    assert!(
        page.contains("<th class=\"show\">State: User/Number</th>"),
        "{page}"
    );
    assert!(
        page.contains(&format!("<td class=\"show\">{nat}</td>")),
        "{page}"
    );
    assert!(
        page.contains("<td class=\"show\">Up: Front &amp; desk/201</td>"),
        "{page}"
    );
    // The device without results gets the concat() of empty strings.
    assert!(page.contains("<td class=\"show\"> ()</td>"), "{page}");
    let (_, dev) = b.get(&format!("/admin/devices/{sn}")).await;
    assert!(
        dev.contains(&format!("<tr><th>NAT</th><td>{nat}</td></tr>")),
        "{dev}"
    );
    // The filter keeps its fields: show values are not searched.
    let (_, none) = b.get("/admin/devices?filter=alice").await;
    assert!(none.contains("0 device(s)"), "{none}");

    // API: `show` per row, titles on the page, and in the device summary.
    let token = auth::create_token(&app.store, "admin", "t").await.unwrap();
    let api = |p: &str| {
        reqwest::Client::new()
            .get(app.url(p))
            .bearer_auth(&token)
            .send()
    };
    let v: serde_json::Value = api("/api/v1/devices").await.unwrap().json().await.unwrap();
    assert_eq!(
        v["show_titles"],
        serde_json::json!(["NAT", "Server", "State: User/Number"])
    );
    let row = v["devices"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["sn"] == sn)
        .unwrap();
    assert_eq!(
        row["show"][0],
        serde_json::json!({"title": "NAT", "value": nat})
    );
    assert_eq!(row["show"][1]["value"], server);
    assert_eq!(row["show"][2]["value"], "Up: Front & desk/201");
    let d: serde_json::Value = api(&format!("/api/v1/devices/{sn}"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(d["summary"]["show"][0]["value"], nat);
    let doc: serde_json::Value = api("/api/v1/openapi.json")
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert!(
        doc["components"]["schemas"]["DeviceRow"]["properties"]["show"].is_object(),
        "{doc}"
    );

    // CLI: extra columns in the list, `show` in the JSON.
    app.store.flush().await.unwrap();
    let run = |args: &[&str]| app.cli(args);
    let list = run(&["devices", "list"]);
    assert!(
        list.contains("NAT") && list.contains(nat) && list.contains(server),
        "{list}"
    );
    let show: serde_json::Value = serde_json::from_str(&run(&["devices", "show", sn])).unwrap();
    assert_eq!(show["show"][0]["value"], nat);
    assert_eq!(show["sn"], sn);

    // `autoprov check`: an expression that does not compile, with its position.
    let bad = toml.replace("@e164)\"\"\"", "@e164\"\"\"");
    assert_ne!(bad, toml);
    std::fs::write(app.site().join("autoprov.toml"), &bad).unwrap();
    let out = autoprov()
        .args(["check", "--site"])
        .arg(app.site())
        .envs(crate::helpers::cli_env(app.site()))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    let line = bad
        .lines()
        .position(|l| l.starts_with("xpath = \"\"\"concat(/state/queries/registration"))
        .unwrap()
        + 1;
    assert!(
        text.contains(&format!(
            "autoprov.toml:{line}:9: error: query 'registration' show 'State: User/Number'"
        )),
        "{text}"
    );
}

/// The acceptance walk in headless Chromium, driven over WebDriver (chromedriver) with plain
/// HTTP+JSON: log in, filter devices, open a device, diff two backups, upload a signed
/// certificate, log out. Screenshots go to `target/e2e-artifacts/admin-*.png`. Skipped (with a
/// message) when `chromium`/`chromedriver` are missing; `./test.sh` installs them.
mod browser {
    use super::*;
    use serde_json::{json, Value};

    const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";

    struct Driver {
        http: reqwest::Client,
        base: String,
        child: std::process::Child,
    }

    impl Drop for Driver {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    impl Driver {
        async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Value {
            let mut r = self
                .http
                .request(method.parse().unwrap(), format!("{}{path}", self.base));
            if let Some(b) = body {
                r = r.json(&b);
            }
            let v: Value = r.send().await.unwrap().json().await.unwrap();
            assert!(v["value"].get("error").is_none(), "{method} {path}: {v}");
            v["value"].clone()
        }
    }

    fn base64_decode(s: &str) -> Vec<u8> {
        let val = |c: u8| match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            _ => 63,
        };
        let bytes: Vec<u8> = s
            .bytes()
            .filter(|c| *c != b'=' && !c.is_ascii_whitespace())
            .collect();
        let mut out = Vec::with_capacity(bytes.len() * 3 / 4);
        for chunk in bytes.chunks(4) {
            let mut n = 0u32;
            for (i, c) in chunk.iter().enumerate() {
                n |= (val(*c) as u32) << (18 - 6 * i);
            }
            out.push((n >> 16) as u8);
            if chunk.len() > 2 {
                out.push((n >> 8) as u8);
            }
            if chunk.len() > 3 {
                out.push(n as u8);
            }
        }
        out
    }

    struct Session<'a> {
        d: &'a Driver,
        id: String,
        shots: std::path::PathBuf,
    }

    impl Session<'_> {
        async fn go(&self, url: &str) {
            self.d
                .call(
                    "POST",
                    &format!("/session/{}/url", self.id),
                    Some(json!({ "url": url })),
                )
                .await;
        }
        async fn find(&self, css: &str) -> String {
            let v = self
                .d
                .call(
                    "POST",
                    &format!("/session/{}/element", self.id),
                    Some(json!({"using": "css selector", "value": css})),
                )
                .await;
            v[ELEMENT]
                .as_str()
                .unwrap_or_else(|| panic!("{css}: {v}"))
                .to_string()
        }
        async fn click(&self, css: &str) {
            let e = self.find(css).await;
            self.d
                .call(
                    "POST",
                    &format!("/session/{}/element/{e}/click", self.id),
                    Some(json!({})),
                )
                .await;
        }
        async fn type_in(&self, css: &str, text: &str) {
            let e = self.find(css).await;
            self.d
                .call(
                    "POST",
                    &format!("/session/{}/element/{e}/clear", self.id),
                    Some(json!({})),
                )
                .await;
            self.d
                .call(
                    "POST",
                    &format!("/session/{}/element/{e}/value", self.id),
                    Some(json!({ "text": text })),
                )
                .await;
        }
        async fn source(&self) -> String {
            self.d
                .call("GET", &format!("/session/{}/source", self.id), None)
                .await
                .as_str()
                .unwrap()
                .to_string()
        }
        /// The page source once it contains `needle` (navigation after a click is not awaited
        /// by every driver); panics with the page after 10 s.
        async fn wait_for(&self, needle: &str) -> String {
            let mut page = String::new();
            for _ in 0..100 {
                page = self.source().await;
                if page.contains(needle) {
                    return page;
                }
                tokio::time::sleep(std::time::Duration::from_millis(100)).await;
            }
            panic!("page never showed {needle:?}: {page}");
        }
        async fn shot(&self, name: &str) {
            let v = self
                .d
                .call("GET", &format!("/session/{}/screenshot", self.id), None)
                .await;
            let png = base64_decode(v.as_str().unwrap());
            std::fs::write(self.shots.join(format!("admin-{name}.png")), png).unwrap();
        }
    }

    fn have(cmd: &str) -> bool {
        Command::new("sh")
            .args(["-c", &format!("command -v {cmd}")])
            .output()
            .map(|o| o.status.success())
            .unwrap_or(false)
    }

    #[tokio::test]
    async fn headless_chromium_walk() {
        if !have("chromedriver") || !have("chromium") {
            eprintln!("SKIPPED headless_chromium_walk: chromium/chromedriver not installed (./test.sh installs them)");
            return;
        }
        let app = fleet().await;
        let sn = "00-90-33-22-00-01";
        write_csr(&app.site(), sn);
        let pem = signed_cert(&app.site(), sn);

        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        let d = Driver {
            http: reqwest::Client::builder().no_proxy().build().unwrap(),
            base: format!("http://127.0.0.1:{port}"),
            child,
        };
        let mut ready = false;
        for _ in 0..100 {
            if let Ok(r) = d.http.get(format!("{}/status", d.base)).send().await {
                if r.status().is_success() {
                    ready = true;
                    break;
                }
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        assert!(ready, "chromedriver did not start");
        let caps = json!({"capabilities": {"alwaysMatch": {"browserName": "chrome",
            "goog:chromeOptions": {"binary": "/usr/bin/chromium", "args": [
                "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                "--disable-background-networking", "--window-size=1400,1000"]}}}});
        let v = d.call("POST", "/session", Some(caps)).await;
        let id = v["sessionId"].as_str().unwrap().to_string();
        let shots = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/e2e-artifacts");
        std::fs::create_dir_all(&shots).unwrap();
        let s = Session { d: &d, id, shots };

        // Not logged in: the UI sends us to the login page.
        s.go(&app.url("/admin/devices")).await;
        s.wait_for("id=\"password\"").await;
        s.type_in("#password", "wrong password").await;
        s.click("#login").await;
        s.wait_for("Wrong user name or password").await;
        s.type_in("#password", PASSWORD).await;
        s.click("#login").await;
        s.wait_for("3 device(s)").await;
        s.shot("devices").await;

        // Filter as in seed 003.
        s.type_in("#filter", "172.16. ip222").await;
        s.click("#apply").await;
        let list = s.wait_for("1 device(s)").await;
        assert!(!list.contains("00-90-33-32-00-02"), "{list}");
        s.shot("devices-filtered").await;

        // Open the device, diff its two backups.
        s.click(&format!("a[href=\"/admin/devices/{sn}\"]")).await;
        s.wait_for("Pending CSR").await;
        s.shot("device").await;
        s.click("#diff").await;
        s.wait_for("+ config change CMD0 /name new").await;
        s.shot("diff").await;

        // Upload the signed certificate.
        s.go(&app.url(&format!("/admin/devices/{sn}"))).await;
        s.type_in("#pem", &pem).await;
        s.click("#upload").await;
        s.wait_for("id=\"signed\"").await;
        assert!(app
            .site()
            .join(format!("certs/{sn}-signedrequest.cer"))
            .exists());

        // The overview, then log out.
        s.go(&app.url("/admin/overview")).await;
        s.wait_for("chart-firmware").await;
        s.shot("overview").await;
        s.click("#logout").await;
        s.wait_for("id=\"password\"").await;
        s.go(&app.url("/admin/devices")).await;
        s.wait_for("id=\"password\"").await;
        d.call("DELETE", &format!("/session/{}", s.id), None).await;
    }
}
