//! `type = "kinesis_streams"`: delivers chunks to an Amazon Kinesis data stream with
//! PutRecords, the second face of the shared batch-put layer ([`crate::sink::aws_batch`]:
//! call loop, partial-failure resends, pacing, error classes, metrics, connection setup).
//!
//! What is Kinesis Data Streams' own:
//! 1. packing ([`pack`]): one Kinesis record per relay record, each with a partition key (the
//!    `partition_key` field of the record, else a random one) and optionally an explicit hash
//!    key; the packer is replaceable ([`Packer`]), which is how the aggregated output packs KPL
//!    records into the same face;
//! 2. limits: 500 records and 5 MiB per call and 1 MiB per record, where Kinesis counts data
//!    *plus* partition key;
//! 3. the call: PutRecords to `stream_name` or `stream_arn`, its body written in one pass by
//!    [`request`] (held to the SDK's serializer by a test), its answer read by the SDK; a
//!    `stream_name` with Fluentd's placeholders (`${tag}`, `${tag[N]}`, strftime) is resolved
//!    per chunk from its key, as the Firehose output's `delivery_stream` is
//!    ([`crate::sink::stream_name`]: validation, `/status` and per-stream metrics the same);
//! 4. error codes: `ProvisionedThroughputExceededException` and `KMSThrottlingException` are
//!    throttling, the other `KMS*` codes are configuration problems;
//! 5. its metric families, `kinesis_…`, plus `kinesis_partition_key_missing`.

pub mod config;
pub mod pack;
pub mod request;

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_kinesis::config::http::HttpResponse;
use aws_sdk_kinesis::error::SdkError;
use aws_sdk_kinesis::operation::put_records::{PutRecordsError, PutRecordsOutput};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;

pub use config::KinesisStreamsConfig;
pub use pack::{KinesisRecord, KinesisRecords, Packer, PlainPacker};

use self::request::{Entry, Target};
use super::aws_batch::call::RecordAnswer;
use super::aws_batch::connect::{connect, BuildError, ConnectOptions};
use super::aws_batch::metrics::{Families, Names, OutputLabels};
use super::aws_batch::pacing::Pacer;
use super::aws_batch::prebuilt::{self, PrebuiltBody};
use super::aws_batch::{errors, BatchPut, BatchPutSink};
use super::firehose::Compression;
use super::stream_name::{StreamFamily, StreamName, StreamStatus, StreamTracker};
use super::ErrorClass;
use crate::aws::http::HttpOptions;
use crate::buffer::Chunk;
use crate::ops::logging::Throttle;
use crate::ops::metrics::Metrics;

/// Hard PutRecords limit on records per call.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// Hard PutRecords limit on bytes per call, data plus partition keys (5 MiB).
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
/// Largest Kinesis record, data plus partition key (1 MiB).
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;

/// The Kinesis outputs' metric families.
pub const METRIC_NAMES: Names = Names {
    prefix: "kinesis",
    call_duration: "kinesis_put_records_duration_seconds",
    service: "Kinesis Data Streams",
    call: "PutRecords",
    failed_count: "FailedRecordCount",
};

/// The Kinesis families of a registry (a type of its own, so that they are registered once).
#[derive(Clone)]
struct KinesisFamilies {
    shared: Families,
    missing_keys: Family<OutputLabels, Counter>,
}

impl KinesisFamilies {
    fn register(metrics: &Metrics) -> Self {
        let missing_keys = Family::<OutputLabels, Counter>::default();
        metrics.register(
            "kinesis_partition_key_missing",
            "Records sent with a random partition key because their partition_key field was missing or not text",
            missing_keys.clone(),
        );
        KinesisFamilies {
            shared: Families::register(metrics, &METRIC_NAMES),
            missing_keys,
        }
    }
}

/// Sends chunks to one Kinesis data stream. Shared by the output's flush workers.
pub type KinesisStreamsSink = BatchPutSink<KinesisStreams>;

