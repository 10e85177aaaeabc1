//! `buffer.type = "file"` (the default): the durable chunk queue, chunk files plus metadata in
//! sled.
//!
//! This comment is the contract for crash safety. Change the code and this together.
//!
//! # Layout
//!
//! Under `data_dir/buffer/` ([`store::Store`]), shared by every output:
//!
//! * one sled database holding **metadata only**: one tree per output, named `output/<name>`,
//!   opened with a bounded page cache (`storage.cache_capacity`) and a `segment_size` of
//!   1 MiB when it is created (a database keeps the size it was created with: 8 MiB for those
//!   of earlier releases; `store::segment_size_of`);
//! * `chunks/<output>/<chunk id, 16 hex digits>.chunk`: one **chunk file** per chunk with its
//!   records (`<output>` is the output name with bytes other than `[A-Za-z0-9_-]` written as
//!   `%XX`), and `<chunk id>.purged`, the purge marker of a chunk being purged (invariant 4),
//!   which may then wait in the pool to be reused by a new chunk ("Reused chunk files" below).
//!
//! Unreadable chunks are moved to `data_dir/quarantine/` ([`quarantine`]).
//!
//! Why record data is not in sled: sled 0.34 keeps every value written through it in its
//! in-memory tree nodes and does not evict them down to `cache_capacity`; heaptrack showed
//! 274 MB of a 313 MB heap in values inserted by our writer with a 256 MiB backlog, so RSS grew
//! with the backlog. A chunk file is read only when its chunk is taken, so memory no longer
//! depends on what is queued on disk.
//!
//! A **chunk file** ([`codec`]) is a 24-byte header followed by frames:
//!
//! * header: `"FRC" 0x01 | u64 LE chunk id | u64 LE creation time (Unix ms) | u32 LE crc32 of
//!   the first 20 bytes` (format 2 adds the chunk's key before the crc);
//! * frame: `u32 LE length | data value`, one or more per group commit that appended to the
//!   chunk; a data value is `u8 version (1) | u32 LE crc32 of the rest | u32 LE n |
//!   n × u32 LE record end offsets | record bytes`, with at most 256 KiB of record bytes; a
//!   record may continue in the next frame;
//! * in a **reused** file (format 3, or 4 with a key) every frame names its chunk: `u32 LE
//!   length | u64 LE chunk id | data value`, the value's crc32 taken over the chunk id first.
//!
//! Keys of an output's tree:
//!
//! * `'m' | chunk id (u64 BE)` → **chunk metadata** of a *closed* chunk: `u8 version |
//!   u32 LE crc32 of the rest | bincode 2 (standard config)` of: stored state (queued), creation
//!   time, logical bytes, record count, retry state (failures, first failure, next attempt),
//!   delivered-record bitset. Version 2 says the data is in the chunk file. A staged chunk has
//!   no metadata: its file is all there is.
//! * `'d' | chunk id (u64 BE) | seq (u32 BE)` → data values (same format as in a frame) of
//!   chunks written by the first release, whose metadata is version 1 (with the next free
//!   seq). Those chunks are read, delivered and purged as before; nothing new is written so.
//!
//! Chunk ids grow with creation time (recovery continues after the largest id on disk, in
//! sled or among the files), so id order is age order.
//!
//! # Writes: group commit
//!
//! Every write goes through one writer thread per `data_dir` (`writer.rs`). It drains all
//! waiting requests, then:
//!
//! 1. appends the records each chunk received in that group to its file in one `write` and
//!    `fdatasync`s each file written (and the directory, if files were created);
//! 2. renames the files of purged chunks to `<chunk id>.purged` (the purge marker) and fsyncs
//!    their directory; after the next database sync has made its chunk's metadata removal
//!    durable, a marker joins the pool of files for new chunks or is deleted;
//! 3. applies the metadata changes as one `sled::Batch` per tree. If a request needs them
//!    durable (a release, recovery, imports), or the oldest unsynced change is older than
//!    200 ms, it `Db::flush()`es and `fdatasync`s `data_dir/buffer/db` through its own file
//!    handle (sled's `flush()` is only `sync_file_range`: see `Writer::sync_metadata` in
//!    `writer.rs` for the measurement);
//!    otherwise that happens within 200 ms, also when idle and at shutdown;
//! 4. completes the requests.
//!
//! `conf`, `db` and the directories are fsynced once at open. Every directory the buffer
//! creates (`buffer/`, `chunks/<output>/`, `quarantine/`, and `dead-letter/<output>/` through
//! `fsutil::write_atomic`) is made durable before anything in it is relied upon: each new
//! directory and its parent are fsynced, and a chunk or quarantine directory and its parent
//! are fsynced even when they exist already (a run killed right after creating one may not
//! have synced it). An append writes only its
//! chunk's file (and creates it): acknowledging records never waits for sled.
//!
//! # Invariants
//!
//! 1. **An append resolves only after its records are durable**: its frames are written and
//!    the chunk file fdatasynced, and the file's directory entry was made durable in the same
//!    or an earlier group.
//! 2. **A staged chunk is its file.** It has no metadata; frames are only ever appended after
//!    the chunk's data (the end of the file, or in a reused file the end the writer keeps), so
//!    after a crash the file is every acknowledged append followed, at most, by part of one
//!    unacknowledged group (and in a reused file by the previous occupants' bytes).
//! 3. **A closed chunk's metadata counts exactly the records of its file**: it is written after
//!    the last append to the chunk (invariant 5) and after that append's data is durable (step
//!    1 before step 3). If the metadata is lost in a crash, the chunk is staged again
//!    (invariant 2), which is safe.
//! 4. **A purge removes the chunk file durably before the metadata**, by renaming it to its
//!    purge marker, which it lets go of (deletes, or keeps for reuse) only once the metadata
//!    removal is durable. So a chunk file without metadata is never a delivered chunk; a
//!    closed chunk's metadata with its marker means a purge that a crash cut short; metadata
//!    with neither file means the file was lost outside the relay (deleted by an operator,
//!    lost by fsck). A crash before the rename replays the chunk (at-least-once); once
//!    `commit` returns the file is durably gone, so the chunk is never delivered again even
//!    though its metadata removal becomes durable up to 200 ms later.
//! 5. **Requests reach the writer in the order of the in-memory bookkeeping** (they are sent
//!    under the buffer's state lock), so the batch that closes or purges a chunk is applied
//!    after every append to it.
//! 6. **A chunk is handed to a flush worker only when none of its writes is in flight**
//!    (`pending_writes == 0`): a worker never reads data that is not yet durable, and a purge
//!    can never overtake an append of the same chunk.
//! 7. **Partial delivery is durable before `release` returns**: the delivered bitset is part of
//!    the metadata, a release asks for durable metadata, and a released chunk is takeable
//!    again only once it is written, so a retry, also after a crash, resends only the rest.
//! 8. **In-flight exists only in memory.** On disk an in-flight chunk is queued.
//! 9. **Memory holds metadata only.** Record data is read from its file at `take()`, chunk by
//!    chunk; `total_limit_size` accounting is kept incrementally from the metadata.
//!
//! # Recovery (on open, per output; `recovery.rs`)
//!
//! * Every metadata value is read; the files of closed chunks are not (startup does not scale
//!   with the backlog). Closed chunks come back queued, with their retry state and delivered
//!   sets. One whose file is gone but whose purge marker is there was delivered: the purge
//!   is finished (invariant 4). One with neither lost its file outside the relay: a warning
//!   names it and its undelivered records, and its metadata goes to quarantine (counted as a
//!   quarantined chunk, see below). Leftover purge markers are deleted.
//! * A chunk file without metadata is a staged chunk (its appender is gone). It is counted from
//!   its file: frames are read up to the last one that ends a record and decodes; anything
//!   after that is the unacknowledged group a crash cut short (invariant 2). Those bytes (in a
//!   reused file, up to the end of this chunk's data) are written to quarantine with a warning, the file is truncated and synced, and the chunk is
//!   closed (metadata written) and queued, or deleted if it holds no record. If the copy finds
//!   no room (full volume or quarantine at its limit), the bytes are cut anyway (they were
//!   never acknowledged), described in the log (length, crc32, first bytes) and counted in
//!   `firehose_relay_buffer_tails_cut_without_copy_total`.
//! * **Corrupt frames** (see "Corruption in the middle of a chunk" below) in a staged chunk's
//!   file are written to quarantine, logged as corruption and counted
//!   (`firehose_relay_buffer_corrupt_frames_total`, `BufferStats::corrupt_frames`); the chunk's
//!   metadata counts only the records kept, so later reads, which find the same frames again,
//!   keep the same records and count nothing. Before its
//!   metadata is written, the adopted file is `fdatasync`ed and its directory fsynced: what
//!   recovery read came through the page cache, and its last group may never have been synced
//!   (killed between `write` and `fdatasync`, or a failed `fdatasync`); metadata durable for
//!   bytes that are not would count records a power loss takes away. If that sync fails, the
//!   buffer does not open and the relay exits with the error (non-zero).
//! * Metadata that fails its checksum or cannot be decoded, or a chunk file whose header is
//!   unreadable: the chunk's metadata is written to `data_dir/quarantine/` with a copy of its
//!   file (fsynced, with a reason file), then the chunk is purged; an error is logged and
//!   `firehose_relay_buffer_quarantined_chunks_total` and
//!   [`BufferStats::quarantined_chunks`](crate::buffer::BufferStats) count it. The rest loads.
//! * A closed chunk's data is verified (header, every frame's checksum and offsets, totals
//!   against the metadata) when the chunk is first taken; a chunk that fails is quarantined the
//!   same way and `take` moves on to the next one. If even the quarantine write fails, the
//!   chunk stays on disk, is skipped, and an error is logged. Corrupt frames in one stretch
//!   are not a failure of the whole chunk (below).
//!
//! # Corruption in the middle of a chunk
//!
//! A frame whose length prefix is intact (the frame after it decodes where that length says,
//! or for a closed chunk the file ends there) but whose value fails its checksum or does not
//! decode is corruption, not a cut write ([`codec::scan_chunk_file`], [`codec::Gap`]). Only
//! the records in it are lost; the frames after it are kept:
//!
//! * A record that started before the corrupt frame and ran into it is lost too (the frame
//!   before is kept up to its last record end). A frame holds at most 256 KiB of record bytes
//!   and only the last frame of a group commit is shorter; so if the corrupt frame is shorter
//!   than a full one it ended on a record end and the next frame starts a record, else the
//!   next frames are read from their first record end on (at worst one good record is lost
//!   with the corrupt frame, never a fragment delivered as a record).
//! * Several corrupt frames in a row are one stretch. What cannot be read as a frame at all (a
//!   length running past the end, or no decodable frame after it) is the tail as before: for a
//!   staged chunk the unacknowledged end, for a closed chunk the whole chunk goes to
//!   quarantine.
//! * The bytes of the frames with lost records go to quarantine (one `.bin` entry
//!   `frames@<start>-<end>` per stretch, with a reason file), an error is logged, and
//!   `firehose_relay_buffer_corrupt_frames_total` and `BufferStats::corrupt_frames` (in
//!   `/status`) count the corrupt frames. If quarantine finds no room, the chunk stays on disk
//!   as it is and is skipped (a staged chunk is not loaded), as for an unreadable chunk.
//! * A closed chunk ([`codec::assemble_closed`]): its metadata counts the records the file
//!   had, and the delivered-record set is indexed by them, so the lost records (metadata count
//!   minus records kept) are put back as empty placeholders at the index of the stretch, and
//!   marked delivered in the metadata (durably, before the chunk is handed out): they are
//!   never sent, and a retry or a restart finds them marked and counts nothing again.
//!   Corruption that hits only records delivered already loses nothing and is not counted.
//!   Two or more separate stretches with lost records: which records were where is unknown,
//!   so the whole chunk goes to quarantine; so does a chunk with no record left.
//! * A staged chunk (at recovery): no delivered-record index depends on its records, so its
//!   metadata simply counts the records kept, whatever the number of stretches.
//! * A power loss in the middle of a group commit can persist its pages out of order, and
//!   then a frame of that unacknowledged group can look like a corrupt frame followed by good
//!   ones: that group's readable records are kept (delivered at least once, never a partial
//!   record) and the stretch counted as corruption.
//! * A chunk whose file cannot be read (an I/O error, not bad bytes) is not handed out; `take`
//!   moves on to the next chunk, so the output keeps flowing, and retries it 1 s later,
//!   doubling the wait each time (at most 60 s). After `queue::READ_ATTEMPTS` (5) such
//!   failures in a row it is quarantined as above. Errors that are not the chunk's (`EMFILE`,
//!   `ENFILE`, `ENOMEM`, `EINTR`, `EAGAIN`) are retried the same way without ever leading to
//!   quarantine. The count is kept in memory: a restart starts it over.
//! * An I/O error (`EIO`, a failed `fdatasync`, any error the writer cannot classify) poisons
//!   the store: every later write fails until the relay restarts and recovers from what is on
//!   disk; the health is **failed** (`/healthz` 503). Lack of room (`ENOSPC`, `EDQUOT`,
//!   `EMFILE`, `ENFILE` from creating, opening or writing a file) does not: the refused group's
//!   appends are undone (files cut back, new files removed), the store is **full**, appends
//!   are refused up front until there is room again, and delivery and purges go on in the
//!   reserve ([`space`]). Failed appends are not acked, so clients resend.
//!
//! # Reused chunk files
//!
//! Deleting every delivered chunk's file and creating the next one was a large part of the
//! writer's work (the file system freeing and allocating blocks, and a journal commit for
//! each `fdatasync` that grows a file). So a new chunk takes the file of a purged one when there is
//! one ([`writer`]'s `pool.rs`, which has the measurements):
//!
//! * **The pool** holds purge markers whose chunk's metadata removal is durable, at most 64
//!   files and 64 MiB per `data_dir` (a marker past that is deleted), none while the volume is
//!   full (a refused write empties it). It is in memory only: at startup every marker is
//!   deleted, as before. Its size is in `/status` (`reuse_pool`) and
//!   `firehose_relay_buffer_reuse_pool_bytes`.
//! * **Taking a file** renames the marker to the new chunk's `.chunk` name, then writes the
//!   header (format 3 or 4) and the first frames at offset 0 in one `pwrite`, `fdatasync`s,
//!   and fsyncs the directory, before the first append is acknowledged (invariant 1). The file
//!   keeps its length; later appends are written at the chunk's own end, which the writer
//!   keeps in memory (an `O_APPEND` write would land after the stale bytes) until the chunk
//!   gets metadata or is purged. A group that finds no room deletes the file and cuts back a
//!   reused file's appends to the chunk's end, as for other files.
//! * **Reading** one: its frames name the chunk and check only with its id, so the first
//!   offset where no frame of this chunk starts (another chunk's frame, or fewer bytes than a
//!   frame's prefix) ends its data, quietly: the previous occupants' bytes are neither
//!   records, nor a cut write, nor corruption. Chunk ids never repeat while a file holding
//!   their bytes exists (a new chunk's id is above every id on disk, and every occupant of a
//!   file is older than the one after it), so an old frame never names the new chunk. A frame
//!   that names the chunk but does not check is read as in any file: the chunk's cut group
//!   (copied to quarantine up to where its length says, never the stale bytes after it) or
//!   corruption in the middle.
//! * **Recovery**: a `.chunk` whose intact header names an older chunk that has no metadata is
//!   a reused file whose first write never reached the disk (killed between the rename and
//!   the `pwrite`, or a power loss before its `fdatasync`): nothing of the new chunk was
//!   acknowledged, so it is removed (logged). A header naming a chunk that has metadata is
//!   unreadable, as before (quarantine). After a power loss the rename may be lost while the
//!   write is not: then the marker, which recovery deletes, holds the new chunk's
//!   unacknowledged bytes.
//! * Files of earlier releases (format 1 and 2) are read as before, and files created for
//!   their chunk still are written so; only a file reused in place uses format 3 and 4.
//!
//! # Faults
//!
//! Every file operation of the writer, the store, recovery, reads and quarantine goes through
//! the [`Filesystem`](crate::fsutil::Filesystem) seam ([`crate::fsutil::Fs`]): the real file
//! system, at no cost, in the binary; in this module's unit tests a
//! `FaultFs` (`src/fsutil/faults.rs`) that fails chosen calls (`EIO`, `ENOSPC`,
//! `EMFILE`, short writes, failed `fdatasync`) and simulates power losses, so that every
//! statement below about faults is tested by injecting the fault (`tests/faults.rs`).
//! sled's own file I/O is not behind the seam; for it:
//!
//! * every value stays far below sled's blob threshold (a quarter of `segment_size`; larger
//!   values become blob files that nothing fsyncs): a chunk closes at
//!   `codec::MAX_CHUNK_RECORDS` (256 Ki) records whatever `chunk_limit_records` says, so a
//!   metadata value, delivered-record bitset included, is at most `codec::MAX_META_VALUE`
//!   (37 KiB, a sixteenth of the 1 MiB segment);
//! * when the writer stops it flushes sled and `fsync`s its file itself. sled's `Drop` ends
//!   with `sync_all().unwrap()`, which panics on a failing disk: if our sync fails the writer
//!   leaks its handle on the database so that sled's `Drop` never runs, and logs the error;
//!   that failure, or an earlier one of the store, makes `firehose-relay run` exit 1 with it
//!   once its runtime is gone (`store::shutdown_failure`).
//!
//! Startup logs the recovered chunks, records and bytes per output; what is left of that
//! recovered backlog is in [`BufferStats::backlog`](crate::buffer::BufferStats), which the
//! flush layer's progress logs count down.

pub mod codec;
pub mod inspect;
pub mod quarantine;
pub mod queue;
mod read;
mod recovery;
pub mod space;
mod state;
pub mod store;
mod writer;

pub use queue::{FileBuffer, FileBufferCounters};
pub use store::{Store, StoreError};

#[cfg(test)]
mod tests;
