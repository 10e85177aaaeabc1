//! The Firehose sink against an in-process fake Firehose: batching limits, partial failures,
//! whole-call failures, oversized records, aggregation and gzip. Each test drives the sink the
//! way a flush worker does: deliver, remember what was delivered, try again with the rest.

mod common;

use std::collections::BTreeMap;
use std::io::Read;
use std::sync::Arc;
use std::time::Duration;

use common::fake_firehose::{FakeFirehose, Fault};
use firehose_relay::buffer::{Chunk, ChunkId, ChunkKey, Records};
use firehose_relay::ops::metrics::Metrics;
use firehose_relay::sink::firehose::{FirehoseConfig, FirehoseSink};
use firehose_relay::sink::{Delivery, ErrorClass, Sink};

/// The fake with the stream and the static key pair the sink's config names.
fn ready_fake(fake: FakeFirehose) -> FakeFirehose {
    fake.create_stream("test-stream")
        .allow_key("AKIDSTATICTEST", "not-a-secret");
    fake
}

fn config(fake: &FakeFirehose, extra: &str) -> FirehoseConfig {
    let ca = match &fake.ca_pem {
        Some(pem) => {
            let path =
                std::env::temp_dir().join(format!("fake-firehose-ca-{}.pem", fake.addr.port()));
            std::fs::write(&path, pem).unwrap();
            format!("tls_ca_file = {:?}\n", path.display().to_string())
        }
        None => String::new(),
    };
    let text = format!(
        r#"
delivery_stream = "test-stream"
region = "us-east-1"
endpoint_url = "{url}"
{timeout}{ca}{extra}
[credentials]
type = "static"
access_key_id = "AKIDSTATICTEST"
secret_access_key = "not-a-secret"
"#,
        url = fake.url,
        timeout = if extra.contains("request_timeout") {
            ""
        } else {
            "request_timeout = \"2s\"\n"
        },
    );
    toml::from_str(&text).unwrap()
}

async fn sink(fake: &FakeFirehose, extra: &str) -> FirehoseSink {
    FirehoseSink::build("fh", &config(fake, extra), &Arc::new(Metrics::new()))
        .await
        .unwrap()
}

fn records(n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut r = format!("{{\"seq\":{i},\"pad\":\"").into_bytes();
            r.resize(size.max(r.len() + 3) - 3, b'x');
            r.extend_from_slice(b"\"}\n");
            r
        })
        .collect()
}

fn chunk(recs: &[Vec<u8>]) -> Chunk {
    let mut r = Records::new();
    for rec in recs {
        r.push(rec).unwrap();
    }
    Chunk::new(ChunkId(1), 0, r)
}

/// Delivers like a flush worker: up to `attempts` times, keeping what was delivered or
/// rejected. Returns the last delivery and the chunk.
async fn deliver_until_done(
    sink: &FirehoseSink,
    mut c: Chunk,
    attempts: usize,
) -> (Chunk, Vec<Delivery>) {
    let mut outcomes = Vec::new();
    for _ in 0..attempts {
        let d = sink.deliver(&c).await;
        c.delivered.union_with(&d.delivered);
        for (i, _) in &d.rejected {
            c.delivered.insert(*i);
        }
        let done = d.error.is_none();
        outcomes.push(d);
        if done {
            break;
        }
    }
    (c, outcomes)
}

/// Counts of each record.
fn counts(recs: &[Vec<u8>]) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for r in recs {
        *m.entry(r.clone()).or_default() += 1;
    }
    m
}

/// Every input record arrived; a record arrived twice only if a call carrying it was not
/// confirmed to the client.
fn assert_all_delivered_without_unexplained_duplicates(fake: &FakeFirehose, input: &[Vec<u8>]) {
    let got = counts(&fake.accepted());
    let unconfirmed = counts(&fake.unconfirmed());
    for r in input {
        let n = got.get(r).copied().unwrap_or(0);
        assert!(n >= 1, "record lost: {}", String::from_utf8_lossy(r));
        if n > 1 {
            assert!(
                unconfirmed.contains_key(r),
                "unexplained duplicate: {}",
                String::from_utf8_lossy(r)
            );
        }
    }
    assert_eq!(got.len(), input.len(), "nothing but the input arrived");
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
}

