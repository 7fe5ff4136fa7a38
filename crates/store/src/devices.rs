//! Device state persistence: [`DeviceState`] to and from the `devices` table and its children
//! (`device_vars`, `device_messages`, `device_scripts`, `device_queries`).
//!
//! Saving writes exactly what the struct holds, so `load` after `save` gives back an equal
//! value: list order is kept through the `pos` columns (messages through their ids). This
//! module only moves data: it must not prune messages, pick phases or otherwise decide anything;
//! that is `autoprov-core`'s job.

use std::collections::HashMap;

use autoprov_core::state::{
    BootState, DeliveredScript, DeviceInfo, DeviceState, FirmwareState, Message, QueryResult,
};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Transaction};

use crate::decode::{i64_or_zero, opt_i64, opt_string, string_or_empty};
use crate::{Result, Store};

const DEVICE_COLUMNS: &str = "sn, seen, phase, nextphase, skipnext, requested, device_type, \
     classes, ip, rp, proxy, realip, hwid, device_phase, environments, backup, certstat, \
     request_downloaded, fw_build, fw_requested, fw_requested_at, boot_build, boot_requested_at, \
     vendor, model, first_seen";

const UPSERT_DEVICE: &str = "INSERT INTO devices (sn, seen, phase, nextphase, skipnext, \
     requested, device_type, classes, ip, rp, proxy, realip, hwid, device_phase, environments, \
     backup, certstat, request_downloaded, fw_build, fw_requested, fw_requested_at, boot_build, \
     boot_requested_at, vendor, model, first_seen) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16, $17, $18, $19, $20, $21, $22, $23, $24, $25, $26) \
     ON CONFLICT (sn) DO UPDATE SET seen = excluded.seen, phase = excluded.phase, \
     nextphase = excluded.nextphase, skipnext = excluded.skipnext, \
     requested = excluded.requested, device_type = excluded.device_type, \
     classes = excluded.classes, ip = excluded.ip, rp = excluded.rp, proxy = excluded.proxy, \
     realip = excluded.realip, hwid = excluded.hwid, device_phase = excluded.device_phase, \
     environments = excluded.environments, backup = excluded.backup, \
     certstat = excluded.certstat, request_downloaded = excluded.request_downloaded, \
     fw_build = excluded.fw_build, fw_requested = excluded.fw_requested, \
     fw_requested_at = excluded.fw_requested_at, boot_build = excluded.boot_build, \
     boot_requested_at = excluded.boot_requested_at, vendor = excluded.vendor, \
     model = excluded.model, first_seen = excluded.first_seen";

// Children: a duplicate key inside one list (not produced by DeviceState's own setters) keeps
// the last entry at the last position, as DeviceState::set_query would.
const INSERT_VAR: &str = "INSERT INTO device_vars (sn, name, time, pos) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (sn, name) DO UPDATE SET time = excluded.time, pos = excluded.pos";
const INSERT_MESSAGE: &str = "INSERT INTO device_messages (sn, time, msg) VALUES ($1, $2, $3)";
const INSERT_SCRIPT: &str =
    "INSERT INTO device_scripts (sn, filename, delivered, version, pos) VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (sn, filename) DO UPDATE SET delivered = excluded.delivered, \
     version = excluded.version, pos = excluded.pos";
const INSERT_QUERY: &str = "INSERT INTO device_queries (sn, id, seen, body, pos) \
     VALUES ($1, $2, $3, $4, $5) \
     ON CONFLICT (sn, id) DO UPDATE SET seen = excluded.seen, body = excluded.body, \
     pos = excluded.pos";

