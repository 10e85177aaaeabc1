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

/// One step of the model test under faults.
#[derive(Debug, Clone)]
enum FaultStep {
    /// A step of the fault-free model.
    Plain(Step),
    /// The next call of this kind fails: 0 = fdatasync of a chunk file (EIO), 1 = a short
    /// write to a chunk file (ENOSPC), 2 = opening a chunk file (EMFILE), 3 = fdatasync of the
    /// database (EIO), 4 = renaming a chunk file for a purge (EIO).
    Fault(u8),
    /// Drop everything, lose every unsynced byte of the chunk files, and reopen.
    PowerLoss,
}

fn fault_step() -> impl Strategy<Value = FaultStep> {
    prop_oneof![
        8 => step().prop_map(FaultStep::Plain),
        2 => (0u8..5).prop_map(FaultStep::Fault),
        1 => Just(FaultStep::PowerLoss),
    ]
}

fn arm(fs: &FaultFs, kind: u8) -> bool {
    use crate::fsutil::faults::{Fault, FsOp};
    let (op, path, fault) = match kind {
        0 => (FsOp::SyncData, ".chunk", Fault::Errno(libc::EIO)),
        1 => (FsOp::Write, ".chunk", Fault::ShortWrite(libc::ENOSPC)),
        2 => (FsOp::Open, ".chunk", Fault::Errno(libc::EMFILE)),
        3 => (FsOp::SyncData, "buffer/db", Fault::Errno(libc::EIO)),
        _ => (FsOp::Rename, ".purged", Fault::Errno(libc::EIO)),
    };
    fs.fail_once(op, path, fault);
    // EIO poisons the store (restart needed); ENOSPC and EMFILE do not.
    matches!(fault, Fault::ShortWrite(_)) || op == FsOp::Open
}

