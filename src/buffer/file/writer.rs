//! The single group-commit writer of a buffer database.
//!
//! Every change to the buffer (new chunks, appends, metadata updates, purges) is a [`Request`]
//! sent to one thread. The thread takes whatever requests are waiting and commits them as one
//! group:
//!
//! 1. record data is appended to the chunk files (`files.rs`: a new chunk gets a file of the
//!    pool of purged chunks' files, `pool.rs`, or a new file, and its header first), and each
//!    file written is `fdatasync`ed; if files were created or taken, their directory is
//!    fsynced;
//! 2. files of purged chunks are renamed to `.purged`, and their directory fsynced: a purge
//!    removes the chunk file durably before the metadata, so that a crash in between never
//!    leaves a delivered chunk's file without metadata (recovery would take it for a staged
//!    chunk and deliver it again). The `.purged` file joins the pool (or is deleted) once the
//!    metadata removal is durable (after the next database sync): until then it tells recovery
//!    that the chunk's file is gone because of a purge, not lost;
//! 3. metadata changes become one `sled::Batch` per tree and are applied. They are made durable
//!    (`Db::flush()`, then `fdatasync` of the database file itself: `flush()` alone is only
//!    `sync_file_range`, see [`Writer::sync_metadata`]) before the group completes only if a request asks for
//!    it ([`Request::sync_metadata`]); otherwise at the latest [`LAZY_METADATA_SYNC`] later;
//! 4. then every request's completion runs.
//!
//! So N concurrent appends cost one fdatasync, not N, and a completion never runs before its
//! bytes are on stable storage. Appends never wait for sled: closing a chunk and purging one
//! are metadata whose loss in a crash recovery repairs (a staged chunk is counted from its
//! file; a chunk whose file is gone was delivered).
//!
//! Within one group, all records appended to the same chunk become one contiguous byte run,
//! written with one `write` as frames of at most 256 KiB ([`codec::encode_frames`]).
//!
//! Requests are applied in the order they were sent. Senders hold their buffer's state lock
//! while sending, so the order on disk is the order of the in-memory bookkeeping.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, RecvTimeoutError, TryRecvError};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use sled::{Batch, IVec, Tree};

use super::codec;
use super::store::{chunk_file, purged_file, StoreError};
use crate::buffer::{ChunkId, Records};
use crate::fsutil::{Filesystem, Fs, OpenMode};

mod files;
mod group;
pub(crate) mod pool;

use files::Files;
use group::{by_output, into_parts, without_data, OutputGroup, Part};
use pool::Pool;

/// A group stops collecting requests once it holds this many record bytes, bounding the
/// writer's memory under a flood of appends.
const MAX_GROUP_BYTES: usize = 64 << 20;

/// Metadata applied without [`Request::sync_metadata`] is made durable at most this long
/// after it was applied: a handful of database fsyncs per second at most. Losing such changes
/// is harmless (a closed chunk is staged again; a purged chunk's file is already gone), the
/// bound only keeps recovery's repair work small.
pub(crate) const LAZY_METADATA_SYNC: Duration = Duration::from_millis(200);

/// One change to an output's chunks.
#[derive(Debug, Clone)]
pub(crate) enum Op {
    /// Creates the chunk's file with its header. Always sent with the chunk's first append.
    Create {
        /// The chunk.
        chunk: ChunkId,
        /// Its header ([`codec::keyed_chunk_file_header`]: id, creation time, key).
        header: Vec<u8>,
    },
    /// Records added to the end of a chunk's file.
    Append {
        /// The chunk.
        chunk: ChunkId,
        /// The records.
        records: Records,
    },
    /// New metadata of a chunk (the last one in a group wins).
    PutMeta {
        /// The chunk.
        chunk: ChunkId,
        /// [`codec::encode_meta`] output.
        meta: Vec<u8>,
    },
    /// Deletes a chunk: its file durably, then its metadata and any sled data values.
    Purge {
        /// The chunk.
        chunk: ChunkId,
    },
    /// Deletes one key that names no chunk (a malformed key found at recovery).
    RemoveKey(Vec<u8>),
}

