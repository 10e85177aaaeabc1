//! Corrupt frames in the middle of a chunk file (issue 15, defect 5): a frame whose length is
//! intact but whose bytes fail their checksum is a gap; the frames after it are kept.

use super::super::test_files::{self, frames};
use super::super::*;
use super::*;

/// Chunk 1's file with one group commit per element of `appends`.
fn chunk_file(appends: &[Vec<Vec<u8>>]) -> Vec<u8> {
    test_files::chunk_file(ChunkId(1), appends)
}

/// Flips a bit in the value of the frame at `at` (its length prefix stays intact).
fn rot(f: &mut [u8], at: usize) {
    f[at + FRAME_PREFIX + 20.min(f.len() - at - FRAME_PREFIX - 1)] ^= 0x04;
}

fn recs(names: &[&str]) -> Vec<Vec<u8>> {
    names.iter().map(|n| n.as_bytes().to_vec()).collect()
}

fn kept(scan: ScannedFile<'_>) -> Vec<Vec<u8>> {
    let (n, b) = (scan.records, scan.bytes);
    assemble_decoded(scan.values, n, b)
        .unwrap()
        .iter()
        .map(<[u8]>::to_vec)
        .collect()
}

fn total_bytes(appends: &[Vec<Vec<u8>>]) -> u64 {
    appends.iter().flatten().map(|r| r.len() as u64).sum()
}

#[test]
fn a_corrupt_frame_in_the_middle_is_a_gap_and_the_frames_after_it_are_kept() {
    let appends = [
        recs(&["a1", "a2"]),
        recs(&["b1-long-enough-to-rot", "b2", "b3"]),
        recs(&["c1", "c2"]),
    ];
    let mut f = chunk_file(&appends);
    let at = frames(&f);
    rot(&mut f, at[1]);
    for end in [FileEnd::MayBeTorn, FileEnd::Complete] {
        let scan = scan_chunk_file(&f, ChunkId(1), end).unwrap();
        assert!(scan.tail.is_none(), "{end:?}: {:?}", scan.tail);
        assert_eq!(scan.valid_len, f.len() as u64, "{end:?}");
        assert_eq!(scan.gaps.len(), 1, "{end:?}");
        let g = &scan.gaps[0];
        assert_eq!((g.start, g.end), (at[1] as u64, at[2] as u64), "{end:?}");
        assert_eq!((g.bad_frames, g.records_before, g.values_before), (1, 2, 1));
        assert!(
            matches!(g.error, CodecError::Checksum { .. }),
            "{:?}",
            g.error
        );
        assert_eq!(kept(scan), recs(&["a1", "a2", "c1", "c2"]), "{end:?}");
    }
    // A closed chunk: the lost records become empty placeholders at their index.
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::Complete).unwrap();
    let closed = assemble_closed(scan, 7, total_bytes(&appends)).unwrap();
    assert_eq!(closed.lost, 2..5);
    let got: Vec<Vec<u8>> = closed.records.iter().map(<[u8]>::to_vec).collect();
    assert_eq!(got, recs(&["a1", "a2", "", "", "", "c1", "c2"]));
    // Metadata that counts fewer records than the file keeps is not trusted.
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::Complete).unwrap();
    assert!(assemble_closed(scan, 3, total_bytes(&appends)).is_err());
    // Nor metadata that counts fewer bytes than the kept records hold.
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::Complete).unwrap();
    assert!(assemble_closed(scan, 7, 3).is_err());
}

#[test]
fn the_records_a_corrupt_frame_cuts_are_lost_whole_on_both_sides() {
    let big = vec![b'x'; MAX_VALUE_DATA + 10];
    // One group commit: "a" and the start of `big` in a full first frame, the rest of `big`
    // and "c" in a short second one; then "d".
    let appends = [
        vec![b"a".to_vec(), big.clone(), b"c".to_vec()],
        recs(&["d"]),
    ];
    let good = chunk_file(&appends);
    let at = frames(&good);
    assert_eq!(at.len(), 3);
    let total = total_bytes(&appends);

    // The short second frame rots: `big` started before it, so "a" is kept (its frame cut
    // after its end), `big` and "c" are lost; the short frame ended a record, so "d" is kept.
    let mut f = good.clone();
    rot(&mut f, at[1]);
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::Complete).unwrap();
    let g = scan.gaps[0].clone();
    assert_eq!(
        (g.start, g.end, g.records_before),
        (at[0] as u64, at[2] as u64, 1)
    );
    assert_eq!(kept(scan), recs(&["a", "d"]));
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::Complete).unwrap();
    let closed = assemble_closed(scan, 4, total).unwrap();
    assert_eq!(closed.lost, 1..3);

    // The full first frame rots: it may end inside a record (it does), so the frame after
    // it is read from its first record end on: `big`'s end is dropped, "c" and "d" kept.
    let mut f = good.clone();
    rot(&mut f, at[0]);
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::MayBeTorn).unwrap();
    let g = scan.gaps[0].clone();
    assert_eq!(
        (g.start, g.end, g.records_before),
        (at[0] as u64, at[2] as u64, 0)
    );
    assert!(scan.tail.is_none());
    assert_eq!(kept(scan), recs(&["c", "d"]));
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::Complete).unwrap();
    let closed = assemble_closed(scan, 4, total).unwrap();
    assert_eq!(closed.lost, 0..2);
    let got: Vec<Vec<u8>> = closed.records.iter().map(<[u8]>::to_vec).collect();
    assert_eq!(got, recs(&["", "", "c", "d"]));
}

