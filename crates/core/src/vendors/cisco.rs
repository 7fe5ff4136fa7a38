//! Cisco SPA (and Linksys-branded SPA) and Cisco MPP (3PCC) phones: flat XML profiles.
//!
//! Default profile rules (vendor facts §8): SPA asks for `/spa$PSN.cfg` (`spa504G.cfg`), MPP
//! for `/$PSN.xml` (`6841.xml`; the PSN form of MPP models is **unconfirmed**). We answer those
//! with the model-wide profile, which sets `Profile_Rule` to `<base>/cisco/$MA.xml`: from then
//! on the phone resyncs its own file, `$MA.xml` (lower-case MAC), with all settings.
//! `$MA.xml` is shared with Gigaset's `<MAC>.xml`: User-Agent, OUI or inventory decide.
//!
//! Profile format: `<flat-profile><Param ua="na">value</Param>…</flat-profile>`; firmware via
//! `Upgrade_Enable`/`Upgrade_Rule` (how the phone decides to upgrade is **unconfirmed**).
//! Parameter names beyond the vendor facts (`Line_Enable_1_`, `User_ID_1_`, ...) are from
//! Cisco's SPA/MPP administration guides. Enterprise (`SEP<MAC>.cnf.xml`) phones are not served.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::json;

use super::{
    base_vars, check_xml_name, claim, mac_from_name, mac_like, re, render_text, DeviceHint,
    DeviceRequest, Evidence, FileKind, RenderContext, RenderError, Rendered, Vendor, Verdict, XML,
};
use crate::vendors::mac::Mac;

pub struct Cisco;

struct Patterns {
    ua_spa: Regex,
    ua_linksys: Regex,
    ua_mpp: Regex,
    spa: Regex,
    mpp: Regex,
    mac_xml: Regex,
    option60: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        // Vendor facts §8 (Wazo).
        ua_spa: re(r"^Cisco/(\w+)-(\S+) (?:\(([\dA-Fa-f]{12})\))?\((\w+)\)$"),
        ua_linksys: re(r"^Linksys/([\w\-]+)-([^\s\-]+) \((\w+)\)$"),
        // MPP: `Cisco-CP-8841-3PCC/11.0 (00562b043615)`; configurable on the phone, so this
        // pattern (derived from the one example) is **unconfirmed**.
        ua_mpp: re(r"^Cisco-(CP-[\w-]+)/(\S+)(?: \(([\dA-Fa-f]{12})\))?"),
        spa: re(r"^spa(\w+)\.cfg$"),
        mpp: re(r"^(\d{4})\.xml$"),
        mac_xml: re(r"^([^.]+)\.xml$"),
        option60: re(
            r"^(?:Cisco SPA|Cisco Systems, Inc\. IP Phone SPA|CISCO SPA|LINKSYS SPA-?)(\w+)$",
        ),
    })
}

