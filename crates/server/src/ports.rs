//! [`SitePorts`]: the engine's [`Ports`] for a real site directory.
//!
//! Snippet files and certificate files are read from the site directory (paths that would
//! leave it are treated as missing); the master lookup is [`crate::master`]; dynamic snippets
//! are [`crate::hook`]. Used by the server and by `autoprov simulate`.
//!
//! The server reads snippet files through a [`ScriptCache`] shared by all requests: on Linux
//! it learns of changes from inotify (drained once at the start of each request, so a request
//! sees every change completed before it began) and then answers without any `stat`; where
//! inotify cannot vouch for a directory (network or FUSE file systems, no watches left...) it
//! validates each read by the directory's and the file's mtime, as before.
//!
//! The methods are synchronous: network and process I/O is spawned on the tokio runtime given
//! to [`SitePorts::new`] and waited for. Call them on a blocking thread
//! (`tokio::task::spawn_blocking` or a plain thread), never from inside an async task, and
//! keep that runtime running meanwhile (a multi-thread runtime, or a current-thread runtime
//! whose `block_on` is active). No decisions are taken here.

use foldhash::{HashMap, HashMapExt, HashSet, HashSetExt};
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
    /// Whether `scripts` was refreshed for this request (on the first snippet read).
    scripts_refreshed: bool,
    /// Running on an async task: ports that would wait (network, processes, DNS) are not
    /// used; they set `deferred` instead (see [`SitePorts::inline`]).
    inline: bool,
    deferred: bool,
}

/// Snippet files as last read, shared by all requests of a server. A poll asks for many
/// candidate files (phase × class × environment × device) of which few exist: instead of a
/// `stat` (and a read) each, the cache keeps each directory's listing (which names exist)
/// and each existing file's content.
///
/// How an entry is known to still match the disk depends on the directory:
///
/// * **Watched** (Linux, the usual case): the cache has one inotify instance; a directory's
///   listing is cached only after a watch was added on it and on each directory between the
///   site directory and it (so renaming or replacing one of them is seen too), and before it
///   is read. Each request drains the inotify queue once, at its start ([`Self::refresh`],
///   called by [`SitePorts`] on its first snippet read; [`Self::read`] drains itself): an
///   event for a directory drops its listing, the file it names, and anything cached below
///   that name; an overflowed queue or a failed read drops everything. Cached entries are
///   then used without any `stat`. This is exact: the kernel queues the event inside the
///   `write`/`rename`/`unlink`/... call, before it returns, so a request sees every change
///   that completed before it started, whatever the timestamps say.
/// * **Stat-validated** (the fallback): a listing is valid while the directory's mtime is
///   unchanged (creating, removing or renaming a file changes it), a file's content while
///   its mtime and size are unchanged, and a listing or file whose mtime is younger than
///   [`RACY`] is not cached (timestamps are coarse: a change within the same tick would go
///   unseen). Used when inotify cannot vouch for the directory: its file system (or one of
///   the directories leading to it) is not a known local one (NFS, SMB/CIFS, FUSE, Ceph,
///   9P, overlayfs...: changes made elsewhere raise no event here), a directory below the
///   site directory is a symbolic link, or the instance or a watch cannot be created (e.g.
///   the `max_user_watches` limit). Within a watched directory, symbolic links and files
///   with more than one hard link (a write through another name raises no event here) are
///   validated this way too.
///
/// Either way, what a device gets is what is on disk when its request started. Bounded by
/// the files that exist, not by the devices asking. Not noticed (in both modes): a file
/// system mounted over a cached directory, and (watched only) writes through a shared
/// `mmap` and a hard link made to a cached file after it was read; the site directory itself
/// is expected to stay in place (the database lives there too).
#[derive(Clone)]
pub struct ScriptCache(Arc<Shared>);

struct Shared {
    inner: std::sync::Mutex<CacheInner>,
    /// The inotify instance (also in [`Watches`], which adds and removes the watches).
    inotify: Option<Arc<sys::Inotify>>,
    /// Held while the inotify queue is read and what was read is applied, with the buffer
    /// events are read into: a refresh never holds `inner` across the system call, so that
    /// the lookups of other requests do not wait for it. A refresh that finds nothing
    /// still waits for one running alongside, which may hold events queued before it.
    drain: std::sync::Mutex<Box<[u8]>>,
    /// [`CacheInner::generation`], readable without the cache's lock (stored by
    /// [`ScriptCache::refresh`] under it).
    generation: std::sync::atomic::AtomicU64,
}

struct CacheInner {
    dirs: HashMap<PathBuf, Listing>,
    files: HashMap<PathBuf, CachedFile>,
    /// `None`: inotify is unavailable, every directory is stat-validated.
    watches: Option<Watches>,
    /// Bumped by every drain that saw an event. An entry read from disk is only inserted if
    /// no event was drained since before the read began: otherwise the event that should
    /// have dropped it may already have been consumed.
    generation: u64,
    /// Answers by the path the engine asked for, each vouched for by inotify alone (the
    /// listing and the file watched), for the site directory `memo_site` and as long as
    /// `generation` is `memo_generation`: a warm request answers a name with one hash
    /// lookup, without joining, splitting or hashing paths.
    memo: HashMap<Box<str>, Option<ScriptFile>>,
    /// Watched listings by the directory part of the asked path (`scripts` for
    /// `scripts/all-all-00_90_33_30_00_af.txt`), under the same rules as `memo`: a name
    /// missing from the listing is answered without a memo entry. Per-device snippet names
    /// (one per device, phase and class, nearly all absent) would otherwise fill the memo.
    memo_dirs: HashMap<Box<str>, Arc<Names>>,
    memo_site: PathBuf,
    memo_generation: u64,
}

/// Answers [`CacheInner::memo`] keeps at most (it is emptied when full).
const MEMO_CAPACITY: usize = 16_384;

struct Listing {
    check: DirCheck,
    names: Arc<Names>,
}

enum DirCheck {
    /// Valid until an event arrives for the directory (see [`ScriptCache`]).
    Watched,
    /// Valid while the directory's mtime is this.
    Mtime(SystemTime),
}

/// The names in a directory; `linked` are the symbolic links among them.
struct Names {
    all: HashSet<OsString>,
    linked: HashSet<OsString>,
}

struct CachedFile {
    check: FileCheck,
    file: ScriptFile,
}

enum FileCheck {
    /// Valid until an event arrives for the file's directory.
    Watched,
    /// Valid while the file's mtime and size are these.
    Stat(SystemTime, u64),
}

