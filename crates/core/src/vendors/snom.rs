//! Snom desk and DECT phones: `<phoneType>.htm`, `<phoneType>-<MAC>.htm`, explicit file
//! names from the setting server URL, and the `firmware_status` file.
//!
//! Without a file name in its setting server URL a phone asks for `snomD785.htm`, then
//! `snomD785-000413A11FA7.htm` (MAC upper case; vendor facts §2). We answer:
//!
//! * `<phoneType>.htm`: an XML settings file with the model-wide settings, `update_policy` and
//!   `firmware_status` pointing at `/snom/<phoneType>-firmware.xml?mac={mac}` (`{mac}` is
//!   expanded by the phone; it is the confirmed placeholder, so the firmware file knows the
//!   device even without a User-Agent);
//! * `<phoneType>-<MAC>.htm`: a setting-files container pointing at `/snom/<MAC>.xml`;
//! * `/snom/<MAC>.xml`, and any `.xml`/`.htm` name containing the MAC asked by a Snom phone
//!   (explicit names such as `http://server/snom/{mac}.xml` in the setting server URL): the
//!   device's full settings;
//! * `<phoneType>-firmware.xml`: `<firmware-settings>` with the target image URL.
//!
//! Settings are `<name perm="R">value</name>` (`perm=""` for the firmware keys, as in the
//! seeds); per-line settings carry `idx`. Setting names beyond those in the vendor facts
//! (`user_*`, `admin_mode_password`, `ntp_server`) are from Snom's public settings list.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::json;

use super::{
    base_vars, check_xml_name, claim, hex_runs, mac_from_name, re, render_text, DeviceHint,
    DeviceRequest, Evidence, FileKind, RenderContext, RenderError, Rendered, Vendor, Verdict, XML,
};
use crate::vendors::mac::Mac;

pub struct Snom;

struct Patterns {
    ua: Regex,
    ua_short: Regex,
    ua_dect: Regex,
    common: Regex,
    device: Regex,
    firmware: Regex,
    option60: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        // Vendor facts §2 (Wazo), the MAC narrowed to a 12-digit word.
        ua: re(r"\bsnom(\w+)-SIP\s([\d.]+)\s.*?\b([0-9A-Fa-f]{12})\b"),
        ua_short: re(r"\bsnom(\w+)-SIP ([\d.]+)"),
        ua_dect: re(r"\b[sS]nom\s?(M[0-9]{3})\s([0-9.]+)\s([0-9a-fA-F]{12})\b"),
        common: re(r"^snom(\w+)\.htm$"),
        device: re(r"^snom(\w+)-([^.]*)\.htm$"),
        firmware: re(r"^snom(\w+)-firmware\.xml$"),
        option60: re(r"^snom(\w+)$"),
    })
}

/// `snomD785` for model `D785`.
fn phone_type(model: Option<&str>) -> Option<String> {
    model.map(|m| format!("snom{m}"))
}

/// Raw keys `name` or `name[idx]` → (name, idx).
fn split_idx(key: &str) -> (&str, Option<&str>) {
    match key.strip_suffix(']').and_then(|k| k.split_once('[')) {
        Some((name, idx)) => (name, Some(idx)),
        None => (key, None),
    }
}

