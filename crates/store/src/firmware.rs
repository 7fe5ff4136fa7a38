//! Firmware progress persistence: [`FirmwareProgress`] rows (`firmware_progress`) and the
//! download log (`firmware_fetches`).
//!
//! [`Store::firmware_update`] runs the caller's change inside one write transaction, so a
//! read-modify-write of one device's record is atomic across requests and processes. Whether a
//! device is done or flagged is decided by the closure the caller passes (autoprov-core's rules);
//! this module only moves rows and must not decide anything.
//!
//! Version reports from the request path ([`Store::firmware_report`]) are queued with the
//! device states when write-behind is on and written by the same flusher, all of a window in
//! one transaction, so a request never waits for one; the readers of firmware records in this
//! process flush first, so they see every report made before they were called.

use autoprov_core::firmware::{FirmwareFetch, FirmwareProgress};
use sqlx::any::AnyRow;
use sqlx::AnyConnection;

use crate::decode::{i64_or_zero, nf, opt_i64, opt_string, string_or_empty};
use crate::{Result, Store};

const COLUMNS: &str = "device, vendor, model, groups, reported_version, reported_at, \
     image_version, image_sha256, fetches, first_fetch_at, last_fetch_at, done_at, flagged_at";

const UPSERT: &str = "INSERT INTO firmware_progress (device, vendor, model, groups, \
     reported_version, reported_at, image_version, image_sha256, fetches, first_fetch_at, \
     last_fetch_at, done_at, flagged_at) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
     ON CONFLICT (device) DO UPDATE SET vendor = excluded.vendor, model = excluded.model, \
     groups = excluded.groups, reported_version = excluded.reported_version, \
     reported_at = excluded.reported_at, image_version = excluded.image_version, \
     image_sha256 = excluded.image_sha256, fetches = excluded.fetches, \
     first_fetch_at = excluded.first_fetch_at, last_fetch_at = excluded.last_fetch_at, \
     done_at = excluded.done_at, flagged_at = excluded.flagged_at";

const FETCH_COLUMNS: &str = "device, time, vendor, model, version, sha256, range_start, peer";

/// A device's report of the firmware version it runs, as the request path hands it over.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FirmwareReport {
    /// The device key.
    pub device: String,
    pub vendor: String,
    pub model: String,
    pub groups: Vec<String>,
    pub version: String,
    /// Whether `version` is the device's target (decided by the caller).
    pub at_target: bool,
    pub time: i64,
    /// A report that changes nothing refreshes the stored `reported_at` only once it is this
    /// many seconds old (a polling fleet must not turn every request into a row write).
    pub refresh_after: i64,
}

impl Store {
    /// Record a version report: queued for the next batch with write-behind (see the module
    /// docs), else written at once.
    pub async fn firmware_report(&self, report: FirmwareReport) -> Result<()> {
        if let Some(wb) = &self.wb {
            if wb.put_report(report) > crate::writebehind::MAX_QUEUED {
                self.flush_with(wb).await?;
            }
            return Ok(());
        }
        let mut tx = self.begin_write().await?;
        self.apply_reports(&mut tx, std::slice::from_ref(&report))
            .await?;
        tx.commit().await.map_err(|e| self.err(e))
    }

    /// Apply `reports` in order inside the write transaction `tx`.
    pub(crate) async fn apply_reports(
        &self,
        tx: &mut AnyConnection,
        reports: &[FirmwareReport],
    ) -> Result<()> {
        // PostgreSQL: every device's lock, once and in one order (two writers never deadlock).
        let mut devices: Vec<&str> = reports.iter().map(|r| r.device.as_str()).collect();
        devices.sort_unstable();
        devices.dedup();
        for d in devices {
            self.advisory_lock(tx, &format!("firmware:{d}")).await?;
        }
        for r in reports {
            let stored = self.progress_in(tx, &r.device).await?;
            let mut next = stored
                .clone()
                .unwrap_or_else(|| FirmwareProgress::new(&r.device));
            next.device.clone_from(&r.device);
            let changed = next.record_report(
                &r.vendor,
                &r.model,
                &r.groups,
                &r.version,
                r.at_target,
                r.time,
            );
            if let Some(stored) = &stored {
                let fresh = stored
                    .reported_at
                    .is_some_and(|t| r.time.saturating_sub(t) < r.refresh_after);
                let unchanged = FirmwareProgress {
                    reported_at: stored.reported_at,
                    ..next.clone()
                };
                if fresh && unchanged == *stored {
                    continue;
                }
            }
            self.upsert_progress(tx, &next).await?;
            if changed {
                tracing::info!(
                    device = %r.device, vendor = %r.vendor, model = %r.model,
                    version = %r.version, "device reports a new firmware version"
                );
            }
        }
        Ok(())
    }

