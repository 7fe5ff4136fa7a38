//! Zero-touch facts per phone brand: how to recognise a brand from its MAC address (OUI) or a
//! vendor string, which URL a SIP plug-and-play answer carries for it, and which `Event` a SIP
//! NOTIFY uses to make it re-read its configuration or reboot.
//!
//! The facts come from `shared/reference/vendor-facts.md` (sections 1.1–1.3); where a fact is
//! marked unconfirmed there, the choice made here says so. This module is pure data and small
//! functions: no I/O and no wire formats (the SIP messages themselves live in the server crate).
//! It is deliberately independent of the per-vendor provisioning modules so that discovery works
//! for every brand the facts name, including ones autoprov does not render files for.

use serde::{Deserialize, Serialize};

/// A phone brand as far as discovery and remote control are concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Brand {
    Snom,
    Yealink,
    Grandstream,
    Fanvil,
    Gigaset,
    Digium,
    Polycom,
    Cisco,
    Panasonic,
    Innovaphone,
}

/// What a NOTIFY should make the phone do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum NotifyAction {
    /// Re-read the configuration, without a reboot where the brand can tell the two apart.
    CheckSync,
    /// Re-read the configuration and reboot.
    Reboot,
}

impl NotifyAction {
    pub fn id(self) -> &'static str {
        match self {
            NotifyAction::CheckSync => "check-sync",
            NotifyAction::Reboot => "reboot",
        }
    }
}

/// OUI (first three bytes of the MAC, upper-case hex) → brand, from the vendor facts ([WZ]
/// lists), plus innovaphone (00-90-33, its serials), Panasonic (00-80-F0, the facts' User-Agent
/// example) and Digium (00-0F-D3, Digium's IEEE assignment; not in the facts).
const OUIS: &[(&str, Brand)] = &[
    ("000413", Brand::Snom),
    ("00087B", Brand::Snom),
    ("001565", Brand::Yealink),
    ("805EC0", Brand::Yealink),
    ("805E0C", Brand::Yealink),
    ("249AD8", Brand::Yealink),
    ("44DBD2", Brand::Yealink),
    ("E434D7", Brand::Yealink),
    ("644F56", Brand::Yealink),
    ("EC1DA9", Brand::Yealink),
    ("3497D7", Brand::Yealink),
    ("B061A9", Brand::Yealink),
    ("C4FC22", Brand::Yealink),
    ("F01653", Brand::Yealink),
    ("7C2F80", Brand::Gigaset),
    ("002104", Brand::Gigaset),
    ("589EC6", Brand::Gigaset),
    ("0004F2", Brand::Polycom),
    ("64167F", Brand::Polycom),
    ("482567", Brand::Polycom),
    ("002699", Brand::Cisco),
    ("503DE5", Brand::Cisco),
    ("00E16D", Brand::Cisco),
    ("00DA55", Brand::Cisco),
    ("10BD18", Brand::Cisco),
    ("000B82", Brand::Grandstream),
    ("C074AD", Brand::Grandstream),
    ("EC74D7", Brand::Grandstream),
    ("00A859", Brand::Fanvil),
    ("0C383E", Brand::Fanvil),
    ("009033", Brand::Innovaphone),
    ("0080F0", Brand::Panasonic),
    ("000FD3", Brand::Digium),
];

impl Brand {
    pub const ALL: [Brand; 10] = [
        Brand::Snom,
        Brand::Yealink,
        Brand::Grandstream,
        Brand::Fanvil,
        Brand::Gigaset,
        Brand::Digium,
        Brand::Polycom,
        Brand::Cisco,
        Brand::Panasonic,
        Brand::Innovaphone,
    ];

