//! Write-behind of device states: [`Store::save`] queues, a background task writes.
//!
//! Every poll changes a device's state, and writing each change in its own transaction made
//! SQLite the bottleneck of the request path. With write-behind on, a save replaces the
//! device's queued state in memory and returns; every `window` the flusher writes all queued
//! states in one transaction per chunk. Reads see queued states first, so the process observes
//! its own writes at once. Operations that read or change many rows (list, delete, touch,
//! expire) flush first and hold the flush lock, so they never race a batch.
//!
//! **Forgotten devices.** A process without write-behind that forgets a device (`devices
//! forget` next to a running server) leaves a `forgotten:<sn>` mark in `meta` in the same
//! transaction; the server's next batch, seeing the change counter moved, takes the marks
//! inside its own transaction and drops the queued states of those devices instead of
//! writing them back (they come from polls before the forget).
//!
//! A crash (kill -9, power loss) loses at most the states queued since the last flush; each
//! batch is one transaction, so the database is always consistent. When the queue holds more
//! than [`MAX_QUEUED`] devices a save flushes before returning (back-pressure), and a flush
//! that fails (database locked or gone) keeps the states queued for the next try.
//!
//! **Clean states.** A written state stays in memory as a *clean* copy (up to
//! [`StoreOptions::state_cache_bytes`](crate::StoreOptions::state_cache_bytes), estimated;
//! beyond that, arbitrary clean copies are dropped), so the next poll of a device reads no row at all. The
//! copies are only as good as the knowledge that nobody else wrote the devices. A process
//! without write-behind (the CLI: `devices forget`, `notify`, imports) writes the
//! `<database>-changes` file after each commit of device state, incrementing the counter
//! both map into memory, and every load compares that counter first (`signal.rs`; one
//! memory load): a change committed before the load began drops every clean copy, exactly. Without such a watch no copies are kept. As a second
//! line, every write of device state by any process increments the `devices_generation`
//! counter in `meta` in the same transaction (see [`Store::bump_generation`]); the flusher
//! compares it each window with the value this process last produced and drops the copies
//! on any other increment (a second server on the same file, a write whose signal failed).

use foldhash::{HashMap, HashMapExt};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use autoprov_core::state::DeviceState;

use crate::{Result, Store};

/// Queue length at which a save waits for a flush.
pub(crate) const MAX_QUEUED: usize = 50_000;
/// Devices written per transaction.
const CHUNK: usize = 2_000;

/// The queue shared by the store handles and the flusher task.
#[derive(Debug)]
pub(crate) struct WriteBehind {
    queued: Mutex<Queues>,
    /// Clean copies are kept up to about this many bytes.
    clean_cap: usize,
    /// Other processes' device writes (see `signal.rs`); clean copies are kept only with it.
    watch: Option<crate::signal::Watch>,
    /// The `devices_generation` this process last produced or saw; `None` before the first
    /// look (nothing is trusted until then).
    known_generation: Mutex<Option<i64>>,
    next_gen: AtomicU64,
    /// How often another process's device write was noticed (see
    /// [`Store::foreign_device_writes`]).
    foreign: AtomicU64,
    /// Held while a batch is written, and by operations that must not race one.
    pub(crate) flush_lock: Arc<tokio::sync::Mutex<()>>,
    /// Devices with notes another process left (`device_notes`), with the newest note's id:
    /// their loads merge the notes in. Read again from the database when `notes_check` is
    /// set (at start, and whenever another process's write is noticed).
    pub(crate) notes: Mutex<HashMap<String, i64>>,
    pub(crate) notes_check: std::sync::atomic::AtomicBool,
    /// A reading of [`Present`] is under way, and when the last one began.
    present_reading: std::sync::atomic::AtomicBool,
    present_began: Mutex<Option<std::time::Instant>>,
    stop: tokio::sync::Notify,
    /// Batches that wrote states, states written, failed batches, microseconds spent
    /// writing (see [`WriteBehindStats`]).
    batches: [AtomicU64; 4],
}

/// What the write-behind did so far (for an operator's metrics).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct WriteBehindStats {
    /// Batches that wrote at least one state.
    pub batches: u64,
    /// States written.
    pub written: u64,
    /// Batches that failed (their states stay queued and are retried).
    pub failures: u64,
    /// Time spent writing batches.
    pub busy: Duration,
    /// Loads answered from memory (a queued state or a clean copy).
    pub hits: u64,
    /// Loads of devices known to be new (answered without a statement).
    pub absent: u64,
    /// Loads left to the database.
    pub misses: u64,
}

/// How long after a reading of [`Present`] began another may begin (another process that
/// writes devices in a loop would otherwise have the whole table read after each write).
const PRESENT_RETRY: Duration = Duration::from_secs(10);

