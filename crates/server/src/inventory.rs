//! The server's device inventory index ([`autoprov_core::inventory::Inventory`]) kept up to
//! date, so the device list of the web UI and the REST API filters, counts, sorts and pages in
//! memory instead of loading every device per request (issues 4, 6).
//!
//! * [`InventoryIndex::new`] registers a [`StoreObserver`] with the store: every save, delete,
//!   touch and expiry made through this process's store reaches the index. Changes are queued
//!   and applied when the index lock is free (at the latest before the next list query), so a
//!   saving task never waits for a running query.
//! * A background task loads the index a page at a time ([`Store::list_shallow_page`],
//!   without the message logs); changes queued meanwhile are replayed on top (they are
//!   absolute: a state, a deletion, a time), so nothing is lost.
//!   Until it is loaded, [`InventoryIndex::query`] answers `None` and the list falls back to
//!   reading the store.
//! * On PostgreSQL other replicas write too: every [`REFRESH_EVERY`] the task reads the devices
//!   seen since the last refresh (minus [`CLOCK_SLACK`]; a page at a time), and every
//!   [`RECONCILE_EVERY`] it drops devices the database no longer has. On SQLite (one server)
//!   only other processes' writes (`autoprov devices forget`, `notify`) need reading: the
//!   store notices them ([`Store::foreign_device_writes`]), and within [`REFRESH_EVERY`] of one
//!   the task does both; without such writes it reads nothing (after a boot storm, reading
//!   every device seen in the last minute, every minute, was most of an idle server's work).
//!   A store that cannot notice them is read every [`RECONCILE_EVERY`], as before.
//!   A row a refresh reads loses to any change of its device that reached the index after
//!   the refresh began (see [`refresh_from`]): a row read just before this process saved a
//!   newer state of the device does not overtake that state.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, RwLock, Weak};
use std::time::Duration;

use autoprov_core::inventory::{DeviceSummary, Inventory, InventoryPage, InventoryQuery};
use autoprov_core::state::DeviceState;
use autoprov_store::{Backend, Store, StoreObserver};

/// How often the index reads other replicas' changes (PostgreSQL).
pub const REFRESH_EVERY: Duration = Duration::from_secs(2);
/// How often the index drops devices other replicas deleted (PostgreSQL).
pub const RECONCILE_EVERY: Duration = Duration::from_secs(60);
/// Seconds subtracted from the last refresh time: replicas' clocks and in-flight saves.
pub const CLOCK_SLACK: i64 = 5;
/// Changes queued before the first load beyond this many are dropped and the load repeated.
const MAX_PENDING: usize = 1_000_000;

/// One change reported by the store.
enum Change {
    Saved(Box<DeviceSummary>),
    /// A row read from the store by a refresh that began at the given index version: it
    /// loses to any change of the device the index saw since (see [`refresh_from`]).
    Refreshed(Box<DeviceSummary>, u64),
    Deleted(String),
    Expired(i64),
    Touched(String, i64),
}

struct Shared {
    inv: RwLock<Inventory>,
    pending: Mutex<Pending>,
    loaded: AtomicBool,
    started: AtomicBool,
}

#[derive(Default)]
struct Pending {
    changes: Vec<Change>,
    /// Changes were dropped before the index was loaded: load again.
    overflow: bool,
}

impl Shared {
    fn push(&self, c: Change) {
        {
            let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
            if p.changes.len() >= MAX_PENDING && !self.loaded.load(Ordering::Acquire) {
                p.changes.clear();
                p.overflow = true;
            }
            p.changes.push(c);
        }
        if self.loaded.load(Ordering::Acquire) {
            if let Ok(mut inv) = self.inv.try_write() {
                self.drain(&mut inv);
            }
        }
    }

