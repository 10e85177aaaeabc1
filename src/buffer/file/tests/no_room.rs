//! Write errors are told apart (defect 2 of issue 15), injected through the file-system seam:
//! a lack of room (`ENOSPC`, `EDQUOT`, `EMFILE`, `ENFILE` from a create, open or write)
//! refuses the appends of its group without poisoning the store, undoes what the group wrote,
//! and appends resume by themselves; an I/O error or any failed sync poisons the store (health
//! `failed`, which `/healthz` reports).

use super::faults::open_fs;
use super::*;
use crate::buffer::file::space::CHECK_EVERY;
use crate::buffer::file::StoreError;
use crate::buffer::BufferError;
use crate::fsutil::faults::{Fault, FaultFs, FsOp};

fn store_error(e: &AppendError) -> &StoreError {
    match e {
        AppendError::Storage(BufferError::Storage(s)) => s,
        other => panic!("expected a storage error, got {other:?}"),
    }
}

/// Appends `ids` until the store takes them (the full state is re-checked every
/// [`CHECK_EVERY`]); panics after a few seconds.
async fn append_when_room(b: &FileBuffer, ids: std::ops::Range<u64>) {
    let start = std::time::Instant::now();
    loop {
        match b.append(recs(ids.clone())).await {
            Ok(()) => return,
            Err(e) if store_error(&e).is_no_room() && start.elapsed() < Duration::from_secs(5) => {
                tokio::time::sleep(CHECK_EVERY / 2).await;
            }
            Err(e) => panic!("appends did not resume: {e}"),
        }
    }
}

#[tokio::test]
async fn out_of_descriptors_refuses_the_append_and_appends_resume_by_themselves() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    {
        let (store, b) = open_fs(dir.path(), &p, &fs);
        b.append(recs(0..5)).await.unwrap();
        fs.fail_once(FsOp::Open, ".chunk", Fault::Errno(libc::EMFILE));
        let e = b.append(recs(5..10)).await.unwrap_err();
        let e = store_error(&e);
        assert!(e.is_no_room(), "{e:?}");
        assert_eq!(
            e.io_error().and_then(std::io::Error::raw_os_error),
            Some(libc::EMFILE)
        );
        // Not poisoned: full for now, with the reason.
        let health = store.health();
        assert_eq!(health.state(), "full", "{health:?}");
        assert!(health.reason().unwrap().contains("open"), "{health:?}");
        // The refused records are not counted.
        assert_eq!(b.stats().records, 5);
        append_when_room(&b, 10..15).await;
        assert_eq!(store.health().state(), "ok");
    }
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    assert_eq!(drain(&b).await, (0..5).chain(10..15).collect::<Vec<_>>());
}

/// A write that runs out of space half way leaves half a group in the chunk file. It is cut
/// back before anything else is appended: otherwise recovery would stop reading at the torn
/// group and lose the acknowledged appends after it.
#[tokio::test]
async fn a_write_that_runs_out_of_space_is_cut_back_so_later_acks_survive() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    {
        let (store, b) = open_fs(dir.path(), &p, &fs);
        b.append(recs(0..5)).await.unwrap();
        let file = chunk_file(&store.chunk_dir_path("out"), ChunkId(1));
        let len = std::fs::metadata(&file).unwrap().len();
        fs.fail_once(FsOp::Write, ".chunk", Fault::ShortWrite(libc::ENOSPC));
        let e = b.append(recs(5..10)).await.unwrap_err();
        let e = store_error(&e);
        assert!(e.is_no_room() && e.is_storage_full(), "{e:?}");
        assert_eq!(std::fs::metadata(&file).unwrap().len(), len, "cut back");
        assert_eq!(store.health().state(), "full");
        append_when_room(&b, 10..15).await;
    }
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    assert_eq!(b.stats().quarantined_chunks, 0);
    assert_eq!(drain(&b).await, (0..5).chain(10..15).collect::<Vec<_>>());
}

