//! An innovaphone PHP installation imported with `autoprov import-innovaphone` answers the
//! reference's requests like the original did.

use std::path::Path;
use std::process::Command;

use crate::helpers::*;

const USER_CONFIG: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<!DOCTYPE config SYSTEM "full-config.dtd">
<config debugmerge="false" debugcerts="false" debugscript="false">
    <master info="none" firmware="137640" bootcode="firmware"/>
    <status dir="status"/>
    <backup dir="backup"/>
    <times grace="0"/>
    <phases>
        <phase id="staging" seq="100"/>
    </phases>
    <environments>
        <environment id="hq"><implies>default</implies></environment>
    </environments>
</config>
"#;

fn php_installation(dir: &Path) {
    let default = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("crates/core/src/innovaphone_default_config.xml"),
    )
    .unwrap();
    std::fs::write(dir.join("config.xml"), default).unwrap();
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(dir.join("config/user-config.xml"), USER_CONFIG).unwrap();
    std::fs::write(dir.join("update.php"), "<?php // the reference\n").unwrap();
    scenario_a_scripts(dir);
}

#[tokio::test]
async fn imported_site_answers_like_the_original() {
    let php = tempfile::tempdir().unwrap();
    php_installation(php.path());
    let site = tempfile::tempdir().unwrap();
    let target = site.path().join("site");
    let out = Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .arg("import-innovaphone")
        .arg(php.path())
        .arg(&target)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Move the imported site into a TempDir the test app owns.
    let owned = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(&target).unwrap() {
        let e = e.unwrap();
        std::fs::rename(e.path(), owned.path().join(e.file_name())).unwrap();
    }
    let app = TestApp::start(owned).await;
    assert_answers_like_reference(&app).await;
    let (_, a5) = app
        .put(
            "/update.php?mode=backup&hwid=IP232-30-00-af&sn=00-90-33-30-00-af",
            "config change CMD0 /name a\r\nconfig change X /y 1\r\n",
        )
        .await;
    assert_eq!(
        a5,
        std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("crates/core/tests/golden/a5-backup-put-1.txt")
        )
        .unwrap()
    );
}

#[test]
fn import_refuses_to_overwrite_a_site() {
    let php = tempfile::tempdir().unwrap();
    php_installation(php.path());
    let site = tempfile::tempdir().unwrap();
    std::fs::write(site.path().join("autoprov.toml"), "# mine\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .arg("import-innovaphone")
        .arg(php.path())
        .arg(site.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert_eq!(
        std::fs::read_to_string(site.path().join("autoprov.toml")).unwrap(),
        "# mine\n"
    );
}

#[test]
fn broken_user_config_names_file_line_and_column() {
    let php = tempfile::tempdir().unwrap();
    php_installation(php.path());
    std::fs::write(
        php.path().join("config/user-config.xml"),
        "<config>\n  <master info=\"none\">\n</config>\n",
    )
    .unwrap();
    let site = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_autoprov"))
        .arg("import-innovaphone")
        .arg(php.path())
        .arg(site.path().join("s"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("user-config.xml"), "{err}");
    assert!(
        err.contains(":3:"),
        "line 3 is where the mismatch shows: {err}"
    );
}
