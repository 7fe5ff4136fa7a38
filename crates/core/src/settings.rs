//! The vendor-neutral settings model for phones of every vendor except innovaphone (whose
//! devices run the update-script engine).
//!
//! A device's settings are built from layers, each a [`Settings`] where every field is
//! optional and a later layer overrides an earlier one field by field:
//!
//! 1. defaults: `[settings]`
//! 2. vendor: `[vendors.<vendor>.settings]`
//! 3. model: `[vendors.<vendor>.models.<model>]`
//! 4. groups: every `[[groups]]` the device belongs to, in the order the groups are written.
//!    A device belongs to a group when the group's `models` match its model (`yealink/T46S`,
//!    `yealink/T4*`, `T46S`, `yealink/*`), when the group's `devices` list its MAC, or when
//!    its `[devices."<mac>"]` entry lists the group in `groups` (environments, locations ...).
//! 5. the device: `[devices."<mac>".settings]`
//!
//! Lines (`lines.<n>`) merge per line number and field; `raw.<vendor>` keys (vendor parameters
//! passed through verbatim) and `vars` (free variables for operator templates) merge per key.
//! [`resolve`] does the layering and fills line defaults from the global values, so templates
//! see one flat, complete picture ([`Resolved`]). Files that are the same for every device of a
//! model (Yealink `y0000000000XX.cfg`, Snom `<phoneType>.htm`, ...) are rendered with
//! [`Scope::Model`]: defaults, vendor, model and the groups that match by model only.
//!
//! This module only describes, merges and checks; it reads no files.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::vendors::mac::Mac;

/// One layer of settings. Every field is optional; see the module documentation.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Settings {
    /// SIP registrar/proxy host name or address, the default of every line.
    pub sip_server: Option<String>,
    /// SIP port of `sip_server` (default: the vendor's default, normally 5060).
    pub sip_port: Option<u16>,
    /// `udp`, `tcp` or `tls`.
    pub sip_transport: Option<Transport>,
    /// Outbound proxy (host or host:port), the default of every line.
    pub outbound_proxy: Option<String>,
    /// NTP server for the phone clock.
    pub ntp_server: Option<String>,
    /// Password of the phone's administrator web interface.
    pub admin_password: Option<String>,
    /// HTTP credentials the phone must present (Basic or Digest) to get its files; both
    /// `http_user` and `http_password` set = required. For phones that support them.
    pub http_user: Option<String>,
    pub http_password: Option<String>,
    /// SIP accounts by line number (`lines.1`, `lines.2`, ...).
    pub lines: BTreeMap<String, Box<Line>>,
    /// Vendor parameters passed through verbatim: `raw.<vendor>."<key>" = "<value>"`.
    pub raw: BTreeMap<String, BTreeMap<String, toml::Value>>,
    /// Free variables for operator templates (`{{ vars.<name> }}`).
    pub vars: BTreeMap<String, toml::Value>,
}

/// One SIP account of a phone.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Line {
    /// Whether the line is active (default: true when `user` is set).
    pub enabled: Option<bool>,
    /// SIP user name (the extension).
    pub user: Option<String>,
    /// Authentication name (default: `user`).
    pub auth_user: Option<String>,
    pub password: Option<String>,
    /// Caller name shown to others.
    pub display_name: Option<String>,
    /// Label on the phone's screen (default: `display_name`, else `user`).
    pub label: Option<String>,
    /// Registrar of this line (default: `sip_server`).
    pub server: Option<String>,
    pub port: Option<u16>,
    pub transport: Option<Transport>,
    pub outbound_proxy: Option<String>,
}

#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Transport {
    #[default]
    Udp,
    Tcp,
    Tls,
}

/// `[vendors.<vendor>]`: one vendor's switch, its settings layers and its options.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct VendorConfig {
    /// Answer this vendor's phones at all (default true).
    pub enabled: bool,
    /// The vendor layer.
    pub settings: Settings,
    /// Model layers, by model name as the vendor module reports it (`T46S`, `D785`, ...).
    pub models: BTreeMap<String, Settings>,
    /// Vendor-specific options (e.g. Yealink `encrypt`); each vendor module documents and
    /// checks its own.
    pub options: BTreeMap<String, toml::Value>,
}

impl Default for VendorConfig {
    fn default() -> Self {
        VendorConfig {
            enabled: true,
            settings: Settings::default(),
            models: BTreeMap::new(),
            options: BTreeMap::new(),
        }
    }
}

