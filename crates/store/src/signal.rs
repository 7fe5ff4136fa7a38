//! The change signal between processes sharing one SQLite file: `<database>-changes`.
//!
//! A server keeps clean copies of device states in memory (see `writebehind.rs`). Another
//! process that writes devices directly (the CLI: `devices forget`, `notify`, imports)
//! writes its new change counter into this small file after each commit ([`Signal::poke`]).
//! The server watches the file with inotify and, on every load, drains the watch without
//! waiting ([`Watch::changed`]): the kernel queues the event inside the writer's `write`
//! call, so a load that starts after the CLI command returned always sees it and drops the
//! copies. One non-blocking `read` per load; no database round trip.
//!
//! Where the watch cannot be set up (no inotify, watch limit, a network file system that
//! does not report other hosts' writes), the server keeps no clean copies at all.

use std::io::{self, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::path::{Path, PathBuf};

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

    /// Tell watchers that devices changed (the counter is for humans reading the file).
    /// Written in place (a watch follows the file, not its name); failures are logged.
    pub(crate) fn poke(&self, generation: Option<i64>) {
        let text = format!("{:020}\n", generation.unwrap_or_default());
        let written = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&self.path)
            .and_then(|mut f| f.write_all(text.as_bytes()));
        if let Err(e) = written {
            tracing::warn!(file = %self.path.display(), error = %e,
                "cannot signal the device change to a running server; it notices within its write-behind window");
        }
    }
}

/// The watching side: an inotify watch on the signal file.
#[derive(Debug)]
pub(crate) struct Watch {
    fd: OwnedFd,
    path: PathBuf,
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
        std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
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
        Ok(Watch {
            fd,
            path: path.to_path_buf(),
        })
    }

    /// Whether the file was written (or replaced, or removed) since the last call. Never
    /// waits. A removed or replaced file is watched again; an error counts as a change.
    pub(crate) fn changed(&self) -> bool {
        let mut changed = false;
        let mut lost = false;
        // Not zeroed: this runs on every load, and nearly always reads nothing.
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
        if lost {
            if let Ok(cpath) = std::ffi::CString::new(self.path.as_os_str().as_encoded_bytes()) {
                let _ = std::fs::OpenOptions::new()
                    .create(true)
                    .truncate(false)
                    .write(true)
                    .open(&self.path);
                // SAFETY: as in `try_start`.
                unsafe { libc::inotify_add_watch(self.fd.as_raw_fd(), cpath.as_ptr(), MASK) };
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pokes_are_seen_exactly_once() {
        let dir = tempfile::tempdir().unwrap();
        let path = path_for(&dir.path().join("autoprov.db"));
        assert!(path.ends_with("autoprov.db-changes"));
        let Some(watch) = Watch::start(path.clone()) else {
            eprintln!("no inotify here: skipped");
            return;
        };
        assert!(!watch.changed());
        let signal = Signal::new(path.clone());
        signal.poke(Some(1));
        assert!(watch.changed(), "a poke is seen at once");
        assert!(!watch.changed(), "and only once");
        // removed and recreated: seen, and still watched afterwards
        std::fs::remove_file(&path).unwrap();
        assert!(watch.changed());
        signal.poke(Some(2));
        assert!(watch.changed(), "watched again after the file was removed");
        assert!(!watch.changed());
    }
}
