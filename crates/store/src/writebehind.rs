//! Write-behind of device states: [`Store::save`] queues, a background task writes.
//!
//! Every poll changes a device's state, and writing each change in its own transaction made
//! SQLite the bottleneck of the request path. With write-behind on, a save replaces the
//! device's queued state in memory and returns; every `window` the flusher writes all queued
//! states in one transaction per chunk. Reads see queued states first, so the process observes
//! its own writes at once. Operations that read or change many rows (list, delete, touch,
//! expire) flush first and hold the flush lock, so they never race a batch.
//!
//! A crash (kill -9, power loss) loses at most the states queued since the last flush; each
//! batch is one transaction, so the database is always consistent. When the queue holds more
//! than [`MAX_QUEUED`] devices a save flushes before returning (back-pressure), and a flush
//! that fails (database locked or gone) keeps the states queued for the next try.

use std::collections::HashMap;
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
    queued: Mutex<HashMap<String, Queued>>,
    next_gen: AtomicU64,
    /// Held while a batch is written, and by operations that must not race one.
    pub(crate) flush_lock: Arc<tokio::sync::Mutex<()>>,
    stop: tokio::sync::Notify,
}

#[derive(Debug, Clone)]
struct Queued {
    generation: u64,
    state: Arc<DeviceState>,
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
    /// Start the flusher for `store` (a handle without write-behind of its own).
    pub(crate) fn start(store: &Store, window: Duration) -> Arc<Handle> {
        let wb = Arc::new(WriteBehind {
            queued: Mutex::new(HashMap::new()),
            next_gen: AtomicU64::new(1),
            flush_lock: Arc::new(tokio::sync::Mutex::new(())),
            stop: tokio::sync::Notify::new(),
        });
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
                busy = started.elapsed();
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

    /// The queued state of `sn`, if any.
    pub(crate) fn get(&self, sn: &str) -> Option<Arc<DeviceState>> {
        self.lock().get(sn).map(|q| q.state.clone())
    }

    /// Queue `state`, replacing an older queued state of the same device. Returns the queue
    /// length.
    pub(crate) fn put(&self, state: DeviceState) -> usize {
        let generation = self.next_gen.fetch_add(1, Ordering::Relaxed);
        let mut q = self.lock();
        q.insert(
            state.sn.clone(),
            Queued {
                generation,
                state: Arc::new(state),
            },
        );
        q.len()
    }

    /// Forget the queued state of `sn` (the device is being deleted).
    pub(crate) fn forget(&self, sn: &str) {
        self.lock().remove(sn);
    }

    /// Forget queued states last seen before `older_than` (they are being expired).
    pub(crate) fn forget_older(&self, older_than: i64) {
        self.lock().retain(|_, q| q.state.seen >= older_than);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Queued>> {
        self.queued.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Store {
    /// How many device states wait in the write-behind queue (0 without write-behind).
    pub fn queued_states(&self) -> usize {
        self.wb.as_ref().map_or(0, |wb| wb.lock().len())
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
        self.write_queued(wb).await
    }

    /// Write the queue in chunks; the caller holds the flush lock. States saved again while a
    /// chunk was written stay queued (their generation changed).
    async fn write_queued(&self, wb: &WriteBehind) -> Result<usize> {
        let batch: Vec<(String, Queued)> = wb
            .lock()
            .iter()
            .map(|(k, q)| (k.clone(), q.clone()))
            .collect();
        let mut written = 0;
        for chunk in batch.chunks(CHUNK) {
            let states: Vec<&DeviceState> = chunk.iter().map(|(_, q)| &*q.state).collect();
            self.write_states(&states).await?;
            written += chunk.len();
            let mut q = wb.lock();
            for (sn, done) in chunk {
                if q.get(sn)
                    .is_some_and(|now| now.generation == done.generation)
                {
                    q.remove(sn);
                }
            }
        }
        Ok(written)
    }
}
