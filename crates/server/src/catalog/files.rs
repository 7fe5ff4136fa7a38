//! The catalogue on disk: reading the manifest, adding a file (`autoprov firmware add`), and
//! checking stored files against the manifest.
//!
//! Adding is atomic and safe against a crash at any point: the file is copied into a temporary
//! file inside the catalogue directory while its sha256 is computed (so the recorded hash is of
//! the bytes actually stored), synced, renamed into `<vendor>/<model>/<version>/<file>`, and only
//! then is the manifest replaced atomically. A crash leaves at worst a stray file the manifest
//! does not list (never served; the next add of it overwrites it). A lock file keeps two adds
//! from interleaving. What to add where is decided by
//! [`Manifest::plan_add`](autoprov_core::firmware::Manifest::plan_add), not here.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use autoprov_core::firmware::{valid_name, AddPlan, Image, Manifest, MANIFEST_FILE};
use autoprov_core::validate::validate_manifest;
use autoprov_core::Site;
use sha2::{Digest, Sha256};

use super::CatalogError;
use crate::fsutil::atomic_write;

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// The catalogue directory of a site (`firmware.dir`).
pub fn catalog_dir(site: &Site) -> Result<PathBuf, CatalogError> {
    site.path(&site.config.firmware.dir)
        .ok_or_else(|| CatalogError::BadDir(site.config.firmware.dir.clone()))
}

/// Read and check `<dir>/catalog.toml`; a missing manifest is an empty catalogue.
pub fn read_manifest(dir: &Path) -> Result<Manifest, CatalogError> {
    let path = dir.join(MANIFEST_FILE);
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Manifest::default()),
        Err(source) => return Err(CatalogError::Read { path, source }),
    };
    let (manifest, diagnostics) = validate_manifest(&path.display().to_string(), &text);
    match manifest {
        Some(m) if diagnostics.iter().all(|d| !d.is_error()) => Ok(m),
        _ => Err(CatalogError::Invalid { diagnostics }),
    }
}

/// What `autoprov firmware add` was asked to do.
#[derive(Debug, Clone)]
pub struct AddRequest<'a> {
    pub vendor: &'a str,
    pub model: &'a str,
    pub version: &'a str,
    pub source: &'a Path,
    /// File name in the catalogue; default: the source's file name.
    pub name: Option<&'a str>,
}

/// What adding did.
#[derive(Debug, Clone)]
pub struct Added {
    pub plan: AddPlan,
    /// Where the bytes are stored (the canonical entry's file).
    pub path: PathBuf,
}

/// Add a file to the site's catalogue (see the module documentation).
pub fn add_file(site: &Site, req: &AddRequest<'_>, now: i64) -> Result<Added, CatalogError> {
    let name = match req.name {
        Some(n) => n.to_string(),
        None => req
            .source
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default(),
    };
    for (what, value) in [
        ("vendor", req.vendor),
        ("model", req.model),
        ("version", req.version),
        ("file name", name.as_str()),
    ] {
        if !valid_name(value) {
            return Err(CatalogError::Name(format!(
                "{what} '{value}' cannot be used: use 1 to 128 of A-Z a-z 0-9 . _ - + ~ ( ) , = \
                 and do not start with '.'{}",
                if what == "file name" {
                    " (pass --name to choose another file name)"
                } else {
                    ""
                }
            )));
        }
    }
    let dir = catalog_dir(site)?;
    std::fs::create_dir_all(&dir).map_err(|source| CatalogError::Write {
        path: dir.clone(),
        source,
    })?;
    let _lock = LockFile::acquire(&dir.join(".catalog.lock"))?;
    let mut manifest = read_manifest(&dir)?;

    let tmp = dir.join(format!(
        ".incoming-{}-{}",
        std::process::id(),
        TEMP_COUNTER.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let (sha256, size) = copy_hashing(req.source, &tmp)?;
        let plan = manifest.plan_add(Image {
            vendor: req.vendor.to_string(),
            model: req.model.to_string(),
            version: req.version.to_string(),
            file: name.clone(),
            size,
            sha256,
            added: now,
        })?;
        let path = match &plan {
            AddPlan::Store(entry) => {
                let path = dir.join(entry.rel_path());
                let parent = path.parent().unwrap_or(&dir).to_path_buf();
                let write_err = |source| CatalogError::Write {
                    path: path.clone(),
                    source,
                };
                std::fs::create_dir_all(&parent).map_err(write_err)?;
                std::fs::rename(&tmp, &path).map_err(write_err)?;
                if let Ok(d) = File::open(&parent) {
                    let _ = d.sync_all();
                }
                path
            }
            AddPlan::Alias { canonical, .. } => dir.join(canonical.rel_path()),
            AddPlan::AlreadyPresent(existing) => {
                dir.join(manifest_canonical(&manifest, existing).rel_path())
            }
        };
        if let AddPlan::Store(entry) | AddPlan::Alias { entry, .. } = &plan {
            manifest.images.push(entry.clone());
            let mpath = dir.join(MANIFEST_FILE);
            atomic_write(&mpath, manifest.to_toml_string().as_bytes()).map_err(|source| {
                CatalogError::Write {
                    path: mpath,
                    source,
                }
            })?;
        }
        Ok(Added { plan, path })
    })();
    let _ = std::fs::remove_file(&tmp);
    result
}

