//! The firmware catalogue at the HTTP edge: serving `/firmware/<vendor>/<model>/<version>/<file>`
//! and recording who downloads what.
//!
//! [`Firmware`] is the loaded catalogue ([`FirmwareCatalog`]: manifest + target rules, see
//! [`autoprov_core::firmware`] for the URL rule) plus the download slots. Vendor renderers ask
//! [`Firmware::catalog`]`().target(vendor, model, groups)` for the URL to put into a device's
//! configuration and call [`Firmware::report_version`] with the version the device says it runs.
//!
//! Serving ([`serve`]): `GET`/`HEAD`, single and multi-part `Range` (206/416), a strong `ETag`
//! (the sha256), `If-None-Match`/`If-Modified-Since` (304), `If-Match`/`If-Unmodified-Since`
//! (412), `If-Range`, `Last-Modified` (when the image was added), `Content-Length`. At most
//! `firmware.max_downloads` bodies stream at once; a further download gets 503 with
//! `Retry-After` at once instead of queueing, so configuration requests (which never take a
//! slot) are not starved by firmware. Only canonical manifest entries are served, matched
//! exactly; a path whose parts are not valid catalogue names (`..`, `%2f`, `\`, ...) is refused
//! with 400 before anything touches the file system.
//!
//! Tracking: every GET that sends bytes is logged per device; one that starts at byte 0 counts
//! as a download for [`FirmwareProgress::record_fetch`] (a resume does not), which flags a device
//! that keeps downloading the same image (and logs a warning). The device is the one the caller
//! names, else the `mac=` (or `sn=`) query argument, else `ip:<peer address>`.
//!
//! This module decides nothing about devices itself: the rules are in `autoprov-core`, the rows
//! in `autoprov-store`. The catalogue is loaded once with the site; restart to pick up new images
//! or targets.

mod files;
pub mod transfer;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::{header, HeaderValue, Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use tokio::sync::Semaphore;

/// Seconds between writes of an unchanged firmware report (only its `reported_at` would
/// change); in between, reports are checked with a read and not written.
pub const REPORT_REFRESH: i64 = 300;

use foldhash::HashMap;

use autoprov_core::config::FirmwareTargetRule;
use autoprov_core::firmware::{
    device_key, valid_name, FetchEvent, FirmwareCatalog, FirmwareFetch, FirmwareProgress, Image,
    ProgressState, URL_PREFIX,
};
use autoprov_core::innovaphone::UpdateRequest;
use autoprov_core::validate::Diagnostic;
use autoprov_core::Site;
use autoprov_store::{Store, StoreError};

pub use files::{
    add_file, catalog_dir, check_file, read_manifest, sha256_file, AddRequest, Added, FileCheck,
};

use crate::app::{now, AppState};
use crate::respond::{self, ConnFacts};
use transfer::{finish, Part};

/// Download log rows kept per device.
const FETCH_LOG_KEEP: u32 = 100;

/// Why the catalogue could not be loaded or changed. Every message says what to do.
#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("firmware.dir '{0}' must be a relative path inside the site directory")]
    BadDir(String),
    #[error("cannot read {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}", .diagnostics.iter().map(|d| d.to_string()).collect::<Vec<_>>().join("\n"))]
    Invalid { diagnostics: Vec<Diagnostic> },
    #[error("{0}")]
    Name(String),
    #[error(transparent)]
    Conflict(#[from] autoprov_core::firmware::AddConflict),
    #[error("cannot write {path}: {source}; check the permissions and free space")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "another `autoprov firmware add` is changing the catalogue (lock file {0}); wait for \
         it, or delete the lock file if none is running"
    )]
    Busy(PathBuf),
}

/// The loaded catalogue and its download slots. Cheap to clone.
#[derive(Clone)]
pub struct Firmware {
    catalog: Arc<FirmwareCatalog>,
    dir: PathBuf,
    slots: Arc<Semaphore>,
    /// The size of `slots`.
    slots_max: usize,
    retry_after: u64,
    flag_after: u32,
    /// Reports this process checked recently: device key → (fingerprint of what was
    /// reported, when). See [`Firmware::note_report`].
    reported: Arc<std::sync::Mutex<HashMap<String, (u64, i64)>>>,
}

