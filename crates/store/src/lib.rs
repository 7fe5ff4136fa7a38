//! autoprov persistence: per-device state in SQLite, through sqlx.
//!
//! [`Store`] is the only place in autoprov that knows SQL. It opens (or creates) the database
//! file, applies the embedded migrations from `migrations/sqlite/`, and offers a small
//! capability API: [`Store::load`], [`Store::save`], [`Store::list`], [`Store::delete`],
//! [`Store::touch`], [`Store::expire`], [`Store::meta_get`], [`Store::meta_set`] and
//! [`Store::health`]. It persists [`DeviceState`](autoprov_core::state::DeviceState) faithfully,
//! and firmware progress ([`Store::firmware_update`], [`Store::firmware_progress_all`],
//! [`Store::firmware_log_fetch`]; `firmware.rs`), and has no decision logic of its own: what to
//! keep, prune or expire is decided by the callers. Errors are [`StoreError`]s, worded for the
//! operator.
//!
//! Queries are built at run time (`sqlx::query` with binds), so no `DATABASE_URL` is needed to
//! build. Times are Unix epoch seconds in INTEGER columns, ids are TEXT.

mod audit;
mod decode;
mod devices;
mod error;
mod firmware;
mod meta;
mod sessions;
mod users;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};

pub use audit::AuditEntry;
pub use error::{Result, StoreError};
pub use sessions::AdminSession;
pub use users::AdminUser;

/// How to open a [`Store`]; [`StoreOptions::default`] suits the server.
#[derive(Debug, Clone)]
pub struct StoreOptions {
    /// How long a statement waits for another writer before failing with
    /// [`StoreError::Locked`]. Default 5 s.
    pub busy_timeout: Duration,
    /// Upper bound of pooled connections. Default 8.
    pub max_connections: u32,
    /// How long to wait for a free pooled connection before [`StoreError::PoolTimeout`].
    /// Default 30 s.
    pub acquire_timeout: Duration,
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions {
            busy_timeout: Duration::from_secs(5),
            max_connections: 8,
            acquire_timeout: Duration::from_secs(30),
        }
    }
}

/// Handle to the device database. Cheap to clone; all clones share one connection pool.
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
    /// Shown in every error message.
    path: Arc<str>,
}

impl Store {
    /// Open the database file at `path` with default options, creating it if missing, and bring
    /// its schema up to date.
    pub async fn open(path: &Path) -> Result<Store> {
        Store::open_with(path, &StoreOptions::default()).await
    }

    /// [`Store::open`] with explicit options.
    pub async fn open_with(path: &Path, options: &StoreOptions) -> Result<Store> {
        let shown: Arc<str> = path.display().to_string().into();
        if let Err(reason) = precheck(path) {
            return Err(StoreError::CannotOpen {
                path: shown.to_string(),
                reason,
            });
        }
        let connect = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(options.busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(connect)
            .await
            .map_err(|e| match error::classify(&shown, e) {
                StoreError::CannotOpen { path: p, reason } => StoreError::CannotOpen {
                    path: p,
                    reason: diagnose(path).unwrap_or(reason),
                },
                other => other,
            })?;
        let store = Store { pool, path: shown };
        store.migrate().await?;
        tracing::info!(path = %store.path, "device database opened");
        Ok(store)
    }

    /// A private in-memory database (one connection), for tests and dry runs.
    pub async fn open_memory() -> Result<Store> {
        let shown: Arc<str> = ":memory:".into();
        let connect = SqliteConnectOptions::new()
            .in_memory(true)
            .foreign_keys(true);
        // Every in-memory connection is its own database: keep exactly one, forever.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(connect)
            .await
            .map_err(|e| error::classify(&shown, e))?;
        let store = Store { pool, path: shown };
        store.migrate().await?;
        Ok(store)
    }

    /// The database path as shown in messages (`:memory:` for [`Store::open_memory`]).
    pub fn path(&self) -> &str {
        &self.path
    }

    /// Close all connections (waits for running queries). Later calls fail with
    /// [`StoreError::Closed`].
    pub async fn close(&self) {
        self.pool.close().await;
    }

    async fn migrate(&self) -> Result<()> {
        sqlx::migrate!("./migrations/sqlite")
            .run(&self.pool)
            .await
            .map_err(|e| error::classify_migration(&self.path, e))
    }

    pub(crate) fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub(crate) fn err(&self, e: sqlx::Error) -> StoreError {
        error::classify(&self.path, e)
    }

    /// A deferred transaction: one consistent snapshot for multi-statement reads.
    pub(crate) async fn begin_read(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool.begin().await.map_err(|e| self.err(e))
    }

    /// Take the write lock up front so the busy timeout applies (a deferred transaction that
    /// upgrades later can fail at once with SQLITE_BUSY in WAL mode).
    pub(crate) async fn begin_write(&self) -> Result<Transaction<'static, Sqlite>> {
        self.pool
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(|e| self.err(e))
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
