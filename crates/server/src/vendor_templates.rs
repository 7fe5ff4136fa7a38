//! The site's vendor templates (`SITE/templates/<vendor>/<name>`), with the last good version
//! of each file kept in memory.
//!
//! A template is read from the site on every render, so an edit takes effect at once. When the
//! site has no such file, the shipped default (embedded in the binary) is used. When the site's
//! file fails (syntax error, undefined variable, unreadable, not UTF-8), the error is logged
//! with file and line and the last version of that file that rendered successfully in this
//! process keeps serving; without one the render fails (the phone gets an error status, never a
//! half-made file). The error text is also reported back to the caller ([`SiteTemplates::
//! problems`]) so the response can carry it for the operator.
//!
//! No decisions about devices here; the rendering itself is `autoprov-core`'s.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use autoprov_core::vendors::{render_template, ShippedTemplates, TemplateError, Templates};

use crate::render_cache::FileSig;

/// Last good source per template file. Cheap to clone; shared by all requests.
#[derive(Debug, Clone, Default)]
pub struct TemplateCache {
    last_good: Arc<Mutex<HashMap<PathBuf, String>>>,
}

impl TemplateCache {
    fn get(&self, path: &PathBuf) -> Option<String> {
        self.lock().get(path).cloned()
    }

    fn remember(&self, path: PathBuf, source: String) {
        let mut map = self.lock();
        if map.get(&path) != Some(&source) {
            map.insert(path, source);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<PathBuf, String>> {
        self.last_good.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// [`Templates`] over one site directory, for one request.
pub struct SiteTemplates {
    site_dir: PathBuf,
    cache: TemplateCache,
    problems: Mutex<Vec<String>>,
    /// Every site template path consulted, as it was before reading (for
    /// [`crate::render_cache`]).
    consulted: Mutex<Vec<(PathBuf, FileSig)>>,
}

impl SiteTemplates {
    pub fn new(site_dir: PathBuf, cache: TemplateCache) -> SiteTemplates {
        SiteTemplates {
            site_dir,
            cache,
            problems: Mutex::new(Vec::new()),
            consulted: Mutex::new(Vec::new()),
        }
    }

    /// The site template paths consulted so far and what they looked like before reading.
    pub fn consulted(&self) -> Vec<(PathBuf, FileSig)> {
        self.consulted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// The template errors met so far (each names file and line).
    pub fn problems(&self) -> Vec<String> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn failed(
        &self,
        path: &PathBuf,
        name: &str,
        vars: &serde_json::Value,
        err: TemplateError,
    ) -> Result<String, TemplateError> {
        self.problems
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(err.to_string());
        match self.cache.get(path) {
            Some(good) => {
                tracing::error!(error = %err, "template failed; the last good version keeps serving until it is fixed");
                let shown = format!("{} (last good version)", err.file);
                render_template(&shown, name, &good, vars)
            }
            None => {
                tracing::error!(error = %err, "template failed and no good version of it was served since the start; fix it (autoprov check lists template errors)");
                Err(err)
            }
        }
    }
}

impl Templates for SiteTemplates {
    fn render(
        &self,
        vendor: &str,
        name: &str,
        vars: &serde_json::Value,
    ) -> Result<String, TemplateError> {
        let rel = format!("templates/{vendor}/{name}");
        let path = self.site_dir.join(&rel);
        // Taken before reading: a change after this point shows as a different signature.
        let sig = FileSig::of(&path);
        self.consulted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push((path.clone(), sig));
        let source = match std::fs::read(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return ShippedTemplates.render(vendor, name, vars);
            }
            Err(e) => Err(format!("cannot read the file: {e}")),
            Ok(bytes) => String::from_utf8(bytes)
                .map_err(|_| "the file is not UTF-8 text; save it as UTF-8".to_string()),
        };
        let result = match source {
            Ok(src) => render_template(&rel, name, &src, vars).map(|out| (out, src)),
            Err(message) => Err(TemplateError {
                file: rel.clone(),
                line: None,
                message,
            }),
        };
        match result {
            Ok((out, src)) => {
                self.cache.remember(path, src);
                Ok(out)
            }
            Err(err) => self.failed(&path, name, vars, err),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn last_good_version_keeps_serving() {
        let dir = tempfile::tempdir().unwrap();
        let tdir = dir.path().join("templates/yealink");
        std::fs::create_dir_all(&tdir).unwrap();
        let cache = TemplateCache::default();
        let vars = json!({ "x": "1" });
        let t = SiteTemplates::new(dir.path().to_path_buf(), cache.clone());

        // No site file: the shipped default.
        assert!(
            t.render("yealink", "boot.j2", &vars).is_err(),
            "shipped boot.j2 needs more vars"
        );

        std::fs::write(tdir.join("boot.j2"), "good {{ x }}\n").unwrap();
        assert_eq!(t.render("yealink", "boot.j2", &vars).unwrap(), "good 1\n");
        std::fs::write(tdir.join("boot.j2"), "line one\n{{ x }\n").unwrap();
        let t = SiteTemplates::new(dir.path().to_path_buf(), cache.clone());
        assert_eq!(t.render("yealink", "boot.j2", &vars).unwrap(), "good 1\n");
        let p = t.problems();
        assert_eq!(p.len(), 1);
        assert!(
            p[0].starts_with("templates/yealink/boot.j2:2: syntax error"),
            "{p:?}"
        );

        // A fresh cache has no good version: the error comes back.
        let t = SiteTemplates::new(dir.path().to_path_buf(), TemplateCache::default());
        let e = t.render("yealink", "boot.j2", &vars).unwrap_err();
        assert_eq!(e.line, Some(2));
    }
}
