//! Behaviour of the file buffer, as a specification. Each test opens a real database in a
//! temporary directory; "restart" means dropping every handle and opening it again.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use proptest::prelude::*;

use super::codec::{self, data_key, meta_key, MAX_VALUE_DATA};
use super::store::{chunk_file, purged_file};
use super::{FileBuffer, Store};
use crate::buffer::config::{FlushMode, OverflowAction};
use crate::buffer::policy::BufferPolicy;
use crate::buffer::{
    now_ms, AppendError, Buffer, ChunkId, DeliveredSet, Enqueue, Records, RetryState,
};

fn policy(chunk: u64, total: u64, action: OverflowAction) -> BufferPolicy {
    BufferPolicy {
        output: "out".into(),
        chunk_limit_size: chunk,
        chunk_limit_records: None,
        total_limit_size: total,
        flush_mode: FlushMode::Interval,
        overflow_action: action,
        keys: Default::default(),
    }
}

fn open(dir: &Path, p: &BufferPolicy) -> (Arc<Store>, FileBuffer) {
    let store = open_store(dir);
    let b = FileBuffer::open(Arc::clone(&store), p.clone(), Counter::default()).unwrap();
    (store, b)
}

/// Opens the store of `dir` (waiting for a previous handle's lock, see [`open`]).
fn open_store(dir: &Path) -> Arc<Store> {
    // A "restart" within one process: the previous handle's last clone of the database may be
    // released by the writer thread a moment after the test dropped it (a real restart is a new
    // process), so wait for sled's file lock instead of failing.
    let start = std::time::Instant::now();
    let store = loop {
        match Store::open(dir, 8 << 20) {
            Ok(s) => break s,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && start.elapsed() < std::time::Duration::from_secs(5) =>
            {
                std::thread::sleep(std::time::Duration::from_millis(10));
            }
            Err(e) => panic!("cannot open the store: {e}"),
        }
    };
    store
}

/// Records `"<id>\n"` for ids in `ids`.
fn recs(ids: impl IntoIterator<Item = u64>) -> Records {
    let mut r = Records::new();
    for i in ids {
        r.push(format!("{i:06}\n").as_bytes()).unwrap();
    }
    r
}

fn ids_of(r: &Records, only: impl Fn(usize) -> bool) -> Vec<u64> {
    r.iter()
        .enumerate()
        .filter(|(i, _)| only(*i))
        .map(|(_, b)| std::str::from_utf8(b).unwrap().trim().parse().unwrap())
        .collect()
}

/// Takes and commits everything, returning the ids of the records still to deliver.
async fn drain(b: &FileBuffer) -> Vec<u64> {
    b.enqueue_staged(Enqueue::All).await.unwrap();
    let mut out = Vec::new();
    while let Some(c) = b.take(u64::MAX).await.unwrap() {
        out.extend(ids_of(&c.records, |i| !c.delivered.contains(i)));
        b.commit(c.id).await.unwrap();
    }
    out
}

#[tokio::test]
async fn appended_records_survive_a_restart_and_staged_chunks_come_back_queued() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(70, 1 << 20, OverflowAction::Block);
    {
        let (_s, b) = open(dir.path(), &p);
        b.append(recs(0..25)).await.unwrap(); // 7 bytes each: chunks of 10, 10 and 5 staged
        let s = b.stats();
        assert_eq!(
            (s.queued_chunks, s.staged_chunks, s.records, s.bytes),
            (2, 1, 25, 175)
        );
    }
    let (_s, b) = open(dir.path(), &p);
    let s = b.stats();
    assert_eq!(
        (s.queued_chunks, s.staged_chunks, s.records, s.bytes),
        (3, 0, 25, 175)
    );
    assert_eq!(drain(&b).await, (0..25).collect::<Vec<_>>());
}

#[tokio::test]
async fn committed_chunks_are_gone_for_good_and_their_space_is_returned() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(70, 1 << 20, OverflowAction::Block);
    {
        let (_s, b) = open(dir.path(), &p);
        b.append(recs(0..20)).await.unwrap();
        let c = b.take(now_ms()).await.unwrap().unwrap();
        assert_eq!(ids_of(&c.records, |_| true), (0..10).collect::<Vec<_>>());
        b.commit(c.id).await.unwrap();
        assert!(b.commit(c.id).await.is_err(), "a chunk is committed once");
        assert_eq!(b.stats().records, 10);
    }
    let (_s, b) = open(dir.path(), &p);
    assert_eq!(b.stats().records, 10);
    assert_eq!(drain(&b).await, (10..20).collect::<Vec<_>>());
}

