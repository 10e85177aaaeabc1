//! Chunk files reused in place: a purged chunk's file becomes a new chunk's file, and the
//! previous chunk's bytes after the new chunk's data are never read as records, also after a
//! crash or a power loss.

use super::faults::open_fs;
use super::gaps::quarantined;
use super::*;
use crate::fsutil::faults::{Fault, FaultFs, FsOp};

/// Appends records one chunk at a time (7 records of 7 bytes per 50-byte chunk), delivers the
/// first chunk and waits until its file joined the pool.
async fn one_file_in_the_pool(b: &FileBuffer, s: &Store) {
    b.append(recs(0..14)).await.unwrap(); // chunks 1 and 2, closed
    let c = b.take(u64::MAX).await.unwrap().unwrap();
    assert_eq!(c.id, ChunkId(1));
    // A release asks for durable metadata: the purge's marker joins the pool after it.
    b.commit(c.id).await.unwrap();
    let c = b.take(u64::MAX).await.unwrap().unwrap();
    b.release(c.id, c.delivered.clone(), RetryState::default())
        .await
        .unwrap();
    assert_eq!(s.reuse_pool().files, 1);
}

/// [`one_file_in_the_pool`] in a store on a [`FaultFs`], for faults and the order of calls.
async fn one_file_in_the_pool_of_a_faulty_store(
) -> (tempfile::TempDir, FaultFs, Arc<Store>, FileBuffer) {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(50, 1 << 20, OverflowAction::Block);
    let (s, b) = open_fs(dir.path(), &p, &fs);
    one_file_in_the_pool(&b, &s).await;
    (dir, fs, s, b)
}

/// Chunk 3 in chunk 1's file: `a_new_chunk_in_a_reused_file_reads_back_exactly_its_records`
/// up to the appends, left staged. Returns the file's path and its length before.
async fn staged_in_a_reused_file(b: &FileBuffer, s: &Store) -> (std::path::PathBuf, u64) {
    one_file_in_the_pool(b, s).await;
    let d = s.chunk_dir("out").unwrap();
    let old_len = std::fs::metadata(purged_file(&d, ChunkId(1)))
        .unwrap()
        .len();
    b.append(recs(100..102)).await.unwrap();
    b.append(recs(102..103)).await.unwrap();
    (chunk_file(&d, ChunkId(3)), old_len)
}

#[tokio::test]
async fn a_new_chunk_in_a_reused_file_reads_back_exactly_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(50, 1 << 20, OverflowAction::Block);
    let (s, b) = open(dir.path(), &p);
    let (path, old_len) = staged_in_a_reused_file(&b, &s).await;
    let d = s.chunk_dir("out").unwrap();
    assert!(!purged_file(&d, ChunkId(1)).exists(), "taken from the pool");
    let f = std::fs::read(&path).unwrap();
    assert_eq!(f.len() as u64, old_len, "the file keeps its length");
    assert_eq!(
        &f[..4],
        b"FRC\x03",
        "a reused file's frames name their chunk"
    );
    let pool = s.reuse_pool();
    assert_eq!((pool.files, pool.reused_chunks), (0, 1));
    assert_eq!(drain(&b).await, [7, 8, 9, 10, 11, 12, 13, 100, 101, 102]);
}

/// A buffer stopped (as a crash would: nothing closed) while chunk 3, in chunk 1's reused
/// file, was staged: its directory, policy and chunk 3's file.
async fn stopped_with_a_staged_chunk_in_a_reused_file(
) -> (tempfile::TempDir, BufferPolicy, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(50, 1 << 20, OverflowAction::Block);
    let (s, b) = open(dir.path(), &p);
    let (path, _) = staged_in_a_reused_file(&b, &s).await;
    (dir, p, path)
}

/// After a crash, recovery adopts the staged chunk of a reused file: exactly its records, the
/// previous chunk's bytes after them neither delivered nor taken for a cut write.
#[tokio::test]
async fn the_previous_chunks_bytes_are_never_delivered_after_a_restart() {
    let (dir, p, path) = stopped_with_a_staged_chunk_in_a_reused_file().await;
    let before = std::fs::read(&path).unwrap();
    let (_s, b) = open(dir.path(), &p);
    let st = b.stats();
    assert_eq!(
        (
            st.quarantined_chunks,
            st.corrupt_frames,
            st.tails_cut_without_copy
        ),
        (0, 0, 0)
    );
    assert!(
        quarantined(dir.path()).is_empty(),
        "stale bytes are not a cut write"
    );
    assert_eq!(std::fs::read(&path).unwrap(), before, "nothing to cut");
    assert_eq!(drain(&b).await, [7, 8, 9, 10, 11, 12, 13, 100, 101, 102]);
}

/// A power loss takes back what a reused file's unsynced group overwrote (the previous chunk's
/// bytes come back there): the acknowledged records are all delivered, the unacknowledged
/// group and the stale bytes are not.
#[tokio::test]
async fn a_power_loss_in_a_reused_file_keeps_exactly_the_acknowledged_records() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(50, 1 << 20, OverflowAction::Block);
    {
        let (s, b) = open_fs(dir.path(), &p, &fs);
        staged_in_a_reused_file(&b, &s).await;
        fs.fail_once(FsOp::SyncData, ".chunk", Fault::Errno(libc::EIO));
        assert!(
            b.append(recs(103..106)).await.is_err(),
            "never acknowledged"
        );
    }
    fs.clear();
    assert!(!fs.power_loss().is_empty());
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    assert_eq!(b.stats().quarantined_chunks, 0);
    assert_eq!(drain(&b).await, [7, 8, 9, 10, 11, 12, 13, 100, 101, 102]);
}

