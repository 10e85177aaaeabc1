//! `type = "kinesis_streams_aggregated"`: the packing step ([`AggregatedPacker`]) that plugs
//! KPL aggregation into the Kinesis Data Streams face
//! ([`crate::sink::kinesis_streams::Packer`]). Everything else — the PutRecords call, limits
//! per call, partial-failure resends, pacing, credentials, metrics — is the `kinesis_streams`
//! output's, unchanged: an aggregated record is one Kinesis record carrying many chunk
//! records, and when Kinesis confirms it, all of them are delivered.

use std::sync::Arc;

use super::MAX_RECORD_BYTES;
use super::{max_data_len, pack, pack_chunk, partition_key_problem, Packed, PartitionKeys};
use crate::buffer::Chunk;
use crate::ops::metrics::Metrics;
use crate::sink::aws_batch::connect::BuildError;
use crate::sink::aws_batch::{gzip, Data};
use crate::sink::firehose::Compression;
use crate::sink::kinesis_streams::{
    KinesisRecords, KinesisStreamsConfig, KinesisStreamsSink, Packer,
};

/// Builds the `kinesis_streams_aggregated` output `name`: the Kinesis output with the
/// aggregating packer.
pub async fn build_sink(
    name: &str,
    cfg: &KinesisStreamsConfig,
    metrics: &Arc<Metrics>,
) -> Result<KinesisStreamsSink, BuildError> {
    let packer = AggregatedPacker {
        keys: cfg.partition_keys(),
        gzip: cfg.compression == Compression::Gzip,
        max_record_bytes: MAX_RECORD_BYTES,
    };
    KinesisStreamsSink::build_with(name, cfg, Arc::new(packer), metrics).await
}

impl KinesisStreamsConfig {
    /// The keys of `kinesis_streams_aggregated`: `fixed_partition_key`, else random.
    pub fn partition_keys(&self) -> PartitionKeys {
        self.fixed_partition_key
            .clone()
            .map_or(PartitionKeys::Random, PartitionKeys::Fixed)
    }

    /// Largest formatted record `kinesis_streams_aggregated` takes at intake: one that fits
    /// alone in an aggregated record of 1 MiB with its partition key (1,048,480 bytes under a
    /// random key). With gzip the record's compressed size decides, when it is packed.
    pub fn max_aggregated_record_bytes(&self) -> usize {
        if self.compression == Compression::Gzip {
            return MAX_RECORD_BYTES;
        }
        max_data_len(self.partition_keys().key_len(), MAX_RECORD_BYTES).unwrap_or(0)
    }
}

/// Partition key settings that do not fit the output type (`aggregated`: the
/// `kinesis_streams_aggregated` output).
pub fn key_problems(cfg: &KinesisStreamsConfig, aggregated: bool) -> Vec<(&'static str, String)> {
    let mut p = Vec::new();
    if aggregated {
        for (key, set) in [
            ("partition_key", cfg.partition_key.is_some()),
            ("explicit_hash_key", cfg.explicit_hash_key.is_some()),
        ] {
            if set {
                p.push((
                    key,
                    "kinesis_streams_aggregated gives all records of an aggregated record one \
                     partition key: use fixed_partition_key, or leave it unset for a random key \
                     per aggregated record"
                        .to_owned(),
                ));
            }
        }
        if let Some(problem) = cfg
            .fixed_partition_key
            .as_deref()
            .and_then(partition_key_problem)
        {
            p.push(("fixed_partition_key", problem));
        }
    } else if cfg.fixed_partition_key.is_some() {
        p.push((
            "fixed_partition_key",
            "only for type = \"kinesis_streams_aggregated\"; kinesis_streams takes \
             partition_key (a record field)"
                .to_owned(),
        ));
    }
    p
}

/// Packs a chunk's pending records into KPL aggregated records, one partition key each.
#[derive(Debug, Clone)]
pub struct AggregatedPacker {
    /// `fixed_partition_key`, or a random key per aggregated record.
    pub keys: PartitionKeys,
    /// Gzip each user record before it goes in (as fluent-plugin-kinesis compresses each
    /// record, not the aggregate).
    pub gzip: bool,
    /// Largest Kinesis record, data plus partition key (1 MiB; lower in tests).
    pub max_record_bytes: usize,
}

impl Packer for AggregatedPacker {
    fn pack(&self, chunk: &Chunk) -> KinesisRecords {
        let mut out = KinesisRecords::default();
        let packed = if self.gzip {
            let mut compressed = Vec::new();
            for i in chunk.pending() {
                let Some(record) = chunk.records.get(i) else {
                    continue;
                };
                match gzip(record) {
                    Ok(d) => compressed.push((i, d)),
                    Err(e) => out
                        .rejected
                        .push((i, format!("gzip compression failed: {e}"))),
                }
            }
            let mut packed = pack(
                compressed.iter().map(|(i, d)| (*i, &d[..])),
                &self.keys,
                self.max_record_bytes,
            );
            for (i, reason) in &mut packed.rejected {
                let raw = chunk.records.record_len(*i);
                *reason = format!("after gzip ({raw} bytes before): {reason}");
            }
            packed
        } else {
            pack_chunk(chunk, &self.keys, self.max_record_bytes)
        };
        let Packed {
            aggregates,
            sources,
            rejected,
        } = packed;
        out.rejected.extend(rejected);
        for a in aggregates {
            let indices = sources.get(a.sources.clone()).unwrap_or(&[]);
            out.push(Data::Owned(a.data), a.partition_key, None, indices);
        }
        out
    }

    fn cpu_heavy(&self) -> bool {
        // MD5 and the protobuf encoding of up to 1 MiB per aggregated record.
        true
    }

    fn describe(&self) -> String {
        match &self.keys {
            PartitionKeys::Random => {
                "KPL aggregated, a random partition key per aggregated record".to_owned()
            }
            PartitionKeys::Fixed(k) => format!("KPL aggregated, fixed partition key `{k}`"),
        }
    }
}
