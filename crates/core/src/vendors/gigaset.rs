//! Gigaset: P-series desk phones (Snom based), Maxwell and Nx70 (`provisioning.xml`,
//! `<MAC>.xml`), and the legacy N510/N720 `<MAC>.xml`.
//!
//! P-series (vendor facts §2, seed 000): with a folder URL the phone asks for
//! `GigasetP82x.htm`, `GigasetP82x-<mac>.htm` and `GigasetP82x-firmware.htm`; with `{mac}.xml`
//! in the URL it asks for `<MAC>.xml` then `<phoneType>-firmware.htm`. Settings are Snom XML.
//! The firmware settings file names the image with `?mac={mac}` appended: the phone expands
//! `{mac}` (and `{phone_type}`) there, so the URL stays the same for one device (the phone
//! downloads again only when the URL changes: seed 000's loop warning) while the firmware
//! download can be told apart per device.
//!
//! Maxwell/Nx70 (vendor facts §4): `provisioning.xml` then `<MAC>.xml`, both
//! `<provisioning version="1.1" productID="…">` with `<firmware><file version url/>` and
//! `<nvm><param name value/>`. The nvm parameter names are not in the vendor facts, so the
//! shipped template writes only raw parameters. Legacy N510/N720 (`N510 IP PRO`,
//! `N720 DM PRO`) get the `<ProviderFrame>` format with raw `SYMB_ITEM`s.
//!
//! `<MAC>.xml` is shared with Cisco (`$MA.xml`): the User-Agent, the OUI or the inventory
//! decides. Which Gigaset format it gets follows the model (User-Agent or inventory): P-series
//! Snom XML, N510/N720 ProviderFrame, anything else Maxwell/Nx70.

use std::sync::OnceLock;

use regex::Regex;
use serde_json::json;

use super::{
    base_vars, check_xml_name, claim, mac_from_name, mac_like, re, render_text, DeviceHint,
    DeviceRequest, Evidence, FileKind, RenderContext, RenderError, Rendered, Vendor, Verdict, XML,
};
use crate::vendors::mac::Mac;

pub struct Gigaset;

struct Patterns {
    ua: Regex,
    ua_p: Regex,
    p_common: Regex,
    p_device: Regex,
    p_firmware: Regex,
    mac_xml: Regex,
    option60: Regex,
}

fn patterns() -> &'static Patterns {
    static P: OnceLock<Patterns> = OnceLock::new();
    P.get_or_init(|| Patterns {
        // Vendor facts §4.
        ua: re(
            r#"^"?(?:Gigaset )?([\w\s]+)/((?:\w{2,3}\.){3,4}\w{1,3})(?:\+.+)?;([0-9A-F]{12})?(?:;Handset=\d+)?"?$"#,
        ),
        // P-series: Snom-style (`GigasetP82x-SIP 10.1.… <MAC>`). Unconfirmed: no P-series
        // User-Agent is in the vendor facts; this follows the Snom form it is based on.
        ua_p: re(r"\b(Gigaset\s?P\w+)-SIP\s([\d.]+)(?:\s.*?\b([0-9A-Fa-f]{12})\b)?"),
        p_common: re(r"^Gigaset(\w+)\.htm$"),
        p_device: re(r"^Gigaset(\w+)-([^.]*)\.htm$"),
        p_firmware: re(r"^Gigaset(\w+)-firmware\.htm$"),
        mac_xml: re(r"^([^.]+)\.xml$"),
        option60: re(r"^(?:Gigaset_)?([A-Z]\d{3}[A-Z]?(?:_[A-Z]+)*|C\d{3}IP)$"),
    })
}

/// Which Gigaset file format a model gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Family {
    /// Snom-based desk phones (P-series).
    P,
    /// N510 / N720: ProviderFrame.
    Legacy,
    /// Maxwell and Nx70: `<provisioning>`.
    Provisioning,
}

fn family(model: Option<&str>) -> Family {
    let m = model.unwrap_or("").trim().to_ascii_uppercase();
    let m = m.strip_prefix("GIGASET").unwrap_or(&m).trim_start();
    if m.starts_with('P') {
        Family::P
    } else if m.starts_with("N510") || m.starts_with("N720") {
        Family::Legacy
    } else {
        Family::Provisioning
    }
}