/// The first append of a chunk creates its file; when that finds no room, the file is
/// removed and the chunk forgotten, and the next append starts a chunk of its own.
#[tokio::test]
async fn a_chunk_whose_creation_finds_no_room_is_forgotten() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    {
        let (store, b) = open_fs(dir.path(), &p, &fs);
        fs.fail_once(FsOp::Write, ".chunk", Fault::ShortWrite(libc::EDQUOT));
        let e = b.append(recs(0..5)).await.unwrap_err();
        assert!(store_error(&e).is_storage_full(), "{e:?}");
        let s = b.stats();
        assert_eq!((s.records, s.bytes, s.staged_chunks), (0, 0, 0), "{s:?}");
        assert!(chunk_files(&store.chunk_dir_path("out")).is_empty());
        append_when_room(&b, 5..10).await;
    }
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    assert_eq!(drain(&b).await, (5..10).collect::<Vec<_>>());
}

fn chunk_files(dir: &Path) -> Vec<std::path::PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "chunk"))
        .collect()
}

/// Many concurrent appends, one of whose groups runs out of space: every acknowledged record
/// is on disk, nothing refused is, and the bookkeeping (what `stats` counts) matches what a
/// restart finds. Appends sent while the refused group was being written build on it (the
/// chunk it created, its counts): they are cancelled with it.
#[tokio::test]
async fn concurrent_appends_around_a_refused_group_keep_the_bookkeeping_true() {
    for skip in [0, 1, 2, 3] {
        let dir = tempfile::tempdir().unwrap();
        let fs = FaultFs::new();
        // Small chunks: appends create and close chunks all the time.
        let p = policy(600, 1 << 30, OverflowAction::Block);
        let acked = {
            let (_store, b) = open_fs(dir.path(), &p, &fs);
            let b = Arc::new(b);
            fs.fail(
                FsOp::Write,
                ".chunk",
                skip,
                Some(1),
                Fault::ShortWrite(libc::ENOSPC),
            );
            let mut acked = Vec::new();
            // Waves of concurrent appends, so that groups follow one another.
            for wave in 0..6u64 {
                let tasks: Vec<_> = (0..10u64)
                    .map(|i| {
                        let b = Arc::clone(&b);
                        tokio::spawn(async move {
                            let first = (wave * 10 + i) * 10;
                            let ids = first..first + 10;
                            b.append(recs(ids.clone())).await.ok().map(|()| ids)
                        })
                    })
                    .collect();
                for t in tasks {
                    if let Some(ids) = t.await.unwrap() {
                        acked.extend(ids);
                    }
                }
            }
            assert_eq!(fs.injected().len(), 1, "skip {skip}: the fault never fired");
            assert!(acked.len() < 600, "skip {skip}: nothing was refused");
            assert_eq!(
                b.stats().records,
                acked.len() as u64,
                "skip {skip}: counted records differ from acknowledged ones"
            );
            acked.sort_unstable();
            acked
        };
        let (_s, b) = open_fs(dir.path(), &p, &fs);
        assert_eq!(b.stats().records, acked.len() as u64, "skip {skip}");
        let mut got = drain(&b).await;
        got.sort_unstable();
        assert_eq!(got, acked, "skip {skip}");
    }
}

#[tokio::test]
async fn an_io_error_poisons_the_store_and_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    let (store, b) = open_fs(dir.path(), &p, &fs);
    b.append(recs(0..5)).await.unwrap();
    fs.fail_once(FsOp::Write, ".chunk", Fault::Errno(libc::EIO));
    let e = b.append(recs(5..10)).await.unwrap_err();
    assert!(!store_error(&e).is_no_room(), "{e:?}");
    let health = store.health();
    assert_eq!(health.state(), "failed", "{health:?}");
    assert!(
        health.reason().unwrap().contains("Input/output error"),
        "{health:?}"
    );
    assert_eq!(b.stats().storage, health);
    // Every later write fails, room or not.
    tokio::time::sleep(CHECK_EVERY).await;
    let later = b.append(recs(10..11)).await.unwrap_err();
    assert!(
        matches!(store_error(&later), StoreError::Failed(_)),
        "{later:?}"
    );
}

/// A failed `fdatasync` is never taken for a lack of room, whatever its code: the kernel may
/// have dropped the pages, so retrying and succeeding would prove nothing.
#[tokio::test]
async fn a_failed_fdatasync_poisons_the_store_even_with_enospc() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    let (store, b) = open_fs(dir.path(), &p, &fs);
    fs.fail_once(FsOp::SyncData, ".chunk", Fault::Errno(libc::ENOSPC));
    let e = b.append(recs(0..5)).await.unwrap_err();
    assert!(!store_error(&e).is_no_room(), "{e:?}");
    assert_eq!(store.health().state(), "failed");
}
