//! How a chunk's records become Kinesis records: the replaceable packing step of the Kinesis
//! face ([`Packer`]). [`PlainPacker`] makes one Kinesis record per relay record
//! (`kinesis_streams`); an aggregating packer (KPL records, `kinesis_streams_aggregated`)
//! plugs into the same face and produces the same [`KinesisRecords`].
//!
//! Kinesis counts a record's data *plus* its partition key against the 1 MiB record limit and
//! the 5 MiB call limit ([`KinesisRecord::kinesis_len`]); a record over it is rejected with
//! the reason and dead-lettered.

use std::borrow::Cow;
use std::fmt;
use std::ops::Range;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};

use crate::buffer::Chunk;
use crate::sink::aws_batch::{gzip, Data, PackedChunk};
use crate::sink::kpl::{partition_key_problem, PartitionKeys};

/// One Kinesis record and the chunk records it carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KinesisRecord {
    /// The data blob.
    pub data: Data,
    /// Its partition key (1–256 Unicode characters).
    pub partition_key: String,
    /// Its explicit hash key, if any.
    pub explicit_hash_key: Option<String>,
    /// Which entries of [`KinesisRecords::sources`] it carries (consecutive).
    pub sources: Range<usize>,
}

impl KinesisRecord {
    /// What Kinesis counts against its limits: data plus partition key (UTF-8 bytes).
    pub fn kinesis_len(&self) -> usize {
        self.data.len() + self.partition_key.len()
    }
}

/// A chunk packed into Kinesis records.
#[derive(Debug, Default)]
pub struct KinesisRecords {
    /// Kinesis records in chunk order.
    pub records: Vec<KinesisRecord>,
    /// Chunk indices carried by `records`, in order.
    pub sources: Vec<usize>,
    /// Chunk records that can never be sent, with the reason.
    pub rejected: Vec<(usize, String)>,
    /// Records whose `partition_key` field was missing (or unusable) and got a random key.
    pub random_keys_for_missing: u64,
}

impl KinesisRecords {
    /// Adds a record carrying chunk records `indices`.
    pub fn push(
        &mut self,
        data: Data,
        partition_key: String,
        explicit_hash_key: Option<String>,
        indices: &[usize],
    ) {
        let start = self.sources.len();
        self.sources.extend_from_slice(indices);
        self.records.push(KinesisRecord {
            data,
            partition_key,
            explicit_hash_key,
            sources: start..self.sources.len(),
        });
    }
}

impl PackedChunk for KinesisRecords {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn size(&self, i: usize) -> usize {
        self.records.get(i).map_or(0, KinesisRecord::kinesis_len)
    }

    fn chunk_indices(&self, i: usize) -> &[usize] {
        match self.records.get(i) {
            Some(r) => self.sources.get(r.sources.clone()).unwrap_or(&[]),
            None => &[],
        }
    }

    fn rejected(&self) -> &[(usize, String)] {
        &self.rejected
    }
}

/// The packing step of the Kinesis face.
pub trait Packer: Send + Sync + 'static {
    /// Packs the records of `chunk` not delivered yet.
    fn pack(&self, chunk: &Chunk) -> KinesisRecords;
    /// True when packing is CPU work worth moving off the async workers (compression,
    /// aggregation).
    fn cpu_heavy(&self) -> bool;
    /// For the startup log (`plain`, `kpl aggregated`).
    fn describe(&self) -> String;
}

/// One Kinesis record per relay record (`type = "kinesis_streams"`).
#[derive(Debug, Clone)]
pub struct PlainPacker {
    /// The record field holding the partition key; `None`: a random key per record.
    pub partition_key: Option<String>,
    /// The record field holding the explicit hash key.
    pub explicit_hash_key: Option<String>,
    /// Gzip each record.
    pub gzip: bool,
    /// Largest Kinesis record, data plus partition key (1 MiB; lower in tests).
    pub max_record_bytes: usize,
}