/// States waiting to be written, and clean copies of states written.
#[derive(Debug, Default)]
pub(crate) struct Queues {
    dirty: HashMap<String, Queued>,
    /// Clean copies with their estimated size.
    clean: HashMap<String, (Arc<DeviceState>, usize)>,
    /// Sum of the sizes in `clean`.
    clean_bytes: usize,
    /// Fingerprints ([`Prints`]) of what the database holds for a device, as this process
    /// last wrote it. Trusted exactly like the clean copies (dropped with them), and only for
    /// a transaction that finds the change counter unmoved: a batch then skips the child rows
    /// of devices whose children did not change, and writes only `seen` and the message log
    /// of devices whose other columns did not change either (a steady poll).
    children: HashMap<String, Prints>,
    /// Firmware version reports waiting to be written, in arrival order.
    reports: Vec<crate::FirmwareReport>,
    /// Which serials the database holds (see [`Present`]).
    present: Present,
    /// The change signal's value when last compared (see [`WriteBehind::notice_others`]).
    signal_seen: u64,
    /// Loads answered from memory, as absent, and left to the database (for metrics).
    loads: [u64; 3],
}

/// Fingerprints of the serials the database holds, so that a load of a device never seen
/// (first contact, the boot storm) answers "unknown" without a statement. Trusted exactly
/// like the clean copies: read whole from the database once the change counter is known
/// (`Store::read_present`), extended by every state this process saves, and distrusted
/// whenever another process's device write is noticed, until read again. A serial in the
/// set may be gone (deleted, expired, a hash shared with another serial): the load then
/// asks the database, as it does for every serial while the set is not trusted.
#[derive(Debug, Default)]
struct Present {
    hashes: foldhash::HashSet<u64>,
    trusted: bool,
    /// Moves whenever the set is distrusted: a reading that began before is not installed.
    epoch: u64,
}

/// The fingerprint of a serial in [`Present`], as the database holds it (NUL characters are
/// stored as U+FFFD, see `decode::nf`).
fn sn_hash(sn: &str) -> u64 {
    let hash =
        |s: &str| std::hash::BuildHasher::hash_one(&foldhash::quality::FixedState::default(), s);
    if sn.contains('\0') {
        hash(&crate::decode::nf(sn))
    } else {
        hash(sn)
    }
}

impl Queues {
    fn remove_clean(&mut self, sn: &str) -> Option<Arc<DeviceState>> {
        let (state, size) = self.clean.remove(sn)?;
        self.clean_bytes -= size;
        Some(state)
    }

    /// Drop what this process knows of the rows: somebody else may have written devices.
    fn clear_clean(&mut self) {
        self.trim_clean();
        self.present.trusted = false;
        self.present.epoch += 1;
        for d in self.dirty.values_mut() {
            d.fresh = false;
        }
    }

    /// Drop the clean copies and fingerprints (memory back; the database has them).
    fn trim_clean(&mut self) {
        self.clean = HashMap::new();
        self.clean_bytes = 0;
        self.children = HashMap::new();
    }

    fn saved(&mut self, sn: &str) {
        self.present.hashes.insert(sn_hash(sn));
    }
}

/// Fingerprints of a state as stored: its child rows, and its device row but for `seen` and
/// the message log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Prints {
    children: u64,
    columns: u64,
}

impl Prints {
    fn of(s: &DeviceState) -> Prints {
        Prints {
            children: children_print(s),
            columns: crate::devices::columns_print(s),
        }
    }
}

/// A fingerprint of a state's child rows, in the order they are stored.
pub(crate) fn children_print(s: &DeviceState) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::BuildHasher::build_hasher(&foldhash::quality::FixedState::default());
    s.device.vars.len().hash(&mut h);
    for (name, time) in &s.device.vars {
        name.hash(&mut h);
        time.hash(&mut h);
    }
    s.scripts.len().hash(&mut h);
    for x in &s.scripts {
        x.filename.hash(&mut h);
        x.delivered.hash(&mut h);
        x.version.hash(&mut h);
    }
    s.queries.len().hash(&mut h);
    for q in &s.queries {
        q.id.hash(&mut h);
        q.seen.hash(&mut h);
        q.body.hash(&mut h);
    }
    h.finish()
}

/// Estimated heap bytes of a state (strings, lists, map entry), for the clean-copy budget.
fn weight(s: &DeviceState) -> usize {
    let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    let d = &s.device;
    256 + 2 * s.sn.len()
        + opt(&s.phase)
        + opt(&s.nextphase)
        + opt(&s.requested)
        + opt(&d.device_type)
        + opt(&d.classes)
        + opt(&d.ip)
        + d.vars.iter().map(|(n, _)| 40 + n.len()).sum::<usize>()
        + messages_weight(&s.msgs)
        + s.scripts
            .iter()
            .map(|x| 48 + x.filename.len())
            .sum::<usize>()
        + s.queries.len() * 96
        + 128
}

