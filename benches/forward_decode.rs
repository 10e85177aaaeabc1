//! Decoding forward messages into an `EventBatch` (msgpack → JSON text), the per-event cost
//! of the forward source: PackedForward with 1,000 records of about 200 bytes of JSON each,
//! plain and gzip-compressed. Reported per record (records/s) and per input byte (MB/s).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use firehose_relay::event::EventTime;
use firehose_relay::source::forward::{decode_message, DecodeOptions, Message};
use rmp::encode as enc;

const RECORDS: usize = 1_000;

/// One `[time, record]` entry whose record is ~200 bytes as JSON.
fn entry(out: &mut Vec<u8>, i: usize) {
    enc::write_array_len(out, 2).unwrap();
    enc::write_ext_meta(out, 8, 0).unwrap();
    out.extend_from_slice(&1_700_000_000u32.to_be_bytes());
    out.extend_from_slice(&(i as u32).to_be_bytes());
    enc::write_map_len(out, 7).unwrap();
    let kv = [
        ("host", "web-12.prod.example.com"),
        ("level", "info"),
        ("method", "GET"),
        ("path", "/api/v1/items/1234567?expand=owner"),
        (
            "message",
            "request completed \"ok\" for user 42 in region ap-northeast-1",
        ),
    ];
    for (k, v) in kv {
        enc::write_str(out, k).unwrap();
        enc::write_str(out, v).unwrap();
    }
    enc::write_str(out, "status").unwrap();
    enc::write_uint(out, 200).unwrap();
    enc::write_str(out, "latency_ms").unwrap();
    enc::write_f64(out, 12.5 + i as f64).unwrap();
}

fn packed_message(compress: bool) -> Vec<u8> {
    let mut payload = Vec::new();
    for i in 0..RECORDS {
        entry(&mut payload, i);
    }
    let mut msg = Vec::new();
    enc::write_array_len(&mut msg, 3).unwrap();
    enc::write_str(&mut msg, "app.access").unwrap();
    if compress {
        use std::io::Write;
        let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        g.write_all(&payload).unwrap();
        payload = g.finish().unwrap();
    }
    enc::write_bin(&mut msg, &payload).unwrap();
    enc::write_map_len(&mut msg, if compress { 2 } else { 1 }).unwrap();
    enc::write_str(&mut msg, "chunk").unwrap();
    enc::write_str(&mut msg, "p8n9gmxTQVC8/nh2wlKKeQ==").unwrap();
    if compress {
        enc::write_str(&mut msg, "compressed").unwrap();
        enc::write_str(&mut msg, "gzip").unwrap();
    }
    msg
}

fn decode(msg: &[u8], opts: &DecodeOptions) -> usize {
    match decode_message(msg, opts, EventTime(0)) {
        Ok(Message::Events(e)) => e.batch.json_bytes(),
        other => panic!("unexpected {other:?}"),
    }
}

fn bench(c: &mut Criterion) {
    let opts = DecodeOptions::default();
    for (name, compress) in [("packed", false), ("packed_gzip", true)] {
        let msg = packed_message(compress);
        let json = decode(&msg, &opts);
        eprintln!(
            "{name}: message {} bytes, {RECORDS} records, {} bytes of JSON ({} per record)",
            msg.len(),
            json,
            json / RECORDS
        );
        let mut g = c.benchmark_group(format!("forward_decode/{name}"));
        g.throughput(Throughput::Elements(RECORDS as u64));
        g.bench_function("records", |b| b.iter(|| decode(black_box(&msg), &opts)));
        g.throughput(Throughput::Bytes(json as u64));
        g.bench_function("json_bytes", |b| b.iter(|| decode(black_box(&msg), &opts)));
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