#[tokio::test]
async fn an_in_flight_chunk_is_invisible_to_other_takers_and_requeued_by_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(70, 1 << 20, OverflowAction::Block);
    {
        let (_s, b) = open(dir.path(), &p);
        b.append(recs(0..10)).await.unwrap();
        assert!(b.take(now_ms()).await.unwrap().is_some());
        assert!(b.take(now_ms()).await.unwrap().is_none());
        assert_eq!(b.stats().in_flight_chunks, 1);
    } // "crash" while in flight
    let (_s, b) = open(dir.path(), &p);
    assert_eq!(drain(&b).await, (0..10).collect::<Vec<_>>());
}

#[tokio::test]
async fn partial_delivery_and_retry_state_persist_so_a_retry_resends_only_the_rest() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(70, 1 << 20, OverflowAction::Block);
    let retry = RetryState {
        failures: 2,
        first_failure_ms: Some(10),
        next_attempt_ms: 1_000,
    };
    {
        let (_s, b) = open(dir.path(), &p);
        b.append(recs(0..10)).await.unwrap();
        let c = b.take(now_ms()).await.unwrap().unwrap();
        let delivered: DeliveredSet = [0, 1, 2, 5, 9].into_iter().collect();
        b.release(c.id, delivered, retry).await.unwrap();
        assert!(
            b.take(999).await.unwrap().is_none(),
            "waits for its retry time"
        );
    }
    let (_s, b) = open(dir.path(), &p);
    assert!(
        b.take(999).await.unwrap().is_none(),
        "retry time survives a restart"
    );
    let c = b.take(1_000).await.unwrap().unwrap();
    assert_eq!(c.retry, retry);
    assert_eq!(
        ids_of(&c.records, |i| !c.delivered.contains(i)),
        vec![3, 4, 6, 7, 8]
    );
    assert_eq!(c.pending_count(), 5);
}

#[tokio::test]
async fn concurrent_appends_share_group_commits_and_keys() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    let (store, b) = open(dir.path(), &p);
    let b = Arc::new(b);
    let before = store.group_commits();
    let tasks: Vec<_> = (0..64u64)
        .map(|t| {
            let b = Arc::clone(&b);
            tokio::spawn(async move { b.append(recs(t * 10..t * 10 + 10)).await })
        })
        .collect();
    for t in tasks {
        t.await.unwrap().unwrap();
    }
    let commits = store.group_commits() - before;
    let file = std::fs::read(chunk_file(&store.chunk_dir("out").unwrap(), ChunkId(1))).unwrap();
    let frames = codec::scan_chunk_file(&file, ChunkId(1), codec::FileEnd::MayBeTorn)
        .unwrap()
        .values
        .len();
    assert!(commits < 64, "64 concurrent appends took {commits} fsyncs");
    assert!(
        frames as u64 <= commits,
        "{frames} frames for {commits} commits"
    );
    let mut got = drain(&b).await;
    got.sort_unstable();
    assert_eq!(got, (0..640).collect::<Vec<_>>());
}

#[tokio::test]
async fn records_larger_than_a_stored_value_are_split_and_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(4 << 20, 1 << 30, OverflowAction::Block);
    let big = vec![b'x'; MAX_VALUE_DATA * 2 + 123];
    let mut r = Records::new();
    r.push(b"small\n").unwrap();
    r.push(&big).unwrap();
    r.push(b"").unwrap();
    {
        let (_s, b) = open(dir.path(), &p);
        b.append(r.clone()).await.unwrap();
    }
    let (store, b) = open(dir.path(), &p);
    let file = std::fs::read(chunk_file(&store.chunk_dir("out").unwrap(), ChunkId(1))).unwrap();
    let scan = codec::scan_chunk_file(&file, ChunkId(1), codec::FileEnd::MayBeTorn).unwrap();
    assert_eq!(scan.values.len(), 3);
    assert!(scan
        .values
        .iter()
        .all(|v| v.encoded_len() <= MAX_VALUE_DATA + 64));
    b.enqueue_staged(Enqueue::All).await.unwrap();
    assert_eq!(b.take(now_ms()).await.unwrap().unwrap().records, r);
}

