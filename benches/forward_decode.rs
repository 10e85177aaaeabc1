//! Decoding forward messages into an `EventBatch` (msgpack → JSON text), the per-event cost
//! of the forward source: PackedForward with 1,000 records of about 200 bytes of JSON each,
//! plain and gzip-compressed, and 1,000 records shaped as Fluent Bit's Kubernetes filter leaves
//! them (a log line and the pod's metadata in a nested map). Reported per record (records/s)
//! and per input byte (MB/s).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use firehose_relay::event::EventTime;
use firehose_relay::source::forward::{decode_message, DecodeOptions, Message};
use rmp::encode as enc;

const RECORDS: usize = 1_000;

/// The start of entry `i`: `[` and its time (an EventTime ext, `i` nanoseconds), before the
/// record.
fn entry_time(out: &mut Vec<u8>, i: usize) {
    enc::write_array_len(out, 2).unwrap();
    enc::write_ext_meta(out, 8, 0).unwrap();
    out.extend_from_slice(&1_700_000_000u32.to_be_bytes());
    out.extend_from_slice(&(i as u32).to_be_bytes());
}

/// One `[time, record]` entry whose record is ~200 bytes as JSON.
fn entry(out: &mut Vec<u8>, i: usize) {
    entry_time(out, i);
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

/// One entry shaped as Fluent Bit's Kubernetes filter leaves it (~600 bytes of JSON): a log
/// line, and a nested map of the pod's metadata that repeats from record to record.
fn nested_entry(out: &mut Vec<u8>, i: usize) {
    entry_time(out, i);
    enc::write_map_len(out, 4).unwrap();
    enc::write_str(out, "log").unwrap();
    let log = format!(
        "2026-12-03T10:00:{:02}.123Z INFO request {i} completed in 12 ms",
        i % 60
    );
    enc::write_str(out, &log).unwrap();
    enc::write_str(out, "stream").unwrap();
    enc::write_str(out, "stdout").unwrap();
    enc::write_str(out, "time").unwrap();
    enc::write_str(out, "2026-12-03T10:00:00.123456789Z").unwrap();
    enc::write_str(out, "kubernetes").unwrap();
    let meta = [
        ("pod_name", "checkout-7d9f8b6c5d-x2k4q"),
        ("namespace_name", "shop"),
        ("pod_id", "0b7e3f0e-3c1a-4a57-9d0c-2f6f1e9b8a11"),
        ("host", "ip-10-0-12-34.ec2.internal"),
        ("container_name", "checkout"),
        ("docker_id", "4f1c2a9e8b7d6c5f4e3d2c1b0a9f8e7d"),
        (
            "container_image",
            "registry.example.com/shop/checkout:1.42.0",
        ),
    ];
    enc::write_map_len(out, meta.len() as u32 + 1).unwrap();
    for (k, v) in meta {
        enc::write_str(out, k).unwrap();
        enc::write_str(out, v).unwrap();
    }
    enc::write_str(out, "labels").unwrap();
    enc::write_map_len(out, 2).unwrap();
    for (k, v) in [("app", "checkout"), ("pod-template-hash", "7d9f8b6c5d")] {
        enc::write_str(out, k).unwrap();
        enc::write_str(out, v).unwrap();
    }
}

/// Writes the `i`-th `[time, record]` entry of a message.
type Entry = fn(&mut Vec<u8>, usize);

fn packed_message(compress: bool, entry: Entry) -> Vec<u8> {
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
    let shapes: [(&str, bool, Entry); 3] = [
        ("packed", false, entry),
        ("packed_gzip", true, entry),
        ("packed_kubernetes", false, nested_entry),
    ];
    for (name, compress, entry) in shapes {
        let msg = packed_message(compress, entry);
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
