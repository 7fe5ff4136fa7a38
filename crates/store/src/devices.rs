//! Device state persistence: [`DeviceState`] to and from the `devices` table (whose `msgs`
//! column holds the message log as one JSON value, see [`messages_to_json`]: one value per
//! poll instead of hundreds of rows) and its children (`device_vars`, `device_scripts`,
//! `device_queries`).
//!
//! Saving writes exactly what the struct holds, so `load` after `save` gives back an equal
//! value: list order is kept through the `pos` columns and the array order. This
//! module only moves data: it must not prune messages, pick phases or otherwise decide anything;
//! that is `autoprov-core`'s job.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use autoprov_core::state::{
    BootState, DeliveredScript, DeviceInfo, DeviceState, FirmwareState, Message, QueryResult,
};
use sqlx::any::AnyRow;
use sqlx::{Any, AnyConnection, Transaction};

use crate::decode::{i64_or_zero, nf, opt_i64, opt_string, string_or_empty};
use crate::{Result, Store};

/// The device row without its message log (what lists of many devices read).
macro_rules! shallow_columns {
    () => {
        "sn, seen, phase, nextphase, skipnext, requested, device_type, \
         classes, ip, rp, proxy, realip, hwid, device_phase, environments, backup, certstat, \
         request_downloaded, fw_build, fw_requested, fw_requested_at, boot_build, \
         boot_requested_at, vendor, model, first_seen"
    };
}
const SHALLOW_COLUMNS: &str = shallow_columns!();
const DEVICE_COLUMNS: &str = concat!(shallow_columns!(), ", msgs");

const UPSERT_DEVICE_HEAD: &str = "INSERT INTO devices (sn, seen, phase, nextphase, skipnext, \
     requested, device_type, classes, ip, rp, proxy, realip, hwid, device_phase, environments, \
     backup, certstat, request_downloaded, fw_build, fw_requested, fw_requested_at, boot_build, \
     boot_requested_at, vendor, model, first_seen, msgs) VALUES ";
const DEVICE_BINDS: usize = 27;
const UPSERT_DEVICE_TAIL: &str = " ON CONFLICT (sn) DO UPDATE SET seen = excluded.seen, \
     phase = excluded.phase, nextphase = excluded.nextphase, skipnext = excluded.skipnext, \
     requested = excluded.requested, device_type = excluded.device_type, \
     classes = excluded.classes, ip = excluded.ip, rp = excluded.rp, proxy = excluded.proxy, \
     realip = excluded.realip, hwid = excluded.hwid, device_phase = excluded.device_phase, \
     environments = excluded.environments, backup = excluded.backup, \
     certstat = excluded.certstat, request_downloaded = excluded.request_downloaded, \
     fw_build = excluded.fw_build, fw_requested = excluded.fw_requested, \
     fw_requested_at = excluded.fw_requested_at, boot_build = excluded.boot_build, \
     boot_requested_at = excluded.boot_requested_at, vendor = excluded.vendor, \
     model = excluded.model, first_seen = excluded.first_seen, msgs = excluded.msgs";

/// Bind parameters per statement (PostgreSQL device rows, and child rows on both engines; SQLite
/// device rows go with anonymous parameters, see [`BoundSql`]). Far below the engines' limits
/// on purpose: binding cost grows
/// faster than linearly with the statement size (measured: 1 500 devices with 12 messages each
/// take 0.3 s at 300 binds, 0.6 s at 2 000, 8 s at 30 000 on SQLite; in the R1 benchmark
/// `sqlite3_bind_parameter_name` fell from 2.8 % to 0.9 % of the server's CPU going from 300
/// to 100).
const MAX_BINDS: usize = 100;

type AnyQuery<'q> = sqlx::query::Query<'q, Any, sqlx::any::AnyArguments<'q>>;

/// Bind parameters collected in place for one statement. Text is bound borrowed from the
/// state when it has no NUL (always, in practice; otherwise as [`nf`] makes it), so sqlx
/// copies each value once on its way to the database, where `Query::bind` of a [`nf`]
/// `String` cost a cleaned copy, a clone of it and a move of the whole query per value
/// (R5: ~13 000 instructions per device row, half of it that).
struct Binds<'q> {
    args: sqlx::any::AnyArguments<'q>,
    err: Option<sqlx::error::BoxDynError>,
}

impl<'q> Binds<'q> {
    fn new(capacity: usize) -> Binds<'q> {
        use sqlx::Arguments;
        let mut args = sqlx::any::AnyArguments::default();
        args.reserve(capacity, 0);
        Binds { args, err: None }
    }

    fn put<T>(&mut self, v: T)
    where
        T: 'q + sqlx::Encode<'q, Any> + sqlx::Type<Any>,
    {
        use sqlx::Arguments;
        if self.err.is_none() {
            if let Err(e) = self.args.add(v) {
                self.err = Some(e);
            }
        }
    }

    fn text(&mut self, v: Option<&'q str>) {
        match v {
            Some(t) if t.contains('\0') => self.put(nf(t)),
            v => self.put(v),
        }
    }

    fn str(&mut self, v: &'q str) {
        self.text(Some(v));
    }

    fn int(&mut self, v: Option<i64>) {
        self.put(v);
    }

    /// The statement `sql` with these parameters, or the first value that failed to encode.
    fn query(self, sql: &'q str) -> std::result::Result<AnyQuery<'q>, sqlx::Error> {
        match self.err {
            None => Ok(sqlx::query_with(sql, self.args)),
            Some(e) => Err(sqlx::Error::Encode(e)),
        }
    }
}

/// `($1, $2, ...), (...)`: `rows` groups of `cols` numbered placeholders, with `mark` `$`
/// (PostgreSQL) or `?` (SQLite, which looks `$n` names up one by one: quadratic in big
/// statements, while `?n` is direct).
fn values_sql(mark: char, cols: usize, rows: usize) -> String {
    let mut out = String::with_capacity(rows * cols * 5);
    for r in 0..rows {
        if r > 0 {
            out.push_str(", ");
        }
        out.push('(');
        for c in 0..cols {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("{mark}{}", r * cols + c + 1));
        }
        out.push(')');
    }
    out
}

/// Keep only the last entry of each key, at its own position (what a sequence of upserts
/// would leave), as `(position, entry)`.
fn last_per_key<'a, T, K: std::hash::Hash + Eq>(
    list: &'a [T],
    key: impl Fn(&'a T) -> K,
) -> Vec<(i64, &'a T)> {
    // Lists are short (a device's vars, delivered scripts, queries): compared pairwise
    // below a few dozen entries, hashed beyond.
    const SCAN: usize = 32;
    let mut out: Vec<(i64, &T)> = if list.len() <= SCAN {
        list.iter()
            .enumerate()
            .rev()
            .filter(|(i, e)| {
                let k = key(e);
                !list[i + 1..].iter().any(|later| key(later) == k)
            })
            .map(|(i, e)| (i as i64, e))
            .collect()
    } else {
        let mut seen = foldhash::HashSet::default();
        list.iter()
            .enumerate()
            .rev()
            .filter(|(_, e)| seen.insert(key(e)))
            .map(|(i, e)| (i as i64, e))
            .collect()
    };
    out.reverse();
    out
}

