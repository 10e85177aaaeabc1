//! Byte layout of everything the file buffer stores: chunk files (a header and framed data
//! values), sled keys and chunk metadata. Every decoder here treats its input as untrusted (it comes from disk) and returns
//! a [`CodecError`] instead of panicking; `fuzz/fuzz_targets/buffer_decode.rs` holds it to that.
//!
//! The layouts are versioned by their first byte so that a later release can read what this one
//! wrote; a decoder that meets an unknown version refuses the value (and the chunk is
//! quarantined) rather than guessing.

use serde::{Deserialize, Serialize};

use crate::buffer::{ChunkId, DeliveredSet, Records, RetryState};

/// First byte of the data-key space (`d` + chunk id BE u64 + seq BE u32).
pub const DATA_PREFIX: u8 = b'd';
/// First byte of the metadata-key space (`m` + chunk id BE u64).
pub const META_PREFIX: u8 = b'm';
/// Length of a data key.
pub const DATA_KEY_LEN: usize = 13;
/// Length of a metadata key.
pub const META_KEY_LEN: usize = 9;

/// Version byte of data values written by this release.
pub const VALUE_V1: u8 = 1;
/// Version byte of metadata of chunks whose data is in sled values (the first release; still
/// read, and written back for such chunks until they are delivered).
pub const META_V1: u8 = 1;
/// Version byte of metadata of chunks whose data is in a chunk file (written by this release).
pub const META_V2: u8 = 2;

/// First bytes of every chunk file; the fourth byte is the file format version.
pub const CHUNK_FILE_MAGIC: [u8; 4] = *b"FRC\x01";
/// Length of a chunk file's header: magic (4), chunk id (u64 LE), creation time (u64 LE),
/// crc32 of the first 20 bytes.
pub const CHUNK_HEADER_LEN: usize = 24;
/// Length prefix of each frame in a chunk file.
const FRAME_PREFIX: usize = 4;

/// Largest data value the writer produces. DESIGN.md: sled turns values approaching its
/// `segment_size` into separate blob files whose durability and reclamation we cannot control,
/// so a commit's bytes for one chunk are split into values of at most this size.
pub const MAX_VALUE_DATA: usize = 256 * 1024;

/// Fixed part of a data value: version (1), crc32 (4), number of record ends (4).
const VALUE_HEADER: usize = 9;
/// Fixed part of a metadata value: version (1), crc32 (4).
const META_HEADER: usize = 5;
/// Metadata larger than this is refused: it bounds what a corrupted length prefix can make the
/// decoder allocate (a delivered set for 64 Mi records fits in 8 MiB).
const META_DECODE_LIMIT: usize = 16 << 20;

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Shorter than its fixed header.
    #[error("value too short ({0} bytes)")]
    Truncated(usize),
    /// Written by a release this one does not know.
    #[error("unknown format version {0}")]
    UnknownVersion(u8),
    /// The checksum does not match the contents: the bytes changed after they were written.
    #[error("checksum mismatch (stored {stored:08x}, computed {computed:08x})")]
    Checksum {
        /// Checksum stored in the value.
        stored: u32,
        /// Checksum of the bytes as read.
        computed: u32,
    },
    /// The checksum matched but the contents are inconsistent (a bug, or a forged value).
    #[error("malformed value: {0}")]
    Malformed(String),
    /// A key of unexpected length or prefix.
    #[error("malformed key of {0} bytes")]
    BadKey(usize),
}

/// The data key of value `seq` of chunk `chunk`. Big-endian so that sled's byte order is
/// (chunk, seq) order: a chunk's values are one contiguous, ordered range.
pub fn data_key(chunk: ChunkId, seq: u32) -> [u8; DATA_KEY_LEN] {
    let mut k = [0u8; DATA_KEY_LEN];
    k[0] = DATA_PREFIX;
    k[1..9].copy_from_slice(&chunk.0.to_be_bytes());
    k[9..13].copy_from_slice(&seq.to_be_bytes());
    k
}

/// The metadata key of chunk `chunk`.
pub fn meta_key(chunk: ChunkId) -> [u8; META_KEY_LEN] {
    let mut k = [0u8; META_KEY_LEN];
    k[0] = META_PREFIX;
    k[1..9].copy_from_slice(&chunk.0.to_be_bytes());
    k
}