/// `[[groups]]`: a named set of devices with settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Group {
    pub id: String,
    /// Model patterns: `vendor/model`, `vendor/prefix*`, `vendor/*` or a bare `model`
    /// (any vendor). Case-insensitive.
    pub models: Vec<String>,
    /// MACs of member devices (any spelling).
    pub devices: Vec<String>,
    pub settings: Settings,
}

/// `[devices."<mac>"]`: one device's groups and settings.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct DeviceEntry {
    /// Groups this device belongs to in addition to those matching it.
    pub groups: Vec<String>,
    pub settings: Settings,
}

/// `[provisioning]`: how the server answers phones of the vendors other than innovaphone.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Provisioning {
    /// URL phones reach this server at (`http://prov.example.com:8080`), used in the URLs
    /// written into configuration files. Empty: taken from each request (scheme and `Host`).
    pub base_url: String,
    /// Record recognised devices in the inventory on contact (default true).
    pub inventory: bool,
}

impl Default for Provisioning {
    fn default() -> Self {
        Provisioning {
            base_url: String::new(),
            inventory: true,
        }
    }
}

/// Everything of the site configuration the layering needs.
#[derive(Debug, Clone, Copy)]
pub struct Layers<'a> {
    pub defaults: &'a Settings,
    pub vendors: &'a BTreeMap<String, VendorConfig>,
    pub groups: &'a [Group],
    pub devices: &'a BTreeMap<String, DeviceEntry>,
}

impl<'a> Layers<'a> {
    pub fn of(config: &'a crate::config::SiteConfig) -> Layers<'a> {
        Layers {
            defaults: &config.settings,
            vendors: &config.vendors,
            groups: &config.groups,
            devices: &config.devices,
        }
    }
}

/// Which layers a file gets.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Files shared by all devices of a model: no device layer, only groups matched by model.
    Model,
    /// Files of one device: every layer.
    Device,
}

/// The merged settings one file is rendered with.
#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct Resolved {
    pub sip_server: Option<String>,
    pub sip_port: Option<u16>,
    pub sip_transport: Option<Transport>,
    pub outbound_proxy: Option<String>,
    pub ntp_server: Option<String>,
    pub admin_password: Option<String>,
    /// Credentials required for this device's files (see [`Settings::http_user`]); never
    /// written into a file.
    #[serde(skip)]
    pub http_credentials: Option<(String, String)>,
    /// Lines ordered by number, with defaults filled in.
    pub lines: Vec<ResolvedLine>,
    /// This vendor's raw parameters, ordered by key.
    pub raw: BTreeMap<String, String>,
    pub vars: BTreeMap<String, toml::Value>,
    /// Ids of the groups that applied, in application order.
    pub groups: Vec<String>,
}

#[derive(Debug, Clone, Default, Serialize, PartialEq)]
pub struct ResolvedLine {
    pub number: u32,
    pub enabled: bool,
    pub user: Option<String>,
    pub auth_user: Option<String>,
    pub password: Option<String>,
    pub display_name: Option<String>,
    pub label: Option<String>,
    pub server: Option<String>,
    pub port: Option<u16>,
    /// `udp`, `tcp` or `tls` (default `udp`).
    pub transport: Transport,
    pub outbound_proxy: Option<String>,
}

fn over<T: Clone>(dst: &mut Option<T>, src: &Option<T>) {
    if src.is_some() {
        dst.clone_from(src);
    }
}

impl Settings {
    /// Lay `top` over `self`.
    pub fn merge(&mut self, top: &Settings) {
        over(&mut self.sip_server, &top.sip_server);
        over(&mut self.sip_port, &top.sip_port);
        over(&mut self.sip_transport, &top.sip_transport);
        over(&mut self.outbound_proxy, &top.outbound_proxy);
        over(&mut self.ntp_server, &top.ntp_server);
        over(&mut self.admin_password, &top.admin_password);
        over(&mut self.http_user, &top.http_user);
        over(&mut self.http_password, &top.http_password);
        for (n, l) in &top.lines {
            let d = self.lines.entry(n.clone()).or_default();
            over(&mut d.enabled, &l.enabled);
            over(&mut d.user, &l.user);
            over(&mut d.auth_user, &l.auth_user);
            over(&mut d.password, &l.password);
            over(&mut d.display_name, &l.display_name);
            over(&mut d.label, &l.label);
            over(&mut d.server, &l.server);
            over(&mut d.port, &l.port);
            over(&mut d.transport, &l.transport);
            over(&mut d.outbound_proxy, &l.outbound_proxy);
        }
        for (vendor, keys) in &top.raw {
            let d = self.raw.entry(vendor.clone()).or_default();
            for (k, v) in keys {
                d.insert(k.clone(), v.clone());
            }
        }
        for (k, v) in &top.vars {
            self.vars.insert(k.clone(), v.clone());
        }
    }
}

