//! Startup recovery of one output, and the quarantine of chunks that cannot be read.
//!
//! Recovery reads every chunk's metadata (one small value each) and the files of staged chunks
//! only (those without metadata: at most a few per output, each bounded by
//! `chunk_limit_size`), never the data of closed chunks, so a backlog of many gigabytes starts in the time it takes to read
//! its chunk list. The data of closed chunks is verified when a chunk is first taken for
//! delivery ([`super::queue`]); a chunk that fails then is quarantined the same way as one
//! whose metadata fails here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;

use sled::Tree;

use super::codec::{
    self, chunk_data_prefix, meta_key, ChunkMeta, CodecError, DataStorage, FileEnd, StoredState,
};
use super::quarantine;
use super::store::{
    chunk_file, chunk_files, max_chunk_id, purged_file, purged_files, Store, StoreError,
};
use super::writer::Op;
use crate::buffer::ChunkId;
use crate::fsutil::{Filesystem, OpenMode};

/// What recovery found for an output.
#[derive(Debug, Default)]
pub(crate) struct Recovered {
    /// Readable chunks, oldest first, every one queued (staged chunks are closed: their
    /// appender is gone).
    pub chunks: Vec<(ChunkId, ChunkMeta)>,
    /// First id free for new chunks.
    pub next_id: u64,
    /// Chunks moved to quarantine.
    pub quarantined: u64,
    /// Corrupt frames in the middle of staged chunks' files, moved to quarantine (the rest of
    /// their chunks kept).
    pub corrupt_frames: u64,
    /// Unfinished ends of staged chunks cut without a quarantine copy, for lack of room.
    pub tails_cut_without_copy: u64,
}

/// Loads the chunk list of output `output`: quarantines chunks whose metadata or file header
/// is unreadable, brings back staged chunks (files without metadata) counted up to the last
/// complete record of their file, and forgets queued chunks whose file is gone (their purge
/// was cut short).
pub(crate) fn recover(
    store: &Store,
    tree: &Tree,
    dir: &Arc<Path>,
    output: &str,
) -> Result<Recovered, StoreError> {
    let mut rec = Recovered::default();
    let (mut readable, bad) = read_metadata(tree)?;
    // Chunks that could not be quarantined for lack of room: left as they are on disk, not
    // loaded, tried again at the next start.
    let kept = quarantine_unreadable(store, tree, dir, output, bad, &mut rec)?;
    let mut purges_completed = 0u64;
    let files = chunk_files(dir)?;
    let markers = purged_files(dir)?;
    let ids: BTreeSet<ChunkId> = readable
        .keys()
        .chain(files.iter())
        .copied()
        .filter(|id| !kept.contains(id))
        .collect();
    for id in ids {
        let has_file = files.binary_search(&id).is_ok();
        let meta = match readable.remove(&id) {
            // The first release rewrote the metadata with every append: its counts are current.
            Some(m) if matches!(m.storage, DataStorage::SledValues { .. }) => Some(m),
            Some(m) if m.state == StoredState::Queued => {
                if has_file {
                    Some(m)
                } else if markers.binary_search(&id).is_ok() {
                    // A purge renames the file to its marker (durably) before the metadata
                    // goes.
                    store.submit_wait(tree, dir, vec![Op::Purge { chunk: id }])?;
                    purges_completed += 1;
                    None
                } else {
                    missing_file(store, tree, dir, output, id, &m)?;
                    rec.quarantined += 1;
                    None
                }
            }
            // A staged chunk: its file is the truth.
            _ if has_file => recover_staged(store, tree, dir, output, id, &mut rec)?,
            Some(_) => {
                store.submit_wait(tree, dir, vec![Op::Purge { chunk: id }])?;
                None
            }
            None => None,
        };
        if let Some(mut meta) = meta {
            meta.state = StoredState::Queued;
            rec.chunks.push((id, meta));
        }
    }
    remove_purge_markers(store, dir, &markers)?;
    if purges_completed > 0 {
        tracing::info!(
            output,
            chunks = purges_completed,
            "buffer: finished purges of delivered chunks that a stop cut short"
        );
    }
    rec.next_id = max_chunk_id(tree, dir)?.map_or(1, |m| m.0.saturating_add(1));
    Ok(rec)
}

/// Keys of chunk metadata that cannot be read, with why.
type Unreadable = Vec<(Vec<u8>, CodecError)>;

/// Reads every chunk's metadata: the readable ones by chunk, and the keys of those that are not,
/// with why.
fn read_metadata(tree: &Tree) -> Result<(BTreeMap<ChunkId, ChunkMeta>, Unreadable), StoreError> {
    let mut readable = BTreeMap::new();
    let mut bad = Vec::new();
    for kv in tree.scan_prefix([codec::META_PREFIX]) {
        let (k, v) = kv?;
        let decoded = codec::chunk_of_key(&k).and_then(|id| Ok((id, codec::decode_meta(&v)?)));
        match decoded {
            Ok((id, meta)) => {
                readable.insert(id, meta);
            }
            Err(e) => bad.push((k.to_vec(), e)),
        }
    }
    Ok((readable, bad))
}

