//! Issue 6: the REST API against its own OpenAPI document, with schemathesis (PyPI) as the
//! independent tester: every documented operation is exercised with generated valid and
//! invalid input (unicode, huge and negative numbers, path traversal, odd bodies); no answer
//! may be a 5xx and every answer must conform to the document (status codes, content types,
//! schemas, auth). `test.sh` installs schemathesis into `target/pyenv` and exports its `st`
//! in `AUTOPROV_SCHEMATHESIS`; outside CI the test is skipped when it is missing.

use std::path::PathBuf;
use std::process::Command;

use autoprov_server::admin::auth;

use crate::helpers::{scenario_a_scripts, TestApp, SCENARIO_A};

fn schemathesis() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("AUTOPROV_SCHEMATHESIS") {
        return Some(PathBuf::from(p));
    }
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target/pyenv/bin/st");
    p.is_file().then_some(p)
}

#[tokio::test]
async fn schemathesis_finds_no_server_errors_or_violations() {
    let Some(st) = schemathesis() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run this test: run ./test.sh (it installs schemathesis into target/pyenv)"
        );
        eprintln!("skipped: schemathesis not installed (./test.sh installs it into target/pyenv)");
        return;
    };
    let toml = format!("{SCENARIO_A}\n[customcerts]\ndir = \"certs\"\n");
    let app = TestApp::spawn(&toml, scenario_a_scripts).await;
    auth::set_password(&app.store, "admin", "fuzz password")
        .await
        .unwrap();
    for (ty, sn) in [
        ("IP222", "00-90-33-22-00-01"),
        ("IP232", "00-90-33-32-00-02"),
    ] {
        let hwid = format!("{ty}-{}", &sn[9..]);
        let (status, _) = app
            .get(&format!(
                "/update.php?type={ty}&sn={sn}&hwid={hwid}&ip=172.16.1.5"
            ))
            .await;
        assert_eq!(status, 200);
    }
    let token = auth::create_token(&app.store, "admin", "schemathesis")
        .await
        .unwrap();
    // A CSR and two backups, so the certificate and backup calls reach their real logic.
    crate::admin::write_csr(&app.site(), "00-90-33-22-00-01");
    let dir = app.site().join("backup/IP222-22-00-01");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(
        dir.join("IP222-22-00-01.1.txt"),
        "config change CMD0 /name old\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("IP222-22-00-01.2.txt"),
        "config change CMD0 /name new\n",
    )
    .unwrap();
    let report = tempfile::tempdir().unwrap();
    // Half of the generated serials and backup names are real ones (the others random), so
    // the calls get past "unknown device". A signed certificate cannot be described by a
    // schema: a schema-valid string that is no certificate for the CSR is rightly refused
    // (400), so the upload may answer 400 to "valid" data.
    let config = report.path().join("schemathesis.toml");
    std::fs::write(
        &config,
        r#"
[dictionaries.serials]
values = ["00-90-33-22-00-01", "00-90-33-32-00-02"]
[dictionaries.backups]
values = ["IP222-22-00-01.1.txt", "IP222-22-00-01.2.txt"]
[parameters]
"path.sn" = { dictionary = "serials", probability = 0.5 }
"path.name" = { dictionary = "backups", probability = 0.5 }
"query.old" = { dictionary = "backups", probability = 0.5 }
"query.new" = { dictionary = "backups", probability = 0.5 }
[[operations]]
include-path = "/api/v1/devices/{sn}/certificate"
include-method = "PUT"
checks.positive_data_acceptance.expected-statuses = ["2xx", "400", "401", "403", "404"]
"#,
    )
    .unwrap();
    let junit = report.path().join("junit.xml");
    let mut cmd = Command::new(&st);
    cmd.arg("--config-file")
        .arg(&config)
        .arg("run")
        .arg(app.url("/api/v1/openapi.json"))
        .args(["--checks", "all"])
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .args(["--max-examples", "40", "--workers", "1", "--no-color"])
        .args(["--report", "junit", "--report-junit-path"])
        .arg(&junit)
        .arg("--report-dir")
        .arg(report.path())
        .current_dir(report.path())
        .env_remove("http_proxy")
        .env_remove("HTTP_PROXY");
    // Blocking: run it off the runtime thread so the in-process server keeps answering.
    let out = tokio::task::spawn_blocking(move || cmd.output())
        .await
        .unwrap()
        .expect("run schemathesis");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "schemathesis found problems ({}):\n{stdout}\n{stderr}",
        out.status
    );
    // Every documented operation was exercised.
    let xml = std::fs::read_to_string(&junit).unwrap_or_default();
    // (schemathesis leaves out the operation serving the document: it loaded it, with the
    // token, before it started.)
    assert!(stdout.contains("Loaded specification"), "{stdout}");
    for (m, p) in autoprov_server::api::openapi::PATHS {
        if *p == "/api/v1/openapi.json" {
            continue;
        }
        let name = format!("{} {p}", m.to_uppercase());
        assert!(
            xml.contains(&format!("\"{name}\"")),
            "schemathesis did not exercise {name}:\n{stdout}\n{xml}"
        );
    }
    // The fuzzing did not break the site: the devices still get their scripts.
    let (status, body) = app
        .get("/update.php?type=IP222&sn=00-90-33-22-00-09&hwid=IP222-22-00-09&ip=172.16.1.7")
        .await;
    assert_eq!(status, 200, "{body}");
}
