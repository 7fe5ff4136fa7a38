//! Digium D-series (also Sangoma-branded): `<mac>.cfg` XML with `<firmwares>`.
//!
//! The phone asks for `<mac>.cfg` (lower case) at its option 66 URL; Wazo serves it under
//! `/Digium/` and ignores `000000000000` (vendor facts §5). `<mac>.cfg` is shared with Yealink,
//! Polycom and Fanvil: the User-Agent, the OUI (`000FD3`, Digium's IEEE block; the vendor facts
//! list none) or the inventory decides, and `/digium/` (any case) always does.
//!
//! The User-Agent format is **unconfirmed** (the phone reports model and firmware, the MAC only
//! with `send_mac_with_useragent=1`); we accept `Digium D40 1_4_1_0_57025`-like strings. DHCP
//! option 60 (`digium_D40_1_1_0_0_48178`) is recognised by [`Vendor::parse_option60`].
//!
//! Firmware versions are written with underscores (`2_8_1`) in `<firmware version>`; how the
//! phone decides to upgrade is **unconfirmed**. The account XML (`<accounts><account …>` with
//! `<host_primary>`) follows Digium's DPMA-less XML documentation, not the vendor facts.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::json;

use super::{
    base_vars, check_xml_name, claim, mac_from_name, mac_in_text, mac_like, re, render_text,
    DeviceHint, DeviceRequest, Evidence, FileKind, RenderContext, RenderError, Rendered, Vendor,
    Verdict, XML,
};

pub struct Digium;

struct Patterns {
    ua: Regex,
    option60: Regex,
    cfg: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        ua: re(r"(?i)^(?:digium|sangoma)[ _/-]?([ADP]\d{2,3}\w?)(?:[ _/-]+([\d_.]+))?"),
        option60: re(r"^digium_(D\d\d)_([\d_]+)$"),
        cfg: re(r"^([^.-]+)\.cfg$"),
    })
}

impl Vendor for Digium {
    fn id(&self) -> &'static str {
        "digium"
    }

    fn ouis(&self) -> &'static [&'static str] {
        &["000FD3"]
    }

    fn parse_user_agent(&self, ua: &str) -> Option<DeviceHint> {
        let c = patterns().ua.captures(ua.trim())?;
        Some(DeviceHint {
            model: Some(c[1].to_ascii_uppercase()),
            firmware: c.get(2).map(|f| f.as_str().replace('_', ".")),
            mac: mac_in_text(ua),
        })
    }

    fn parse_option60(&self, class: &str) -> Option<DeviceHint> {
        let c = patterns().option60.captures(class)?;
        Some(DeviceHint {
            model: Some(c[1].to_string()),
            firmware: Some(c[2].replace('_', ".")),
            mac: None,
        })
    }

    fn identify(&self, req: &DeviceRequest) -> Verdict {
        let file = req.file_name();
        let ua = self.parse_user_agent(&req.user_agent);
        let ours = ua.is_some() || req.vendor_prefix().is_some_and(|v| v.id() == self.id());
        let Some(c) = patterns().cfg.captures(file) else {
            if ours {
                return Verdict::Refused(format!(
                    "digium: '{file}' is not generated here (served: <mac>.cfg)"
                ));
            }
            return Verdict::NotMine;
        };
        let part = &c[1];
        if !ours && !mac_like(part) {
            return Verdict::NotMine;
        }
        match mac_from_name(self.id(), file, part) {
            Ok(mac) => claim(
                self.id(),
                file,
                FileKind::Device,
                Evidence::SharedName,
                ua.as_ref(),
                None,
                Some(mac),
            ),
            Err(v) => v,
        }
    }

    fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError> {
        let mut vars = base_vars(ctx);
        vars.insert(
            "digium".into(),
            json!({
                "firmware_version": ctx.firmware.map(|f| f.version.replace('.', "_")),
            }),
        );
        Ok(Rendered {
            body: render_text(ctx, "config.xml.j2", vars)?.into_bytes(),
            content_type: XML,
        })
    }

    fn templates(&self) -> &'static [(&'static str, &'static str)] {
        &[(
            "config.xml.j2",
            include_str!("shipped/digium/config.xml.j2"),
        )]
    }

    fn check_option(&self, key: &str, _value: &toml::Value) -> Result<(), String> {
        super::no_options(key)
    }

    fn check_raw_key(&self, key: &str) -> Result<(), String> {
        // Raw keys become `<setting id="key" value="…"/>`.
        check_xml_name(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_agent_and_files() {
        let h = Digium.parse_user_agent("Digium D40 1_4_1_0_57025").unwrap();
        assert_eq!(h.model.as_deref(), Some("D40"));
        assert_eq!(h.firmware.as_deref(), Some("1.4.1.0.57025"));
        let v = Digium.identify(&DeviceRequest {
            path: "/Digium/000FD3123456.cfg".into(),
            ..Default::default()
        });
        match v {
            Verdict::Mine(i) => assert_eq!(i.mac.unwrap().as_str(), "000fd3123456"),
            v => panic!("{v:?}"),
        }
        let v = Digium.identify(&DeviceRequest {
            path: "/Digium/000000000000.cfg".into(),
            ..Default::default()
        });
        assert!(matches!(v, Verdict::Refused(_)), "{v:?}");
    }
}