/// Quarantines the chunks whose metadata is unreadable (and malformed keys). Returns the
/// chunks left as they are because quarantine found no room.
fn quarantine_unreadable(
    store: &Store,
    tree: &Tree,
    dir: &Arc<Path>,
    output: &str,
    bad: Unreadable,
    rec: &mut Recovered,
) -> Result<BTreeSet<ChunkId>, StoreError> {
    let mut kept = BTreeSet::new();
    for (key, err) in bad {
        let reason = format!("unreadable chunk metadata: {err}");
        match codec::chunk_of_key(&key) {
            Ok(id) => {
                if !quarantine_or_keep(store, tree, dir, output, id, &reason)? {
                    kept.insert(id);
                    continue;
                }
            }
            Err(_) => {
                let value = tree.get(&key)?.map(|v| v.to_vec()).unwrap_or_default();
                quarantine::write(
                    store.fs(),
                    &store.quarantine_dir(),
                    output,
                    ChunkId(0),
                    &format!("malformed key: {err}"),
                    &[(key.clone(), value)],
                    None,
                )?;
                tracing::error!(output, "buffer: malformed key quarantined");
                store.submit_wait(tree, dir, vec![Op::RemoveKey(key)])?;
            }
        }
        rec.quarantined += 1;
    }
    Ok(kept)
}

/// A queued chunk whose file is gone without a purge marker: its undelivered records are lost.
/// Said loudly, and its metadata quarantined.
fn missing_file(
    store: &Store,
    tree: &Tree,
    dir: &Arc<Path>,
    output: &str,
    id: ChunkId,
    m: &ChunkMeta,
) -> Result<(), StoreError> {
    let undelivered = m.records.saturating_sub(m.delivered.count() as u64);
    tracing::warn!(output, chunk = %id, undelivered_records = undelivered,
        "buffer: the file of an undelivered chunk is missing (deleted outside the relay, or lost by the file system)");
    let reason = format!(
        "the chunk file is missing although the chunk was not delivered \
         ({undelivered} undelivered records are lost); deleted outside the \
         relay or lost by the file system"
    );
    quarantine_chunk(store, tree, dir, output, id, &reason)?;
    Ok(())
}

/// Deletes the purge markers once recovery is done with them (the metadata of their chunks is
/// durably gone), and syncs the directory.
fn remove_purge_markers(store: &Store, dir: &Path, markers: &[ChunkId]) -> Result<(), StoreError> {
    // Every purge marker is finished with now: the metadata of its chunk is durably gone.
    if !markers.is_empty() {
        let fs = store.fs();
        for id in markers {
            let path = purged_file(dir, *id);
            match fs.remove_file(&path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io(format!("delete {}", path.display()), e)),
            }
        }
        fs.sync_dir(dir)
            .map_err(|e| StoreError::io(format!("fsync {}", dir.display()), e))?;
    }
    Ok(())
}

