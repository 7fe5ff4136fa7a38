//! The firmware catalogue over real HTTP: Range resumes (reqwest and `curl -C -`), ETag
//! revalidation, URL stability across target changes, flagging of a phone that keeps
//! downloading the same image, bounded downloads, and the `firmware` commands.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use autoprov_core::firmware::{FirmwareTarget, ProgressState};
use autoprov_core::Site;
use autoprov_server::catalog::{self, AddRequest, Firmware};
use sha2::{Digest, Sha256};

use crate::helpers::*;

const FILE: &str = "snomD785-10.1.33.33-SIP-r.bin";
const URL: &str = "/firmware/snom/D785/10.1.33.33/snomD785-10.1.33.33-SIP-r.bin";
const URL2: &str = "/firmware/snom/D785/2.0/D785-2.0.bin";

/// Deterministic bytes that do not compress or repeat.
fn content(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn config(targets: &[(&str, &[&str])], extra: &str) -> String {
    let mut t = format!("[status]\nenabled = true\n\n[firmware]\n{extra}\n");
    for (version, groups) in targets {
        t.push_str(&format!(
            "\n[[firmware.targets]]\nvendor = \"snom\"\nmodel = \"D785\"\nversion = \"{version}\"\n\
             groups = {groups:?}\n"
        ));
    }
    t
}

/// Add `bytes` to the site's catalogue as snom D785 `version`, named `name`.
fn add(site: &Path, version: &str, name: &str, bytes: &[u8]) -> catalog::Added {
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join(name);
    std::fs::write(&file, bytes).unwrap();
    let site = Site::load(site).unwrap();
    let req = AddRequest {
        vendor: "snom",
        model: "D785",
        version,
        source: &file,
        name: None,
    };
    catalog::add_file(&site, &req, 1_700_000_000).unwrap()
}

/// The catalogue as a renderer in a server started on this site now sees it.
fn firmware(app: &TestApp) -> Firmware {
    Firmware::load(&Site::load(&app.site()).unwrap()).unwrap()
}

fn target(app: &TestApp, groups: &[&str]) -> FirmwareTarget {
    let groups: Vec<String> = groups.iter().map(|s| s.to_string()).collect();
    firmware(app)
        .catalog()
        .target("snom", "D785", &groups)
        .expect("a target")
}

async fn get(app: &TestApp, path: &str, headers: &[(&str, &str)]) -> reqwest::Response {
    let mut req = app.client.get(app.url(path));
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    req.send().await.expect("GET")
}

fn header<'a>(r: &'a reqwest::Response, name: &str) -> &'a str {
    r.headers()
        .get(name)
        .map(|v| v.to_str().unwrap())
        .unwrap_or("")
}

/// A raw HTTP/1.1 request, for paths a URL library would normalise.
async fn raw_get(app: &TestApp, path: &str) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(app.addr).await.unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    s.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

