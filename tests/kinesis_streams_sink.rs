//! The `kinesis_streams` sink against an in-process fake Kinesis: per-record failures resend
//! only the failed records, throttled and failed calls are retried, operator errors stop the
//! attempt, calls stay within 500 records and 5 MiB, the 1 MiB record limit counts the
//! partition key, records are routed to shards by their partition key, and the metrics are
//! the `kinesis_…` families.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::fake_kinesis::{hash_key, shard_of, FakeKinesis, Fault};
use firehose_relay::buffer::{Chunk, ChunkId, Records};
use firehose_relay::ops::metrics::Metrics;
use firehose_relay::sink::kinesis_streams::{KinesisStreamsConfig, KinesisStreamsSink};
use firehose_relay::sink::{Delivery, ErrorClass, Sink};

const MIB: usize = 1024 * 1024;

fn ready_fake(shards: usize) -> FakeKinesis {
    let fake = FakeKinesis::http();
    fake.create_stream("test-stream", shards)
        .allow_key("AKIDSTATICTEST", "not-a-secret");
    fake
}

fn config(fake: &FakeKinesis, extra: &str) -> KinesisStreamsConfig {
    let target = if extra.contains("stream_arn") {
        ""
    } else {
        "stream_name = \"test-stream\"\n"
    };
    let text = format!(
        r#"
{target}region = "eu-west-1"
endpoint_url = "{url}"
request_timeout = "5s"
{extra}
[credentials]
type = "static"
access_key_id = "AKIDSTATICTEST"
secret_access_key = "not-a-secret"
"#,
        url = fake.url,
    );
    let cfg: KinesisStreamsConfig = toml::from_str(&text).unwrap();
    assert!(cfg.problems().is_empty(), "{:?}", cfg.problems());
    cfg
}

async fn sink_with(fake: &FakeKinesis, extra: &str, metrics: &Arc<Metrics>) -> KinesisStreamsSink {
    KinesisStreamsSink::build("ks", &config(fake, extra), metrics)
        .await
        .unwrap()
}

async fn sink(fake: &FakeKinesis, extra: &str) -> KinesisStreamsSink {
    sink_with(fake, extra, &Arc::new(Metrics::new())).await
}

