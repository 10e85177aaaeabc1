//! Packing records into aggregated records of at most the Kinesis record limit.
//!
//! Sizes are computed, not measured after the fact: before a record goes in, the packer knows
//! to the byte what the Kinesis record would weigh with it (magic + protobuf + digest +
//! partition key), so an aggregated record is closed exactly when the next record would pass
//! the limit, and never has to be split or re-encoded.

use std::ops::Range;

use rand::RngCore;

use super::codec;
use super::proto::{AggregatedRecord, Record};
use super::{DIGEST_LEN, MAGIC};
use crate::buffer::Chunk;

/// Bytes of a random partition key: 16 random bytes in lowercase hex, as fluent-plugin-kinesis
/// makes them (`SecureRandom.hex(16)`).
pub const RANDOM_KEY_LEN: usize = 32;

/// Longest partition key Kinesis takes, in Unicode characters.
pub const MAX_PARTITION_KEY_CHARS: usize = 256;

/// Which partition key each aggregated record gets. All user records of one aggregated record
/// share its key, so a consumer sees them with that key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PartitionKeys {
    /// A new random key per aggregated record ([`RANDOM_KEY_LEN`] hex characters): aggregated
    /// records spread over the shards.
    Random,
    /// The same key for every aggregated record (`fixed_partition_key`): everything goes to one
    /// shard, in order.
    Fixed(String),
}

impl PartitionKeys {
    /// The key for the next aggregated record.
    pub fn next_key(&self) -> String {
        match self {
            PartitionKeys::Random => {
                let mut bytes = [0u8; RANDOM_KEY_LEN / 2];
                rand::thread_rng().fill_bytes(&mut bytes);
                hex::encode(bytes)
            }
            PartitionKeys::Fixed(key) => key.clone(),
        }
    }

    /// Bytes (UTF-8) of every key [`PartitionKeys::next_key`] returns.
    pub fn key_len(&self) -> usize {
        match self {
            PartitionKeys::Random => RANDOM_KEY_LEN,
            PartitionKeys::Fixed(key) => key.len(),
        }
    }
}

/// Why `key` cannot be a Kinesis partition key (it must have 1 to 256 Unicode characters).
pub fn partition_key_problem(key: &str) -> Option<String> {
    let chars = key.chars().count();
    if chars == 0 {
        Some("a partition key cannot be empty".to_owned())
    } else if chars > MAX_PARTITION_KEY_CHARS {
        Some(format!(
            "a partition key has at most {MAX_PARTITION_KEY_CHARS} Unicode characters, this one \
             has {chars}"
        ))
    } else {
        None
    }
}

/// Protobuf bytes of one `Record` entry (field 3 of `AggregatedRecord`) holding `data_len`
/// bytes of data at partition key index 0: the entry's key and length, then the record's
/// `partition_key_index` (key byte + one-byte varint 0) and `data` (key byte, length, bytes).
pub fn record_entry_len(data_len: usize) -> usize {
    let inner = 2 + 1 + prost::length_delimiter_len(data_len) + data_len;
    1 + prost::length_delimiter_len(inner) + inner
}

/// Protobuf bytes of one partition key table entry (field 1) of `key_len` bytes.
fn key_entry_len(key_len: usize) -> usize {
    1 + prost::length_delimiter_len(key_len) + key_len
}

/// What a Kinesis record carrying an aggregated record weighs against the limit before any
/// user record is in it: magic, the key table entry, digest, and the partition key itself.
fn empty_len(key_len: usize) -> usize {
    MAGIC.len() + key_entry_len(key_len) + DIGEST_LEN + key_len
}

/// Kinesis bytes (aggregated record plus partition key) of an aggregated record holding one
/// record of `data_len` bytes under a key of `key_len` bytes.
pub fn single_record_len(data_len: usize, key_len: usize) -> usize {
    empty_len(key_len) + record_entry_len(data_len)
}

/// The largest record that fits alone in an aggregated record under a key of `key_len` bytes
/// within `limit` Kinesis bytes; `None` if not even an empty record fits.
pub fn max_data_len(key_len: usize, limit: usize) -> Option<usize> {
    // Each length prefix takes at least one byte: start there and step down while a longer
    // varint pushes it over (a few steps at most).
    let mut data_len = limit.checked_sub(empty_len(key_len) + 5)?;
    while single_record_len(data_len, key_len) > limit {
        data_len = data_len.checked_sub(1)?;
    }
    Some(data_len)
}

/// One aggregated record being filled, with one partition key.
#[derive(Debug)]
pub struct Aggregator {
    key: String,
    message: AggregatedRecord,
    /// `message.encoded_len()`, kept as records go in.
    protobuf_len: usize,
    limit: usize,
}

impl Aggregator {
    /// An empty aggregated record with partition key `key`, to hold at most `limit` Kinesis
    /// bytes (normally [`super::MAX_RECORD_BYTES`]).
    pub fn new(key: String, limit: usize) -> Self {
        let protobuf_len = key_entry_len(key.len());
        Aggregator {
            message: AggregatedRecord {
                partition_key_table: vec![key.clone()],
                ..Default::default()
            },
            key,
            protobuf_len,
            limit,
        }
    }