#[tokio::test]
async fn range_requests_resume_and_etags_revalidate() {
    let image = content(300_001, 1);
    let conf = config(&[("10.1.33.33", &[])], "");
    let app = TestApp::spawn(&conf, |site| {
        add(site, "10.1.33.33", FILE, &image);
    })
    .await;
    let t = target(&app, &[]);
    assert_eq!(t.url_path, URL);
    assert_eq!((t.size, t.sha256.clone()), (300_001, sha(&image)));
    let etag = format!("\"{}\"", t.sha256);

    // the whole file (on plain HTTP its bytes leave with sendfile, never copied by us)
    let sent_before = autoprov_server::sendfile::bytes_sent();
    let r = get(&app, URL, &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "etag"), etag);
    assert_eq!(header(&r, "accept-ranges"), "bytes");
    assert_eq!(header(&r, "content-length"), "300001");
    assert_eq!(header(&r, "content-type"), "application/octet-stream");
    assert_eq!(header(&r, "last-modified"), "Tue, 14 Nov 2023 22:13:20 GMT");
    assert_eq!(sha(&r.bytes().await.unwrap()), t.sha256);
    assert!(autoprov_server::sendfile::bytes_sent() - sent_before >= 300_001);

    // interrupted after 100000 bytes, resumed with If-Range: the parts add up
    let r = get(&app, URL, &[("Range", "bytes=0-99999")]).await;
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range"), "bytes 0-99999/300001");
    assert_eq!(header(&r, "content-length"), "100000");
    let mut parts = r.bytes().await.unwrap().to_vec();
    let r = get(
        &app,
        URL,
        &[("Range", "bytes=100000-"), ("If-Range", &etag)],
    )
    .await;
    assert_eq!(r.status(), 206);
    assert_eq!(header(&r, "content-range"), "bytes 100000-300000/300001");
    parts.extend_from_slice(&r.bytes().await.unwrap());
    assert_eq!(sha(&parts), t.sha256);

    // If-Range with another validator: the whole file, not a stale piece
    let r = get(
        &app,
        URL,
        &[("Range", "bytes=100000-"), ("If-Range", "\"other\"")],
    )
    .await;
    assert_eq!(r.status(), 200);
    assert_eq!(r.bytes().await.unwrap().len(), 300_001);

    // revalidation
    let r = get(&app, URL, &[("If-None-Match", &etag)]).await;
    assert_eq!(r.status(), 304);
    assert_eq!(header(&r, "etag"), etag);
    assert!(r.bytes().await.unwrap().is_empty());
    let r = get(&app, URL, &[("If-None-Match", "\"stale\"")]).await;
    assert_eq!(r.status(), 200);

    // beyond the end, several ranges, HEAD
    let r = get(&app, URL, &[("Range", "bytes=300001-")]).await;
    assert_eq!(r.status(), 416);
    assert_eq!(header(&r, "content-range"), "bytes */300001");
    let r = get(&app, URL, &[("Range", "bytes=0-9,-5")]).await;
    assert_eq!(r.status(), 206);
    let ct = header(&r, "content-type").to_string();
    let boundary = ct
        .strip_prefix("multipart/byteranges; boundary=")
        .expect("multipart")
        .to_string();
    let len: usize = header(&r, "content-length").parse().unwrap();
    let body = r.bytes().await.unwrap();
    assert_eq!(body.len(), len);
    let mut expected = format!(
        "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\
         Content-Range: bytes 0-9/300001\r\n\r\n"
    )
    .into_bytes();
    expected.extend_from_slice(&image[..10]);
    expected.extend_from_slice(
        format!(
            "\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\
             Content-Range: bytes 299996-300000/300001\r\n\r\n"
        )
        .as_bytes(),
    );
    expected.extend_from_slice(&image[299_996..]);
    expected.extend_from_slice(format!("\r\n--{boundary}--\r\n").as_bytes());
    assert_eq!(&body[..], &expected[..]);
    let r = app.client.head(app.url(URL)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(header(&r, "content-length"), "300001");
    assert_eq!(header(&r, "etag"), etag);

    // wrong method, unknown image, paths that try to leave the catalogue
    let r = app.client.post(app.url(URL)).send().await.unwrap();
    assert_eq!(r.status(), 405);
    assert_eq!(header(&r, "allow"), "GET, HEAD");
    let r = get(&app, "/firmware/snom/D785/10.1.33.34/x.bin", &[]).await;
    assert_eq!(r.status(), 404);
    let r = get(
        &app,
        "/firmware/snom/D785/10.1.33.33/..%2F..%2Fautoprov.toml",
        &[],
    )
    .await;
    assert_eq!(r.status(), 400);
    for path in [
        "/firmware/snom/../../autoprov.toml",
        "/firmware/snom/D785/%2e%2e/catalog.toml",
        "/firmware/../firmware/catalog.toml",
        "/firmware/snom/D785/10.1.33.33/..",
    ] {
        let answer = raw_get(&app, path).await;
        let status = answer.split(' ').nth(1).unwrap_or("");
        assert!(status == "400" || status == "404", "{path}: {answer}");
        assert!(!answer.contains("sha256 ="), "{path}: {answer}");
        assert!(!answer.contains("[status]"), "{path}: {answer}");
    }
    // the innovaphone fw/ route is untouched
    std::fs::create_dir_all(app.site().join("fw/137640")).unwrap();
    std::fs::write(app.site().join("fw/137640/ip232.bin"), b"innovaphone").unwrap();
    let r = get(&app, "/fw/137640/ip232.bin", &[]).await;
    assert_eq!(r.status(), 200);
    assert_eq!(&r.bytes().await.unwrap()[..], b"innovaphone");
}

