//! Chunk metadata: the one small value per closed chunk that recovery and `total_limit_size`
//! accounting read, rewritten whenever the chunk's state changes.
//!
//! ```text
//! u8 version | u32 LE crc32 of the rest | bincode 2 (standard config) of MetaV1, V2 or V3
//! ```
//!
//! Version 2 says the data is in the chunk file; version 1 (the first release) that it is in
//! sled data values. Version 3 is version 2 followed by the chunk's key (tag, time slot), written
//! only for chunks that have one (outputs with `chunk_keys`), so chunks without a key stay
//! readable by the release before.

use serde::{Deserialize, Serialize};

use super::CodecError;
use crate::buffer::{ChunkKey, DeliveredSet, RetryState};

/// Version byte of metadata of chunks whose data is in sled values (the first release; still
/// read, and written back for such chunks until they are delivered).
pub const META_V1: u8 = 1;
/// Version byte of metadata of chunks whose data is in a chunk file (written by this release).
pub const META_V2: u8 = 2;
/// Version byte of metadata of keyed chunks (data in a chunk file, then the chunk's key).
pub const META_V3: u8 = 3;

/// Fixed part of a metadata value: version (1), crc32 (4).
const META_HEADER: usize = 5;
/// Most records a chunk of the file buffer holds (whatever `chunk_limit_records` says), so
/// that its metadata stays small for sled: the delivered-record bitset of a full chunk is
/// 4 Ki words, and a metadata value at most [`MAX_META_VALUE`] (37 KiB). sled 0.34 writes values
/// above about a quarter of its segment size (1 MiB in a new database:
/// [`SEGMENT_SIZE`](super::super::store::SEGMENT_SIZE)) as separate blob files that nothing
/// fsyncs; every value stays at least 4 times below that. (It was 2 Mi records with the 8 MiB
/// segments of earlier releases; a chunk of theirs with more records is still read, delivered
/// and its metadata written back into their database, which keeps 8 MiB segments.)
pub const MAX_CHUNK_RECORDS: u64 = 1 << 18;

/// The largest metadata value written: the bitset of [`MAX_CHUNK_RECORDS`] (64-bit words, at
/// most 9 bytes each in bincode's variable-length encoding) plus the rest.
pub const MAX_META_VALUE: usize = (MAX_CHUNK_RECORDS / 64) as usize * 9 + 1024;

const _: () = assert!(MAX_META_VALUE <= super::super::store::SEGMENT_SIZE / 4 / 4);

/// Metadata larger than this is refused: it bounds what a corrupted length prefix can make the
/// decoder allocate (a delivered set for 64 Mi records fits in 8 MiB).
const META_DECODE_LIMIT: usize = 16 << 20;

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
    /// The chunk's key (empty for outputs without chunk keys).
    pub key: ChunkKey,
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

/// Wire form of [`ChunkMeta`] version 3 (bincode, standard config): version 2 and the key.
#[derive(Serialize, Deserialize)]
struct MetaV3 {
    v2: MetaV2,
    tag: Option<String>,
    timekey: Option<i64>,
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
            let keyed = !meta.key.is_empty();
            v.extend_from_slice(&[if keyed { META_V3 } else { META_V2 }, 0, 0, 0, 0]);
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
            if keyed {
                let wire = MetaV3 {
                    v2: wire,
                    tag: meta.key.tag.clone(),
                    timekey: meta.key.timekey,
                };
                let _ = bincode::serde::encode_into_std_write(&wire, &mut v, config);
            } else {
                let _ = bincode::serde::encode_into_std_write(&wire, &mut v, config);
            }
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
    if !matches!(bytes[0], META_V1 | META_V2 | META_V3) {
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
            key: ChunkKey::default(),
        }
    } else {
        let (w, key) = if bytes[0] == META_V3 {
            let w: MetaV3 = decode_body(body)?;
            let key = ChunkKey {
                tag: w.tag,
                timekey: w.timekey,
            };
            if key.is_empty() {
                return Err(CodecError::Malformed(
                    "version 3 metadata without a chunk key".into(),
                ));
            }
            (w.v2, key)
        } else {
            (decode_body::<MetaV2>(body)?, ChunkKey::default())
        };
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
            key,
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
            key: ChunkKey::default(),
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

    #[test]
    fn keyed_metadata_is_version_3_and_keeps_its_key() {
        let keyed = ChunkMeta {
            key: ChunkKey {
                tag: Some("app.web".into()),
                timekey: Some(1_796_292_000),
            },
            ..meta()
        };
        let bytes = encode_meta(&keyed);
        assert_eq!(bytes[0], META_V3);
        assert_eq!(decode_meta(&bytes).unwrap(), keyed);
        let tag_only = ChunkMeta {
            key: ChunkKey {
                tag: Some(String::new()),
                timekey: None,
            },
            ..meta()
        };
        assert_eq!(decode_meta(&encode_meta(&tag_only)).unwrap(), tag_only);
        // An unkeyed chunk is still written as version 2 (readable by the release before).
        assert_eq!(encode_meta(&meta())[0], META_V2);
    }

    #[test]
    fn a_delivered_set_beyond_the_records_is_refused_despite_a_valid_checksum() {
        let mut m = meta();
        m.records = 10;
        assert!(matches!(
            decode_meta(&encode_meta(&m)),
            Err(CodecError::Malformed(_))
        ));
    }
}