/// Brings back a staged chunk from its file alone: counts its complete records, cuts an
/// unfinished end, and writes its metadata as queued. Returns `None` if it holds no record
/// (then it is deleted) or cannot be read (then it is quarantined).
fn recover_staged(
    store: &Store,
    tree: &Tree,
    dir: &Arc<Path>,
    output: &str,
    id: ChunkId,
    rec: &mut Recovered,
) -> Result<Option<ChunkMeta>, StoreError> {
    let path = chunk_file(dir, id);
    let bytes = store
        .fs()
        .read(&path)
        .map_err(|e| StoreError::io(format!("read {}", path.display()), e))?;
    let scan = match codec::scan_chunk_file(&bytes, id, FileEnd::MayBeTorn) {
        Ok(s) => s,
        // Shorter than a header: the creation of a chunk whose first append was never
        // acknowledged.
        Err(codec::CodecError::Truncated(_)) => {
            store.submit_wait(tree, dir, vec![Op::Purge { chunk: id }])?;
            return Ok(None);
        }
        // A file taken from the pool of purged chunks' files (renamed to this chunk's name)
        // whose first write never reached the disk: it still holds the older chunk it was,
        // whose metadata is durably gone. Nothing of this chunk was acknowledged.
        Err(codec::CodecError::OtherChunk { found, .. })
            if found < id && tree.get(meta_key(found))?.is_none() =>
        {
            tracing::info!(output, chunk = %id, previous = %found,
                "buffer: a reused chunk file still holds its previous chunk (the new chunk's first write was cut short, never acknowledged); removed");
            store.submit_wait(tree, dir, vec![Op::Purge { chunk: id }])?;
            return Ok(None);
        }
        Err(e) => {
            let reason = format!("unreadable chunk file: {e}");
            if quarantine_or_keep(store, tree, dir, output, id, &reason)? {
                rec.quarantined += 1;
            }
            return Ok(None);
        }
    };
    if !scan.gaps.is_empty() {
        match quarantine_gaps(store, output, id, &bytes, &scan.gaps) {
            Ok(()) => {
                rec.corrupt_frames += scan
                    .gaps
                    .iter()
                    .map(|g| u64::from(g.bad_frames))
                    .sum::<u64>()
            }
            Err(e) if e.io_error().is_some_and(super::space::is_no_room) => {
                tracing::error!(output, chunk = %id, error = %e,
                    "buffer: no room to quarantine the corrupt frames of a staged chunk; left on disk as it is, not loaded, tried again at the next start");
                return Ok(None);
            }
            Err(e) => return Err(e),
        }
    }
    if let Some(why) = &scan.tail {
        let tail = bytes
            .get(scan.valid_len as usize..scan.data_end as usize)
            .unwrap_or_default();
        if !cut_tail(store, &path, tail, scan.valid_len, output, id, why)? {
            rec.tails_cut_without_copy += 1;
        }
    }
    if scan.records == 0 {
        store.submit_wait(tree, dir, vec![Op::Purge { chunk: id }])?;
        return Ok(None);
    }
    sync_adopted(store, dir, &path)?;
    let meta = scan.meta(StoredState::Queued);
    let put = Op::PutMeta {
        chunk: id,
        meta: codec::encode_meta(&meta),
    };
    store.submit_wait(tree, dir, vec![put])?;
    Ok(Some(meta))
}

/// Makes an adopted staged chunk's file and its directory entry durable before its metadata
/// is written (defect 1 of issue 15). What recovery read came through the page cache: the last
/// group may never have been synced (the relay was killed between its `write` and its
/// `fdatasync`, or the `fdatasync` failed). Metadata made durable for bytes that are not would,
/// after a power loss, count records the file no longer has, and the whole chunk would go to
/// quarantine. If the sync fails the buffer does not open: the relay exits with this error
/// instead of building on bytes that may not be on disk.
fn sync_adopted(store: &Store, dir: &Path, path: &Path) -> Result<(), StoreError> {
    let fs = store.fs();
    let fail = |what: &str, p: &Path, e| {
        StoreError::io(
            format!(
                "{what} {} (a staged chunk adopted at startup; check the disk)",
                p.display()
            ),
            e,
        )
    };
    let file = fs
        .open(path, OpenMode::Read)
        .map_err(|e| fail("open", path, e))?;
    fs.sync_data(&file, path)
        .map_err(|e| fail("fdatasync", path, e))?;
    fs.sync_dir(dir).map_err(|e| fail("fsync", dir, e))
}

/// Writes the corrupt frames (with the bytes of records they cut) of a staged chunk's file to
/// quarantine, and logs each as corruption. The frames after them are kept: their records are
/// counted in the chunk's metadata, the lost ones are not (a staged chunk was never delivered,
/// so no delivered-record index depends on them). The frames stay in the file, where a later
/// read finds them again and keeps the same records.
fn quarantine_gaps(
    store: &Store,
    output: &str,
    id: ChunkId,
    bytes: &[u8],
    gaps: &[codec::Gap],
) -> Result<(), StoreError> {
    let entries: Vec<(Vec<u8>, Vec<u8>)> = gaps
        .iter()
        .map(|g| {
            let key = format!("frames@{}-{}", g.start, g.end).into_bytes();
            (key, bytes[g.start as usize..g.end as usize].to_vec())
        })
        .collect();
    let frames: u32 = gaps.iter().map(|g| g.bad_frames).sum();
    let reason = format!(
        "{frames} corrupt frame(s) in the middle of a staged chunk's file (first: {}); the \
         records in them are lost, the frames after them are kept",
        gaps[0].error
    );
    let len: usize = entries.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    store.take_quarantine_room(len as u64)?;
    let path = quarantine::write(
        store.fs(),
        &store.quarantine_dir(),
        output,
        id,
        &reason,
        &entries,
        None,
    )?;
    for g in gaps {
        tracing::error!(output, chunk = %id, file_bytes = ?(g.start..g.end), bad_frames = g.bad_frames,
            records_before = g.records_before, error = %g.error, quarantined = %path.display(),
            "buffer: corrupt frames in a staged chunk's file; moved to quarantine with their records, the rest of the chunk is kept");
    }
    Ok(())
}

