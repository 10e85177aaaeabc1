//! Sinks deliver the records of one chunk somewhere: Firehose, files, stdout.
//!
//! A sink never sees tags or sources, only the formatted records of a chunk and which of them a
//! previous attempt already delivered. It reports back, record by record, what it delivered, what
//! can never be delivered (dead-lettered individually), and why the rest failed. The flush worker
//! turns that into buffer operations and retry scheduling, so every sink gets partial-delivery,
//! retry and dead-letter handling for free.

pub mod aws_batch;
pub mod file;
pub mod firehose;
pub mod kinesis_streams;
pub mod kpl;
pub mod stdout;
pub mod stream_name;

use async_trait::async_trait;

use crate::buffer::{Chunk, DeliveredSet};

/// Why a delivery attempt failed. The class is a metric label and decides the log level; every
/// class is retried on the chunk's retry schedule (an operator may be fixing IAM right now), and
/// only `retry_timeout`/`retry_max_times` send a chunk to the dead-letter directory.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorClass {
    /// The service asked us to slow down (Firehose `ServiceUnavailableException`, HTTP 429/503).
    Throttled,
    /// A 5xx from the service.
    Server,
    /// Connection refused/reset, DNS, TLS.
    Network,
    /// The call took longer than `request_timeout`.
    Timeout,
    /// Credentials missing, expired or rejected.
    Credentials,
    /// The destination does not exist (wrong stream, region or account).
    ResourceNotFound,
    /// IAM denied the call.
    AccessDenied,
    /// The service rejected the request as malformed.
    InvalidArgument,
    /// A local I/O error (file sink).
    Io,
    /// Anything else.
    Other,
}

impl ErrorClass {
    /// Every class, in declaration order ([`ErrorClass::index`]).
    pub const ALL: [ErrorClass; 10] = [
        ErrorClass::Throttled,
        ErrorClass::Server,
        ErrorClass::Network,
        ErrorClass::Timeout,
        ErrorClass::Credentials,
        ErrorClass::ResourceNotFound,
        ErrorClass::AccessDenied,
        ErrorClass::InvalidArgument,
        ErrorClass::Io,
        ErrorClass::Other,
    ];

    /// Position in [`ErrorClass::ALL`], for per-class tables.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Stable lowercase name, used as a metric label.
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::Throttled => "throttled",
            ErrorClass::Server => "server",
            ErrorClass::Network => "network",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Credentials => "credentials",
            ErrorClass::ResourceNotFound => "resource_not_found",
            ErrorClass::AccessDenied => "access_denied",
            ErrorClass::InvalidArgument => "invalid_argument",
            ErrorClass::Io => "io",
            ErrorClass::Other => "other",
        }
    }

    /// True for errors that need an operator (config or IAM), logged at error level.
    pub fn needs_operator(self) -> bool {
        matches!(
            self,
            ErrorClass::ResourceNotFound
                | ErrorClass::AccessDenied
                | ErrorClass::InvalidArgument
                | ErrorClass::Credentials
        )
    }
}

impl prometheus_client::encoding::EncodeLabelValue for ErrorClass {
    fn encode(
        &self,
        encoder: &mut prometheus_client::encoding::LabelValueEncoder<'_>,
    ) -> Result<(), std::fmt::Error> {
        std::fmt::Write::write_str(encoder, self.as_str())
    }
}

/// A failed delivery attempt.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{class}: {message}", class = .class.as_str())]
pub struct SinkError {
    /// What kind of failure.
    pub class: ErrorClass,
    /// Human-readable detail (never contains credentials).
    pub message: String,
}

impl SinkError {
    /// A new error.
    pub fn new(class: ErrorClass, message: impl Into<String>) -> Self {
        SinkError {
            class,
            message: message.into(),
        }
    }
}

/// The outcome of one attempt to deliver a chunk.
#[derive(Debug, Default)]
pub struct Delivery {
    /// Records this attempt delivered (indices within the chunk).
    pub delivered: DeliveredSet,
    /// Records that can never be delivered (e.g. larger than the service allows), with why.
    /// They are written to the dead-letter directory and count as handled.
    pub rejected: Vec<(usize, String)>,
    /// Set when some pending records were neither delivered nor rejected.
    pub error: Option<SinkError>,
}

