//! The shared application state handed to every request handler.
//!
//! [`AppState`] bundles the loaded site, the device database, the master-info cache handle,
//! the outgoing HTTP client and small coordination helpers (per-device locks, the hourly
//! expiry stamp). It holds no per-request data and takes no decisions about devices.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use autoprov_core::Site;
use autoprov_store::Store;

use crate::catalog::Firmware;
use crate::ports::SitePorts;

/// Store meta key holding the time of the last state expiry (the reference's `lastcleanup`).
pub const LAST_CLEANUP_KEY: &str = "lastcleanup";
/// Expiry runs at most this often (seconds).
pub const CLEANUP_EVERY: i64 = 3600;

/// Per-listener facts put into every request's extensions by [`crate::Bound::run`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ListenerInfo {
    /// The local address the connection was accepted on (`SERVER_PORT` comes from here).
    pub local: SocketAddr,
    /// Whether the listener speaks TLS.
    pub https: bool,
}

/// Serialises master device lookups so that concurrent requests do not all hit the master
/// (or write its cache file) at once. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct MasterCache {
    pub(crate) lock: Arc<Mutex<()>>,
}

/// Everything request handlers share. Cheap to clone (an `Arc` inside).
#[derive(Clone)]
pub struct AppState {
    inner: Arc<Inner>,
}

/// The site and what is derived from it, swapped as one by [`AppState::reload_site`].
struct Loaded {
    site: Arc<Site>,
    firmware: Arc<Firmware>,
}

struct Inner {
    /// The current site snapshot; requests take an `Arc` and keep it for their lifetime.
    loaded: RwLock<Arc<Loaded>>,
    /// The site directory (fixed: a reload re-reads the same directory).
    site_dir: PathBuf,
    /// Serialises reloads.
    reload_lock: tokio::sync::Mutex<()>,
    store: Store,
    master: MasterCache,
    http: reqwest::Client,
    device_locks: DeviceLocks,
    /// Last expiry run seen by this process (0 = ask the store).
    last_cleanup: AtomicI64,
    /// Requests dispatched so far (see [`AppState::activity`]).
    activity: std::sync::atomic::AtomicU64,
    /// Serialises backup file operations (index choice, write, retention).
    backup_lock: tokio::sync::Mutex<()>,
    /// Last good vendor templates (see [`crate::vendor_templates`]).
    vendor_templates: crate::vendor_templates::TemplateCache,
    /// Rendered vendor files (see [`crate::render_cache`]).
    renders: crate::render_cache::RenderCache,
    identified: crate::identify_memo::IdentifyMemo,
    /// The configuration requests budget (`[server] max_config_requests`).
    config_slots: Arc<tokio::sync::Semaphore>,
    /// Its size.
    config_slots_max: usize,
    /// Counters of the request path (see [`crate::metrics`]).
    metrics: crate::metrics::Metrics,
    /// Snippet files as last read (see [`crate::ports::ScriptCache`]).
    scripts: crate::ports::ScriptCache,
    /// The device list's in-memory index, following the store's changes.
    inventory: crate::inventory::InventoryIndex,
}

