//! The typed site configuration (`autoprov.toml`).
//!
//! Every parameter of the innovaphone update server's `config.xml` has a field here, with the
//! reference default (see `shared/reference/innovaphone-data/config.xml`). A section that is left
//! out of the file takes its defaults; a list that is given (phases, classes, ...) replaces the
//! default list as a whole. `[server]` holds autoprov's own settings.
//!
//! This module only describes and parses; semantic checks live in [`crate::validate`].

use serde::{Deserialize, Serialize};

/// The whole site configuration.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct SiteConfig {
    pub server: ServerConfig,
    pub master: Master,
    pub fwstorage: FwStorage,
    pub backup: Backup,
    pub status: Status,
    pub times: Times,
    pub phases: Vec<Phase>,
    pub environments: Vec<Environment>,
    pub classes: Vec<Class>,
    pub nobootdev: Vec<String>,
    pub nofirmdev: Vec<String>,
    pub filenames: Vec<FileName>,
    pub stdargs: Vec<StdArg>,
    pub customcerts: CustomCerts,
    pub queries: Queries,
    pub scripting: Scripting,
    pub tls: Tls,
    pub ca: Ca,
    pub firmware: FirmwareConfig,
    pub sip: Sip,
    pub mdns: Mdns,
    pub tftp: Tftp,
    /// `[provisioning]`: answering phones of the other vendors (see [`crate::settings`]).
    pub provisioning: crate::settings::Provisioning,
    /// `[settings]`: the defaults layer of the vendor-neutral settings.
    pub settings: crate::settings::Settings,
    /// `[vendors.<id>]`: per-vendor switch, settings layers and options.
    pub vendors: std::collections::BTreeMap<String, crate::settings::VendorConfig>,
    /// `[[groups]]`: named device sets with settings (also used by firmware targets).
    pub groups: Vec<crate::settings::Group>,
    /// `[devices."<mac>"]`: one device's groups and settings.
    pub devices: std::collections::BTreeMap<String, crate::settings::DeviceEntry>,
    /// What the update engine looks up on every poll, derived from `classes`, `nofirmdev`
    /// and `nobootdev` on first use (see [`Derived`]).
    #[serde(skip)]
    pub engine_index: Derived<crate::innovaphone::engine::EngineIndex>,
}

/// A value derived from the rest of a configuration on its first use. A configuration does
/// not change once in use (a reload builds a new one), and a copy starts empty and derives
/// its own, so the value cannot outlive what it was derived from. It takes no part in
/// comparisons and is not serialized.
pub struct Derived<T>(std::sync::OnceLock<T>);

impl<T> Derived<T> {
    /// The value, derived by `f` on the first call.
    pub fn get_or_init(&self, f: impl FnOnce() -> T) -> &T {
        self.0.get_or_init(f)
    }
}

impl<T> Default for Derived<T> {
    fn default() -> Self {
        Derived(std::sync::OnceLock::new())
    }
}

impl<T> Clone for Derived<T> {
    fn clone(&self) -> Self {
        Derived::default()
    }
}

impl<T> PartialEq for Derived<T> {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl<T> std::fmt::Debug for Derived<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Derived")
    }
}

