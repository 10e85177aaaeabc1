//! The buffer storage of one `data_dir`: one sled database at `data_dir/buffer/` for chunk
//! metadata, shared by every output (one tree each), one directory of chunk files per output
//! under `data_dir/buffer/chunks/`, and the single group-commit writer thread of both.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, ThreadId};

use sled::Tree;

use super::codec::{self, ChunkMeta, DataStorage, StoredState};
use super::space::{DirBudget, Space, StorageHealth, DEFAULT_DIR_LIMIT};
use super::writer::{self, Op, Request};
use crate::buffer::records::RecordsTooLarge;
use crate::buffer::{ChunkId, DeliveredSet, Records, RetryState};
use crate::fsutil::{path_component, Filesystem, Fs, OpenMode};

mod names;

pub(crate) use names::{chunk_file, chunk_files, max_chunk_id, purged_file, purged_files};

/// sled's segment size for a new database. sled keeps the segment being written in an I/O
/// buffer of this size that becomes resident as the log fills it, and holds it until the
/// segment is full: with the 8 MiB of earlier releases, a relay that ran for a while held up to
/// 8 MiB (16 while a full one was written out) for metadata of a few KiB (measured: the
/// buffer's mapping resident in step with the `db` file, 3.8 MiB after 12,000 chunks). The
/// metadata is small ([`codec::MAX_META_VALUE`] is at most a sixteenth of this, far below the
/// blob threshold of a quarter).
///
/// sled refuses to open a database with another segment size than it was created with, so a
/// database keeps its own: see [`segment_size_of`].
pub const SEGMENT_SIZE: usize = 1 << 20;

/// sled's segment size in every database created before [`SEGMENT_SIZE`] became 1 MiB. Chosen
/// when record data still went to sled (values of ~20–200 KB, FIFO, 2 GB written through a
/// database with 20 MB live): with sled's default (512 KiB), ~200 KB values became blob files
/// that were never reclaimed (6 GB of blobs); with 8 MiB and values ≤ 256 KiB the database
/// stayed at ~4× the live data (75–92 MB). Chunks written by the first release may still hold
/// such values: only databases of those releases can, and they keep this size.
pub const LEGACY_SEGMENT_SIZE: usize = 8 << 20;

/// The largest segment size a database of ours has: what sled may write when it opens.
pub const MAX_SEGMENT_SIZE: usize = LEGACY_SEGMENT_SIZE;

/// The segment size to open the sled database in `db_dir` with: the one its `conf` file
/// records (sled writes it on creation and refuses any other), else [`LEGACY_SEGMENT_SIZE`] if
/// there is a `db` file with data (only earlier releases left one without a readable `conf`),
/// else [`SEGMENT_SIZE`] for a new database.
pub fn segment_size_of(db_dir: &Path) -> usize {
    // sled's format: `segment_size: N`, `use_compression: ...`, `version: ...` lines, then a
    // crc32 (checked by sled itself when it opens).
    let recorded = std::fs::read(db_dir.join("conf")).ok().and_then(|conf| {
        let text = String::from_utf8_lossy(&conf[..conf.len().saturating_sub(4)]).into_owned();
        text.lines()
            .find_map(|l| l.strip_prefix("segment_size: "))
            .and_then(|v| v.trim().parse::<usize>().ok())
    });
    match recorded {
        Some(n) if n.is_power_of_two() && (256..=1 << 24).contains(&n) => n,
        _ => match std::fs::metadata(db_dir.join("db")) {
            Ok(m) if m.len() > 0 => LEGACY_SEGMENT_SIZE,
            _ => SEGMENT_SIZE,
        },
    }
}

/// Name of the directory of chunk files, under the database directory.
pub const CHUNKS_DIR: &str = "chunks";

/// Name of the database directory under `data_dir`.
pub const DB_DIR: &str = "buffer";
/// Name of the quarantine directory under `data_dir`.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Tree names are this prefix plus the output name.
const TREE_PREFIX: &str = "output/";