    /// Apply the queued changes; the caller holds the write lock, which keeps them in order.
    fn drain(&self, inv: &mut Inventory) {
        let changes = std::mem::take(
            &mut self
                .pending
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .changes,
        );
        for c in changes {
            match c {
                Change::Saved(s) => inv.upsert_summary(*s),
                Change::Refreshed(s, since) => {
                    inv.upsert_unless_changed_since(*s, since);
                }
                Change::Deleted(sn) => {
                    inv.remove(&sn);
                }
                Change::Expired(t) => {
                    inv.expire(t);
                }
                Change::Touched(sn, seen) => {
                    inv.touch(&sn, seen);
                }
            }
        }
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, Inventory> {
        self.inv.write().unwrap_or_else(|e| e.into_inner())
    }

    fn has_pending(&self) -> bool {
        !self
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changes
            .is_empty()
    }
}

/// What the store calls; holds the index weakly so a dropped server state frees it.
struct Observer(Weak<Shared>);

impl StoreObserver for Observer {
    fn saved(&self, state: &DeviceState) {
        if let Some(s) = self.0.upgrade() {
            // Loaded and free: applied right here from the state itself, after whatever was
            // queued before it (the queue is drained under the same lock); otherwise queued
            // as an owned summary.
            if s.loaded.load(Ordering::Acquire) {
                if let Ok(mut inv) = s.inv.try_write() {
                    s.drain(&mut inv);
                    inv.upsert(state);
                    return;
                }
            }
            s.push(Change::Saved(Box::new(DeviceSummary::from_state(state))));
        }
    }
    fn deleted(&self, sn: &str) {
        if let Some(s) = self.0.upgrade() {
            s.push(Change::Deleted(sn.to_string()));
        }
    }
    fn expired(&self, older_than: i64) {
        if let Some(s) = self.0.upgrade() {
            s.push(Change::Expired(older_than));
        }
    }
    fn touched(&self, sn: &str, seen: i64) {
        if let Some(s) = self.0.upgrade() {
            s.push(Change::Touched(sn.to_string(), seen));
        }
    }
}

/// The shared, self-updating index. Cheap to clone.
#[derive(Clone)]
pub struct InventoryIndex {
    shared: Arc<Shared>,
    store: Store,
    /// [`REFRESH_EVERY`], [`RECONCILE_EVERY`] (shorter in tests).
    every: (Duration, Duration),
}

/// An owned list query for [`InventoryIndex::query`].
#[derive(Debug, Clone)]
pub struct IndexQuery {
    pub filter: String,
    pub sort: autoprov_core::inventory::SortKey,
    pub descending: bool,
    pub offset: usize,
    pub limit: usize,
    pub now: i64,
    pub missing_after: u64,
}

impl InventoryIndex {
    /// An index of `store`'s devices: registers for its changes and, inside a Tokio runtime,
    /// starts loading (else the first [`InventoryIndex::query`] starts it).
    pub fn new(store: &Store) -> InventoryIndex {
        InventoryIndex::with_intervals(store, REFRESH_EVERY, RECONCILE_EVERY)
    }

    fn with_intervals(store: &Store, refresh: Duration, reconcile: Duration) -> InventoryIndex {
        let shared = Arc::new(Shared {
            inv: RwLock::new(Inventory::new()),
            pending: Mutex::new(Pending::default()),
            loaded: AtomicBool::new(false),
            started: AtomicBool::new(false),
        });
        store.observe(Arc::new(Observer(Arc::downgrade(&shared))));
        let index = InventoryIndex {
            shared,
            store: store.clone(),
            every: (refresh, reconcile),
        };
        index.start();
        index
    }

    /// Whether the first load is done.
    pub fn is_loaded(&self) -> bool {
        self.shared.loaded.load(Ordering::Acquire)
    }

    /// Start the loading and refreshing task once, if a runtime is there.
    fn start(&self) {
        if tokio::runtime::Handle::try_current().is_err()
            || self.shared.started.swap(true, Ordering::AcqRel)
        {
            return;
        }
        let weak = Arc::downgrade(&self.shared);
        let store = self.store.clone();
        tokio::spawn(maintain(weak, store, self.every));
    }

    /// How many devices the index holds; `None` while it is still loading.
    pub fn devices(&self) -> Option<usize> {
        if !self.is_loaded() {
            return None;
        }
        Some(
            self.shared
                .inv
                .read()
                .unwrap_or_else(|e| e.into_inner())
                .len(),
        )
    }

