//! Chunk keys and stream-name placeholders (issue 18) through the real binary:
//!
//! * `kill_9_with_keyed_chunks_on_disk_delivers_every_record_to_its_tags_stream`: a relay with
//!   `chunk_keys = ["tag"]` and `delivery_stream = "logs-${tag}"` acknowledges records of several
//!   tags while Firehose is down (so some chunks are closed and retrying, their key in the
//!   metadata, and some still open, their key in the chunk file's header), is killed with
//!   SIGKILL, and restarted: every acknowledged record reaches the stream of its own tag.
//! * `dead_letters_keep_the_key_and_replay_resolves_the_stream`: with `chunk_keys = ["tag",
//!   "time"]` and `delivery_stream = "logs-${tag}-%Y%m%d"`, a record the output cannot format
//!   (dead-lettered at intake) and a chunk whose retries ran out during an outage are
//!   dead-lettered with their tag, time slot and resolved stream; `dead-letter replay` gives
//!   them back their key, and the restarted relay delivers them to that stream.

mod common;
mod forward_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::fake_firehose::FakeFirehose;
use common::KillOnDrop;
use forward_support::Mp;

const TAGS: [&str; 3] = ["app.web", "app.db", "app.api"];

/// A forward source and a Firehose output whose stream is named after the chunk's tag.
fn config(dir: &Path, fh: &FakeFirehose) -> PathBuf {
    keyed_config(
        dir,
        fh,
        "logs-${tag}",
        "chunk_keys = [\"tag\"]\nretry_forever = true",
        "",
    )
}

/// Like [`config`] with stream name `stream`, `keys` (and other lines) in the buffer section
/// and `output` in the output's.
fn keyed_config(dir: &Path, fh: &FakeFirehose, stream: &str, keys: &str, output: &str) -> PathBuf {
    let d = dir.display();
    common::write_config(
        dir,
        &format!(
            r#"
data_dir = "{d}/data"
shutdown_timeout = "5s"
[http]
listen = ""
[sources.fwd]
type = "forward"
listen = "127.0.0.1:0"
[outputs.fh]
type = "firehose"
match = "**"
region = "us-east-1"
endpoint_url = "{url}"
delivery_stream = "{stream}"
request_timeout = "2s"
retries_on_batch_request = 0
{output}
[outputs.fh.credentials]
type = "static"
access_key_id = "AKIDSTATICTEST"
secret_access_key = "not-a-secret"
[outputs.fh.buffer]
type = "file"
flush_interval = "300ms"
flush_thread_interval = "20ms"
retry_wait = "200ms"
retry_max_interval = "500ms"
{keys}
"#,
            url = fh.url
        ),
    )
}

fn now() -> i64 {
    i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

/// One forward message of `tag` with records `{"id": N, "tag": tag}`.
fn message(tag: &str, chunk: &str, ids: &[u64]) -> Vec<u8> {
    timed_message(tag, chunk, ids, now())
}

/// Like [`message`], at Unix time `time`.
fn timed_message(tag: &str, chunk: &str, ids: &[u64], now: i64) -> Vec<u8> {
    let mut m = Mp::new().arr(3).s(tag).arr(ids.len() as u32);
    for id in ids {
        m = m
            .arr(2)
            .int(now)
            .map(2)
            .s("id")
            .int(*id as i64)
            .s("tag")
            .s(tag);
    }
    m.map(1).s("chunk").s(chunk).0
}

/// Sends `ids` of `tag` and waits for the ack.
fn send_acked(s: &mut TcpStream, tag: &str, ids: &[u64]) {
    send_acked_message(s, tag, ids, message(tag, &format!("{tag}-{}", ids[0]), ids));
}

fn send_acked_message(s: &mut TcpStream, tag: &str, ids: &[u64], message: Vec<u8>) {
    let chunk = format!("{tag}-{}", ids[0]);
    s.write_all(&message).unwrap();
    let want = Mp::new().map(1).s("ack").s(&chunk).0;
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want, "ack of {chunk}");
}