/// The prefix shared by all data keys of `chunk`.
pub fn chunk_data_prefix(chunk: ChunkId) -> [u8; 9] {
    let mut k = [0u8; 9];
    k[0] = DATA_PREFIX;
    k[1..9].copy_from_slice(&chunk.0.to_be_bytes());
    k
}

/// The chunk id in a data or metadata key.
pub fn chunk_of_key(key: &[u8]) -> Result<ChunkId, CodecError> {
    let ok = matches!(
        (key.first(), key.len()),
        (Some(&DATA_PREFIX), DATA_KEY_LEN) | (Some(&META_PREFIX), META_KEY_LEN)
    );
    if !ok {
        return Err(CodecError::BadKey(key.len()));
    }
    let mut id = [0u8; 8];
    id.copy_from_slice(&key[1..9]);
    Ok(ChunkId(u64::from_be_bytes(id)))
}

/// Encodes one data value: `data` holds whole or partial records, `ends` the end offsets of
/// the records that end inside it, relative to `base` (the offset of `data` in the caller's
/// buffer; stored relative to `data`).
///
/// ```text
/// u8 version = 1 | u32 LE crc32 of everything after it | u32 LE n | n × u32 LE end | data
/// ```
pub fn encode_value(ends: &[u32], base: u32, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(VALUE_HEADER + ends.len() * 4 + data.len());
    encode_value_into(&mut v, ends, base, data);
    v
}

/// [`encode_value`], appended to `out` (no buffer of its own: the writer's hot path).
fn encode_value_into(out: &mut Vec<u8>, ends: &[u32], base: u32, data: &[u8]) {
    let start = out.len();
    out.reserve(VALUE_HEADER + ends.len() * 4 + data.len());
    out.push(VALUE_V1);
    out.extend_from_slice(&[0; 4]);
    // A value holds at most MAX_VALUE_DATA bytes of a chunk below 4 GiB, so its record count
    // fits in u32.
    out.extend_from_slice(&(ends.len() as u32).to_le_bytes());
    for e in ends {
        out.extend_from_slice(&e.saturating_sub(base).to_le_bytes());
    }
    out.extend_from_slice(data);
    let crc = crc32fast::hash(&out[start + 5..]);
    out[start + 1..start + 5].copy_from_slice(&crc.to_le_bytes());
}

/// A decoded data value, borrowing from the stored bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValueRef<'a> {
    ends: &'a [u8],
    /// Record bytes (the last record may continue in the next value).
    pub data: &'a [u8],
}

impl ValueRef<'_> {
    /// Length of the stored value this was decoded from (header, ends and data).
    pub fn encoded_len(&self) -> usize {
        VALUE_HEADER + self.ends.len() + self.data.len()
    }

    /// End offsets (relative to [`ValueRef::data`]) of the records ending in this value.
    pub fn ends(&self) -> impl ExactSizeIterator<Item = u32> + '_ {
        self.ends
            .chunks_exact(4)
            .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
}

/// Decodes a data value, verifying version, checksum and offsets.
pub fn decode_value(bytes: &[u8]) -> Result<ValueRef<'_>, CodecError> {
    if bytes.len() < VALUE_HEADER {
        return Err(CodecError::Truncated(bytes.len()));
    }
    if bytes[0] != VALUE_V1 {
        return Err(CodecError::UnknownVersion(bytes[0]));
    }
    let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let computed = crc32fast::hash(&bytes[5..]);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    let n = u32::from_le_bytes([bytes[5], bytes[6], bytes[7], bytes[8]]) as usize;
    let rest = &bytes[VALUE_HEADER..];
    let ends_len = n
        .checked_mul(4)
        .filter(|&l| l <= rest.len())
        .ok_or_else(|| CodecError::Malformed(format!("{n} record ends do not fit")))?;
    let (ends, data) = rest.split_at(ends_len);
    let value = ValueRef { ends, data };
    let mut prev = 0u32;
    for e in value.ends() {
        if e < prev || e as usize > data.len() {
            return Err(CodecError::Malformed(format!(
                "record end {e} out of order or beyond {} data bytes",
                data.len()
            )));
        }
        prev = e;
    }
    Ok(value)
}

