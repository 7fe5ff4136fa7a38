//! The audit log of operator actions (`admin_audit`): who did what to which device, when.

use sqlx::Row;

use crate::decode::nf;
use crate::{Result, Store};

/// One audit entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEntry {
    pub id: i64,
    pub time: i64,
    pub user: String,
    pub action: String,
    pub target: String,
    pub detail: String,
}

impl Store {
    /// Append an entry to the audit log.
    pub async fn audit_add(
        &self,
        time: i64,
        user: &str,
        action: &str,
        target: &str,
        detail: &str,
    ) -> Result<()> {
        sqlx::query(
            "INSERT INTO admin_audit (time, \"user\", action, target, detail) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(time)
        .bind(nf(user))
        .bind(nf(action))
        .bind(nf(target))
        .bind(nf(detail))
        .execute(self.pool())
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The newest `limit` audit entries, newest first.
    pub async fn audit_recent(&self, limit: i64) -> Result<Vec<AuditEntry>> {
        let rows = sqlx::query(
            "SELECT id, time, \"user\", action, target, detail FROM admin_audit \
             ORDER BY id DESC LIMIT $1",
        )
        .bind(limit)
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| AuditEntry {
                id: r.try_get("id").unwrap_or(0),
                time: r.try_get("time").unwrap_or(0),
                user: r.try_get("user").unwrap_or_default(),
                action: r.try_get("action").unwrap_or_default(),
                target: r.try_get("target").unwrap_or_default(),
                detail: r.try_get("detail").unwrap_or_default(),
            })
            .collect())
    }
}