/// Record ids of `tag` in round `round`: 10 per message, 3 messages.
fn ids(tag: usize, round: u64) -> Vec<Vec<u64>> {
    (0..3)
        .map(|m| {
            let base = tag as u64 * 10_000 + round * 1_000 + m * 10;
            (base..base + 10).collect()
        })
        .collect()
}

/// Records accepted by the fake: stream → (tag written in the record, id).
fn delivered(fh: &FakeFirehose) -> BTreeMap<String, BTreeSet<(String, u64)>> {
    let mut out: BTreeMap<String, BTreeSet<(String, u64)>> = BTreeMap::new();
    for c in fh.calls() {
        for (r, ok) in c.records.iter().zip(&c.accepted) {
            if !ok {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(r).unwrap();
            out.entry(c.stream.clone()).or_default().insert((
                v["tag"].as_str().unwrap().to_owned(),
                v["id"].as_u64().unwrap(),
            ));
        }
    }
    out
}

#[test]
fn kill_9_with_keyed_chunks_on_disk_delivers_every_record_to_its_tags_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fh = FakeFirehose::http();
    fh.allow_key("AKIDSTATICTEST", "not-a-secret");
    for t in TAGS {
        fh.create_stream(&format!("logs-{t}"));
    }
    fh.set_outage(true);
    let conf = config(dir, &fh);
    let mut relay = KillOnDrop(common::spawn_relay(&conf, &[]));
    let addr = common::wait_forward_addr(dir, &mut relay, "fwd");
    let mut s = TcpStream::connect(addr).unwrap();
    let mut sent = BTreeSet::new();
    // Round 0: acknowledged, then the chunks are closed and fail against the outage (their
    // key is in their metadata).
    for (i, tag) in TAGS.iter().enumerate() {
        for m in ids(i, 0) {
            send_acked(&mut s, tag, &m);
            sent.extend(m.iter().map(|id| (tag.to_string(), *id)));
        }
    }
    common::wait_for(
        Duration::from_secs(30),
        "failed calls for every tag",
        || {
            let streams: BTreeSet<String> = fh
                .requests()
                .iter()
                .filter_map(|r| {
                    let body: serde_json::Value = serde_json::from_slice(&r.body).ok()?;
                    body["DeliveryStreamName"].as_str().map(str::to_owned)
                })
                .collect();
            (streams.len() == TAGS.len()).then_some(())
        },
    );
    // Round 1: acknowledged into new open chunks (the key is in the chunk file's header),
    // then SIGKILL before they are due.
    for (i, tag) in TAGS.iter().enumerate() {
        for m in ids(i, 1) {
            send_acked(&mut s, tag, &m);
            sent.extend(m.iter().map(|id| (tag.to_string(), *id)));
        }
    }
    relay.0.kill().unwrap();
    relay.0.wait().unwrap();
    assert!(
        delivered(&fh).is_empty(),
        "nothing can be delivered during the outage"
    );

    fh.set_outage(false);
    let _relay = KillOnDrop(common::spawn_relay(&conf, &[]));
    let all = common::wait_for(Duration::from_secs(60), "every record delivered", || {
        let d = delivered(&fh);
        let got: BTreeSet<(String, u64)> = d.values().flatten().cloned().collect();
        sent.is_subset(&got).then_some(d)
    });
    for (stream, records) in &all {
        for (tag, id) in records {
            assert_eq!(stream, &format!("logs-{tag}"), "record {id} of {tag}");
        }
    }
    assert_eq!(all.len(), TAGS.len(), "{:?}", all.keys());
    assert!(fh.refusals().is_empty(), "{:?}", fh.refusals());
}

/// The dead-letter entries' metadata under `data`.
fn dead_letters(data: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(dirs) = std::fs::read_dir(data.join("dead-letter")) else {
        return out;
    };
    for d in dirs {
        for f in std::fs::read_dir(d.unwrap().path()).unwrap() {
            let p = f.unwrap().path();
            if p.extension().is_some_and(|e| e == "json") {
                out.push(serde_json::from_slice(&std::fs::read(&p).unwrap()).unwrap());
            }
        }
    }
    out
}

