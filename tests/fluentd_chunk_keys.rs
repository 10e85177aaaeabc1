//! Chunk keys and stream-name placeholders (issue 18) through the real binary:
//!
//! * `kill_9_with_keyed_chunks_on_disk_delivers_every_record_to_its_tags_stream`: a relay with
//!   `chunk_keys = ["tag"]` and `delivery_stream = "logs-${tag}"` acknowledges records of several
//!   tags while Firehose is down (so some chunks are closed and retrying, their key in the
//!   metadata, and some still open, their key in the chunk file's header), is killed with
//!   SIGKILL, and restarted: every acknowledged record reaches the stream of its own tag.

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
delivery_stream = "logs-${{tag}}"
request_timeout = "2s"
retries_on_batch_request = 0
[outputs.fh.credentials]
type = "static"
access_key_id = "AKIDSTATICTEST"
secret_access_key = "not-a-secret"
[outputs.fh.buffer]
type = "file"
chunk_keys = ["tag"]
flush_interval = "300ms"
flush_thread_interval = "20ms"
retry_wait = "200ms"
retry_max_interval = "500ms"
retry_forever = true
"#,
            url = fh.url
        ),
    )
}

/// One forward message of `tag` with records `{"id": N, "tag": tag}`.
fn message(tag: &str, chunk: &str, ids: &[u64]) -> Vec<u8> {
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
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
    let chunk = format!("{tag}-{}", ids[0]);
    s.write_all(&message(tag, &chunk, ids)).unwrap();
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
