//! The change signal between processes sharing one SQLite file: `<database>-changes`.
//!
//! A server keeps clean copies of device states in memory (see `writebehind.rs`). Another
//! process that writes devices directly (the CLI: `devices forget`, `notify`, imports)
//! tells it after each commit ([`Signal::poke`]) in two ways:
//!
//! * **The counter**: the file's first 8 bytes are a counter, mapped into memory
//!   (`MAP_SHARED`) by both sides. The writer increments it atomically; the server reads it
//!   with one memory load on every load of a device ([`Watch::value`]), no system call.
//!   Both mappings are the same page of the page cache, so an increment made before the CLI
//!   command returned is seen by every load that starts afterwards.
//! * **The text**: the new change counter as text after the first 8 bytes (for humans, and
//!   for servers of older versions, which watched the file with inotify only). The server
//!   keeps an inotify watch on the file too and drains it once per write-behind window
//!   ([`Watch::sweep`]): a write by a CLI of an older version (text only), or the file
//!   removed or replaced (the mapping then stands for the old inode; the new file is mapped
//!   instead), counts as a change there, i.e. within one window rather than at once.
//!
//! Where the watch or the mapping cannot be set up (no inotify, watch limit, a network file
//! system that does not report other hosts' writes), the server keeps no clean copies at
//! all. The file must not be truncated below 8 bytes while a server runs (reading a mapped
//! page beyond the end of its file faults); nothing of autoprov ever shrinks it.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicPtr, AtomicU64, Ordering};
use std::sync::Mutex;

/// The signal file of the SQLite database at `db`.
pub(crate) fn path_for(db: &Path) -> PathBuf {
    let mut name = db.as_os_str().to_os_string();
    name.push("-changes");
    PathBuf::from(name)
}

/// The writing side: used by stores without write-behind.
#[derive(Debug)]
pub(crate) struct Signal {
    path: PathBuf,
}

impl Signal {
    pub(crate) fn new(path: PathBuf) -> Signal {
        Signal { path }
    }

    /// Tell watchers that devices changed: the counter incremented, then the text written.
    /// Failures are logged (a server then notices within its write-behind window).
    pub(crate) fn poke(&self, generation: Option<i64>) {
        let text = format!("{:020}\n", generation.unwrap_or_default());
        let poked = open_sized(&self.path).and_then(|file| {
            let counter = Mapping::of(&file)?;
            counter.slot().fetch_add(1, Ordering::SeqCst);
            file.write_all_at(text.as_bytes(), SLOT as u64)
        });
        if let Err(e) = poked {
            tracing::warn!(file = %self.path.display(), error = %e,
                "cannot signal the device change to a running server; it notices within its write-behind window");
        }
    }
}

/// Bytes of the counter at the start of the file.
const SLOT: usize = 8;

/// The signal file at `path`, created if missing and grown to hold the counter (never
/// shrunk: a file of an older version keeps its text, whose first bytes become the
/// counter's starting value).
fn open_sized(path: &Path) -> io::Result<std::fs::File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(path)?;
    if file.metadata()?.len() < SLOT as u64 {
        file.set_len(SLOT as u64)?;
    }
    Ok(file)
}

/// The counter of one signal file, mapped shared (unmapped on drop).
#[derive(Debug)]
struct Mapping {
    ptr: *mut libc::c_void,
    /// The mapped file's device and inode.
    id: (u64, u64),
}

// SAFETY: the mapping is only accessed through an `AtomicU64`.
unsafe impl Send for Mapping {}
// SAFETY: as above.
unsafe impl Sync for Mapping {}

impl Mapping {
    /// Map the counter of `file` (at least [`SLOT`] bytes long, opened for reading and
    /// writing).
    fn of(file: &std::fs::File) -> io::Result<Mapping> {
        let meta = file.metadata()?;
        let id = (meta.dev(), meta.ino());
        // SAFETY: a fresh shared mapping of the file's first page; checked below.
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                SLOT,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED,
                file.as_raw_fd(),
                0,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { ptr, id })
    }

    fn slot(&self) -> &AtomicU64 {
        // SAFETY: the mapping is page-aligned, at least 8 bytes, and lives as long as `self`.
        unsafe { &*self.ptr.cast::<AtomicU64>() }
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: mapped in `Mapping::of` with this length, not used after this.
        unsafe { libc::munmap(self.ptr, SLOT) };
    }
}