/// A failure of the buffer database. Cloneable because one failed group commit answers many
/// appends: the causes are shared (`Arc`), so every clone keeps the original error, and disk
/// full is told apart from other I/O errors by its code ([`StoreError::io_error`],
/// [`StoreError::is_storage_full`]), never by message text.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error.
    #[error("buffer database: {0}")]
    Sled(#[source] Arc<sled::Error>),
    /// A file operation around the database failed.
    #[error("buffer database: {context}: {source}")]
    Io {
        /// What was being done, and to which path.
        context: String,
        /// The operating system's error.
        #[source]
        source: Arc<std::io::Error>,
    },
    /// No room for a write (`ENOSPC`, `EDQUOT`, `EMFILE`, `ENFILE`, or less free space than
    /// the reserve: see [`super::space`]). Nothing of the request was written; the store is
    /// not poisoned, and appends resume once there is room.
    #[error("buffer storage full: {context}: {source}")]
    NoRoom {
        /// What was being done, or why the append was refused.
        context: String,
        /// The operating system's error (a synthetic `ENOSPC` for a refusal by the reserve).
        #[source]
        source: Arc<std::io::Error>,
    },
    /// An earlier write failed; nothing is written until the relay restarts and recovers.
    #[error("buffer database failed earlier ({0}); restart the relay to recover from disk")]
    Failed(#[source] Arc<StoreError>),
    /// The records of one group commit for one chunk would pass 4 GiB (chunk_limit_size is
    /// validated far below that, so this is a bug, refused rather than written).
    #[error("buffer database: {0}")]
    TooLarge(#[from] RecordsTooLarge),
    /// A blocking task working on the database panicked or was cancelled.
    #[error("buffer database: a blocking task failed: {0}")]
    Task(#[source] Arc<tokio::task::JoinError>),
    /// The writer thread is gone (the store is being dropped).
    #[error("buffer database writer has stopped")]
    WriterGone,
    /// `buffer stats|dump` on a data_dir without a database.
    #[error("no buffer database at {0}")]
    Missing(PathBuf),
}

impl StoreError {
    /// An I/O error while doing `context` (what, and to which path).
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        StoreError::Io {
            context: context.into(),
            source: Arc::new(source),
        }
    }

    /// An append refused because the volume is below its reserve (no system call failed).
    pub fn no_room(reason: String) -> Self {
        StoreError::NoRoom {
            context: reason,
            source: Arc::new(std::io::Error::from_raw_os_error(libc::ENOSPC)),
        }
    }

    /// `what` failed with `e` in a write that can be refused without harm: lack of room
    /// ([`super::space::is_no_room`]) is [`StoreError::NoRoom`], anything else
    /// [`StoreError::Io`] (poisons the store). Never use it for a sync: a failed `fsync` is never
    /// retried as if nothing happened.
    pub fn io_write(what: impl Into<String>, e: std::io::Error) -> Self {
        if super::space::is_no_room(&e) {
            StoreError::NoRoom {
                context: what.into(),
                source: Arc::new(e),
            }
        } else {
            StoreError::io(what, e)
        }
    }

    /// Refused for lack of room: nothing was written and the store goes on
    /// ([`StoreError::NoRoom`]).
    pub fn is_no_room(&self) -> bool {
        matches!(self, StoreError::NoRoom { .. })
    }

    /// The operating system's error behind this one, if any: directly, inside a sled error, or
    /// behind [`StoreError::Failed`].
    pub fn io_error(&self) -> Option<&std::io::Error> {
        match self {
            StoreError::Io { source, .. } | StoreError::NoRoom { source, .. } => Some(source),
            StoreError::Sled(e) => match e.as_ref() {
                sled::Error::Io(io) => Some(io),
                _ => None,
            },
            StoreError::Failed(first) => first.io_error(),
            _ => None,
        }
    }

    /// True when the file system (or the user's quota) is full: `ENOSPC` / `EDQUOT`.
    pub fn is_storage_full(&self) -> bool {
        self.io_error().is_some_and(super::space::is_full)
    }
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(Arc::new(e))
    }
}

impl From<tokio::task::JoinError> for StoreError {
    fn from(e: tokio::task::JoinError) -> Self {
        StoreError::Task(Arc::new(e))
    }
}

/// The open database and its writer. Dropping the last handle stops the writer thread after it
/// has answered every request, then closes the database.
pub struct Store {
    db: sled::Db,
    data_dir: PathBuf,
    tx: Mutex<Option<Sender<Request>>>,
    writer: Mutex<Option<JoinHandle<()>>>,
    writer_id: Option<ThreadId>,
    failed: Arc<OnceLock<StoreError>>,
    commits: Arc<AtomicU64>,
    pool: Arc<writer::pool::PoolCounters>,
    fs: Fs,
    space: Arc<Space>,
    quarantine: Mutex<Arc<DirBudget>>,
}

impl Store {
    /// Opens (creating if needed) the database under `data_dir`, with the sled page cache
    /// bounded to `cache_capacity` bytes, and starts its writer.
    pub fn open(data_dir: &Path, cache_capacity: u64) -> Result<Arc<Store>, StoreError> {
        Store::open_with(data_dir, cache_capacity, Fs::default())
    }

    /// [`Store::open`] on file system `fs` (in unit tests, one that injects faults).
    pub(crate) fn open_with(
        data_dir: &Path,
        cache_capacity: u64,
        fs: Fs,
    ) -> Result<Arc<Store>, StoreError> {
        let path = data_dir.join(DB_DIR);
        let io = |what: &str, e: std::io::Error| StoreError::io(what, e);
        fs.create_dir_all(&path)
            .map_err(|e| io(&format!("create {}", path.display()), e))?;
        // Before sled opens: on a full volume, the ballast is released so that it can.
        let space = Arc::new(Space::open(&path));
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_capacity)
            .segment_size(segment_size_of(&path))
            // Our writer flushes after every group; sled's timer would only add writes.
            .flush_every_ms(None)
            .open()?;
        space.opened();
        // sled never fsyncs its config file nor the directory entries it created: do it once,
        // so that a power loss right after the first start cannot leave a database without
        // them.
        // `db` gets an `fdatasync` (its data and size), like every later sync of it: the only
        // `fsync` of `db` is the writer's last one when it stops.
        for f in ["conf", "db"] {
            let p = path.join(f);
            fs.open(&p, OpenMode::Read)
                .and_then(|file| match f {
                    "db" => fs.sync_data(&file, &p),
                    _ => fs.sync_all(&file, &p),
                })
                .map_err(|e| io(&format!("fsync {}", p.display()), e))?;
        }
        // `chunks/`, `buffer/` and `data_dir` are fsynced on every open, not only when created:
        // a run killed right after creating them may not have synced them.
        let chunks = path.join(CHUNKS_DIR);
        fs.create_dir_all(&chunks)
            .map_err(|e| io(&format!("create {}", chunks.display()), e))?;
        fs.sync_dir(data_dir)
            .map_err(|e| io(&format!("fsync {}", data_dir.display()), e))?;
        let db_file_path = path.join("db");
        let db_file = fs
            .open(&db_file_path, OpenMode::Read)
            .map_err(|e| io(&format!("open {}", db_file_path.display()), e))?;

        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(OnceLock::new());
        let writer_db = db.clone();
        let writer_failed = Arc::clone(&failed);
        let commits = Arc::new(AtomicU64::new(0));
        let pool = Arc::new(writer::pool::PoolCounters::default());
        let writer_commits = Arc::clone(&commits);
        let writer = writer::Writer {
            space: Arc::clone(&space),
            db: writer_db,
            db_file,
            db_file_path,
            fs: fs.clone(),
            purge_markers: Vec::new(),
            pool: writer::pool::Pool::new(Arc::clone(&pool)),
            failed: writer_failed,
            commits: writer_commits,
            unsynced_since: None,
            frames: Vec::new(),
        };
        let handle = std::thread::Builder::new()
            .name("buffer-writer".to_owned())
            .spawn(move || writer.run(rx))
            .map_err(|e| io("start the buffer writer thread", e))?;
        Ok(Arc::new(Store {
            db,
            data_dir: data_dir.to_owned(),
            tx: Mutex::new(Some(tx)),
            writer_id: Some(handle.thread().id()),
            writer: Mutex::new(Some(handle)),
            failed,
            commits,
            pool,
            fs,
            quarantine: Mutex::new(Arc::new(DirBudget::new(
                data_dir.join(QUARANTINE_DIR),
                DEFAULT_DIR_LIMIT,
            ))),
            space,
        }))
    }

    /// Uses `budget` (`storage.quarantine_limit_size`, shared with what reports it) for the
    /// quarantine from now on; call before recovery.
    pub fn set_quarantine_budget(&self, budget: Arc<DirBudget>) {
        *self.quarantine.lock().unwrap_or_else(|e| e.into_inner()) = budget;
    }

    /// Takes `bytes` of the quarantine's budget before a quarantine write, or refuses it at
    /// the limit (a lack of room: the chunk stays where it is).
    pub(crate) fn take_quarantine_room(&self, bytes: u64) -> Result<(), StoreError> {
        let budget = Arc::clone(&self.quarantine.lock().unwrap_or_else(|e| e.into_inner()));
        budget
            .take(bytes, "storage.quarantine_limit_size")
            .map_err(|e| StoreError::io("quarantine", e))
    }

    /// Whether the store takes appends: ok, full (for lack of room; appends are refused
    /// until there is room again) or failed (until a restart), with the reason.
    pub fn health(&self) -> StorageHealth {
        if let Some(e) = self.failed.get() {
            return StorageHealth::Failed {
                reason: e.to_string(),
            };
        }
        match self.space.full_reason() {
            Some(reason) => StorageHealth::Full { reason },
            None => StorageHealth::Ok,
        }
    }

    /// Why appends are refused up front for lack of room, if they are (re-checks the free
    /// space while full, at most every [`super::space::CHECK_EVERY`]).
    pub(crate) fn refusing_appends(&self) -> Option<String> {
        if self.space.is_full() {
            self.space.full_reason()
        } else {
            None
        }
    }

    /// The reserve and ballast of this store's volume.
    pub fn space(&self) -> &Space {
        &self.space
    }

    /// Opens the database of a stopped relay for inspection; fails instead of creating one.
    pub fn open_existing(data_dir: &Path, cache_capacity: u64) -> Result<Arc<Store>, StoreError> {
        let path = data_dir.join(DB_DIR);
        if !path.join("db").is_file() {
            return Err(StoreError::Missing(path));
        }
        Store::open(data_dir, cache_capacity)
    }

    /// The `data_dir` this database lives in.
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Where unreadable chunks are moved.
    pub fn quarantine_dir(&self) -> PathBuf {
        self.data_dir.join(QUARANTINE_DIR)
    }

    /// The tree of output `output`.
    pub(crate) fn tree(&self, output: &str) -> Result<Tree, StoreError> {
        Ok(self.db.open_tree(format!("{TREE_PREFIX}{output}"))?)
    }

    /// The directory of output `output`'s chunk files, created if missing. It and its parent
    /// are fsynced either way (a run killed right after creating it may not have synced it),
    /// so its entry is durable before any chunk file in it is relied upon.
    pub(crate) fn chunk_dir(&self, output: &str) -> Result<Arc<Path>, StoreError> {
        let dir = self.chunk_dir_path(output);
        self.fs
            .create_dir_all(&dir)
            .map_err(|e| StoreError::io(format!("create {}", dir.display()), e))?;
        Ok(Arc::from(dir))
    }

    /// The file system the store works on (the seam tests inject faults through).
    pub(crate) fn fs(&self) -> &Fs {
        &self.fs
    }

    /// Where output `output`'s chunk files are (without creating anything: for inspection).
    pub(crate) fn chunk_dir_path(&self, output: &str) -> PathBuf {
        self.data_dir
            .join(DB_DIR)
            .join(CHUNKS_DIR)
            .join(path_component(output))
    }

    /// Names of the outputs that have a tree.
    pub fn outputs(&self) -> Vec<String> {
        self.db
            .tree_names()
            .iter()
            .filter_map(|n| std::str::from_utf8(n).ok())
            .filter_map(|n| n.strip_prefix(TREE_PREFIX))
            .map(str::to_owned)
            .collect()
    }

    /// Group commits (flush + fdatasync) done since open: with N concurrent appends this grows
    /// by far less than N.
    pub fn group_commits(&self) -> u64 {
        self.commits.load(Ordering::Relaxed)
    }

    /// The pool of purged chunks' files kept for reuse: its size now and how often new chunks
    /// found a file in it.
    pub fn reuse_pool(&self) -> crate::buffer::ReusePool {
        self.pool.snapshot()
    }

    /// Physical size of the database and chunk files (what the volume must hold).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        let mut total = self.db.size_on_disk()?;
        let chunks = self.data_dir.join(DB_DIR).join(CHUNKS_DIR);
        let io = |p: &Path, e: std::io::Error| StoreError::io(p.display().to_string(), e);
        for dir in std::fs::read_dir(&chunks).map_err(|e| io(&chunks, e))? {
            let dir = dir.map_err(|e| io(&chunks, e))?.path();
            if !dir.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&dir).map_err(|e| io(&dir, e))? {
                let f = f.map_err(|e| io(&dir, e))?;
                total += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
        Ok(total)
    }

    /// Sends a request to the writer. Fails at once if an earlier write failed.
    pub(crate) fn submit(&self, req: Request) -> Result<(), StoreError> {
        if let Some(first) = self.failed.get() {
            return Err(StoreError::Failed(Arc::new(first.clone())));
        }
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(req).map_err(|_| StoreError::WriterGone),
            None => Err(StoreError::WriterGone),
        }
    }

    /// Sends a request and waits until it is durable, metadata included (for synchronous
    /// callers: recovery, quarantine, the CLI). Never call it from the writer thread.
    pub(crate) fn submit_wait(
        &self,
        tree: &Tree,
        dir: &Arc<Path>,
        ops: Vec<Op>,
    ) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        self.submit(Request {
            tree: tree.clone(),
            dir: Arc::clone(dir),
            ops,
            sync_metadata: true,
            cancel: None,
            done: Box::new(move |res| {
                let _ = tx.send(res);
            }),
        })?;
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Durably adds `records` to output `output` as one new queued chunk of key `key`
    /// (dead-letter replay on a stopped relay). Returns the new chunk's id.
    pub fn import_chunk(
        &self,
        output: &str,
        records: Records,
        created_ms: u64,
        key: &crate::buffer::ChunkKey,
    ) -> Result<ChunkId, StoreError> {
        let tree = self.tree(output)?;
        let dir = self.chunk_dir(output)?;
        let id = ChunkId(max_chunk_id(&tree, &dir)?.map_or(1, |m| m.0.saturating_add(1)));
        let meta = ChunkMeta {
            state: StoredState::Queued,
            created_ms,
            bytes: records.byte_len() as u64,
            records: records.len() as u64,
            storage: DataStorage::File,
            retry: RetryState::default(),
            delivered: DeliveredSet::new(),
            key: key.clone(),
        };
        let ops = vec![
            Op::Create {
                chunk: id,
                header: codec::keyed_chunk_file_header(id, created_ms, key),
            },
            Op::Append { chunk: id, records },
            Op::PutMeta {
                chunk: id,
                meta: codec::encode_meta(&meta),
            },
        ];
        self.submit_wait(&tree, &dir, ops)?;
        Ok(id)
    }
}