/// The inotify instance and what its watches stand for.
struct Watches {
    inotify: Arc<sys::Inotify>,
    /// Watch descriptor → the directories it watches (one inode may be reached twice, e.g.
    /// through a bind mount).
    by_wd: HashMap<i32, Vec<PathBuf>>,
    /// Directory → its watch descriptor and the events asked for.
    by_path: HashMap<PathBuf, (i32, u32)>,
}

/// Name changes: enough for a directory on the way to a cached one.
const PATH_EVENTS: u32 = sys::IN_CREATE
    | sys::IN_DELETE
    | sys::IN_MOVED_FROM
    | sys::IN_MOVED_TO
    | sys::IN_DELETE_SELF
    | sys::IN_MOVE_SELF;
/// Any change: for a directory whose listing and files are cached.
const CONTENT_EVENTS: u32 = PATH_EVENTS | sys::IN_MODIFY | sys::IN_CLOSE_WRITE | sys::IN_ATTRIB;
/// Events that add, remove or replace a name.
const NAME_EVENTS: u32 = sys::IN_CREATE | sys::IN_DELETE | sys::IN_MOVED_FROM | sys::IN_MOVED_TO;
/// Events after which a watch no longer stands for its path.
const GONE_EVENTS: u32 =
    sys::IN_DELETE_SELF | sys::IN_MOVE_SELF | sys::IN_IGNORED | sys::IN_UNMOUNT;

/// Timestamps younger than this are too close to "now" to vouch for the content.
const RACY: Duration = Duration::from_millis(100);

fn settled(t: SystemTime) -> bool {
    SystemTime::now()
        .duration_since(t)
        .is_ok_and(|age| age >= RACY)
}

/// File systems whose every change goes through this kernel, so that inotify sees it (from
/// `linux/magic.h`): ext2/3/4, XFS, Btrfs, tmpfs, ramfs, F2FS, ZFS, bcachefs, JFS, ReiserFS,
/// and overlayfs (containers; changes made through the overlay raise events, only edits of
/// a lower layer behind its back would not). Anything else (network and cluster file
/// systems, FUSE, 9P...) is stat-validated.
const LOCAL_FS: [u32; 11] = [
    0x794C_7630,
    0xEF53,
    0x5846_5342,
    0x9123_683E,
    0x0102_1994,
    0x8584_58F6,
    0xF2F5_2010,
    0x2FC1_2FC1,
    0xCA45_1A4E,
    0x3153_464A,
    0x5265_4973,
];

/// `std::fs::metadata`, counted in tests (to check that warm reads do none).
fn stat(path: &Path) -> std::io::Result<std::fs::Metadata> {
    #[cfg(test)]
    tests::STATS.with(|c| c.set(c.get() + 1));
    std::fs::metadata(path)
}

impl Default for ScriptCache {
    fn default() -> ScriptCache {
        let watches = match sys::Inotify::new() {
            Ok(inotify) => Some(Watches {
                inotify: Arc::new(inotify),
                by_wd: HashMap::new(),
                by_path: HashMap::new(),
            }),
            Err(e) => {
                tracing::info!("no inotify ({e}): snippet files are validated by their mtime");
                None
            }
        };
        ScriptCache::with_watches(watches)
    }
}

/// `rel` split at its last `/` (a byte loop: snippet paths are short, where `rsplit_once`
/// sets up a vectorised search).
fn split_last(rel: &str) -> Option<(&str, &str)> {
    let at = rel.bytes().rposition(|b| b == b'/')?;
    Some((&rel[..at], &rel[at + 1..]))
}

impl ScriptCache {
    fn with_watches(watches: Option<Watches>) -> ScriptCache {
        let inotify = watches.as_ref().map(|w| w.inotify.clone());
        ScriptCache(Arc::new(Shared {
            inotify,
            // kept, so that the drain every request does (which nearly always reads
            // nothing) does not clear a fresh buffer each time
            drain: std::sync::Mutex::new(vec![0; 4096].into_boxed_slice()),
            generation: std::sync::atomic::AtomicU64::new(0),
            inner: std::sync::Mutex::new(CacheInner {
                dirs: HashMap::new(),
                files: HashMap::new(),
                watches,
                generation: 0,
                memo: HashMap::new(),
                memo_dirs: HashMap::new(),
                memo_site: PathBuf::new(),
                memo_generation: 0,
            }),
        }))
    }

