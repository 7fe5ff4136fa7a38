//! DHCP configuration snippets that point phones at autoprov (`autoprov dhcp-config`).
//!
//! For each brand of the vendor facts (section 1.3) this says how a DHCP server recognises the
//! phone (the option 60 vendor class where the brand sends a fixed one, else the MAC's OUI) and
//! which options carry the provisioning URL (66, 43, 114, 160). [`render`] prints that for
//! dnsmasq, ISC dhcpd or Kea. Pure text generation: this module reads and writes no files.

use std::fmt::Write;

use crate::discovery::{expand_pnp_url, Brand};

/// Output syntax.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DhcpFormat {
    Dnsmasq,
    Isc,
    Kea,
}

impl std::str::FromStr for DhcpFormat {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.to_ascii_lowercase().as_str() {
            "dnsmasq" => Ok(DhcpFormat::Dnsmasq),
            "isc" | "dhcpd" => Ok(DhcpFormat::Isc),
            "kea" => Ok(DhcpFormat::Kea),
            _ => Err(format!(
                "unknown DHCP format '{s}': use dnsmasq, isc or kea"
            )),
        }
    }
}

/// What an option carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Payload {
    /// The provisioning URL.
    Url,
    /// Only the server's host (Cisco SPA fetch their default profile by TFTP from it).
    Host,
    /// Option 43 with the URL in sub-option 66 (Snom).
    Vendor43Sub66,
    /// A fixed boot file name (option 67), e.g. the profile a TFTP phone asks for first.
    File(&'static str),
}

struct Opt {
    code: u8,
    payload: Payload,
}

struct Rule {
    brand: Brand,
    /// Option 60 prefixes; empty = match by OUI.
    classes: &'static [&'static str],
    ouis: &'static [&'static str],
    opts: &'static [Opt],
    note: &'static str,
}

const fn o(code: u8, payload: Payload) -> Opt {
    Opt { code, payload }
}

const RULES: &[Rule] = &[
    Rule {
        brand: Brand::Snom,
        classes: &["snom"],
        ouis: &[],
        opts: &[o(66, Payload::Url), o(43, Payload::Vendor43Sub66)],
        note: "option 60 is snom<model> (snom320, snomD785, snomM300...); option 43 with \
               sub-option 66 wins over the plain option 66 (firmware 7.3.17/8.2.1 and later)",
    },
    Rule {
        brand: Brand::Gigaset,
        classes: &["Gigaset", "N510"],
        ouis: &["7C2F80", "002104", "589EC6"],
        opts: &[o(114, Payload::Url), o(66, Payload::Url)],
        note: "option 114 (URL, at most 74 characters) is asked first, then 66; option 60 is \
               e.g. Gigaset_N720_DM_PRO or N510_IP_PRO, other models are matched by OUI",
    },
    Rule {
        brand: Brand::Digium,
        classes: &["digium_"],
        ouis: &[],
        opts: &[o(66, Payload::Url)],
        note: "option 60 is digium_<model>_<firmware>; option 66 must be a full URL (no TFTP)",
    },
    Rule {
        brand: Brand::Panasonic,
        classes: &["Panasonic"],
        ouis: &[],
        opts: &[o(66, Payload::Url)],
        note: "option 60 is Panasonic",
    },
    Rule {
        brand: Brand::Cisco,
        classes: &["Cisco", "CISCO", "LINKSYS"],
        ouis: &[],
        opts: &[o(66, Payload::Host), o(67, Payload::File("/spa$PSN.cfg"))],
        note: "SPA phones fetch their default profile (/spa$PSN.cfg, option 67) by TFTP from the \
               option 66 host: enable [tftp] in autoprov.toml",
    },
    Rule {
        brand: Brand::Yealink,
        classes: &[],
        ouis: &[
            "001565", "805EC0", "805E0C", "249AD8", "44DBD2", "E434D7", "644F56", "EC1DA9",
            "3497D7", "B061A9", "C4FC22", "F01653",
        ],
        opts: &[o(66, Payload::Url)],
        note: "option 60 is configurable on the phone, so Yealink is matched by OUI; the phone \
               prefers a custom option, then 66, then 43",
    },
    Rule {
        brand: Brand::Grandstream,
        classes: &[],
        ouis: &["000B82", "C074AD", "EC74D7"],
        opts: &[o(66, Payload::Url)],
        note: "matched by OUI",
    },
    Rule {
        brand: Brand::Fanvil,
        classes: &[],
        ouis: &["00A859", "0C383E"],
        opts: &[o(66, Payload::Url), o(43, Payload::Url)],
        note: "matched by OUI; the phone's DHCP_Option setting picks 66 or 43",
    },
    Rule {
        brand: Brand::Polycom,
        classes: &[],
        ouis: &["0004F2", "64167F", "482567"],
        opts: &[o(66, Payload::Url), o(160, Payload::Url)],
        note: "matched by OUI; option 66 by default, 160 when device.dhcp.bootSrvUseOpt selects \
               a custom option (160 as Polycom's default custom option is unconfirmed)",
    },
];

