//! `[outputs.NAME]` with `type = "kinesis_streams"`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::request::Target;
use super::{MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL, MAX_RECORD_BYTES};
use crate::aws::credentials::config::CredentialsConfig;
use crate::buffer::config::BufferConfig;
use crate::pipeline::format::FormatOptions;
use crate::primitives::{ByteSize, ConfigDuration};
use crate::sink::aws_batch::settings;
use crate::sink::firehose::Compression;
use crate::sink::CommonOutput;

/// The Kinesis Data Streams output's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KinesisStreamsConfig {
    /// The component type (already used to choose this struct).
    #[serde(rename = "type", default, skip_serializing)]
    pub type_tag: crate::primitives::TypeTag,
    /// Tags this output takes.
    #[serde(rename = "match", default = "crate::primitives::component::match_all")]
    pub pattern: String,
    /// Fluentd's `@label`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// AWS region; default `AWS_REGION`/`AWS_DEFAULT_REGION`.
    #[serde(default)]
    pub region: Option<String>,
    /// The stream's name (this or `stream_arn`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_name: Option<String>,
    /// The stream's ARN (this or `stream_name`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream_arn: Option<String>,
    /// The record field whose value is the partition key; a record without it gets a random
    /// key (counted). Unset: a random key per record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    /// The record field whose value (a decimal 128-bit integer) is the explicit hash key,
    /// which picks the shard instead of the partition key's MD5. Records without it use the
    /// partition key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub explicit_hash_key: Option<String>,
    /// `kinesis_streams_aggregated` only: the partition key of every aggregated record (all
    /// records to one shard). Unset: a random key per aggregated record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fixed_partition_key: Option<String>,
    /// Endpoint override (moto, LocalStack, VPC endpoints). `AWS_ENDPOINT_URL_KINESIS` is
    /// honoured when unset.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Extra PEM CA bundle trusted for the endpoints (and STS).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// HTTP(S) proxy for all AWS calls; default from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`.
    #[serde(default)]
    pub proxy_url: Option<crate::primitives::SecretUrl>,
    /// Add `\n` after each record.
    #[serde(default = "crate::primitives::component::default_true")]
    pub append_new_line: bool,
    /// Send only this field of each record.
    #[serde(default)]
    pub data_key: Option<String>,
    /// `none` or `gzip`, per Kinesis record.
    #[serde(default)]
    pub compression: Compression,
    /// Records per PutRecords call (at most 500).
    #[serde(default = "default_max_records_per_call")]
    pub max_records_per_call: usize,
    /// Bytes (data plus partition keys) per PutRecords call (at most 5 MiB).
    #[serde(default = "default_max_bytes_per_call")]
    pub max_bytes_per_call: ByteSize,
    /// Timeout of one PutRecords attempt.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: ConfigDuration,
    /// Resends of failed records (or failed calls) within one flush.
    #[serde(default = "default_retries_on_batch_request")]
    pub retries_on_batch_request: u32,
    /// PutRecords calls of one chunk in flight at once.
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: usize,
    /// Output-wide records/s limit (all flush workers together).
    #[serde(default)]
    pub max_records_per_second: Option<f64>,
    /// Output-wide bytes/s limit (data plus partition keys).
    #[serde(default)]
    pub max_bytes_per_second: Option<ByteSize>,
    /// Output-wide PutRecords calls/s limit.
    #[serde(default)]
    pub max_requests_per_second: Option<f64>,
    /// Slow down when Kinesis throttles, speed up again on success.
    #[serde(default = "crate::primitives::component::default_true")]
    pub adaptive_pacing: bool,
    /// Where credentials come from; default IRSA env vars, else the SDK default chain.
    #[serde(default)]
    pub credentials: Option<CredentialsConfig>,
    /// Buffer parameters.
    #[serde(default)]
    pub buffer: BufferConfig,
}

fn default_max_records_per_call() -> usize {
    MAX_RECORDS_PER_CALL
}
fn default_max_bytes_per_call() -> ByteSize {
    ByteSize(MAX_BYTES_PER_CALL as u64)
}
fn default_request_timeout() -> ConfigDuration {
    ConfigDuration::secs(30)
}
fn default_max_concurrent_calls() -> usize {
    4
}
fn default_retries_on_batch_request() -> u32 {
    8
}