/// Whether a group's model pattern matches `vendor`/`model` (case-insensitive).
pub fn model_matches(pattern: &str, vendor: &str, model: Option<&str>) -> bool {
    let pattern = pattern.trim().to_ascii_lowercase();
    let (pv, pm) = match pattern.split_once('/') {
        Some((v, m)) => (Some(v.to_string()), m.to_string()),
        None => (None, pattern.clone()),
    };
    if pv
        .as_deref()
        .is_some_and(|v| v != vendor.to_ascii_lowercase())
    {
        return false;
    }
    if pm == "*" {
        return pv.is_some();
    }
    let Some(model) = model.map(str::to_ascii_lowercase) else {
        return false;
    };
    match pm.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix),
        None => model == pm,
    }
}

/// The device entry for `mac`. [`crate::Site::load`] re-keys `[devices]` by the canonical MAC
/// (12 lower-case hex digits), so this is one map lookup per request however many devices
/// the site lists; maps built by hand with other spellings are searched when small.
pub fn device_entry<'a>(
    devices: &'a BTreeMap<String, DeviceEntry>,
    mac: &Mac,
) -> Option<&'a DeviceEntry> {
    if let Some(e) = devices.get(mac.as_str()) {
        return Some(e);
    }
    if devices.len() > SCAN_DEVICE_KEYS {
        return None;
    }
    devices
        .iter()
        .find(|(k, _)| Mac::parse(k).is_ok_and(|m| &m == mac))
        .map(|(_, e)| e)
}

/// Up to this many `[devices]` entries, keys in other spellings are still found.
const SCAN_DEVICE_KEYS: usize = 32;

/// `[devices]` keyed by the canonical MAC (entries whose key is not a MAC keep it; validation
/// reports them).
pub fn canonical_device_keys(
    devices: BTreeMap<String, DeviceEntry>,
) -> BTreeMap<String, DeviceEntry> {
    devices
        .into_iter()
        .map(|(k, e)| match Mac::parse(&k) {
            Ok(m) => (m.as_str().to_string(), e),
            Err(_) => (k, e),
        })
        .collect()
}

/// Merge the layers for one file of `vendor`'s device (`model`, `mac`) and fill line defaults.
pub fn resolve(
    layers: Layers<'_>,
    vendor: &str,
    model: Option<&str>,
    mac: Option<&Mac>,
    scope: Scope,
) -> Resolved {
    let mut s = layers.defaults.clone();
    let vendor_cfg = layers.vendors.get(vendor);
    if let Some(vc) = vendor_cfg {
        s.merge(&vc.settings);
        if let Some(model) = model {
            // Model keys compare case-insensitively, in key order (deterministic).
            for (k, ms) in &vc.models {
                if k.eq_ignore_ascii_case(model) {
                    s.merge(ms);
                }
            }
        }
    }
    let entry = match (scope, mac) {
        (Scope::Device, Some(mac)) => device_entry(layers.devices, mac),
        _ => None,
    };
    let mut applied = Vec::new();
    for g in layers.groups {
        let by_model = g.models.iter().any(|p| model_matches(p, vendor, model));
        let by_device = scope == Scope::Device
            && (mac.is_some_and(|mac| {
                g.devices
                    .iter()
                    .any(|d| Mac::parse(d).is_ok_and(|m| &m == mac))
            }) || entry.is_some_and(|e| e.groups.iter().any(|id| id == &g.id)));
        if by_model || by_device {
            s.merge(&g.settings);
            applied.push(g.id.clone());
        }
    }
    if let Some(e) = entry {
        s.merge(&e.settings);
    }
    finish(s, vendor, applied)
}

