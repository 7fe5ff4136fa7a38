//! The certificate roll-out of the engine (`doCertificates`) step by step: CSR creation with
//! placeholders, CSR download, waiting for the CA, pushing the certificate with its chain,
//! clean-up, renewal, and the trust check of `forcetrust` (including proxies).

use std::collections::BTreeMap;
use std::path::PathBuf;

use autoprov_core::innovaphone::{
    glob_match, plan_update, ClientCert, DeviceState, DynamicSnippets, MasterLookup, Outcome,
    Ports, ScriptFile, UpdateRequest,
};
use autoprov_core::{Site, SiteConfig};

const NOW: i64 = 1_800_000_000;
const SN: &str = "00-90-33-30-00-af";
const DEV: &str = "type=IP232&sn=00-90-33-30-00-af&hwid=IP232-30-00-af&ip=10.0.0.5";

/// Ports over an in-memory site folder.
#[derive(Default)]
struct Files {
    files: BTreeMap<String, Vec<u8>>,
    rdns: Option<String>,
}

impl Ports for Files {
    fn script(&mut self, _rel: &str) -> Option<ScriptFile> {
        None
    }
    fn master(&mut self) -> MasterLookup {
        MasterLookup {
            notes: vec![],
            builds: Err("no master".into()),
        }
    }
    fn dynamic(&mut self, _state: &DeviceState) -> Result<DynamicSnippets, String> {
        Ok(DynamicSnippets::default())
    }
    fn file_exists(&mut self, rel: &str) -> bool {
        self.files.contains_key(rel)
    }
    fn read_file(&mut self, rel: &str) -> Option<Vec<u8>> {
        self.files.get(rel).cloned()
    }
    fn list_files(&mut self, dir: &str, pattern: &str) -> Vec<String> {
        self.files
            .keys()
            .filter(|k| {
                k.strip_prefix(&format!("{dir}/"))
                    .is_some_and(|n| !n.contains('/') && glob_match(pattern, n))
            })
            .cloned()
            .collect()
    }
    fn reverse_dns(&mut self, _ip: &str) -> Option<String> {
        self.rdns.clone()
    }
}

/// A site with roll-out on; `times` and `certs` add lines to `[times]` and `[customcerts]`.
fn site_with(times: &str, certs: &str) -> Site {
    let toml = format!(
        "[master]\ninfo = \"\"\n[status]\nenabled = true\n[times]\ngrace = 0\n{times}\n\
         [customcerts]\ndir = \"certs\"\ncaname = \"autoprov Device CA\"\n\
         csr_dn_o = \"Example {{name}}\"\ncsr_san_dns_1 = \"{{rdns}}\"\ncsr_san_ip_1 = \"{{realip}}\"\n{certs}\n\
         [[queries.query]]\nid = \"certificates\"\ncmd = \"mod cmd X509 xml-info\"\n\
         applies = [{{ value = \"*\" }}]\n"
    );
    Site {
        dir: PathBuf::from("/nonexistent"),
        config: SiteConfig::from_toml_str(&toml).expect("config parses"),
    }
}

fn site(times: &str) -> Site {
    site_with(times, "")
}

fn req() -> UpdateRequest {
    UpdateRequest {
        args: UpdateRequest::parse_query(DEV),
        host: "srv".into(),
        path: "/upd/update.php".into(),
        peer_ip: "10.1.1.1".into(),
        ..Default::default()
    }
}

/// A device state as after earlier polls, with a `certificates` query result.
fn state(info: &str) -> DeviceState {
    let mut s = DeviceState::new(SN, NOW - 60);
    s.device.realip = Some("10.0.0.5".into());
    s.device.hwid = Some("IP232-30-00-af".into());
    s.set_query("certificates", info, NOW - 60);
    s.set_query("admin", "<info name=\"Reception Desk\"/>", NOW - 60);
    s
}

fn factory_cert(extra: &str) -> String {
    format!(
        "<info><servercert><certificate subject_cn=\"IP232-30-00-af\" issuer_cn=\"innovaphone Device Certification Authority\" not_before=\"2020-01-01 00:00:00\" not_after=\"2040-01-01 00:00:00\"/></servercert>{extra}</info>"
    )
}

fn run(s: &Site, st: DeviceState, files: &mut Files) -> Outcome {
    plan_update(s, &req(), Some(st), NOW, files)
}

