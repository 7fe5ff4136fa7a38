//! Helpers for test suites that run against PostgreSQL as well as SQLite.
//!
//! The test command (`test.sh`) starts a throwaway PostgreSQL and exports its URL in
//! [`TEST_POSTGRES_ENV`]; every test that opens a store asks [`test_database`] for a location,
//! which is a fresh PostgreSQL database when that variable is set and the given SQLite file
//! otherwise. Nothing here is used by the server itself.

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use sqlx::any::AnyConnectOptions;
use sqlx::{AnyConnection, ConnectOptions, Executor};

use crate::{redact_url, Result, StoreError};

/// Environment variable holding the URL of the test PostgreSQL server (any database on it).
pub const TEST_POSTGRES_ENV: &str = "AUTOPROV_TEST_POSTGRES";

/// The PostgreSQL server the tests should use, if any.
pub fn test_postgres() -> Option<String> {
    std::env::var(TEST_POSTGRES_ENV)
        .ok()
        .filter(|s| !s.trim().is_empty())
}

/// Where a test's store lives: a fresh PostgreSQL database when [`TEST_POSTGRES_ENV`] is set,
/// else the SQLite file `sqlite_file`.
pub async fn test_database(sqlite_file: &Path) -> String {
    match test_postgres() {
        Some(server) => fresh_postgres_database(&server)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database: {e}")),
        None => sqlite_file.display().to_string(),
    }
}

/// Two stores on one fresh PostgreSQL database, standing for two replicas; `None` when the
/// test command started no PostgreSQL.
pub async fn postgres_replicas() -> Option<(crate::Store, crate::Store)> {
    let server = test_postgres()?;
    let url = fresh_postgres_database(&server)
        .await
        .unwrap_or_else(|e| panic!("cannot create a test database: {e}"));
    let a = crate::Store::connect(&url)
        .await
        .expect("replica a connects");
    let b = crate::Store::connect(&url)
        .await
        .expect("replica b connects");
    Some((a, b))
}

/// Create a new, empty database on the PostgreSQL server at `server_url` and return its URL.
pub async fn fresh_postgres_database(server_url: &str) -> Result<String> {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    sqlx::any::install_default_drivers();
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    let name = format!(
        "autoprov_t{}_{}_{nanos}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    );
    let shown = redact_url(server_url);
    let fail = |e: sqlx::Error| StoreError::CannotOpen {
        path: shown.clone(),
        reason: e.to_string(),
    };
    let opts: AnyConnectOptions = server_url.parse().map_err(fail)?;
    let mut conn: AnyConnection = opts.connect().await.map_err(fail)?;
    conn.execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .map_err(fail)?;
    Ok(with_database(server_url, &name))
}

/// `url` with its database (path) replaced by `name`, query parameters kept.
pub fn with_database(url: &str, name: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let (scheme, rest) = base.split_once("://").unwrap_or(("postgres", base));
    let host = rest.split('/').next().unwrap_or(rest);
    match query {
        Some(q) => format!("{scheme}://{host}/{name}?{q}"),
        None => format!("{scheme}://{host}/{name}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn database_name_is_replaced() {
        assert_eq!(
            with_database("postgres://u@127.0.0.1:5433/postgres", "x"),
            "postgres://u@127.0.0.1:5433/x"
        );
        assert_eq!(
            with_database("postgres://u@h:1?sslmode=disable", "x"),
            "postgres://u@h:1/x?sslmode=disable"
        );
    }
}
