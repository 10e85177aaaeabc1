//! How a group's requests become what the writer applies: one [`Part`] per request (a
//! cancelled request keeps only its purges), the parts without their data for when the data
//! finds no room ([`without_data`]), and the changes gathered per output ([`OutputGroup`]).

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use sled::{IVec, Tree};

use super::super::codec::{chunk_data_prefix, meta_key};
use super::super::store::StoreError;
use super::{Completion, Op, Request};
use crate::buffer::{ChunkId, Records};

/// A request's changes as one group applies them. `answer` is the index of the request's
/// completion, `None` for the purges of a cancelled request (answered already).
pub(super) struct Part {
    pub(super) tree: Tree,
    pub(super) dir: Arc<Path>,
    pub(super) ops: Vec<Op>,
    pub(super) sync_metadata: bool,
    /// Creates or appends to chunk files, or is an append/close of a buffer: refused as a whole
    /// when the volume has no room.
    pub(super) data: bool,
    pub(super) answer: Option<usize>,
}

/// The completions of a group, each with its answer once known.
pub(super) type Answers = Vec<(Completion, Option<Result<(), StoreError>>)>;

/// What one group does to one output.
pub(super) struct OutputGroup {
    pub(super) tree: Tree,
    pub(super) dir: Arc<Path>,
    /// Metadata changes in order: `Some` inserts, `None` removes.
    pub(super) meta: Vec<(IVec, Option<IVec>)>,
    /// Chunk files to create, with their headers.
    pub(super) created: BTreeMap<ChunkId, Vec<u8>>,
    pub(super) appended: BTreeMap<ChunkId, Records>,
    pub(super) purged: Vec<ChunkId>,
    /// Chunks that got metadata: closed, never appended to again.
    pub(super) sealed: Vec<ChunkId>,
}

/// Splits a group into the parts to apply and the completions to answer. A cancelled request
/// (an earlier append it depends on was refused) is answered with that error at once; only its
/// purges still run.
pub(super) fn into_parts(group: Vec<Request>) -> (Answers, Vec<Part>) {
    let mut answers: Answers = Vec::with_capacity(group.len());
    let mut parts = Vec::with_capacity(group.len());
    for req in group {
        let cancelled = req.cancel.as_ref().and_then(|c| c.get().cloned());
        let data = req.cancel.is_some()
            || req
                .ops
                .iter()
                .any(|op| matches!(op, Op::Create { .. } | Op::Append { .. }));
        let index = answers.len();
        match cancelled {
            Some(e) => {
                answers.push((req.done, Some(Err(e))));
                let purges = purges_of(&req.ops);
                if !purges.is_empty() {
                    parts.push(Part {
                        tree: req.tree,
                        dir: req.dir,
                        ops: purges,
                        sync_metadata: false,
                        data: false,
                        answer: None,
                    });
                }
            }
            None => {
                answers.push((req.done, None));
                parts.push(Part {
                    tree: req.tree,
                    dir: req.dir,
                    ops: req.ops,
                    sync_metadata: req.sync_metadata,
                    data,
                    answer: Some(index),
                });
            }
        }
    }
    (answers, parts)
}

/// What is committed again when the data of `parts` finds no room: everything but the data
/// (the purges of data parts, and the other parts whole).
pub(super) fn without_data(parts: &[Part]) -> Vec<Part> {
    parts
        .iter()
        .filter_map(|p| {
            let ops = if p.data {
                purges_of(&p.ops)
            } else {
                p.ops.clone()
            };
            (!ops.is_empty()).then(|| Part {
                tree: p.tree.clone(),
                dir: Arc::clone(&p.dir),
                ops,
                sync_metadata: p.sync_metadata,
                data: false,
                answer: if p.data { None } else { p.answer },
            })
        })
        .collect()
}

/// The changes of `parts`, grouped by output.
pub(super) fn by_output(parts: Vec<Part>) -> Result<Vec<OutputGroup>, StoreError> {
    let mut outputs: Vec<OutputGroup> = Vec::new();
    for part in parts {
        let name = part.tree.name();
        let idx = match outputs.iter().position(|t| t.tree.name() == name) {
            Some(i) => i,
            None => {
                outputs.push(OutputGroup {
                    tree: part.tree,
                    dir: part.dir,
                    meta: Vec::new(),
                    created: BTreeMap::new(),
                    appended: BTreeMap::new(),
                    purged: Vec::new(),
                    sealed: Vec::new(),
                });
                outputs.len() - 1
            }
        };
        add_ops(&mut outputs[idx], part.ops)?;
    }
    Ok(outputs)
}

/// The purges of `ops` (what still runs of a request whose data is refused or cancelled).
fn purges_of(ops: &[Op]) -> Vec<Op> {
    ops.iter()
        .filter(|op| matches!(op, Op::Purge { .. }))
        .cloned()
        .collect()
}

/// Adds `ops` to what the group does to `g`'s output.
fn add_ops(g: &mut OutputGroup, ops: Vec<Op>) -> Result<(), StoreError> {
    for op in ops {
        match op {
            Op::Create { chunk, header } => {
                g.created.insert(chunk, header);
            }
            Op::Append { chunk, records } => match g.appended.get_mut(&chunk) {
                Some(pending) => pending.extend(&records)?,
                None => {
                    g.appended.insert(chunk, records);
                }
            },
            Op::PutMeta { chunk, meta } => {
                g.sealed.push(chunk);
                g.meta
                    .push((IVec::from(&meta_key(chunk)[..]), Some(IVec::from(meta))));
            }
            Op::Purge { chunk } => {
                // A chunk created and purged in the same group never reaches the disk.
                g.appended.remove(&chunk);
                if g.created.remove(&chunk).is_none() {
                    g.purged.push(chunk);
                }
                // Data values of a chunk written by the first release (DataStorage::SledValues).
                for key in g.tree.scan_prefix(chunk_data_prefix(chunk)).keys() {
                    g.meta.push((key?, None));
                }
                g.meta.push((IVec::from(&meta_key(chunk)[..]), None));
            }
            Op::RemoveKey(key) => {
                g.meta.push((IVec::from(key), None));
            }
        }
    }
    Ok(())
}
