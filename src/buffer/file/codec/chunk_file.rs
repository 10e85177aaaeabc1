//! The chunk file: a header that names the chunk, then frames of data values, appended one
//! group commit at a time.
//!
//! ```text
//! header: "FRC" v | u64 LE chunk id | u64 LE creation time (Unix ms)
//!         | u32 LE crc32 of the first 20 bytes                    (v = 1 or 3)
//!     or, for a chunk with a key (outputs with chunk_keys):
//!         "FRC" v | u64 LE chunk id | u64 LE creation time (Unix ms)
//!         | u32 LE length n of the key | n bytes: bincode (standard) of (Option<String> tag,
//!         Option<i64> time slot) | u32 LE crc32 of everything before   (v = 2 or 4)
//! frame, v = 1 or 2 (a file created for its chunk): u32 LE length | data value
//! frame, v = 3 or 4 (a reused file): u32 LE length | u64 LE chunk id
//!         | data value (value.rs) whose crc32 covers the chunk id before the rest
//! ```
//!
//! Why frames of a reused file name their chunk: a purged chunk's file may be reused in place
//! for a new chunk (`writer/pool.rs`): the new chunk overwrites it from the start and the file
//! keeps its size, so past the new chunk's last frame lie the old chunk's bytes, frames that
//! were valid once. In such a file a frame is this chunk's only if it names this chunk or its
//! crc32, taken with this chunk's id, checks; the first place where no frame of this chunk
//! starts (fewer bytes than a frame's prefix included) is the end of its data
//! ([`ScannedFile::data_end`](super::ScannedFile::data_end)), quietly: stale bytes are neither
//! records, nor a cut write, nor corruption. A file created for its chunk (format 1 and 2)
//! ends where the file ends, and whatever cannot be read at its end is a cut write, as ever.

use super::value::{encode_bound_value_into, for_each_value};
use super::CodecError;
use crate::buffer::{ChunkId, ChunkKey, Records};

/// First bytes of every chunk file created for its chunk; the fourth byte is the file format
/// version.
pub const CHUNK_FILE_MAGIC: [u8; 4] = *b"FRC\x01";
/// Format version of chunk files whose header carries the chunk's key.
pub const CHUNK_FILE_KEYED: u8 = 2;
/// Format version of a reused chunk file: frames bound to their chunk.
pub const CHUNK_FILE_BOUND: u8 = 3;
/// [`CHUNK_FILE_BOUND`] with the chunk's key in the header.
pub const CHUNK_FILE_BOUND_KEYED: u8 = 4;
/// Largest key a keyed header may carry: bounds what a corrupted length makes recovery read as
/// a header (a tag is far shorter: the forward source bounds whole messages).
pub const MAX_KEY_LEN: usize = 64 << 10;
/// Length of a chunk file's header without a key: magic (4), chunk id (u64 LE), creation time
/// (u64 LE), crc32 of the first 20 bytes.
pub const CHUNK_HEADER_LEN: usize = 24;
/// Length prefix of each frame in a chunk file created for its chunk.
pub const FRAME_PREFIX: usize = 4;
/// Length prefix and chunk id of each frame in a reused chunk file.
pub const BOUND_FRAME_PREFIX: usize = 12;

/// A chunk file's header as [`read_header`] checked it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Header {
    /// Creation time of the chunk (Unix ms).
    pub created_ms: u64,
    /// The chunk's key (empty in an unkeyed header).
    pub key: ChunkKey,
    /// Where the frames start.
    pub len: usize,
    /// Whether the frames are bound to the chunk (format 3 or 4).
    pub bound: bool,
}

fn fixed_header(version: u8, chunk: ChunkId, created_ms: u64) -> [u8; CHUNK_HEADER_LEN] {
    let mut h = [0u8; CHUNK_HEADER_LEN];
    h[..3].copy_from_slice(&CHUNK_FILE_MAGIC[..3]);
    h[3] = version;
    h[4..12].copy_from_slice(&chunk.0.to_le_bytes());
    h[12..20].copy_from_slice(&created_ms.to_le_bytes());
    let crc = crc32fast::hash(&h[..20]);
    h[20..].copy_from_slice(&crc.to_le_bytes());
    h
}