fn finish(s: Settings, vendor: &str, groups: Vec<String>) -> Resolved {
    let mut lines: Vec<ResolvedLine> = s
        .lines
        .iter()
        .filter_map(|(n, l)| {
            let number: u32 = n.trim().parse().ok()?;
            Some(ResolvedLine {
                number,
                enabled: l.enabled.unwrap_or(l.user.is_some()),
                user: l.user.clone(),
                auth_user: l.auth_user.clone().or_else(|| l.user.clone()),
                password: l.password.clone(),
                display_name: l.display_name.clone(),
                label: l
                    .label
                    .clone()
                    .or_else(|| l.display_name.clone())
                    .or_else(|| l.user.clone()),
                server: l.server.clone().or_else(|| s.sip_server.clone()),
                port: l.port.or(s.sip_port),
                transport: l.transport.or(s.sip_transport).unwrap_or(Transport::Udp),
                outbound_proxy: l
                    .outbound_proxy
                    .clone()
                    .or_else(|| s.outbound_proxy.clone()),
            })
        })
        .collect();
    lines.sort_by_key(|l| l.number);
    let raw = s
        .raw
        .iter()
        .filter(|(v, _)| v.eq_ignore_ascii_case(vendor))
        .flat_map(|(_, keys)| keys.iter())
        .map(|(k, v)| (k.clone(), raw_text(v)))
        .collect();
    Resolved {
        sip_server: s.sip_server,
        sip_port: s.sip_port,
        sip_transport: s.sip_transport,
        outbound_proxy: s.outbound_proxy,
        ntp_server: s.ntp_server,
        admin_password: s.admin_password,
        http_credentials: s.http_user.zip(s.http_password),
        lines,
        raw,
        vars: s.vars,
        groups,
    }
}

/// A raw value as the vendor file shows it: strings as written, numbers in decimal.
pub fn raw_text(v: &toml::Value) -> String {
    match v {
        toml::Value::String(s) => s.clone(),
        other => other.to_string(),
    }
}

/// One problem found by [`check`], at a path of keys/indexes inside the configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub path: Vec<PathPart>,
    pub message: String,
    pub warning: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPart {
    Key(String),
    Index(usize),
}

fn key(k: &str) -> PathPart {
    PathPart::Key(k.to_string())
}

