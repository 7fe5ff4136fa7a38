//! Multi-vendor provisioning over real HTTP, driven with `curl` sending the User-Agent strings
//! of the vendor facts: each phone's boot sequence gets the right files, recognisable phones
//! land in the inventory, unrecognisable requests get 404, Yealink files are stable (MD5) and
//! decrypt with `openssl`, and a broken site template leaves the last good one serving.

use std::path::Path;

use crate::helpers::*;

const SNOM_D785: &str = "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-g9ba52f5 000413922D24 SXM:0 UXM:0)";
const YEALINK_T46S: &str = "Yealink SIP-T46S 66.86.0.15 00:15:65:aa:bb:cc";
const YEALINK_T56A: &str = "Yealink SIP-T56A 58.80.0.25 001565f429a4";
const GIGASET_N870: &str = "Gigaset N870 IP PRO/83.V2.11.0+build.a546b91;7C2F80E0D605";
const POLYCOM_VVX: &str = "FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 Type/Application";
const CISCO_SPA: &str = "Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400UK)";
const GS_GXP2200: &str = "Grandstream Model HW GXP2200 V2.2A SW 1.0.1.33 DevId 000b82462d97";
const FANVIL_X4: &str = "Fanvil X4 2.10.2.6887 0c383e07e16c";
const DIGIUM_D40: &str = "Digium D40 1_4_1_0_57025";

const SITE: &str = r#"
[settings]
sip_server = "pbx.example.com"
ntp_server = "ntp.example.com"

[[groups]]
id = "sales"
models = ["yealink/T46S"]
settings.ntp_server = "ntp.sales.example.com"

[devices."001565aabbcc".settings]
lines.1 = { user = "201", password = "s3cret", display_name = "Alice" }

[devices."000413922D24".settings]
lines.1 = { user = "301", password = "pw301" }
"#;

/// One `curl` request: status, response headers (lower-case names) and body bytes.
struct Fetched {
    status: u16,
    headers: String,
    body: Vec<u8>,
}

impl Fetched {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn header(&self, name: &str) -> Option<String> {
        self.headers.lines().find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.trim()
                .eq_ignore_ascii_case(name)
                .then(|| v.trim().to_string())
        })
    }
}

async fn curl(app: &TestApp, path: &str, ua: &str) -> Fetched {
    curl_url(&app.url(path), ua).await
}

async fn curl_url(url: &str, ua: &str) -> Fetched {
    let dir = tempfile::tempdir().unwrap();
    let body = dir.path().join("body");
    let headers = dir.path().join("headers");
    let mut cmd = tokio::process::Command::new("curl");
    cmd.args(["-s", "-S", "--noproxy", "*", "-g", "-o"])
        .arg(&body)
        .arg("-D")
        .arg(&headers)
        .args(["-w", "%{http_code}"]);
    if !ua.is_empty() {
        cmd.args(["-A", ua]);
    } else {
        cmd.args(["-H", "User-Agent:"]);
    }
    let out = cmd.arg(url).output().await.expect("curl runs");
    assert!(
        out.status.success(),
        "curl {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Fetched {
        status: String::from_utf8_lossy(&out.stdout).trim().parse().unwrap(),
        headers: std::fs::read_to_string(&headers).unwrap_or_default(),
        body: std::fs::read(&body).unwrap_or_default(),
    }
}

async fn ok(app: &TestApp, path: &str, ua: &str) -> String {
    let f = curl(app, path, ua).await;
    assert_eq!(f.status, 200, "{path}: {}", f.text());
    f.text()
}

/// Text between `open` and the next `close` in `s`.
fn between<'a>(s: &'a str, open: &str, close: &str) -> &'a str {
    let start = s.find(open).unwrap_or_else(|| panic!("no {open} in {s}")) + open.len();
    let end = s[start..].find(close).unwrap() + start;
    &s[start..end]
}

