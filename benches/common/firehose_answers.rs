//! What the Firehose benchmarks share: the chunk they send and the answer a fake Firehose
//! gives, spelled as the service spells it.
//!
//! Included by `#[path]` from each benchmark that needs it (each bench is its own crate), so a
//! bench that uses only one of the two would warn about the other.
#![allow(dead_code)]

use firehose_relay::buffer::{Chunk, ChunkId, Records};

/// A chunk of `records` JSON records of `record_bytes` bytes each (newline included), each with
/// its sequence number.
pub fn chunk(records: usize, record_bytes: usize) -> Chunk {
    let mut r = Records::new();
    for i in 0..records {
        let mut rec = format!("{{\"seq\":{i},\"msg\":\"").into_bytes();
        rec.resize(record_bytes - 3, b'x');
        rec.extend_from_slice(b"\"}\n");
        r.push(&rec).unwrap();
    }
    Chunk::new(ChunkId(1), 0, r)
}

/// The body of a PutRecordBatch answer for `failed.len()` records, refusing those whose entry
/// is `true` with `ServiceUnavailableException`. Record ids are as long as real ones (56+
/// characters), so that reading the answer costs the relay what it costs in production.
pub fn put_record_batch_answer(failed: &[bool]) -> Vec<u8> {
    let refused = failed.iter().filter(|f| **f).count();
    let mut out = String::with_capacity(64 + failed.len() * 72);
    out.push_str(r#"{"FailedPutCount":"#);
    out.push_str(itoa::Buffer::new().format(refused));
    out.push_str(r#","Encrypted":false,"RequestResponses":["#);
    for (j, f) in failed.iter().enumerate() {
        if j > 0 {
            out.push(',');
        }
        if *f {
            out.push_str(
                r#"{"ErrorCode":"ServiceUnavailableException","ErrorMessage":"Slow down."}"#,
            );
        } else {
            out.push_str(r#"{"RecordId":"49543463076548007577105092703039560359975228518395"#);
            out.push_str(itoa::Buffer::new().format(100_000 + j));
            out.push_str(r#""}"#);
        }
    }
    out.push_str("]}");
    out.into_bytes()
}