/// A repeated identical report within this many seconds is not even read back.
const REPORT_MEMO: i64 = 60;
/// Entries of the report memo before it is cleared (bounds its memory).
const REPORT_MEMO_MAX: usize = 200_000;

impl Firmware {
    /// Load the site's catalogue (`firmware.dir`/catalog.toml and `[[firmware.targets]]`).
    pub fn load(site: &Site) -> Result<Firmware, CatalogError> {
        let dir = catalog_dir(site)?;
        let manifest = read_manifest(&dir)?;
        let fw = Firmware::with(site, dir, manifest);
        for r in fw.catalog.rules() {
            if fw.catalog.image(&r.vendor, &r.model, &r.version).is_none() {
                tracing::warn!(
                    vendor = %r.vendor, model = %r.model, version = %r.version,
                    "firmware target is not in the catalogue; run `autoprov firmware add`"
                );
            }
        }
        Ok(fw)
    }

    /// A catalogue without images (used when the manifest cannot be read: nothing is served,
    /// no target is given).
    pub fn empty(site: &Site) -> Firmware {
        let dir = catalog_dir(site).unwrap_or_else(|_| site.dir.join("firmware"));
        Firmware::with(site, dir, Default::default())
    }

    fn with(site: &Site, dir: PathBuf, manifest: autoprov_core::firmware::Manifest) -> Firmware {
        let c = &site.config.firmware;
        Firmware {
            catalog: Arc::new(FirmwareCatalog::new(manifest, &c.targets)),
            dir,
            slots: Arc::new(Semaphore::new(c.max_downloads.max(1) as usize)),
            slots_max: c.max_downloads.max(1) as usize,
            retry_after: c.retry_after.max(1),
            flag_after: c.flag_after,
            reported: Default::default(),
        }
    }

    /// Keep `old`'s download slots when `[firmware] max_downloads` did not change (a reload
    /// must not let the downloads in flight plus new ones exceed the limit).
    pub fn keep_slots(
        mut self,
        old: &Firmware,
        old_cfg: &autoprov_core::config::FirmwareConfig,
        new_cfg: &autoprov_core::config::FirmwareConfig,
    ) -> Firmware {
        if old_cfg.max_downloads.max(1) == new_cfg.max_downloads.max(1) {
            self.slots = old.slots.clone();
            self.slots_max = old.slots_max;
        }
        self
    }

    /// Download slots taken now, and how many there are.
    pub fn download_budget(&self) -> (usize, usize) {
        (
            self.slots_max
                .saturating_sub(self.slots.available_permits()),
            self.slots_max,
        )
    }

    /// A download slot (`[firmware] max_downloads`, shared by catalogue images and `/fw/`
    /// files), or the 503 with `Retry-After` to answer when all are taken.
    pub fn download_slot(
        &self,
        path: &str,
    ) -> Result<tokio::sync::OwnedSemaphorePermit, Box<Response>> {
        self.slots.clone().try_acquire_owned().map_err(|_| {
            tracing::info!(path, "all firmware download slots busy; answered 503");
            let mut r = respond::text(
                StatusCode::SERVICE_UNAVAILABLE,
                "# all firmware download slots are busy, retry later\r\n".into(),
            );
            r.headers_mut()
                .insert(header::RETRY_AFTER, HeaderValue::from(self.retry_after));
            Box::new(r)
        })
    }

    /// The catalogue: `target()` for renderers, images and rules.
    pub fn catalog(&self) -> &FirmwareCatalog {
        &self.catalog
    }

    /// The catalogue directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Record that `device` (a MAC in any notation, or another id) of `vendor`/`model` in
    /// `groups` runs `version`. A changed version restarts the download count and lifts a flag;
    /// the target version marks it done. Returns the device's state, or `None` when the device
    /// id is empty or unusable. An unchanged report is written only every [`REPORT_REFRESH`]
    /// seconds (see [`Store::firmware_report`]).
    pub async fn report_version(
        &self,
        store: &Store,
        device: &str,
        vendor: &str,
        model: &str,
        groups: &[String],
        version: &str,
    ) -> Result<Option<ProgressState>, StoreError> {
        let Some(key) = device_key(device) else {
            return Ok(None);
        };
        let report = self.report(&key, vendor, model, groups, version, now());
        store.firmware_report(report).await?;
        // Written by now (readers flush the queue first); only a report that changes
        // nothing within REPORT_REFRESH seconds left the row as it was.
        let p = store
            .firmware_progress(&key)
            .await?
            .unwrap_or_else(|| autoprov_core::firmware::FirmwareProgress::new(&key));
        Ok(Some(self.catalog.state_of(&p)))
    }

