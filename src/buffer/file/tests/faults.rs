//! Storage faults injected through the file-system seam ([`FaultFs`]): failed `fdatasync`s,
//! I/O errors, short writes, and power losses (every file cut back to what was last synced).

use super::super::StoreError;
use std::path::PathBuf;

use super::*;
use crate::fsutil::faults::{Fault, FaultFs, FsOp};

/// Opens the store of `dir` on `fs` (see [`open`] for why it waits for sled's lock).
pub(super) fn try_open_fs(
    dir: &Path,
    p: &BufferPolicy,
    fs: &FaultFs,
) -> Result<(Arc<Store>, FileBuffer), StoreError> {
    let start = std::time::Instant::now();
    let store = loop {
        match Store::open_with(dir, 8 << 20, fs.clone()) {
            Ok(s) => break s,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && start.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    };
    let b = FileBuffer::open(Arc::clone(&store), p.clone(), Counter::default())?;
    Ok((store, b))
}

pub(super) fn open_fs(dir: &Path, p: &BufferPolicy, fs: &FaultFs) -> (Arc<Store>, FileBuffer) {
    try_open_fs(dir, p, fs).unwrap_or_else(|e| panic!("cannot open the store: {e}"))
}

/// Defect 1: a staged chunk whose last group was written but never synced (its fdatasync
/// failed, or the relay was killed before it) is adopted at restart. Its file must be synced
/// before its metadata is written; otherwise a power loss after the restart leaves metadata
/// counting records the file no longer has, and the whole chunk, acknowledged records
/// included, goes to quarantine.
#[tokio::test]
async fn recovery_syncs_an_adopted_file_before_its_metadata() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    {
        let (_s, b) = open_fs(dir.path(), &p, &fs);
        b.append(recs(0..5)).await.unwrap();
        fs.fail_once(FsOp::SyncData, ".chunk", Fault::Errno(libc::EIO));
        b.append(recs(5..10))
            .await
            .expect_err("an append whose fdatasync failed is not acknowledged");
    }
    let calls_before = fs.calls().len();
    {
        // A restart without a power loss: the unsynced group is still in the page cache.
        let (_s, b) = open_fs(dir.path(), &p, &fs);
        assert_eq!(b.stats().records, 10);
    }
    let calls = fs.calls()[calls_before..].to_vec();
    // A power loss now: what recovery adopted must have been synced.
    fs.power_loss();
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    let got = drain(&b).await;
    assert_eq!(b.stats().quarantined_chunks, 0);
    assert_eq!(
        got,
        (0..10).collect::<Vec<_>>(),
        "acknowledged records lost"
    );

    // Recovery synced the adopted file and its directory before the database sync that made
    // its metadata durable.
    let pos = |op: FsOp, what: &dyn Fn(&Path) -> bool| {
        calls.iter().position(|(o, p)| *o == op && what(p))
    };
    let file = pos(FsOp::SyncData, &|p| {
        p.extension().is_some_and(|e| e == "chunk")
    })
    .or_else(|| {
        pos(FsOp::SyncAll, &|p| {
            p.extension().is_some_and(|e| e == "chunk")
        })
    })
    .expect("the adopted chunk file was never synced");
    // The first database sync after recovery read the file is the one of its metadata.
    let read = pos(FsOp::Read, &|p| p.extension().is_some_and(|e| e == "chunk")).expect("read");
    let db = calls[read..]
        .iter()
        .position(|(o, p)| *o == FsOp::SyncData && p.ends_with("buffer/db"))
        .map(|i| i + read)
        .expect("no database sync");
    assert!(file < db, "file synced after its metadata: {calls:?}");
    let chunk_dir = dir.path().join("buffer/chunks/out");
    assert!(
        calls[file..db]
            .iter()
            .any(|(o, p)| *o == FsOp::SyncDir && *p == chunk_dir),
        "the directory of the adopted file was not synced before its metadata: {calls:?}"
    );
}