/// Semantic checks of the settings sections (`[settings]`, `[vendors.*]`, `[[groups]]`,
/// `[devices.*]`, `[provisioning]`). Raw keys and vendor options are checked by the vendor
/// modules, so every vendor keeps its own rules.
pub fn check(config: &crate::config::SiteConfig) -> Vec<Problem> {
    let mut out = Vec::new();
    let p = &config.provisioning;
    if !(p.base_url.is_empty()
        || p.base_url.starts_with("http://")
        || p.base_url.starts_with("https://"))
    {
        out.push(Problem {
            path: vec![key("provisioning"), key("base_url")],
            message: format!(
                "provisioning.base_url '{}' must be an http:// or https:// URL (or empty: \
                 taken from each request)",
                p.base_url
            ),
            warning: false,
        });
    }
    check_settings(&config.settings, vec![key("settings")], &mut out);
    for (vid, vc) in &config.vendors {
        let base = vec![key("vendors"), key(vid)];
        let Some(vendor) = crate::vendors::by_id(vid) else {
            let known: Vec<&str> = crate::vendors::registry().iter().map(|v| v.id()).collect();
            out.push(Problem {
                path: base,
                message: format!(
                    "unknown vendor '{vid}'; known vendors: {}",
                    known.join(", ")
                ),
                warning: false,
            });
            continue;
        };
        let mut sp = base.clone();
        sp.push(key("settings"));
        check_settings(&vc.settings, sp, &mut out);
        for (m, ms) in &vc.models {
            let mut mp = base.clone();
            mp.extend([key("models"), key(m)]);
            check_settings(ms, mp, &mut out);
        }
        for (k, v) in &vc.options {
            if let Err(message) = vendor.check_option(k, v) {
                let mut op = base.clone();
                op.extend([key("options"), key(k)]);
                out.push(Problem {
                    path: op,
                    message: format!("vendors.{vid}.options.{k}: {message}"),
                    warning: false,
                });
            }
        }
    }
    let mut ids: Vec<&str> = Vec::new();
    for (i, g) in config.groups.iter().enumerate() {
        let base = vec![key("groups"), PathPart::Index(i)];
        if g.id.trim().is_empty() {
            let mut ip = base.clone();
            ip.push(key("id"));
            out.push(Problem {
                path: ip,
                message: "group id must not be empty".into(),
                warning: false,
            });
        } else if ids.contains(&g.id.as_str()) {
            let mut ip = base.clone();
            ip.push(key("id"));
            out.push(Problem {
                path: ip,
                message: format!("duplicate group id '{}'; rename or remove one", g.id),
                warning: false,
            });
        }
        ids.push(&g.id);
        for (j, d) in g.devices.iter().enumerate() {
            if let Err(e) = Mac::parse(d) {
                let mut dp = base.clone();
                dp.extend([key("devices"), PathPart::Index(j)]);
                out.push(Problem {
                    path: dp,
                    message: format!("group '{}': {e}", g.id),
                    warning: false,
                });
            }
        }
        for (j, m) in g.models.iter().enumerate() {
            if let Some((v, _)) = m.split_once('/') {
                if crate::vendors::by_id(&v.to_ascii_lowercase()).is_none() {
                    let mut mp = base.clone();
                    mp.extend([key("models"), PathPart::Index(j)]);
                    out.push(Problem {
                        path: mp,
                        message: format!(
                            "group '{}': model pattern '{m}' names unknown vendor '{v}'",
                            g.id
                        ),
                        warning: false,
                    });
                }
            }
        }
        let mut sp = base.clone();
        sp.push(key("settings"));
        check_settings(&g.settings, sp, &mut out);
    }
    let mut seen: BTreeMap<String, String> = BTreeMap::new();
    for (k, e) in &config.devices {
        let base = vec![key("devices"), key(k)];
        match Mac::parse(k) {
            Err(err) => out.push(Problem {
                path: base.clone(),
                message: format!("devices.\"{k}\": {err}; device entries are keyed by MAC"),
                warning: false,
            }),
            Ok(m) => {
                if let Some(first) = seen.insert(m.as_str().to_string(), k.clone()) {
                    out.push(Problem {
                        path: base.clone(),
                        message: format!(
                            "devices.\"{k}\" is the same device as devices.\"{first}\"; merge them"
                        ),
                        warning: false,
                    });
                }
            }
        }
        for (j, g) in e.groups.iter().enumerate() {
            if !config.groups.iter().any(|x| &x.id == g) {
                let mut gp = base.clone();
                gp.extend([key("groups"), PathPart::Index(j)]);
                out.push(Problem {
                    path: gp,
                    message: format!(
                        "devices.\"{k}\" names group '{g}', which is not defined in [[groups]]"
                    ),
                    warning: false,
                });
            }
        }
        let mut sp = base.clone();
        sp.push(key("settings"));
        check_settings(&e.settings, sp, &mut out);
    }
    out
}

/// Refuse control characters: they would break a line-based or XML file.
fn check_text(out: &mut Vec<Problem>, path: Vec<PathPart>, what: &str, v: &str) {
    if v.chars().any(char::is_control) {
        out.push(Problem {
            path,
            message: format!(
                "{what} contains a control character (line break, tab, ...); phones' \
                 configuration files cannot carry it"
            ),
            warning: false,
        });
    }
}

