//! `type = "file"` output: each flushed chunk becomes one newline-delimited JSON file in
//! `path`, the same bytes Firehose would put into S3.
//!
//! Crash safety: the file is written under a temporary name, fsynced, renamed to its final
//! name, and the directory is fsynced, so a file either exists complete or not at all. The final
//! name is derived from the chunk (creation time and id), so a retry after a crash between the
//! rename and the buffer's commit rewrites the same file instead of duplicating it.

use std::io::Write;
use std::path::{Path, PathBuf};

use async_trait::async_trait;

use super::{CommonOutput, Delivery, ErrorClass, Sink, SinkError};
use crate::buffer::config::BufferConfig;
use crate::buffer::Chunk;
use crate::pipeline::format::FormatOptions;

/// `[outputs.NAME]` with `type = "file"`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileOutputConfig {
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
    /// Directory the files are written into (created if missing).
    pub path: PathBuf,
    /// Add `\n` after each record.
    #[serde(default = "crate::primitives::component::default_true")]
    pub append_new_line: bool,
    /// Write only this field of each record.
    #[serde(default)]
    pub data_key: Option<String>,
    /// Buffer parameters.
    #[serde(default)]
    pub buffer: BufferConfig,
}

impl CommonOutput for FileOutputConfig {
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

impl FileOutputConfig {
    /// Values that parse but cannot work.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        if self.path.as_os_str().is_empty() {
            vec![("path", "must not be empty".to_owned())]
        } else {
            Vec::new()
        }
    }
}

/// Writes one file per chunk into a directory.
#[derive(Debug)]
pub struct FileSink {
    dir: PathBuf,
}

impl FileSink {
    /// A sink writing into `dir` (created if missing).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        FileSink { dir: dir.into() }
    }

    /// The final file name of a chunk.
    pub fn file_name(chunk: &Chunk) -> String {
        format!("{}-{}.ndjson", chunk.created_ms, chunk.id)
    }

    fn write(dir: &Path, name: &str, data: &[u8]) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(".{name}.tmp"));
        let dest = dir.join(name);
        {
            let mut f = std::fs::File::create(&tmp)?;
            f.write_all(data)?;
            f.sync_data()?;
        }
        std::fs::rename(&tmp, &dest)?;
        crate::fsutil::sync_dir(dir)
    }
}

#[async_trait]
impl Sink for FileSink {
    async fn deliver(&self, chunk: &Chunk) -> Delivery {
        let mut data = Vec::with_capacity(chunk.records.byte_len());
        for i in chunk.pending() {
            if let Some(r) = chunk.records.get(i) {
                data.extend_from_slice(r);
            }
        }
        let dir = self.dir.clone();
        let name = Self::file_name(chunk);
        let result = tokio::task::spawn_blocking(move || Self::write(&dir, &name, &data)).await;
        match result {
            Ok(Ok(())) => Delivery::all(chunk),
            Ok(Err(e)) => Delivery::failed(SinkError::new(
                ErrorClass::Io,
                format!("writing into {}: {e}", self.dir.display()),
            )),
            Err(e) => Delivery::failed(SinkError::new(ErrorClass::Other, e.to_string())),
        }
    }

    fn describe(&self) -> String {
        format!("file path={}", self.dir.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::{ChunkId, Records, RetryState};

    #[tokio::test]
    async fn writes_only_pending_records_into_one_named_file() {
        let dir = tempfile::tempdir().unwrap();
        let mut records = Records::new();
        for r in ["{\"a\":1}\n", "{\"a\":2}\n", "{\"a\":3}\n"] {
            records.push(r.as_bytes()).unwrap();
        }
        let chunk = Chunk::new(ChunkId(7), 1000, records)
            .with_history([1].into_iter().collect(), RetryState::default());
        let sink = FileSink::new(dir.path());
        let d = sink.deliver(&chunk).await;
        assert!(d.error.is_none());
        assert_eq!(d.delivered.iter().collect::<Vec<_>>(), vec![0, 2]);
        let text = std::fs::read_to_string(dir.path().join(FileSink::file_name(&chunk))).unwrap();
        assert_eq!(text, "{\"a\":1}\n{\"a\":3}\n");
        let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().collect();
        assert_eq!(names.len(), 1, "no temporary file left behind");
    }
}