/// The memory a message log takes: an entry per message, each distinct text once (texts are
/// shared between the messages that repeat them, see `DeviceState::add_msg`; a log holds a
/// handful). Beyond [`DISTINCT`] distinct texts the rest count as unshared.
fn messages_weight(msgs: &[autoprov_core::state::Message]) -> usize {
    const DISTINCT: usize = 32;
    let mut seen: Vec<*const u8> = Vec::new();
    let mut bytes = std::mem::size_of_val(msgs);
    for m in msgs {
        let p = m.msg.as_ptr();
        if seen.len() >= DISTINCT {
            bytes += 16 + m.msg.len();
        } else if !seen.contains(&p) {
            seen.push(p);
            bytes += 16 + m.msg.len();
        }
    }
    bytes
}

/// What [`WriteBehind::take`] knows of a device.
pub(crate) enum Taken {
    /// Its queued state or clean copy.
    Held(Arc<DeviceState>),
    /// The database holds no such device.
    Absent,
    /// Ask the database.
    Ask,
}

#[derive(Debug, Clone)]
struct Queued {
    generation: u64,
    state: Arc<DeviceState>,
    /// The database holds this state but for `seen` (see [`WriteBehind::put_seen`]): the
    /// batch updates that column only.
    seen_only: bool,
    /// The database held no row of this device when it was queued (the serial set said so,
    /// trusted), and nobody else has written devices since: its child rows are inserted
    /// without first deleting any. Cleared whenever another writer is noticed.
    fresh: bool,
}

/// The store handles' share of the queue: when the last [`Store`] clone goes, the flusher
/// writes what is queued and ends (it holds the queue, not this handle).
#[derive(Debug)]
pub(crate) struct Handle(Arc<WriteBehind>);

impl Drop for Handle {
    fn drop(&mut self) {
        self.0.stop();
    }
}

impl std::ops::Deref for Handle {
    type Target = WriteBehind;
    fn deref(&self) -> &WriteBehind {
        &self.0
    }
}

impl WriteBehind {
    fn new(clean_cap: usize, watch: Option<crate::signal::Watch>) -> WriteBehind {
        let queues = Queues {
            signal_seen: watch.as_ref().map_or(0, |w| w.value()),
            ..Queues::default()
        };
        WriteBehind {
            queued: Mutex::new(queues),
            clean_cap,
            watch,
            known_generation: Mutex::new(None),
            notes: Mutex::new(HashMap::new()),
            notes_check: std::sync::atomic::AtomicBool::new(true),
            present_reading: std::sync::atomic::AtomicBool::new(false),
            present_began: Mutex::new(None),
            next_gen: AtomicU64::new(1),
            foreign: AtomicU64::new(0),
            flush_lock: Arc::new(tokio::sync::Mutex::new(())),
            stop: tokio::sync::Notify::new(),
            batches: Default::default(),
        }
    }

    /// Start the flusher for `store` (a handle without write-behind of its own).
    pub(crate) fn start(
        store: &Store,
        window: Duration,
        clean_cap: usize,
        watch: Option<crate::signal::Watch>,
    ) -> Arc<Handle> {
        let wb = Arc::new(WriteBehind::new(clean_cap, watch));
        let task_wb = wb.clone();
        let writer = store.clone();
        let window = window.max(Duration::from_millis(1));
        tokio::spawn(async move {
            let mut failing = false;
            let mut busy = Duration::ZERO;
            loop {
                // A batch that took longer than the window is followed at once by the next:
                // under load the queue never waits longer than one batch.
                let stopping = tokio::select! {
                    _ = tokio::time::sleep(window.saturating_sub(busy)) => false,
                    _ = task_wb.stop.notified() => true,
                };
                let started = std::time::Instant::now();
                let flushed = writer.flush_with(&task_wb).await;
                if let Err(e) = writer.check_generation(&task_wb).await {
                    tracing::debug!(error = %e, "cannot read the device change counter");
                    task_wb.drop_clean();
                }
                busy = started.elapsed();
                if task_wb.present_wanted() {
                    let (reader, wb) = (writer.clone(), task_wb.clone());
                    tokio::spawn(async move {
                        if let Err(e) = reader.read_present(&wb).await {
                            tracing::debug!(error = %e, "cannot read the device serials");
                        }
                        wb.present_reading.store(false, Ordering::Release);
                    });
                }
                match flushed {
                    Ok(_) if failing => {
                        tracing::info!(database = %writer.path(), "queued device states written again");
                        failing = false;
                    }
                    Ok(_) => {}
                    Err(e) => {
                        if !failing {
                            tracing::error!(error = %e, "cannot write queued device states; retrying");
                        }
                        failing = true;
                    }
                }
                if stopping || writer.pool().is_closed() {
                    break;
                }
            }
        });
        Arc::new(Handle(wb))
    }

    pub(crate) fn stop(&self) {
        self.stop.notify_one();
    }