#[test]
fn a_corrupt_last_frame_is_the_tail_of_a_staged_file_and_a_gap_of_a_closed_one() {
    let appends = [recs(&["a1", "a2"]), recs(&["b1-long-enough-to-rot", "b2"])];
    let mut f = chunk_file(&appends);
    let at = frames(&f);
    rot(&mut f, at[1]);
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::MayBeTorn).unwrap();
    assert!(scan.gaps.is_empty());
    assert!(matches!(scan.tail, Some(CodecError::Checksum { .. })));
    assert_eq!(scan.valid_len, at[1] as u64);
    assert_eq!(kept(scan), recs(&["a1", "a2"]));

    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::Complete).unwrap();
    assert!(scan.tail.is_none());
    assert_eq!(scan.gaps.len(), 1);
    assert_eq!(scan.gaps[0].end, f.len() as u64);
    let closed = assemble_closed(scan, 4, total_bytes(&appends)).unwrap();
    assert_eq!(closed.lost, 2..4);
    assert_eq!(closed.records.len(), 4);
}

#[test]
fn corrupt_frames_in_a_row_are_one_gap_and_separate_ones_are_not_placed_in_a_closed_chunk() {
    let appends: Vec<Vec<Vec<u8>>> = (0..5)
        .map(|i| vec![format!("record {i} long enough to rot").into_bytes()])
        .collect();
    let good = chunk_file(&appends);
    let at = frames(&good);
    let total = total_bytes(&appends);

    let mut f = good.clone();
    rot(&mut f, at[1]);
    rot(&mut f, at[2]);
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::Complete).unwrap();
    assert_eq!(scan.gaps.len(), 1);
    assert_eq!(scan.gaps[0].bad_frames, 2);
    assert_eq!(
        (scan.gaps[0].start, scan.gaps[0].end),
        (at[1] as u64, at[3] as u64)
    );
    assert_eq!(assemble_closed(scan, 5, total).unwrap().lost, 1..3);

    let mut f = good.clone();
    rot(&mut f, at[1]);
    rot(&mut f, at[3]);
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::MayBeTorn).unwrap();
    assert_eq!(scan.gaps.len(), 2);
    assert_eq!(scan.records, 3, "every readable frame is kept");
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::Complete).unwrap();
    let err = assemble_closed(scan, 5, total).unwrap_err();
    assert!(err.to_string().contains("2 separate stretches"), "{err}");

    // Nothing left: the chunk is quarantined whole.
    let single = chunk_file(&appends[..1]);
    let mut f = single.clone();
    rot(&mut f, CHUNK_HEADER_LEN);
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::Complete).unwrap();
    assert!(assemble_closed(scan, 1, total_bytes(&appends[..1])).is_err());
}

