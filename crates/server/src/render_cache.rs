//! Rendered vendor files, kept and reused while nothing they depend on changed.
//!
//! A vendor file is a pure function of: the site snapshot (settings, groups, `[devices]`,
//! vendor options), the device's identity (vendor, model, MAC, the file asked for, the
//! reported firmware), the firmware target (version and URL), the base URL of the request,
//! and the operator's template files. The cache key holds everything but the site and the
//! templates; the cache belongs to one site snapshot (a reload starts an empty one), and each
//! entry lists the template files it read with their identity (`mtime`, `ctime`, inode,
//! size, or "missing"), which a hit checks again with one `stat` each. A file whose
//! timestamps are too fresh to vouch for its content (changed within [`RACY`]) makes the
//! render uncacheable, as does a template error (the answer then depends on the "last good
//! version" history). The body is stored with its entity tag, so a conditional request that
//! hits costs no rendering and no hashing.
//!
//! Bounded by an estimated byte budget; beyond it arbitrary entries are dropped.

use foldhash::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use autoprov_core::Site;

/// Changes younger than this are not trusted to show in the timestamps.
const RACY: Duration = Duration::from_millis(100);
/// Default byte budget of a cache.
pub const DEFAULT_BUDGET: usize = 32 << 20;

/// What a template path looked like when it was read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileSig {
    Missing,
    Present {
        mtime_ns: i128,
        ctime_ns: i128,
        ino: u64,
        len: u64,
    },
    /// Changed too recently (or unreadable metadata): never matches.
    Unknown,
}

