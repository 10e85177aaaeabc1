//! End to end through moto's Kinesis: a client sends acknowledged forward messages to the
//! binary, whose `kinesis_streams` output puts them into a 4-shard moto stream; `GetRecords`
//! on every shard must return every acknowledged record, none twice (nothing failed, so
//! nothing was resent), spread over the shards by their random partition keys. moto checks
//! neither signatures nor limits; the in-process fake (`tests/kinesis_streams_sink.rs`) does.

mod common;
mod forward_support;

use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use base64::Engine;
use common::moto::Moto;
use forward_support::Mp;

fn script() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/moto_kinesis.py")
}

fn helper(args: &[&str]) -> Vec<u8> {
    let out = Command::new(common::python())
        .arg(script())
        .args(args)
        .output()
        .expect("run moto_kinesis.py");
    assert!(
        out.status.success(),
        "moto_kinesis.py {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out.stdout
}

/// Sends `[tag, [[time, {"id": N}]...], {"chunk": c}]` and checks the ack.
fn send_acked(s: &mut TcpStream, chunk: &str, ids: &[u64]) {
    let mut m = Mp::new().arr(3).s("app.kinesis").arr(ids.len() as u32);
    for id in ids {
        m = m.arr(2).int(1_600_000_000).map(1).s("id").int(*id as i64);
    }
    s.write_all(&m.map(1).s("chunk").s(chunk).0).unwrap();
    let want = Mp::new().map(1).s("ack").s(chunk).0;
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).unwrap();
    assert_eq!(got, want, "ack of {chunk}");
}

#[test]
fn acknowledged_records_come_back_from_every_shard_of_a_moto_stream() {
    let moto = Moto::start();
    helper(&["setup", &moto.url, "relay-stream", "4"]);
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let config = common::write_config(
        dir.path(),
        &format!(
            r#"
data_dir = "{d}/data"
shutdown_timeout = "20s"
[http]
listen = ""
[sources.fwd]
type = "forward"
listen = "127.0.0.1:0"
[outputs.ks]
type = "kinesis_streams"
match = "**"
stream_name = "relay-stream"
region = "us-east-1"
endpoint_url = "{url}"
max_records_per_call = 100
# One call at a time: moto's shard numbers a record max+1 and stores it under that number
# without a lock (moto/kinesis/models.py, Shard.put_record), so two concurrent PutRecords on
# one shard can overwrite each other's records (seen: 1,997 of 2,000 with 2 workers × 4 calls).
max_concurrent_calls = 1
[outputs.ks.credentials]
type = "static"
access_key_id = "testing"
secret_access_key = "testing"
[outputs.ks.buffer]
type = "file"
flush_interval = "200ms"
chunk_limit_records = 300
flush_thread_count = 1
retry_wait = "200ms"
"#,
            url = moto.url
        ),
    );
    let mut child = common::spawn_relay(&config, &[]);
    let addr = common::wait_forward_addr(dir.path(), &mut child, "fwd");
    let mut s = TcpStream::connect(addr).unwrap();
    let mut sent = BTreeSet::new();
    for m in 0..40u64 {
        let ids: Vec<u64> = (m * 50..m * 50 + 50).collect();
        send_acked(&mut s, &format!("c{m}"), &ids);
        sent.extend(ids);
    }
    drop(s);
    // Wait until moto has everything, then stop the relay.
    let read = || -> Vec<(String, String, serde_json::Value)> {
        let out = helper(&["read", &moto.url, "relay-stream"]);
        String::from_utf8(out)
            .unwrap()
            .lines()
            .map(|l| {
                let v: serde_json::Value = serde_json::from_str(l).unwrap();
                let data = base64::engine::general_purpose::STANDARD
                    .decode(v["data"].as_str().unwrap())
                    .unwrap();
                let record: serde_json::Value = serde_json::from_slice(&data).unwrap();
                let shard = v["shard"].as_str().unwrap().to_owned();
                (shard, v["key"].as_str().unwrap().to_owned(), record)
            })
            .collect()
    };
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let got = loop {
        let got = read();
        if got.len() >= sent.len() {
            break got;
        }
        if std::time::Instant::now() > deadline {
            common::sigterm(&child);
            let _ = common::wait_exit(&mut child, Duration::from_secs(40));
            let log = common::strip_ansi(&common::read_log(dir.path(), "stderr.log"));
            panic!(
                "{} of {} records in moto after 60 s:\n{log}",
                got.len(),
                sent.len()
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    };
    common::sigterm(&child);
    let status = common::wait_exit(&mut child, Duration::from_secs(40));
    let log = common::strip_ansi(&common::read_log(dir.path(), "stderr.log"));
    assert!(status.success(), "{log}");
    let mut counts: BTreeMap<u64, usize> = BTreeMap::new();
    let mut shards = BTreeSet::new();
    for (shard, key, record) in &got {
        *counts.entry(record["id"].as_u64().unwrap()).or_default() += 1;
        shards.insert(shard.clone());
        assert_eq!(key.len(), 32, "random partition key");
    }
    let missing: Vec<&u64> = sent.iter().filter(|i| !counts.contains_key(i)).collect();
    assert!(missing.is_empty(), "lost: {missing:?}\n{log}");
    let twice: Vec<_> = counts.iter().filter(|(_, &n)| n > 1).collect();
    assert!(twice.is_empty(), "duplicates without a failure: {twice:?}");
    assert_eq!(counts.len(), sent.len());
    assert_eq!(shards.len(), 4, "records on every shard: {shards:?}");
}
