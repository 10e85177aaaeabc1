//! `[outputs.NAME]` with `type = "firehose"`.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::aggregate::MAX_RECORD_BYTES;
use super::{MAX_BYTES_PER_CALL, MAX_RECORDS_PER_CALL};
use crate::aws::credentials::config::CredentialsConfig;
use crate::buffer::config::BufferConfig;
use crate::pipeline::format::FormatOptions;
use crate::primitives::{ByteSize, ConfigDuration};
use crate::sink::aws_batch::settings;
use crate::sink::CommonOutput;

/// Compression of each Firehose record.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Compression {
    /// Send as is.
    #[default]
    None,
    /// Gzip each Firehose record on its own (newlines are added before compressing).
    Gzip,
}

/// The Firehose output's settings.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FirehoseConfig {
    /// The component type (already used to choose this struct).
    #[serde(rename = "type", default, skip_serializing)]
    pub type_tag: crate::primitives::TypeTag,
    /// Tags this output takes.
    #[serde(rename = "match", default = "crate::primitives::component::match_all")]
    pub pattern: String,
    /// Fluentd's `@label`: only events of sources with the same label reach it (none: the
    /// top level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// AWS region; default `AWS_REGION`/`AWS_DEFAULT_REGION`.
    #[serde(default)]
    pub region: Option<String>,
    /// The delivery stream name.
    pub delivery_stream: String,
    /// Endpoint override (moto, LocalStack, VPC endpoints). `AWS_ENDPOINT_URL_FIREHOSE` is
    /// honoured when unset.
    #[serde(default)]
    pub endpoint_url: Option<String>,
    /// Extra PEM CA bundle trusted for the endpoints (and STS).
    #[serde(default)]
    pub tls_ca_file: Option<PathBuf>,
    /// HTTP(S) proxy for all AWS calls; default from `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`.
    /// Its user information (`http://user:password@host`) is never printed or logged.
    #[serde(default)]
    pub proxy_url: Option<crate::primitives::SecretUrl>,
    /// Add `\n` after each record.
    #[serde(default = "crate::primitives::component::default_true")]
    pub append_new_line: bool,
    /// Send only this field of each record.
    #[serde(default)]
    pub data_key: Option<String>,
    /// `none` or `gzip`, per Firehose record.
    #[serde(default)]
    pub compression: Compression,
    /// Pack consecutive records into Firehose records of up to 1,000 KiB.
    #[serde(default)]
    pub aggregation: bool,
    /// Records per PutRecordBatch call (at most 500).
    #[serde(default = "default_max_records_per_call")]
    pub max_records_per_call: usize,
    /// Data bytes per PutRecordBatch call (at most 4 MiB).
    #[serde(default = "default_max_bytes_per_call")]
    pub max_bytes_per_call: ByteSize,
    /// Timeout of one PutRecordBatch attempt.
    #[serde(default = "default_request_timeout")]
    pub request_timeout: ConfigDuration,
    /// Resends of failed records (or failed calls) within one flush before the rest goes back
    /// to the buffer.
    #[serde(default = "default_retries_on_batch_request")]
    pub retries_on_batch_request: u32,
    /// PutRecordBatch calls of one chunk in flight at once. A 1 MiB chunk of small records is
    /// ~10 calls; sending them one after another leaves a flush worker waiting on round trips.
    #[serde(default = "default_max_concurrent_calls")]
    pub max_concurrent_calls: usize,
    /// Output-wide records/s limit (all flush workers together).
    #[serde(default)]
    pub max_records_per_second: Option<f64>,
    /// Output-wide data bytes/s limit.
    #[serde(default)]
    pub max_bytes_per_second: Option<ByteSize>,
    /// Output-wide PutRecordBatch calls/s limit.
    #[serde(default)]
    pub max_requests_per_second: Option<f64>,
    /// Slow down when Firehose throttles, speed up again on success.
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

impl CommonOutput for FirehoseConfig {
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

impl FirehoseConfig {
    /// Largest formatted record accepted at intake (Firehose's per-record limit).
    pub const MAX_RECORD_BYTES: usize = MAX_RECORD_BYTES;

    /// The per-call and rate settings, with PutRecordBatch's own limits: checked by `problems()` and
    /// turned into the call loop's and the pacer's settings when the output is built.
    pub fn sending(&self) -> settings::Sending<'_> {
        settings::Sending {
            operation: "PutRecordBatch",
            service_max_records: MAX_RECORDS_PER_CALL,
            service_max_bytes: (MAX_BYTES_PER_CALL, "4MiB"),
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
        let mut p = Vec::new();
        if self.delivery_stream.trim().is_empty() {
            p.push(("delivery_stream", "must not be empty".to_owned()));
        }
        p.extend(settings::region_problems(self.region.as_deref()));
        p.extend(settings::sending_problems(&self.sending()));
        if self.aggregation && !self.append_new_line {
            p.push((
                "aggregation",
                "packs newline-terminated records into one Firehose record; it needs append_new_line = true so the records can be told apart"
                    .to_owned(),
            ));
        }
        p.extend(settings::connection_problems(
            self.endpoint_url.as_deref(),
            self.proxy_url.as_ref(),
            self.tls_ca_file.as_deref(),
            self.credentials.as_ref(),
        ));
        for problem in
            crate::sink::stream_name::StreamName::problems(&self.delivery_stream, &self.buffer)
        {
            p.push(("delivery_stream", problem));
        }
        p
    }
}
