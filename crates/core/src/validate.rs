//! Semantic validation of a site configuration with file/line/column diagnostics.
//!
//! [`validate_text`] first parses the TOML into a [`SiteConfig`] (syntax, type and unknown-key
//! errors come from there), then runs the checks the reference update server does on its
//! `config.xml` at start-up, plus autoprov's own. Every diagnostic points at the offending value;
//! when the value is not in the file (it came from the defaults) it points at the enclosing
//! table header, or at 1:1.

use std::collections::{HashMap, HashSet};
use std::ops::Range;
use std::path::Path;

use toml_edit::{ImDocument, Item, Table, Value};

use crate::config::{line_col, Applies, SiteConfig};
use crate::firmware::{valid_name, valid_sha256, FirmwareCatalog, Manifest};
use crate::site::safe_join;

/// Checks of `[sip]`, `[mdns]` and `[tftp]`.
mod discovery;
/// Checks of `[provisioning]`, `[settings]`, `[vendors]`, `[[groups]]`, `[devices]`.
mod settings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    pub file: String,
    pub line: usize,
    pub column: usize,
    pub message: String,
    pub warning: bool,
}

impl Diagnostic {
    pub fn is_error(&self) -> bool {
        !self.warning
    }
}

impl std::fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}:{}:{}: {}: {}",
            self.file,
            self.line,
            self.column,
            if self.warning { "warning" } else { "error" },
            self.message
        )
    }
}

/// A TOML syntax or type error as a diagnostic.
fn parse_error(file: &str, e: &crate::config::ConfigError) -> Diagnostic {
    Diagnostic {
        file: file.to_string(),
        line: e.line.max(1),
        column: e.column.max(1),
        message: e.message.trim_end().to_string(),
        warning: false,
    }
}

/// Parse and check a configuration text. Returns the configuration when it parsed, and all
/// diagnostics found (sorted by position). The configuration is usable only when none of the
/// diagnostics is an error.
pub fn validate_text(file: &str, text: &str) -> (Option<SiteConfig>, Vec<Diagnostic>) {
    let config = match SiteConfig::from_toml_str(text) {
        Ok(c) => c,
        Err(e) => return (None, vec![parse_error(file, &e)]),
    };
    let diags = run_validator(file, text, |v| v.check(&config));
    (Some(config), diags)
}

/// One step of a path into the TOML document: a key or an array index.
#[derive(Debug, Clone, Copy)]
enum Seg<'a> {
    K(&'a str),
    I(usize),
}
use Seg::{I, K};

/// A node of the parsed document, whichever of toml_edit's types holds it.
#[derive(Clone, Copy)]
enum Node<'a> {
    Item(&'a Item),
    Value(&'a Value),
    Table(&'a Table),
}

impl<'a> Node<'a> {
    fn span(self) -> Option<Range<usize>> {
        match self {
            Node::Item(i) => i.span(),
            Node::Value(v) => v.span(),
            Node::Table(t) => t.span(),
        }
    }

    fn child(self, seg: Seg<'_>) -> Option<Node<'a>> {
        match (self, seg) {
            (Node::Item(Item::Value(v)), s) => Node::Value(v).child(s),
            (Node::Item(Item::Table(t)), s) => Node::Table(t).child(s),
            (Node::Item(Item::ArrayOfTables(a)), I(i)) => a.get(i).map(Node::Table),
            (Node::Table(t), K(k)) => t.get(k).map(Node::Item),
            (Node::Value(Value::InlineTable(t)), K(k)) => t.get(k).map(Node::Value),
            (Node::Value(Value::Array(a)), I(i)) => a.get(i).map(Node::Value),
            _ => None,
        }
    }
}

struct Validator<'a> {
    file: &'a str,
    text: &'a str,
    /// The parsed document, for positions: parsed on the first diagnostic (a configuration
    /// without any is not parsed twice; with 100 000 `[devices]` the second parse took as
    /// long as the first). `None` inside when the text does not parse.
    doc: std::cell::OnceCell<Option<ImDocument<&'a str>>>,
    diags: Vec<Diagnostic>,
}

impl<'a> Validator<'a> {
    fn new(file: &'a str, text: &'a str) -> Validator<'a> {
        Validator {
            file,
            text,
            doc: std::cell::OnceCell::new(),
            diags: Vec::new(),
        }
    }

    fn doc(&self) -> Option<&ImDocument<&'a str>> {
        self.doc
            .get_or_init(|| ImDocument::parse(self.text).ok())
            .as_ref()
    }
}