/// autoprov's own settings (not part of the reference `config.xml`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses to listen on when `serve` gets no `--listen`.
    pub listen: Vec<String>,
    /// The device database: an SQLite file relative to the site directory (the default,
    /// `autoprov.db`), or a `postgres://user:password@host:port/database` URL for the
    /// scale-out store shared by several replicas. `--database` / `AUTOPROV_DATABASE`
    /// override it.
    pub database: String,
    /// Write-behind window for device state on SQLite, in milliseconds: polls queue their
    /// state and a background task writes all queued states in one transaction per window,
    /// so no request waits for the disk. A crash loses at most this window. 0 writes every
    /// state at once. Not used with PostgreSQL (replicas must see each other's writes).
    pub state_batch_ms: u64,
    /// With the write-behind window: MiB of written device states the server keeps in
    /// memory, so that a device's next poll reads no row (another process's writes, e.g. the
    /// CLI's, are noticed by the very next load). 0 keeps none.
    pub state_cache_mib: u64,
    /// MiB of rendered vendor files (with their entity tags) kept while their inputs are
    /// unchanged, so that a phone's next poll, or its conditional request answered 304,
    /// renders nothing. A Yealink file of a few KB takes about its size plus 0.5 KB: the
    /// default holds some 14 000 phones of 4 KB. Beyond it arbitrary entries are dropped
    /// (they are rendered again when asked for). 0 keeps none.
    pub render_cache_mib: u64,
    /// Configuration requests (update scripts, vendor files) handled at once. More are
    /// answered at once with 503 and `Retry-After` (never queued, never a hung connection),
    /// which phones retry; firmware downloads have their own budget
    /// (`[firmware] max_downloads`), so they can never starve configuration.
    pub max_config_requests: u32,
    /// Seconds sent in `Retry-After` with such a 503.
    pub config_retry_after: u64,
    /// Connections held open at once over all listeners. Beyond it a connection is still
    /// accepted and every request on it is answered 503 with `Retry-After` and closed (a
    /// sixteenth more, at least 8, may be in that state at once; past those the listeners
    /// wait for a connection to end), so a storm finds out at once instead of a hung
    /// connect or an accept failing for want of file descriptors. 0 (the default) derives
    /// it from the open-files limit, which `serve` raises to its hard limit at start.
    pub max_connections: u32,
    /// Seconds a connection may take to send a request's head, and may stay idle between
    /// two requests on a kept-alive connection, before it is closed.
    pub idle_timeout: u64,
    /// Largest accepted upload body (backups, query results, CSRs), in bytes.
    pub max_upload_bytes: u64,
    /// Clean path prefix served besides `/update.php` and `<prefix>/update.php`.
    pub clean_path: String,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: vec!["0.0.0.0:8080".into()],
            database: "autoprov.db".into(),
            state_batch_ms: 100,
            state_cache_mib: 64,
            render_cache_mib: 64,
            max_config_requests: 4096,
            config_retry_after: 5,
            max_connections: 0,
            idle_timeout: 30,
            max_upload_bytes: 4 * 1024 * 1024,
            clean_path: "/innovaphone/update".into(),
        }
    }
}

/// `<master>`: the reference device whose firmware all devices follow.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Master {
    /// URL of the master's `box_info.xml`; `none` skips the query; empty disables updates.
    pub info: String,
    pub expire: u64,
    pub cache: String,
    pub user: String,
    pub password: String,
    /// `master` | `none` | a build number.
    pub firmware: String,
    /// `master` | `firmware` | `none` | a build number.
    pub bootcode: String,
    /// Seconds to wait for the master device (autoprov extension).
    pub timeout: u64,
    /// Conditions all of which a device must meet to get firmware/boot code.
    pub applies: Vec<Applies>,
}

impl Default for Master {
    fn default() -> Self {
        Master {
            info: "http://yourmasterdevice.yourdomain.tld/CMD0/box_info.xml".into(),
            expire: 3600,
            cache: "cache/master-info.xml".into(),
            user: "admin".into(),
            password: "password".into(),
            firmware: "master".into(),
            bootcode: "master".into(),
            timeout: 5,
            applies: Vec::new(),
        }
    }
}

/// An `<applies>` condition: a class name, an environment name (`env = true`), or `*`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Applies {
    pub value: String,
    #[serde(default)]
    pub env: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FwStorage {
    /// Template with `{build}`, `{model}`, `{filetype}`, `{filename}`; relative = under the update URL.
    pub url: String,
}