    async fn progress_in(
        &self,
        tx: &mut AnyConnection,
        device: &str,
    ) -> Result<Option<FirmwareProgress>> {
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM firmware_progress WHERE device = $1"
        ))
        .bind(nf(device))
        .fetch_optional(tx)
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.as_ref().map(progress_from_row))
    }

    async fn upsert_progress(&self, tx: &mut AnyConnection, p: &FirmwareProgress) -> Result<()> {
        let groups = serde_json::to_string(&p.groups).unwrap_or_else(|_| "[]".into());
        sqlx::query(UPSERT)
            .bind(nf(&p.device))
            .bind(nf(&p.vendor))
            .bind(nf(&p.model))
            .bind(nf(groups))
            .bind(nf(&p.reported_version))
            .bind(p.reported_at)
            .bind(nf(&p.image_version))
            .bind(nf(&p.image_sha256))
            .bind(i64::from(p.fetches))
            .bind(p.first_fetch_at)
            .bind(p.last_fetch_at)
            .bind(p.done_at)
            .bind(p.flagged_at)
            .execute(tx)
            .await
            .map_err(|e| self.err(e))?;
        Ok(())
    }

    /// Write queued version reports before reading firmware records (no-op without
    /// write-behind).
    async fn reports_written(&self) -> Result<()> {
        let Some(wb) = &self.wb else {
            return Ok(());
        };
        if wb.reports_pending() {
            return self.flush_with(wb).await.map(drop);
        }
        // None queued, but a batch in progress may be writing some: wait for it.
        drop(wb.flush_lock.lock().await);
        Ok(())
    }

    /// The firmware record of `device`, if it has one.
    pub async fn firmware_progress(&self, device: &str) -> Result<Option<FirmwareProgress>> {
        self.reports_written().await?;
        let row = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM firmware_progress WHERE device = $1"
        ))
        .bind(nf(device))
        .fetch_optional(self.pool())
        .await
        .map_err(|e| self.err(e))?;
        Ok(row.as_ref().map(progress_from_row))
    }

    /// Every firmware record, ordered by device key.
    pub async fn firmware_progress_all(&self) -> Result<Vec<FirmwareProgress>> {
        self.reports_written().await?;
        let rows = sqlx::query(&format!(
            "SELECT {COLUMNS} FROM firmware_progress ORDER BY device"
        ))
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(progress_from_row).collect())
    }

    /// Load `device`'s record (a fresh one when it has none), let `change` modify it, and store
    /// the result, all in one write transaction. Returns the stored record and what `change`
    /// returned.
    pub async fn firmware_update<T, F>(
        &self,
        device: &str,
        change: F,
    ) -> Result<(FirmwareProgress, T)>
    where
        F: FnOnce(&mut FirmwareProgress) -> T + Send,
        T: Send,
    {
        self.reports_written().await?;
        let mut tx = self.begin_write().await?;
        self.advisory_lock(&mut tx, &format!("firmware:{device}"))
            .await?;
        let mut p = self
            .progress_in(&mut tx, device)
            .await?
            .unwrap_or_else(|| FirmwareProgress::new(device));
        p.device = device.to_string();
        let out = change(&mut p);
        self.upsert_progress(&mut tx, &p).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok((p, out))
    }

    /// Append a download to the log and keep only the newest `keep` rows of that device.
    pub async fn firmware_log_fetch(&self, fetch: &FirmwareFetch, keep: u32) -> Result<()> {
        let mut tx = self.begin_write().await?;
        sqlx::query(&format!(
            "INSERT INTO firmware_fetches ({FETCH_COLUMNS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
        ))
        .bind(nf(&fetch.device))
        .bind(fetch.time)
        .bind(nf(&fetch.vendor))
        .bind(nf(&fetch.model))
        .bind(nf(&fetch.version))
        .bind(nf(&fetch.sha256))
        .bind(i64::try_from(fetch.range_start).unwrap_or(i64::MAX))
        .bind(nf(&fetch.peer))
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        sqlx::query(
            "DELETE FROM firmware_fetches WHERE device = $1 AND id NOT IN \
             (SELECT id FROM firmware_fetches WHERE device = $2 ORDER BY id DESC LIMIT $3)",
        )
        .bind(nf(&fetch.device))
        .bind(nf(&fetch.device))
        .bind(i64::from(keep))
        .execute(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// The logged downloads of `device`, oldest first.
    pub async fn firmware_fetches(&self, device: &str) -> Result<Vec<FirmwareFetch>> {
        let rows = sqlx::query(&format!(
            "SELECT {FETCH_COLUMNS} FROM firmware_fetches WHERE device = $1 ORDER BY id"
        ))
        .bind(nf(device))
        .fetch_all(self.pool())
        .await
        .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(fetch_from_row).collect())
    }
}

const P: &str = "firmware_progress";

fn progress_from_row(row: &AnyRow) -> FirmwareProgress {
    let groups = opt_string(row, P, "groups")
        .and_then(|s| serde_json::from_str::<Vec<String>>(&s).ok())
        .unwrap_or_default();
    FirmwareProgress {
        device: string_or_empty(row, P, "device"),
        vendor: string_or_empty(row, P, "vendor"),
        model: string_or_empty(row, P, "model"),
        groups,
        reported_version: opt_string(row, P, "reported_version"),
        reported_at: opt_i64(row, P, "reported_at"),
        image_version: opt_string(row, P, "image_version"),
        image_sha256: opt_string(row, P, "image_sha256"),
        fetches: u32::try_from(i64_or_zero(row, P, "fetches").max(0)).unwrap_or(u32::MAX),
        first_fetch_at: opt_i64(row, P, "first_fetch_at"),
        last_fetch_at: opt_i64(row, P, "last_fetch_at"),
        done_at: opt_i64(row, P, "done_at"),
        flagged_at: opt_i64(row, P, "flagged_at"),
    }
}

fn fetch_from_row(row: &AnyRow) -> FirmwareFetch {
    const T: &str = "firmware_fetches";
    FirmwareFetch {
        device: string_or_empty(row, T, "device"),
        time: i64_or_zero(row, T, "time"),
        vendor: string_or_empty(row, T, "vendor"),
        model: string_or_empty(row, T, "model"),
        version: string_or_empty(row, T, "version"),
        sha256: string_or_empty(row, T, "sha256"),
        range_start: u64::try_from(i64_or_zero(row, T, "range_start")).unwrap_or(0),
        peer: string_or_empty(row, T, "peer"),
    }
}
