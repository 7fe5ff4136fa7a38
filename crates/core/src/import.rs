//! Import of an innovaphone PHP update server installation into an autoprov site.
//!
//! [`import_innovaphone`] reads `config.xml` and `config/user-config.xml` of an existing
//! installation, merges them with the reference's rules (see [`convert_xml`]), writes the
//! result as `autoprov.toml` and copies the snippet directory, firmware, backups, certificates
//! and the master info cache, keeping file modification times (the reference uses them for the
//! grace period and script versions).

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use crate::config::{
    Applies, Class, Environment, FileName, Phase, Query, Show, SiteConfig, StdArg,
};
use crate::site::{safe_join, CONFIG_FILE};

/// The reference's default `config.xml` (build 2033), used when the installation has none.
pub const DEFAULT_CONFIG_XML: &str = include_str!("innovaphone_default_config.xml");

/// What an import did.
#[derive(Debug, Clone)]
pub struct ImportReport {
    /// The XML files that were read (the built-in defaults show as `<built-in config.xml>`).
    pub sources: Vec<PathBuf>,
    /// Files and directories written (the configuration file, created empty directories).
    pub written: Vec<PathBuf>,
    /// Directory trees and files copied from the installation.
    pub copied: Vec<Copied>,
    /// Things that were not imported or need attention, each with its place where known.
    pub warnings: Vec<String>,
    /// The configuration as written.
    pub config: SiteConfig,
}

/// One copied tree (or single file).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Copied {
    pub from: PathBuf,
    pub to: PathBuf,
    /// Number of files copied (files already present with the same size and time not counted).
    pub files: usize,
}

#[derive(Debug, thiserror::Error)]
pub enum ImportError {
    /// An XML file is not well-formed, or breaks a rule the reference enforces while merging.
    #[error("{}:{line}:{column}: {message}", path.display())]
    Xml {
        path: PathBuf,
        line: u32,
        column: u32,
        message: String,
    },
    #[error("{} is not a directory (expected the PHP update server's installation directory)", path.display())]
    NotADirectory { path: PathBuf },
    #[error("{} already exists; remove it or choose another site directory", path.display())]
    AlreadyExists { path: PathBuf },
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("cannot copy {} to {}: {source}", from.display(), to.display())]
    Copy {
        from: PathBuf,
        to: PathBuf,
        source: std::io::Error,
    },
}

/// The result of converting the XML configuration.
#[derive(Debug, Clone)]
pub struct Converted {
    pub config: SiteConfig,
    /// Tags and attributes that were not imported, odd values, and the like.
    pub warnings: Vec<String>,
}

/// Convert the reference's `config.xml` text and an optional `user-config.xml` text into a
/// site configuration (pure; see [`convert_xml`] for the rules). Warnings are dropped.
pub fn config_from_xml(
    default_xml: &str,
    user_xml: Option<&str>,
) -> Result<SiteConfig, ImportError> {
    convert_xml(
        (Path::new("config.xml"), default_xml),
        user_xml.map(|u| (Path::new("user-config.xml"), u)),
    )
    .map(|c| c.config)
}

/// Convert `(path, text)` of `config.xml` and of the user configuration. The paths are only used
/// in messages.
///
/// The two files are merged like the reference's `mergeConfigs`: the user's attributes
/// overwrite; a user tag the defaults lack is added; where the defaults' first tag of that name
/// has an `id`, the user tag (which then needs an `id` too) merges into the one with the same id
/// or is appended; a single tag on both sides is merged recursively; otherwise it is appended.
/// Text replaces text when neither side has child tags. Then the children of every top-level
/// tag that carry `seq` are sorted by it, a later duplicate seq replacing an earlier one.
pub fn convert_xml(
    default: (&Path, &str),
    user: Option<(&Path, &str)>,
) -> Result<Converted, ImportError> {
    let mut files = vec![default.0.to_path_buf()];
    let mut merged = parse_xml(default.0, default.1, 0)?;
    let user_root = match user {
        Some((path, text)) => {
            files.push(path.to_path_buf());
            Some(parse_xml(path, text, 1)?)
        }
        None => None,
    };
    let mut m = Mapper {
        files,
        warnings: Vec::new(),
    };
    if let Some(u) = &user_root {
        merge(&mut merged, u, &m.files)?;
    }
    sort_by_seq(&mut merged, &mut m);
    let config = m.map(&merged, user_root.as_ref());
    m.warnings.sort_by_key(|(p, _)| (p.src, p.line, p.col));
    Ok(Converted {
        config,
        warnings: m.warnings.into_iter().map(|(_, w)| w).collect(),
    })
}

// ---------------------------------------------------------------------------------------------
// A small owned XML tree (roxmltree is read-only; merging needs to change it).

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Pos {
    /// Index into the list of source files (0 = config.xml, 1 = user config).
    src: usize,
    line: u32,
    col: u32,
}

#[derive(Debug, Clone)]
struct Attr {
    name: String,
    value: String,
    pos: Pos,
}

#[derive(Debug, Clone)]
struct Elem {
    name: String,
    attrs: Vec<Attr>,
    text: String,
    children: Vec<Elem>,
    pos: Pos,
}

impl Elem {
    fn attr(&self, name: &str) -> Option<&str> {
        self.attrs
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.value.as_str())
    }

    fn attr_pos(&self, name: &str) -> Pos {
        self.attrs
            .iter()
            .find(|a| a.name == name)
            .map(|a| a.pos)
            .unwrap_or(self.pos)
    }

    fn set_attr(&mut self, attr: &Attr) {
        match self.attrs.iter_mut().find(|a| a.name == attr.name) {
            Some(a) => *a = attr.clone(),
            None => self.attrs.push(attr.clone()),
        }
    }

    fn first(&self, name: &str) -> Option<&Elem> {
        self.children.iter().find(|c| c.name == name)
    }

    fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a Elem> + 'a {
        self.children.iter().filter(move |c| c.name == name)
    }

    fn count(&self, name: &str) -> usize {
        self.all(name).count()
    }
}

fn parse_xml(path: &Path, text: &str, src: usize) -> Result<Elem, ImportError> {
    let text = text.strip_prefix('\u{feff}').unwrap_or(text);
    let opts = roxmltree::ParsingOptions {
        allow_dtd: true,
        ..Default::default()
    };
    let doc = roxmltree::Document::parse_with_options(text, opts).map_err(|e| {
        let pos = e.pos();
        let mut message = e.to_string();
        if let Some(stripped) = message.strip_suffix(&format!(" at {pos}")) {
            message = stripped.to_string();
        }
        ImportError::Xml {
            path: path.to_path_buf(),
            line: pos.row,
            column: pos.col,
            message,
        }
    })?;
    Ok(convert_node(&doc, doc.root_element(), src))
}

fn convert_node(doc: &roxmltree::Document<'_>, node: roxmltree::Node<'_, '_>, src: usize) -> Elem {
    let at = |offset: usize| {
        let p = doc.text_pos_at(offset);
        Pos {
            src,
            line: p.row,
            col: p.col,
        }
    };
    let mut text = String::new();
    let mut children = Vec::new();
    for c in node.children() {
        if c.is_element() {
            children.push(convert_node(doc, c, src));
        } else if c.is_text() {
            text.push_str(c.text().unwrap_or(""));
        }
    }
    Elem {
        name: node.tag_name().name().to_string(),
        attrs: node
            .attributes()
            .map(|a| Attr {
                name: a.name().to_string(),
                value: a.value().to_string(),
                pos: at(a.range().start),
            })
            .collect(),
        text,
        children,
        pos: at(node.range().start),
    }
}

