//! `buffer.type = "memory"`: the chunk queue in RAM. Same semantics as the file buffer except
//! that everything is lost when the process exits; appends resolve as soon as the records are
//! in the queue.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::policy::{BufferPolicy, StagedSize};
use super::{
    now_ms, AppendError, Buffer, BufferError, BufferStats, Chunk, ChunkId, ChunkKey, DeliveredSet,
    Enqueue, Records, RetryState,
};

#[derive(Debug)]
struct StoredChunk {
    created_ms: u64,
    records: Records,
    delivered: DeliveredSet,
    retry: RetryState,
    key: ChunkKey,
}

impl StoredChunk {
    fn bytes(&self) -> u64 {
        self.records.byte_len() as u64
    }
}

#[derive(Debug, Default)]
struct State {
    next_id: u64,
    /// The open chunk of each key.
    staged: BTreeMap<ChunkKey, (ChunkId, StoredChunk)>,
    queued: BTreeMap<ChunkId, StoredChunk>,
    in_flight: HashMap<ChunkId, StoredChunk>,
    bytes: u64,
    records: u64,
    dropped_chunks: u64,
    dropped_records: u64,
    closed_early_chunks: u64,
}

impl State {
    /// Opens a chunk for `key`; at `max_open` open chunks the oldest one is closed first.
    /// Returns true if it closed one.
    fn open_chunk(&mut self, key: &ChunkKey, max_open: usize) -> bool {
        let mut closed = false;
        while self.staged.len() >= max_open.max(1) {
            let oldest = self
                .staged
                .iter()
                .min_by_key(|(_, (id, _))| *id)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            self.close_staged(&oldest);
            self.closed_early_chunks += 1;
            closed = true;
        }
        self.next_id += 1;
        let chunk = StoredChunk {
            created_ms: now_ms(),
            records: Records::new(),
            delivered: DeliveredSet::new(),
            retry: RetryState::default(),
            key: key.clone(),
        };
        self.staged
            .insert(key.clone(), (ChunkId(self.next_id), chunk));
        closed
    }

    fn close_staged(&mut self, key: &ChunkKey) -> bool {
        match self.staged.remove(key) {
            Some((id, c)) => {
                self.queued.insert(id, c);
                true
            }
            None => false,
        }
    }

    fn forget(&mut self, c: &StoredChunk) {
        self.bytes -= c.bytes();
        self.records -= c.records.len() as u64;
    }
}

/// The in-memory chunk queue of one output.
pub struct MemoryBuffer {
    policy: BufferPolicy,
    state: Mutex<State>,
    queued_signal: Arc<Notify>,
    space_freed: Notify,
    closed: AtomicBool,
}

