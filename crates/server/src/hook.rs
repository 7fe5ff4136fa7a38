//! Dynamic snippets: the operator's templates and the external hook, per request.
//!
//! Templates (`scripting.pre_template`, `post_template`, `standard_template`) are site-relative
//! files rendered by [`autoprov_core::template::render_snippet`]. The hook is either a command
//! (`scripting.hook_command`, the device state as JSON on stdin) or a URL
//! (`scripting.hook_url`, the state POSTed as JSON); it answers
//! `{"pre": [..], "post": [..], "send_standard": bool}`, every field optional, merged after the
//! templates. A hook that fails, hangs past `hook_timeout` or answers garbage yields an error;
//! what to print then is the engine's decision, not this module's.
//!
//! Synchronous API (the engine's `Ports` are); process and network I/O run on a tokio
//! runtime handle, so call it from a blocking thread.

use std::process::Stdio;
use std::time::Duration;

use autoprov_core::innovaphone::DynamicSnippets;
use autoprov_core::template::render_snippet;
use autoprov_core::{DeviceState, Site};
use serde::Deserialize;
use tokio::io::AsyncWriteExt;

use crate::app::wait_on;
use crate::fsutil::decode_text;

/// Seconds a hook may take when `scripting.hook_timeout` is 0.
pub const DEFAULT_HOOK_TIMEOUT: u64 = 5;

/// Longest hook answer accepted (bytes).
const MAX_ANSWER: usize = 1024 * 1024;

/// What a hook may answer.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookAnswer {
    #[serde(default)]
    pub pre: Vec<String>,
    #[serde(default)]
    pub post: Vec<String>,
    #[serde(default)]
    pub send_standard: Option<bool>,
}

/// Templates then hook, for one device state.
pub fn dynamic(
    site: &Site,
    runtime: &tokio::runtime::Handle,
    http: &reqwest::Client,
    state: &DeviceState,
) -> Result<DynamicSnippets, String> {
    let cfg = &site.config.scripting;
    let mut out = DynamicSnippets::default();
    if !cfg.pre_template.is_empty() {
        out.pre = lines(&render_file(site, &cfg.pre_template, state)?);
    }
    if !cfg.post_template.is_empty() {
        out.post = lines(&render_file(site, &cfg.post_template, state)?);
    }
    if !cfg.standard_template.is_empty() {
        let text = render_file(site, &cfg.standard_template, state)?;
        out.send_standard = text.trim() != "false";
    }
    if cfg.hook_command.is_empty() && cfg.hook_url.is_empty() {
        return Ok(out);
    }
    let secs = if cfg.hook_timeout == 0 {
        DEFAULT_HOOK_TIMEOUT
    } else {
        cfg.hook_timeout
    };
    let timeout = Duration::from_secs(secs);
    let answer = run_hook(site, runtime, http, state, timeout).map_err(|reason| {
        tracing::warn!(sn = %state.sn, %reason, "dynamic snippet hook failed");
        format!("dynamic snippet hook failed: {reason}")
    })?;
    out.pre.extend(answer.pre);
    out.post.extend(answer.post);
    if let Some(s) = answer.send_standard {
        out.send_standard = s;
    }
    Ok(out)
}

/// Rendered text as script lines: split at line ends, a trailing empty line dropped.
pub fn lines(text: &str) -> Vec<String> {
    let mut v: Vec<String> = text
        .split('\n')
        .map(|l| l.strip_suffix('\r').unwrap_or(l).to_string())
        .collect();
    if v.last().is_some_and(|l| l.is_empty()) {
        v.pop();
    }
    v
}

fn render_file(site: &Site, rel: &str, state: &DeviceState) -> Result<String, String> {
    let path = site
        .path(rel)
        .ok_or_else(|| format!("dynamic snippet template '{rel}' is not a path inside the site"))?;
    let source = std::fs::read(&path)
        .map_err(|e| format!("dynamic snippet template '{rel}' cannot be read: {e}"))?;
    render_snippet(rel, &decode_text(source), state).map_err(|e| {
        tracing::warn!(sn = %state.sn, template = rel, error = %e, "template failed");
        format!("dynamic snippet template failed: {e}")
    })
}

