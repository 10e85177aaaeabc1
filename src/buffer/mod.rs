//! The per-output chunk queue that sits between the router and the flush workers.
//!
//! Records enter already formatted ([`Records`]) and are grouped into *chunks*, the unit a
//! flush worker sends and retries. A chunk is **staged** while it accepts appends and
//! **queued** once closed (by `chunk_limit_size`, `chunk_limit_records`, or age
//! `flush_interval`; see [`policy`]). A flush worker [`Buffer::take`]s the oldest queued chunk
//! whose retry time has come, which makes it **in flight** and invisible to other workers,
//! then either [`Buffer::commit`]s it (purged) or [`Buffer::release`]s it back to the queue
//! with what was delivered and when to retry.
//!
//! Two implementations share these semantics: [`memory::MemoryBuffer`] (lost on exit, for
//! tests and users who accept that) and the durable [`file::FileBuffer`] (`buffer.type =
//! "file"`, the default: one file per chunk, metadata in sled), whose on-disk format,
//! invariants and recovery rules are the contract at the top of [`mod@file`].
//!
//! What every buffer guarantees its callers:
//!
//! * an [`Buffer::append`] resolves only once its records are stored (file buffer: on disk),
//!   and when it fails nothing of it was stored ([`AppendError`]), so the source must not
//!   acknowledge;
//! * a chunk handed out by [`Buffer::take`] is invisible to other takers until it is committed
//!   or released, and comes back with what earlier attempts delivered ([`Chunk::delivered`]);
//! * memory and disk are bounded by `total_limit_size`; at the limit, `overflow_action`
//!   decides (refuse, wait, or drop the oldest queued chunk, counted and logged).
//!
//! The buffer's configuration (`[outputs.NAME.buffer]`, and `[storage]`) is in [`config`].

pub mod config;
pub mod delivered;
pub mod file;
pub mod key;
pub mod memory;
pub mod policy;
pub mod records;

use std::sync::Arc;

use async_trait::async_trait;
use tokio::sync::Notify;

pub use delivered::DeliveredSet;
use file::StoreError;
pub use key::ChunkKey;
pub use records::Records;
use records::RecordsTooLarge;

/// Identifies a chunk within one output's buffer. Ids increase with creation time, so ordering
/// by id is ordering by age.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct ChunkId(pub u64);

impl std::fmt::Display for ChunkId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{:016x}", self.0)
    }
}

/// Retry bookkeeping of one chunk. Kept per chunk (Fluentd keeps one per output) so that one
/// chunk that keeps failing does not hold back the others; it is persisted by durable buffers
/// so that `retry_timeout` and `retry_max_times` survive restarts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct RetryState {
    /// Failed delivery attempts so far.
    pub failures: u32,
    /// When the first failure happened (Unix ms), the start of `retry_timeout`.
    pub first_failure_ms: Option<u64>,
    /// Not to be taken before this time (Unix ms); 0 means now.
    pub next_attempt_ms: u64,
}

/// A chunk handed to a flush worker.
#[derive(Debug, Clone)]
pub struct Chunk {
    /// Which chunk this is; pass it back to `commit`/`release`.
    pub id: ChunkId,
    /// When the chunk was created (Unix ms).
    pub created_ms: u64,
    /// All records of the chunk, including those already delivered.
    pub records: Records,
    /// Records a previous attempt delivered; they must not be sent again.
    pub delivered: DeliveredSet,
    /// The chunk's retry history.
    pub retry: RetryState,
    /// What its records share (tag, time slot) when the output has chunk keys; the sink
    /// resolves the destination's name from it.
    pub key: ChunkKey,
}

impl Chunk {
    /// A chunk no one has tried to deliver yet: nothing delivered, no retry history.
    pub fn new(id: ChunkId, created_ms: u64, records: Records) -> Chunk {
        Chunk {
            id,
            created_ms,
            records,
            delivered: DeliveredSet::new(),
            retry: RetryState::default(),
            key: ChunkKey::default(),
        }
    }

    /// The chunk with its key.
    pub fn with_key(mut self, key: ChunkKey) -> Chunk {
        self.key = key;
        self
    }

