//! autoprov persistence: per-device state in SQLite (the embedded default) or PostgreSQL (the
//! scale-out store shared by several replicas), through sqlx's `Any` driver.
//!
//! [`Store`] is the only place in autoprov that knows SQL. It opens (or creates) the database,
//! applies the embedded migrations (`migrations/sqlite/` or `migrations/postgres/`: the same
//! schema in each dialect), and offers a small capability API: [`Store::load`], [`Store::save`],
//! [`Store::list`], [`Store::delete`], [`Store::touch`], [`Store::expire`],
//! [`Store::meta_get`], [`Store::meta_set`] and [`Store::health`]. It persists
//! [`DeviceState`](autoprov_core::state::DeviceState) faithfully, and firmware progress
//! ([`Store::firmware_update`], [`Store::firmware_progress_all`],
//! [`Store::firmware_log_fetch`]; `firmware.rs`), and has no decision logic of its own: what to
//! keep, prune or expire is decided by the callers. Errors are [`StoreError`]s, worded for the
//! operator.
//!
//! Two mechanisms serve the request path (see `writebehind.rs` and `lock.rs`):
//! * **write-behind** ([`StoreOptions::write_behind`]): [`Store::save`] only queues the state;
//!   a background task writes all queued states in one transaction per window, so no request
//!   waits for the database. [`Store::load`] sees queued states. A crash loses at most one window.
//!   Meant for a single server process (SQLite).
//! * **device locks** ([`Store::lock_device`]): on PostgreSQL an advisory lock held in its own
//!   transaction serialises one device's load-modify-save across replicas; on SQLite it is a
//!   no-op (one process, whose own per-device mutex suffices).
//!
//! Queries are built at run time (`sqlx::query` with `$n` binds, understood by both drivers), so
//! no `DATABASE_URL` is needed to build. Times are Unix epoch seconds in 64-bit integer
//! columns, ids are TEXT.

mod audit;
mod decode;
mod devices;
mod error;
mod firmware;
mod lock;
mod meta;
mod sessions;
mod signal;
pub mod testing;
mod users;
mod writebehind;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::any::{AnyConnectOptions, AnyPoolOptions};
use sqlx::{Any, AnyConnection, AnyPool, ConnectOptions, Connection, Executor, Transaction};

pub use audit::AuditEntry;
pub use error::{Result, StoreError};
pub use firmware::FirmwareReport;
pub use lock::DeviceLock;
pub use sessions::AdminSession;
pub use users::AdminUser;
pub use writebehind::WriteBehindStats;

/// Which database engine a [`Store`] talks to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// An embedded SQLite file (one server process).
    Sqlite,
    /// A PostgreSQL server, possibly shared by several autoprov replicas.
    Postgres,
}

/// How to open a [`Store`]; [`StoreOptions::default`] suits the server.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a statement waits for another writer before failing with
    /// [`StoreError::Locked`] (SQLite). Default 5 s.
    pub busy_timeout: Duration,
    /// Upper bound of pooled connections. Default 8.
    pub max_connections: u32,
    /// How long to wait for a free pooled connection before [`StoreError::PoolTimeout`].
    /// Default 30 s.
    pub acquire_timeout: Duration,
    /// Queue device saves and write them in one transaction per window (see the module
    /// docs). `None` (the default) writes every save at once. Only for a single process: on a
    /// shared PostgreSQL every replica must see the others' writes, so it is ignored there.
    pub write_behind: Option<Duration>,
    /// Connections reserved for [`Store::lock_device`] on PostgreSQL (each held lock keeps one
    /// open); at most this many devices are in a load-modify-save cycle at once per process.
    /// Default 32.
    pub lock_connections: u32,
    /// With write-behind: about how many bytes of written states are kept in memory as
    /// clean copies, so that a device's next load reads no row (see `writebehind.rs`). 0
    /// keeps none. Default 64 MiB.
    pub state_cache_bytes: usize,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(30),
            write_behind: None,
            lock_connections: 32,
            state_cache_bytes: 64 << 20,
        }
    }
}

/// Handle to the device database. Cheap to clone; all clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: AnyPool,
    backend: Backend,
    /// Shown in every error message (a file path, or a PostgreSQL URL without its password).
    path: Arc<str>,
    /// PostgreSQL: connections that hold device locks (never used for data).
    lock_pool: Option<AnyPool>,
    /// Queued saves, when write-behind is on.
    wb: Option<Arc<writebehind::Handle>>,
    /// SQLite file without write-behind: tells a running server about its device writes
    /// (see `signal.rs`).
    signal: Option<Arc<signal::Signal>>,
    /// Told about every device change made through this store (see [`StoreObserver`]).
    observers: Observers,
}