#[test]
fn dead_letters_keep_the_key_and_replay_resolves_the_stream() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let data = dir.join("data");
    let fh = FakeFirehose::http();
    fh.allow_key("AKIDSTATICTEST", "not-a-secret");
    // 2020-09-13 12:26:40 UTC: its day slot names the stream.
    let (time, stream) = (1_600_000_000, "logs-app.web-20200913");
    fh.create_stream(stream);
    fh.set_outage(true);
    let conf = keyed_config(
        dir,
        &fh,
        "logs-${tag}-%Y%m%d",
        "chunk_keys = [\"tag\", \"time\"]\ntimekey = \"1d\"\ntimekey_use_utc = true\nretry_max_times = 1",
        "data_key = \"tag\"",
    );
    let mut relay = KillOnDrop(common::spawn_relay(&conf, &[]));
    let addr = common::wait_forward_addr(dir, &mut relay, "fwd");
    let mut s = TcpStream::connect(addr).unwrap();
    // Formatted with data_key "tag": these go to a chunk, whose retries run out.
    let ids: Vec<u64> = (1..=5).collect();
    send_acked_message(
        &mut s,
        "app.web",
        &ids,
        timed_message("app.web", "app.web-1", &ids, time),
    );
    // A record without the data_key field: dead-lettered at intake.
    let odd = Mp::new()
        .arr(3)
        .s("app.web")
        .arr(1)
        .arr(2)
        .int(time)
        .map(1)
        .s("other")
        .s("no data key")
        .map(1)
        .s("chunk")
        .s("odd-1")
        .0;
    send_acked_message(&mut s, "odd", &[1], odd);
    let entries = common::wait_for(Duration::from_secs(30), "two dead-letter entries", || {
        let e = dead_letters(&data);
        (e.len() == 2).then_some(e)
    });
    common::sigterm(&relay);
    common::wait_exit(&mut relay, Duration::from_secs(30));
    for e in &entries {
        assert_eq!(e["tag"], "app.web", "{e}");
        assert_eq!(e["stream"], stream, "{e}");
        assert_eq!(e["timekey"], 1_599_955_200, "{e}");
    }
    assert_eq!(
        entries
            .iter()
            .map(|e| e["records"].as_u64().unwrap())
            .sum::<u64>(),
        6
    );
    assert!(delivered(&fh).is_empty());

    let out = std::process::Command::new(common::relay_bin())
        .args(["dead-letter", "replay", "--data-dir"])
        .arg(&data)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    fh.set_outage(false);
    let _relay = KillOnDrop(common::spawn_relay(&conf, &[]));
    let calls = common::wait_for(Duration::from_secs(60), "the replayed records", || {
        let n: usize = fh
            .calls()
            .iter()
            .map(|c| c.accepted.iter().filter(|a| **a).count())
            .sum();
        (n == 6).then(|| fh.calls())
    });
    assert!(
        calls.iter().all(|c| c.stream == stream),
        "{:?}",
        calls.iter().map(|c| &c.stream).collect::<Vec<_>>()
    );
    assert!(fh.refusals().is_empty(), "{:?}", fh.refusals());
}