impl Store {
    /// The stored state of device `sn`, or `None` if it is unknown.
    pub async fn load(&self, sn: &str) -> Result<Option<DeviceState>> {
        if let Some(wb) = &self.wb {
            let taken = wb.take(sn);
            if wb.notes_check.swap(false, Ordering::AcqRel) {
                if let Err(e) = self.read_pending_notes(wb).await {
                    wb.notes_check.store(true, Ordering::Release);
                    return Err(e);
                }
            }
            let held = match taken {
                crate::writebehind::Taken::Held(held) => Some(held),
                crate::writebehind::Taken::Absent => return Ok(None),
                crate::writebehind::Taken::Ask => None,
            };
            if let Some(held) = held {
                let mut state = Arc::unwrap_or_clone(held);
                if wb.notes_pending(sn) {
                    let mut conn = self.pool().acquire().await.map_err(|e| self.err(e))?;
                    self.merge_notes(&mut conn, &mut state).await?;
                }
                return Ok(Some(state));
            }
        }
        // A device never seen before (first contact, the boot storm) costs one statement, not
        // a transaction; a known one is then read in one read transaction, so that a
        // concurrent save cannot tear the picture.
        let exists = sqlx::query("SELECT 1 FROM devices WHERE sn = $1")
            .bind(nf(sn))
            .fetch_optional(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        if exists.is_none() {
            return Ok(None);
        }
        let mut tx = self.begin_read().await?;
        let row = sqlx::query(&format!(
            "SELECT {DEVICE_COLUMNS} FROM devices WHERE sn = $1"
        ))
        .bind(nf(sn))
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
        for row in self.children(&mut tx, SCRIPTS, where_sn, sn).await? {
            state.scripts.push(script_from_row(&row));
        }
        for row in self.children(&mut tx, QUERIES, where_sn, sn).await? {
            state.queries.push(query_from_row(&row));
        }
        // Only SQLite has notes (see `append_note`).
        if self.backend == crate::Backend::Sqlite {
            self.merge_notes(&mut tx, &mut state).await?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        Ok(Some(state))
    }

    /// Append a message to a device's log from a process that does not hold the device's
    /// state (the CLI's `notify` next to a running server): on SQLite it is kept as a note
    /// that every load merges in and that stays until a write of the device's state contains
    /// it, so a server that holds an older state in memory cannot write over it; on
    /// PostgreSQL (and in a process with write-behind, which must hold the device's lock) the
    /// state is loaded, changed and saved under the store's device lock. `false` when the
    /// device is unknown.
    pub async fn append_note(&self, sn: &str, time: i64, msg: &str) -> Result<bool> {
        if self.wb.is_some() || self.backend == crate::Backend::Postgres {
            let _lock = self.lock_device(sn).await?;
            let Some(mut state) = self.load(sn).await? else {
                return Ok(false);
            };
            state.add_msg(msg, time);
            self.save_owned(state).await?;
            return Ok(true);
        }
        let mut tx = self.begin_write().await?;
        let exists = sqlx::query("SELECT 1 FROM devices WHERE sn = $1")
            .bind(nf(sn))
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        if exists.is_none() {
            return Ok(false);
        }
        sqlx::query("INSERT INTO device_notes (sn, time, msg) VALUES ($1, $2, $3)")
            .bind(nf(sn))
            .bind(time)
            .bind(nf(msg))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let generation = self.bump_generation(&mut *tx).await?;
        tx.commit().await.map_err(|e| self.err(e))?;
        self.note_own_write(generation);
        Ok(true)
    }

    /// Merge the notes of `state`'s device newer than those it contains, each at its place
    /// in time, and remember the newest.
    async fn merge_notes(&self, conn: &mut AnyConnection, state: &mut DeviceState) -> Result<()> {
        let rows = sqlx::query(
            "SELECT id, time, msg FROM device_notes WHERE sn = $1 AND id > $2 ORDER BY id",
        )
        .bind(nf(&state.sn))
        .bind(state.notes_upto.unwrap_or(0))
        .fetch_all(conn)
        .await
        .map_err(|e| self.err(e))?;
        for row in &rows {
            let t = "device_notes";
            let time = i64_or_zero(row, t, "time");
            let at = state.msgs.partition_point(|m| m.time <= time);
            state.msgs.insert(
                at,
                Message {
                    time,
                    msg: string_or_empty(row, t, "msg").into(),
                },
            );
            state.notes_upto = Some(i64_or_zero(row, t, "id"));
        }
        Ok(())
    }

    /// Which devices have notes, and the newest of each (see [`WriteBehind`]'s `notes`).
    async fn read_pending_notes(&self, wb: &crate::writebehind::WriteBehind) -> Result<()> {
        let rows = sqlx::query("SELECT sn, MAX(id) AS newest FROM device_notes GROUP BY sn")
            .fetch_all(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        let found: foldhash::HashMap<String, i64> = rows
            .iter()
            .map(|r| {
                (
                    string_or_empty(r, "device_notes", "sn"),
                    i64_or_zero(r, "device_notes", "newest"),
                )
            })
            .collect();
        *wb.notes.lock().unwrap_or_else(|p| p.into_inner()) = found;
        Ok(())
    }

    /// Store `state` as it is: the device row is inserted or updated and its vars, messages,
    /// scripts and queries are replaced by the struct's lists, all in one transaction. With
    /// write-behind the state is queued and written by the next batch (see `writebehind.rs`).
    pub async fn save(&self, state: &DeviceState) -> Result<()> {
        match &self.wb {
            Some(_) => self.save_owned(state.clone()).await,
            None => {
                self.notify(|o| o.saved(state));
                self.write_states(&[state], None).await.map(drop)
            }
        }
    }

    /// [`Store::save`] of a state the caller is done with (queued without a copy).
    pub async fn save_owned(&self, state: DeviceState) -> Result<()> {
        self.notify(|o| o.saved(&state));
        if let Some(wb) = &self.wb {
            if wb.put(state) > crate::writebehind::MAX_QUEUED {
                self.flush_with(wb).await?;
            }
            return Ok(());
        }
        self.write_states(&[&state], None).await.map(drop)
    }

    /// Save a state that differs from the one loaded under the device's lock (the caller
    /// holds it from load to here) in `seen` only: with write-behind the batch then updates
    /// that column alone and the inventory index is only touched; otherwise as
    /// [`Store::save_owned`].
    pub async fn save_seen(&self, state: DeviceState) -> Result<()> {
        let Some(wb) = &self.wb else {
            return self.save_owned(state).await;
        };
        self.notify(|o| o.touched(&state.sn, state.seen));
        if wb.put_seen(state) > crate::writebehind::MAX_QUEUED {
            self.flush_with(wb).await?;
        }
        Ok(())
    }

    /// Write `states` in one transaction at once (bypassing any write-behind queue); the
    /// last state of a serial wins. For imports and bulk changes.
    pub async fn save_all(&self, states: &[&DeviceState]) -> Result<()> {
        for s in states {
            self.notify(|o| o.saved(s));
        }
        let _flushed = self.flushed().await?;
        if let Some(wb) = &self.wb {
            for s in states {
                wb.written_directly(&s.sn);
            }
        }
        self.write_states(states, None).await.map(drop)
    }

    /// Write `states` in one transaction, bypassing any write-behind queue. Returns the
    /// device change counter this write moved to (SQLite), and the serials whose states were
    /// not written because another process forgot them meanwhile (see [`QueuedWrite`]).
    pub(crate) async fn write_states(
        &self,
        states: &[&DeviceState],
        queued: Option<QueuedWrite<'_>>,
    ) -> Result<(Option<i64>, Vec<String>)> {
        let mut tx = self.begin_write().await?;
        // The counter first: its old value tells whether anybody else wrote devices since
        // the write-behind last looked.
        let generation = self.bump_generation(&mut *tx).await?;
        let mut unchanged = None;
        let mut forgotten = Vec::new();
        let touches = queued.as_ref().map_or(&[][..], |q| q.touches);
        let mut logs = queued.as_ref().map_or(&[][..], |q| q.logs);
        let mut whole: Vec<&DeviceState> = states.to_vec();
        if let Some(q) = queued {
            let unmoved = matches!((q.known, generation), (Some(k), Some(g)) if g - 1 == k);
            if unmoved && self.backend == crate::Backend::Sqlite {
                unchanged = q.children_stored;
            } else {
                // What this process believed the rows hold is void: every state whole.
                whole.extend_from_slice(logs);
                logs = &[];
                if self.backend == crate::Backend::Sqlite {
                    forgotten = self.take_forgotten(&mut tx).await?;
                }
            }
        }
        let kept: Vec<&DeviceState> = if forgotten.is_empty() {
            whole
        } else {
            whole
                .into_iter()
                .filter(|s| !forgotten.contains(&s.sn))
                .collect()
        };
        self.save_many_in(&mut tx, &kept, unchanged)
            .await
            .map_err(|e| self.err(e))?;
        for (sql, rows) in bound_statements(&LOG_DEVICES_BOUND, logs) {
            let jsons: Vec<String> = rows.iter().map(|s| messages_to_json(&s.msgs)).collect();
            let mut b = Binds::new(rows.len() * 3);
            for (s, json) in rows.iter().zip(&jsons) {
                b.str(&s.sn);
                b.int(Some(s.seen));
                b.str(json);
            }
            let q = b.query(sql).map_err(|e| self.err(e))?;
            q.execute(&mut *tx).await.map_err(|e| self.err(e))?;
        }
        // Notes the written logs contain are done with.
        for s in kept.iter().chain(logs) {
            if let Some(upto) = s.notes_upto {
                sqlx::query("DELETE FROM device_notes WHERE sn = $1 AND id <= $2")
                    .bind(nf(&s.sn))
                    .bind(upto)
                    .execute(&mut *tx)
                    .await
                    .map_err(|e| self.err(e))?;
            }
        }
        for (sql, rows) in bound_statements(&TOUCH_DEVICES_BOUND, touches) {
            let mut b = Binds::new(rows.len() * 2);
            for (sn, seen) in rows {
                b.str(sn);
                b.int(Some(*seen));
            }
            let q = b.query(sql).map_err(|e| self.err(e))?;
            q.execute(&mut *tx).await.map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        self.note_own_write(generation);
        Ok((generation, forgotten))
    }

    /// Read and remove the marks that processes without write-behind leave when they forget
    /// a device (see [`Store::delete`]).
    async fn take_forgotten(&self, tx: &mut Transaction<'static, Any>) -> Result<Vec<String>> {
        let rows = sqlx::query("DELETE FROM meta WHERE key >= $1 AND key < $2 RETURNING key")
            .bind(FORGOTTEN)
            .bind(FORGOTTEN_END)
            .fetch_all(&mut **tx)
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| string_or_empty(r, "meta", "key"))
            .filter_map(|k| k.strip_prefix(FORGOTTEN).map(str::to_string))
            .collect())
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
    /// serial: for inventory lists of many devices. Read a page at a time (see
    /// [`Store::list_shallow_page`]), so that only the result is held at once.
    pub async fn list_shallow(&self) -> Result<Vec<DeviceState>> {
        let mut out: Vec<DeviceState> = Vec::new();
        loop {
            let page = self
                .list_shallow_page(out.last().map(|d| d.sn.as_str()), SHALLOW_PAGE)
                .await?;
            let done = page.len() < SHALLOW_PAGE;
            out.extend(page);
            if done {
                return Ok(out);
            }
        }
    }

    /// Up to `limit` devices as [`Store::list_shallow`] has them, those after serial `after`
    /// (from the first without), in the database's order of serials: a consumer of every
    /// device (the inventory index) holds one page of rows at a time.
    pub async fn list_shallow_page(
        &self,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceState>> {
        self.shallow_page(None, after, limit).await
    }

    /// [`Store::list_shallow_page`] of the devices last seen at or after `since`: what other
    /// replicas changed recently, for views kept in memory. Queued states of this process
    /// are included.
    pub async fn list_shallow_since_page(
        &self,
        since: i64,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceState>> {
        self.shallow_page(Some(since), after, limit).await
    }

    async fn shallow_page(
        &self,
        since: Option<i64>,
        after: Option<&str>,
        limit: usize,
    ) -> Result<Vec<DeviceState>> {
        let _flushed = self.flushed().await?;
        let mut conditions = Vec::new();
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if since.is_some() {
            conditions.push(format!("seen >= {}", next()));
        }
        if after.is_some() {
            conditions.push(format!("sn > {}", next()));
        }
        let filter = if conditions.is_empty() {
            String::new()
        } else {
            format!("WHERE {} ", conditions.join(" AND "))
        };
        let sql = format!(
            "SELECT {SHALLOW_COLUMNS} FROM devices {filter}ORDER BY sn LIMIT {}",
            next()
        );
        let mut q = sqlx::query(&sql);
        if let Some(since) = since {
            q = q.bind(since);
        }
        if let Some(after) = after {
            q = q.bind(after.to_string());
        }
        let rows = q
            .bind(i64::try_from(limit).unwrap_or(i64::MAX))
            .fetch_all(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows.iter().map(shallow_from_row).collect())
    }

    /// The serials of all devices, in byte order (for views that must notice deletions made
    /// by other replicas).
    pub async fn serials(&self) -> Result<Vec<String>> {
        let _flushed = self.flushed().await?;
        let rows = sqlx::query("SELECT sn FROM devices ORDER BY sn")
            .fetch_all(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        Ok(rows
            .iter()
            .map(|r| string_or_empty(r, "devices", "sn"))
            .collect())
    }

    /// Forget device `sn` and everything stored for it. `false` if it was unknown.
    pub async fn delete(&self, sn: &str) -> Result<bool> {
        let _flushed = self.flushed().await?;
        if let Some(wb) = &self.wb {
            wb.forget(sn);
        }
        let mut tx = self.begin_write().await?;
        let done = sqlx::query("DELETE FROM devices WHERE sn = $1")
            .bind(nf(sn))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        sqlx::query("DELETE FROM device_notes WHERE sn = $1")
            .bind(nf(sn))
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        let generation = self.bump_generation(&mut *tx).await?;
        if self.wb.is_none() && self.backend == crate::Backend::Sqlite {
            // A server next to this process may hold a state of the device in its
            // write-behind queue, polled before now: the mark tells its next batch to drop
            // it rather than write the device back (even when no row was here yet).
            sqlx::query(
                "INSERT INTO meta (key, value) VALUES ($1, $2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            )
            .bind(format!("{FORGOTTEN}{}", nf(sn)))
            .bind(generation.unwrap_or(0).to_string())
            .execute(&mut *tx)
            .await
            .map_err(|e| self.err(e))?;
        }
        tx.commit().await.map_err(|e| self.err(e))?;
        self.note_own_write(generation);
        self.notify(|o| o.deleted(sn));
        Ok(done.rows_affected() > 0)
    }

    /// Set the last-contact time of `sn` to `now`. `false` if the device is unknown.
    pub async fn touch(&self, sn: &str, now: i64) -> Result<bool> {
        let _flushed = self.flushed().await?;
        if let Some(wb) = &self.wb {
            wb.forget_clean(sn);
        }
        let done = sqlx::query("UPDATE devices SET seen = $1 WHERE sn = $2")
            .bind(now)
            .bind(nf(sn))
            .execute(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        let generation = self.bump_generation(self.pool()).await?;
        self.note_own_write(generation);
        if done.rows_affected() > 0 {
            self.notify(|o| o.touched(sn, now));
        }
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
        sqlx::query("DELETE FROM device_notes WHERE sn NOT IN (SELECT sn FROM devices)")
            .execute(self.pool())
            .await
            .map_err(|e| self.err(e))?;
        let generation = self.bump_generation(self.pool()).await?;
        self.note_own_write(generation);
        self.notify(|o| o.expired(older_than));
        Ok(done.rows_affected())
    }

    /// Write `states` (the last one of each serial wins) with multi-row statements: per chunk
    /// one upsert of the device rows, one delete per child table and one insert per child
    /// table (in bind-limited slices). The caller owns the transaction.
    async fn save_many_in(
        &self,
        tx: &mut AnyConnection,
        states: &[&DeviceState],
        children_stored: Option<&ChildrenStored<'_>>,
    ) -> std::result::Result<(), sqlx::Error> {
        let unique: Vec<&DeviceState> = last_per_key(states, |s| s.sn.as_str())
            .into_iter()
            .map(|(_, s)| *s)
            .collect();
        let mark = self.bind_mark();
        let sqlite = self.backend == crate::Backend::Sqlite;
        // SQLite takes device rows in statements of up to 256 rows with anonymous
        // parameters ([`BoundSql`]); PostgreSQL in small numbered ones.
        let per_statement = if sqlite {
            JSON_ROWS
        } else {
            MAX_BINDS / DEVICE_BINDS
        };
        for chunk in unique.chunks(per_statement) {
            if sqlite {
                for (sql, rows) in bound_statements(&UPSERT_DEVICES_BOUND, chunk) {
                    let jsons: Vec<String> =
                        rows.iter().map(|s| messages_to_json(&s.msgs)).collect();
                    let mut b = Binds::new(rows.len() * DEVICE_BINDS);
                    for (s, json) in rows.iter().zip(&jsons) {
                        bind_device(&mut b, s, json);
                    }
                    b.query(sql)?.execute(&mut *tx).await?;
                }
            } else {
                let sql = format!(
                    "{UPSERT_DEVICE_HEAD}{}{UPSERT_DEVICE_TAIL}",
                    values_sql(mark, DEVICE_BINDS, chunk.len())
                );
                // At most 3 devices per statement (MAX_BINDS): few lengths, cached.
                let jsons: Vec<String> = chunk.iter().map(|s| messages_to_json(&s.msgs)).collect();
                let mut b = Binds::new(chunk.len() * DEVICE_BINDS);
                for (s, json) in chunk.iter().zip(&jsons) {
                    bind_device(&mut b, s, json);
                }
                b.query(&sql)?.execute(&mut *tx).await?;
            }

            // Child rows only for states whose children differ from the stored ones; deleted
            // first unless the database holds none.
            let known: Vec<(&DeviceState, StoredChildren)> = chunk
                .iter()
                .map(|s| {
                    (
                        *s,
                        children_stored.map_or(StoredChildren::Unknown, |k| k(s)),
                    )
                })
                .filter(|(_, k)| *k != StoredChildren::Same)
                .collect();
            let chunk: Vec<&DeviceState> = known.iter().map(|(s, _)| *s).collect();
            let clear: Vec<&DeviceState> = known
                .iter()
                .filter(|(_, k)| *k == StoredChildren::Unknown)
                .map(|(s, _)| *s)
                .collect();
            if chunk.is_empty() {
                continue;
            }
            if clear.is_empty() {
                // nothing to delete
            } else if sqlite {
                // One bind per table: the serials as a JSON array.
                let sns: Vec<String> = clear.iter().map(|s| nf(&s.sn)).collect();
                let sns = serde_json::to_string(&sns).unwrap_or_else(|_| "[]".into());
                for table in ["device_vars", "device_scripts", "device_queries"] {
                    sqlx::query(&format!(
                        "DELETE FROM {table} WHERE sn IN (SELECT value FROM json_each(?1))"
                    ))
                    .bind(&sns)
                    .execute(&mut *tx)
                    .await?;
                }
            } else {
                for table in ["device_vars", "device_scripts", "device_queries"] {
                    let sql = format!(
                        "DELETE FROM {table} WHERE sn IN ({})",
                        (1..=clear.len())
                            .map(|i| format!("{mark}{i}"))
                            .collect::<Vec<_>>()
                            .join(", ")
                    );
                    // One statement per list length: not kept in the connection's statement
                    // cache, which would fill with a prepared statement for every batch size.
                    let mut q = sqlx::query(&sql).persistent(false);
                    for s in &clear {
                        q = q.bind(nf(&s.sn));
                    }
                    q.execute(&mut *tx).await?;
                }
            }

            // A device believed new whose rows exist after all (written behind this
            // process's back in a way it could not notice) has them replaced, not the
            // batch refused over a duplicate key.
            let insert = if sqlite {
                "INSERT OR REPLACE INTO"
            } else {
                "INSERT INTO"
            };
            let mut vars = Vec::new();
            let mut scripts = Vec::new();
            let mut queries = Vec::new();
            for s in &chunk {
                for (pos, (name, time)) in last_per_key(&s.device.vars, |v| v.0.as_str()) {
                    vars.push((s.sn.as_str(), name.as_str(), *time, pos));
                }
                for (pos, sc) in last_per_key(&s.scripts, |x| x.filename.as_str()) {
                    scripts.push((s.sn.as_str(), sc, pos));
                }
                for (pos, qr) in last_per_key(&s.queries, |x| x.id.as_str()) {
                    queries.push((s.sn.as_str(), qr, pos));
                }
            }
            insert_rows(
                tx,
                mark,
                &format!("{insert} device_vars (sn, name, time, pos) VALUES "),
                4,
                &vars,
                |b, (sn, name, time, pos)| {
                    b.str(sn);
                    b.str(name);
                    b.int(Some(*time));
                    b.int(Some(*pos));
                },
            )
            .await?;
            insert_rows(
                tx,
                mark,
                &format!("{insert} device_scripts (sn, filename, delivered, version, pos) VALUES "),
                5,
                &scripts,
                |b, (sn, sc, pos)| {
                    b.str(sn);
                    b.str(&sc.filename);
                    b.int(Some(sc.delivered));
                    b.int(Some(sc.version));
                    b.int(Some(*pos));
                },
            )
            .await?;
            insert_rows(
                tx,
                mark,
                &format!("{insert} device_queries (sn, id, seen, body, pos) VALUES "),
                5,
                &queries,
                |b, (sn, qr, pos)| {
                    b.str(sn);
                    b.str(&qr.id);
                    b.int(Some(qr.seen));
                    b.str(&qr.body);
                    b.int(Some(*pos));
                },
            )
            .await?;
        }
        Ok(())
    }

    /// The placeholder mark for generated multi-row statements (see `values_sql`).
    fn bind_mark(&self) -> char {
        match self.backend {
            crate::Backend::Sqlite => '?',
            crate::Backend::Postgres => '$',
        }
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
            q = q.bind(nf(sn));
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

/// Rows of [`Store::list_shallow`] read at once.
const SHALLOW_PAGE: usize = 10_000;

fn device_from_row(row: &AnyRow) -> DeviceState {
    let mut state = shallow_from_row(row);
    state.msgs = messages_from_json(&string_or_empty(row, "devices", "msgs"));
    state
}

/// A device row of [`SHALLOW_COLUMNS`]: everything but the message log and the children.
fn shallow_from_row(row: &AnyRow) -> DeviceState {
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
        notes_upto: None,
    }
}

fn var_from_row(row: &AnyRow) -> (String, i64) {
    let t = "device_vars";
    (string_or_empty(row, t, "name"), i64_or_zero(row, t, "time"))
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

/// The [`UPSERT_DEVICE_HEAD`] values of `s`, its message log as `log` (the
/// [`messages_to_json`] of `s.msgs`).
fn bind_device<'q>(b: &mut Binds<'q>, s: &'q DeviceState, log: &'q str) {
    device_columns(&mut BindSink { binds: b, log }, s, true);
}

/// `meta` keys `forgotten:<sn>`: devices forgotten by a process without write-behind, for
/// the next batch of a server's write-behind (see [`QueuedWrite`]). `;` follows `:`.
const FORGOTTEN: &str = "forgotten:";
const FORGOTTEN_END: &str = "forgotten;";

/// What the write-behind adds to [`Store::write_states`]. Both are acted upon inside the
/// write's own transaction, which holds SQLite's write lock:
///
/// * `children_stored` lets a batch skip child rows the database already holds (whether a
///   state's vars, scripts and queries are what this process last wrote), and insert those
///   of a device it does not hold without deleting first ([`StoredChildren`]). Believed only
///   when the device change counter is still `known`, the value this process last saw:
///   nobody else wrote devices since. Otherwise every state is written whole.
/// * `logs` are states whose device row the database holds but for `seen` and the message
///   log, and whose child rows it holds (a steady poll): with the counter still `known`
///   only those two columns are updated (SQLite); otherwise they are written whole.
/// * When the counter moved, devices that another process forgot since (`devices forget`
///   next to a running server) are not written back: their queued states come from polls
///   before the forget. Their serials are returned, and the marks removed.
pub(crate) struct QueuedWrite<'a> {
    pub known: Option<i64>,
    pub children_stored: Option<&'a ChildrenStored<'a>>,
    /// Devices whose row only needs its `seen` updated (SQLite), as `(sn, seen)`. An update,
    /// not an upsert: a device deleted meanwhile stays deleted.
    pub touches: &'a [(&'a str, i64)],
    pub logs: &'a [&'a DeviceState],
}

/// Whether the database already holds a state's child rows (see [`QueuedWrite`]).
pub(crate) type ChildrenStored<'a> = dyn Fn(&DeviceState) -> StoredChildren + Sync + 'a;

/// What the database holds of a state's child rows, as far as the write-behind knows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StoredChildren {
    /// Exactly the state's: nothing to write.
    Same,
    /// None at all (a device the database did not hold): inserted without a delete first.
    None,
    /// Not known: deleted and inserted.
    Unknown,
}

/// Rows per statement of device writes on SQLite (whole rows, touches, `seen` and message
/// log), largest first: a batch is cut greedily into statements of these sizes, so that
/// only these few statement texts are ever prepared (and kept in the connection's statement
/// cache).
const BOUND_ROWS: [usize; 5] = [256, 64, 16, 4, 1];

/// Statement texts for each of [`BOUND_ROWS`].
struct BoundSql {
    sql: [String; BOUND_ROWS.len()],
}

/// `(?, ?), (?, ?)`: `rows` groups of `width` anonymous parameters. sqlx binds those in
/// order, where it looks up the name of every `?NNN` or `$NNN` one in SQLite's list of
/// names, which grows with the statement.
fn anonymous_values(width: usize, rows: usize) -> String {
    let row = format!("({})", vec!["?"; width].join(", "));
    vec![row; rows].join(", ")
}

impl BoundSql {
    fn new(sql: impl Fn(usize) -> String) -> BoundSql {
        BoundSql {
            sql: BOUND_ROWS.map(sql),
        }
    }

    /// `UPDATE devices SET <set> FROM (VALUES (?, ...), ...) AS v WHERE devices.sn =
    /// v.column1`, `width` values per row (the serial first): the values are bound as they
    /// are, where a JSON array of rows cost more to build, escape and take apart than the
    /// update itself (a message log is a string full of quotes). An update: a device deleted
    /// meanwhile stays deleted. `OR FAIL`: see [`UPSERT_DEVICES_BOUND`].
    fn update(set: &str, width: usize) -> BoundSql {
        BoundSql::new(|rows| {
            format!(
                "UPDATE OR FAIL devices SET {set} FROM (VALUES {}) AS v \
                 WHERE devices.sn = v.column1",
                anonymous_values(width, rows)
            )
        })
    }
}

/// `seen` of many devices on SQLite, `(sn, seen)` per row.
static TOUCH_DEVICES_BOUND: std::sync::LazyLock<BoundSql> =
    std::sync::LazyLock::new(|| BoundSql::update("seen = v.column2", 2));

/// `seen` and the message log of many devices on SQLite, `(sn, seen, msgs)` per row.
static LOG_DEVICES_BOUND: std::sync::LazyLock<BoundSql> =
    std::sync::LazyLock::new(|| BoundSql::update("seen = v.column2, msgs = v.column3", 3));

/// Whole device rows on SQLite, [`bind_device`] per row.
///
/// `OR FAIL`, here and in [`BoundSql::update`]: a statement that writes
/// several rows and may stop half-way with the default `ABORT` (a `NOT NULL` column is
/// enough) makes SQLite copy every page it changes into a statement journal first, so that
/// the rows written before the failure can be put back. `FAIL` keeps them instead, and
/// needs no journal (measured: a 256-row update of `seen` and the message log ~20 % cheaper
/// per row). Nothing is kept in the end: every device write runs in a transaction that is
/// rolled back as a whole when one statement fails.
static UPSERT_DEVICES_BOUND: std::sync::LazyLock<BoundSql> = std::sync::LazyLock::new(|| {
    BoundSql::new(|rows| {
        let head = UPSERT_DEVICE_HEAD.replacen("INSERT INTO", "INSERT OR FAIL INTO", 1);
        format!(
            "{head}{}{UPSERT_DEVICE_TAIL}",
            anonymous_values(DEVICE_BINDS, rows)
        )
    })
});

/// `rows` cut into statements of [`BOUND_ROWS`] sizes, largest first.
fn bound_statements<'a, T>(
    update: &'a BoundSql,
    rows: &'a [T],
) -> impl Iterator<Item = (&'a str, &'a [T])> {
    bound_chunks(rows).map(|(i, rows)| (update.sql[i].as_str(), rows))
}

/// `rows` cut into [`BOUND_ROWS`] sizes, largest first, with the index of each size.
fn bound_chunks<T>(mut rows: &[T]) -> impl Iterator<Item = (usize, &[T])> {
    std::iter::from_fn(move || {
        let i = BOUND_ROWS.iter().position(|&n| n <= rows.len())?;
        let (now, rest) = rows.split_at(BOUND_ROWS[i]);
        rows = rest;
        Some((i, now))
    })
}

/// Device rows per transaction chunk on SQLite (each cut into statements of
/// [`BOUND_ROWS`]).
const JSON_ROWS: usize = 500;

/// A fingerprint of the device row `state` makes, but for `seen` and the message log: the
/// values [`bind_device`] binds for the other columns, hashed as they are passed to it (one
/// list of columns, [`device_columns`], feeds both, so a column added there is covered here).
pub(crate) fn columns_print(state: &DeviceState) -> u64 {
    use std::hash::Hasher;
    let mut sink = PrintSink(std::hash::BuildHasher::build_hasher(
        &foldhash::quality::FixedState::default(),
    ));
    device_columns(&mut sink, state, false);
    sink.0.finish()
}

/// Where [`device_columns`] sends a row's values.
trait ColumnSink<'s> {
    fn text(&mut self, first: bool, v: Option<&'s str>);
    fn int(&mut self, v: Option<i64>);
    /// `seen` or the message log, left out.
    fn skip(&mut self);
    fn log(&mut self, msgs: &'s [Message]);
}

/// The bind parameters of [`bind_device`], the message log already encoded.
struct BindSink<'b, 'q> {
    binds: &'b mut Binds<'q>,
    log: &'q str,
}

impl<'q> ColumnSink<'q> for BindSink<'_, 'q> {
    fn text(&mut self, _first: bool, v: Option<&'q str>) {
        self.binds.text(v);
    }
    fn int(&mut self, v: Option<i64>) {
        self.binds.int(v);
    }
    fn skip(&mut self) {
        unreachable!("a whole row is bound")
    }
    fn log(&mut self, _msgs: &'q [Message]) {
        self.binds.str(self.log);
    }
}

/// The fingerprint of [`columns_print`]: every value with a tag for its kind and, for
/// text, its length, so that no two rows hash the same input.
struct PrintSink(foldhash::quality::FoldHasher);

impl ColumnSink<'_> for PrintSink {
    fn text(&mut self, _first: bool, v: Option<&str>) {
        use std::hash::Hasher;
        match v {
            Some(t) => {
                self.0.write_u8(1);
                self.0.write_usize(t.len());
                self.0.write(t.as_bytes());
            }
            None => self.0.write_u8(0),
        }
    }
    fn int(&mut self, v: Option<i64>) {
        use std::hash::Hasher;
        match v {
            Some(n) => {
                self.0.write_u8(3);
                self.0.write_i64(n);
            }
            None => self.0.write_u8(2),
        }
    }
    fn skip(&mut self) {}
    fn log(&mut self, _msgs: &[Message]) {}
}

/// The [`UPSERT_DEVICE_HEAD`] columns of `s`, in order; `seen` and `msgs` only when `all`.
fn device_columns<'s>(out: &mut impl ColumnSink<'s>, s: &'s DeviceState, all: bool) {
    let d = &s.device;
    out.text(true, Some(&s.sn));
    if all {
        out.int(Some(s.seen));
    } else {
        out.skip();
    }
    out.text(false, s.phase.as_deref());
    out.text(false, s.nextphase.as_deref());
    out.int(s.skipnext);
    out.text(false, s.requested.as_deref());
    out.text(false, d.device_type.as_deref());
    out.text(false, d.classes.as_deref());
    out.text(false, d.ip.as_deref());
    out.int(Some(i64::from(d.rp)));
    out.text(false, d.proxy.as_deref());
    out.text(false, d.realip.as_deref());
    out.text(false, d.hwid.as_deref());
    out.text(false, d.phase.as_deref());
    out.text(false, d.environments.as_deref());
    out.int(d.backup);
    out.text(false, d.certstat.as_deref());
    out.text(false, d.request_downloaded.as_deref());
    out.text(false, s.firmware.build.as_deref());
    out.text(false, s.firmware.requested.as_deref());
    out.int(s.firmware.requested_at);
    out.text(false, s.bootcode.build.as_deref());
    out.int(s.bootcode.requested_at);
    out.text(false, s.vendor.as_deref());
    out.text(false, s.model.as_deref());
    out.int(s.first_seen);
    if all {
        out.log(&s.msgs);
    } else {
        out.skip();
    }
}

/// The message log as stored. Every poll logs the same few texts again, so the column holds
/// each distinct text once: `{"texts": [...], "log": [t, i, d, i, ...]}`, a message being the
/// index `i` of its text and its time, written as the difference `d` to the time before (the
/// first as it is). A full log of 200 messages takes ~1 KB instead of ~10 KB as
/// `[time, text]` pairs, which is what every write of the state costs.
fn messages_to_json(msgs: &[Message]) -> String {
    if msgs.is_empty() {
        return "[]".into();
    }
    // A log has a handful of distinct texts: found by a scan, hashed only beyond that.
    const SCAN: usize = 16;
    let mut index: HashMap<&str, usize> = HashMap::new();
    let mut texts: Vec<&str> = Vec::new();
    // Each poll logs the same texts in the same order: the text that followed a text last
    // time is tried first (by pointer, texts being shared, see `DeviceState::add_msg`).
    let mut next: Vec<usize> = Vec::new();
    let mut log: Vec<u8> = Vec::with_capacity(msgs.len() * 6);
    let mut last = 0i64;
    let mut prev: Option<usize> = None;
    for m in msgs {
        let text: &str = &m.msg;
        let guess = prev.and_then(|p| next.get(p).copied());
        let found = match guess {
            Some(g) if texts.get(g).is_some_and(|t| std::ptr::eq(*t, text)) => Some(g),
            _ if texts.len() <= SCAN => texts
                .iter()
                .position(|t| std::ptr::eq(*t, text))
                .or_else(|| texts.iter().position(|t| *t == text)),
            _ => {
                if index.is_empty() {
                    index.extend(texts.iter().enumerate().map(|(i, t)| (*t, i)));
                }
                index.get(text).copied()
            }
        };
        let i = found.unwrap_or_else(|| {
            texts.push(text);
            next.push(usize::MAX);
            if !index.is_empty() {
                index.insert(text, texts.len() - 1);
            }
            texts.len() - 1
        });
        if let Some(p) = prev {
            next[p] = i;
        }
        prev = Some(i);
        if !log.is_empty() {
            log.push(b',');
        }
        // Differences wrap, and so does reading them back: exact for every i64.
        push_int(&mut log, m.time.wrapping_sub(last));
        log.push(b',');
        push_int(&mut log, i as i64);
        last = m.time;
    }
    let mut out: Vec<u8> = Vec::with_capacity(log.len() + 64 * texts.len() + 24);
    out.extend_from_slice(b"{\"texts\":[");
    for (n, text) in texts.iter().enumerate() {
        if n > 0 {
            out.push(b',');
        }
        push_json_str(&mut out, text);
    }
    out.push(b']');
    out.extend_from_slice(b",\"log\":[");
    out.extend_from_slice(&log);
    out.extend_from_slice(b"]}");
    // serde_json writes UTF-8 only.
    String::from_utf8(out).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// Append `text` as a JSON string: as it is between quotes when nothing in it needs an
/// escape (log texts are plain ASCII), else through serde_json.
fn push_json_str(out: &mut Vec<u8>, text: &str) {
    // Bytes a JSON string escapes: control characters, the quote and the backslash.
    const ESCAPED: [bool; 256] = {
        let mut t = [false; 256];
        let mut b = 0;
        while b < 0x20 {
            t[b] = true;
            b += 1;
        }
        t[b'"' as usize] = true;
        t[b'\\' as usize] = true;
        t
    };
    if !text.bytes().any(|b| ESCAPED[b as usize]) {
        out.reserve(text.len() + 2);
        out.push(b'"');
        out.extend_from_slice(text.as_bytes());
        out.push(b'"');
    } else {
        // Strings always serialize.
        let _ = serde_json::to_writer(&mut *out, text);
    }
}

/// Append `v` in decimal; the small numbers a message log is mostly made of without a call.
#[inline]
fn push_int(out: &mut Vec<u8>, v: i64) {
    match v {
        0..=9 => out.push(b'0' + v as u8),
        10..=99 => out.extend_from_slice(&[b'0' + (v / 10) as u8, b'0' + (v % 10) as u8]),
        _ => out.extend_from_slice(itoa::Buffer::new().format(v).as_bytes()),
    }
}

/// A JSON number as a time: numbers (fractions cut), numeric text; anything else is `None`.
fn json_time(v: &serde_json::Value) -> Option<i64> {
    match v {
        serde_json::Value::Number(n) => n
            .as_i64()
            .or_else(|| n.as_f64().filter(|f| f.is_finite()).map(|f| f as i64)),
        serde_json::Value::String(s) => s.trim().parse().ok(),
        _ => None,
    }
}

/// A JSON value as message text: strings as they are, `null` empty, anything else as JSON.
fn json_text(v: &serde_json::Value) -> String {
    match v {
        serde_json::Value::String(s) => s.clone(),
        serde_json::Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The message log from its column, leniently: the compact form of [`messages_to_json`] or
/// the `[time, text]` pairs written before it; times may be numbers or numeric text, texts
/// anything printable; entries of another shape are skipped with a warning, and a value that
/// is not JSON reads as an empty log.
fn messages_from_json(text: &str) -> Vec<Message> {
    if text.is_empty() || text == "[]" {
        return Vec::new();
    }
    match serde_json::from_str::<serde_json::Value>(text) {
        Ok(serde_json::Value::Array(items)) => messages_from_pairs(items),
        Ok(serde_json::Value::Object(o)) => messages_from_compact(&o),
        _ => {
            tracing::warn!("ignoring a device message log that is not JSON");
            Vec::new()
        }
    }
}

fn messages_from_compact(o: &serde_json::Map<String, serde_json::Value>) -> Vec<Message> {
    let (Some(serde_json::Value::Array(texts)), Some(serde_json::Value::Array(log))) =
        (o.get("texts"), o.get("log"))
    else {
        tracing::warn!("ignoring a device message log without texts and log");
        return Vec::new();
    };
    let texts: Vec<std::sync::Arc<str>> = texts.iter().map(|t| json_text(t).into()).collect();
    let mut out = Vec::with_capacity(log.len() / 2);
    let mut time = 0i64;
    for pair in log.chunks(2) {
        let [d, i] = pair else {
            tracing::warn!("ignoring a device message log entry without its text");
            break;
        };
        time = time.wrapping_add(json_time(d).unwrap_or(0));
        match i.as_u64().and_then(|i| texts.get(usize::try_from(i).ok()?)) {
            Some(text) => out.push(Message {
                time,
                msg: text.clone(),
            }),
            None => tracing::warn!("ignoring a device message whose text is missing"),
        }
    }
    out
}

fn messages_from_pairs(items: Vec<serde_json::Value>) -> Vec<Message> {
    let mut out = Vec::with_capacity(items.len());
    for item in items {
        let pair = match item {
            serde_json::Value::Array(p) if p.len() == 2 => p,
            _ => {
                tracing::warn!("ignoring a device message that is not a [time, text] pair");
                continue;
            }
        };
        out.push(Message {
            time: json_time(&pair[0]).unwrap_or(0),
            msg: json_text(&pair[1]).into(),
        });
    }
    out
}

/// Insert `rows` with `cols` binds each, as few multi-row statements as the bind limit allows.
async fn insert_rows<'a, T>(
    tx: &mut AnyConnection,
    mark: char,
    head: &str,
    cols: usize,
    rows: &'a [T],
    bind: impl Fn(&mut Binds<'a>, &'a T),
) -> std::result::Result<(), sqlx::Error> {
    let slices: Vec<&'a [T]> = if mark == '?' {
        // SQLite: anonymous parameters, in the few statement sizes of [`BOUND_ROWS`] (a
        // statement for every length filled the connections' statement caches and evicted
        // the device statements: the storm's p99 tripled).
        bound_chunks(rows).map(|(_, slice)| slice).collect()
    } else {
        rows.chunks(MAX_BINDS / cols).collect()
    };
    for slice in slices {
        let sql = if mark == '?' {
            format!("{head}{}", anonymous_values(cols, slice.len()))
        } else {
            format!("{head}{}", values_sql(mark, cols, slice.len()))
        };
        let mut b = Binds::new(slice.len() * cols);
        for row in slice {
            bind(&mut b, row);
        }
        b.query(&sql)?.execute(&mut *tx).await?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn log(items: &[(i64, &str)]) -> Vec<Message> {
        items
            .iter()
            .map(|(t, m)| Message {
                time: *t,
                msg: (*m).into(),
            })
            .collect()
    }

    #[test]
    fn message_log_round_trips_compactly() {
        let mut poll = Vec::new();
        for t in 0..70 {
            let at = 1_796_597_080 + t / 3;
            poll.push((at, ""));
            poll.push((
                at,
                "phase: update, nextphase: , environment: default, type: IP232",
            ));
            poll.push((at, "certificates: none"));
        }
        let cases = [
            log(&[]),
            log(&[(5, "one")]),
            log(&poll),
            log(&[
                (i64::MAX, "max"),
                (i64::MIN, "min \0 nul"),
                (-1, "quote \" back \\ ü €"),
                (i64::MAX, "max"),
                (0, ""),
            ]),
        ];
        // many distinct texts (found by hashing past the first few), repeated out of order
        let texts: Vec<String> = (0..40).map(|i| format!("text {i}")).collect();
        let many: Vec<(i64, &str)> = (0..200)
            .map(|i| (i as i64 * 7 % 13, texts[(i * 17) % 40].as_str()))
            .collect();
        // texts shared as `add_msg` shares them, in an order that mostly repeats: the guess
        // of the next text is right, wrong, and points past a text first seen last
        let mut shared = DeviceState::new("x", 0);
        for t in 0..120i64 {
            let at = 1_796_597_080 + t * 37;
            shared.add_msg("", at);
            shared.add_msg("phase: update", at);
            if t % 7 == 3 {
                shared.add_msg(&format!("new text {t}"), at + 100);
            }
            shared.add_msg(
                if t % 5 == 0 {
                    "certificates: none"
                } else {
                    "ok"
                },
                at,
            );
        }
        let cases = cases.into_iter().chain([log(&many), shared.msgs]);
        for msgs in cases {
            let text = messages_to_json(&msgs);
            assert_eq!(messages_from_json(&text), msgs, "{text}");
        }
        let full = messages_to_json(&log(&poll));
        let pairs =
            serde_json::to_string(&poll.iter().map(|(t, m)| (*t, *m)).collect::<Vec<_>>()).unwrap();
        assert!(
            full.len() * 5 < pairs.len(),
            "{} vs {}",
            full.len(),
            pairs.len()
        );
    }

    #[test]
    fn last_per_key_keeps_the_last_of_each_key_in_place() {
        // short lists are compared pairwise, long ones hashed: both give the same answer
        for n in [0usize, 1, 5, 32, 33, 200] {
            let list: Vec<(String, usize)> = (0..n).map(|i| (format!("k{}", i % 7), i)).collect();
            let got: Vec<(i64, usize)> = last_per_key(&list, |e| e.0.as_str())
                .into_iter()
                .map(|(pos, e)| (pos, e.1))
                .collect();
            let want: Vec<(i64, usize)> = (0..n)
                .filter(|&i| !(i + 1..n).any(|j| j % 7 == i % 7))
                .map(|i| (i as i64, i))
                .collect();
            assert_eq!(got, want, "{n} entries");
        }
    }

    #[test]
    fn log_texts_are_written_as_serde_json_writes_them() {
        for text in [
            "",
            "plain ascii: phase update, 12s",
            "quote \" back \\ slash",
            "ü € \u{1F600}",
            "tab\tnewline\ncr\r nul\0 del\u{7f} bell\u{7}",
        ] {
            let mut out = Vec::new();
            push_json_str(&mut out, text);
            assert_eq!(
                String::from_utf8(out).unwrap(),
                serde_json::to_string(text).unwrap()
            );
        }
    }

    #[test]
    fn message_logs_of_either_form_are_read_leniently() {
        // the pairs written before the compact form
        assert_eq!(
            messages_from_json(r#"[[10, "a"], ["11", null], "junk", [12]]"#),
            log(&[(10, "a"), (11, "")])
        );
        // compact: a missing text or a dangling time is skipped, the rest kept
        assert_eq!(
            messages_from_json(r#"{"texts": ["a", 7], "log": [10, 0, 1, 5, 1, 1, 3]}"#),
            log(&[(10, "a"), (12, "7")])
        );
        assert_eq!(messages_from_json(r#"{"texts": ["a"]}"#), log(&[]));
        assert_eq!(messages_from_json("not json"), log(&[]));
        assert_eq!(messages_from_json(""), log(&[]));
    }
}
