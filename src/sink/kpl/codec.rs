//! Aggregated records as bytes: [`encode`] and [`decode`] of the framing (magic, protobuf,
//! MD5), and [`deaggregate`] into user records with their keys resolved, the way a consumer
//! (KCL, Lambda deaggregation, `aws-kinesis-agg`) reads them.

use md5::{Digest, Md5};
use prost::Message;

use super::proto::AggregatedRecord;
use super::{DIGEST_LEN, MAGIC};

/// Why bytes are not a valid aggregated record.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KplError {
    /// Shorter than magic plus digest, or not starting with the magic: a plain Kinesis record.
    #[error("not an aggregated record (no KPL magic F3 89 9A C2, or shorter than 20 bytes)")]
    NotAggregated,
    /// The MD5 at the end does not match the protobuf bytes.
    #[error("MD5 digest does not match the aggregated record's protobuf bytes")]
    Digest,
    /// The protobuf bytes do not parse as an `AggregatedRecord`.
    #[error("protobuf: {0}")]
    Protobuf(String),
    /// A record points outside the partition key or explicit hash key table.
    #[error("user record {record}: {table} index {index} outside a table of {len}")]
    Index {
        /// Position of the user record.
        record: usize,
        /// Which table.
        table: &'static str,
        /// The index it holds.
        index: u64,
        /// Entries in the table.
        len: usize,
    },
}

/// One user record as a consumer sees it after deaggregation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserRecord {
    /// Its partition key (from the aggregated record's table).
    pub partition_key: String,
    /// Its explicit hash key, if any.
    pub explicit_hash_key: Option<String>,
    /// Its bytes.
    pub data: Vec<u8>,
}

/// The bytes of an aggregated record: magic, `message`, MD5 of the message.
pub fn encode(message: &AggregatedRecord) -> Vec<u8> {
    let len = message.encoded_len();
    let mut out = Vec::with_capacity(MAGIC.len() + len + DIGEST_LEN);
    out.extend_from_slice(&MAGIC);
    finish_into(message, &mut out);
    out
}

/// Appends `message` and its MD5 to `out`, which holds the magic (and nothing after it).
pub(super) fn finish_into(message: &AggregatedRecord, out: &mut Vec<u8>) {
    let start = out.len();
    out.reserve(message.encoded_len() + DIGEST_LEN);
    message
        .encode(out)
        .expect("a Vec grows as needed: encoding into it cannot run out of room");
    let digest = Md5::digest(&out[start..]);
    out.extend_from_slice(&digest);
}

/// True when `blob` starts with the magic and is long enough to hold a digest: what the KCL
/// and `aws-kinesis-agg` check before treating a record as aggregated.
pub fn is_aggregated(blob: &[u8]) -> bool {
    blob.len() > MAGIC.len() + DIGEST_LEN && blob.starts_with(&MAGIC)
}

/// Parses an aggregated record: magic, digest check, protobuf.
pub fn decode(blob: &[u8]) -> Result<AggregatedRecord, KplError> {
    if !is_aggregated(blob) {
        return Err(KplError::NotAggregated);
    }
    let (message, digest) = blob[MAGIC.len()..].split_at(blob.len() - MAGIC.len() - DIGEST_LEN);
    if Md5::digest(message).as_slice() != digest {
        return Err(KplError::Digest);
    }
    AggregatedRecord::decode(message).map_err(|e| KplError::Protobuf(e.to_string()))
}

/// The user records of an aggregated record, keys resolved through the tables.
pub fn deaggregate(blob: &[u8]) -> Result<Vec<UserRecord>, KplError> {
    let message = decode(blob)?;
    let AggregatedRecord {
        partition_key_table: keys,
        explicit_hash_key_table: hash_keys,
        records,
    } = message;
    let lookup = |record: usize, table: &'static str, list: &[String], index: u64| {
        usize::try_from(index)
            .ok()
            .and_then(|i| list.get(i))
            .cloned()
            .ok_or(KplError::Index {
                record,
                table,
                index,
                len: list.len(),
            })
    };
    records
        .into_iter()
        .enumerate()
        .map(|(i, r)| {
            Ok(UserRecord {
                partition_key: lookup(i, "partition key", &keys, r.partition_key_index)?,
                explicit_hash_key: r
                    .explicit_hash_key_index
                    .map(|h| lookup(i, "explicit hash key", &hash_keys, h))
                    .transpose()?,
                data: r.data,
            })
        })
        .collect()
}

/// The aggregated record of `records`, with each distinct key in the tables once (in order of
/// first use). The general encoder: the sink's packer ([`super::Aggregator`]) writes the
/// one-key form directly.
pub fn aggregate(records: &[UserRecord]) -> Vec<u8> {
    fn index_of(table: &mut Vec<String>, key: &str) -> u64 {
        let i = table.iter().position(|k| k == key).unwrap_or_else(|| {
            table.push(key.to_owned());
            table.len() - 1
        });
        i as u64
    }
    let mut message = AggregatedRecord::default();
    for r in records {
        let partition_key_index = index_of(&mut message.partition_key_table, &r.partition_key);
        let explicit_hash_key_index = r
            .explicit_hash_key
            .as_deref()
            .map(|h| index_of(&mut message.explicit_hash_key_table, h));
        message.records.push(super::proto::Record {
            partition_key_index,
            explicit_hash_key_index,
            data: r.data.clone(),
            tags: Vec::new(),
        });
    }
    encode(&message)
}