    /// Whether a reading of [`Present`] should begin now (and it is marked as begun): the
    /// set is kept only with clean copies, and read only once the change counter is known
    /// (the first look distrusts everything).
    fn present_wanted(&self) -> bool {
        if self.clean_cap == 0 || self.lock().present.trusted {
            return false;
        }
        if self
            .known_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .is_none()
        {
            return false;
        }
        let mut began = self.present_began.lock().unwrap_or_else(|p| p.into_inner());
        if began.is_some_and(|t| t.elapsed() < PRESENT_RETRY)
            || self.present_reading.swap(true, Ordering::AcqRel)
        {
            return false;
        }
        *began = Some(std::time::Instant::now());
        true
    }

    /// The queued or clean state of `sn`, if any. A clean copy is handed over, not copied
    /// (the caller is about to change it and save it again; the database has it meanwhile).
    pub(crate) fn take(&self, sn: &str) -> Taken {
        let mut q = self.lock();
        self.notice_others(&mut q);
        if let Some(d) = q.dirty.get(sn) {
            let state = d.state.clone();
            q.loads[0] += 1;
            return Taken::Held(state);
        }
        if let Some(state) = q.remove_clean(sn) {
            q.loads[0] += 1;
            return Taken::Held(state);
        }
        if q.present.trusted && !q.present.hashes.contains(&sn_hash(sn)) {
            q.loads[1] += 1;
            return Taken::Absent;
        }
        q.loads[2] += 1;
        Taken::Ask
    }

    /// Whether another process wrote devices since the last look (see `signal.rs`): the
    /// signal's value compared, under the queue's lock, with the one the queue last saw, so
    /// that whichever caller notices first drops the copies before any other uses them.
    /// One memory load, no system call.
    fn notice_others(&self, q: &mut Queues) {
        let Some(w) = &self.watch else {
            return;
        };
        let now = w.value();
        if now != q.signal_seen {
            q.signal_seen = now;
            self.after_others_wrote(q);
        }
    }

    /// [`Self::notice_others`] after draining the signal's inotify watch (a replaced
    /// signal file, a CLI of an older version): once per write-behind window.
    pub(crate) fn sweep_others(&self) {
        if let Some(w) = &self.watch {
            w.sweep();
        }
        self.notice_others(&mut self.lock());
    }

    /// Another process wrote devices: the copies may be stale, and it may have left notes
    /// (see `Store::append_note`).
    fn after_others_wrote(&self, q: &mut Queues) {
        q.clear_clean();
        self.notes_check.store(true, Ordering::Release);
        self.foreign.fetch_add(1, Ordering::AcqRel);
    }

    /// Whether notes may wait for `sn` (see [`Self::notes`]).
    pub(crate) fn notes_pending(&self, sn: &str) -> bool {
        self.notes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .contains_key(sn)
    }

    /// A state containing `sn`'s notes up to `upto` was written (and those notes deleted).
    pub(crate) fn notes_written(&self, sn: &str, upto: i64) {
        let mut n = self.notes.lock().unwrap_or_else(|p| p.into_inner());
        if n.get(sn).is_some_and(|newest| *newest <= upto) {
            n.remove(sn);
        }
    }

    /// Queue `state`, replacing an older queued state of the same device. Returns the queue
    /// length. (Clean copies of written states stay until the next load takes them.)
    pub(crate) fn put(&self, state: DeviceState) -> usize {
        let generation = self.next_gen.fetch_add(1, Ordering::Relaxed);
        let hash = sn_hash(&state.sn);
        let mut q = self.lock();
        q.remove_clean(&state.sn);
        let fresh = match q.dirty.get(&state.sn) {
            Some(d) => d.fresh,
            None => q.present.trusted && !q.present.hashes.contains(&hash),
        };
        q.present.hashes.insert(hash);
        q.dirty.insert(
            state.sn.clone(),
            Queued {
                generation,
                state: Arc::new(state),
                seen_only: false,
                fresh,
            },
        );
        q.dirty.len()
    }

    /// Queue `state`, which differs from the state its request loaded in `seen` only. When
    /// nothing is queued for the device, or only such a poll, what it loaded is what the
    /// database holds but for `seen` (the request held the device's lock from its load to
    /// here), so the batch only updates `seen`; a state queued whole stays whole. Returns the
    /// queue length.
    pub(crate) fn put_seen(&self, state: DeviceState) -> usize {
        let generation = self.next_gen.fetch_add(1, Ordering::Relaxed);
        let mut q = self.lock();
        q.remove_clean(&state.sn);
        q.saved(&state.sn);
        let seen_only = q.dirty.get(&state.sn).is_none_or(|d| d.seen_only);
        let fresh = q.dirty.get(&state.sn).is_some_and(|d| d.fresh);
        q.dirty.insert(
            state.sn.clone(),
            Queued {
                generation,
                state: Arc::new(state),
                seen_only,
                fresh,
            },
        );
        q.dirty.len()
    }