#[tokio::test]
async fn curl_resumes_an_interrupted_download() {
    let image = content(1_000_003, 2);
    let conf = config(&[("10.1.33.33", &[])], "");
    let app = TestApp::spawn(&conf, |site| {
        add(site, "10.1.33.33", FILE, &image);
    })
    .await;
    let t = target(&app, &[]);
    let out_dir = tempfile::tempdir().unwrap();
    let out = out_dir.path().join(FILE);
    // the first 123457 bytes arrived before the connection broke
    std::fs::write(&out, &image[..123_457]).unwrap();
    let url = app.url(&format!("{}?mac=00:04:13:74:17:67", t.url_path));
    // async: the server runs on this test's runtime
    let r = tokio::process::Command::new("curl")
        .args([
            "-s",
            "-S",
            "--noproxy",
            "*",
            "-C",
            "-",
            "-w",
            "%{http_code}",
            "-o",
        ])
        .arg(&out)
        .arg(&url)
        .output()
        .await
        .expect("curl runs (test.sh installs it)");
    assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
    assert_eq!(String::from_utf8_lossy(&r.stdout), "206");
    assert_eq!(sha(&std::fs::read(&out).unwrap()), t.sha256);

    // a resume is logged, but it is not a new download
    let log = app.store.firmware_fetches("000413741767").await.unwrap();
    assert_eq!(log.len(), 1);
    assert_eq!(log[0].range_start, 123_457);
    assert_eq!(
        app.store.firmware_progress("000413741767").await.unwrap(),
        None
    );
}

/// A phone that, like Gigaset and Snom, downloads only when its firmware URL changes.
struct Phone {
    mac: &'static str,
    url: Option<String>,
    version: String,
    downloads: u32,
}

impl Phone {
    /// One provisioning cycle: get the URL a renderer would send, download if it changed,
    /// install, report the running version.
    async fn poll(&mut self, app: &TestApp) -> String {
        let fw = firmware(app);
        let t = fw.catalog().target("snom", "D785", &[]).unwrap();
        if self.url.as_deref() != Some(t.url_path.as_str()) {
            let r = get(app, &format!("{}?mac={}", t.url_path, self.mac), &[]).await;
            assert_eq!(r.status(), 200);
            assert_eq!(sha(&r.bytes().await.unwrap()), t.sha256);
            self.url = Some(t.url_path.clone());
            self.version = t.version.clone();
            self.downloads += 1;
        }
        fw.report_version(&app.store, self.mac, "snom", "D785", &[], &self.version)
            .await
            .unwrap();
        t.url_path
    }
}

#[tokio::test]
async fn a_target_change_changes_the_url_exactly_once() {
    let a = content(50_000, 3);
    let b = content(50_000, 4);
    let mut app = TestApp::spawn(&config(&[("1.0", &[])], ""), |site| {
        add(site, "1.0", "D785-1.0.bin", &a);
        // the same bytes under another version label: an alias, not a second name
        add(site, "1.0b", "D785-1.0b.bin", &a);
        add(site, "2.0", "D785-2.0.bin", &b);
    })
    .await;
    let mut phone = Phone {
        mac: "000413741767",
        url: None,
        version: "0.9".into(),
        downloads: 0,
    };
    let mut urls = Vec::new();
    for target in ["1.0", "1.0b", "2.0"] {
        std::fs::write(
            app.site().join("autoprov.toml"),
            config(&[(target, &[])], ""),
        )
        .unwrap();
        app = app.restart().await;
        for _ in 0..3 {
            urls.push(phone.poll(&app).await);
        }
    }
    assert_eq!(urls[0], "/firmware/snom/D785/1.0/D785-1.0.bin");
    assert!(urls[..6].iter().all(|u| *u == urls[0]), "{urls:?}");
    assert_eq!(urls[6], "/firmware/snom/D785/2.0/D785-2.0.bin");
    let changes = urls.windows(2).filter(|w| w[0] != w[1]).count();
    assert_eq!(changes, 1, "{urls:?}");
    assert_eq!(phone.downloads, 2);

    // the alias has no URL of its own
    let r = get(&app, "/firmware/snom/D785/1.0b/D785-1.0.bin", &[]).await;
    assert_eq!(r.status(), 404);
    let r = get(&app, "/firmware/snom/D785/1.0b/D785-1.0b.bin", &[]).await;
    assert_eq!(r.status(), 404);

    let report = firmware(&app).status(&app.store, true).await.unwrap();
    assert_eq!(report.devices.len(), 1);
    assert_eq!(report.devices[0].state, ProgressState::Done);
    assert_eq!(
        report.devices[0].progress.reported_version.as_deref(),
        Some("2.0")
    );
    assert!(report
        .images
        .iter()
        .all(|i| matches!(i.file, catalog::FileCheck::Ok | catalog::FileCheck::Alias)));
}