/// Print the DHCP configuration for `url` (the provisioning root URL, e.g.
/// `http://192.0.2.5:8080/`; each brand is given its folder below it, as in plug-and-play).
/// Errors say what is wrong with the URL.
pub fn render(format: DhcpFormat, url: &str) -> Result<String, String> {
    let url = url.trim();
    let host = url_host(url)
        .ok_or_else(|| format!("'{url}' is not an http(s) URL such as http://192.0.2.5:8080/"))?;
    if url
        .chars()
        .any(|c| c.is_whitespace() || c == '"' || c == '\'' || c == '\\')
    {
        return Err(format!(
            "'{url}' contains spaces or quotes; DHCP options cannot carry it"
        ));
    }
    Ok(match format {
        DhcpFormat::Dnsmasq => dnsmasq(url, &host),
        DhcpFormat::Isc => isc(url, &host),
        DhcpFormat::Kea => kea(url, &host),
    })
}

/// `http://host:port/path` → `host` (brackets of IPv6 literals kept).
fn url_host(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let authority = authority.rsplit('@').next()?;
    let host = if authority.starts_with('[') {
        authority.split_inclusive(']').next()?.to_string()
    } else {
        authority.split(':').next()?.to_string()
    };
    (!host.is_empty()).then_some(host)
}

/// The value of an option for a brand: the brand's folder under the root URL (the same URL a
/// plug-and-play answer carries, so the vendor is certain), or only the host.
fn payload(p: Payload, brand: Brand, url: &str, host: &str) -> String {
    match p {
        Payload::Host => host.to_string(),
        Payload::File(name) => name.to_string(),
        Payload::Url | Payload::Vendor43Sub66 => expand_pnp_url(brand.default_pnp_url(), url),
    }
}

fn colon_oui(oui: &str) -> String {
    let b = oui.to_ascii_lowercase();
    format!("{}:{}:{}", &b[0..2], &b[2..4], &b[4..6])
}

fn header(out: &mut String, url: &str, comment: &str) {
    let _ = writeln!(
        out,
        "{comment} DHCP options pointing IP phones at autoprov (generated by `autoprov dhcp-config`)."
    );
    let _ = writeln!(
        out,
        "{comment} Provisioning root URL: {url} (each brand gets its folder below it)"
    );
    if expand_pnp_url(Brand::Gigaset.default_pnp_url(), url).len() > 74 {
        let _ = writeln!(
            out,
            "{comment} WARNING: Gigaset's URL is longer than 74 characters; the phones ignore such an option 114."
        );
    }
}

