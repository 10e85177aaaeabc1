//! The buffer database of one `data_dir`: one sled database at `data_dir/buffer/`, shared by
//! every output (one tree each), and its single group-commit writer thread.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex, OnceLock};
use std::thread::{JoinHandle, ThreadId};

use sled::Tree;

use super::codec::{self, ChunkMeta, StoredState, META_PREFIX};
use super::writer::{self, Op, Request};
use crate::buffer::{ChunkId, DeliveredSet, Records, RetryState};
use crate::fsutil::sync_dir;

/// sled's segment size. DESIGN.md: with the default (512 KiB) values of ~200 KB became blob
/// files that were never reclaimed; with 8 MiB and values ≤ 256 KiB the database stayed at
/// ~4× the live data.
pub const SEGMENT_SIZE: usize = 8 << 20;

/// Name of the database directory under `data_dir`.
pub const DB_DIR: &str = "buffer";
/// Name of the quarantine directory under `data_dir`.
pub const QUARANTINE_DIR: &str = "quarantine";
/// Tree names are this prefix plus the output name.
const TREE_PREFIX: &str = "output/";

/// A failure of the buffer database. Cloneable because one failed group commit answers many
/// appends.
#[derive(Debug, Clone, thiserror::Error)]
pub enum StoreError {
    /// sled reported an error.
    #[error("buffer database: {0}")]
    Sled(String),
    /// A file operation around the database failed.
    #[error("buffer database: {0}")]
    Io(String),
    /// An earlier write failed; nothing is written until the relay restarts and recovers.
    #[error("buffer database failed earlier ({0}); restart the relay to recover from disk")]
    Failed(String),
    /// The writer thread is gone (the store is being dropped).
    #[error("buffer database writer has stopped")]
    WriterGone,
    /// `buffer stats|dump` on a data_dir without a database.
    #[error("no buffer database at {0}")]
    Missing(PathBuf),
}

impl From<sled::Error> for StoreError {
    fn from(e: sled::Error) -> Self {
        StoreError::Sled(e.to_string())
    }
}

