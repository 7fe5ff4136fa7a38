//! Custom device certificates (`doCertificates`): what the engine says and sends about them.
//!
//! The reference's whole roll-out cycle, in its order and with its words:
//!
//! 1. roll-out disabled or no state → nothing (a CSR left on the device is deleted);
//! 2. no `certificates` query result yet → all scripts are held back;
//! 3. an earlier upload error (`request-error`) → `ser`, processing stops;
//! 4. a CSR being generated (`busy`) → wait;
//! 5. the device's certificate is acceptable (issuer in `CAname`, valid, not due for renewal)
//!    → `OK`, leftovers of an earlier CSR are cleaned up (device variables and files);
//! 6. otherwise a new certificate is needed: fetch `X509/REQUESTERROR`; without a CSR on the
//!    device emit the CSR-creation command (`customcerts.csr_*` with the placeholders
//!    `{realip} {ip} {proxy} {sn} {hwid} {name} {rdns}`); with one, fetch it (vardump) unless it
//!    is already in `<dir>/<sn>-request.p10.der`; when `<dir>/<sn>-signedrequest.cer` exists,
//!    push it (`X509/REQUESTRESPONSE/00000`) with the CA chain (`customcerts.cakeys` files) and
//!    set `skipnext`; else wait for the CA.
//!
//! Files come in through [`Ports`]; deletions go out as [`Outcome::remove_files`]. Must not
//! parse X.509 beyond telling DER from PEM: signing and validation belong to the server.
//!
//! [`Outcome::remove_files`]: super::Outcome::remove_files

use super::engine::{Run, Stop};
use super::url::{make_full_url, rawurlencode};
use super::Ports;

/// Messages for the `certstat` and the commands to send (`None` = none required).
pub(crate) struct CertDecision {
    pub msgs: Vec<String>,
    pub cmds: Option<Vec<(String, String)>>,
}

/// The per-device file names of the roll-out (`certbasefn` and friends).
struct CertFiles {
    der: String,
    pem: String,
    key: String,
    error: String,
    signed: String,
}

impl CertFiles {
    fn new(dir: &str, sn: &str) -> CertFiles {
        let base = format!("{dir}/{sn}");
        CertFiles {
            der: format!("{base}-request.p10.der"),
            pem: format!("{base}-request.p10.pem"),
            key: format!("{base}-request.der.key"),
            error: format!("{base}-requesterror"),
            signed: format!("{base}-signedrequest.cer"),
        }
    }
}

/// The CSR options in the reference's order: (`customcerts` suffix, command option).
const CSR_OPTIONS: [(&str, &str); 13] = [
    ("key", "key"),
    ("signature", "signature"),
    ("dn-cn", "dn-cn"),
    ("dn-ou", "dn-ou"),
    ("dn-o", "dn-o"),
    ("dn-l", "dn-l"),
    ("dn-st", "dn-st"),
    ("dn-c", "dn-c"),
    ("san-dns-1", "san-dns"),
    ("san-dns-2", "san-dns"),
    ("san-dns-3", "san-dns"),
    ("san-ip-1", "san-ip"),
    ("san-ip-2", "san-ip"),
];

