//! The chunk file: a header that names the chunk, then frames of data values, appended one
//! group commit at a time.
//!
//! ```text
//! header: "FRC" 0x01 | u64 LE chunk id | u64 LE creation time (Unix ms)
//!         | u32 LE crc32 of the first 20 bytes
//! frame:  u32 LE length | data value (value.rs)
//! ```

use super::meta::{ChunkMeta, DataStorage, StoredState};
use super::value::{decode_value, encode_value_into, for_each_value, ValueRef};
use super::CodecError;
use crate::buffer::{ChunkId, DeliveredSet, Records, RetryState};

/// First bytes of every chunk file; the fourth byte is the file format version.
pub const CHUNK_FILE_MAGIC: [u8; 4] = *b"FRC\x01";
/// Length of a chunk file's header: magic (4), chunk id (u64 LE), creation time (u64 LE),
/// crc32 of the first 20 bytes.
pub const CHUNK_HEADER_LEN: usize = 24;
/// Length prefix of each frame in a chunk file.
const FRAME_PREFIX: usize = 4;

/// The header every chunk file starts with: what recovery needs to bring back a chunk that
/// has no metadata yet (a staged chunk).
///
/// ```text
/// "FRC" 0x01 (magic + format version) | u64 LE chunk id | u64 LE creation time (Unix ms)
/// | u32 LE crc32 of the first 20 bytes
/// ```
pub fn chunk_file_header(chunk: ChunkId, created_ms: u64) -> [u8; CHUNK_HEADER_LEN] {
    let mut h = [0u8; CHUNK_HEADER_LEN];
    h[..4].copy_from_slice(&CHUNK_FILE_MAGIC);
    h[4..12].copy_from_slice(&chunk.0.to_le_bytes());
    h[12..20].copy_from_slice(&created_ms.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// Appends the frames of `records` to `out`: each data value of [`split_values`](super::split_values) prefixed by
/// its length (`u32 LE`). A chunk file is its header followed by such frames.
pub fn encode_frames(records: &Records, out: &mut Vec<u8>) {
    for_each_value(records, |ends, base, data| {
        let at = out.len();
        out.extend_from_slice(&[0; FRAME_PREFIX]);
        encode_value_into(out, ends, base, data);
        // A value holds at most MAX_VALUE_DATA bytes plus its record ends, far below 4 GiB.
        let len = (out.len() - at - FRAME_PREFIX) as u32;
        out[at..at + FRAME_PREFIX].copy_from_slice(&len.to_le_bytes());
    });
}

/// What [`scan_chunk_file`] found in a chunk file.
#[derive(Debug)]
pub struct ScannedFile<'a> {
    /// Creation time of the chunk (from the header).
    pub created_ms: u64,
    /// The data values of every frame up to the first one that cannot be read, in order,
    /// decoded (so their checksums were verified once, here).
    pub values: Vec<ValueRef<'a>>,
    /// Records in those values (records that end in them).
    pub records: u64,
    /// Record bytes in those values.
    pub bytes: u64,
    /// Length of the file up to the end of the last readable frame.
    pub valid_len: u64,
    /// Why the bytes after `valid_len` cannot be read, if there are any.
    pub tail: Option<CodecError>,
}

impl ScannedFile<'_> {
    /// The metadata of a chunk known only from its file (a staged chunk): its complete records,
    /// never delivered, never retried.
    pub fn meta(&self, state: StoredState) -> ChunkMeta {
        ChunkMeta {
            state,
            created_ms: self.created_ms,
            bytes: self.bytes,
            records: self.records,
            storage: DataStorage::File,
            retry: RetryState::default(),
            delivered: DeliveredSet::new(),
        }
    }
}

