//! Reading a chunk's records back, verified: from its chunk file, or from the sled values of a
//! chunk written by the first release. Used when a flush worker takes a chunk and by
//! `buffer dump`.

use std::ops::Range;
use std::path::Path;

use sled::Tree;

use super::codec::{self, chunk_data_prefix, ChunkMeta, DataStorage, FileEnd, StoredState};
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

/// A chunk's records as read back by [`read_chunk`].
pub(crate) struct ReadBack {
    /// Every record; those lost to corrupt frames are empty placeholders.
    pub records: Records,
    /// What corrupt frames in the middle of a closed chunk's file took, if anything.
    pub lost: Option<LostFrames>,
}

/// Records of a closed chunk lost to corrupt frames in the middle of its file (a
/// [`codec::Gap`]); the records after them are read as usual.
pub(crate) struct LostFrames {
    /// Indices of the lost records (empty placeholders in [`ReadBack::records`]).
    pub records: Range<u64>,
    /// Unreadable frames.
    pub frames: u32,
    /// Where the frames with lost bytes are in the file.
    pub at: Range<u64>,
    /// Those frames' bytes, as they are in the file (for quarantine).
    pub bytes: Vec<u8>,
    /// Why the first unreadable frame could not be read.
    pub error: codec::CodecError,
}

/// Reads and verifies all records of chunk `id` (blocking): from its file at `path` or, for a
/// chunk written by the first release, from its sled values. A closed chunk (metadata queued)
/// must hold exactly what its metadata counts, except for records lost in one stretch of
/// corrupt frames ([`codec::assemble_closed`]: they come back as empty placeholders, described
/// in [`ReadBack::lost`]); a staged one (no metadata, or staged) is read up to its last
/// complete record.
pub(crate) fn read_chunk(
    fs: &impl Filesystem,
    tree: &Tree,
    path: &Path,
    id: ChunkId,
    meta: Option<&ChunkMeta>,
) -> Result<ReadBack, ReadError> {
    let corrupt = |e: codec::CodecError| ReadError::Corrupt(e.to_string());
    if let Some(meta) = meta.filter(|m| m.storage != DataStorage::File) {
        let mut values = Vec::new();
        for kv in tree.scan_prefix(chunk_data_prefix(id)) {
            let (_, v) = kv.map_err(|e| ReadError::Storage(e.into()))?;
            values.push(v);
        }
        let records = codec::assemble(values.iter().map(|v| v.as_ref()), meta.records, meta.bytes)
            .map_err(corrupt)?;
        return Ok(ReadBack {
            records,
            lost: None,
        });
    }
    let bytes = fs.read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => {
            ReadError::Corrupt(format!("chunk file {} is missing", path.display()))
        }
        _ => ReadError::Storage(StoreError::io(format!("read {}", path.display()), e)),
    })?;
    match meta.filter(|m| m.state == StoredState::Queued) {
        Some(meta) => {
            // A closed chunk's file was complete and synced before it closed.
            let scan = codec::scan_chunk_file(&bytes, id, FileEnd::Complete).map_err(corrupt)?;
            let gap = scan.gaps.first().cloned();
            let closed = codec::assemble_closed(scan, meta.records, meta.bytes).map_err(corrupt)?;
            let lost = gap.filter(|_| !closed.lost.is_empty()).map(|g| LostFrames {
                records: closed.lost.clone(),
                frames: g.bad_frames,
                at: g.start..g.end,
                bytes: bytes[g.start as usize..g.end as usize].to_vec(),
                error: g.error,
            });
            Ok(ReadBack {
                records: closed.records,
                lost,
            })
        }
        None => {
            let scan = codec::scan_chunk_file(&bytes, id, FileEnd::MayBeTorn).map_err(corrupt)?;
            let (records, bytes) = (scan.records, scan.bytes);
            let records = codec::assemble_decoded(scan.values, records, bytes).map_err(corrupt)?;
            Ok(ReadBack {
                records,
                lost: None,
            })
        }
    }
}