    /// Kinesis bytes of the record as it stands: magic, protobuf, digest and partition key.
    pub fn kinesis_len(&self) -> usize {
        MAGIC.len() + self.protobuf_len + DIGEST_LEN + self.key.len()
    }

    /// Number of user records in it.
    pub fn len(&self) -> usize {
        self.message.records.len()
    }

    /// True when it holds no user record.
    pub fn is_empty(&self) -> bool {
        self.message.records.is_empty()
    }

    /// Adds `data` if the record stays within the limit with it; false (and nothing added)
    /// otherwise.
    pub fn try_push(&mut self, data: &[u8]) -> bool {
        let entry = record_entry_len(data.len());
        if self.kinesis_len() + entry > self.limit {
            return false;
        }
        self.message.records.push(Record {
            partition_key_index: 0,
            explicit_hash_key_index: None,
            data: data.to_vec(),
            tags: Vec::new(),
        });
        self.protobuf_len += entry;
        true
    }

    /// The partition key and the bytes of the aggregated record.
    pub fn finish(self) -> (String, Vec<u8>) {
        debug_assert_eq!(
            prost::Message::encoded_len(&self.message),
            self.protobuf_len
        );
        let mut out = Vec::with_capacity(MAGIC.len() + self.protobuf_len + DIGEST_LEN);
        out.extend_from_slice(&MAGIC);
        codec::finish_into(&self.message, &mut out);
        (self.key, out)
    }
}

/// One Kinesis record carrying an aggregated record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Aggregate {
    /// The Kinesis record's partition key, also the key of every user record in it.
    pub partition_key: String,
    /// The aggregated record (magic, protobuf, MD5).
    pub data: Vec<u8>,
    /// Which entries of [`Packed::sources`] it carries (consecutive).
    pub sources: Range<usize>,
}

impl Aggregate {
    /// What Kinesis counts against its per-record limit: data plus partition key.
    pub fn kinesis_len(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// Records packed into aggregated records.
#[derive(Debug, Default)]
pub struct Packed {
    /// Aggregated records, in input order.
    pub aggregates: Vec<Aggregate>,
    /// Input indices of the records the aggregates carry, in order.
    pub sources: Vec<usize>,
    /// Records too large for an aggregated record of their own, with why, as input indices.
    pub rejected: Vec<(usize, String)>,
}

impl Packed {
    /// The input indices carried by aggregate `i`.
    pub fn indices(&self, i: usize) -> &[usize] {
        match self.aggregates.get(i) {
            Some(a) => self.sources.get(a.sources.clone()).unwrap_or(&[]),
            None => &[],
        }
    }
}

/// Packs `records` (input index, bytes), in order, into aggregated records of at most `limit`
/// Kinesis bytes each (normally [`super::MAX_RECORD_BYTES`]), each with the next key of
/// `keys`. A record too large even alone is rejected with the reason and the rest goes on.
pub fn pack<'a>(
    records: impl IntoIterator<Item = (usize, &'a [u8])>,
    keys: &PartitionKeys,
    limit: usize,
) -> Packed {
    let mut out = Packed::default();
    let max_alone = max_data_len(keys.key_len(), limit);
    let mut current: Option<Aggregator> = None;
    for (index, data) in records {
        if max_alone.is_none_or(|max| data.len() > max) {
            out.rejected
                .push((index, too_large(data.len(), keys.key_len(), limit)));
            continue;
        }
        let aggregator = current.get_or_insert_with(|| Aggregator::new(keys.next_key(), limit));
        if !aggregator.try_push(data) {
            if let Some(full) = current.take() {
                close(full, &mut out);
            }
            let mut fresh = Aggregator::new(keys.next_key(), limit);
            let fitted = fresh.try_push(data);
            debug_assert!(
                fitted,
                "a record under max_data_len fits an empty aggregate"
            );
            current = Some(fresh);
        }
        out.sources.push(index);
    }
    if let Some(last) = current.take() {
        close(last, &mut out);
    }
    out
}

/// [`pack`] over the records of `chunk` not delivered yet; indices are chunk indices.
pub fn pack_chunk(chunk: &Chunk, keys: &PartitionKeys, limit: usize) -> Packed {
    pack(
        chunk
            .pending()
            .filter_map(|i| chunk.records.get(i).map(|r| (i, r))),
        keys,
        limit,
    )
}

fn close(aggregator: Aggregator, out: &mut Packed) {
    if aggregator.is_empty() {
        return;
    }
    let end = out.sources.len();
    let start = end - aggregator.len();
    let (partition_key, data) = aggregator.finish();
    out.aggregates.push(Aggregate {
        partition_key,
        data,
        sources: start..end,
    });
}

/// The dead-letter reason of a record of `data_len` bytes that fits no aggregated record.
fn too_large(data_len: usize, key_len: usize, limit: usize) -> String {
    let total = single_record_len(data_len, key_len);
    format!(
        "record is {data_len} bytes; alone in a KPL aggregated record with its {key_len}-byte \
         partition key it makes a Kinesis record of {total} bytes, over the limit of {limit} \
         bytes per record (data plus partition key)"
    )
}