    /// Queue a firmware version report. Returns the number queued.
    pub(crate) fn put_report(&self, report: crate::FirmwareReport) -> usize {
        let mut q = self.lock();
        q.reports.push(report);
        q.reports.len()
    }

    /// Whether firmware version reports wait to be written.
    pub(crate) fn reports_pending(&self) -> bool {
        !self.lock().reports.is_empty()
    }

    /// Forget the queued state and clean copy of `sn` (the device is being deleted or
    /// changed directly in the database).
    pub(crate) fn forget(&self, sn: &str) {
        let mut q = self.lock();
        q.dirty.remove(sn);
        q.remove_clean(sn);
        q.children.remove(sn);
    }

    /// Forget queued states and clean copies last seen before `older_than` (they are being
    /// expired).
    pub(crate) fn forget_older(&self, older_than: i64) {
        let mut q = self.lock();
        q.dirty.retain(|_, d| d.state.seen >= older_than);
        q.clean.retain(|_, (c, _)| c.seen >= older_than);
        q.clean_bytes = q.clean.values().map(|(_, w)| w).sum();
        q.children = HashMap::new();
    }

    /// Forget the clean copy of `sn` only (its row was changed directly; a queued state is
    /// newer and stays).
    pub(crate) fn forget_clean(&self, sn: &str) {
        let mut q = self.lock();
        q.remove_clean(sn);
        // What this process last wrote is no longer what the database holds.
        q.children.remove(sn);
    }

    /// Drop every clean copy (someone else may have written devices).
    pub(crate) fn drop_clean(&self) {
        self.notes_check.store(true, Ordering::Release);
        self.lock().clear_clean();
    }

    /// `sn` is being written directly (an import): the database will hold it.
    pub(crate) fn written_directly(&self, sn: &str) {
        self.forget_clean(sn);
        let mut q = self.lock();
        q.saved(sn);
        if let Some(d) = q.dirty.get_mut(sn) {
            d.fresh = false;
        }
    }

    /// Drop the clean copies to give memory back (the database has them; nothing is
    /// distrusted).
    pub(crate) fn trim(&self) {
        self.lock().trim_clean();
    }

    /// How many clean copies are kept, and their estimated bytes.
    pub(crate) fn clean_len(&self) -> (usize, usize) {
        let q = self.lock();
        (q.clean.len(), q.clean_bytes)
    }

