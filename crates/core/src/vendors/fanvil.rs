//! Fanvil: a per-model common file (`f0X4hw1.100.cfg`, `F0V00X300000.cfg`, ...) and the
//! per-device `<mac>.cfg`, in the newer `<sysConf>` XML format.
//!
//! Names (vendor facts §10): the device file is `<mac>.cfg`, lower case, never all zeros;
//! the common file names vary by model and all start with `f0`/`F0`. `<mac>.cfg` is shared
//! with Yealink, Digium and Polycom: User-Agent, OUI or inventory decide.
//!
//! Format: `<sysConf><Version>…` with sections (`<sip><line index>`, `<ap>`, `<phone>`); the
//! section and element names in the shipped template beyond those in the vendor facts are
//! from Fanvil's configuration templates and **unconfirmed** here. Raw keys are written
//! `section.Element` (`ap.FlashInterval` → `<ap><FlashInterval>`) or `Element` (top level).
//! Firmware: `<fwCheck>` with `EnableAutoUpgrade`/`UpgradeServer1` (a folder) is the newer
//! form; we write `AUTOUPDATE_CONFIG_MODULE/Auto_Image_URL` with the image URL, the key the
//! vendor facts name.

use std::collections::BTreeMap;
use std::sync::OnceLock;

use regex::Regex;
use serde_json::json;

use super::{
    base_vars, check_xml_name, claim, mac_from_name, mac_like, re, render_text, DeviceHint,
    DeviceRequest, Evidence, FileKind, RenderContext, RenderError, Rendered, Vendor, Verdict, XML,
};
use crate::vendors::mac::Mac;

pub struct Fanvil;

struct Patterns {
    ua: Regex,
    common: Regex,
    device: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        // Vendor facts §10.
        ua: re(
            r"^Fanvil ([VHXWi][0-9]{1,3}[WSGVUCi]?[DV]?[0-9]?(?:-V[12])?(?:\s?Pro)?) ([0-9.]+) ([\da-f]{12})$",
        ),
        common: re(r"^[fF]0[0-9A-Za-z.]*\.cfg$"),
        device: re(r"^([^.]+)\.cfg$"),
    })
}

impl Vendor for Fanvil {
    fn id(&self) -> &'static str {
        "fanvil"
    }

    fn ouis(&self) -> &'static [&'static str] {
        &["00A859", "0C383E"]
    }

    fn parse_user_agent(&self, ua: &str) -> Option<DeviceHint> {
        let c = patterns().ua.captures(ua.trim())?;
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
        let p = patterns();
        let file = req.file_name();
        let id = self.id();
        let ua = self.parse_user_agent(&req.user_agent);
        let ours = ua.is_some() || req.vendor_prefix().is_some_and(|v| v.id() == id);
        let stem = file.strip_suffix(".cfg").unwrap_or("");
        // `f01653aabbcc.cfg` is a device file (Yealink's OUI F01653), not a common one.
        if p.common.is_match(file) && !mac_like(stem) {
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
        if let Some(c) = p.device.captures(file) {
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
                "fanvil: '{file}' is not generated here (served: f0<model>.cfg, <mac>.cfg)"
            ));
        }
        Verdict::NotMine
    }

    fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError> {
        // Raw keys grouped into sections, in key order.
        let mut top = Vec::new();
        let mut sections: BTreeMap<&str, Vec<serde_json::Value>> = BTreeMap::new();
        for (k, v) in &ctx.settings.raw {
            match k.split_once('.') {
                Some((section, name)) => sections
                    .entry(section)
                    .or_default()
                    .push(json!({ "name": name, "value": v })),
                None => top.push(json!({ "name": k, "value": v })),
            }
        }
        let sections: Vec<serde_json::Value> = sections
            .into_iter()
            .map(|(name, items)| json!({ "name": name, "items": items }))
            .collect();
        let mut vars = base_vars(ctx);
        vars.insert(
            "fanvil".into(),
            json!({ "raw_top": top, "raw_sections": sections }),
        );
        Ok(Rendered {
            body: render_text(ctx, "config.xml.j2", vars)?.into_bytes(),
            content_type: XML,
        })
    }

    fn templates(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "config.xml.j2",
            include_str!("shipped/fanvil/config.xml.j2"),
        )]
    }

    fn check_option(&self, key: &str, _value: &toml::Value) -> Result<(), String> {
        super::no_options(key)
    }

    fn check_raw_key(&self, key: &str) -> Result<(), String> {
        match key.split_once('.') {
            Some((section, name)) => check_xml_name(section).and_then(|_| {
                if name.contains('.') {
                    Err("write section.Element (one level of nesting)".into())
                } else {
                    check_xml_name(name)
                }
            }),
            None => check_xml_name(key),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_and_files() {
        let h = Fanvil
            .parse_user_agent("Fanvil X4 2.10.2.6887 0c383e07e16c")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("X4"));
        assert_eq!(h.mac.unwrap().as_str(), "0c383e07e16c");
        let h = Fanvil
            .parse_user_agent("Fanvil X6U Pro 0.0.10 0c383e07e16d")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("X6U Pro"));
        let v = |p: &str| {
            Fanvil.identify(&DeviceRequest {
                path: p.into(),
                ..Default::default()
            })
        };
        assert!(
            matches!(v("/f0X4hw1.100.cfg"), Verdict::Mine(i) if i.file.kind == FileKind::Common)
        );
        assert!(matches!(v("/F0V00X300000.cfg"), Verdict::Mine(_)));
        assert!(
            matches!(v("/0c383e07e16c.cfg"), Verdict::Mine(i) if i.file.kind == FileKind::Device)
        );
        assert_eq!(v("/y000000000066.cfg"), Verdict::NotMine);
        assert!(
            matches!(v("/f01653aabbcc.cfg"), Verdict::Mine(i) if i.file.kind == FileKind::Device)
        );
    }
}
