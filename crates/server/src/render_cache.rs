//! Rendered vendor files, kept and reused while nothing they depend on changed.
//!
//! A vendor file is a pure function of: the site snapshot (settings, groups, `[devices]`,
//! vendor options), the device's identity (vendor, model, MAC, the file asked for, the
//! reported firmware), the firmware target (version and URL), the base URL of the request,
//! and the operator's template files. The cache key holds everything but the site and the
//! templates; the cache belongs to one site snapshot (a reload starts an empty one), and each
//! entry lists the template files it read with their identity (`mtime`, `ctime`, inode,
//! size, or "missing"), which a hit checks again with one `stat` each, unless the server's
//! inotify watches vouch for them (the directories holding them watched before they were
//! last checked, nothing changed in a watched directory since: the snippet cache's
//! generation, drained at the start of the request, is the one recorded): then a hit costs
//! no `stat` at all. A file whose
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
/// [`Entry::vouched`] of an entry inotify cannot vouch for.
const NEVER_VOUCHED: u64 = u64::MAX;
/// Default byte budget of a cache.
pub const DEFAULT_BUDGET: usize = 64 << 20;

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
        #[cfg(test)]
        tests::STATS.with(|c| c.set(c.get() + 1));
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
    /// The snippet cache's generation (plus one) at which inotify vouched for `deps` after
    /// they were last checked; 0: never (see [`RenderCache::get`]).
    vouched: std::sync::atomic::AtomicU64,
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
            vouched: std::sync::atomic::AtomicU64::new(0),
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
    /// The server's snippet cache, whose inotify watches spare a hit its `stat`s.
    watch: Option<crate::ports::ScriptCache>,
    /// Lookups answered from the cache, and not (see [`RenderCache::lookups`]).
    counts: Arc<[std::sync::atomic::AtomicU64; 2]>,
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
            watch: None,
            counts: Arc::default(),
        }
    }

    /// Validate entries through the inotify watches of `scripts` where they can vouch (see
    /// [`RenderCache::get`]).
    pub fn watched_by(mut self, scripts: crate::ports::ScriptCache) -> RenderCache {
        self.watch = Some(scripts);
        self
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The entry for `key` rendered for `site`, if its template files are unchanged.
    pub fn get(&self, site: &Arc<Site>, key: &str) -> Option<Arc<Entry>> {
        let found = self.lookup(site, key);
        self.counts[usize::from(found.is_none())]
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        found
    }

    /// Lookups so far: (hits, misses).
    pub fn lookups(&self) -> (u64, u64) {
        let load = |i: usize| self.counts[i].load(std::sync::atomic::Ordering::Relaxed);
        (load(0), load(1))
    }

    fn lookup(&self, site: &Arc<Site>, key: &str) -> Option<Arc<Entry>> {
        let entry = {
            let inner = self.lock();
            if !inner.site.as_ref().is_some_and(|s| Arc::ptr_eq(s, site)) {
                return None;
            }
            inner.entries.get(key).map(|(e, _)| e.clone())?
        };
        if entry.deps.is_empty() {
            return Some(entry);
        }
        // Vouched for by inotify since the last check, and nothing changed since in the
        // watched directories (the queue drained first: a change completed before this
        // request moved the generation): no `stat` at all.
        let vouched = entry.vouched.load(std::sync::atomic::Ordering::Acquire);
        let watch = self.watch.as_ref().filter(|_| vouched != NEVER_VOUCHED);
        if let Some(w) = watch {
            w.refresh();
            if vouched != 0 && vouched == w.generation().wrapping_add(1) {
                return Some(entry);
            }
        }
        // Watched first, then checked (outside the lock: stats may take a moment).
        let vouch = watch.map(|w| {
            let paths: Vec<&std::path::Path> =
                entry.deps.iter().map(|(p, _)| p.as_path()).collect();
            w.vouch(&site.dir, &paths)
        });
        if entry
            .deps
            .iter()
            .all(|(path, sig)| *sig != FileSig::Unknown && FileSig::of(path) == *sig)
        {
            let mark = match vouch {
                Some(Some(generation)) => Some(generation.wrapping_add(1)),
                // not to be asked again for this entry: `stat`s only, as without inotify
                Some(None) => Some(NEVER_VOUCHED),
                None => None,
            };
            if let Some(mark) = mark {
                entry
                    .vouched
                    .store(mark, std::sync::atomic::Ordering::Release);
            }
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

    thread_local! {
        /// `FileSig::of` calls on this thread.
        pub(super) static STATS: std::cell::Cell<u64> = const { std::cell::Cell::new(0) };
    }

    fn stats() -> u64 {
        STATS.with(|c| c.get())
    }

    #[test]
    fn watched_entries_are_checked_without_stat_until_a_watched_directory_changes() {
        let t = tempfile::tempdir().unwrap();
        let s = site(t.path());
        let dir = t.path().join("templates/yealink");
        std::fs::create_dir_all(&dir).unwrap();
        let tpl = dir.join("common.cfg");
        std::fs::write(&tpl, "a").unwrap();
        std::fs::write(t.path().join("autoprov.db"), "x").unwrap();
        // a missing file in an existing directory, and one whose directory is missing too
        let missing = dir.join("001565aabbcc.cfg");
        let deeper = t.path().join("templates/other/x.cfg");
        let scripts = crate::ports::ScriptCache::default();
        if !scripts.watching() {
            eprintln!("no inotify here: skipped");
            return;
        }
        let cache = RenderCache::default().watched_by(scripts);
        let put = || {
            std::thread::sleep(RACY * 2);
            let deps = [&tpl, &missing, &deeper]
                .iter()
                .map(|p| (p.to_path_buf(), FileSig::of(p)))
                .collect();
            let e = Entry::new(b"body".to_vec(), "text/plain", "\"e\"".into(), deps);
            cache.put(&s, "k".into(), e, true);
        };
        let vouched = || {
            let before = stats();
            let hit = cache.get(&s, "k").is_some();
            hit && stats() == before
        };
        put();
        assert!(
            cache.get(&s, "k").is_some(),
            "checked by stat, then vouched for"
        );
        assert!(vouched(), "a hit without any stat");
        assert!(vouched());
        // the database next to the templates is written all the time: no change for them
        std::fs::write(t.path().join("autoprov.db"), "y").unwrap();
        assert!(
            vouched(),
            "a write in the site directory is not a template change"
        );
        // a template rewritten in place, of the same size, at once
        std::fs::write(&tpl, "b").unwrap();
        assert!(
            cache.get(&s, "k").is_none(),
            "a changed template is seen at once"
        );
        put();
        assert!(cache.get(&s, "k").is_some());
        assert!(vouched());
        std::fs::write(&missing, "m").unwrap();
        assert!(
            cache.get(&s, "k").is_none(),
            "a created override is seen at once"
        );
        std::fs::remove_file(&missing).unwrap();
        put();
        assert!(cache.get(&s, "k").is_some());
        assert!(vouched());
        std::fs::create_dir_all(deeper.parent().unwrap()).unwrap();
        std::fs::write(&deeper, "d").unwrap();
        assert!(
            cache.get(&s, "k").is_none(),
            "a file created with its directory is seen at once"
        );
        // a symbolic link cannot be vouched for: stat on every hit
        std::fs::remove_file(&deeper).unwrap();
        std::os::unix::fs::symlink(&tpl, &deeper).unwrap();
        put();
        assert!(cache.get(&s, "k").is_some());
        let before = stats();
        assert!(cache.get(&s, "k").is_some());
        assert_eq!(stats() - before, 3, "each dependency checked");
    }

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