impl Store {
    /// The stored state of device `sn`, or `None` if it is unknown.
    pub async fn load(&self, sn: &str) -> Result<Option<DeviceState>> {
        if let Some(queued) = self.wb.as_ref().and_then(|wb| wb.get(sn)) {
            return Ok(Some((*queued).clone()));
        }
        // One read transaction: a concurrent save cannot tear the picture.
        let mut tx = self.begin_read().await?;
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE sn = $1"
        ))
        .bind(sn)
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| self.err(e))?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut state = device_from_row(&row);
        let where_sn = "WHERE sn = $1";
        for row in self.children(&mut tx, VARS, where_sn, sn).await? {
            state.device.vars.push(var_from_row(&row));
        }
        for row in self.children(&mut tx, MESSAGES, where_sn, sn).await? {
            state.msgs.push(message_from_row(&row));
        }
        for row in self.children(&mut tx, SCRIPTS, where_sn, sn).await? {
            state.scripts.push(script_from_row(&row));
        }
        for row in self.children(&mut tx, QUERIES, where_sn, sn).await? {
            state.queries.push(query_from_row(&row));
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(Some(state))
    }

    /// Store `state` as it is: the device row is inserted or updated and its vars, messages,
    /// scripts and queries are replaced by the struct's lists, all in one transaction. With
    /// write-behind the state is queued and written by the next batch (see `writebehind.rs`).
    pub async fn save(&self, state: &DeviceState) -> Result<()> {
        if let Some(wb) = &self.wb {
            if wb.put(state.clone()) > crate::writebehind::MAX_QUEUED {
                self.flush_with(wb).await?;
            }
            return Ok(());
        }
        self.write_states(&[state]).await
    }

    /// Write `states` in one transaction, bypassing any write-behind queue.
    pub(crate) async fn write_states(&self, states: &[&DeviceState]) -> Result<()> {
        let mut tx = self.begin_write().await?;
        for state in states {
            self.save_in(&mut tx, state)
                .await
                .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(())
    }

    /// All devices with their children, ordered by serial (byte order).
    pub async fn list(&self) -> Result<Vec<DeviceState>> {
        let _flushed = self.flushed().await?;
        let mut tx = self.begin_read().await?;
        let rows = sqlx::query(&format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY sn"))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let mut out: Vec<DeviceState> = rows.iter().map(device_from_row).collect();
        let index: HashMap<String, usize> = out
            .iter()
            .enumerate()
            .map(|(i, d)| (d.sn.clone(), i))
            .collect();
        let owner = |row: &AnyRow| index.get(&string_or_empty(row, "children", "sn")).copied();

        for row in self.children(&mut tx, VARS, "", "").await? {
            if let Some(i) = owner(&row) {
                out[i].device.vars.push(var_from_row(&row));
            }
        }
        for row in self.children(&mut tx, MESSAGES, "", "").await? {
            if let Some(i) = owner(&row) {
                out[i].msgs.push(message_from_row(&row));
            }
        }
        for row in self.children(&mut tx, SCRIPTS, "", "").await? {
            if let Some(i) = owner(&row) {
                out[i].scripts.push(script_from_row(&row));
            }
        }
        for row in self.children(&mut tx, QUERIES, "", "").await? {
            if let Some(i) = owner(&row) {
                out[i].queries.push(query_from_row(&row));
            }
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(out)
    }

    /// All devices without their children (vars, messages, scripts, queries), ordered by
    /// serial: one query, for inventory lists of many devices.
    pub async fn list_shallow(&self) -> Result<Vec<DeviceState>> {
        let _flushed = self.flushed().await?;
        let rows = sqlx::query(&format!("SELECT {DEVICE_COLUMNS} FROM devices ORDER BY sn"))
            .fetch_all(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(device_from_row).collect())
    }

    /// Forget device `sn` and everything stored for it. `false` if it was unknown.
    pub async fn delete(&self, sn: &str) -> Result<bool> {
        let _flushed = self.flushed().await?;
        if let Some(wb) = &self.wb {
            wb.forget(sn);
        }
        let done = sqlx::query("DELETE FROM devices WHERE sn = $1")
            .bind(sn)
            .execute(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Set the last-contact time of `sn` to `now`. `false` if the device is unknown.
    pub async fn touch(&self, sn: &str, now: i64) -> Result<bool> {
        let _flushed = self.flushed().await?;
        let done = sqlx::query("UPDATE devices SET seen = $1 WHERE sn = $2")
            .bind(now)
            .bind(sn)
            .execute(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected() > 0)
    }

    /// Delete every device last seen before `older_than` (with its children); returns how many
    /// devices went.
    pub async fn expire(&self, older_than: i64) -> Result<u64> {
        let _flushed = self.flushed().await?;
        if let Some(wb) = &self.wb {
            wb.forget_older(older_than);
        }
        let done = sqlx::query("DELETE FROM devices WHERE seen < $1")
            .bind(older_than)
            .execute(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(done.rows_affected())
    }

    async fn save_in(
        &self,
        tx: &mut AnyConnection,
        s: &DeviceState,
    ) -> std::result::Result<(), sqlx::Error> {
        let d = &s.device;
        sqlx::query(UPSERT_DEVICE)
            .bind(&s.sn)
            .bind(s.seen)
            .bind(&s.phase)
            .bind(&s.nextphase)
            .bind(s.skipnext)
            .bind(&s.requested)
            .bind(&d.device_type)
            .bind(&d.classes)
            .bind(&d.ip)
            .bind(i64::from(d.rp))
            .bind(&d.proxy)
            .bind(&d.realip)
            .bind(&d.hwid)
            .bind(&d.phase)
            .bind(&d.environments)
            .bind(d.backup)
            .bind(&d.certstat)
            .bind(&d.request_downloaded)
            .bind(&s.firmware.build)
            .bind(&s.firmware.requested)
            .bind(s.firmware.requested_at)
            .bind(&s.bootcode.build)
            .bind(s.bootcode.requested_at)
            .bind(&s.vendor)
            .bind(&s.model)
            .bind(s.first_seen)
            .execute(&mut *tx)
            .await?;

        for table in [
            "device_vars",
            "device_messages",
            "device_scripts",
            "device_queries",
        ] {
            sqlx::query(&format!("DELETE FROM {table} WHERE sn = $1"))
                .bind(&s.sn)
                .execute(&mut *tx)
                .await?;
        }
        let conn: &mut AnyConnection = tx;
        for (pos, (name, time)) in (0i64..).zip(&d.vars) {
            sqlx::query(INSERT_VAR)
                .bind(&s.sn)
                .bind(name)
                .bind(*time)
                .bind(pos)
                .execute(&mut *conn)
                .await?;
        }
        for m in &s.msgs {
            sqlx::query(INSERT_MESSAGE)
                .bind(&s.sn)
                .bind(m.time)
                .bind(&m.msg)
                .execute(&mut *conn)
                .await?;
        }
        for (pos, sc) in (0i64..).zip(&s.scripts) {
            sqlx::query(INSERT_SCRIPT)
                .bind(&s.sn)
                .bind(&sc.filename)
                .bind(sc.delivered)
                .bind(sc.version)
                .bind(pos)
                .execute(&mut *conn)
                .await?;
        }
        for (pos, q) in (0i64..).zip(&s.queries) {
            sqlx::query(INSERT_QUERY)
                .bind(&s.sn)
                .bind(&q.id)
                .bind(q.seen)
                .bind(&q.body)
                .bind(pos)
                .execute(&mut *conn)
                .await?;
        }
        Ok(())
    }

    /// Rows of one child table, for one device (`filter` = `WHERE sn = ?`) or all (`""`).
    async fn children(
        &self,
        tx: &mut Transaction<'static, Any>,
        child: Child,
        filter: &str,
        sn: &str,
    ) -> Result<Vec<AnyRow>> {
        let sql = format!(
            "SELECT {} FROM {} {filter} ORDER BY {}",
            child.columns, child.table, child.order
        );
        let mut q = sqlx::query(&sql);
        if !filter.is_empty() {
            q = q.bind(sn);
        }
        q.fetch_all(&mut **tx).await.map_err(|e| self.err(e))
    }
}

#[derive(Clone, Copy)]
struct Child {
    table: &'static str,
    columns: &'static str,
    order: &'static str,
}

const VARS: Child = Child {
    table: "device_vars",
    columns: "sn, name, time",
    order: "sn, pos, name",
};
const MESSAGES: Child = Child {
    table: "device_messages",
    columns: "sn, time, msg",
    order: "sn, id",
};
const SCRIPTS: Child = Child {
    table: "device_scripts",
    columns: "sn, filename, delivered, version",
    order: "sn, pos, filename",
};
const QUERIES: Child = Child {
    table: "device_queries",
    columns: "sn, id, seen, body",
    order: "sn, pos, id",
};

fn device_from_row(row: &AnyRow) -> DeviceState {
    let t = "devices";
    DeviceState {
        sn: string_or_empty(row, t, "sn"),
        seen: i64_or_zero(row, t, "seen"),
        phase: opt_string(row, t, "phase"),
        nextphase: opt_string(row, t, "nextphase"),
        skipnext: opt_i64(row, t, "skipnext"),
        requested: opt_string(row, t, "requested"),
        device: DeviceInfo {
            device_type: opt_string(row, t, "device_type"),
            classes: opt_string(row, t, "classes"),
            ip: opt_string(row, t, "ip"),
            rp: i64_or_zero(row, t, "rp") != 0,
            proxy: opt_string(row, t, "proxy"),
            realip: opt_string(row, t, "realip"),
            hwid: opt_string(row, t, "hwid"),
            phase: opt_string(row, t, "device_phase"),
            environments: opt_string(row, t, "environments"),
            backup: opt_i64(row, t, "backup"),
            certstat: opt_string(row, t, "certstat"),
            request_downloaded: opt_string(row, t, "request_downloaded"),
            vars: Vec::new(),
        },
        firmware: FirmwareState {
            build: opt_string(row, t, "fw_build"),
            requested: opt_string(row, t, "fw_requested"),
            requested_at: opt_i64(row, t, "fw_requested_at"),
        },
        bootcode: BootState {
            build: opt_string(row, t, "boot_build"),
            requested_at: opt_i64(row, t, "boot_requested_at"),
        },
        msgs: Vec::new(),
        scripts: Vec::new(),
        queries: Vec::new(),
        vendor: opt_string(row, t, "vendor"),
        model: opt_string(row, t, "model"),
        first_seen: opt_i64(row, t, "first_seen"),
    }
}

fn var_from_row(row: &AnyRow) -> (String, i64) {
    let t = "device_vars";
    (string_or_empty(row, t, "name"), i64_or_zero(row, t, "time"))
}

fn message_from_row(row: &AnyRow) -> Message {
    let t = "device_messages";
    Message {
        time: i64_or_zero(row, t, "time"),
        msg: string_or_empty(row, t, "msg"),
    }
}

fn script_from_row(row: &AnyRow) -> DeliveredScript {
    let t = "device_scripts";
    DeliveredScript {
        filename: string_or_empty(row, t, "filename"),
        delivered: i64_or_zero(row, t, "delivered"),
        version: i64_or_zero(row, t, "version"),
    }
}

fn query_from_row(row: &AnyRow) -> QueryResult {
    let t = "device_queries";
    QueryResult {
        id: string_or_empty(row, t, "id"),
        seen: i64_or_zero(row, t, "seen"),
        body: string_or_empty(row, t, "body"),
    }
}
