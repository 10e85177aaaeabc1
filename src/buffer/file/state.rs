//! The in-memory bookkeeping of one output's chunks ([`State`], kept under the buffer's lock)
//! and the writes prepared under that lock ([`Prepared`]), sent to the writer in one request so
//! that they reach it in the order of the bookkeeping (invariant 5 of [`super`]).

use std::collections::{BTreeMap, VecDeque};
use std::sync::{Arc, OnceLock};

use super::codec::{self, ChunkMeta, StoredState};
use super::store::StoreError;
use super::writer::Op;
use crate::buffer::policy::Reservable;
use crate::buffer::{Backlog, ChunkId, ChunkKey, Records};

/// Where a chunk is in its life, in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Phase {
    /// Accepting appends (at most one per key, at most `max_open_chunks` per output).
    Staged,
    /// Waiting for a flush worker.
    Queued,
    /// Handed to a flush worker.
    InFlight,
    /// Committed; its purge is being written.
    Purging,
    /// Unreadable and could not be quarantined: kept on disk and in the accounting, never taken.
    Broken,
}

#[derive(Debug)]
pub(super) struct Entry {
    pub(super) meta: ChunkMeta,
    pub(super) phase: Phase,
    /// Writes sent to the writer and not yet durable. A chunk is taken only at 0, so a flush
    /// worker never reads a chunk whose data is still on its way to disk.
    pub(super) pending_writes: u32,
    /// Reads of its file that failed with an error that may be the disk's (not `EMFILE` and
    /// the like), in a row; at [`READ_ATTEMPTS`](super::queue::READ_ATTEMPTS) it is
    /// quarantined. In memory only: a restart starts over.
    pub(super) read_failures: u32,
    /// After a failed read, not taken before this time (Unix ms).
    pub(super) read_retry_at: u64,
}

/// Recovered backlog still to deliver (chunks up to `last_recovered`), for progress logs.
#[derive(Debug)]
pub(super) struct Replay {
    pub(super) last_recovered: ChunkId,
    pub(super) left: Backlog,
}

#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) next_id: u64,
    /// The open (staged) chunk of each key.
    pub(super) staged: BTreeMap<ChunkKey, ChunkId>,
    /// Open chunks closed early for `max_open_chunks`, since start.
    pub(super) closed_early_chunks: u64,
    pub(super) chunks: BTreeMap<ChunkId, Entry>,
    pub(super) bytes: u64,
    pub(super) records: u64,
    pub(super) dropped_chunks: u64,
    pub(super) dropped_records: u64,
    pub(super) quarantined_chunks: u64,
    /// Corrupt frames found in the middle of chunk files (their records lost, the rest kept).
    pub(super) corrupt_frames: u64,
    /// Unfinished ends of staged chunks cut at startup without a quarantine copy.
    pub(super) tails_cut_without_copy: u64,
    pub(super) replay: Option<Replay>,
    /// Chunks dropped by `drop_oldest_chunk` whose purge has not been handed to the writer yet.
    pub(super) dropped_for_room: Vec<ChunkId>,
    /// Appends and closes sent to the writer and not answered yet, oldest first, with what
    /// each changed in this bookkeeping (see [`Pending`]).
    pub(super) pending: VecDeque<Pending>,
}

/// One change an append or a close made to the bookkeeping before its write was durable,
/// undone if the write is refused for lack of room.
#[derive(Debug, Clone, Copy)]
pub(super) enum Undo {
    /// Records counted in a chunk.
    Added {
        /// The chunk.
        chunk: ChunkId,
        /// Logical bytes.
        bytes: u64,
        /// Records.
        records: u64,
    },
    /// A new staged chunk.
    Created(ChunkId),
    /// The staged chunk closed (queued).
    Closed(ChunkId),
}

/// An append or a close the writer has not answered yet.
///
/// When the writer refuses one for lack of room ([`StoreError::NoRoom`]), nothing of it
/// reached the disk, so its changes to the bookkeeping are undone; so are those of every later
/// pending one (they were prepared on top of it: an append to the chunk it created, a close
/// counting its records), which are cancelled through `cancel`: the writer then skips their
/// appends and closes and answers them with the same error. Purges and releases are never
/// pending here: they touch only chunks that were taken, which no pending write touches.
#[derive(Debug)]
pub(super) struct Pending {
    /// Set when cancelled; the writer checks it before it writes anything of the request.
    pub(super) cancel: Arc<OnceLock<StoreError>>,
    /// What to undo, in the order it was done.
    pub(super) undo: Vec<Undo>,
}