#[tokio::test]
async fn a_record_larger_than_chunk_limit_size_is_rejected_and_nothing_is_stored() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, b) = open(dir.path(), &policy(100, 1 << 20, OverflowAction::Block));
    let mut r = recs(0..2);
    r.push(&[b'x'; 101]).unwrap();
    let err = b.append(r).await.unwrap_err();
    assert!(
        matches!(
            err,
            AppendError::RecordTooLarge {
                size: 101,
                limit: 100,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(b.stats().records, 0);
}

#[tokio::test]
async fn throw_exception_rejects_appends_once_total_limit_size_is_reached() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(70, 140, OverflowAction::ThrowException);
    let (_s, b) = open(dir.path(), &p);
    b.append(recs(0..18)).await.unwrap(); // 126 bytes
    let err = b.append(recs(18..21)).await.unwrap_err();
    assert!(
        matches!(
            err,
            AppendError::Overflow {
                used: 126,
                limit: 140,
                ..
            }
        ),
        "{err}"
    );
    assert_eq!(b.stats().records, 18, "a rejected append stores nothing");
}

#[tokio::test]
async fn drop_oldest_chunk_purges_the_oldest_queued_chunk_durably_and_counts_it() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(70, 140, OverflowAction::DropOldestChunk);
    {
        let (_s, b) = open(dir.path(), &p);
        b.append(recs(0..20)).await.unwrap(); // two full queued chunks, 140 bytes
        b.append(recs(20..25)).await.unwrap();
        let s = b.stats();
        assert_eq!(
            (s.dropped_chunks, s.dropped_records, s.records),
            (1, 10, 15)
        );
    }
    let (_s, b) = open(dir.path(), &p);
    assert_eq!(
        drain(&b).await,
        (10..25).collect::<Vec<_>>(),
        "the drop is on disk too"
    );
}

#[tokio::test]
async fn block_waits_until_a_commit_frees_space_and_close_fails_waiting_appends() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, b) = open(dir.path(), &policy(70, 70, OverflowAction::Block));
    let b = Arc::new(b);
    b.append(recs(0..10)).await.unwrap();
    let b2 = Arc::clone(&b);
    let blocked = tokio::spawn(async move { b2.append(recs(10..11)).await });
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        !blocked.is_finished(),
        "append must wait while the buffer is full"
    );
    let c = b.take(now_ms()).await.unwrap().unwrap();
    b.commit(c.id).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap()
        .unwrap();

    b.append(recs(11..20)).await.unwrap();
    let b3 = Arc::clone(&b);
    let blocked = tokio::spawn(async move { b3.append(recs(20..21)).await });
    tokio::time::sleep(Duration::from_millis(50)).await;
    b.close();
    let res = tokio::time::timeout(Duration::from_secs(5), blocked)
        .await
        .unwrap()
        .unwrap();
    assert!(matches!(res, Err(AppendError::Closed(_))));
}

#[tokio::test]
async fn dead_letter_import_adds_a_queued_chunk_after_the_existing_ones() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(70, 1 << 20, OverflowAction::Block);
    {
        let (s, b) = open(dir.path(), &p);
        b.append(recs(0..5)).await.unwrap();
        drop(b);
        let id = s
            .import_chunk("out", recs(100..103), 7, &Default::default())
            .unwrap();
        assert_eq!(id, ChunkId(2));
    }
    let (_s, b) = open(dir.path(), &p);
    assert_eq!(drain(&b).await, vec![0, 1, 2, 3, 4, 100, 101, 102]);
}

#[tokio::test]
async fn inspect_reports_a_stopped_relays_queue_and_dumps_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(70, 1 << 20, OverflowAction::Block);
    {
        let (_s, b) = open(dir.path(), &p);
        b.append(recs(0..15)).await.unwrap();
    }
    // As in `open`: the writer thread may release the previous handle's lock a moment later.
    let start = std::time::Instant::now();
    let store = loop {
        match Store::open_existing(dir.path(), 1 << 20) {
            Ok(s) => break s,
            Err(e)
                if e.to_string().contains("could not acquire lock")
                    && start.elapsed() < Duration::from_secs(5) =>
            {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => panic!("cannot open the store: {e}"),
        }
    };
    let report = super::inspect::stats(&store).unwrap();
    assert_eq!(report.len(), 1);
    let r = &report[0];
    assert_eq!(
        (r.queued_chunks, r.staged_chunks, r.records, r.bytes),
        (1, 1, 15, 105)
    );
    let mut out = Vec::new();
    let (n, problems) = super::inspect::dump(&store, "out", Some(ChunkId(2)), &mut out).unwrap();
    assert_eq!((n, problems.len()), (5, 0));
    assert_eq!(
        String::from_utf8(out).unwrap(),
        "000010\n000011\n000012\n000013\n000014\n"
    );
    assert!(Store::open_existing(&dir.path().join("nothing"), 1 << 20).is_err());
}

mod backlog;
mod corruption;
mod disk_full;
mod faults;
mod gaps;
mod geometry;
mod keys;
mod model;
mod no_room;
mod reuse;