    /// The chunk with what earlier attempts did: the records they delivered and their retry
    /// history (what a buffer hands back when it is taken again).
    pub fn with_history(mut self, delivered: DeliveredSet, retry: RetryState) -> Chunk {
        self.delivered = delivered;
        self.retry = retry;
        self
    }

    /// Indices of the records still to deliver.
    pub fn pending(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.records.len()).filter(move |&i| !self.delivered.contains(i))
    }

    /// Number of records still to deliver.
    pub fn pending_count(&self) -> usize {
        self.records.len() - self.delivered.count()
    }
}

/// Why an append was refused. In every case nothing of the append was stored, so a forward
/// client must not be acknowledged and will resend.
#[derive(Debug, thiserror::Error)]
pub enum AppendError {
    /// `total_limit_size` reached with `overflow_action = "throw_exception"`.
    #[error("buffer of output `{output}` is full ({used} of {limit} bytes); append rejected (overflow_action = throw_exception)")]
    Overflow {
        /// Output name.
        output: String,
        /// Logical bytes kept.
        used: u64,
        /// `total_limit_size`.
        limit: u64,
    },
    /// One record alone is larger than `chunk_limit_size`.
    #[error("a record of {size} bytes is larger than chunk_limit_size ({limit} bytes) of output `{output}`")]
    RecordTooLarge {
        /// Output name.
        output: String,
        /// Record size in bytes.
        size: usize,
        /// `chunk_limit_size`.
        limit: u64,
    },
    /// The buffer is shutting down and accepts nothing more.
    #[error("buffer of output `{0}` is closed")]
    Closed(String),
    /// Storage failed (disk full, I/O error).
    #[error(transparent)]
    Storage(#[from] BufferError),
}

/// A storage-level failure of the buffer.
#[derive(Debug, thiserror::Error)]
pub enum BufferError {
    /// The underlying store reported an error; the cause is kept, so disk full can be told
    /// apart by code ([`StoreError::is_storage_full`]).
    #[error("buffer storage error: {0}")]
    Storage(#[from] StoreError),
    /// A chunk would pass what one record batch can hold (4 GiB); chunk_limit_size is validated
    /// far below that.
    #[error("buffer storage error: {0}")]
    TooLarge(#[from] RecordsTooLarge),
    /// A chunk id that is not in flight was passed back.
    #[error("chunk {0} is not in flight")]
    NotInFlight(ChunkId),
}

/// What a buffer holds right now, for metrics, `/status` and `buffer stats`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct BufferStats {
    /// Chunks accepting appends.
    pub staged_chunks: usize,
    /// Closed chunks waiting for a flush worker (including those waiting for a retry).
    pub queued_chunks: usize,
    /// Chunks currently being delivered.
    pub in_flight_chunks: usize,
    /// Queued chunks that failed at least once.
    pub retrying_chunks: usize,
    /// Records kept (all states), not counting records already delivered.
    pub records: u64,
    /// Logical bytes kept (what `total_limit_size` limits).
    pub bytes: u64,
    /// `total_limit_size`.
    pub limit_bytes: u64,
    /// Creation time (Unix ms) of the oldest queued chunk.
    pub oldest_queued_ms: Option<u64>,
    /// Earliest time (Unix ms) a queued chunk waiting for a retry becomes ready.
    pub next_retry_ms: Option<u64>,
    /// Chunks removed by `overflow_action = "drop_oldest_chunk"` since start.
    pub dropped_chunks: u64,
    /// Open chunks closed before they were full or due because `max_open_chunks` chunks were
    /// open and a record of another key came, since start.
    pub closed_early_chunks: u64,
    /// Records removed by `overflow_action = "drop_oldest_chunk"` since start.
    pub dropped_records: u64,
    /// Chunks moved to `data_dir/quarantine/` because their stored bytes were unreadable
    /// (file buffer only), since start.
    pub quarantined_chunks: u64,
    /// Frames of chunk files found corrupt although their lengths were intact (bit rot in
    /// the middle of a chunk) since start (file buffer only): each went to quarantine with
    /// the records in it, and the rest of its chunk was kept.
    pub corrupt_frames: u64,
    /// Unfinished ends of staged chunks (an unacknowledged append cut short by a crash) cut at
    /// startup without a copy in quarantine, for lack of room (file buffer only); described in
    /// the log instead.
    pub tails_cut_without_copy: u64,
    /// The backlog recovered from disk at startup (file buffer only) that is still to deliver:
    /// what the backlog progress logs and `drain` count down.
    pub backlog: Backlog,
    /// Whether the storage takes appends (file buffer; a memory buffer is always ok): ok,
    /// full (appends refused until there is room) or failed (restart to recover), with why.
    pub storage: file::space::StorageHealth,
    /// The data directory's files of purged chunks kept for reuse (file buffer; the same for
    /// every output of one `data_dir`).
    pub reuse_pool: ReusePool,
}

/// Files of purged chunks kept to be overwritten by new chunks instead of deleted and created
/// again (`src/buffer/file/writer/pool.rs`): disk in use that holds no chunk, bounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct ReusePool {
    /// Files in the pool now.
    pub files: u64,
    /// Their bytes (at most 64 MiB).
    pub bytes: u64,
    /// Chunks created in a reused file since start.
    pub reused_chunks: u64,
    /// Chunks created in a new file since start (the pool had no file for them).
    pub new_files: u64,
}

/// Chunks recovered from disk at startup and not delivered (or dead-lettered) yet.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Backlog {
    /// Chunks left.
    pub chunks: u64,
    /// Records left (records of partly delivered chunks included).
    pub records: u64,
    /// Logical bytes left.
    pub bytes: u64,
}

