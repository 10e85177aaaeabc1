//! `[outputs.NAME.buffer]`: Fluentd's `<buffer>` parameters (v1, documented at
//! <https://docs.fluentd.org/configuration/buffer-section>), same names, same meaning;
//! differences are noted per field. The defaults that differ, and why:
//!
//! * `type`: `file` (Fluentd: `memory`): acknowledged records must survive a restart.
//! * `chunk_limit_size`: 1m (Fluentd: 8m memory, 256m file): about one Firehose flush (2–3
//!   PutRecordBatch calls), and what a flush worker holds in memory.
//! * `total_limit_size`: 8g for `file` (Fluentd: 64g); 512m for `memory`, as Fluentd.
//! * `flush_at_shutdown`: true for both types (Fluentd: false for `file`); with a file buffer
//!   what is not flushed within `shutdown_timeout` is still replayed at the next start.
//! * Retries are kept per chunk, not per output (see [`crate::flush`]).

use serde::{Deserialize, Serialize};

use crate::primitives::{ByteSize, ConfigDuration};

/// Where chunks are kept.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum BufferType {
    /// Durable sled database under `data_dir` (the default: survives crashes and restarts).
    #[default]
    File,
    /// In memory only: lost on exit or crash.
    Memory,
}

/// When staged chunks are closed for flushing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum FlushMode {
    /// A chunk is queued `flush_interval` after it was created, or when full.
    #[default]
    Interval,
    /// Every append is queued at once.
    Immediate,
    /// Only full chunks are queued (and everything at shutdown). Fluentd's `lazy` flushes per
    /// timekey; we have no time chunk keys, so a chunk simply waits until it is full.
    Lazy,
}

/// What an append does when `total_limit_size` is reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum OverflowAction {
    /// Fail the append: a forward client gets no ack and resends (Fluentd's default).
    #[default]
    ThrowException,
    /// Wait for space: sources stop reading, TCP pushes back on the clients.
    Block,
    /// Purge the oldest queued chunk (counted and logged) to make room.
    DropOldestChunk,
}

/// How the wait between retries grows.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum RetryType {
    /// `retry_wait * base^(n-1)`, capped by `retry_max_interval`.
    #[default]
    ExponentialBackoff,
    /// Always `retry_wait`.
    Periodic,
}

/// The buffer section of an output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BufferConfig {
    /// `file` (durable, default) or `memory`.
    #[serde(rename = "type")]
    pub kind: BufferType,
    /// Largest chunk (logical bytes of formatted records). Default 1m: close to what one
    /// Firehose flush wants (2–3 PutRecordBatch calls) and small enough to bound memory.
    pub chunk_limit_size: ByteSize,
    /// Largest number of records in a chunk; unset means no limit.
    pub chunk_limit_records: Option<u64>,
    /// Limit on all chunks of the output (logical bytes). Default 512m memory / 8g file.
    pub total_limit_size: Option<ByteSize>,
    /// `interval`, `immediate` or `lazy`.
    pub flush_mode: FlushMode,
    /// Age at which a staged chunk is queued (interval mode).
    pub flush_interval: ConfigDuration,
    /// Parallel flush workers.
    pub flush_thread_count: u32,
    /// How long an idle worker sleeps when nothing is queued.
    pub flush_thread_interval: ConfigDuration,
    /// How long a worker pauses between chunks while more are queued and no new data arrives.
    pub flush_thread_burst_interval: ConfigDuration,
    /// Flush everything before exiting. Default true: on SIGTERM the relay flushes what it can
    /// within `shutdown_timeout`; with a file buffer the rest is replayed at the next start.
    pub flush_at_shutdown: bool,
    /// `throw_exception`, `block` or `drop_oldest_chunk`.
    pub overflow_action: OverflowAction,
    /// `exponential_backoff` or `periodic`.
    pub retry_type: RetryType,
    /// First wait after a failure.
    pub retry_wait: ConfigDuration,
    /// Growth factor for `exponential_backoff`.
    pub retry_exponential_backoff_base: f64,
    /// Upper bound of one wait; unset means no bound.
    pub retry_max_interval: Option<ConfigDuration>,
    /// Spread each wait by ±12.5 % (Fluentd's `randomize_width`).
    pub retry_randomize: bool,
    /// Give up (dead-letter) once the first failure is this old.
    pub retry_timeout: ConfigDuration,
    /// Give up after this many failures; unset means no limit.
    pub retry_max_times: Option<u32>,
    /// Never give up: ignores `retry_timeout` and `retry_max_times`.
    pub retry_forever: bool,
}