impl Validator<'_> {
    /// Line and column of the deepest node of `path` that is present in the file.
    fn locate(&self, path: &[Seg<'_>]) -> (usize, usize) {
        let Some(doc) = self.doc() else {
            return (1, 1);
        };
        let mut node = Node::Item(doc.as_item());
        let mut best = None;
        for seg in path {
            match node.child(*seg) {
                Some(n) => {
                    node = n;
                    if let Some(span) = n.span() {
                        best = Some(span);
                    }
                }
                None => break,
            }
        }
        best.map(|s| line_col(self.text, s.start)).unwrap_or((1, 1))
    }

    /// Whether the value at `path` is written in the file.
    fn present(&self, path: &[Seg<'_>]) -> bool {
        let Some(doc) = self.doc() else {
            return false;
        };
        let mut node = Node::Item(doc.as_item());
        for seg in path {
            match node.child(*seg) {
                Some(n) => node = n,
                None => return false,
            }
        }
        true
    }

    fn push(&mut self, path: &[Seg<'_>], warning: bool, message: String) {
        let (line, column) = self.locate(path);
        self.diags.push(Diagnostic {
            file: self.file.to_string(),
            line,
            column,
            message,
            warning,
        });
    }

    fn error(&mut self, path: &[Seg<'_>], message: String) {
        self.push(path, false, message);
    }

    fn warn(&mut self, path: &[Seg<'_>], message: String) {
        self.push(path, true, message);
    }

    fn check(&mut self, c: &SiteConfig) {
        self.check_phases(c);
        self.check_environments(c);
        self.check_classes(c);
        self.check_master(c);
        self.check_times(c);
        self.check_queries(c);
        self.check_backup(c);
        self.check_server(c);
        self.check_scripting(c);
        self.check_customcerts(c);
        self.check_tls(c);
        self.check_ca(c);
        self.check_discovery(c);
        self.check_firmware(c);
        self.check_vendor_settings(c);
    }

    /// The naming rules the reference applies to phase, environment and class ids (they are
    /// parts of the script file names `<phase>-<class>-<env>.txt`).
    fn check_id(&mut self, kind: &str, list: &str, i: usize, id: &str) -> bool {
        let path = [K(list), I(i), K("id")];
        if id.is_empty() {
            self.error(&path, format!("{kind} id must not be empty"));
            return false;
        }
        if id == "all" {
            self.error(
                &path,
                format!(
                    "{kind} id 'all' is reserved (it stands for every {kind} in script names); \
                     choose another name"
                ),
            );
            return false;
        }
        if id.contains('-') {
            self.error(
                &path,
                format!(
                    "{kind} id '{id}' must not contain '-' (it separates phase, class and \
                     environment in script names); use '_' instead"
                ),
            );
            return false;
        }
        true
    }

    fn check_phases(&mut self, c: &SiteConfig) {
        if c.phases.is_empty() {
            self.error(
                &[K("phases")],
                "at least one phase is needed; add a [[phases]] entry (the reference default \
                 is id = \"update\", seq = 200)"
                    .into(),
            );
        }
        let mut ids: HashMap<&str, usize> = HashMap::new();
        let mut seqs: HashMap<i64, usize> = HashMap::new();
        for (i, p) in c.phases.iter().enumerate() {
            let id = p.id.as_str();
            let path = [K("phases"), I(i), K("id")];
            let reserved = id == "_" || id.starts_with("_first_");
            if self.check_id("phase", "phases", i, id) && reserved {
                self.error(
                    &path,
                    format!(
                        "phase id '{id}' is reserved for the staging phase `_first_<last>`; \
                         choose another name"
                    ),
                );
            }
            if let Some(&first) = ids.get(id) {
                let (l, _) = self.locate(&[K("phases"), I(first), K("id")]);
                self.error(
                    &path,
                    format!("duplicate phase id '{id}' (first defined on line {l}); rename or remove one"),
                );
            } else {
                ids.insert(id, i);
            }
            if let Some(&first) = seqs.get(&p.seq) {
                let other = &c.phases[first].id;
                self.error(
                    &[K("phases"), I(i), K("seq")],
                    format!(
                        "seq {} is already used by phase '{other}'; phases are ordered by seq and \
                         the reference would silently drop one of them, so give each phase its \
                         own seq",
                        p.seq
                    ),
                );
            } else {
                seqs.insert(p.seq, i);
            }
        }
    }

    fn check_environments(&mut self, c: &SiteConfig) {
        if c.environments.is_empty() {
            self.error(
                &[K("environments")],
                "at least one environment is needed; add an [[environments]] entry (the \
                 reference default is id = \"default\")"
                    .into(),
            );
        }
        let defined: HashSet<&str> = c.environments.iter().map(|e| e.id.as_str()).collect();
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, e) in c.environments.iter().enumerate() {
            let id = e.id.as_str();
            self.check_id("environment", "environments", i, id);
            if let Some(&first) = ids.get(id) {
                let (l, _) = self.locate(&[K("environments"), I(first), K("id")]);
                self.error(
                    &[K("environments"), I(i), K("id")],
                    format!(
                        "duplicate environment id '{id}' (first defined on line {l}); rename or \
                         remove one"
                    ),
                );
            } else {
                ids.insert(id, i);
            }
            for (j, imp) in e.implies.iter().enumerate() {
                if !defined.contains(imp.trim()) {
                    self.error(
                        &[K("environments"), I(i), K("implies"), I(j)],
                        format!(
                            "environment '{id}' implies '{imp}', which is not a defined \
                             environment; define it or remove the entry"
                        ),
                    );
                }
            }
        }
    }

    fn check_classes(&mut self, c: &SiteConfig) {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, cl) in c.classes.iter().enumerate() {
            let id = cl.id.as_str();
            self.check_id("class", "classes", i, id);
            if let Some(&first) = ids.get(id) {
                let (l, _) = self.locate(&[K("classes"), I(first), K("id")]);
                self.error(
                    &[K("classes"), I(i), K("id")],
                    format!("duplicate class id '{id}' (first defined on line {l}); rename or remove one"),
                );
            } else {
                ids.insert(id, i);
            }
        }
    }

    fn check_master(&mut self, c: &SiteConfig) {
        let m = &c.master;
        let info = m.info.as_str();
        if !(info.is_empty() || info == "none" || is_http_url(info)) {
            self.error(
                &[K("master"), K("info")],
                format!(
                    "master.info '{info}' must be empty (no firmware updates), \"none\" (do not \
                     ask the master device) or the http(s) URL of the master's box_info.xml"
                ),
            );
        }
        if !(m.firmware == "master" || m.firmware == "none" || is_number(&m.firmware)) {
            self.error(
                &[K("master"), K("firmware")],
                format!(
                    "master.firmware '{}' must be \"master\", \"none\" or a build number such as \
                     \"137640\"",
                    m.firmware
                ),
            );
        }
        if !(m.bootcode == "master"
            || m.bootcode == "firmware"
            || m.bootcode == "none"
            || is_number(&m.bootcode))
        {
            self.error(
                &[K("master"), K("bootcode")],
                format!(
                    "master.bootcode '{}' must be \"master\", \"firmware\", \"none\" or a build \
                     number such as \"137640\"",
                    m.bootcode
                ),
            );
        }
        if m.cache.is_empty() {
            if is_http_url(info) {
                self.error(
                    &[K("master"), K("cache")],
                    "master.cache must name the file the master's box_info.xml is cached in, \
                     e.g. \"cache/master-info.xml\""
                        .into(),
                );
            }
        } else {
            self.check_path(&m.cache, &[K("master"), K("cache")], "master.cache");
        }
        self.check_applies(
            c,
            &m.applies,
            &[K("master"), K("applies")],
            "master.applies",
        );
    }

    /// `applies` conditions: environments must exist; unknown class names only warn, since a
    /// device type is a class too.
    fn check_applies(&mut self, c: &SiteConfig, applies: &[Applies], base: &[Seg<'_>], what: &str) {
        for (j, a) in applies.iter().enumerate() {
            let value = a.value.trim();
            let mut path = base.to_vec();
            path.push(I(j));
            path.push(K("value"));
            if value.is_empty() {
                self.warn(
                    &path,
                    format!("{what}: an empty condition never matches; use \"*\" for every device"),
                );
                continue;
            }
            if value == "*" {
                continue;
            }
            if a.env {
                if !c.environments.iter().any(|e| e.id == value) {
                    self.warn(
                        &path,
                        format!(
                            "{what}: '{value}' is marked env = true but is not a defined \
                             environment, so it never matches"
                        ),
                    );
                }
            } else if !is_known_class(c, value) {
                self.warn(
                    &path,
                    format!(
                        "{what}: '{value}' is neither a defined class nor a known device model; \
                         it only matches devices of type '{value}' (set env = true for an \
                         environment)"
                    ),
                );
            }
        }
    }

    fn check_times(&mut self, c: &SiteConfig) {
        let t = &c.times;
        if t.dir.is_empty() {
            self.error(
                &[K("times"), K("dir")],
                "times.dir must name the snippet directory, e.g. \"scripts\"".into(),
            );
        } else {
            self.check_path(&t.dir, &[K("times"), K("dir")], "times.dir");
        }
        if !t.allow.is_empty() {
            let ok = t
                .allow
                .split(',')
                .all(|h| is_number(h) && h.parse::<u32>().is_ok_and(|h| h <= 23));
            if !ok {
                self.error(
                    &[K("times"), K("allow")],
                    format!(
                        "times.allow '{}' must be a comma separated list of hours 0..23 without \
                         spaces, e.g. \"22,23,0\" (or empty for no restriction)",
                        t.allow
                    ),
                );
            }
        }
        if !(t.initial.is_empty() || is_number(&t.initial)) {
            self.error(
                &[K("times"), K("initial")],
                format!(
                    "times.initial '{}' must be empty or a number of minutes",
                    t.initial
                ),
            );
        }
        if !(t.polling.is_empty() || is_number(&t.polling)) {
            self.error(
                &[K("times"), K("polling")],
                format!(
                    "times.polling '{}' must be empty or a non-negative integer (the fast poll \
                     value sent with `provision`)",
                    t.polling
                ),
            );
        }
        if let Err(msg) = check_urlmod(&t.httpsurlmod) {
            self.error(&[K("times"), K("httpsurlmod")], msg);
        }
        if t.httpsport == Some(0) {
            self.error(
                &[K("times"), K("httpsport")],
                "times.httpsport must be a port number 1..65535 (leave it out for 443)".into(),
            );
        }
        if t.forcetrust && !t.forcehttps {
            self.warn(
                &[K("times"), K("forcetrust")],
                "times.forcetrust has no effect without times.forcehttps = true (the trust check \
                 only runs on forced HTTPS)"
                    .into(),
            );
        }
    }

    fn check_queries(&mut self, c: &SiteConfig) {
        let mut ids: HashMap<&str, usize> = HashMap::new();
        for (i, q) in c.queries.query.iter().enumerate() {
            let base = [K("queries"), K("query"), I(i)];
            let id = q.id.as_str();
            if id.trim().is_empty() {
                self.error(
                    &[K("queries"), K("query"), I(i), K("id")],
                    "every query needs a non-empty id (it names the query result)".into(),
                );
            } else if let Some(&first) = ids.get(id) {
                let (l, _) = self.locate(&[K("queries"), K("query"), I(first), K("id")]);
                self.error(
                    &[K("queries"), K("query"), I(i), K("id")],
                    format!("duplicate query id '{id}' (first defined on line {l}); rename or remove one"),
                );
            } else {
                ids.insert(id, i);
            }
            if q.cmd.trim().is_empty() {
                let path = if self.present(&[K("queries"), K("query"), I(i), K("cmd")]) {
                    vec![K("queries"), K("query"), I(i), K("cmd")]
                } else {
                    base.to_vec()
                };
                self.error(
                    &path,
                    format!("query '{id}' needs a non-empty cmd, e.g. \"mod cmd CMD0 xml-info\""),
                );
            }
            for (j, sh) in q.show.iter().enumerate() {
                let at = |k| [K("queries"), K("query"), I(i), K("show"), I(j), K(k)];
                if sh.title.trim().is_empty() {
                    self.warn(
                        &at("title"),
                        format!("query '{id}' show #{}: the title is empty (it heads the column in the device list)", j + 1),
                    );
                }
                if let Err(e) = crate::show::check_expression(&sh.xpath) {
                    self.error(
                        &at("xpath"),
                        format!(
                            "query '{id}' show '{}': xpath does not compile as XPath 1.0 ({e}), e.g. \"/state/queries/{id}/info/@name\"",
                            sh.title
                        ),
                    );
                }
            }
            let what = format!("query '{id}' applies");
            self.check_applies(
                c,
                &q.applies,
                &[K("queries"), K("query"), I(i), K("applies")],
                &what,
            );
        }
    }

    fn check_backup(&mut self, c: &SiteConfig) {
        let b = &c.backup;
        if b.dir.is_empty() {
            return;
        }
        self.check_path(&b.dir, &[K("backup"), K("dir")], "backup.dir");
        if b.nbackups < 1 {
            let path = if self.present(&[K("backup"), K("nbackups")]) {
                [K("backup"), K("nbackups")]
            } else {
                [K("backup"), K("dir")]
            };
            self.error(
                &path,
                "backup.nbackups must be at least 1 when backup.dir is set (or leave backup.dir \
                 empty to turn backups off)"
                    .into(),
            );
        }
    }

    fn check_server(&mut self, c: &SiteConfig) {
        for (i, l) in c.server.listen.iter().enumerate() {
            if l.parse::<std::net::SocketAddr>().is_err() {
                self.error(
                    &[K("server"), K("listen"), I(i)],
                    format!(
                        "server.listen '{l}' is not an address:port, e.g. \"0.0.0.0:8080\" or \
                         \"[::]:8080\""
                    ),
                );
            }
        }
        if c.server.database.is_empty() {
            self.error(
                &[K("server"), K("database")],
                "server.database must name the database file, e.g. \"autoprov.db\", or a \
                 postgres:// URL"
                    .into(),
            );
        } else if !c.server.database.starts_with("postgres://")
            && !c.server.database.starts_with("postgresql://")
        {
            self.check_path(
                &c.server.database,
                &[K("server"), K("database")],
                "server.database",
            );
        }
    }

    fn check_scripting(&mut self, c: &SiteConfig) {
        let s = &c.scripting;
        for (key, value) in [
            ("pre_template", &s.pre_template),
            ("post_template", &s.post_template),
            ("standard_template", &s.standard_template),
        ] {
            if !value.is_empty() {
                self.check_path(
                    value,
                    &[K("scripting"), K(key)],
                    &format!("scripting.{key}"),
                );
            }
        }
        if !s.hook_command.is_empty() && !s.hook_url.is_empty() {
            self.error(
                &[K("scripting"), K("hook_url")],
                "scripting.hook_command and scripting.hook_url are both set; use only one of them"
                    .into(),
            );
        }
        if s.hook_command.first().is_some_and(|p| p.is_empty()) {
            self.error(
                &[K("scripting"), K("hook_command"), I(0)],
                "scripting.hook_command must start with the program to run".into(),
            );
        }
        if !s.hook_url.is_empty() && !is_http_url(&s.hook_url) {
            self.error(
                &[K("scripting"), K("hook_url")],
                format!("scripting.hook_url '{}' must be an http(s) URL", s.hook_url),
            );
        }
    }

    fn check_customcerts(&mut self, c: &SiteConfig) {
        let cc = &c.customcerts;
        if cc.dir.is_empty() {
            return;
        }
        self.check_path(&cc.dir, &[K("customcerts"), K("dir")], "customcerts.dir");
        if cc.caname.trim().is_empty() {
            self.error(
                &[K("customcerts"), K("caname")],
                "customcerts.caname must list the accepted CA names when customcerts.dir is set"
                    .into(),
            );
        }
        if cc.catype != "manual" {
            self.error(
                &[K("customcerts"), K("catype")],
                format!(
                    "customcerts.catype '{}' is not supported; only \"manual\" is (as in the \
                     reference)",
                    cc.catype
                ),
            );
        }
    }

    fn check_tls(&mut self, c: &SiteConfig) {
        let t = &c.tls;
        for (key, list) in [
            ("https_listen", &t.https_listen),
            ("mtls_listen", &t.mtls_listen),
        ] {
            for (i, l) in list.iter().enumerate() {
                if l.parse::<std::net::SocketAddr>().is_err() {
                    self.error(
                        &[K("tls"), K(key), I(i)],
                        format!(
                            "tls.{key} '{l}' is not an address:port, e.g. \"0.0.0.0:8443\" or \
                             \"[::]:444\""
                        ),
                    );
                }
            }
        }
        for (key, value) in [("cert", &t.cert), ("key", &t.key)] {
            if value.is_empty() {
                self.error(
                    &[K("tls"), K(key)],
                    format!(
                        "tls.{key} must name a file inside the site, e.g. \"tls/server.{}\"",
                        if key == "cert" { "crt" } else { "key" }
                    ),
                );
            } else {
                self.check_path(value, &[K("tls"), K(key)], &format!("tls.{key}"));
            }
        }
        if !t.cert.is_empty() && t.cert == t.key {
            self.error(
                &[K("tls"), K("key")],
                "tls.key must be a different file than tls.cert".into(),
            );
        }
        if !t.client_ca.is_empty() {
            self.check_path(&t.client_ca, &[K("tls"), K("client_ca")], "tls.client_ca");
        }
        for (i, p) in t.trusted_proxies.iter().enumerate() {
            if let Err(why) = crate::config::parse_cidr(p) {
                self.error(
                    &[K("tls"), K("trusted_proxies"), I(i)],
                    format!(
                        "tls.trusted_proxies '{p}': {why}; give an address (\"192.0.2.1\") or a \
                         block (\"10.0.0.0/8\")"
                    ),
                );
            }
        }
        if t.handshake_timeout == 0 {
            self.error(
                &[K("tls"), K("handshake_timeout")],
                "tls.handshake_timeout must be at least 1 second".into(),
            );
        }
        let httpsport = c.times.httpsport.unwrap_or(443);
        let tls_ports: Vec<u16> = t
            .https_listen
            .iter()
            .chain(t.mtls_listen.iter())
            .filter_map(|l| l.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.port())
            .collect();
        if c.times.forcehttps && !tls_ports.is_empty() && !tls_ports.contains(&httpsport) {
            self.warn(
                &[K("times"), K("httpsport")],
                format!(
                    "times.forcehttps sends devices to port {httpsport}, but no [tls] listener \
                     uses that port (unless a proxy or `serve --https/--mtls` provides it, \
                     devices cannot follow)"
                ),
            );
        }
        let mtls_ports: Vec<u16> = t
            .mtls_listen
            .iter()
            .filter_map(|l| l.parse::<std::net::SocketAddr>().ok())
            .map(|a| a.port())
            .collect();
        if c.times.forcehttps
            && c.times.forcetrust
            && tls_ports.contains(&httpsport)
            && !mtls_ports.contains(&httpsport)
        {
            self.warn(
                &[K("times"), K("forcetrust")],
                format!(
                    "times.forcetrust needs client certificates, but port {httpsport} \
                     (times.httpsport) is not one of tls.mtls_listen; devices will be told that \
                     no certificate was presented"
                ),
            );
        }
    }

    fn check_ca(&mut self, c: &SiteConfig) {
        let ca = &c.ca;
        for (key, value) in [("cert", &ca.cert), ("key", &ca.key)] {
            if value.is_empty() {
                self.error(
                    &[K("ca"), K(key)],
                    format!("ca.{key} must name a file inside the site"),
                );
            } else {
                self.check_path(value, &[K("ca"), K(key)], &format!("ca.{key}"));
            }
        }
        if !c.customcerts.dir.is_empty() && !ca.key.is_empty() {
            let in_certs = safe_join(Path::new("."), &ca.key)
                .zip(safe_join(Path::new("."), &c.customcerts.dir))
                .is_some_and(|(k, d)| k.starts_with(&d));
            if in_certs {
                self.error(
                    &[K("ca"), K("key")],
                    format!(
                        "ca.key '{}' is inside the certificate folder customcerts.dir '{}', whose \
                         files can be sent to devices; keep the CA key elsewhere (default \
                         \"ca/autoprov-ca.key\")",
                        ca.key, c.customcerts.dir
                    ),
                );
            }
        }
        if ca.cn.trim().is_empty() {
            self.error(
                &[K("ca"), K("cn")],
                "ca.cn must name the CA, e.g. \"autoprov Device CA\"".into(),
            );
        }
        if !matches!(ca.key_type.as_str(), "rsa2048" | "ecdsa-p256") {
            self.error(
                &[K("ca"), K("key_type")],
                format!(
                    "ca.key_type '{}' is not supported; use \"rsa2048\" or \"ecdsa-p256\"",
                    ca.key_type
                ),
            );
        }
        for (key, value) in [
            ("ca_valid_days", ca.ca_valid_days),
            ("valid_days", ca.valid_days),
        ] {
            if value == 0 {
                self.error(
                    &[K("ca"), K(key)],
                    format!("ca.{key} must be at least 1 (days)"),
                );
            }
        }
        if ca.valid_days > ca.ca_valid_days && ca.ca_valid_days > 0 {
            self.warn(
                &[K("ca"), K("valid_days")],
                format!(
                    "ca.valid_days ({}) is longer than the CA's own validity ca.ca_valid_days \
                     ({}); device certificates are cut to the CA's end",
                    ca.valid_days, ca.ca_valid_days
                ),
            );
        }
    }

    /// Site paths must stay inside the site directory.
    fn check_path(&mut self, value: &str, path: &[Seg<'_>], what: &str) {
        if safe_join(Path::new("."), value).is_none() {
            self.error(
                path,
                format!(
                    "{what} '{value}' must be a relative path inside the site directory (no \
                     leading '/', no '..', no '\\')"
                ),
            );
        }
    }
}

/// Check a firmware manifest (`<firmware.dir>/catalog.toml`). Returns it when it parsed, with
/// all diagnostics (sorted); it is usable only when none is an error.
pub fn validate_manifest(file: &str, text: &str) -> (Option<Manifest>, Vec<Diagnostic>) {
    let manifest = match Manifest::from_toml_str(text) {
        Ok(m) => m,
        Err(e) => return (None, vec![parse_error(file, &e)]),
    };
    let diags = run_validator(file, text, |v| v.check_manifest(&manifest));
    (Some(manifest), diags)
}

/// Warnings (in `autoprov.toml`, given as `file`/`text`) for firmware targets whose version is
/// not in the catalogue: devices of that model get no firmware until it is added.
pub fn check_firmware_images(
    file: &str,
    text: &str,
    config: &SiteConfig,
    catalog: &FirmwareCatalog,
) -> Vec<Diagnostic> {
    run_validator(file, text, |v| {
        for (i, r) in config.firmware.targets.iter().enumerate() {
            if catalog.image(&r.vendor, &r.model, &r.version).is_none() {
                v.warn(
                    &[K("firmware"), K("targets"), I(i), K("version")],
                    format!(
                        "firmware target {} {} version {} is not in the catalogue ({}/{}); \
                         devices get no firmware from this rule until you run `autoprov \
                         firmware add --vendor {} --model {} --version {} FILE`",
                        r.vendor,
                        r.model,
                        r.version,
                        config.firmware.dir,
                        crate::firmware::MANIFEST_FILE,
                        r.vendor,
                        r.model,
                        r.version
                    ),
                );
            }
        }
    })
}

/// Run checks over a parsed document and return their diagnostics sorted by position.
fn run_validator(file: &str, text: &str, f: impl FnOnce(&mut Validator<'_>)) -> Vec<Diagnostic> {
    let mut v = Validator::new(file, text);
    f(&mut v);
    let mut diags = v.diags;
    diags.sort_by_key(|d| (d.line, d.column));
    diags
}

const NAME_RULE: &str = "1 to 128 of the characters A-Z a-z 0-9 . _ - + ~ ( ) , = and not \
                         starting with '.' (it becomes part of a URL and a directory name)";

impl Validator<'_> {
    fn check_firmware(&mut self, c: &SiteConfig) {
        let f = &c.firmware;
        let dir = [K("firmware"), K("dir")];
        if f.dir.is_empty() {
            self.error(
                &dir,
                "firmware.dir must name the catalogue directory, e.g. \"firmware\"".into(),
            );
        } else if f.dir.trim_start_matches("./").split('/').next() == Some("fw") {
            self.error(
                &dir,
                format!(
                    "firmware.dir '{}' is inside innovaphone's fw/ folder, which is served as \
                     it is; use another directory, e.g. \"firmware\"",
                    f.dir
                ),
            );
        } else {
            self.check_path(&f.dir, &dir, "firmware.dir");
        }
        if f.max_downloads == 0 {
            self.error(
                &[K("firmware"), K("max_downloads")],
                "firmware.max_downloads must be at least 1".into(),
            );
        }
        if f.retry_after == 0 {
            self.error(
                &[K("firmware"), K("retry_after")],
                "firmware.retry_after must be at least 1 (seconds), or waiting phones retry at \
                 once"
                    .into(),
            );
        }
        if f.flag_after < 2 {
            self.error(
                &[K("firmware"), K("flag_after")],
                format!(
                    "firmware.flag_after must be at least 2 (one download is a normal update), \
                     not {}",
                    f.flag_after
                ),
            );
        }
        // (vendor, model, group) -> first rule; group None = the model-wide rule.
        let mut seen: HashMap<(String, String, Option<&str>), usize> = HashMap::new();
        for (i, r) in f.targets.iter().enumerate() {
            let base = [K("firmware"), K("targets"), I(i)];
            for (key, value) in [
                ("vendor", &r.vendor),
                ("model", &r.model),
                ("version", &r.version),
            ] {
                if !valid_name(value) {
                    self.error(
                        &[base[0], base[1], base[2], K(key)],
                        format!("firmware target {key} '{value}' must be {NAME_RULE}"),
                    );
                }
            }
            let groups: Vec<Option<&str>> = if r.groups.is_empty() {
                vec![None]
            } else {
                r.groups.iter().map(|g| Some(g.as_str())).collect()
            };
            for (j, group) in groups.into_iter().enumerate() {
                let at = [base[0], base[1], base[2], K("groups"), I(j)];
                if group.is_some_and(|g| g.trim().is_empty()) {
                    self.error(&at, "firmware target group must not be empty".into());
                    continue;
                }
                let key = (
                    r.vendor.to_ascii_lowercase(),
                    r.model.to_ascii_lowercase(),
                    group,
                );
                if let Some(&first) = seen.get(&key) {
                    let (line, _) = self.locate(&[base[0], base[1], I(first)]);
                    let what = match group {
                        Some(g) => format!("group '{g}'"),
                        None => "all devices (no groups)".to_string(),
                    };
                    let at: &[Seg<'_>] = if r.groups.is_empty() { &base } else { &at };
                    self.error(
                        at,
                        format!(
                            "a firmware target for {} {} and {what} is already set at line \
                             {line}; keep one of them",
                            r.vendor, r.model
                        ),
                    );
                } else {
                    seen.insert(key, i);
                }
            }
        }
    }

    fn check_manifest(&mut self, m: &Manifest) {
        let mut versions: HashMap<(String, String, &str), usize> = HashMap::new();
        let mut contents: HashMap<&str, usize> = HashMap::new();
        for (i, img) in m.images.iter().enumerate() {
            let at = |key| [K("image"), I(i), K(key)];
            for (key, value) in [
                ("vendor", &img.vendor),
                ("model", &img.model),
                ("version", &img.version),
                ("file", &img.file),
            ] {
                if !valid_name(value) {
                    self.error(
                        &at(key),
                        format!("image {key} '{value}' must be {NAME_RULE}"),
                    );
                }
            }
            if !valid_sha256(&img.sha256) {
                self.error(
                    &at("sha256"),
                    format!(
                        "image sha256 '{}' must be 64 lower-case hex digits",
                        img.sha256
                    ),
                );
            }
            let key = (
                img.vendor.to_ascii_lowercase(),
                img.model.to_ascii_lowercase(),
                img.version.as_str(),
            );
            if let Some(&first) = versions.get(&key) {
                let (line, _) = self.locate(&[K("image"), I(first)]);
                self.error(
                    &at("version"),
                    format!(
                        "{} {} version {} is listed twice (first at line {line}); a version \
                         names one file",
                        img.vendor, img.model, img.version
                    ),
                );
            } else {
                versions.insert(key, i);
            }
            match contents.get(img.sha256.as_str()) {
                Some(&first) if m.images[first].size != img.size => {
                    let (line, _) = self.locate(&[K("image"), I(first)]);
                    self.error(
                        &at("size"),
                        format!(
                            "image has the sha256 of the entry at line {line} but another size; \
                             one of them is wrong"
                        ),
                    );
                }
                Some(_) => {}
                None => {
                    contents.insert(&img.sha256, i);
                }
            }
        }
    }
}

fn is_number(s: &str) -> bool {
    !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit())
}

fn is_http_url(s: &str) -> bool {
    let lower = s.to_ascii_lowercase();
    ["http://", "https://"]
        .iter()
        .any(|p| lower.starts_with(p) && lower.len() > p.len())
}

/// A class name, or a model listed anywhere in the configuration (device types are classes).
fn is_known_class(c: &SiteConfig, name: &str) -> bool {
    let lower = name.to_lowercase();
    c.classes
        .iter()
        .any(|cl| cl.id == name || cl.models.iter().any(|m| m.to_lowercase() == lower))
        || c.nobootdev
            .iter()
            .chain(c.nofirmdev.iter())
            .chain(c.filenames.iter().map(|f| &f.model))
            .any(|m| m.to_lowercase() == lower)
}

/// Check an `httpsurlmod` expression `<d>pattern<d>replacement<d>flags`.
fn check_urlmod(expr: &str) -> Result<(), String> {
    let Some(delim) = expr.chars().next() else {
        return Ok(());
    };
    let form = "must be empty or of the form <d>pattern<d>replacement<d>flags, e.g. \"!mtls/!!i\"";
    if delim.is_alphanumeric() || delim.is_whitespace() || delim == '\\' {
        return Err(format!(
            "times.httpsurlmod '{expr}' {form}; the delimiter '{delim}' must not be a letter, \
             digit, blank or backslash"
        ));
    }
    let parts: Vec<&str> = expr.split(delim).collect();
    if parts.len() != 4 {
        return Err(format!(
            "times.httpsurlmod '{expr}' {form} (found {} delimiters '{delim}', need 3; a \
             delimiter inside the pattern must be avoided by choosing another one)",
            parts.len() - 1
        ));
    }
    let (pattern, flags) = (parts[1], parts[3]);
    if let Some(bad) = flags.chars().find(|&f| f != 'i') {
        return Err(format!(
            "times.httpsurlmod '{expr}': flag '{bad}' is not supported; only 'i' (ignore case) is"
        ));
    }
    let full = if flags.contains('i') {
        format!("(?i){pattern}")
    } else {
        pattern.to_string()
    };
    regex::Regex::new(&full).map(|_| ()).map_err(|e| {
        let detail = e.to_string();
        let last = detail.lines().last().unwrap_or("").trim().to_string();
        format!("times.httpsurlmod pattern '{pattern}' does not compile: {last}")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn diags(text: &str) -> Vec<Diagnostic> {
        let (cfg, d) = validate_text("autoprov.toml", text);
        assert!(cfg.is_some(), "did not parse: {d:?}");
        d
    }

    fn pos(d: &Diagnostic) -> (usize, usize, bool) {
        (d.line, d.column, d.warning)
    }

    #[test]
    fn defaults_are_valid() {
        assert_eq!(diags(""), vec![]);
        let text = SiteConfig::default().to_toml_string();
        assert_eq!(diags(&text), vec![]);
    }

    #[test]
    fn syntax_errors_keep_position() {
        let (cfg, d) = validate_text("site/autoprov.toml", "[times]\ngrace = \"x\"\n");
        assert!(cfg.is_none());
        assert_eq!(d.len(), 1);
        assert_eq!((d[0].line, d[0].column), (2, 9));
        assert!(d[0]
            .to_string()
            .starts_with("site/autoprov.toml:2:9: error: "));
    }

    #[test]
    fn phase_rules() {
        let text = "\
[[phases]]
id = \"all\"
seq = 100

[[phases]]
id = \"a-b\"
seq = 100

[[phases]]
id =  \"update\"
seq = 200

[[phases]]
id = \"update\"
seq = 300
";
        let d = diags(text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(
            got,
            vec![(2, 6, false), (6, 6, false), (7, 7, false), (14, 6, false)],
            "{d:#?}"
        );
        assert!(d[0].message.contains("'all' is reserved"));
        assert!(d[1].message.contains("must not contain '-'"));
        assert!(d[2]
            .message
            .contains("seq 100 is already used by phase 'all'"));
        assert!(d[3].message.contains("first defined on line 10"));
    }

    #[test]
    fn empty_lists_and_implies() {
        let text =
            "phases = []\n\n[[environments]]\nid = \"hq\"\nimplies = [\"default\", \"hq\"]\n";
        let d = diags(text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(got, vec![(1, 10, false), (5, 12, false)], "{d:#?}");
        assert!(d[0].message.contains("at least one phase"));
        assert!(d[1].message.contains("implies 'default'"));
    }

    #[test]
    fn inline_tables_environments_and_classes() {
        let text = "\
phases = [{ id = \"_first_update\", seq = 1 }, { id = \"update\", seq = 2 }]
environments = [{ id = \"default\" }, { id = \"all\" }, { id = \"default\" }]
classes = [{ id = \"phone-x\", models = [\"ip232\"] }]
";
        let d = diags(text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(
            got,
            vec![
                (1, 18, false),
                (2, 44, false),
                (2, 60, false),
                (3, 19, false)
            ],
            "{d:#?}"
        );
        assert!(d[0].message.contains("reserved for the staging phase"));
        assert!(d[1].message.contains("'all' is reserved"));
        assert!(d[2]
            .message
            .contains("duplicate environment id 'default' (first defined on line 2)"));
        assert!(d[3].message.contains("class id 'phone-x'"));
    }

    #[test]
    fn master_and_times_values() {
        let text = "\
[master]
info = \"ftp://x/box_info.xml\"
firmware = \"latest\"
bootcode = \"firmware\"

[times]
allow = \"22,24\"
initial = \"soon\"
polling = \"-1\"
httpsurlmod = \"!mtls(!!i\"
forcetrust = true
";
        let d = diags(text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(
            got,
            vec![
                (2, 8, false),
                (3, 12, false),
                (7, 9, false),
                (8, 11, false),
                (9, 11, false),
                (10, 15, false),
                (11, 14, true),
            ],
            "{d:#?}"
        );
        assert!(d[5].message.contains("does not compile"));
        assert!(d[6].message.contains("forcehttps"));
    }

    #[test]
    fn urlmod_forms() {
        assert!(check_urlmod("").is_ok());
        assert!(check_urlmod("!mtls/!!i").is_ok());
        assert!(check_urlmod("#/mtls/#/#").is_ok());
        assert!(check_urlmod("!mtls!!x").unwrap_err().contains("flag 'x'"));
        assert!(check_urlmod("!a!b").is_err());
        assert!(check_urlmod("/a/b/c/d").is_err());
        assert!(check_urlmod("sa/b/").is_err());
    }

    #[test]
    fn queries_and_applies() {
        let text = "\
[[queries.query]]
id = \"x\"
cmd = \"mod cmd X509 xml-info\"
applies = [{ value = \"*\" }, { value = \"lab\", env = true }, { value = \"ip232\" }, { value = \"nosuch\" }]

[[queries.query]]
id = \"x\"
cmd = \"  \"
";
        let d = diags(text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(
            got,
            vec![(4, 39, true), (4, 91, true), (7, 6, false), (8, 7, false)],
            "{d:#?}"
        );
        assert!(d[0].message.contains("'lab'"));
        assert!(d[1].message.contains("'nosuch'"));
    }

    #[test]
    fn show_expressions_must_compile() {
        let text = "\
[[queries.query]]
id = \"media\"
cmd = \"mod cmd MEDIA xml-info\"
show = [{ title = \"NAT\", xpath = \"concat(/state/queries/media/info/nat/@result, ' (', /state/queries/media/info/nat/@public-addr, ')')\" }]

[[queries.query]]
id = \"registration\"
cmd = \"mod cmd PHONE/USER phone-regs /cmd phone-regs\"
[[queries.query.show]]
title = \"PBX/ID\"
xpath = \"concat(/state/queries/registration/info/reg[@id = \\\"0\\\"]/@gk-addr, '/'\"
[[queries.query.show]]
title = \"\"
xpath = \"/state/queries/registration/info/reg/@state\"
";
        let d = diags(text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(got, vec![(11, 9, false), (13, 9, true)], "{d:#?}");
        assert!(
            d[0].message.contains("query 'registration' show 'PBX/ID'"),
            "{}",
            d[0]
        );
        assert!(d[1].message.contains("title is empty"), "{}", d[1]);
    }

    #[test]
    fn backup_server_scripting_certs_and_paths() {
        let text = "\
[server]
listen = [\"0.0.0.0:8080\", \"localhost\"]
database = \"/var/lib/autoprov.db\"

[backup]
dir = \"../backups\"
nbackups = 0

[scripting]
hook_command = [\"/usr/local/bin/hook\"]
hook_url = \"http://hook/\"

[customcerts]
dir = \"certs\"
caname = \"\"
catype = \"openssl\"
";
        let d = diags(text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(
            got,
            vec![
                (2, 27, false),
                (3, 12, false),
                (6, 7, false),
                (7, 12, false),
                (11, 12, false),
                (15, 10, false),
                (16, 10, false),
            ],
            "{d:#?}"
        );
    }

    #[test]
    fn customcerts_need_caname_and_manual_type() {
        let text = "\n\n[customcerts]\ndir = \"certs\"\ncatype = \"x\"\n";
        let d = diags(text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(got, vec![(5, 10, false)], "{d:#?}");
        assert!(d[0].message.contains("only \"manual\""));
        let text = "[customcerts]\ndir = \"certs\"\ncaname = \"\"\n";
        let d = diags(text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(got, vec![(3, 10, false)], "{d:#?}");
    }

    #[test]
    fn tls_and_ca_values() {
        let text = "\
[times]
forcehttps = true
forcetrust = true
httpsport = 444

[tls]
https_listen = [\"0.0.0.0:8443\", \"nonsense\"]
mtls_listen = [\"0.0.0.0:4444\"]
cert = \"/etc/ssl/x.crt\"
trusted_proxies = [\"10.0.0.0/8\", \"10.0.0.0/33\", \"proxy\"]
handshake_timeout = 0

[customcerts]
dir = \"certs\"

[ca]
key = \"certs/ca.key\"
key_type = \"dsa\"
valid_days = 0
";
        let d = diags(text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(
            got,
            vec![
                (4, 13, true),
                (7, 33, false),
                (9, 8, false),
                (10, 34, false),
                (10, 49, false),
                (11, 21, false),
                (17, 7, false),
                (18, 12, false),
                (19, 14, false),
            ],
            "{d:#?}"
        );
        assert!(d[0].message.contains("no [tls] listener uses that port"));
        assert!(d[3].message.contains("prefix length '/33' must be 0..32"));
        assert!(d[4].message.contains("'proxy' is not an IP address"));
        assert!(d[6].message.contains("inside the certificate folder"));
        // forcetrust on a port that is HTTPS but not MTLS
        let text = "[times]\nforcehttps = true\nforcetrust = true\nhttpsport = 8443\n\n[tls]\nhttps_listen = [\"0.0.0.0:8443\"]\n";
        let d = diags(text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(got, vec![(3, 14, true)], "{d:#?}");
        assert!(d[0].message.contains("is not one of tls.mtls_listen"));
    }

    #[test]
    fn cidrs() {
        use crate::config::{ip_in_cidr, parse_cidr};
        let (n, b) = parse_cidr("10.0.0.0/8").unwrap();
        assert!(ip_in_cidr("10.200.1.1".parse().unwrap(), n, b));
        assert!(ip_in_cidr("::ffff:10.1.1.1".parse().unwrap(), n, b));
        assert!(!ip_in_cidr("11.0.0.1".parse().unwrap(), n, b));
        let (n, b) = parse_cidr("fd00::/8").unwrap();
        assert!(ip_in_cidr("fd12::1".parse().unwrap(), n, b));
        assert!(!ip_in_cidr("10.0.0.1".parse().unwrap(), n, b));
        let (n, b) = parse_cidr("0.0.0.0/0").unwrap();
        assert!(ip_in_cidr("192.0.2.1".parse().unwrap(), n, b));
        assert_eq!(parse_cidr(" 192.0.2.1 ").unwrap().1, 32);
        let tls = crate::config::Tls {
            trusted_proxies: vec!["192.0.2.1".into(), "bogus".into()],
            ..Default::default()
        };
        assert!(tls.is_trusted_proxy("192.0.2.1".parse().unwrap()));
        assert!(!tls.is_trusted_proxy("192.0.2.2".parse().unwrap()));
    }

    #[test]
    fn missing_value_falls_back_to_header() {
        let text = "# site\n\n[times]\nforcehttps = false\n\n[backup]\ndir = \"b\"\n";
        assert_eq!(diags(text), vec![]);
        // Without a document everything is at 1:1; with one, a value that is not in the file
        // is reported at its table's header, and a missing table at 1:1.
        let v = Validator {
            doc: std::cell::OnceCell::from(None),
            ..Validator::new("f", text)
        };
        assert_eq!(v.locate(&[K("times"), K("allow")]), (1, 1));
        let v = Validator::new("f", text);
        assert!(v.doc.get().is_none(), "parsed only when asked");
        assert_eq!(v.locate(&[K("times"), K("allow")]), (3, 1));
        assert_eq!(v.locate(&[K("times"), K("forcehttps")]), (4, 14));
        assert_eq!(v.locate(&[K("phases"), I(0), K("id")]), (1, 1));
        assert_eq!(v.locate(&[K("backup"), K("nbackups")]), (6, 1));
    }

    #[test]
    fn firmware_settings_and_targets() {
        let text = "\
[firmware]
dir = \"fw/catalog\"
max_downloads = 0
retry_after = 0
flag_after = 1

[[firmware.targets]]
vendor = \"snom\"
model = \"D785\"
version = \"10.1\"

[[firmware.targets]]
vendor = \"Snom\"
model = \"d785\"
version = \"10/2\"

[[firmware.targets]]
vendor = \"snom\"
model = \"D785\"
version = \"10.3\"
groups = [\"pilot\", \"\", \"pilot\"]
";
        let d = diags(text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(
            got,
            vec![
                (2, 7, false),
                (3, 17, false),
                (4, 15, false),
                (5, 14, false),
                (12, 1, false),
                (15, 11, false),
                (21, 20, false),
                (21, 24, false),
            ],
            "{d:#?}"
        );
        assert!(d[4].message.contains("already set at line 7"), "{}", d[4]);
        assert!(d[5].message.contains("'10/2'"), "{}", d[5]);
        assert!(d[7].message.contains("group 'pilot'"), "{}", d[7]);
        // the defaults and a clean rule set pass
        let ok = "[[firmware.targets]]\nvendor = \"snom\"\nmodel = \"D785\"\nversion = \"1\"\n\n\
                  [[firmware.targets]]\nvendor = \"snom\"\nmodel = \"D785\"\nversion = \"2\"\n\
                  groups = [\"pilot\"]\n";
        assert_eq!(diags(ok), vec![]);
    }

    #[test]
    fn manifest_checks_and_missing_images() {
        let sha = "a".repeat(64);
        let text = format!(
            "[[image]]\nvendor = \"snom\"\nmodel = \"D785\"\nversion = \"1\"\nfile = \"a.bin\"\n\
             size = 10\nsha256 = \"{sha}\"\n\n\
             [[image]]\nvendor = \"snom\"\nmodel = \"D785\"\nversion = \"1\"\nfile = \"../b\"\n\
             size = 11\nsha256 = \"{sha}\"\n\n\
             [[image]]\nvendor = \"snom\"\nmodel = \"D785\"\nversion = \"2\"\nfile = \"c.bin\"\n\
             size = 1\nsha256 = \"ABC\"\n"
        );
        let (m, d) = validate_manifest("catalog.toml", &text);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(
            got,
            vec![
                (12, 11, false),
                (13, 8, false),
                (14, 8, false),
                (23, 10, false)
            ],
            "{d:#?}"
        );
        assert!(d[0].message.contains("listed twice (first at line 1)"));
        assert_eq!(m.unwrap().images.len(), 3);
        let (m, d) = validate_manifest("catalog.toml", "[[image]]\nvendor = \"x\"\n");
        assert!(m.is_none());
        assert_eq!(
            d[0].to_string(),
            "catalog.toml:1:1: error: missing field `model`"
        );

        // a target whose version is not in the catalogue is a warning at its version
        let conf =
            "\n[[firmware.targets]]\nvendor = \"snom\"\nmodel = \"D785\"\nversion = \"1\"\n\n\
                    [[firmware.targets]]\nvendor = \"snom\"\nmodel = \"D785\"\nversion = \"3\"\n\
                    groups = [\"lab\"]\n";
        let (c, _) = validate_text("autoprov.toml", conf);
        let c = c.unwrap();
        let (m, _) = validate_manifest("catalog.toml", &text);
        let catalog = FirmwareCatalog::new(m.unwrap(), &c.firmware.targets);
        let d = check_firmware_images("autoprov.toml", conf, &c, &catalog);
        let got: Vec<_> = d.iter().map(pos).collect();
        assert_eq!(got, vec![(10, 11, true)], "{d:#?}");
        assert!(d[0]
            .message
            .contains("autoprov firmware add --vendor snom --model D785 --version 3"));
    }
}