/// Where a chunk stands on disk. In-flight exists only in memory: on disk such a chunk is
/// queued, so a crash during delivery simply queues it again.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum StoredState {
    /// Accepting appends when written; recovered as queued.
    Staged,
    /// Closed, waiting for delivery.
    Queued,
}

/// Where a chunk's record data is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataStorage {
    /// In the chunk's own file (`chunks/<output>/<id>.chunk`): everything this release writes.
    File,
    /// In sled data values `'d' | id | seq` (the first release's layout; metadata version 1).
    /// Such chunks are read and delivered as before, never appended to.
    SledValues {
        /// First data-key sequence number not yet used.
        next_seq: u32,
    },
}

/// Metadata of one chunk, rewritten (one small value) whenever its state changes. It is what recovery
/// and `total_limit_size` accounting read, so startup never has to scan the data values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChunkMeta {
    /// Staged or queued.
    pub state: StoredState,
    /// Creation time (Unix ms).
    pub created_ms: u64,
    /// Logical bytes of all records of the chunk.
    pub bytes: u64,
    /// Number of records of the chunk. For a staged chunk stored in a file this is what the
    /// metadata said when last written; the file is the truth (recovery rescans it).
    pub records: u64,
    /// Where the record data lives.
    pub storage: DataStorage,
    /// Retry history.
    pub retry: RetryState,
    /// Records already delivered (partial delivery).
    pub delivered: DeliveredSet,
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

/// Wire form of [`ChunkMeta`] version 1 (bincode, standard config): data in sled values.
/// Field order is the format: append new fields only in a new version.
#[derive(Serialize, Deserialize)]
struct MetaV1 {
    state: StoredState,
    created_ms: u64,
    bytes: u64,
    records: u64,
    next_seq: u32,
    failures: u32,
    first_failure_ms: Option<u64>,
    next_attempt_ms: u64,
    delivered: Vec<u64>,
}

/// Wire form of [`ChunkMeta`] version 2 (bincode, standard config): data in a chunk file.
#[derive(Serialize, Deserialize)]
struct MetaV2 {
    state: StoredState,
    created_ms: u64,
    bytes: u64,
    records: u64,
    failures: u32,
    first_failure_ms: Option<u64>,
    next_attempt_ms: u64,
    delivered: Vec<u64>,
}

/// Encodes chunk metadata: `u8 version | u32 LE crc32 of the rest | bincode(MetaV1 or MetaV2)`.
/// The version follows the chunk's [`DataStorage`], so a chunk written by the first release
/// keeps pointing at its sled values.
pub fn encode_meta(meta: &ChunkMeta) -> Vec<u8> {
    let delivered = meta.delivered.words().to_vec();
    let mut v = Vec::with_capacity(META_HEADER + 48 + delivered.len() * 8);
    let config = bincode::config::standard();
    // Encoding plain integers and vectors into a Vec cannot fail (no I/O, no size limit).
    match meta.storage {
        DataStorage::File => {
            v.extend_from_slice(&[META_V2, 0, 0, 0, 0]);
            let wire = MetaV2 {
                state: meta.state,
                created_ms: meta.created_ms,
                bytes: meta.bytes,
                records: meta.records,
                failures: meta.retry.failures,
                first_failure_ms: meta.retry.first_failure_ms,
                next_attempt_ms: meta.retry.next_attempt_ms,
                delivered,
            };
            let _ = bincode::serde::encode_into_std_write(&wire, &mut v, config);
        }
        DataStorage::SledValues { next_seq } => {
            v.extend_from_slice(&[META_V1, 0, 0, 0, 0]);
            let wire = MetaV1 {
                state: meta.state,
                created_ms: meta.created_ms,
                bytes: meta.bytes,
                records: meta.records,
                next_seq,
                failures: meta.retry.failures,
                first_failure_ms: meta.retry.first_failure_ms,
                next_attempt_ms: meta.retry.next_attempt_ms,
                delivered,
            };
            let _ = bincode::serde::encode_into_std_write(&wire, &mut v, config);
        }
    }
    let crc = crc32fast::hash(&v[META_HEADER..]);
    v[1..5].copy_from_slice(&crc.to_le_bytes());
    v
}

