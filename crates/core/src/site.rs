//! A loaded site: its directory and its validated configuration.
//!
//! Paths in the configuration (snippet dir, backup dir, cache, certificates) are relative to
//! the site directory; [`Site::path`] resolves them and refuses to leave the site.

use std::path::{Component, Path, PathBuf};

use crate::config::SiteConfig;
use crate::validate::{validate_text, Diagnostic};

/// The name of the configuration file inside a site directory.
pub const CONFIG_FILE: &str = "autoprov.toml";

#[derive(Debug, Clone)]
pub struct Site {
    pub dir: PathBuf,
    pub config: SiteConfig,
}

/// Why a site could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum SiteError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid { diagnostics: Vec<Diagnostic> },
}

impl Site {
    /// Read and validate `DIR/autoprov.toml`.
    pub fn load(dir: &Path) -> Result<Site, SiteError> {
        let path = dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).map_err(|source| SiteError::Read {
            path: path.clone(),
            source,
        })?;
        let (config, diagnostics) = validate_text(&path.display().to_string(), &text);
        match config {
            Some(mut config) if diagnostics.iter().all(|d| !d.is_error()) => {
                config.devices =
                    crate::settings::canonical_device_keys(std::mem::take(&mut config.devices));
                Ok(Site {
                    dir: dir.to_path_buf(),
                    config,
                })
            }
            _ => Err(SiteError::Invalid { diagnostics }),
        }
    }

    /// Resolve a site-relative path. Returns `None` for absolute paths or `..` components.
    pub fn path(&self, rel: &str) -> Option<PathBuf> {
        safe_join(&self.dir, rel)
    }
}

/// Join `rel` under `base`, refusing absolute paths, `..`, and Windows-style prefixes.
pub fn safe_join(base: &Path, rel: &str) -> Option<PathBuf> {
    if rel.is_empty() || rel.contains('\\') || rel.contains('\0') {
        return None;
    }
    let p = Path::new(rel);
    let mut out = base.to_path_buf();
    for c in p.components() {
        match c {
            Component::Normal(s) => out.push(s),
            Component::CurDir => {}
            _ => return None,
        }
    }
    Some(out)
}