    /// A version report of the device `key`, judged against its target.
    fn report(
        &self,
        key: &str,
        vendor: &str,
        model: &str,
        groups: &[String],
        version: &str,
        now: i64,
    ) -> autoprov_store::FirmwareReport {
        autoprov_store::FirmwareReport {
            device: key.to_string(),
            vendor: vendor.to_string(),
            model: model.to_string(),
            groups: groups.to_vec(),
            version: version.to_string(),
            at_target: self
                .catalog
                .is_target_version(vendor, model, groups, version),
            time: now,
            refresh_after: REPORT_REFRESH,
        }
    }

    /// [`Firmware::report_version`] for the request path, without waiting for the database:
    /// the report goes to [`Store::firmware_report`] (queued with the device states, written
    /// by the next batch; readers of firmware records flush first). A report identical to one
    /// this process handed over less than [`REPORT_MEMO`] seconds ago (and no download of the
    /// device since) is known to change nothing and is not even queued. A change made meanwhile
    /// by another process (a replica recording a download, the CLI) is therefore noticed up to
    /// that much later, well within the [`REPORT_REFRESH`] the stored report may lag anyway.
    pub async fn note_report(
        &self,
        store: &Store,
        device: &str,
        vendor: &str,
        model: &str,
        groups: &[String],
        version: &str,
    ) -> Result<(), StoreError> {
        use std::hash::{Hash, Hasher};
        let Some(key) = device_key(device) else {
            return Ok(());
        };
        let mut h = std::hash::BuildHasher::build_hasher(&foldhash::quality::FixedState::default());
        (vendor, model, groups, version).hash(&mut h);
        let fingerprint = h.finish();
        let now = now();
        let seen = self.memo().get(&key).copied();
        if let Some((fp, at)) = seen {
            if fp == fingerprint && (0..REPORT_MEMO).contains(&now.saturating_sub(at)) {
                return Ok(());
            }
        }
        // Queued with the device states (written at once without write-behind).
        let report = self.report(&key, vendor, model, groups, version, now);
        store.firmware_report(report).await?;
        let mut m = self.memo();
        if m.len() >= REPORT_MEMO_MAX {
            m.clear();
        }
        m.insert(key, (fingerprint, now));
        Ok(())
    }

    fn memo(&self) -> std::sync::MutexGuard<'_, HashMap<String, (u64, i64)>> {
        self.reported.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A download of `image` by `device` starting at byte `range_start`.
    async fn record_fetch(
        &self,
        store: &Store,
        device: &str,
        image: &Image,
        range_start: u64,
        peer: &str,
    ) {
        let now = now();
        if let Some(key) = device_key(device) {
            self.memo().remove(&key);
        }
        let fetch = FirmwareFetch {
            device: device.to_string(),
            time: now,
            vendor: image.vendor.clone(),
            model: image.model.clone(),
            version: image.version.clone(),
            sha256: image.sha256.clone(),
            range_start,
            peer: peer.to_string(),
        };
        if let Err(e) = store.firmware_log_fetch(&fetch, FETCH_LOG_KEEP).await {
            tracing::warn!(device, error = %e, "cannot log the firmware download");
        }
        if range_start > 0 {
            return; // a resume continues a download, it is not a new one
        }
        let flag_after = self.flag_after;
        match store
            .firmware_update(device, |p| p.record_fetch(image, now, flag_after))
            .await
        {
            Ok((p, FetchEvent::Flagged { fetches })) => tracing::warn!(
                device,
                vendor = %p.vendor,
                model = %p.model,
                image = %image.url_path(),
                reported_version = p.reported_version.as_deref().unwrap_or("-"),
                fetches,
                "device downloaded the same firmware image {fetches} times without its \
                 reported version changing; it may be re-installing in a loop"
            ),
            Ok(_) => {}
            Err(e) => tracing::warn!(device, error = %e, "cannot record the firmware download"),
        }
    }