#[tokio::test]
async fn partial_failures_resend_only_the_failed_records_and_nothing_is_lost() {
    let fake = ready_fake(FakeFirehose::http());
    fake.set_record_failure_rate(0.3);
    let sink = sink(&fake, "").await;
    let input = records(2000, 200);
    let (c, _) = deliver_until_done(&sink, chunk(&input), 20).await;
    assert_eq!(c.delivered.count(), input.len());
    assert_all_delivered_without_unexplained_duplicates(&fake, &input);
    let calls = fake.calls();
    assert!(calls.iter().all(|call| call.records.len() <= 500));
    // Resends carry only what failed: total sent ≈ n / (1 - p), far below a resend of everything.
    let sent: usize = calls.iter().map(|c| c.records.len()).sum();
    assert!(sent < 2000 * 2, "sent {sent} records for 2000");
    assert!(calls
        .iter()
        .all(|c| c.access_key.as_deref() == Some("AKIDSTATICTEST")));
}

#[tokio::test]
async fn calls_never_exceed_500_records_or_4_mib_and_honour_configured_limits() {
    let fake = ready_fake(FakeFirehose::http());
    let sink = sink(&fake, "").await;
    // 1,000 records of 10 KB = 10 MB: the byte limit binds.
    let big = records(1000, 10_000);
    let (c, _) = deliver_until_done(&sink, chunk(&big), 1).await;
    assert_eq!(c.delivered.count(), 1000);
    let calls = fake.calls();
    assert!(calls.iter().all(|c| c.data_bytes <= 4 * 1024 * 1024));
    assert!(calls.len() >= 3, "{} calls", calls.len());
    // 1,200 small records: the record limit binds.
    let small = records(1200, 100);
    deliver_until_done(&sink, chunk(&small), 1).await;
    let mut sizes: Vec<usize> = fake.calls()[calls.len()..]
        .iter()
        .map(|c| c.records.len())
        .collect();
    // A chunk's calls run concurrently (max_concurrent_calls), so they may arrive in any order.
    sizes.sort_unstable();
    assert_eq!(sizes, vec![200, 500, 500]);

    let fake2 = ready_fake(FakeFirehose::http());
    let sink2 = self::sink(
        &fake2,
        "max_records_per_call = 100\nmax_bytes_per_call = \"64k\"",
    )
    .await;
    deliver_until_done(&sink2, chunk(&records(1000, 1000)), 1).await;
    for call in fake2.calls() {
        assert!(
            call.records.len() <= 100 && call.data_bytes <= 65536,
            "{} records, {} bytes",
            call.records.len(),
            call.data_bytes
        );
    }
    assert!(fake2.refusals().is_empty());
}

#[tokio::test]
async fn whole_call_failures_are_retried_within_the_flush() {
    let fake = ready_fake(FakeFirehose::https());
    fake.push_faults([
        Fault::Error(500, "InternalFailure"),
        Fault::Error(503, "ServiceUnavailableException"),
        Fault::Error(429, "ThrottlingException"),
        Fault::Reset,
        Fault::FailRecords(vec![0, 5, 7]),
    ]);
    let sink = sink(&fake, "").await;
    let input = records(300, 300);
    let d = sink.deliver(&chunk(&input)).await;
    assert!(d.error.is_none(), "{:?}", d.error);
    assert_eq!(d.delivered.count(), 300);
    assert_all_delivered_without_unexplained_duplicates(&fake, &input);
    let calls = fake.calls();
    assert_eq!(
        calls.len(),
        6,
        "4 failed calls, 1 partial, 1 resend of the 3 failed records"
    );
    assert_eq!(calls[5].records.len(), 3);
}