fn dnsmasq(url: &str, host: &str) -> String {
    let mut out = String::new();
    header(&mut out, url, "#");
    out.push_str(
        "# Add to dnsmasq.conf or put into /etc/dnsmasq.d/. dhcp-vendorclass matches when the\n\
         # phone's option 60 contains the string; dhcp-mac matches the MAC's first three bytes.\n",
    );
    for r in RULES {
        let tag = format!("autoprov-{}", r.brand.id());
        let _ = writeln!(out, "\n# {}: {}", r.brand, r.note);
        for c in r.classes {
            let _ = writeln!(out, "dhcp-vendorclass=set:{tag},{c}");
        }
        for oui in r.ouis {
            let _ = writeln!(out, "dhcp-mac=set:{tag},{}:*:*:*", colon_oui(oui));
        }
        for opt in r.opts {
            let v = payload(opt.payload, r.brand, url, host);
            match opt.payload {
                Payload::Vendor43Sub66 => {
                    let class = r.classes.first().copied().unwrap_or_default();
                    let _ = writeln!(out, "dhcp-option=tag:{tag},vendor:{class},66,\"{v}\"");
                }
                _ => {
                    let _ = writeln!(out, "dhcp-option=tag:{tag},{},\"{v}\"", opt.code);
                }
            }
        }
    }
    out
}

fn isc(url: &str, host: &str) -> String {
    let mut out = String::new();
    header(&mut out, url, "#");
    out.push_str(
        "# Include in dhcpd.conf (global scope). Option 114 is ISC's `default-url`.\n\n\
         option space autoprov-snom;\n\
         option autoprov-snom.url code 66 = text;\n\
         option autoprov-polycom-boot-server code 160 = text;\n",
    );
    for r in RULES {
        let name = format!("autoprov-{}", r.brand.id());
        let _ = writeln!(out, "\n# {}: {}", r.brand, r.note);
        let _ = writeln!(out, "class \"{name}\" {{");
        let mut conds: Vec<String> = r
            .classes
            .iter()
            .map(|c| {
                format!(
                    "substring(option vendor-class-identifier, 0, {}) = \"{c}\"",
                    c.len()
                )
            })
            .collect();
        conds.extend(
            r.ouis
                .iter()
                .map(|o| format!("substring(hardware, 1, 3) = {}", colon_oui(o))),
        );
        let _ = writeln!(out, "  match if {};", conds.join("\n        or "));
        for opt in r.opts {
            let v = payload(opt.payload, r.brand, url, host);
            match (opt.code, opt.payload) {
                (_, Payload::Vendor43Sub66) => {
                    let _ = writeln!(out, "  vendor-option-space autoprov-snom;");
                    let _ = writeln!(out, "  option autoprov-snom.url \"{v}\";");
                }
                (66, _) => {
                    let _ = writeln!(out, "  option tftp-server-name \"{v}\";");
                }
                (67, _) => {
                    let _ = writeln!(out, "  filename \"{v}\";");
                }
                (43, _) => {
                    let _ = writeln!(out, "  option vendor-encapsulated-options \"{v}\";");
                }
                (114, _) => {
                    let _ = writeln!(out, "  option default-url \"{v}\";");
                }
                (160, _) => {
                    let _ = writeln!(out, "  option autoprov-polycom-boot-server \"{v}\";");
                }
                (code, _) => {
                    let _ = writeln!(out, "  # option {code}: \"{v}\"");
                }
            }
        }
        out.push_str("}\n");
    }
    out
}

