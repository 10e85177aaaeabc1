//! `type = "kinesis_streams_aggregated"` against the in-process fake Kinesis: what arrives is
//! read back with aws-kinesis-agg (an independent decoder) and must be exactly what went in;
//! every aggregated record stays within 1 MiB counting its partition key; a record that fits
//! no aggregated record is rejected with the reason (and dead-lettered by the flush worker);
//! a refused aggregated record is sent again as a whole. One test runs the real binary.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::fake_kinesis::{FakeKinesis, Fault};
use firehose_relay::buffer::{Chunk, ChunkId, Records};
use firehose_relay::ops::metrics::Metrics;
use firehose_relay::sink::kinesis_streams::{KinesisStreamsConfig, KinesisStreamsSink};
use firehose_relay::sink::kpl::{self, max_data_len, MAX_RECORD_BYTES};
use firehose_relay::sink::Sink;

const STREAM: &str = "agg-stream";
const KEY_ID: &str = "AKIDSTATICTEST";
const SECRET: &str = "not-a-secret";

fn ready_fake(shards: usize) -> FakeKinesis {
    let fake = FakeKinesis::http();
    fake.create_stream(STREAM, shards).allow_key(KEY_ID, SECRET);
    fake
}

fn config(fake: &FakeKinesis, extra: &str) -> KinesisStreamsConfig {
    let text = format!(
        r#"
stream_name = "{STREAM}"
region = "eu-west-1"
endpoint_url = "{url}"
request_timeout = "10s"
{extra}
[credentials]
type = "static"
access_key_id = "{KEY_ID}"
secret_access_key = "{SECRET}"
"#,
        url = fake.url,
    );
    let cfg: KinesisStreamsConfig = toml::from_str(&text).unwrap();
    assert!(
        cfg.problems_as(true).is_empty(),
        "{:?}",
        cfg.problems_as(true)
    );
    cfg
}

async fn sink(fake: &FakeKinesis, extra: &str) -> KinesisStreamsSink {
    kpl::build_sink("agg", &config(fake, extra), &Arc::new(Metrics::new()))
        .await
        .unwrap()
}

fn line(seq: usize, size: usize) -> Vec<u8> {
    let mut r = format!("{{\"seq\":{seq},\"pad\":\"").into_bytes();
    r.resize(size.max(r.len() + 3) - 3, b'x');
    r.extend_from_slice(b"\"}\n");
    r
}

fn chunk(recs: &[Vec<u8>]) -> Chunk {
    let mut r = Records::new();
    for rec in recs {
        r.push(rec).unwrap();
    }
    Chunk::new(ChunkId(1), 0, r)
}

/// The user records of everything the fake accepted, read by aws-kinesis-agg, after checking
/// each Kinesis record is aggregated, complete, within 1 MiB, and keyed like its user records.
fn read_back(fake: &FakeKinesis) -> Vec<Vec<u8>> {
    let accepted = fake.accepted(STREAM);
    let records: Vec<(String, String, Vec<u8>)> = accepted
        .iter()
        .enumerate()
        .map(|(i, r)| {
            assert!(
                r.data.len() + r.partition_key.len() <= MAX_RECORD_BYTES,
                "Kinesis record {i} over 1 MiB"
            );
            (format!("{i:06}"), r.partition_key.clone(), r.data.clone())
        })
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let read = common::kpl::deaggregate(dir.path(), &records);
    assert_eq!(read.len(), accepted.len());
    let mut users = Vec::new();
    for (got, sent) in read.iter().zip(&records) {
        assert!(
            got.aggregated && got.complete,
            "{}: not a valid KPL record",
            got.name
        );
        for u in &got.records {
            assert_eq!(u.partition_key, sent.1, "{}", got.name);
            users.push(u.data());
        }
    }
    users
}