fn run_hook(
    site: &Site,
    runtime: &tokio::runtime::Handle,
    http: &reqwest::Client,
    state: &DeviceState,
    timeout: Duration,
) -> Result<HookAnswer, String> {
    let cfg = &site.config.scripting;
    let input = serde_json::to_vec(state).map_err(|e| format!("cannot encode the state: {e}"))?;
    let gone = || "the server is shutting down".to_string();
    let raw = if !cfg.hook_command.is_empty() {
        let (argv, cwd) = (cfg.hook_command.clone(), site.dir.clone());
        wait_on(runtime, async move {
            run_command(&argv, &cwd, input, timeout).await
        })
        .ok_or_else(gone)??
    } else {
        let (http, url) = (http.clone(), cfg.hook_url.clone());
        wait_on(runtime, async move {
            post_url(&http, &url, input, timeout).await
        })
        .ok_or_else(gone)??
    };
    parse_answer(&raw)
}

/// Parse a hook's answer.
pub fn parse_answer(raw: &[u8]) -> Result<HookAnswer, String> {
    serde_json::from_slice::<HookAnswer>(raw).map_err(|e| {
        let shown: String = String::from_utf8_lossy(raw).chars().take(80).collect();
        format!("answer is not the expected JSON ({e}): {shown:?}")
    })
}

async fn run_command(
    argv: &[String],
    cwd: &std::path::Path,
    input: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let shown = argv.join(" ");
    let mut cmd = tokio::process::Command::new(&argv[0]);
    cmd.args(&argv[1..])
        .current_dir(cwd)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("cannot start `{shown}`: {e}"))?;
    if let Some(mut stdin) = child.stdin.take() {
        // A hook need not read its input: write in the background, ignore a closed pipe.
        tokio::spawn(async move {
            let _ = stdin.write_all(&input).await;
        });
    }
    // Dropping the future on timeout drops the child, which kills it (kill_on_drop).
    let output = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Ok(Ok(o)) => o,
        Ok(Err(e)) => return Err(format!("`{shown}` failed: {e}")),
        Err(_) => {
            return Err(format!(
                "`{shown}` did not finish within {}s and was killed",
                timeout.as_secs()
            ))
        }
    };
    if !output.status.success() {
        let stderr = String::from_utf8_lossy(&output.stderr);
        let first = stderr.lines().next().unwrap_or("").trim();
        return Err(format!(
            "`{shown}` exited with {}{}",
            output.status,
            if first.is_empty() {
                String::new()
            } else {
                format!(": {first}")
            }
        ));
    }
    if output.stdout.len() > MAX_ANSWER {
        return Err(format!("`{shown}` answered more than {MAX_ANSWER} bytes"));
    }
    Ok(output.stdout)
}