#[tokio::test]
async fn snom_boot_sequence_and_inventory() {
    let app = TestApp::spawn(SITE, |_| {}).await;
    // 1. <phoneType>.htm: model-wide settings, firmware_status with the {mac} placeholder.
    let general = ok(&app, "/snomD785.htm", SNOM_D785).await;
    assert!(general.contains("<phone-settings>"), "{general}");
    let fw_status = between(
        &general,
        "<firmware_status perm=\"\">",
        "</firmware_status>",
    );
    assert!(
        fw_status.ends_with("/snom/snomD785-firmware.xml?mac={mac}"),
        "{fw_status}"
    );
    assert!(
        !general.contains("user_name"),
        "no device settings in the model file"
    );
    // 2. <phoneType>-<MAC>.htm: the setting-files container.
    let index = ok(&app, "/snomD785-000413922D24.htm", SNOM_D785).await;
    let url = between(&index, "<file url=\"", "\"");
    assert_eq!(url, format!("http://{}/snom/000413922D24.xml", app.addr));
    // 3. the device file it names.
    let device = curl_url(url, SNOM_D785).await;
    assert_eq!(device.status, 200);
    assert!(device
        .text()
        .contains("<user_name idx=\"1\" perm=\"R\">301</user_name>"));
    // 4. the firmware_status file, with {mac} expanded as the phone does.
    let fw = curl_url(&fw_status.replace("{mac}", "000413922D24"), SNOM_D785).await;
    assert_eq!(fw.status, 200);
    assert!(fw.text().contains("<firmware-settings>"), "{}", fw.text());

    let s = app
        .store
        .load("000413922d24")
        .await
        .unwrap()
        .expect("in the inventory");
    assert_eq!(s.vendor.as_deref(), Some("snom"));
    assert_eq!(s.model.as_deref(), Some("D785"));
    assert_eq!(s.firmware.build.as_deref(), Some("10.1.33.33"));
    assert_eq!(s.device.ip.as_deref(), Some("127.0.0.1"));
    assert!(s.first_seen.is_some_and(|t| t <= s.seen));
}

#[tokio::test]
async fn yealink_boot_files_are_stable() {
    let app = TestApp::spawn(SITE, |_| {}).await;
    let boot = ok(&app, "/001565aabbcc.boot", YEALINK_T46S).await;
    assert_eq!(
        boot,
        "#!version:1.0.0.1\ninclude:config \"y000000000066.cfg\"\ninclude:config \"001565aabbcc.cfg\"\noverwrite_mode = 1\n"
    );
    let common = ok(&app, "/y000000000066.cfg", YEALINK_T46S).await;
    assert!(common.starts_with("#!version:1.0.0.1\n"));
    assert!(
        common.contains("local_time.ntp_server1 = ntp.sales.example.com"),
        "{common}"
    );
    assert!(!common.contains("account.1"), "{common}");

    // Two fetches of the same file have the same MD5.
    let dir = tempfile::tempdir().unwrap();
    for i in 0..2 {
        let f = curl(&app, "/001565aabbcc.cfg", YEALINK_T46S).await;
        assert_eq!(f.status, 200);
        assert!(
            f.text().contains("account.1.user_name = 201"),
            "{}",
            f.text()
        );
        std::fs::write(dir.path().join(format!("fetch{i}.cfg")), &f.body).unwrap();
    }
    let md5 = tokio::process::Command::new("md5sum")
        .arg("fetch0.cfg")
        .arg("fetch1.cfg")
        .current_dir(dir.path())
        .output()
        .await
        .unwrap();
    let sums: Vec<&str> = std::str::from_utf8(&md5.stdout)
        .unwrap()
        .lines()
        .map(|l| l.split_whitespace().next().unwrap())
        .collect();
    assert_eq!(sums.len(), 2);
    assert_eq!(sums[0], sums[1]);

    // The T56A is in no table: its code is the first field of its firmware version.
    let boot = ok(&app, "/001565f429a4.boot", YEALINK_T56A).await;
    assert!(
        boot.contains("include:config \"y000000000058.cfg\""),
        "{boot}"
    );
    let s = app.store.load("001565f429a4").await.unwrap().unwrap();
    assert_eq!(
        (s.vendor.as_deref(), s.model.as_deref()),
        (Some("yealink"), Some("T56A"))
    );
}