#[tokio::test]
async fn a_slow_answer_times_out_and_only_those_records_may_be_duplicated() {
    let fake = ready_fake(FakeFirehose::http());
    fake.push_faults([Fault::Slow(Duration::from_secs(4))]);
    let sink = sink(&fake, "").await;
    let input = records(50, 100);
    let started = std::time::Instant::now();
    let d = sink.deliver(&chunk(&input)).await;
    assert!(d.error.is_none(), "{:?}", d.error);
    assert!(
        started.elapsed() < Duration::from_secs(4),
        "request_timeout (2s) cut the slow call"
    );
    assert_eq!(
        fake.accepted().len(),
        100,
        "the slow call's records were accepted twice"
    );
    assert_all_delivered_without_unexplained_duplicates(&fake, &input);
}

#[tokio::test]
async fn retries_exhausted_keeps_the_rest_pending_for_the_chunk_retry() {
    let fake = ready_fake(FakeFirehose::http());
    fake.push_faults((0..3).map(|_| Fault::Error(503, "ServiceUnavailableException")));
    let sink = sink(&fake, "retries_on_batch_request = 2").await;
    let input = records(10, 100);
    let d = sink.deliver(&chunk(&input)).await;
    let e = d.error.expect("still failing after 2 resends");
    assert_eq!(e.class, ErrorClass::Throttled);
    assert!(d.delivered.is_empty());
    assert_eq!(fake.calls().len(), 3);
    let d = sink.deliver(&chunk(&input)).await;
    assert!(d.error.is_none());
    assert_eq!(d.delivered.count(), 10);
}

#[tokio::test]
async fn configuration_and_iam_errors_stop_at_once_with_their_class() {
    for (code, class) in [
        ("ResourceNotFoundException", ErrorClass::ResourceNotFound),
        ("AccessDeniedException", ErrorClass::AccessDenied),
        ("InvalidArgumentException", ErrorClass::InvalidArgument),
        ("UnrecognizedClientException", ErrorClass::Credentials),
    ] {
        let fake = ready_fake(FakeFirehose::http());
        fake.push_faults([Fault::Error(400, code)]);
        let sink = sink(&fake, "").await;
        let d = sink.deliver(&chunk(&records(10, 100))).await;
        let e = d
            .error
            .unwrap_or_else(|| panic!("{code} must fail the attempt"));
        assert_eq!(e.class, class, "{code}: {e}");
        assert!(e.message.contains("test-stream"), "names the stream: {e}");
        assert_eq!(
            fake.calls().len(),
            1,
            "{code} is not retried within the flush"
        );
    }
}

#[tokio::test]
async fn a_record_over_1024000_bytes_is_rejected_and_the_rest_delivered() {
    let fake = ready_fake(FakeFirehose::http());
    let sink = sink(&fake, "").await;
    let mut input = records(5, 100);
    input.insert(2, records(1, 1_024_001).remove(0));
    let mut exact = records(1, 1_024_000);
    input.append(&mut exact);
    let d = sink.deliver(&chunk(&input)).await;
    assert!(d.error.is_none());
    assert_eq!(d.rejected.len(), 1);
    assert_eq!(d.rejected[0].0, 2);
    assert!(
        d.rejected[0].1.contains("1024001 bytes"),
        "{}",
        d.rejected[0].1
    );
    assert_eq!(
        d.delivered.count(),
        6,
        "a record of exactly 1,024,000 bytes is fine"
    );
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
}

#[tokio::test]
async fn aggregation_packs_records_and_splits_back_into_exactly_the_input() {
    let fake = ready_fake(FakeFirehose::http());
    fake.push_faults([Fault::FailRecords(vec![1])]);
    let sink = sink(&fake, "aggregation = true").await;
    let input = records(20_000, 200);
    let (c, _) = deliver_until_done(&sink, chunk(&input), 3).await;
    assert_eq!(c.delivered.count(), input.len());
    let firehose_records = fake.accepted();
    assert!(
        firehose_records.len() <= 5,
        "4 MB in records of ≤ 1,000 KiB: {}",
        firehose_records.len()
    );
    assert!(firehose_records.iter().all(|r| r.len() <= 1_024_000));
    let mut lines: Vec<Vec<u8>> = Vec::new();
    for r in &firehose_records {
        lines.extend(r.split_inclusive(|&b| b == b'\n').map(<[u8]>::to_vec));
    }
    lines.sort();
    let mut expected = input.clone();
    expected.sort();
    assert_eq!(
        lines, expected,
        "the failed aggregate was resent whole, nothing else twice"
    );
}

