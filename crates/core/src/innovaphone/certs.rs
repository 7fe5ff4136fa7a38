//! Custom device certificates (`doCertificates`): what the engine says and sends about them.
//!
//! Implemented: the decisions that do not need the CSR files — roll-out disabled or no state
//! (the reference's default), no certificate query result yet (which, as in the reference,
//! holds back all scripts), a previous upload error, a CSR being generated, and whether the
//! device's current certificate is acceptable (issuer in `CAname`, validity, renewal).
//! The CSR download/sign/upload cycle belongs to the certificate roll-out work (issue 5); until
//! then a device that needs a new certificate is reported, not sent commands.

use super::engine::{Run, Stop};
use super::Ports;

/// Messages for the `certstat` and the commands to send (`None` = none required).
pub(crate) struct CertDecision {
    pub msgs: Vec<String>,
    pub cmds: Option<Vec<(String, String)>>,
}

pub(crate) fn decide(
    run: &mut Run,
    _ports: &mut dyn Ports,
    _device_type: &str,
) -> Result<CertDecision, Stop> {
    let cc = &run.view.cfg.customcerts;
    let mut msgs = Vec::new();
    run.state.device.request_downloaded = Some("false".into());
    let has_request = certificates_info(run).map(|i| i.requests).unwrap_or(false);
    let cleanup_cmds = || {
        vec![
            (
                "removing CSR from device".to_string(),
                "vars del X509/REQUEST ".to_string(),
            ),
            (
                "removing CSR key from device".to_string(),
                "vars del X509/REQUESTKEY ".to_string(),
            ),
        ]
    };
    if cc.dir.is_empty() || !run.tracking {
        msgs.push("either certificate handling or state tracking not enabled - not doing any certificate checking".to_string());
        let cmds = has_request.then(cleanup_cmds);
        return Ok(CertDecision { msgs, cmds });
    }
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
    if neednew {
        msgs.push("a new device certificate is needed; the CSR roll-out is not available in this build - no certificate commands sent".into());
        return Ok(CertDecision { msgs, cmds: None });
    }
    msgs.push("OK".into());
    let cmds = has_request.then(cleanup_cmds);
    Ok(CertDecision { msgs, cmds })
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
}