/// The header every chunk file starts with: what recovery needs to bring back a chunk that
/// has no metadata yet (a staged chunk).
///
/// ```text
/// "FRC" 0x01 (magic + format version) | u64 LE chunk id | u64 LE creation time (Unix ms)
/// | u32 LE crc32 of the first 20 bytes
/// ```
pub fn chunk_file_header(chunk: ChunkId, created_ms: u64) -> [u8; CHUNK_HEADER_LEN] {
    fixed_header(CHUNK_FILE_MAGIC[3], chunk, created_ms)
}

/// `header` (of [`keyed_chunk_file_header`]) as the header of a reused file: format 3 or 4,
/// whose frames are bound to the chunk ([`encode_bound_frames`]).
pub fn bound_header(header: &[u8]) -> Vec<u8> {
    let mut h = header.to_vec();
    if h.len() >= CHUNK_HEADER_LEN {
        h[3] = if h[3] == CHUNK_FILE_KEYED {
            CHUNK_FILE_BOUND_KEYED
        } else {
            CHUNK_FILE_BOUND
        };
        let body = h.len() - 4;
        let crc = crc32fast::hash(&h[..body]);
        h[body..].copy_from_slice(&crc.to_le_bytes());
    }
    h
}

/// The header of a chunk file of a chunk with `key`: [`chunk_file_header`] when the key is
/// empty, else the keyed form (format 2, see the module docs), so that recovery brings a
/// staged chunk back with its key.
pub fn keyed_chunk_file_header(chunk: ChunkId, created_ms: u64, key: &ChunkKey) -> Vec<u8> {
    if key.is_empty() {
        return chunk_file_header(chunk, created_ms).to_vec();
    }
    let mut h = Vec::with_capacity(CHUNK_HEADER_LEN + 16 + key.tag.as_ref().map_or(0, String::len));
    h.extend_from_slice(&CHUNK_FILE_MAGIC[..3]);
    h.push(CHUNK_FILE_KEYED);
    h.extend_from_slice(&chunk.0.to_le_bytes());
    h.extend_from_slice(&created_ms.to_le_bytes());
    h.extend_from_slice(&[0; 4]);
    // Encoding a string and an integer into a Vec cannot fail.
    let _ = bincode::serde::encode_into_std_write(
        (&key.tag, key.timekey),
        &mut h,
        bincode::config::standard(),
    );
    let n = (h.len() - 24) as u32;
    h[20..24].copy_from_slice(&n.to_le_bytes());
    let crc = crc32fast::hash(&h);
    h.extend_from_slice(&crc.to_le_bytes());
    h
}

/// The chunk a chunk file's header names, if the header is intact (whichever chunk it is). For
/// tests: recovery learns it from [`CodecError::OtherChunk`].
#[cfg(test)]
pub fn chunk_named_by_header(bytes: &[u8]) -> Option<ChunkId> {
    let id = bytes.get(4..12)?;
    let named = ChunkId(u64::from_le_bytes(id.try_into().ok()?));
    match read_header(bytes, named) {
        Ok(_) => Some(named),
        Err(_) => None,
    }
}

