//! Golden tests: the engine's answers equal the reference implementation's, byte for byte.
//!
//! The files in `tests/golden/` are real responses of the innovaphone PHP update server
//! (build 2033, see its README). The scenario's configuration and snippets are rebuilt here;
//! snippets are made exactly 172801 s old and the Host header is the reference's, so the lines
//! that depend on time and host ("2 days", "172801s old", the URLs) come out identical and the
//! comparison is exact. (The HTTP-level golden test in the e2e suite compares those loosely.)

use std::collections::BTreeMap;
use std::path::PathBuf;

use autoprov_core::innovaphone::{
    plan_update, DeviceState, DynamicSnippets, MasterLookup, Ports, ScriptFile, UpdateRequest,
};
use autoprov_core::{Site, SiteConfig};

const NOW: i64 = 1_795_351_132;
const AGE: i64 = 172_801;

struct MemPorts {
    scripts: BTreeMap<String, ScriptFile>,
    master_calls: usize,
}

impl Ports for MemPorts {
    fn script(&mut self, rel: &str) -> Option<ScriptFile> {
        self.scripts.get(rel).cloned()
    }
    fn master(&mut self) -> MasterLookup {
        self.master_calls += 1;
        MasterLookup {
            notes: vec![],
            builds: Err("no master in this test".into()),
        }
    }
    fn dynamic(&mut self, _state: &DeviceState) -> Result<DynamicSnippets, String> {
        Ok(DynamicSnippets::default())
    }
    fn file_exists(&mut self, _rel: &str) -> bool {
        false
    }
    fn read_file(&mut self, _rel: &str) -> Option<Vec<u8>> {
        None
    }
    fn list_files(&mut self, _dir: &str, _pattern: &str) -> Vec<String> {
        Vec::new()
    }
    fn reverse_dns(&mut self, _ip: &str) -> Option<String> {
        None
    }
}

fn golden(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/golden")
        .join(name);
    std::fs::read_to_string(p).expect("golden file")
}

fn script(text: &str) -> ScriptFile {
    ScriptFile {
        mtime: NOW - AGE,
        content: Ok(text.into()),
    }
}

/// Scenario a of the golden README.
fn scenario_a() -> (Site, MemPorts) {
    let toml = include_str!("golden/scenario-a.toml");
    let config = SiteConfig::from_toml_str(toml).expect("scenario a parses");
    let mut scripts = BTreeMap::new();
    scripts.insert(
        "scripts/staging-all-default.txt".to_string(),
        script("# staging: set admin password\nconfig add CMD0 /user admin,s3cret\nconfig activate\nconfig rem CMD0 /user\n"),
    );
    scripts.insert(
        "scripts/update-phone-default.txt".to_string(),
        script("config add CMD0 /name This+is+a+Phone%21\n"),
    );
    scripts.insert(
        "scripts/update-all-hq.txt".to_string(),
        script("config add PHONE SIG /coder OPUS-WB,20,k1\n"),
    );
    (
        Site {
            dir: PathBuf::from("/nonexistent"),
            config,
        },
        MemPorts {
            scripts,
            master_calls: 0,
        },
    )
}

fn request(host: &str, query: &str) -> UpdateRequest {
    UpdateRequest {
        args: UpdateRequest::parse_query(query),
        https: false,
        server_port: host.rsplit(':').next().and_then(|p| p.parse().ok()),
        host: host.to_string(),
        path: "/update.php".into(),
        peer_ip: "127.0.0.1".into(),
        forwarded_for: None,
        client_cert: None,
    }
}

const DEV: &str = "type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5";

#[test]
fn a1_no_args() {
    let (site, mut ports) = scenario_a();
    let out = plan_update(&site, &request("127.0.0.1:8091", ""), None, NOW, &mut ports);
    assert_eq!(out.body, golden("a1-no-args.txt"));
    assert!(out.state.is_none(), "nothing is stored without an sn");
}

#[test]
fn a2_new_device_staging() {
    let (site, mut ports) = scenario_a();
    let out = plan_update(
        &site,
        &request("127.0.0.1:8091", DEV),
        None,
        NOW,
        &mut ports,
    );
    assert_eq!(out.body, golden("a2-new-device-staging.txt"));
    let st = out.state.expect("state tracked");
    assert_eq!(st.phase.as_deref(), Some("staging"));
    assert_eq!(st.nextphase.as_deref(), Some("update"));
    assert_eq!(
        st.device.classes.as_deref(),
        Some("phone, pre_opus_phone, phone_newui, ip232")
    );
    assert_eq!(st.firmware.requested.as_deref(), Some("137640"));
    assert_eq!(st.requested.as_deref(), Some("137640bootcode"));
    assert_eq!(st.scripts.len(), 1);
    assert_eq!(ports.master_calls, 0, "fixed builds never ask the master");
}

#[test]
fn a3_update_phase_and_a4_check_good() {
    let (site, mut ports) = scenario_a();
    let q = format!("polling=5&phase=update&{DEV}&env=hq&PROT=137640&BOOT=137640");
    let out = plan_update(&site, &request("127.0.0.1:8091", &q), None, NOW, &mut ports);
    assert_eq!(out.body, golden("a3-update-phase.txt"));
    let md5 = out
        .body
        .lines()
        .find_map(|l| l.strip_prefix("mod cmd UP1 check ser "))
        .expect("CHECK serial sent")
        .trim()
        .to_string();
    let q = format!("polling=0&phase=update&{DEV}&env=hq&PROT=137640&BOOT=137640&CHECK={md5}");
    let out = plan_update(
        &site,
        &request("127.0.0.1:8091", &q),
        out.state,
        NOW,
        &mut ports,
    );
    assert_eq!(out.body, golden("a4-check-good.txt"));
}

#[test]
fn b1_forcehttps_switch() {
    let toml = r#"
[master]
info = "none"
firmware = "137640"
bootcode = "none"

[times]
forcehttps = true
httpsport = 444
"#;
    let config = SiteConfig::from_toml_str(toml).unwrap();
    let mut scripts = BTreeMap::new();
    scripts.insert(
        "scripts/update-all-default.txt".to_string(),
        script("config add CMD0 /name x\n"),
    );
    let site = Site {
        dir: PathBuf::from("/nonexistent"),
        config,
    };
    let mut ports = MemPorts {
        scripts,
        master_calls: 0,
    };
    let q = "type=IP112&sn=00-90-33-3e-0c-57&hwid=IP112-3e-0c-57&ip=10.0.0.7&phase=update";
    let out = plan_update(&site, &request("127.0.0.1:8092", q), None, NOW, &mut ports);
    assert_eq!(out.body, golden("b1-forcehttps-switch.txt"));
}