#[test]
fn a_corrupt_length_or_a_gap_with_nothing_whole_after_it_is_a_tail() {
    let appends = [recs(&["a1"]), recs(&["b1"]), recs(&["c1"])];
    let good = chunk_file(&appends);
    let at = frames(&good);
    // The length prefix itself rots: where the next frame starts is unknown.
    let mut f = good.clone();
    f[at[1]] ^= 0x40;
    for end in [FileEnd::MayBeTorn, FileEnd::Complete] {
        let scan = scan_chunk_file(&f, ChunkId(1), end).unwrap();
        assert!(scan.tail.is_some() && scan.gaps.is_empty(), "{end:?}");
        assert_eq!(scan.records, 1);
    }
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::Complete).unwrap();
    assert!(assemble_closed(scan, 3, 6).is_err());

    // A staged file: "a" and the start of `big` (a full frame), a rotten short frame ending
    // that commit, then the first frame of a commit that a crash cut short. Nothing whole
    // follows the rotten frame, so from it on the file is the tail, and the end of "a"'s frame
    // is not kept either (the file is cut at the last frame that ends a record).
    let big = vec![b'x'; MAX_VALUE_DATA + 10];
    let mut f = chunk_file(&[vec![b"a".to_vec(), big.clone()], vec![big.clone()]]);
    let at = frames(&f);
    assert_eq!(at.len(), 4);
    f.truncate(at[3]);
    rot(&mut f, at[1]);
    let scan = scan_chunk_file(&f, ChunkId(1), FileEnd::MayBeTorn).unwrap();
    assert!(scan.gaps.is_empty());
    assert!(
        matches!(scan.tail, Some(CodecError::Checksum { .. })),
        "{:?}",
        scan.tail
    );
    assert_eq!((scan.records, scan.bytes, scan.values.len()), (0, 0, 0));
    assert_eq!(scan.valid_len, CHUNK_HEADER_LEN as u64);
}

/// `new` written over `old` from the start, the file keeping the longer length: a reused file.
fn overwrite(old: &[u8], new: &[u8]) -> Vec<u8> {
    let mut f = old.to_vec();
    f.resize(f.len().max(new.len()), 0);
    f[..new.len()].copy_from_slice(new);
    f
}

fn record_lists() -> impl proptest::strategy::Strategy<Value = Vec<Vec<Vec<u8>>>> {
    use proptest::collection::vec;
    vec(vec(vec(proptest::num::u8::ANY, 0..40), 1..6), 1..5)
}

proptest::proptest! {
    #![proptest_config(proptest::test_runner::Config {
        cases: 256,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..proptest::test_runner::Config::default()
    })]

    /// A reused file holds exactly the new chunk's records, whatever the previous occupant was
    /// (a chunk created for it or reused itself, shorter or longer): its bytes after the new
    /// chunk's data are neither records, nor a cut write, nor corruption.
    #[test]
    fn a_reused_file_holds_exactly_its_chunks_records(
        old in record_lists(),
        old_bound in proptest::bool::ANY,
        new in record_lists(),
        garbage in proptest::collection::vec(proptest::num::u8::ANY, 0..64),
    ) {
        let mut previous = if old_bound {
            test_files::bound_chunk_file(ChunkId(4), &old)
        } else {
            test_files::chunk_file(ChunkId(4), &old)
        };
        previous.extend_from_slice(&garbage);
        let written = test_files::bound_chunk_file(ChunkId(9), &new);
        let f = overwrite(&previous, &written);
        for end in [FileEnd::MayBeTorn, FileEnd::Complete] {
            let scan = scan_chunk_file(&f, ChunkId(9), end).unwrap();
            proptest::prop_assert!(scan.tail.is_none(), "{:?}: {:?}", end, scan.tail);
            proptest::prop_assert!(scan.gaps.is_empty());
            proptest::prop_assert_eq!(scan.valid_len, written.len() as u64);
            proptest::prop_assert_eq!(scan.data_end, written.len() as u64);
            let want: Vec<Vec<u8>> = new.iter().flatten().cloned().collect();
            proptest::prop_assert_eq!(kept(scan), want);
        }
    }

    /// Cut anywhere in its last group, a reused file keeps every group before it, and what of
    /// the cut group is there is a tail (for a staged chunk) or nothing at all, never records.
    #[test]
    fn a_reused_file_cut_in_its_last_group_keeps_the_groups_before(
        old in record_lists(),
        new in record_lists(),
        cut in proptest::num::usize::ANY,
    ) {
        let previous = test_files::chunk_file(ChunkId(4), &old);
        let before = test_files::bound_chunk_file(ChunkId(9), &new[..new.len() - 1]);
        let written = test_files::bound_chunk_file(ChunkId(9), &new);
        let cut = before.len() + cut % (written.len() - before.len());
        let f = overwrite(&previous, &written[..cut]);
        let scan = scan_chunk_file(&f, ChunkId(9), FileEnd::MayBeTorn).unwrap();
        proptest::prop_assert!(scan.gaps.is_empty());
        proptest::prop_assert_eq!(scan.valid_len, before.len() as u64);
        let want: Vec<Vec<u8>> = new[..new.len() - 1].iter().flatten().cloned().collect();
        proptest::prop_assert_eq!(kept(scan), want);
    }
}
