//! Multi-vendor provisioning: recognising a phone from its request and rendering the file it
//! asked for in its vendor's format.
//!
//! Each vendor is one module implementing [`Vendor`] (`snom`, `yealink`, `gigaset`, `digium`,
//! `polycom`, `cisco`, `grandstream`, `fanvil`); [`registry`] lists them. Adding a vendor means
//! adding one module, its templates under `templates/<vendor>/` and one line in [`registry`];
//! no other vendor changes.
//!
//! The flow for one request (the server drives it; this module does no I/O):
//!
//! 1. [`mac_hint`] finds the MAC the request probably belongs to, so the caller can look up
//!    what the inventory already knows about that device ([`Known`]).
//! 2. [`identify`] asks every vendor to [`Vendor::identify`] the request and picks one claim:
//!    a vendor prefix in the path (`/yealink/...`) decides alone; otherwise a User-Agent
//!    match wins over a file name only one vendor uses, which wins over a shared file name
//!    (`<mac>.cfg`) narrowed down by the MAC's OUI and then by the inventory. A request no
//!    vendor claims, or one several claim equally, yields [`Unrecognised`] with the reason.
//! 3. The caller resolves the device's settings ([`crate::settings::resolve`] with the
//!    [`Identity`]'s [`FileKind::scope`]), finds the firmware target, and calls
//!    [`Vendor::render`] with a [`RenderContext`]. Templates come through the [`Templates`]
//!    trait: the server reads the site's templates and keeps the last good one;
//!    [`ShippedTemplates`] renders the defaults embedded in the binary.

pub mod mac;
pub mod templates;

mod cisco;
mod digium;
mod fanvil;
mod gigaset;
mod grandstream;
mod polycom;
mod snom;
mod yealink;

use std::collections::BTreeMap;

use serde::Serialize;

pub use mac::{Mac, MacError};
pub use templates::{render_template, ShippedTemplates, TemplateError, Templates};

use crate::settings::{Resolved, Scope};

/// What the HTTP edge tells identification about one request.
#[derive(Debug, Clone, Default)]
pub struct DeviceRequest {
    /// Percent-decoded request path, e.g. `/yealink/001565aabbcc.cfg`.
    pub path: String,
    /// Decoded query arguments in request order.
    pub query: Vec<(String, String)>,
    /// `User-Agent` header ("" when absent).
    pub user_agent: String,
    /// The phone's address.
    pub peer_ip: String,
    /// Common name of a verified TLS client certificate.
    pub client_cn: Option<String>,
}

impl DeviceRequest {
    /// The last path segment: the file the phone asks for.
    pub fn file_name(&self) -> &str {
        self.path.rsplit('/').next().unwrap_or("")
    }

    /// The vendor named by the directory right above the file (`/Digium/<mac>.cfg`), if any.
    pub fn vendor_prefix(&self) -> Option<&'static dyn Vendor> {
        let mut segs = self.path.rsplit('/');
        segs.next();
        let dir = segs.next()?;
        by_id(&dir.to_ascii_lowercase())
    }

    pub fn query_arg(&self, key: &str) -> Option<&str> {
        self.query
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }
}

/// How strongly a claim is backed. Stronger evidence wins (the order of the variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Evidence {
    /// A file name several vendors use (`<mac>.cfg`): needs more to decide.
    SharedName,
    /// A shared name, decided by what the inventory knows about the MAC.
    Inventory,
    /// A shared name, decided by the MAC's OUI.
    Oui,
    /// A file name only this vendor asks for (`snomD785.htm`, `cfg<mac>.xml`).
    FileName,
    /// The User-Agent is this vendor's.
    UserAgent,
    /// The path names the vendor (`/yealink/...`).
    Prefix,
}

/// Which file of the vendor's scheme was asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum FileKind {
    /// Yealink `.boot`: which files to load.
    Boot,
    /// Shared by all devices of a model (or of the vendor).
    Common,
    /// A per-device file that lists or points to other files (Snom setting-files container,
    /// Polycom master file).
    Index,
    /// A per-device settings file.
    Device,
    /// A firmware description (Snom/Gigaset `firmware_status` target).
    Firmware,
    /// Yealink `<name>_Security.enc`: the key of the encrypted file named inside.
    Key(Box<RequestedFile>),
}