/// The reference's `mergeConfigs` (see [`convert_xml`]).
fn merge(left: &mut Elem, right: &Elem, files: &[PathBuf]) -> Result<(), ImportError> {
    if left.children.is_empty() && right.children.is_empty() {
        left.text = right.text.clone();
    }
    for a in &right.attrs {
        left.set_attr(a);
    }
    for body in &right.children {
        let tag = body.name.as_str();
        let target = match left.children.iter().position(|c| c.name == tag) {
            None => None,
            Some(first) if left.children[first].attr("id").is_some() => {
                let Some(id) = body.attr("id") else {
                    return Err(ImportError::Xml {
                        path: files.get(body.pos.src).cloned().unwrap_or_default(),
                        line: body.pos.line,
                        column: body.pos.col,
                        message: format!(
                            "<{tag}> needs an 'id' attribute here (the default configuration's \
                             <{tag}> tags have one; the reference refuses this too)"
                        ),
                    });
                };
                left.children
                    .iter()
                    .position(|c| c.name == tag && c.attr("id") == Some(id))
            }
            Some(first) => {
                if left.count(tag) > 1 || right.count(tag) > 1 {
                    None
                } else {
                    Some(first)
                }
            }
        };
        let index = match target {
            Some(i) => i,
            None => {
                left.children.push(Elem {
                    name: tag.to_string(),
                    attrs: Vec::new(),
                    text: String::new(),
                    children: Vec::new(),
                    pos: body.pos,
                });
                left.children.len() - 1
            }
        };
        merge(&mut left.children[index], body, files)?;
    }
    Ok(())
}

/// Sort the children of each top-level tag that carry `seq` (PHP: an array keyed by the integer
/// seq, so a later duplicate replaces an earlier one; the sorted tags go after the others).
fn sort_by_seq(root: &mut Elem, m: &mut Mapper) {
    for level1 in &mut root.children {
        let mut names: Vec<String> = Vec::new();
        for c in &level1.children {
            if c.attr("seq").is_some() && !names.contains(&c.name) {
                names.push(c.name.clone());
            }
        }
        for name in names {
            let mut sorted: BTreeMap<i64, Elem> = BTreeMap::new();
            let mut rest = Vec::new();
            for c in std::mem::take(&mut level1.children) {
                if c.name != name {
                    rest.push(c);
                    continue;
                }
                let seq = php_int(c.attr("seq").unwrap_or(""));
                if let Some(old) = sorted.insert(seq, c) {
                    let new = &sorted[&seq];
                    m.warn(
                        old.pos,
                        format!(
                            "<{name} id=\"{}\"> is dropped: <{name} id=\"{}\"> (at {}) has the \
                             same seq {seq}, and the reference keeps only the later one",
                            old.attr("id").unwrap_or(""),
                            new.attr("id").unwrap_or(""),
                            m.at(new.pos)
                        ),
                    );
                }
            }
            rest.extend(sorted.into_values());
            level1.children = rest;
        }
    }
}

/// PHP's `(int)` on a string: optional blanks, sign and leading digits; anything else is 0.
fn php_int(s: &str) -> i64 {
    let s = s.trim_start_matches([' ', '\t', '\n', '\r', '\x0b', '\x0c']);
    let (neg, digits) = match s.as_bytes().first() {
        Some(b'-') => (true, &s[1..]),
        Some(b'+') => (false, &s[1..]),
        _ => (false, s),
    };
    let mut n: i64 = 0;
    for b in digits.bytes() {
        if !b.is_ascii_digit() {
            break;
        }
        n = n.saturating_mul(10).saturating_add(i64::from(b - b'0'));
    }
    if neg {
        -n
    } else {
        n
    }
}

// ---------------------------------------------------------------------------------------------
// Mapping the merged tree onto SiteConfig.

const TOP_LEVEL: &[&str] = &[
    "master",
    "fwstorage",
    "backup",
    "status",
    "times",
    "phases",
    "environments",
    "classes",
    "nobootdev",
    "nofirmdev",
    "filenames",
    "stdargs",
    "customcerts",
    "queries",
];

struct Mapper {
    files: Vec<PathBuf>,
    /// Warnings with their place, sorted by it in the end.
    warnings: Vec<(Pos, String)>,
}

impl Mapper {
    fn at(&self, pos: Pos) -> String {
        let file = self
            .files
            .get(pos.src)
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        format!("{file}:{}:{}", pos.line, pos.col)
    }

    fn warn(&mut self, pos: Pos, message: String) {
        let at = self.at(pos);
        self.warnings.push((pos, format!("{at}: {message}")));
    }

    /// Warn about attributes and child tags autoprov does not know.
    fn known(&mut self, e: &Elem, attrs: &[&str], children: &[&str]) {
        for a in &e.attrs {
            if !attrs.contains(&a.name.as_str()) {
                self.warn(
                    a.pos,
                    format!(
                        "attribute '{}' of <{}> is not known; not imported",
                        a.name, e.name
                    ),
                );
            }
        }
        for c in &e.children {
            if !children.contains(&c.name.as_str()) {
                self.warn(
                    c.pos,
                    format!(
                        "tag <{}> inside <{}> is not known; not imported",
                        c.name, e.name
                    ),
                );
            }
        }
    }

