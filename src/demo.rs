//! The demo site `autoprov serve` creates when the site directory does not exist yet.
//!
//! It is a working innovaphone site: two phases (staging, update), the default classes and
//! environment, state tracking and backups on, firmware off until a build is configured, and two
//! example snippets. Nothing here is special-cased elsewhere: it is an ordinary site.

use std::path::Path;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result};

const DEMO_TOML: &str = r#"# autoprov site configuration (created as a demo; edit freely).
# Every section is optional; omitted values take the innovaphone update server's defaults.
# `autoprov check --site <dir>` validates this file.

[server]
listen = ["0.0.0.0:8080"]
database = "autoprov.db"

[master]
# URL of the master device's box_info.xml, or "none" to use fixed builds below.
info = "none"
# "master", "none" or a build number such as "137640".
firmware = "none"
# "master", "firmware", "none" or a build number.
bootcode = "firmware"

[backup]
dir = "backup"
nbackups = 10

[status]
enabled = true

[times]
dir = "scripts"
grace = 90

[[phases]]
id = "staging"
seq = 100

[[phases]]
id = "update"
seq = 200

[[environments]]
id = "default"
"#;

const STAGING: &str = "# staging: runs once on a new device\nconfig add CMD0 /name autoprov+demo\n";
const UPDATE: &str = "# update: runs in normal operation (again only when a snippet changes)\nconfig add PHONE SIG /coder G711A,20,\n";

/// Create the demo site in `dir` (which must not exist or be empty).
pub fn create(dir: &Path) -> Result<()> {
    for sub in ["scripts", "fw", "backup", "cache", "certs"] {
        std::fs::create_dir_all(dir.join(sub))
            .with_context(|| format!("cannot create {}", dir.join(sub).display()))?;
    }
    write(&dir.join("autoprov.toml"), DEMO_TOML)?;
    // The snippets are dated an hour back: they are not being edited, so the grace period
    // (which holds back snippets younger than `times.grace` seconds) does not apply.
    let past = SystemTime::now() - Duration::from_secs(3600);
    for (name, text) in [
        ("staging-all-default.txt", STAGING),
        ("update-all-default.txt", UPDATE),
    ] {
        let p = dir.join("scripts").join(name);
        write(&p, text)?;
        let f = std::fs::File::options().write(true).open(&p)?;
        f.set_modified(past)?;
    }
    write(
        &dir.join("fw").join("README.txt"),
        "Put firmware here as fw/<build>/<file>, e.g. fw/137640/ip232.bin, and set [master] firmware.\n",
    )?;
    Ok(())
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write {}", path.display()))
}
