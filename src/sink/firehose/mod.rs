//! `type = "firehose"`: delivers chunks to Amazon Kinesis Data Firehose with PutRecordBatch,
//! one face of the shared batch-put layer ([`crate::sink::aws_batch`], which holds the call
//! loop, partial-failure resends, pacing, error classes and metrics).
//!
//! What is Firehose's own:
//! 1. [`aggregate`] turns the pending records into Firehose records (one each, or packed, and
//!    optionally gzipped); a record that can never fit (1,024,000 bytes of data) is rejected;
//! 2. the call: PutRecordBatch of at most 500 records and 4 MiB of data, its body written in
//!    one pass by [`request`] and its 200 answers read by [`response`];
//! 3. its metric families, `firehose_…`.

pub mod aggregate;
pub mod config;
pub mod request;
pub mod response;

use std::borrow::Cow;
use std::sync::Arc;

use async_trait::async_trait;
use aws_sdk_firehose::config::http::HttpResponse;
use aws_sdk_firehose::error::SdkError;
use aws_sdk_firehose::operation::put_record_batch::{PutRecordBatchError, PutRecordBatchOutput};

pub use config::{Compression, FirehoseConfig};

use self::aggregate::{Encoded, Encoder, Packed, MAX_RECORD_BYTES};
use super::aws_batch::call::RecordAnswer;
use super::aws_batch::connect::{connect, ConnectOptions};
use super::aws_batch::metrics::{Families, Names};
use super::aws_batch::pacing::Pacer;
use super::aws_batch::prebuilt::{self, PrebuiltBody};
use super::aws_batch::{BatchPut, BatchPutSink, PackedChunk};
use super::stream_name::{StreamFamily, StreamName, StreamStatus, StreamTracker};
use crate::aws::http::HttpOptions;
use crate::buffer::Chunk;
use crate::ops::logging::Throttle;
use crate::ops::metrics::Metrics;

pub use super::aws_batch::connect::BuildError as FirehoseBuildError;

/// Hard PutRecordBatch limit on records per call.
pub const MAX_RECORDS_PER_CALL: usize = 500;
/// Hard PutRecordBatch limit on data bytes per call (4 MiB, before base64).
pub const MAX_BYTES_PER_CALL: usize = 4 * 1024 * 1024;

/// The Firehose output's metric families.
pub const METRIC_NAMES: Names = Names {
    prefix: "firehose",
    call_duration: "firehose_put_record_batch_duration_seconds",
    service: "Firehose",
    call: "PutRecordBatch",
    failed_count: "FailedPutCount",
};

/// The Firehose families of a registry (a type of its own, so that they are registered once).
#[derive(Clone)]
struct FirehoseFamilies(Families);

/// Sends chunks to one delivery stream. Shared by the output's flush workers.
pub type FirehoseSink = BatchPutSink<Firehose>;

/// The Firehose face: one delivery stream, or one per chunk key when the name has
/// placeholders ([`StreamName`]).
pub struct Firehose {
    client: aws_sdk_firehose::Client,
    stream: StreamName,
    region: String,
    encoder: Encoder,
    /// Deliveries per resolved stream (templated names only).
    streams: Option<StreamTracker>,
    /// Warnings about tag parts a tag does not have (at most one per 10 s).
    missing_part_log: Throttle,
}

impl Firehose {
    /// The delivery stream of `chunk`.
    fn stream_of(&self, chunk: &Chunk) -> Cow<'_, str> {
        self.stream
            .resolve_logged(&chunk.key, &self.missing_part_log)
    }
}