impl AppState {
    pub fn new(site: Site, store: Store) -> AppState {
        let firmware = Firmware::load(&site).unwrap_or_else(|e| {
            tracing::error!(
                "firmware catalogue not loaded, no catalogue firmware is served: {e} (run \
                 `autoprov check`)"
            );
            Firmware::empty(&site)
        });
        let config_slots_max = (site.config.server.max_config_requests.max(1) as usize)
            .min(tokio::sync::Semaphore::MAX_PERMITS);
        let config_slots = Arc::new(tokio::sync::Semaphore::new(config_slots_max));
        let inventory = crate::inventory::InventoryIndex::new(&store);
        let scripts = crate::ports::ScriptCache::default();
        let render_bytes = site.config.server.render_cache_mib.min(1 << 20) as usize * (1 << 20);
        let renders =
            crate::render_cache::RenderCache::with_budget(render_bytes).watched_by(scripts.clone());
        AppState {
            inner: Arc::new(Inner {
                config_slots,
                config_slots_max,
                metrics: Default::default(),
                scripts,
                inventory,
                site_dir: site.dir.clone(),
                loaded: RwLock::new(Arc::new(Loaded {
                    site: Arc::new(site),
                    firmware: Arc::new(firmware),
                })),
                reload_lock: tokio::sync::Mutex::new(()),
                store,
                master: MasterCache::default(),
                http: http_client(),
                device_locks: DeviceLocks::default(),
                last_cleanup: AtomicI64::new(0),
                activity: Default::default(),
                backup_lock: tokio::sync::Mutex::new(()),
                vendor_templates: Default::default(),
                renders,
                identified: Default::default(),
            }),
        }
    }

    /// Count one request (for [`AppState::activity`]).
    pub fn note_request(&self) {
        self.inner.activity.fetch_add(1, Ordering::Relaxed);
    }

    /// Requests dispatched since the start: unchanged between two looks means the server was
    /// quiet in between.
    pub fn activity(&self) -> u64 {
        self.inner.activity.load(Ordering::Relaxed)
    }

    /// Drop what is kept only for speed (clean device states, rendered files): called when
    /// the server has been quiet, so that idle memory is the inventory and little else.
    pub fn trim_caches(&self) {
        self.store().drop_clean_states();
        self.renders().clear();
        self.inner.identified.clear();
    }

    /// Identification and settings of vendor-file requests (see [`crate::identify_memo`]).
    pub fn identified(&self) -> &crate::identify_memo::IdentifyMemo {
        &self.inner.identified
    }

    /// Rendered vendor files of the current site snapshot.
    pub fn renders(&self) -> &crate::render_cache::RenderCache {
        &self.inner.renders
    }

    /// The last good version of each site vendor template.
    pub fn vendor_templates(&self) -> &crate::vendor_templates::TemplateCache {
        &self.inner.vendor_templates
    }