impl FileSig {
    /// The signature of `path` now.
    pub fn of(path: &std::path::Path) -> FileSig {
        match std::fs::metadata(path) {
            Ok(m) => {
                let ns = |s: i64, n: i64| i128::from(s) * 1_000_000_000 + i128::from(n);
                let mtime_ns = ns(m.mtime(), m.mtime_nsec());
                let ctime_ns = ns(m.ctime(), m.ctime_nsec());
                let now = SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_nanos() as i128);
                if now - mtime_ns.max(ctime_ns) < RACY.as_nanos() as i128 {
                    return FileSig::Unknown;
                }
                FileSig::Present {
                    mtime_ns,
                    ctime_ns,
                    ino: m.ino(),
                    len: m.size(),
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => FileSig::Missing,
            Err(e) if e.raw_os_error() == Some(libc::ENOTDIR) => FileSig::Missing,
            Err(_) => FileSig::Unknown,
        }
    }
}

/// One cached answer.
#[derive(Debug)]
pub struct Entry {
    pub body: bytes::Bytes,
    pub content_type: &'static str,
    /// The entity tag as sent (kept as a header value: answering costs no validation and
    /// no copy).
    pub etag: axum::http::HeaderValue,
    deps: Vec<(PathBuf, FileSig)>,
}

impl Entry {
    /// An answer and the template files it was rendered from. `etag` must be a valid header
    /// value (a quoted hex digest); anything else is sent as the digest of nothing.
    pub fn new(
        body: Vec<u8>,
        content_type: &'static str,
        etag: String,
        deps: Vec<(PathBuf, FileSig)>,
    ) -> Entry {
        Entry {
            body: bytes::Bytes::from(body),
            content_type,
            etag: axum::http::HeaderValue::try_from(etag)
                .unwrap_or_else(|_| axum::http::HeaderValue::from_static("\"\"")),
            deps,
        }
    }
}

#[derive(Default)]
struct Inner {
    site: Option<Arc<Site>>,
    entries: HashMap<String, (Arc<Entry>, usize)>,
    bytes: usize,
}

/// The cache of one server (see the module docs). Cheap to clone.
#[derive(Clone)]
pub struct RenderCache {
    inner: Arc<Mutex<Inner>>,
    budget: usize,
}

impl Default for RenderCache {
    fn default() -> Self {
        RenderCache::with_budget(DEFAULT_BUDGET)
    }
}

impl RenderCache {
    pub fn with_budget(budget: usize) -> RenderCache {
        RenderCache {
            inner: Arc::default(),
            budget,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry for `key` rendered for `site`, if its template files are unchanged.
    pub fn get(&self, site: &Arc<Site>, key: &str) -> Option<Arc<Entry>> {
        let entry = {
            let inner = self.lock();
            if !inner.site.as_ref().is_some_and(|s| Arc::ptr_eq(s, site)) {
                return None;
            }
            inner.entries.get(key).map(|(e, _)| e.clone())?
        };
        // Checked outside the lock: stats may take a moment.
        if entry
            .deps
            .iter()
            .all(|(path, sig)| *sig != FileSig::Unknown && FileSig::of(path) == *sig)
        {
            Some(entry)
        } else {
            let mut inner = self.lock();
            if let Some((_, size)) = inner.entries.remove(key) {
                inner.bytes -= size;
            }
            None
        }
    }

    /// Keep `entry` as the answer for `key` under `site`, unless it is not `cacheable` or a
    /// dependency cannot vouch for it. Returns the entry (kept or not) to answer with.
    pub fn put(&self, site: &Arc<Site>, key: String, entry: Entry, cacheable: bool) -> Arc<Entry> {
        let cacheable =
            cacheable && self.budget > 0 && entry.deps.iter().all(|(_, s)| *s != FileSig::Unknown);
        let size = 256 + key.len() + entry.body.len() + entry.etag.len() + entry.deps.len() * 128;
        let entry = Arc::new(entry);
        if !cacheable || size > self.budget / 4 {
            return entry;
        }
        let mut inner = self.lock();
        if !inner.site.as_ref().is_some_and(|s| Arc::ptr_eq(s, site)) {
            // A new site snapshot: everything rendered for the old one goes.
            *inner = Inner {
                site: Some(site.clone()),
                ..Inner::default()
            };
        }
        if let Some((_, old)) = inner.entries.insert(key, (entry.clone(), size)) {
            inner.bytes -= old;
        }
        inner.bytes += size;
        if inner.bytes > self.budget {
            let target = self.budget / 10 * 9;
            let mut gone = Vec::new();
            let mut bytes = inner.bytes;
            for (k, (_, s)) in &inner.entries {
                if bytes <= target {
                    break;
                }
                bytes -= s;
                gone.push(k.clone());
            }
            for k in gone {
                if let Some((_, s)) = inner.entries.remove(&k) {
                    inner.bytes -= s;
                }
            }
        }
        entry
    }

    /// Drop every entry.
    pub fn clear(&self) {
        *self.lock() = Inner::default();
    }

    /// Entries and estimated bytes (for tests).
    pub fn usage(&self) -> (usize, usize) {
        let inner = self.lock();
        (inner.entries.len(), inner.bytes)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(dir: &std::path::Path) -> Arc<Site> {
        Arc::new(Site {
            dir: dir.to_path_buf(),
            config: autoprov_core::SiteConfig::default(),
        })
    }

    #[test]
    fn entries_follow_their_template_files_and_the_site() {
        let t = tempfile::tempdir().unwrap();
        let s = site(t.path());
        let tpl = t.path().join("t.j2");
        let cache = RenderCache::default();
        let put = |deps: Vec<(PathBuf, FileSig)>, site: &Arc<Site>| {
            let e = Entry::new(b"body".to_vec(), "text/plain", "\"e\"".into(), deps);
            cache.put(site, "k".into(), e, true)
        };
        // a missing template stays valid while missing
        put(vec![(tpl.clone(), FileSig::of(&tpl))], &s);
        assert_eq!(cache.get(&s, "k").unwrap().body.as_ref(), b"body");
        std::fs::write(&tpl, "x").unwrap();
        assert!(
            cache.get(&s, "k").is_none(),
            "a created template invalidates"
        );
        // a fresh file cannot vouch for itself: not cached
        put(vec![(tpl.clone(), FileSig::of(&tpl))], &s);
        assert!(cache.get(&s, "k").is_none());
        std::thread::sleep(RACY * 2);
        put(vec![(tpl.clone(), FileSig::of(&tpl))], &s);
        assert!(cache.get(&s, "k").is_some());
        std::fs::write(&tpl, "y").unwrap(); // same size, within the same second
        assert!(
            cache.get(&s, "k").is_none(),
            "a rewritten template invalidates"
        );
        // another site snapshot never sees the old entries
        std::thread::sleep(RACY * 2);
        put(vec![(tpl.clone(), FileSig::of(&tpl))], &s);
        let other = site(t.path());
        assert!(cache.get(&other, "k").is_none());
        // uncacheable renders are answered but not kept
        let e = Entry::new(b"b".to_vec(), "text/plain", "\"u\"".into(), vec![]);
        let e = cache.put(&s, "u".into(), e, false);
        assert_eq!(e.body.as_ref(), b"b");
        assert!(cache.get(&s, "u").is_none());
    }

    #[test]
    fn bounded_by_its_budget() {
        let t = tempfile::tempdir().unwrap();
        let s = site(t.path());
        let cache = RenderCache::with_budget(100_000);
        for i in 0..1000 {
            let e = Entry::new(vec![b'x'; 500], "text/plain", "\"e\"".into(), vec![]);
            cache.put(&s, format!("k{i}"), e, true);
        }
        let (n, bytes) = cache.usage();
        assert!((80_000..=100_000).contains(&bytes), "{bytes}");
        assert!(n < 1000 && n > 50);
    }
}
