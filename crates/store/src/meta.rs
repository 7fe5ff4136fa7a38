//! Store-wide key/value settings (`meta` table) and the health probe.
//!
//! Keys and values are opaque text to the store (for example the time of the last cleanup);
//! the callers give them meaning. No decisions are taken here.

use sqlx::{Any, Executor};

use crate::decode::{nf, opt_string};
use crate::{Backend, Result, Store};

/// The `meta` key of the device change counter (see `writebehind.rs`).
const GENERATION_KEY: &str = "devices_generation";

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

    /// Increment the device change counter through `ex` (inside the writing transaction when
    /// there is one) and return its new value. SQLite only: the counter tells a server's clean
    /// state copies that another process wrote devices; on PostgreSQL no copies are kept and
    /// a counter every replica updated would be one hot row, so nothing is done (`None`).
    pub(crate) async fn bump_generation<'e, E>(&self, ex: E) -> Result<Option<i64>>
    where
        E: Executor<'e, Database = Any>,
    {
        if self.backend != Backend::Sqlite {
            return Ok(None);
        }
        let row = sqlx::query(
            "INSERT INTO meta (key, value) VALUES ($1, '1') ON CONFLICT (key) DO UPDATE \
             SET value = CAST(CAST(meta.value AS INTEGER) + 1 AS TEXT) RETURNING value",
        )
        .bind(GENERATION_KEY)
        .fetch_one(ex)
        .await
        .map_err(|e| self.err(e))?;
        Ok(opt_string(&row, "meta", "value").and_then(|v| v.parse().ok()))
    }

    /// The device change counter (0 before the first write).
    pub(crate) async fn generation(&self) -> Result<i64> {
        Ok(self
            .meta_get(GENERATION_KEY)
            .await?
            .and_then(|v| v.parse().ok())
            .unwrap_or(0))
    }

    /// Record that this handle's write moved the counter to `now` (see
    /// [`crate::writebehind`]); without write-behind, tell a running server through the
    /// change signal instead.
    pub(crate) fn note_own_write(&self, now: Option<i64>) {
        if let (Some(wb), Some(now)) = (&self.wb, now) {
            wb.note_generation(Some(now - 1), now);
        }
        if let Some(signal) = &self.signal {
            signal.poke(now);
        }
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
