//! [`FileBuffer`]: the [`Buffer`] of one output on the shared storage. It keeps only chunk
//! metadata in memory; record data lives in chunk files and is read when a chunk is taken.

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use async_trait::async_trait;
use prometheus_client::metrics::counter::Counter;
use sled::Tree;
use tokio::sync::{oneshot, Notify};

use super::codec::{StoredState, MAX_CHUNK_RECORDS};
use super::read::{read_chunk, ReadError};
use super::recovery;
use super::state::{Entry, Pending, Phase, Prepared, Replay, State, Undo};
use super::store::{chunk_file, Store, StoreError};
use super::writer::{Op, Request};
use crate::buffer::policy::BufferPolicy;
use crate::buffer::{
    AppendError, Backlog, Buffer, BufferError, BufferStats, Chunk, ChunkId, ChunkKey, DeliveredSet,
    Enqueue, Records, RetryState,
};
use crate::ops::logging::Throttle;

mod append;
mod counters;
mod lost;

pub use counters::FileBufferCounters;

/// Failed reads of a chunk's file (with an error that may be the disk's) after which it is
/// quarantined. Between attempts it waits [`READ_RETRY_FIRST`], doubled each time, at most
/// [`READ_RETRY_MAX`]; other chunks are taken meanwhile.
pub(crate) const READ_ATTEMPTS: u32 = 5;
/// The wait after the first failed read of a chunk.
const READ_RETRY_FIRST_MS: u64 = 1_000;
/// The longest wait between two reads of a chunk.
const READ_RETRY_MAX_MS: u64 = 60_000;

/// True for read errors that say nothing about the chunk or the disk: too many open files,
/// no memory, interrupted. Such reads are retried without counting towards quarantine.
fn transient_read_error(e: &StoreError) -> bool {
    e.io_error()
        .and_then(std::io::Error::raw_os_error)
        .is_some_and(|c| {
            matches!(
                c,
                libc::EMFILE | libc::ENFILE | libc::ENOMEM | libc::EINTR | libc::EAGAIN
            )
        })
}

struct Inner {
    policy: BufferPolicy,
    store: Arc<Store>,
    tree: Tree,
    dir: Arc<Path>,
    state: Mutex<State>,
    queued_signal: Arc<Notify>,
    space_freed: Notify,
    closed: AtomicBool,
    /// Warnings about chunks closed early for `max_open_chunks` (at most one per 10 s).
    open_chunks_log: Throttle,
    counters: FileBufferCounters,
}

/// The durable chunk queue of one output (`buffer.type = "file"`).
pub struct FileBuffer {
    inner: Arc<Inner>,
}

impl FileBuffer {
    /// Opens output `policy.output`'s queue in `store`, recovering what is on disk: queued and
    /// staged chunks come back queued, unreadable ones go to quarantine. `quarantined` counts
    /// quarantined chunks (a Prometheus counter the caller registered).
    pub fn open(
        store: Arc<Store>,
        policy: BufferPolicy,
        quarantined: Counter,
    ) -> Result<FileBuffer, StoreError> {
        let counters = FileBufferCounters {
            quarantined_chunks: quarantined,
            ..FileBufferCounters::default()
        };
        FileBuffer::open_counted(store, policy, counters)
    }

