//! Operator accounts of the web UI and REST API (`admin_users`) and their API tokens
//! (`admin_tokens`). The store keeps hashes only; hashing and checking passwords is the
//! caller's job (argon2 in `autoprov-server`).

use sqlx::Row;

use crate::decode::nf;
use crate::{Result, Store};

/// One operator account.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdminUser {
    pub name: String,
    /// argon2 PHC string.
    pub hash: String,
    pub created: i64,
}

impl Store {
    /// How many operator accounts exist.
    pub async fn user_count(&self) -> Result<i64> {
        let row = sqlx::query("SELECT COUNT(*) AS n FROM admin_users")
            .fetch_one(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.try_get::<i64, _>("n").unwrap_or(0))
    }

    /// The account `name`, if any.
    pub async fn user_get(&self, name: &str) -> Result<Option<AdminUser>> {
        let row = sqlx::query("SELECT name, hash, created FROM admin_users WHERE name = $1")
            .bind(nf(name))
            .fetch_optional(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.map(|r| AdminUser {
            name: r.try_get("name").unwrap_or_default(),
            hash: r.try_get("hash").unwrap_or_default(),
            created: r.try_get("created").unwrap_or(0),
        }))
    }

    /// Create or replace the account `name` with password hash `hash`.
    pub async fn user_set(&self, name: &str, hash: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO admin_users (name, hash, created) VALUES ($1, $2, $3) \
             ON CONFLICT (name) DO UPDATE SET hash = excluded.hash",
        )
        .bind(nf(name))
        .bind(nf(hash))
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Store an API token (by the hash of its secret) for `user`.
    pub async fn token_add(&self, id_hash: &str, user: &str, label: &str, now: i64) -> Result<()> {
        sqlx::query(
            "INSERT INTO admin_tokens (id, \"user\", label, created) VALUES ($1, $2, $3, $4)",
        )
        .bind(nf(id_hash))
        .bind(nf(user))
        .bind(nf(label))
        .bind(now)
        .execute(self.pool())
        .await
        .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The user owning the API token whose secret hashes to `id_hash`.
    pub async fn token_user(&self, id_hash: &str) -> Result<Option<String>> {
        let row = sqlx::query("SELECT \"user\" FROM admin_tokens WHERE id = $1")
            .bind(nf(id_hash))
            .fetch_optional(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(row.and_then(|r| r.try_get::<String, _>("user").ok()))
    }
}
