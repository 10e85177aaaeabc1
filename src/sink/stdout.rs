//! `type = "stdout"` output: writes each record to standard output. Useful for debugging a
//! pipeline; it never fails except on a closed stdout.

use async_trait::async_trait;
use tokio::io::AsyncWriteExt;

use super::{CommonOutput, Delivery, ErrorClass, Sink, SinkError};
use crate::buffer::config::BufferConfig;
use crate::buffer::Chunk;
use crate::pipeline::format::FormatOptions;

/// `[outputs.NAME]` with `type = "stdout"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutOutputConfig {
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
    /// Add `\n` after each record.
    #[serde(default = "crate::primitives::component::default_true")]
    pub append_new_line: bool,
    /// Print only this field of each record.
    #[serde(default)]
    pub data_key: Option<String>,
    /// Buffer parameters.
    #[serde(default)]
    pub buffer: BufferConfig,
}

impl CommonOutput for StdoutOutputConfig {
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

/// Writes records to stdout.
#[derive(Debug, Default)]
pub struct StdoutSink;

#[async_trait]
impl Sink for StdoutSink {
    async fn deliver(&self, chunk: &Chunk) -> Delivery {
        let mut out = Vec::with_capacity(chunk.records.byte_len());
        for i in chunk.pending() {
            if let Some(r) = chunk.records.get(i) {
                out.extend_from_slice(r);
            }
        }
        let mut stdout = tokio::io::stdout();
        match async {
            stdout.write_all(&out).await?;
            stdout.flush().await
        }
        .await
        {
            Ok(()) => Delivery::all(chunk),
            Err(e) => Delivery::failed(SinkError::new(ErrorClass::Io, format!("stdout: {e}"))),
        }
    }

    fn describe(&self) -> String {
        "stdout".to_owned()
    }
}
