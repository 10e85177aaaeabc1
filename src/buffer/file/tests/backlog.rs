//! The backlog found on disk at startup, as `drain` and the progress logs see it, and
//! `retry_all_now`.

use super::{drain, ids_of, open, policy, recs};
use crate::buffer::config::OverflowAction;
use crate::buffer::{now_ms, Backlog, Buffer, RetryState};

#[tokio::test]
async fn the_backlog_found_at_start_is_counted_down_as_it_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(70, 1 << 20, OverflowAction::Block);
    {
        let (_s, b) = open(dir.path(), &p);
        b.append(recs(0..25)).await.unwrap(); // 7 bytes each: chunks of 10, 10 and 5
        assert_eq!(
            b.stats().backlog,
            Backlog::default(),
            "nothing recovered yet"
        );
    }
    let (_s, b) = open(dir.path(), &p);
    let recovered = Backlog {
        chunks: 3,
        records: 25,
        bytes: 175,
    };
    assert_eq!(b.stats().backlog, recovered);
    b.append(recs(100..105)).await.unwrap();
    assert_eq!(b.stats().backlog, recovered, "new records are not backlog");

    let c = b.take(now_ms()).await.unwrap().unwrap();
    assert_eq!(ids_of(&c.records, |_| true), (0..10).collect::<Vec<_>>());
    b.commit(c.id).await.unwrap();
    let left = Backlog {
        chunks: 2,
        records: 15,
        bytes: 105,
    };
    assert_eq!(b.stats().backlog, left);
    drain(&b).await;
    assert_eq!(b.stats().backlog, Backlog::default());
}

#[tokio::test]
async fn retry_all_now_makes_waiting_chunks_due_and_keeps_their_failure_count() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(70, 1 << 20, OverflowAction::Block);
    let (_s, b) = open(dir.path(), &p);
    b.append(recs(0..10)).await.unwrap();
    let c = b.take(now_ms()).await.unwrap().unwrap();
    let retry = RetryState {
        failures: 3,
        first_failure_ms: Some(now_ms()),
        next_attempt_ms: now_ms() + 3_600_000,
    };
    b.release(c.id, c.delivered, retry).await.unwrap();
    assert!(b.take(now_ms()).await.unwrap().is_none(), "due in an hour");
    b.retry_all_now();
    let c = b.take(now_ms()).await.unwrap().expect("due now");
    assert_eq!(c.retry.failures, 3);
    assert_eq!(c.retry.first_failure_ms, retry.first_failure_ms);
}