/// The watching side: the mapped counter, and an inotify watch on the file.
#[derive(Debug)]
pub(crate) struct Watch {
    fd: OwnedFd,
    path: PathBuf,
    /// The counter of the file now at `path` (in the last of `mappings`); replaced (by
    /// [`Watch::sweep`]) when the file is.
    current: AtomicPtr<AtomicU64>,
    /// Every mapping this watch made, the current one last: a reader may still hold the
    /// one a sweep replaced, so they are all unmapped only with the watch.
    mappings: Mutex<Vec<Mapping>>,
    /// Moved by each sweep that found an event: added to the counter's value.
    swept: AtomicU64,
    /// The file was replaced and could not be followed yet: every sweep tries again and
    /// counts as an event until it can.
    lost: std::sync::atomic::AtomicBool,
}

const MASK: u32 = libc::IN_MODIFY
    | libc::IN_CLOSE_WRITE
    | libc::IN_ATTRIB
    | libc::IN_DELETE_SELF
    | libc::IN_MOVE_SELF;

/// File systems whose writes all pass through this kernel (see `linux/magic.h`): ext2/3/4,
/// XFS, Btrfs, tmpfs, F2FS, ZFS, bcachefs, overlayfs.
const LOCAL_FS: [i64; 8] = [
    0xEF53,
    0x5846_5342,
    0x9123_683E,
    0x0102_1994,
    0xF2F5_2010,
    0x2FC1_2FC1,
    0xCA45_1A4E,
    0x794C_7630,
];

impl Watch {
    /// Create the signal file if needed and watch it; `None` when that is not possible or
    /// not trustworthy (the reason is logged).
    pub(crate) fn start(path: PathBuf) -> Option<Watch> {
        match Watch::try_start(&path) {
            Ok(w) => Some(w),
            Err(e) => {
                tracing::info!(file = %path.display(), error = %e,
                    "cannot watch the device change signal; device states are read from the database on every poll");
                None
            }
        }
    }