/// Defect 1, second half: if the adopted file cannot be synced, the buffer does not open (the
/// relay does not start: it exits with this error), rather than make metadata durable for
/// bytes that may not be.
#[tokio::test]
async fn recovery_refuses_to_start_when_an_adopted_file_cannot_be_synced() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    {
        let (_s, b) = open_fs(dir.path(), &p, &fs);
        b.append(recs(0..5)).await.unwrap();
    }
    fs.fail(FsOp::SyncData, ".chunk", 0, None, Fault::Errno(libc::EIO));
    fs.fail(FsOp::SyncAll, ".chunk", 0, None, Fault::Errno(libc::EIO));
    let err = match try_open_fs(dir.path(), &p, &fs) {
        Ok(_) => panic!("the buffer opened although its adopted chunk could not be synced"),
        Err(e) => e,
    };
    let text = err.to_string();
    assert!(text.contains("0000000000000001.chunk"), "{text}");
    assert_eq!(
        err.io_error().and_then(std::io::Error::raw_os_error),
        Some(libc::EIO),
        "{text}"
    );
    // Nothing was made durable in between: once the disk is back, the chunk is recovered.
    fs.clear();
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    assert_eq!(drain(&b).await, (0..5).collect::<Vec<_>>());
}

/// The position of the first call of `op` on `path` at or after `from`.
pub(super) fn call_at(
    calls: &[(FsOp, PathBuf)],
    from: usize,
    op: FsOp,
    path: &Path,
) -> Option<usize> {
    calls[from..]
        .iter()
        .position(|(o, p)| *o == op && p == path)
        .map(|i| i + from)
}

/// Defect 4: a new directory is durable (its parent fsynced) before anything in it is relied
/// upon: `write_atomic` into `dead-letter/<output>/` syncs every parent it created, and the
/// file is renamed into place only after.
#[test]
fn write_atomic_makes_every_directory_it_creates_durable_first() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let (dl, out) = (
        dir.path().join("dead-letter"),
        dir.path().join("dead-letter/fh"),
    );
    let dest = out.join("entry.json");
    crate::fsutil::Filesystem::write_atomic(&fs, &dest, b"{}").unwrap();
    let calls = fs.calls();
    let made_dl = call_at(&calls, 0, FsOp::CreateDir, &dl).expect("dead-letter/ created");
    let synced_root = call_at(&calls, made_dl, FsOp::SyncDir, dir.path());
    let made_out = call_at(&calls, made_dl, FsOp::CreateDir, &out).expect("dead-letter/fh created");
    let synced_dl = call_at(&calls, made_out, FsOp::SyncDir, &dl);
    let renamed = call_at(&calls, 0, FsOp::Rename, &dest).expect("renamed into place");
    assert!(
        synced_root.is_some_and(|s| s < renamed) && synced_dl.is_some_and(|s| s < renamed),
        "data_dir synced at {synced_root:?} and dead-letter/ at {synced_dl:?} must come before \
         the rename at {renamed}: {calls:?}"
    );
    assert!(
        call_at(&calls, renamed, FsOp::SyncDir, &out).is_some(),
        "{calls:?}"
    );
}

/// Defect 4: the quarantine directory is created durably before a chunk is purged on the
/// strength of its copy there; an output's chunk directory is synced (with its parent) at
/// every open, also when it exists: a run killed right after creating it may not have synced
/// it, and chunk files are acknowledged on the strength of their directory entry.
#[tokio::test]
async fn quarantine_and_chunk_directories_are_durable_before_they_are_relied_upon() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    {
        let (_s, b) = open_fs(dir.path(), &p, &fs);
        b.append(recs(0..3)).await.unwrap();
    }
    // Corrupt the staged chunk's header: recovery quarantines it.
    let chunks = dir.path().join("buffer/chunks");
    let file = chunk_file(&chunks.join("out"), ChunkId(1));
    let mut bytes = std::fs::read(&file).unwrap();
    bytes[0] ^= 0xff;
    std::fs::write(&file, bytes).unwrap();
    let before = fs.calls().len();
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    assert_eq!(b.stats().quarantined_chunks, 1);
    let calls = &fs.calls()[before..];
    // The chunk directory existed: it and its parent are synced anyway.
    assert!(
        call_at(calls, 0, FsOp::SyncDir, &chunks.join("out")).is_some(),
        "{calls:?}"
    );
    assert!(
        call_at(calls, 0, FsOp::SyncDir, &chunks).is_some(),
        "{calls:?}"
    );
    // quarantine/ is new: data_dir is synced after it is created and before the chunk's file
    // is deleted.
    let q = dir.path().join("quarantine");
    let made = call_at(calls, 0, FsOp::CreateDir, &q).expect("quarantine/ created");
    let synced = call_at(calls, made, FsOp::SyncDir, dir.path());
    let marker = purged_file(&chunks.join("out"), ChunkId(1));
    let deleted = call_at(calls, 0, FsOp::Rename, &marker).expect("the chunk file purged");
    assert!(
        synced.is_some_and(|s| s < deleted),
        "data_dir synced at {synced:?}, chunk deleted at {deleted}: {calls:?}"
    );
}

