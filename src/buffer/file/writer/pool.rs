//! Files of purged chunks kept to be reused in place for new chunks, instead of deleting one
//! file and creating another for every chunk.
//!
//! Why: deleting a chunk file makes the file system free its blocks and drop its cached pages,
//! creating one allocates blocks again, and the first `fdatasync`s of a growing file commit
//! the journal for its new size. Measured with the end-to-end bench (2 M and 6 M records of
//! ~195 bytes, 1 and 8 connections, A/B of the same binary with and without reuse, ext4 on
//! this machine class): the writer thread fell from 23.7 % to 17.9 % of the relay's samples
//! (`unlink` 2.5 % gone, `openat` 3.5 → 0.9 %, block reservation 3.0 → 1.7 %), CPU per record
//! −6 % to −15 %, and the mean `fdatasync` from 461 µs to 246 µs (a file whose size does not
//! change needs no journal commit). The numbers are in `benches/README.md` ("reuse").
//!
//! How it stays crash-safe (the contract is in [`super::super`], "Reused chunk files"):
//!
//! * a file joins the pool only as a **purge marker whose chunk's metadata removal is durable**
//!   (after a database sync): until it is taken it is an ordinary marker, which recovery
//!   deletes;
//! * a new chunk takes it by renaming it to its own `.chunk` name and overwriting it from the
//!   start with its header and first frames; its directory is fsynced before the first
//!   append is acknowledged, as for a created file;
//! * the file keeps its length, so its end is not the end of the chunk's data: frames name
//!   their chunk (chunk file format 3 and 4, `codec/chunk_file.rs`), readers stop at the first
//!   frame that is not the chunk's, and the writer keeps each reused chunk's end here
//!   ([`Pool::end`]) to write its next frames there (an `O_APPEND` write would land after the
//!   stale bytes).
//!
//! Bounds: at most [`MAX_FILES`] files and [`MAX_BYTES`] bytes for the whole data directory;
//! a marker past them is deleted as before. While the store is full the pool is emptied (its
//! files are room the volume needs) and takes nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use crate::buffer::ChunkId;
use crate::fsutil::{Filesystem, Fs};

/// Most files the pool keeps. Markers join it in bursts, at each database sync (at most
/// `LAZY_METADATA_SYNC`, 200 ms, apart): the pool must hold what is purged between two syncs
/// to serve the chunks created meanwhile. Measured: with 4 files only 106 of 375 chunks of a
/// 2 M-record run found a free file, with 64 files 213 (the first ~100 chunks of a run are
/// created before any purge).
pub const MAX_FILES: usize = 64;
/// Most bytes the pool keeps (64 chunk files of the default 1 MiB `chunk_limit_size`): with
/// larger chunks it keeps fewer files. This disk is in use although it holds no chunk; it is
/// reported in `/status` (`reuse_pool` of each file-buffered output) and the metric
/// `firehose_relay_buffer_reuse_pool_bytes`, and freed when the volume is full.
pub const MAX_BYTES: u64 = 64 << 20;

/// What the pool holds and did, for `/status` and the metrics.
#[derive(Debug, Default)]
pub struct PoolCounters {
    /// Files in the pool now.
    pub files: AtomicU64,
    /// Their bytes.
    pub bytes: AtomicU64,
    /// Chunks created in a reused file since start.
    pub reused: AtomicU64,
    /// Chunks created in a new file since start (no free file in their directory).
    pub created: AtomicU64,
}

impl PoolCounters {
    /// The counters now.
    pub fn snapshot(&self) -> crate::buffer::ReusePool {
        crate::buffer::ReusePool {
            files: self.files.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            reused_chunks: self.reused.load(Ordering::Relaxed),
            new_files: self.created.load(Ordering::Relaxed),
        }
    }
}

/// A purge marker free for reuse.
struct Free {
    dir: PathBuf,
    path: PathBuf,
    len: u64,
}

/// The writer's pool of free files and the ends of the reused chunks it wrote.
pub(crate) struct Pool {
    free: Vec<Free>,
    bytes: u64,
    max_files: usize,
    max_bytes: u64,
    /// Where the data of each open reused chunk ends (its file is longer). Kept until the
    /// chunk gets metadata (closed: never appended to again) or is purged.
    ends: HashMap<(Arc<Path>, ChunkId), u64>,
    counters: Arc<PoolCounters>,
}

impl Pool {
    /// An empty pool of at most [`MAX_FILES`] files and [`MAX_BYTES`] bytes, reporting to
    /// `counters`.
    pub(crate) fn new(counters: Arc<PoolCounters>) -> Pool {
        Pool::with_limits(counters, MAX_FILES, MAX_BYTES)
    }

    fn with_limits(counters: Arc<PoolCounters>, max_files: usize, max_bytes: u64) -> Pool {
        Pool {
            free: Vec::new(),
            bytes: 0,
            max_files,
            max_bytes,
            ends: HashMap::new(),
            counters,
        }
    }

    /// Offers the marker `path` of a purge whose metadata removal is durable: kept if the
    /// bounds allow (and `keep`), else deleted. Returns whether it was kept.
    pub(crate) fn offer(&mut self, fs: &Fs, path: PathBuf, keep: bool) -> bool {
        // The length is only for the bound; a marker that cannot be measured is not kept.
        let len = if keep {
            std::fs::metadata(&path).map(|m| m.len()).ok()
        } else {
            None
        };
        let dir = path.parent().map(Path::to_path_buf);
        match (len, dir) {
            (Some(len), Some(dir))
                if self.free.len() < self.max_files && self.bytes + len <= self.max_bytes =>
            {
                self.bytes += len;
                self.free.push(Free { dir, path, len });
                self.publish();
                true
            }
            _ => {
                remove_marker(fs, &path);
                false
            }
        }
    }

