//! Throughput of the Firehose sink against the in-process fake Firehose over loopback HTTP:
//! 200-byte records, with and without aggregation, 2 and 8 concurrent flush workers, each
//! delivering chunks of 5,000 records (~1 MB, the default chunk size). Reports records/s and
//! MB/s (criterion's throughput is set in bytes; records/s = MB/s × 1e6 / 200).

#[path = "../tests/common/fake_firehose.rs"]
#[allow(dead_code)]
mod fake_firehose;
#[path = "common/firehose_answers.rs"]
mod firehose_answers;
#[path = "../tests/common/http_server.rs"]
#[allow(dead_code)]
mod http_server;
#[path = "../tests/common/sigv4.rs"]
#[allow(dead_code)]
mod sigv4;

use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use firehose_relay::ops::metrics::Metrics;
use firehose_relay::sink::firehose::{FirehoseConfig, FirehoseSink};
use firehose_relay::sink::Sink;

const RECORDS_PER_CHUNK: usize = 5_000;
const RECORD_BYTES: usize = 200;

fn bench(c: &mut Criterion) {
    let fake = fake_firehose::FakeFirehose::http();
    fake.create_stream("bench").allow_key("AKIDBENCH", "x");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let chunk = Arc::new(firehose_answers::chunk(RECORDS_PER_CHUNK, RECORD_BYTES));
    let mut group = c.benchmark_group("firehose_sink");
    group.sample_size(10);
    for aggregation in [false, true] {
        let text = format!(
            "delivery_stream = \"bench\"\nregion = \"us-east-1\"\nendpoint_url = \"{}\"\naggregation = {aggregation}\n[credentials]\ntype = \"static\"\naccess_key_id = \"AKIDBENCH\"\nsecret_access_key = \"x\"\n",
            fake.url
        );
        let cfg: FirehoseConfig = toml::from_str(&text).unwrap();
        let sink = Arc::new(
            rt.block_on(FirehoseSink::build(
                "bench",
                &cfg,
                &Arc::new(Metrics::new()),
            ))
            .unwrap(),
        );
        for workers in [2usize, 8] {
            let name = if aggregation { "aggregated" } else { "plain" };
            group.throughput(Throughput::Bytes(
                (workers * RECORDS_PER_CHUNK * RECORD_BYTES) as u64,
            ));
            group.bench_with_input(
                BenchmarkId::new(name, format!("{workers}_workers")),
                &workers,
                |b, &workers| {
                    b.to_async(&rt).iter(|| {
                        let sink = Arc::clone(&sink);
                        let chunk = Arc::clone(&chunk);
                        async move {
                            let tasks: Vec<_> = (0..workers)
                                .map(|_| {
                                    let (s, c) = (Arc::clone(&sink), Arc::clone(&chunk));
                                    tokio::spawn(async move {
                                        let d = s.deliver(&c).await;
                                        assert!(d.error.is_none(), "{:?}", d.error);
                                    })
                                })
                                .collect();
                            for t in tasks {
                                t.await.unwrap();
                            }
                        }
                    });
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