#[tokio::test]
async fn gzip_records_decompress_to_newline_delimited_json() {
    let fake = ready_fake(FakeFirehose::http());
    let input = records(3000, 200);
    for (extra, max_records) in [
        ("compression = \"gzip\"", 3000),
        ("compression = \"gzip\"\naggregation = true", 2),
    ] {
        let before = fake.accepted().len();
        let sink = sink(&fake, extra).await;
        let d = sink.deliver(&chunk(&input)).await;
        assert!(d.error.is_none(), "{:?}", d.error);
        let got = &fake.accepted()[before..];
        assert!(got.len() <= max_records, "{extra}: {}", got.len());
        if !extra.contains("aggregation") {
            assert_eq!(got.len(), input.len(), "one Firehose record per record");
        }
        let mut text = Vec::new();
        for r in got {
            flate2::read::GzDecoder::new(&r[..])
                .read_to_end(&mut text)
                .unwrap();
        }
        let mut lines: Vec<&[u8]> = text.split_inclusive(|&b| b == b'\n').collect();
        assert_eq!(lines.len(), input.len());
        // Concurrent calls may deliver the chunk's Firehose records in any order.
        lines.sort_unstable();
        let mut expected: Vec<&[u8]> = input.iter().map(|r| &r[..]).collect();
        expected.sort_unstable();
        for (l, r) in lines.iter().zip(&expected) {
            assert_eq!(l, r);
            serde_json::from_slice::<serde_json::Value>(l).expect("each line is JSON");
        }
    }
}

