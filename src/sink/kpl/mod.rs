//! The KPL aggregated record format: many user records in one Kinesis Data Streams record.
//!
//! Kinesis meters a stream per shard in records/s (1,000) and bytes/s (1 MiB), and bills
//! PUT payload units of 25 KB. A 200-byte log line sent as its own record uses a record of the
//! quota for 200 bytes; packed with 5,000 others into one aggregated record it uses one record
//! for 1 MiB. Consumers built on the KCL, Lambda's deaggregation modules or `aws-kinesis-agg`
//! split an aggregated record back into the user records, each with its own partition key;
//! [`deaggregate`] does the same here (tests, tools).
//!
//! # Format
//!
//! ```text
//! F3 89 9A C2 | protobuf AggregatedRecord | MD5 of the protobuf bytes (16 bytes)
//! ```
//!
//! The messages are in [`proto`]. A Kinesis record carrying an aggregated record has its own
//! partition key (it decides the shard); Kinesis counts that key plus the whole aggregated
//! record, magic and digest included, against its 1 MiB ([`MAX_RECORD_BYTES`]) per-record
//! limit.
//!
//! # What the relay writes
//!
//! As fluent-plugin-kinesis's `kinesis_streams_aggregated`: one partition key per aggregated
//! record, used both as the Kinesis record's key and as the key of every user record in it —
//! `fixed_partition_key`, or 32 random hex characters per aggregated record
//! ([`PartitionKeys`]). The plugin's table is `["a", key]` with every record at index 1, a way
//! around its Ruby protobuf leaving out fields that hold 0; the relay writes `[key]` and index
//! 0, which prost writes out because the field is `required` (see [`proto`]). Consumers read
//! the same user records and keys either way. No explicit hash keys and no tags are written.
//!
//! [`Aggregator`] fills one aggregated record with exact size arithmetic; [`pack`] and
//! [`pack_chunk`] cut a run of records into aggregated records, each as full as the limit
//! allows, and reject (for the dead-letter directory) a record too large even alone.

mod aggregated;
mod codec;
mod pack;
pub mod proto;

pub use aggregated::{build_sink, key_problems, AggregatedPacker};
pub use codec::{aggregate, deaggregate, decode, encode, is_aggregated, KplError, UserRecord};
pub use pack::{
    max_data_len, pack, pack_chunk, partition_key_problem, record_entry_len, single_record_len,
    Aggregate, Aggregator, Packed, PartitionKeys, MAX_PARTITION_KEY_CHARS, RANDOM_KEY_LEN,
};

/// The four bytes every aggregated record starts with.
pub const MAGIC: [u8; 4] = [0xF3, 0x89, 0x9A, 0xC2];

/// Bytes of the MD5 digest at the end of an aggregated record.
pub const DIGEST_LEN: usize = 16;

/// Largest Kinesis Data Streams record: 1 MiB of data plus partition key (UTF-8 bytes).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

#[cfg(test)]
mod tests;