impl Delivery {
    /// Every pending record of `chunk` was delivered.
    pub fn all(chunk: &Chunk) -> Self {
        Delivery {
            delivered: chunk.pending().collect(),
            ..Default::default()
        }
    }

    /// Nothing was delivered.
    pub fn failed(error: SinkError) -> Self {
        Delivery {
            error: Some(error),
            ..Default::default()
        }
    }
}

/// Something that can deliver chunks. Implementations must be shareable between the flush
/// workers of an output, which call `deliver` concurrently.
#[async_trait]
pub trait Sink: Send + Sync {
    /// Sends the records of `chunk` that are not in `chunk.delivered`.
    async fn deliver(&self, chunk: &Chunk) -> Delivery;

    /// A short description for logs, e.g. `firehose stream=logs region=eu-west-1`.
    fn describe(&self) -> String;

    /// When the sink's credentials expire (Unix ms), for `/status`; `None` when it has none.
    fn credential_expiry_ms(&self) -> Option<u64> {
        None
    }

    /// Where `chunk`'s records go, when the sink resolves it per chunk (a stream name with
    /// placeholders): named in dead-letter entries.
    fn destination_of(&self, _chunk: &Chunk) -> Option<String> {
        None
    }

    /// Records delivered per resolved stream name, for `/status` (empty when the name does not
    /// depend on the chunk).
    fn streams(&self) -> Vec<stream_name::StreamStatus> {
        Vec::new()
    }

    /// The adaptive pacing's state, for `/status`; `None` when the sink has none.
    fn pacing_status(&self) -> Option<aws_batch::pacing::PacingStatus> {
        None
    }
}

/// `[outputs.NAME]`, chosen by `type`.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum OutputConfig {
    /// Newline-delimited JSON files, one per chunk.
    File(file::FileOutputConfig),
    /// Standard output.
    Stdout(stdout::StdoutOutputConfig),
    /// Amazon Kinesis Data Firehose (PutRecordBatch).
    Firehose(Box<firehose::FirehoseConfig>),
    /// Amazon Kinesis Data Streams (PutRecords).
    KinesisStreams(Box<kinesis_streams::KinesisStreamsConfig>),
    /// Amazon Kinesis Data Streams (PutRecords) of KPL aggregated records: the same settings
    /// with `fixed_partition_key` instead of `partition_key`/`explicit_hash_key`.
    KinesisStreamsAggregated(Box<kinesis_streams::KinesisStreamsConfig>),
}

/// Options every output has. Each output type's config embeds these fields.
pub trait CommonOutput {
    /// The `match` pattern.
    fn pattern(&self) -> &str;
    /// The label it belongs to (`None`: the top level).
    fn label(&self) -> Option<&str>;
    /// The buffer section.
    fn buffer(&self) -> &BufferConfig;
    /// How records are formatted.
    fn format(&self) -> FormatOptions;
}

use crate::buffer::config::BufferConfig;
use crate::pipeline::format::FormatOptions;

impl OutputConfig {
    /// Reads the output at `path`, choosing the variant by its `type`.
    #[allow(clippy::result_large_err)] // figment's error type; runs once at startup
    pub fn extract(figment: &figment::Figment, path: &str) -> Result<Self, figment::Error> {
        use crate::primitives::component::{component_type, extract_component, unknown_type};
        match component_type(figment, path)?.as_str() {
            "firehose" => Ok(OutputConfig::Firehose(extract_component(figment, path)?)),
            "kinesis_streams" => Ok(OutputConfig::KinesisStreams(extract_component(
                figment, path,
            )?)),
            "kinesis_streams_aggregated" => Ok(OutputConfig::KinesisStreamsAggregated(
                extract_component(figment, path)?,
            )),
            "file" => Ok(OutputConfig::File(extract_component(figment, path)?)),
            "stdout" => Ok(OutputConfig::Stdout(extract_component(figment, path)?)),
            other => Err(unknown_type(
                path,
                other,
                &[
                    "firehose",
                    "kinesis_streams",
                    "kinesis_streams_aggregated",
                    "file",
                    "stdout",
                ],
            )),
        }
    }

