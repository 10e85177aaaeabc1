//! `buffer.type = "file"` (the default): the durable chunk queue on sled.
//!
//! This comment is the contract for crash safety. Change the code and this together.
//!
//! # Layout
//!
//! One sled database per `data_dir`, at `data_dir/buffer/` ([`store::Store`]), shared by every
//! output; each output owns one tree named `output/<name>`. Opened with an explicit
//! `segment_size` of 8 MiB and a bounded page cache (`storage.cache_capacity`). Unreadable
//! chunks are moved to `data_dir/quarantine/` ([`quarantine`]).
//!
//! Keys of an output's tree ([`codec`]):
//!
//! * `'d' | chunk id (u64 BE) | seq (u32 BE)` → a **data value**: a run of formatted records
//!   of that chunk. `u8 version (1) | u32 LE crc32 of the rest | u32 LE n | n × u32 LE record
//!   end offsets | record bytes`. At most 256 KiB of record bytes per value; a record may
//!   continue in the value with the next seq. Big-endian ids make a chunk's values one
//!   contiguous range in (chunk, seq) order.
//! * `'m' | chunk id (u64 BE)` → **chunk metadata**: `u8 version (1) | u32 LE crc32 of the rest
//!   | bincode 2 (standard config)` of: stored state (staged/queued), creation time, logical
//!   bytes, record count, next free seq, retry state (failures, first failure, next attempt),
//!   delivered-record bitset.
//!
//! Chunk ids grow with creation time (recovery continues after the largest id on disk), so
//! id order is age order.
//!
//! # Writes: group commit
//!
//! Every write goes through one writer thread per database ([`writer`]). It drains all
//! waiting requests, merges the records each chunk received in that group into one byte run
//! (split into ≤ 256 KiB values), applies one `sled::Batch` per tree, calls `Db::flush()`, then
//! `fdatasync`s `data_dir/buffer/db` through its own file handle (sled's `flush()` is only
//! `sync_file_range`; DESIGN.md has the measurement), and only then completes the requests.
//! `conf`, `db` and the directories are fsynced once at open.
//!
//! # Invariants
//!
//! 1. **An append resolves only after its records and the chunk metadata that counts them are
//!    durable.** Both are in the same atomic batch, followed by flush + fdatasync. So a chunk's
//!    metadata and its data values always agree, whatever moment a crash hits.
//! 2. **Requests reach the writer in the order of the in-memory bookkeeping** (they are sent
//!    under the buffer's state lock), so the batch that closes or purges a chunk is applied
//!    after every append to it.
//! 3. **A chunk is handed to a flush worker only when none of its writes is in flight**
//!    (`pending_writes == 0`): a worker never reads data that is not yet durable, and a purge
//!    can never overtake an append of the same chunk.
//! 4. **Purge = delete all data keys and the metadata of a chunk in one batch**, durable
//!    before `commit` returns. A crash before that replays the chunk (at-least-once).
//! 5. **Partial delivery is durable before `release` returns**: the delivered bitset is part of
//!    the metadata, and a released chunk is takeable again only once it is written, so a retry,
//!    also after a crash, resends only the rest.
//! 6. **In-flight exists only in memory.** On disk an in-flight chunk is queued.
//! 7. **Memory holds metadata only.** Record data is read from sled at `take()`, chunk by chunk;
//!    `total_limit_size` accounting is kept incrementally from the metadata.
//!
//! # Recovery (on open, per output; [`recovery`])
//!
//! * Every metadata value is read (never the data values, so startup does not scale with the
//!   backlog). Queued chunks stay queued; staged chunks become queued (their appender is gone);
//!   retry state and delivered sets carry over.
//! * Metadata that fails its checksum or cannot be decoded: the chunk's raw entries are
//!   written to `data_dir/quarantine/` (fsynced, with a reason file), then the chunk is purged;
//!   an error is logged and `firehose_relay_buffer_quarantined_chunks_total` and
//!   [`BufferStats::quarantined_chunks`](crate::buffer::BufferStats) count it. The rest loads.
//! * Data values are verified (checksum, record offsets, totals against the metadata) when the
//!   chunk is first taken; a chunk that fails is quarantined the same way and `take` moves on
//!   to the next one. If even the quarantine write fails, the chunk stays on disk, is skipped,
//!   and an error is logged.
//! * A write error (disk full, I/O error) poisons the database handle: every later write fails
//!   until the relay restarts and recovers from what is on disk. Failed appends are not acked,
//!   so clients resend.
//!
//! Startup logs the recovered chunks, records and bytes per output, and the progress of the
//! recovered backlog while it drains.

pub mod codec;
pub mod inspect;
pub mod quarantine;
pub mod queue;
mod recovery;
pub mod store;
mod writer;

pub use queue::FileBuffer;
pub use store::{Store, StoreError};

#[cfg(test)]
mod tests;