    /// Targets, images and devices, for `autoprov firmware status`. With `hash`, every stored
    /// file is read and its sha256 checked.
    pub async fn status(&self, store: &Store, hash: bool) -> Result<StatusReport, StoreError> {
        let c = &self.catalog;
        let targets = c
            .rules()
            .iter()
            .map(|r| {
                let image = c.image(&r.vendor, &r.model, &r.version);
                TargetStatus {
                    rule: r.clone(),
                    url_path: image.map(|i| c.canonical(i).url_path()),
                    file: image.map(|i| check_file(&self.dir, c.canonical(i), false)),
                }
            })
            .collect();
        let images = c
            .images()
            .iter()
            .map(|i| ImageStatus {
                image: i.clone(),
                url_path: c.canonical(i).url_path(),
                file: if c.is_alias(i) {
                    FileCheck::Alias
                } else {
                    check_file(&self.dir, i, hash)
                },
            })
            .collect();
        let devices = store
            .firmware_progress_all()
            .await?
            .into_iter()
            .map(|p| DeviceStatus {
                state: c.state_of(&p),
                target_version: c
                    .rule(&p.vendor, &p.model, &p.groups)
                    .map(|(r, _)| r.version.clone()),
                progress: p,
            })
            .collect();
        Ok(StatusReport {
            targets,
            images,
            devices,
        })
    }
}

/// What `autoprov firmware status` shows.
#[derive(Debug, Clone, Serialize)]
pub struct StatusReport {
    pub targets: Vec<TargetStatus>,
    pub images: Vec<ImageStatus>,
    pub devices: Vec<DeviceStatus>,
}

#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub rule: FirmwareTargetRule,
    /// `None` when the version is not in the catalogue.
    pub url_path: Option<String>,
    pub file: Option<FileCheck>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ImageStatus {
    pub image: Image,
    /// The URL its bytes are served under (another entry's for an alias).
    pub url_path: String,
    pub file: FileCheck,
}

#[derive(Debug, Clone, Serialize)]
pub struct DeviceStatus {
    pub progress: FirmwareProgress,
    pub state: ProgressState,
    /// The version of the rule that applies to it now.
    pub target_version: Option<String>,
}

/// For `/firmware/<vendor>/<model>/<version>/<file>`: the part after `/firmware/` (still
/// percent-encoded). Paths of another shape (including innovaphone's `/firmware/fw/...` under a
/// `/firmware` prefix) are not the catalogue's.
pub fn catalog_rest(path: &str) -> Option<&str> {
    let rest = path.strip_prefix(URL_PREFIX)?;
    let n = rest.split('/').count();
    (n == 4 && !rest.starts_with("fw/")).then_some(rest)
}