/// Runs once the request is durable (or failed), on the writer thread: keep it short.
pub(crate) type Completion = Box<dyn FnOnce(Result<(), StoreError>) + Send>;

/// Changes to one output, applied together with the rest of their group.
pub(crate) struct Request {
    /// The output's metadata tree.
    pub tree: Tree,
    /// The output's chunk-file directory.
    pub dir: Arc<Path>,
    /// The changes, in order.
    pub ops: Vec<Op>,
    /// Whether the metadata changes must be durable before `done` runs (a delivered set that a
    /// retry relies on, recovery, imports). Record data is always durable before `done`.
    pub sync_metadata: bool,
    /// Set for appends and closes of a buffer: if it holds an error when the writer gets to
    /// the request, the request was cancelled (an earlier one it builds on was refused for
    /// lack of room, see `state::Pending`): its appends, creates and metadata are skipped (its
    /// purges, of chunks dropped for room, still run) and `done` gets that error.
    pub cancel: Option<Arc<OnceLock<StoreError>>>,
    /// Called after the group is durable.
    pub done: Completion,
}

/// What a group commit did to the files of step 1, so that it can be undone when a later file
/// of the same group finds no room: the file's length before (`None`: created by the group).
type Written = Vec<(PathBuf, Option<u64>)>;

/// The writer thread's state.
pub(crate) struct Writer {
    /// The metadata database.
    pub db: sled::Db,
    /// A handle on the database file, for `fdatasync`.
    pub db_file: File,
    /// Its path.
    pub db_file_path: PathBuf,
    /// The file system (the fault-injection seam in unit tests).
    pub fs: Fs,
    /// Set on the first error that is not a lack of room; from then on every request fails at
    /// once (the state of a file or of sled after an I/O error is unknown, so the process must
    /// restart and recover).
    pub failed: Arc<OnceLock<StoreError>>,
    /// The volume's reserve and ballast: data is written only while the reserve stays free.
    pub space: Arc<super::space::Space>,
    /// Group commits done.
    pub commits: Arc<AtomicU64>,
    /// When metadata was first applied without being made durable, if it still is not.
    pub unsynced_since: Option<Instant>,
    /// Reused buffer for the bytes of one file write.
    pub frames: Vec<u8>,
    /// `.purged` files of purges whose metadata removal is not durable yet: offered to the
    /// pool (or deleted) after the next successful database sync.
    pub purge_markers: Vec<PathBuf>,
    /// Files of purged chunks kept for new chunks, and where reused chunks end.
    pub pool: Pool,
}

impl Writer {
    /// The writer loop: runs until every sender is gone, then makes pending metadata durable.
    pub(crate) fn run(mut self, rx: Receiver<Request>) {
        loop {
            let first = match self.unsynced_since {
                Some(since) => {
                    let wait = LAZY_METADATA_SYNC.saturating_sub(since.elapsed());
                    match rx.recv_timeout(wait) {
                        Ok(r) => r,
                        Err(RecvTimeoutError::Timeout) => {
                            self.sync_metadata_now();
                            continue;
                        }
                        Err(RecvTimeoutError::Disconnected) => break,
                    }
                }
                None => match rx.recv() {
                    Ok(r) => r,
                    Err(_) => break,
                },
            };
            let mut group = vec![first];
            let mut bytes = group_bytes(&group[0]);
            while bytes < MAX_GROUP_BYTES {
                match rx.try_recv() {
                    Ok(r) => {
                        bytes += group_bytes(&r);
                        group.push(r);
                    }
                    Err(TryRecvError::Empty | TryRecvError::Disconnected) => break,
                }
            }
            let answers = match self.failed.get() {
                Some(first) => {
                    let e = StoreError::Failed(Arc::new(first.clone()));
                    group
                        .into_iter()
                        .map(|r| (r.done, Err(e.clone())))
                        .collect()
                }
                None => self.commit(group),
            };
            // Keep the frame buffer for the next group, but not a flood's worth of it.
            if self.frames.capacity() > 4 * codec::MAX_VALUE_DATA {
                self.frames = Vec::new();
            }
            self.commits.fetch_add(1, Ordering::Relaxed);
            for (_, result) in &answers {
                self.fail_on(result);
            }
            for (done, result) in answers {
                done(result);
            }
        }
        if self.unsynced_since.is_some() {
            self.sync_metadata_now();
        }
        self.close();
    }

