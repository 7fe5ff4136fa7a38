//! Operator templates (minijinja) rendered over a device's state.
//!
//! Used for the dynamic snippets of the innovaphone engine (`scripting.pre_template`,
//! `post_template`, `standard_template`). Rendering is strict: an undefined variable is an
//! error, not an empty string, and a fuel limit stops runaway loops.
//!
//! This module is pure: it never reads files or talks to the network. The caller reads the
//! template source and decides what to do with the rendered text or the error.

use std::collections::BTreeMap;

use minijinja::{Environment, UndefinedBehavior};
use serde::Serialize;

use crate::state::DeviceState;

/// Instructions one render may execute before it is stopped.
pub const FUEL: u64 = 200_000;

/// The values a template sees: the whole state under `state`, plus shortcuts.
#[derive(Serialize)]
struct Context<'a> {
    state: &'a DeviceState,
    sn: &'a str,
    #[serde(rename = "type")]
    device_type: Option<&'a str>,
    hwid: Option<&'a str>,
    phase: Option<&'a str>,
    classes: Vec<String>,
    environments: Vec<String>,
    queries: BTreeMap<&'a str, &'a str>,
}

/// Split a `, `-joined list as the state stores it (`phone, ip232`).
fn split_list(joined: Option<&str>) -> Vec<String> {
    joined
        .unwrap_or("")
        .split(", ")
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect()
}

fn context(state: &DeviceState) -> Context<'_> {
    Context {
        state,
        sn: &state.sn,
        device_type: state.device.device_type.as_deref(),
        hwid: state.device.hwid.as_deref(),
        phase: state.device.phase.as_deref().or(state.phase.as_deref()),
        classes: split_list(state.device.classes.as_deref()),
        environments: split_list(state.device.environments.as_deref()),
        queries: state
            .queries
            .iter()
            .map(|q| (q.id.as_str(), q.body.as_str()))
            .collect(),
    }
}

/// Render the template `source` (named `name` in messages) over `state`.
///
/// Errors name the template, the line and what went wrong, e.g.
/// `template 'pre.j2' line 3: undefined value: ...`.
pub fn render_snippet(name: &str, source: &str, state: &DeviceState) -> Result<String, String> {
    let mut env = Environment::new();
    env.set_undefined_behavior(UndefinedBehavior::Strict);
    env.set_fuel(Some(FUEL));
    env.set_keep_trailing_newline(true);
    env.render_named_str(name, source, context(state))
        .map_err(|e| describe(name, &e))
}

fn describe(name: &str, e: &minijinja::Error) -> String {
    let mut out = format!("template '{name}'");
    if let Some(line) = e.line() {
        out.push_str(&format!(" line {line}"));
    }
    out.push_str(&format!(": {}", e.kind()));
    if let Some(detail) = e.detail() {
        out.push_str(&format!(": {detail}"));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state() -> DeviceState {
        let mut s = DeviceState::new("00-90-33-30-00-af", 1000);
        s.device.device_type = Some("IP232".into());
        s.device.hwid = Some("IP232-30-00-af".into());
        s.device.classes = Some("phone, ip232".into());
        s.device.environments = Some("hq, default".into());
        s.device.phase = Some("update".into());
        s.set_query("admin", "<info name=\"x\"/>", 1000);
        s
    }

    #[test]
    fn shortcuts_and_state() {
        let out = render_snippet(
            "t",
            "{{ sn }} {{ type }} {{ hwid }} {{ phase }} {{ classes|join('+') }} \
             {{ environments[0] }} {{ queries.admin }} {{ state.seen }}\n",
            &state(),
        )
        .unwrap();
        assert_eq!(
            out,
            "00-90-33-30-00-af IP232 IP232-30-00-af update phone+ip232 hq <info name=\"x\"/> 1000\n"
        );
    }

    #[test]
    fn conditionals_over_classes() {
        let src = "{% if 'phone' in classes %}config add CMD0 /name {{ hwid }}{% endif %}";
        assert_eq!(
            render_snippet("t", src, &state()).unwrap(),
            "config add CMD0 /name IP232-30-00-af"
        );
    }

    #[test]
    fn undefined_is_an_error_with_name_and_line() {
        let err = render_snippet("pre.j2", "a\nb\n{{ nosuch }}\n", &state()).unwrap_err();
        assert!(err.contains("pre.j2"), "{err}");
        assert!(err.contains("line 3"), "{err}");
        assert!(err.contains("undefined"), "{err}");
    }

    #[test]
    fn syntax_error_is_reported() {
        let err = render_snippet("post.j2", "{% if %}", &state()).unwrap_err();
        assert!(
            err.contains("post.j2") && err.contains("syntax error"),
            "{err}"
        );
    }

    #[test]
    fn runaway_loop_runs_out_of_fuel() {
        let src = "{% for a in range(1000) %}{% for b in range(1000) %}x{% endfor %}{% endfor %}";
        let err = render_snippet("loop", src, &state()).unwrap_err();
        assert!(err.contains("fuel"), "{err}");
    }

    #[test]
    fn empty_lists_for_missing_fields() {
        let s = DeviceState::new("x", 0);
        assert_eq!(
            render_snippet("t", "{{ classes|length }}{{ type is none }}", &s).unwrap(),
            "0True"
        );
    }
}