#[tokio::test]
async fn a_phone_that_keeps_fetching_the_same_image_is_flagged() {
    let old = content(10_000, 5);
    let new = content(20_000, 6);
    let app = TestApp::spawn(&config(&[("2.0", &[])], ""), |site| {
        add(site, "1.0", "D785-1.0.bin", &old);
        add(site, "2.0", "D785-2.0.bin", &new);
    })
    .await;
    let fw = firmware(&app);
    let t = target(&app, &[]);
    let looping = "00:04:13:aa:bb:01";
    let fine = "00:04:13:aa:bb:02";
    let url = |mac: &str| format!("{}?mac={mac}", t.url_path);
    let report = |mac: &'static str, v: &'static str| {
        let fw = fw.clone();
        let store = app.store.clone();
        async move {
            fw.report_version(&store, mac, "snom", "D785", &[], v)
                .await
                .unwrap()
                .unwrap()
        }
    };

    // the looping phone: downloads, reboots, still reports 1.0, downloads again ...
    assert_eq!(report(looping, "1.0").await, ProgressState::Pending);
    for round in 1..=3 {
        let r = get(&app, &url(looping), &[]).await;
        assert_eq!(r.status(), 200);
        r.bytes().await.unwrap();
        if round == 1 {
            // a resume in between is part of a download, not a new one
            let r = get(&app, &url(looping), &[("Range", "bytes=100-")]).await;
            assert_eq!(r.status(), 206);
            r.bytes().await.unwrap();
        }
        let state = report(looping, "1.0").await;
        let expected = if round < 3 {
            ProgressState::Pending
        } else {
            ProgressState::Flagged
        };
        assert_eq!(state, expected, "after download {round}");
    }
    let p = app
        .store
        .firmware_progress("000413aabb01")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(p.fetches, 3);
    assert!(p.flagged_at.is_some());
    assert_eq!(
        app.store
            .firmware_fetches("000413aabb01")
            .await
            .unwrap()
            .len(),
        4
    );

    // a phone that updates: one download, then it reports the target
    report(fine, "1.0").await;
    get(&app, &url(fine), &[]).await.bytes().await.unwrap();
    assert_eq!(report(fine, "2.0").await, ProgressState::Done);
    // a download nobody identified is kept under the peer address
    get(&app, &t.url_path, &[]).await.bytes().await.unwrap();

    let out = Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .args(["firmware", "status", "--site"])
        .arg(app.site())
        .envs(crate::helpers::cli_env(app.site()))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let line = |key: &str| {
        text.lines()
            .find(|l| l.starts_with(key))
            .unwrap_or_else(|| panic!("{key} in {text}"))
            .to_string()
    };
    assert!(line("000413aabb01").ends_with("flagged"), "{text}");
    assert!(line("000413aabb01").contains(" 1.0 "), "{text}");
    assert!(line("000413aabb02").ends_with("done"), "{text}");
    assert!(line("ip:127.0.0.1").ends_with("pending"), "{text}");
    assert!(
        text.contains("3 device(s): 1 done, 1 pending, 1 flagged, 0 without target"),
        "{text}"
    );
    let target_line = line("snom ");
    assert!(
        target_line.contains(" 2.0 ")
            && target_line.contains(" ok ")
            && target_line.ends_with(URL2),
        "{text}"
    );

    // once it reports a new version the flag is lifted
    assert_eq!(report(looping, "2.0").await, ProgressState::Done);
}

