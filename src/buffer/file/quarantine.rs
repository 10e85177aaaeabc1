//! Moving an unreadable chunk out of the way: its raw stored bytes go to
//! `data_dir/quarantine/` (fsynced, with a reason file) before the chunk is deleted from the
//! buffer, so nothing is ever silently dropped and an operator can inspect or salvage it.
//!
//! `<output>-<chunk>-<unix ms>.bin` holds the chunk's sled entries (its metadata, and data
//! values of chunks written by the first release) as
//! `u32 LE key length | key | u32 LE value length | value`, repeated; `….chunk` is a copy of
//! the chunk's file if it had one; `….reason.txt` says why.

use std::path::{Path, PathBuf};

use super::store::StoreError;
use crate::buffer::{now_ms, ChunkId};
use crate::fsutil::{path_component, Filesystem, OpenMode};

/// Writes the quarantine files of one chunk; returns the path of the `.bin` file. The chunk may
/// be deleted from the database only after this succeeded.
pub(crate) fn write(
    fs: &impl Filesystem,
    dir: &Path,
    output: &str,
    chunk: ChunkId,
    reason: &str,
    entries: &[(Vec<u8>, Vec<u8>)],
    data_file: Option<&Path>,
) -> Result<PathBuf, StoreError> {
    let stem = format!("{}-{chunk}-{}", path_component(output), now_ms());
    let mut raw = Vec::with_capacity(entries.iter().map(|(k, v)| k.len() + v.len() + 8).sum());
    for (k, v) in entries {
        raw.extend_from_slice(&(k.len() as u32).to_le_bytes());
        raw.extend_from_slice(k);
        raw.extend_from_slice(&(v.len() as u32).to_le_bytes());
        raw.extend_from_slice(v);
    }
    let bin = dir.join(format!("{stem}.bin"));
    let io = |p: &Path, e: std::io::Error| StoreError::io(p.display().to_string(), e);
    fs.write_atomic(&bin, &raw).map_err(|e| io(&bin, e))?;
    if let Some(src) = data_file {
        // Copied, not read into memory: a corrupted file may be of any size.
        let copy = dir.join(format!("{stem}.chunk"));
        fs.copy(src, &copy)
            .and_then(|_| fs.sync_all(&fs.open(&copy, OpenMode::Read)?, &copy))
            .and_then(|()| fs.sync_dir(dir))
            .map_err(|e| io(&copy, e))?;
    }
    let text = format!(
        "output: {output}\nchunk: {chunk}\nreason: {reason}\nentries: {}\n\
         format of .bin: repeated (u32 LE key length, key, u32 LE value length, value); keys \
         are 'd' + chunk id (u64 BE) + seq (u32 BE) for record data, 'm' + chunk id for \
         metadata\nformat of .chunk (if present): the chunk file as it was on disk (see \
         src/buffer/file/mod.rs)\n",
        entries.len()
    );
    let reason_path = dir.join(format!("{stem}.reason.txt"));
    fs.write_atomic(&reason_path, text.as_bytes())
        .map_err(|e| io(&reason_path, e))?;
    Ok(bin)
}

/// Reads back a quarantine `.bin` file (for tests and salvage tools).
pub fn read_entries(bytes: &[u8]) -> Option<Vec<(Vec<u8>, Vec<u8>)>> {
    let mut out = Vec::new();
    let mut rest = bytes;
    let take = |rest: &mut &[u8]| -> Option<Vec<u8>> {
        let len = u32::from_le_bytes(rest.get(..4)?.try_into().ok()?) as usize;
        let v = rest.get(4..4 + len)?.to_vec();
        *rest = &rest[4 + len..];
        Some(v)
    };
    while !rest.is_empty() {
        let k = take(&mut rest)?;
        let v = take(&mut rest)?;
        out.push((k, v));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The output part of every `.bin` file name in `dir`.
    fn output_parts(dir: &Path) -> Vec<String> {
        let mut out: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .filter_map(|n| n.strip_suffix(".bin").map(str::to_owned))
            // `<output>-<chunk: 16 hex digits>-<unix ms>`
            .map(|stem| {
                let (rest, _ms) = stem.rsplit_once('-').unwrap();
                rest.rsplit_once('-').unwrap().0.to_owned()
            })
            .collect();
        out.sort();
        out
    }

    /// Chunk 1 of output `a.b` and chunk 1 of output `a_b` quarantined in the same
    /// millisecond must not overwrite each other: their file names differ by output.
    #[test]
    fn outputs_with_similar_names_get_separate_files() {
        let dir = tempfile::tempdir().unwrap();
        let entries = vec![(b"k".to_vec(), b"v".to_vec())];
        for output in ["a.b", "a_b"] {
            write(
                &crate::fsutil::RealFs,
                dir.path(),
                output,
                ChunkId(1),
                "test",
                &entries,
                None,
            )
            .unwrap();
        }
        let parts = output_parts(dir.path());
        assert_eq!(parts.len(), 2);
        assert_ne!(parts[0], parts[1], "{parts:?}");
    }
}