    /// A cache that validates everything by `stat` (as without inotify).
    #[cfg(test)]
    fn without_inotify() -> ScriptCache {
        ScriptCache::with_watches(None)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, CacheInner> {
        self.0.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Take in the changes made so far (drain the inotify queue): reads after this see every
    /// change that completed before it. Call once at the start of a request.
    pub fn refresh(&self) {
        let Some(inotify) = &self.0.inotify else {
            return;
        };
        let mut buf = self.0.drain.lock().unwrap_or_else(|p| p.into_inner());
        let mut events = Vec::new();
        let failed = loop {
            match inotify.read(&mut buf) {
                Ok(0) => break false,
                Ok(n) => sys::parse_events(&buf[..n], |wd, mask, name| {
                    events.push((wd, mask, name.map(OsString::from)))
                }),
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) if e.kind() == ErrorKind::WouldBlock => break false,
                Err(e) => {
                    tracing::warn!("reading inotify events: {e}");
                    break true;
                }
            }
        };
        if failed || !events.is_empty() {
            let mut inner = self.lock();
            inner.apply(events, failed);
            self.0
                .generation
                .store(inner.generation, std::sync::atomic::Ordering::Release);
        }
    }

    /// Whether inotify is available to this cache.
    #[cfg(test)]
    pub(crate) fn watching(&self) -> bool {
        self.lock().watches.is_some()
    }

    /// The count of drains that found events so far (see [`CacheInner::generation`]): read
    /// after [`Self::refresh`], it moves whenever something changed in a watched directory.
    pub fn generation(&self) -> u64 {
        self.0.generation.load(std::sync::atomic::Ordering::Acquire)
    }

    /// Make inotify vouch for the files `paths` in `site_dir` (existing or not): `Some` with
    /// the generation once the directory of each (for a path whose directory does not exist,
    /// its deepest existing ancestor, where creating it raises an event) is watched and each
    /// existing one is a plain file with a single link. Any change to one of them after this
    /// call moves the generation beyond the one returned: a caller that checks them (by
    /// `stat`) afterwards may trust its check for as long as [`Self::generation`] (after a
    /// refresh) still says the same. `None`: inotify cannot vouch for them (no inotify, a
    /// path outside `site_dir`, a symbolic link, a file system it cannot watch...).
    pub fn vouch(&self, site_dir: &Path, paths: &[&Path]) -> Option<u64> {
        let generation = {
            let mut inner = self.lock();
            inner.watches.as_ref()?;
            for path in paths {
                let mut dir = path.parent()?;
                // Its own directory: any change of a file in it. An ancestor standing in for
                // a missing one: the names created in it (the site directory, say, which
                // holds the database, whose writes must not count as changes).
                let mut events = CONTENT_EVENTS;
                loop {
                    if !dir.starts_with(site_dir) {
                        return None;
                    }
                    match std::fs::symlink_metadata(dir) {
                        Ok(m) if m.is_dir() => break,
                        Err(e) if e.kind() == ErrorKind::NotFound => {
                            dir = dir.parent()?;
                            events = PATH_EVENTS;
                        }
                        _ => return None,
                    }
                }
                if !inner.watch_for(site_dir, dir, events) {
                    return None;
                }
            }
            inner.generation
        };
        // Watched before looked at: a change after this look raises an event.
        for path in paths {
            match std::fs::symlink_metadata(path) {
                Ok(m) if m.is_file() && std::os::unix::fs::MetadataExt::nlink(&m) == 1 => {}
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                _ => return None,
            }
        }
        Some(generation)
    }

    /// [`read_script`] through the cache, as of now (refreshes first; a request reading
    /// many files calls [`Self::refresh`] once and then [`Self::read_refreshed`]).
    pub fn read(&self, site: &Site, rel: &str) -> Option<ScriptFile> {
        self.refresh();
        self.read_refreshed(site, rel)
    }

    /// [`read_script`] through the cache, as of the last [`Self::refresh`] (or later).
    pub fn read_refreshed(&self, site: &Site, rel: &str) -> Option<ScriptFile> {
        // `dir/name` with a plain last component: a name absent from `dir`'s watched
        // listing needs no path work at all.
        let split = split_last(rel)
            .filter(|(dir, name)| !dir.is_empty() && !matches!(*name, "" | "." | ".."));
        // The site directory compared as bytes: `Path`'s equality walks components.
        let site_dir = site.dir.as_os_str();
        let generation = {
            let mut inner = self.lock();
            if inner.memo_generation != inner.generation || inner.memo_site.as_os_str() != site_dir
            {
                inner.memo.clear();
                inner.memo_dirs.clear();
                inner.memo_generation = inner.generation;
                if inner.memo_site.as_os_str() != site_dir {
                    inner.memo_site = site.dir.clone();
                }
            }
            // A name missing from its directory's memoised listing first: most candidates
            // are (both memos are emptied together, so they never disagree).
            if let Some((dir, name)) = split {
                if let Some(names) = inner.memo_dirs.get(dir) {
                    if !names.all.contains(std::ffi::OsStr::new(name)) {
                        return None;
                    }
                }
            }
            if let Some(hit) = inner.memo.get(rel) {
                return hit.clone();
            }
            inner.generation
        };
        let (answer, vouched, listing) = self.read_unmemoised(site, rel);
        if vouched {
            let mut inner = self.lock();
            // No event drained since the read began (which might concern what it saw).
            if inner.generation == generation
                && inner.memo_generation == generation
                && inner.memo_site.as_os_str() == site_dir
            {
                match (split, listing) {
                    // Absent from a watched listing: the listing answers for every such name.
                    (Some((dir, _)), Some(names)) if answer.is_none() => {
                        if inner.memo_dirs.len() >= MEMO_CAPACITY {
                            inner.memo_dirs.clear();
                        }
                        inner.memo_dirs.insert(dir.into(), names);
                    }
                    _ => {
                        if inner.memo.len() >= MEMO_CAPACITY {
                            inner.memo.clear();
                        }
                        inner.memo.insert(rel.into(), answer.clone());
                    }
                }
            }
        }
        answer
    }

    /// [`Self::read_refreshed`] without the memo; `true` when inotify vouches for the answer
    /// (see [`CacheInner::memo`]), and the watched listing that found the name absent when
    /// the asked path's last component is the name looked up.
    fn read_unmemoised(
        &self,
        site: &Site,
        rel: &str,
    ) -> (Option<ScriptFile>, bool, Option<Arc<Names>>) {
        let Some(path) = site.path(rel) else {
            // Refused by its spelling alone: always the same answer.
            return (None, true, None);
        };
        let (Some(dir), Some(name)) = (path.parent(), path.file_name()) else {
            return (read_script(site, rel), false, None);
        };
        let Some((names, watched)) = self.listing(&site.dir, dir) else {
            return (read_script(site, rel), false, None);
        };
        if !names.all.contains(name) {
            let asked = rel.rsplit_once('/').map(|(_, n)| n);
            let listing = (watched && asked == name.to_str()).then_some(names);
            return (None, watched, listing);
        }
        if watched && !names.linked.contains(name) {
            let generation = {
                let inner = self.lock();
                match inner.files.get(&path) {
                    Some(CachedFile {
                        check: FileCheck::Watched,
                        file,
                    }) => return (Some(file.clone()), true, None),
                    // more than one hard link: validated by stat, below
                    Some(CachedFile {
                        check: FileCheck::Stat(..),
                        ..
                    }) => None,
                    None => Some(inner.generation),
                }
            };
            if let Some(generation) = generation {
                let Some((file, meta)) = read_script_meta(&path) else {
                    return (None, false, None);
                };
                let mut vouched = false;
                if let (Ok(_), Some(meta)) = (&file.content, meta) {
                    let check = if std::os::unix::fs::MetadataExt::nlink(&meta) == 1 {
                        Some(FileCheck::Watched)
                    } else {
                        meta.modified()
                            .ok()
                            .filter(|m| settled(*m))
                            .map(|m| FileCheck::Stat(m, meta.len()))
                    };
                    if let Some(check) = check {
                        let mut inner = self.lock();
                        if inner.generation == generation {
                            vouched = matches!(check, FileCheck::Watched);
                            let file = file.clone();
                            inner.files.insert(path, CachedFile { check, file });
                        }
                    }
                }
                return (Some(file), vouched, None);
            }
        }
        (self.read_stat_validated(site, rel, path), false, None)
    }

    /// A file validated by its mtime and size.
    fn read_stat_validated(&self, site: &Site, rel: &str, path: PathBuf) -> Option<ScriptFile> {
        let meta = match stat(&path) {
            Ok(m) if m.is_file() => m,
            _ => return read_script(site, rel),
        };
        let Ok(mtime) = meta.modified() else {
            return read_script(site, rel);
        };
        if let Some(CachedFile {
            check: FileCheck::Stat(m, len),
            file,
        }) = self.lock().files.get(&path)
        {
            if *m == mtime && *len == meta.len() {
                return Some(file.clone());
            }
        }
        let file = read_script(site, rel)?;
        if file.content.is_ok() && settled(mtime) {
            let check = FileCheck::Stat(mtime, meta.len());
            let cached = CachedFile {
                check,
                file: file.clone(),
            };
            self.lock().files.insert(path, cached);
        }
        Some(file)
    }

    /// The names in `dir` (a directory in `site_dir`, or itself), and whether they are
    /// watched; `None` when the directory cannot be read (the caller reads the file directly).
    fn listing(&self, site_dir: &Path, dir: &Path) -> Option<(Arc<Names>, bool)> {
        let generation = {
            let mut inner = self.lock();
            match inner.dirs.get(dir) {
                Some(Listing {
                    check: DirCheck::Watched,
                    names,
                }) => return Some((names.clone(), true)),
                Some(Listing {
                    check: DirCheck::Mtime(_),
                    ..
                }) => None,
                None => inner.watch(site_dir, dir).then_some(inner.generation),
            }
        };
        let Some(generation) = generation else {
            return self.stat_listing(dir).map(|names| (names, false));
        };
        // watched before read: a change after this reading raises an event
        let names = Arc::new(read_names(dir)?);
        let mut inner = self.lock();
        if inner.generation == generation {
            let listing = Listing {
                check: DirCheck::Watched,
                names: names.clone(),
            };
            inner.dirs.insert(dir.to_path_buf(), listing);
        }
        Some((names, true))
    }

    /// The names in `dir`, from the cache while the directory's mtime is unchanged.
    fn stat_listing(&self, dir: &Path) -> Option<Arc<Names>> {
        let mtime = stat(dir).ok()?.modified().ok()?;
        if let Some(Listing {
            check: DirCheck::Mtime(m),
            names,
        }) = self.lock().dirs.get(dir)
        {
            if *m == mtime {
                return Some(names.clone());
            }
        }
        let names = Arc::new(read_names(dir)?);
        if settled(mtime) {
            let listing = Listing {
                check: DirCheck::Mtime(mtime),
                names: names.clone(),
            };
            self.lock().dirs.insert(dir.to_path_buf(), listing);
        }
        Some(names)
    }
}

fn read_names(dir: &Path) -> Option<Names> {
    let mut names = Names {
        all: HashSet::new(),
        linked: HashSet::new(),
    };
    for e in std::fs::read_dir(dir).ok()?.flatten() {
        let name = e.file_name();
        // the type comes with the entry (d_type) on local file systems
        if e.file_type().is_ok_and(|t| t.is_symlink()) {
            names.linked.insert(name.clone());
        }
        names.all.insert(name);
    }
    Some(names)
}

impl CacheInner {
    /// Make sure `dir` (in `site_dir`, or itself) and the directories leading to it are
    /// watched; `false` when inotify cannot vouch for it (see [`ScriptCache`]).
    fn watch(&mut self, site_dir: &Path, dir: &Path) -> bool {
        self.watch_for(site_dir, dir, CONTENT_EVENTS)
    }