impl FileKind {
    /// The settings layers a file of this kind gets.
    pub fn scope(&self) -> Scope {
        match self {
            FileKind::Common => Scope::Model,
            FileKind::Key(inner) => inner.kind.scope(),
            _ => Scope::Device,
        }
    }

    /// A short name for templates and logs (`common`, `device`, ...).
    pub fn name(&self) -> &'static str {
        match self {
            FileKind::Boot => "boot",
            FileKind::Common => "common",
            FileKind::Index => "index",
            FileKind::Device => "device",
            FileKind::Firmware => "firmware",
            FileKind::Key(_) => "key",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RequestedFile {
    /// The file name as asked for.
    pub name: String,
    pub kind: FileKind,
}

/// A recognised phone and the file it asked for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Identity {
    /// [`Vendor::id`] of the vendor.
    pub vendor: &'static str,
    /// Model as the vendor names it (`T46S`, `D785`, `VVX_400`), when known.
    pub model: Option<String>,
    pub mac: Option<Mac>,
    /// Firmware version the phone reported (User-Agent), when known.
    pub firmware: Option<String>,
    pub file: RequestedFile,
    pub evidence: Evidence,
}

/// A vendor's answer to [`Vendor::identify`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Not this vendor's request.
    NotMine,
    /// This vendor's request, but it cannot be answered (malformed MAC, unknown model code,
    /// a file this server does not generate). The reason is logged; the phone gets 404.
    Refused(String),
    Mine(Box<Identity>),
}

/// What the inventory knows about the MAC found in a request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Known {
    pub vendor: Option<String>,
    pub model: Option<String>,
}

/// Why nobody answers a request (logged; the phone gets 404).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct Unrecognised(pub String);

/// A model and firmware read from a User-Agent or a DHCP option 60 string.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DeviceHint {
    pub model: Option<String>,
    pub firmware: Option<String>,
    pub mac: Option<Mac>,
}

/// The firmware a device should run, as the firmware catalogue decided it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FirmwareRef {
    /// Version string as the vendor writes it (`66.86.0.15`, `10.1.198.162`).
    pub version: String,
    /// Absolute URL of the image; it changes only when the target changes.
    pub url: String,
}

/// Everything a vendor needs to render one file.
pub struct RenderContext<'a> {
    pub identity: &'a Identity,
    /// Settings merged for [`FileKind::scope`] of the requested file.
    pub settings: &'a Resolved,
    pub firmware: Option<&'a FirmwareRef>,
    /// URL phones reach the server at, without a trailing `/` (`http://10.0.0.1:8080`).
    pub base_url: &'a str,
    /// `[vendors.<id>.options]`.
    pub options: &'a BTreeMap<String, toml::Value>,
    pub templates: &'a dyn Templates,
}

/// A rendered file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rendered {
    pub body: Vec<u8>,
    pub content_type: &'static str,
}

/// Why a file could not be rendered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    /// An operator template (or a shipped one) failed; the message names file and line.
    #[error("{0}")]
    Template(#[from] TemplateError),
    /// The file is not available in this configuration (answered 404).
    #[error("{0}")]
    NotAvailable(String),
}

/// One vendor: recognition, rendering and its configuration rules.
pub trait Vendor: Sync {
    /// Lower-case id used in paths, configuration keys and the inventory (`yealink`).
    fn id(&self) -> &'static str;

    /// OUIs (first three MAC bytes, 6 upper-case hex digits) this vendor's phones use.
    fn ouis(&self) -> &'static [&'static str];

    /// Model, firmware and MAC from a User-Agent, when it is this vendor's.
    fn parse_user_agent(&self, ua: &str) -> Option<DeviceHint>;

    /// Model and firmware from a DHCP option 60 (vendor class) string, when it is this
    /// vendor's and the vendor sends a recognisable one.
    fn parse_option60(&self, class: &str) -> Option<DeviceHint>;

    /// Whether the request is this vendor's, and which file it asks for.
    fn identify(&self, req: &DeviceRequest) -> Verdict;

    /// Render the file. The identity is this vendor's, from [`Vendor::identify`] (possibly
    /// completed with what the inventory knew).
    fn render(&self, ctx: &RenderContext<'_>) -> Result<Rendered, RenderError>;

    /// The shipped templates: (file name under `templates/<id>/`, source).
    fn templates(&self) -> &'static [(&'static str, &'static str)];

    /// Check one `[vendors.<id>.options]` entry.
    fn check_option(&self, key: &str, value: &toml::Value) -> Result<(), String>;

    /// Check the name of a raw parameter (`raw.<id>."<key>"`) for this vendor's syntax.
    fn check_raw_key(&self, key: &str) -> Result<(), String>;
}

