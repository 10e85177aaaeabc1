//! Decoding what the file buffer reads back from disk must never panic, whatever the bytes:
//! data values, chunk metadata, keys, chunk files, and whole chunks assembled from several
//! values.
#![no_main]

use firehose_relay::buffer::file::codec;
use firehose_relay::buffer::ChunkId;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte selects how the rest is read; the remainder is the stored bytes.
    let Some((&mode, rest)) = data.split_first() else { return };
    match mode % 5 {
        0 => {
            let _ = codec::decode_value(rest);
        }
        1 => {
            let _ = codec::decode_meta(rest);
        }
        2 => {
            let split = rest.len().min(13);
            let (key, value) = rest.split_at(split);
            let _ = codec::decode_stored(Some(key), value);
        }
        3 => {
            // A chunk file: scanned, then its readable frames assembled against their counts.
            // Whatever scanning accepts up to the last complete record must assemble.
            if let Ok(scan) = codec::scan_chunk_file(rest, ChunkId(1), codec::FileEnd::MayBeTorn) {
                let (records, bytes) = (scan.records, scan.bytes);
                if let Err(e) = codec::assemble_decoded(scan.values, records, bytes) {
                    panic!("scanned frames do not assemble: {e}");
                }
            }
            // As a closed chunk's file, against metadata counting a few more records and
            // bytes than were kept (records lost in gaps): must not panic either.
            if let Ok(scan) = codec::scan_chunk_file(rest, ChunkId(1), codec::FileEnd::Complete) {
                let records = scan.records + scan.gaps.len() as u64;
                let bytes = scan.bytes + 7;
                let _ = codec::assemble_closed(scan, records, bytes);
            }
        }
        _ => {
            // Several values of one chunk, separated by 0xFF 0xFF, assembled against counts
            // taken from the first 4 bytes.
            if rest.len() < 4 {
                return;
            }
            let records = u64::from(u16::from_le_bytes([rest[0], rest[1]]));
            let bytes = u64::from(u16::from_le_bytes([rest[2], rest[3]]));
            let values: Vec<&[u8]> = rest[4..].split(|&b| b == 0xFF).collect();
            let _ = codec::assemble(values, records, bytes);
        }
    }
});