    /// [`Self::watch`] asking `last` of `dir` itself ([`PATH_EVENTS`] for a directory only
    /// the creation of a name in it matters for).
    fn watch_for(&mut self, site_dir: &Path, dir: &Path, last_events: u32) -> bool {
        let Some(w) = &mut self.watches else {
            return false;
        };
        let Ok(below) = dir.strip_prefix(site_dir) else {
            return false;
        };
        let mut path = site_dir.to_path_buf();
        let mut chain = vec![path.clone()];
        for c in below.components() {
            path.push(c);
            chain.push(path.clone());
        }
        let last = chain.len() - 1;
        for (i, p) in chain.into_iter().enumerate() {
            let want = if i == last { last_events } else { PATH_EVENTS };
            let have = match w.by_path.get(&p) {
                Some((_, have)) if have & want == want => continue,
                Some((_, have)) => *have,
                None => {
                    // the site directory itself may be a link (it is expected to stay put)
                    let link =
                        i > 0 && std::fs::symlink_metadata(&p).map_or(true, |m| m.is_symlink());
                    if link || !sys::fs_type(&p).is_ok_and(|t| LOCAL_FS.contains(&t)) {
                        return false;
                    }
                    0
                }
            };
            let wd = match w
                .inotify
                .add_watch(&p, want | sys::IN_MASK_ADD | sys::IN_ONLYDIR)
            {
                Ok(wd) => wd,
                Err(e) => {
                    tracing::debug!("cannot watch {}: {e}", p.display());
                    return false;
                }
            };
            let paths = w.by_wd.entry(wd).or_default();
            if !paths.contains(&p) {
                paths.push(p.clone());
            }
            w.by_path.insert(p, (wd, have | want));
        }
        true
    }

    /// Take in the events [`ScriptCache::refresh`] read (see [`ScriptCache`]); `failed`: the
    /// queue could not be read, some may be lost.
    fn apply(&mut self, events: Vec<(i32, u32, Option<OsString>)>, failed: bool) {
        self.generation += 1;
        if failed {
            self.dirs.clear();
            self.files.clear();
            return;
        }
        for (wd, mask, name) in events {
            self.event(wd, mask, name);
        }
    }

    fn event(&mut self, wd: i32, mask: u32, name: Option<OsString>) {
        if mask & sys::IN_Q_OVERFLOW != 0 {
            self.dirs.clear();
            self.files.clear();
            return;
        }
        let Some(w) = &self.watches else {
            return;
        };
        let Some(paths) = w.by_wd.get(&wd).cloned() else {
            return;
        };
        for dir in paths {
            match &name {
                Some(name) => {
                    let child = dir.join(name);
                    self.files.remove(&child);
                    if mask & NAME_EVENTS != 0 {
                        self.dirs.remove(&dir);
                    }
                    if mask & (NAME_EVENTS | sys::IN_ISDIR) != 0 {
                        // what was reached through that name may be another directory now
                        self.forget(&child, mask & NAME_EVENTS != 0);
                    }
                }
                None => self.forget(&dir, mask & GONE_EVENTS != 0),
            }
        }
        if mask & sys::IN_IGNORED != 0 {
            // the kernel dropped the watch (its mappings went with GONE_EVENTS above)
            if let Some(w) = &mut self.watches {
                w.by_wd.remove(&wd);
            }
        }
    }