/// Records `{"seq":N,"user":"uN%7","pad":"xxx"}` of about `size` bytes, newline-terminated.
fn records(n: usize, size: usize) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| {
            let mut r = format!("{{\"seq\":{i},\"user\":\"u{}\",\"pad\":\"", i % 7).into_bytes();
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

/// Delivers like a flush worker, up to `attempts` times.
async fn deliver_until_done(
    sink: &KinesisStreamsSink,
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

fn counts(fake: &FakeKinesis) -> BTreeMap<Vec<u8>, usize> {
    let mut m = BTreeMap::new();
    for r in fake.accepted("test-stream") {
        *m.entry(r.data).or_default() += 1;
    }
    m
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn per_record_failures_resend_only_the_failed_records() {
    let fake = ready_fake(4);
    fake.push_faults([Fault::FailRecords(
        vec![1, 3, 5],
        "ProvisionedThroughputExceededException",
    )]);
    fake.push_faults([Fault::FailRecords(vec![0], "InternalFailure")]);
    let metrics = Arc::new(Metrics::new());
    let sink = sink_with(&fake, "partition_key = \"user\"", &metrics).await;
    let input = records(20, 100);
    let (c, outcomes) = deliver_until_done(&sink, chunk(&input), 1).await;
    assert!(outcomes[0].error.is_none(), "{:?}", outcomes[0].error);
    assert_eq!(c.pending_count(), 0);
    // Every record once: the resends carried only the refused ones.
    let got = counts(&fake);
    assert_eq!(got.len(), 20);
    assert!(got.values().all(|&n| n == 1), "{got:?}");
    let calls = fake.calls();
    let sizes: Vec<usize> = calls.iter().map(|c| c.records.len()).collect();
    assert_eq!(sizes, vec![20, 3, 1]);
    assert_eq!(calls[1].records[0].data, input[1]);
    // Keys come from the `user` field and route to the shard of their MD5.
    for (s, shard) in fake.shards("test-stream").iter().enumerate() {
        for r in shard {
            assert_eq!(shard_of(hash_key(r), 4), s);
            let text = String::from_utf8_lossy(&r.data);
            assert!(
                text.contains(&format!("\"user\":\"{}\"", r.partition_key)),
                "{text}"
            );
        }
    }
    let text = metrics.render();
    for line in [
        "kinesis_records_sent_total{output=\"ks\"} 20",
        "kinesis_record_failures_total{output=\"ks\",class=\"throttled\"} 3",
        "kinesis_record_failures_total{output=\"ks\",class=\"server\"} 1",
        "kinesis_throttles_total{output=\"ks\"} 3",
    ] {
        assert!(text.contains(line), "missing {line} in\n{text}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn throttled_and_failed_calls_are_retried_and_operator_errors_stop_at_once() {
    let fake = ready_fake(1);
    fake.push_faults([
        Fault::Error(400, "LimitExceededException"),
        Fault::Error(500, "InternalFailure"),
        Fault::Reset,
    ]);
    let sink = sink(&fake, "").await;
    let input = records(10, 50);
    let (c, outcomes) = deliver_until_done(&sink, chunk(&input), 1).await;
    assert!(outcomes[0].error.is_none(), "{:?}", outcomes[0].error);
    assert_eq!(c.pending_count(), 0);
    assert_eq!(fake.accepted("test-stream").len(), 10);

    fake.push_faults([Fault::Error(400, "KMSAccessDeniedException")]);
    let d = sink.deliver(&chunk(&records(3, 50))).await;
    let e = d.error.expect("refused");
    assert_eq!(e.class, ErrorClass::AccessDenied);
    assert!(
        e.message
            .contains("PutRecords to stream `test-stream` (eu-west-1)"),
        "{e}"
    );
    assert!(d.delivered.is_empty());
    assert_eq!(fake.calls().len(), 5, "no resend after an operator error");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unknown_stream_is_resource_not_found() {
    let fake = ready_fake(1);
    let mut cfg = config(&fake, "");
    cfg.stream_name = Some("nope".into());
    let sink = KinesisStreamsSink::build("ks", &cfg, &Arc::new(Metrics::new()))
        .await
        .unwrap();
    let d = sink.deliver(&chunk(&records(2, 50))).await;
    assert_eq!(d.error.unwrap().class, ErrorClass::ResourceNotFound);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn calls_never_exceed_500_records_or_5_mib_with_the_keys() {
    let fake = ready_fake(2);
    let sink = sink(&fake, "partition_key = \"user\"").await;
    // 1,200 small records: 500 + 500 + 200.
    let (_, o) = deliver_until_done(&sink, chunk(&records(1200, 60)), 1).await;
    assert!(o[0].error.is_none());
    let mut sizes: Vec<usize> = fake.calls().iter().map(|c| c.records.len()).collect();
    sizes.sort_unstable();
    assert_eq!(sizes, vec![200, 500, 500]);
    // 16 records of 349,525 bytes: 15 of them and their 2-byte keys are 5,242,905 bytes, over
    // 5 MiB (5,242,880) by 25, so a call carries 14 at most; data alone would allow 15.
    let big = records(16, 349_525);
    let (c, o) = deliver_until_done(&sink, chunk(&big), 1).await;
    assert!(o[0].error.is_none(), "{:?}", o[0].error);
    assert_eq!(c.pending_count(), 0);
    let calls = fake.calls();
    for call in &calls[3..] {
        assert!(call.records.len() <= 14, "{}", call.records.len());
        assert!(call.bytes <= 5 * MIB, "{}", call.bytes);
        assert_eq!(call.status, 200);
    }
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_record_of_exactly_1_mib_with_its_key_is_accepted_one_byte_more_is_rejected() {
    let fake = ready_fake(1);
    let sink = sink(&fake, "partition_key = \"k\"\nappend_new_line = false").await;
    let key = "p".repeat(10);
    let record = |len: usize| {
        let mut r = format!("{{\"k\":\"{key}\",\"pad\":\"").into_bytes();
        r.resize(len - 2, b'x');
        r.extend_from_slice(b"\"}");
        r
    };
    let exact = record(MIB - key.len());
    let over = record(MIB - key.len() + 1);
    let d = sink.deliver(&chunk(&[exact.clone(), over])).await;
    assert!(d.error.is_none(), "{:?}", d.error);
    assert_eq!(d.delivered.iter().collect::<Vec<_>>(), vec![0]);
    assert_eq!(d.rejected.len(), 1);
    let (i, reason) = &d.rejected[0];
    assert_eq!(*i, 1);
    assert!(
        reason.contains("Kinesis record of 1048577 bytes, over the limit of 1048576"),
        "{reason}"
    );
    let got = fake.accepted("test-stream");
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].data.len() + got[0].partition_key.len(), MIB);
    assert_eq!(got[0].data, exact);
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stream_arn_explicit_hash_keys_and_missing_keys() {
    let fake = ready_fake(4);
    let metrics = Arc::new(Metrics::new());
    let extra = format!(
        "stream_arn = \"{}\"\npartition_key = \"user\"\nexplicit_hash_key = \"h\"",
        FakeKinesis::arn("test-stream")
    );
    let sink = sink_with(&fake, &extra, &metrics).await;
    let top = u128::MAX.to_string();
    let input = vec![
        format!("{{\"user\":\"a\",\"h\":\"{top}\"}}\n").into_bytes(),
        b"{\"other\":1}\n".to_vec(),
        b"{\"user\":\"b\",\"h\":\"0\"}\n".to_vec(),
    ];
    let d = sink.deliver(&chunk(&input)).await;
    assert!(d.error.is_none(), "{:?}", d.error);
    let shards = fake.shards("test-stream");
    assert!(
        shards[3].iter().any(|r| r.data == input[0]),
        "the top hash key is in the last shard"
    );
    assert!(
        shards[0].iter().any(|r| r.data == input[2]),
        "hash key 0 is in the first shard"
    );
    let missing = fake
        .accepted("test-stream")
        .into_iter()
        .find(|r| r.data == input[1])
        .unwrap();
    assert_eq!(missing.partition_key.len(), 32);
    assert!(metrics
        .render()
        .contains("kinesis_partition_key_missing_total{output=\"ks\"} 1"));
}