pub(crate) fn decide(
    run: &mut Run,
    ports: &mut dyn Ports,
    device_type: &str,
) -> Result<CertDecision, Stop> {
    let view = run.view;
    let cc = &view.cfg.customcerts;
    let mut msgs = Vec::new();
    run.state.device.request_downloaded = Some("false".into());
    let has_request = certificates_info(run).map(|i| i.requests).unwrap_or(false);
    let sn = run.req.arg("sn").unwrap_or("").to_string();
    let files = (!cc.dir.is_empty()).then(|| CertFiles::new(&cc.dir, &sn));
    if cc.dir.is_empty() || !run.tracking {
        msgs.push("either certificate handling or state tracking not enabled - not doing any certificate checking".to_string());
        let mut cmds = Vec::new();
        let has_cmd = cleanup(
            run,
            ports,
            files.as_ref(),
            has_request,
            &mut msgs,
            &mut cmds,
        );
        return Ok(CertDecision {
            msgs,
            cmds: has_cmd.then_some(cmds),
        });
    }
    let files = files.expect("dir is set");
    let Some(info) = certificates_info(run) else {
        msgs.push("we dont know anything about the current certificate state - not doing any certificate checking".to_string());
        return Ok(CertDecision {
            msgs,
            cmds: Some(Vec::new()),
        });
    };
    if info.request_error {
        return Ok(CertDecision {
            msgs,
            cmds: Some(vec![(
                "certificate processing STOPPED due to previous upload error, clean X509/REQUESTERROR to continue".into(),
                "ser".into(),
            )]),
        });
    }
    if cc.caname.trim().is_empty() {
        run.bailout("certificates: must set customcerts/@CAname to enable certificates")?;
    }
    if cc.catype != "manual" {
        let t = cc.catype.clone();
        run.bailout(&format!(
            "certificates: no support for certificates of type '{t}'"
        ))?;
    }
    if info.busy {
        msgs.push("wait for signing request to be generated (ongoing)".into());
        return Ok(CertDecision {
            msgs,
            cmds: Some(Vec::new()),
        });
    }
    let sep = if cc.canamesep.is_empty() {
        ","
    } else {
        cc.canamesep.as_str()
    };
    let good: Vec<String> = cc.caname.split(sep).map(|s| s.trim().to_string()).collect();
    let mut neednew = false;
    for c in &info.certs {
        if !good.contains(&c.issuer_cn) {
            msgs.push(format!(
                "CN {}: invalid issuer: {}: not in {} ({sep})",
                c.subject_cn, c.issuer_cn, cc.caname
            ));
            neednew = true;
        }
    }
    let now = run.now;
    let renew = now + cc.renew as i64 * 86400;
    for c in &info.certs {
        if let Some(nb) = c.not_before {
            if now < nb {
                msgs.push(format!("{}: not yet valid", c.subject_cn));
                return Ok(CertDecision { msgs, cmds: None });
            }
        }
        if let Some(na) = c.not_after {
            if now > na {
                msgs.push(format!("{}: expired", c.subject_cn));
                neednew = true;
            }
            if renew > na {
                msgs.push(format!("{}: valid but must be renewed", c.subject_cn));
                neednew = true;
            }
        }
    }
    if !neednew {
        msgs.push("OK".into());
        let mut cmds = Vec::new();
        let has_cmd = cleanup(run, ports, Some(&files), has_request, &mut msgs, &mut cmds);
        return Ok(CertDecision {
            msgs,
            cmds: has_cmd.then_some(cmds),
        });
    }

    let mut cmds = vec![(
        "download request error from device (if any)".to_string(),
        dump_var(run, "X509/REQUESTERROR", &files.error, None),
    )];
    if info.requests {
        // A CSR is on the device; as the reference, assume it is the one we asked for.
        if !ports.file_exists(&files.der) {
            cmds.push((
                "need to download CSR from device".into(),
                dump_var(
                    run,
                    "X509/REQUEST",
                    &files.der,
                    Some(("var2bin", "createPemFromDer")),
                ),
            ));
            return Ok(CertDecision {
                msgs,
                cmds: Some(cmds),
            });
        }
        if ports.file_exists(&files.signed) {
            let Some(bytes) = ports.read_file(&files.signed) else {
                let msg = format!("cannot read {}", files.signed);
                return run
                    .bailout(&msg)
                    .map(|()| CertDecision { msgs, cmds: None });
            };
            let der = match cert_der(&bytes) {
                Ok(d) => d,
                Err(why) => {
                    msgs.push(format!(
                        "signed certificate {} {why} - not sent; replace it with the signed certificate (PEM or DER) or delete it",
                        files.signed
                    ));
                    return Ok(CertDecision { msgs, cmds: None });
                }
            };
            msgs.push(format!(
                "there is an uploaded signed CSR ({})",
                files.signed
            ));
            cmds.push((
                "upload new signed certificate".into(),
                format!("vars create X509/REQUESTRESPONSE/00000 pb {}", hex(&der)),
            ));
            let cafiles = if cc.cakeys.is_empty() {
                Vec::new()
            } else {
                ports.list_files(&cc.dir, &cc.cakeys)
            };
            let mut index = 1;
            for f in cafiles {
                match ports.read_file(&f).map(|b| cert_der(&b)) {
                    Some(Ok(der)) => {
                        cmds.push((
                            format!("upload CA certificate #{index} ({f})"),
                            format!(
                                "vars create X509/REQUESTRESPONSE/{index:05} pb {}",
                                hex(&der)
                            ),
                        ));
                        index += 1;
                    }
                    Some(Err(why)) => {
                        msgs.push(format!("CA file {f} {why} - skipped"));
                    }
                    None => msgs.push(format!("cannot read CA file {f} - skipped")),
                }
            }
            run.state.skipnext = Some(now);
            return Ok(CertDecision {
                msgs,
                cmds: Some(cmds),
            });
        }
        msgs.push("signing request must be processed by CA (ongoing)".into());
        let cmds = view.cfg.times.forcetrust.then_some(cmds);
        return Ok(CertDecision { msgs, cmds });
    }

    // Have the device create a CSR.
    let space = match device_type.to_lowercase().as_str() {
        "mypbxi" | "mypbxa" => "+",
        _ => "%20",
    };
    let mut csr = format!(
        "mod cmd X509 servercert-create /cmd servercert-create /redirect /target device /type Signing{space}request "
    );
    for (key, opt) in CSR_OPTIONS {
        let value = csr_value(cc, key);
        let value = replace_magics(run, ports, value);
        csr.push_str(&format!(" /{opt} {}", rawurlencode(&value)));
    }
    cmds.push(("wrong certificate - need to create CSR".into(), csr));
    cleanup(run, ports, Some(&files), false, &mut msgs, &mut cmds);
    run.state.skipnext = Some(now);
    Ok(CertDecision {
        msgs,
        cmds: Some(cmds),
    })
}

