//! [`SitePorts`]: the engine's [`Ports`] for a real site directory.
//!
//! Snippet files and certificate files are read from the site directory (paths that would
//! leave it are treated as missing); the master lookup is [`crate::master`]; dynamic snippets
//! are [`crate::hook`]. Used by the server and by `autoprov simulate`.
//!
//! The methods are synchronous: network and process I/O is spawned on the tokio runtime given
//! to [`SitePorts::new`] and waited for. Call them on a blocking thread
//! (`tokio::task::spawn_blocking` or a plain thread), never from inside an async task, and
//! keep that runtime running meanwhile (a multi-thread runtime, or a current-thread runtime
//! whose `block_on` is active). No decisions are taken here.

use std::io::ErrorKind;
use std::sync::Arc;

use autoprov_core::innovaphone::{DynamicSnippets, MasterLookup, Ports, ScriptFile};
use autoprov_core::{DeviceState, Site};

use crate::app::MasterCache;
use crate::fsutil::{latin1_decode, mtime_secs};

pub struct SitePorts {
    site: Arc<Site>,
    runtime: tokio::runtime::Handle,
    http: reqwest::Client,
    master: MasterCache,
}

impl SitePorts {
    pub fn new(
        site: Arc<Site>,
        runtime: tokio::runtime::Handle,
        http: reqwest::Client,
        master: MasterCache,
    ) -> SitePorts {
        SitePorts {
            site,
            runtime,
            http,
            master,
        }
    }

    /// Ports with their own HTTP client and master cache handle (for `autoprov simulate`).
    /// See the module docs for the runtime requirements.
    pub fn standalone(site: Arc<Site>, runtime: tokio::runtime::Handle) -> SitePorts {
        SitePorts::new(
            site,
            runtime,
            reqwest::Client::new(),
            MasterCache::default(),
        )
    }
}

/// Read a snippet file: `None` when missing, its content as UTF-8 or (otherwise) ISO-8859-1,
/// or the reason it exists but cannot be read.
pub fn read_script(site: &Site, rel: &str) -> Option<ScriptFile> {
    let path = site.path(rel)?;
    let meta = match std::fs::metadata(&path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
            return None
        }
        Err(e) => {
            return Some(ScriptFile {
                mtime: 0,
                content: Err(e.to_string()),
            })
        }
    };
    let mtime = mtime_secs(&meta);
    if meta.is_dir() {
        return Some(ScriptFile {
            mtime,
            content: Err("is a directory".to_string()),
        });
    }
    // Bytes as they are (ISO-8859-1 view): the device gets exactly the file's bytes.
    let content = std::fs::read(&path)
        .map(|b| latin1_decode(&b))
        .map_err(|e| e.to_string());
    Some(ScriptFile { mtime, content })
}

impl Ports for SitePorts {
    fn script(&mut self, rel_path: &str) -> Option<ScriptFile> {
        read_script(&self.site, rel_path)
    }

    fn master(&mut self) -> MasterLookup {
        crate::master::lookup(
            &self.site,
            &self.runtime,
            &self.http,
            &self.master,
            crate::app::now(),
        )
    }

    fn dynamic(&mut self, state: &DeviceState) -> Result<DynamicSnippets, String> {
        crate::hook::dynamic(&self.site, &self.runtime, &self.http, state)
    }

    fn file_exists(&mut self, rel_path: &str) -> bool {
        self.site.path(rel_path).is_some_and(|p| p.exists())
    }

    fn read_file(&mut self, rel_path: &str) -> Option<Vec<u8>> {
        let path = self.site.path(rel_path)?;
        std::fs::read(path).ok()
    }

    fn list_files(&mut self, dir: &str, pattern: &str) -> Vec<String> {
        list_files(&self.site, dir, pattern)
    }

    fn reverse_dns(&mut self, ip: &str) -> Option<String> {
        let ip: std::net::IpAddr = ip.parse().ok()?;
        dns_lookup::lookup_addr(&ip)
            .ok()
            .filter(|name| name.parse::<std::net::IpAddr>().is_err())
    }
}

/// The files directly in the site folder `dir` whose names match `pattern` (a shell pattern,
/// see [`autoprov_core::innovaphone::glob_match`]), as `dir/name`, sorted by name. Hidden
/// temporary files of atomic writes are never listed.
pub fn list_files(site: &Site, dir: &str, pattern: &str) -> Vec<String> {
    let Some(path) = site.path(dir) else {
        return Vec::new();
    };
    let Ok(rd) = std::fs::read_dir(path) else {
        return Vec::new();
    };
    let mut names: Vec<String> = rd
        .filter_map(|e| e.ok())
        .filter(|e| e.file_type().is_ok_and(|t| t.is_file()))
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| !n.starts_with('.') && autoprov_core::innovaphone::glob_match(pattern, n))
        .collect();
    names.sort();
    names
        .into_iter()
        .map(|n| format!("{}/{n}", dir.trim_end_matches('/')))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(dir: &std::path::Path) -> Site {
        Site {
            dir: dir.to_path_buf(),
            config: autoprov_core::SiteConfig::default(),
        }
    }

    #[test]
    fn scripts() {
        let t = tempfile::tempdir().unwrap();
        let s = site(t.path());
        std::fs::create_dir_all(t.path().join("scripts/sub")).unwrap();
        std::fs::write(t.path().join("scripts/a.txt"), "config add X\r\n").unwrap();
        std::fs::write(t.path().join("scripts/l1.txt"), [b'n', 0xe4, b'\n']).unwrap();
        let a = read_script(&s, "scripts/a.txt").unwrap();
        assert_eq!(a.content.unwrap(), "config add X\r\n");
        assert!(a.mtime > 0);
        assert_eq!(
            read_script(&s, "scripts/l1.txt").unwrap().content.unwrap(),
            "nä\n"
        );
        assert!(read_script(&s, "scripts/none.txt").is_none());
        assert!(read_script(&s, "../etc/passwd").is_none());
        assert!(read_script(&s, "scripts/sub").unwrap().content.is_err());
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let mut p = SitePorts::standalone(Arc::new(s), rt.handle().clone());
        assert!(p.file_exists("scripts/a.txt"));
        assert!(!p.file_exists("scripts/b.txt"));
        assert!(!p.file_exists("/etc/passwd"));
        assert_eq!(p.read_file("scripts/a.txt").unwrap(), b"config add X\r\n");
        assert!(p.read_file("../etc/passwd").is_none());
        std::fs::write(t.path().join("scripts/CAkey-02.cer"), "b").unwrap();
        std::fs::write(t.path().join("scripts/CAkey-01.cer"), "a").unwrap();
        std::fs::write(t.path().join("scripts/.CAkey-03.cer.tmp"), "c").unwrap();
        assert_eq!(
            p.list_files("scripts", "CAkey*"),
            vec!["scripts/CAkey-01.cer", "scripts/CAkey-02.cer"]
        );
        assert!(p.list_files("nosuch", "*").is_empty());
        assert!(p.list_files("..", "*").is_empty());
    }
}