impl CommonOutput for KinesisStreamsConfig {
    fn pattern(&self) -> &str {
        &self.pattern
    }
    fn label(&self) -> Option<&str> {
        self.label.as_deref()
    }
    fn buffer(&self) -> &BufferConfig {
        &self.buffer
    }
    fn format(&self) -> FormatOptions {
        FormatOptions {
            append_new_line: self.append_new_line,
            data_key: self.data_key.clone(),
        }
    }
}

impl KinesisStreamsConfig {
    /// Largest formatted record accepted at intake: the Kinesis record limit (the partition
    /// key counts too, checked when the record is sent).
    pub const MAX_RECORD_BYTES: usize = MAX_RECORD_BYTES;

    /// Where the records go.
    pub fn target(&self) -> Target {
        match (&self.stream_arn, &self.stream_name) {
            (Some(arn), _) => Target::Arn(arn.clone()),
            (None, name) => Target::Name(name.clone().unwrap_or_default()),
        }
    }

    /// The per-call and rate settings, with PutRecords's own limits: checked by `problems()` and
    /// turned into the call loop's and the pacer's settings when the output is built.
    pub fn sending(&self) -> settings::Sending<'_> {
        settings::Sending {
            operation: "PutRecords",
            service_max_records: MAX_RECORDS_PER_CALL,
            service_max_bytes: (MAX_BYTES_PER_CALL, "5MiB"),
            max_records_per_call: self.max_records_per_call,
            max_bytes_per_call: self.max_bytes_per_call,
            max_concurrent_calls: self.max_concurrent_calls,
            request_timeout: &self.request_timeout,
            max_records_per_second: self.max_records_per_second,
            max_requests_per_second: self.max_requests_per_second,
            max_bytes_per_second: self.max_bytes_per_second,
            retries_on_batch_request: self.retries_on_batch_request,
            adaptive_pacing: self.adaptive_pacing,
        }
    }

    /// Values that parse but cannot work, as (key under the output, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        self.problems_as(false)
    }

    /// [`KinesisStreamsConfig::problems`] for `kinesis_streams` (`aggregated` false) or
    /// `kinesis_streams_aggregated` (true), which keys records by `fixed_partition_key` or a
    /// random key per aggregated record, never by a record field.
    pub fn problems_as(&self, aggregated: bool) -> Vec<(&'static str, String)> {
        let mut p = crate::sink::kpl::key_problems(self, aggregated);
        match (&self.stream_name, &self.stream_arn) {
            (None, None) => p.push((
                "stream_name",
                "set stream_name or stream_arn (the stream to send to)".to_owned(),
            )),
            (Some(_), Some(_)) => p.push((
                "stream_arn",
                "set stream_name or stream_arn, not both".to_owned(),
            )),
            (Some(n), None) if n.trim().is_empty() => {
                p.push(("stream_name", "must not be empty".to_owned()))
            }
            (None, Some(a)) if !a.starts_with("arn:") => p.push((
                "stream_arn",
                "must be an ARN (arn:aws:kinesis:…)".to_owned(),
            )),
            _ => {}
        }
        if let (Some(n), None) = (&self.stream_name, &self.stream_arn) {
            for problem in crate::sink::stream_name::StreamName::problems(n, &self.buffer) {
                p.push(("stream_name", problem));
            }
        }
        for (key, field) in [
            ("partition_key", &self.partition_key),
            ("explicit_hash_key", &self.explicit_hash_key),
        ] {
            match field {
                Some(f) if f.is_empty() => p.push((key, "must name a record field".to_owned())),
                Some(_) if self.data_key.is_some() => p.push((
                    key,
                    "is read from the record as sent, which with data_key is only that field's value: unset data_key or this"
                        .to_owned(),
                )),
                _ => {}
            }
        }
        p.extend(settings::region_problems(self.region.as_deref()));
        p.extend(settings::sending_problems(&self.sending()));
        p.extend(settings::connection_problems(
            self.endpoint_url.as_deref(),
            self.proxy_url.as_ref(),
            self.tls_ca_file.as_deref(),
            self.credentials.as_ref(),
        ));
        p
    }
}