fn manifest_canonical<'a>(m: &'a Manifest, image: &'a Image) -> &'a Image {
    m.images
        .iter()
        .find(|i| i.sha256 == image.sha256)
        .unwrap_or(image)
}

/// Copy `src` to `dst` (created new), syncing it, and return the sha256 and size of the bytes
/// written.
fn copy_hashing(src: &Path, dst: &Path) -> Result<(String, u64), CatalogError> {
    let mut input = File::open(src).map_err(|source| CatalogError::Read {
        path: src.to_path_buf(),
        source,
    })?;
    let write_err = |source| CatalogError::Write {
        path: dst.to_path_buf(),
        source,
    };
    let mut out = File::options()
        .write(true)
        .create_new(true)
        .open(dst)
        .map_err(write_err)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = input.read(&mut buf).map_err(|source| CatalogError::Read {
            path: src.to_path_buf(),
            source,
        })?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        out.write_all(&buf[..n]).map_err(write_err)?;
        size += n as u64;
    }
    out.sync_all().map_err(write_err)?;
    Ok((hex(&hasher.finalize()), size))
}

/// sha256 (lower-case hex) and size of a file.
pub fn sha256_file(path: &Path) -> std::io::Result<(String, u64)> {
    let mut f = File::open(path)?;
    let mut hasher = Sha256::new();
    let mut size = 0u64;
    let mut buf = vec![0u8; 256 * 1024];
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        size += n as u64;
    }
    Ok((hex(&hasher.finalize()), size))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// How a stored file compares with its manifest entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum FileCheck {
    Ok,
    Missing,
    SizeDiffers,
    Sha256Differs,
    /// The bytes are stored under another (the canonical) entry.
    Alias,
}

impl FileCheck {
    pub fn as_str(self) -> &'static str {
        match self {
            FileCheck::Ok => "ok",
            FileCheck::Missing => "missing",
            FileCheck::SizeDiffers => "size differs",
            FileCheck::Sha256Differs => "sha256 differs",
            FileCheck::Alias => "alias",
        }
    }
}

/// Check the stored file of a canonical entry: present with the recorded size, and with
/// `hash` also the recorded sha256 (reads the whole file).
pub fn check_file(dir: &Path, image: &Image, hash: bool) -> FileCheck {
    let path = dir.join(image.rel_path());
    match std::fs::metadata(&path) {
        Err(_) => FileCheck::Missing,
        Ok(m) if !m.is_file() => FileCheck::Missing,
        Ok(m) if m.len() != image.size => FileCheck::SizeDiffers,
        Ok(_) if !hash => FileCheck::Ok,
        Ok(_) => match sha256_file(&path) {
            Ok((sha, _)) if sha == image.sha256 => FileCheck::Ok,
            Ok(_) => FileCheck::Sha256Differs,
            Err(_) => FileCheck::Missing,
        },
    }
}

/// An exclusive lock held as a file created with `create_new`; removed on drop.
struct LockFile(PathBuf);

impl LockFile {
    fn acquire(path: &Path) -> Result<LockFile, CatalogError> {
        match File::options().write(true).create_new(true).open(path) {
            Ok(mut f) => {
                let _ = writeln!(f, "{}", std::process::id());
                Ok(LockFile(path.to_path_buf()))
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                Err(CatalogError::Busy(path.to_path_buf()))
            }
            Err(source) => Err(CatalogError::Write {
                path: path.to_path_buf(),
                source,
            }),
        }
    }
}