impl Reservable for State {
    fn used_bytes(&self) -> u64 {
        self.bytes
    }

    fn drop_oldest_queued(&mut self, output: &str) -> bool {
        let oldest = self
            .chunks
            .iter()
            .find(|(_, e)| e.phase == Phase::Queued)
            .map(|(&id, _)| id);
        let Some(id) = oldest else { return false };
        if let Some(e) = self.forget(id) {
            self.dropped_chunks += 1;
            self.dropped_records += e.meta.records;
            self.dropped_for_room.push(id);
            tracing::warn!(output, chunk = %id, records = e.meta.records, bytes = e.meta.bytes,
                "buffer full: dropped oldest queued chunk (overflow_action = drop_oldest_chunk)");
        }
        true
    }
}

impl State {
    /// Undoes `step` (see [`Pending`]). Chunks that are gone meanwhile (dropped for room) are
    /// skipped: forgetting them already took their counts out.
    pub(super) fn undo(&mut self, step: Undo) {
        match step {
            Undo::Added {
                chunk,
                bytes,
                records,
            } => {
                if let Some(e) = self.chunks.get_mut(&chunk) {
                    e.meta.bytes = e.meta.bytes.saturating_sub(bytes);
                    e.meta.records = e.meta.records.saturating_sub(records);
                    self.bytes = self.bytes.saturating_sub(bytes);
                    self.records = self.records.saturating_sub(records);
                }
            }
            Undo::Created(chunk) => {
                self.forget(chunk);
            }
            Undo::Closed(chunk) => {
                if let Some(e) = self.chunks.get_mut(&chunk) {
                    e.phase = Phase::Staged;
                    e.meta.state = StoredState::Staged;
                    self.staged.insert(e.meta.key.clone(), chunk);
                }
            }
        }
    }

    pub(super) fn forget(&mut self, id: ChunkId) -> Option<Entry> {
        let e = self.chunks.remove(&id)?;
        self.bytes = self.bytes.saturating_sub(e.meta.bytes);
        self.records = self.records.saturating_sub(e.meta.records);
        if self.staged.get(&e.meta.key) == Some(&id) {
            self.staged.remove(&e.meta.key);
        }
        if let Some(r) = self.replay.as_mut() {
            if id <= r.last_recovered {
                r.left.chunks = r.left.chunks.saturating_sub(1);
                r.left.records = r.left.records.saturating_sub(e.meta.records);
                r.left.bytes = r.left.bytes.saturating_sub(e.meta.bytes);
            }
            if r.left.chunks == 0 {
                self.replay = None;
            }
        }
        Some(e)
    }
}

/// Changes prepared under the state lock, sent to the writer in one request.
#[derive(Default)]
pub(super) struct Prepared {
    pub(super) ops: Vec<Op>,
    /// One entry per `pending_writes` increment.
    pub(super) touched: Vec<ChunkId>,
    /// The metadata must be durable before the request completes (see
    /// [`Request::sync_metadata`]); record data always is.
    pub(super) sync_metadata: bool,
    /// What to undo if the writer refuses it for lack of room (appends and closes only).
    pub(super) undo: Vec<Undo>,
}

impl Prepared {
    /// Writes chunk `id`'s current metadata.
    pub(super) fn put_meta(&mut self, st: &mut State, id: ChunkId) {
        if let Some(meta) = st.chunks.get(&id).map(|e| codec::encode_meta(&e.meta)) {
            self.write(st, id, Op::PutMeta { chunk: id, meta });
        }
    }

    /// Appends `records` to chunk `id`'s file (the caller has counted them in the metadata).
    pub(super) fn append(&mut self, st: &mut State, id: ChunkId, records: Records) {
        self.write(st, id, Op::Append { chunk: id, records });
    }

    /// Adds a write to chunk `id`, counted in its `pending_writes` until it is durable.
    pub(super) fn write(&mut self, st: &mut State, id: ChunkId, op: Op) {
        if let Some(e) = st.chunks.get_mut(&id) {
            self.ops.push(op);
            e.pending_writes += 1;
            self.touched.push(id);
        }
    }
}
