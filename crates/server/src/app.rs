//! The shared application state handed to every request handler.
//!
//! [`AppState`] bundles the loaded site, the device database, the master-info cache handle,
//! the outgoing HTTP client and small coordination helpers (per-device locks, the hourly
//! expiry stamp). It holds no per-request data and takes no decisions about devices.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};

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

struct Inner {
    site: Arc<Site>,
    store: Store,
    master: MasterCache,
    http: reqwest::Client,
    device_locks: DeviceLocks,
    /// Last expiry run seen by this process (0 = ask the store).
    last_cleanup: AtomicI64,
    /// Serialises backup file operations (index choice, write, retention).
    backup_lock: tokio::sync::Mutex<()>,
    /// The firmware catalogue and its download slots.
    firmware: Firmware,
    /// Last good vendor templates (see [`crate::vendor_templates`]).
    vendor_templates: crate::vendor_templates::TemplateCache,
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
        AppState {
            inner: Arc::new(Inner {
                site: Arc::new(site),
                store,
                master: MasterCache::default(),
                http: http_client(),
                device_locks: DeviceLocks::default(),
                last_cleanup: AtomicI64::new(0),
                backup_lock: tokio::sync::Mutex::new(()),
                firmware,
                vendor_templates: Default::default(),
            }),
        }
    }

    /// The last good version of each site vendor template.
    pub fn vendor_templates(&self) -> &crate::vendor_templates::TemplateCache {
        &self.inner.vendor_templates
    }

    pub fn site(&self) -> &Site {
        &self.inner.site
    }

    pub fn site_arc(&self) -> Arc<Site> {
        self.inner.site.clone()
    }

    pub fn site_dir(&self) -> &Path {
        &self.inner.site.dir
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    /// The firmware catalogue: targets for renderers, version reports, download slots.
    pub fn firmware(&self) -> &Firmware {
        &self.inner.firmware
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
    }

    /// Lock the state of one device for a load-modify-save cycle.
    pub(crate) async fn lock_device(&self, sn: &str) -> DeviceGuard {
        self.inner.device_locks.lock(sn).await
    }

    pub(crate) async fn lock_backups(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.inner.backup_lock.lock().await
    }

    /// Delete devices not seen for `status.expire` seconds, at most once per hour (the stamp
    /// lives in the store under [`LAST_CLEANUP_KEY`]). Problems are logged, never returned:
    /// expiry must not fail a device's request.
    pub async fn maybe_expire(&self, now: i64) {
        let status = &self.site().config.status;
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

/// One async mutex per device serial, created on demand and dropped when unused.
#[derive(Default)]
struct DeviceLocks {
    map: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

/// Holds a device's lock; releasing it forgets the lock when nobody else waits for it.
pub(crate) struct DeviceGuard {
    _guard: tokio::sync::OwnedMutexGuard<()>,
}

impl DeviceLocks {
    async fn lock(&self, sn: &str) -> DeviceGuard {
        let m = {
            let mut map = self.map.lock().unwrap_or_else(|p| p.into_inner());
            // Forget locks nobody holds or waits for, so the map stays small.
            map.retain(|_, l| Arc::strong_count(l) > 1);
            map.entry(sn.to_string()).or_default().clone()
        };
        DeviceGuard {
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
        let a = locks.lock("a").await;
        // another device is not blocked
        let _b = tokio::time::timeout(std::time::Duration::from_secs(1), locks.lock("b"))
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
}
