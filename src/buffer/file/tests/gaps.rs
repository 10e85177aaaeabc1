//! Corruption in the middle of a chunk (issue 15, defect 5): a frame whose length is intact but
//! whose bytes fail their checksum loses only the records in it. Its bytes go to quarantine,
//! the frames after it are kept and delivered, and it is counted as corruption, not cut as an
//! unacknowledged append. And a torn tail cut without a quarantine copy is counted.

use super::*;
use crate::buffer::file::FileBufferCounters;

/// Opens the buffer of `dir` counting in fresh counters.
fn open_counted(dir: &Path, p: &BufferPolicy) -> (Arc<Store>, FileBuffer, FileBufferCounters) {
    let store = open_store(dir);
    let counters = FileBufferCounters::default();
    let b = FileBuffer::open_counted(Arc::clone(&store), p.clone(), counters.clone()).unwrap();
    (store, b, counters)
}

/// File offsets of the frames of chunk 1's file.
fn frames(store: &Store) -> (std::path::PathBuf, Vec<usize>) {
    let path = chunk_file(&store.chunk_dir("out").unwrap(), ChunkId(1));
    let f = std::fs::read(&path).unwrap();
    let mut at = codec::CHUNK_HEADER_LEN;
    let mut out = Vec::new();
    while at < f.len() {
        out.push(at);
        at += 4 + u32::from_le_bytes(f[at..at + 4].try_into().unwrap()) as usize;
    }
    (path, out)
}

/// Three appends to chunk 1 (records 0..5, 5..8, 8..12), one frame each; closes the chunk if
/// `close`. Then flips a bit in the middle frame's record bytes (its length stays intact) and
/// returns that frame's bytes as they are now.
async fn rot_middle_frame(dir: &Path, p: &BufferPolicy, close: bool) -> Vec<u8> {
    let (s, b) = open(dir, p);
    for r in [0..5, 5..8, 8..12] {
        b.append(recs(r)).await.unwrap();
    }
    if close {
        b.enqueue_staged(Enqueue::All).await.unwrap();
    }
    drop(b);
    let (path, at) = frames(&s);
    assert_eq!(at.len(), 3);
    let mut f = std::fs::read(&path).unwrap();
    f[at[1] + 4 + 30] ^= 0x08;
    std::fs::write(&path, &f).unwrap();
    f[at[1]..at[2]].to_vec()
}

/// The quarantined entries (key, bytes) of every `.bin` file in `dir/quarantine`.
pub(super) fn quarantined(dir: &Path) -> Vec<(String, Vec<u8>)> {
    let Ok(rd) = std::fs::read_dir(dir.join("quarantine")) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in rd {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "bin") {
            let bytes = std::fs::read(&path).unwrap();
            for (k, v) in crate::buffer::file::quarantine::read_entries(&bytes).unwrap() {
                out.push((String::from_utf8(k).unwrap(), v));
            }
        }
    }
    out
}

#[tokio::test]
async fn a_corrupt_frame_in_a_staged_chunk_loses_only_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(1 << 20, 1 << 20, OverflowAction::Block);
    let rotten = rot_middle_frame(dir.path(), &p, false).await;
    {
        let (_s, b, counters) = open_counted(dir.path(), &p);
        let s = b.stats();
        assert_eq!(
            (s.records, s.corrupt_frames, s.quarantined_chunks),
            (9, 1, 0),
            "{s:?}"
        );
        assert_eq!(counters.corrupt_frames.get(), 1);
        assert_eq!(counters.quarantined_chunks.get(), 0);
        let q = quarantined(dir.path());
        assert_eq!(q.len(), 1, "{q:?}");
        assert!(q[0].0.starts_with("frames@"), "{}", q[0].0);
        assert_eq!(q[0].1, rotten, "the corrupt frame's bytes are kept");
    }
    // The chunk is closed now and counts the kept records: a restart finds the frame again,
    // keeps the same records and counts nothing new.
    let (_s, b, counters) = open_counted(dir.path(), &p);
    assert_eq!((b.stats().records, b.stats().corrupt_frames), (9, 0));
    assert_eq!(
        drain(&b).await,
        (0..5).chain(8..12).collect::<Vec<_>>(),
        "the records after the corrupt frame are delivered"
    );
    assert_eq!(counters.corrupt_frames.get(), 0);
    assert_eq!(quarantined(dir.path()).len(), 1, "quarantined once");
}