/// Reads a chunk file's frames up to the first one that cannot be read. The header must be
/// intact and name `chunk`. What comes after the readable frames is reported in
/// [`ScannedFile::tail`], not treated as an error here: for a staged chunk it is a write that
/// was cut short by a power loss (never acknowledged), for a closed chunk it is corruption,
/// and only the caller knows which.
pub fn scan_chunk_file(bytes: &[u8], chunk: ChunkId) -> Result<ScannedFile<'_>, CodecError> {
    let header = bytes
        .get(..CHUNK_HEADER_LEN)
        .ok_or(CodecError::Truncated(bytes.len()))?;
    if header[..3] != CHUNK_FILE_MAGIC[..3] {
        return Err(CodecError::Malformed("not a chunk file (bad magic)".into()));
    }
    if header[3] != CHUNK_FILE_MAGIC[3] {
        return Err(CodecError::UnknownVersion(header[3]));
    }
    let stored = u32::from_le_bytes([header[20], header[21], header[22], header[23]]);
    let computed = crc32fast::hash(&header[..20]);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&header[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if u64_at(4) != chunk.0 {
        return Err(CodecError::Malformed(format!(
            "chunk file of chunk {} found where chunk {chunk} belongs",
            ChunkId(u64_at(4))
        )));
    }
    let mut scan = ScannedFile {
        created_ms: u64_at(12),
        values: Vec::new(),
        records: 0,
        bytes: 0,
        valid_len: CHUNK_HEADER_LEN as u64,
        tail: None,
    };
    // Frames are kept up to the last one that ends on a record boundary: a record split over
    // several frames counts only once all of them are readable.
    let mut pos = CHUNK_HEADER_LEN;
    let (mut values, mut records, mut record_bytes) = (0usize, 0u64, 0u64);
    let mut open_bytes = 0u64;
    while pos < bytes.len() {
        let rest = &bytes[pos..];
        let Some(len) = rest.get(..FRAME_PREFIX) else {
            scan.tail = Some(CodecError::Truncated(rest.len()));
            break;
        };
        let len = u32::from_le_bytes([len[0], len[1], len[2], len[3]]) as usize;
        let Some(value) = rest.get(FRAME_PREFIX..FRAME_PREFIX + len) else {
            scan.tail = Some(CodecError::Malformed(format!(
                "frame of {len} bytes runs past the end of the file"
            )));
            break;
        };
        let v = match decode_value(value) {
            Ok(v) => v,
            Err(e) => {
                scan.tail = Some(e);
                break;
            }
        };
        pos += FRAME_PREFIX + len;
        records += v.ends().len() as u64;
        record_bytes += v.data.len() as u64;
        open_bytes = match v.ends().last() {
            Some(end) => (v.data.len() - end as usize) as u64,
            None => open_bytes + v.data.len() as u64,
        };
        scan.values.push(v);
        if open_bytes == 0 {
            values = scan.values.len();
            scan.records = records;
            scan.bytes = record_bytes;
            scan.valid_len = pos as u64;
        }
    }
    if scan.tail.is_none() && open_bytes > 0 {
        scan.tail = Some(CodecError::Malformed(
            "the file ends inside a record".into(),
        ));
    }
    scan.values.truncate(values);
    Ok(scan)
}

#[cfg(test)]
mod tests {
    use super::super::{assemble_decoded, MAX_VALUE_DATA};
    use super::*;

    fn chunk_file(id: ChunkId, appends: &[Records]) -> Vec<u8> {
        let mut f = chunk_file_header(id, 77).to_vec();
        for r in appends {
            encode_frames(r, &mut f);
        }
        f
    }

    #[test]
    fn chunk_files_scan_to_their_records_and_name_their_chunk() {
        let mut a = Records::new();
        a.push(b"one\n").unwrap();
        let mut b = Records::new();
        b.push(b"two\n").unwrap();
        b.push(&vec![b'x'; MAX_VALUE_DATA + 1]).unwrap();
        let f = chunk_file(ChunkId(5), &[a.clone(), b.clone()]);
        let scan = scan_chunk_file(&f, ChunkId(5)).unwrap();
        assert!(scan.tail.is_none());
        assert_eq!(scan.created_ms, 77);
        assert_eq!((scan.records, scan.valid_len), (3, f.len() as u64));
        let mut all = a;
        all.extend(&b).unwrap();
        assert_eq!(scan.bytes, all.byte_len() as u64);
        assert_eq!(assemble_decoded(scan.values, 3, scan.bytes).unwrap(), all);
        assert!(matches!(
            scan_chunk_file(&f, ChunkId(6)),
            Err(CodecError::Malformed(_))
        ));
        let mut bad = f.clone();
        bad[5] ^= 1;
        assert!(matches!(
            scan_chunk_file(&bad, ChunkId(5)),
            Err(CodecError::Checksum { .. })
        ));
        assert!(scan_chunk_file(&f[..10], ChunkId(5)).is_err());
    }

    #[test]
    fn a_cut_chunk_file_scans_to_its_last_complete_record() {
        let mut a = Records::new();
        a.push(b"one\n").unwrap();
        let whole = chunk_file(ChunkId(1), std::slice::from_ref(&a));
        let mut longer = a.clone();
        longer.push(b"two\n").unwrap();
        let more = chunk_file(ChunkId(1), &[a, longer]);
        for cut in whole.len()..more.len() {
            let scan = scan_chunk_file(&more[..cut], ChunkId(1)).unwrap();
            assert_eq!(scan.records, 1, "cut at {cut}");
            assert_eq!(scan.valid_len, whole.len() as u64);
            assert_eq!(scan.tail.is_some(), cut > whole.len());
        }
    }
}
