//! Reading a chunk file back in place ([`InPlace`]) gives what the copying assembly gives, and
//! keeps the file's buffer.

use std::ops::Range;

use proptest::prelude::*;

use super::super::codec::{
    assemble_closed, assemble_decoded, scan_chunk_file,
    test_files::{self, frames},
    CodecError, FileEnd, StoredState, CHUNK_HEADER_LEN, MAX_VALUE_DATA,
};
use super::*;

const ID: ChunkId = ChunkId(9);

/// Chunk `ID`'s file with one group commit per element of `appends`.
fn chunk_file(appends: &[Vec<Vec<u8>>]) -> Vec<u8> {
    test_files::chunk_file(ID, appends)
}

type Lost = (Range<u64>, u32, Range<u64>, Vec<u8>, CodecError);
type Outcome = Result<(Records, Option<Lost>), String>;

/// What `read_chunk` did before it read in place: the copying assembly.
fn copying(bytes: &[u8], meta: Option<&ChunkMeta>) -> Outcome {
    let corrupt = |e: CodecError| e.to_string();
    match meta.filter(|m| m.state == StoredState::Queued) {
        Some(meta) => {
            let scan = scan_chunk_file(bytes, ID, FileEnd::Complete).map_err(corrupt)?;
            let gap = scan.gaps.first().cloned();
            let closed = assemble_closed(scan, meta.records, meta.bytes).map_err(corrupt)?;
            let lost = gap.filter(|_| !closed.lost.is_empty()).map(|g| {
                let bytes = bytes[g.start as usize..g.end as usize].to_vec();
                (
                    closed.lost.clone(),
                    g.bad_frames,
                    g.start..g.end,
                    bytes,
                    g.error,
                )
            });
            Ok((closed.records, lost))
        }
        None => {
            let scan = scan_chunk_file(bytes, ID, FileEnd::MayBeTorn).map_err(corrupt)?;
            let (n, b) = (scan.records, scan.bytes);
            Ok((assemble_decoded(scan.values, n, b).map_err(corrupt)?, None))
        }
    }
}

fn in_place(bytes: Vec<u8>, meta: Option<&ChunkMeta>) -> Outcome {
    match from_file(bytes, ID, meta) {
        Ok(r) => Ok((
            r.records,
            r.lost
                .map(|l| (l.records, l.frames, l.at, l.bytes, l.error)),
        )),
        Err(ReadError::Corrupt(why)) => Err(why),
        Err(ReadError::Storage(e)) => Err(format!("storage: {e}")),
    }
}

#[derive(Debug, Clone)]
enum Damage {
    /// Cut the file at this share (per mille) of its frames' bytes: a torn tail.
    Cut(u32),
    /// Flip a bit in the value of these frames (share per mille of the frame count): gaps.
    Rot(Vec<u32>),
    /// Flip a bit anywhere (share per mille of the file).
    Flip(u32, u8),
}

fn record() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        8 => proptest::collection::vec(any::<u8>(), 0..40),
        // Records that run over one or more frames.
        1 => (MAX_VALUE_DATA - 30..2 * MAX_VALUE_DATA + 30, any::<u8>())
            .prop_map(|(len, b)| vec![b; len]),
    ]
}

fn damage() -> impl Strategy<Value = Option<Damage>> {
    proptest::option::of(prop_oneof![
        (0u32..1000).prop_map(Damage::Cut),
        proptest::collection::vec(0u32..1000, 1..3).prop_map(Damage::Rot),
        (0u32..1000, 0u8..8).prop_map(|(at, bit)| Damage::Flip(at, bit)),
    ])
}