#[tokio::test]
async fn a_corrupt_frame_in_a_closed_chunk_loses_only_its_records() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(1 << 20, 1 << 20, OverflowAction::Block);
    let rotten = rot_middle_frame(dir.path(), &p, true).await;
    {
        let (_s, b, counters) = open_counted(dir.path(), &p);
        assert_eq!(b.stats().records, 12, "closed chunks are read when taken");
        let c = b
            .take(u64::MAX)
            .await
            .unwrap()
            .expect("the chunk is delivered");
        assert_eq!(c.records.len(), 12, "indices stay those of the metadata");
        assert_eq!(
            ids_of(&c.records, |i| !c.delivered.contains(i)),
            (0..5).chain(8..12).collect::<Vec<_>>()
        );
        assert!((5..8).all(|i| c.delivered.contains(i) && c.records.get(i) == Some(&[][..])));
        let s = b.stats();
        assert_eq!((s.corrupt_frames, s.quarantined_chunks), (1, 0), "{s:?}");
        assert_eq!(counters.corrupt_frames.get(), 1);
        let q = quarantined(dir.path());
        assert_eq!(q.len(), 1, "{q:?}");
        assert_eq!(q[0].1, rotten, "the corrupt frame's bytes are kept");
        // Stopped while delivering (in flight exists only in memory).
    }
    // After a restart the lost records are still marked delivered (durably, before the chunk
    // was handed out), and finding the frame again counts and quarantines nothing new.
    {
        let (_s, b, counters) = open_counted(dir.path(), &p);
        let c = b.take(u64::MAX).await.unwrap().unwrap();
        assert_eq!(
            ids_of(&c.records, |i| !c.delivered.contains(i)),
            (0..5).chain(8..12).collect::<Vec<_>>()
        );
        assert_eq!(
            (b.stats().corrupt_frames, counters.corrupt_frames.get()),
            (0, 0)
        );
        assert_eq!(quarantined(dir.path()).len(), 1, "quarantined once");
        // Delivery fails after records 0 and 1: the retry must send only the rest.
        let mut delivered = c.delivered.clone();
        delivered.insert(0);
        delivered.insert(1);
        b.release(c.id, delivered, RetryState::default())
            .await
            .unwrap();
    }
    let (_s, b, counters) = open_counted(dir.path(), &p);
    let c = b.take(u64::MAX).await.unwrap().unwrap();
    assert_eq!(
        ids_of(&c.records, |i| !c.delivered.contains(i)),
        (2..5).chain(8..12).collect::<Vec<_>>()
    );
    assert_eq!(
        (b.stats().corrupt_frames, counters.corrupt_frames.get()),
        (0, 0)
    );
    assert_eq!(quarantined(dir.path()).len(), 1);
    b.commit(c.id).await.unwrap();
    assert_eq!(drain(&b).await, Vec::<u64>::new());
}

/// A torn end of a staged chunk whose quarantine copy finds no room (here: the quarantine at
/// its limit) is cut anyway, as it was never acknowledged, and counted
/// (`firehose_relay_buffer_tails_cut_without_copy_total`), not only logged.
#[tokio::test]
async fn a_torn_tail_cut_without_a_quarantine_copy_is_counted() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(1 << 20, 1 << 20, OverflowAction::Block);
    let path;
    {
        let (s, b) = open(dir.path(), &p);
        b.append(recs(0..5)).await.unwrap();
        path = chunk_file(&s.chunk_dir("out").unwrap(), ChunkId(1));
    }
    let whole = std::fs::read(&path).unwrap();
    let mut torn = whole.clone();
    torn.extend_from_slice(&[0x30, 0x00]);
    std::fs::write(&path, &torn).unwrap();
    let store = open_store(dir.path());
    store.set_quarantine_budget(Arc::new(crate::buffer::file::space::DirBudget::new(
        store.quarantine_dir(),
        1,
    )));
    let counters = FileBufferCounters::default();
    let b = FileBuffer::open_counted(Arc::clone(&store), p.clone(), counters.clone()).unwrap();
    assert_eq!(
        std::fs::read(&path).unwrap(),
        whole,
        "cut after the last record"
    );
    assert_eq!(counters.tails_cut_without_copy.get(), 1);
    let s = b.stats();
    assert_eq!((s.tails_cut_without_copy, s.records), (1, 5), "{s:?}");
    assert!(quarantined(dir.path()).is_empty());
    assert_eq!(drain(&b).await, (0..5).collect::<Vec<_>>());
}
