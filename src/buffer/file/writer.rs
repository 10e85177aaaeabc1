//! The single group-commit writer of a buffer database.
//!
//! Every change to the buffer (new chunks, appends, metadata updates, purges) is a [`Request`]
//! sent to one thread. The thread takes whatever requests are waiting and commits them as one
//! group:
//!
//! 1. record data is appended to the chunk files (new files get their header first), and each
//!    file written is `fdatasync`ed; if files were created, their directory is fsynced;
//! 2. metadata changes become one `sled::Batch` per tree; if there are any, they are applied,
//!    `Db::flush()`ed and the database file itself is `fdatasync`ed (`flush()` alone is only
//!    `sync_file_range`, see DESIGN.md);
//! 3. files of purged chunks are deleted (their metadata is already gone for good; a crash
//!    before the delete leaves an orphan file that recovery removes);
//! 4. only then does every request's completion run.
//!
//! So N concurrent appends cost one fdatasync, not N, and a completion never runs before its
//! bytes are on stable storage. Data is made durable before the metadata that counts it, so
//! metadata never claims records that are not on disk.
//!
//! Within one group, all records appended to the same chunk become one contiguous byte run,
//! written with one `write` as frames of at most 256 KiB ([`codec::encode_frames`]).
//!
//! Requests are applied in the order they were sent. Senders hold their buffer's state lock
//! while sending, so the order on disk is the order of the in-memory bookkeeping.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, TryRecvError};
use std::sync::{Arc, OnceLock};

use sled::{Batch, IVec, Tree};

use super::codec::{self, chunk_data_prefix, meta_key};
use super::store::{chunk_file, StoreError};
use crate::buffer::{ChunkId, Records};
use crate::fsutil::sync_dir;

/// A group stops collecting requests once it holds this many record bytes, bounding the
/// writer's memory under a flood of appends.
const MAX_GROUP_BYTES: usize = 64 << 20;