/// A chunk file's header, checked: creation time, key, where the frames start and whether
/// they are bound to the chunk.
pub(super) fn read_header(bytes: &[u8], chunk: ChunkId) -> Result<Header, CodecError> {
    let fixed = bytes
        .get(..CHUNK_HEADER_LEN)
        .ok_or(CodecError::Truncated(bytes.len()))?;
    if fixed[..3] != CHUNK_FILE_MAGIC[..3] {
        return Err(CodecError::Malformed("not a chunk file (bad magic)".into()));
    }
    let (bound, keyed) = match fixed[3] {
        1 => (false, false),
        CHUNK_FILE_KEYED => (false, true),
        CHUNK_FILE_BOUND => (true, false),
        CHUNK_FILE_BOUND_KEYED => (true, true),
        v => return Err(CodecError::UnknownVersion(v)),
    };
    let (len, key) = if keyed {
        let n = u32::from_le_bytes([fixed[20], fixed[21], fixed[22], fixed[23]]) as usize;
        if n > MAX_KEY_LEN {
            return Err(CodecError::Malformed(format!(
                "chunk key of {n} bytes in the header (at most {MAX_KEY_LEN})"
            )));
        }
        let key = bytes
            .get(24..24 + n)
            .ok_or(CodecError::Truncated(bytes.len()))?;
        (24 + n, Some(key))
    } else {
        (20, None)
    };
    let crc = bytes
        .get(len..len + 4)
        .ok_or(CodecError::Truncated(bytes.len()))?;
    let stored = u32::from_le_bytes([crc[0], crc[1], crc[2], crc[3]]);
    let computed = crc32fast::hash(&bytes[..len]);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    let u64_at = |at: usize| {
        let mut b = [0u8; 8];
        b.copy_from_slice(&bytes[at..at + 8]);
        u64::from_le_bytes(b)
    };
    if u64_at(4) != chunk.0 {
        return Err(CodecError::OtherChunk {
            found: ChunkId(u64_at(4)),
            expected: chunk,
        });
    }
    let key = match key {
        None => ChunkKey::default(),
        Some(k) => {
            let config = bincode::config::standard().with_limit::<MAX_KEY_LEN>();
            let ((tag, timekey), used): ((Option<String>, Option<i64>), usize) =
                bincode::serde::decode_from_slice(k, config)
                    .map_err(|e| CodecError::Malformed(format!("chunk key: {e}")))?;
            let key = ChunkKey { tag, timekey };
            if used != k.len() || key.is_empty() {
                return Err(CodecError::Malformed(
                    "malformed chunk key in the header".into(),
                ));
            }
            key
        }
    };
    Ok(Header {
        created_ms: u64_at(12),
        key,
        len: len + 4,
        bound,
    })
}

/// Appends the frames of `records` to `out`: each data value of
/// [`split_values`](super::split_values) prefixed by its length (`u32 LE`). A chunk file
/// created for its chunk is its header followed by such frames.
pub fn encode_frames(records: &Records, out: &mut Vec<u8>) {
    encode_frames_with(records, None, out);
}

/// The frames of a reused file (format 3 and 4), bound to `chunk`: each data value prefixed by
/// its length (`u32 LE`) and the chunk id (`u64 LE`), its crc32 taken with the chunk id.
pub fn encode_bound_frames(records: &Records, chunk: ChunkId, out: &mut Vec<u8>) {
    encode_frames_with(records, Some(chunk), out);
}