    fn try_start(path: &Path) -> io::Result<Watch> {
        open_sized(path)?;
        let cpath = std::ffi::CString::new(path.as_os_str().as_encoded_bytes())
            .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
        // SAFETY: `cpath` is a valid NUL-terminated string; `st` is written by the call.
        let mut st: libc::statfs = unsafe { std::mem::zeroed() };
        if unsafe { libc::statfs(cpath.as_ptr(), &mut st) } != 0 {
            return Err(io::Error::last_os_error());
        }
        #[allow(clippy::unnecessary_cast)]
        let fs_type = st.f_type as i64;
        if !LOCAL_FS.contains(&fs_type) {
            return Err(io::Error::other(format!(
                "file system type {fs_type:#x} may not report other hosts' writes"
            )));
        }
        // SAFETY: plain system call; the returned descriptor is owned below.
        let raw = unsafe { libc::inotify_init1(libc::IN_NONBLOCK | libc::IN_CLOEXEC) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: `fd` is an inotify descriptor, `cpath` a valid C string.
        if unsafe { libc::inotify_add_watch(fd.as_raw_fd(), cpath.as_ptr(), MASK) } < 0 {
            return Err(io::Error::last_os_error());
        }
        // Watched before mapped: a file replaced in between raises an event.
        let first = Mapping::of(&open_sized(path)?)?;
        Ok(Watch {
            fd,
            path: path.to_path_buf(),
            current: AtomicPtr::new(std::ptr::from_ref(first.slot()).cast_mut()),
            mappings: Mutex::new(vec![first]),
            swept: AtomicU64::new(0),
            lost: std::sync::atomic::AtomicBool::new(false),
        })
    }

    /// A value that changes with every poke (and every sweep that found an event). One
    /// memory load, no system call: compare it with the value read last time.
    pub(crate) fn value(&self) -> u64 {
        // SAFETY: `current` always points into one of `mappings`, kept until the watch drops.
        let counter = unsafe { &*self.current.load(Ordering::Acquire) };
        counter
            .load(Ordering::SeqCst)
            .wrapping_add(self.swept.load(Ordering::Acquire))
    }

    /// Drain the inotify watch (see the module documentation); `true` when it held an event
    /// (the value moved then). A removed or replaced file is created if needed, watched and
    /// mapped again; an error counts as an event. Never waits.
    pub(crate) fn sweep(&self) -> bool {
        let mut lost = self.lost.load(Ordering::Acquire);
        let mut changed = lost;
        let mut raw = std::mem::MaybeUninit::<[u8; 4096]>::uninit();
        loop {
            // SAFETY: `raw` is valid for writes of 4096 bytes.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    raw.as_mut_ptr().cast::<libc::c_void>(),
                    4096,
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    break;
                }
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                changed = true;
                break;
            }
            if n == 0 {
                break;
            }
            changed = true;
            let n = (n as usize).min(4096);
            // SAFETY: the kernel wrote the first `n` bytes.
            let buf = unsafe { std::slice::from_raw_parts(raw.as_ptr().cast::<u8>(), n) };
            // Events are variable-length: header (wd, mask, cookie, len) + name.
            let mut at = 0usize;
            let header = std::mem::size_of::<libc::inotify_event>();
            while at + header <= n {
                let mask = u32::from_ne_bytes(buf[at + 4..at + 8].try_into().unwrap_or([0; 4]));
                let len = u32::from_ne_bytes(buf[at + 12..at + 16].try_into().unwrap_or([0; 4]));
                if mask & (libc::IN_IGNORED | libc::IN_DELETE_SELF | libc::IN_MOVE_SELF) != 0 {
                    lost = true;
                }
                at += header + len as usize;
            }
        }
        // The mapping keeps the inode alive, so an unlinked or renamed-over file raises no
        // DELETE_SELF: after any event, whether the path still names the mapped file.
        if changed && !lost {
            let mapped = self.lock_mappings().last().map(|m| m.id);
            lost =
                std::fs::metadata(&self.path).map_or(true, |m| Some((m.dev(), m.ino())) != mapped);
        }
        if lost {
            self.follow();
        }
        if changed {
            self.swept.fetch_add(1, Ordering::AcqRel);
        }
        changed
    }

    fn lock_mappings(&self) -> std::sync::MutexGuard<'_, Vec<Mapping>> {
        self.mappings.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The file at `path` was removed or replaced: watch and map the one there now
    /// (created if missing). On failure the old mapping stays and every sweep tries again
    /// (and counts as an event) until it succeeds.
    fn follow(&self) {
        let followed = open_sized(&self.path).and_then(|_| {
            let cpath = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes())
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
            // SAFETY: as in `try_start`.
            if unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), cpath.as_ptr(), MASK) } < 0 {
                return Err(io::Error::last_os_error());
            }
            Mapping::of(&open_sized(&self.path)?)
        });
        match followed {
            Ok(mapping) => {
                let ptr = std::ptr::from_ref(mapping.slot()).cast_mut();
                let mut all = self.lock_mappings();
                all.push(mapping);
                self.current.store(ptr, Ordering::Release);
                self.lost.store(false, Ordering::Release);
            }
            Err(e) => {
                self.lost.store(true, Ordering::Release);
                tracing::warn!(file = %self.path.display(), error = %e,
                    "cannot follow the replaced device change signal");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pokes_move_the_value_at_once_and_replaced_files_are_followed() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("autoprov.db"));
        assert!(path.ends_with("autoprov.db-changes"));
        let Some(watch) = Watch::start(path.clone()) else {
            eprintln!("no inotify here: skipped");
            return;
        };
        let v0 = watch.value();
        assert!(!watch.sweep(), "nothing happened yet");
        assert_eq!(watch.value(), v0);
        let signal = Signal::new(path.clone());
        signal.poke(Some(7));
        let v1 = watch.value();
        assert_ne!(v1, v0, "a poke moves the value without any sweep");
        assert_eq!(watch.value(), v1, "and only once");
        let text = std::fs::read(&path).unwrap();
        assert_eq!(
            &text[SLOT..],
            b"00000000000000000007\n",
            "the text follows the counter"
        );
        // the text written raised an event too: a sweep sees it (and moves the value again)
        assert!(watch.sweep());
        assert!(!watch.sweep());
        let v2 = watch.value();
        // removed and recreated: the sweep notices, maps the new file, and pokes to it count
        std::fs::remove_file(&path).unwrap();
        signal.poke(Some(8));
        assert!(watch.sweep(), "the replaced file is noticed by the sweep");
        let v3 = watch.value();
        assert_ne!(v3, v2);
        signal.poke(Some(9));
        assert_ne!(
            watch.value(),
            v3,
            "pokes to the new file move the value at once"
        );
        assert!(watch.sweep());
        assert!(!watch.sweep());
    }

    #[test]
    fn a_file_of_the_old_text_format_is_grown_into_and_still_signals() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("autoprov.db"));
        std::fs::write(&path, b"").unwrap();
        let Some(watch) = Watch::start(path.clone()) else {
            eprintln!("no inotify here: skipped");
            return;
        };
        assert_eq!(std::fs::metadata(&path).unwrap().len(), SLOT as u64);
        let v0 = watch.value();
        // an older CLI writes the text only, in place: seen by the next sweep
        std::fs::OpenOptions::new()
            .write(true)
            .open(&path)
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"00000000000000000003\n"))
            .unwrap();
        assert!(watch.sweep());
        assert_ne!(watch.value(), v0);
        // and a newer one afterwards increments whatever the first bytes hold
        let v1 = watch.value();
        Signal::new(path.clone()).poke(Some(4));
        assert_ne!(watch.value(), v1);
    }
}
