//! The protobuf messages of the KPL aggregation format, written as prost derives (no `.proto`
//! file, no `protoc` at build time). They match the KPL's `messages.proto` (proto2):
//!
//! ```text
//! message AggregatedRecord {
//!   repeated string partition_key_table     = 1;
//!   repeated string explicit_hash_key_table = 2;
//!   repeated Record records                 = 3;
//! }
//! message Tag    { required string key = 1; optional string value = 2; }
//! message Record {
//!   required uint64 partition_key_index     = 1;
//!   optional uint64 explicit_hash_key_index = 2;
//!   required bytes  data                    = 3;
//!   repeated Tag    tags                    = 4;
//! }
//! ```
//!
//! `required` matters: proto2 parsers (the KCL's Java protobuf) refuse a `Record` without
//! `partition_key_index` or `data`, and a proto3-style encoder leaves out a field holding its
//! default value (index 0, empty data). prost's `required` always writes the field, so index 0
//! and empty records are on the wire.

/// The message between the magic and the digest of an aggregated record.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct AggregatedRecord {
    /// Partition keys the records point into (`Record::partition_key_index`).
    #[prost(string, repeated, tag = "1")]
    pub partition_key_table: Vec<String>,
    /// Explicit hash keys the records point into (`Record::explicit_hash_key_index`).
    #[prost(string, repeated, tag = "2")]
    pub explicit_hash_key_table: Vec<String>,
    /// The user records, in order.
    #[prost(message, repeated, tag = "3")]
    pub records: Vec<Record>,
}

/// A tag of a user record (the KPL writes none; kept so decoding keeps them).
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Tag {
    /// Tag name.
    #[prost(string, required, tag = "1")]
    pub key: String,
    /// Tag value.
    #[prost(string, optional, tag = "2")]
    pub value: Option<String>,
}

/// One user record.
#[derive(Clone, PartialEq, ::prost::Message)]
pub struct Record {
    /// Index into `partition_key_table`.
    #[prost(uint64, required, tag = "1")]
    pub partition_key_index: u64,
    /// Index into `explicit_hash_key_table`, if the record has one.
    #[prost(uint64, optional, tag = "2")]
    pub explicit_hash_key_index: Option<u64>,
    /// The record's bytes.
    #[prost(bytes = "vec", required, tag = "3")]
    pub data: Vec<u8>,
    /// Tags (unused by the relay).
    #[prost(message, repeated, tag = "4")]
    pub tags: Vec<Tag>,
}