impl Vendor for Cisco {
    fn id(&self) -> &'static str {
        "cisco"
    }

    fn ouis(&self) -> &'static [&'static str] {
        // Vendor facts §1.3, plus the OUIs of the SPA and MPP User-Agent examples (0002FD,
        // 00562B). The "many Linksys blocks" are not listed there.
        &[
            "002699", "503DE5", "00E16D", "00DA55", "10BD18", "0002FD", "00562B",
        ]
    }

    fn parse_user_agent(&self, ua: &str) -> Option<DeviceHint> {
        let p = patterns();
        let ua = ua.trim();
        if let Some(c) = p.ua_spa.captures(ua) {
            return Some(DeviceHint {
                model: Some(c[1].to_string()),
                firmware: Some(c[2].to_string()),
                mac: c.get(3).and_then(|m| Mac::parse(m.as_str()).ok()),
            });
        }
        if let Some(c) = p.ua_linksys.captures(ua) {
            return Some(DeviceHint {
                model: Some(c[1].replace('-', "")),
                firmware: Some(c[2].to_string()),
                mac: Mac::parse(&c[3]).ok(),
            });
        }
        p.ua_mpp.captures(ua).map(|c| DeviceHint {
            model: Some(c[1].to_string()),
            firmware: Some(c[2].to_string()),
            mac: c.get(3).and_then(|m| Mac::parse(m.as_str()).ok()),
        })
    }

    fn parse_option60(&self, class: &str) -> Option<DeviceHint> {
        // `Cisco SPA504G`, `Cisco Systems, Inc. IP Phone SPA504G`, `CISCO SPA112`,
        // `LINKSYS SPA-942` (vendor facts §1.3).
        let c = patterns().option60.captures(class)?;
        Some(DeviceHint {
            model: Some(format!("SPA{}", &c[1])),
            ..Default::default()
        })
    }

    fn identify(&self, req: &DeviceRequest) -> Verdict {
        let p = patterns();
        let file = req.file_name();
        let id = self.id();
        let ua = self.parse_user_agent(&req.user_agent);
        let ours = ua.is_some() || req.vendor_prefix().is_some_and(|v| v.id() == id);
        if let Some(c) = p.spa.captures(file) {
            let model = Some(format!("SPA{}", &c[1]));
            return claim(
                id,
                file,
                FileKind::Common,
                Evidence::FileName,
                ua.as_ref(),
                model,
                None,
            );
        }
        if let Some(c) = p.mpp.captures(file) {
            let model = Some(format!("CP-{}-3PCC", &c[1]));
            return claim(
                id,
                file,
                FileKind::Common,
                Evidence::FileName,
                ua.as_ref(),
                model,
                None,
            );
        }
        if file.starts_with("SEP") && file.ends_with(".cnf.xml") {
            return Verdict::Refused(format!(
                "cisco: '{file}' is an enterprise (SCCP/CUCM) phone's file; only SPA and MPP \
                 (3PCC) phones are provisioned"
            ));
        }
        if let Some(c) = p.mac_xml.captures(file) {
            let part = &c[1];
            let hexy = mac_like(part);
            if !ours && !hexy {
                return Verdict::NotMine;
            }
            return match mac_from_name(id, file, part) {
                Ok(mac) => claim(
                    id,
                    file,
                    FileKind::Device,
                    Evidence::SharedName,
                    ua.as_ref(),
                    None,
                    Some(mac),
                ),
                Err(v) => v,
            };
        }
        if ours {
            return Verdict::Refused(format!(
                "cisco: '{file}' is not generated here (served: spa<model>.cfg, <psn>.xml, \
                 <mac>.xml)"
            ));
        }
        Verdict::NotMine
    }

    fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError> {
        let mut vars = base_vars(ctx);
        vars.insert(
            "cisco".into(),
            json!({ "profile_rule": format!("{}/cisco/$MA.xml", ctx.base_url) }),
        );
        Ok(Rendered {
            body: render_text(ctx, "profile.xml.j2", vars)?.into_bytes(),
            content_type: XML,
        })
    }

    fn templates(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "profile.xml.j2",
            include_str!("shipped/cisco/profile.xml.j2"),
        )]
    }

    fn check_option(&self, key: &str, _value: &toml::Value) -> Result<(), String> {
        super::no_options(key)
    }

    fn check_raw_key(&self, key: &str) -> Result<(), String> {
        check_xml_name(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agents() {
        let h = Cisco
            .parse_user_agent("Cisco/SPA508G-7.4.4 (0002FDFF2103)(CBT141400UK)")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("SPA508G"));
        assert_eq!(h.firmware.as_deref(), Some("7.4.4"));
        assert_eq!(h.mac.unwrap().as_str(), "0002fdff2103");
        let h = Cisco
            .parse_user_agent("Linksys/SPA-942-6.1.5(a) (88019FA42805)")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("SPA942"));
        let h = Cisco
            .parse_user_agent("Cisco-CP-8841-3PCC/11.0 (00562b043615)")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("CP-8841-3PCC"));
        assert_eq!(h.mac.unwrap().as_str(), "00562b043615");
    }

    #[test]
    fn files() {
        let kind = |p: &str| match Cisco.identify(&DeviceRequest {
            path: p.into(),
            ..Default::default()
        }) {
            Verdict::Mine(i) => Some((i.file.kind, i.model)),
            _ => None,
        };
        assert_eq!(
            kind("/spa504G.cfg"),
            Some((FileKind::Common, Some("SPA504G".into())))
        );
        assert_eq!(
            kind("/6841.xml"),
            Some((FileKind::Common, Some("CP-6841-3PCC".into())))
        );
        assert_eq!(
            kind("/0002fdff2103.xml").map(|k| k.0),
            Some(FileKind::Device)
        );
        assert_eq!(kind("/provisioning.xml"), None);
    }
}