    /// The first top-level tag of a name (the reference reads only that one).
    fn section<'a>(&mut self, root: &'a Elem, name: &str) -> Option<&'a Elem> {
        for extra in root.all(name).skip(1) {
            self.warn(
                extra.pos,
                format!(
                    "a second <{name}> is ignored (the reference only reads the first one); \
                     merge it into the first"
                ),
            );
        }
        root.first(name)
    }

    fn string(&self, e: &Elem, name: &str, default: &str) -> String {
        e.attr(name).unwrap_or(default).to_string()
    }

    fn int(&mut self, e: &Elem, name: &str, default: i64) -> i64 {
        let Some(v) = e.attr(name) else {
            return default;
        };
        let t = v.trim();
        let clean = t.strip_prefix('-').unwrap_or(t);
        if !clean.is_empty() && clean.bytes().all(|b| b.is_ascii_digit()) {
            return php_int(t);
        }
        let n = php_int(v);
        self.warn(
            e.attr_pos(name),
            format!(
                "{}@{name} '{v}' is not a number; imported as {n}, the value the reference uses",
                e.name
            ),
        );
        n
    }

    fn unsigned<T: TryFrom<i64> + Copy + Into<u64>>(
        &mut self,
        e: &Elem,
        name: &str,
        default: T,
    ) -> T {
        let n = self.int(e, name, default.into() as i64);
        match T::try_from(n) {
            Ok(v) => v,
            Err(_) => {
                self.warn(
                    e.attr_pos(name),
                    format!(
                        "{}@{name} {n} is out of range; the default {} is used",
                        e.name,
                        default.into()
                    ),
                );
                default
            }
        }
    }

    /// The reference compares with the string "true".
    fn boolean(&mut self, e: &Elem, name: &str, default: bool) -> bool {
        match e.attr(name) {
            None => default,
            Some("true") => true,
            Some("false") | Some("") => false,
            Some(v) => {
                self.warn(
                    e.attr_pos(name),
                    format!(
                        "{}@{name} '{v}' is neither \"true\" nor \"false\"; imported as false, \
                         as the reference reads it",
                        e.name
                    ),
                );
                false
            }
        }
    }

    /// Texts of `<model>` children (kept as written: the reference does not trim them).
    fn models(&mut self, e: &Elem) -> Vec<String> {
        e.all("model")
            .map(|m| {
                if m.text.trim() != m.text {
                    self.warn(
                        m.pos,
                        format!(
                            "model '{}' has blanks around it and never matches a device type \
                             (the reference compares it as written); remove them",
                            m.text
                        ),
                    );
                }
                m.text.clone()
            })
            .collect()
    }

    fn applies(&mut self, e: &Elem) -> Vec<Applies> {
        e.all("applies")
            .map(|a| {
                self.known(a, &["env"], &[]);
                Applies {
                    value: a.text.trim().to_string(),
                    env: a.attr("env").is_some(),
                }
            })
            .collect()
    }

    fn map(&mut self, root: &Elem, user: Option<&Elem>) -> SiteConfig {
        let mut c = SiteConfig::default();
        if root.name != "config" {
            self.warn(
                root.pos,
                format!("the root tag is <{}>, expected <config>", root.name),
            );
        }
        self.known(
            root,
            &["debugmerge", "debugcerts", "debugscript"],
            TOP_LEVEL,
        );
        for a in &root.attrs {
            if a.value == "true" {
                self.warn(
                    a.pos,
                    format!("{}=\"true\" (a PHP debugging aid) is not imported", a.name),
                );
            }
        }

        if let Some(e) = self.section(root, "master") {
            self.known(
                e,
                &[
                    "info", "expire", "cache", "user", "password", "firmware", "bootcode",
                ],
                &["applies"],
            );
            let d = c.master.clone();
            c.master.info = self.string(e, "info", &d.info);
            c.master.expire = self.unsigned(e, "expire", d.expire);
            c.master.cache = self.string(e, "cache", &d.cache);
            c.master.user = self.string(e, "user", &d.user);
            c.master.password = self.string(e, "password", &d.password);
            c.master.firmware = self.string(e, "firmware", &d.firmware);
            c.master.bootcode = self.string(e, "bootcode", &d.bootcode);
            c.master.applies = self.applies(e);
        }

        if let Some(e) = self.section(root, "fwstorage") {
            self.known(e, &["url"], &[]);
            c.fwstorage.url = self.string(e, "url", &c.fwstorage.url);
        }

        if let Some(e) = self.section(root, "backup") {
            self.known(e, &["dir", "nbackups", "scfg", "minage"], &[]);
            let d = c.backup.clone();
            c.backup.dir = self.string(e, "dir", "");
            c.backup.nbackups = self.unsigned(e, "nbackups", d.nbackups);
            c.backup.scfg = self.string(e, "scfg", &d.scfg);
            c.backup.minage = self.unsigned(e, "minage", d.minage);
        }

        if let Some(e) = self.section(root, "status") {
            self.known(
                e,
                &[
                    "dir",
                    "missing",
                    "refresh",
                    "expire",
                    "logkeep",
                    "usehttpsdevlinks",
                ],
                &[],
            );
            let d = c.status.clone();
            c.status.enabled = e.attr("dir").is_some_and(|d| !d.is_empty());
            c.status.missing = self.unsigned(e, "missing", d.missing);
            c.status.refresh = self.unsigned(e, "refresh", d.refresh);
            c.status.expire = self.unsigned(e, "expire", d.expire);
            c.status.logkeep = self.unsigned(e, "logkeep", d.logkeep);
            c.status.usehttpsdevlinks = self.boolean(e, "usehttpsdevlinks", d.usehttpsdevlinks);
        }

        if let Some(e) = self.section(root, "times") {
            self.map_times(&mut c, e);
        }
        // The staging phase quirk: the reference looks at the user configuration only.
        let user_times = user.and_then(|u| u.first("times"));
        c.times.first_phase = Some(user_times.is_some_and(|t| {
            t.attr("allow").is_some_and(|a| !a.is_empty()) && t.attr("forcestaging") == Some("true")
        }));

        c.phases = Vec::new();
        if let Some(e) = self.section(root, "phases") {
            self.known(e, &[], &["phase"]);
            for p in e.all("phase") {
                self.known(p, &["id", "seq"], &[]);
                if p.attr("id").is_none() {
                    self.warn(p.pos, "<phase> without id".into());
                }
                if p.attr("seq").is_none() {
                    self.warn(p.pos, "<phase> without seq; imported as seq 0".into());
                }
                let seq = self.int(p, "seq", 0);
                c.phases.push(Phase {
                    id: self.string(p, "id", ""),
                    seq,
                });
            }
        }

        c.environments = Vec::new();
        if let Some(e) = self.section(root, "environments") {
            self.known(e, &[], &["environment"]);
            for env in e.all("environment") {
                self.known(env, &["id"], &["implies"]);
                c.environments.push(Environment {
                    id: self.string(env, "id", ""),
                    implies: env
                        .all("implies")
                        .map(|i| i.text.trim().to_string())
                        .collect(),
                });
            }
        }

        c.classes = Vec::new();
        if let Some(e) = self.section(root, "classes") {
            self.known(e, &[], &["class"]);
            for cl in e.all("class") {
                self.known(cl, &["id"], &["model"]);
                let models = self.models(cl);
                c.classes.push(Class {
                    id: self.string(cl, "id", ""),
                    models,
                });
            }
        }

        c.nobootdev = Vec::new();
        if let Some(e) = self.section(root, "nobootdev") {
            self.known(e, &[], &["model"]);
            c.nobootdev = self.models(e);
        }
        c.nofirmdev = Vec::new();
        if let Some(e) = self.section(root, "nofirmdev") {
            self.known(e, &[], &["model"]);
            c.nofirmdev = self.models(e);
        }

        c.filenames = Vec::new();
        if let Some(e) = self.section(root, "filenames") {
            self.known(e, &[], &["model"]);
            for m in e.all("model") {
                self.known(m, &["id", "prot", "boot"], &[]);
                c.filenames.push(FileName {
                    model: self.string(m, "id", ""),
                    prot: m.attr("prot").map(str::to_string),
                    boot: m.attr("boot").map(str::to_string),
                });
            }
        }

        c.stdargs = Vec::new();
        if let Some(e) = self.section(root, "stdargs") {
            self.known(e, &[], &["stdarg"]);
            for s in e.all("stdarg") {
                self.known(s, &["key", "value"], &[]);
                c.stdargs.push(StdArg {
                    key: self.string(s, "key", ""),
                    value: s.attr("value").map(str::to_string),
                });
            }
        }

        if let Some(e) = self.section(root, "customcerts") {
            self.map_customcerts(&mut c, e);
        }

        if let Some(e) = self.section(root, "queries") {
            self.map_queries(&mut c, e);
        } else {
            c.queries.query = Vec::new();
        }
        c
    }

    fn map_times(&mut self, c: &mut SiteConfig, e: &Elem) {
        self.known(
            e,
            &[
                "dir",
                "allow",
                "initial",
                "check",
                "polling",
                "interval",
                "grace",
                "forcehttps",
                "httpsport",
                "forcetrust",
                "httpsurlmod",
                "forcestaging",
            ],
            &[],
        );
        let d = c.times.clone();
        let t = &mut c.times;
        t.dir = self.string(e, "dir", &d.dir);
        t.allow = self.string(e, "allow", "");
        t.initial = self.string(e, "initial", "");
        t.check = self.boolean(e, "check", d.check);
        t.polling = self.string(e, "polling", &d.polling);
        // The reference drops an empty interval and then uses 15.
        t.interval = if e.attr("interval") == Some("") {
            d.interval
        } else {
            self.unsigned(e, "interval", d.interval)
        };
        t.grace = self.unsigned(e, "grace", d.grace);
        t.forcehttps = self.boolean(e, "forcehttps", d.forcehttps);
        t.httpsport = match e.attr("httpsport") {
            None | Some("") => None,
            Some(p) => match p.trim().parse::<u16>() {
                Ok(p) if p > 0 => Some(p),
                _ => {
                    self.warn(
                        e.attr_pos("httpsport"),
                        format!("times@httpsport '{p}' is not a port number; not imported"),
                    );
                    None
                }
            },
        };
        t.forcetrust = self.boolean(e, "forcetrust", d.forcetrust);
        t.httpsurlmod = self.string(e, "httpsurlmod", &d.httpsurlmod);
        t.forcestaging = self.boolean(e, "forcestaging", d.forcestaging);
    }

    fn map_customcerts(&mut self, c: &mut SiteConfig, e: &Elem) {
        let cc = &mut c.customcerts;
        cc.dir = String::new();
        for a in &e.attrs {
            let v = a.value.clone();
            match a.name.as_str() {
                "dir" => cc.dir = v,
                "CAkeys" => cc.cakeys = v,
                "CAtype" => cc.catype = v,
                "CAuser" => cc.causer = v,
                "CApassword" => cc.capassword = v,
                "CAurl" => cc.caurl = v,
                "CAname" => cc.caname = v,
                "CAnamesep" => cc.canamesep = v,
                "CAwildcard" => cc.cawildcard = v,
                "CSRdn-c" => cc.csr_dn_c = v,
                "CSRdn-cn" => cc.csr_dn_cn = v,
                "CSRdn-l" => cc.csr_dn_l = v,
                "CSRdn-o" => cc.csr_dn_o = v,
                "CSRdn-ou" => cc.csr_dn_ou = v,
                "CSRdn-st" => cc.csr_dn_st = v,
                "CSRkey" => cc.csr_key = v,
                "CSRsan-dns-1" => cc.csr_san_dns_1 = v,
                "CSRsan-dns-2" => cc.csr_san_dns_2 = v,
                "CSRsan-dns-3" => cc.csr_san_dns_3 = v,
                "CSRsan-ip-1" => cc.csr_san_ip_1 = v,
                "CSRsan-ip-2" => cc.csr_san_ip_2 = v,
                "CSRsignature" => cc.csr_signature = v,
                "auto-sign-off" => cc.auto_sign_off = v,
                "network" => cc.network = v,
                "netmask" => cc.netmask = v,
                "renew" | "storekey" => {}
                other => {
                    let pos = a.pos;
                    self.warn(
                        pos,
                        format!("attribute '{other}' of <customcerts> is not known; not imported"),
                    );
                }
            }
        }
        for ch in &e.children {
            self.warn(
                ch.pos,
                format!(
                    "tag <{}> inside <customcerts> is not known; not imported",
                    ch.name
                ),
            );
        }
        let renew = c.customcerts.renew;
        let storekey = c.customcerts.storekey;
        c.customcerts.renew = self.unsigned(e, "renew", renew);
        c.customcerts.storekey = self.boolean(e, "storekey", storekey);
    }

    fn map_queries(&mut self, c: &mut SiteConfig, e: &Elem) {
        self.known(e, &["scfg"], &["query"]);
        c.queries.scfg = self.string(e, "scfg", &c.queries.scfg);
        c.queries.query = Vec::new();
        for q in e.all("query") {
            self.known(q, &["id", "title"], &["cmd", "applies", "show"]);
            let id = self.string(q, "id", "");
            let applies = self.applies(q);
            let cmd = match q.first("cmd") {
                Some(cmd) => {
                    self.known(cmd, &[], &[]);
                    cmd.text.trim().to_string()
                }
                None if applies.is_empty() => {
                    self.warn(
                        q.pos,
                        format!(
                            "query '{id}' has no <cmd> and no <applies>; it never runs and is \
                             not imported"
                        ),
                    );
                    continue;
                }
                None => {
                    self.warn(
                        q.pos,
                        format!(
                            "query '{id}' has no <cmd> (the reference stops with an error); \
                             add a cmd to the imported query"
                        ),
                    );
                    String::new()
                }
            };
            let show = q
                .all("show")
                .map(|s| {
                    self.known(s, &["title"], &[]);
                    Show {
                        title: self.string(s, "title", ""),
                        xpath: s.text.trim().to_string(),
                    }
                })
                .collect();
            c.queries.query.push(Query {
                id,
                title: self.string(q, "title", ""),
                cmd,
                applies,
                show,
            });
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The import of an installation directory.

/// Import the PHP update server installed in `php_dir` into the site directory `site_dir`
/// (created if needed; it must not contain an `autoprov.toml` yet).
///
/// Reads `config.xml` (the built-in reference defaults when it is missing) and the user
/// configuration `config/user-config-dvl.xml` or else `config/user-config.xml` (an older layout's
/// `user-config.xml` next to `config.xml` is accepted too). Copies the snippet directory to
/// `scripts/`, and `fw/`, the backup directory, the certificate directory and the master info
/// cache when present, keeping modification times. Symbolic links pointing outside `php_dir`
/// are skipped. The configuration is written last, so a failed import can simply be repeated.
pub fn import_innovaphone(php_dir: &Path, site_dir: &Path) -> Result<ImportReport, ImportError> {
    if !php_dir.is_dir() {
        return Err(ImportError::NotADirectory {
            path: php_dir.to_path_buf(),
        });
    }
    let config_path = site_dir.join(CONFIG_FILE);
    if fs::symlink_metadata(&config_path).is_ok() {
        return Err(ImportError::AlreadyExists { path: config_path });
    }
    let mut warnings = Vec::new();
    let mut sources = Vec::new();

    // config.xml
    let default_path = php_dir.join("config.xml");
    let (default_name, default_text) = if default_path.is_file() {
        let text = read_xml_text(&default_path, &mut warnings)?;
        (default_path.clone(), text)
    } else {
        warnings.push(format!(
            "{} not found; the reference defaults (build 2033) are used instead",
            default_path.display()
        ));
        (
            PathBuf::from("<built-in config.xml>"),
            DEFAULT_CONFIG_XML.to_string(),
        )
    };
    sources.push(default_name.clone());

    // The user configuration.
    let dvl = php_dir.join("config").join("user-config-dvl.xml");
    let regular = php_dir.join("config").join("user-config.xml");
    let legacy = php_dir.join("user-config.xml");
    let user_path = if dvl.is_file() {
        if regular.is_file() {
            warnings.push(format!(
                "{} is used and {} is ignored, as the reference does",
                dvl.display(),
                regular.display()
            ));
        }
        Some(dvl)
    } else if regular.is_file() {
        Some(regular)
    } else if legacy.is_file() {
        warnings.push(format!(
            "{} (older layout) is used as the user configuration",
            legacy.display()
        ));
        Some(legacy)
    } else {
        warnings.push(format!(
            "{} not found: imported the defaults only (the reference would refuse to run \
             without it)",
            regular.display()
        ));
        None
    };
    let user = match &user_path {
        Some(p) => {
            sources.push(p.clone());
            Some((p.clone(), read_xml_text(p, &mut warnings)?))
        }
        None => None,
    };

    let converted = convert_xml(
        (&default_name, &default_text),
        user.as_ref().map(|(p, t)| (p.as_path(), t.as_str())),
    )?;
    let mut config = converted.config;
    warnings.extend(converted.warnings);

    if php_dir.join("config").join("scripting.class.php").is_file() {
        warnings.push(format!(
            "{} (custom PHP snippets) is not imported; port it to the [scripting] templates or \
             hook",
            php_dir.join("config").join("scripting.class.php").display()
        ));
    }

    fs::create_dir_all(site_dir).map_err(|source| ImportError::Write {
        path: site_dir.to_path_buf(),
        source,
    })?;
    let root = fs::canonicalize(php_dir).map_err(|source| ImportError::Read {
        path: php_dir.to_path_buf(),
        source,
    })?;
    let mut copier = Copier {
        root,
        warnings: &mut warnings,
        visited: HashSet::new(),
        copied: Vec::new(),
        written: Vec::new(),
    };

    // Snippets.
    let scripts_src = php_dir.join(&config.times.dir);
    let scripts_dst = site_dir.join("scripts");
    if !copier.copy_tree(&scripts_src, &scripts_dst)? {
        copier.warnings.push(format!(
            "snippet directory {} not found; created an empty {}",
            scripts_src.display(),
            scripts_dst.display()
        ));
        fs::create_dir_all(&scripts_dst).map_err(|source| ImportError::Write {
            path: scripts_dst.clone(),
            source,
        })?;
        copier.written.push(scripts_dst.clone());
    }
    config.times.dir = "scripts".into();

    // Firmware.
    copier.copy_tree(&php_dir.join("fw"), &site_dir.join("fw"))?;

    // Backups.
    if !config.backup.dir.is_empty() {
        let src = php_dir.join(&config.backup.dir);
        let rel = site_relative(&config.backup.dir, "backup", "backup@dir", copier.warnings);
        if !copier.copy_tree(&src, &site_dir.join(&rel))? {
            copier.warnings.push(format!(
                "backup directory {} not found; nothing copied",
                src.display()
            ));
        }
        config.backup.dir = rel;
    }

    // Certificates.
    if !config.customcerts.dir.is_empty() {
        let src = php_dir.join(&config.customcerts.dir);
        let rel = site_relative(
            &config.customcerts.dir,
            "certs",
            "customcerts@dir",
            copier.warnings,
        );
        if !copier.copy_tree(&src, &site_dir.join(&rel))? {
            copier.warnings.push(format!(
                "certificate directory {} not found; nothing copied",
                src.display()
            ));
        }
        config.customcerts.dir = rel;
    }

    // The master's box_info.xml cache.
    if !config.master.cache.is_empty() {
        let src = php_dir.join(&config.master.cache);
        let rel = site_relative(
            &config.master.cache,
            "cache/master-info.xml",
            "master@cache",
            copier.warnings,
        );
        copier.copy_single(&src, &site_dir.join(&rel))?;
        config.master.cache = rel;
    }

    // Device state is not carried over.
    if config.status.enabled {
        if let Some(dir) = php_dir_status(php_dir, user.as_ref(), &default_text) {
            if fs::read_dir(&dir).is_ok_and(|mut d| d.next().is_some()) {
                copier.warnings.push(format!(
                    "the per-device state files in {} are not imported",
                    dir.display()
                ));
            }
        }
    }

    let copied = std::mem::take(&mut copier.copied);
    let mut written = std::mem::take(&mut copier.written);

    // The configuration, last.
    let mut text = String::new();
    text.push_str(&format!(
        "# autoprov site configuration, imported from the innovaphone PHP update server\n\
         # in {} ({}) on {}.\n\n",
        one_line(&php_dir.display().to_string()),
        sources
            .iter()
            .map(|p| {
                let shown = p.strip_prefix(php_dir).unwrap_or(p);
                one_line(&shown.display().to_string())
            })
            .collect::<Vec<_>>()
            .join(" + "),
        utc_timestamp(SystemTime::now())
    ));
    text.push_str(&config.to_toml_string());
    let (_, diags) = crate::validate::validate_text(&config_path.display().to_string(), &text);
    for d in diags {
        warnings.push(d.to_string());
    }
    write_atomic(&config_path, &text)?;
    written.insert(0, config_path);

    Ok(ImportReport {
        sources,
        written,
        copied,
        warnings,
        config,
    })
}

/// The configured status directory of the installation (re-read, since the site configuration
/// only keeps whether it is set).
fn php_dir_status(
    php_dir: &Path,
    user: Option<&(PathBuf, String)>,
    default: &str,
) -> Option<PathBuf> {
    let find = |text: &str| -> Option<String> {
        let root = parse_xml(Path::new(""), text, 0).ok()?;
        root.first("status")?.attr("dir").map(str::to_string)
    };
    let dir = user
        .and_then(|(_, t)| find(t))
        .or_else(|| find(default))
        .filter(|d| !d.is_empty())?;
    Some(php_dir.join(dir))
}

/// A site-relative path for a configured directory, or `fallback` when it would leave the site.
fn site_relative(value: &str, fallback: &str, what: &str, warnings: &mut Vec<String>) -> String {
    if safe_join(Path::new("."), value).is_some() {
        value.to_string()
    } else {
        warnings.push(format!(
            "{what} '{value}' is not a relative path below the installation; the site keeps \
             it as '{fallback}'"
        ));
        fallback.to_string()
    }
}

/// Read an XML file as text: UTF-8 when it is valid UTF-8, else ISO-8859-1 (the encoding the
/// reference's files declare).
fn read_xml_text(path: &Path, warnings: &mut Vec<String>) -> Result<String, ImportError> {
    let bytes = fs::read(path).map_err(|source| ImportError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    match String::from_utf8(bytes) {
        Ok(s) => Ok(s),
        Err(e) => {
            let bytes = e.into_bytes();
            let head = String::from_utf8_lossy(&bytes[..bytes.len().min(100)]).to_lowercase();
            if !head.contains("iso-8859-1") && !head.contains("latin1") {
                warnings.push(format!(
                    "{} is not valid UTF-8; read it as ISO-8859-1",
                    path.display()
                ));
            }
            Ok(bytes.iter().map(|&b| b as char).collect())
        }
    }
}

struct Copier<'a> {
    /// The installation directory, canonical.
    root: PathBuf,
    warnings: &'a mut Vec<String>,
    visited: HashSet<PathBuf>,
    copied: Vec<Copied>,
    written: Vec<PathBuf>,
}

impl Copier<'_> {
    /// Resolve a source path: `None` when it is missing or a symbolic link that must not be
    /// followed (with a warning), else the metadata of what it names.
    fn resolve(&mut self, src: &Path) -> Option<fs::Metadata> {
        let meta = fs::symlink_metadata(src).ok()?;
        if !meta.file_type().is_symlink() {
            return Some(meta);
        }
        match fs::canonicalize(src) {
            Ok(target) if target.starts_with(&self.root) => fs::metadata(&target).ok(),
            Ok(target) => {
                self.warnings.push(format!(
                    "{} is a symbolic link to {} outside the installation; skipped",
                    src.display(),
                    target.display()
                ));
                None
            }
            Err(_) => {
                self.warnings.push(format!(
                    "{} is a dangling symbolic link; skipped",
                    src.display()
                ));
                None
            }
        }
    }

    /// Copy a directory tree; `false` when the source does not exist (or was skipped).
    fn copy_tree(&mut self, src: &Path, dst: &Path) -> Result<bool, ImportError> {
        let Some(meta) = self.resolve(src) else {
            return Ok(false);
        };
        if !meta.is_dir() {
            self.warnings
                .push(format!("{} is not a directory; not copied", src.display()));
            return Ok(false);
        }
        self.visited.clear();
        let files = self.copy_dir(src, &meta, dst)?;
        self.copied.push(Copied {
            from: src.to_path_buf(),
            to: dst.to_path_buf(),
            files,
        });
        Ok(true)
    }

    /// Copy one file if it exists.
    fn copy_single(&mut self, src: &Path, dst: &Path) -> Result<(), ImportError> {
        let Some(meta) = self.resolve(src) else {
            return Ok(());
        };
        if !meta.is_file() {
            self.warnings
                .push(format!("{} is not a file; not copied", src.display()));
            return Ok(());
        }
        if let Some(parent) = dst.parent() {
            fs::create_dir_all(parent).map_err(|source| ImportError::Write {
                path: parent.to_path_buf(),
                source,
            })?;
        }
        let files = self.copy_file(src, &meta, dst)?;
        self.copied.push(Copied {
            from: src.to_path_buf(),
            to: dst.to_path_buf(),
            files,
        });
        Ok(())
    }

    fn copy_dir(
        &mut self,
        src: &Path,
        meta: &fs::Metadata,
        dst: &Path,
    ) -> Result<usize, ImportError> {
        let read_err = |source| ImportError::Read {
            path: src.to_path_buf(),
            source,
        };
        let canonical = fs::canonicalize(src).map_err(read_err)?;
        if !self.visited.insert(canonical) {
            self.warnings.push(format!(
                "{} leads back into a directory already being copied; skipped",
                src.display()
            ));
            return Ok(0);
        }
        fs::create_dir_all(dst).map_err(|source| ImportError::Write {
            path: dst.to_path_buf(),
            source,
        })?;
        let mut entries: Vec<_> = fs::read_dir(src)
            .map_err(read_err)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(read_err)?;
        entries.sort_by_key(|e| e.file_name());
        let mut files = 0;
        for entry in entries {
            let from = entry.path();
            let to = dst.join(entry.file_name());
            let Some(m) = self.resolve(&from) else {
                continue;
            };
            if m.is_dir() {
                files += self.copy_dir(&from, &m, &to)?;
            } else if m.is_file() {
                files += self.copy_file(&from, &m, &to)?;
            } else {
                self.warnings.push(format!(
                    "{} is neither a file nor a directory; skipped",
                    from.display()
                ));
            }
        }
        set_times(dst, meta);
        Ok(files)
    }

    /// Copy a file keeping its times. An existing destination is left alone (silently when it
    /// has the same size and modification time, as after an earlier, interrupted import).
    fn copy_file(
        &mut self,
        src: &Path,
        meta: &fs::Metadata,
        dst: &Path,
    ) -> Result<usize, ImportError> {
        if let Ok(existing) = fs::symlink_metadata(dst) {
            let same = existing.is_file()
                && existing.len() == meta.len()
                && existing.modified().ok() == meta.modified().ok();
            if !same {
                self.warnings.push(format!(
                    "{} already exists; not overwritten with {}",
                    dst.display(),
                    src.display()
                ));
            }
            return Ok(0);
        }
        fs::copy(src, dst).map_err(|source| ImportError::Copy {
            from: src.to_path_buf(),
            to: dst.to_path_buf(),
            source,
        })?;
        let mut times = fs::FileTimes::new();
        if let Ok(m) = meta.modified() {
            times = times.set_modified(m);
        }
        if let Ok(a) = meta.accessed() {
            times = times.set_accessed(a);
        }
        fs::OpenOptions::new()
            .write(true)
            .open(dst)
            .and_then(|f| f.set_times(times))
            .map_err(|source| ImportError::Write {
                path: dst.to_path_buf(),
                source,
            })?;
        Ok(1)
    }
}

/// Give a copied directory its source's modification time (best effort).
fn set_times(dir: &Path, meta: &fs::Metadata) {
    if let Ok(m) = meta.modified() {
        if let Ok(f) = fs::File::open(dir) {
            let _ = f.set_times(fs::FileTimes::new().set_modified(m));
        }
    }
}

/// Write a file via a temporary file in the same directory, fsync and rename. Refuses to
/// replace an existing file.
fn write_atomic(path: &Path, text: &str) -> Result<(), ImportError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.import-{}.tmp", std::process::id()));
    let werr = |source| ImportError::Write {
        path: tmp.clone(),
        source,
    };
    let result = (|| {
        let mut f = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)
            .map_err(werr)?;
        f.write_all(text.as_bytes()).map_err(werr)?;
        f.sync_all().map_err(werr)?;
        drop(f);
        if fs::symlink_metadata(path).is_ok() {
            return Err(ImportError::AlreadyExists {
                path: path.to_path_buf(),
            });
        }
        fs::rename(&tmp, path).map_err(|source| ImportError::Write {
            path: path.to_path_buf(),
            source,
        })
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
        return result;
    }
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

fn one_line(s: &str) -> String {
    s.replace(['\n', '\r'], "?")
}

/// `YYYY-MM-DD HH:MM:SS UTC`.
fn utc_timestamp(t: SystemTime) -> String {
    let secs = t
        .duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0);
    let (days, rem) = (secs.div_euclid(86400), secs.rem_euclid(86400));
    // Civil date from days since 1970-01-01 (proleptic Gregorian calendar).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02} UTC",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, UNIX_EPOCH};

    fn user(body: &str) -> String {
        format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<config>\n{body}\n</config>\n")
    }

    fn convert(body: &str) -> Converted {
        convert_xml(
            (Path::new("config.xml"), DEFAULT_CONFIG_XML),
            Some((Path::new("user-config.xml"), &user(body))),
        )
        .unwrap()
    }

    #[test]
    fn reference_defaults_equal_site_defaults() {
        let c = config_from_xml(DEFAULT_CONFIG_XML, None).unwrap();
        let mut expected = SiteConfig::default();
        expected.times.first_phase = Some(false);
        assert_eq!(c, expected);
        let empty = convert("");
        assert_eq!(empty.config, expected);
        assert_eq!(empty.warnings, Vec::<String>::new());
    }

    #[test]
    fn attributes_overwrite_and_text_replaces() {
        let c = convert(
            "<master firmware=\"137640\" user=\"root\"/>\n\
             <queries><query id=\"admin\"><cmd> mod cmd CMD0 other </cmd><applies>*</applies></query></queries>",
        );
        let c = c.config;
        assert_eq!(c.master.firmware, "137640");
        assert_eq!(c.master.user, "root");
        assert_eq!(c.master.bootcode, "master");
        assert_eq!(c.master.expire, 3600);
        let admin = c.queries.query.iter().find(|q| q.id == "admin").unwrap();
        assert_eq!(admin.cmd, "mod cmd CMD0 other");
        assert_eq!(admin.title, "Admin");
        assert_eq!(
            admin.applies,
            vec![Applies {
                value: "*".into(),
                env: false
            }]
        );
        assert_eq!(c.queries.query.len(), 2);
    }

    #[test]
    fn tags_with_id_merge_by_id_and_repeated_tags_append() {
        let c = convert(
            "<classes>\n<class id=\"phone\"><model>ip999</model></class>\n\
             <class id=\"dect\"><model>ipbs</model><model>ipbs2</model></class>\n</classes>\n\
             <nofirmdev><model>x1</model><model>x2</model></nofirmdev>\n\
             <stdargs><stdarg key=\"foo\" value=\"#f\"/></stdargs>",
        )
        .config;
        assert_eq!(c.classes.len(), 13);
        let phone = &c.classes[0];
        assert_eq!(phone.id, "phone");
        assert_eq!(phone.models.len(), 27);
        assert_eq!(phone.models.last().unwrap(), "ip999");
        assert_eq!(c.classes[12].id, "dect");
        assert_eq!(c.classes[12].models, vec!["ipbs", "ipbs2"]);
        assert_eq!(
            c.nofirmdev,
            vec!["swphone", "mypbxi", "ipbs", "ipbs2", "pbl", "x1", "x2"]
        );
        // <stdargs> holds many <stdarg>: the user's one is appended.
        assert_eq!(c.stdargs.len(), 20);
        assert_eq!(c.stdargs[19].value.as_deref(), Some("#f"));
    }

    #[test]
    fn seq_sorting_and_duplicate_seq() {
        let c = convert(
            "<phases><phase id=\"late\" seq=\"300\"/><phase id=\"early\" seq=\"50\"/></phases>",
        );
        let ids: Vec<_> = c
            .config
            .phases
            .iter()
            .map(|p| (p.id.as_str(), p.seq))
            .collect();
        assert_eq!(ids, vec![("early", 50), ("update", 200), ("late", 300)]);

        let c = convert("<phases><phase id=\"other\" seq=\"200\"/></phases>");
        assert_eq!(
            c.config.phases,
            vec![Phase {
                id: "other".into(),
                seq: 200
            }]
        );
        assert_eq!(c.warnings.len(), 1, "{:?}", c.warnings);
        assert!(c.warnings[0].starts_with("config.xml:48:9: <phase id=\"update\"> is dropped"));
        assert!(c.warnings[0].contains("user-config.xml:3:9"));
    }

    #[test]
    fn scenario_from_the_brief() {
        let body = "\
<master info=\"none\" firmware=\"137640\" bootcode=\"firmware\"/>
<status dir=\"status\"/>
<backup dir=\"backup\"/>
<times grace=\"0\"/>
<phases><phase id=\"staging\" seq=\"100\"/></phases>
<environments><environment id=\"hq\"><implies>default</implies></environment></environments>";
        let c = convert(body);
        assert_eq!(c.warnings, Vec::<String>::new());
        let c = c.config;
        assert_eq!(c.master.info, "none");
        assert_eq!(c.master.firmware, "137640");
        assert_eq!(c.master.bootcode, "firmware");
        assert_eq!(
            c.phases,
            vec![
                Phase {
                    id: "staging".into(),
                    seq: 100
                },
                Phase {
                    id: "update".into(),
                    seq: 200
                }
            ]
        );
        assert_eq!(
            c.environments,
            vec![
                Environment {
                    id: "default".into(),
                    implies: vec![]
                },
                Environment {
                    id: "hq".into(),
                    implies: vec!["default".into()]
                }
            ]
        );
        assert_eq!(c.backup.dir, "backup");
        assert_eq!(c.backup.nbackups, 10);
        assert!(c.status.enabled);
        assert_eq!(c.status.missing, 604800);
        assert_eq!(c.times.grace, 0);
        assert_eq!(c.times.first_phase, Some(false));
        assert_eq!(c.classes, crate::defaults::default_classes());
        let text = c.to_toml_string();
        let (parsed, diags) = crate::validate::validate_text("autoprov.toml", &text);
        assert_eq!(diags, vec![]);
        assert_eq!(parsed.unwrap(), c);
    }

    #[test]
    fn staging_phase_reads_user_config_only() {
        // forcestaging="true" comes from the defaults only: no staging phase.
        let c = convert("<times allow=\"22,23\"/>").config;
        assert!(c.times.forcestaging);
        assert_eq!(c.times.first_phase, Some(false));
        let c = convert("<times allow=\"22,23\" forcestaging=\"true\"/>").config;
        assert_eq!(c.times.first_phase, Some(true));
        let c = convert("<times allow=\"\" forcestaging=\"true\"/>").config;
        assert_eq!(c.times.first_phase, Some(false));
    }

    #[test]
    fn times_values() {
        let c = convert(
            "<times httpsport=\"8443\" forcehttps=\"true\" interval=\"\" initial=\"5\" check=\"false\"/>",
        )
        .config;
        assert_eq!(c.times.httpsport, Some(8443));
        assert!(c.times.forcehttps);
        assert!(!c.times.check);
        assert_eq!(c.times.interval, 15);
        assert_eq!(c.times.initial, "5");
        assert_eq!(c.times.httpsurlmod, "!mtls/!!i");
    }

    #[test]
    fn customcerts_and_queries() {
        let c = convert(
            "<customcerts dir=\"certs\" CSRdn-cn=\"{hwid}\" CSRsan-dns-1=\"{name}.example.com\" \
             CAkeys=\"ca*\" auto-sign-off=\"x\" renew=\"30\"/>\n\
             <queries><query id=\"fw\" title=\"Firmware\"><cmd>mod cmd UP0 xml-info</cmd>\
             <applies env=\"true\">hq</applies><applies>phone</applies>\
             <show title=\"Version\"> /info/@version </show></query></queries>",
        )
        .config;
        let cc = &c.customcerts;
        assert_eq!(cc.dir, "certs");
        assert_eq!(cc.csr_dn_cn, "{hwid}");
        assert_eq!(cc.csr_san_dns_1, "{name}.example.com");
        assert_eq!(cc.cakeys, "ca*");
        assert_eq!(cc.auto_sign_off, "x");
        assert_eq!(cc.renew, 30);
        assert_eq!(cc.catype, "manual");
        let q = &c.queries.query[2];
        assert_eq!(q.id, "fw");
        assert_eq!(q.cmd, "mod cmd UP0 xml-info");
        assert_eq!(
            q.applies,
            vec![
                Applies {
                    value: "hq".into(),
                    env: true
                },
                Applies {
                    value: "phone".into(),
                    env: false
                }
            ]
        );
        assert_eq!(
            q.show,
            vec![Show {
                title: "Version".into(),
                xpath: "/info/@version".into()
            }]
        );
    }

    #[test]
    fn unknown_tags_and_attributes_warn_with_position() {
        let c = convert("<times colour=\"red\"/>\n<gadgets/>\n<master><note>x</note></master>");
        assert_eq!(
            c.warnings,
            vec![
                "user-config.xml:3:8: attribute 'colour' of <times> is not known; not imported",
                "user-config.xml:4:1: tag <gadgets> inside <config> is not known; not imported",
                "user-config.xml:5:9: tag <note> inside <master> is not known; not imported",
            ]
        );
    }

    #[test]
    fn tag_without_id_is_an_error() {
        let err = convert_xml(
            (Path::new("config.xml"), DEFAULT_CONFIG_XML),
            Some((
                Path::new("u.xml"),
                "<config>\n  <classes>\n    <class><model>x</model></class>\n  </classes>\n</config>",
            )),
        )
        .unwrap_err();
        match err {
            ImportError::Xml {
                path,
                line,
                column,
                message,
            } => {
                assert_eq!(path, Path::new("u.xml"));
                assert_eq!((line, column), (3, 5));
                assert!(message.contains("'id'"), "{message}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn php_int_like_php() {
        assert_eq!(php_int("200"), 200);
        assert_eq!(php_int(" 12abc"), 12);
        assert_eq!(php_int("-5"), -5);
        assert_eq!(php_int("abc"), 0);
        assert_eq!(php_int(""), 0);
    }

    #[test]
    fn timestamps() {
        assert_eq!(utc_timestamp(UNIX_EPOCH), "1970-01-01 00:00:00 UTC");
        assert_eq!(
            utc_timestamp(UNIX_EPOCH + Duration::from_secs(951_782_400 + 3661)),
            "2000-02-29 01:01:01 UTC"
        );
    }

    // --- the whole import on directories --------------------------------------------------

    fn write(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn set_mtime(path: &Path, secs: u64) {
        let f = fs::OpenOptions::new().write(true).open(path).unwrap();
        f.set_times(fs::FileTimes::new().set_modified(UNIX_EPOCH + Duration::from_secs(secs)))
            .unwrap();
    }

    fn mtime(path: &Path) -> SystemTime {
        fs::metadata(path).unwrap().modified().unwrap()
    }

    #[test]
    fn imports_an_installation() {
        let tmp = tempfile::tempdir().unwrap();
        let php = tmp.path().join("php");
        let site = tmp.path().join("site");
        write(&php.join("config.xml"), DEFAULT_CONFIG_XML);
        write(
            &php.join("config/user-config.xml"),
            &user(
                "<master info=\"none\" firmware=\"137640\" bootcode=\"firmware\"/>\n\
                 <backup dir=\"backup\"/>\n<times dir=\"snippets\" allow=\"1,2\" forcestaging=\"true\"/>\n\
                 <customcerts dir=\"/abs/certs\"/>",
            ),
        );
        write(
            &php.join("snippets/update-all-all.txt"),
            "config change X\n",
        );
        write(&php.join("snippets/sub/x.txt"), "sub\n");
        set_mtime(&php.join("snippets/update-all-all.txt"), 1_000_000_000);
        write(&php.join("fw/137640/ip232.bin"), "bin");
        set_mtime(&php.join("fw/137640/ip232.bin"), 1_100_000_000);
        write(&php.join("backup/IP232-1/IP232-1.0.txt"), "backup");
        write(&php.join("cache/master-info.xml"), "<info/>");
        set_mtime(&php.join("cache/master-info.xml"), 1_200_000_000);
        let outside = tmp.path().join("outside.txt");
        write(&outside, "secret");
        #[cfg(unix)]
        {
            std::os::unix::fs::symlink(&outside, php.join("snippets/leak.txt")).unwrap();
            std::os::unix::fs::symlink(
                php.join("snippets/update-all-all.txt"),
                php.join("snippets/update-phone-all.txt"),
            )
            .unwrap();
        }

        let report = import_innovaphone(&php, &site).unwrap();
        assert_eq!(report.written[0], site.join("autoprov.toml"));
        assert_eq!(
            fs::read_to_string(site.join("scripts/update-all-all.txt")).unwrap(),
            "config change X\n"
        );
        assert_eq!(
            mtime(&site.join("scripts/update-all-all.txt")),
            UNIX_EPOCH + Duration::from_secs(1_000_000_000)
        );
        assert!(site.join("scripts/sub/x.txt").is_file());
        assert_eq!(
            mtime(&site.join("fw/137640/ip232.bin")),
            UNIX_EPOCH + Duration::from_secs(1_100_000_000)
        );
        assert!(site.join("backup/IP232-1/IP232-1.0.txt").is_file());
        assert_eq!(
            mtime(&site.join("cache/master-info.xml")),
            UNIX_EPOCH + Duration::from_secs(1_200_000_000)
        );
        #[cfg(unix)]
        {
            assert!(!site.join("scripts/leak.txt").exists());
            assert!(report
                .warnings
                .iter()
                .any(|w| w.contains("leak.txt") && w.contains("outside the installation")));
            assert_eq!(
                fs::read_to_string(site.join("scripts/update-phone-all.txt")).unwrap(),
                "config change X\n"
            );
        }
        assert!(report
            .warnings
            .iter()
            .any(|w| w.contains("customcerts@dir '/abs/certs' is not a relative path")));

        let loaded = crate::site::Site::load(&site).unwrap();
        assert_eq!(loaded.config, report.config);
        let c = &loaded.config;
        assert_eq!(c.times.dir, "scripts");
        assert_eq!(c.times.first_phase, Some(true));
        assert_eq!(c.backup.dir, "backup");
        assert_eq!(c.customcerts.dir, "certs");
        assert_eq!(c.master.firmware, "137640");
        let text = fs::read_to_string(site.join("autoprov.toml")).unwrap();
        assert!(text.starts_with("# autoprov site configuration, imported from"));
        assert!(
            text.contains("config.xml + config/user-config.xml"),
            "{text}"
        );
        // No temporary file is left behind.
        let names: Vec<_> = fs::read_dir(&site)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    }

    #[test]
    fn refuses_to_overwrite() {
        let tmp = tempfile::tempdir().unwrap();
        let php = tmp.path().join("php");
        fs::create_dir_all(&php).unwrap();
        let site = tmp.path().join("site");
        write(&site.join("autoprov.toml"), "# mine\n");
        let err = import_innovaphone(&php, &site).unwrap_err();
        assert!(matches!(err, ImportError::AlreadyExists { .. }));
        assert!(err.to_string().contains("remove it or choose another"));
        assert_eq!(
            fs::read_to_string(site.join("autoprov.toml")).unwrap(),
            "# mine\n"
        );
        assert!(!site.join("scripts").exists());
    }

    #[test]
    fn broken_user_config_reports_line_and_column() {
        let tmp = tempfile::tempdir().unwrap();
        let php = tmp.path().join("php");
        write(
            &php.join("config/user-config.xml"),
            "<config>\n  <master info=\"none\">\n  </mastr>\n</config>\n",
        );
        let err = import_innovaphone(&php, &tmp.path().join("site")).unwrap_err();
        match &err {
            ImportError::Xml {
                path, line, column, ..
            } => {
                assert_eq!(path, &php.join("config/user-config.xml"));
                assert_eq!((*line, *column), (3, 3));
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("user-config.xml:3:3: "), "{err}");
        assert!(!tmp.path().join("site/autoprov.toml").exists());
    }

    #[test]
    fn missing_user_config_imports_defaults_with_warning() {
        let tmp = tempfile::tempdir().unwrap();
        let php = tmp.path().join("php");
        fs::create_dir_all(&php).unwrap();
        write(
            &php.join("config/user-config-dvl.xml"),
            &user("<times grace=\"5\"/>"),
        );
        let dvl = import_innovaphone(&php, &tmp.path().join("a")).unwrap();
        assert_eq!(dvl.config.times.grace, 5);

        fs::remove_file(php.join("config/user-config-dvl.xml")).unwrap();
        let site = tmp.path().join("b");
        let report = import_innovaphone(&php, &site).unwrap();
        assert!(report
            .warnings
            .iter()
            .any(|w| w.contains("reference would refuse to run")));
        assert!(report
            .warnings
            .iter()
            .any(|w| w.contains("snippet directory")));
        assert!(site.join("scripts").is_dir());
        let mut expected = SiteConfig::default();
        expected.times.first_phase = Some(false);
        assert_eq!(report.config, expected);
    }

    #[test]
    fn latin1_files_are_read() {
        let tmp = tempfile::tempdir().unwrap();
        let php = tmp.path().join("php");
        let mut bytes =
            b"<?xml version=\"1.0\" encoding=\"ISO-8859-1\"?>\n<config><master user=\"M".to_vec();
        bytes.push(0xFC);
        bytes.extend_from_slice(b"ller\"/></config>");
        fs::create_dir_all(php.join("config")).unwrap();
        fs::write(php.join("config/user-config.xml"), bytes).unwrap();
        let report = import_innovaphone(&php, &tmp.path().join("site")).unwrap();
        assert_eq!(report.config.master.user, "M\u{fc}ller");
    }
}