    /// [`FileBuffer::open`], counting in all of `counters`.
    pub fn open_counted(
        store: Arc<Store>,
        mut policy: BufferPolicy,
        counters: FileBufferCounters,
    ) -> Result<FileBuffer, StoreError> {
        // Keeps every chunk's metadata far below sled's blob threshold (issue 15, defect 8).
        policy.chunk_limit_records = Some(
            policy
                .chunk_limit_records
                .map_or(MAX_CHUNK_RECORDS, |n| n.min(MAX_CHUNK_RECORDS)),
        );
        let tree = store.tree(&policy.output)?;
        let dir = store.chunk_dir(&policy.output)?;
        let rec = recovery::recover(&store, &tree, &dir, &policy.output)?;
        counters.quarantined_chunks.inc_by(rec.quarantined);
        counters.corrupt_frames.inc_by(rec.corrupt_frames);
        counters
            .tails_cut_without_copy
            .inc_by(rec.tails_cut_without_copy);
        let mut st = State {
            next_id: rec.next_id,
            quarantined_chunks: rec.quarantined,
            corrupt_frames: rec.corrupt_frames,
            tails_cut_without_copy: rec.tails_cut_without_copy,
            ..State::default()
        };
        for (id, meta) in rec.chunks {
            st.bytes += meta.bytes;
            st.records += meta.records;
            st.chunks.insert(
                id,
                Entry {
                    meta,
                    phase: Phase::Queued,
                    pending_writes: 0,
                    read_failures: 0,
                    read_retry_at: 0,
                },
            );
        }
        let delivered: u64 = st
            .chunks
            .values()
            .map(|e| e.meta.delivered.count() as u64)
            .sum();
        tracing::info!(output = %policy.output, chunks = st.chunks.len(), records = st.records,
            bytes = st.bytes, already_delivered = delivered, quarantined = rec.quarantined,
            "buffer recovered from disk");
        if let Some((&last, _)) = st.chunks.iter().next_back() {
            st.replay = Some(Replay {
                last_recovered: last,
                left: Backlog {
                    chunks: st.chunks.len() as u64,
                    records: st.records,
                    bytes: st.bytes,
                },
            });
        }
        Ok(FileBuffer {
            inner: Arc::new(Inner {
                policy,
                store,
                tree,
                dir,
                state: Mutex::new(st),
                queued_signal: Arc::new(Notify::new()),
                space_freed: Notify::new(),
                closed: AtomicBool::new(false),
                counters,
                open_chunks_log: Throttle::new(std::time::Duration::from_secs(10)),
            }),
        })
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves at worst stale counters; the data is on disk.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Sends `prep` to the writer; `after` runs on the writer thread once it is durable, after
    /// the touched chunks' pending writes are released. Returns the completion to await.
    fn submit(
        self: &Arc<Self>,
        st: &mut State,
        prep: Prepared,
        after: impl FnOnce(&Inner, &mut State, &Result<(), StoreError>) + Send + 'static,
    ) -> Result<oneshot::Receiver<Result<(), StoreError>>, StoreError> {
        let (tx, rx) = oneshot::channel();
        let inner = Arc::clone(self);
        let touched = prep.touched.clone();
        let cancel = (!prep.undo.is_empty()).then(|| {
            let cancel = Arc::new(OnceLock::new());
            st.pending.push_back(Pending {
                cancel: Arc::clone(&cancel),
                undo: prep.undo,
            });
            cancel
        });
        let settle = cancel.clone();
        let req = Request {
            tree: self.tree.clone(),
            dir: Arc::clone(&self.dir),
            ops: prep.ops,
            sync_metadata: prep.sync_metadata,
            cancel: cancel.clone(),
            done: Box::new(move |res| {
                let mut wake = false;
                let mut undone = false;
                {
                    let mut st = inner.lock();
                    for id in &touched {
                        if let Some(e) = st.chunks.get_mut(id) {
                            e.pending_writes = e.pending_writes.saturating_sub(1);
                            wake |= e.pending_writes == 0 && e.phase == Phase::Queued;
                        }
                    }
                    if let Some(c) = &settle {
                        undone = settle_pending(&mut st, c, &res);
                    }
                    after(&inner, &mut st, &res);
                }
                if wake {
                    inner.queued_signal.notify_waiters();
                }
                if undone {
                    inner.space_freed.notify_waiters();
                }
                // Let go of the buffer before answering: once the caller has its answer it may
                // drop its handles and reopen the database, which needs this thread to not be
                // the last owner of the store.
                drop(inner);
                let _ = tx.send(res);
            }),
        };
        if let Err(e) = self.store.submit(req) {
            // Nothing was sent: undo the pending marks so the chunks stay consistent.
            if let Some(c) = &cancel {
                st.pending.retain(|p| !Arc::ptr_eq(&p.cancel, c));
            }
            for id in &prep.touched {
                if let Some(e) = st.chunks.get_mut(id) {
                    e.pending_writes = e.pending_writes.saturating_sub(1);
                }
            }
            return Err(e);
        }
        Ok(rx)
    }

    /// Closes the open chunk of `key`, if there is one.
    fn close_staged(&self, st: &mut State, prep: &mut Prepared, key: &ChunkKey) {
        if let Some(id) = st.staged.remove(key) {
            if let Some(e) = st.chunks.get_mut(&id) {
                e.phase = Phase::Queued;
                e.meta.state = StoredState::Queued;
            }
            prep.undo.push(Undo::Closed(id));
            prep.put_meta(st, id);
        }
    }

    async fn enqueue_staged(self: &Arc<Self>, which: Enqueue) -> Result<usize, BufferError> {
        let (rx, n) = {
            let mut st = self.lock();
            let due: Vec<ChunkKey> = st
                .staged
                .iter()
                .filter_map(|(k, id)| Some((k, st.chunks.get(id)?)))
                .filter(|(k, e)| self.policy.keys.due(which, k, e.meta.created_ms))
                .map(|(k, _)| k.clone())
                .collect();
            if due.is_empty() {
                return Ok(0);
            }
            let mut prep = Prepared::default();
            for key in &due {
                self.close_staged(&mut st, &mut prep, key);
            }
            (self.submit(&mut st, prep, |_, _, _| {})?, due.len())
        };
        rx.await.map_err(|_| StoreError::WriterGone)??;
        Ok(n)
    }

    async fn take(self: &Arc<Self>, now: u64) -> Result<Option<Chunk>, BufferError> {
        loop {
            let (id, meta) = {
                let mut st = self.lock();
                let found = st.chunks.iter_mut().find(|(_, e)| {
                    e.phase == Phase::Queued
                        && e.pending_writes == 0
                        && e.meta.retry.next_attempt_ms <= now
                        && e.read_retry_at <= now
                });
                let Some((&id, e)) = found else {
                    return Ok(None);
                };
                e.phase = Phase::InFlight;
                (id, e.meta.clone())
            };
            let (tree, path) = (self.tree.clone(), chunk_file(&self.dir, id));
            let m = meta.clone();
            let store = Arc::clone(&self.store);
            let read = tokio::task::spawn_blocking(move || {
                read_chunk(store.fs(), &tree, &path, id, Some(&m))
            })
            .await
            .unwrap_or_else(|e| Err(ReadError::Storage(e.into())));
            match read {
                Ok(back) => {
                    if let Some(e) = self.lock().chunks.get_mut(&id) {
                        (e.read_failures, e.read_retry_at) = (0, 0);
                    }
                    let delivered = match back.lost {
                        None => meta.delivered,
                        Some(lost) => match self.lost_frames(id, meta.delivered, lost).await? {
                            Some(delivered) => delivered,
                            None => continue,
                        },
                    };
                    return Ok(Some(
                        Chunk::new(id, meta.created_ms, back.records)
                            .with_history(delivered, meta.retry)
                            .with_key(meta.key),
                    ));
                }
                Err(ReadError::Storage(e)) => self.read_failed(id, now, e).await?,
                Err(ReadError::Corrupt(reason)) => self.quarantine(id, reason).await?,
            }
        }
    }

    /// A read of chunk `id`'s file failed: it waits and is retried (other chunks are taken
    /// meanwhile), and after [`READ_ATTEMPTS`] failures that may be the disk's it is
    /// quarantined.
    async fn read_failed(
        self: &Arc<Self>,
        id: ChunkId,
        now: u64,
        err: StoreError,
    ) -> Result<(), BufferError> {
        let transient = transient_read_error(&err);
        let (failures, wait) = {
            let mut st = self.lock();
            let Some(e) = st.chunks.get_mut(&id) else {
                return Ok(());
            };
            if !transient {
                e.read_failures += 1;
            }
            let n = e.read_failures.max(1);
            let wait = READ_RETRY_FIRST_MS
                .saturating_mul(1 << (n - 1).min(16))
                .min(READ_RETRY_MAX_MS);
            if transient || e.read_failures < READ_ATTEMPTS {
                e.phase = Phase::Queued;
                e.read_retry_at = now.saturating_add(wait);
            }
            (e.read_failures, wait)
        };
        if !transient && failures >= READ_ATTEMPTS {
            let reason = format!("its file could not be read {failures} times: {err}");
            return self.quarantine(id, reason).await;
        }
        tracing::warn!(output = %self.policy.output, chunk = %id, error = %err,
            failed_reads = failures, retry_in_ms = wait,
            "buffer: cannot read a chunk; other chunks go first, it is retried later");
        Ok(())
    }

    fn set_phase(&self, id: ChunkId, phase: Phase) {
        if let Some(e) = self.lock().chunks.get_mut(&id) {
            e.phase = phase;
        }
    }

    /// Moves an unreadable in-flight chunk to quarantine and forgets it.
    async fn quarantine(self: &Arc<Self>, id: ChunkId, reason: String) -> Result<(), BufferError> {
        let store = Arc::clone(&self.store);
        let tree = self.tree.clone();
        let dir = Arc::clone(&self.dir);
        let output = self.policy.output.clone();
        let reason = format!("unreadable chunk data: {reason}");
        let res = tokio::task::spawn_blocking(move || {
            recovery::quarantine_chunk(&store, &tree, &dir, &output, id, &reason)
        })
        .await
        .unwrap_or_else(|e| Err(e.into()));
        match res {
            Ok(()) => {
                let mut st = self.lock();
                st.forget(id);
                st.quarantined_chunks += 1;
                drop(st);
                self.counters.quarantined_chunks.inc();
                self.space_freed.notify_waiters();
                Ok(())
            }
            Err(e) => {
                tracing::error!(output = %self.policy.output, chunk = %id, error = %e,
                    "buffer: cannot quarantine an unreadable chunk; it stays on disk and is skipped");
                self.set_phase(id, Phase::Broken);
                Ok(())
            }
        }
    }

    async fn commit(self: &Arc<Self>, id: ChunkId) -> Result<(), BufferError> {
        let rx = {
            let mut st = self.lock();
            match st.chunks.get_mut(&id) {
                Some(e) if e.phase == Phase::InFlight => e.phase = Phase::Purging,
                _ => return Err(BufferError::NotInFlight(id)),
            }
            let prep = Prepared {
                ops: vec![Op::Purge { chunk: id }],
                ..Prepared::default()
            };
            let submitted = self.submit(&mut st, prep, move |inner, st, res| {
                if res.is_ok() {
                    st.forget(id);
                    inner.space_freed.notify_waiters();
                } else if let Some(e) = st.chunks.get_mut(&id) {
                    e.phase = Phase::InFlight;
                }
            });
            match submitted {
                Ok(rx) => rx,
                Err(e) => {
                    if let Some(e) = st.chunks.get_mut(&id) {
                        e.phase = Phase::InFlight;
                    }
                    return Err(e.into());
                }
            }
        };
        rx.await.map_err(|_| StoreError::WriterGone)??;
        Ok(())
    }

    async fn release(
        self: &Arc<Self>,
        id: ChunkId,
        delivered: DeliveredSet,
        retry: RetryState,
    ) -> Result<(), BufferError> {
        let rx = {
            let mut st = self.lock();
            let Some(e) = st
                .chunks
                .get_mut(&id)
                .filter(|e| e.phase == Phase::InFlight)
            else {
                return Err(BufferError::NotInFlight(id));
            };
            // Only indices of real records can be stored (recovery refuses others).
            let records = e.meta.records;
            e.meta.delivered = if delivered.iter().last().is_some_and(|i| i as u64 >= records) {
                delivered.iter().filter(|&i| (i as u64) < records).collect()
            } else {
                delivered
            };
            e.meta.retry = retry;
            e.meta.state = StoredState::Queued;
            // Takeable again only once the new delivered set is durable (pending_writes).
            e.phase = Phase::Queued;
            // A retry relies on the delivered set: it must be durable before the chunk is
            // takeable again.
            let mut prep = Prepared {
                sync_metadata: true,
                ..Prepared::default()
            };
            prep.put_meta(&mut st, id);
            self.submit(&mut st, prep, |_, _, _| {})?
        };
        rx.await.map_err(|_| StoreError::WriterGone)??;
        Ok(())
    }

    fn stats(&self) -> BufferStats {
        let st = self.lock();
        let mut s = BufferStats {
            records: st.records,
            bytes: st.bytes,
            limit_bytes: self.policy.total_limit_size,
            dropped_chunks: st.dropped_chunks,
            dropped_records: st.dropped_records,
            closed_early_chunks: st.closed_early_chunks,
            quarantined_chunks: st.quarantined_chunks,
            corrupt_frames: st.corrupt_frames,
            tails_cut_without_copy: st.tails_cut_without_copy,
            backlog: st.replay.as_ref().map(|r| r.left).unwrap_or_default(),
            storage: self.store.health(),
            reuse_pool: self.store.reuse_pool(),
            ..BufferStats::default()
        };
        for e in st.chunks.values() {
            match e.phase {
                Phase::Staged => s.staged_chunks += 1,
                Phase::Queued | Phase::Broken => {
                    s.queued_chunks += 1;
                    s.oldest_queued_ms = Some(
                        s.oldest_queued_ms
                            .map_or(e.meta.created_ms, |m| m.min(e.meta.created_ms)),
                    );
                    if e.meta.retry.failures > 0 {
                        s.retrying_chunks += 1;
                        let t = e.meta.retry.next_attempt_ms;
                        s.next_retry_ms = Some(s.next_retry_ms.map_or(t, |m| m.min(t)));
                    }
                }
                Phase::InFlight | Phase::Purging => s.in_flight_chunks += 1,
            }
        }
        s
    }
}

/// Settles pending append or close `cancel` once the writer answered it (see [`Pending`]):
/// refused for lack of room, it is undone with every later pending one, which is cancelled.
/// Returns true if anything was undone.
fn settle_pending(
    st: &mut State,
    cancel: &Arc<OnceLock<StoreError>>,
    res: &Result<(), StoreError>,
) -> bool {
    // Not found: it was undone (and cancelled) with an earlier one.
    let Some(at) = st
        .pending
        .iter()
        .position(|p| Arc::ptr_eq(&p.cancel, cancel))
    else {
        return false;
    };
    match res {
        Err(e) if e.is_no_room() => {
            let undone: Vec<Pending> = st.pending.drain(at..).collect();
            for p in &undone {
                let _ = p.cancel.set(e.clone());
            }
            for p in undone.iter().rev() {
                for &step in p.undo.iter().rev() {
                    st.undo(step);
                }
            }
            true
        }
        _ => {
            st.pending.remove(at);
            false
        }
    }
}

#[async_trait]
impl Buffer for FileBuffer {
    async fn append_keyed(&self, key: &ChunkKey, records: Records) -> Result<(), AppendError> {
        self.inner.append(key, records).await
    }

    async fn enqueue_staged(&self, which: Enqueue) -> Result<usize, BufferError> {
        self.inner.enqueue_staged(which).await
    }

    async fn take(&self, now_ms: u64) -> Result<Option<Chunk>, BufferError> {
        self.inner.take(now_ms).await
    }

    async fn commit(&self, id: ChunkId) -> Result<(), BufferError> {
        self.inner.commit(id).await
    }

    async fn release(
        &self,
        id: ChunkId,
        delivered: DeliveredSet,
        retry: RetryState,
    ) -> Result<(), BufferError> {
        self.inner.release(id, delivered, retry).await
    }

    fn queued_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.inner.queued_signal)
    }

    fn stats(&self) -> BufferStats {
        self.inner.stats()
    }

    fn close(&self) {
        self.inner.closed.store(true, Ordering::Release);
        self.inner.space_freed.notify_waiters();
    }

    fn retry_all_now(&self) {
        for e in self.inner.lock().chunks.values_mut() {
            e.meta.retry.next_attempt_ms = 0;
        }
        self.inner.queued_signal.notify_waiters();
    }
}
