//! Reading a successful PutRecordBatch answer (`serde_json`, record ids skipped) as the sink
//! does. A call of 500 records of ~200 B is answered with 500 entries of a 56-digit `RecordId`
//! (~38 KB), as Firehose writes them; the partial failure has every tenth record refused. For
//! scale, the same run writes the request body of those 500 records (`put_record_batch_body`:
//! base64 of ~100 KB), work every call does anyway.
//!
//! This bench decided against a hand-written reader of Firehose's spelling: in one run it read
//! the success answer in 17.4 µs against serde's 33.8 µs, saving ~1 % of the relay's CPU (see
//! `src/sink/firehose/response.rs`). `success, count last` is the same success answer with
//! `FailedPutCount` after the entries: read entry by entry, as before the reader learned to only
//! count the entries of an answer whose `FailedPutCount` (first, as Firehose writes it) is 0.

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use firehose_relay::sink::firehose::request::put_record_batch_body;
use firehose_relay::sink::firehose::response::read_success;

const RECORDS: usize = 500;
const RECORD_BYTES: usize = 200;

/// Firehose's spelling: no whitespace, `Encrypted`, `FailedPutCount`, `RequestResponses`.
fn answer(refuse_every: Option<usize>) -> Vec<u8> {
    answer_spelled(refuse_every, false)
}

/// [`answer`], with `FailedPutCount` after the entries if `count_last`.
fn answer_spelled(refuse_every: Option<usize>, count_last: bool) -> Vec<u8> {
    let mut entries = Vec::with_capacity(RECORDS);
    let mut failed = 0;
    for i in 0..RECORDS {
        if refuse_every.is_some_and(|n| i % n == 0) {
            failed += 1;
            entries.push(
                r#"{"ErrorCode":"ServiceUnavailableException","ErrorMessage":"Slow down."}"#
                    .to_owned(),
            );
        } else {
            entries.push(format!(
                r#"{{"RecordId":"495434630765480075771050927030395603599752285183950{i:05}"}}"#
            ));
        }
    }
    let entries = entries.join(",");
    if count_last {
        format!(r#"{{"Encrypted":false,"RequestResponses":[{entries}],"FailedPutCount":{failed}}}"#)
    } else {
        format!(r#"{{"Encrypted":false,"FailedPutCount":{failed},"RequestResponses":[{entries}]}}"#)
    }
    .into_bytes()
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("firehose_response");
    for (name, body) in [
        ("success", answer(None)),
        ("success, count last", answer_spelled(None, true)),
        ("partial", answer(Some(10))),
    ] {
        assert!(read_success(&body).is_some(), "the sink reads {name}");
        group.throughput(Throughput::Elements(RECORDS as u64));
        group.bench_function(name, |b| b.iter(|| read_success(black_box(&body))));
    }
    let records: Vec<Vec<u8>> = (0..RECORDS)
        .map(|i| vec![b'a' + (i % 26) as u8; RECORD_BYTES])
        .collect();
    group.bench_function("request_body (for scale)", |b| {
        b.iter(|| put_record_batch_body("stream", records.iter().map(Vec::as_slice)))
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
