//! Browser sessions of operators (`admin_sessions`): keyed by the hash of the cookie secret,
//! each with its CSRF token and expiry time. The store only moves rows.

use sqlx::Row;

use crate::decode::nf;
use crate::{Result, Store};

/// One live session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminSession {
    pub user: String,
    pub csrf: String,
    pub expires: i64,
}

impl Store {
    /// Record a new session.
    pub async fn session_create(
        &self,
        id_hash: &str,
        user: &str,
        csrf: &str,
        now: i64,
        expires: i64,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO admin_sessions (id, \"user\", csrf, created, expires) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(nf(id_hash))
        .bind(nf(user))
        .bind(nf(csrf))
        .bind(now)
        .bind(expires)
        .execute(self.pool())
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The session `id_hash` when it exists and has not expired at `now`.
    pub async fn session_get(&self, id_hash: &str, now: i64) -> Result<Option<AdminSession>> {
        let row = sqlx::query(
            "SELECT \"user\", csrf, expires FROM admin_sessions WHERE id = $1 AND expires > $2",
        )
        .bind(nf(id_hash))
        .bind(now)
        .fetch_optional(self.pool())
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.map(|r| AdminSession {
            user: r.try_get("user").unwrap_or_default(),
            csrf: r.try_get("csrf").unwrap_or_default(),
            expires: r.try_get("expires").unwrap_or(0),
        }))
    }

    /// End the session `id_hash` (and drop every expired one).
    pub async fn session_delete(&self, id_hash: &str, now: i64) -> Result<()> {
        sqlx::query("DELETE FROM admin_sessions WHERE id = $1 OR expires <= $2")
            .bind(nf(id_hash))
            .bind(now)
            .execute(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
