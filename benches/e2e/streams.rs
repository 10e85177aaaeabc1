//! Scenario `streams` (issue 19): the same load through the three AWS outputs in one run —
//! `firehose` (PutRecordBatch), `kinesis_streams` (PutRecords, one Kinesis record per relay
//! record) and `kinesis_streams_aggregated` (PutRecords of KPL aggregated records) — each on a
//! fresh relay against this bench's fake endpoint. Printed per output: records/s end to end, the
//! relay's CPU per million records, peak RSS, and how many records the service counted against
//! its records/s quota per thousand relay records (a Kinesis shard takes 1,000 records/s), so
//! the cut that aggregation buys is read off the same run.
//!
//! The fake answers PutRecords as Kinesis does when every record is accepted. It decodes
//! aggregated records (base64, then the KPL format with its MD5 check, via the crate's own
//! decoder) to count the user records they carry: that costs the fake CPU the other outputs do
//! not cause, on the machine the relay shares, so the aggregated figures are, if anything,
//! pessimistic.

use std::sync::atomic::Ordering;

use base64::Engine as _;

use super::clients::load_relay;
use super::{http_server, Bench, Fake, Knobs, Relay};

/// The fake's answer to one PutRecords call: every record accepted. Counts Kinesis records in
/// `kinesis_records` and user records (those inside aggregated records too) in `records`.
pub fn put_records_reply(fake: &Fake, body: &[u8]) -> http_server::Reply {
    let data_key = memchr::memmem::Finder::new(b"\"Data\":\"");
    let (mut kinesis, mut user, mut bytes) = (0u64, 0u64, 0u64);
    let mut i = 0;
    while let Some(pos) = data_key.find(&body[i..]) {
        let start = i + pos + 8;
        let end = memchr::memchr(b'"', &body[start..]).map_or(body.len(), |e| start + e);
        let data = base64::engine::general_purpose::STANDARD
            .decode(&body[start..end])
            .expect("PutRecords Data is base64");
        kinesis += 1;
        bytes += data.len() as u64;
        user += if firehose_relay::sink::kpl::is_aggregated(&data) {
            firehose_relay::sink::kpl::deaggregate(&data)
                .expect("an aggregated record the KPL format can read")
                .len() as u64
        } else {
            1
        };
        i = end;
    }
    fake.calls.fetch_add(1, Ordering::Relaxed);
    fake.kinesis_records.fetch_add(kinesis, Ordering::Relaxed);
    fake.bytes.fetch_add(bytes, Ordering::Relaxed);
    fake.records.fetch_add(user, Ordering::Relaxed);
    fake.sent.fetch_add(kinesis, Ordering::Relaxed);
    let mut out = String::with_capacity(64 + kinesis as usize * 110);
    out.push_str(r#"{"FailedRecordCount":0,"Records":["#);
    for j in 0..kinesis {
        if j > 0 {
            out.push(',');
        }
        // Sequence numbers as long as real ones (56 digits), so reading the answer costs the
        // relay what it costs in production.
        out.push_str(r#"{"SequenceNumber":"4954346307654800757710509270303935997522851839"#);
        out.push_str(itoa::Buffer::new().format(1_000_000_000 + j));
        out.push_str(r#"","ShardId":"shardId-000000000000"}"#);
    }
    out.push_str("]}");
    http_server::Reply::Response {
        status: 200,
        content_type: "application/x-amz-json-1.1",
        body: out.into_bytes(),
    }
}

/// The `streams` scenario.
pub fn streams(bench: &Bench<'_>, k: &Knobs) {
    let Bench {
        rt,
        load,
        fake,
        fake_port,
        dir: tmp,
        ca,
    } = *bench;
    println!(
        "streams: {} records of {} JSON bytes per output, {} connection(s), window {}, {} workers",
        k.records, load.json_bytes_per_record, k.connections, k.window, k.workers
    );
    println!(
        "  {:<28} {:>11} {:>9} {:>10} {:>12} {:>12}  now",
        "output", "records/s", "CPU-s/M", "peak RSS", "calls", "quota rec/1k"
    );
    let mut quota_use = Vec::new();
    for output in ["firehose", "kinesis_streams", "kinesis_streams_aggregated"] {
        let mut kc = k.clone();
        kc.output = output.to_owned();
        fake.calls.store(0, Ordering::Relaxed);
        fake.kinesis_records.store(0, Ordering::Relaxed);
        let relay = Relay::start(tmp, fake_port, ca, &kc, "", "");
        let run = load_relay(rt, &kc, load, fake, &relay);
        relay.stop();
        // What the service's records/s quota counted: Kinesis records for the Streams outputs,
        // Firehose records (one per relay record here) for Firehose.
        let counted = match output {
            "firehose" => k.records,
            _ => fake.kinesis_records.load(Ordering::Relaxed),
        };
        let per_thousand = counted as f64 * 1000.0 / k.records as f64;
        quota_use.push((output, per_thousand));
        println!(
            "  {output:<28} {:>11.0} {:>9.2} {:>6.1} MiB {:>12} {per_thousand:>12.2}  {}",
            run.rate,
            run.cpu_per_million,
            run.peak_rss,
            fake.calls.load(Ordering::Relaxed),
            run.now
        );
    }
    let plain = quota_use[1].1;
    let aggregated = quota_use[2].1;
    println!(
        "  aggregation cuts the records/s quota use {:.0}× ({plain:.2} → {aggregated:.3} Kinesis records per 1,000 relay records)",
        plain / aggregated
    );
}