/// Defect 7 (the writer's side): a purge renames the chunk's file to `.purged` and syncs the
/// directory before the metadata goes, and lets go of the `.purged` file (into the pool of
/// files for new chunks, or deleted) only once the metadata removal is durable; so recovery
/// can tell a purge cut short (a `.purged` file) from a file lost outside the relay (none).
#[tokio::test]
async fn a_purge_keeps_a_marker_until_the_metadata_removal_is_durable() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(70, 1 << 20, OverflowAction::Block);
    let (s, b) = open_fs(dir.path(), &p, &fs);
    b.append(recs(0..10)).await.unwrap(); // chunk 1, closed
    let d = s.chunk_dir("out").unwrap();
    let before = fs.calls().len();
    let c = b.take(now_ms()).await.unwrap().unwrap();
    b.commit(c.id).await.unwrap();
    let marker = purged_file(&d, c.id);
    assert!(!chunk_file(&d, c.id).exists());
    drop(b);
    drop(s); // the writer makes the metadata durable at the latest when it stops
    let db_file = dir.path().join("buffer/db");
    let mut calls = Vec::new();
    for _ in 0..500 {
        calls = fs.calls()[before..].to_vec();
        if call_at(&calls, 0, FsOp::SyncData, &db_file).is_some() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let renamed = call_at(&calls, 0, FsOp::Rename, &marker).expect("renamed to .purged");
    let dir_synced = call_at(&calls, renamed, FsOp::SyncDir, &d).expect("directory synced");
    let db = call_at(&calls, dir_synced, FsOp::SyncData, &db_file).expect("metadata made durable");
    assert!(renamed < dir_synced && dir_synced < db, "{calls:?}");
    assert_eq!(
        call_at(&calls, 0, FsOp::Remove, &marker),
        None,
        "the marker is not deleted: it stays in the pool of files for new chunks"
    );
    assert!(marker.exists());
    // The pool does not outlive the process: recovery deletes every marker.
    let (_s, _b) = open_fs(dir.path(), &p, &fs);
    wait_gone(&marker).await;
}

/// Waits (up to 5 s) until `path` is gone: the writer thread finishes after the last handle.
async fn wait_gone(path: &Path) {
    for _ in 0..500 {
        if !path.exists() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("{} is still there", path.display());
}

/// Defect 6: a chunk whose file cannot be read (`EIO`) does not block its output: `take`
/// hands out the next chunk, retries the unreadable one with a growing wait, and after
/// [`READ_ATTEMPTS`](super::super::queue::READ_ATTEMPTS) failed reads moves it to quarantine.
#[tokio::test]
async fn a_chunk_that_cannot_be_read_is_retried_with_backoff_then_quarantined() {
    use super::super::queue::READ_ATTEMPTS;
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(70, 1 << 20, OverflowAction::Block);
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    b.append(recs(0..30)).await.unwrap(); // chunks 1 and 2 closed, 3 staged
    b.enqueue_staged(Enqueue::All).await.unwrap();
    fs.fail(
        FsOp::Read,
        "0000000000000001.chunk",
        0,
        None,
        Fault::Errno(libc::EIO),
    );
    let mut now = now_ms();
    // The other chunks flow.
    let c = b.take(now).await.unwrap().expect("the next chunk");
    assert_eq!(c.id, ChunkId(2));
    b.commit(c.id).await.unwrap();
    let c = b.take(now).await.unwrap().expect("the next chunk");
    assert_eq!(c.id, ChunkId(3));
    b.commit(c.id).await.unwrap();
    // The unreadable one waits before each new attempt, longer each time.
    assert!(b.take(now).await.unwrap().is_none(), "retried at once");
    let mut waits = Vec::new();
    for attempt in 2..=READ_ATTEMPTS {
        // The earliest time at which `take` tries to read it again.
        let mut wait = 0;
        loop {
            let reads = fs.injected().len();
            assert!(b.take(now + wait).await.unwrap().is_none());
            if fs.injected().len() > reads {
                break;
            }
            wait += 100;
            assert!(wait < 600_000, "attempt {attempt} never came");
        }
        waits.push(wait);
        now += wait;
    }
    assert!(waits.windows(2).all(|w| w[0] < w[1]), "{waits:?}");
    let reads = fs.injected().len() as u32;
    assert_eq!(reads, READ_ATTEMPTS, "{:?}", fs.injected());
    assert_eq!(b.stats().quarantined_chunks, 1);
    assert_eq!(b.stats().records, 0);
    let q: Vec<String> = std::fs::read_dir(dir.path().join("quarantine"))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        q.iter().any(|n| n.ends_with(".chunk")),
        "the chunk's file is kept: {q:?}"
    );
}