    /// The last thing the writer does: flush sled and `fsync` its file through our own handle,
    /// so that sled's `Drop` (which ends in `sync_all().unwrap()` on that file: a panic, and
    /// an abort at exit, on a failing disk) has nothing left to fail on. If that sync fails,
    /// this handle on the database is leaked on purpose: sled's `Drop` runs only when the last
    /// handle goes, so it never runs. That failure, or an earlier one of the store, is recorded
    /// for [`super::store::shutdown_failure`] so that the relay exits with an error.
    fn close(self) {
        // Tried also after an earlier failure (of a chunk file, say): the database itself may
        // be fine, and sled's `Drop` releases its lock, which a restart in the same process
        // (the tests) needs.
        let synced = self.db.flush().map_err(StoreError::from).and_then(|_| {
            self.fs
                .sync_all(&self.db_file, &self.db_file_path)
                .map_err(|e| StoreError::io("fsync of the buffer database at shutdown", e))
        });
        if let Some(e) = self.failed.get() {
            super::store::record_shutdown_failure(e);
        }
        if let Err(e) = synced {
            tracing::error!(error = %e,
                "buffer database could not be made durable at shutdown; the next start recovers from what is on disk");
            super::store::record_shutdown_failure(&e);
            std::mem::forget(self.db);
        }
    }

    /// Poisons the store on an error that is not a lack of room.
    fn fail_on(&self, result: &Result<(), StoreError>) {
        if let Err(e) = result {
            if e.is_no_room() || matches!(e, StoreError::Failed(_)) {
                return;
            }
            if self.failed.set(e.clone()).is_ok() {
                tracing::error!(error = %e, "buffer write failed; appends are refused until restart");
            }
        }
    }

    /// Makes applied metadata durable outside a group (the lazy deadline passed, or shutdown).
    fn sync_metadata_now(&mut self) {
        if self.failed.get().is_some() {
            self.unsynced_since = None;
            return;
        }
        let result = self.sync_metadata();
        self.fail_on(&result);
    }

    /// Makes applied metadata durable: `Db::flush()`, then `fdatasync` of the `db` file.
    ///
    /// Why both: sled 0.34's `flush()` issues only `sync_file_range(2)` on its file (sled issues
    /// #1351, #1452), which neither persists file metadata nor works on every file system.
    /// Checked with `strace -f -e trace=sync_file_range,fdatasync,fsync` around a
    /// `Db::insert` + `Db::flush()` (sled 0.34.7, 2026-12-02): the flush made exactly one call,
    /// `sync_file_range(fd, 0, 109, WAIT_BEFORE|WRITE|WAIT_AFTER)`, and no `fsync`/`fdatasync`.
    /// Measured before this writer existed: after `kill -9` with every unsynced byte dropped
    /// (a simulated power loss), a database whose `flush()` had returned lost all its keys; with
    /// `sync_data()` on its `db` file after `flush()`, every flushed key survived.
    fn sync_metadata(&mut self) -> Result<(), StoreError> {
        self.unsynced_since = None;
        self.db.flush()?;
        self.fs
            .sync_data(&self.db_file, &self.db_file_path)
            .map_err(|e| StoreError::io("fdatasync of the buffer database", e))?;
        // The metadata of these purges is durably gone: their markers are no longer needed as
        // markers. They are kept for reuse (while the volume has room and the pool's bounds
        // allow) or deleted.
        let keep = !self.space.is_full();
        let mut deleted = false;
        for marker in std::mem::take(&mut self.purge_markers) {
            deleted |= !self.pool.offer(&self.fs, marker, keep);
        }
        if deleted {
            // Purges made room: appends may resume, the ballast may come back.
            self.space.recheck(true);
        }
        Ok(())
    }