/// Cuts a staged chunk's file after its last complete record. The bytes after it, `tail` (up to
/// the end of the chunk's data: in a reused file, the previous chunk's bytes after that are not
/// copied), are the append that was being written when the relay stopped (never acknowledged:
/// an append is acknowledged only after its fdatasync), unless the disk corrupted them; either
/// way they are kept in quarantine, not silently dropped. Returns whether they were (false: no
/// room, described in the log instead).
fn cut_tail(
    store: &Store,
    path: &Path,
    tail: &[u8],
    valid_len: u64,
    output: &str,
    id: ChunkId,
    why: &codec::CodecError,
) -> Result<bool, StoreError> {
    let reason =
        format!("incomplete end of a staged chunk's file ({why}); the chunk itself is kept");
    let kept = store
        .take_quarantine_room(tail.len() as u64)
        .and_then(|()| {
            quarantine::write(
                store.fs(),
                &store.quarantine_dir(),
                output,
                id,
                &reason,
                &[(b"tail".to_vec(), tail.to_vec())],
                None,
            )
        });
    // On a full volume (or a full quarantine) the copy cannot be made, and startup must not fail for it (nothing
    // could drain): the tail is an append that was never acknowledged, so it is cut anyway and
    // described in the log instead.
    let kept = match kept {
        Ok(path) => Some(path),
        Err(e) if e.io_error().is_some_and(super::space::is_no_room) => {
            let start: String = tail.iter().take(32).map(|b| format!("{b:02x}")).collect();
            tracing::warn!(output, chunk = %id, cut_bytes = tail.len(),
                crc32 = crc32fast::hash(tail), first_bytes_hex = %start, error = %e,
                "buffer: no room to copy the unfinished end of a staged chunk to quarantine; cutting it anyway (it was never acknowledged)");
            None
        }
        Err(e) => return Err(e),
    };
    let io = |e: std::io::Error| StoreError::io(format!("truncate {}", path.display()), e);
    let fs = store.fs();
    let file = fs.open(path, OpenMode::Write).map_err(io)?;
    fs.set_len(&file, path, valid_len).map_err(io)?;
    fs.sync_all(&file, path).map_err(io)?;
    if let Some(kept) = &kept {
        tracing::warn!(output, chunk = %id, cut_bytes = tail.len(), reason = %why, file = %kept.display(),
            "buffer: cut the unfinished end of a staged chunk (an unacknowledged append cut short by a crash)");
    }
    Ok(kept.is_some())
}

/// [`quarantine_chunk`] at startup: on a full volume the chunk is left on disk as it is (not
/// loaded, tried again at the next start) instead of failing the start. Returns whether it was
/// quarantined.
fn quarantine_or_keep(
    store: &Store,
    tree: &Tree,
    dir: &Arc<Path>,
    output: &str,
    id: ChunkId,
    reason: &str,
) -> Result<bool, StoreError> {
    match quarantine_chunk(store, tree, dir, output, id, reason) {
        Ok(()) => Ok(true),
        Err(e) if e.io_error().is_some_and(super::space::is_no_room) => {
            tracing::error!(output, chunk = %id, reason, error = %e,
                "buffer: no room to quarantine an unreadable chunk; left on disk as it is, not loaded, tried again at the next start");
            Ok(false)
        }
        Err(e) => Err(e),
    }
}

/// Copies everything stored for chunk `id` (metadata, sled data values, its file) to the
/// quarantine directory (fsynced), then purges the chunk durably. Logs an error naming the
/// file.
pub(crate) fn quarantine_chunk(
    store: &Store,
    tree: &Tree,
    dir: &Arc<Path>,
    output: &str,
    id: ChunkId,
    reason: &str,
) -> Result<(), StoreError> {
    let mut entries = Vec::new();
    if let Some(meta) = tree.get(meta_key(id))? {
        entries.push((meta_key(id).to_vec(), meta.to_vec()));
    }
    for kv in tree.scan_prefix(chunk_data_prefix(id)) {
        let (k, v) = kv?;
        entries.push((k.to_vec(), v.to_vec()));
    }
    let file = chunk_file(dir, id);
    let file_len = std::fs::metadata(&file).map_or(0, |m| m.len());
    let file = file.is_file().then_some(file.as_path());
    let entries_len: usize = entries.iter().map(|(k, v)| k.len() + v.len() + 8).sum();
    store.take_quarantine_room(entries_len as u64 + file_len)?;
    let path = quarantine::write(
        store.fs(),
        &store.quarantine_dir(),
        output,
        id,
        reason,
        &entries,
        file,
    )?;
    tracing::error!(output, chunk = %id, reason, file = %path.display(),
        "buffer: chunk cannot be read; moved to quarantine (its records are not delivered)");
    store.submit_wait(tree, dir, vec![Op::Purge { chunk: id }])
}