    /// Lower-case name used in configuration keys and device records.
    pub fn id(self) -> &'static str {
        match self {
            Brand::Snom => "snom",
            Brand::Yealink => "yealink",
            Brand::Grandstream => "grandstream",
            Brand::Fanvil => "fanvil",
            Brand::Gigaset => "gigaset",
            Brand::Digium => "digium",
            Brand::Polycom => "polycom",
            Brand::Cisco => "cisco",
            Brand::Panasonic => "panasonic",
            Brand::Innovaphone => "innovaphone",
        }
    }

    pub fn from_id(id: &str) -> Option<Brand> {
        let id = id.trim();
        Brand::ALL
            .into_iter()
            .find(|b| b.id().eq_ignore_ascii_case(id))
    }

    /// The brand whose OUI starts this MAC (any spelling [`normalize_mac`] accepts).
    pub fn from_mac(mac: &str) -> Option<Brand> {
        let mac = normalize_mac(mac)?.to_ascii_uppercase();
        OUIS.iter()
            .find(|(oui, _)| mac.starts_with(oui))
            .map(|(_, b)| *b)
            .or_else(|| {
                // OUIs the vendor modules know beyond this table.
                crate::vendors::registry()
                    .iter()
                    .find(|v| v.ouis().iter().any(|o| mac.starts_with(o)))
                    .and_then(|v| Brand::from_id(v.id()))
            })
    }

    /// The brand a free-text hint names (a User-Agent, the `vendor=` of an `Event` header, a
    /// DHCP vendor class), e.g. `Yealink SIP-T46G …`, `snomD120`, `"Grandstream"`.
    pub fn from_hint(text: &str) -> Option<Brand> {
        let t = text.to_ascii_lowercase();
        const WORDS: &[(&str, Brand)] = &[
            ("snom", Brand::Snom),
            ("yealink", Brand::Yealink),
            ("grandstream", Brand::Grandstream),
            ("fanvil", Brand::Fanvil),
            ("gigaset", Brand::Gigaset),
            ("digium", Brand::Digium),
            ("polycom", Brand::Polycom),
            ("cisco", Brand::Cisco),
            ("linksys", Brand::Cisco),
            ("panasonic", Brand::Panasonic),
            ("innovaphone", Brand::Innovaphone),
        ];
        WORDS.iter().find(|(w, _)| t.contains(w)).map(|(_, b)| *b)
    }

    /// Identify a brand: the MAC's OUI first (the facts advise it over the `Event` header's
    /// vendor, which some firmware fills with `OEM`), then the hints in order.
    pub fn identify(mac: Option<&str>, hints: &[&str]) -> Option<Brand> {
        mac.and_then(Brand::from_mac)
            .or_else(|| hints.iter().find_map(|h| Brand::from_hint(h)))
    }

    /// The default URL template a plug-and-play answer carries; `{base}` stands for the server's
    /// root URL without the trailing `/`. Each brand served by the vendor modules gets its
    /// `/<vendor>/` folder, where the vendor is certain whatever file names the phone builds
    /// from a folder URL; Fanvil gets its per-device file with the phone-side `$mac`
    /// placeholder (Planet/Fanvil manuals). Brands autoprov renders no files for get the root.
    pub fn default_pnp_url(self) -> &'static str {
        match self {
            Brand::Snom => "{base}/snom/",
            Brand::Yealink => "{base}/yealink/",
            Brand::Grandstream => "{base}/grandstream/",
            Brand::Fanvil => "{base}/fanvil/$mac.cfg",
            Brand::Gigaset => "{base}/gigaset/",
            Brand::Digium => "{base}/digium/",
            Brand::Polycom => "{base}/polycom/",
            Brand::Cisco => "{base}/cisco/",
            Brand::Panasonic | Brand::Innovaphone => "{base}/",
        }
    }

    /// The `Event` header value of a NOTIFY for this brand (vendor facts 1.2); `None` when the
    /// brand has no such mechanism (innovaphone polls instead).
    pub fn notify_event(self, action: NotifyAction) -> Option<&'static str> {
        use NotifyAction::*;
        Some(match (self, action) {
            (Brand::Innovaphone, _) => return None,
            (Brand::Snom | Brand::Yealink | Brand::Gigaset, CheckSync) => "check-sync;reboot=false",
            // Polycom and Digium know one event; whether it reboots is the phone's setting.
            (Brand::Polycom | Brand::Digium, _) => "check-sync",
            // `resync` needs Resync_From_SIP=Yes (the default); `reboot` is unconfirmed.
            (Brand::Cisco, CheckSync) => "resync",
            (Brand::Cisco, Reboot) => "reboot",
            (Brand::Grandstream | Brand::Fanvil, CheckSync) => "check-sync",
            // Panasonic is only documented with reboot=true.
            (Brand::Panasonic, _) => "check-sync;reboot=true",
            (_, Reboot) => "check-sync;reboot=true",
        })
    }
}

impl std::fmt::Display for Brand {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.id())
    }
}

