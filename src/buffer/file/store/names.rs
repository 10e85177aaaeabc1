//! The names of the files in an output's chunk directory: `<chunk id>.chunk` and the purge
//! markers `<chunk id>.purged`, and the chunk ids they name.

use std::path::{Path, PathBuf};

use sled::Tree;

use super::super::codec::{self, META_PREFIX};
use super::StoreError;
use crate::buffer::ChunkId;

/// File name extension of chunk files.
const CHUNK_EXT: &str = "chunk";
/// File name extension of the file of a chunk being purged: renamed from `.chunk` before the
/// chunk's metadata is removed, deleted (or kept for reuse by a new chunk) once that removal
/// is durable.
const PURGED_EXT: &str = "purged";

/// The file of chunk `chunk` in an output's chunk directory: `<16 hex digits>.chunk`, so that
/// a directory listing is in chunk (age) order.
pub(crate) fn chunk_file(dir: &Path, chunk: ChunkId) -> PathBuf {
    dir.join(format!("{chunk}.{CHUNK_EXT}"))
}

/// The file a purge renames chunk `chunk`'s file to: `<16 hex digits>.purged`. It marks a
/// purge in progress: it exists from before the chunk's metadata is removed until that removal
/// is durable (then it may wait in the writer's pool for a new chunk, as a marker of a finished
/// purge, which recovery deletes), so recovery tells a purge cut short (metadata and this file) from a chunk file
/// lost outside the relay (metadata and no file at all).
pub(crate) fn purged_file(dir: &Path, chunk: ChunkId) -> PathBuf {
    dir.join(format!("{chunk}.{PURGED_EXT}"))
}

/// The chunk id named by `name` if it is a chunk's file name with extension `ext`.
fn chunk_of_name(name: &std::ffi::OsStr, ext: &str) -> Option<ChunkId> {
    let name = name.to_str()?;
    let hex = name.strip_suffix(ext)?.strip_suffix('.')?;
    if hex.len() != 16 {
        return None;
    }
    u64::from_str_radix(hex, 16).ok().map(ChunkId)
}

/// The chunk ids that have a file in `dir`, in order.
pub(crate) fn chunk_files(dir: &Path) -> Result<Vec<ChunkId>, StoreError> {
    files_with(dir, CHUNK_EXT)
}

/// The chunk ids that have a `.purged` file in `dir` ([`purged_file`]), in order.
pub(crate) fn purged_files(dir: &Path) -> Result<Vec<ChunkId>, StoreError> {
    files_with(dir, PURGED_EXT)
}

fn files_with(dir: &Path, ext: &str) -> Result<Vec<ChunkId>, StoreError> {
    let io = |e: std::io::Error| StoreError::io(format!("list {}", dir.display()), e);
    let mut ids = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        if let Some(id) = chunk_of_name(&entry.map_err(io)?.file_name(), ext) {
            ids.push(id);
        }
    }
    ids.sort_unstable();
    Ok(ids)
}

/// The largest chunk id with metadata, sled data or a file of `output`, so that new chunks
/// never reuse the id of something still on disk.
pub(crate) fn max_chunk_id(tree: &Tree, dir: &Path) -> Result<Option<ChunkId>, StoreError> {
    let mut max = chunk_files(dir)?.last().copied();
    for prefix in [codec::DATA_PREFIX, META_PREFIX] {
        if let Some(kv) = tree.scan_prefix([prefix]).next_back() {
            let (k, _) = kv?;
            if let Ok(id) = codec::chunk_of_key(&k) {
                max = max.max(Some(id));
            }
        }
    }
    Ok(max)
}
