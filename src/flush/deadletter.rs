//! The dead-letter directory (`data_dir/dead-letter/OUTPUT/`): records that could not be
//! delivered within the retry limits, or can never be delivered (e.g. too large), are kept
//! here instead of being dropped. `firehose-relay dead-letter list|replay` inspects them and
//! puts them back into the queue ([`DeadLetter::replay`]).
//!
//! `OUTPUT` is the output name as one path component ([`path_component`]: bytes other than
//! `[A-Za-z0-9_-]` become `%XX`), so outputs `a.b` and `a_b` never share a directory. Releases
//! before this encoding wrote `_` for those bytes; such directories are still read, because
//! [`DeadLetter::list`] reads every subdirectory and takes the output from each entry's
//! metadata, not from the directory name.
//!
//! Each entry is two files with the same stem `UNIXMS-SEQ`:
//! * `.ndjson`: the records' bytes as the sink would have sent them (readable with `less`);
//! * `.json`: metadata ([`EntryMeta`]), including each record's end offset so records without a
//!   trailing newline can be split apart again on replay.
//!
//! Both are written atomically (temporary file, fsync, rename, directory fsync), data first: an
//! entry whose metadata file exists is complete.
//!
//! The directory shares the buffer's volume, so it is bounded: `storage.dead_letter_limit_size`
//! (default 1 GiB). A write that would pass it is refused (`EDQUOT`), counted
//! (`firehose_relay_dead_letter_refused_writes`), logged, and nothing is dropped: a chunk that
//! would be dead-lettered stays in the buffer and is retried on its schedule; records refused at
//! intake leave their message unacknowledged. Its size is in `/status` and the metrics.
//!
//! A *truncated* entry (`"truncated": true`) holds descriptions of records too large to keep
//! (tag, time, size and the first bytes, one JSON object per line) instead of the records:
//! replay skips it, since what it holds is not the data.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::buffer::file::space::{DirBudget, DirUsage, DEFAULT_DIR_LIMIT};
use crate::buffer::file::store::QUARANTINE_DIR;
use crate::buffer::file::{Store, StoreError};
use crate::buffer::{now_ms, ChunkId, ChunkKey, Records};
use crate::fsutil::{path_component, write_atomic};

/// Metadata of one dead-letter entry.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EntryMeta {
    /// Output the records were meant for.
    pub output: String,
    /// Why they were dead-lettered.
    pub reason: String,
    /// Tag of the records, when known (records rejected at intake, chunks of an output with
    /// chunk key `tag`).
    pub tag: Option<String>,
    /// The stream the records were meant for, when the output resolves it per chunk (a stream
    /// name with placeholders).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stream: Option<String>,
    /// Start of the records' time slot (Unix seconds), when their output keeps chunks apart by
    /// time (chunk key `time`): with the tag, the key `dead-letter replay` gives them back, so
    /// the stream name resolves as it did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timekey: Option<i64>,
    /// Failed delivery attempts.
    pub attempts: u32,
    /// When the chunk was created (Unix ms), if it came from a chunk.
    pub created_ms: Option<u64>,
    /// When it was dead-lettered (Unix ms).
    pub dead_lettered_ms: u64,
    /// Number of records.
    pub records: usize,
    /// End offset of each record in the `.ndjson` file.
    pub record_ends: Vec<u32>,
    /// The lines describe records too large to keep, they are not the records.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

/// One entry found on disk.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Path of the `.json` metadata file.
    pub meta_path: PathBuf,
    /// Path of the `.ndjson` data file.
    pub data_path: PathBuf,
    /// The metadata.
    pub meta: EntryMeta,
}

/// Why a dead-letter entry cannot be read back. The cause is kept, so an I/O error (with its
/// kind and OS code) is told apart from a damaged file by code, not by message text.
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// A file of the entry cannot be read.
    #[error("{}: {source}", .path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// The metadata file is not valid metadata.
    #[error("{}: {source}", .path.display())]
    Meta {
        /// The metadata file.
        path: PathBuf,
        /// What the JSON parser found.
        #[source]
        source: serde_json::Error,
    },
    /// The record offsets in the metadata do not fit the data file.
    #[error("{}: record offsets do not match the data file", .0.display())]
    Offsets(PathBuf),
    /// A truncated entry: descriptions of records too large to keep, not the records.
    #[error("{}: it describes records too large to keep, not the records", .0.display())]
    Truncated(PathBuf),
}

