//! Grandstream: `cfg<mac>.xml` per device, `cfg<model>.xml` and `cfg.xml` shared, in the
//! `<gs_provision>` P-value format.
//!
//! Request order (vendor facts §9): `cfg<mac>` (legacy binary; newer docs `cfg<mac>.bin`),
//! `cfg<mac>.xml`, `cfg<model>.xml` (`cfggxp2170.xml`), `cfg.xml`; names in lower case. The
//! binary forms are refused (404), so the phone goes on to the XML file.
//!
//! P-values confirmed by the vendor facts: P192 (firmware server path, a folder: we give the
//! folder of the catalogue's image URL without the scheme, as Wazo does with `host/path/`),
//! P194 (auto-upgrade check), P8375 (don't prompt), P1359 (XML config password). Others in the
//! shipped template (P271 account active, P270 account name, P47 SIP server, P35 user, P36
//! auth id, P34 password, P3 display name, P30 NTP server, P2 admin password, P212 upgrade
//! protocol) are from Grandstream's public P-value list and **unconfirmed** here; only line 1
//! is written (other accounts use other P numbers).

use std::sync::OnceLock;

use regex::Regex;
use serde_json::json;

use super::{
    base_vars, claim, mac_from_name, re, render_text, DeviceHint, DeviceRequest, Evidence,
    FileKind, RenderContext, RenderError, Rendered, Vendor, Verdict, XML,
};
use crate::vendors::mac::Mac;

pub struct Grandstream;

struct Patterns {
    ua: Regex,
    ua_legacy: Regex,
    file: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        // Vendor facts §9.
        ua: re(r"^Grandstream Model HW (\w+)(?:\s+V[^ ]+)? SW ([^ ]+) DevId ([^ ]+)"),
        ua_legacy: re(r"^Grandstream (GXP2000) .*:([^ ]+)\) DevId ([^ ]+)"),
        file: re(r"(?i)^cfg([0-9a-z_-]*?)(\.xml|\.bin)?$"),
    })
}

impl Vendor for Grandstream {
    fn id(&self) -> &'static str {
        "grandstream"
    }

    fn ouis(&self) -> &'static [&'static str] {
        &["000B82", "C074AD", "EC74D7"]
    }

    fn parse_user_agent(&self, ua: &str) -> Option<DeviceHint> {
        let p = patterns();
        let c =
            p.ua.captures(ua.trim())
                .or_else(|| p.ua_legacy.captures(ua.trim()))?;
        Some(DeviceHint {
            model: Some(c[1].to_string()),
            firmware: Some(c[2].to_string()),
            mac: Mac::parse(&c[3]).ok(),
        })
    }

    fn parse_option60(&self, _class: &str) -> Option<DeviceHint> {
        None
    }

    fn identify(&self, req: &DeviceRequest) -> Verdict {
        let file = req.file_name();
        let id = self.id();
        let ua = self.parse_user_agent(&req.user_agent);
        let ours = ua.is_some() || req.vendor_prefix().is_some_and(|v| v.id() == id);
        let Some(c) = patterns().file.captures(file) else {
            if ours {
                return Verdict::Refused(format!(
                    "grandstream: '{file}' is not generated here (served: cfg<mac>.xml, \
                     cfg<model>.xml, cfg.xml)"
                ));
            }
            return Verdict::NotMine;
        };
        let part = &c[1];
        let ext = c.get(2).map(|m| m.as_str().to_ascii_lowercase());
        let hexy = !part.is_empty() && part.bytes().all(|b| b.is_ascii_hexdigit());
        if ext.as_deref() != Some(".xml") {
            if hexy {
                return Verdict::Refused(format!(
                    "grandstream: '{file}' is the binary configuration format, which is not \
                     generated; the phone asks for cfg<mac>.xml next"
                ));
            }
            return Verdict::NotMine;
        }
        if part.is_empty() {
            return claim(
                id,
                file,
                FileKind::Common,
                Evidence::FileName,
                ua.as_ref(),
                None,
                None,
            );
        }
        // All hex digits: a MAC (malformed if not 12 of them). Models have other letters
        // (gxp, grp, ht, wp).
        if hexy {
            return match mac_from_name(id, file, part) {
                Ok(mac) => claim(
                    id,
                    file,
                    FileKind::Device,
                    Evidence::FileName,
                    ua.as_ref(),
                    None,
                    Some(mac),
                ),
                Err(v) => v,
            };
        }
        let model = Some(part.to_ascii_uppercase());
        claim(
            id,
            file,
            FileKind::Common,
            Evidence::FileName,
            ua.as_ref(),
            model,
            None,
        )
    }

    fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError> {
        // P192 is a folder without scheme; P212 the protocol (1 HTTP, 2 HTTPS; unconfirmed).
        let (fw_path, fw_protocol) = match ctx.firmware {
            Some(f) => {
                let (scheme, rest) = f.url.split_once("://").unwrap_or(("http", &f.url));
                let folder = match rest.rfind('/') {
                    Some(i) => &rest[..=i],
                    None => rest,
                };
                (
                    Some(folder.to_string()),
                    Some(if scheme.eq_ignore_ascii_case("https") {
                        2
                    } else {
                        1
                    }),
                )
            }
            None => (None, None),
        };
        let mut vars = base_vars(ctx);
        vars.insert(
            "grandstream".into(),
            json!({ "firmware_path": fw_path, "firmware_protocol": fw_protocol }),
        );
        Ok(Rendered {
            body: render_text(ctx, "config.xml.j2", vars)?.into_bytes(),
            content_type: XML,
        })
    }

    fn templates(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "config.xml.j2",
            include_str!("shipped/grandstream/config.xml.j2"),
        )]
    }

    fn check_option(&self, key: &str, _value: &toml::Value) -> Result<(), String> {
        super::no_options(key)
    }

    fn check_raw_key(&self, key: &str) -> Result<(), String> {
        let digits = key.strip_prefix('P').unwrap_or("");
        if !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
            Ok(())
        } else {
            Err("must be a P-value such as P8375".into())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents_and_files() {
        let h = Grandstream
            .parse_user_agent("Grandstream Model HW GXP2200 V2.2A SW 1.0.1.33 DevId 000b82462d97")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("GXP2200"));
        assert_eq!(h.firmware.as_deref(), Some("1.0.1.33"));
        assert_eq!(h.mac.unwrap().as_str(), "000b82462d97");
        let h = Grandstream
            .parse_user_agent(
                "Grandstream GXP2000 (gxp2000e.bin:1.2.5.3/boot55e.bin:1.1.6.9) DevId 000b822726c8",
            )
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("GXP2000"));
        assert_eq!(h.firmware.as_deref(), Some("1.1.6.9"));
        let v = |p: &str| {
            Grandstream.identify(&DeviceRequest {
                path: p.into(),
                ..Default::default()
            })
        };
        assert!(
            matches!(v("/cfg000b82462d97.xml"), Verdict::Mine(i) if i.file.kind == FileKind::Device)
        );
        assert!(
            matches!(v("/cfgGXP2170.xml"), Verdict::Mine(i) if i.model.as_deref() == Some("GXP2170"))
        );
        assert!(matches!(v("/cfg.xml"), Verdict::Mine(i) if i.file.kind == FileKind::Common));
        assert!(matches!(v("/cfg000b82462d97"), Verdict::Refused(_)));
        assert!(matches!(v("/cfg000b82462d97.bin"), Verdict::Refused(_)));
        assert!(matches!(v("/cfg000b8246.xml"), Verdict::Refused(r) if r.contains("not a MAC")));
        assert_eq!(v("/config.txt"), Verdict::NotMine);
    }
}