/// A group of this chunk cut short in a reused file (its frame names the chunk but does not
/// check) is an unacknowledged write: cut and kept in quarantine, as in a new file. The stale
/// bytes after it are not copied.
#[tokio::test]
async fn a_cut_group_in_a_reused_file_is_quarantined_without_the_stale_bytes() {
    let (dir, p, path) = stopped_with_a_staged_chunk_in_a_reused_file().await;
    // The previous chunk's bytes run on past the torn frame.
    let mut whole = std::fs::read(&path).unwrap();
    whole.extend_from_slice(&[0xAB; 64]);
    let scan = codec::scan_chunk_file(&whole, ChunkId(3), codec::FileEnd::MayBeTorn).unwrap();
    assert!(scan.data_end < whole.len() as u64, "{scan:?}");
    let end = scan.valid_len as usize;
    // A frame of chunk 3 whose last bytes never reached the disk (they are stale).
    let mut group = Vec::new();
    codec::encode_bound_frames(&recs(103..105), ChunkId(3), &mut group);
    let torn = group.len() - 5;
    let mut f = whole.clone();
    f[end..end + torn].copy_from_slice(&group[..torn]);
    std::fs::write(&path, &f).unwrap();
    let (_s, b) = open(dir.path(), &p);
    let kept = quarantined(dir.path());
    assert_eq!(kept.len(), 1, "{kept:?}");
    assert_eq!(
        kept[0].1,
        f[end..end + group.len()].to_vec(),
        "the frame as its length says"
    );
    assert_eq!(
        std::fs::read(&path).unwrap().len(),
        end,
        "cut after the last record"
    );
    assert_eq!(drain(&b).await, [7, 8, 9, 10, 11, 12, 13, 100, 101, 102]);
}

/// Killed between taking a file from the pool (renaming it to the new chunk's name) and the
/// new chunk's first write: the file still holds the previous chunk, whose metadata is
/// durably gone. Nothing of the new chunk was acknowledged: recovery removes the file.
#[tokio::test]
async fn a_reused_file_whose_first_write_was_lost_is_removed_at_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(50, 1 << 20, OverflowAction::Block);
    let d;
    {
        let (s, b) = open(dir.path(), &p);
        one_file_in_the_pool(&b, &s).await;
        d = s.chunk_dir("out").unwrap();
    }
    std::fs::rename(purged_file(&d, ChunkId(1)), chunk_file(&d, ChunkId(9))).unwrap();
    let (_s, b) = open(dir.path(), &p);
    assert!(!chunk_file(&d, ChunkId(9)).exists());
    assert_eq!(b.stats().quarantined_chunks, 0);
    assert!(quarantined(dir.path()).is_empty());
    assert_eq!(drain(&b).await, (7..14).collect::<Vec<_>>());
}

/// A chunk file whose header names a chunk that still has metadata is not a lost first write
/// of a reused file: it goes to quarantine as before.
#[tokio::test]
async fn a_chunk_file_naming_a_live_chunk_is_still_quarantined() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(50, 1 << 20, OverflowAction::Block);
    let d;
    {
        let (s, b) = open(dir.path(), &p);
        b.append(recs(0..14)).await.unwrap(); // chunks 1 and 2
        d = s.chunk_dir("out").unwrap();
    }
    std::fs::copy(chunk_file(&d, ChunkId(1)), chunk_file(&d, ChunkId(9))).unwrap();
    let (_s, b) = open(dir.path(), &p);
    assert_eq!(b.stats().quarantined_chunks, 1);
    assert_eq!(drain(&b).await, (0..14).collect::<Vec<_>>());
}

/// A write that finds the volume full empties the pool: its files are room the volume needs
/// more than the next chunk's reuse.
#[tokio::test]
async fn a_full_volume_empties_the_pool() {
    let (_dir, fs, s, b) = one_file_in_the_pool_of_a_faulty_store().await;
    let d = s.chunk_dir("out").unwrap();
    fs.fail_once(FsOp::Write, ".chunk", Fault::ShortWrite(libc::ENOSPC));
    assert!(b.append(recs(100..101)).await.is_err());
    assert_eq!(s.reuse_pool().files, 0);
    assert!(!purged_file(&d, ChunkId(1)).exists());
    assert!(
        !chunk_file(&d, ChunkId(3)).exists(),
        "the refused chunk's file is removed"
    );
}

/// Taking a file from the pool is as durable as creating one before the first append is
/// acknowledged: renamed to the chunk's name, written, `fdatasync`ed, and the directory
/// (which holds the rename) fsynced.
#[tokio::test]
async fn a_taken_file_and_its_new_name_are_durable_before_the_first_ack() {
    use super::faults::call_at;
    let (_dir, fs, s, b) = one_file_in_the_pool_of_a_faulty_store().await;
    let d = s.chunk_dir("out").unwrap();
    let before = fs.calls().len();
    b.append(recs(100..102)).await.unwrap(); // chunk 3, in chunk 1's file
    let calls = &fs.calls()[before..];
    let path = chunk_file(&d, ChunkId(3));
    let renamed = call_at(calls, 0, FsOp::Rename, &path).expect("taken by a rename");
    let written = call_at(calls, renamed, FsOp::Write, &path).expect("written after");
    let synced = call_at(calls, written, FsOp::SyncData, &path).expect("fdatasync after");
    call_at(calls, synced, FsOp::SyncDir, &d).expect("directory fsynced after");
    assert_eq!(
        call_at(calls, 0, FsOp::Open, &path).map(|i| i > renamed),
        Some(true)
    );
    assert_eq!(s.reuse_pool().reused_chunks, 1);
}
