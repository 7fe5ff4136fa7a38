//! Checking a site like `autoprov check` and reloading it into a running server.
//!
//! [`check`] reads `autoprov.toml`, the firmware manifest and the vendor templates and returns
//! every diagnostic as `autoprov check` prints it (`file:line:column: error|warning: ...`).
//! [`prepare`] builds the new site and firmware catalogue from a clean check, for
//! [`crate::app::AppState::reload_site`], which swaps them in. Listeners, TLS files, the
//! database and the zero-touch side channels are bound at start: a changed value is reported
//! as needing a restart and keeps its old effect until then.

use std::path::Path;

use autoprov_core::firmware::{FirmwareCatalog, MANIFEST_FILE};
use autoprov_core::site::CONFIG_FILE;
use autoprov_core::validate::{check_firmware_images, validate_manifest, validate_text};
use autoprov_core::{Site, SiteConfig};
use serde::Serialize;

use crate::catalog::Firmware;

/// What `autoprov check` found.
#[derive(Debug, Default)]
pub struct SiteCheck {
    /// Every diagnostic line, in the order `autoprov check` prints them.
    pub lines: Vec<String>,
    /// How many of them are errors.
    pub errors: usize,
    /// The configuration, when it could be parsed.
    pub config: Option<SiteConfig>,
}

/// Check the site in `dir` like `autoprov check`: configuration, firmware manifest and targets,
/// vendor templates, snippet directory.
pub fn check(dir: &Path) -> SiteCheck {
    let path = dir.join(CONFIG_FILE);
    let shown = path.display().to_string();
    let mut c = SiteCheck::default();
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) => {
            c.lines.push(format!("{shown}: error: cannot read: {e}"));
            c.errors = 1;
            return c;
        }
    };
    let (config, diags) = validate_text(&shown, &text);
    c.lines.extend(diags.iter().map(|d| d.to_string()));
    c.errors += diags.iter().filter(|d| d.is_error()).count();
    if let Some(config) = &config {
        c.errors += check_firmware(dir, &shown, &text, config, &mut c.lines);
        c.errors += check_vendor_templates(dir, &mut c.lines);
        if let Some(s) = autoprov_core::site::safe_join(dir, &config.times.dir) {
            if !s.is_dir() {
                c.lines.push(format!(
                    "{shown}: warning: snippet directory {} does not exist; devices will get no snippets",
                    s.display()
                ));
            }
        }
    }
    c.config = config;
    c
}

/// The firmware manifest and the targets' images; returns the number of errors.
fn check_firmware(
    site_dir: &Path,
    config_file: &str,
    config_text: &str,
    config: &SiteConfig,
    out: &mut Vec<String>,
) -> usize {
    let Some(dir) = autoprov_core::site::safe_join(site_dir, &config.firmware.dir) else {
        return 0; // already reported by the configuration check
    };
    let path = dir.join(MANIFEST_FILE);
    let manifest = match std::fs::read_to_string(&path) {
        Ok(text) => {
            let (m, diags) = validate_manifest(&path.display().to_string(), &text);
            out.extend(diags.iter().map(|d| d.to_string()));
            let errors = diags.iter().filter(|d| d.is_error()).count();
            match m {
                Some(m) if errors == 0 => m,
                _ => return errors.max(1),
            }
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => {
            out.push(format!("{}: error: cannot read: {e}", path.display()));
            return 1;
        }
    };
    let catalog = FirmwareCatalog::new(manifest, &config.firmware.targets);
    out.extend(
        check_firmware_images(config_file, config_text, config, &catalog)
            .iter()
            .map(|d| d.to_string()),
    );
    0
}

/// The site's vendor templates (`templates/<vendor>/<name>`): syntax errors are errors
/// (`file:line:1: error: ...`); a folder or file the server never reads is a warning.
/// Returns the number of errors.
fn check_vendor_templates(site: &Path, out: &mut Vec<String>) -> usize {
    use autoprov_core::vendors::{by_id, templates};
    let root = site.join("templates");
    let Ok(dirs) = std::fs::read_dir(&root) else {
        return 0;
    };
    let mut errors = 0;
    let mut entries: Vec<_> = dirs.flatten().map(|e| e.path()).collect();
    entries.sort();
    for vdir in entries.iter().filter(|p| p.is_dir()) {
        let vendor = vdir
            .file_name()
            .unwrap_or_default()
            .to_string_lossy()
            .to_string();
        if by_id(&vendor).is_none() {
            out.push(format!(
                "{}: warning: no vendor '{vendor}'; vendor template folders are {}",
                vdir.display(),
                autoprov_core::vendors::registry()
                    .iter()
                    .map(|v| v.id())
                    .collect::<Vec<_>>()
                    .join(", ")
            ));
            continue;
        }
        let Ok(files) = std::fs::read_dir(vdir) else {
            continue;
        };
        let mut files: Vec<_> = files.flatten().map(|e| e.path()).collect();
        files.sort();
        for f in files.iter().filter(|p| p.is_file()) {
            let name = f
                .file_name()
                .unwrap_or_default()
                .to_string_lossy()
                .to_string();
            let shown = f.display().to_string();
            if templates::shipped(&vendor, &name).is_none() {
                out.push(format!(
                    "{shown}: warning: not a {vendor} template name; it is never used"
                ));
                continue;
            }
            match std::fs::read_to_string(f) {
                Err(e) => {
                    errors += 1;
                    out.push(format!("{shown}: error: cannot read it as UTF-8 text: {e}"));
                }
                Ok(src) => {
                    if let Err(e) = templates::check_syntax(&shown, &name, &src) {
                        errors += 1;
                        out.push(format!(
                            "{}:{}:1: error: {}",
                            e.file,
                            e.line.unwrap_or(1),
                            e.message
                        ));
                    }
                }
            }
        }
    }
    errors
}

/// The outcome of a successful reload.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub struct ReloadReport {
    /// Settings that changed but are bound at start: they take effect after a restart.
    pub restart_needed: Vec<String>,
    /// Warnings of the check (the reload happened).
    pub warnings: Vec<String>,
}