#[tokio::test]
async fn what_arrives_deaggregates_to_the_records_sent_and_oversized_ones_are_rejected() {
    let fake = ready_fake(4);
    let s = sink(&fake, r#"fixed_partition_key = "app-1""#).await;
    let max = max_data_len("app-1".len(), MAX_RECORD_BYTES).unwrap();
    let mut recs: Vec<Vec<u8>> = (0..15_000).map(|i| line(i, 200)).collect();
    recs.insert(100, line(100_000, max)); // exactly 1 MiB with the key: accepted
    recs.insert(7_000, line(100_001, max + 1)); // one byte more: rejected
    let c = chunk(&recs);
    let d = s.deliver(&c).await;
    assert!(d.error.is_none(), "{:?} {:?}", d.error, fake.refusals());
    assert_eq!(d.rejected.len(), 1, "{:?}", d.rejected);
    assert_eq!(d.rejected[0].0, 7_000);
    assert!(
        d.rejected[0]
            .1
            .contains("over the limit of 1048576 bytes per record"),
        "{}",
        d.rejected[0].1
    );
    assert_eq!(d.delivered.count(), recs.len() - 1);
    let mut expected = recs.clone();
    expected.remove(7_000);
    let users = read_back(&fake);
    assert!(users == expected, "user records differ from the input");
    let accepted = fake.accepted(STREAM);
    assert!(accepted.iter().all(|r| r.partition_key == "app-1"));
    assert!(
        accepted
            .iter()
            .any(|r| r.data.len() + r.partition_key.len() == MAX_RECORD_BYTES),
        "the boundary record went out as a full 1 MiB Kinesis record"
    );
    assert!(
        accepted.len() <= 6,
        "15,000 lines of 200 B and one of 1 MiB in {} Kinesis records",
        accepted.len()
    );
}

#[tokio::test]
async fn a_refused_aggregated_record_is_sent_again_whole_and_nothing_else_twice() {
    let fake = ready_fake(2);
    fake.push_faults([Fault::FailRecords(
        vec![1],
        "ProvisionedThroughputExceededException",
    )]);
    let s = sink(&fake, "").await;
    let recs: Vec<Vec<u8>> = (0..20_000).map(|i| line(i, 200)).collect();
    let d = s.deliver(&chunk(&recs)).await;
    assert!(d.error.is_none(), "{:?} {:?}", d.error, fake.refusals());
    assert_eq!(d.delivered.count(), recs.len());
    let calls = fake.calls();
    assert!(calls.len() >= 2, "the refused record was resent");
    let keys: std::collections::HashSet<_> = fake
        .accepted(STREAM)
        .iter()
        .map(|r| r.partition_key.clone())
        .collect();
    assert_eq!(
        keys.len(),
        fake.accepted(STREAM).len(),
        "a random key per aggregated record"
    );
    let mut users = read_back(&fake);
    users.sort();
    let mut expected = recs;
    expected.sort();
    assert!(users == expected, "every line exactly once");
}

#[test]
fn the_relay_sends_aggregated_records_that_aws_kinesis_agg_reads_back_completely() {
    let fake = ready_fake(4);
    let dir = tempfile::tempdir().unwrap();
    let config = format!(
        r#"
data_dir = {data:?}
shutdown_timeout = "20s"
[http]
listen = "127.0.0.1:0"
[sources.sample]
type = "sample"
tag = "app.test"
rate = 40
size = 50
auto_increment_key = "seq"
record = {{ message = "hello from the relay" }}
[outputs.ks]
type = "kinesis_streams_aggregated"
match = "**"
stream_name = "{STREAM}"
region = "eu-west-1"
endpoint_url = "{url}"
[outputs.ks.credentials]
type = "static"
access_key_id = "{KEY_ID}"
secret_access_key = "{SECRET}"
[outputs.ks.buffer]
type = "memory"
flush_interval = "300ms"
flush_thread_count = 2
retry_wait = "200ms"
retry_max_interval = "1s"
"#,
        data = dir.path().join("data").display().to_string(),
        url = fake.url,
    );
    fake.set_record_failure_rate(0.2);
    let log = common::relay_run::run_for(dir.path(), &config, &[], Duration::from_secs(4));
    let users = read_back(&fake);
    let seen = common::relay_run::sequence_counts(users.iter().map(Vec::as_slice));
    let n = common::relay_run::assert_all_arrived(&seen, "sample", &log);
    let dupes = seen.values().filter(|&&c| c > 1).count();
    assert_eq!(dupes, 0, "no call timed out, so nothing arrives twice");
    let kinesis_records = fake.accepted(STREAM).len() as u64;
    assert!(
        kinesis_records * 10 <= n,
        "{n} records in {kinesis_records} Kinesis records"
    );
}