fn encode_frames_with(records: &Records, chunk: Option<ChunkId>, out: &mut Vec<u8>) {
    let prefix = if chunk.is_some() {
        BOUND_FRAME_PREFIX
    } else {
        FRAME_PREFIX
    };
    for_each_value(records, |ends, base, data| {
        let at = out.len();
        out.extend_from_slice(&[0; FRAME_PREFIX]);
        if let Some(id) = chunk {
            out.extend_from_slice(&id.0.to_le_bytes());
        }
        encode_bound_value_into(out, ends, base, data, chunk.map(|c| c.0));
        // A value holds at most MAX_VALUE_DATA bytes plus its record ends, far below 4 GiB.
        let len = (out.len() - at - prefix) as u32;
        out[at..at + FRAME_PREFIX].copy_from_slice(&len.to_le_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::super::{assemble_decoded, scan_chunk_file, FileEnd, StoredState, MAX_VALUE_DATA};
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
        let scan = scan_chunk_file(&f, ChunkId(5), FileEnd::MayBeTorn).unwrap();
        assert!(scan.tail.is_none());
        assert_eq!(scan.created_ms, 77);
        assert_eq!((scan.records, scan.valid_len), (3, f.len() as u64));
        let mut all = a;
        all.extend(&b).unwrap();
        assert_eq!(scan.bytes, all.byte_len() as u64);
        assert_eq!(assemble_decoded(scan.values, 3, scan.bytes).unwrap(), all);
        assert!(matches!(
            scan_chunk_file(&f, ChunkId(6), FileEnd::MayBeTorn),
            Err(CodecError::OtherChunk {
                found: ChunkId(5),
                ..
            })
        ));
        assert_eq!(chunk_named_by_header(&f), Some(ChunkId(5)));
        let mut bad = f.clone();
        bad[5] ^= 1;
        assert!(matches!(
            scan_chunk_file(&bad, ChunkId(5), FileEnd::MayBeTorn),
            Err(CodecError::Checksum { .. })
        ));
        assert!(scan_chunk_file(&f[..10], ChunkId(5), FileEnd::MayBeTorn).is_err());
    }

    #[test]
    fn keyed_chunk_files_keep_their_key_and_refuse_a_damaged_one() {
        let key = ChunkKey {
            tag: Some("app.web".into()),
            timekey: Some(1_796_292_000),
        };
        let mut a = Records::new();
        a.push(b"one\n").unwrap();
        let mut f = keyed_chunk_file_header(ChunkId(3), 77, &key);
        let header = f.len();
        encode_frames(&a, &mut f);
        let scan = scan_chunk_file(&f, ChunkId(3), FileEnd::MayBeTorn).unwrap();
        assert_eq!((scan.key.clone(), scan.records), (key, 1));
        assert_eq!(scan.meta(StoredState::Queued).key, scan.key);
        assert_eq!(scan.valid_len, f.len() as u64);
        for at in 4..header {
            let mut bad = f.clone();
            bad[at] ^= 0x10;
            assert!(
                scan_chunk_file(&bad, ChunkId(3), FileEnd::MayBeTorn).is_err(),
                "flip at {at}"
            );
        }
        for cut in 0..header {
            assert!(
                scan_chunk_file(&f[..cut], ChunkId(3), FileEnd::MayBeTorn).is_err(),
                "cut at {cut}"
            );
        }
        // An empty key is written in the first format.
        assert_eq!(
            keyed_chunk_file_header(ChunkId(3), 77, &ChunkKey::default()),
            chunk_file_header(ChunkId(3), 77).to_vec()
        );
    }

    #[test]
    fn a_reused_files_header_names_its_chunk_and_keeps_its_key() {
        let key = ChunkKey {
            tag: Some("app.web".into()),
            timekey: None,
        };
        let mut a = Records::new();
        a.push(b"one\n").unwrap();
        for key in [key, ChunkKey::default()] {
            let mut f = bound_header(&keyed_chunk_file_header(ChunkId(3), 77, &key));
            assert!(matches!(f[3], CHUNK_FILE_BOUND | CHUNK_FILE_BOUND_KEYED));
            encode_bound_frames(&a, ChunkId(3), &mut f);
            let scan = scan_chunk_file(&f, ChunkId(3), FileEnd::Complete).unwrap();
            assert_eq!((&scan.key, scan.records, scan.created_ms), (&key, 1, 77));
            assert_eq!(chunk_named_by_header(&f), Some(ChunkId(3)));
            // Unbound frames in a reused file are another chunk's: not read.
            let mut g = bound_header(&keyed_chunk_file_header(ChunkId(3), 77, &key));
            encode_frames(&a, &mut g);
            let scan = scan_chunk_file(&g, ChunkId(3), FileEnd::MayBeTorn).unwrap();
            assert_eq!((scan.records, scan.tail.is_none()), (0, true));
        }
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
            let scan = scan_chunk_file(&more[..cut], ChunkId(1), FileEnd::MayBeTorn).unwrap();
            assert_eq!(scan.records, 1, "cut at {cut}");
            assert_eq!(scan.valid_len, whole.len() as u64);
            assert_eq!(scan.tail.is_some(), cut > whole.len());
        }
    }
}
