//! sled's segment size: 1 MiB for a new database, the recorded one for an existing database
//! (8 MiB for those of earlier releases, whose first-release chunks may hold values of up to
//! 256 KiB), so that a data directory of an earlier release still opens with its chunks.

use super::super::codec::{ChunkMeta, DataStorage, StoredState};
use super::super::store::{segment_size_of, LEGACY_SEGMENT_SIZE, SEGMENT_SIZE};
use super::*;

/// The `segment_size` recorded in sled's `conf` file of `data_dir`'s database.
fn recorded_segment_size(data_dir: &Path) -> usize {
    let conf = std::fs::read(data_dir.join("buffer/conf")).unwrap();
    let text = String::from_utf8_lossy(&conf[..conf.len() - 4]).into_owned();
    text.lines()
        .find_map(|l| l.strip_prefix("segment_size: "))
        .unwrap()
        .parse()
        .unwrap()
}

#[tokio::test]
async fn a_new_database_has_1_mib_segments_and_keeps_them() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(1 << 20, 1 << 30, OverflowAction::Block);
    {
        let (_store, b) = open(dir.path(), &p);
        b.append(recs(0..100)).await.unwrap();
    }
    assert_eq!(SEGMENT_SIZE, 1 << 20);
    assert_eq!(recorded_segment_size(dir.path()), SEGMENT_SIZE);
    assert_eq!(segment_size_of(&dir.path().join("buffer")), SEGMENT_SIZE);
    let (_store, b) = open(dir.path(), &p);
    assert_eq!(drain(&b).await, (0..100).collect::<Vec<_>>());
}

/// A data directory as an earlier release left it: a database with 8 MiB segments holding a
/// chunk of the first release (its records in sled values of up to 256 KiB) and a chunk file.
#[tokio::test]
async fn a_database_with_8_mib_segments_opens_with_them_and_its_chunks_are_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let p = policy(4 << 20, 1 << 30, OverflowAction::Block);
    // Records of 100 KiB: the first release's values are near their 256 KiB bound.
    let record = |i: u64| {
        let mut rec = format!("{i:06} ").into_bytes();
        rec.resize(100 << 10, b'a' + (i % 26) as u8);
        rec.push(b'\n');
        rec
    };
    let big = |ids: std::ops::Range<u64>| {
        let mut r = Records::new();
        for i in ids {
            r.push(&record(i)).unwrap();
        }
        r
    };
    let old = big(0..20);
    {
        // What the previous release did: sled opened with 8 MiB segments.
        let db = sled::Config::new()
            .path(dir.path().join("buffer"))
            .segment_size(LEGACY_SEGMENT_SIZE)
            .flush_every_ms(None)
            .open()
            .unwrap();
        let tree = db.open_tree("output/out").unwrap();
        let values = codec::split_values(&old);
        let meta = ChunkMeta {
            state: StoredState::Queued,
            created_ms: 1,
            bytes: old.byte_len() as u64,
            records: 20,
            storage: DataStorage::SledValues {
                next_seq: values.len() as u32,
            },
            retry: RetryState::default(),
            delivered: DeliveredSet::new(),
            key: Default::default(),
        };
        tree.insert(meta_key(ChunkId(3)), codec::encode_meta(&meta))
            .unwrap();
        for (seq, v) in values.into_iter().enumerate() {
            assert!(v.len() > 200 << 10, "{}", v.len());
            tree.insert(data_key(ChunkId(3), seq as u32), v).unwrap();
        }
        db.flush().unwrap();
    }
    assert_eq!(
        segment_size_of(&dir.path().join("buffer")),
        LEGACY_SEGMENT_SIZE
    );
    {
        let (_store, b) = open(dir.path(), &p);
        b.append(big(20..25)).await.unwrap();
    }
    // Still 8 MiB (sled would refuse another size), the old chunk and the new records intact.
    assert_eq!(recorded_segment_size(dir.path()), LEGACY_SEGMENT_SIZE);
    let (store, b) = open(dir.path(), &p);
    b.enqueue_staged(Enqueue::All).await.unwrap();
    let mut got = Vec::new();
    while let Some(c) = b.take(u64::MAX).await.unwrap() {
        got.extend(c.records.iter().map(<[u8]>::to_vec));
        b.commit(c.id).await.unwrap();
    }
    assert_eq!(got.len(), 25);
    assert!(got.iter().zip(0..).all(|(r, i)| *r == record(i)));
    assert_eq!(store.tree("out").unwrap().len(), 0);
    // The values were stored inline, never as blob files (which nothing fsyncs).
    let blobs = dir.path().join("buffer/blobs");
    let n = std::fs::read_dir(&blobs).map_or(0, |d| d.count());
    assert_eq!(n, 0, "blob files in {}", blobs.display());
}

/// A database without a readable `conf` but with data was made by an earlier release (every
/// one used 8 MiB segments); one without either is new.
#[test]
fn without_a_recorded_size_a_database_with_data_is_taken_for_an_earlier_releases() {
    let dir = tempfile::tempdir().unwrap();
    assert_eq!(segment_size_of(dir.path()), SEGMENT_SIZE);
    std::fs::write(dir.path().join("db"), b"").unwrap();
    assert_eq!(segment_size_of(dir.path()), SEGMENT_SIZE);
    std::fs::write(dir.path().join("db"), [0u8; 512]).unwrap();
    assert_eq!(segment_size_of(dir.path()), LEGACY_SEGMENT_SIZE);
    std::fs::write(dir.path().join("conf"), b"garbage").unwrap();
    assert_eq!(segment_size_of(dir.path()), LEGACY_SEGMENT_SIZE);
    std::fs::write(
        dir.path().join("conf"),
        b"segment_size: 524288\nuse_compression: false\nversion: 0.34\n\0\0\0\0",
    )
    .unwrap();
    assert_eq!(segment_size_of(dir.path()), 512 << 10);
}
