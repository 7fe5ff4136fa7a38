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

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use autoprov_core::innovaphone::{DynamicSnippets, MasterLookup, Ports, ScriptFile};
use autoprov_core::{DeviceState, Site};

use crate::app::MasterCache;
use crate::fsutil::{latin1_decode, mtime_secs};

pub struct SitePorts {
    site: Arc<Site>,
    runtime: tokio::runtime::Handle,
    http: reqwest::Client,
    master: MasterCache,
    scripts: Option<ScriptCache>,
}

/// Snippet files as last read, shared by all requests of a server. A poll asks for many
/// candidate files (phase × class × environment × device) of which few exist: instead of a
/// `stat` (and a read) each, the cache keeps each directory's listing, valid while the
/// directory's mtime is unchanged (creating, removing or renaming a file changes it), and
/// each existing file's content, valid while its mtime and size are unchanged. A listing or a
/// file whose mtime is younger than [`RACY`] is not trusted (timestamps are coarse: a change
/// within the same tick would go unseen), so what a device gets is always what is on disk.
/// Bounded by the files that exist, not by the devices asking.
#[derive(Clone, Default)]
pub struct ScriptCache(Arc<std::sync::Mutex<CacheInner>>);

#[derive(Default)]
struct CacheInner {
    dirs: HashMap<PathBuf, (SystemTime, Arc<HashSet<OsString>>)>,
    files: HashMap<PathBuf, (SystemTime, u64, ScriptFile)>,
}

/// Timestamps younger than this are too close to "now" to vouch for the content.
const RACY: Duration = Duration::from_millis(100);

fn settled(t: SystemTime) -> bool {
    SystemTime::now()
        .duration_since(t)
        .is_ok_and(|age| age >= RACY)
}

impl ScriptCache {
    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.0.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// [`read_script`] through the cache.
    pub fn read(&self, site: &Site, rel: &str) -> Option<ScriptFile> {
        let path = site.path(rel)?;
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return read_script(site, rel);
        };
        let Some(names) = self.listing(dir) else {
            return read_script(site, rel);
        };
        if !names.contains(name) {
            return None;
        }
        let meta = match std::fs::metadata(&path) {
            Ok(m) if m.is_file() => m,
            _ => return read_script(site, rel),
        };
        let Ok(mtime) = meta.modified() else {
            return read_script(site, rel);
        };
        if let Some((m, len, file)) = self.lock().files.get(&path) {
            if *m == mtime && *len == meta.len() {
                return Some(file.clone());
            }
        }
        let file = read_script(site, rel)?;
        if file.content.is_ok() && settled(mtime) {
            self.lock()
                .files
                .insert(path, (mtime, meta.len(), file.clone()));
        }
        Some(file)
    }

    /// The names in `dir`, from the cache while the directory's mtime is unchanged; `None`
    /// when the directory cannot be read (the caller reads the file directly).
    fn listing(&self, dir: &Path) -> Option<Arc<HashSet<OsString>>> {
        let mtime = std::fs::metadata(dir).ok()?.modified().ok()?;
        if let Some((m, names)) = self.lock().dirs.get(dir) {
            if *m == mtime {
                return Some(names.clone());
            }
        }
        let names: HashSet<OsString> = std::fs::read_dir(dir)
            .ok()?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        let names = Arc::new(names);
        if settled(mtime) {
            self.lock()
                .dirs
                .insert(dir.to_path_buf(), (mtime, names.clone()));
        }
        Some(names)
    }
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
            scripts: None,
        }
    }

    /// Read snippet files through `cache` (see [`ScriptCache`]).
    pub fn with_script_cache(mut self, cache: ScriptCache) -> SitePorts {
        self.scripts = Some(cache);
        self
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
        match &self.scripts {
            Some(cache) => cache.read(&self.site, rel_path),
            None => read_script(&self.site, rel_path),
        }
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

    /// The cache answers exactly what is on disk: changed content, new and removed files are
    /// seen on the next read, even within one timestamp tick.
    #[test]
    fn script_cache_follows_the_disk() {
        let t = tempfile::tempdir().unwrap();
        let s = site(t.path());
        let dir = t.path().join("scripts");
        std::fs::create_dir_all(&dir).unwrap();
        let cache = ScriptCache::default();
        let age = |p: &Path, secs: u64| {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(SystemTime::now() - Duration::from_secs(secs))
                .unwrap();
        };
        let read = |rel: &str| cache.read(&s, rel).map(|f| f.content.unwrap());
        std::fs::write(dir.join("a.txt"), "one\n").unwrap();
        age(&dir.join("a.txt"), 60);
        assert_eq!(read("scripts/a.txt").as_deref(), Some("one\n"));
        assert_eq!(read("scripts/none.txt"), None);
        // a file created right after a listing: seen at once
        std::fs::write(dir.join("b.txt"), "new\n").unwrap();
        assert_eq!(read("scripts/b.txt").as_deref(), Some("new\n"));
        // the same size, another mtime: the new content
        std::fs::write(dir.join("a.txt"), "two\n").unwrap();
        age(&dir.join("a.txt"), 30);
        assert_eq!(read("scripts/a.txt").as_deref(), Some("two\n"));
        // settled timestamps are cached, and still follow changes
        std::thread::sleep(RACY * 2);
        assert_eq!(read("scripts/b.txt").as_deref(), Some("new\n"));
        assert!(cache.lock().dirs.contains_key(&dir));
        std::fs::remove_file(dir.join("b.txt")).unwrap();
        assert_eq!(read("scripts/b.txt"), None);
        std::fs::write(dir.join("a.txt"), "three\n").unwrap();
        assert_eq!(read("scripts/a.txt").as_deref(), Some("three\n"));
        // paths leaving the site are missing, as without the cache
        assert_eq!(read("../x.txt"), None);
    }
}