use super::faults::try_open_fs;
use crate::fsutil::faults::FaultFs;

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 24,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    /// Under random injected faults (failed fdatasyncs, short writes, EMFILE, a failed database
    /// sync, a failed purge) and power losses: every record whose append was acknowledged is
    /// delivered or still buffered after recovery, never lost (so nothing was acknowledged
    /// after a failed sync); records of failed appends may come back (never acknowledged, so
    /// at-least-once allows it); after a fault that does not poison the store (ENOSPC,
    /// EMFILE) appends resume without a restart.
    #[test]
    fn acknowledged_records_survive_faults_and_power_losses(steps in proptest::collection::vec(fault_step(), 1..40)) {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
        rt.block_on(async {
            let dir = tempfile::tempdir().unwrap();
            let fs = FaultFs::new();
            let p = policy(50, 1 << 30, OverflowAction::Block);
            let reopen = |fs: &FaultFs| {
                // A fault may hit recovery too; a restart after it is what an operator does.
                for _ in 0..5 {
                    match try_open_fs(dir.path(), &p, fs) {
                        Ok(v) => return v,
                        Err(_) => fs.clear(),
                    }
                }
                panic!("the store does not reopen");
            };
            let (mut store, mut b) = reopen(&fs);
            let mut next_id = 0u64;
            let mut kept: BTreeSet<u64> = BTreeSet::new();
            let mut maybe: BTreeSet<u64> = BTreeSet::new();
            let mut in_flight: BTreeMap<ChunkId, crate::buffer::Chunk> = BTreeMap::new();
            let mut armed: Option<bool> = None;
            for s in steps {
                let mut restart = false;
                match s {
                    FaultStep::Fault(kind) => armed = Some(arm(&fs, kind)),
                    FaultStep::PowerLoss => {
                        drop(b);
                        drop(store);
                        fs.clear();
                        fs.power_loss();
                        in_flight.clear();
                        (store, b) = reopen(&fs);
                        armed = None;
                    }
                    FaultStep::Plain(Step::Append(n)) => {
                        let n = u64::from(n);
                        let ids = next_id..next_id + n;
                        next_id += n;
                        match b.append(recs(ids.clone())).await {
                            Ok(()) => kept.extend(ids),
                            Err(_) => {
                                maybe.extend(ids);
                                match armed.take() {
                                    // Transient: appends work again without a restart (a
                                    // full volume is checked again every 250 ms).
                                    Some(true) => {
                                        fs.clear();
                                        let mut res = Err(None);
                                        for _ in 0..30 {
                                            let ids = next_id..next_id + 1;
                                            next_id += 1;
                                            match b.append(recs(ids.clone())).await {
                                                Ok(()) => {
                                                    kept.extend(ids);
                                                    res = Ok(());
                                                    break;
                                                }
                                                Err(e) => {
                                                    maybe.extend(ids);
                                                    res = Err(Some(e.to_string()));
                                                    tokio::time::sleep(Duration::from_millis(100)).await;
                                                }
                                            }
                                        }
                                        prop_assert!(res.is_ok(), "no resume after a transient fault: {:?}", res);
                                    }
                                    _ => restart = true,
                                }
                            }
                        }
                    }
                    FaultStep::Plain(Step::EnqueueAll) => {
                        restart = b.enqueue_staged(Enqueue::All).await.is_err();
                    }
                    FaultStep::Plain(Step::Take) => match b.take(u64::MAX).await {
                        Ok(Some(c)) => {
                            for id in ids_of(&c.records, |i| !c.delivered.contains(i)) {
                                prop_assert!(kept.contains(&id) || maybe.contains(&id), "record {} offered after delivery", id);
                            }
                            in_flight.insert(c.id, c);
                        }
                        Ok(None) => {}
                        Err(_) => restart = true,
                    },
                    FaultStep::Plain(Step::Commit(i)) if !in_flight.is_empty() => {
                        let id = *in_flight.keys().nth(i % in_flight.len()).unwrap();
                        let c = in_flight.remove(&id).unwrap();
                        let gone = ids_of(&c.records, |i| !c.delivered.contains(i));
                        let ok = b.commit(id).await.is_ok();
                        for r in gone {
                            kept.remove(&r);
                            // Delivered: a failed commit may resend them (at-least-once).
                            if ok {
                                maybe.remove(&r);
                            } else {
                                maybe.insert(r);
                            }
                        }
                        restart = !ok;
                    }
                    FaultStep::Plain(Step::Release(i, mask)) if !in_flight.is_empty() => {
                        let id = *in_flight.keys().nth(i % in_flight.len()).unwrap();
                        let c = in_flight.remove(&id).unwrap();
                        let mut delivered = c.delivered.clone();
                        let mut gone = Vec::new();
                        for idx in c.pending().collect::<Vec<_>>() {
                            if mask & (1 << (idx % 64)) != 0 {
                                delivered.insert(idx);
                                gone.push(ids_of(&c.records, |j| j == idx)[0]);
                            }
                        }
                        let ok = b.release(id, delivered, RetryState::default()).await.is_ok();
                        for r in gone {
                            kept.remove(&r);
                            // Delivered: if the release failed they may be resent.
                            if ok {
                                maybe.remove(&r);
                            } else {
                                maybe.insert(r);
                            }
                        }
                        restart = !ok;
                    }
                    FaultStep::Plain(Step::Commit(_) | Step::Release(..)) => {}
                    FaultStep::Plain(Step::Restart) => restart = true,
                }
                if restart {
                    drop(b);
                    drop(store);
                    fs.clear();
                    in_flight.clear();
                    (store, b) = reopen(&fs);
                    armed = None;
                }
            }
            fs.clear();
            for (id, c) in std::mem::take(&mut in_flight) {
                b.release(id, c.delivered, RetryState::default()).await.unwrap();
            }
            let got = drain(&b).await;
            let got_set: BTreeSet<u64> = got.iter().copied().collect();
            let lost: Vec<&u64> = kept.difference(&got_set).collect();
            prop_assert!(lost.is_empty(), "acknowledged records lost: {:?}", lost);
            let unknown: Vec<&u64> = got_set.iter().filter(|r| !kept.contains(r) && !maybe.contains(r)).collect();
            prop_assert!(unknown.is_empty(), "records offered again after a successful commit or release: {:?}", unknown);
            drop(store);
            Ok(())
        })?;
    }
}
