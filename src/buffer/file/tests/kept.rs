//! A chunk's records kept in memory for its first take: a flush worker handed a chunk that was
//! just written gets the very records that were appended, without reading its file back, within
//! a bounded budget; past the budget, after a refused append or after a restart the file is
//! read as before.

use super::faults::open_fs;
use super::*;
use crate::fsutil::faults::{Fault, FaultFs, FsOp};

/// Reads of chunk files since call `from` of `fs`.
fn chunk_reads(fs: &FaultFs, from: usize) -> usize {
    fs.calls()[from..]
        .iter()
        .filter(|(op, p)| *op == FsOp::Read && p.to_string_lossy().ends_with(".chunk"))
        .count()
}

#[tokio::test]
async fn a_chunk_taken_after_its_appends_is_handed_out_without_reading_its_file() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    let before = fs.calls().len();
    for r in [0..5, 5..8, 8..12] {
        b.append(recs(r)).await.unwrap();
    }
    b.enqueue_staged(Enqueue::All).await.unwrap();
    let c = b.take(u64::MAX).await.unwrap().unwrap();
    assert_eq!(ids_of(&c.records, |_| true), (0..12).collect::<Vec<_>>());
    assert_eq!(chunk_reads(&fs, before), 0);
    // A release hands it back: the next take reads the file, and sends only the rest.
    let mut delivered = c.delivered.clone();
    for i in 0..6 {
        delivered.insert(i);
    }
    b.release(c.id, delivered, RetryState::default())
        .await
        .unwrap();
    let c = b.take(u64::MAX).await.unwrap().unwrap();
    assert_eq!(chunk_reads(&fs, before), 1);
    assert_eq!(
        ids_of(&c.records, |i| !c.delivered.contains(i)),
        (6..12).collect::<Vec<_>>()
    );
}

/// The budget is two chunks (`chunk_limit_size`): chunks past it are read from their files,
/// and every chunk has exactly its records either way.
#[tokio::test]
async fn chunks_past_the_budget_are_read_from_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(70, 1 << 30, OverflowAction::Block); // 10 records of 7 bytes per chunk
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    let before = fs.calls().len();
    b.append(recs(0..50)).await.unwrap(); // chunks 1 to 5
    b.enqueue_staged(Enqueue::All).await.unwrap();
    let mut got = Vec::new();
    while let Some(c) = b.take(u64::MAX).await.unwrap() {
        got.extend(ids_of(&c.records, |_| true));
        b.commit(c.id).await.unwrap();
    }
    assert_eq!(got, (0..50).collect::<Vec<_>>());
    assert_eq!(
        chunk_reads(&fs, before),
        3,
        "2 of 5 chunks fit in 140 bytes"
    );
}

/// An append refused for lack of room never reached the disk: its records are not handed
/// out, although they were on their way to the writer beside the kept ones.
#[tokio::test]
async fn a_refused_append_is_never_handed_out() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    b.append(recs(0..5)).await.unwrap();
    fs.fail_once(FsOp::Write, ".chunk", Fault::ShortWrite(libc::ENOSPC));
    assert!(b.append(recs(5..8)).await.is_err());
    fs.clear();
    // Appends resume once the volume has room again (checked every 250 ms while full).
    let mut next = 8;
    loop {
        match b.append(recs(next..next + 1)).await {
            Ok(()) => break,
            Err(_) => {
                next += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
    b.enqueue_staged(Enqueue::All).await.unwrap();
    let c = b.take(u64::MAX).await.unwrap().unwrap();
    let mut want: Vec<u64> = (0..5).collect();
    want.push(next);
    assert_eq!(ids_of(&c.records, |_| true), want);
}

/// After a restart nothing is kept: chunks come from their files.
#[tokio::test]
async fn after_a_restart_chunks_are_read_from_their_files() {
    let dir = tempfile::tempdir().unwrap();
    let fs = FaultFs::new();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    {
        let (_s, b) = open_fs(dir.path(), &p, &fs);
        b.append(recs(0..5)).await.unwrap();
    }
    let (_s, b) = open_fs(dir.path(), &p, &fs);
    let before = fs.calls().len();
    b.enqueue_staged(Enqueue::All).await.unwrap();
    let c = b.take(u64::MAX).await.unwrap().unwrap();
    assert_eq!(ids_of(&c.records, |_| true), (0..5).collect::<Vec<_>>());
    assert_eq!(chunk_reads(&fs, before), 1);
}