impl Packer for PlainPacker {
    fn pack(&self, chunk: &Chunk) -> KinesisRecords {
        let mut out = KinesisRecords::default();
        for i in chunk.pending() {
            let Some(record) = chunk.records.get(i) else {
                continue;
            };
            if let Err(reason) = self.push(chunk, i, record, &mut out) {
                out.rejected.push((i, reason));
            }
        }
        out
    }

    fn cpu_heavy(&self) -> bool {
        self.gzip
    }

    fn describe(&self) -> String {
        match &self.partition_key {
            Some(f) => format!("plain, partition key from field `{f}`"),
            None => "plain, random partition keys".to_owned(),
        }
    }
}

impl PlainPacker {
    fn push(
        &self,
        chunk: &Chunk,
        i: usize,
        record: &[u8],
        out: &mut KinesisRecords,
    ) -> Result<(), String> {
        let fields = if self.partition_key.is_some() || self.explicit_hash_key.is_some() {
            read_fields(
                record,
                self.partition_key.as_deref(),
                self.explicit_hash_key.as_deref(),
            )
        } else {
            Fields::default()
        };
        let partition_key = match fields.partition_key {
            Some(key) => {
                if let Some(problem) = partition_key_problem(&key) {
                    return Err(format!(
                        "field `{}`: {problem}",
                        self.partition_key.as_deref().unwrap_or_default()
                    ));
                }
                key.into_owned()
            }
            None => {
                if self.partition_key.is_some() {
                    out.random_keys_for_missing += 1;
                }
                PartitionKeys::Random.next_key()
            }
        };
        let explicit_hash_key = match fields.explicit_hash_key {
            Some(h) => {
                if let Some(problem) = explicit_hash_key_problem(&h) {
                    return Err(format!(
                        "field `{}`: {problem}",
                        self.explicit_hash_key.as_deref().unwrap_or_default()
                    ));
                }
                Some(h.into_owned())
            }
            None => None,
        };
        let data = if self.gzip {
            Data::Owned(gzip(record).map_err(|e| format!("gzip compression failed: {e}"))?)
        } else {
            match chunk.records.byte_span(i..i + 1) {
                Some(span) => Data::Span(span),
                None => Data::Owned(record.to_vec()),
            }
        };
        let total = data.len() + partition_key.len();
        if total > self.max_record_bytes {
            let (data_len, key_len, limit) =
                (data.len(), partition_key.len(), self.max_record_bytes);
            let what = if self.gzip {
                format!("{} bytes, {data_len} after gzip", record.len())
            } else {
                format!("{data_len} bytes")
            };
            return Err(format!(
                "record is {what}; with its {key_len}-byte partition key it makes a Kinesis record of {total} bytes, over the limit of {limit} bytes (data plus partition key)"
            ));
        }
        out.push(data, partition_key, explicit_hash_key, &[i]);
        Ok(())
    }
}

/// Why `h` cannot be an explicit hash key: Kinesis takes a decimal integer from 0 to
/// 2^128 - 1, without sign or leading zeros.
pub fn explicit_hash_key_problem(h: &str) -> Option<String> {
    let canonical = h.parse::<u128>().is_ok_and(|v| v.to_string() == h);
    (!canonical)
        .then(|| format!("an explicit hash key is a decimal integer from 0 to 2^128-1, not `{h}`"))
}

/// The values of the two fields of a JSON record, when present and usable as text: a string
/// as is, a number or boolean as its JSON text; anything else (null, object, array, empty
/// string) counts as missing.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Fields<'a> {
    /// The partition key field's value.
    pub partition_key: Option<Cow<'a, str>>,
    /// The explicit hash key field's value.
    pub explicit_hash_key: Option<Cow<'a, str>>,
}

/// Reads top-level fields `pk` and `ehk` of the JSON object `record` (a formatted record,
/// maybe newline-terminated), skipping everything else without copying it. A record that is
/// not a JSON object has neither.
pub fn read_fields<'a>(record: &'a [u8], pk: Option<&str>, ehk: Option<&str>) -> Fields<'a> {
    let mut de = serde_json::Deserializer::from_slice(record);
    de.deserialize_map(FieldsVisitor { pk, ehk })
        .unwrap_or_default()
}