const ERROR_DUMP: &str = "mod cmd UP0 scfg http://srv/upd/update.php?mode=vardump&sn=#m&var=X509/REQUESTERROR&file=certs%2F00-90-33-30-00-af-requesterror ser nop /always vars%20read%20X509%2FREQUESTERROR\r\n";

#[test]
fn wrong_issuer_makes_the_device_create_a_csr() {
    let s = site("");
    let o = run(&s, state(&factory_cert("")), &mut Files::default());
    let b = &o.body;
    assert!(b.contains("# certificates: CN IP232-30-00-af: invalid issuer: innovaphone Device Certification Authority: not in autoprov Device CA (,) \r\n"), "{b}");
    assert!(
        b.contains(&format!(
            "# certificates: download request error from device (if any)\r\n{ERROR_DUMP}"
        )),
        "{b}"
    );
    // {sn} without dashes, {name} as a DNS name, {realip} of the previous poll; {rdns} has no
    // value, which empties that whole value.
    assert!(b.contains("# certificates: wrong certificate - need to create CSR\r\nmod cmd X509 servercert-create /cmd servercert-create /redirect /target device /type Signing%20request  /key 2048-bit /signature SH256 /dn-cn 0090333000af /dn-ou  /dn-o Example%20reception-desk /dn-l  /dn-st  /dn-c  /san-dns  /san-dns  /san-dns  /san-ip 10.0.0.5 /san-ip \r\n"), "{b}");
    assert!(b.contains("iresetn\r\n# certificate cmds need to process - no further cmds\r\n"));
    assert!(!b.contains("# end of all scripts"));
    let st = o.state.expect("state kept");
    assert_eq!(
        st.skipnext,
        Some(NOW),
        "the next poll only refreshes the queries"
    );
    assert_eq!(
        st.device.certstat.as_deref(),
        Some("CN IP232-30-00-af: invalid issuer: innovaphone Device Certification Authority: not in autoprov Device CA (,)")
    );

    // With a reverse DNS name, and for myPBX (`Signing+request`).
    let mut f = Files {
        rdns: Some("phone1.example".into()),
        ..Default::default()
    };
    let mut r = req();
    r.args = UpdateRequest::parse_query(&DEV.replace("IP232", "mypbxa"));
    let o = plan_update(&s, &r, Some(state(&factory_cert(""))), NOW, &mut f);
    assert!(o.body.contains("/type Signing+request  /key"), "{}", o.body);
    assert!(o
        .body
        .contains("/san-dns phone1.example /san-dns  /san-dns  "));
}

#[test]
fn csr_is_fetched_then_waits_for_the_ca() {
    let s = site("");
    let info = factory_cert("<requests><request/></requests>");
    let mut files = Files::default();
    let o = run(&s, state(&info), &mut files);
    assert!(o.body.contains(&format!("# certificates: need to download CSR from device\r\nmod cmd UP0 scfg http://srv/upd/update.php?mode=vardump&sn=#m&var=X509/REQUEST&file=certs%2F{SN}-request.p10.der&proc=var2bin&postproc=createPemFromDer ser nop /always vars%20read%20X509%2FREQUEST\r\n")), "{}", o.body);
    assert!(o.body.contains("# certificate cmds need to process"));

    // The CSR arrived: wait for the CA; without forcetrust scripts flow meanwhile.
    files
        .files
        .insert(format!("certs/{SN}-request.p10.der"), vec![0x30, 0x82]);
    let o = run(&s, state(&info), &mut files);
    assert!(o
        .body
        .contains("# certificates: signing request must be processed by CA (ongoing) \r\n"));
    assert!(o.body.contains("# end of all scripts"), "{}", o.body);
    assert!(!o.body.contains("vardump"));

    // With forcetrust the request error keeps being fetched and nothing else is sent.
    let s = site("forcehttps = true\nforcetrust = true");
    let o = run(&s, state(&info), &mut files);
    assert!(o.body.contains(ERROR_DUMP), "{}", o.body);
    assert!(o.body.contains("# certificate cmds need to process"));
    assert!(!o.body.contains("# end of all scripts"));
}

const CERT_DER: [u8; 70] = {
    let mut d = [0x5a; 70];
    d[0] = 0x30;
    d[1] = 0x44;
    d
};