/// Why an entry could not be replayed. Unless it says otherwise, the entry is left in place.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The entry's files cannot be read back.
    #[error("{0}; left in place")]
    Unreadable(#[from] EntryError),
    /// The buffer refused the records.
    #[error("cannot replay {}: {source}", .path.display())]
    Store {
        /// The entry's metadata file.
        path: PathBuf,
        /// Why the buffer refused.
        #[source]
        source: StoreError,
    },
    /// The records are in the queue but the entry could not be deleted: replaying it again
    /// would send its records twice.
    #[error("replayed into chunk {chunk} but cannot remove {}: {source} (remove it by hand, or it will be replayed twice)", .path.display())]
    Remove {
        /// The chunk the records went to.
        chunk: ChunkId,
        /// The entry's metadata file.
        path: PathBuf,
        /// Why it could not be deleted.
        #[source]
        source: std::io::Error,
    },
}

/// Writes and reads the dead-letter directory.
#[derive(Debug)]
pub struct DeadLetter {
    root: PathBuf,
    seq: AtomicU64,
    /// `storage.dead_letter_limit_size`: a write past it is refused (`EDQUOT`).
    budget: DirBudget,
    /// The quarantine next to it (`storage.quarantine_limit_size`), measured for `/status`
    /// and the metrics, and handed to the buffer, which enforces it.
    quarantine: Arc<DirBudget>,
}

/// What is needed to write an entry.
#[derive(Debug)]
pub struct NewEntry<'a> {
    /// Output name.
    pub output: &'a str,
    /// Why.
    pub reason: &'a str,
    /// Tag, if known.
    pub tag: Option<&'a str>,
    /// The resolved stream, when the output resolves it per chunk.
    pub stream: Option<&'a str>,
    /// Failed attempts.
    pub attempts: u32,
    /// Chunk creation time, if any.
    pub created_ms: Option<u64>,
    /// The records.
    pub records: &'a Records,
}

impl DeadLetter {
    /// The dead-letter directory under `data_dir`, with the default limits.
    pub fn new(data_dir: &Path) -> Self {
        Self::with_limits(data_dir, DEFAULT_DIR_LIMIT, DEFAULT_DIR_LIMIT)
    }

    /// The dead-letter directory under `data_dir`, holding at most `limit` bytes; the
    /// quarantine's limit is `quarantine_limit` (for its usage report).
    pub fn with_limits(data_dir: &Path, limit: u64, quarantine_limit: u64) -> Self {
        let root = data_dir.join("dead-letter");
        DeadLetter {
            budget: DirBudget::new(root.clone(), limit),
            quarantine: Arc::new(DirBudget::new(
                data_dir.join(QUARANTINE_DIR),
                quarantine_limit,
            )),
            root,
            seq: AtomicU64::new(0),
        }
    }

    /// Size of the dead-letter directory against its limit, and writes refused at the limit.
    pub fn usage(&self) -> DirUsage {
        self.budget.usage()
    }

    /// Size of the quarantine directory against its limit, and quarantines refused at it.
    pub fn quarantine_usage(&self) -> DirUsage {
        self.quarantine.usage()
    }

    /// The quarantine's budget, for the buffer to enforce ([`Store::set_quarantine_budget`]).
    pub fn quarantine_budget(&self) -> Arc<DirBudget> {
        Arc::clone(&self.quarantine)
    }

    /// The directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Writes an entry durably; returns the metadata path.
    pub fn write(&self, entry: NewEntry<'_>) -> std::io::Result<PathBuf> {
        self.write_entry(entry, None, false)
    }

    /// Like [`DeadLetter::write`], for records of the time slot starting at `timekey` (Unix
    /// seconds) of an output with chunk key `time`.
    pub fn write_in_slot(
        &self,
        entry: NewEntry<'_>,
        timekey: Option<i64>,
    ) -> std::io::Result<PathBuf> {
        self.write_entry(entry, timekey, false)
    }

