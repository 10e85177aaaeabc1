//! The append path of [`FileBuffer`](super::FileBuffer): room is reserved (per
//! `overflow_action`), the policy plans where the records go, they are placed into the staged
//! chunk (closing it and starting new chunks as planned), and the writes go to the writer
//! thread in one request; the append returns once they are durable.

use std::sync::{Arc, MutexGuard};

use super::super::codec::{ChunkMeta, DataStorage, StoredState};
use super::super::state::{Entry, Phase, Prepared, State, Undo};
use super::super::store::StoreError;
use super::super::writer::Op;
use super::Inner;
use crate::buffer::policy::{AppendPlan, StagedSize};
use crate::buffer::{now_ms, AppendError, ChunkId, DeliveredSet, Records, RetryState};

impl Inner {
    /// Starts a new staged chunk: its file is created with the first append. A staged chunk
    /// has no metadata on disk (appends touch only its file; recovery counts a staged chunk
    /// from its file); it is written when the chunk closes.
    fn new_chunk(&self, st: &mut State, prep: &mut Prepared) -> ChunkId {
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
        st.staged = Some(id);
        prep.undo.push(Undo::Created(id));
        prep.ops.push(Op::Create {
            chunk: id,
            created_ms,
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
    fn place(&self, st: &mut State, prep: &mut Prepared, plan: AppendPlan, records: Records) {
        if plan.close_staged_first {
            self.close_staged(st, prep);
        }
        let single = plan.parts.len() == 1;
        let mut whole = Some(records);
        for part in plan.parts {
            if part.new_chunk {
                self.close_staged(st, prep);
                self.new_chunk(st, prep);
            }
            let Some(id) = st.staged else { continue };
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
                self.close_staged(st, prep);
            }
        }
    }

    /// Stores `records` in the staged chunk (and new ones, per the policy's plan) and returns
    /// once they are durable.
    pub(super) async fn append(self: &Arc<Self>, records: Records) -> Result<(), AppendError> {
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
            let plan = match self.policy.plan(staged_size(st), &records) {
                Ok(p) => p,
                Err(e) => {
                    // Drops and closes decided above still have to reach the disk.
                    if !prep.ops.is_empty() {
                        self.submit(st, prep, |_, _, _| {})?;
                    }
                    return Err(e);
                }
            };
            self.place(st, &mut prep, plan, records);
            self.submit(st, prep, |_, _, _| {})?
        };
        match rx.await {
            Ok(res) => Ok(res?),
            Err(_) => Err(StoreError::WriterGone.into()),
        }
    }
}

/// Size of the staged chunk an append may add to, if there is one.
fn staged_size(st: &State) -> Option<StagedSize> {
    st.staged
        .and_then(|id| st.chunks.get(&id))
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
