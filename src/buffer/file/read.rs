//! Reading a chunk's records back, verified: from its chunk file, or from the sled values of a
//! chunk written by the first release. Used when a flush worker takes a chunk and by
//! `buffer dump`.

use std::path::Path;

use sled::Tree;

use super::codec::{self, chunk_data_prefix, ChunkMeta, DataStorage, StoredState};
use super::store::StoreError;
use crate::buffer::{ChunkId, Records};
use crate::fsutil::Filesystem;

/// Why a chunk's data could not be read.
pub(crate) enum ReadError {
    /// The store failed; the chunk may be fine.
    Storage(StoreError),
    /// The stored bytes are wrong; the chunk must be quarantined.
    Corrupt(String),
}

impl std::fmt::Display for ReadError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ReadError::Storage(e) => e.fmt(f),
            ReadError::Corrupt(why) => f.write_str(why),
        }
    }
}

/// Reads and verifies all records of chunk `id` (blocking): from its file at `path` or, for a
/// chunk written by the first release, from its sled values. A closed chunk (metadata queued)
/// must hold exactly what its metadata counts; a staged one (no metadata, or staged) is read up
/// to its last complete record.
pub(crate) fn read_chunk(
    fs: &impl Filesystem,
    tree: &Tree,
    path: &Path,
    id: ChunkId,
    meta: Option<&ChunkMeta>,
) -> Result<Records, ReadError> {
    let corrupt = |e: codec::CodecError| ReadError::Corrupt(e.to_string());
    if let Some(meta) = meta.filter(|m| m.storage != DataStorage::File) {
        let mut values = Vec::new();
        for kv in tree.scan_prefix(chunk_data_prefix(id)) {
            let (_, v) = kv.map_err(|e| ReadError::Storage(e.into()))?;
            values.push(v);
        }
        return codec::assemble(values.iter().map(|v| v.as_ref()), meta.records, meta.bytes)
            .map_err(corrupt);
    }
    let bytes = fs.read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            ReadError::Corrupt(format!("chunk file {} is missing", path.display()))
        }
        _ => ReadError::Storage(StoreError::io(format!("read {}", path.display()), e)),
    })?;
    let scan = codec::scan_chunk_file(&bytes, id).map_err(corrupt)?;
    match meta.filter(|m| m.state == StoredState::Queued) {
        Some(meta) => {
            if let Some(e) = scan.tail {
                // A closed chunk's file was complete and synced before it closed.
                return Err(corrupt(e));
            }
            codec::assemble_decoded(scan.values, meta.records, meta.bytes).map_err(corrupt)
        }
        None => {
            let (records, bytes) = (scan.records, scan.bytes);
            codec::assemble_decoded(scan.values, records, bytes).map_err(corrupt)
        }
    }
}