    /// Drop what is cached in and below `dir`, and with `unwatch` the watches standing for
    /// those paths (they may name other inodes now).
    fn forget(&mut self, dir: &Path, unwatch: bool) {
        self.dirs.retain(|p, _| !p.starts_with(dir));
        self.files.retain(|p, _| !p.starts_with(dir));
        let Some(w) = &mut self.watches else {
            return;
        };
        if !unwatch {
            return;
        }
        let gone: Vec<(PathBuf, i32)> = w
            .by_path
            .iter()
            .filter(|(p, _)| p.starts_with(dir))
            .map(|(p, (wd, _))| (p.clone(), *wd))
            .collect();
        for (p, wd) in gone {
            w.by_path.remove(&p);
            if let Some(paths) = w.by_wd.get_mut(&wd) {
                paths.retain(|q| *q != p);
                if paths.is_empty() {
                    w.by_wd.remove(&wd);
                    w.inotify.rm_watch(wd);
                }
            }
        }
    }
}

/// The unsafe part: the inotify and `statfs` system calls.
#[cfg(target_os = "linux")]
mod sys {
    use std::ffi::{CString, OsStr};
    use std::io;
    use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    pub use libc::{
        IN_ATTRIB, IN_CLOSE_WRITE, IN_CREATE, IN_DELETE, IN_DELETE_SELF, IN_IGNORED, IN_ISDIR,
        IN_MASK_ADD, IN_MODIFY, IN_MOVED_FROM, IN_MOVED_TO, IN_MOVE_SELF, IN_ONLYDIR,
        IN_Q_OVERFLOW, IN_UNMOUNT,
    };

    /// An inotify instance (non-blocking, closed on drop).
    pub struct Inotify(OwnedFd);

    fn c_path(path: &Path) -> io::Result<CString> {
        CString::new(path.as_os_str().as_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))
    }

    impl Inotify {
        pub fn new() -> io::Result<Inotify> {
            // SAFETY: no pointers; the flags are valid for inotify_init1.
            let fd = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
            if fd < 0 {
                return Err(io::Error::last_os_error());
            }
            // SAFETY: `fd` was just returned open by inotify_init1 and is owned by nothing
            // else; the OwnedFd closes it exactly once.
            Ok(Inotify(unsafe { OwnedFd::from_raw_fd(fd) }))
        }

        /// Watch the directory `path` for `mask`; the watch descriptor.
        pub fn add_watch(&self, path: &Path, mask: u32) -> io::Result<i32> {
            let c = c_path(path)?;
            // SAFETY: the fd is open (owned by self); `c` is a NUL-terminated string that
            // outlives the call.
            let wd = unsafe { libc::inotify_add_watch(self.0.as_raw_fd(), c.as_ptr(), mask) };
            if wd < 0 {
                return Err(io::Error::last_os_error());
            }
            Ok(wd)
        }

        pub fn rm_watch(&self, wd: i32) {
            // SAFETY: the fd is open; a stale `wd` only makes the call fail (EINVAL).
            unsafe { libc::inotify_rm_watch(self.0.as_raw_fd(), wd) };
        }

        /// Queued events into `buf` (whole events only); `WouldBlock` when none.
        pub fn read(&self, buf: &mut [u8]) -> io::Result<usize> {
            // SAFETY: the fd is open; `buf` is valid for writes of `buf.len()` bytes.
            let n = unsafe { libc::read(self.0.as_raw_fd(), buf.as_mut_ptr().cast(), buf.len()) };
            usize::try_from(n).map_err(|_| io::Error::last_os_error())
        }
    }

    /// Each `struct inotify_event` in `buf`: its watch descriptor, mask and name.
    pub fn parse_events(buf: &[u8], mut f: impl FnMut(i32, u32, Option<&OsStr>)) {
        const HEADER: usize = 16; // wd, mask, cookie, len
        let mut rest = buf;
        while rest.len() >= HEADER {
            let word = |i: usize| [rest[i], rest[i + 1], rest[i + 2], rest[i + 3]];
            let wd = i32::from_ne_bytes(word(0));
            let mask = u32::from_ne_bytes(word(4));
            let len = u32::from_ne_bytes(word(12)) as usize;
            let Some(name) = rest.get(HEADER..HEADER + len) else {
                return;
            };
            let name = &name[..name.iter().position(|&b| b == 0).unwrap_or(len)];
            f(
                wd,
                mask,
                (!name.is_empty()).then(|| OsStr::from_bytes(name)),
            );
            rest = &rest[HEADER + len..];
        }
    }