/// One change to an output's chunks.
#[derive(Debug)]
pub(crate) enum Op {
    /// Creates the chunk's file (with its header only). Always sent before the chunk's first
    /// append and together with its first metadata.
    Create {
        /// The chunk.
        chunk: ChunkId,
    },
    /// Records added to the end of a chunk's file.
    Append {
        /// The chunk.
        chunk: ChunkId,
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
    /// Deletes a chunk: its metadata and any sled data values durably, then its file.
    Purge {
        /// The chunk.
        chunk: ChunkId,
    },
    /// Deletes one key that names no chunk (a malformed key found at recovery).
    RemoveKey(Vec<u8>),
}

/// Runs once the request is durable (or failed), on the writer thread: keep it short.
pub(crate) type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Changes to one output, applied together with the rest of their group.
pub(crate) struct Request {
    /// The output's metadata tree.
    pub tree: Tree,
    /// The output's chunk-file directory.
    pub dir: Arc<Path>,
    /// The changes, in order.
    pub ops: Vec<Op>,
    /// Called after the group is durable.
    pub done: Completion,
}

/// What one group does to one output.
struct OutputGroup {
    tree: Tree,
    dir: Arc<Path>,
    batch: Batch,
    batch_ops: usize,
    created: BTreeSet<ChunkId>,
    appended: BTreeMap<ChunkId, Records>,
    purged: Vec<ChunkId>,
}

/// The writer loop: runs until every sender is gone. `failed` is set on the first error; from
/// then on every request fails at once (the state of a file or of sled after an I/O error is
/// unknown, so the process must restart and recover from disk). `commits` counts group commits.
pub(crate) fn run(
    db: sled::Db,
    db_file: File,
    rx: Receiver<Request>,
    failed: Arc<OnceLock<String>>,
    commits: Arc<AtomicU64>,
) {
    let mut frames = Vec::new();
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
            None => commit(&db, &db_file, group, &mut completions, &mut frames),
        };
        // Keep the frame buffer for the next group, but not a flood's worth of it.
        if frames.capacity() > 4 * codec::MAX_VALUE_DATA {
            frames = Vec::new();
        }
        commits.fetch_add(1, Ordering::Relaxed);
        if let Err(e) = &result {
            if failed.set(e.to_string()).is_ok() {
                tracing::error!(error = %e, "buffer write failed; appends are refused until restart");
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

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::Io(format!("{what} {}: {e}", path.display()))
}

/// Applies one group (see the module comment). Moves each request's completion into
/// `completions` whatever happens, so the caller can always answer every request.
fn commit(
    db: &sled::Db,
    db_file: &File,
    group: Vec<Request>,
    completions: &mut Vec<Completion>,
    frames: &mut Vec<u8>,
) -> Result<(), StoreError> {
    let mut outputs: Vec<OutputGroup> = Vec::new();
    let mut first_error = None;
    for req in group {
        completions.push(req.done);
        if first_error.is_some() {
            continue;
        }
        let name = req.tree.name();
        let idx = match outputs.iter().position(|t| t.tree.name() == name) {
            Some(i) => i,
            None => {
                outputs.push(OutputGroup {
                    tree: req.tree,
                    dir: req.dir,
                    batch: Batch::default(),
                    batch_ops: 0,
                    created: BTreeSet::new(),
                    appended: BTreeMap::new(),
                    purged: Vec::new(),
                });
                outputs.len() - 1
            }
        };
        if let Err(e) = add_ops(&mut outputs[idx], req.ops) {
            first_error = Some(e);
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }

    // 1. Data, durable before any metadata that counts it.
    for out in &outputs {
        write_files(out, frames)?;
        if !out.created.is_empty() {
            sync_dir(&out.dir).map_err(|e| io_error("fsync", &out.dir, e))?;
        }
    }
    // 2. Metadata.
    let mut metadata_changed = false;
    for out in &mut outputs {
        if out.batch_ops > 0 {
            out.tree.apply_batch(std::mem::take(&mut out.batch))?;
            metadata_changed = true;
        }
    }
    if metadata_changed {
        db.flush()?;
        db_file
            .sync_data()
            .map_err(|e| StoreError::Io(format!("fdatasync of the buffer database: {e}")))?;
    }
    // 3. Files of purged chunks: nothing refers to them any more.
    for out in &outputs {
        for &chunk in &out.purged {
            let path = chunk_file(&out.dir, chunk);
            match std::fs::remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => tracing::warn!(file = %path.display(), error = %e,
                    "buffer: cannot delete the file of a delivered chunk; it is removed at the next start"),
            }
        }
    }
    Ok(())
}

/// Creates and appends to the chunk files of one output, then fdatasyncs each of them.
fn write_files(out: &OutputGroup, frames: &mut Vec<u8>) -> Result<(), StoreError> {
    let touched: BTreeSet<ChunkId> = out
        .created
        .iter()
        .chain(out.appended.keys())
        .copied()
        .collect();
    for chunk in touched {
        let path: PathBuf = chunk_file(&out.dir, chunk);
        frames.clear();
        let created = out.created.contains(&chunk);
        if created {
            frames.extend_from_slice(&codec::chunk_file_header(chunk));
        }
        if let Some(records) = out.appended.get(&chunk) {
            codec::encode_frames(records, frames);
        }
        let mut file = if created {
            OpenOptions::new().write(true).create_new(true).open(&path)
        } else {
            OpenOptions::new().append(true).open(&path)
        }
        .map_err(|e| io_error("open", &path, e))?;
        file.write_all(frames)
            .map_err(|e| io_error("write", &path, e))?;
        file.sync_data()
            .map_err(|e| io_error("fdatasync", &path, e))?;
    }
    Ok(())
}

fn add_ops(g: &mut OutputGroup, ops: Vec<Op>) -> Result<(), StoreError> {
    for op in ops {
        match op {
            Op::Create { chunk } => {
                g.created.insert(chunk);
            }
            Op::Append { chunk, records } => match g.appended.get_mut(&chunk) {
                Some(pending) => pending
                    .extend(&records)
                    .map_err(|e| StoreError::Io(e.to_string()))?,
                None => {
                    g.appended.insert(chunk, records);
                }
            },
            Op::PutMeta { chunk, meta } => {
                g.batch.insert(&meta_key(chunk)[..], meta);
                g.batch_ops += 1;
            }
            Op::Purge { chunk } => {
                // A chunk created and purged in the same group never reaches the disk.
                g.appended.remove(&chunk);
                if !g.created.remove(&chunk) {
                    g.purged.push(chunk);
                }
                // Data values of a chunk written by the first release (DataStorage::SledValues).
                for key in g.tree.scan_prefix(chunk_data_prefix(chunk)).keys() {
                    let key: IVec = key?;
                    g.batch.remove(key);
                }
                g.batch.remove(&meta_key(chunk)[..]);
                g.batch_ops += 1;
            }
            Op::RemoveKey(key) => {
                g.batch.remove(key);
                g.batch_ops += 1;
            }
        }
    }
    Ok(())
}