/// Something that keeps a view of the devices (the server's inventory index) and wants to hear
/// about every change made through this process's [`Store`]. Calls happen on the saving task,
/// so they must be quick and must not block. Changes made by other processes or replicas are
/// not reported; poll [`Store::list_shallow_since_page`] for those.
pub trait StoreObserver: Send + Sync {
    /// `state` was saved (queued or written).
    fn saved(&self, state: &autoprov_core::state::DeviceState);
    /// Device `sn` was deleted.
    fn deleted(&self, sn: &str);
    /// Devices last seen before `older_than` were expired.
    fn expired(&self, older_than: i64);
    /// Device `sn`'s last-contact time was set to `seen`.
    fn touched(&self, sn: &str, seen: i64);
}

#[derive(Clone, Default)]
struct Observers(Arc<std::sync::RwLock<Vec<Arc<dyn StoreObserver>>>>);

impl std::fmt::Debug for Observers {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Observers")
    }
}

impl Observers {
    fn each(&self, mut f: impl FnMut(&dyn StoreObserver)) {
        let list = self.0.read().unwrap_or_else(|p| p.into_inner());
        for o in list.iter() {
            f(o.as_ref());
        }
    }
}

/// Whether `location` names a PostgreSQL server rather than an SQLite file.
pub fn is_postgres_url(location: &str) -> bool {
    let l = location.trim_start();
    l.starts_with("postgres://") || l.starts_with("postgresql://")
}