    /// Commits one group (see the module comment) and returns each request's completion with
    /// its answer.
    ///
    /// When the group's data finds no room (less than the reserve free, or `ENOSPC`,
    /// `EDQUOT`, `EMFILE`, `ENFILE` from a create, open or write), what step 1 wrote is undone
    /// (files cut back to their length before the group, files it created deleted), every
    /// request that writes data or is an append/close of a buffer is answered with that
    /// [`StoreError::NoRoom`], and the rest (purges, releases: they make room) is committed
    /// again without them. Any other error answers every request with it and poisons the store.
    fn commit(&mut self, group: Vec<Request>) -> Vec<(Completion, Result<(), StoreError>)> {
        let (mut answers, parts) = into_parts(group);
        // What is committed again if the data finds no room: everything but the data.
        let rest = if parts.iter().any(|p| p.data) {
            without_data(&parts)
        } else {
            Vec::new()
        };
        let answered: Vec<(Option<usize>, bool)> =
            parts.iter().map(|p| (p.answer, p.data)).collect();
        match self.apply(parts) {
            Err(e) if e.is_no_room() => {
                for (index, data) in answered {
                    if let (Some(i), true) = (index, data) {
                        answers[i].1 = Some(Err(e.clone()));
                    }
                }
                let rest_answers: Vec<Option<usize>> = rest.iter().map(|p| p.answer).collect();
                let result = self.apply(rest);
                for i in rest_answers.into_iter().flatten() {
                    answers[i].1.get_or_insert_with(|| result.clone());
                }
            }
            result => {
                for (index, _) in answered {
                    if let Some(i) = index {
                        answers[i].1.get_or_insert_with(|| result.clone());
                    }
                }
            }
        }
        answers
            .into_iter()
            .map(|(done, answer)| (done, answer.unwrap_or(Ok(()))))
            .collect()
    }

    /// Applies the parts of one group: data, purges, metadata (see the module comment). A
    /// [`StoreError::NoRoom`] comes only from the data step, and then nothing was applied.
    fn apply(&mut self, parts: Vec<Part>) -> Result<(), StoreError> {
        let sync_requested = parts.iter().any(|p| p.sync_metadata);
        let mut outputs = by_output(parts)?;
        self.write_data(&outputs)?;
        self.remove_purged(&outputs)?;
        // 3. Metadata.
        for out in &mut outputs {
            if !out.meta.is_empty() {
                apply_meta(&out.tree, std::mem::take(&mut out.meta))?;
                self.unsynced_since.get_or_insert_with(Instant::now);
            }
        }
        let overdue = self
            .unsynced_since
            .is_some_and(|t| t.elapsed() >= LAZY_METADATA_SYNC);
        if self.unsynced_since.is_some() && (sync_requested || overdue) {
            self.sync_metadata()?;
        }
        Ok(())
    }

    /// Step 1: the data, written only while the reserve stays free, and undone if a file finds
    /// no room.
    fn write_data(&mut self, outputs: &[OutputGroup]) -> Result<(), StoreError> {
        let data_bytes: u64 = outputs
            .iter()
            .map(|o| {
                let frames: usize = o.appended.values().map(Records::byte_len).sum();
                let headers: usize = o.created.values().map(Vec::len).sum();
                (frames + frames / 16 + headers) as u64
            })
            .sum();
        if data_bytes > 0 || outputs.iter().any(|o| !o.created.is_empty()) {
            if let Some(reason) = self.space.refuse(data_bytes) {
                // The pool's files are room the volume needs more.
                self.pool.empty(&self.fs);
                return Err(StoreError::no_room(reason));
            }
        }
        let mut written: Written = Vec::new();
        let mut ends = Vec::new();
        for out in outputs {
            let mut files = Files {
                fs: &self.fs,
                pool: &mut self.pool,
                frames: &mut self.frames,
                written: &mut written,
                ends: &mut ends,
            };
            let step = files.write(out).and_then(|()| {
                if out.created.is_empty() {
                    return Ok(());
                }
                self.fs
                    .sync_dir(&out.dir)
                    .map_err(|e| io_dir_sync(&out.dir, e))
            });
            if let Err(e) = step {
                if e.is_no_room() {
                    self.pool.empty(&self.fs);
                    undo_written(&self.fs, &written)?;
                    if e.is_storage_full() {
                        self.space.out_of_space(e.to_string());
                    } else {
                        self.space.set_full(e.to_string());
                    }
                }
                return Err(e);
            }
        }
        for (dir, chunk, end) in ends {
            self.pool.set_end(&dir, chunk, end);
        }
        for out in outputs {
            for chunk in &out.sealed {
                self.pool.forget(&out.dir, *chunk);
            }
        }
        Ok(())
    }