/// Decodes one bincode body, refusing trailing bytes.
fn decode_body<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, CodecError> {
    let config = bincode::config::standard().with_limit::<META_DECODE_LIMIT>();
    let (wire, used): (T, usize) = bincode::serde::decode_from_slice(body, config)
        .map_err(|e| CodecError::Malformed(e.to_string()))?;
    if used != body.len() {
        return Err(CodecError::Malformed(format!(
            "{} trailing bytes after metadata",
            body.len() - used
        )));
    }
    Ok(wire)
}

/// Decodes chunk metadata (version 1 or 2), verifying version, checksum and internal
/// consistency.
pub fn decode_meta(bytes: &[u8]) -> Result<ChunkMeta, CodecError> {
    if bytes.len() < META_HEADER {
        return Err(CodecError::Truncated(bytes.len()));
    }
    if bytes[0] != META_V1 && bytes[0] != META_V2 {
        return Err(CodecError::UnknownVersion(bytes[0]));
    }
    let stored = u32::from_le_bytes([bytes[1], bytes[2], bytes[3], bytes[4]]);
    let body = &bytes[META_HEADER..];
    let computed = crc32fast::hash(body);
    if stored != computed {
        return Err(CodecError::Checksum { stored, computed });
    }
    let meta = if bytes[0] == META_V1 {
        let w: MetaV1 = decode_body(body)?;
        ChunkMeta {
            state: w.state,
            created_ms: w.created_ms,
            bytes: w.bytes,
            records: w.records,
            storage: DataStorage::SledValues {
                next_seq: w.next_seq,
            },
            retry: RetryState {
                failures: w.failures,
                first_failure_ms: w.first_failure_ms,
                next_attempt_ms: w.next_attempt_ms,
            },
            delivered: DeliveredSet::from_words(w.delivered),
        }
    } else {
        let w: MetaV2 = decode_body(body)?;
        ChunkMeta {
            state: w.state,
            created_ms: w.created_ms,
            bytes: w.bytes,
            records: w.records,
            storage: DataStorage::File,
            retry: RetryState {
                failures: w.failures,
                first_failure_ms: w.first_failure_ms,
                next_attempt_ms: w.next_attempt_ms,
            },
            delivered: DeliveredSet::from_words(w.delivered),
        }
    };
    // Only delivered chunks have a delivered set, and only closed chunks are delivered, so
    // the count it is checked against is final.
    if meta
        .delivered
        .iter()
        .last()
        .is_some_and(|i| i as u64 >= meta.records)
    {
        return Err(CodecError::Malformed(format!(
            "delivered set names a record beyond the chunk's {} records",
            meta.records
        )));
    }
    Ok(meta)
}

/// Decodes any stored value, guessing its kind from the key if there is one (the fuzz entry
/// point: it must never panic, whatever the bytes). Returns a short description on success.
pub fn decode_stored(key: Option<&[u8]>, value: &[u8]) -> Result<String, CodecError> {
    match key.map(chunk_of_key) {
        Some(Err(e)) => Err(e),
        Some(Ok(_)) if key.and_then(|k| k.first()) == Some(&META_PREFIX) => {
            decode_meta(value).map(|m| format!("meta: {} records", m.records))
        }
        Some(Ok(_)) => decode_value(value).map(|v| format!("value: {} ends", v.ends().len())),
        None => match decode_meta(value) {
            Ok(m) => Ok(format!("meta: {} records", m.records)),
            Err(_) => decode_value(value).map(|v| format!("value: {} ends", v.ends().len())),
        },
    }
}

/// Encodes the records one group commit adds to a chunk as data values of at most
/// [`MAX_VALUE_DATA`] record bytes each, in order. A record may straddle two values; the
/// records' end offsets say where each one ends. Always at least one value.
pub fn split_values(records: &Records) -> Vec<Vec<u8>> {
    let mut out = Vec::new();
    for_each_value(records, |ends, base, data| {
        out.push(encode_value(ends, base, data))
    });
    out
}

