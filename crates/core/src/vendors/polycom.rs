//! Polycom SoundPoint IP and VVX: the master file (`<mac>.cfg`, else `000000000000.cfg`) and
//! the per-device `<mac>-phone.cfg`.
//!
//! The master file's `APPLICATION` attributes decide what the phone loads next (vendor facts
//! §7): `APP_FILE_PATH` is the firmware image (the catalogue's URL, or empty: keep the running
//! application; that an empty path is accepted is **unconfirmed**) and `CONFIG_FILES` lists
//! `[PHONE_MAC_ADDRESS]-phone.cfg`, which the phone substitutes. `000000000000.cfg` is the
//! same for every phone; `<mac>.cfg` may differ per device (a group's firmware target).
//!
//! `<mac>-phone.cfg` is `<polycomConfig param="value" …/>`; `device.*` parameters are sent
//! with `device.set="1"` and `<param>.set="1"`. The MAC is not in the User-Agent; it comes
//! from the path. The log uploads (`<mac>-boot.log`, `<mac>-app.log`) are not accepted.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::json;

use super::{
    base_vars, check_xml_name, claim, mac_from_name, mac_like, re, render_text, DeviceHint,
    DeviceRequest, Evidence, FileKind, RenderContext, RenderError, Rendered, Vendor, Verdict, XML,
};

pub struct Polycom;

struct Patterns {
    ua: Regex,
    file: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        // Vendor facts §7.
        ua: re(r"^FileTransport Polycom\w+-(\w*?)-UA/([\d.]+)"),
        file: re(
            r"^([^.-]+)(\.cfg|-phone\.cfg|-user\.cfg|-boot\.log|-app\.log|-license\.cfg|-directory\.xml)$",
        ),
    })
}

impl Vendor for Polycom {
    fn id(&self) -> &'static str {
        "polycom"
    }

    fn ouis(&self) -> &'static [&'static str] {
        &["0004F2", "64167F", "482567"]
    }

    fn parse_user_agent(&self, ua: &str) -> Option<DeviceHint> {
        let c = patterns().ua.captures(ua.trim())?;
        Some(DeviceHint {
            model: Some(c[1].to_string()).filter(|m| !m.is_empty()),
            firmware: Some(c[2].to_string()),
            mac: None,
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
        if file == "000000000000.cfg" {
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
        let Some(c) = patterns().file.captures(file) else {
            if ours {
                return Verdict::Refused(format!(
                    "polycom: '{file}' is not generated here (served: 000000000000.cfg, \
                     <mac>.cfg, <mac>-phone.cfg; firmware comes from the catalogue)"
                ));
            }
            return Verdict::NotMine;
        };
        let (part, suffix) = (&c[1], &c[2]);
        let hexy = mac_like(part);
        if !ours && !hexy {
            return Verdict::NotMine;
        }
        let mac = match mac_from_name(id, file, part) {
            Ok(m) => m,
            Err(v) => return v,
        };
        match suffix {
            ".cfg" => claim(
                id,
                file,
                FileKind::Index,
                Evidence::SharedName,
                ua.as_ref(),
                None,
                Some(mac),
            ),
            "-phone.cfg" => claim(
                id,
                file,
                FileKind::Device,
                Evidence::FileName,
                ua.as_ref(),
                None,
                Some(mac),
            ),
            _ => Verdict::Refused(format!(
                "polycom: '{file}' is not provided (uploads and per-user files are not kept)"
            )),
        }
    }

    fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError> {
        let template = match ctx.identity.file.kind {
            FileKind::Device => "phone.xml.j2",
            _ => "master.xml.j2",
        };
        let mut vars = base_vars(ctx);
        vars.insert("polycom".into(), json!({}));
        Ok(Rendered {
            body: render_text(ctx, template, vars)?.into_bytes(),
            content_type: XML,
        })
    }

    fn templates(&self) -> &'static [(&'static str, &'static str)] {
        &[
            (
                "master.xml.j2",
                include_str!("shipped/polycom/master.xml.j2"),
            ),
            ("phone.xml.j2", include_str!("shipped/polycom/phone.xml.j2")),
        ]
    }

    fn check_option(&self, key: &str, _value: &toml::Value) -> Result<(), String> {
        super::no_options(key)
    }

    fn check_raw_key(&self, key: &str) -> Result<(), String> {
        // Raw keys become attributes of <polycomConfig>.
        check_xml_name(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_and_files() {
        let h = Polycom
            .parse_user_agent("FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430 Type/Application")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("VVX_400"));
        assert_eq!(h.firmware.as_deref(), Some("4.1.4.7430"));
        let h = Polycom
            .parse_user_agent("FileTransport PolycomSoundPointIP-SPIP_335-UA/3.2.1.0078")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("SPIP_335"));
        let kind = |p: &str| match Polycom.identify(&DeviceRequest {
            path: p.into(),
            ..Default::default()
        }) {
            Verdict::Mine(i) => Some(i.file.kind),
            _ => None,
        };
        assert_eq!(kind("/000000000000.cfg"), Some(FileKind::Common));
        assert_eq!(kind("/0004F2AABBCC.cfg"), Some(FileKind::Index));
        assert_eq!(kind("/0004f2aabbcc-phone.cfg"), Some(FileKind::Device));
        assert_eq!(kind("/0004f2aabbcc-app.log"), None);
    }
}