async fn post_url(
    http: &reqwest::Client,
    url: &str,
    input: Vec<u8>,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let fut = async {
        let resp = http
            .post(url)
            .header("content-type", "application/json")
            .body(input)
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| format!("POST {url}: {e}"))?;
        let status = resp.status();
        if !status.is_success() {
            return Err(format!("POST {url} answered HTTP {status}"));
        }
        let body = resp
            .bytes()
            .await
            .map_err(|e| format!("POST {url}: reading the answer: {e}"))?;
        if body.len() > MAX_ANSWER {
            return Err(format!("POST {url} answered more than {MAX_ANSWER} bytes"));
        }
        Ok(body.to_vec())
    };
    tokio::time::timeout(timeout, fut)
        .await
        .unwrap_or_else(|_| {
            Err(format!(
                "POST {url} did not answer within {}s",
                timeout.as_secs()
            ))
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn site(dir: &std::path::Path, script: &str, timeout: u64) -> Site {
        let mut config = autoprov_core::SiteConfig::default();
        config.scripting.hook_command = vec!["sh".into(), "-c".into(), script.into()];
        config.scripting.hook_timeout = timeout;
        Site {
            dir: dir.to_path_buf(),
            config,
        }
    }

    fn run(site: &Site) -> Result<DynamicSnippets, String> {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let handle = rt.handle().clone();
        let state = DeviceState::new("00-90-33-30-00-af", 1);
        let http = reqwest::Client::new();
        let r = dynamic(site, &handle, &http, &state);
        rt.shutdown_background();
        r
    }

    #[test]
    fn command_answer_is_used_and_gets_the_state() {
        let t = tempfile::tempdir().unwrap();
        // echo back the serial from stdin to prove the state arrived
        let s = site(
            t.path(),
            r##"sn=$(sed -n 's/.*"sn":"\([^"]*\)".*/\1/p'); printf '{"pre":["# pre %s"],"post":["b","c"],"send_standard":false}' "$sn""##,
            5,
        );
        let d = run(&s).unwrap();
        assert_eq!(d.pre, vec!["# pre 00-90-33-30-00-af"]);
        assert_eq!(d.post, vec!["b", "c"]);
        assert!(!d.send_standard);
    }

    #[test]
    fn empty_object_changes_nothing() {
        let t = tempfile::tempdir().unwrap();
        let d = run(&site(t.path(), "echo '{}'", 5)).unwrap();
        assert_eq!(d, DynamicSnippets::default());
    }

    #[test]
    fn slow_command_is_killed_at_the_timeout() {
        let t = tempfile::tempdir().unwrap();
        let started = Instant::now();
        let err = run(&site(t.path(), "sleep 30; echo '{}'", 1)).unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(5));
        assert!(err.starts_with("dynamic snippet hook failed: "), "{err}");
        assert!(err.contains("killed"), "{err}");
    }

    #[test]
    fn garbage_answer_is_an_error() {
        let t = tempfile::tempdir().unwrap();
        let err = run(&site(t.path(), "echo 'hello world'", 5)).unwrap_err();
        assert!(err.starts_with("dynamic snippet hook failed: "), "{err}");
        assert!(err.contains("JSON"), "{err}");
    }

    #[test]
    fn failing_command_reports_status_and_stderr() {
        let t = tempfile::tempdir().unwrap();
        let err = run(&site(t.path(), "echo broken >&2; exit 3", 5)).unwrap_err();
        assert!(
            err.contains("exit status: 3") && err.contains("broken"),
            "{err}"
        );
    }

    #[test]
    fn templates_then_hook() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("pre.j2"), "# for {{ sn }}\n\n# second\n").unwrap();
        std::fs::write(t.path().join("std.j2"), " true \n").unwrap();
        let mut s = site(t.path(), r##"echo '{"pre":["# hook"]}'"##, 5);
        s.config.scripting.pre_template = "pre.j2".into();
        s.config.scripting.standard_template = "std.j2".into();
        let d = run(&s).unwrap();
        assert_eq!(
            d.pre,
            vec!["# for 00-90-33-30-00-af", "", "# second", "# hook"]
        );
        assert!(d.send_standard);
    }

    #[test]
    fn template_error_names_the_file() {
        let t = tempfile::tempdir().unwrap();
        std::fs::write(t.path().join("post.j2"), "{{ nope }}").unwrap();
        let mut s = site(t.path(), "echo '{}'", 5);
        s.config.scripting.hook_command.clear();
        s.config.scripting.post_template = "post.j2".into();
        let err = run(&s).unwrap_err();
        assert!(err.contains("post.j2") && err.contains("line 1"), "{err}");
    }

    #[test]
    fn line_splitting() {
        assert_eq!(lines("a\r\nb\n"), vec!["a", "b"]);
        assert_eq!(lines(""), Vec::<String>::new());
        assert_eq!(lines("a\n\n"), vec!["a", ""]);
    }
}