impl MemoryBuffer {
    /// An empty buffer with the given limits.
    pub fn new(policy: BufferPolicy) -> Self {
        MemoryBuffer {
            policy,
            state: Mutex::new(State::default()),
            queued_signal: Arc::new(Notify::new()),
            space_freed: Notify::new(),
            closed: AtomicBool::new(false),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave State half-updated in a way that matters
        // more than losing the process, so recover the guard instead of propagating poison.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl super::policy::Reservable for State {
    fn used_bytes(&self) -> u64 {
        self.bytes
    }

    fn drop_oldest_queued(&mut self, output: &str) -> bool {
        let Some((&id, _)) = self.queued.iter().next() else {
            return false;
        };
        if let Some(c) = self.queued.remove(&id) {
            self.forget(&c);
            self.dropped_chunks += 1;
            self.dropped_records += c.records.len() as u64;
            tracing::warn!(output, chunk = %id, records = c.records.len(),
                "buffer full: dropped oldest queued chunk (overflow_action = drop_oldest_chunk)");
        }
        true
    }
}

#[async_trait]
impl Buffer for MemoryBuffer {
    async fn append_keyed(&self, key: &ChunkKey, records: Records) -> Result<(), AppendError> {
        if records.is_empty() {
            return Ok(());
        }
        // Plan against the current staged size; re-plan under the lock after reserving, since
        // another append may have changed it meanwhile.
        let adding = records.byte_len() as u64;
        let mut st = self
            .policy
            .reserve(adding, &self.closed, &self.space_freed, || self.lock())
            .await?;
        let staged = st.staged.get(key).map(|(_, c)| StagedSize {
            bytes: c.bytes(),
            records: c.records.len() as u64,
        });
        let plan = self.policy.plan(staged, &records)?;
        let max_open = self.policy.keys.max_open_chunks;
        let mut queued_any = false;
        if plan.close_staged_first {
            queued_any |= st.close_staged(key);
        }
        for part in &plan.parts {
            if part.new_chunk || !st.staged.contains_key(key) {
                queued_any |= st.close_staged(key);
                queued_any |= st.open_chunk(key, max_open);
            }
            let slice = records.slice(part.range.clone());
            if let Some((_, c)) = st.staged.get_mut(key) {
                // A chunk is far below 4 GiB (chunk_limit_size is validated), so this holds.
                c.records.extend(&slice).map_err(BufferError::from)?;
            }
            st.bytes += part.bytes;
            st.records += slice.len() as u64;
            if part.close_after {
                queued_any |= st.close_staged(key);
            }
        }
        drop(st);
        if queued_any {
            self.queued_signal.notify_waiters();
        }
        Ok(())
    }

    async fn enqueue_staged(&self, which: Enqueue) -> Result<usize, BufferError> {
        let mut st = self.lock();
        let due: Vec<ChunkKey> = st
            .staged
            .iter()
            .filter(|(k, (_, c))| self.policy.keys.due(which, k, c.created_ms))
            .map(|(k, _)| k.clone())
            .collect();
        let n = due.iter().filter(|k| st.close_staged(k)).count();
        drop(st);
        if n > 0 {
            self.queued_signal.notify_waiters();
        }
        Ok(n)
    }

    async fn take(&self, now_ms: u64) -> Result<Option<Chunk>, BufferError> {
        let mut st = self.lock();
        let id = st
            .queued
            .iter()
            .find(|(_, c)| c.retry.next_attempt_ms <= now_ms)
            .map(|(&id, _)| id);
        let Some(id) = id else { return Ok(None) };
        let Some(c) = st.queued.remove(&id) else {
            return Ok(None);
        };
        let chunk = Chunk::new(id, c.created_ms, c.records.clone())
            .with_history(c.delivered.clone(), c.retry)
            .with_key(c.key.clone());
        st.in_flight.insert(id, c);
        Ok(Some(chunk))
    }

    async fn commit(&self, id: ChunkId) -> Result<(), BufferError> {
        let mut st = self.lock();
        let c = st
            .in_flight
            .remove(&id)
            .ok_or(BufferError::NotInFlight(id))?;
        st.forget(&c);
        drop(st);
        self.space_freed.notify_waiters();
        Ok(())
    }

    async fn release(
        &self,
        id: ChunkId,
        delivered: DeliveredSet,
        retry: RetryState,
    ) -> Result<(), BufferError> {
        let mut st = self.lock();
        let mut c = st
            .in_flight
            .remove(&id)
            .ok_or(BufferError::NotInFlight(id))?;
        c.delivered = delivered;
        c.retry = retry;
        st.queued.insert(id, c);
        drop(st);
        self.queued_signal.notify_waiters();
        Ok(())
    }

    fn queued_signal(&self) -> Arc<Notify> {
        Arc::clone(&self.queued_signal)
    }

    fn stats(&self) -> BufferStats {
        let st = self.lock();
        BufferStats {
            staged_chunks: st.staged.len(),
            queued_chunks: st.queued.len(),
            in_flight_chunks: st.in_flight.len(),
            retrying_chunks: st.queued.values().filter(|c| c.retry.failures > 0).count(),
            records: st.records,
            bytes: st.bytes,
            limit_bytes: self.policy.total_limit_size,
            oldest_queued_ms: st.queued.values().map(|c| c.created_ms).min(),
            next_retry_ms: st
                .queued
                .values()
                .filter(|c| c.retry.failures > 0)
                .map(|c| c.retry.next_attempt_ms)
                .min(),
            dropped_chunks: st.dropped_chunks,
            dropped_records: st.dropped_records,
            closed_early_chunks: st.closed_early_chunks,
            quarantined_chunks: 0,
            corrupt_frames: 0,
            tails_cut_without_copy: 0,
            storage: Default::default(),
            reuse_pool: Default::default(),
            // Nothing survives a restart in memory.
            backlog: Default::default(),
        }
    }

    fn close(&self) {
        self.closed.store(true, Ordering::Release);
        self.space_freed.notify_waiters();
    }

    fn retry_all_now(&self) {
        for c in self.lock().queued.values_mut() {
            c.retry.next_attempt_ms = 0;
        }
        self.queued_signal.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::config::{FlushMode, OverflowAction};
    use std::time::Duration;

    fn policy(total: u64, action: OverflowAction) -> BufferPolicy {
        BufferPolicy {
            output: "out".into(),
            chunk_limit_size: 100,
            chunk_limit_records: None,
            total_limit_size: total,
            flush_mode: FlushMode::Interval,
            overflow_action: action,
            keys: Default::default(),
        }
    }

    fn recs(n: usize, size: usize) -> Records {
        let mut r = Records::new();
        for _ in 0..n {
            r.push(&vec![b'x'; size]).unwrap();
        }
        r
    }

    #[tokio::test]
    async fn full_chunks_are_queued_and_taken_oldest_first() {
        let b = MemoryBuffer::new(policy(10_000, OverflowAction::Block));
        b.append(recs(25, 10)).await.unwrap(); // 10 per chunk: 2 full chunks + 5 staged
        let s = b.stats();
        assert_eq!(
            (s.staged_chunks, s.queued_chunks, s.records, s.bytes),
            (1, 2, 25, 250)
        );
        let c1 = b.take(now_ms()).await.unwrap().unwrap();
        let c2 = b.take(now_ms()).await.unwrap().unwrap();
        assert!(c1.id < c2.id);
        assert!(
            b.take(now_ms()).await.unwrap().is_none(),
            "in-flight chunks are not taken twice"
        );
        b.commit(c1.id).await.unwrap();
        assert_eq!(b.stats().records, 15);
        assert!(b.commit(c1.id).await.is_err());
    }

    #[tokio::test]
    async fn retry_all_now_makes_a_waiting_chunk_due_with_its_failures_kept() {
        let b = MemoryBuffer::new(policy(10_000, OverflowAction::Block));
        b.append(recs(3, 10)).await.unwrap();
        b.enqueue_staged(Enqueue::All).await.unwrap();
        let c = b.take(now_ms()).await.unwrap().unwrap();
        let retry = RetryState {
            failures: 2,
            first_failure_ms: Some(1),
            next_attempt_ms: now_ms() + 3_600_000,
        };
        b.release(c.id, c.delivered, retry).await.unwrap();
        assert!(b.take(now_ms()).await.unwrap().is_none());
        b.retry_all_now();
        assert_eq!(b.take(now_ms()).await.unwrap().unwrap().retry.failures, 2);
    }

    #[tokio::test]
    async fn released_chunk_keeps_delivered_set_and_waits_for_its_retry_time() {
        let b = MemoryBuffer::new(policy(10_000, OverflowAction::Block));
        b.append(recs(3, 10)).await.unwrap();
        b.enqueue_staged(Enqueue::All).await.unwrap();
        let c = b.take(now_ms()).await.unwrap().unwrap();
        let delivered: DeliveredSet = [0, 2].into_iter().collect();
        let retry = RetryState {
            failures: 1,
            first_failure_ms: Some(1),
            next_attempt_ms: 1_000,
        };
        b.release(c.id, delivered.clone(), retry).await.unwrap();
        assert!(b.take(999).await.unwrap().is_none());
        let again = b.take(1_000).await.unwrap().unwrap();
        assert_eq!(again.delivered, delivered);
        assert_eq!(again.pending().collect::<Vec<_>>(), vec![1]);
    }

    #[tokio::test]
    async fn throw_exception_rejects_when_full() {
        let b = MemoryBuffer::new(policy(100, OverflowAction::ThrowException));
        b.append(recs(9, 10)).await.unwrap();
        let err = b.append(recs(2, 10)).await.unwrap_err();
        assert!(
            matches!(
                err,
                AppendError::Overflow {
                    used: 90,
                    limit: 100,
                    ..
                }
            ),
            "{err}"
        );
        assert_eq!(b.stats().records, 9, "a rejected append stores nothing");
    }

    #[tokio::test]
    async fn drop_oldest_chunk_makes_room_and_counts_it() {
        let b = MemoryBuffer::new(policy(200, OverflowAction::DropOldestChunk));
        b.append(recs(20, 10)).await.unwrap(); // two full queued chunks
        b.append(recs(5, 10)).await.unwrap();
        let s = b.stats();
        assert_eq!((s.dropped_chunks, s.dropped_records), (1, 10));
        assert_eq!(s.records, 15);
    }

    #[tokio::test]
    async fn block_waits_until_a_commit_frees_space() {
        let b = Arc::new(MemoryBuffer::new(policy(100, OverflowAction::Block)));
        b.append(recs(10, 10)).await.unwrap();
        let b2 = Arc::clone(&b);
        let blocked = tokio::spawn(async move { b2.append(recs(1, 10)).await });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(
            !blocked.is_finished(),
            "append must wait while the buffer is full"
        );
        let c = b.take(now_ms()).await.unwrap().unwrap();
        b.commit(c.id).await.unwrap();
        tokio::time::timeout(Duration::from_secs(2), blocked)
            .await
            .expect("append resumes after space is freed")
            .unwrap()
            .unwrap();
    }

    #[tokio::test]
    async fn keyed_appends_keep_one_open_chunk_per_key_up_to_the_bound() {
        let mut p = policy(1 << 20, OverflowAction::Block);
        p.keys.max_open_chunks = 2;
        let b = MemoryBuffer::new(p);
        let key = |t: &str| ChunkKey {
            tag: Some(t.to_owned()),
            timekey: None,
        };
        for t in ["a", "b", "a", "c"] {
            b.append_keyed(&key(t), recs(1, 5)).await.unwrap();
        }
        let s = b.stats();
        // "c" needed a third open chunk: "a" (the oldest) was closed early.
        assert_eq!(
            (s.staged_chunks, s.queued_chunks, s.closed_early_chunks),
            (2, 1, 1)
        );
        b.enqueue_staged(Enqueue::All).await.unwrap();
        let mut got = Vec::new();
        while let Some(c) = b.take(now_ms()).await.unwrap() {
            got.push((c.key.tag.clone().unwrap(), c.records.len()));
            b.commit(c.id).await.unwrap();
        }
        let want = [("a", 2), ("b", 1), ("c", 1)].map(|(t, n)| (t.to_owned(), n));
        assert_eq!(got, want);
    }

    #[tokio::test]
    async fn close_fails_blocked_appends() {
        let b = Arc::new(MemoryBuffer::new(policy(100, OverflowAction::Block)));
        b.append(recs(10, 10)).await.unwrap();
        let b2 = Arc::clone(&b);
        let blocked = tokio::spawn(async move { b2.append(recs(1, 10)).await });
        tokio::time::sleep(Duration::from_millis(20)).await;
        b.close();
        let res = tokio::time::timeout(Duration::from_secs(2), blocked)
            .await
            .unwrap()
            .unwrap();
        assert!(matches!(res, Err(AppendError::Closed(_))));
    }
}
