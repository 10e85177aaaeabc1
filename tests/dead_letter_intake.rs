//! Records an output can never deliver are set aside at intake, through the real binary: a
//! record over Firehose's 1,024,000-byte limit, and a record without the output's `data_key`
//! field, go to the dead-letter directory with their reason; the rest of the same message is
//! acknowledged and delivered.

mod common;
mod forward_support;

use std::io::Write;
use std::time::Duration;

use common::fake_firehose::FakeFirehose;
use firehose_relay::flush::deadletter::DeadLetter;
use forward_support::{read_reply, Mp};

#[test]
fn undeliverable_records_are_dead_lettered_at_intake_and_the_rest_delivered() {
    let fake = FakeFirehose::http();
    fake.create_stream("intake")
        .allow_key("AKIDINTAKE", "intake-secret");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path().display();
    let conf = common::write_config(
        dir.path(),
        &format!(
            r#"
data_dir = "{d}/data"
[http]
listen = ""
[sources.fwd]
type = "forward"
listen = "127.0.0.1:0"
message_length_limit = "8m"
[outputs.fh]
type = "firehose"
match = "fh.**"
region = "us-east-1"
delivery_stream = "intake"
endpoint_url = "{url}"
[outputs.fh.credentials]
type = "static"
access_key_id = "AKIDINTAKE"
secret_access_key = "intake-secret"
[outputs.fh.buffer]
type = "memory"
flush_interval = "100ms"
[outputs.dk]
type = "file"
match = "dk.**"
path = "{d}/out"
data_key = "msg"
[outputs.dk.buffer]
type = "memory"
flush_interval = "100ms"
"#,
            url = fake.url
        ),
    );
    let mut relay = common::KillOnDrop(common::spawn_relay(&conf, &[]));
    let addr = common::wait_forward_addr(dir.path(), &mut relay, "fwd");
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    // Over Firehose's limit, within the source's record_size_limit (the largest record any
    // output takes: the file output's 1 MiB chunk), so the Firehose formatter refuses it whole.
    let big = "x".repeat(1_030_000);
    let entry = |m: Mp| Mp::new().arr(2).int(1_600_000_000).raw(&m.0).0;
    let forward = |tag: &str, entries: Vec<Vec<u8>>, chunk: &str| {
        let mut m = Mp::new().arr(3).s(tag).arr(entries.len() as u32);
        for e in entries {
            m = m.raw(&e);
        }
        m.map(1).s("chunk").s(chunk).0
    };
    s.write_all(&forward(
        "fh.app",
        vec![
            entry(Mp::new().map(1).s("msg").s(&big)),
            entry(Mp::new().map(1).s("msg").s("small")),
        ],
        "f1",
    ))
    .unwrap();
    assert_eq!(read_reply(&mut s), Mp::new().map(1).s("ack").s("f1").0);
    s.write_all(&forward(
        "dk.app",
        vec![
            entry(Mp::new().map(1).s("msg").s("kept")),
            entry(Mp::new().map(1).s("other").int(1)),
        ],
        "d1",
    ))
    .unwrap();
    assert_eq!(read_reply(&mut s), Mp::new().map(1).s("ack").s("d1").0);

    common::wait_for(
        Duration::from_secs(60),
        "the small record at Firehose",
        || {
            fake.accepted()
                .iter()
                .any(|r| r == b"{\"msg\":\"small\"}\n")
                .then_some(())
        },
    );
    assert!(
        fake.accepted().iter().all(|r| r.len() < 1_024_000),
        "the oversized record was never sent"
    );
    let out = dir.path().join("out");
    common::wait_for(Duration::from_secs(60), "the data_key record", || {
        let text: String = std::fs::read_dir(&out)
            .ok()?
            .filter_map(|e| e.ok())
            .filter(|e| e.path().extension().is_some_and(|x| x == "ndjson"))
            .map(|e| std::fs::read_to_string(e.path()).unwrap_or_default())
            .collect();
        (text == "kept\n").then_some(())
    });
    let entries: Vec<_> = DeadLetter::new(&dir.path().join("data"))
        .list()
        .unwrap()
        .into_iter()
        .map(|e| e.expect("readable dead-letter entry").meta)
        .collect();
    let reasons: Vec<(String, String, usize)> = entries
        .iter()
        .map(|m| (m.output.clone(), m.reason.clone(), m.records))
        .collect();
    assert!(
        reasons
            .iter()
            .any(|(o, r, n)| o == "fh" && r.contains("over the limit of 1024000 bytes") && *n == 1),
        "{reasons:?}"
    );
    assert!(
        reasons
            .iter()
            .any(|(o, r, n)| o == "dk" && r.contains("no field `msg`") && *n == 1),
        "{reasons:?}"
    );
    assert_eq!(reasons.len(), 2, "{reasons:?}");
}