/// Defect 6: a read that fails for want of file descriptors (`EMFILE`) is not the chunk's
/// fault: it is retried, never quarantined, and the chunk is delivered once descriptors are
/// back.
#[tokio::test]
async fn a_read_failing_for_want_of_descriptors_is_retried_until_it_works() {
    use super::super::queue::READ_ATTEMPTS;
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(70, 1 << 20, OverflowAction::Block);
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    b.append(recs(0..10)).await.unwrap(); // chunk 1, closed
    fs.fail(
        FsOp::Read,
        ".chunk",
        0,
        Some(READ_ATTEMPTS + 2),
        Fault::Errno(libc::EMFILE),
    );
    let mut now = now_ms();
    let c = loop {
        if let Some(c) = b.take(now).await.unwrap() {
            break c;
        }
        now += 1_000;
    };
    assert_eq!(fs.injected().len() as u32, READ_ATTEMPTS + 2);
    assert_eq!(ids_of(&c.records, |_| true), (0..10).collect::<Vec<_>>());
    assert_eq!(b.stats().quarantined_chunks, 0);
}

/// Defect 8 of issue 15: no metadata value grows past [`MAX_META_VALUE`] (far below sled's
/// blob threshold, a quarter of its segment size), even for an output whose chunks could hold
/// millions of tiny records: a chunk closes at [`MAX_CHUNK_RECORDS`], so its delivered-record
/// bitset stays bounded.
#[tokio::test]
async fn chunk_metadata_stays_far_below_sleds_blob_threshold() {
    use super::super::codec::{MAX_CHUNK_RECORDS, MAX_META_VALUE};
    let dir = tempfile::tempdir().unwrap();
    let p = policy(64 << 20, 1 << 30, OverflowAction::Block);
    let (s, b) = open(dir.path(), &p);
    let n = 2 * MAX_CHUNK_RECORDS + 5;
    let mut r = Records::new();
    for _ in 0..n {
        r.push(b"x").unwrap();
    }
    b.append(r).await.unwrap();
    b.enqueue_staged(Enqueue::All).await.unwrap();
    let mut records = 0;
    while let Some(c) = b.take(now_ms()).await.unwrap() {
        assert!(c.records.len() as u64 <= MAX_CHUNK_RECORDS);
        records += c.records.len() as u64;
        // The largest bitset: everything but the first record delivered.
        let delivered: DeliveredSet = (1..c.records.len()).collect();
        b.release(
            c.id,
            delivered,
            RetryState {
                failures: 1,
                first_failure_ms: Some(1),
                next_attempt_ms: u64::MAX,
            },
        )
        .await
        .unwrap();
    }
    assert_eq!(records, n);
    for kv in s.tree("out").unwrap().iter() {
        let (_, v) = kv.unwrap();
        assert!(
            v.len() <= MAX_META_VALUE,
            "a metadata value of {} bytes",
            v.len()
        );
    }
}