/// `cleanupCertificateStatus`: forget this device's CSR files and, when the device still has a
/// CSR, delete it there. Returns whether commands were added.
fn cleanup(
    run: &mut Run,
    ports: &mut dyn Ports,
    files: Option<&CertFiles>,
    has_request: bool,
    msgs: &mut Vec<String>,
    cmds: &mut Vec<(String, String)>,
) -> bool {
    if let Some(f) = files {
        for (what, path) in [
            ("CSR/DER", &f.der),
            ("CSR/PEM", &f.pem),
            ("signed CSR", &f.signed),
            ("CSR Key", &f.key),
        ] {
            if ports.file_exists(path) {
                msgs.push(format!("removing {what} {path}"));
                run.remove_file(path);
            }
        }
    }
    if has_request {
        cmds.push((
            "removing CSR from device".to_string(),
            "vars del X509/REQUEST ".to_string(),
        ));
        cmds.push((
            "removing CSR key from device".to_string(),
            "vars del X509/REQUESTKEY ".to_string(),
        ));
    }
    run.state.device.request_downloaded = Some("false".into());
    has_request
}

/// `dumpVar2File`: have the device PUT `vars read <var>` to `mode=vardump`.
fn dump_var(run: &Run, var: &str, file: &str, proc: Option<(&str, &str)>) -> String {
    let procs = proc
        .map(|(p, pp)| format!("&proc={p}&postproc={pp}"))
        .unwrap_or_default();
    format!(
        "mod cmd UP0 scfg {}?mode=vardump&sn=#m&var={var}&file={}{procs} ser nop /always {}",
        make_full_url(&run.view.base, "update.php"),
        rawurlencode(file),
        rawurlencode(&format!("vars read {var}"))
    )
}

fn csr_value<'a>(cc: &'a crate::config::CustomCerts, key: &str) -> &'a str {
    match key {
        "key" => &cc.csr_key,
        "signature" => &cc.csr_signature,
        "dn-cn" => &cc.csr_dn_cn,
        "dn-ou" => &cc.csr_dn_ou,
        "dn-o" => &cc.csr_dn_o,
        "dn-l" => &cc.csr_dn_l,
        "dn-st" => &cc.csr_dn_st,
        "dn-c" => &cc.csr_dn_c,
        "san-dns-1" => &cc.csr_san_dns_1,
        "san-dns-2" => &cc.csr_san_dns_2,
        "san-dns-3" => &cc.csr_san_dns_3,
        "san-ip-1" => &cc.csr_san_ip_1,
        "san-ip-2" => &cc.csr_san_ip_2,
        _ => "",
    }
}

/// `replaceMagics`: fill the placeholders from the device state as it stands (as in the
/// reference, `realip` and `hwid` are those of the previous poll). A placeholder that is used
/// but has no value empties the whole value.
fn replace_magics(run: &Run, ports: &mut dyn Ports, src: &str) -> String {
    let d = &run.state.device;
    let name = run
        .state
        .query("admin")
        .and_then(|q| admin_name(&q.body))
        .filter(|n| !n.is_empty())
        .map(|n| dns_name(&n));
    let mut out = src.to_string();
    let mut defined = true;
    let mut put = |magic: &str, value: Option<String>| {
        if out.contains(magic) {
            match value {
                Some(v) => out = out.replace(magic, &v),
                None => {
                    out = out.replace(magic, "");
                    defined = false;
                }
            }
        }
    };
    put("{realip}", d.realip.clone());
    put("{ip}", d.ip.clone());
    put("{proxy}", d.proxy.clone());
    put("{sn}", Some(run.state.sn.replace('-', "")));
    put("{hwid}", d.hwid.clone());
    put("{name}", name);
    if src.contains("{rdns}") {
        let rdns = d
            .realip
            .as_deref()
            .filter(|ip| !ip.is_empty())
            .and_then(|ip| ports.reverse_dns(ip));
        put("{rdns}", rdns);
    }
    if defined {
        out
    } else {
        String::new()
    }
}

