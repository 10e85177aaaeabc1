//! The append path of [`FileBuffer`](super::FileBuffer): room is reserved (per
//! `overflow_action`), the policy plans where the records go, they are placed into the staged
//! chunk (closing it and starting new chunks as planned), and the writes go to the writer
//! thread in one request; the append returns once they are durable.

use std::sync::{Arc, MutexGuard};

use super::super::codec::{keyed_chunk_file_header, ChunkMeta, DataStorage, StoredState};
use super::super::state::{Entry, Phase, Prepared, State, Undo};
use super::super::store::StoreError;
use super::super::writer::Op;
use super::Inner;
use crate::buffer::policy::{AppendPlan, StagedSize};
use crate::buffer::{now_ms, AppendError, ChunkId, ChunkKey, DeliveredSet, Records, RetryState};

impl Inner {
    /// Starts a new staged chunk for `key`: its file is created with the first append. A
    /// staged chunk has no metadata on disk (appends touch only its file, whose header holds
    /// the key; recovery counts a staged chunk from its file); it is written when the chunk
    /// closes. With `max_open_chunks` chunks open, the oldest open one is closed first.
    fn new_chunk(&self, st: &mut State, prep: &mut Prepared, key: &ChunkKey) -> ChunkId {
        while st.staged.len() >= self.policy.keys.max_open_chunks.max(1) {
            let oldest = st
                .staged
                .iter()
                .min_by_key(|(_, id)| **id)
                .map(|(k, _)| k.clone());
            let Some(oldest) = oldest else { break };
            self.close_staged(st, prep, &oldest);
            st.closed_early_chunks += 1;
            if let Some(suppressed) = self.open_chunks_log.allow() {
                tracing::warn!(output = %self.policy.output, closed = %oldest, opening = %key,
                    max_open_chunks = self.policy.keys.max_open_chunks, suppressed,
                    "buffer: too many open chunks; the oldest was closed early and queued");
            }
        }
        let id = ChunkId(st.next_id);
        st.next_id += 1;
        let created_ms = now_ms();
        let meta = ChunkMeta {
            state: StoredState::Staged,
            created_ms,
            bytes: 0,
            records: 0,
            storage: DataStorage::File,
            retry: RetryState::default(),
            delivered: DeliveredSet::new(),
            key: key.clone(),
        };
        st.chunks.insert(
            id,
            Entry {
                meta,
                phase: Phase::Staged,
                pending_writes: 0,
                read_failures: 0,
                read_retry_at: 0,
            },
        );
        st.staged.insert(key.clone(), id);
        prep.undo.push(Undo::Created(id));
        prep.ops.push(Op::Create {
            chunk: id,
            header: keyed_chunk_file_header(id, created_ms, key),
        });
        id
    }

    /// Waits until `adding` bytes fit (per `overflow_action`) and returns the locked state.
    /// Chunks dropped to make room have their purge added to `prep`; when the append is
    /// refused, those purges are submitted before the error returns.
    async fn reserve_room(
        self: &Arc<Self>,
        adding: u64,
        prep: &mut Prepared,
    ) -> Result<MutexGuard<'_, State>, AppendError> {
        let reserved = self
            .policy
            .reserve(adding, &self.closed, &self.space_freed, || self.lock())
            .await;
        match reserved {
            Ok(mut st) => {
                purge_dropped(&mut st, prep);
                Ok(st)
            }
            Err(e) => {
                // Chunks dropped while trying to make room are gone from memory: their
                // purge must reach the disk even though this append fails.
                let mut st = self.lock();
                purge_dropped(&mut st, prep);
                if !prep.ops.is_empty() {
                    let _ = self.submit(&mut st, std::mem::take(prep), |_, _, _| {});
                }
                Err(e)
            }
        }
    }

    /// Puts the records of one append where `plan` says: into the staged chunk, closing it
    /// and starting new chunks between parts as planned; the writes go into `prep`.
    fn place(
        &self,
        st: &mut State,
        prep: &mut Prepared,
        key: &ChunkKey,
        plan: AppendPlan,
        records: Records,
    ) {
        if plan.close_staged_first {
            self.close_staged(st, prep, key);
        }
        let single = plan.parts.len() == 1;
        let mut whole = Some(records);
        for part in plan.parts {
            if part.new_chunk || !st.staged.contains_key(key) {
                self.close_staged(st, prep, key);
                self.new_chunk(st, prep, key);
            }
            let Some(&id) = st.staged.get(key) else {
                continue;
            };
            let slice = match (single, whole.as_ref()) {
                (true, _) => whole.take().unwrap_or_default(),
                (false, Some(all)) => all.slice(part.range.clone()),
                (false, None) => Records::new(),
            };
            let n = slice.len() as u64;
            let Some(e) = st.chunks.get_mut(&id) else {
                continue;
            };
            e.meta.bytes += part.bytes;
            e.meta.records += n;
            st.bytes += part.bytes;
            st.records += n;
            prep.undo.push(Undo::Added {
                chunk: id,
                bytes: part.bytes,
                records: n,
            });
            prep.append(st, id, slice);
            if part.close_after {
                self.close_staged(st, prep, key);
            }
        }
    }

    /// Stores `records` in the open chunk of `key` (and new ones, per the policy's plan) and
    /// returns once they are durable.
    pub(super) async fn append(
        self: &Arc<Self>,
        key: &ChunkKey,
        records: Records,
    ) -> Result<(), AppendError> {
        if records.is_empty() {
            return Ok(());
        }
        // No room on the volume: refused before anything is counted or written (the client
        // is not acknowledged and resends).
        if let Some(reason) = self.store.refusing_appends() {
            return Err(StoreError::no_room(reason).into());
        }
        let mut prep = Prepared::default();
        let rx = {
            let mut st = self
                .reserve_room(records.byte_len() as u64, &mut prep)
                .await?;
            let st = &mut *st;
            let plan = match self.policy.plan(staged_size(st, key), &records) {
                Ok(p) => p,
                Err(e) => {
                    // Drops and closes decided above still have to reach the disk.
                    if !prep.ops.is_empty() {
                        self.submit(st, prep, |_, _, _| {})?;
                    }
                    return Err(e);
                }
            };
            self.place(st, &mut prep, key, plan, records);
            self.submit(st, prep, |_, _, _| {})?
        };
        match rx.await {
            Ok(res) => Ok(res?),
            Err(_) => Err(StoreError::WriterGone.into()),
        }
    }
}

/// Size of the open chunk of `key` an append may add to, if there is one.
fn staged_size(st: &State, key: &ChunkKey) -> Option<StagedSize> {
    st.staged
        .get(key)
        .and_then(|id| st.chunks.get(id))
        .map(|e| StagedSize {
            bytes: e.meta.bytes,
            records: e.meta.records,
        })
}

/// Moves the chunks the overflow policy dropped for room into `prep` as purges.
fn purge_dropped(st: &mut State, prep: &mut Prepared) {
    for chunk in st.dropped_for_room.drain(..) {
        prep.ops.push(Op::Purge { chunk });
    }
}
