//! Read-only views of a stopped relay's buffer for `firehose-relay buffer stats|dump`.
//! Nothing here modifies the buffer; unreadable entries are reported, not quarantined (that
//! is the running relay's job).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;

use serde::Serialize;

use super::codec::{self, ChunkMeta, DataStorage, StoredState, META_PREFIX};
use super::read;
use super::store::{chunk_file, chunk_files, Store, StoreError};
use crate::buffer::{ChunkId, Records};

/// Contents of one output's queue on disk.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct OutputReport {
    /// Output name.
    pub output: String,
    /// Chunks that were accepting appends when the relay stopped (queued at the next start).
    pub staged_chunks: u64,
    /// Closed chunks waiting for delivery.
    pub queued_chunks: u64,
    /// Chunks that failed delivery at least once.
    pub retrying_chunks: u64,
    /// Records kept.
    pub records: u64,
    /// Of those, records already delivered (partial delivery; not sent again).
    pub delivered_records: u64,
    /// Logical bytes kept (what `total_limit_size` limits).
    pub bytes: u64,
    /// Creation time (Unix ms) of the oldest chunk.
    pub oldest_created_ms: Option<u64>,
    /// Chunks whose metadata cannot be read (quarantined at the next start).
    pub unreadable_chunks: u64,
}

/// One chunk's metadata, or why it cannot be read.
pub type ChunkListing = Vec<(ChunkId, Result<ChunkMeta, String>)>;

/// The chunks of output `output`, oldest first. Closed chunks are described by their metadata
/// alone; a staged chunk has no metadata, so it is described from its file. A closed chunk
/// whose file is gone was delivered (its purge was cut short) and is not listed.
pub fn chunks(store: &Store, output: &str) -> Result<ChunkListing, StoreError> {
    let tree = store.tree(output)?;
    let dir = store.chunk_dir_path(output);
    let files = if dir.is_dir() {
        chunk_files(&dir)?
    } else {
        Vec::new()
    };
    let mut listed = BTreeMap::new();
    for kv in tree.scan_prefix([META_PREFIX]) {
        let (k, v) = kv?;
        let id = codec::chunk_of_key(&k).unwrap_or(ChunkId(0));
        let meta = codec::decode_meta(&v).map_err(|e| e.to_string());
        let delivered = matches!(&meta, Ok(m) if m.storage == DataStorage::File
            && m.state == StoredState::Queued
            && files.binary_search(&id).is_err());
        if !delivered {
            listed.insert(id, meta);
        }
    }
    for id in files {
        listed
            .entry(id)
            .or_insert_with(|| staged_from_file(&dir, id));
    }
    Ok(listed.into_iter().collect())
}

/// Describes a staged chunk from its file (its complete records).
fn staged_from_file(dir: &Path, id: ChunkId) -> Result<ChunkMeta, String> {
    let bytes = std::fs::read(chunk_file(dir, id)).map_err(|e| e.to_string())?;
    let scan =
        codec::scan_chunk_file(&bytes, id, codec::FileEnd::MayBeTorn).map_err(|e| e.to_string())?;
    Ok(scan.meta(StoredState::Staged))
}

/// Per-output summary of everything in the buffer (metadata, and the files of staged chunks).
pub fn stats(store: &Store) -> Result<Vec<OutputReport>, StoreError> {
    let mut reports = Vec::new();
    for output in store.outputs() {
        let mut r = OutputReport {
            output: output.clone(),
            ..OutputReport::default()
        };
        for (_, meta) in chunks(store, &output)? {
            let Ok(m) = meta else {
                r.unreadable_chunks += 1;
                continue;
            };
            match m.state {
                StoredState::Staged => r.staged_chunks += 1,
                StoredState::Queued => r.queued_chunks += 1,
            }
            r.retrying_chunks += u64::from(m.retry.failures > 0);
            r.records += m.records;
            r.delivered_records += m.delivered.count() as u64;
            r.bytes += m.bytes;
            r.oldest_created_ms = Some(
                r.oldest_created_ms
                    .map_or(m.created_ms, |o| o.min(m.created_ms)),
            );
        }
        reports.push(r);
    }
    Ok(reports)
}

/// Reads and verifies one chunk's records (of a staged chunk: its complete records; records
/// lost to corrupt frames in the middle of a chunk are left out).
pub fn read_chunk(store: &Store, output: &str, id: ChunkId) -> Result<Records, String> {
    let tree = store.tree(output).map_err(|e| e.to_string())?;
    let meta = match tree.get(codec::meta_key(id)).map_err(|e| e.to_string())? {
        Some(m) => Some(codec::decode_meta(&m).map_err(|e| format!("chunk {id}: metadata: {e}"))?),
        None => None,
    };
    let path = chunk_file(&store.chunk_dir_path(output), id);
    if meta.is_none() && !path.exists() {
        return Err(format!("output `{output}` has no chunk {id}"));
    }
    let back = read::read_chunk(store.fs(), &tree, &path, id, meta.as_ref())
        .map_err(|e| format!("chunk {id}: data: {e}"))?;
    match back.lost {
        None => Ok(back.records),
        Some(lost) => {
            let (from, to) = (lost.records.start as usize, lost.records.end as usize);
            let mut kept = back.records.slice(0..from);
            kept.extend(&back.records.slice(to..back.records.len()))
                .map_err(|e| format!("chunk {id}: {e}"))?;
            Ok(kept)
        }
    }
}

/// Writes the records of `chunk` (or of every chunk, oldest first) as NDJSON: each record on
/// its own line (records are stored formatted; a newline is added where one is missing).
/// Returns the number of records written and the problems met (unreadable chunks are skipped).
pub fn dump(
    store: &Store,
    output: &str,
    chunk: Option<ChunkId>,
    out: &mut dyn Write,
) -> std::io::Result<(u64, Vec<String>)> {
    let ids: Vec<ChunkId> = match chunk {
        Some(id) => vec![id],
        None => chunks(store, output)
            .map_err(std::io::Error::other)?
            .into_iter()
            .map(|(id, _)| id)
            .collect(),
    };
    let mut written = 0u64;
    let mut problems = Vec::new();
    for id in ids {
        match read_chunk(store, output, id) {
            Ok(records) => {
                for r in records.iter() {
                    out.write_all(r)?;
                    if !r.ends_with(b"\n") {
                        out.write_all(b"\n")?;
                    }
                    written += 1;
                }
            }
            Err(e) => problems.push(e),
        }
    }
    Ok((written, problems))
}

/// Parses a chunk id as printed by `buffer stats`/logs (16 hex digits) or as a decimal number.
pub fn parse_chunk_id(s: &str) -> Option<ChunkId> {
    if s.len() == 16 {
        if let Ok(v) = u64::from_str_radix(s, 16) {
            return Some(ChunkId(v));
        }
    }
    s.parse().ok().map(ChunkId)
}