fn pem(der: &[u8]) -> String {
    const A: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut s = String::new();
    for ch in der.chunks(3) {
        let b = [ch[0], *ch.get(1).unwrap_or(&0), *ch.get(2).unwrap_or(&0)];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            s.push(if i <= ch.len() {
                A[((n >> (18 - 6 * i)) & 63) as usize] as char
            } else {
                '='
            });
        }
    }
    format!("-----BEGIN CERTIFICATE-----\n{s}\n-----END CERTIFICATE-----\n")
}

#[test]
fn signed_certificate_is_pushed_with_the_chain() {
    let s = site("");
    let info = factory_cert("<requests><request/></requests>");
    let mut files = Files::default();
    files
        .files
        .insert(format!("certs/{SN}-request.p10.der"), vec![0x30]);
    files.files.insert(
        format!("certs/{SN}-signedrequest.cer"),
        pem(&CERT_DER).into_bytes(),
    );
    let mut ca = CERT_DER;
    ca[2] = 0x01;
    files
        .files
        .insert("certs/CAkey-autoprov.pem".into(), pem(&ca).into_bytes());
    files.files.insert(
        "certs/CAkey-zz-key.pem".into(),
        b"-----BEGIN PRIVATE KEY-----\nAA\n-----END PRIVATE KEY-----\n".to_vec(),
    );
    files
        .files
        .insert("certs/other.pem".into(), pem(&ca).into_bytes());
    let o = run(&s, state(&info), &mut files);
    let hex = |d: &[u8]| d.iter().map(|b| format!("{b:02x}")).collect::<String>();
    assert!(o.body.contains(&format!(
        "# certificates: there is an uploaded signed CSR (certs/{SN}-signedrequest.cer) \r\n"
    )));
    assert!(o.body.contains(&format!(
        "# certificates: upload new signed certificate\r\nvars create X509/REQUESTRESPONSE/00000 pb {}\r\n",
        hex(&CERT_DER)
    )), "{}", o.body);
    assert!(o.body.contains(&format!(
        "# certificates: upload CA certificate #1 (certs/CAkey-autoprov.pem)\r\nvars create X509/REQUESTRESPONSE/00001 pb {}\r\n",
        hex(&ca)
    )));
    // A key matching the pattern is never sent.
    assert!(o.body.contains("# certificates: CA file certs/CAkey-zz-key.pem is PEM holding PRIVATE KEY, not a CERTIFICATE - skipped \r\n"), "{}", o.body);
    assert!(!o.body.contains("/00002"));
    assert!(!o.body.contains("other.pem"));
    assert_eq!(o.state.unwrap().skipnext, Some(NOW));

    // A signed file that is no certificate is reported, not sent.
    files.files.insert(
        format!("certs/{SN}-signedrequest.cer"),
        b"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n".to_vec(),
    );
    let o = run(&s, state(&info), &mut files);
    assert!(
        o.body
            .contains("is PEM holding CERTIFICATE REQUEST, not a CERTIFICATE - not sent"),
        "{}",
        o.body
    );
    assert!(!o.body.contains("REQUESTRESPONSE"));
}

#[test]
fn good_certificate_cleans_up() {
    let s = site("");
    let info = "<info><servercert><certificate subject_cn=\"0090333000af\" issuer_cn=\"autoprov Device CA\" not_before=\"2020-01-01 00:00:00\" not_after=\"2040-01-01 00:00:00\"/></servercert><requests><request/></requests></info>";
    let mut files = Files::default();
    for f in ["request.p10.der", "request.p10.pem", "signedrequest.cer"] {
        files.files.insert(format!("certs/{SN}-{f}"), vec![1]);
    }
    let o = run(&s, state(info), &mut files);
    let b = &o.body;
    assert!(b.contains("# certificates: OK \r\n"), "{b}");
    assert!(b.contains(&format!(
        "# certificates: removing CSR/DER certs/{SN}-request.p10.der \r\n"
    )));
    assert!(b.contains("# certificates: removing CSR from device\r\nvars del X509/REQUEST \r\n# certificates: removing CSR key from device\r\nvars del X509/REQUESTKEY \r\n"), "{b}");
    assert_eq!(
        o.remove_files,
        vec![
            format!("certs/{SN}-request.p10.der"),
            format!("certs/{SN}-request.p10.pem"),
            format!("certs/{SN}-signedrequest.cer"),
        ]
    );
    // Nothing left: scripts flow.
    let info = info.replace("<requests><request/></requests>", "");
    let o = run(&s, state(&info), &mut Files::default());
    assert!(o.body.contains("# no certificate cmds required"));
    assert!(o.body.contains("# end of all scripts"));
    assert!(o.remove_files.is_empty());
}