    /// Filter, count, sort and page; `None` while the index is still loading.
    pub async fn query(&self, q: IndexQuery) -> Option<InventoryPage> {
        self.start();
        if !self.is_loaded() {
            return None;
        }
        let shared = self.shared.clone();
        let run = move || {
            if shared.has_pending() {
                let mut inv = shared.write();
                shared.drain(&mut inv);
            }
            let inv = shared.inv.read().unwrap_or_else(|e| e.into_inner());
            inv.query(&InventoryQuery {
                filter: &q.filter,
                sort: q.sort,
                descending: q.descending,
                offset: q.offset,
                limit: q.limit,
                now: q.now,
                missing_after: q.missing_after,
            })
        };
        // A query over a million devices takes tens of milliseconds: off the async workers.
        tokio::task::spawn_blocking(run).await.ok()
    }
}

/// Devices read from the store per step of the first load.
const LOAD_PAGE: usize = 10_000;

/// Every stored device into a new index, a page at a time: what is held besides the index is
/// one page of rows (the message logs are not read). `None` when the runtime goes away.
async fn load(store: &Store) -> autoprov_store::Result<Option<Inventory>> {
    let mut inv = Inventory::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list_shallow_page(after.as_deref(), LOAD_PAGE).await?;
        let done = page.len() < LOAD_PAGE;
        after = page.last().map(|d| d.sn.clone());
        // Building takes a while for many devices: off the async workers.
        let built = tokio::task::spawn_blocking(move || {
            for d in &page {
                inv.upsert(d);
            }
            inv
        })
        .await;
        let Ok(built) = built else { return Ok(None) };
        inv = built;
        if done {
            return Ok(Some(inv));
        }
    }
}

/// Queue the devices seen since `since` as changes of the index, a page at a time (after a
/// boot storm that is every device). `Ok(false)` when the index is gone.
///
/// A row read here may be older than a change this process made meanwhile (a poll saved
/// while the page was read: the write-behind's newer state reaches the index through the
/// observer first). So the index version is taken before reading, removals are tracked
/// while the refresh runs, and a row whose device changed after that version is dropped;
/// the next refresh reads it again if it is really newer (another replica's write).
async fn refresh_from(
    store: &Store,
    weak: &Weak<Shared>,
    since: i64,
) -> autoprov_store::Result<bool> {
    let Some(shared) = weak.upgrade() else {
        return Ok(false);
    };
    // The index lock may wait for a running query: off the async workers.
    let Ok(before) = tokio::task::spawn_blocking(move || {
        let mut inv = shared.write();
        shared.drain(&mut inv);
        inv.track_removals()
    })
    .await
    else {
        return Ok(false);
    };
    let read = refresh_pages(store, weak, since, before).await;
    if let Some(shared) = weak.upgrade() {
        let _ = tokio::task::spawn_blocking(move || {
            let mut inv = shared.write();
            shared.drain(&mut inv);
            inv.end_tracking_removals();
        })
        .await;
    }
    read
}

/// The pages of [`refresh_from`], queued as [`Change::Refreshed`] against `before`.
async fn refresh_pages(
    store: &Store,
    weak: &Weak<Shared>,
    since: i64,
    before: u64,
) -> autoprov_store::Result<bool> {
    let mut after: Option<String> = None;
    loop {
        let page = store
            .list_shallow_since_page(since, after.as_deref(), LOAD_PAGE)
            .await?;
        let Some(shared) = weak.upgrade() else {
            return Ok(false);
        };
        let done = page.len() < LOAD_PAGE;
        after = page.last().map(|d| d.sn.clone());
        shared
            .pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .changes
            .extend(
                page.iter()
                    .map(|d| Change::Refreshed(Box::new(DeviceSummary::from_state(d)), before)),
            );
        drop(page);
        if let Ok(mut inv) = shared.inv.try_write() {
            shared.drain(&mut inv);
        }
        if done {
            return Ok(true);
        }
    }
}