    fn loaded(&self) -> Arc<Loaded> {
        self.inner
            .loaded
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    /// A snapshot of the current site. Keep it for the whole request: a reload swaps in a new
    /// site and never changes a snapshot.
    pub fn site(&self) -> Arc<Site> {
        self.loaded().site.clone()
    }

    /// Same as [`AppState::site`].
    pub fn site_arc(&self) -> Arc<Site> {
        self.site()
    }

    /// The site directory (the same for every snapshot).
    pub fn site_dir(&self) -> &Path {
        &self.inner.site_dir
    }

    /// Re-read `autoprov.toml`, the firmware manifest and the vendor templates, check them like
    /// `autoprov check`, and only when they are free of errors swap the new site and firmware
    /// catalogue in. On failure the running site stays and the error lists the diagnostics
    /// (`file:line:column: error: ...`). Settings bound at start (listeners, TLS files,
    /// database, side channels) are reported as needing a restart when they changed.
    pub async fn reload_site(
        &self,
    ) -> Result<crate::reload::ReloadReport, crate::reload::ReloadError> {
        let _serial = self.inner.reload_lock.lock().await;
        let dir = self.inner.site_dir.clone();
        let old = self.loaded();
        let old2 = old.clone();
        let (site, firmware, report) = tokio::task::spawn_blocking(move || {
            crate::reload::prepare(&dir, &old2.site, &old2.firmware)
        })
        .await
        .map_err(|e| crate::reload::ReloadError(format!("reload failed: {e}")))??;
        let new = Arc::new(Loaded {
            site: Arc::new(site),
            firmware: Arc::new(firmware),
        });
        *self.inner.loaded.write().unwrap_or_else(|p| p.into_inner()) = new;
        drop(old);
        Ok(report)
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The device list's index (see [`crate::inventory`]).
    pub fn inventory(&self) -> &crate::inventory::InventoryIndex {
        &self.inner.inventory
    }

    /// The firmware catalogue: targets for renderers, version reports, download slots.
    pub fn firmware(&self) -> Arc<Firmware> {
        self.loaded().firmware.clone()
    }

    pub fn master_cache(&self) -> &MasterCache {
        &self.inner.master
    }

    pub fn http(&self) -> &reqwest::Client {
        &self.inner.http
    }

    /// Ports for the engine, doing their async work on `runtime`. Use them on a blocking
    /// thread (`spawn_blocking`), never directly inside an async task (see [`crate::ports`]).
    pub fn ports(&self, runtime: tokio::runtime::Handle) -> SitePorts {
        SitePorts::new(
            self.site_arc(),
            runtime,
            self.inner.http.clone(),
            self.inner.master.clone(),
        )
        .with_script_cache(self.inner.scripts.clone())
    }

    /// The counters of the request path.
    pub fn metrics(&self) -> &crate::metrics::Metrics {
        &self.inner.metrics
    }

    /// Slots of the configuration budget taken now, and its size.
    pub fn config_budget(&self) -> (usize, usize) {
        let max = self.inner.config_slots_max;
        (
            max.saturating_sub(self.inner.config_slots.available_permits()),
            max,
        )
    }

    /// A slot of the configuration budget, or `None` when `[server] max_config_requests`
    /// requests are already in progress (the caller answers 503 at once). Held until the
    /// response is produced; firmware downloads have their own slots and never take these.
    pub fn try_config_slot(&self) -> Option<tokio::sync::OwnedSemaphorePermit> {
        self.inner.config_slots.clone().try_acquire_owned().ok()
    }

    /// Lock the state of one device for a load-modify-save cycle: the in-process mutex first
    /// (so one process never spends a database connection on waiting for itself), then the
    /// store's cross-replica lock (PostgreSQL; a no-op on SQLite). A store lock that cannot
    /// be taken (database down) is logged; the load that follows reports the same problem.
    pub(crate) async fn lock_device(&self, sn: &str) -> DeviceGuard {
        let mut guard = self.inner.device_locks.lock(sn).await;
        match self.inner.store.lock_device(sn).await {
            Ok(l) => guard._store = Some(l),
            Err(e) => tracing::warn!(device = sn, error = %e, "cannot take the device lock"),
        }
        guard
    }

    pub(crate) async fn lock_backups(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.backup_lock.lock().await
    }

    /// Delete devices not seen for `status.expire` seconds, at most once per hour (the stamp
    /// lives in the store under [`LAST_CLEANUP_KEY`]). Problems are logged, never returned:
    /// expiry must not fail a device's request.
    pub async fn maybe_expire(&self, now: i64) {
        let site = self.site();
        let status = &site.config.status;
        if !status.enabled || status.expire == 0 {
            return;
        }
        let seen = self.inner.last_cleanup.load(Ordering::Relaxed);
        if seen != 0 && now - seen <= CLEANUP_EVERY {
            return;
        }
        let store = self.store();
        let last = match store.meta_get(LAST_CLEANUP_KEY).await {
            Ok(v) => v.and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or(0),
            Err(e) => {
                tracing::warn!(error = %e, "cannot read the last expiry time");
                return;
            }
        };
        if last != 0 && now - last <= CLEANUP_EVERY {
            self.inner.last_cleanup.store(last, Ordering::Relaxed);
            return;
        }
        let older_than = now.saturating_sub(status.expire.min(i64::MAX as u64) as i64);
        match store.expire(older_than).await {
            Ok(n) => {
                if n > 0 {
                    tracing::info!(devices = n, older_than, "expired device states");
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "device expiry failed");
                return;
            }
        }
        if let Err(e) = store.meta_set(LAST_CLEANUP_KEY, &now.to_string()).await {
            tracing::warn!(error = %e, "cannot record the expiry time");
        }
        self.inner.last_cleanup.store(now, Ordering::Relaxed);
    }
}

fn http_client() -> reqwest::Client {
    match reqwest::Client::builder().build() {
        Ok(c) => c,
        Err(e) => {
            tracing::warn!(error = %e, "cannot configure the HTTP client, using defaults");
            reqwest::Client::new()
        }
    }
}

/// Run `fut` on `runtime` and wait for its output from a synchronous context (the engine's
/// ports). The future is spawned rather than driven here, so this works with both runtime
/// flavours as long as the runtime runs; `None` when the runtime dropped the task (shutdown).
/// Must not be called from inside an async task (it blocks the thread).
pub fn wait_on<T, F>(runtime: &tokio::runtime::Handle, fut: F) -> Option<T>
where
    T: Send + 'static,
    F: std::future::Future<Output = T> + Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    runtime.spawn(async move {
        let _ = tx.send(fut.await);
    });
    rx.recv().ok()
}

/// Current time as Unix epoch seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// Device locks, striped: a serial hashes to one of [`DEVICE_LOCK_STRIPES`] async mutexes.
/// Taking one costs a hash and an atomic increment, with no lock shared by all requests and
/// no allocation; two devices of one stripe (with 64 requests under way, a request meets
/// one in ~1.5 %) wait for each other like two polls of one device, for the length of one
/// request. Nothing may hold two device locks at once (two serials of one stripe would
/// wait for themselves): every user takes one, and drops it before taking another.
struct DeviceLocks {
    stripes: Box<[Arc<tokio::sync::Mutex<()>>]>,
}

/// Stripes of [`DeviceLocks`].
const DEVICE_LOCK_STRIPES: usize = 4096;

impl Default for DeviceLocks {
    fn default() -> DeviceLocks {
        DeviceLocks {
            stripes: (0..DEVICE_LOCK_STRIPES).map(|_| Arc::default()).collect(),
        }
    }
}

/// Holds a device's lock.
pub(crate) struct DeviceGuard {
    // Field order matters: the store lock is released before the process-local one.
    _store: Option<autoprov_store::DeviceLock>,
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl DeviceLocks {
    fn stripe(sn: &str) -> usize {
        use std::hash::BuildHasher;
        let hash = foldhash::fast::FixedState::with_seed(0x0de7_1ce5).hash_one(sn);
        (hash % DEVICE_LOCK_STRIPES as u64) as usize
    }

    async fn lock(&self, sn: &str) -> DeviceGuard {
        let m = self.stripes[Self::stripe(sn)].clone();
        DeviceGuard {
            _store: None,
            _guard: m.lock_owned().await,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn device_locks_serialise_one_device_only() {
        let locks = DeviceLocks::default();
        // a serial of another stripe than "a" (nearly every one)
        let b = (0..)
            .map(|i| format!("b{i}"))
            .find(|b| DeviceLocks::stripe(b) != DeviceLocks::stripe("a"))
            .unwrap();
        let a = locks.lock("a").await;
        // another device is not blocked
        let _b = tokio::time::timeout(std::time::Duration::from_secs(1), locks.lock(&b))
            .await
            .expect("other device must not wait");
        // the same device waits
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), locks.lock("a"))
                .await
                .is_err()
        );
        drop(a);
        let _a2 = tokio::time::timeout(std::time::Duration::from_secs(1), locks.lock("a"))
            .await
            .expect("released lock is free");
    }

    #[test]
    fn device_lock_stripes_spread_serials() {
        let mut used = std::collections::HashSet::new();
        for i in 0..2000u32 {
            let sn = format!(
                "00-90-33-{:02x}-{:02x}-{:02x}",
                i >> 16,
                (i >> 8) & 255,
                i & 255
            );
            used.insert(DeviceLocks::stripe(&sn));
        }
        // 2000 serials into 4096 stripes: ~1600 distinct expected when spread evenly
        assert!(used.len() > 1400, "only {} stripes used", used.len());
    }
}
