//! The single group-commit writer of a buffer database.
//!
//! Every change to the database (appends, metadata updates, purges) is a [`Request`] sent to
//! one thread. The thread takes whatever requests are waiting, turns them into one
//! `sled::Batch` per tree, applies them, calls `Db::flush()` and then `fdatasync`s the database
//! file itself (`flush()` alone is only `sync_file_range`, see DESIGN.md), and only then runs
//! every request's completion. So N concurrent appends cost one fsync, not N, and a completion
//! never runs before its bytes are on stable storage.
//!
//! Within one group, all records appended to the same chunk become one contiguous byte run,
//! written as values of at most 256 KiB ([`codec::split_values`]): a group of 1,000 one-record
//! appends to the same chunk is one key, not 1,000.
//!
//! Requests are applied in the order they were sent. Senders hold their buffer's state lock
//! while sending, so the order on disk is the order of the in-memory bookkeeping.

use std::collections::BTreeMap;
use std::fs::File;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, OnceLock};

use sled::{Batch, IVec, Tree};

use super::codec::{self, chunk_data_prefix, data_key, meta_key};
use super::store::StoreError;
use crate::buffer::{ChunkId, Records};

/// A group stops collecting requests once it holds this many record bytes, bounding the
/// writer's memory under a flood of appends.
const MAX_GROUP_BYTES: usize = 64 << 20;

/// One change to a tree.
#[derive(Debug)]
pub(crate) enum Op {
    /// Records added to a chunk. `first_seq` is the first of the data-key sequence numbers the
    /// sender reserved for them (at least one per started 256 KiB).
    Append {
        /// The chunk.
        chunk: ChunkId,
        /// First reserved sequence number.
        first_seq: u32,
        /// The records.
        records: Records,
    },
    /// New metadata of a chunk (the last one in a group wins).
    PutMeta {
        /// The chunk.
        chunk: ChunkId,
        /// [`codec::encode_meta`] output.
        meta: Vec<u8>,
    },
    /// Deletes a chunk's data values and metadata.
    Purge {
        /// The chunk.
        chunk: ChunkId,
    },
    /// Deletes one key that names no chunk (a malformed key found at recovery).
    RemoveKey(Vec<u8>),
}

/// Runs once the request is durable (or failed), on the writer thread: keep it short.
pub(crate) type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Changes to one tree, applied atomically together with the rest of their group.
pub(crate) struct Request {
    /// The output's tree.
    pub tree: Tree,
    /// The changes, in order.
    pub ops: Vec<Op>,
    /// Called after the group's fsync.
    pub done: Completion,
}

/// Records appended to one chunk during one group.
struct Pending {
    first_seq: u32,
    records: Records,
}

/// What one group does to one tree.
struct TreeGroup {
    tree: Tree,
    batch: Batch,
    pending: BTreeMap<ChunkId, Pending>,
}

/// The writer loop: runs until every sender is gone. `failed` is set on the first error; from
/// then on every request fails at once (sled's state after an I/O error is unknown, so the
/// process must restart and recover from disk). `commits` counts group commits.
pub(crate) fn run(
    db: sled::Db,
    db_file: File,
    rx: Receiver<Request>,
    failed: Arc<OnceLock<String>>,
    commits: Arc<AtomicU64>,
) {
    while let Ok(first) = rx.recv() {
        let mut group = vec![first];
        let mut bytes = group_bytes(&group[0]);
        while bytes < MAX_GROUP_BYTES {
            match rx.try_recv() {
                Ok(r) => {
                    bytes += group_bytes(&r);
                    group.push(r);
                }
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
            }
        }
        let mut completions = Vec::with_capacity(group.len());
        let result = match failed.get() {
            Some(msg) => Err(StoreError::Failed(msg.clone())),
            None => commit(&db, &db_file, group, &mut completions),
        };
        commits.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            if failed.set(e.to_string()).is_ok() {
                tracing::error!(error = %e, "buffer database write failed; appends are refused until restart");
            }
        }
        for done in completions {
            done(result.clone());
        }
    }
}

fn group_bytes(r: &Request) -> usize {
    r.ops
        .iter()
        .map(|op| match op {
            Op::Append { records, .. } => records.byte_len(),
            _ => 0,
        })
        .sum()
}

/// Applies one group: batches, flush, fdatasync. Moves each request's completion into
/// `completions` whatever happens, so the caller can always answer every request.
fn commit(
    db: &sled::Db,
    db_file: &File,
    group: Vec<Request>,
    completions: &mut Vec<Completion>,
) -> Result<(), StoreError> {
    let mut trees: Vec<TreeGroup> = Vec::new();
    let mut first_error = None;
    for req in group {
        completions.push(req.done);
        if first_error.is_some() {
            continue;
        }
        let name = req.tree.name();
        let idx = match trees.iter().position(|t| t.tree.name() == name) {
            Some(i) => i,
            None => {
                trees.push(TreeGroup {
                    tree: req.tree,
                    batch: Batch::default(),
                    pending: BTreeMap::new(),
                });
                trees.len() - 1
            }
        };
        if let Err(e) = add_ops(&mut trees[idx], req.ops) {
            first_error = Some(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    for t in trees {
        let TreeGroup {
            tree,
            mut batch,
            pending,
        } = t;
        for (chunk, p) in pending {
            for (i, value) in codec::split_values(&p.records).into_iter().enumerate() {
                // The sender reserved enough sequence numbers for these values.
                let seq = p.first_seq.saturating_add(i as u32);
                batch.insert(&data_key(chunk, seq)[..], value);
            }
        }
        tree.apply_batch(batch)?;
    }
    db.flush()?;
    db_file
        .sync_data()
        .map_err(|e| StoreError::Io(format!("fdatasync of the buffer database: {e}")))?;
    Ok(())
}

fn add_ops(t: &mut TreeGroup, ops: Vec<Op>) -> Result<(), StoreError> {
    for op in ops {
        match op {
            Op::Append {
                chunk,
                first_seq,
                records,
            } => match t.pending.get_mut(&chunk) {
                Some(p) => p
                    .records
                    .extend(&records)
                    .map_err(|e| StoreError::Io(e.to_string()))?,
                None => {
                    t.pending.insert(chunk, Pending { first_seq, records });
                }
            },
            Op::PutMeta { chunk, meta } => t.batch.insert(&meta_key(chunk)[..], meta),
            Op::Purge { chunk } => {
                t.pending.remove(&chunk);
                for key in t.tree.scan_prefix(chunk_data_prefix(chunk)).keys() {
                    let key: IVec = key?;
                    t.batch.remove(key);
                }
                t.batch.remove(&meta_key(chunk)[..]);
            }
            Op::RemoveKey(key) => t.batch.remove(key),
        }
    }
    Ok(())
}