/// Every vendor, in the order ties are broken.
pub fn registry() -> &'static [&'static dyn Vendor] {
    static ALL: [&dyn Vendor; 8] = [
        &snom::Snom,
        &yealink::Yealink,
        &gigaset::Gigaset,
        &digium::Digium,
        &polycom::Polycom,
        &cisco::Cisco,
        &grandstream::Grandstream,
        &fanvil::Fanvil,
    ];
    &ALL
}

pub fn by_id(id: &str) -> Option<&'static dyn Vendor> {
    registry().iter().copied().find(|v| v.id() == id)
}

/// Vendor, model and firmware from a DHCP option 60 vendor class string
/// (`digium_D40_1_1_0_0_48178`, `snomD785`, `Gigaset_N720_DM_PRO`, `Cisco SPA504G`).
pub fn identify_option60(class: &str) -> Option<(&'static str, DeviceHint)> {
    let class = class.trim_end_matches('\0').trim();
    registry()
        .iter()
        .find_map(|v| v.parse_option60(class).map(|h| (v.id(), h)))
}

/// The MAC a request most probably belongs to: a 12-hex-digit run in the file name, else the
/// `mac` query argument, else a MAC in the User-Agent. Only a hint for the inventory lookup;
/// the vendor's identification decides.
pub fn mac_hint(req: &DeviceRequest) -> Option<Mac> {
    let in_name = hex_runs(req.file_name()).find_map(|h| Mac::parse(h).ok());
    in_name
        .or_else(|| req.query_arg("mac").and_then(|m| Mac::parse(m).ok()))
        .or_else(|| mac_in_text(&req.user_agent))
}

/// Runs of exactly 12 hex digits bounded by non-alphanumerics (or `_`, `-`, `.`), in order
/// (found as they are asked for: the first usually answers).
pub(crate) fn hex_runs(s: &str) -> impl Iterator<Item = &str> {
    let b = s.as_bytes();
    let mut i = 0;
    std::iter::from_fn(move || {
        while i < b.len() {
            if b[i].is_ascii_alphanumeric() {
                let start = i;
                while i < b.len() && b[i].is_ascii_alphanumeric() {
                    i += 1;
                }
                let word = &s[start..i];
                // `cfg000b82462d97`, `y000000000028`: a known prefix glued to the hex digits.
                let word = word
                    .strip_prefix("cfg")
                    .or_else(|| word.strip_prefix("SEP"))
                    .unwrap_or(word);
                if word.len() == 12 && word.bytes().all(|c| c.is_ascii_hexdigit()) {
                    return Some(word);
                }
            } else {
                i += 1;
            }
        }
        None
    })
}

/// A MAC written in free text: colon-separated, or a bare 12-hex-digit word.
pub fn mac_in_text(text: &str) -> Option<Mac> {
    for w in text.split(|c: char| c.is_whitespace() || "();,\"'/".contains(c)) {
        if w.len() == 17 && w.as_bytes()[2] == b':' {
            if let Ok(m) = Mac::parse(w) {
                return Some(m);
            }
        }
    }
    hex_runs(text).find_map(|h| {
        // A bare run of digits (a version, a build number) is not a MAC.
        if h.bytes().all(|c| c.is_ascii_digit()) && !h.starts_with("00") {
            return None;
        }
        Mac::parse(h).ok()
    })
}