/// The `Event` of a NOTIFY for a phone of unknown brand.
pub fn generic_notify_event(action: NotifyAction) -> &'static str {
    match action {
        NotifyAction::CheckSync => "check-sync",
        NotifyAction::Reboot => "check-sync;reboot=true",
    }
}

/// A MAC address as 12 lower-case hex digits, from any common spelling: `00:04:13:A1:1F:A7`,
/// `00-04-13-a1-1f-a7`, `000413A11FA7`, `0004.13a1.1fa7`. `None` for anything else.
pub fn normalize_mac(s: &str) -> Option<String> {
    let s = s.trim();
    if s.len() > 17 {
        return None;
    }
    let hex: String = s
        .chars()
        .filter(|c| !matches!(c, ':' | '-' | '.'))
        .collect();
    if hex.len() != 12 || !hex.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    let seps = s.len() - hex.len();
    if !(seps == 0 || seps == 5 || seps == 2) {
        return None;
    }
    Some(hex.to_ascii_lowercase())
}

/// Expand a plug-and-play URL template: `{base}` becomes `base` without its trailing `/`.
/// Everything else (the phone-side placeholders `{mac}`, `$mac`, ...) is passed on as is.
pub fn expand_pnp_url(template: &str, base: &str) -> String {
    template.replace("{base}", base.trim_end_matches('/'))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn macs() {
        assert_eq!(
            normalize_mac("00:04:13:A1:1F:A7").as_deref(),
            Some("000413a11fa7")
        );
        assert_eq!(
            normalize_mac("00-04-13-a1-1f-a7").as_deref(),
            Some("000413a11fa7")
        );
        assert_eq!(
            normalize_mac("0004.13a1.1fa7").as_deref(),
            Some("000413a11fa7")
        );
        assert_eq!(
            normalize_mac("000413A11FA7").as_deref(),
            Some("000413a11fa7")
        );
        assert_eq!(normalize_mac("000413A11FA"), None);
        assert_eq!(normalize_mac("00:04:13:A1:1F:G7"), None);
        assert_eq!(normalize_mac("0:0:0:4:1:3:A11FA7"), None);
    }

    #[test]
    fn brands() {
        assert_eq!(Brand::from_mac("00:15:65:4a:a9:37"), Some(Brand::Yealink));
        assert_eq!(Brand::from_mac("C074AD112233"), Some(Brand::Grandstream));
        assert_eq!(Brand::from_mac("000413a11fa7"), Some(Brand::Snom));
        assert_eq!(Brand::from_mac("112233445566"), None);
        assert_eq!(
            Brand::identify(Some("112233445566"), &["", "\"Yealink\""]),
            Some(Brand::Yealink)
        );
        assert_eq!(
            Brand::identify(Some("000413a11fa7"), &["OEM"]),
            Some(Brand::Snom)
        );
        assert_eq!(Brand::from_id("Snom"), Some(Brand::Snom));
        for b in Brand::ALL {
            assert_eq!(Brand::from_id(b.id()), Some(b));
        }
    }

    #[test]
    fn events() {
        use NotifyAction::*;
        assert_eq!(
            Brand::Snom.notify_event(CheckSync),
            Some("check-sync;reboot=false")
        );
        assert_eq!(
            Brand::Yealink.notify_event(Reboot),
            Some("check-sync;reboot=true")
        );
        assert_eq!(Brand::Cisco.notify_event(CheckSync), Some("resync"));
        assert_eq!(Brand::Polycom.notify_event(Reboot), Some("check-sync"));
        assert_eq!(Brand::Innovaphone.notify_event(CheckSync), None);
    }

    #[test]
    fn urls() {
        assert_eq!(
            expand_pnp_url(Brand::Fanvil.default_pnp_url(), "http://h:8080/"),
            "http://h:8080/fanvil/$mac.cfg"
        );
        assert_eq!(
            expand_pnp_url(Brand::Snom.default_pnp_url(), "http://h:8080"),
            "http://h:8080/snom/"
        );
        // Every brand with a vendor module is sent to that module's folder.
        for v in crate::vendors::registry() {
            let b = Brand::from_id(v.id()).expect("a brand for every vendor module");
            assert!(b
                .default_pnp_url()
                .starts_with(&format!("{{base}}/{}/", v.id())));
        }
    }
}
