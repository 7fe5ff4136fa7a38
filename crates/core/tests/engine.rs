//! Engine behaviours beyond the reference captures: restricted times and the fake staging
//! phase, queries, firmware selection and file names, forced HTTPS with `httpsurlmod`, the
//! environment quirk, the grace period, skip-next, dynamic snippets and CHECK.

use std::collections::BTreeMap;
use std::path::PathBuf;

use autoprov_core::innovaphone::{
    plan_reply, plan_update, DeviceState, DynamicSnippets, MasterLookup, Ports, ScriptFile,
    UpdateRequest,
};
use autoprov_core::{Site, SiteConfig};

const NOW: i64 = 1_800_000_000;

#[derive(Default, Clone)]
struct Mem {
    scripts: BTreeMap<String, ScriptFile>,
    master: Option<Result<(String, String), String>>,
    master_calls: usize,
    dynamic: Option<Result<DynamicSnippets, String>>,
}

impl Ports for Mem {
    fn script(&mut self, rel: &str) -> Option<ScriptFile> {
        self.scripts.get(rel).cloned()
    }
    fn master(&mut self) -> MasterLookup {
        self.master_calls += 1;
        MasterLookup {
            notes: vec![
                "failed to use cached data (cache not current), retrieving info online".into(),
            ],
            builds: self
                .master
                .clone()
                .unwrap_or(Err("cannot get cached PBX info: no cache".into())),
        }
    }
    fn dynamic(&mut self, _state: &DeviceState) -> Result<DynamicSnippets, String> {
        self.dynamic
            .clone()
            .unwrap_or(Ok(DynamicSnippets::default()))
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

fn site(toml: &str) -> Site {
    Site {
        dir: PathBuf::from("/nonexistent"),
        config: SiteConfig::from_toml_str(toml).expect("test config parses"),
    }
}

fn with_script(mut m: Mem, name: &str, text: &str) -> Mem {
    m.scripts.insert(
        name.to_string(),
        ScriptFile {
            mtime: NOW - 3600,
            content: Ok(text.into()),
        },
    );
    m
}

fn req(query: &str) -> UpdateRequest {
    UpdateRequest {
        args: UpdateRequest::parse_query(query),
        host: "srv".into(),
        path: "/upd/update.php".into(),
        peer_ip: "10.1.1.1".into(),
        ..Default::default()
    }
}

const DEV: &str = "type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5";

/// The engine's answer with its explanations; every test also checks that the answer
/// devices get (`plan_reply`, on a copy of the ports) is the same but for those.
fn run(site: &Site, m: &mut Mem, q: &str) -> autoprov_core::innovaphone::Outcome {
    let reply = plan_reply(site, &req(q), None, NOW, &mut m.clone());
    let o = plan_update(site, &req(q), None, NOW, m);
    assert_eq!(reply.body, o.body, "{q}");
    assert_eq!(reply.state, o.state, "{q}");
    assert_eq!(reply.error, o.error, "{q}");
    assert_eq!(reply.remove_files, o.remove_files, "{q}");
    assert!(reply.notes.is_empty(), "{:?}", reply.notes);
    assert!(
        !o.notes.is_empty() || o.body.is_empty(),
        "{q}: no explanation"
    );
    o
}

#[test]
fn restricted_times_and_the_fake_first_phase() {
    let s = site("[master]\ninfo = \"\"\n[times]\nallow = \"22,23,0\"\ninitial = \"1\"\n");
    let mut m = with_script(
        Mem::default(),
        "scripts/update-all-default.txt",
        "config add A /b 1\n",
    );
    // A new device starts in `_first_update`: snippets of `update`, no /allow.
    let o = run(&s, &mut m, DEV);
    assert!(
        o.body
            .contains("# phase: _first_update, nextphase: update,"),
        "{}",
        o.body
    );
    assert!(o
        .body
        .contains("# Skip restricted times, initial staging / forcestaging"));
    assert!(
        o.body.contains("mod cmd UP1 times  /initial 1\r\n"),
        "{}",
        o.body
    );
    assert!(!o.body.contains("/allow"));
    assert!(o
        .body
        .contains("# begin script 'scripts/update-all-default.txt'"));
    assert!(o.body.contains("phase%3Dupdate"));
    // In `update` the hours apply.
    let o = run(&s, &mut m, &format!("polling=5&phase=update&{DEV}"));
    assert!(
        o.body
            .contains("# Restricted times\r\nmod cmd UP1 times  /allow 22,23,0 /initial 1\r\n"),
        "{}",
        o.body
    );
    // Without forcestaging there is no fake phase and /allow applies at once.
    let s = site("[master]\ninfo = \"\"\n[times]\nallow = \"22\"\nforcestaging = false\n");
    let o = run(&s, &mut m, DEV);
    assert!(
        o.body.contains("# phase: update, nextphase: ,"),
        "{}",
        o.body
    );
    assert!(o.body.contains("mod cmd UP1 times  /allow 22\r\n"));
}

#[test]
fn queries_follow_their_applies() {
    let s = site(
        r#"
[master]
info = ""
[queries]
scfg = "update.php?mode=query&sn=#m"
[[queries.query]]
id = "admin"
cmd = "mod cmd CMD0 xml-info"
applies = [{ value = "phone" }]
[[queries.query]]
id = "gwinfo"
cmd = "mod cmd GW xml-info"
applies = [{ value = "gw" }]
[[queries.query]]
id = "berlin"
cmd = "x"
applies = [{ value = "berlin", env = true }]
"#,
    );
    let mut m = Mem::default();
    let o = run(&s, &mut m, DEV);
    assert!(o.body.contains(
        "# query 'admin'\r\nmod cmd UP0 scfg http://srv/upd/update.php?mode=query&sn=#m&id=admin ser nop /always mod%20cmd%20CMD0%20xml-info\r\n"
    ), "{}", o.body);
    assert!(!o.body.contains("gwinfo"));
    assert!(!o.body.contains("'berlin'"));
}

#[test]
fn firmware_from_the_master_with_file_names() {
    let s = site(
        r#"
[master]
info = "http://master/CMD0/box_info.xml"
[fwstorage]
url = "http://files/{build}/{model}/{filetype}/{filename}"
[[filenames]]
model = "ip112"
prot = "ip112-sip.bin"
"#,
    );
    let mut m = Mem {
        master: Some(Ok(("137640".into(), "137000".into()))),
        ..Default::default()
    };
    let o = run(
        &s,
        &mut m,
        "type=IP112&sn=00-90-33-3e-0c-57&hwid=IP112-3e-0c-57&ip=1.2.3.4&BOOT=137000",
    );
    assert_eq!(m.master_calls, 1, "asked once for both builds");
    assert!(o
        .body
        .contains("# failed to use cached data (cache not current), retrieving info online"));
    assert!(
        o.body.contains(
            "mod cmd UP0 prot http://files/137640/IP112/prot/ip112-sip.bin ser 137640\r\n"
        ),
        "{}",
        o.body
    );
    assert!(o.body.contains("# boot code 137000 good"));
    // Boot code file name derivation and nobootdev/nofirmdev.
    let o = run(
        &s,
        &mut m,
        "type=IP29-4&sn=00-90-33-01-02-03&hwid=h&ip=1.2.3.4",
    );
    assert!(
        o.body
            .contains("mod cmd UP0 boot http://files/137000/IP29-4/boot/boot29.bin ser 137000"),
        "{}",
        o.body
    );
    let o = run(
        &s,
        &mut m,
        "type=swphone&sn=00-90-33-01-02-04&hwid=h&ip=1.2.3.4",
    );
    assert!(o
        .body
        .contains("# no firmware update for device of type 'swphone'"));
    assert!(o
        .body
        .contains("# no bootcode update for device of type 'swphone'"));
    // The master unreachable and no cache: bail out, nothing stored.
    let mut down = Mem::default();
    let o = run(
        &site("[status]\nenabled = true\n[master]\ninfo = \"http://m/x\"\n"),
        &mut down,
        DEV,
    );
    assert!(
        o.body
            .ends_with("# cannot get cached PBX info: no cache - exit\r\n"),
        "{}",
        o.body
    );
    assert!(o.state.is_none());
    assert!(o.error.is_some());
}

#[test]
fn master_applies_restricts_firmware() {
    let s = site("[master]\ninfo = \"none\"\nfirmware = \"1\"\napplies = [{ value = \"gw\" }]\n");
    let o = run(&s, &mut Mem::default(), DEV);
    assert!(!o.body.contains("mod cmd UP0 prot"), "{}", o.body);
    assert!(o
        .notes
        .iter()
        .any(|n| n.contains("restricted to class 'gw'")));
}

#[test]
fn forced_https_applies_urlmod_and_port() {
    let s = site("[master]\ninfo = \"\"\n[times]\nforcehttps = true\nhttpsport = 444\n");
    let mut r = req(&format!("phase=update&{DEV}"));
    r.path = "/mtls/upd/update.php".into();
    let o = plan_update(&s, &r, None, NOW, &mut Mem::default());
    assert!(
        o.body
            .contains("config add UP1 /url https%3A%2F%2Fsrv%3A444%2Fupd%2Fupdate.php%3F"),
        "{}",
        o.body
    );
    assert!(!o.body.contains("# begin script"));
    // Over HTTPS on the right port scripts flow.
    r.https = true;
    r.server_port = Some(444);
    let o = plan_update(&s, &r, None, NOW, &mut Mem::default());
    assert!(o.body.contains("# end of all scripts"), "{}", o.body);
}

#[test]
fn environment_union_quirk_is_kept() {
    let s = site(
        "[master]\ninfo = \"\"\n[[environments]]\nid = \"default\"\n[[environments]]\nid = \"a\"\nimplies = [\"default\"]\n[[environments]]\nid = \"b\"\nimplies = [\"default\", \"a\"]\n",
    );
    let o = run(&s, &mut Mem::default(), &format!("{DEV}&env=a,b"));
    // [a, default] + [b, default, a] keeps only the third entry of the second list.
    assert!(o.body.contains("environment: a+default+a,"), "{}", o.body);
}

#[test]
fn grace_period_holds_back_scripts() {
    let s = site("[master]\ninfo = \"\"\n[status]\nenabled = true\n[times]\ngrace = 90\n");
    let mut m = Mem::default();
    m.scripts.insert(
        "scripts/update-all-default.txt".into(),
        ScriptFile {
            mtime: NOW - 11,
            content: Ok("x\n".into()),
        },
    );
    let o = run(&s, &mut m, DEV);
    assert!(o.body.ends_with(
        "# newest script (scripts/update-all-default.txt) 11s old\r\n# files being updated (scripts/update-all-default.txt 11s old, waiting for at least 90s to expire)\r\n"
    ), "{}", o.body);
    assert!(o.state.is_some(), "the message is kept");
}

#[test]
fn skipnext_only_runs_queries() {
    let s = site("[master]\ninfo = \"\"\n[status]\nenabled = true\n[[queries.query]]\nid = \"admin\"\ncmd = \"mod cmd CMD0 xml-info\"\napplies = [{ value = \"*\" }]\n");
    let mut st = DeviceState::new("00-90-33-30-00-af", NOW - 100);
    st.skipnext = Some(NOW - 100);
    let o = plan_update(&s, &req(DEV), Some(st), NOW, &mut Mem::default());
    assert!(o.body.contains("# need up-to-date query state, skipping update script, doing queries only\r\n# query 'admin'\r\n"), "{}", o.body);
    assert!(!o.body.contains("config add UP1 /url"));
    let st = o.state.unwrap();
    assert_eq!(st.skipnext, None);
    assert!(st.msgs.iter().any(|m| m.msg.starts_with("skipnext: ")));
}

#[test]
fn dynamic_snippets_shape_the_script_and_the_check() {
    let s = site("[master]\ninfo = \"\"\n");
    let base = with_script(
        Mem::default(),
        "scripts/update-all-default.txt",
        "config add A /b 1\n",
    );
    let plain = run(
        &s,
        &mut with_script(
            Mem::default(),
            "scripts/update-all-default.txt",
            "config add A /b 1\n",
        ),
        DEV,
    );
    let mut m = base;
    m.dynamic = Some(Ok(DynamicSnippets {
        pre: vec!["config add PRE /x 1".into()],
        post: vec!["config add POST /y 2".into()],
        send_standard: true,
    }));
    let o = run(&s, &mut m, DEV);
    let pre = o.body.find("config add PRE /x 1").expect("pre sent");
    let file = o.body.find("config add A /b 1").expect("file sent");
    let post = o.body.find("config add POST /y 2").expect("post sent");
    assert!(pre < file && file < post);
    let sig = |b: &str| {
        b.lines()
            .find_map(|l| l.strip_prefix("mod cmd UP1 check ser "))
            .unwrap()
            .to_string()
    };
    assert_ne!(
        sig(&o.body),
        sig(&plain.body),
        "dynamic lines are part of CHECK"
    );

    m.dynamic = Some(Ok(DynamicSnippets {
        pre: vec![],
        post: vec![],
        send_standard: false,
    }));
    let o = run(&s, &mut m, DEV);
    assert!(!o.body.contains("config add A /b 1"), "{}", o.body);

    m.dynamic = Some(Err(
        "dynamic snippet hook failed: timed out after 5 s".into()
    ));
    let o = run(&s, &mut m, DEV);
    assert!(
        o.body.ends_with(
            "# dynamic snippet hook failed: timed out after 5 s - not delivering any snippets\r\n"
        ),
        "{}",
        o.body
    );
    let s = site("[master]\ninfo = \"\"\n[scripting]\nhook_failure = \"skip\"\n");
    let o = run(&s, &mut m, DEV);
    assert!(o.body.contains("config add A /b 1"), "{}", o.body);
    assert!(o.body.contains("continuing without dynamic snippets"));
}

#[test]
fn proxied_requests_record_the_proxy() {
    let s = site("[master]\ninfo = \"\"\n[status]\nenabled = true\n");
    let mut r = req(DEV);
    r.forwarded_for = Some("203.0.113.9, 10.9.9.9".into());
    let o = plan_update(&s, &r, None, NOW, &mut Mem::default());
    let st = o.state.unwrap();
    assert_eq!(st.device.ip.as_deref(), Some("203.0.113.9"));
    assert!(st.device.rp);
    assert_eq!(st.device.proxy.as_deref(), Some("10.1.1.1"));
}

#[test]
fn single_phase_device_without_state_args_gets_no_rewrite() {
    // The reference's loose comparison: no `polling` argument equals "polling 0".
    let s = site("[master]\ninfo = \"\"\n");
    let o = run(&s, &mut Mem::default(), DEV);
    assert!(!o.body.contains("config add UP1 /url"), "{}", o.body);
    assert!(
        o.body
            .contains("\r\nconfig write\r\nconfig activate\r\n# set CHECK var\r\n"),
        "{}",
        o.body
    );
}