    /// Takes a free file of directory `dir` (the one that joined last), with its length.
    pub(crate) fn take(&mut self, dir: &Path) -> Option<PathBuf> {
        let at = self.free.iter().rposition(|f| f.dir == dir)?;
        let free = self.free.swap_remove(at);
        self.bytes -= free.len;
        self.publish();
        Some(free.path)
    }

    /// Deletes every free file (the volume needs the room).
    pub(crate) fn empty(&mut self, fs: &Fs) {
        for free in self.free.drain(..) {
            remove_marker(fs, &free.path);
        }
        self.bytes = 0;
        self.publish();
    }

    /// Counts a chunk created in a reused file (`true`) or a new one.
    pub(crate) fn count_created(&self, reused: bool) {
        let counter = if reused {
            &self.counters.reused
        } else {
            &self.counters.created
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Where the data of reused chunk `chunk` of `dir` ends, if it is one.
    pub(crate) fn end(&self, dir: &Arc<Path>, chunk: ChunkId) -> Option<u64> {
        self.ends.get(&(Arc::clone(dir), chunk)).copied()
    }

    /// Records where the data of reused chunk `chunk` ends now.
    pub(crate) fn set_end(&mut self, dir: &Arc<Path>, chunk: ChunkId, end: u64) {
        self.ends.insert((Arc::clone(dir), chunk), end);
    }

    /// Forgets a chunk that gets no more appends (closed or purged).
    pub(crate) fn forget(&mut self, dir: &Arc<Path>, chunk: ChunkId) {
        if !self.ends.is_empty() {
            self.ends.remove(&(Arc::clone(dir), chunk));
        }
    }

    fn publish(&self) {
        self.counters
            .files
            .store(self.free.len() as u64, Ordering::Relaxed);
        self.counters.bytes.store(self.bytes, Ordering::Relaxed);
    }
}

/// Deletes a marker whose chunk's metadata removal is durable. One that cannot be deleted (or
/// whose deletion a crash undoes) is deleted by recovery; it never names a chunk with
/// metadata.
pub(crate) fn remove_marker(fs: &Fs, marker: &Path) {
    match fs.remove_file(marker) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => tracing::warn!(file = %marker.display(), error = %e,
            "buffer: cannot delete the marker of a finished purge; recovery will"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `n` markers of `len` bytes each in a new directory.
    fn markers(dir: &Path, n: usize, len: usize) -> Vec<PathBuf> {
        (0..n)
            .map(|i| {
                let p = dir.join(format!("{i:016x}.purged"));
                std::fs::write(&p, vec![7u8; len]).unwrap();
                p
            })
            .collect()
    }

    #[test]
    fn the_pool_keeps_at_most_its_files_and_bytes_and_deletes_the_rest() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Fs::default();
        let counters = Arc::new(PoolCounters::default());
        let mut pool = Pool::with_limits(Arc::clone(&counters), 3, 250);
        let m = markers(dir.path(), 5, 100);
        let kept: Vec<bool> = m.iter().map(|p| pool.offer(&fs, p.clone(), true)).collect();
        assert_eq!(
            kept,
            [true, true, false, false, false],
            "the bytes bound: 2 × 100 ≤ 250"
        );
        assert!(m[0].exists() && m[1].exists() && !m[2].exists() && !m[4].exists());
        assert_eq!(counters.snapshot().files, 2);
        assert_eq!(counters.snapshot().bytes, 200);

        let mut pool = Pool::with_limits(Arc::clone(&counters), 3, 1 << 20);
        let m = markers(dir.path(), 5, 10);
        let kept = m
            .iter()
            .filter(|p| pool.offer(&fs, (*p).clone(), true))
            .count();
        assert_eq!(kept, 3, "the files bound");
        assert_eq!(m.iter().filter(|p| p.exists()).count(), 3);
    }

    #[test]
    fn a_full_volume_keeps_nothing_and_empties_the_pool() {
        let dir = tempfile::tempdir().unwrap();
        let fs = Fs::default();
        let counters = Arc::new(PoolCounters::default());
        let mut pool = Pool::new(Arc::clone(&counters));
        let m = markers(dir.path(), 3, 10);
        assert!(pool.offer(&fs, m[0].clone(), true));
        assert!(pool.offer(&fs, m[1].clone(), true));
        assert!(!pool.offer(&fs, m[2].clone(), false), "not kept while full");
        assert!(!m[2].exists());
        pool.empty(&fs);
        assert!(!m[0].exists() && !m[1].exists());
        assert_eq!(
            (counters.snapshot().files, counters.snapshot().bytes),
            (0, 0)
        );
        assert_eq!(pool.take(dir.path()), None);
    }

    #[test]
    fn a_file_is_taken_only_for_its_own_directory() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let fs = Fs::default();
        let mut pool = Pool::new(Arc::new(PoolCounters::default()));
        let m = markers(a.path(), 1, 10);
        pool.offer(&fs, m[0].clone(), true);
        assert_eq!(pool.take(b.path()), None);
        assert_eq!(pool.take(a.path()), Some(m[0].clone()));
        assert_eq!(pool.take(a.path()), None);
    }
}