/// `openssl enc -d -aes-128-ecb -nopad -K <hex>` over `input`.
async fn openssl_decrypt(key: &[u8], input: &Path) -> Vec<u8> {
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let out = tokio::process::Command::new("openssl")
        .args(["enc", "-d", "-aes-128-ecb", "-nopad", "-K", &hex, "-in"])
        .arg(input)
        .output()
        .await
        .expect("openssl runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

#[tokio::test]
async fn yealink_encrypted_files_decrypt_with_openssl() {
    let plain_app = TestApp::spawn(SITE, |_| {}).await;
    let enc_site = format!("{SITE}\n[vendors.yealink.options]\nencrypt = true\n");
    let app = TestApp::spawn(&enc_site, |_| {}).await;
    let dir = tempfile::tempdir().unwrap();
    for name in ["001565aabbcc", "y000000000066"] {
        let plain = curl(&plain_app, &format!("/{name}.cfg"), YEALINK_T46S).await;
        assert_eq!(plain.status, 200);
        let key_file = curl(&app, &format!("/{name}_Security.enc"), YEALINK_T46S).await;
        assert_eq!(key_file.status, 200, "{}", key_file.text());
        assert_eq!(key_file.body.len(), 16);
        let cfg = curl(&app, &format!("/{name}.cfg"), YEALINK_T46S).await;
        assert_eq!(cfg.status, 200);
        assert_ne!(cfg.body, plain.body, "served encrypted");
        assert_eq!(cfg.body.len() % 16, 0);
        let kp = dir.path().join(format!("{name}_Security.enc"));
        let cp = dir.path().join(format!("{name}.cfg"));
        std::fs::write(&kp, &key_file.body).unwrap();
        std::fs::write(&cp, &cfg.body).unwrap();
        // The key file decrypts under the common key to the 16-character file key ...
        let key = openssl_decrypt(b"EKs35XacP6eybA25", &kp).await;
        assert_eq!(key.len(), 16);
        assert!(key.iter().all(u8::is_ascii_alphanumeric), "{key:?}");
        // ... which decrypts the file to the plain file (padded with NULs to 16 bytes).
        let mut dec = openssl_decrypt(&key, &cp).await;
        assert!(!plain.body.contains(&0));
        while dec.last() == Some(&0) {
            dec.pop();
        }
        assert_eq!(String::from_utf8_lossy(&dec), plain.text());
        // Unchanged input, unchanged bytes (the phone's MD5 check).
        assert_eq!(
            curl(&app, &format!("/{name}.cfg"), YEALINK_T46S).await.body,
            cfg.body
        );
    }
    // Without encryption there is no key file.
    let f = curl(&plain_app, "/001565aabbcc_Security.enc", YEALINK_T46S).await;
    assert_eq!(f.status, 404);
    assert!(f.text().contains("encrypt = true"), "{}", f.text());
}

#[tokio::test]
async fn other_vendors_boot_sequences() {
    let app = TestApp::spawn(SITE, |_| {}).await;

    // Gigaset N870: provisioning.xml, then <MAC>.xml.
    let p = ok(&app, "/provisioning.xml", GIGASET_N870).await;
    assert!(
        p.contains("<provisioning version=\"1.1\" productID=\"e2\">"),
        "{p}"
    );
    let d = ok(&app, "/7C2F80E0D605.xml", GIGASET_N870).await;
    assert!(d.contains("<nvm>"), "{d}");
    // Gigaset P-series by file name (no User-Agent in the vendor facts).
    let p = ok(&app, "/GigasetP82x.htm", "").await;
    assert!(p.contains("GigasetP82x-firmware.htm?mac={mac}"), "{p}");
    let f = ok(&app, "/GigasetP82x-firmware.htm?mac=7C2F80123456", "").await;
    assert!(f.contains("<firmware-settings>"), "{f}");

    // Digium: <mac>.cfg with the User-Agent, and under /Digium/.
    let d = ok(&app, "/000fd3aabbcc.cfg", DIGIUM_D40).await;
    assert!(
        d.contains("<setting id=\"login_password\" value=\"789\"/>"),
        "{d}"
    );
    ok(&app, "/Digium/000fd3aabbcd.cfg", "").await;

    // Polycom: the master file names <mac>-phone.cfg, which the phone substitutes.
    let m = ok(&app, "/000000000000.cfg", POLYCOM_VVX).await;
    let files = between(&m, "CONFIG_FILES=\"", "\"");
    let phone = files.replace("[PHONE_MAC_ADDRESS]", "0004f2aabbcc");
    ok(&app, "/0004f2aabbcc.cfg", POLYCOM_VVX).await;
    let c = ok(&app, &format!("/{phone}"), POLYCOM_VVX).await;
    assert!(c.contains("<polycomConfig"), "{c}");

    // Cisco SPA: spa$PSN.cfg moves the profile rule to $MA.xml.
    let common = ok(&app, "/spa508G.cfg", CISCO_SPA).await;
    let rule = between(&common, "<Profile_Rule ua=\"na\">", "</Profile_Rule>");
    let own = curl_url(&rule.replace("$MA", "0002fdff2103"), CISCO_SPA).await;
    assert_eq!(own.status, 200);
    assert!(own.text().starts_with("<flat-profile>"));

    // Grandstream: the binary cfg<mac> is refused, cfg<mac>.xml served.
    assert_eq!(curl(&app, "/cfg000b82462d97", GS_GXP2200).await.status, 404);
    let g = ok(&app, "/cfg000b82462d97.xml", GS_GXP2200).await;
    assert!(g.contains("<mac>000b82462d97</mac>"), "{g}");

    // Fanvil: the model file and <mac>.cfg.
    ok(&app, "/f0X4hw1.100.cfg", FANVIL_X4).await;
    let f = ok(&app, "/0c383e07e16c.cfg", FANVIL_X4).await;
    assert!(f.contains("<sysConf>"), "{f}");

    // Everyone with a MAC is in the inventory, keyed by the normalised MAC.
    let list = app.store.list().await.unwrap();
    let vendors: Vec<(String, Option<String>)> = list
        .iter()
        .map(|s| (s.sn.clone(), s.vendor.clone()))
        .collect();
    for (sn, vendor) in [
        ("7c2f80e0d605", "gigaset"),
        ("000fd3aabbcc", "digium"),
        ("000fd3aabbcd", "digium"),
        ("0004f2aabbcc", "polycom"),
        ("0002fdff2103", "cisco"),
        ("000b82462d97", "grandstream"),
        ("0c383e07e16c", "fanvil"),
    ] {
        assert!(
            vendors.contains(&(sn.to_string(), Some(vendor.to_string()))),
            "{sn} {vendor}: {vendors:?}"
        );
    }
    // The Polycom common file names no MAC: nothing to record for it.
    assert!(!vendors.iter().any(|(sn, _)| sn == "000000000000"));
}

#[tokio::test]
async fn bad_and_unrecognisable_requests() {
    let app = TestApp::spawn(SITE, |_| {}).await;
    for (path, ua, reason) in [
        ("/favicon.ico", "Mozilla/5.0", "no vendor asks"),
        ("/123456abcdef.cfg", "", "could be"),
        ("/snomD785-00041.htm", SNOM_D785, "is not a MAC"),
        ("/0015zzaabbcc.cfg", YEALINK_T46S, "hex digits"),
        ("/y000000000099.cfg", "", "unknown model code 99"),
        ("/%7Bmac%7D.xml", "", "placeholder"),
        ("/yealink/notes.txt", "", "not generated here"),
    ] {
        let f = curl(&app, path, ua).await;
        assert_eq!(f.status, 404, "{path}");
        assert!(f.text().contains(reason), "{path}: {}", f.text());
    }
    // An unknown model code with a Yealink User-Agent is served with the phone's own model.
    ok(&app, "/y000000000099.cfg", YEALINK_T46S).await;
    // A MAC in the wrong case is accepted and normalised.
    let f = ok(&app, "/001565AABBCC.cfg", YEALINK_T46S).await;
    assert!(f.contains("account.1.user_name = 201"), "{f}");
    ok(&app, "/snomD785-000413922d24.htm", SNOM_D785).await;
    let list = app.store.list().await.unwrap();
    let sns: Vec<&str> = list.iter().map(|s| s.sn.as_str()).collect();
    assert!(
        sns.contains(&"001565aabbcc") && sns.contains(&"000413922d24"),
        "{sns:?}"
    );
    assert!(
        !sns.iter()
            .any(|s| s.chars().any(|c| c.is_ascii_uppercase())),
        "{sns:?}"
    );
    // Nothing unrecognised was recorded.
    assert!(!sns.contains(&"123456abcdef"), "{sns:?}");
    // The innovaphone paths still work.
    let (status, body) = app.get("/update.php").await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn broken_template_keeps_the_last_good_one() {
    let good = "#!version:1.0.0.1\n# site template\n{% for line in settings.lines %}account.{{ line.number }}.user_name = {{ line.user }}\n{% endfor %}";
    let app = TestApp::spawn(SITE, |dir| {
        let t = dir.join("templates/yealink");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("config.cfg.j2"), good).unwrap();
    })
    .await;
    let path = app.site().join("templates/yealink/config.cfg.j2");
    let first = curl(&app, "/001565aabbcc.cfg", YEALINK_T46S).await;
    assert_eq!(first.status, 200);
    assert_eq!(
        first.text(),
        "#!version:1.0.0.1\n# site template\naccount.1.user_name = 201\n"
    );
    assert!(first.header(vendors_header()).is_none());

    // A syntax error on line 3: the last good version keeps serving; the error names the
    // file and the line.
    std::fs::write(&path, "#!version:1.0.0.1\n# broken\n{% for line in %}\n").unwrap();
    let again = curl(&app, "/001565aabbcc.cfg", YEALINK_T46S).await;
    assert_eq!(again.status, 200);
    assert_eq!(again.body, first.body);
    let err = again
        .header(vendors_header())
        .expect("the error is reported");
    assert!(
        err.starts_with("templates/yealink/config.cfg.j2:3: syntax error"),
        "{err}"
    );

    // An undefined variable is an error too (strict), on its line.
    std::fs::write(&path, "#!version:1.0.0.1\n{{ no_such_thing }}\n").unwrap();
    let again = curl(&app, "/001565aabbcc.cfg", YEALINK_T46S).await;
    assert_eq!(again.body, first.body);
    let err = again.header(vendors_header()).unwrap();
    assert!(
        err.starts_with("templates/yealink/config.cfg.j2:2: undefined value"),
        "{err}"
    );

    // A server that never saw a good version answers 500 and names the problem.
    let fresh = TestApp::spawn(SITE, |dir| {
        let t = dir.join("templates/yealink");
        std::fs::create_dir_all(&t).unwrap();
        std::fs::write(t.join("config.cfg.j2"), "ok\n{% if %}\n").unwrap();
    })
    .await;
    let f = curl(&fresh, "/001565aabbcc.cfg", YEALINK_T46S).await;
    assert_eq!(f.status, 500);
    let err = f.header(vendors_header()).unwrap();
    assert!(
        err.starts_with("templates/yealink/config.cfg.j2:2:"),
        "{err}"
    );

    // Fixing the file takes effect at once.
    std::fs::write(&path, good.replace("site template", "fixed")).unwrap();
    let fixed = ok(&app, "/001565aabbcc.cfg", YEALINK_T46S).await;
    assert!(fixed.contains("# fixed"), "{fixed}");
}

fn vendors_header() -> &'static str {
    autoprov_server::vendors::TEMPLATE_ERROR_HEADER
}

#[tokio::test]
async fn check_reports_template_and_settings_errors() {
    let dir = tempfile::tempdir().unwrap();
    let site = format!(
        "{SITE}\n[devices.\"00156\"]\ngroups = [\"nosuch\"]\n\n[vendors.yealink.options]\nencrypt = \"yes\"\n"
    );
    std::fs::write(dir.path().join("autoprov.toml"), site).unwrap();
    let t = dir.path().join("templates/yealink");
    std::fs::create_dir_all(&t).unwrap();
    std::fs::write(t.join("config.cfg.j2"), "#!version:1.0.0.1\n\n{% for %}\n").unwrap();
    std::fs::write(t.join("other.j2"), "x").unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .arg("check")
        .arg("--site")
        .arg(dir.path())
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(
        text.contains("templates/yealink/config.cfg.j2:3:1: error: syntax error"),
        "{text}"
    );
    assert!(
        text.contains("other.j2: warning: not a yealink template name"),
        "{text}"
    );
    assert!(text.contains("'00156' is not a MAC address"), "{text}");
    assert!(text.contains("names group 'nosuch'"), "{text}");
    assert!(
        text.contains("vendors.yealink.options.encrypt: must be true or false"),
        "{text}"
    );
}

/// Add `bytes` as yealink T46S `version` to the site's firmware catalogue.
fn add_image(site: &Path, version: &str, bytes: &[u8]) {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join(format!("T46S-{version}.rom"));
    std::fs::write(&file, bytes).unwrap();
    let s = autoprov_core::Site::load(site).unwrap();
    let req = autoprov_server::catalog::AddRequest {
        vendor: "yealink",
        model: "T46S",
        version,
        source: &file,
        name: None,
    };
    autoprov_server::catalog::add_file(&s, &req, 1_700_000_000).unwrap();
}

#[tokio::test]
async fn firmware_targets_from_the_catalogue() {
    let site = format!(
        "{SITE}\n[[groups]]\nid = \"vip\"\n\n[devices.\"001565aabbcc\"]\ngroups = [\"vip\"]\n\n\
         [[firmware.targets]]\nvendor = \"yealink\"\nmodel = \"T46S\"\nversion = \"66.85.0.5\"\n\n\
         [[firmware.targets]]\nvendor = \"yealink\"\nmodel = \"T46S\"\nversion = \"66.86.0.15\"\n\
         groups = [\"vip\"]\n"
    );
    let app = TestApp::spawn(&site, |dir| {
        add_image(dir, "66.85.0.5", b"old image");
        add_image(dir, "66.86.0.15", b"new image");
    })
    .await;
    let url_of = |text: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix("static.firmware.url = "))
            .map(str::to_string)
    };
    // The model file carries the model-wide target, the device file its group's.
    let common = ok(&app, "/y000000000066.cfg", YEALINK_T46S).await;
    let model_url = url_of(&common).expect("a firmware URL");
    assert!(
        model_url.ends_with("/firmware/yealink/T46S/66.85.0.5/T46S-66.85.0.5.rom"),
        "{model_url}"
    );
    let device = ok(&app, "/001565aabbcc.cfg", YEALINK_T46S).await;
    let url = url_of(&device).expect("a firmware URL");
    assert_eq!(
        url,
        format!(
            "http://{}/firmware/yealink/T46S/66.86.0.15/T46S-66.86.0.15.rom",
            app.addr
        )
    );
    let image = curl_url(&url, YEALINK_T46S).await;
    assert_eq!(
        (image.status, image.body.as_slice()),
        (200, &b"new image"[..])
    );
    // Stable: the same URL on the next request.
    let again = ok(&app, "/001565aabbcc.cfg", YEALINK_T46S).await;
    assert_eq!(url_of(&again).as_deref(), Some(url.as_str()));

    // The version in the User-Agent is reported to the catalogue.
    let progress = app.store.firmware_progress_all().await.unwrap();
    let p = progress
        .iter()
        .find(|p| p.device == "001565aabbcc")
        .expect("progress recorded");
    assert_eq!(p.reported_version.as_deref(), Some("66.86.0.15"));
    assert_eq!((p.vendor.as_str(), p.model.as_str()), ("yealink", "T46S"));
    assert!(p.groups.contains(&"vip".to_string()), "{:?}", p.groups);
}

