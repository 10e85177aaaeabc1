//! Reading a chunk's records back, verified: from its chunk file, or from the sled values of a
//! chunk written by the first release. Used when a flush worker takes a chunk and by
//! `buffer dump`. A chunk file's records are built in the buffer the file was read into
//! ([`InPlace`]), not copied out of it; a first-release chunk's sled values are copied.

use std::ops::Range;
use std::path::Path;

use sled::Tree;

use super::codec::{self, chunk_data_prefix, ChunkMeta, DataStorage, FileEnd, StoredState};
use super::store::StoreError;
use crate::buffer::records::{push_frame_ends, RecordsTooLarge};
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
    from_file(bytes, id, meta)
}

/// A chunk's records from its file's bytes, `bytes` (as [`read_chunk`]), built in that same
/// buffer: after the scan has verified every frame, each frame's record bytes are moved left
/// over the frame headers ([`InPlace`]) and the buffer is truncated to them.
fn from_file(bytes: Vec<u8>, id: ChunkId, meta: Option<&ChunkMeta>) -> Result<ReadBack, ReadError> {
    let corrupt = |e: codec::CodecError| ReadError::Corrupt(e.to_string());
    match meta.filter(|m| m.state == StoredState::Queued) {
        Some(meta) => {
            // A closed chunk's file was complete and synced before it closed.
            let scan = codec::scan_chunk_file(&bytes, id, FileEnd::Complete).map_err(corrupt)?;
            let gap = scan.gaps.first().cloned();
            let plan = InPlace::new(&bytes, meta.records);
            let (plan, lost_records) =
                codec::assemble_closed_into(scan, meta.records, meta.bytes, plan)
                    .map_err(corrupt)?;
            let lost = gap
                .filter(|_| !lost_records.is_empty())
                .map(|g| LostFrames {
                    records: lost_records.clone(),
                    frames: g.bad_frames,
                    at: g.start..g.end,
                    bytes: bytes[g.start as usize..g.end as usize].to_vec(),
                    error: g.error,
                });
            Ok(ReadBack {
                records: plan.finish(bytes)?,
                lost,
            })
        }
        None => {
            let scan = codec::scan_chunk_file(&bytes, id, FileEnd::MayBeTorn).map_err(corrupt)?;
            let (records, record_bytes) = (scan.records, scan.bytes);
            let plan = InPlace::new(&bytes, records);
            let plan = codec::assemble_decoded_into(scan.values, records, record_bytes, plan)
                .map_err(corrupt)?;
            Ok(ReadBack {
                records: plan.finish(bytes)?,
                lost: None,
            })
        }
    }
}

/// A chunk's records as a plan to build them inside the chunk file's own buffer (a
/// [`codec::RecordSink`]): the record ends, and where each frame's record bytes are in the
/// file. The frames are in file order and every frame's bytes come after its header, so when
/// [`InPlace::finish`] moves each frame's bytes left to follow the previous frame's, the
/// destination never passes a source not yet moved.
///
/// Why: a flush worker reads a chunk whole (up to the 1 MiB chunk limit); assembling a copy of
/// its records ([`codec::assemble_decoded`]) held the file and the copy at once, about 2 MiB
/// per worker while it read. With 8 flush workers the copies alone can add 8 MiB to the
/// relay's peak (8 workers peaked at 42-65 MiB in the release e2e `clients` scenario before
/// this change, against a 56 MiB goal; benches/README "Many clients: memory"). In place, a
/// chunk read back costs one buffer, the file's, plus its record ends. Measured (release,
/// `--scenario clients`, four alternating rounds): 8 workers' peak RSS 59.8 MiB on average
/// before, 56.6 after (56.5-64.2 against 53.2-61.6); CPU per record unchanged within noise.
pub(crate) struct InPlace {
    /// Address of the file buffer's first byte: a frame's bytes are a subslice of it.
    file_at: usize,
    file_len: usize,
    /// (file offset, length) of each frame's record bytes, in order.
    moves: Vec<(usize, usize)>,
    /// File offset just after the last frame's record bytes.
    moved_to: usize,
    ends: Vec<u32>,
    byte_len: usize,
}

impl InPlace {
    fn new(file: &[u8], records: u64) -> Self {
        let cap_records = usize::try_from(records).unwrap_or(0).min(1 << 24);
        InPlace {
            file_at: file.as_ptr() as usize,
            file_len: file.len(),
            moves: Vec::new(),
            moved_to: 0,
            ends: Vec::with_capacity(cap_records),
            byte_len: 0,
        }
    }

    /// Moves the record bytes into place in `file` (the buffer this plan was made for) and
    /// makes them the records.
    fn finish(self, mut file: Vec<u8>) -> Result<Records, ReadError> {
        debug_assert_eq!(
            (file.as_ptr() as usize, file.len()),
            (self.file_at, self.file_len)
        );
        let mut to = 0;
        for (from, len) in self.moves {
            file.copy_within(from..from + len, to);
            to += len;
        }
        file.truncate(to);
        Records::from_parts(file, self.ends)
            .ok_or_else(|| ReadError::Corrupt("record ends do not fit the chunk's data".into()))
    }
}

impl<'a> codec::RecordSink<'a> for InPlace {
    fn extend_sealed(
        &mut self,
        data: &'a [u8],
        ends: impl Iterator<Item = u32>,
    ) -> Result<(), codec::CodecError> {
        // Records::extend_sealed's checks and errors, without the copy.
        let base = self.byte_len;
        if u32::try_from(base + data.len()).is_err() {
            return Err(codec::CodecError::Malformed(RecordsTooLarge.to_string()));
        }
        let at = (data.as_ptr() as usize).wrapping_sub(self.file_at);
        let inside = at >= self.moved_to && at <= self.file_len && data.len() <= self.file_len - at;
        if !inside && !data.is_empty() {
            // Values come from scanning this buffer, in order: never.
            return Err(codec::CodecError::Malformed(
                "frame data outside the chunk file, or out of order".into(),
            ));
        }
        push_frame_ends(&mut self.ends, base, data.len(), ends)
            .map_err(|e| codec::CodecError::Malformed(e.to_string()))?;
        if !data.is_empty() {
            self.moves.push((at, data.len()));
            self.moved_to = at + data.len();
        }
        self.byte_len += data.len();
        Ok(())
    }
    fn seal(&mut self) -> Result<(), codec::CodecError> {
        let end = u32::try_from(self.byte_len)
            .map_err(|_| codec::CodecError::Malformed(RecordsTooLarge.to_string()))?;
        self.ends.push(end);
        Ok(())
    }
    fn record_count(&self) -> usize {
        self.ends.len()
    }
    fn byte_len(&self) -> usize {
        self.byte_len
    }
    fn last_end(&self) -> usize {
        self.ends.last().map_or(0, |&e| e as usize)
    }
}

#[cfg(test)]
#[path = "read_tests.rs"]
mod tests;