/// The `name` attribute of the stored `admin` query (`<info name="..."/>`).
fn admin_name(body: &str) -> Option<String> {
    let wrapped = format!("<admin>{body}</admin>");
    let doc = roxmltree::Document::parse(&wrapped).ok()?;
    let info = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("info"))?;
    info.attribute("name").map(str::to_string)
}

/// The reference's `str2dnsname`: runs of characters other than `[-A-Za-z0-9]` become `-`,
/// then lowercase.
fn dns_name(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut in_run = false;
    for c in s.chars() {
        if c.is_ascii_alphanumeric() || c == '-' {
            out.push(c.to_ascii_lowercase());
            in_run = false;
        } else if !in_run {
            out.push('-');
            in_run = true;
        }
    }
    out
}

/// `bin2var`: lowercase hex.
fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `getCertFromFile`: the DER of a certificate file in PEM (the first `CERTIFICATE` block) or
/// DER form. Unlike the reference, text that is neither is refused instead of being sent.
pub fn cert_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    let text = String::from_utf8_lossy(bytes);
    let lower = text.to_ascii_lowercase();
    if lower.contains("-----begin certificate-----") {
        let mut b64 = String::new();
        let mut inside = false;
        for line in text.split(['\r', '\n']) {
            let l = line.to_ascii_lowercase();
            if l.contains("-----begin certificate-----") {
                inside = true;
            } else if l.contains("-----end certificate-----") {
                break;
            } else if inside {
                b64.push_str(line.trim());
            }
        }
        let der = base64_decode(&b64).map_err(|e| format!("is PEM but not valid base64 ({e})"))?;
        if der.first() != Some(&0x30) {
            return Err("is PEM but does not hold a certificate".into());
        }
        return Ok(der);
    }
    if lower.contains("-----begin") {
        let kind = text
            .lines()
            .find_map(|l| l.trim().strip_prefix("-----BEGIN "))
            .map(|k| k.trim_end_matches('-').to_string())
            .unwrap_or_else(|| "something else".into());
        return Err(format!("is PEM holding {kind}, not a CERTIFICATE"));
    }
    if bytes.first() != Some(&0x30) || bytes.len() < 64 {
        return Err("is neither a PEM nor a DER certificate".into());
    }
    Ok(bytes.to_vec())
}