    /// Take note of the counter value `now` that this process's write produced from
    /// `before`; a counter that moved otherwise means another writer: drop the clean copies.
    pub(crate) fn note_generation(&self, before: Option<i64>, now: i64) {
        let mut known = self
            .known_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *known == Some(now) {
            // Noted already (a flush through a handle with a queue notes its batch's move
            // in `write_states` and again after it): only this write could move it there.
            return;
        }
        if known.is_none() || *known != before {
            if known.is_some() {
                self.foreign.fetch_add(1, Ordering::AcqRel);
            }
            self.drop_clean();
        }
        *known = Some(now);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Queues> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store {
    /// How many device states wait in the write-behind queue (0 without write-behind).
    pub fn queued_states(&self) -> usize {
        self.wb.as_ref().map_or(0, |wb| wb.lock().dirty.len())
    }

    /// How many written device states are kept in memory as clean copies (0 without
    /// write-behind).
    pub fn clean_states(&self) -> usize {
        self.wb.as_ref().map_or(0, |wb| wb.clean_len().0)
    }

    /// Drop every clean copy (memory back while the server is quiet; the database has them).
    pub fn drop_clean_states(&self) {
        if let Some(wb) = &self.wb {
            wb.trim();
        }
    }

    /// A counter of the device writes of other processes this one has noticed (the change
    /// signal, or the `devices_generation` counter moved by someone else; checked here and
    /// every write-behind window). It moves at least once after every such write, so a
    /// reader of all devices that saw the same value before need not read them again.
    /// `None` without write-behind: nothing is noticed, anything may have changed.
    pub fn foreign_device_writes(&self) -> Option<u64> {
        let wb = self.wb.as_ref()?;
        wb.sweep_others();
        Some(wb.foreign.load(Ordering::Acquire))
    }

    /// Whether this process knows every serial the database holds, so that the load of a
    /// device never seen asks the database nothing (see [`Present`]; `false` without
    /// write-behind, before the first reading, and after another process's device write
    /// until the next).
    pub fn serials_known(&self) -> bool {
        self.wb.as_ref().is_some_and(|wb| wb.lock().present.trusted)
    }

    /// Estimated bytes of the clean copies (0 without write-behind).
    pub fn clean_state_bytes(&self) -> usize {
        self.wb.as_ref().map_or(0, |wb| wb.clean_len().1)
    }

    /// Write every queued device state now. No-op without write-behind. Returns how many
    /// states were written.
    pub async fn flush(&self) -> Result<usize> {
        match &self.wb {
            Some(wb) => self.flush_with(wb).await,
            None => Ok(0),
        }
    }

    /// Flush and keep the flush lock, for operations that must not race a batch.
    pub(crate) async fn flushed(&self) -> Result<Option<tokio::sync::OwnedMutexGuard<()>>> {
        let Some(wb) = &self.wb else {
            return Ok(None);
        };
        let guard = wb.flush_lock.clone().lock_owned().await;
        self.write_queued(wb).await?;
        Ok(Some(guard))
    }

    pub(crate) async fn flush_with(&self, wb: &WriteBehind) -> Result<usize> {
        let _guard = wb.flush_lock.lock().await;
        let started = std::time::Instant::now();
        let done = self.write_queued(wb).await;
        let counted = match &done {
            Ok(0) => None,
            Ok(n) => Some((0, *n as u64)),
            Err(_) => Some((2, 1)),
        };
        if let Some((i, n)) = counted {
            wb.batches[i].fetch_add(1, Ordering::Relaxed);
            if i == 0 {
                wb.batches[1].fetch_add(n, Ordering::Relaxed);
            }
            let micros = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
            wb.batches[3].fetch_add(micros, Ordering::Relaxed);
        }
        done
    }

    /// What the write-behind did so far; `None` without write-behind.
    pub fn write_behind_stats(&self) -> Option<WriteBehindStats> {
        let wb = self.wb.as_ref()?;
        let load = |i: usize| wb.batches[i].load(Ordering::Relaxed);
        let loads = wb.lock().loads;
        Some(WriteBehindStats {
            batches: load(0),
            written: load(1),
            failures: load(2),
            busy: Duration::from_micros(load(3)),
            hits: loads[0],
            absent: loads[1],
            misses: loads[2],
        })
    }

    /// Write the queue in chunks; the caller holds the flush lock. States saved again while a
    /// chunk was written stay queued (their generation changed).
    async fn write_queued(&self, wb: &WriteBehind) -> Result<usize> {
        // Another process wrote devices: what this process knows of the rows is void.
        wb.sweep_others();
        // Request handlers wait for this lock: take copies only, look things up later.
        let (batch, prints): (Vec<(String, Queued)>, Vec<Option<Prints>>) = {
            let q = wb.lock();
            q.dirty
                .iter()
                .map(|(k, d)| ((k.clone(), d.clone()), q.children.get(k).copied()))
                .unzip()
        };
        // What the database holds (as far as this process knows), and what each queued
        // state would make it hold.
        let stored: HashMap<&str, Prints> = batch
            .iter()
            .zip(&prints)
            .filter_map(|((k, _), p)| p.map(|p| (k.as_str(), p)))
            .collect();
        let fresh: HashMap<&str, Prints> = if wb.clean_cap > 0 {
            batch
                .iter()
                .filter(|(_, q)| !q.seen_only)
                .map(|(k, q)| (k.as_str(), Prints::of(&q.state)))
                .collect()
        } else {
            HashMap::new()
        };
        let new_devices: foldhash::HashSet<&str> = batch
            .iter()
            .filter(|(_, q)| q.fresh)
            .map(|(k, _)| k.as_str())
            .collect();
        let children_of = |s: &DeviceState| {
            let sn = s.sn.as_str();
            let same = stored
                .get(sn)
                .is_some_and(|p| fresh.get(sn).is_some_and(|f| f.children == p.children));
            if same {
                crate::devices::StoredChildren::Same
            } else if new_devices.contains(sn) {
                crate::devices::StoredChildren::None
            } else {
                crate::devices::StoredChildren::Unknown
            }
        };
        // The device row differs in `seen` and the message log at most.
        let log_only = |sn: &str| {
            stored
                .get(sn)
                .is_some_and(|p| fresh.get(sn).is_some_and(|f| f == p))
        };
        let reports = std::mem::take(&mut wb.lock().reports);
        if !reports.is_empty() {
            let wrote = async {
                let mut tx = self.begin_write().await?;
                self.apply_reports(&mut tx, &reports).await?;
                tx.commit().await.map_err(|e| self.err(e))
            }
            .await;
            if let Err(e) = wrote {
                // Kept, ahead of the reports that arrived meanwhile, for the next try.
                let mut q = wb.lock();
                let newer = std::mem::replace(&mut q.reports, reports);
                q.reports.extend(newer);
                return Err(e);
            }
        }
        let mut written = 0;
        let mut forgotten: Vec<String> = Vec::new();
        // The fingerprints were taken before the first chunk: once a chunk finds that
        // somebody else wrote devices, they may describe rows that are gone.
        let mut snapshot_good = true;
        for chunk in batch.chunks(CHUNK) {
            let live = chunk.iter().filter(|(sn, _)| !forgotten.contains(sn));
            let trusted = wb.clean_cap > 0 && snapshot_good;
            let (logs, states): (Vec<&DeviceState>, Vec<&DeviceState>) = live
                .clone()
                .filter(|(_, q)| !q.seen_only)
                .map(|(_, q)| &*q.state)
                .partition(|s| trusted && log_only(&s.sn));
            let touches: Vec<(&str, i64)> = live
                .filter(|(_, q)| q.seen_only)
                .map(|(sn, q)| (sn.as_str(), q.state.seen))
                .collect();
            let test: &crate::devices::ChildrenStored<'_> = &children_of;
            // Unchanged children are skipped only while the counter is where this process
            // left it (`write_states` checks inside its transaction).
            let known = *wb
                .known_generation
                .lock()
                .unwrap_or_else(|p| p.into_inner());
            let queued = crate::devices::QueuedWrite {
                known,
                children_stored: trusted.then_some(test),
                touches: &touches,
                logs: &logs,
            };
            let (generation, gone) = self.write_states(&states, Some(queued)).await?;
            if known.zip(generation).is_none_or(|(k, g)| g - 1 != k) {
                snapshot_good = false;
            }
            // The flusher's handle has no queue of its own: note its counter move here.
            if let Some(g) = generation {
                wb.note_generation(Some(g - 1), g);
            }
            if !gone.is_empty() {
                let mut q = wb.lock();
                for sn in &gone {
                    tracing::info!(device = %sn, "forgotten by another process: queued state dropped");
                    q.dirty.remove(sn);
                    q.remove_clean(sn);
                    q.children.remove(sn);
                }
                forgotten.extend(gone);
            }
            written += chunk.len();
            let done: Vec<(&String, &Queued)> = chunk
                .iter()
                .filter(|(sn, _)| !forgotten.contains(sn))
                .map(|(sn, d)| (sn, d))
                .collect();
            for (sn, d) in &done {
                if let Some(upto) = d.state.notes_upto {
                    wb.notes_written(sn, upto);
                }
            }
            // Fingerprints and weights before taking the lock: requests wait for it. A
            // touched state is what the database holds but for `seen`: prints known for it
            // stay as they are.
            let sums: Vec<(Option<Prints>, usize)> = if wb.clean_cap > 0 {
                done.iter()
                    .map(|(sn, d)| {
                        let print = match fresh.get(sn.as_str()) {
                            Some(p) => Some(*p),
                            None if stored.contains_key(sn.as_str()) => None,
                            None => Some(Prints::of(&d.state)),
                        };
                        (print, weight(&d.state))
                    })
                    .collect()
            } else {
                Vec::new()
            };
            // What leaves the clean copies is dropped after the lock is released: freeing
            // thousands of states (an eviction under a storm of new devices) would
            // otherwise keep every request's load waiting.
            let mut released: Vec<(String, Arc<DeviceState>)> = Vec::new();
            let mut q = wb.lock();
            for (i, (sn, done)) in done.iter().enumerate() {
                if let Some((Some(print), _)) = sums.get(i) {
                    q.children.insert((*sn).clone(), *print);
                }
                // Queued again while this batch ran: the database holds the device now.
                if let Some(now) = q.dirty.get_mut(*sn) {
                    now.fresh = false;
                }
                if q.dirty
                    .get(*sn)
                    .is_some_and(|now| now.generation == done.generation)
                {
                    q.dirty.remove(*sn);
                    if let Some(&(_, w)) = sums.get(i) {
                        if let Some((state, old)) =
                            q.clean.insert((*sn).clone(), (done.state.clone(), w))
                        {
                            q.clean_bytes -= old;
                            released.push((String::new(), state));
                        }
                        q.clean_bytes += w;
                    }
                }
            }
            if q.clean_bytes > wb.clean_cap {
                // Drop arbitrary copies (hash order) down to 90 % of the budget at once, so
                // the trimming is not repeated for every chunk.
                let target = wb.clean_cap / 10 * 9;
                let mut gone = Vec::new();
                let mut bytes = q.clean_bytes;
                for (sn, (_, w)) in &q.clean {
                    if bytes <= target {
                        break;
                    }
                    bytes -= w;
                    gone.push(sn.clone());
                }
                for sn in gone {
                    if let Some(state) = q.remove_clean(&sn) {
                        if !q.dirty.contains_key(&sn) {
                            q.children.remove(&sn);
                        }
                        released.push((sn, state));
                    }
                }
            }
            drop(q);
            drop(released);
        }
        Ok(written)
    }
}

/// Serials read per statement by [`Store::read_present`].
const PRESENT_PAGE: usize = 10_000;

impl Store {
    /// Read which serials the database holds into the write-behind's [`Present`] set, unless
    /// it is trusted already; installed only if no other process's write was noticed
    /// meanwhile. Read in pages (no long read transaction to hold back the WAL): a device
    /// another process adds behind the page being read is noticed by its change signal,
    /// which every load drains before it consults the set.
    pub(crate) async fn read_present(&self, wb: &WriteBehind) -> Result<()> {
        let epoch = {
            let q = wb.lock();
            if q.present.trusted {
                return Ok(());
            }
            q.present.epoch
        };
        let mut hashes = foldhash::HashSet::default();
        let mut after = String::new();
        loop {
            let rows = sqlx::query("SELECT sn FROM devices WHERE sn > $1 ORDER BY sn LIMIT $2")
                .bind(&after)
                .bind(PRESENT_PAGE as i64)
                .fetch_all(self.pool())
                .await
                .map_err(|e| self.err(e))?;
            for row in &rows {
                let sn = crate::decode::string_or_empty(row, "devices", "sn");
                if sn <= after {
                    // A serial that does not read back as text: paging cannot go on.
                    tracing::debug!("device serials not readable in order; none assumed absent");
                    return Ok(());
                }
                hashes.insert(sn_hash(&sn));
                after = sn;
            }
            if rows.len() < PRESENT_PAGE {
                break;
            }
            tokio::task::yield_now().await;
        }
        let mut q = wb.lock();
        if q.present.epoch == epoch {
            // With the serials this process saved meanwhile.
            hashes.extend(q.present.hashes.drain());
            q.present.hashes = hashes;
            q.present.trusted = true;
            tracing::debug!(devices = q.present.hashes.len(), "device serials known");
        }
        Ok(())
    }

    /// Compare the `devices_generation` counter with what this process last knew; drop the
    /// clean copies when another writer moved it.
    pub(crate) async fn check_generation(&self, wb: &WriteBehind) -> Result<()> {
        // This process's own direct writes (delete, touch, expire) hold the flush lock from
        // before their counter move until they noted it: not mistaken for another writer's.
        let _guard = wb.flush_lock.lock().await;
        let now = self.generation().await?;
        let mut known = wb
            .known_generation
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if *known != Some(now) {
            if known.is_some() {
                tracing::debug!("devices changed by another process; clean states dropped");
                wb.foreign.fetch_add(1, Ordering::AcqRel);
            }
            *known = Some(now);
            drop(known);
            wb.drop_clean();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A device is queued fresh (its child rows inserted without a delete) only while the
    /// trusted serial set says the database lacks it, and stops being fresh when another
    /// writer is noticed or it is written directly.
    #[test]
    fn only_devices_the_database_lacks_are_queued_fresh() {
        let wb = WriteBehind::new(1 << 20, None);
        let fresh = |sn: &str| wb.lock().dirty.get(sn).map(|d| d.fresh);
        wb.put(DeviceState::new("a", 1));
        assert_eq!(
            fresh("a"),
            Some(false),
            "serials not read yet: nothing is known"
        );
        {
            let mut q = wb.lock();
            q.present.trusted = true;
            q.present.hashes.insert(sn_hash("b"));
        }
        wb.put(DeviceState::new("b", 1));
        assert_eq!(fresh("b"), Some(false), "the database holds it");
        wb.put(DeviceState::new("c", 1));
        assert_eq!(fresh("c"), Some(true));
        wb.put(DeviceState::new("c", 2));
        assert_eq!(fresh("c"), Some(true), "polled again before its batch");
        wb.put_seen(DeviceState::new("c", 3));
        assert_eq!(fresh("c"), Some(true));
        assert_eq!(fresh("a"), Some(false), "queued before: stays as it was");
        wb.written_directly("c");
        assert_eq!(fresh("c"), Some(false), "written directly meanwhile");
        wb.put(DeviceState::new("d", 1));
        assert_eq!(fresh("d"), Some(true));
        wb.drop_clean();
        assert_eq!(fresh("d"), Some(false), "another writer noticed");
        wb.put(DeviceState::new("e", 1));
        assert_eq!(fresh("e"), Some(false), "the serial set is distrusted");
    }

    /// A log of repeated texts weighs an entry per message plus each text once; texts that
    /// are not shared count each time.
    #[test]
    fn shared_message_texts_count_once() {
        let text = "phase: update, nextphase: , environment: default, type: IP232".repeat(2);
        let mut shared = DeviceState::new("x", 0);
        for t in 0..200 {
            shared.add_msg(&text, t);
        }
        let mut unshared = DeviceState::new("x", 0);
        for t in 0..200 {
            unshared.msgs.push(autoprov_core::state::Message {
                time: t,
                msg: text.as_str().into(),
            });
        }
        let entry = std::mem::size_of::<autoprov_core::state::Message>();
        let base = weight(&DeviceState::new("x", 0));
        assert_eq!(weight(&shared) - base, 200 * entry + 16 + text.len());
        assert_eq!(weight(&unshared) - base, 200 * (entry + 16 + text.len()));
    }
}