impl Store {
    /// Open the SQLite database file at `path` with default options, creating it if missing,
    /// and bring its schema up to date.
    pub async fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, &StoreOptions::default()).await
    }

    /// Open `location`: a `postgres://` URL, else an SQLite file path. Default options.
    pub async fn connect(location: &str) -> Result<Store> {
        Store::connect_with(location, &StoreOptions::default()).await
    }

    /// [`Store::connect`] with explicit options.
    pub async fn connect_with(location: &str, options: &StoreOptions) -> Result<Store> {
        if is_postgres_url(location) {
            Store::open_postgres(location.trim(), options).await
        } else {
            Store::open_with(Path::new(location), options).await
        }
    }

    /// [`Store::open`] with explicit options.
    pub async fn open_with(path: &Path, options: &StoreOptions) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let shown: Arc<str> = path.display().to_string().into();
        if let Err(reason) = precheck(path) {
            return Err(StoreError::CannotOpen {
                path: shown.to_string(),
                reason,
            });
        }
        let url = format!("sqlite://{}?mode=rwc", url_path(path));
        let connect = url
            .parse::<AnyConnectOptions>()
            .map_err(|e| StoreError::CannotOpen {
                path: shown.to_string(),
                reason: e.to_string(),
            })?;
        let pragmas = sqlite_pragmas(options.busy_timeout);
        let diagnosed = |e: sqlx::Error| match error::classify(&shown, e) {
            StoreError::CannotOpen { path: p, reason } => StoreError::CannotOpen {
                path: p,
                reason: diagnose(path).unwrap_or(reason),
            },
            other => other,
        };
        // One probe connection first: the pool would retry a failing connection (a damaged
        // or foreign file) until its acquire timeout instead of reporting it.
        let mut probe: AnyConnection = connect.connect().await.map_err(diagnosed)?;
        probe.execute(pragmas.as_str()).await.map_err(diagnosed)?;
        let _ = probe.close().await;
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            // sqlx pings a pooled connection before handing it out; a connection to a local
            // file cannot have gone away, and the ping is a round trip to the connection's
            // worker thread on every query.
            .test_before_acquire(false)
            .acquire_timeout(options.acquire_timeout)
            .after_connect(move |conn, _| {
                let pragmas = pragmas.clone();
                Box::pin(async move {
                    conn.execute(pragmas.as_str()).await?;
                    Ok(())
                })
            })
            .connect_with(connect)
            .await
            .map_err(diagnosed)?;
        let mut store = Store::sqlite(pool, shown);
        store.migrate().await?;
        let changes = signal::path_for(path);
        match options.write_behind {
            Some(window) => {
                // Clean copies only while another process's writes can be noticed at once.
                let watch = (options.state_cache_bytes > 0)
                    .then(|| signal::Watch::start(changes))
                    .flatten();
                let cap = if watch.is_some() {
                    options.state_cache_bytes
                } else {
                    0
                };
                store.wb = Some(writebehind::WriteBehind::start(&store, window, cap, watch));
            }
            None => store.signal = Some(Arc::new(signal::Signal::new(changes))),
        }
        tracing::info!(path = %store.path, "device database opened");
        Ok(store)
    }

    async fn open_postgres(url: &str, options: &StoreOptions) -> Result<Store> {
        sqlx::any::install_default_drivers();
        let shown: Arc<str> = redact_url(url).into();
        let connect = url
            .parse::<AnyConnectOptions>()
            .map_err(|e| StoreError::CannotOpen {
                path: shown.to_string(),
                reason: format!("{e}; expected postgres://user:password@host:port/database"),
            })?;
        let classify = |e| error::classify_for(&shown, Backend::Postgres, e);
        // One probe connection first, bounded in time: the pool would retry a refused or
        // rejected connection until its acquire timeout and then only say "timed out".
        let probe = tokio::time::timeout(Duration::from_secs(10), connect.connect()).await;
        match probe {
            Ok(Ok(conn)) => {
                let _ = conn.close().await;
            }
            Ok(Err(e)) => return Err(classify(e)),
            Err(_) => {
                return Err(StoreError::CannotOpen {
                    path: shown.to_string(),
                    reason: "no answer within 10 s; is the PostgreSQL server running and \
                             reachable?"
                        .into(),
                })
            }
        }
        let pool = AnyPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(Duration::from_secs(60))
            .connect_with(connect.clone())
            .await
            .map_err(classify)?;
        // Locks live on their own connections, created on demand: a request holding a lock
        // still gets a data connection, so the two pools cannot starve each other.
        let lock_pool = AnyPoolOptions::new()
            .max_connections(options.lock_connections.max(1))
            .min_connections(0)
            .acquire_timeout(options.acquire_timeout)
            .idle_timeout(Duration::from_secs(60))
            .connect_lazy_with(connect);
        let store = Store {
            pool,
            backend: Backend::Postgres,
            path: shown,
            lock_pool: Some(lock_pool),
            wb: None,
            signal: None,
            observers: Observers::default(),
        };
        store.migrate().await?;
        tracing::info!(database = %store.path, "PostgreSQL device database opened");
        Ok(store)
    }

    /// A private in-memory SQLite database (one connection), for tests and dry runs.
    pub async fn open_memory() -> Result<Store> {
        sqlx::any::install_default_drivers();
        let shown: Arc<str> = ":memory:".into();
        let connect = "sqlite::memory:"
            .parse::<AnyConnectOptions>()
            .map_err(|e| error::classify(&shown, e))?;
        // Every in-memory connection is its own database: keep exactly one, forever.
        let pool = AnyPoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .after_connect(|conn, _| {
                Box::pin(async move {
                    conn.execute("PRAGMA foreign_keys = ON").await?;
                    Ok(())
                })
            })
            .connect_with(connect)
            .await
            .map_err(|e| error::classify(&shown, e))?;
        let store = Store::sqlite(pool, shown);
        store.migrate().await?;
        Ok(store)
    }

    /// A handle on an SQLite pool, before migrations and write-behind.
    fn sqlite(pool: AnyPool, path: Arc<str>) -> Store {
        Store {
            pool,
            backend: Backend::Sqlite,
            path,
            lock_pool: None,
            wb: None,
            signal: None,
            observers: Observers::default(),
        }
    }

    /// The database as shown in messages: the file path (`:memory:` for
    /// [`Store::open_memory`]) or the PostgreSQL URL without its password.
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Register `observer` for every later device change made through this store or its
    /// clones.
    pub fn observe(&self, observer: Arc<dyn StoreObserver>) {
        self.observers
            .0
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .push(observer);
    }

    pub(crate) fn notify(&self, f: impl FnMut(&dyn StoreObserver)) {
        self.observers.each(f);
    }

    /// The database engine behind this store.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// Whether saves are queued (write-behind) rather than written at once.
    pub fn writes_behind(&self) -> bool {
        self.wb.is_some()
    }

    /// Write queued saves now (no-op without write-behind), then close all connections
    /// (waits for running queries). Later calls fail with [`StoreError::Closed`].
    pub async fn close(&self) {
        if let Err(e) = self.flush().await {
            tracing::error!(error = %e, "queued device states could not be written at shutdown");
        }
        if let Some(wb) = &self.wb {
            wb.stop();
        }
        if let Some(p) = &self.lock_pool {
            p.close().await;
        }
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<()> {
        let migrator = match self.backend {
            Backend::Sqlite => sqlx::migrate!("./migrations/sqlite"),
            Backend::Postgres => sqlx::migrate!("./migrations/postgres"),
        };
        migrator
            .run(&self.pool)
            .await
            .map_err(|e| error::classify_migration(&self.path, self.backend, e))
    }

    /// Give back what idle SQLite connections keep only for speed (their page caches), for
    /// a server that has gone quiet. Connections in use are left alone; nothing to do on
    /// PostgreSQL (the memory is the database server's).
    pub async fn release_memory(&self) {
        if self.backend != Backend::Sqlite {
            return;
        }
        // Held until the end, so that each idle connection is taken once.
        let mut held = Vec::new();
        while let Some(mut conn) = self.pool.try_acquire() {
            if let Err(e) = conn.execute("PRAGMA shrink_memory").await {
                tracing::debug!(error = %e, "cannot shrink a connection's memory");
            }
            held.push(conn);
        }
    }

    pub(crate) fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub(crate) fn err(&self, e: sqlx::Error) -> StoreError {
        error::classify_for(&self.path, self.backend, e)
    }

    /// A read transaction: one consistent snapshot for multi-statement reads.
    pub(crate) async fn begin_read(&self) -> Result<Transaction<'static, Any>> {
        let r = match self.backend {
            Backend::Sqlite => self.pool.begin().await,
            Backend::Postgres => {
                self.pool
                    .begin_with("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
                    .await
            }
        };
        r.map_err(|e| self.err(e))
    }

    /// A write transaction. SQLite takes the write lock up front so the busy timeout applies
    /// (a deferred transaction that upgrades later can fail at once with SQLITE_BUSY in WAL
    /// mode).
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        let r = match self.backend {
            Backend::Sqlite => self.pool.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        };
        r.map_err(|e| self.err(e))
    }
}