#[test]
fn certificates_are_renewed_before_they_expire() {
    let s = site_with("", "renew = 30");
    let soon = "<info><servercert><certificate subject_cn=\"0090333000af\" issuer_cn=\"autoprov Device CA\" not_before=\"2020-01-01 00:00:00\" not_after=\"2027-01-20 00:00:00\"/></servercert></info>";
    let o = run(&s, state(soon), &mut Files::default());
    assert!(
        o.body
            .contains("# certificates: 0090333000af: valid but must be renewed \r\n"),
        "{}",
        o.body
    );
    assert!(o.body.contains("servercert-create"));
}

fn trust_site() -> Site {
    site("forcehttps = true\nhttpsport = 444\nforcetrust = true")
}

fn good_state() -> DeviceState {
    state("<info><servercert><certificate subject_cn=\"0090333000af\" issuer_cn=\"autoprov Device CA\" not_before=\"2020-01-01 00:00:00\" not_after=\"2040-01-01 00:00:00\"/></servercert></info>")
}

fn over_mtls(cert: Option<ClientCert>) -> UpdateRequest {
    let mut r = req();
    r.https = true;
    r.server_port = Some(444);
    r.client_cert = cert;
    r
}

#[test]
fn trust_check_words() {
    let s = trust_site();
    let good = ClientCert {
        subject_cn: "0090333000af".into(),
        issuer_cn: "autoprov Device CA".into(),
        verified: true,
        verify_error: None,
    };
    let o = plan_update(
        &s,
        &over_mtls(Some(good.clone())),
        Some(good_state()),
        NOW,
        &mut Files::default(),
    );
    assert!(
        o.body
            .contains("# good certificate(CN='0090333000af', ISSUER='autoprov Device CA')"),
        "{}",
        o.body
    );
    assert!(o.body.contains("# end of all scripts"));

    let expired = ClientCert {
        verified: false,
        verify_error: Some("certificate expired".into()),
        ..good.clone()
    };
    let o = plan_update(
        &s,
        &over_mtls(Some(expired)),
        Some(good_state()),
        NOW,
        &mut Files::default(),
    );
    assert!(
        o.body.contains(
            "# TLS certificate (0090333000af) not trusted -- FAILED:certificate expired\r\n"
        ),
        "{}",
        o.body
    );
    assert!(!o.body.contains("# end of all scripts"));
    let st = o.state.unwrap();
    assert!(st
        .msgs
        .iter()
        .any(|m| &*m.msg
            == "TLS certificate (0090333000af) not trusted -- FAILED:certificate expired"));

    // Through a reverse proxy MTLS cannot work: refused with the reason.
    let mut r = over_mtls(Some(good));
    r.forwarded_for = Some("10.0.0.5, 10.9.9.9".into());
    let o = plan_update(&s, &r, Some(good_state()), NOW, &mut Files::default());
    assert!(o.body.contains("# cannot verify the device certificate through a reverse proxy (10.0.0.5 via 10.1.1.1): MTLS needs a direct connection"), "{}", o.body);
    assert!(!o.body.contains("# end of all scripts"));
    let st = o.state.unwrap();
    assert!(st.device.rp);
    assert_eq!(st.device.proxy.as_deref(), Some("10.1.1.1"));
}

#[test]
fn patterns() {
    assert!(glob_match("CAkey*", "CAkey-01.cer"));
    assert!(glob_match("CAkey*", "CAkey"));
    assert!(!glob_match("CAkey*", "xCAkey"));
    assert!(glob_match("ca-?.pem", "ca-1.pem"));
    assert!(!glob_match("ca-?.pem", "ca-12.pem"));
    assert!(glob_match("ca-[0-9].pem", "ca-7.pem"));
    assert!(!glob_match("ca-[!0-9].pem", "ca-7.pem"));
    assert!(glob_match("*.cer", "a.b.cer"));
    assert!(glob_match("[x", "[x"));
}
