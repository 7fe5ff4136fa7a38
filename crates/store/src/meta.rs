//! Store-wide key/value settings (`meta` table) and the health probe.
//!
//! Keys and values are opaque text to the store (for example the time of the last cleanup);
//! the callers give them meaning. No decisions are taken here.

use crate::decode::{nf, opt_string};
use crate::{Result, Store};

impl Store {
    /// The value stored under `key`, if any.
    pub async fn meta_get(&self, key: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT value FROM meta WHERE key = $1")
            .bind(nf(key))
            .fetch_optional(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.and_then(|r| opt_string(&r, "meta", "value")))
    }

    /// Store `value` under `key`, replacing an older value.
    pub async fn meta_set(&self, key: &str, value: &str) -> Result<()> {
        sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, $2) \
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        )
        .bind(nf(key))
        .bind(nf(value))
        .execute(self.pool())
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Cheap check that the database answers (for readiness probes).
    pub async fn health(&self) -> Result<()> {
        sqlx::query("SELECT 1")
            .execute(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}