/// Pick the vendor and file for a request. `known` is what the inventory holds for
/// [`mac_hint`]'s MAC.
pub fn identify(req: &DeviceRequest, known: Option<&Known>) -> Result<Identity, Unrecognised> {
    let file = req.file_name();
    if file.is_empty() {
        return Err(Unrecognised(format!(
            "'{}' names no file; phones ask for a file such as snomD785.htm or \
             y000000000066.cfg",
            req.path
        )));
    }
    if file.contains('{') {
        return Err(Unrecognised(format!(
            "'{file}' contains an unexpanded placeholder; this phone's firmware does not know it \
             (use {{mac}} only, or no placeholder)"
        )));
    }
    if let Some(v) = req.vendor_prefix() {
        return match v.identify(req) {
            Verdict::Mine(mut id) => {
                id.evidence = Evidence::Prefix;
                Ok(complete(*id, known))
            }
            Verdict::Refused(reason) => Err(Unrecognised(reason)),
            Verdict::NotMine => Err(Unrecognised(format!(
                "'{file}' is not a file {} phones ask for",
                v.id()
            ))),
        };
    }
    let mut claims = Vec::new();
    let mut refusals = Vec::new();
    for v in registry() {
        match v.identify(req) {
            Verdict::Mine(id) => claims.push(*id),
            Verdict::Refused(r) => refusals.push((v.id(), r)),
            Verdict::NotMine => {}
        }
    }
    // The strongest claims; among User-Agent and unique-name claims the registry order.
    let best = claims.iter().map(|c| c.evidence).max();
    if let Some(best) = best.filter(|b| *b >= Evidence::FileName) {
        let id = claims.into_iter().find(|c| c.evidence == best);
        return Ok(complete(id.expect("a claim has the best evidence"), known));
    }
    // A vendor whose User-Agent matched but which refused the file explains best.
    let ua_vendor = registry()
        .iter()
        .find(|v| v.parse_user_agent(&req.user_agent).is_some());
    if let Some(v) = ua_vendor {
        if let Some((_, r)) = refusals.iter().find(|(id, _)| *id == v.id()) {
            return Err(Unrecognised(r.clone()));
        }
    }
    match claims.len() {
        0 => {
            if let Some((_, r)) = refusals.first() {
                return Err(Unrecognised(r.clone()));
            }
            let ua = match ua_vendor {
                Some(v) => format!(
                    " (the User-Agent is {}'s, but that vendor does not ask for this name)",
                    v.id()
                ),
                None if req.user_agent.is_empty() => " (no User-Agent)".to_string(),
                None => format!(
                    " (User-Agent '{}' is no known phone's)",
                    clip(&req.user_agent)
                ),
            };
            Err(Unrecognised(format!(
                "no vendor asks for a file named '{file}'{ua}"
            )))
        }
        1 => Ok(complete(claims.pop().expect("one claim"), known)),
        _ => {
            let by_oui: Vec<&Identity> = claims
                .iter()
                .filter(|c| {
                    c.mac.as_ref().is_some_and(|m| {
                        by_id(c.vendor).is_some_and(|v| v.ouis().contains(&m.oui().as_str()))
                    })
                })
                .collect();
            if by_oui.len() == 1 {
                let mut id = by_oui[0].clone();
                id.evidence = Evidence::Oui;
                return Ok(complete(id, known));
            }
            if let Some(kv) = known.and_then(|k| k.vendor.as_deref()) {
                if let Some(c) = claims.iter().find(|c| c.vendor == kv) {
                    let mut id = c.clone();
                    id.evidence = Evidence::Inventory;
                    return Ok(complete(id, known));
                }
            }
            let names: Vec<&str> = claims.iter().map(|c| c.vendor).collect();
            Err(Unrecognised(format!(
                "'{file}' could be {}'s: neither the User-Agent ('{}'), the MAC's OUI nor the \
                 inventory decides; point the phone at /<vendor>/ (e.g. /{}/) to say which",
                names.join("'s or "),
                clip(&req.user_agent),
                names[0]
            )))
        }
    }
}

/// The settings one file of `identity` gets ([`FileKind::scope`] decides the layers).
pub fn resolve_for(config: &crate::config::SiteConfig, identity: &Identity) -> Resolved {
    crate::settings::resolve(
        crate::settings::Layers::of(config),
        identity.vendor,
        identity.model.as_deref(),
        identity.mac.as_ref(),
        identity.file.kind.scope(),
    )
}

/// Render the file `identity` asked for: settings resolved from `config`, the firmware target
/// as the caller found it (for the groups in [`resolve_for`]), URLs under `base_url`.
pub fn render_file(
    config: &crate::config::SiteConfig,
    identity: &Identity,
    settings: &Resolved,
    firmware: Option<&FirmwareRef>,
    base_url: &str,
    templates: &dyn Templates,
) -> Result<Rendered, RenderError> {
    let vendor = by_id(identity.vendor).expect("identities name registered vendors");
    let empty = BTreeMap::new();
    let options = config
        .vendors
        .get(identity.vendor)
        .map(|v| &v.options)
        .unwrap_or(&empty);
    vendor.render(&RenderContext {
        identity,
        settings,
        firmware,
        base_url: base_url.trim_end_matches('/'),
        options,
        templates,
    })
}