/// GET `path` with a User-Agent and optionally `If-None-Match`: status, ETag, body.
async fn conditional_get(
    app: &TestApp,
    path: &str,
    ua: &str,
    if_none_match: Option<&str>,
) -> (u16, Option<String>, Vec<u8>) {
    let mut req = app
        .client
        .get(app.url(path))
        .header(reqwest::header::USER_AGENT, ua);
    if let Some(tag) = if_none_match {
        req = req.header(reqwest::header::IF_NONE_MATCH, tag);
    }
    let r = req.send().await.expect("GET");
    let status = r.status().as_u16();
    let etag = r
        .headers()
        .get(reqwest::header::ETAG)
        .map(|v| v.to_str().unwrap().to_string());
    (status, etag, r.bytes().await.unwrap().to_vec())
}

#[tokio::test]
async fn vendor_files_answer_conditional_gets_with_304() {
    let app = TestApp::spawn(SITE, |_| {}).await;
    for (path, ua) in [
        ("/001565aabbcc.cfg", YEALINK_T46S),
        ("/snom/000413922D24.xml", SNOM_D785),
    ] {
        // The first GET carries a strong ETag.
        let (status, etag, body) = conditional_get(&app, path, ua, None).await;
        assert_eq!(status, 200, "{path}");
        let etag = etag.unwrap_or_else(|| panic!("{path}: no ETag on the 200"));
        assert!(
            etag.starts_with('"') && etag.ends_with('"') && etag.len() > 2,
            "{path}: not a strong entity tag: {etag}"
        );
        assert!(!body.is_empty());
        // Unchanged input, unchanged bytes, same tag.
        let (status, again, body2) = conditional_get(&app, path, ua, None).await;
        assert_eq!((status, again.as_deref()), (200, Some(etag.as_str())));
        assert_eq!(body, body2, "{path}: output must be byte-stable");
        // If-None-Match with that tag: 304, empty body, the tag repeated.
        let (status, tag304, body304) = conditional_get(&app, path, ua, Some(&etag)).await;
        assert_eq!(status, 304, "{path}");
        assert_eq!(tag304.as_deref(), Some(etag.as_str()));
        assert!(body304.is_empty(), "{path}: a 304 has no body");
        // In a list, weak or `*`: still 304 (weak comparison); another tag: 200.
        let listed = format!("\"nope\", W/{etag}");
        assert_eq!(conditional_get(&app, path, ua, Some(&listed)).await.0, 304);
        assert_eq!(conditional_get(&app, path, ua, Some("*")).await.0, 304);
        let (status, _, body) = conditional_get(&app, path, ua, Some("\"other\"")).await;
        assert_eq!(status, 200);
        assert_eq!(body, body2);
    }
    // The 304 still records the contact in the inventory.
    assert!(app.store.load("001565aabbcc").await.unwrap().is_some());

    // A changed setting: 200 with new bytes and a new tag for the old If-None-Match.
    let (_, old_tag, old_body) =
        conditional_get(&app, "/001565aabbcc.cfg", YEALINK_T46S, None).await;
    let old_tag = old_tag.unwrap();
    let toml = app.site().join("autoprov.toml");
    let changed = std::fs::read_to_string(&toml)
        .unwrap()
        .replace("user = \"201\"", "user = \"202\"");
    std::fs::write(&toml, changed).unwrap();
    let app = app.restart().await;
    let (status, new_tag, new_body) =
        conditional_get(&app, "/001565aabbcc.cfg", YEALINK_T46S, Some(&old_tag)).await;
    assert_eq!(status, 200, "a changed file is sent again");
    let new_tag = new_tag.unwrap();
    assert_ne!(new_tag, old_tag);
    assert_ne!(new_body, old_body);
    assert!(String::from_utf8_lossy(&new_body).contains("account.1.user_name = 202"));
    assert_eq!(
        conditional_get(&app, "/001565aabbcc.cfg", YEALINK_T46S, Some(&new_tag))
            .await
            .0,
        304
    );
}