impl From<StoreError> for crate::buffer::BufferError {
    fn from(e: StoreError) -> Self {
        crate::buffer::BufferError::Storage(e.to_string())
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
    failed: Arc<OnceLock<String>>,
    commits: Arc<AtomicU64>,
}

impl Store {
    /// Opens (creating if needed) the database under `data_dir`, with the sled page cache
    /// bounded to `cache_capacity` bytes, and starts its writer.
    pub fn open(data_dir: &Path, cache_capacity: u64) -> Result<Arc<Store>, StoreError> {
        let path = data_dir.join(DB_DIR);
        let io = |what: &str, e: std::io::Error| StoreError::Io(format!("{what}: {e}"));
        std::fs::create_dir_all(&path).map_err(|e| io(&format!("create {}", path.display()), e))?;
        let db = sled::Config::new()
            .path(&path)
            .cache_capacity(cache_capacity)
            .segment_size(SEGMENT_SIZE)
            // Our writer flushes after every group; sled's timer would only add writes.
            .flush_every_ms(None)
            .open()?;
        // sled never fsyncs its config file nor the directory entries it created: do it once,
        // so that a power loss right after the first start cannot leave a database without
        // them.
        for f in ["conf", "db"] {
            let p = path.join(f);
            File::open(&p)
                .and_then(|f| f.sync_all())
                .map_err(|e| io(&format!("fsync {}", p.display()), e))?;
        }
        sync_dir(&path).map_err(|e| io(&format!("fsync {}", path.display()), e))?;
        sync_dir(data_dir).map_err(|e| io(&format!("fsync {}", data_dir.display()), e))?;
        let db_file_path = path.join("db");
        let db_file = File::open(&db_file_path)
            .map_err(|e| io(&format!("open {}", db_file_path.display()), e))?;

        let (tx, rx) = mpsc::channel();
        let failed = Arc::new(OnceLock::new());
        let writer_db = db.clone();
        let writer_failed = Arc::clone(&failed);
        let commits = Arc::new(AtomicU64::new(0));
        let writer_commits = Arc::clone(&commits);
        let handle = std::thread::Builder::new()
            .name("buffer-writer".to_owned())
            .spawn(move || writer::run(writer_db, db_file, rx, writer_failed, writer_commits))
            .map_err(|e| io("start the buffer writer thread", e))?;
        Ok(Arc::new(Store {
            db,
            data_dir: data_dir.to_owned(),
            tx: Mutex::new(Some(tx)),
            writer_id: Some(handle.thread().id()),
            writer: Mutex::new(Some(handle)),
            failed,
            commits,
        }))
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

    /// Physical size of the database files (what the volume must hold).
    pub fn size_on_disk(&self) -> Result<u64, StoreError> {
        Ok(self.db.size_on_disk()?)
    }

    /// Sends a request to the writer. Fails at once if an earlier write failed.
    pub(crate) fn submit(&self, req: Request) -> Result<(), StoreError> {
        if let Some(msg) = self.failed.get() {
            return Err(StoreError::Failed(msg.clone()));
        }
        let tx = self.tx.lock().unwrap_or_else(|e| e.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(req).map_err(|_| StoreError::WriterGone),
            None => Err(StoreError::WriterGone),
        }
    }

    /// Sends a request and waits for its completion (for synchronous callers: recovery, the
    /// CLI). Never call it from the writer thread.
    pub(crate) fn submit_wait(&self, tree: &Tree, ops: Vec<Op>) -> Result<(), StoreError> {
        let (tx, rx) = mpsc::channel();
        self.submit(Request {
            tree: tree.clone(),
            ops,
            done: Box::new(move |res| {
                let _ = tx.send(res);
            }),
        })?;
        rx.recv().map_err(|_| StoreError::WriterGone)?
    }

    /// Durably adds `records` to output `output` as one new queued chunk (dead-letter replay on
    /// a stopped relay). Returns the new chunk's id.
    pub fn import_chunk(
        &self,
        output: &str,
        records: Records,
        created_ms: u64,
    ) -> Result<ChunkId, StoreError> {
        let tree = self.tree(output)?;
        let id = ChunkId(max_chunk_id(&tree)?.map_or(1, |m| m.0.saturating_add(1)));
        let slots = seq_slots(records.byte_len() as u64);
        let meta = ChunkMeta {
            state: StoredState::Queued,
            created_ms,
            bytes: records.byte_len() as u64,
            records: records.len() as u64,
            next_seq: slots,
            retry: RetryState::default(),
            delivered: DeliveredSet::new(),
        };
        let ops = vec![
            Op::Append {
                chunk: id,
                first_seq: 0,
                records,
            },
            Op::PutMeta {
                chunk: id,
                meta: codec::encode_meta(&meta),
            },
        ];
        self.submit_wait(&tree, ops)?;
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

/// Sequence numbers an append of `bytes` bytes reserves: one per started 256 KiB value, at
/// least one. A group's merged appends never need more values than the sum of their
/// reservations.
pub(crate) fn seq_slots(bytes: u64) -> u32 {
    let n = bytes.div_ceil(codec::MAX_VALUE_DATA as u64).max(1);
    u32::try_from(n).unwrap_or(u32::MAX)
}

/// The largest chunk id with data or metadata in `tree`, so that new chunks never reuse the
/// id of something still on disk.
pub(crate) fn max_chunk_id(tree: &Tree) -> Result<Option<ChunkId>, StoreError> {
    let mut max = None;
    for prefix in [codec::DATA_PREFIX, META_PREFIX] {
        if let Some(kv) = tree.scan_prefix([prefix]).next_back() {
            let (k, _) = kv?;
            if let Ok(id) = codec::chunk_of_key(&k) {
                max = max.max(Some(id));
            }
        }
    }
    Ok(max)
}

impl From<StoreError> for crate::buffer::AppendError {
    fn from(e: StoreError) -> Self {
        crate::buffer::AppendError::Storage(e.into())
    }
}