/// Calls `f(ends, base, data)` for each data value `records` is split into (see
/// [`split_values`]): `data` is at most [`MAX_VALUE_DATA`] bytes starting at offset `base`,
/// `ends` the end offsets of the records that end in it.
fn for_each_value(records: &Records, mut f: impl FnMut(&[u32], u32, &[u8])) {
    let data = records.as_bytes();
    let ends = records.ends();
    let pieces = data.len().div_ceil(MAX_VALUE_DATA).max(1);
    let mut next_end = 0usize;
    for p in 0..pieces {
        let start = p * MAX_VALUE_DATA;
        let stop = if p + 1 == pieces {
            data.len()
        } else {
            start + MAX_VALUE_DATA
        };
        let first = next_end;
        while next_end < ends.len() && (ends[next_end] as usize <= stop || p + 1 == pieces) {
            next_end += 1;
        }
        // `start` is below 4 GiB because a Records buffer is.
        f(&ends[first..next_end], start as u32, &data[start..stop]);
    }
}

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

/// Appends the frames of `records` to `out`: each data value of [`split_values`] prefixed by
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

/// Rebuilds a chunk's records from its stored data values (in key order), checking them
/// against the chunk's metadata. Any mismatch means the chunk cannot be trusted as a whole.
pub fn assemble<'a>(
    values: impl IntoIterator<Item = &'a [u8]>,
    expect_records: u64,
    expect_bytes: u64,
) -> Result<Records, CodecError> {
    let decoded = values
        .into_iter()
        .map(decode_value)
        .collect::<Result<Vec<_>, _>>()?;
    assemble_decoded(decoded, expect_records, expect_bytes)
}