/// Fill what the request did not say (model) from what the inventory knows.
fn complete(mut id: Identity, known: Option<&Known>) -> Identity {
    if let Some(k) = known.filter(|k| k.vendor.as_deref() == Some(id.vendor)) {
        if id.model.is_none() {
            id.model.clone_from(&k.model);
        }
    }
    id
}

fn clip(s: &str) -> String {
    s.chars().take(120).collect()
}

// ---------------------------------------------------------------------------------------------
// Helpers shared by the vendor modules.

/// A compiled regex for a literal pattern (vendor modules keep them in `OnceLock`s).
pub(crate) fn re(pattern: &str) -> regex::Regex {
    regex::Regex::new(pattern).expect("vendor patterns are valid")
}

/// The identity a vendor claims for `file`, with the hint from its User-Agent merged in.
pub(crate) fn claim(
    vendor: &'static str,
    file: &str,
    kind: FileKind,
    evidence: Evidence,
    ua: Option<&DeviceHint>,
    model: Option<String>,
    mac: Option<Mac>,
) -> Verdict {
    let evidence = if ua.is_some() {
        Evidence::UserAgent
    } else {
        evidence
    };
    Verdict::Mine(Box::new(Identity {
        vendor,
        model: model.or_else(|| ua.and_then(|h| h.model.clone())),
        mac: mac.or_else(|| ua.and_then(|h| h.mac.clone())),
        firmware: ua.and_then(|h| h.firmware.clone()),
        file: RequestedFile {
            name: file.to_string(),
            kind,
        },
        evidence,
    }))
}

/// A MAC from a file name part, or the refusal naming the file.
pub(crate) fn mac_from_name(vendor: &str, file: &str, part: &str) -> Result<Mac, Verdict> {
    Mac::parse(part).map_err(|e| Verdict::Refused(format!("{vendor}: {file}: {e}")))
}