    /// Step 2: files of purged chunks, durably gone (renamed to their purge marker) before
    /// their metadata goes.
    fn remove_purged(&mut self, outputs: &[OutputGroup]) -> Result<(), StoreError> {
        for out in outputs {
            for &chunk in &out.purged {
                self.pool.forget(&out.dir, chunk);
                let (path, marker) = (chunk_file(&out.dir, chunk), purged_file(&out.dir, chunk));
                match self.fs.rename(&path, &marker) {
                    Ok(()) => self.purge_markers.push(marker),
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_error("rename", &path, e)),
                }
            }
            if !out.purged.is_empty() {
                self.fs
                    .sync_dir(&out.dir)
                    .map_err(|e| io_error("fsync", &out.dir, e))?;
            }
        }
        Ok(())
    }
}

/// Undoes step 1 of a group that found no room: files it created are deleted, files it
/// appended to are cut back to their length before. Nothing of it was acknowledged. If even
/// this fails, the files' state is unknown: the error poisons the store.
fn undo_written(fs: &Fs, written: &Written) -> Result<(), StoreError> {
    for (path, before) in written.iter().rev() {
        let undone = match before {
            None => match fs.remove_file(path) {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
                other => other,
            },
            Some(len) => fs
                .open(path, OpenMode::Write)
                .and_then(|f| fs.set_len(&f, path, *len)),
        };
        undone.map_err(|e| io_error("undo a write refused for lack of room to", path, e))?;
    }
    Ok(())
}

fn group_bytes(r: &Request) -> usize {
    r.ops
        .iter()
        .map(|op| match op {
            Op::Append { records, .. } => records.byte_len(),
            _ => 0,
        })
        .sum()
}

fn io_error(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::io(format!("{what} {}", path.display()), e)
}

/// An error of a create, open or write, which may be a lack of room ([`StoreError::io_write`]).
fn io_write(what: &str, path: &Path, e: std::io::Error) -> StoreError {
    StoreError::io_write(format!("{what} {}", path.display()), e)
}

/// An error of a directory sync: out of descriptors (opening it) is a lack of room, anything
/// else (a failed fsync) poisons the store.
fn io_dir_sync(dir: &Path, e: std::io::Error) -> StoreError {
    if matches!(e.raw_os_error(), Some(libc::EMFILE | libc::ENFILE)) {
        StoreError::io_write(format!("fsync {}", dir.display()), e)
    } else {
        io_error("fsync", dir, e)
    }
}

/// Applies one group's metadata changes to `tree`, atomically. A single change is applied on
/// its own: a sled `Batch` writes a batch manifest and seals sled's I/O buffer, one `pwrite`
/// on sled's thread pool per group (in the profile, sled's threads took 5 % of the relay's CPU
/// when every chunk seal and purge went through a batch). Durability is unaffected: it comes
/// from the flush + `fdatasync` of the database, as before.
fn apply_meta(tree: &Tree, mut changes: Vec<(IVec, Option<IVec>)>) -> Result<(), StoreError> {
    if changes.len() == 1 {
        if let Some((key, value)) = changes.pop() {
            match value {
                Some(v) => tree.insert(key, v)?,
                None => tree.remove(key)?,
            };
        }
        return Ok(());
    }
    let mut batch = Batch::default();
    for (key, value) in changes {
        match value {
            Some(v) => batch.insert(key, v),
            None => batch.remove(key),
        }
    }
    tree.apply_batch(batch)?;
    Ok(())
}
