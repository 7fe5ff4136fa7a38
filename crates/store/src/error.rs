//! Store errors, phrased for the operator who reads them in a log.
//!
//! Every variant names the database (file or redacted URL) and says what to do next. SQLite
//! result codes and PostgreSQL SQLSTATEs are turned into these variants here and nowhere else; callers match on [`StoreError`] and never
//! see SQL or driver types. This module only translates errors: it must not retry, log or decide
//! anything.

use std::fmt;

use sqlx::migrate::MigrateError;

use crate::Backend;

/// Result of every store operation.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// What went wrong with the database, with a hint for the operator.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    /// SQLITE_BUSY/SQLITE_LOCKED after the busy timeout ran out.
    #[error(
        "database {path} is locked by another process; retry or stop the other autoprov \
         ({detail})"
    )]
    Locked { path: String, detail: String },

    /// The file cannot be opened or created (missing directory, permissions, a directory
    /// in its place, ...).
    #[error("cannot open database {path}: {reason}")]
    CannotOpen { path: String, reason: String },

    /// SQLITE_CORRUPT / SQLITE_NOTADB: the file is not a healthy SQLite database.
    #[error(
        "database {path} is damaged: {detail}; restore it from a backup, or move it away to \
         start with an empty one"
    )]
    Damaged { path: String, detail: String },

    /// SQLITE_READONLY: the file or its directory is not writable.
    #[error(
        "database {path} is read-only: {detail}; make the file and its directory writable for \
         the autoprov user"
    )]
    ReadOnly { path: String, detail: String },

    /// SQLITE_FULL: no space left for the database or its journal.
    #[error("database {path} cannot grow: {detail}; free disk space and retry")]
    DiskFull { path: String, detail: String },

    /// The embedded schema migrations could not be applied.
    #[error("cannot migrate database {path}: {detail}")]
    Migration { path: String, detail: String },

    /// No connection became free in time.
    #[error(
        "timed out waiting for a connection to database {path}; the server is overloaded or a \
         query hangs, retry later"
    )]
    PoolTimeout { path: String },

    /// The store was closed (shutdown in progress).
    #[error("database {path} is closed; autoprov is shutting down")]
    Closed { path: String },

    /// An operating-system I/O error.
    #[error("I/O error on database {path}: {detail}; check the disk and the file")]
    Io { path: String, detail: String },

    /// Any other SQL or driver error.
    #[error("database error on {path}: {detail}")]
    Sql { path: String, detail: String },
}

impl StoreError {
    /// Whether retrying later may succeed (locked, pool exhausted).
    pub fn is_locked(&self) -> bool {
        matches!(
            self,
            StoreError::Locked { .. } | StoreError::PoolTimeout { .. }
        )
    }
}

// Primary SQLite result codes (the low byte of an extended code).
const SQLITE_PERM: i32 = 3;
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_READONLY: i32 = 8;
const SQLITE_IOERR: i32 = 10;
const SQLITE_CORRUPT: i32 = 11;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_NOTADB: i32 = 26;

/// The primary SQLite result code of a driver error, if it came from SQLite.
fn primary_code(err: &sqlx::Error) -> Option<i32> {
    let db = err.as_database_error()?;
    let code: i32 = db.code()?.parse().ok()?;
    Some(code & 0xff)
}

/// Translate a driver error of the `backend` database at `path` into a [`StoreError`].
pub(crate) fn classify_for(path: &str, backend: Backend, err: sqlx::Error) -> StoreError {
    match backend {
        Backend::Sqlite => classify(path, err),
        Backend::Postgres => classify_postgres(path, err),
    }
}