/// Why a reload was refused: the check's diagnostics, one per line, as `autoprov check`
/// prints them. The running site stays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReloadError(pub String);

impl std::fmt::Display for ReloadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for ReloadError {}

/// Check the site in `dir` and build the new site and firmware catalogue (blocking file I/O).
/// `old` is the running site: start-bound settings that differ go to `restart_needed`.
pub fn prepare(
    dir: &Path,
    old: &Site,
    old_firmware: &Firmware,
) -> Result<(Site, Firmware, ReloadReport), ReloadError> {
    let c = check(dir);
    let config = match c.config {
        Some(config) if c.errors == 0 => config,
        _ => {
            let mut msg = c.lines.join("\n");
            if msg.is_empty() {
                msg = format!(
                    "{}: error: the site has errors",
                    dir.join(CONFIG_FILE).display()
                );
            }
            return Err(ReloadError(msg));
        }
    };
    let site = Site {
        dir: dir.to_path_buf(),
        config,
    };
    let firmware = Firmware::load(&site)
        .map_err(|e| ReloadError(format!("firmware catalogue: {e}")))?
        .keep_slots(old_firmware, &old.config.firmware, &site.config.firmware);
    let report = ReloadReport {
        restart_needed: restart_needed(&old.config, &site.config),
        warnings: c.lines,
    };
    Ok((site, firmware, report))
}

/// Start-bound settings that differ between `old` and `new`.
pub fn restart_needed(old: &SiteConfig, new: &SiteConfig) -> Vec<String> {
    let mut v = Vec::new();
    let mut cmp = |name: &str, changed: bool| {
        if changed {
            v.push(format!("{name} changed: needs a restart"));
        }
    };
    cmp("[server] listen", old.server.listen != new.server.listen);
    cmp(
        "[server] database",
        old.server.database != new.server.database,
    );
    cmp(
        "[server] state_batch_ms",
        old.server.state_batch_ms != new.server.state_batch_ms,
    );
    cmp(
        "[server] state_cache_mib",
        old.server.state_cache_mib != new.server.state_cache_mib,
    );
    cmp(
        "[server] render_cache_mib",
        old.server.render_cache_mib != new.server.render_cache_mib,
    );
    cmp(
        "[server] max_config_requests",
        old.server.max_config_requests != new.server.max_config_requests,
    );
    cmp(
        "[server] max_connections",
        old.server.max_connections != new.server.max_connections,
    );
    cmp(
        "[tls] https_listen",
        old.tls.https_listen != new.tls.https_listen,
    );
    cmp(
        "[tls] mtls_listen",
        old.tls.mtls_listen != new.tls.mtls_listen,
    );
    cmp("[tls] cert", old.tls.cert != new.tls.cert);
    cmp("[tls] key", old.tls.key != new.tls.key);
    cmp("[tls] client_ca", old.tls.client_ca != new.tls.client_ca);
    cmp("[sip]", old.sip != new.sip);
    cmp("[mdns]", old.mdns != new.mdns);
    cmp("[tftp]", old.tftp != new.tftp);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn start_bound_changes_are_listed() {
        let a = SiteConfig::default();
        let mut b = a.clone();
        assert!(restart_needed(&a, &b).is_empty());
        b.server.listen = vec!["0.0.0.0:9999".into()];
        b.tls.cert = "other.pem".into();
        b.phases.clear();
        let r = restart_needed(&a, &b);
        assert_eq!(r.len(), 2, "{r:?}");
        assert!(r[0].starts_with("[server] listen"));
        assert!(r[1].starts_with("[tls] cert"));
    }
}
