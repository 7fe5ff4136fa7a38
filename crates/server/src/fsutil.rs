//! File-system helpers for everything that writes or names files from request input.
//!
//! * [`atomic_write`]: temp file in the target directory, fsync, rename: a reader (or a crash)
//!   never sees a half-written file.
//! * [`safe_component`]: whether a request value may be used as one file name component.
//! * Latin-1 helpers: innovaphone devices and snippet files speak ISO-8859-1; mapping each byte
//!   to one `char` and back keeps their bytes exact through `&str` APIs.
//!
//! This module knows nothing about HTTP or devices.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Write `data` to `path` atomically, creating missing parent directories.
pub fn atomic_write(path: &Path, data: &[u8]) -> std::io::Result<()> {
    atomic_write_mode(path, data, None)
}

/// [`atomic_write`] for secrets: the file is readable by its owner only (Unix mode 0600) from
/// its first byte on.
pub fn atomic_write_private(path: &Path, data: &[u8]) -> std::io::Result<()> {
    atomic_write_mode(path, data, Some(0o600))
}

fn atomic_write_mode(path: &Path, data: &[u8], mode: Option<u32>) -> std::io::Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty());
    let dir: PathBuf = dir.map(Path::to_path_buf).unwrap_or_else(|| ".".into());
    std::fs::create_dir_all(&dir)?;
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "file".into());
    let tmp = dir.join(format!(
        ".{name}.tmp-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut opts = std::fs::File::options();
        opts.write(true).create(true).truncate(true);
        #[cfg(unix)]
        if let Some(m) = mode {
            use std::os::unix::fs::OpenOptionsExt;
            opts.mode(m);
        }
        #[cfg(not(unix))]
        let _ = mode;
        let mut f = opts.open(&tmp)?;
        f.write_all(data)?;
        f.sync_all()?;
        drop(f);
        std::fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
        return result;
    }
    // Make the rename itself durable; not all platforms allow syncing a directory.
    if let Ok(d) = std::fs::File::open(&dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Whether `s` can be used as a single file name component: not empty, no `/`, `\`, NUL,
/// not `.` or `..` and no `..` inside, no control characters.
pub fn safe_component(s: &str) -> bool {
    !s.is_empty()
        && s != "."
        && !s.contains("..")
        && !s.chars().any(|c| c == '/' || c == '\\' || c.is_control())
}

pub use autoprov_core::innovaphone::php::{latin1_decode, wire_bytes as latin1_encode};

/// Text from bytes: UTF-8 when valid, ISO-8859-1 otherwise.
pub fn decode_text(bytes: Vec<u8>) -> String {
    match String::from_utf8(bytes) {
        Ok(s) => s,
        Err(e) => latin1_decode(e.as_bytes()),
    }
}

/// Standard base64 (RFC 4648, with padding).
pub fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        let sextets = [(n >> 18) & 63, (n >> 12) & 63, (n >> 6) & 63, n & 63];
        let keep = chunk.len() + 1;
        for (i, s) in sextets.iter().enumerate() {
            if i < keep {
                out.push(ALPHABET[*s as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// Modification time of file metadata as epoch seconds (0 when unknown).
pub fn mtime_secs(meta: &std::fs::Metadata) -> i64 {
    meta.modified()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Change time (inode change) as epoch seconds; the modification time where the platform has
/// no change time.
pub fn ctime_secs(meta: &std::fs::Metadata) -> i64 {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        meta.ctime()
    }
    #[cfg(not(unix))]
    {
        mtime_secs(meta)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_write_creates_dirs_and_replaces() {
        let t = tempfile::tempdir().unwrap();
        let p = t.path().join("a/b/c.txt");
        atomic_write(&p, b"one").unwrap();
        atomic_write(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        let left: Vec<_> = std::fs::read_dir(p.parent().unwrap())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(left.len(), 1, "no temp files left: {left:?}");
    }

    #[test]
    fn components() {
        assert!(safe_component("IP232-30-00-af"));
        for bad in ["", ".", "..", "a/b", "a\\b", "x..y", "a\0b", "a\nb"] {
            assert!(!safe_component(bad), "{bad:?}");
        }
    }

    #[test]
    fn latin1_round_trip() {
        let bytes: Vec<u8> = (0u8..=255).collect();
        assert_eq!(latin1_encode(&latin1_decode(&bytes)), bytes);
        assert_eq!(decode_text(vec![0xe4]), "ä");
        assert_eq!(decode_text("ä".as_bytes().to_vec()), "ä");
    }

    #[test]
    fn base64() {
        assert_eq!(base64_encode(b""), "");
        assert_eq!(base64_encode(b"f"), "Zg==");
        assert_eq!(base64_encode(b"fo"), "Zm8=");
        assert_eq!(base64_encode(b"foo"), "Zm9v");
        assert_eq!(base64_encode(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64_encode(&[0xff, 0xfe, 0x00]), "//4A");
    }
}