/// Translate a PostgreSQL error by its SQLSTATE class.
fn classify_postgres(path: &str, err: sqlx::Error) -> StoreError {
    let path = path.to_string();
    if let Some(db) = err.as_database_error() {
        let detail = db.message().to_string();
        let code = db.code().map(|c| c.to_string()).unwrap_or_default();
        return match code.as_str() {
            // lock_not_available, serialization_failure, deadlock_detected
            "55P03" | "40001" | "40P01" => StoreError::Locked { path, detail },
            // disk_full, insufficient_resources, out_of_memory
            "53100" | "53000" | "53200" => StoreError::DiskFull { path, detail },
            // read_only_sql_transaction
            "25006" => StoreError::ReadOnly { path, detail },
            // data_corrupted, index_corrupted
            "XX001" | "XX002" => StoreError::Damaged { path, detail },
            // admin_shutdown, crash_shutdown, cannot_connect_now
            "57P01" | "57P02" | "57P03" => StoreError::Closed { path },
            c if c.starts_with("08") || c.starts_with("28") || c == "3D000" => {
                StoreError::CannotOpen {
                    path,
                    reason: detail,
                }
            }
            _ => StoreError::Sql { path, detail },
        };
    }
    match err {
        sqlx::Error::PoolTimedOut => StoreError::PoolTimeout { path },
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => StoreError::Closed { path },
        sqlx::Error::Io(e) => StoreError::CannotOpen {
            path,
            reason: format!("{e}; is the PostgreSQL server running and reachable?"),
        },
        sqlx::Error::Tls(e) => StoreError::CannotOpen {
            path,
            reason: format!("TLS: {e}"),
        },
        other => StoreError::Sql {
            path,
            detail: other.to_string(),
        },
    }
}

/// Translate an SQLite driver error into a [`StoreError`] for the database at `path`.
pub(crate) fn classify(path: &str, err: sqlx::Error) -> StoreError {
    let path = path.to_string();
    if let Some(code) = primary_code(&err) {
        let detail = err
            .as_database_error()
            .map(|d| d.message().to_string())
            .unwrap_or_else(|| err.to_string());
        return match code {
            SQLITE_BUSY | SQLITE_LOCKED => StoreError::Locked { path, detail },
            SQLITE_CANTOPEN | SQLITE_PERM => StoreError::CannotOpen {
                path,
                reason: detail,
            },
            SQLITE_CORRUPT | SQLITE_NOTADB => StoreError::Damaged { path, detail },
            SQLITE_READONLY => StoreError::ReadOnly { path, detail },
            SQLITE_FULL => StoreError::DiskFull { path, detail },
            SQLITE_IOERR => StoreError::Io { path, detail },
            _ => StoreError::Sql { path, detail },
        };
    }
    match err {
        sqlx::Error::PoolTimedOut => StoreError::PoolTimeout { path },
        sqlx::Error::PoolClosed | sqlx::Error::WorkerCrashed => StoreError::Closed { path },
        sqlx::Error::Io(e) => StoreError::Io {
            path,
            detail: e.to_string(),
        },
        other => StoreError::Sql {
            path,
            detail: other.to_string(),
        },
    }
}

/// Translate a migration failure. Lock, damage and open problems keep their own variants so the
/// operator gets the same advice as anywhere else.
pub(crate) fn classify_migration(path: &str, backend: Backend, err: MigrateError) -> StoreError {
    let detail: String = match err {
        MigrateError::Execute(e) => return migration_sql(path, backend, e, None),
        MigrateError::ExecuteMigration(e, v) => return migration_sql(path, backend, e, Some(v)),
        MigrateError::VersionMissing(v) => format!(
            "it was migrated by a newer autoprov (schema version {v} is unknown to this \
             build); run the newer autoprov or point this one at another file"
        ),
        MigrateError::VersionMismatch(v) => format!(
            "schema version {v} recorded in the file differs from the one built into this \
             autoprov; the file was written by an incompatible build, restore a backup or use \
             another file"
        ),
        MigrateError::Dirty(v) => {
            format!("schema version {v} was only partly applied; restore the file from a backup")
        }
        other => format!("{other}; restore the file from a backup or use another file"),
    };
    StoreError::Migration {
        path: path.to_string(),
        detail,
    }
}

fn migration_sql(
    path: &str,
    backend: Backend,
    err: sqlx::Error,
    version: Option<i64>,
) -> StoreError {
    match classify_for(path, backend, err) {
        StoreError::Sql { path, detail } => StoreError::Migration {
            path,
            detail: format!(
                "{}{detail}; the file may not belong to autoprov, restore a backup or use \
                 another file",
                Version(version)
            ),
        },
        other => other,
    }
}

struct Version(Option<i64>);

impl fmt::Display for Version {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(v) => write!(f, "schema version {v} failed: "),
            None => Ok(()),
        }
    }
}