fn kea(url: &str, host: &str) -> String {
    use serde_json::{json, Value};
    let hex = |s: &str| s.bytes().map(|b| format!("{b:02X}")).collect::<String>();
    let mut classes = Vec::new();
    for r in RULES {
        let mut conds: Vec<String> = r
            .classes
            .iter()
            .map(|c| format!("substring(option[60].hex,0,{}) == '{c}'", c.len()))
            .collect();
        conds.extend(
            r.ouis
                .iter()
                .map(|o| format!("substring(pkt4.mac,0,3) == 0x{}", o.to_ascii_uppercase())),
        );
        let mut data: Vec<Value> = Vec::new();
        for opt in r.opts {
            let v = payload(opt.payload, r.brand, url, host);
            match (opt.code, opt.payload) {
                (_, Payload::Vendor43Sub66) => {
                    data.push(json!({"name": "vendor-encapsulated-options"}));
                    data.push(json!({
                        "name": "autoprov-snom-url",
                        "space": "vendor-encapsulated-options-space",
                        "data": v
                    }));
                }
                (66, _) => data.push(json!({"name": "tftp-server-name", "data": v})),
                (67, _) => data.push(json!({"name": "boot-file-name", "data": v})),
                // Raw bytes: right whether or not this Kea version defines the code.
                (code, _) => data.push(json!({"code": code, "csv-format": false, "data": hex(&v)})),
            }
        }
        classes.push(json!({
            "name": format!("autoprov-{}", r.brand.id()),
            "comment": r.note,
            "test": conds.join(" or "),
            "option-data": data,
        }));
    }
    let doc = json!({
        "comment": format!(
            "DHCP options pointing IP phones at autoprov ({url}); merge into the Dhcp4 section"
        ),
        "Dhcp4": {
            "option-def": [{
                "name": "autoprov-snom-url",
                "code": 66,
                "space": "vendor-encapsulated-options-space",
                "type": "string"
            }],
            "client-classes": classes,
        }
    });
    let mut s = serde_json::to_string_pretty(&doc).expect("JSON value serialises");
    s.push('\n');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    const URL: &str = "http://192.0.2.5:8080/";

    #[test]
    fn dnsmasq_lines() {
        let s = render(DhcpFormat::Dnsmasq, URL).unwrap();
        assert!(s.contains("dhcp-vendorclass=set:autoprov-snom,snom\n"));
        assert!(s.contains("dhcp-option=tag:autoprov-snom,66,\"http://192.0.2.5:8080/snom/\"\n"));
        assert!(s.contains(
            "dhcp-option=tag:autoprov-snom,vendor:snom,66,\"http://192.0.2.5:8080/snom/\"\n"
        ));
        assert!(s.contains("dhcp-mac=set:autoprov-yealink,00:15:65:*:*:*\n"));
        assert!(
            s.contains("dhcp-option=tag:autoprov-gigaset,114,\"http://192.0.2.5:8080/gigaset/\"\n")
        );
        assert!(s.contains("dhcp-option=tag:autoprov-cisco,66,\"192.0.2.5\"\n"));
        assert!(s.contains("dhcp-option=tag:autoprov-cisco,67,\"/spa$PSN.cfg\"\n"));
        assert!(s.contains("dhcp-option=tag:autoprov-polycom,160,"));
    }

    #[test]
    fn isc_classes() {
        let s = render(DhcpFormat::Isc, URL).unwrap();
        assert!(
            s.contains("match if substring(option vendor-class-identifier, 0, 7) = \"digium_\";")
        );
        assert!(s.contains("substring(hardware, 1, 3) = 00:0b:82"));
        assert!(s.contains("option default-url \"http://192.0.2.5:8080/gigaset/\";"));
        assert!(s.contains("  filename \"/spa$PSN.cfg\";"));
        assert_eq!(s.matches('{').count(), s.matches('}').count());
    }

    #[test]
    fn kea_json() {
        let s = render(DhcpFormat::Kea, URL).unwrap();
        let v: serde_json::Value = serde_json::from_str(&s).unwrap();
        let classes = v["Dhcp4"]["client-classes"].as_array().unwrap();
        assert_eq!(classes.len(), RULES.len());
        assert_eq!(
            classes[0]["test"],
            "substring(option[60].hex,0,4) == 'snom'"
        );
    }

    #[test]
    fn bad_urls() {
        assert!(render(DhcpFormat::Kea, "ftp://x/").is_err());
        assert!(render(DhcpFormat::Kea, "http://x/a b").is_err());
        assert_eq!(
            url_host("http://[fd00::1]:80/").as_deref(),
            Some("[fd00::1]")
        );
        assert_eq!(
            url_host("https://u:p@h.example/x").as_deref(),
            Some("h.example")
        );
    }
}