#[tokio::test]
async fn downloads_are_bounded_and_configuration_is_still_served() {
    let big = content(32 * 1024 * 1024, 7);
    // no master device to ask: the update script is answered from the site alone
    let conf = format!(
        "[master]\ninfo = \"\"\n\n{}",
        config(&[("10.1.33.33", &[])], "max_downloads = 1\nretry_after = 7")
    );
    let app = TestApp::spawn(&conf, |site| {
        add(site, "10.1.33.33", FILE, &big);
    })
    .await;
    // one download in progress, its body not read: it holds the only slot
    let first = get(&app, URL, &[]).await;
    assert_eq!(first.status(), 200);

    let r = get(&app, URL, &[]).await;
    assert_eq!(r.status(), 503);
    assert_eq!(header(&r, "retry-after"), "7");
    // HEAD and revalidation need no slot
    let r = app.client.head(app.url(URL)).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let etag = format!("\"{}\"", sha(&big));
    assert_eq!(
        get(&app, URL, &[("If-None-Match", &etag)]).await.status(),
        304
    );
    // configuration requests are answered at once
    let (status, body) = tokio::time::timeout(
        Duration::from_secs(5),
        app.get("/update.php?type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5"),
    )
    .await
    .expect("the update script is not starved by firmware");
    assert_eq!(status, 200);
    assert!(!body.is_empty());
    // an operator sees the budget taken and the refusal
    let text = crate::helpers::metrics(&app).await;
    let sample = |series: &str| crate::helpers::sample(&text, series);
    assert_eq!(sample(r#"autoprov_budget_in_use{budget="firmware"}"#), 1.0);
    assert_eq!(sample(r#"autoprov_budget_slots{budget="firmware"}"#), 1.0);
    assert_eq!(sample(r#"autoprov_refused_total{budget="firmware"}"#), 1.0);
    assert_eq!(sample(r#"autoprov_budget_in_use{budget="config"}"#), 0.0);

    // the slot comes back when the first client goes away
    drop(first);
    let mut ok = false;
    for _ in 0..50 {
        let r = get(&app, URL, &[]).await;
        if r.status() == 200 {
            assert_eq!(r.bytes().await.unwrap().len(), big.len());
            ok = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ok, "the download slot was released");
}

#[test]
fn firmware_add_and_check_from_the_command_line() {
    let dir = tempfile::tempdir().unwrap();
    let site = dir.path();
    std::fs::write(
        site.join("autoprov.toml"),
        config(&[("1.0", &[]), ("2.0", &["pilot"])], ""),
    )
    .unwrap();
    std::fs::create_dir_all(site.join("scripts")).unwrap();
    let src = tempfile::tempdir().unwrap();
    let file = src.path().join("D785-1.0.bin");
    std::fs::write(&file, content(5000, 8)).unwrap();
    let autoprov = |args: &[&str]| {
        let out = Command::new(env!("CARGO_BIN_EXE_autoprov"))
            .args(args)
            .arg("--site")
            .arg(site)
            .envs(crate::helpers::cli_env(site))
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let add_args = |version: &'static str, file: &Path| {
        vec![
            "firmware".to_string(),
            "add".into(),
            "--vendor".into(),
            "snom".into(),
            "--model".into(),
            "D785".into(),
            "--version".into(),
            version.into(),
            file.display().to_string(),
        ]
    };
    let run = |args: Vec<String>| {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        autoprov(&args)
    };

    let (ok, out, err) = run(add_args("1.0", &file));
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("url     /firmware/snom/D785/1.0/D785-1.0.bin"),
        "{out}"
    );
    assert!(site.join("firmware/snom/D785/1.0/D785-1.0.bin").is_file());
    let (ok, out, _) = run(add_args("1.0", &file));
    assert!(ok && out.contains("already in the catalogue"), "{out}");

    // a target whose version is missing is a warning with its position
    let (ok, out, err) = autoprov(&["check"]);
    assert!(ok, "{out}{err}");
    assert!(
        out.contains("autoprov.toml:16:11: warning: firmware target snom D785 version 2.0 is not in the catalogue"),
        "{out}"
    );

    // other bytes for a known version are refused, nothing changes
    std::fs::write(&file, content(5000, 9)).unwrap();
    let (ok, _, err) = run(add_args("1.0", &file));
    assert!(!ok);
    assert!(err.contains("versions are immutable"), "{err}");
    let (ok, out, err) = run(add_args("2.0", &file));
    assert!(ok, "{out}{err}");
    let (ok, out, _) = autoprov(&["check"]);
    assert!(ok && !out.contains("warning"), "{out}");

    // a damaged manifest is an error naming its line
    let manifest = site.join("firmware/catalog.toml");
    let text = std::fs::read_to_string(&manifest).unwrap();
    std::fs::write(&manifest, text.replacen("size = ", "size = -", 1)).unwrap();
    let (ok, out, _) = autoprov(&["check"]);
    assert!(!ok);
    assert!(out.contains("catalog.toml:"), "{out}");
    assert!(out.contains(": error: "), "{out}");
}