impl Default for FwStorage {
    fn default() -> Self {
        FwStorage {
            url: "fw/{build}/".into(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Backup {
    /// Directory (relative to the site) for backups; empty = backups off.
    pub dir: String,
    pub nbackups: u32,
    pub scfg: String,
    /// Days a backup is spared from deletion.
    pub minage: u32,
}

impl Default for Backup {
    fn default() -> Self {
        Backup {
            dir: String::new(),
            nbackups: 10,
            scfg: "update.php?mode=backup&hwid=#h&sn=#m".into(),
            minage: 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Status {
    /// Keep per-device state (the reference's `status@dir` being set).
    pub enabled: bool,
    pub missing: u64,
    pub refresh: u64,
    /// Forget devices not seen for this many seconds (0 = never).
    pub expire: u64,
    /// Seconds device messages are kept.
    pub logkeep: u64,
    pub usehttpsdevlinks: bool,
}

impl Default for Status {
    fn default() -> Self {
        Status {
            enabled: false,
            missing: 604800,
            refresh: 0,
            expire: 7776000,
            logkeep: 1800,
            usehttpsdevlinks: true,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Times {
    /// Snippet directory, relative to the site.
    pub dir: String,
    /// Hours for `times /allow` (e.g. `22,23,0`); empty = unrestricted.
    pub allow: String,
    /// Minutes for `times /initial`; empty = not sent.
    pub initial: String,
    pub check: bool,
    /// Fast polling value (the `provision` argument); empty/0 = none.
    pub polling: String,
    /// Normal poll interval in minutes.
    pub interval: u64,
    pub grace: u64,
    pub forcehttps: bool,
    /// Port devices must use for HTTPS; `None` = default (443).
    pub httpsport: Option<u16>,
    pub forcetrust: bool,
    pub httpsurlmod: String,
    pub forcestaging: bool,
    /// Whether the `_first_<last>` staging phase is added. `None` = when `allow` is set and
    /// `forcestaging` is true. The reference reads these two from user-config only, so an import
    /// writes the value explicitly.
    pub first_phase: Option<bool>,
}

impl Default for Times {
    fn default() -> Self {
        Times {
            dir: "scripts".into(),
            allow: String::new(),
            initial: String::new(),
            check: true,
            polling: "5".into(),
            interval: 15,
            grace: 90,
            forcehttps: false,
            httpsport: None,
            forcetrust: false,
            httpsurlmod: "!mtls/!!i".into(),
            forcestaging: true,
            first_phase: None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Phase {
    pub id: String,
    pub seq: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Environment {
    pub id: String,
    #[serde(default)]
    pub implies: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Class {
    pub id: String,
    #[serde(default)]
    pub models: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FileName {
    pub model: String,
    #[serde(default)]
    pub prot: Option<String>,
    #[serde(default)]
    pub boot: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct StdArg {
    pub key: String,
    /// Replacement placeholder; `None` = the argument is dropped from rewritten URLs.
    #[serde(default)]
    pub value: Option<String>,
}

/// `<customcerts>`: device certificate roll-out. `dir` empty = disabled.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct CustomCerts {
    pub dir: String,
    pub cakeys: String,
    pub catype: String,
    pub causer: String,
    pub capassword: String,
    pub caurl: String,
    pub caname: String,
    pub canamesep: String,
    pub cawildcard: String,
    pub csr_dn_c: String,
    pub csr_dn_cn: String,
    pub csr_dn_l: String,
    pub csr_dn_o: String,
    pub csr_dn_ou: String,
    pub csr_dn_st: String,
    pub csr_key: String,
    pub csr_san_dns_1: String,
    pub csr_san_dns_2: String,
    pub csr_san_dns_3: String,
    pub csr_san_ip_1: String,
    pub csr_san_ip_2: String,
    pub csr_signature: String,
    pub renew: u32,
    pub storekey: bool,
    pub auto_sign_off: String,
    pub network: String,
    pub netmask: String,
}

impl Default for CustomCerts {
    fn default() -> Self {
        CustomCerts {
            dir: String::new(),
            cakeys: "CAkey*".into(),
            catype: "manual".into(),
            causer: String::new(),
            capassword: String::new(),
            caurl: String::new(),
            caname: "innovaphone Device Certification Authority,innovaphone Device Certification Authority 2".into(),
            canamesep: ",".into(),
            cawildcard: String::new(),
            csr_dn_c: String::new(),
            csr_dn_cn: "{sn}".into(),
            csr_dn_l: String::new(),
            csr_dn_o: String::new(),
            csr_dn_ou: String::new(),
            csr_dn_st: String::new(),
            csr_key: "2048-bit".into(),
            csr_san_dns_1: String::new(),
            csr_san_dns_2: String::new(),
            csr_san_dns_3: String::new(),
            csr_san_ip_1: String::new(),
            csr_san_ip_2: String::new(),
            csr_signature: "SH256".into(),
            renew: 90,
            storekey: true,
            auto_sign_off: String::new(),
            network: String::new(),
            netmask: String::new(),
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Queries {
    pub scfg: String,
    pub query: Vec<Query>,
}

impl Default for Queries {
    fn default() -> Self {
        Queries {
            scfg: "update.php?mode=query&sn=#m".into(),
            query: vec![
                Query {
                    id: "certificates".into(),
                    title: "Certificate".into(),
                    cmd: "mod cmd X509 xml-info".into(),
                    applies: vec![],
                    show: vec![],
                },
                Query {
                    id: "admin".into(),
                    title: "Admin".into(),
                    cmd: "mod cmd CMD0 xml-info".into(),
                    applies: vec![],
                    show: vec![],
                },
            ],
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Query {
    pub id: String,
    #[serde(default)]
    pub title: String,
    pub cmd: String,
    /// Empty = the query is inactive.
    #[serde(default)]
    pub applies: Vec<Applies>,
    #[serde(default)]
    pub show: Vec<Show>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct Show {
    pub title: String,
    pub xpath: String,
}

/// Dynamic snippets (the reference's `CustomUpdateSnippet` hook).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Default)]
#[serde(deny_unknown_fields, default)]
pub struct Scripting {
    /// Template file (relative to the site) rendered over the device state; its lines are sent
    /// before the standard snippets.
    pub pre_template: String,
    /// Template file whose lines are sent after the standard snippets.
    pub post_template: String,
    /// Template file whose rendered text `false` suppresses the standard snippets.
    pub standard_template: String,
    /// External hook: a command run with the state as JSON on stdin.
    pub hook_command: Vec<String>,
    /// External hook: a URL that gets the state as JSON in a POST.
    pub hook_url: String,
    /// Seconds the hook may take.
    pub hook_timeout: u64,
    /// What to do when the hook fails: `skip` (send no dynamic snippets, log) or `fail`
    /// (answer with an error comment and no scripts).
    pub hook_failure: HookFailure,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum HookFailure {
    #[default]
    Fail,
    Skip,
}

/// `[tls]`: HTTPS and mutual-TLS listeners, the server certificate, client trust and reverse
/// proxies (autoprov's own; the reference leaves all of this to the web server).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tls {
    /// Addresses for HTTPS (server certificate only) when `serve` gets no `--https`.
    pub https_listen: Vec<String>,
    /// Addresses for mutual TLS (a client certificate is asked for and verified) when `serve`
    /// gets no `--mtls`. The handshake also succeeds without a certificate or with an untrusted
    /// one, so that the refusal can be explained to the device and recorded; `times.forcetrust`
    /// decides what such a device gets.
    pub mtls_listen: Vec<String>,
    /// Server certificate chain (PEM, leaf first), relative to the site. Created self-signed on
    /// the first start of a TLS listener when neither it nor `key` exists. Replaced files are
    /// used by new connections without a restart.
    pub cert: String,
    /// Private key of the server certificate (PEM, PKCS#8/PKCS#1/SEC1), relative to the site.
    pub key: String,
    /// PEM bundle of the CAs whose client certificates the MTLS listener trusts, relative to the
    /// site (e.g. the innovaphone device CAs). Empty = only the built-in CA (`[ca] cert`).
    pub client_ca: String,
    /// Reverse proxies (IP addresses or CIDR blocks such as `10.0.0.0/8`) whose
    /// `X-Forwarded-For` header is believed. From any other peer the header is ignored.
    pub trusted_proxies: Vec<String>,
    /// Seconds a client may take for the TLS handshake.
    pub handshake_timeout: u64,
}

impl Default for Tls {
    fn default() -> Self {
        Tls {
            https_listen: Vec::new(),
            mtls_listen: Vec::new(),
            cert: "tls/server.crt".into(),
            key: "tls/server.key".into(),
            client_ca: String::new(),
            trusted_proxies: Vec::new(),
            handshake_timeout: 10,
        }
    }
}

impl Tls {
    /// Whether `ip` is one of `trusted_proxies` (entries that do not parse never match).
    pub fn is_trusted_proxy(&self, ip: std::net::IpAddr) -> bool {
        self.trusted_proxies
            .iter()
            .filter_map(|p| parse_cidr(p).ok())
            .any(|(net, bits)| ip_in_cidr(ip, net, bits))
    }
}

/// Parse `192.0.2.1`, `10.0.0.0/8`, `::1` or `fd00::/8` into an address and a prefix length.
pub fn parse_cidr(s: &str) -> Result<(std::net::IpAddr, u8), String> {
    let s = s.trim();
    let (addr, bits) = match s.split_once('/') {
        Some((a, b)) => (a, Some(b)),
        None => (s, None),
    };
    let ip: std::net::IpAddr = addr
        .parse()
        .map_err(|_| format!("'{addr}' is not an IP address"))?;
    let max = if ip.is_ipv4() { 32 } else { 128 };
    let bits = match bits {
        None => max,
        Some(b) => match b.parse::<u8>() {
            Ok(n) if n <= max => n,
            _ => return Err(format!("prefix length '/{b}' must be 0..{max}")),
        },
    };
    Ok((ip, bits))
}

/// Whether `ip` lies in `net/bits`; IPv4-mapped IPv6 addresses count as IPv4.
pub fn ip_in_cidr(ip: std::net::IpAddr, net: std::net::IpAddr, bits: u8) -> bool {
    use std::net::IpAddr;
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(bits)).unwrap_or(0);
            u32::from(a) & mask == u32::from(n) & mask
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(bits)).unwrap_or(0);
            u128::from(a) & mask == u128::from(n) & mask
        }
        _ => false,
    }
}

/// `[ca]`: the built-in certificate authority (`autoprov ca init`, `autoprov ca sign`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Ca {
    /// CA certificate (PEM), relative to the site. The default name matches the default
    /// `customcerts.cakeys` pattern in the default `customcerts.dir`, so the CA is pushed to
    /// devices as the chain of their new certificate. The MTLS listener trusts it too.
    pub cert: String,
    /// CA private key (PEM), relative to the site. Kept out of the certificate folder so that
    /// no `cakeys` pattern can push it to devices.
    pub key: String,
    /// Common name of the CA created by `ca init`. Add it to `customcerts.caname` so that
    /// certificates signed by it are accepted.
    pub cn: String,
    /// Key type for `ca init`: `rsa2048` (what innovaphone devices create) or `ecdsa-p256`.
    pub key_type: String,
    /// Validity of the CA certificate created by `ca init`, in days.
    pub ca_valid_days: u32,
    /// Validity of device certificates signed by the CA, in days.
    pub valid_days: u32,
    /// Sign a device's pending CSR automatically when the device polls over the MTLS listener
    /// with a verified client certificate that names it (CN = hwid or sn without dashes) and
    /// was issued by a CA with one of these common names. Empty = never sign automatically.
    pub auto_sign_for: Vec<String>,
}

impl Default for Ca {
    fn default() -> Self {
        Ca {
            cert: "certs/CAkey-autoprov.pem".into(),
            key: "ca/autoprov-ca.key".into(),
            cn: "autoprov Device CA".into(),
            key_type: "rsa2048".into(),
            ca_valid_days: 7300,
            valid_days: 825,
            auto_sign_for: Vec::new(),
        }
    }
}

/// `[firmware]`: the firmware catalogue for every vendor (innovaphone's `fw/` folder and
/// `[master]` are separate). See [`crate::firmware`].
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct FirmwareConfig {
    /// Catalogue directory, relative to the site: `catalog.toml` and
    /// `<vendor>/<model>/<version>/<file>`.
    pub dir: String,
    /// Firmware downloads served at once; further ones get 503 with `Retry-After`, so
    /// configuration requests never wait behind firmware.
    pub max_downloads: u32,
    /// Seconds sent in `Retry-After` when all download slots are busy.
    pub retry_after: u64,
    /// Downloads of one image without the device's reported version changing after which the
    /// device is flagged as probably looping.
    pub flag_after: u32,
    /// Target versions: `[[firmware.targets]]`.
    pub targets: Vec<FirmwareTargetRule>,
}

impl Default for FirmwareConfig {
    fn default() -> Self {
        FirmwareConfig {
            dir: "firmware".into(),
            max_downloads: 16,
            retry_after: 120,
            flag_after: 3,
            targets: Vec::new(),
        }
    }
}

/// `[[firmware.targets]]`: the version devices of a vendor's model should run; with `groups`,
/// only devices in one of those groups (a group rule beats the model-wide rule; between group
/// rules the first in the file wins).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct FirmwareTargetRule {
    pub vendor: String,
    pub model: String,
    pub version: String,
    #[serde(default)]
    pub groups: Vec<String>,
}

/// `[sip]`: the SIP plug-and-play responder (`serve`) and the check-sync/resync sender
/// (`autoprov notify`). autoprov's own section.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Sip {
    /// Start the plug-and-play responder with `serve`.
    pub enabled: bool,
    /// UDP address of the responder (port 0 = any free port, for tests).
    pub listen: String,
    /// Join the plug-and-play multicast group 224.0.1.75.
    pub multicast: bool,
    /// Interfaces to join the group on: IPv4 addresses or interface names (`eth0`).
    /// Empty = the interface the routing table picks.
    pub interfaces: Vec<String>,
    /// Per-brand URL templates for plug-and-play answers (`snom = "{base}/{mac}.xml"`), keyed
    /// by brand id; `{base}` is the provisioning root URL (`[provisioning] base_url`, else
    /// `http://<this host>:<first HTTP port>`) without its trailing `/`, anything else
    /// (`{mac}`, `$mac`) is left for the phone. Brands not listed get the built-in default.
    pub pnp_urls: std::collections::BTreeMap<String, String>,
    /// Plug-and-play SUBSCRIBEs handled per second; more are dropped (and counted).
    pub max_per_second: u32,
    /// NOTIFYs started per second by `autoprov notify` (a mass resync never becomes a boot storm).
    pub notify_rate: u32,
    /// SIP port of the phones when a NOTIFY target has none.
    pub notify_port: u16,
    /// Seconds to wait for a phone's final answer to a NOTIFY.
    pub notify_timeout: u64,
    /// User name for digest challenges (401/407) to NOTIFYs; empty = challenges are not answered.
    pub notify_user: String,
    /// Password for digest challenges.
    pub notify_password: String,
    /// File (relative to the site) holding the password instead; its first line is used.
    pub notify_password_file: String,
}

impl Default for Sip {
    fn default() -> Self {
        Sip {
            enabled: false,
            listen: "0.0.0.0:5060".into(),
            multicast: true,
            interfaces: Vec::new(),
            pnp_urls: Default::default(),
            max_per_second: 50,
            notify_rate: 10,
            notify_port: 5060,
            notify_timeout: 4,
            notify_user: String::new(),
            notify_password: String::new(),
            notify_password_file: String::new(),
        }
    }
}

/// `[mdns]`: DNS-SD announcement of the provisioning service on the LAN (`serve`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Mdns {
    pub enabled: bool,
    /// Instance name shown by browsers.
    pub instance: String,
    /// Service type of the provisioning service (HTTP port, TXT `url=`, `path=`).
    pub service_type: String,
    /// Also announce Digium's `_digiumproxy._udp` (on the SIP port) with
    /// `sipUrl=sip:proxy@<host>:<port>;transport=udp`.
    pub digium: bool,
    /// The Digium TXT `serviceType` (`asterisk` or `switchvox`).
    pub digium_service_type: String,
    /// Further services to announce.
    pub extra: Vec<MdnsService>,
}

impl Default for Mdns {
    fn default() -> Self {
        Mdns {
            enabled: false,
            instance: "autoprov".into(),
            service_type: "_autoprov._tcp".into(),
            digium: false,
            digium_service_type: "asterisk".into(),
            extra: Vec::new(),
        }
    }
}

/// One more DNS-SD service for `[mdns]`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct MdnsService {
    /// e.g. `_http._tcp`.
    pub service_type: String,
    pub port: u16,
    /// TXT entries `key=value`; `{url}` is replaced by the provisioning URL.
    #[serde(default)]
    pub txt: Vec<String>,
}

/// `[tftp]`: a read-only TFTP server answering each file name with what HTTP answers for
/// `/<file name>`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct Tftp {
    pub enabled: bool,
    /// UDP address (port 0 = any free port, for tests).
    pub listen: String,
    /// Transfers served at once; more requests are refused with a TFTP error.
    pub max_sessions: u32,
    /// Seconds before a block is sent again (a client's `timeout` option overrides it).
    pub timeout: u64,
    /// Times a block is sent again before the transfer is given up.
    pub retries: u32,
}

impl Default for Tftp {
    fn default() -> Self {
        Tftp {
            enabled: false,
            listen: "0.0.0.0:69".into(),
            max_sessions: 64,
            timeout: 2,
            retries: 5,
        }
    }
}

impl Default for SiteConfig {
    fn default() -> Self {
        SiteConfig {
            server: ServerConfig::default(),
            master: Master::default(),
            fwstorage: FwStorage::default(),
            backup: Backup::default(),
            status: Status::default(),
            times: Times::default(),
            phases: vec![Phase {
                id: "update".into(),
                seq: 200,
            }],
            environments: vec![Environment {
                id: "default".into(),
                implies: vec![],
            }],
            classes: crate::defaults::default_classes(),
            nobootdev: crate::defaults::NOBOOTDEV
                .iter()
                .map(|s| s.to_string())
                .collect(),
            nofirmdev: crate::defaults::NOFIRMDEV
                .iter()
                .map(|s| s.to_string())
                .collect(),
            filenames: vec![FileName {
                model: "mypbxa".into(),
                prot: Some("mypbx.apk".into()),
                boot: Some("alt-bootnomodel.bin".into()),
            }],
            stdargs: crate::defaults::default_stdargs(),
            customcerts: CustomCerts::default(),
            queries: Queries::default(),
            scripting: Scripting::default(),
            tls: Tls::default(),
            ca: Ca::default(),
            firmware: FirmwareConfig::default(),
            sip: Sip::default(),
            mdns: Mdns::default(),
            tftp: Tftp::default(),
            provisioning: Default::default(),
            settings: Default::default(),
            vendors: Default::default(),
            groups: Default::default(),
            devices: Default::default(),
            engine_index: Derived::default(),
        }
    }
}

impl SiteConfig {
    /// Parse TOML text. Errors carry the line and column (1-based) of the offending spot.
    pub fn from_toml_str(text: &str) -> Result<SiteConfig, ConfigError> {
        from_toml(text)
    }

    pub fn to_toml_string(&self) -> String {
        toml::to_string_pretty(self).expect("site configuration always serialises")
    }
}

/// A configuration problem at a place in the file (line/column 0 = whole file).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{line}:{column}: {message}")]
pub struct ConfigError {
    pub line: usize,
    pub column: usize,
    pub message: String,
}

/// Deserialise a TOML document; a syntax or type error carries its line and column.
pub fn from_toml<T: serde::de::DeserializeOwned>(text: &str) -> Result<T, ConfigError> {
    toml::from_str::<T>(text).map_err(|e| {
        let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
        ConfigError {
            line,
            column,
            message: e.message().to_string(),
        }
    })
}

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|p| offset - p).unwrap_or(offset + 1);
    (line, col)
}