/// [`assemble`] for values already decoded (a chunk file's, from [`scan_chunk_file`]). Each
/// value's bytes are copied at once and its record ends shifted, not record by record.
pub fn assemble_decoded<'a>(
    values: impl IntoIterator<Item = ValueRef<'a>>,
    expect_records: u64,
    expect_bytes: u64,
) -> Result<Records, CodecError> {
    let cap_bytes = usize::try_from(expect_bytes)
        .unwrap_or(0)
        .min(u32::MAX as usize);
    let cap_records = usize::try_from(expect_records).unwrap_or(0).min(1 << 24);
    let mut records = Records::with_capacity(cap_records, cap_bytes);
    for value in values {
        if (records.byte_len() + value.data.len()) as u64 > expect_bytes {
            return Err(CodecError::Malformed(format!(
                "chunk data exceeds the {expect_bytes} bytes its metadata records"
            )));
        }
        records
            .extend_sealed(value.data, value.ends())
            .map_err(|e| CodecError::Malformed(e.to_string()))?;
    }
    let sealed = records.ends().last().copied().unwrap_or(0) as usize;
    if sealed != records.byte_len() {
        return Err(CodecError::Malformed(format!(
            "{} bytes after the last record end",
            records.byte_len() - sealed
        )));
    }
    if records.len() as u64 != expect_records || records.byte_len() as u64 != expect_bytes {
        return Err(CodecError::Malformed(format!(
            "chunk data holds {} records / {} bytes, metadata says {expect_records} / {expect_bytes}",
            records.len(),
            records.byte_len()
        )));
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> ChunkMeta {
        ChunkMeta {
            state: StoredState::Queued,
            created_ms: 1_700_000_000_000,
            bytes: 1234,
            records: 130,
            storage: DataStorage::File,
            retry: RetryState {
                failures: 2,
                first_failure_ms: Some(5),
                next_attempt_ms: 9,
            },
            delivered: [0usize, 64, 129].into_iter().collect(),
        }
    }

    #[test]
    fn split_values_round_trip_through_assemble_at_any_size() {
        let mut r = Records::new();
        r.push(b"").unwrap();
        r.push(&vec![b'a'; MAX_VALUE_DATA - 1]).unwrap();
        r.push(b"b").unwrap(); // ends exactly on the value boundary
        r.push(b"").unwrap(); // empty record right at the boundary
        r.push(&vec![b'c'; 2 * MAX_VALUE_DATA + 7]).unwrap(); // spans three values
        r.push(b"d\n").unwrap();
        let values = split_values(&r);
        assert_eq!(values.len(), r.byte_len().div_ceil(MAX_VALUE_DATA));
        assert!(values.iter().all(|v| v.len() <= MAX_VALUE_DATA + 64));
        let back = assemble(values.iter().map(Vec::as_slice), 6, r.byte_len() as u64).unwrap();
        assert_eq!(back, r);
        assert!(assemble(values.iter().map(Vec::as_slice), 5, r.byte_len() as u64).is_err());
        assert!(assemble(
            values[..1].iter().map(Vec::as_slice),
            6,
            r.byte_len() as u64
        )
        .is_err());
    }

    #[test]
    fn empty_records_make_one_value() {
        let mut r = Records::new();
        r.push(b"").unwrap();
        r.push(b"").unwrap();
        let values = split_values(&r);
        assert_eq!(values.len(), 1);
        assert_eq!(assemble(values.iter().map(Vec::as_slice), 2, 0).unwrap(), r);
    }

    #[test]
    fn keys_sort_by_chunk_then_seq_and_name_their_chunk() {
        assert!(data_key(ChunkId(1), u32::MAX) < data_key(ChunkId(2), 0));
        assert!(data_key(ChunkId(2), 1) < data_key(ChunkId(2), 2));
        assert_eq!(chunk_of_key(&data_key(ChunkId(42), 3)), Ok(ChunkId(42)));
        assert_eq!(chunk_of_key(&meta_key(ChunkId(42))), Ok(ChunkId(42)));
        assert!(data_key(ChunkId(7), 0).starts_with(&chunk_data_prefix(ChunkId(7))));
        assert_eq!(chunk_of_key(b"x"), Err(CodecError::BadKey(1)));
    }

    #[test]
    fn values_round_trip() {
        let v = encode_value(&[2, 5, 5], 0, b"ab\ncdxyz");
        let d = decode_value(&v).unwrap();
        assert_eq!(d.ends().collect::<Vec<_>>(), vec![2, 5, 5]);
        assert_eq!(d.data, b"ab\ncdxyz");
    }

    #[test]
    fn any_flipped_bit_in_a_value_is_detected() {
        let v = encode_value(&[3], 0, b"abc");
        for i in 0..v.len() {
            for bit in 0..8 {
                let mut bad = v.clone();
                bad[i] ^= 1 << bit;
                assert!(
                    decode_value(&bad).is_err(),
                    "flip at byte {i} bit {bit} went unnoticed"
                );
            }
        }
    }

    #[test]
    fn meta_round_trips_and_detects_corruption() {
        let m = meta();
        let bytes = encode_meta(&m);
        assert_eq!(decode_meta(&bytes).unwrap(), m);
        let mut bad = bytes.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x40;
        assert!(matches!(
            decode_meta(&bad),
            Err(CodecError::Checksum { .. })
        ));
        assert!(matches!(
            decode_meta(&bytes[..3]),
            Err(CodecError::Truncated(3))
        ));
        let mut future = bytes;
        future[0] = 9;
        assert_eq!(decode_meta(&future), Err(CodecError::UnknownVersion(9)));
    }

    #[test]
    fn metadata_of_both_layouts_round_trips_with_its_own_version() {
        let file = meta();
        assert_eq!(encode_meta(&file)[0], META_V2);
        let legacy = ChunkMeta {
            storage: DataStorage::SledValues { next_seq: 7 },
            ..meta()
        };
        let bytes = encode_meta(&legacy);
        assert_eq!(bytes[0], META_V1);
        assert_eq!(decode_meta(&bytes).unwrap(), legacy);
    }

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

    #[test]
    fn inconsistent_contents_with_a_valid_checksum_are_refused() {
        // Ends out of order.
        assert!(matches!(
            decode_value(&encode_value(&[3, 1], 0, b"abc")),
            Err(CodecError::Malformed(_))
        ));
        // End beyond the data.
        assert!(matches!(
            decode_value(&encode_value(&[4], 0, b"abc")),
            Err(CodecError::Malformed(_))
        ));
        // Delivered set beyond the records.
        let mut m = meta();
        m.records = 10;
        assert!(matches!(
            decode_meta(&encode_meta(&m)),
            Err(CodecError::Malformed(_))
        ));
    }
}