/// Serve a catalogue image. `device` is the device as the caller identified it; `None` falls
/// back to the `mac=`/`sn=` query argument, then to the peer address.
pub async fn serve(app: AppState, rest: String, req: Request, device: Option<String>) -> Response {
    let (parts, _body) = req.into_parts();
    if let Some(refused) = transfer::method_refused(&parts.method) {
        return refused;
    }
    let head = parts.method == Method::HEAD;
    let segs: Vec<String> = rest
        .split('/')
        .map(|s| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        })
        .collect();
    if segs.len() != 4 || !segs.iter().all(|s| valid_name(s)) {
        tracing::info!(path = %parts.uri.path(), "firmware path refused");
        return respond::text(
            StatusCode::BAD_REQUEST,
            "# firmware path refused: expected /firmware/<vendor>/<model>/<version>/<file>\r\n"
                .into(),
        );
    }
    let fw = app.firmware().clone();
    let Some(image) = fw
        .catalog
        .served(&segs[0], &segs[1], &segs[2], &segs[3])
        .cloned()
    else {
        tracing::info!(path = %parts.uri.path(), "firmware image not in the catalogue");
        return respond::text(
            StatusCode::NOT_FOUND,
            format!("# no such firmware image: {}\r\n", parts.uri.path()),
        );
    };
    let path = fw.dir.join(image.rel_path());
    let etag = image.etag();
    let modified = if image.added > 0 {
        image.added
    } else {
        std::fs::metadata(&path)
            .map(|m| crate::fsutil::mtime_secs(&m))
            .unwrap_or(0)
    };
    let entity = transfer::Entity {
        etag: &etag,
        modified,
        size: image.size,
        cache_control: "public, max-age=31536000, immutable",
        boundary: &image.sha256[..24.min(image.sha256.len())],
    };
    let (builder, body_parts) = match transfer::plan(&parts.headers, &entity) {
        transfer::Plan::Done(r) => return r,
        transfer::Plan::Send(b, p) => (b, p),
    };
    if head {
        return finish(builder, Body::empty());
    }

    let permit = match fw.download_slot(parts.uri.path()) {
        Ok(p) => p,
        Err(busy) => {
            app.metrics().refused(crate::metrics::Budget::Firmware);
            return *busy;
        }
    };
    let file = match open_checked(&path, image.size).await {
        Ok(f) => f,
        Err(why) => {
            tracing::error!(file = %path.display(), "cannot serve firmware image: {why}");
            return respond::text(
                StatusCode::INTERNAL_SERVER_ERROR,
                "# firmware image unavailable on the server\r\n".into(),
            );
        }
    };

    let facts = ConnFacts::of(&parts);
    let device = device
        .as_deref()
        .and_then(device_key)
        .or_else(|| query_device(parts.uri.query().unwrap_or("")))
        .unwrap_or_else(|| format!("ip:{}", facts.peer_ip));
    let range_start = body_parts
        .iter()
        .find_map(|p| match p {
            Part::File(r) => Some(r.start),
            Part::Bytes(_) => None,
        })
        .unwrap_or_default();
    fw.record_fetch(app.store(), &device, &image, range_start, &facts.peer_ip)
        .await;
    finish(
        builder,
        transfer::file_body(transfer::Source::Mapped(file), body_parts, permit),
    )
}

/// The device named by the query: `mac=` first, then `sn=`.
fn query_device(query: &str) -> Option<String> {
    let args = UpdateRequest::parse_query(query);
    ["mac", "sn"].iter().find_map(|k| {
        args.iter()
            .find(|(n, v)| n.eq_ignore_ascii_case(k) && !v.is_empty())
            .and_then(|(_, v)| device_key(v))
    })
}

/// Open and map the image, checking its size against the catalogue. Images are only ever
/// added (new file, atomic rename), never rewritten in place, so a mapping stays valid.
async fn open_checked(path: &Path, size: u64) -> Result<transfer::Mapped, String> {
    let path = path.to_path_buf();
    let opened = tokio::task::spawn_blocking(move || -> Result<transfer::Mapped, String> {
        let file = std::fs::File::open(&path)
            .map_err(|e| format!("{e}; re-add it with `autoprov firmware add`"))?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len != size {
            return Err(format!(
                "the file has {len} bytes but the catalogue says {size}; it was changed on \
                 disk, restore it or add the new build under a new version"
            ));
        }
        crate::sendfile::MappedImage::open(file).map_err(|e| e.to_string())
    })
    .await;
    opened.unwrap_or_else(|e| Err(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn route_shape() {
        assert_eq!(
            catalog_rest("/firmware/snom/D785/10.1/x.bin"),
            Some("snom/D785/10.1/x.bin")
        );
        assert_eq!(catalog_rest("/firmware/snom/D785/x.bin"), None);
        assert_eq!(catalog_rest("/firmware/a/b/c/d/e"), None);
        // innovaphone under a `/firmware` prefix stays with fw.rs
        assert_eq!(catalog_rest("/firmware/fw/137640/ip232.bin"), None);
        assert_eq!(catalog_rest("/firmware/fw/137640/x/ip232.bin"), None);
        assert_eq!(catalog_rest("/x/firmware/a/b/c/d"), None);
        // odd but four segments: the handler refuses them
        assert_eq!(catalog_rest("/firmware/../b/c/d"), Some("../b/c/d"));
    }

    #[test]
    fn devices_from_the_query() {
        assert_eq!(
            query_device("mac=00:04:13:74:17:67").as_deref(),
            Some("000413741767")
        );
        assert_eq!(
            query_device("x=1&SN=00-90-33-30-00-af").as_deref(),
            Some("0090333000af")
        );
        assert_eq!(query_device("mac=&sn=abc").as_deref(), Some("abc"));
        assert_eq!(query_device(""), None);
    }
}