/// The Kinesis Data Streams face: one stream (or one per chunk key, for a `stream_name` with
/// placeholders), one packing step.
pub struct KinesisStreams {
    client: aws_sdk_kinesis::Client,
    target: Target,
    /// `stream_name` when it has placeholders, resolved per chunk.
    named: Option<StreamName>,
    /// Deliveries per resolved stream (with `named`).
    streams: Option<StreamTracker>,
    missing_part_log: Throttle,
    region: String,
    packer: Arc<dyn Packer>,
    missing_keys: Counter,
}

impl KinesisStreams {
    /// Where `chunk`'s records go.
    fn target_of(&self, chunk: &Chunk) -> Cow<'_, Target> {
        match &self.named {
            Some(n) => Cow::Owned(Target::Name(
                n.resolve_logged(&chunk.key, &self.missing_part_log)
                    .into_owned(),
            )),
            None => Cow::Borrowed(&self.target),
        }
    }
}

impl KinesisStreamsSink {
    /// Builds the `kinesis_streams` output `name`: plain records.
    pub async fn build(
        name: &str,
        cfg: &KinesisStreamsConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, BuildError> {
        let packer = PlainPacker {
            partition_key: cfg.partition_key.clone(),
            explicit_hash_key: cfg.explicit_hash_key.clone(),
            gzip: cfg.compression == Compression::Gzip,
            max_record_bytes: MAX_RECORD_BYTES,
        };
        Self::build_with(name, cfg, Arc::new(packer), metrics).await
    }

    /// Builds a Kinesis output `name` whose records are made by `packer`.
    pub async fn build_with(
        name: &str,
        cfg: &KinesisStreamsConfig,
        packer: Arc<dyn Packer>,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, BuildError> {
        let conn = connect(
            name,
            ConnectOptions {
                region: cfg.region.as_deref(),
                http: &HttpOptions {
                    tls_ca_file: cfg.tls_ca_file.clone(),
                    proxy_url: cfg.proxy_url.clone(),
                },
                credentials: cfg.credentials.as_ref(),
                request_timeout: cfg.request_timeout.0,
            },
            metrics,
        )
        .await?;
        // The body swap is the client's, not each call's (`aws_batch::prebuilt` on why).
        let mut builder =
            aws_sdk_kinesis::config::Builder::from(&conn.sdk).interceptor(PrebuiltBody {
                operation: "PutRecords",
            });
        if let Some(url) = &cfg.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        let families = metrics.component(KinesisFamilies::register);
        let output_metrics = families.shared.for_output(name);
        let labels = OutputLabels {
            output: name.to_owned(),
        };
        let missing_keys = families.missing_keys.get_or_create(&labels).clone();
        let sending = cfg.sending();
        let pacer = Pacer::new(sending.pacing_limits(), output_metrics.pacing.clone());
        let target = cfg.target();
        let region = conn.region;
        tracing::info!(output = name, stream = %target.as_str(), region = %region,
            endpoint = cfg.endpoint_url.as_deref().unwrap_or("default"), credentials = %conn.credentials.description,
            packing = %packer.describe(), compression = ?cfg.compression, "kinesis output configured");
        let named = cfg
            .stream_name
            .as_deref()
            .filter(|_| cfg.stream_arn.is_none())
            .map(|n| StreamName::new(n, &cfg.buffer))
            .filter(StreamName::is_templated);
        let streams = named
            .as_ref()
            .map(|_| StreamTracker::new(name, StreamFamily::of(metrics)));
        let face = KinesisStreams {
            client: aws_sdk_kinesis::Client::from_conf(builder.build()),
            target,
            named,
            streams,
            missing_part_log: Throttle::new(std::time::Duration::from_secs(10)),
            region: region.to_string(),
            packer,
            missing_keys,
        };
        Ok(BatchPutSink::new(
            face,
            sending.call_settings(),
            pacer,
            output_metrics,
            conn.credentials,
        ))
    }
}

/// Class of a Kinesis error code; codes both services use are in the shared table.
pub fn class_of_code(code: &str) -> Option<ErrorClass> {
    Some(match code {
        "ProvisionedThroughputExceededException" | "KMSThrottlingException" => {
            ErrorClass::Throttled
        }
        "KMSAccessDeniedException" => ErrorClass::AccessDenied,
        "KMSDisabledException"
        | "KMSInvalidStateException"
        | "KMSNotFoundException"
        | "KMSOptInRequired"
        | "ResourceInUseException" => ErrorClass::InvalidArgument,
        _ => return errors::class_of_code(code),
    })
}

#[async_trait]
impl BatchPut for KinesisStreams {
    type Packed = KinesisRecords;
    type Output = PutRecordsOutput;
    type Error = PutRecordsError;

    const OPERATION: &'static str = "PutRecords";

    async fn encode(&self, chunk: &Chunk) -> KinesisRecords {
        let packed = if self.packer.cpu_heavy() {
            // Compression and aggregation are CPU work: keep them off the async workers.
            let packer = Arc::clone(&self.packer);
            let owned = chunk.clone();
            match tokio::task::spawn_blocking(move || packer.pack(&owned)).await {
                Ok(p) => p,
                Err(_) => self.packer.pack(chunk),
            }
        } else {
            self.packer.pack(chunk)
        };
        if packed.random_keys_for_missing > 0 {
            self.missing_keys.inc_by(packed.random_keys_for_missing);
        }
        packed
    }

    /// One PutRecords request of the records `todo`, its body written by [`request`] and
    /// swapped in before signing (the SDK serializes an empty record list that is dropped).
    async fn put(
        &self,
        chunk: &Chunk,
        packed: &KinesisRecords,
        todo: &[usize],
    ) -> Result<PutRecordsOutput, SdkError<PutRecordsError, HttpResponse>> {
        let records = &packed.records;
        let target = self.target_of(chunk);
        let body = request::put_records_body(
            &target,
            todo.iter().map(|&i| {
                let r = &records[i];
                Entry {
                    data: r.data.bytes(chunk),
                    partition_key: &r.partition_key,
                    explicit_hash_key: r.explicit_hash_key.as_deref(),
                }
            }),
        );
        let call = self.client.put_records().set_records(Some(Vec::new()));
        let call = match target.as_ref() {
            Target::Name(n) => call.stream_name(n),
            Target::Arn(a) => call.stream_arn(a),
        };
        prebuilt::with_body(body, call.send()).await
    }

    fn answers(output: &PutRecordsOutput) -> impl Iterator<Item = RecordAnswer<'_>> {
        output.records().iter().map(|r| RecordAnswer {
            error_code: r.error_code(),
            error_message: r.error_message(),
        })
    }

    fn class_of_code(code: &str) -> Option<ErrorClass> {
        class_of_code(code)
    }

    fn destination(&self) -> String {
        format!("stream `{}` ({})", self.target.as_str(), self.region)
    }

    fn destination_of(&self, chunk: &Chunk) -> String {
        format!(
            "stream `{}` ({})",
            self.target_of(chunk).as_str(),
            self.region
        )
    }

    fn resolved_stream(&self, chunk: &Chunk) -> Option<String> {
        self.named
            .as_ref()
            .map(|_| self.target_of(chunk).as_str().to_owned())
    }

    fn delivered(&self, chunk: &Chunk, records: usize) {
        if let Some(t) = &self.streams {
            t.delivered(self.target_of(chunk).as_str(), records);
        }
    }

    fn streams(&self) -> Vec<StreamStatus> {
        self.streams
            .as_ref()
            .map(StreamTracker::status)
            .unwrap_or_default()
    }

    fn describe(&self) -> String {
        format!(
            "kinesis_streams stream={} region={}",
            self.target.as_str(),
            self.region
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinesis_codes_are_classified_and_shared_ones_still_known() {
        assert_eq!(
            class_of_code("ProvisionedThroughputExceededException"),
            Some(ErrorClass::Throttled)
        );
        assert_eq!(
            class_of_code("KMSThrottlingException"),
            Some(ErrorClass::Throttled)
        );
        assert_eq!(
            class_of_code("KMSDisabledException"),
            Some(ErrorClass::InvalidArgument)
        );
        assert_eq!(
            class_of_code("ResourceNotFoundException"),
            Some(ErrorClass::ResourceNotFound)
        );
        assert_eq!(class_of_code("InternalFailure"), Some(ErrorClass::Server));
        assert!(!errors::retry_in_flush(
            class_of_code("KMSAccessDeniedException").unwrap()
        ));
    }
}