impl Drop for LockFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn site(dir: &Path) -> Site {
        std::fs::write(dir.join("autoprov.toml"), "").unwrap();
        Site::load(dir).unwrap()
    }

    fn add<'a>(site: &Site, version: &'a str, src: &'a Path) -> Result<Added, CatalogError> {
        let req = AddRequest {
            vendor: "snom",
            model: "D785",
            version,
            source: src,
            name: None,
        };
        add_file(site, &req, 100)
    }

    #[test]
    fn add_stores_aliases_and_refuses_changes() {
        let t = tempfile::tempdir().unwrap();
        let site = site(t.path());
        let src = t.path().join("snomD785-10.1.bin");
        std::fs::write(&src, b"firmware one").unwrap();
        let a = add(&site, "10.1", &src).unwrap();
        let AddPlan::Store(entry) = &a.plan else {
            panic!("stored: {a:?}");
        };
        assert_eq!(
            a.path,
            t.path().join("firmware/snom/D785/10.1/snomD785-10.1.bin")
        );
        assert_eq!(std::fs::read(&a.path).unwrap(), b"firmware one");
        assert_eq!(
            (entry.size, entry.sha256.as_str()),
            (12, sha256_file(&src).unwrap().0.as_str())
        );
        // again: nothing changes
        let again = add(&site, "10.1", &src).unwrap();
        assert!(matches!(again.plan, AddPlan::AlreadyPresent(_)));
        assert_eq!(again.path, a.path);
        // the same bytes as another version: an alias, no second copy
        let alias = add(&site, "10.1b", &src).unwrap();
        assert!(matches!(alias.plan, AddPlan::Alias { .. }));
        assert_eq!(alias.path, a.path);
        assert!(!t.path().join("firmware/snom/D785/10.1b").exists());
        // other bytes under a known version: refused, manifest unchanged
        std::fs::write(&src, b"firmware two").unwrap();
        let e = add(&site, "10.1", &src).unwrap_err();
        assert!(matches!(e, CatalogError::Conflict(_)), "{e}");
        let m = read_manifest(&t.path().join("firmware")).unwrap();
        assert_eq!(m.images.len(), 2);
        assert_eq!(
            check_file(&t.path().join("firmware"), &m.images[0], true),
            FileCheck::Ok
        );
        // no temp or lock files left behind
        let left: Vec<_> = std::fs::read_dir(t.path().join("firmware"))
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(left.len(), 2, "{left:?}");
    }

    #[test]
    fn bad_names_and_a_held_lock_are_refused() {
        let t = tempfile::tempdir().unwrap();
        let site = site(t.path());
        let src = t.path().join("fw image.bin");
        std::fs::write(&src, b"x").unwrap();
        let e = add(&site, "1", &src).unwrap_err();
        assert!(e.to_string().contains("--name"), "{e}");
        let e = add(&site, "../1", &src).unwrap_err();
        assert!(e.to_string().contains("version '../1'"), "{e}");
        std::fs::create_dir_all(t.path().join("firmware")).unwrap();
        std::fs::write(t.path().join("firmware/.catalog.lock"), "1").unwrap();
        let req = AddRequest {
            vendor: "snom",
            model: "D785",
            version: "1",
            source: &src,
            name: Some("x.bin"),
        };
        let e = add_file(&site, &req, 1).unwrap_err();
        assert!(matches!(e, CatalogError::Busy(_)), "{e}");
    }

    #[test]
    fn file_checks() {
        let t = tempfile::tempdir().unwrap();
        let site = site(t.path());
        let src = t.path().join("a.bin");
        std::fs::write(&src, b"abc").unwrap();
        let a = add(&site, "1", &src).unwrap();
        let dir = t.path().join("firmware");
        let m = read_manifest(&dir).unwrap();
        std::fs::write(&a.path, b"abd").unwrap();
        assert_eq!(check_file(&dir, &m.images[0], false), FileCheck::Ok);
        assert_eq!(
            check_file(&dir, &m.images[0], true),
            FileCheck::Sha256Differs
        );
        std::fs::write(&a.path, b"abcd").unwrap();
        assert_eq!(
            check_file(&dir, &m.images[0], false),
            FileCheck::SizeDiffers
        );
        std::fs::remove_file(&a.path).unwrap();
        assert_eq!(check_file(&dir, &m.images[0], false), FileCheck::Missing);
        assert_eq!(
            sha256_file(&src).unwrap().0,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }
}