    /// Writes an entry of descriptions of records too large to keep (marked `truncated`, which
    /// replay skips); returns the metadata path.
    pub fn write_descriptions(&self, entry: NewEntry<'_>) -> std::io::Result<PathBuf> {
        self.write_entry(entry, None, true)
    }

    fn write_entry(
        &self,
        entry: NewEntry<'_>,
        timekey: Option<i64>,
        truncated: bool,
    ) -> std::io::Result<PathBuf> {
        let dir = self.root.join(path_component(entry.output));
        let now = now_ms();
        let seq = self.seq.fetch_add(1, Ordering::Relaxed);
        let stem = format!("{now}-{}-{seq}", std::process::id());
        let meta = EntryMeta {
            output: entry.output.to_owned(),
            reason: entry.reason.to_owned(),
            tag: entry.tag.map(str::to_owned),
            stream: entry.stream.map(str::to_owned),
            timekey,
            attempts: entry.attempts,
            created_ms: entry.created_ms,
            dead_lettered_ms: now,
            records: entry.records.len(),
            record_ends: entry.records.ends().to_vec(),
            truncated,
        };
        let meta_json = serde_json::to_vec_pretty(&meta).map_err(std::io::Error::other)?;
        let bytes = (entry.records.as_bytes().len() + meta_json.len()) as u64;
        if let Err(e) = self.budget.take(bytes, "storage.dead_letter_limit_size") {
            tracing::error!(output = entry.output, error = %e,
                "dead-letter directory at its limit: records are kept where they are (in the buffer, or not acknowledged)");
            return Err(e);
        }
        write_atomic(
            &dir.join(format!("{stem}.ndjson")),
            entry.records.as_bytes(),
        )?;
        let meta_path = dir.join(format!("{stem}.json"));
        write_atomic(&meta_path, &meta_json)?;
        Ok(meta_path)
    }

    /// Writes `rejected` (reason, record) as one entry per reason, all of chunk key `key` (its
    /// tag and time slot, recorded for replay) going to `stream` (when resolved per chunk);
    /// returns the number of records written.
    pub fn write_by_reason<'a>(
        &self,
        output: &str,
        (key, stream): (&ChunkKey, Option<&str>),
        created_ms: Option<u64>,
        rejected: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> std::io::Result<u64> {
        self.write_grouped(output, (key, stream), created_ms, false, rejected)
    }

    /// Like [`DeadLetter::write_by_reason`], for descriptions of records too large to keep.
    pub fn write_descriptions_by_reason<'a>(
        &self,
        output: &str,
        (key, stream): (&ChunkKey, Option<&str>),
        described: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> std::io::Result<u64> {
        self.write_grouped(output, (key, stream), None, true, described)
    }