/// Standard base64 with padding; whitespace is ignored.
fn base64_decode(s: &str) -> Result<Vec<u8>, String> {
    let mut out = Vec::with_capacity(s.len() * 3 / 4);
    let mut acc: u32 = 0;
    let mut bits = 0;
    let mut pad = 0;
    for c in s.chars().filter(|c| !c.is_whitespace()) {
        let v = match c {
            'A'..='Z' => c as u32 - 'A' as u32,
            'a'..='z' => c as u32 - 'a' as u32 + 26,
            '0'..='9' => c as u32 - '0' as u32 + 52,
            '+' => 62,
            '/' => 63,
            '=' => {
                pad += 1;
                continue;
            }
            other => return Err(format!("'{other}' is not a base64 character")),
        };
        if pad > 0 {
            return Err("data after '=' padding".into());
        }
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    Ok(out)
}

struct CertInfo {
    requests: bool,
    busy: bool,
    request_error: bool,
    certs: Vec<Cert>,
}

struct Cert {
    subject_cn: String,
    issuer_cn: String,
    not_before: Option<i64>,
    not_after: Option<i64>,
}

/// Read the stored `certificates` query (`<info><servercert><certificate .../>...`).
fn certificates_info(run: &Run) -> Option<CertInfo> {
    let q = run.state.query("certificates")?;
    let wrapped = format!("<certificates>{}</certificates>", q.body);
    let doc = roxmltree::Document::parse(&wrapped).ok()?;
    let info = doc
        .root_element()
        .children()
        .find(|n| n.has_tag_name("info"));
    let child = |name: &str| info.and_then(|i| i.children().find(|n| n.has_tag_name(name)));
    let requests = child("requests")
        .map(|r| r.children().any(|n| n.has_tag_name("request")))
        .unwrap_or(false);
    let mut certs: Vec<Cert> = child("servercert")
        .map(|s| {
            s.children()
                .filter(|n| n.has_tag_name("certificate"))
                .map(|c| Cert {
                    subject_cn: c.attribute("subject_cn").unwrap_or("").to_string(),
                    issuer_cn: c.attribute("issuer_cn").unwrap_or("").to_string(),
                    not_before: c.attribute("not_before").and_then(parse_time),
                    not_after: c.attribute("not_after").and_then(parse_time),
                })
                .collect()
        })
        .unwrap_or_default();
    if certs.is_empty() {
        certs.push(Cert {
            subject_cn: "-- no CN --".into(),
            issuer_cn: "-- no CA --".into(),
            not_before: None,
            not_after: None,
        });
    }
    Some(CertInfo {
        requests,
        busy: child("busy").is_some(),
        request_error: child("request-error").is_some(),
        certs,
    })
}

/// Times as the device reports them: `YYYY-MM-DD HH:MM:SS` / ISO 8601 (UTC), or epoch seconds.
fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    if let Ok(n) = s.parse::<i64>() {
        return Some(n);
    }
    let b = s.as_bytes();
    if b.len() < 10 {
        return None;
    }
    let num = |r: std::ops::Range<usize>| s.get(r).and_then(|x| x.parse::<i64>().ok());
    let (y, m, d) = (num(0..4)?, num(5..7)?, num(8..10)?);
    let (hh, mm, ss) = if b.len() >= 19 {
        (num(11..13)?, num(14..16)?, num(17..19)?)
    } else {
        (0, 0, 0)
    };
    Some(days_from_civil(y, m, d) * 86400 + hh * 3600 + mm * 60 + ss)
}

fn days_from_civil(y: i64, m: i64, d: i64) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = if y >= 0 { y } else { y - 399 } / 400;
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146097 + doe - 719468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times() {
        assert_eq!(parse_time("1970-01-02 00:00:00"), Some(86400));
        assert_eq!(parse_time("2026-11-22T00:00:00Z"), Some(1795305600));
        assert_eq!(parse_time("junk"), None);
    }

    #[test]
    fn certificate_files() {
        let der: Vec<u8> = std::iter::once(0x30).chain(1..=99u8).collect();
        assert_eq!(cert_der(&der).unwrap(), der);
        let b64 = {
            // encode with the same alphabet to build a PEM
            const A: &[u8; 64] =
                b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
            let mut s = String::new();
            for ch in der.chunks(3) {
                let b = [ch[0], *ch.get(1).unwrap_or(&0), *ch.get(2).unwrap_or(&0)];
                let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
                for i in 0..4 {
                    if i <= ch.len() {
                        s.push(A[((n >> (18 - 6 * i)) & 63) as usize] as char);
                    } else {
                        s.push('=');
                    }
                }
            }
            s
        };
        let pem = format!(
            "junk\r\n-----BEGIN CERTIFICATE-----\r\n{}\r\n{}\r\n-----END CERTIFICATE-----\r\n",
            &b64[..64],
            &b64[64..]
        );
        assert_eq!(cert_der(pem.as_bytes()).unwrap(), der);
        let csr = "-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n";
        assert!(cert_der(csr.as_bytes())
            .unwrap_err()
            .contains("CERTIFICATE REQUEST"));
        assert!(cert_der(b"hello").unwrap_err().contains("neither"));
        let bad = "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n";
        assert!(cert_der(bad.as_bytes()).unwrap_err().contains("base64"));
    }

    #[test]
    fn base64_and_names() {
        assert_eq!(base64_decode("Zm9vYmFy").unwrap(), b"foobar");
        assert_eq!(base64_decode("Zm8=").unwrap(), b"fo");
        assert_eq!(base64_decode("Zg= =").unwrap(), b"f");
        assert!(base64_decode("Zg==Zg").is_err());
        assert_eq!(dns_name("Reception Desk #1"), "reception-desk-1");
        assert_eq!(hex(&[0x30, 0x0a, 0xff]), "300aff");
        assert_eq!(
            admin_name("<info name=\"Empfang\"/>").as_deref(),
            Some("Empfang")
        );
    }
}
