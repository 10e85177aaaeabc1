//! File buffer throughput.
//!
//! * `durable_append/W`: W concurrent writers each append `ROUNDS` batches of `BATCH` 200-byte
//!   records (a small forward message each); every append resolves only after its chunk file
//!   (and, when it changed, the metadata database) is fdatasynced.
//! * `write_fdatasync_ceiling/W`: the same bytes written to a plain file with `write` and one
//!   `fdatasync` per round of W batches: a perfect group commit with no database at all, the
//!   ceiling the durable append is compared against.
//!   `overwrite_fdatasync_ceiling/W` does the same over a preallocated file (no file growth,
//!   so no journal commit per fdatasync: the stricter ceiling).
//! * `take_purge`: a backlog of `BACKLOG` (1 GiB) in 1 MiB chunks (built before timing) is
//!   taken and committed (purged durably) until empty.
//!
//! Elements are records (200 bytes each).

use std::io::{Seek, SeekFrom, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use firehose_relay::buffer::config::{FlushMode, OverflowAction};
use firehose_relay::buffer::file::{FileBuffer, Store};
use firehose_relay::buffer::policy::BufferPolicy;
use firehose_relay::buffer::{Buffer, Enqueue, Records};
use prometheus_client::metrics::counter::Counter;

const RECORD: usize = 200;
const BATCH: usize = 64;
const ROUNDS: usize = 16;
const BACKLOG: usize = 1 << 30;

fn policy() -> BufferPolicy {
    BufferPolicy {
        output: "bench".into(),
        chunk_limit_size: 1 << 20,
        chunk_limit_records: None,
        total_limit_size: 8 << 30,
        flush_mode: FlushMode::Interval,
        overflow_action: OverflowAction::Block,
        keys: Default::default(),
    }
}

fn batch(first: usize) -> Records {
    let mut r = Records::with_capacity(BATCH, BATCH * RECORD);
    for i in first..first + BATCH {
        let mut line = format!("{{\"seq\":{i},\"msg\":\"");
        line.extend(std::iter::repeat_n('x', RECORD - line.len() - 3));
        line.push_str("\"}\n");
        r.push(line.as_bytes()).unwrap();
    }
    r
}

fn open(dir: &std::path::Path) -> (Arc<Store>, Arc<FileBuffer>) {
    let store = Store::open(dir, 64 << 20).unwrap();
    let b = FileBuffer::open(Arc::clone(&store), policy(), Counter::default()).unwrap();
    (store, Arc::new(b))
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

fn durable_append(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("durable_append");
    g.sample_size(10);
    for writers in [1usize, 4, 16] {
        g.throughput(Throughput::Elements((writers * ROUNDS * BATCH) as u64));
        g.bench_with_input(
            BenchmarkId::from_parameter(writers),
            &writers,
            |bench, &w| {
                let dir = tempfile::tempdir().unwrap();
                let (_store, b) = open(dir.path());
                let mut drained = 0usize;
                bench.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        rt.block_on(async {
                            let tasks: Vec<_> = (0..w)
                                .map(|t| {
                                    let b = Arc::clone(&b);
                                    tokio::spawn(async move {
                                        for r in 0..ROUNDS {
                                            b.append(batch((t * ROUNDS + r) * BATCH))
                                                .await
                                                .unwrap();
                                        }
                                    })
                                })
                                .collect();
                            for t in tasks {
                                t.await.unwrap();
                            }
                        });
                        total += start.elapsed();
                        // Keep the database small between iterations (not timed).
                        rt.block_on(async {
                            b.enqueue_staged(Enqueue::All).await.unwrap();
                            while let Some(c) = b.take(u64::MAX).await.unwrap() {
                                drained += c.records.len();
                                b.commit(c.id).await.unwrap();
                            }
                        });
                    }
                    total
                });
            },
        );
        g.bench_with_input(
            BenchmarkId::new("write_fdatasync_ceiling", writers),
            &writers,
            |bench, &w| {
                let dir = tempfile::tempdir().unwrap();
                let path = dir.path().join("ceiling");
                let bytes: Vec<u8> = (0..w)
                    .flat_map(|t| batch(t * BATCH).into_parts().0)
                    .collect();
                bench.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let mut f = std::fs::File::create(&path).unwrap();
                        let start = Instant::now();
                        for _ in 0..ROUNDS {
                            f.write_all(&bytes).unwrap();
                            f.sync_data().unwrap();
                        }
                        total += start.elapsed();
                    }
                    total
                });
            },
        );
        g.bench_with_input(
            BenchmarkId::new("overwrite_fdatasync_ceiling", writers),
            &writers,
            |bench, &w| {
                // Over a preallocated, synced file, fdatasync flushes data only (as for sled's
                // reused segments); extending a file also commits the file system journal.
                let dir = tempfile::tempdir().unwrap();
                let bytes: Vec<u8> = (0..w)
                    .flat_map(|t| batch(t * BATCH).into_parts().0)
                    .collect();
                let mut f = std::fs::File::create(dir.path().join("ceiling")).unwrap();
                f.write_all(&vec![0u8; bytes.len() * ROUNDS]).unwrap();
                f.sync_all().unwrap();
                bench.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        f.seek(SeekFrom::Start(0)).unwrap();
                        let start = Instant::now();
                        for _ in 0..ROUNDS {
                            f.write_all(&bytes).unwrap();
                            f.sync_data().unwrap();
                        }
                        total += start.elapsed();
                    }
                    total
                });
            },
        );
    }
    g.finish();
}

fn take_purge(c: &mut Criterion) {
    let rt = runtime();
    let mut g = c.benchmark_group("take_purge");
    g.sample_size(10).sampling_mode(SamplingMode::Flat);
    let records = BACKLOG / RECORD;
    g.throughput(Throughput::Elements(records as u64));
    g.bench_function(format!("backlog_{}MiB", BACKLOG >> 20), |bench| {
        bench.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let dir = tempfile::tempdir().unwrap();
                let (_store, b) = open(dir.path());
                rt.block_on(async {
                    let mut i = 0;
                    while i < records {
                        // Large appends build the backlog quickly; not timed.
                        let mut r = Records::with_capacity(BATCH * 16, BATCH * 16 * RECORD);
                        for k in 0..16 {
                            r.extend(&batch(i + k * BATCH)).unwrap();
                        }
                        b.append(r).await.unwrap();
                        i += BATCH * 16;
                    }
                    b.enqueue_staged(Enqueue::All).await.unwrap();
                });
                let start = Instant::now();
                rt.block_on(async {
                    while let Some(c) = b.take(u64::MAX).await.unwrap() {
                        b.commit(c.id).await.unwrap();
                    }
                });
                total += start.elapsed();
            }
            total
        });
    });
    g.finish();
}

criterion_group!(benches, durable_append, take_purge);
criterion_main!(benches);