    /// The file system type (`f_type` of `statfs`) of `path`.
    pub fn fs_type(path: &Path) -> io::Result<u32> {
        #[cfg(test)]
        super::tests::STATS.with(|c| c.set(c.get() + 1));
        let c = c_path(path)?;
        // SAFETY: an all-zero `statfs` is a valid value of this plain C struct.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        // SAFETY: `c` is NUL-terminated and `st` is a valid, writable statfs; both outlive
        // the call.
        if unsafe { libc::statfs(c.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // the magic numbers are 32 bits; `f_type`'s width varies by architecture
        #[allow(clippy::unnecessary_cast)]
        let magic = st.f_type as u32;
        Ok(magic)
    }
}

/// Without inotify: everything is stat-validated.
#[cfg(not(target_os = "linux"))]
mod sys {
    use std::ffi::OsStr;
    use std::io;
    use std::path::Path;

    pub const IN_MODIFY: u32 = 0x2;
    pub const IN_ATTRIB: u32 = 0x4;
    pub const IN_CLOSE_WRITE: u32 = 0x8;
    pub const IN_MOVED_FROM: u32 = 0x40;
    pub const IN_MOVED_TO: u32 = 0x80;
    pub const IN_CREATE: u32 = 0x100;
    pub const IN_DELETE: u32 = 0x200;
    pub const IN_DELETE_SELF: u32 = 0x400;
    pub const IN_MOVE_SELF: u32 = 0x800;
    pub const IN_UNMOUNT: u32 = 0x2000;
    pub const IN_Q_OVERFLOW: u32 = 0x4000;
    pub const IN_IGNORED: u32 = 0x8000;
    pub const IN_ONLYDIR: u32 = 0x0100_0000;
    pub const IN_MASK_ADD: u32 = 0x2000_0000;
    pub const IN_ISDIR: u32 = 0x4000_0000;

    pub struct Inotify;

    impl Inotify {
        pub fn new() -> io::Result<Inotify> {
            Err(io::ErrorKind::Unsupported.into())
        }
        pub fn add_watch(&self, _: &Path, _: u32) -> io::Result<i32> {
            Err(io::ErrorKind::Unsupported.into())
        }
        pub fn rm_watch(&self, _: i32) {}
        pub fn read(&self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    pub fn parse_events(_: &[u8], _: impl FnMut(i32, u32, Option<&OsStr>)) {}

    pub fn fs_type(_: &Path) -> io::Result<u32> {
        Err(io::ErrorKind::Unsupported.into())
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
            scripts_refreshed: false,
            inline: false,
            deferred: false,
        }
    }

    /// Ports for a run on an async task, which must not wait: a master lookup that needs
    /// the network, a dynamic snippet hook or a reverse DNS lookup is not done; the port
    /// answers as if it had nothing and [`SitePorts::deferred`] turns true, and the caller
    /// drops the result and runs the engine again with normal ports on a blocking thread.
    pub fn inline(mut self) -> SitePorts {
        self.inline = true;
        self
    }

    /// Whether an inline run needed a port that waits (its result must be discarded).
    pub fn deferred(&self) -> bool {
        self.deferred
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
    read_script_meta(&site.path(rel)?).map(|(file, _)| file)
}

/// [`read_script`] at `path`, with the metadata taken before reading it (`None` when it is
/// not a readable file).
fn read_script_meta(path: &Path) -> Option<(ScriptFile, Option<std::fs::Metadata>)> {
    let meta = match stat(path) {
        Ok(m) => m,
        Err(e) if e.kind() == ErrorKind::NotFound || e.kind() == ErrorKind::NotADirectory => {
            return None
        }
        Err(e) => {
            let file = ScriptFile {
                mtime: 0,
                content: Err(e.to_string()),
            };
            return Some((file, None));
        }
    };
    let mtime = mtime_secs(&meta);
    if meta.is_dir() {
        let file = ScriptFile {
            mtime,
            content: Err("is a directory".to_string()),
        };
        return Some((file, None));
    }
    // Bytes as they are (ISO-8859-1 view): the device gets exactly the file's bytes.
    let content = std::fs::read(path)
        .map(|b| latin1_decode(&b).into())
        .map_err(|e| e.to_string());
    let meta = (content.is_ok() && meta.is_file()).then_some(meta);
    Some((ScriptFile { mtime, content }, meta))
}

impl Ports for SitePorts {
    fn script(&mut self, rel_path: &str) -> Option<ScriptFile> {
        match &self.scripts {
            Some(cache) => {
                // one drain per request: changes completed before it started are seen
                if !self.scripts_refreshed {
                    cache.refresh();
                    self.scripts_refreshed = true;
                }
                cache.read_refreshed(&self.site, rel_path)
            }
            None => read_script(&self.site, rel_path),
        }
    }

    fn master(&mut self) -> MasterLookup {
        if self.inline && !crate::master::answers_at_once(&self.site, crate::app::now()) {
            self.deferred = true;
            return MasterLookup {
                notes: Vec::new(),
                builds: Err("deferred".into()),
            };
        }
        crate::master::lookup(
            &self.site,
            &self.runtime,
            &self.http,
            &self.master,
            crate::app::now(),
        )
    }

    fn dynamic(&mut self, state: &DeviceState) -> Result<DynamicSnippets, String> {
        let cfg = &self.site.config.scripting;
        if self.inline && !(cfg.hook_command.is_empty() && cfg.hook_url.is_empty()) {
            self.deferred = true;
            return Ok(DynamicSnippets::default());
        }
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
        if self.inline {
            self.deferred = true;
            return None;
        }
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

    thread_local! {
        /// `stat`s (and `statfs`s) done by the cache on this thread.
        pub(super) static STATS: std::cell::Cell<usize> = const { std::cell::Cell::new(0) };
    }

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
        assert_eq!(a.content.unwrap().to_string(), "config add X\r\n");
        assert!(a.mtime > 0);
        assert_eq!(
            read_script(&s, "scripts/l1.txt")
                .unwrap()
                .content
                .unwrap()
                .to_string(),
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
    fn split_last_cuts_at_the_last_slash() {
        assert_eq!(split_last("scripts/a.txt"), Some(("scripts", "a.txt")));
        assert_eq!(split_last("a/b/c"), Some(("a/b", "c")));
        assert_eq!(split_last("a/"), Some(("a", "")));
        assert_eq!(split_last("/a"), Some(("", "a")));
        assert_eq!(split_last("a.txt"), None);
        assert_eq!(split_last("ä/ö"), Some(("ä", "ö")));
    }

    #[test]
    fn script_cache_follows_the_disk() {
        follows_the_disk(ScriptCache::default());
    }

    /// The same without inotify: validated by `stat`.
    #[test]
    fn stat_validated_cache_follows_the_disk() {
        follows_the_disk(ScriptCache::without_inotify());
    }

    fn follows_the_disk(cache: ScriptCache) {
        let t = tempfile::tempdir().unwrap();
        let s = site(t.path());
        let dir = t.path().join("scripts");
        std::fs::create_dir_all(&dir).unwrap();
        let age = |p: &Path, secs: u64| {
            std::fs::File::options()
                .write(true)
                .open(p)
                .unwrap()
                .set_modified(SystemTime::now() - Duration::from_secs(secs))
                .unwrap();
        };
        let read = |rel: &str| cache.read(&s, rel).map(|f| f.content.unwrap().to_string());
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

    /// A temporary directory on a file system inotify is trusted on (`None`, after saying so,
    /// when there is none: these tests are then skipped).
    fn local_tempdir() -> Option<tempfile::TempDir> {
        for base in [std::env::temp_dir(), PathBuf::from("/dev/shm")] {
            if sys::fs_type(&base).is_ok_and(|t| LOCAL_FS.contains(&t)) {
                return Some(tempfile::tempdir_in(base).unwrap());
            }
        }
        eprintln!("no temporary directory on a local file system: skipped");
        None
    }

    fn is_watched(cache: &ScriptCache, dir: &Path) -> bool {
        matches!(
            cache.lock().dirs.get(dir),
            Some(Listing {
                check: DirCheck::Watched,
                ..
            })
        )
    }

    fn stats() -> usize {
        STATS.with(|c| c.replace(0))
    }

    /// Same size, same mtime, within the same second: only the inotify event tells, and a
    /// new request sees it.
    #[test]
    fn watched_cache_sees_same_size_rewrites() {
        let Some(t) = local_tempdir() else { return };
        let s = site(t.path());
        let dir = t.path().join("scripts");
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.txt");
        let cache = ScriptCache::default();
        let read = |rel: &str| {
            cache
                .read_refreshed(&s, rel)
                .map(|f| f.content.unwrap().to_string())
        };
        std::fs::write(&a, "one\n").unwrap();
        cache.refresh();
        assert_eq!(read("scripts/a.txt").as_deref(), Some("one\n"));
        assert!(is_watched(&cache, &dir));
        // cached at once (no racy-timestamp wait): the second read is served from memory
        stats();
        assert_eq!(read("scripts/a.txt").as_deref(), Some("one\n"));
        assert_eq!(stats(), 0);
        // rewritten (truncate + write), same length, no sleep
        std::fs::write(&a, "two\n").unwrap();
        cache.refresh();
        assert_eq!(read("scripts/a.txt").as_deref(), Some("two\n"));
        // overwritten in place with the size and mtime put back as they were: a stat could
        // not tell, the event does
        let before = std::fs::metadata(&a).unwrap();
        assert_eq!(read("scripts/a.txt").as_deref(), Some("two\n"));
        {
            use std::io::Write;
            let mut f = std::fs::File::options().write(true).open(&a).unwrap();
            f.write_all(b"TWO\n").unwrap();
            f.set_modified(before.modified().unwrap()).unwrap();
        }
        let after = std::fs::metadata(&a).unwrap();
        assert_eq!(after.modified().unwrap(), before.modified().unwrap());
        assert_eq!(after.len(), before.len());
        cache.refresh();
        assert_eq!(read("scripts/a.txt").as_deref(), Some("TWO\n"));
        // through the ports: each request (a new `SitePorts`) refreshes on its first read
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let s = Arc::new(s);
        let ports = || {
            SitePorts::standalone(s.clone(), rt.handle().clone()).with_script_cache(cache.clone())
        };
        let content = |p: &mut SitePorts| {
            p.script("scripts/a.txt")
                .unwrap()
                .content
                .unwrap()
                .to_string()
        };
        assert_eq!(content(&mut ports()), "TWO\n");
        std::fs::write(&a, "3rd\n").unwrap();
        assert_eq!(content(&mut ports()), "3rd\n");
    }

    /// Names absent from a watched directory (per-device snippets nobody wrote) are answered
    /// by its listing: they take no memo entry each, and one created later is seen by the
    /// next request.
    #[test]
    fn absent_names_answered_by_the_listing() {
        let Some(t) = local_tempdir() else { return };
        let s = site(t.path());
        let dir = t.path().join("scripts");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("all-all-all.txt"), "shared\n").unwrap();
        let cache = ScriptCache::default();
        let read = |rel: &str| {
            cache
                .read_refreshed(&s, rel)
                .map(|f| f.content.unwrap().to_string())
        };
        cache.refresh();
        for i in 0..1000 {
            assert_eq!(read(&format!("scripts/all-all-{i:06}.txt")), None);
        }
        assert_eq!(read("scripts/all-all-all.txt").as_deref(), Some("shared\n"));
        {
            let inner = cache.lock();
            assert_eq!(inner.memo.len(), 1, "only the file that exists is memoised");
            assert_eq!(inner.memo_dirs.len(), 1);
        }
        // the same names answered again without a stat or a path join
        stats();
        assert_eq!(read("scripts/all-all-000007.txt"), None);
        assert_eq!(stats(), 0);
        // another spelling of the directory, a refused path and a name with a dot part take
        // the long way and give the same answers as without the cache
        let direct = |rel: &str| read_script(&s, rel).map(|f| f.content.map(|c| c.to_string()));
        for rel in [
            "scripts/./all-all-000007.txt",
            "scripts/./all-all-all.txt",
            "scripts//all-all-all.txt",
            "scripts/../scripts/all-all-all.txt",
            "scripts/.",
            "scripts/all-all-000007.txt/",
        ] {
            let cached = cache
                .read_refreshed(&s, rel)
                .map(|f| f.content.map(|c| c.to_string()));
            assert_eq!(cached, direct(rel), "{rel}");
        }
        // written later: the event drops the listing's answer
        std::fs::write(dir.join("all-all-000007.txt"), "mine\n").unwrap();
        cache.refresh();
        assert_eq!(
            read("scripts/all-all-000007.txt").as_deref(),
            Some("mine\n")
        );
        assert_eq!(read("scripts/all-all-000008.txt"), None);
        std::fs::remove_file(dir.join("all-all-000007.txt")).unwrap();
        cache.refresh();
        assert_eq!(read("scripts/all-all-000007.txt"), None);
        // an unwatched (missing) directory is never answered by a listing
        assert_eq!(read("nowhere/x.txt"), None);
        std::fs::create_dir_all(t.path().join("nowhere")).unwrap();
        std::fs::write(t.path().join("nowhere/x.txt"), "x\n").unwrap();
        cache.refresh();
        assert_eq!(read("nowhere/x.txt").as_deref(), Some("x\n"));
    }

    /// New, removed, renamed-into-place files, and a replaced directory: seen by the next
    /// request.
    #[test]
    fn watched_cache_follows_names() {
        let Some(t) = local_tempdir() else { return };
        let s = site(t.path());
        let dir = t.path().join("scripts");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("a.txt"), "one\n").unwrap();
        std::fs::write(dir.join("sub/c.txt"), "sub\n").unwrap();
        let cache = ScriptCache::default();
        let read = |rel: &str| {
            cache.refresh();
            cache
                .read_refreshed(&s, rel)
                .map(|f| f.content.unwrap().to_string())
        };
        assert_eq!(read("scripts/a.txt").as_deref(), Some("one\n"));
        assert_eq!(read("scripts/b.txt"), None);
        assert_eq!(read("scripts/sub/c.txt").as_deref(), Some("sub\n"));
        assert!(is_watched(&cache, &dir));
        assert!(is_watched(&cache, &dir.join("sub")));
        // created after the listing was cached
        std::fs::write(dir.join("b.txt"), "new\n").unwrap();
        assert_eq!(read("scripts/b.txt").as_deref(), Some("new\n"));
        // removed
        std::fs::remove_file(dir.join("b.txt")).unwrap();
        assert_eq!(read("scripts/b.txt"), None);
        // written aside and renamed into place, as editors do
        std::fs::write(dir.join(".a.txt.tmp"), "edited\n").unwrap();
        std::fs::rename(dir.join(".a.txt.tmp"), dir.join("a.txt")).unwrap();
        assert_eq!(read("scripts/a.txt").as_deref(), Some("edited\n"));
        // the whole directory replaced: its old watch must not vouch for the new one
        let new = t.path().join("scripts.new");
        std::fs::create_dir_all(new.join("sub")).unwrap();
        std::fs::write(new.join("a.txt"), "swapped\n").unwrap();
        std::fs::write(new.join("sub/c.txt"), "swapped sub\n").unwrap();
        std::fs::rename(&dir, t.path().join("scripts.old")).unwrap();
        std::fs::rename(&new, &dir).unwrap();
        assert_eq!(read("scripts/a.txt").as_deref(), Some("swapped\n"));
        assert_eq!(read("scripts/sub/c.txt").as_deref(), Some("swapped sub\n"));
        assert!(is_watched(&cache, &dir.join("sub")));
        std::fs::write(dir.join("sub/c.txt"), "changed sub\n").unwrap();
        assert_eq!(read("scripts/sub/c.txt").as_deref(), Some("changed sub\n"));
        // the directory removed
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(read("scripts/a.txt"), None);
        assert_eq!(read("scripts/sub/c.txt"), None);
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("a.txt"), "back\n").unwrap();
        assert_eq!(read("scripts/a.txt").as_deref(), Some("back\n"));
    }

    /// Once warm, a request's reads in a watched directory do no `stat` at all.
    #[test]
    fn watched_cache_reads_without_stat() {
        let Some(t) = local_tempdir() else { return };
        let s = site(t.path());
        let dir = t.path().join("scripts");
        std::fs::create_dir_all(dir.join("dev")).unwrap();
        std::fs::write(dir.join("a.txt"), "one\n").unwrap();
        std::fs::write(dir.join("dev/x.txt"), "x\n").unwrap();
        let cache = ScriptCache::default();
        let files = [
            "scripts/a.txt",
            "scripts/b.txt",
            "scripts/dev/x.txt",
            "scripts/dev/y.txt",
        ];
        let request = || {
            cache.refresh();
            let mut got = Vec::new();
            for _ in 0..3 {
                for f in files {
                    got.push(
                        cache
                            .read_refreshed(&s, f)
                            .map(|f| f.content.unwrap().to_string()),
                    );
                }
            }
            got
        };
        let warm = request();
        assert_eq!(warm[0].as_deref(), Some("one\n"));
        assert_eq!(warm[1], None);
        assert_eq!(warm[2].as_deref(), Some("x\n"));
        assert_eq!(warm[3], None);
        assert!(stats() > 0);
        assert_eq!(request(), warm);
        assert_eq!(stats(), 0, "stat calls on warm reads");
        // a change costs one read of what changed, then none again
        std::fs::write(dir.join("a.txt"), "two\n").unwrap();
        assert_eq!(request()[0].as_deref(), Some("two\n"));
        assert_eq!(stats(), 1);
        request();
        assert_eq!(stats(), 0);
    }

    /// Without inotify (or where it is not trusted) every read validates by `stat`, and a
    /// file with another hard link is validated that way in a watched directory as well.
    #[test]
    fn stat_validation_fallback() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().join("site");
        let s = site(&root);
        let dir = root.join("scripts");
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.txt");
        std::fs::write(&a, "one\n").unwrap();
        let old = SystemTime::now() - Duration::from_secs(60);
        std::fs::File::options()
            .write(true)
            .open(&a)
            .unwrap()
            .set_modified(old)
            .unwrap();
        std::thread::sleep(RACY * 2); // a settled directory mtime
        let cache = ScriptCache::without_inotify();
        let read = |cache: &ScriptCache| {
            cache.refresh();
            cache
                .read_refreshed(&s, "scripts/a.txt")
                .map(|f| f.content.unwrap().to_string())
        };
        assert_eq!(read(&cache).as_deref(), Some("one\n"));
        stats();
        assert_eq!(read(&cache).as_deref(), Some("one\n"));
        assert!(matches!(
            cache.lock().dirs.get(&dir),
            Some(Listing {
                check: DirCheck::Mtime(_),
                ..
            })
        ));
        assert!(matches!(
            cache.lock().files.get(&a),
            Some(CachedFile {
                check: FileCheck::Stat(..),
                ..
            })
        ));
        assert_eq!(stats(), 2, "the directory and the file are stat-validated");
        std::fs::write(&a, "two\n").unwrap();
        assert_eq!(read(&cache).as_deref(), Some("two\n"));

        // a second hard link (outside the watched directories): writes through it raise no
        // event there, so the file is stat-validated even in a watched directory
        if sys::fs_type(t.path()).is_ok_and(|t| LOCAL_FS.contains(&t)) {
            std::fs::write(&a, "one\n").unwrap();
            std::fs::File::options()
                .write(true)
                .open(&a)
                .unwrap()
                .set_modified(old)
                .unwrap();
            let elsewhere = t.path().join("elsewhere.txt");
            std::fs::hard_link(&a, &elsewhere).unwrap();
            let cache = ScriptCache::default();
            assert_eq!(read(&cache).as_deref(), Some("one\n"));
            assert!(is_watched(&cache, &dir));
            assert!(matches!(
                cache.lock().files.get(&a),
                Some(CachedFile {
                    check: FileCheck::Stat(..),
                    ..
                })
            ));
            std::fs::write(&elsewhere, "two\n").unwrap();
            assert_eq!(read(&cache).as_deref(), Some("two\n"));
        }
    }

    /// Readers filling the cache while the file changes and others drain the events: a read
    /// that began before a change must not put its stale content in the cache after the
    /// event that would have dropped it was taken in by someone else.
    #[test]
    fn watched_cache_concurrent_fills_stay_exact() {
        let Some(t) = local_tempdir() else { return };
        let s = Arc::new(site(t.path()));
        let dir = t.path().join("scripts");
        std::fs::create_dir_all(&dir).unwrap();
        let a = dir.join("a.txt");
        std::fs::write(&a, "v00000\n").unwrap();
        let cache = ScriptCache::default();
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let readers: Vec<_> = (0..3)
            .map(|_| {
                let (cache, s, stop) = (cache.clone(), s.clone(), stop.clone());
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        cache.refresh();
                        cache.read_refreshed(&s, "scripts/a.txt");
                    }
                })
            })
            .collect();
        for i in 1..3000 {
            let want = format!("v{i:05}\n");
            std::fs::write(&a, &want).unwrap();
            cache.refresh();
            let got = cache.read_refreshed(&s, "scripts/a.txt").unwrap();
            assert_eq!(got.content.unwrap().to_string(), want);
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for r in readers {
            r.join().unwrap();
        }
    }

    #[test]
    fn inotify_events_are_parsed() {
        let mut buf = Vec::new();
        for (wd, mask, name) in [(1i32, 2u32, &b"a.txt\0\0\0"[..]), (3, 4, &b""[..])] {
            buf.extend_from_slice(&wd.to_ne_bytes());
            buf.extend_from_slice(&mask.to_ne_bytes());
            buf.extend_from_slice(&0u32.to_ne_bytes());
            buf.extend_from_slice(&(name.len() as u32).to_ne_bytes());
            buf.extend_from_slice(name);
        }
        let mut got = Vec::new();
        sys::parse_events(&buf, |wd, mask, name| {
            got.push((wd, mask, name.map(OsString::from)))
        });
        assert_eq!(
            got,
            vec![(1, 2, Some(OsString::from("a.txt"))), (3, 4, None)]
        );
    }
}