/// Whether a file name part looks like a MAC (12 hex digits): a shared name is claimed only
/// then, unless the User-Agent or the path says the vendor.
pub(crate) fn mac_like(part: &str) -> bool {
    part.len() == 12 && part.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Check a raw key that becomes an XML element or attribute name.
pub(crate) fn check_xml_name(key: &str) -> Result<(), String> {
    let mut chars = key.chars();
    let first_ok = chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_');
    if first_ok && chars.all(|c| c.is_ascii_alphanumeric() || "_.-".contains(c)) {
        Ok(())
    } else {
        Err(
            "must be an XML name: a letter or '_' first, then letters, digits, '_', '.', '-'"
                .into(),
        )
    }
}

/// Options every vendor refuses: none are defined unless the vendor says so.
pub(crate) fn no_options(key: &str) -> Result<(), String> {
    Err(format!(
        "unknown option '{key}'; this vendor has no options"
    ))
}

/// The variables every template sees; vendors add their own object under their id.
pub(crate) fn base_vars(ctx: &RenderContext<'_>) -> serde_json::Map<String, serde_json::Value> {
    use serde_json::json;
    let id = ctx.identity;
    let mac = id.mac.as_ref();
    let mut m = serde_json::Map::new();
    m.insert(
        "device".into(),
        json!({
            "vendor": id.vendor,
            "model": id.model,
            "mac": mac.map(|m| m.as_str().to_string()),
            "mac_upper": mac.map(Mac::upper),
            "mac_colon": mac.map(Mac::colon),
            "firmware": id.firmware,
        }),
    );
    m.insert(
        "file".into(),
        json!({ "name": id.file.name, "kind": id.file.kind.name() }),
    );
    m.insert(
        "settings".into(),
        serde_json::to_value(ctx.settings).unwrap_or_default(),
    );
    m.insert(
        "firmware".into(),
        serde_json::to_value(ctx.firmware).unwrap_or_default(),
    );
    m.insert("server".into(), json!({ "base_url": ctx.base_url }));
    m
}

/// Render `name` of `vendor` with `vars` through the context's templates.
pub(crate) fn render_text(
    ctx: &RenderContext<'_>,
    name: &str,
    vars: serde_json::Map<String, serde_json::Value>,
) -> Result<String, RenderError> {
    Ok(ctx
        .templates
        .render(ctx.identity.vendor, name, &serde_json::Value::Object(vars))?)
}

pub(crate) const XML: &str = "application/xml";
pub(crate) const TEXT: &str = "text/plain; charset=utf-8";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_runs_are_found_in_order_with_their_prefixes_removed() {
        let runs: Vec<&str> =
            hex_runs("cfg000b82462d97-y000000000028.SEP001122334455/0015659abcdef.x").collect();
        // `y000000000028` is 13 characters, `0015659abcdef` 13 hex digits: neither counts
        assert_eq!(runs, ["000b82462d97", "001122334455"]);
        assert_eq!(hex_runs("").count(), 0);
        assert_eq!(
            hex_runs("001565aabbcc").collect::<Vec<_>>(),
            ["001565aabbcc"]
        );
    }

    fn req(path: &str, ua: &str) -> DeviceRequest {
        DeviceRequest {
            path: path.into(),
            user_agent: ua.into(),
            ..Default::default()
        }
    }

    #[test]
    fn ids_are_unique_and_lower_case() {
        let mut ids: Vec<&str> = registry().iter().map(|v| v.id()).collect();
        assert!(ids
            .iter()
            .all(|i| i.chars().all(|c| c.is_ascii_lowercase())));
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), registry().len());
    }

    #[test]
    fn hints() {
        assert_eq!(
            mac_hint(&req("/snomD785-000413A11FA7.htm", ""))
                .unwrap()
                .as_str(),
            "000413a11fa7"
        );
        assert_eq!(
            mac_hint(&req("/cfg000b82462d97.xml", "")).unwrap().as_str(),
            "000b82462d97"
        );
        assert_eq!(
            mac_hint(&req(
                "/y000000000066.cfg",
                "Yealink SIP-T46S 66.86.0.15 00:15:65:4a:a9:37"
            ))
            .unwrap()
            .as_str(),
            "0015654aa937"
        );
        assert!(mac_hint(&req("/y000000000066.cfg", "")).is_none());
        assert!(mac_in_text("FileTransport PolycomVVX-VVX_400-UA/4.1.4.7430").is_none());
    }

    #[test]
    fn shared_name_needs_more_than_the_name() {
        // A MAC without a known OUI, no User-Agent: several vendors ask for <mac>.cfg.
        let r = identify(&req("/123456abcdef.cfg", ""), None);
        let e = r.unwrap_err().0;
        assert!(e.contains("could be"), "{e}");
        // The inventory decides.
        let known = Known {
            vendor: Some("fanvil".into()),
            model: Some("X4".into()),
        };
        let id = identify(&req("/123456abcdef.cfg", ""), Some(&known)).unwrap();
        assert_eq!((id.vendor, id.evidence), ("fanvil", Evidence::Inventory));
        assert_eq!(id.model.as_deref(), Some("X4"));
        // The OUI decides.
        let id = identify(&req("/001565aabbcc.cfg", ""), None).unwrap();
        assert_eq!((id.vendor, id.evidence), ("yealink", Evidence::Oui));
        // A prefix decides.
        let id = identify(&req("/digium/001565aabbcc.cfg", ""), None).unwrap();
        assert_eq!((id.vendor, id.evidence), ("digium", Evidence::Prefix));
    }

    #[test]
    fn unknown_requests() {
        for (path, ua, want) in [
            ("/favicon.ico", "", "no vendor asks"),
            ("/", "", "names no file"),
            ("/%7Bmac%7D.cfg", "", "no vendor"),
            ("/{mac}.cfg", "", "placeholder"),
            ("/yealink/readme.txt", "", "not generated here"),
        ] {
            let e = identify(&req(path, ua), None).unwrap_err().0;
            assert!(e.contains(want), "{path}: {e}");
        }
    }

    #[test]
    fn option60() {
        let (v, h) = identify_option60("digium_D40_1_1_0_0_48178").unwrap();
        assert_eq!(v, "digium");
        assert_eq!(h.model.as_deref(), Some("D40"));
        assert_eq!(h.firmware.as_deref(), Some("1.1.0.0.48178"));
        assert_eq!(identify_option60("snomD785").unwrap().0, "snom");
        assert_eq!(
            identify_option60("Gigaset_N720_DM_PRO").unwrap().0,
            "gigaset"
        );
        assert_eq!(identify_option60("Cisco SPA504G").unwrap().0, "cisco");
        assert!(identify_option60("MSFT 5.0").is_none());
    }
}