/// The PRAGMAs every SQLite connection gets.
/// `mmap_size` (256 MiB) lets reads come straight from the OS page cache (shared, not per
/// connection) instead of a `pread` into each connection's own cache: a device lookup in a
/// large file is then a memory access. The mapped pages count in the process's RSS although
/// they are reclaimable page cache.
/// `temp_store = MEMORY` keeps statement journals in memory: a write-behind batch upserts
/// thousands of rows in one statement inside its transaction, and SQLite saves every page the
/// statement changes for a statement rollback; beyond 64 KiB that journal went to a temporary
/// file, a `pwrite` per page (~3 % of the server's CPU under steady polling).
/// `cache_size` (16 MiB, grown only as used, given back by [`Store::release_memory`]): a
/// batch of a few thousand first contacts dirties more pages than the default 2 MiB hold, and
/// SQLite then spills them into the WAL in the middle of the transaction and reads them back
/// (~2 % of the server's CPU in the R5 benchmark).
fn sqlite_pragmas(busy_timeout: Duration) -> Arc<String> {
    Arc::new(format!(
        "PRAGMA busy_timeout = {}; PRAGMA journal_mode = WAL; PRAGMA synchronous = NORMAL; \
         PRAGMA foreign_keys = ON; PRAGMA mmap_size = 268435456; PRAGMA temp_store = MEMORY; \
         PRAGMA cache_size = -16384;",
        busy_timeout.as_millis().min(i32::MAX as u128)
    ))
}

/// `path` percent-encoded for an `sqlite://` URL (sqlx decodes it again), so `?`, `#`, `%`
/// and spaces in file names survive.
fn url_path(path: &Path) -> String {
    let mut out = String::new();
    for b in path.to_string_lossy().bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A PostgreSQL URL with its password replaced by `***`, for messages and logs.
pub fn redact_url(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_string();
    };
    let (auth, host) = match rest.rsplit_once('@') {
        Some((a, h)) => (a, h),
        None => return url.to_string(),
    };
    match auth.split_once(':') {
        Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
        None => url.to_string(),
    }
}

/// Problems SQLite would only report as "unable to open database file", caught beforehand with
/// a precise reason.
fn precheck(path: &Path) -> std::result::Result<(), String> {
    if path.as_os_str().is_empty() {
        return Err("the path is empty; configure a database file".into());
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        match std::fs::metadata(dir) {
            Ok(m) if !m.is_dir() => {
                return Err(format!(
                    "{} is not a directory; fix the database path",
                    dir.display()
                ))
            }
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(format!(
                    "directory {} does not exist; create it or change the database path",
                    dir.display()
                ))
            }
            Err(e) => {
                return Err(format!(
                    "cannot access directory {}: {e}; check its permissions",
                    dir.display()
                ))
            }
        }
    }
    if path.is_dir() {
        return Err("it is a directory; point the database path at a file inside it".into());
    }
    Ok(())
}

/// After SQLite refused to open `path`: ask the OS why, for a message better than SQLite's.
fn diagnose(path: &Path) -> Option<String> {
    let hint = "check the permissions of the file and its directory";
    if path.exists() {
        match std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
        {
            Err(e) => Some(format!("{e}; {hint}")),
            Ok(_) => None,
        }
    } else {
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(path)
        {
            Err(e) => Some(format!("cannot create the file: {e}; {hint}")),
            Ok(_) => {
                // It was only a probe; leave no empty file behind.
                let _ = std::fs::remove_file(path);
                None
            }
        }
    }
}
