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

use super::key::{ChunkKeyName, KeyRule, KeyZone};
use crate::primitives::{ByteSize, ConfigDuration};

/// Default of `max_open_chunks`: a few hundred tags at once (an aggregator of a Kubernetes
/// cluster) before chunks close early. Each open chunk costs one small file and a few hundred
/// bytes of bookkeeping.
pub const DEFAULT_MAX_OPEN_CHUNKS: u32 = 256;

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
    /// Only full chunks are queued (and everything at shutdown), and with a time chunk key a
    /// slot's chunks once the slot ended `timekey_wait` ago (Fluentd's `lazy`).
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
    /// Fluentd's chunk keys (`<buffer tag, time>`): `"tag"` and/or `"time"`; chunks are kept
    /// apart by them and the stream name's placeholders are resolved from them (see
    /// [`super::key`]). Empty (the default): one open chunk per output.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub chunk_keys: Vec<ChunkKeyName>,
    /// Length of a time slot; required with `"time"` in `chunk_keys`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timekey: Option<ConfigDuration>,
    /// With `flush_mode = "lazy"`, how long after its slot ends a time-keyed chunk is queued
    /// (late events still join it). Fluentd's default, 600s.
    pub timekey_wait: ConfigDuration,
    /// Slots start (and strftime placeholders are written) in UTC instead of local time.
    pub timekey_use_utc: bool,
    /// A fixed offset (`"+09:00"`) for slots and placeholders; wins over `timekey_use_utc`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timekey_zone: Option<String>,
    /// Most chunks open (staged) at once. With chunk keys, a key without an open chunk opens
    /// one; at the limit the oldest open chunk is closed early (queued as if full, counted in
    /// `firehose_relay_buffer_chunks_closed_early`): nothing is dropped, and files and
    /// memory stay bounded whatever the number of tags.
    pub max_open_chunks: u32,
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
            chunk_keys: Vec::new(),
            timekey: None,
            timekey_wait: ConfigDuration::secs(600),
            timekey_use_utc: false,
            timekey_zone: None,
            max_open_chunks: DEFAULT_MAX_OPEN_CHUNKS,
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
        p.extend(self.key_problems());
        p
    }

    fn key_problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        let has = |k| self.chunk_keys.contains(&k);
        if (1..self.chunk_keys.len()).any(|i| self.chunk_keys[..i].contains(&self.chunk_keys[i])) {
            p.push(("chunk_keys", "names the same key twice".to_owned()));
        }
        match (has(ChunkKeyName::Time), self.timekey) {
            (true, None) => p.push((
                "timekey",
                "is required when chunk_keys has \"time\" (the length of a time slot, e.g. \"1h\")"
                    .to_owned(),
            )),
            (true, Some(t)) if t.0.as_secs() == 0 || t.0.subsec_nanos() != 0 => p.push((
                "timekey",
                "must be a whole number of seconds, at least 1s".to_owned(),
            )),
            (false, Some(_)) => p.push((
                "timekey",
                "has no effect without \"time\" in chunk_keys".to_owned(),
            )),
            _ => {}
        }
        if let Some(z) = &self.timekey_zone {
            if let Err(e) = KeyZone::parse(z) {
                p.push(("timekey_zone", e));
            }
        }
        if self.max_open_chunks == 0 {
            p.push(("max_open_chunks", "must be at least 1".to_owned()));
        }
        p
    }

    /// How records of this output are keyed (see [`super::key`]).
    pub fn key_rule(&self) -> KeyRule {
        let time = self.chunk_keys.contains(&ChunkKeyName::Time);
        let zone = match (&self.timekey_zone, self.timekey_use_utc) {
            (Some(z), _) => KeyZone::parse(z).unwrap_or(KeyZone::Utc),
            (None, true) => KeyZone::Utc,
            (None, false) => KeyZone::Local,
        };
        KeyRule {
            tag: self.chunk_keys.contains(&ChunkKeyName::Tag),
            timekey_secs: self
                .timekey
                .filter(|_| time)
                .map(|t| i64::try_from(t.0.as_secs()).unwrap_or(i64::MAX).max(1)),
            zone: Some(zone),
        }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn problems(toml_text: &str) -> Vec<(&'static str, String)> {
        let cfg: BufferConfig = toml::from_str(toml_text).unwrap();
        cfg.problems()
    }

    #[test]
    fn chunk_keys_need_what_they_use() {
        assert!(problems("chunk_keys = [\"tag\"]").is_empty());
        let ok = "chunk_keys = [\"tag\", \"time\"]\ntimekey = \"1h\"\ntimekey_zone = \"+09:00\"";
        assert!(problems(ok).is_empty());
        let keys = |t: &str| problems(t).into_iter().map(|(k, _)| k).collect::<Vec<_>>();
        assert_eq!(keys("chunk_keys = [\"time\"]"), ["timekey"]);
        assert_eq!(keys("timekey = \"1h\""), ["timekey"]);
        assert_eq!(
            keys("chunk_keys = [\"time\"]\ntimekey = \"0s\""),
            ["timekey"]
        );
        assert_eq!(keys("chunk_keys = [\"tag\", \"tag\"]"), ["chunk_keys"]);
        assert_eq!(keys("max_open_chunks = 0"), ["max_open_chunks"]);
        let zone = "chunk_keys = [\"time\"]\ntimekey = \"1d\"\ntimekey_zone = \"Asia/Tokyo\"";
        assert_eq!(keys(zone), ["timekey_zone"]);
        // A record field as a chunk key (Fluentd's `<buffer $.user>`) does not parse.
        assert!(toml::from_str::<BufferConfig>("chunk_keys = [\"user\"]").is_err());
        let rule = toml::from_str::<BufferConfig>(ok).unwrap().key_rule();
        assert_eq!((rule.tag, rule.timekey_secs), (true, Some(3600)));
    }
}