impl Vendor for Snom {
    fn id(&self) -> &'static str {
        "snom"
    }

    fn ouis(&self) -> &'static [&'static str] {
        &["000413", "00087B"]
    }

    fn parse_user_agent(&self, ua: &str) -> Option<DeviceHint> {
        let p = patterns();
        if let Some(c) = p.ua.captures(ua).or_else(|| p.ua_dect.captures(ua)) {
            return Some(DeviceHint {
                model: Some(c[1].to_string()),
                firmware: Some(c[2].to_string()),
                mac: Mac::parse(&c[3]).ok(),
            });
        }
        p.ua_short.captures(ua).map(|c| DeviceHint {
            model: Some(c[1].to_string()),
            firmware: Some(c[2].to_string()),
            mac: None,
        })
    }

    fn parse_option60(&self, class: &str) -> Option<DeviceHint> {
        // `snom320`, `snomD785`; M-series are matched on their first 8 characters.
        let c = patterns().option60.captures(class)?;
        let model = &c[1];
        let model = if model.starts_with('M') {
            model.get(..4).unwrap_or(model)
        } else {
            model
        };
        Some(DeviceHint {
            model: Some(model.to_string()),
            ..Default::default()
        })
    }

    fn identify(&self, req: &DeviceRequest) -> Verdict {
        let p = patterns();
        let file = req.file_name();
        let ua = self.parse_user_agent(&req.user_agent);
        let ours = ua.is_some() || req.vendor_prefix().is_some_and(|v| v.id() == self.id());
        let id = self.id();
        if let Some(c) = p.firmware.captures(file) {
            let mac = req.query_arg("mac").and_then(|m| Mac::parse(m).ok());
            return claim(
                id,
                file,
                FileKind::Firmware,
                Evidence::FileName,
                ua.as_ref(),
                Some(c[1].to_string()),
                mac,
            );
        }
        if let Some(c) = p.common.captures(file) {
            return claim(
                id,
                file,
                FileKind::Common,
                Evidence::FileName,
                ua.as_ref(),
                Some(c[1].to_string()),
                None,
            );
        }
        if let Some(c) = p.device.captures(file) {
            let mac = match mac_from_name(id, file, &c[2]) {
                Ok(m) => m,
                Err(v) => return v,
            };
            return claim(
                id,
                file,
                FileKind::Index,
                Evidence::FileName,
                ua.as_ref(),
                Some(c[1].to_string()),
                Some(mac),
            );
        }
        // Explicit file names from the setting server URL: only when the phone says it is a
        // Snom or the path says /snom/.
        let explicit = file.ends_with(".xml") || file.ends_with(".htm");
        if ours && explicit {
            let mac = hex_runs(file).find_map(|h| Mac::parse(h).ok());
            let kind = if mac.is_some() {
                FileKind::Device
            } else {
                FileKind::Common
            };
            return claim(id, file, kind, Evidence::FileName, ua.as_ref(), None, mac);
        }
        if ours {
            return Verdict::Refused(format!(
                "snom: '{file}' is not a settings file (.htm/.xml) this server generates"
            ));
        }
        Verdict::NotMine
    }

    fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError> {
        let id = ctx.identity;
        let pt = phone_type(id.model.as_deref());
        let base = ctx.base_url;
        let raw: Vec<serde_json::Value> = ctx
            .settings
            .raw
            .iter()
            .map(|(k, v)| {
                let (name, idx) = split_idx(k);
                json!({ "name": name, "idx": idx, "value": v })
            })
            .collect();
        let mut vars = base_vars(ctx);
        vars.insert(
            "snom".into(),
            json!({
                "phone_type": pt,
                "firmware_status_url": pt.as_ref().map(|pt| format!("{base}/snom/{pt}-firmware.xml?mac={{mac}}")),
                "device_url": id.mac.as_ref().map(|m| format!("{base}/snom/{}.xml", m.upper())),
                "raw": raw,
            }),
        );
        let template = match id.file.kind {
            FileKind::Index => "files.xml.j2",
            FileKind::Firmware => "firmware.xml.j2",
            _ => "settings.xml.j2",
        };
        let content_type = if id.file.name.ends_with(".htm") {
            "text/html; charset=utf-8"
        } else {
            XML
        };
        Ok(Rendered {
            body: render_text(ctx, template, vars)?.into_bytes(),
            content_type,
        })
    }

    fn templates(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "settings.xml.j2",
                include_str!("shipped/snom/settings.xml.j2"),
            ),
            ("files.xml.j2", include_str!("shipped/snom/files.xml.j2")),
            (
                "firmware.xml.j2",
                include_str!("shipped/snom/firmware.xml.j2"),
            ),
        ]
    }

    fn check_option(&self, key: &str, _value: &toml::Value) -> Result<(), String> {
        super::no_options(key)
    }

    fn check_raw_key(&self, key: &str) -> Result<(), String> {
        let (name, idx) = split_idx(key);
        check_xml_name(name)?;
        match idx {
            Some(i) if i.is_empty() || !i.bytes().all(|b| b.is_ascii_digit()) => {
                Err("an index is written name[1]".into())
            }
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(path: &str, ua: &str) -> Verdict {
        Snom.identify(&DeviceRequest {
            path: path.into(),
            user_agent: ua.into(),
            query: vec![("mac".into(), "000413922D24".into())],
            ..Default::default()
        })
    }

    #[test]
    fn user_agents() {
        let h = Snom
            .parse_user_agent(
                "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 2010.12-00004-g9ba52f5 000413922D24 SXM:0 UXM:0)",
            )
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("D785"));
        assert_eq!(h.firmware.as_deref(), Some("10.1.33.33"));
        assert_eq!(h.mac.unwrap().as_str(), "000413922d24");
        let h = Snom
            .parse_user_agent(
                "Mozilla/4.0 (compatible; snom710-SIP 8.7.5.35 1.1.5-IFX-05.01.12 000413741767)",
            )
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("710"));
        assert_eq!(h.mac.unwrap().as_str(), "000413741767");
        let h = Snom
            .parse_user_agent("Mozilla/4.0 (compatible; Snom M900 05.20.0001 000413b60680)")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("M900"));
    }

    #[test]
    fn files() {
        let cases = [
            ("/snomD345.htm", FileKind::Common, None),
            (
                "/snomD345-000413A11FA7.htm",
                FileKind::Index,
                Some("000413a11fa7"),
            ),
            (
                "/snomD345-000413a11fa7.htm",
                FileKind::Index,
                Some("000413a11fa7"),
            ),
            (
                "/snomD345-firmware.xml",
                FileKind::Firmware,
                Some("000413922d24"),
            ),
        ];
        for (path, kind, mac) in cases {
            match ident(path, "") {
                Verdict::Mine(i) => {
                    assert_eq!(i.file.kind, kind, "{path}");
                    assert_eq!(i.model.as_deref(), Some("D345"));
                    assert_eq!(i.mac.as_ref().map(Mac::as_str), mac, "{path}");
                }
                v => panic!("{path}: {v:?}"),
            }
        }
        match ident("/snomD345-00041.htm", "") {
            Verdict::Refused(r) => assert!(r.contains("'00041' is not a MAC"), "{r}"),
            v => panic!("{v:?}"),
        }
        assert_eq!(ident("/settings.xml", ""), Verdict::NotMine);
        let ua = "Mozilla/4.0 (compatible; snomD785-SIP 10.1.33.33 x 000413922D24)";
        match ident("/prov/000413922D24.xml", ua) {
            Verdict::Mine(i) => {
                assert_eq!(i.file.kind, FileKind::Device);
                assert_eq!(i.evidence, Evidence::UserAgent);
            }
            v => panic!("{v:?}"),
        }
    }
}
