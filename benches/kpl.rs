//! Packing 200-byte JSON lines into KPL aggregated records (`sink::kpl::pack_chunk`, what
//! `kinesis_streams_aggregated` does to every chunk), and reading them back
//! (`sink::kpl::deaggregate`). The chunk holds 20,000 lines (4 MB, four aggregated records of
//! 1 MiB). For scale, the same run times the two costs packing cannot avoid: one copy of the
//! bytes and the MD5 of every aggregated record.
//!
//! It prints how many lines one aggregated record carries: the factor by which aggregation cuts
//! the use of a shard's 1,000 records/s quota (issue 19 asks for at least 100).

use criterion::{black_box, criterion_group, criterion_main, Criterion, Throughput};
use firehose_relay::buffer::{Chunk, ChunkId, Records};
use firehose_relay::sink::kpl::{deaggregate, pack_chunk, PartitionKeys, MAX_RECORD_BYTES};
use md5::Digest;

const LINES: usize = 20_000;
const LINE_BYTES: usize = 200;

fn line(n: usize) -> Vec<u8> {
    let mut s = format!("{{\"time\":\"2026-12-03T10:00:00Z\",\"n\":{n},\"msg\":\"").into_bytes();
    while s.len() < LINE_BYTES - 3 {
        s.push(b'a' + (s.len() % 26) as u8);
    }
    s.extend_from_slice(b"\"}\n");
    s
}

fn bench(c: &mut Criterion) {
    let mut records = Records::new();
    for n in 0..LINES {
        records.push(&line(n)).expect("4 MB fit a chunk");
    }
    let bytes = records.byte_len() as u64;
    let chunk = Chunk::new(ChunkId(1), 0, records);
    let keys = PartitionKeys::Random;

    let packed = pack_chunk(&chunk, &keys, MAX_RECORD_BYTES);
    let per_aggregate = LINES as f64 / packed.aggregates.len() as f64;
    let full = packed.indices(0).len();
    println!(
        "kpl: {LINES} lines of {LINE_BYTES} B -> {} aggregated records; a full one carries {full} \
         lines ({:.0} per record on average): records/s quota use cut {full}x",
        packed.aggregates.len(),
        per_aggregate
    );
    assert!(
        full >= 100,
        "aggregation must cut the records/s quota use 100x"
    );

    let mut group = c.benchmark_group("kpl");
    group.throughput(Throughput::Bytes(bytes));
    group.bench_function("pack_chunk 20k x 200 B", |b| {
        b.iter(|| pack_chunk(black_box(&chunk), &keys, MAX_RECORD_BYTES))
    });
    group.bench_function("copy (for scale)", |b| {
        b.iter(|| black_box(chunk.records.as_bytes()).to_vec())
    });
    group.bench_function("md5 (for scale)", |b| {
        b.iter(|| {
            for span in chunk.records.as_bytes().chunks(MAX_RECORD_BYTES) {
                black_box(md5::Md5::digest(span));
            }
        })
    });
    let blobs: Vec<&[u8]> = packed.aggregates.iter().map(|a| &a.data[..]).collect();
    group.bench_function("deaggregate", |b| {
        b.iter(|| {
            for blob in &blobs {
                black_box(deaggregate(blob).expect("valid"));
            }
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
