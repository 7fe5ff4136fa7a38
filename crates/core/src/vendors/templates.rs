//! Vendor file templates: the minijinja environment they render in, the [`Templates`] source
//! trait, and [`ShippedTemplates`] (the defaults embedded in the binary).
//!
//! Rendering is strict (an undefined variable is an error), bounded by fuel, keeps trailing
//! newlines, and is deterministic (maps iterate in key order; no clock, no randomness). In
//! templates whose name ends in `.xml.j2` or `.htm.j2` every `{{ value }}` is XML-escaped
//! (`& < > " '`), so a password with `&` cannot break a phone's XML; `|safe` opts out.
//!
//! Which file a template comes from (the site's `templates/<vendor>/<name>`, the last good
//! version of it, or the shipped default) is the caller's business: the server implements
//! [`Templates`] with its cache. This module reads no files.

use minijinja::value::Value;
use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};

use minijinja::{AutoEscape, Environment, Output, State, UndefinedBehavior};

/// Instructions one render may execute before it is stopped.
pub const FUEL: u64 = 500_000;

/// A template failed: `file` (as shown to the operator), line (when known) and what happened.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.describe())]
pub struct TemplateError {
    pub file: String,
    pub line: Option<usize>,
    pub message: String,
}

impl TemplateError {
    fn describe(&self) -> String {
        match self.line {
            Some(l) => format!("{}:{l}: {}", self.file, self.message),
            None => format!("{}: {}", self.file, self.message),
        }
    }
}

/// Where vendor templates come from.
pub trait Templates {
    /// Render template `name` of `vendor` (e.g. `yealink`, `config.cfg.j2`) with `vars`.
    fn render(
        &self,
        vendor: &str,
        name: &str,
        vars: &serde_json::Value,
    ) -> Result<String, TemplateError>;
}

/// The templates shipped with autoprov (no site overrides).
#[derive(Debug, Clone, Copy, Default)]
pub struct ShippedTemplates;

/// The shipped source of `vendor`'s template `name`.
pub fn shipped(vendor: &str, name: &str) -> Option<&'static str> {
    super::by_id(vendor)?
        .templates()
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, s)| *s)
}

impl Templates for ShippedTemplates {
    fn render(
        &self,
        vendor: &str,
        name: &str,
        vars: &serde_json::Value,
    ) -> Result<String, TemplateError> {
        let shown = format!("(built-in) templates/{vendor}/{name}");
        let source = shipped(vendor, name).ok_or_else(|| TemplateError {
            file: shown.clone(),
            line: None,
            message: "no such template".into(),
        })?;
        render_template(&shown, name, source, vars)
    }
}

fn is_xml(name: &str) -> bool {
    name.ends_with(".xml.j2") || name.ends_with(".htm.j2")
}

/// Render `source` (the template called `name`; `shown` is how errors name it, e.g. the
/// site-relative path) with `vars`.
pub fn render_template(
    shown: &str,
    name: &str,
    source: &str,
    vars: &serde_json::Value,
) -> Result<String, TemplateError> {
    let to_error = |e: minijinja::Error| TemplateError {
        file: shown.to_string(),
        line: e.line(),
        message: match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        },
    };
    let env = compiled(name, source).map_err(to_error)?;
    let template = env.get_template(name).map_err(to_error)?;
    template
        .render(Value::from_serialize(vars))
        .map_err(to_error)
}

/// Compiled templates, keyed by name and source text: a file's template is compiled once,
/// not on every request, and a changed source is simply another key. Bounded: the cache is
/// emptied when it holds [`MAX_COMPILED`] entries.
fn compiled(name: &str, source: &str) -> Result<Arc<Environment<'static>>, minijinja::Error> {
    type Cache = Mutex<HashMap<(String, String), Arc<Environment<'static>>>>;
    static CACHE: OnceLock<Cache> = OnceLock::new();
    let cache = CACHE.get_or_init(Default::default);
    let key = (name.to_string(), source.to_string());
    if let Some(env) = cache.lock().unwrap_or_else(|p| p.into_inner()).get(&key) {
        return Ok(env.clone());
    }
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_keep_trailing_newline(true);
    env.set_auto_escape_callback(|n| {
        if is_xml(n) {
            AutoEscape::Custom("xml")
        } else {
            AutoEscape::None
        }
    });
    env.set_formatter(xml_formatter);
    env.add_filter("xml", |v: String| xml_escape(&v));
    env.add_template_owned(name.to_string(), source.to_string())?;
    let env = Arc::new(env);
    let mut c = cache.lock().unwrap_or_else(|p| p.into_inner());
    if c.len() >= MAX_COMPILED {
        c.clear();
    }
    c.insert(key, env.clone());
    Ok(env)
}

/// Compiled templates kept at most (shipped ones plus the site's overrides, many times over).
const MAX_COMPILED: usize = 256;

/// Check that `source` compiles (syntax only), for `autoprov check`.
pub fn check_syntax(shown: &str, name: &str, source: &str) -> Result<(), TemplateError> {
    let mut env = Environment::new();
    env.add_template(name, source).map_err(|e| TemplateError {
        file: shown.to_string(),
        line: e.line(),
        message: match e.detail() {
            Some(d) => format!("{}: {d}", e.kind()),
            None => e.kind().to_string(),
        },
    })
}

fn xml_formatter(out: &mut Output, state: &State, value: &Value) -> Result<(), minijinja::Error> {
    if matches!(state.auto_escape(), AutoEscape::Custom("xml")) && !value.is_safe() {
        if value.is_none() || value.is_undefined() {
            return Ok(());
        }
        let text = value.to_string();
        out.write_str(&xml_escape(&text))
            .map_err(|e| minijinja::Error::new(minijinja::ErrorKind::WriteFailure, e.to_string()))
    } else {
        minijinja::escape_formatter(out, state, value)
    }
}

/// Escape text for XML element content and attribute values.
pub fn xml_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&apos;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn xml_templates_escape() {
        let v = json!({ "pw": "a&b<c>\"'", "url": "http://x/y?a=1" });
        let out = render_template("t", "t.xml.j2", "<p>{{ pw }}</p><u>{{ url }}</u>", &v).unwrap();
        assert_eq!(
            out,
            "<p>a&amp;b&lt;c&gt;&quot;&apos;</p><u>http://x/y?a=1</u>"
        );
        let out = render_template("t", "t.cfg.j2", "{{ pw }} {{ pw|xml }}", &v).unwrap();
        assert_eq!(out, "a&b<c>\"' a&amp;b&lt;c&gt;&quot;&apos;");
    }

    #[test]
    fn errors_name_file_and_line() {
        let e = render_template(
            "templates/yealink/x.cfg.j2",
            "x.cfg.j2",
            "a\n{{ nope }}\n",
            &json!({}),
        )
        .unwrap_err();
        assert_eq!(e.line, Some(2));
        let s = e.to_string();
        assert!(
            s.starts_with("templates/yealink/x.cfg.j2:2: undefined value"),
            "{s}"
        );
        let e = render_template("f", "f.j2", "\n\n{% if %}", &json!({})).unwrap_err();
        assert_eq!(e.line, Some(3));
        assert!(e.to_string().contains("syntax error"), "{e}");
        assert!(check_syntax("f", "f.j2", "{% for %}").is_err());
        assert!(check_syntax("f", "f.j2", "{{ a }}").is_ok());
    }

    #[test]
    fn every_shipped_template_compiles() {
        for v in super::super::registry() {
            for (name, src) in v.templates() {
                check_syntax(name, name, src).unwrap_or_else(|e| panic!("{}: {e}", v.id()));
            }
        }
    }
}