impl FirehoseSink {
    /// Builds the client (HTTP, credentials, endpoint) for output `name`.
    pub async fn build(
        name: &str,
        cfg: &FirehoseConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, FirehoseBuildError> {
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
        // Both interceptors are the client's, not each call's (`aws_batch::prebuilt` on why).
        let mut builder = aws_sdk_firehose::config::Builder::from(&conn.sdk)
            .interceptor(PrebuiltBody {
                operation: "PutRecordBatch",
            })
            .interceptor(response::FastResponses);
        if let Some(url) = &cfg.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        let families = metrics
            .component(|m| FirehoseFamilies(Families::register(m, &METRIC_NAMES)))
            .0;
        let output_metrics = families.for_output(name);
        let sending = cfg.sending();
        let pacer = Pacer::new(sending.pacing_limits(), output_metrics.pacing.clone());
        let region = conn.region;
        tracing::info!(output = name, stream = %cfg.delivery_stream, region = %region,
            endpoint = cfg.endpoint_url.as_deref().unwrap_or("default"), credentials = %conn.credentials.description,
            aggregation = cfg.aggregation, compression = ?cfg.compression, "firehose output configured");
        let stream = StreamName::new(&cfg.delivery_stream, &cfg.buffer);
        let streams = stream
            .is_templated()
            .then(|| StreamTracker::new(name, StreamFamily::of(metrics)));
        let face = Firehose {
            client: aws_sdk_firehose::Client::from_conf(builder.build()),
            stream,
            streams,
            missing_part_log: Throttle::new(std::time::Duration::from_secs(10)),
            region: region.to_string(),
            encoder: Encoder {
                aggregation: cfg.aggregation,
                gzip: cfg.compression == Compression::Gzip,
                max_record_bytes: MAX_RECORD_BYTES,
            },
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

impl PackedChunk for Encoded {
    fn len(&self) -> usize {
        self.records.len()
    }

    fn size(&self, i: usize) -> usize {
        self.records.get(i).map_or(0, Packed::len)
    }

    fn chunk_indices(&self, i: usize) -> &[usize] {
        Encoded::chunk_indices(self, i)
    }

    fn rejected(&self) -> &[(usize, String)] {
        &self.rejected
    }
}

#[async_trait]
impl BatchPut for Firehose {
    type Packed = Encoded;
    type Output = PutRecordBatchOutput;
    type Error = PutRecordBatchError;

    const OPERATION: &'static str = "PutRecordBatch";

    async fn encode(&self, chunk: &Chunk) -> Encoded {
        if !self.encoder.gzip {
            return self.encoder.encode(chunk);
        }
        // Compression is CPU work: keep it off the async workers.
        let encoder = self.encoder;
        let owned = chunk.clone();
        match tokio::task::spawn_blocking(move || encoder.encode(&owned)).await {
            Ok(e) => e,
            Err(_) => self.encoder.encode(chunk),
        }
    }

    /// One PutRecordBatch request of the records `todo`.
    ///
    /// The body is written here in one pass and swapped in before signing by the client's
    /// [`PrebuiltBody`] (see [`request`]); the SDK serializes an empty record list that is
    /// thrown away. Successful responses are read by [`response`], without the record
    /// ids.
    async fn put(
        &self,
        chunk: &Chunk,
        packed: &Encoded,
        todo: &[usize],
    ) -> Result<PutRecordBatchOutput, SdkError<PutRecordBatchError, HttpResponse>> {
        let records = &packed.records;
        let stream = self.stream_of(chunk);
        let body =
            request::put_record_batch_body(&stream, todo.iter().map(|&i| records[i].bytes(chunk)));
        let call = self
            .client
            .put_record_batch()
            .delivery_stream_name(stream)
            .set_records(Some(Vec::new()))
            .send();
        prebuilt::with_body(body, call).await
    }

    fn answers(output: &PutRecordBatchOutput) -> impl Iterator<Item = RecordAnswer<'_>> {
        output.request_responses().iter().map(|r| RecordAnswer {
            error_code: r.error_code(),
            error_message: r.error_message(),
        })
    }

    fn destination(&self) -> String {
        format!("stream `{}` ({})", self.stream.template(), self.region)
    }

    fn destination_of(&self, chunk: &Chunk) -> String {
        format!("stream `{}` ({})", self.stream_of(chunk), self.region)
    }

    fn resolved_stream(&self, chunk: &Chunk) -> Option<String> {
        self.stream
            .is_templated()
            .then(|| self.stream_of(chunk).into_owned())
    }

    fn delivered(&self, chunk: &Chunk, records: usize) {
        if let Some(t) = &self.streams {
            t.delivered(&self.stream_of(chunk), records);
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
            "firehose stream={} region={}",
            self.stream.template(),
            self.region
        )
    }
}
