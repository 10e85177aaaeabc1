//! Chunk keys in the file buffer: one open chunk per key, the key kept durably (chunk file
//! header while staged, metadata once closed) so a restart after a crash hands every chunk back
//! with its key, and the bound on open chunks.

use super::{ids_of, open, policy, recs};
use crate::buffer::config::OverflowAction;
use crate::buffer::policy::{BufferPolicy, KeyPolicy};
use crate::buffer::{Buffer, ChunkKey, Enqueue};

fn key(tag: &str, slot: Option<i64>) -> ChunkKey {
    ChunkKey {
        tag: Some(tag.to_owned()),
        timekey: slot,
    }
}

fn keyed(max_open: usize) -> BufferPolicy {
    BufferPolicy {
        keys: KeyPolicy {
            max_open_chunks: max_open,
            ..KeyPolicy::default()
        },
        ..policy(1 << 20, 1 << 30, OverflowAction::Block)
    }
}

/// Takes everything queued: (key, record ids) per chunk, in take order.
async fn take_all(b: &super::FileBuffer) -> Vec<(ChunkKey, Vec<u64>)> {
    let mut out = Vec::new();
    while let Some(c) = b.take(u64::MAX).await.unwrap() {
        out.push((c.key.clone(), ids_of(&c.records, |_| true)));
        b.commit(c.id).await.unwrap();
    }
    out
}

#[tokio::test]
async fn appends_go_to_the_open_chunk_of_their_key() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, b) = open(dir.path(), &keyed(16));
    b.append_keyed(&key("a", None), recs(0..2)).await.unwrap();
    b.append_keyed(&key("b", Some(3600)), recs(2..4))
        .await
        .unwrap();
    b.append_keyed(&key("a", None), recs(4..5)).await.unwrap();
    b.append(recs(5..6)).await.unwrap();
    assert_eq!(b.stats().staged_chunks, 3);
    assert_eq!(b.enqueue_staged(Enqueue::All).await.unwrap(), 3);
    let got = take_all(&b).await;
    assert_eq!(
        got,
        vec![
            (key("a", None), vec![0, 1, 4]),
            (key("b", Some(3600)), vec![2, 3]),
            (ChunkKey::default(), vec![5]),
        ]
    );
}

#[tokio::test]
async fn keys_survive_a_crash_while_staged_and_once_queued() {
    let dir = tempfile::tempdir().unwrap();
    let p = keyed(16);
    {
        let (_s, b) = open(dir.path(), &p);
        b.append_keyed(&key("app.web", Some(7200)), recs(0..3))
            .await
            .unwrap();
        b.append_keyed(&key("app.db", None), recs(3..4))
            .await
            .unwrap();
        // Closed: its key is in its metadata. The other stays staged: its key is only in the
        // header of its file. Dropping every handle without closing is the crash.
        b.enqueue_staged(Enqueue::CreatedBefore(u64::MAX))
            .await
            .unwrap();
        b.append_keyed(&key("app.web", Some(10_800)), recs(4..6))
            .await
            .unwrap();
        assert_eq!(b.stats().staged_chunks, 1);
    }
    let (_s, b) = open(dir.path(), &p);
    let mut got = take_all(&b).await;
    got.sort();
    assert_eq!(
        got,
        vec![
            (key("app.db", None), vec![3]),
            (key("app.web", Some(7200)), vec![0, 1, 2]),
            (key("app.web", Some(10_800)), vec![4, 5]),
        ]
    );
}

#[tokio::test]
async fn at_the_bound_the_oldest_open_chunk_is_closed_early_and_nothing_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let (_s, b) = open(dir.path(), &keyed(2));
    for (i, tag) in ["t0", "t1", "t2", "t3", "t1"].iter().enumerate() {
        let i = i as u64;
        b.append_keyed(&key(tag, None), recs(i..i + 1))
            .await
            .unwrap();
        assert!(b.stats().staged_chunks <= 2);
    }
    let s = b.stats();
    // t0 closed for t2, t1 for t3, t2 for t1's second chunk.
    assert_eq!(
        (s.staged_chunks, s.queued_chunks, s.closed_early_chunks),
        (2, 3, 3)
    );
    b.enqueue_staged(Enqueue::All).await.unwrap();
    let got = take_all(&b).await;
    assert_eq!(
        got,
        vec![
            (key("t0", None), vec![0]),
            (key("t1", None), vec![1]),
            (key("t2", None), vec![2]),
            (key("t3", None), vec![3]),
            (key("t1", None), vec![4]),
        ]
    );
}

#[tokio::test]
async fn lazy_time_keyed_chunks_close_when_their_slot_and_the_wait_have_passed() {
    let dir = tempfile::tempdir().unwrap();
    let mut p = keyed(16);
    p.keys.rule.timekey_secs = Some(3600);
    p.keys.timekey_wait_ms = 60_000;
    let (_s, b) = open(dir.path(), &p);
    b.append_keyed(&key("a", Some(0)), recs(0..1))
        .await
        .unwrap();
    b.append_keyed(&key("a", Some(3600)), recs(1..2))
        .await
        .unwrap();
    let slot_end = 3_600_000;
    assert_eq!(
        b.enqueue_staged(Enqueue::SlotEndedBefore(slot_end + 59_999))
            .await
            .unwrap(),
        0
    );
    assert_eq!(
        b.enqueue_staged(Enqueue::SlotEndedBefore(slot_end + 60_000))
            .await
            .unwrap(),
        1
    );
    assert_eq!(take_all(&b).await, vec![(key("a", Some(0)), vec![0])]);
    assert_eq!(b.stats().staged_chunks, 1);
}