fn check_settings(s: &Settings, base: Vec<PathPart>, out: &mut Vec<Problem>) {
    let at = |extra: &[&str]| {
        let mut p = base.clone();
        p.extend(extra.iter().map(|k| key(k)));
        p
    };
    for (name, v) in [
        ("sip_server", &s.sip_server),
        ("outbound_proxy", &s.outbound_proxy),
        ("ntp_server", &s.ntp_server),
        ("admin_password", &s.admin_password),
        ("http_user", &s.http_user),
        ("http_password", &s.http_password),
    ] {
        if let Some(v) = v {
            check_text(out, at(&[name]), name, v);
        }
    }
    for (n, l) in &s.lines {
        let ok = n.parse::<u32>().is_ok_and(|x| (1..=99).contains(&x));
        if !ok {
            out.push(Problem {
                path: at(&["lines", n]),
                message: format!("line number '{n}' must be a number from 1 to 99"),
                warning: false,
            });
        }
        for (name, v) in [
            ("user", &l.user),
            ("auth_user", &l.auth_user),
            ("password", &l.password),
            ("display_name", &l.display_name),
            ("label", &l.label),
            ("server", &l.server),
            ("outbound_proxy", &l.outbound_proxy),
        ] {
            if let Some(v) = v {
                check_text(
                    out,
                    at(&["lines", n, name]),
                    &format!("lines.{n}.{name}"),
                    v,
                );
            }
        }
    }
    for (vid, keys) in &s.raw {
        let Some(vendor) = crate::vendors::by_id(vid) else {
            out.push(Problem {
                path: at(&["raw", vid]),
                message: format!("raw parameters for unknown vendor '{vid}'"),
                warning: false,
            });
            continue;
        };
        for (k, v) in keys {
            let path = at(&["raw", vid, k]);
            if let Err(m) = vendor.check_raw_key(k) {
                out.push(Problem {
                    path: path.clone(),
                    message: format!("raw.{vid} key '{k}': {m}"),
                    warning: false,
                });
            }
            match v {
                toml::Value::String(sv) => check_text(out, path, &format!("raw.{vid}.{k}"), sv),
                toml::Value::Integer(_) | toml::Value::Float(_) => {}
                _ => out.push(Problem {
                    path,
                    message: format!(
                        "raw.{vid}.{k} must be a string or a number, written as the vendor \
                         expects it (e.g. \"1\", \"Yes\")"
                    ),
                    warning: false,
                }),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layer(toml: &str) -> Settings {
        toml::from_str(toml).unwrap()
    }

    #[test]
    fn model_patterns() {
        assert!(model_matches("yealink/T46S", "yealink", Some("t46s")));
        assert!(model_matches("Yealink/T4*", "yealink", Some("T46S")));
        assert!(model_matches("yealink/*", "yealink", None));
        assert!(model_matches("T46S", "yealink", Some("T46S")));
        assert!(!model_matches("snom/T46S", "yealink", Some("T46S")));
        assert!(!model_matches("T46S", "yealink", None));
        assert!(!model_matches("*", "yealink", Some("T46S")));
    }

    #[test]
    fn layers_in_order() {
        let mut vendors = BTreeMap::new();
        vendors.insert(
            "yealink".to_string(),
            VendorConfig {
                settings: layer("ntp_server = \"ntp.vendor\""),
                models: [("T46S".to_string(), layer("lines.1.label = \"model\""))].into(),
                ..Default::default()
            },
        );
        let groups = vec![
            Group {
                id: "by_model".into(),
                models: vec!["yealink/T4*".into()],
                settings: layer("admin_password = \"group1\""),
                ..Default::default()
            },
            Group {
                id: "explicit".into(),
                settings: layer("admin_password = \"group2\"\nraw.yealink.\"a.b\" = 1"),
                ..Default::default()
            },
        ];
        let mut devices = BTreeMap::new();
        devices.insert(
            "00:15:65:AA:BB:CC".to_string(),
            DeviceEntry {
                groups: vec!["explicit".into()],
                settings: layer("lines.1 = { user = \"201\", password = \"pw\" }"),
            },
        );
        let defaults = layer("sip_server = \"pbx\"\nsip_port = 5070\nntp_server = \"ntp.default\"");
        let layers = Layers {
            defaults: &defaults,
            vendors: &vendors,
            groups: &groups,
            devices: &devices,
        };
        let mac = Mac::parse("001565aabbcc").unwrap();
        let r = resolve(layers, "yealink", Some("T46S"), Some(&mac), Scope::Device);
        assert_eq!(r.ntp_server.as_deref(), Some("ntp.vendor"));
        assert_eq!(r.admin_password.as_deref(), Some("group2"));
        assert_eq!(r.groups, vec!["by_model", "explicit"]);
        assert_eq!(r.raw.get("a.b").map(String::as_str), Some("1"));
        let l = &r.lines[0];
        assert_eq!(
            (
                l.number,
                l.enabled,
                l.user.as_deref(),
                l.auth_user.as_deref()
            ),
            (1, true, Some("201"), Some("201"))
        );
        assert_eq!(l.label.as_deref(), Some("model"));
        assert_eq!((l.server.as_deref(), l.port), (Some("pbx"), Some(5070)));

        // Model scope: no device layer, no explicit groups.
        let r = resolve(layers, "yealink", Some("T46S"), Some(&mac), Scope::Model);
        assert_eq!(r.admin_password.as_deref(), Some("group1"));
        assert_eq!(r.groups, vec!["by_model"]);
        assert!(!r.lines[0].enabled);

        // Another vendor sees neither the yealink layers nor its raw keys.
        let r = resolve(layers, "snom", Some("D785"), Some(&mac), Scope::Device);
        assert_eq!(r.ntp_server.as_deref(), Some("ntp.default"));
        assert!(r.raw.is_empty());
    }
}