impl Drop for Store {
    fn drop(&mut self) {
        // Closing the channel ends the writer loop once it has answered what is queued.
        drop(self.tx.lock().unwrap_or_else(|e| e.into_inner()).take());
        let handle = self.writer.lock().unwrap_or_else(|e| e.into_inner()).take();
        // The last handle may be dropped by a completion running on the writer thread itself;
        // it must not wait for itself.
        if let Some(h) = handle {
            if Some(std::thread::current().id()) != self.writer_id {
                let _ = h.join();
            }
        }
    }
}

/// Why a buffer database could not be closed cleanly in this process, if one could not.
static SHUTDOWN_FAILURE: OnceLock<String> = OnceLock::new();

/// Records that a store's writer could not make its database durable when it stopped.
pub(crate) fn record_shutdown_failure(e: &StoreError) {
    let _ = SHUTDOWN_FAILURE.set(e.to_string());
}

/// Why a buffer database of this process could not be closed cleanly (its final sync failed,
/// or it had failed earlier), once every handle on it is gone. The relay checks it after
/// shutting down and exits with an error instead of 0.
pub fn shutdown_failure() -> Option<&'static str> {
    SHUTDOWN_FAILURE.get().map(String::as_str)
}

impl From<StoreError> for crate::buffer::AppendError {
    fn from(e: StoreError) -> Self {
        crate::buffer::AppendError::Storage(e.into())
    }
}
