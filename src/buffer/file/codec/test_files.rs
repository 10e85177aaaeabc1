//! Chunk files built for tests of the readers (`scan_tests.rs`, `read_tests.rs`).

use super::{
    bound_header, chunk_file_header, encode_bound_frames, encode_frames, CHUNK_HEADER_LEN,
    FRAME_PREFIX,
};
use crate::buffer::{ChunkId, Records};

fn records(a: &[Vec<u8>]) -> Records {
    let mut r = Records::new();
    for rec in a {
        r.push(rec).unwrap();
    }
    r
}

/// Chunk `id`'s file with one group commit per element of `appends`, each a list of records.
pub fn chunk_file(id: ChunkId, appends: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let mut f = chunk_file_header(id, 77).to_vec();
    for a in appends {
        encode_frames(&records(a), &mut f);
    }
    f
}

/// [`chunk_file`] as written in a reused file: frames bound to chunk `id`.
pub fn bound_chunk_file(id: ChunkId, appends: &[Vec<Vec<u8>>]) -> Vec<u8> {
    let mut f = bound_header(&chunk_file_header(id, 77));
    for a in appends {
        encode_bound_frames(&records(a), id, &mut f);
    }
    f
}

/// File offsets of the frames of `f`, a file of [`chunk_file`] (a torn last frame included
/// while its length is there).
pub fn frames(f: &[u8]) -> Vec<usize> {
    let mut at = CHUNK_HEADER_LEN;
    let mut out = Vec::new();
    while at + FRAME_PREFIX <= f.len() {
        out.push(at);
        at += FRAME_PREFIX + u32::from_le_bytes(f[at..at + 4].try_into().unwrap()) as usize;
    }
    out
}
