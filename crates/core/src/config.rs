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
}

/// autoprov's own settings (not part of the reference `config.xml`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Addresses to listen on when `serve` gets no `--listen`.
    pub listen: Vec<String>,
    /// SQLite database file, relative to the site directory.
    pub database: String,
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
        }
    }
}

impl SiteConfig {
    /// Parse TOML text. Errors carry the line and column (1-based) of the offending spot.
    pub fn from_toml_str(text: &str) -> Result<SiteConfig, ConfigError> {
        toml::from_str::<SiteConfig>(text).map_err(|e| {
            let (line, column) = e.span().map(|s| line_col(text, s.start)).unwrap_or((0, 0));
            ConfigError {
                line,
                column,
                message: e.message().to_string(),
            }
        })
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

/// 1-based line and column of a byte offset.
pub fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let offset = offset.min(text.len());
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|p| offset - p).unwrap_or(offset + 1);
    (line, col)
}
