//! Step 1 of a group commit for one output: the chunk files it creates (or takes from the
//! pool) and appends to, each written with one `write` and `fdatasync`ed, with what it changed
//! noted first so that a group that finds no room can be undone.

use std::collections::BTreeSet;
use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use super::super::codec;
use super::super::store::{chunk_file, StoreError};
use super::group::OutputGroup;
use super::pool::Pool;
use super::{io_error, io_write, Written};
use crate::buffer::ChunkId;
use crate::fsutil::{Filesystem, Fs, OpenMode};

/// Where [`Files::write`] writes a chunk's frames.
enum Target {
    /// At the end of the file (`O_APPEND`): a file created for the chunk.
    Append,
    /// At this offset: a reused file, whose data ends before the file does.
    At(u64),
}

/// Step 1 for one output at a time: what the writer lends it, and where it notes what it
/// changed.
pub(super) struct Files<'a> {
    pub(super) fs: &'a Fs,
    pub(super) pool: &'a mut Pool,
    pub(super) frames: &'a mut Vec<u8>,
    /// What was changed, before changing it, for `undo_written`.
    pub(super) written: &'a mut Written,
    /// New ends of reused chunks, recorded in the pool once the whole step succeeded.
    pub(super) ends: &'a mut Vec<(Arc<Path>, ChunkId, u64)>,
}

impl Files<'_> {
    /// Creates (or takes from the pool) and appends to the chunk files of one output, then
    /// fdatasyncs each of them.
    pub(super) fn write(&mut self, out: &OutputGroup) -> Result<(), StoreError> {
        let touched: BTreeSet<ChunkId> = out
            .created
            .keys()
            .chain(out.appended.keys())
            .copied()
            .collect();
        for chunk in touched {
            let path: PathBuf = chunk_file(&out.dir, chunk);
            let created = out.created.get(&chunk);
            let (mut file, target) = match created {
                Some(_) => self.create(&out.dir, &path)?,
                None => self.open(&out.dir, chunk, &path)?,
            };
            // A reused file's header and frames name the chunk (chunk file format 3 and 4).
            let reused = matches!(target, Target::At(_));
            self.frames.clear();
            match created {
                Some(header) if reused => self.frames.extend(codec::bound_header(header)),
                Some(header) => self.frames.extend_from_slice(header),
                None => {}
            }
            if let Some(records) = out.appended.get(&chunk) {
                if reused {
                    codec::encode_bound_frames(records, chunk, self.frames);
                } else {
                    codec::encode_frames(records, self.frames);
                }
            }
            match target {
                Target::Append => self.fs.write_all(&mut file, &path, self.frames),
                Target::At(at) => self.fs.write_all_at(&file, &path, self.frames, at),
            }
            .map_err(|e| io_write("write", &path, e))?;
            // Never a lack of room: a failed fdatasync poisons the store (the kernel may have
            // dropped the dirty pages; retrying and succeeding would prove nothing).
            self.fs
                .sync_data(&file, &path)
                .map_err(|e| io_error("fdatasync", &path, e))?;
            if let Target::At(at) = target {
                let end = at + self.frames.len() as u64;
                self.ends.push((Arc::clone(&out.dir), chunk, end));
            }
        }
        Ok(())
    }

    /// The file of a new chunk: a free file of the pool renamed to its name, overwritten from
    /// the start, or else a new file.
    fn create(&mut self, dir: &Path, path: &Path) -> Result<(File, Target), StoreError> {
        if let Some(free) = self.pool.take(dir) {
            match self.fs.rename(&free, path) {
                Ok(()) => {
                    self.written.push((path.to_owned(), None));
                    let file = self
                        .fs
                        .open(path, OpenMode::Write)
                        .map_err(|e| io_write("open", path, e))?;
                    self.pool.count_created(true);
                    return Ok((file, Target::At(0)));
                }
                // Gone (deleted by hand): a new file instead.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_write("rename", &free, e)),
            }
        }
        let file = self
            .fs
            .open(path, OpenMode::CreateNew)
            .map_err(|e| io_write("create", path, e))?;
        self.written.push((path.to_owned(), None));
        self.pool.count_created(false);
        Ok((file, Target::Append))
    }

    /// The file of a chunk appended to: at its data's end if it is a reused file, else at the
    /// end of the file.
    fn open(
        &mut self,
        dir: &Arc<Path>,
        chunk: ChunkId,
        path: &Path,
    ) -> Result<(File, Target), StoreError> {
        if let Some(end) = self.pool.end(dir, chunk) {
            let file = self
                .fs
                .open(path, OpenMode::Write)
                .map_err(|e| io_write("open", path, e))?;
            self.written.push((path.to_owned(), Some(end)));
            return Ok((file, Target::At(end)));
        }
        let file = self
            .fs
            .open(path, OpenMode::Append)
            .map_err(|e| io_write("open", path, e))?;
        let len = file
            .metadata()
            .map_err(|e| io_error("stat", path, e))?
            .len();
        self.written.push((path.to_owned(), Some(len)));
        Ok((file, Target::Append))
    }
}
