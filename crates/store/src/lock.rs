//! Device locks that hold across replicas.
//!
//! A device's load-modify-save cycle must not interleave with another cycle for the same
//! device, or one update is lost (a phase skipped or repeated). Within one process the server's
//! per-device mutex ensures this; on a PostgreSQL shared by several replicas,
//! [`Store::lock_device`] adds a transaction-scoped advisory lock taken on a connection of its
//! own (`lock_pool`), released when the [`DeviceLock`] is dropped (the transaction rolls back).
//! The data itself is read and written on the ordinary pool, so a held lock never waits for a
//! data connection held by a lock waiter. On SQLite the lock is a no-op.

use sqlx::{Any, Transaction};

use crate::{Result, Store};

/// Proof that this process holds the cross-replica lock of one device; dropping it releases
/// the lock.
pub struct DeviceLock {
    _tx: Option<Transaction<'static, Any>>,
}

impl std::fmt::Debug for DeviceLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DeviceLock")
            .field("held", &self._tx.is_some())
            .finish()
    }
}

impl Store {
    /// Lock device `sn` against concurrent load-modify-save cycles of other replicas (waits
    /// for the holder). On SQLite it returns at once.
    pub async fn lock_device(&self, sn: &str) -> Result<DeviceLock> {
        let Some(pool) = &self.lock_pool else {
            return Ok(DeviceLock { _tx: None });
        };
        let mut tx = pool.begin().await.map_err(|e| self.err(e))?;
        self.advisory_lock(&mut tx, sn).await?;
        Ok(DeviceLock { _tx: Some(tx) })
    }

    /// Inside the write transaction `tx`: on PostgreSQL, wait for the advisory lock named
    /// `name` until the transaction ends (a read-modify-write under READ COMMITTED would
    /// otherwise lose concurrent updates). SQLite's write transactions are exclusive already.
    pub(crate) async fn advisory_lock(
        &self,
        tx: &mut sqlx::AnyConnection,
        name: &str,
    ) -> Result<()> {
        if self.backend != crate::Backend::Postgres {
            return Ok(());
        }
        // The function returns `void`, which the Any driver cannot decode: wrap it.
        sqlx::query("SELECT 1 AS locked FROM (SELECT pg_advisory_xact_lock($1)) AS l")
            .bind(lock_key(name))
            .execute(tx)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }
}

/// A stable 64-bit key for `sn` (FNV-1a), the same in every replica and every build.
fn lock_key(sn: &str) -> i64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sn.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h as i64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lock_keys_are_stable_and_distinct() {
        assert_eq!(lock_key("0090333000af"), lock_key("0090333000af"));
        assert_ne!(lock_key("0090333000af"), lock_key("0090333000b0"));
        // FNV-1a of the empty string is its offset basis.
        assert_eq!(lock_key(""), 0xcbf2_9ce4_8422_2325u64 as i64);
    }
}