impl Default for BufferConfig {
    fn default() -> Self {
        BufferConfig {
            kind: BufferType::File,
            chunk_limit_size: ByteSize::mib(1),
            chunk_limit_records: None,
            total_limit_size: None,
            flush_mode: FlushMode::Interval,
            flush_interval: ConfigDuration::secs(60),
            flush_thread_count: 1,
            flush_thread_interval: ConfigDuration::secs(1),
            flush_thread_burst_interval: ConfigDuration::secs(1),
            flush_at_shutdown: true,
            overflow_action: OverflowAction::ThrowException,
            retry_type: RetryType::ExponentialBackoff,
            retry_wait: ConfigDuration::secs(1),
            retry_exponential_backoff_base: 2.0,
            retry_max_interval: None,
            retry_randomize: true,
            retry_timeout: ConfigDuration::secs(72 * 3600),
            retry_max_times: None,
            retry_forever: false,
        }
    }
}

impl BufferConfig {
    /// `total_limit_size`, or its default for the buffer type.
    pub fn effective_total_limit(&self) -> u64 {
        match (self.total_limit_size, self.kind) {
            (Some(s), _) => s.0,
            (None, BufferType::Memory) => ByteSize::mib(512).0,
            (None, BufferType::File) => ByteSize::gib(8).0,
        }
    }

    /// Checks values that parse but cannot work; returns (key, message) pairs relative to the
    /// buffer section.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.flush_thread_count == 0 {
            p.push(("flush_thread_count", "must be at least 1".to_owned()));
        }
        if self.flush_thread_count > 256 {
            p.push(("flush_thread_count", "must be at most 256".to_owned()));
        }
        if self.chunk_limit_size.0 == 0 {
            p.push(("chunk_limit_size", "must be greater than 0".to_owned()));
        }
        if self.chunk_limit_size.0 > u64::from(u32::MAX) {
            p.push(("chunk_limit_size", "must be below 4g".to_owned()));
        }
        if self.chunk_limit_records == Some(0) {
            p.push(("chunk_limit_records", "must be at least 1".to_owned()));
        }
        let total = self.effective_total_limit();
        if self.chunk_limit_size.0 > total {
            p.push((
                "chunk_limit_size",
                format!(
                    "({}) must not be larger than total_limit_size ({})",
                    self.chunk_limit_size,
                    ByteSize(total)
                ),
            ));
        }
        if self.flush_mode == FlushMode::Interval && self.flush_interval.0.is_zero() {
            p.push((
                "flush_interval",
                "must be greater than 0 (use flush_mode = \"immediate\" to flush every write)"
                    .to_owned(),
            ));
        }
        if !(self.retry_exponential_backoff_base > 1.0
            && self.retry_exponential_backoff_base.is_finite())
        {
            p.push((
                "retry_exponential_backoff_base",
                "must be greater than 1".to_owned(),
            ));
        }
        if self.retry_wait.0.is_zero() {
            p.push(("retry_wait", "must be greater than 0".to_owned()));
        }
        if let Some(max) = self.retry_max_interval {
            if max.0 < self.retry_wait.0 {
                p.push((
                    "retry_max_interval",
                    "must not be smaller than retry_wait".to_owned(),
                ));
            }
        }
        p
    }
}

/// `[storage]`: the sled database shared by all `file` buffers.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    /// sled page cache; bounds the buffer's memory whatever the backlog on disk.
    pub cache_capacity: ByteSize,
    /// Most bytes the dead-letter directory may hold. At the limit a chunk that would be
    /// dead-lettered stays in the buffer (retried on its schedule) and records refused at
    /// intake are not acknowledged: nothing is dropped.
    pub dead_letter_limit_size: ByteSize,
    /// Most bytes the quarantine directory may hold. At the limit an unreadable chunk stays
    /// where it is on disk (skipped, never delivered, logged) instead of being moved.
    pub quarantine_limit_size: ByteSize,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            cache_capacity: ByteSize::mib(64),
            dead_letter_limit_size: ByteSize(super::file::space::DEFAULT_DIR_LIMIT),
            quarantine_limit_size: ByteSize(super::file::space::DEFAULT_DIR_LIMIT),
        }
    }
}