/// Rendered files are reused only while their inputs are unchanged: a template rewritten in
/// place with the same size and its old modification time put back, a template created
/// where the shipped default served, and a removed one are all seen by the next request.
#[tokio::test]
async fn cached_renders_follow_template_edits_exactly() {
    let app = TestApp::spawn(SITE, |_| {}).await;
    let get = |app: &TestApp| {
        let app_url = app.url("/001565aabbcc.cfg");
        let client = app.client.clone();
        async move {
            let r = client
                .get(app_url)
                .header("User-Agent", YEALINK_T46S)
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), 200);
            r.text().await.unwrap()
        }
    };
    let shipped = get(&app).await;
    assert_eq!(get(&app).await, shipped, "byte-stable");

    // A site template appears where the shipped one served: seen at once.
    let dir = app.site().join("templates/yealink");
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("config.cfg.j2");
    std::fs::write(&path, "#!version:1.0.0.1\nvariant = A\n").unwrap();
    assert_eq!(get(&app).await, "#!version:1.0.0.1\nvariant = A\n");
    // Settled (an old mtime), so the render is kept...
    let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(250));
    assert_eq!(get(&app).await, "#!version:1.0.0.1\nvariant = A\n");
    assert_eq!(get(&app).await, "#!version:1.0.0.1\nvariant = A\n");
    // ...and rewritten in place, same size, the old mtime put back: still seen.
    std::fs::write(&path, "#!version:1.0.0.1\nvariant = B\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(old)
        .unwrap();
    assert_eq!(get(&app).await, "#!version:1.0.0.1\nvariant = B\n");
    // Removed: the shipped template serves again.
    std::fs::remove_file(&path).unwrap();
    assert_eq!(get(&app).await, shipped);
}