struct FieldsVisitor<'n> {
    pk: Option<&'n str>,
    ehk: Option<&'n str>,
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Which {
    PartitionKey,
    ExplicitHashKey,
    Both,
    Other,
}

/// Compares a key with the field names as it is read, borrowed when it has no escapes.
struct KeySeed<'n> {
    pk: Option<&'n str>,
    ehk: Option<&'n str>,
}

impl<'de> DeserializeSeed<'de> for KeySeed<'_> {
    type Value = Which;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Which, D::Error> {
        d.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for KeySeed<'_> {
    type Value = Which;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }

    fn visit_str<E: serde::de::Error>(self, key: &str) -> Result<Which, E> {
        let (p, e) = (self.pk == Some(key), self.ehk == Some(key));
        Ok(match (p, e) {
            (true, true) => Which::Both,
            (true, false) => Which::PartitionKey,
            (false, true) => Which::ExplicitHashKey,
            (false, false) => Which::Other,
        })
    }
}

/// A field's value as text, if it has a usable one.
struct ValueText<'a>(Option<Cow<'a, str>>);

impl<'de> serde::Deserialize<'de> for ValueText<'de> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = ValueText<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("any JSON value")
            }
            fn visit_borrowed_str<E: serde::de::Error>(
                self,
                s: &'de str,
            ) -> Result<Self::Value, E> {
                Ok(ValueText((!s.is_empty()).then_some(Cow::Borrowed(s))))
            }
            fn visit_str<E: serde::de::Error>(self, s: &str) -> Result<Self::Value, E> {
                Ok(ValueText((!s.is_empty()).then(|| Cow::Owned(s.to_owned()))))
            }
            fn visit_bool<E: serde::de::Error>(self, b: bool) -> Result<Self::Value, E> {
                Ok(ValueText(Some(Cow::Owned(b.to_string()))))
            }
            fn visit_i64<E: serde::de::Error>(self, n: i64) -> Result<Self::Value, E> {
                Ok(ValueText(Some(Cow::Owned(n.to_string()))))
            }
            fn visit_u64<E: serde::de::Error>(self, n: u64) -> Result<Self::Value, E> {
                Ok(ValueText(Some(Cow::Owned(n.to_string()))))
            }
            fn visit_f64<E: serde::de::Error>(self, n: f64) -> Result<Self::Value, E> {
                Ok(ValueText(Some(Cow::Owned(n.to_string()))))
            }
            fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
                Ok(ValueText(None))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut a: A,
            ) -> Result<Self::Value, A::Error> {
                while a.next_element::<IgnoredAny>()?.is_some() {}
                Ok(ValueText(None))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut a: A) -> Result<Self::Value, A::Error> {
                while a.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(ValueText(None))
            }
        }
        d.deserialize_any(V)
    }
}

impl<'de> Visitor<'de> for FieldsVisitor<'_> {
    type Value = Fields<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Fields<'de>, A::Error> {
        let mut out = Fields::default();
        let seed = || KeySeed {
            pk: self.pk,
            ehk: self.ehk,
        };
        while let Some(which) = map.next_key_seed(seed())? {
            match which {
                Which::Other => {
                    map.next_value::<IgnoredAny>()?;
                }
                Which::PartitionKey => out.partition_key = map.next_value::<ValueText<'de>>()?.0,
                Which::ExplicitHashKey => {
                    out.explicit_hash_key = map.next_value::<ValueText<'de>>()?.0
                }
                Which::Both => {
                    let v = map.next_value::<ValueText<'de>>()?.0;
                    out.explicit_hash_key.clone_from(&v);
                    out.partition_key = v;
                }
            }
        }
        Ok(out)
    }
}

#[cfg(test)]
#[path = "pack_tests.rs"]
mod tests;