fn damaged(mut f: Vec<u8>, d: &Option<Damage>) -> Vec<u8> {
    match d {
        None => {}
        Some(Damage::Cut(share)) => {
            let body = f.len() - CHUNK_HEADER_LEN;
            f.truncate(CHUNK_HEADER_LEN + body * *share as usize / 1000);
        }
        Some(Damage::Rot(shares)) => {
            let fr = frames(&f);
            for share in shares {
                let at = fr[fr.len() * *share as usize / 1000];
                let len = u32::from_le_bytes(f[at..at + 4].try_into().unwrap()) as usize;
                f[at + 4 + 5.min(len - 1)] ^= 0x04;
            }
        }
        Some(Damage::Flip(share, bit)) => {
            let at = f.len() * *share as usize / 1000;
            f[at] ^= 1 << bit;
        }
    }
    f
}

proptest! {
    // Regression seeds live next to this file (read_tests.proptest-regressions), not in a
    // top-level directory of their own.
    #![proptest_config(ProptestConfig {
        cases: 96,
        failure_persistence: Some(Box::new(
            proptest::test_runner::FileFailurePersistence::WithSource("proptest-regressions"),
        )),
        ..ProptestConfig::default()
    })]

    /// Records split across frames, torn tails, corrupt frames (gaps), damaged headers: in
    /// place or copied, the same records, the same lost frames, the same errors.
    #[test]
    fn reading_in_place_gives_what_the_copying_assembly_gives(
        appends in proptest::collection::vec(proptest::collection::vec(record(), 0..6), 1..5),
        damage in damage(),
        closed in any::<bool>(),
    ) {
        let whole = chunk_file(&appends);
        let meta = closed.then(|| {
            scan_chunk_file(&whole, ID, FileEnd::Complete)
                .unwrap()
                .meta(StoredState::Queued)
        });
        let f = damaged(whole, &damage);
        let want = copying(&f, meta.as_ref());
        let got = in_place(f, meta.as_ref());
        prop_assert_eq!(got, want);
    }
}

/// A buffer as `Filesystem::read` returns it, with room to spare as `std::fs::read` may leave.
fn file_buffer(f: &[u8]) -> (Vec<u8>, usize, usize) {
    let mut v = Vec::with_capacity(f.len() + 100);
    v.extend_from_slice(f);
    let (at, cap) = (v.as_ptr() as usize, v.capacity());
    (v, at, cap)
}

#[test]
fn a_chunk_read_in_place_keeps_the_file_buffer() {
    let big = vec![b'x'; MAX_VALUE_DATA + 1000];
    let appends = vec![
        vec![b"one\n".to_vec(), big.clone(), b"two\n".to_vec()],
        vec![b"three\n".to_vec()],
        vec![big.clone(), b"four\n".to_vec()],
    ];
    let f = chunk_file(&appends);
    let all: Vec<Vec<u8>> = appends.iter().flatten().cloned().collect();

    // Staged (no metadata), with a torn tail.
    let (buf, at, cap) = file_buffer(&f[..f.len() - 3]);
    let read = from_file(buf, ID, None).ok().expect("reads");
    assert!(read.lost.is_none());
    assert_eq!(read.records.iter().collect::<Vec<_>>(), all[..4]);
    let (data, _) = read.records.into_parts();
    assert_eq!((data.as_ptr() as usize, data.capacity()), (at, cap));

    // Closed, with a corrupt frame in the middle (the lost records are placeholders).
    let meta = scan_chunk_file(&f, ID, FileEnd::Complete)
        .unwrap()
        .meta(StoredState::Queued);
    let mut rotten = f.clone();
    let fr = frames(&f);
    rotten[fr[2] + 9] ^= 0x04; // the frame of "three\n" alone
    let (buf, at, cap) = file_buffer(&rotten);
    let read = from_file(buf, ID, Some(&meta)).ok().expect("reads");
    assert_eq!(read.lost.as_ref().map(|l| l.records.clone()), Some(3..4));
    let mut want = all.clone();
    want[3].clear();
    assert_eq!(read.records.iter().collect::<Vec<_>>(), want);
    let (data, _) = read.records.into_parts();
    assert_eq!((data.as_ptr() as usize, data.capacity()), (at, cap));
}