/// `productID` of the `<provisioning>` element: `e2` for Nx70, `mx3b` for Maxwell (the two
/// values the vendor facts show; which model takes which is **unconfirmed**). Unknown: none.
fn product_id(model: Option<&str>) -> Option<&'static str> {
    let m = model?.to_ascii_uppercase();
    if m.contains("N670") || m.contains("N870") {
        Some("e2")
    } else if m.contains("MAXWELL") {
        Some("mx3b")
    } else {
        None
    }
}

impl Vendor for Gigaset {
    fn id(&self) -> &'static str {
        "gigaset"
    }

    fn ouis(&self) -> &'static [&'static str] {
        &["7C2F80", "002104", "589EC6"]
    }

    fn parse_user_agent(&self, ua: &str) -> Option<DeviceHint> {
        let p = patterns();
        if let Some(c) = p.ua_p.captures(ua) {
            let model = c[1].trim_start_matches("Gigaset").trim().to_string();
            return Some(DeviceHint {
                model: Some(model),
                firmware: Some(c[2].to_string()),
                mac: c.get(3).and_then(|m| Mac::parse(m.as_str()).ok()),
            });
        }
        let c = p.ua.captures(ua.trim())?;
        Some(DeviceHint {
            model: Some(c[1].trim().to_string()),
            firmware: Some(c[2].to_string()),
            mac: c.get(3).and_then(|m| Mac::parse(m.as_str()).ok()),
        })
    }

    fn parse_option60(&self, class: &str) -> Option<DeviceHint> {
        // `Gigaset_N720_DM_PRO`, `N510_IP_PRO`, `C470IP` (vendor facts §1.3).
        let c = patterns().option60.captures(class)?;
        Some(DeviceHint {
            model: Some(c[1].replace('_', " ")),
            ..Default::default()
        })
    }

    fn identify(&self, req: &DeviceRequest) -> Verdict {
        let p = patterns();
        let file = req.file_name();
        let ua = self.parse_user_agent(&req.user_agent);
        let id = self.id();
        let ev = Evidence::FileName;
        if let Some(c) = p.p_firmware.captures(file) {
            let mac = req.query_arg("mac").and_then(|m| Mac::parse(m).ok());
            let model = Some(c[1].to_string());
            return claim(id, file, FileKind::Firmware, ev, ua.as_ref(), model, mac);
        }
        if let Some(c) = p.p_common.captures(file) {
            let model = Some(c[1].to_string());
            return claim(id, file, FileKind::Common, ev, ua.as_ref(), model, None);
        }
        if let Some(c) = p.p_device.captures(file) {
            let mac = match mac_from_name(id, file, &c[2]) {
                Ok(m) => m,
                Err(v) => return v,
            };
            let model = Some(c[1].to_string());
            return claim(
                id,
                file,
                FileKind::Device,
                ev,
                ua.as_ref(),
                model,
                Some(mac),
            );
        }
        if file.eq_ignore_ascii_case("provisioning.xml") {
            return claim(id, file, FileKind::Common, ev, ua.as_ref(), None, None);
        }
        if let Some(c) = p.mac_xml.captures(file) {
            let ours = ua.is_some() || req.vendor_prefix().is_some_and(|v| v.id() == id);
            let part = &c[1];
            if !ours && !mac_like(part) {
                return Verdict::NotMine;
            }
            let mac = match mac_from_name(id, file, part) {
                Ok(m) => m,
                Err(v) => return v,
            };
            return claim(
                id,
                file,
                FileKind::Device,
                Evidence::SharedName,
                ua.as_ref(),
                None,
                Some(mac),
            );
        }
        if ua.is_some() {
            return Verdict::Refused(format!(
                "gigaset: '{file}' is not generated here (master.bin/sifs of the legacy \
                 N510/N720 boot process are firmware files, not settings)"
            ));
        }
        Verdict::NotMine
    }

    fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError> {
        let id = ctx.identity;
        let fam = if id.file.name.starts_with("Gigaset") {
            Family::P
        } else {
            family(id.model.as_deref())
        };
        let phone_type = id
            .model
            .as_deref()
            .map(|m| format!("Gigaset{}", m.replace(' ', "")));
        let base = ctx.base_url;
        let firmware_url = ctx.firmware.map(|f| {
            let sep = if f.url.contains('?') { '&' } else { '?' };
            format!("{}{sep}mac={{mac}}", f.url)
        });
        let mut vars = base_vars(ctx);
        vars.insert(
            "gigaset".into(),
            json!({
                "family": match fam { Family::P => "p", Family::Legacy => "legacy", Family::Provisioning => "provisioning" },
                "phone_type": phone_type,
                "product_id": product_id(id.model.as_deref()),
                "firmware_status_url": phone_type.as_ref().map(|pt| format!("{base}/gigaset/{pt}-firmware.htm?mac={{mac}}")),
                "firmware_url": firmware_url,
            }),
        );
        let template = match (fam, &id.file.kind) {
            (Family::P, FileKind::Firmware) => "p-firmware.xml.j2",
            (Family::P, _) => "p-settings.xml.j2",
            (Family::Legacy, _) => "legacy.xml.j2",
            (Family::Provisioning, _) => "provisioning.xml.j2",
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
                "p-settings.xml.j2",
                include_str!("shipped/gigaset/p-settings.xml.j2"),
            ),
            (
                "p-firmware.xml.j2",
                include_str!("shipped/gigaset/p-firmware.xml.j2"),
            ),
            (
                "provisioning.xml.j2",
                include_str!("shipped/gigaset/provisioning.xml.j2"),
            ),
            (
                "legacy.xml.j2",
                include_str!("shipped/gigaset/legacy.xml.j2"),
            ),
        ]
    }

    fn check_option(&self, key: &str, _value: &toml::Value) -> Result<(), String> {
        super::no_options(key)
    }

    fn check_raw_key(&self, key: &str) -> Result<(), String> {
        // P-series keys are element names; nvm and SYMB_ITEM names are attribute values
        // (`BS_IP_Data.aucS_SIP_ACCOUNT_NAME_1[0]`), so brackets are allowed there.
        let plain = key.replace(['[', ']'], "");
        check_xml_name(&plain)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ident(path: &str, ua: &str) -> Verdict {
        Gigaset.identify(&DeviceRequest {
            path: path.into(),
            user_agent: ua.into(),
            ..Default::default()
        })
    }

    #[test]
    fn user_agents() {
        let h = Gigaset
            .parse_user_agent("Gigaset N720 DM PRO/70.089.00.000.000;7C2F80CA21E4")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("N720 DM PRO"));
        assert_eq!(h.firmware.as_deref(), Some("70.089.00.000.000"));
        assert_eq!(h.mac.unwrap().as_str(), "7c2f80ca21e4");
        let h = Gigaset
            .parse_user_agent("N510 IP PRO/42.245.00.000.000;7C2F804DF9A9")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("N510 IP PRO"));
        let h = Gigaset
            .parse_user_agent("Gigaset N870 IP PRO/83.V2.11.0+build.a546b91;7C2F80E0D605;Handset=1")
            .unwrap();
        assert_eq!(h.model.as_deref(), Some("N870 IP PRO"));
        assert_eq!(h.firmware.as_deref(), Some("83.V2.11.0"));
        assert_eq!(family(Some("N870 IP PRO")), Family::Provisioning);
        assert_eq!(family(Some("N510 IP PRO")), Family::Legacy);
        assert_eq!(family(Some("P82x")), Family::P);
    }

    #[test]
    fn files() {
        for (path, kind) in [
            ("/GigasetP82x.htm", FileKind::Common),
            ("/GigasetP82x-7C2F80123456.htm", FileKind::Device),
            ("/GigasetP82x-firmware.htm", FileKind::Firmware),
            ("/provisioning.xml", FileKind::Common),
            ("/7C2F80E0D605.xml", FileKind::Device),
        ] {
            match ident(path, "") {
                Verdict::Mine(i) => assert_eq!(i.file.kind, kind, "{path}"),
                v => panic!("{path}: {v:?}"),
            }
        }
        assert_eq!(ident("/settings.xml", ""), Verdict::NotMine);
        assert!(matches!(
            ident("/GigasetP82x-12.htm", ""),
            Verdict::Refused(_)
        ));
    }
}
