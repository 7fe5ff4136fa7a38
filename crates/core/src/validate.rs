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
use crate::site::safe_join;

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

/// Parse and check a configuration text. Returns the configuration when it parsed, and all
/// diagnostics found (sorted by position). The configuration is usable only when none of the
/// diagnostics is an error.
pub fn validate_text(file: &str, text: &str) -> (Option<SiteConfig>, Vec<Diagnostic>) {
    let config = match SiteConfig::from_toml_str(text) {
        Ok(c) => c,
        Err(e) => {
            return (
                None,
                vec![Diagnostic {
                    file: file.to_string(),
                    line: e.line.max(1),
                    column: e.column.max(1),
                    message: e.message.trim_end().to_string(),
                    warning: false,
                }],
            )
        }
    };
    let doc = ImDocument::parse(text).ok();
    let mut v = Validator {
        file,
        text,
        doc: doc.as_ref(),
        diags: Vec::new(),
    };
    v.check(&config);
    let mut diags = v.diags;
    diags.sort_by_key(|d| (d.line, d.column));
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
    doc: Option<&'a ImDocument<&'a str>>,
    diags: Vec<Diagnostic>,
}

impl Validator<'_> {
    /// Line and column of the deepest node of `path` that is present in the file.
    fn locate(&self, path: &[Seg<'_>]) -> (usize, usize) {
        let Some(doc) = self.doc else {
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
        let Some(doc) = self.doc else {
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
                "server.database must name the database file, e.g. \"autoprov.db\"".into(),
            );
        } else {
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
    fn missing_value_falls_back_to_header() {
        let text = "# site\n\n[times]\nforcehttps = false\n\n[backup]\ndir = \"b\"\n";
        assert_eq!(diags(text), vec![]);
        // Without a document everything is at 1:1; with one, a value that is not in the file
        // is reported at its table's header, and a missing table at 1:1.
        let mut v = Validator {
            file: "f",
            text,
            doc: None,
            diags: vec![],
        };
        assert_eq!(v.locate(&[K("times"), K("allow")]), (1, 1));
        let doc = ImDocument::parse(text).unwrap();
        v.doc = Some(&doc);
        assert_eq!(v.locate(&[K("times"), K("allow")]), (3, 1));
        assert_eq!(v.locate(&[K("times"), K("forcehttps")]), (4, 14));
        assert_eq!(v.locate(&[K("phases"), I(0), K("id")]), (1, 1));
        assert_eq!(v.locate(&[K("backup"), K("nbackups")]), (6, 1));
    }
}