    fn write_grouped<'a>(
        &self,
        output: &str,
        (key, stream): (&ChunkKey, Option<&str>),
        created_ms: Option<u64>,
        truncated: bool,
        rejected: impl IntoIterator<Item = (&'a str, &'a [u8])>,
    ) -> std::io::Result<u64> {
        let mut groups: Vec<(&str, Records)> = Vec::new();
        for (reason, record) in rejected {
            let records = match groups.iter().position(|(r, _)| *r == reason) {
                Some(i) => &mut groups[i].1,
                None => {
                    groups.push((reason, Records::new()));
                    &mut groups.last_mut().expect("just pushed").1
                }
            };
            records.push(record).map_err(std::io::Error::other)?;
        }
        let mut count = 0;
        for (reason, records) in &groups {
            let entry = NewEntry {
                output,
                reason,
                tag: key.tag.as_deref(),
                stream,
                attempts: 0,
                created_ms,
                records,
            };
            self.write_entry(entry, key.timekey, truncated)?;
            count += records.len() as u64;
        }
        Ok(count)
    }

    /// Every complete entry, oldest first. Unreadable metadata is reported, not skipped.
    pub fn list(&self) -> std::io::Result<Vec<Result<Entry, EntryError>>> {
        let mut out = Vec::new();
        if !self.root.exists() {
            return Ok(out);
        }
        let mut paths = Vec::new();
        for dir in std::fs::read_dir(&self.root)? {
            let dir = dir?.path();
            if !dir.is_dir() {
                continue;
            }
            for f in std::fs::read_dir(&dir)? {
                let p = f?.path();
                if p.extension().is_some_and(|e| e == "json") {
                    paths.push(p);
                }
            }
        }
        paths.sort();
        for meta_path in paths {
            let data_path = meta_path.with_extension("ndjson");
            let parsed = std::fs::read(&meta_path)
                .map_err(|source| EntryError::Io {
                    path: meta_path.clone(),
                    source,
                })
                .and_then(|b| {
                    serde_json::from_slice::<EntryMeta>(&b).map_err(|source| EntryError::Meta {
                        path: meta_path.clone(),
                        source,
                    })
                });
            out.push(parsed.map(|meta| Entry {
                meta_path,
                data_path,
                meta,
            }));
        }
        Ok(out)
    }

    /// Reads an entry's records back.
    pub fn read_records(entry: &Entry) -> Result<Records, EntryError> {
        let data = std::fs::read(&entry.data_path).map_err(|source| EntryError::Io {
            path: entry.data_path.clone(),
            source,
        })?;
        Records::from_parts(data, entry.meta.record_ends.clone())
            .ok_or_else(|| EntryError::Offsets(entry.meta_path.clone()))
    }

    /// Moves `entry`'s records back into its output's queue in `store` (a stopped relay's):
    /// durably stored as a new queued chunk first, then the entry is deleted, so a crash in
    /// between sends the records twice but never loses them. Returns the new chunk and the
    /// number of records.
    pub fn replay(entry: &Entry, store: &Store) -> Result<(ChunkId, u64), ReplayError> {
        if entry.meta.truncated {
            return Err(EntryError::Truncated(entry.meta_path.clone()).into());
        }
        let records = Self::read_records(entry)?;
        let count = records.len() as u64;
        let created = entry.meta.created_ms.unwrap_or(entry.meta.dead_lettered_ms);
        // The records' tag and time slot, so that a stream name with placeholders resolves as
        // it did (an output without chunk keys ignores them).
        let key = ChunkKey {
            tag: entry.meta.tag.clone(),
            timekey: entry.meta.timekey,
        };
        let chunk = store
            .import_chunk(&entry.meta.output, records, created, &key)
            .map_err(|source| ReplayError::Store {
                path: entry.meta_path.clone(),
                source,
            })?;
        Self::remove(entry).map_err(|source| ReplayError::Remove {
            chunk,
            path: entry.meta_path.clone(),
            source,
        })?;
        Ok((chunk, count))
    }

    /// Removes an entry (after a successful replay).
    pub fn remove(entry: &Entry) -> std::io::Result<()> {
        std::fs::remove_file(&entry.meta_path)?;
        match std::fs::remove_file(&entry.data_path) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e),
            _ => Ok(()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_with_their_record_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path());
        let mut records = Records::new();
        records.push(b"no-newline-1").unwrap();
        records.push(b"no-newline-2").unwrap();
        dl.write(NewEntry {
            output: "fh",
            reason: "retry_timeout exceeded",
            tag: Some("app"),
            stream: None,
            attempts: 9,
            created_ms: Some(5),
            records: &records,
        })
        .unwrap();
        let list = dl.list().unwrap();
        assert_eq!(list.len(), 1);
        let entry = list[0].as_ref().unwrap();
        assert_eq!(entry.meta.reason, "retry_timeout exceeded");
        assert_eq!(DeadLetter::read_records(entry).unwrap(), records);
        DeadLetter::remove(entry).unwrap();
        assert!(dl.list().unwrap().is_empty());
    }

    /// Outputs whose names differ only in characters a file name cannot keep as they are
    /// (`a.b`, `a_b`, `a/b`) keep their dead letters apart.
    #[test]
    fn outputs_with_similar_names_get_separate_directories() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path());
        let mut records = Records::new();
        records.push(b"x").unwrap();
        let names = ["a.b", "a_b", "a/b", "a%2Eb"];
        let mut dirs = std::collections::BTreeSet::new();
        for output in names {
            let meta = dl
                .write(NewEntry {
                    output,
                    reason: "r",
                    tag: None,
                    stream: None,
                    attempts: 0,
                    created_ms: None,
                    records: &records,
                })
                .unwrap();
            assert_eq!(meta.parent().unwrap().parent().unwrap(), dl.root());
            dirs.insert(meta.parent().unwrap().to_owned());
        }
        assert_eq!(dirs.len(), names.len(), "{dirs:?}");
    }

    /// Entries written by a release that turned `.` into `_` in directory names are still
    /// listed, with the output their metadata names.
    #[test]
    fn entries_in_directories_named_by_older_releases_are_still_found() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path());
        let mut records = Records::new();
        records.push(b"x").unwrap();
        let meta = dl.write(entry("a.b", &records)).unwrap();
        let old_name = dl.root().join("a_b");
        std::fs::rename(meta.parent().unwrap(), &old_name).unwrap();
        let list = dl.list().unwrap();
        assert_eq!(list.len(), 1);
        let found = list[0].as_ref().unwrap();
        assert_eq!(found.meta.output, "a.b");
        assert_eq!(found.meta_path.parent().unwrap(), old_name);
    }

    fn entry<'a>(output: &'a str, records: &'a Records) -> NewEntry<'a> {
        NewEntry {
            output,
            reason: "retry_timeout exceeded",
            tag: None,
            stream: None,
            attempts: 3,
            created_ms: Some(42),
            records,
        }
    }

    #[test]
    fn replay_stores_the_records_durably_then_removes_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path());
        let mut records = Records::new();
        records.push(b"one\n").unwrap();
        records.push(b"two").unwrap();
        dl.write(entry("fh", &records)).unwrap();
        let listed = dl.list().unwrap().pop().unwrap().unwrap();
        {
            let store = Store::open(dir.path(), 1 << 20).unwrap();
            assert_eq!(
                DeadLetter::replay(&listed, &store).unwrap(),
                (ChunkId(1), 2)
            );
        }
        assert!(dl.list().unwrap().is_empty(), "the entry is gone");
        // A new process finds the records queued.
        let store = Store::open_existing(dir.path(), 1 << 20).unwrap();
        let back = crate::buffer::file::inspect::read_chunk(&store, "fh", ChunkId(1)).unwrap();
        assert_eq!(back, records);
    }

    #[test]
    fn an_entry_the_buffer_refuses_stays_in_place() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path());
        let mut records = Records::new();
        records.push(b"kept").unwrap();
        dl.write(entry("fh", &records)).unwrap();
        let listed = dl.list().unwrap().pop().unwrap().unwrap();
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        // The output's chunk directory cannot be created: a file is in its way.
        let chunks = dir.path().join("buffer").join("chunks");
        std::fs::write(chunks.join("fh"), b"in the way").unwrap();
        let err = DeadLetter::replay(&listed, &store).unwrap_err();
        assert!(matches!(err, ReplayError::Store { .. }), "{err}");
        assert_eq!(dl.list().unwrap().len(), 1, "the entry is kept");
        assert_eq!(
            DeadLetter::read_records(dl.list().unwrap()[0].as_ref().unwrap()).unwrap(),
            records
        );
    }

    #[test]
    fn unreadable_entries_keep_their_cause() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path());
        let mut records = Records::new();
        records.push(b"kept").unwrap();
        let good = dl.write(entry("fh", &records)).unwrap();
        let bad = dl.write(entry("fh", &records)).unwrap();
        std::fs::write(&bad, b"{not json").unwrap();
        let listed = dl.list().unwrap();
        assert!(
            matches!(&listed[1], Err(EntryError::Meta { path, .. }) if *path == bad),
            "{listed:?}"
        );
        // The data file is gone: an I/O error with its kind, and replay leaves the entry.
        let entry = listed[0].as_ref().unwrap();
        assert_eq!(entry.meta_path, good);
        std::fs::remove_file(&entry.data_path).unwrap();
        let err = DeadLetter::read_records(entry).unwrap_err();
        let EntryError::Io { source, .. } = &err else {
            panic!("{err:?}")
        };
        assert_eq!(source.kind(), std::io::ErrorKind::NotFound);
        let store = Store::open(dir.path(), 1 << 20).unwrap();
        let err = DeadLetter::replay(entry, &store).unwrap_err();
        assert!(
            matches!(err, ReplayError::Unreadable(EntryError::Io { .. })),
            "{err}"
        );
        assert!(err.to_string().ends_with("; left in place"), "{err}");
        assert!(good.exists());
    }
}