/// Load the index, then (PostgreSQL) follow other replicas' changes while the index lives.
async fn maintain(weak: Weak<Shared>, store: Store, (refresh, reconcile): (Duration, Duration)) {
    let mut last_refresh;
    loop {
        let started = crate::app::now();
        let fresh = match load(&store).await {
            Ok(Some(inv)) => inv,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "cannot load the device inventory index; retrying");
                tokio::time::sleep(Duration::from_secs(5)).await;
                if weak.strong_count() == 0 {
                    return;
                }
                continue;
            }
        };
        let Some(shared) = weak.upgrade() else { return };
        let done = tokio::task::spawn_blocking(move || {
            let mut inv = shared.write();
            *inv = fresh;
            let again = std::mem::take(
                &mut shared
                    .pending
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .overflow,
            );
            if again {
                return false;
            }
            shared.drain(&mut inv);
            shared.loaded.store(true, Ordering::Release);
            tracing::info!(devices = inv.len(), "device inventory index loaded");
            true
        })
        .await;
        match done {
            Ok(true) => {
                last_refresh = started;
                break;
            }
            Ok(false) => continue,
            Err(_) => return,
        }
    }
    // PostgreSQL: other replicas write all the time. SQLite: one server, but other processes
    // (`autoprov devices forget`, an import) may change the file now and then; the store
    // notices those writes (`Store::foreign_device_writes`), so the index reads the database
    // only after one, soon after it. A store that notices nothing is read every `reconcile`.
    let sqlite = store.backend() == Backend::Sqlite;
    let mut foreign = if sqlite {
        store.foreign_device_writes()
    } else {
        None
    };
    let refresh = if sqlite && foreign.is_none() {
        reconcile
    } else {
        refresh
    };
    let mut last_reconcile = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(refresh).await;
        if weak.strong_count() == 0 {
            return;
        }
        let started = crate::app::now();
        let mut reconcile_now = last_reconcile.elapsed() >= reconcile;
        if let Some(seen) = foreign {
            // Taken before reading, so a write noticed meanwhile is read again next time.
            let now = store
                .foreign_device_writes()
                .unwrap_or(seen.wrapping_add(1));
            if now == seen {
                // Nothing written elsewhere: this process's own changes are in the index.
                last_refresh = started;
                continue;
            }
            foreign = Some(now);
            reconcile_now = true;
        }
        match refresh_from(&store, &weak, last_refresh - CLOCK_SLACK).await {
            Ok(true) => last_refresh = started,
            Ok(false) => return,
            Err(e) => tracing::warn!(error = %e, "cannot refresh the device inventory index"),
        }
        if !reconcile_now {
            continue;
        }
        last_reconcile = tokio::time::Instant::now();
        let Some(shared) = weak.upgrade() else { return };
        let before = {
            let mut inv = shared.write();
            shared.drain(&mut inv);
            inv.version()
        };
        match store.serials().await {
            Ok(mut serials) => {
                // The database's collation may differ from byte order.
                serials.sort_unstable();
                let _ = tokio::task::spawn_blocking(move || {
                    let mut inv = shared.write();
                    shared.drain(&mut inv);
                    let gone = inv.retain_known(&serials, before);
                    if gone > 0 {
                        tracing::info!(devices = gone, "devices deleted elsewhere left the index");
                    }
                })
                .await;
            }
            Err(e) => tracing::warn!(error = %e, "cannot reconcile the device inventory index"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn q(filter: &str) -> IndexQuery {
        IndexQuery {
            filter: filter.into(),
            sort: autoprov_core::inventory::SortKey::Sn,
            descending: false,
            offset: 0,
            limit: 0,
            now: 0,
            missing_after: 0,
        }
    }

    async fn loaded(index: &InventoryIndex) {
        for _ in 0..500 {
            if index.is_loaded() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("index not loaded");
    }

    #[tokio::test]
    async fn follows_the_store() {
        let store = Store::open_memory().await.unwrap();
        let mut d = DeviceState::new("00-90-33-00-00-01", 100);
        d.device.ip = Some("172.16.0.1".into());
        store.save(&d).await.unwrap();
        let index = InventoryIndex::new(&store);
        loaded(&index).await;
        assert_eq!(index.query(q("172.16.")).await.unwrap().total, 1);
        let mut e = DeviceState::new("00-90-33-00-00-02", 200);
        e.device.ip = Some("172.16.0.2".into());
        store.save(&e).await.unwrap();
        assert_eq!(index.query(q("172.16.")).await.unwrap().total, 2);
        assert!(store.touch(&e.sn, 300).await.unwrap());
        let page = index.query(q("00-90-33-00-00-02")).await.unwrap();
        assert_eq!(page.rows[0].seen, 300);
        assert!(store.delete(&d.sn).await.unwrap());
        assert_eq!(index.query(q("")).await.unwrap().total, 1);
        store.expire(1000).await.unwrap();
        assert_eq!(index.query(q("")).await.unwrap().total, 0);
    }

    /// A row a refresh read before this process saved the device anew (or forgot it) does
    /// not overtake the newer change in the index.
    #[tokio::test]
    async fn a_refreshed_row_loses_to_a_newer_local_change() {
        let store = Store::open_memory().await.unwrap();
        let mut d = DeviceState::new("00-90-33-00-00-01", 100);
        d.device.ip = Some("172.16.0.1".into());
        let gone = DeviceState::new("00-90-33-00-00-02", 100);
        store.save_all(&[&d, &gone]).await.unwrap();
        let index = InventoryIndex::new(&store);
        loaded(&index).await;
        let shared = index.shared.clone();
        let before = shared.write().track_removals();
        // What a refresh read at `before`.
        let rows = store.list_shallow_since_page(0, None, 10).await.unwrap();
        assert_eq!(rows.len(), 2);
        // Meanwhile this process saves one device anew and forgets the other.
        d.device.ip = Some("172.16.0.2".into());
        store.save(&d).await.unwrap();
        assert!(store.delete(&gone.sn).await.unwrap());
        for r in &rows {
            shared.push(Change::Refreshed(
                Box::new(DeviceSummary::from_state(r)),
                before,
            ));
        }
        let page = index.query(q("")).await.unwrap();
        assert_eq!(page.total, 1, "the forgotten device stays forgotten");
        assert_eq!(page.rows[0].ip.as_deref(), Some("172.16.0.2"));
        // A row read after the change applies.
        let before = shared.write().track_removals();
        let mut other = DeviceSummary::from_state(&d);
        other.ip = Some("172.16.0.3".into());
        shared.push(Change::Refreshed(Box::new(other), before));
        let page = index.query(q("")).await.unwrap();
        assert_eq!(page.rows[0].ip.as_deref(), Some("172.16.0.3"));
        shared.write().end_tracking_removals();
    }

    /// On SQLite, another process's changes (the CLI next to the server: a device saved, one
    /// forgotten) reach the index soon after they are noticed, long before the reconcile
    /// interval that used to be the only way.
    #[tokio::test]
    async fn follows_other_processes_on_sqlite() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("autoprov.db");
        let server = Store::open_with(
            &file,
            &autoprov_store::StoreOptions {
                write_behind: Some(Duration::from_millis(20)),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let cli = Store::open(&file).await.unwrap();
        let now = crate::app::now();
        server
            .save(&DeviceState::new("00-90-33-00-00-01", now))
            .await
            .unwrap();
        let index = InventoryIndex::with_intervals(
            &server,
            Duration::from_millis(50),
            Duration::from_secs(3600),
        );
        loaded(&index).await;
        assert_eq!(index.query(q("")).await.unwrap().total, 1);
        let mut d = DeviceState::new("00-90-33-00-00-02", now);
        d.device.ip = Some("172.16.9.9".into());
        cli.save(&d).await.unwrap();
        cli.delete("00-90-33-00-00-01").await.unwrap();
        let mut ok = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(20)).await;
            let page = index.query(q("")).await.unwrap();
            if page.total == 1 && page.rows[0].sn == d.sn {
                ok = true;
                break;
            }
        }
        assert!(ok, "the index follows the other process");
        assert_eq!(index.query(q("172.16.")).await.unwrap().total, 1);
    }

    /// Another replica's saves and deletions reach the index (PostgreSQL only: runs when
    /// `AUTOPROV_TEST_POSTGRES` is set, as in `test.sh`).
    #[tokio::test]
    async fn follows_other_replicas_on_postgres() {
        let Some((a, b)) = autoprov_store::testing::postgres_replicas().await else {
            return;
        };
        let now = crate::app::now();
        b.save(&DeviceState::new("00-90-33-00-00-01", now))
            .await
            .unwrap();
        let index = InventoryIndex::with_intervals(
            &a,
            Duration::from_millis(100),
            Duration::from_millis(300),
        );
        loaded(&index).await;
        assert_eq!(index.query(q("")).await.unwrap().total, 1);
        // b is another replica: a's index hears of it only by polling.
        let mut d = DeviceState::new("00-90-33-00-00-02", now);
        d.device.ip = Some("172.16.9.9".into());
        b.save(&d).await.unwrap();
        b.delete("00-90-33-00-00-01").await.unwrap();
        let mut ok = false;
        for _ in 0..100 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let page = index.query(q("")).await.unwrap();
            if page.total == 1 && page.rows[0].sn == d.sn {
                ok = true;
                break;
            }
        }
        assert!(ok, "the index follows the other replica");
        assert_eq!(index.query(q("172.16.")).await.unwrap().total, 1);
    }
}