#[tokio::test]
async fn concurrent_flushes_share_the_sink_and_a_slow_call_blocks_no_other() {
    let fake = ready_fake(FakeFirehose::http());
    fake.push_faults([Fault::Slow(Duration::from_secs(8))]);
    let sink = Arc::new(sink(&fake, "request_timeout = \"60s\"").await);
    let slow = {
        let s = Arc::clone(&sink);
        tokio::spawn(async move { s.deliver(&chunk(&records(10, 100))).await })
    };
    // The slow call has reached the fake (it is recorded before the fake sleeps).
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while fake.calls().is_empty() {
        assert!(
            std::time::Instant::now() < deadline,
            "the slow call never arrived"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let s = Arc::clone(&sink);
        tasks.push(tokio::spawn(async move {
            s.deliver(&chunk(&records(100, 100))).await
        }));
    }
    for t in tasks {
        assert!(t.await.unwrap().error.is_none());
    }
    assert!(
        !slow.is_finished(),
        "the others finished while the slow call still waited for its answer"
    );
    assert_eq!(fake.calls().len(), 9);
    assert!(slow.await.unwrap().error.is_none());
}

#[tokio::test]
async fn pacing_limits_the_request_rate_of_all_workers_together() {
    let fake = ready_fake(FakeFirehose::http());
    let sink = Arc::new(sink(&fake, "max_requests_per_second = 10").await);
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let s = Arc::clone(&sink);
        tasks.push(tokio::spawn(async move {
            for _ in 0..5 {
                assert!(s.deliver(&chunk(&records(1, 100))).await.error.is_none());
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 20 calls at 10/s with a burst of 10: ~1 s. The upper bound leaves a slow machine four
    // times that, and still fails a pacer that runs at a fraction of the configured rate.
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(4),
        "{took:?}"
    );
    assert_eq!(fake.calls().len(), 20);
}

#[tokio::test]
async fn throttling_is_counted_and_slows_the_output_down() {
    let fake = ready_fake(FakeFirehose::http());
    fake.push_faults((0..3).map(|_| Fault::Error(503, "ServiceUnavailableException")));
    let metrics = Arc::new(Metrics::new());
    let sink = FirehoseSink::build("fh", &config(&fake, ""), &metrics)
        .await
        .unwrap();
    let d = sink.deliver(&chunk(&records(10, 100))).await;
    assert!(d.error.is_none());
    let text = metrics.render();
    assert!(
        text.contains("firehose_relay_firehose_throttles_total{output=\"fh\"} 3"),
        "{text}"
    );
    assert!(
        text.contains(
            "firehose_relay_firehose_call_errors_total{output=\"fh\",class=\"throttled\"} 3"
        ),
        "{text}"
    );
    // The calls after a throttle waited for the pacer: the output slowed down.
    let waited = text
        .lines()
        .find(|l| l.starts_with("firehose_relay_firehose_pacing_wait_seconds_total{output=\"fh\"}"))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse::<f64>().ok())
        .unwrap_or_else(|| panic!("no pacing wait counter:\n{text}"));
    assert!(waited > 0.0, "no call waited after the throttles:\n{text}");
    assert!(
        text.contains(
            "firehose_relay_firehose_put_record_batch_duration_seconds_count{output=\"fh\"} 4"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn the_stream_name_is_resolved_per_chunk_from_its_tag_and_time_slot() {
    let fake = FakeFirehose::http();
    fake.create_stream("logs-web-20261203")
        .create_stream("logs-db-20261203")
        .allow_key("AKIDSTATICTEST", "not-a-secret");
    let text = format!(
        r#"
delivery_stream = "logs-${{tag[1]}}-%Y%m%d"
region = "us-east-1"
endpoint_url = "{url}"
request_timeout = "2s"
retries_on_batch_request = 0
[buffer]
chunk_keys = ["tag", "time"]
timekey = "1d"
timekey_use_utc = true
[credentials]
type = "static"
access_key_id = "AKIDSTATICTEST"
secret_access_key = "not-a-secret"
"#,
        url = fake.url
    );
    let cfg: FirehoseConfig = toml::from_str(&text).unwrap();
    assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    let metrics = Arc::new(Metrics::new());
    let sink = FirehoseSink::build("fh", &cfg, &metrics).await.unwrap();
    // 2026-12-03 00:00 UTC, the day slot of both chunks.
    let slot = 1_796_256_000;
    let keyed = |tag: &str, n: usize| {
        chunk(&records(n, 50)).with_key(ChunkKey {
            tag: Some(tag.to_owned()),
            timekey: Some(slot),
        })
    };
    for (tag, n) in [("app.web", 3), ("app.db", 2), ("app.web", 1)] {
        let c = keyed(tag, n);
        let d = sink.deliver(&c).await;
        assert!(d.error.is_none(), "{:?}", d.error);
        assert_eq!(d.delivered.count(), n);
        assert_eq!(
            sink.destination_of(&c).as_deref(),
            Some(&*format!("logs-{}-20261203", &tag[4..]))
        );
    }
    let per_stream: BTreeMap<String, usize> =
        fake.calls().iter().fold(BTreeMap::new(), |mut m, c| {
            *m.entry(c.stream.clone()).or_default() += c.records.len();
            m
        });
    let want: BTreeMap<String, usize> = [("logs-db-20261203", 2), ("logs-web-20261203", 4)]
        .map(|(s, n)| (s.to_owned(), n))
        .into();
    assert_eq!(per_stream, want);
    // /status and the metrics name the resolved streams.
    let status: Vec<(String, u64)> = sink
        .streams()
        .into_iter()
        .map(|s| (s.stream, s.records_delivered))
        .collect();
    assert_eq!(
        status,
        [
            ("logs-db-20261203".to_owned(), 2),
            ("logs-web-20261203".to_owned(), 4)
        ]
    );
    let text = metrics.render();
    assert!(
        text.contains(r#"firehose_relay_stream_records_delivered_total{output="fh",stream="logs-web-20261203"} 4"#),
        "{text}"
    );
    // A tag without the part: resolved to nothing (as Fluentd), and the error names the stream.
    let d = sink.deliver(&keyed("single", 1)).await;
    let e = d.error.expect("no such stream");
    assert_eq!(e.class, ErrorClass::ResourceNotFound);
    assert!(e.message.contains("logs--20261203"), "{}", e.message);
}
