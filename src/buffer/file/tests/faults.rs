//! Storage faults injected through the file-system seam ([`FaultFs`]): failed `fdatasync`s,
//! I/O errors, short writes, and power losses (every file cut back to what was last synced).

use super::super::StoreError;
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
    let db = pos(FsOp::SyncData, &|p| p.ends_with("buffer/db")).expect("no database sync");
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