/// Which staged chunks [`Buffer::enqueue_staged`] closes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enqueue {
    /// Those created at or before this Unix ms time (the `flush_interval` rule).
    CreatedBefore(u64),
    /// All of them (shutdown, `flush_mode = immediate` catch-up).
    All,
    /// Those whose time slot ended `timekey_wait` before this Unix ms time (the `lazy` rule
    /// of outputs with `"time"` in `chunk_keys`).
    SlotEndedBefore(u64),
}

/// The chunk queue of one output. Implementations must be safe to share between the source
/// tasks that append and the flush workers that take.
#[async_trait]
pub trait Buffer: Send + Sync {
    /// Stores the records in the open chunk of `key` (opening one if there is none).
    /// Resolves once they are stored as durably as the implementation promises (the file
    /// buffer: fsynced). On error nothing of `records` is kept.
    async fn append_keyed(&self, key: &ChunkKey, records: Records) -> Result<(), AppendError>;

    /// [`Buffer::append_keyed`] with the empty key (an output without chunk keys).
    async fn append(&self, records: Records) -> Result<(), AppendError> {
        self.append_keyed(&ChunkKey::default(), records).await
    }

    /// Closes staged chunks so flush workers can take them; returns how many were closed.
    async fn enqueue_staged(&self, which: Enqueue) -> Result<usize, BufferError>;

    /// Takes the oldest queued chunk that is not in flight and whose retry time has come.
    async fn take(&self, now_ms: u64) -> Result<Option<Chunk>, BufferError>;

    /// Removes an in-flight chunk for good: delivered, or written to the dead-letter directory.
    async fn commit(&self, id: ChunkId) -> Result<(), BufferError>;

    /// Returns an in-flight chunk to the queue, remembering what was delivered and when to try
    /// again.
    async fn release(
        &self,
        id: ChunkId,
        delivered: DeliveredSet,
        retry: RetryState,
    ) -> Result<(), BufferError>;

    /// Notified whenever a chunk becomes queued, so idle flush workers wake at once.
    fn queued_signal(&self) -> Arc<Notify>;

    /// A snapshot of the counters.
    fn stats(&self) -> BufferStats;

    /// Stops accepting appends (blocked appends fail with [`AppendError::Closed`]).
    fn close(&self);

    /// Makes every queued chunk due now, keeping its failure count (so `retry_max_times` and
    /// `retry_timeout` still apply). `drain` calls it once at start: an operator draining a
    /// volume wants every chunk tried at once, not at the end of a backoff computed before the
    /// relay stopped. Not persisted: the next failure stores a new schedule.
    fn retry_all_now(&self);
}

/// Milliseconds since the Unix epoch, the time unit of chunk metadata.
pub fn now_ms() -> u64 {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    u64::try_from(now.as_millis()).unwrap_or(u64::MAX)
}