    fn common(&self) -> &dyn CommonOutput {
        match self {
            OutputConfig::File(c) => c,
            OutputConfig::Stdout(c) => c,
            OutputConfig::Firehose(c) => c.as_ref(),
            OutputConfig::KinesisStreams(c) | OutputConfig::KinesisStreamsAggregated(c) => {
                c.as_ref()
            }
        }
    }

    /// The `match` pattern.
    pub fn pattern(&self) -> &str {
        self.common().pattern()
    }

    /// The label it belongs to (`None`: the top level).
    pub fn label(&self) -> Option<&str> {
        self.common().label()
    }

    /// The buffer section.
    pub fn buffer(&self) -> &BufferConfig {
        self.common().buffer()
    }

    /// How records are formatted.
    pub fn format(&self) -> FormatOptions {
        self.common().format()
    }

    /// The stream name of an output that names its destination per chunk (placeholders
    /// resolved from the chunk key, [`stream_name`]), for dead-letter entries written before
    /// the records reach a chunk.
    pub fn stream_name(&self) -> Option<stream_name::StreamName> {
        let name = match self {
            OutputConfig::Firehose(c) => {
                stream_name::StreamName::new(&c.delivery_stream, &c.buffer)
            }
            OutputConfig::KinesisStreams(c) | OutputConfig::KinesisStreamsAggregated(c) => {
                match (&c.stream_name, &c.stream_arn) {
                    (Some(n), None) => stream_name::StreamName::new(n, &c.buffer),
                    _ => return None,
                }
            }
            _ => return None,
        };
        name.is_templated().then_some(name)
    }

    /// Largest formatted record this output takes: what its destination accepts (Firehose:
    /// 1,024,000 bytes) and what fits in one of its chunks (`chunk_limit_size`: a record is
    /// never split). Larger records are dead-lettered at intake, one by one.
    pub fn max_record_bytes(&self) -> usize {
        let chunk = usize::try_from(self.buffer().chunk_limit_size.0).unwrap_or(usize::MAX);
        match self {
            OutputConfig::File(_) | OutputConfig::Stdout(_) => chunk,
            OutputConfig::Firehose(_) => chunk.min(firehose::FirehoseConfig::MAX_RECORD_BYTES),
            OutputConfig::KinesisStreams(_) => {
                chunk.min(kinesis_streams::KinesisStreamsConfig::MAX_RECORD_BYTES)
            }
            OutputConfig::KinesisStreamsAggregated(c) => chunk.min(c.max_aggregated_record_bytes()),
        }
    }

    /// Values that parse but cannot work (outside the buffer section), as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        match self {
            OutputConfig::File(c) => c.problems(),
            OutputConfig::Stdout(_) => Vec::new(),
            OutputConfig::Firehose(c) => c.problems(),
            OutputConfig::KinesisStreams(c) => c.problems(),
            OutputConfig::KinesisStreamsAggregated(c) => c.problems_as(true),
        }
    }

    /// Builds the sink of output `name`; sinks register their own metrics in `metrics`.
    pub async fn build_sink(
        &self,
        name: &str,
        metrics: &std::sync::Arc<crate::ops::metrics::Metrics>,
    ) -> anyhow::Result<std::sync::Arc<dyn Sink>> {
        Ok(match self {
            OutputConfig::File(c) => std::sync::Arc::new(file::FileSink::new(&c.path)),
            OutputConfig::Stdout(_) => std::sync::Arc::new(stdout::StdoutSink),
            OutputConfig::Firehose(c) => {
                std::sync::Arc::new(firehose::FirehoseSink::build(name, c, metrics).await?)
            }
            OutputConfig::KinesisStreams(c) => std::sync::Arc::new(
                kinesis_streams::KinesisStreamsSink::build(name, c, metrics).await?,
            ),
            OutputConfig::KinesisStreamsAggregated(c) => {
                std::sync::Arc::new(kpl::build_sink(name, c, metrics).await?)
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_class_is_listed_once_at_its_index() {
        for (i, class) in ErrorClass::ALL.iter().enumerate() {
            assert_eq!(class.index(), i, "{class:?}");
        }
        let names: std::collections::BTreeSet<_> =
            ErrorClass::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(names.len(), ErrorClass::ALL.len());
    }
}
