//! The model test: random appends, takes, commits, releases and restarts against a plain
//! in-memory model of what must be delivered.

use super::*;

/// One step of the model test.
#[derive(Debug, Clone)]
enum Step {
    /// Append this many records.
    Append(u8),
    /// Close the staged chunk.
    EnqueueAll,
    /// Take a chunk.
    Take,
    /// Commit the n-th in-flight chunk.
    Commit(usize),
    /// Release the n-th in-flight chunk, marking the records selected by the mask delivered.
    Release(usize, u64),
    /// Drop everything and reopen (a crash: in-flight work is forgotten).
    Restart,
}

fn step() -> impl Strategy<Value = Step> {
    prop_oneof![
        4 => (1u8..12).prop_map(Step::Append),
        1 => Just(Step::EnqueueAll),
        3 => Just(Step::Take),
        2 => any::<usize>().prop_map(Step::Commit),
        2 => (any::<usize>(), any::<u64>()).prop_map(|(i, m)| Step::Release(i, m)),
        1 => Just(Step::Restart),
    ]
}

proptest! {
    // Regression seeds live next to this file (tests.proptest-regressions), not in a top-level
    // directory of their own.
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    /// Every record is kept exactly until it is acknowledged as delivered: a taken chunk only
    /// offers records not yet delivered, and after any sequence of operations and restarts,
    /// draining the buffer yields exactly the undelivered records, each once.
    #[test]
    fn every_record_is_kept_exactly_until_acknowledged(steps in proptest::collection::vec(step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let p = policy(50, 1 << 30, OverflowAction::Block);
            let (mut store, mut b) = open(dir.path(), &p);
            let mut next_id = 0u64;
            let mut kept: BTreeSet<u64> = BTreeSet::new();
            let mut in_flight: BTreeMap<ChunkId, crate::buffer::Chunk> = BTreeMap::new();
            for s in steps {
                match s {
                    Step::Append(n) => {
                        let n = u64::from(n);
                        b.append(recs(next_id..next_id + n)).await.unwrap();
                        kept.extend(next_id..next_id + n);
                        next_id += n;
                    }
                    Step::EnqueueAll => { b.enqueue_staged(Enqueue::All).await.unwrap(); }
                    Step::Take => {
                        if let Some(c) = b.take(u64::MAX).await.unwrap() {
                            for id in ids_of(&c.records, |i| !c.delivered.contains(i)) {
                                prop_assert!(kept.contains(&id), "record {} offered after delivery", id);
                            }
                            in_flight.insert(c.id, c);
                        }
                    }
                    Step::Commit(i) if !in_flight.is_empty() => {
                        let id = *in_flight.keys().nth(i % in_flight.len()).unwrap();
                        let c = in_flight.remove(&id).unwrap();
                        b.commit(id).await.unwrap();
                        for r in ids_of(&c.records, |i| !c.delivered.contains(i)) {
                            kept.remove(&r);
                        }
                    }
                    Step::Release(i, mask) if !in_flight.is_empty() => {
                        let id = *in_flight.keys().nth(i % in_flight.len()).unwrap();
                        let c = in_flight.remove(&id).unwrap();
                        let mut delivered = c.delivered.clone();
                        for idx in c.pending().collect::<Vec<_>>() {
                            if mask & (1 << (idx % 64)) != 0 {
                                delivered.insert(idx);
                                kept.remove(&ids_of(&c.records, |j| j == idx)[0]);
                            }
                        }
                        b.release(id, delivered, RetryState::default()).await.unwrap();
                    }
                    Step::Commit(_) | Step::Release(..) => {}
                    Step::Restart => {
                        drop(b);
                        drop(store);
                        in_flight.clear();
                        (store, b) = open(dir.path(), &p);
                    }
                }
                let s = b.stats();
                prop_assert!(s.records >= kept.len() as u64);
            }
            // Workers that were still busy hand their chunks back unchanged.
            for (id, c) in std::mem::take(&mut in_flight) {
                b.release(id, c.delivered, RetryState::default()).await.unwrap();
            }
            let mut got = drain(&b).await;
            got.sort_unstable();
            let want: Vec<u64> = kept.into_iter().collect();
            prop_assert_eq!(got, want);
            prop_assert_eq!(b.stats().records, 0);
            drop(store);
            Ok(())
        })?;
    }
}