/// `stream_name` placeholders of `kinesis_streams` and `kinesis_streams_aggregated`: resolved
/// per chunk like Firehose's `delivery_stream`, and refused without their chunk key.
#[test]
fn kinesis_stream_names_resolve_per_chunk_for_both_kinesis_outputs() {
    use common::fake_kinesis::FakeKinesis;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let fk = FakeKinesis::http();
    fk.allow_key("AKIDSTATICTEST", "not-a-secret");
    for s in ["k-web", "k-db", "agg-x-20200913"] {
        fk.create_stream(s, 2);
    }
    let d = dir.display();
    let output = |name: &str, ty: &str, pattern: &str, stream: &str, keys: &str| {
        format!(
            r#"
[outputs.{name}]
type = "{ty}"
match = "{pattern}"
region = "eu-west-1"
endpoint_url = "{url}"
stream_name = "{stream}"
request_timeout = "2s"
[outputs.{name}.credentials]
type = "static"
access_key_id = "AKIDSTATICTEST"
secret_access_key = "not-a-secret"
[outputs.{name}.buffer]
type = "file"
flush_interval = "300ms"
flush_thread_interval = "20ms"
{keys}
"#,
            url = fk.url
        )
    };
    let head = format!(
        "data_dir = \"{d}/data\"\nshutdown_timeout = \"5s\"\n[http]\nlisten = \"127.0.0.1:0\"\n[sources.fwd]\ntype = \"forward\"\nlisten = \"127.0.0.1:0\"\n"
    );
    // Without "tag" in chunk_keys the placeholder is refused, naming the key.
    let bad = common::write_config(
        dir,
        &format!(
            "{head}{}",
            output("ks", "kinesis_streams", "app.**", "k-${tag[1]}", "")
        ),
    );
    let out = std::process::Command::new(common::relay_bin())
        .args(["check", "--config"])
        .arg(&bad)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("outputs.ks.stream_name") && err.contains("chunk key \"tag\""),
        "{err}"
    );

    let conf = common::write_config(
        dir,
        &format!(
            "{head}{}{}",
            output(
                "ks",
                "kinesis_streams",
                "app.**",
                "k-${tag[1]}",
                "chunk_keys = [\"tag\"]"
            ),
            output(
                "agg",
                "kinesis_streams_aggregated",
                "agg.**",
                "agg-${tag[-1]}-%Y%m%d",
                "chunk_keys = [\"tag\", \"time\"]\ntimekey = \"1d\"\ntimekey_use_utc = true"
            )
        ),
    );
    let mut relay = KillOnDrop(common::spawn_relay(&conf, &[]));
    let addr = common::wait_forward_addr(dir, &mut relay, "fwd");
    let http = common::wait_http_addr(dir, &mut relay).port();
    let mut s = TcpStream::connect(addr).unwrap();
    send_acked(&mut s, "app.web", &[1, 2, 3]);
    send_acked(&mut s, "app.db", &[4, 5]);
    send_acked_message(
        &mut s,
        "agg.x",
        &[6, 7],
        timed_message("agg.x", "agg.x-6", &[6, 7], 1_600_000_000),
    );
    common::wait_for(Duration::from_secs(30), "records on every stream", || {
        let counts: Vec<usize> = ["k-web", "k-db", "agg-x-20200913"]
            .iter()
            .map(|s| fk.accepted(s).len())
            .collect();
        (counts[0] == 3 && counts[1] == 2 && counts[2] >= 1).then_some(())
    });
    for (stream, tag) in [("k-web", "app.web"), ("k-db", "app.db")] {
        for r in fk.accepted(stream) {
            let v: serde_json::Value = serde_json::from_slice(&r.data).unwrap();
            assert_eq!(v["tag"], tag, "{stream}");
        }
    }
    let agg: Vec<u8> = fk
        .accepted("agg-x-20200913")
        .into_iter()
        .flat_map(|r| r.data)
        .collect();
    let agg = String::from_utf8_lossy(&agg);
    assert!(
        agg.contains(r#""id":6"#) && agg.contains(r#""id":7"#),
        "{agg}"
    );
    assert!(fk.refusals().is_empty(), "{:?}", fk.refusals());
    // Metrics and /status name the resolved streams (counted once the answer is read).
    let lines: Vec<String> = [("ks", "k-web", 3), ("ks", "k-db", 2), ("agg", "agg-x-20200913", 2)]
        .iter()
        .map(|(output, stream, n)| {
            format!("firehose_relay_stream_records_delivered_total{{output=\"{output}\",stream=\"{stream}\"}} {n}")
        })
        .collect();
    common::wait_for(Duration::from_secs(10), "per-stream metrics", || {
        let (_, metrics) = common::http_get(http, "/metrics");
        lines.iter().all(|l| metrics.contains(l)).then_some(())
    });
    let (_, status) = common::http_get(http, "/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    let streams = &status["outputs"]["ks"]["streams"];
    assert_eq!(streams.as_array().map(Vec::len), Some(2), "{status}");
    let called: BTreeSet<String> = fk.calls().into_iter().map(|c| c.stream).collect();
    assert_eq!(
        called,
        ["agg-x-20200913", "k-db", "k-web"]
            .map(str::to_owned)
            .into()
    );
}
