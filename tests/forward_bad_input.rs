//! Bad input closes only the offending connection, with a warning that names the reason; no
//! ack is sent for the bad message, earlier valid messages of that connection are kept, and
//! the process goes on serving other clients.

mod common;
mod forward_support;

use std::io::Write;
use std::time::Duration;

use forward_support::{assert_closed_without_reply, gzip, read_reply, Launch, Mp, Relay};

/// Each case: (name, reason the log must name, bytes).
fn cases() -> Vec<(&'static str, &'static str, Vec<u8>)> {
    let packed = Mp::new().arr(2).int(1).rec("never").0;
    let z = gzip(&packed);
    let bomb = gzip(&vec![0u8; 8 << 20]);
    let gz_opts = Mp::new()
        .map(2)
        .s("compressed")
        .s("gzip")
        .s("chunk")
        .s("bad");
    vec![
        (
            "malformed msgpack",
            "malformed",
            vec![0x93, 0xa1, b't', 0xc1],
        ),
        (
            "not an array",
            "wrong_type",
            Mp::new().map(1).s("chunk").s("bad").0,
        ),
        (
            "wrong arity",
            "wrong_type",
            Mp::new().arr(5).s("t").int(1).rec("x").int(1).int(2).0,
        ),
        (
            "tag not a string",
            "tag_not_string",
            Mp::new()
                .arr(4)
                .int(7)
                .int(1)
                .rec("x")
                .map(1)
                .s("chunk")
                .s("bad")
                .0,
        ),
        (
            "tag not UTF-8",
            "invalid_utf8",
            Mp::new()
                .arr(4)
                .raw_str(b"\xff\xfe")
                .int(1)
                .rec("x")
                .map(1)
                .s("chunk")
                .s("bad")
                .0,
        ),
        (
            "garbage packed payload",
            "malformed",
            Mp::new()
                .arr(3)
                .s("t")
                .bin(&[0x92, 0x01])
                .map(1)
                .s("chunk")
                .s("bad")
                .0,
        ),
        (
            "truncated gzip",
            "bad_gzip",
            Mp::new()
                .arr(3)
                .s("t")
                .bin(&z[..z.len() - 6])
                .raw(&gz_opts.0)
                .0,
        ),
        (
            "zip bomb",
            "decompression_limit",
            Mp::new().arr(3).s("t").bin(&bomb).raw(&gz_opts.0).0,
        ),
        (
            "oversized message",
            "too_large",
            Mp::new()
                .arr(3)
                .s("t")
                .int(1)
                .map(1)
                .s("m")
                .raw(&[0xdb, 0x10, 0, 0, 0])
                .raw(&[b'a'; 4096])
                .0,
        ),
        (
            "nesting deeper than 64 levels",
            "too_deep",
            Mp::new()
                .arr(4)
                .s("t")
                .int(1)
                .map(1)
                .s("k")
                .raw(&[0x91; 100])
                .int(1)
                .map(1)
                .s("chunk")
                .s("bad")
                .0,
        ),
        (
            "JSON protocol",
            "json",
            br#"["t",1,{"m":1},{"chunk":"bad"}]"#.to_vec(),
        ),
    ]
}

#[test]
fn each_class_of_bad_input_closes_only_its_connection_without_ack() {
    let relay = Relay::start("message_length_limit = \"1m\"\ndecompression_size_limit = \"1m\"\n");
    // A client that stays connected through all of it.
    let mut bystander = relay.connect();
    for (i, (name, reason, bytes)) in cases().into_iter().enumerate() {
        let mut s = relay.connect();
        let good = format!("good-before-{i}");
        s.write_all(
            &Mp::new()
                .arr(4)
                .s("t")
                .int(1)
                .rec(&good)
                .map(1)
                .s("chunk")
                .s(&good)
                .0,
        )
        .unwrap();
        assert_eq!(
            read_reply(&mut s),
            Mp::new().map(1).s("ack").s(&good).0,
            "{name}"
        );
        // The server may close while we are still writing (e.g. the oversized message).
        let _ = s.write_all(&bytes);
        assert_closed_without_reply(&mut s);
        relay.wait_log(&format!("reason=\"{reason}\""));
        relay.assert_still_serving(&format!("alive-after-{i}"));
        assert!(
            relay.records().iter().any(|r| r["msg"] == good.as_str()),
            "{name}: earlier message lost"
        );
        let marker = format!("bystander-{i}");
        bystander
            .write_all(
                &Mp::new()
                    .arr(4)
                    .s("b")
                    .int(1)
                    .rec(&marker)
                    .map(1)
                    .s("chunk")
                    .s(&marker)
                    .0,
            )
            .unwrap();
        assert_eq!(
            read_reply(&mut bystander),
            Mp::new().map(1).s("ack").s(&marker).0,
            "{name}"
        );
    }
    assert!(!relay
        .records()
        .iter()
        .any(|r| r["msg"] == "never" || r["msg"] == "x"));
}

#[test]
fn invalid_events_are_skipped_and_the_rest_acknowledged() {
    let relay = Relay::start("");
    let msg = Mp::new()
        .arr(3)
        .s("t")
        .arr(3)
        .arr(2)
        .s("not a time")
        .rec("bad-time")
        .arr(2)
        .int(1)
        .s("not a map")
        .arr(2)
        .int(1)
        .rec("kept")
        .map(1)
        .s("chunk")
        .s("k");
    let mut s = relay.connect();
    s.write_all(&msg.0).unwrap();
    assert_eq!(read_reply(&mut s), Mp::new().map(1).s("ack").s("k").0);
    let recs = relay.wait_records(1);
    assert_eq!(recs, vec![serde_json::json!({"msg": "kept"})]);
    relay.wait_log("skipped invalid events");
}

#[test]
fn with_skip_invalid_event_off_an_invalid_event_rejects_the_message() {
    let relay = Relay::start("skip_invalid_event = false\n");
    let mut s = relay.connect();
    s.write_all(
        &Mp::new()
            .arr(4)
            .s("t")
            .int(1)
            .int(5)
            .map(1)
            .s("chunk")
            .s("x")
            .0,
    )
    .unwrap();
    assert_closed_without_reply(&mut s);
    relay.wait_log("reason=\"invalid_event\"");
    relay.assert_still_serving("alive");
}

#[test]
fn a_slow_sender_is_cut_off_after_message_timeout() {
    let relay = Relay::start("message_timeout = \"1s\"\n");
    let mut s = relay.connect();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    // Half a message, then silence: slowloris.
    s.write_all(&[0x93, 0xa1, b't']).unwrap();
    assert_closed_without_reply(&mut s);
    relay.wait_log("reason=\"timeout\"");
    relay.assert_still_serving("alive");
}

#[test]
fn connections_beyond_max_connections_are_refused() {
    let relay = Relay::start("max_connections = 1\n");
    // The readiness probe of `Relay::start` may still hold the only slot for a moment.
    let _first = common::wait_for(Duration::from_secs(5), "the only slot", || {
        let mut s = relay.connect();
        s.write_all(
            &Mp::new()
                .arr(4)
                .s("t")
                .int(1)
                .rec("one")
                .map(1)
                .s("chunk")
                .s("1")
                .0,
        )
        .ok()?;
        (forward_support::try_read_reply(&mut s)? == Mp::new().map(1).s("ack").s("1").0)
            .then_some(s)
    });
    let mut second = relay.connect();
    assert_closed_without_reply(&mut second);
    relay.wait_log("max_connections reached");
    drop(_first);
    common::wait_for(Duration::from_secs(5), "a free slot", || {
        let mut s = relay.connect();
        s.write_all(
            &Mp::new()
                .arr(4)
                .s("t")
                .int(1)
                .rec("two")
                .map(1)
                .s("chunk")
                .s("2")
                .0,
        )
        .ok()?;
        (forward_support::try_read_reply(&mut s)? == Mp::new().map(1).s("ack").s("2").0)
            .then_some(())
    });
}

#[test]
fn clients_outside_allow_are_refused() {
    let relay = Relay::start("allow = [\"10.0.0.0/8\"]\n");
    let mut s = relay.connect();
    assert_closed_without_reply(&mut s);
    relay.wait_log("not in `allow`");
}

#[test]
fn clients_inside_allow_are_admitted() {
    let relay = Relay::start("allow = [\"10.0.0.0/8\", \"127.0.0.0/8\"]\n");
    relay.assert_still_serving("inside-allow");
    assert!(!relay.stderr().contains("not in `allow`"));
}

#[test]
fn an_idle_connection_is_closed_after_idle_timeout_and_one_in_use_is_not() {
    let relay = Relay::start("idle_timeout = \"1s\"\n");
    let mut busy = relay.connect();
    let mut idle = relay.connect();
    // The busy client sends every 300 ms for longer than the timeout and keeps its connection.
    for i in 0..8 {
        let chunk = format!("busy-{i}");
        busy.write_all(
            &Mp::new()
                .arr(4)
                .s("t")
                .int(1)
                .rec(&chunk)
                .map(1)
                .s("chunk")
                .s(&chunk)
                .0,
        )
        .unwrap();
        assert_eq!(read_reply(&mut busy), Mp::new().map(1).s("ack").s(&chunk).0);
        std::thread::sleep(Duration::from_millis(300));
    }
    // By then the idle one was closed without a reply.
    idle.set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    assert_closed_without_reply(&mut idle);
}

#[test]
fn deny_keepalive_closes_the_connection_after_each_acknowledged_message() {
    let relay = Relay::start("deny_keepalive = true\n");
    let mut s = relay.connect();
    s.write_all(
        &Mp::new()
            .arr(4)
            .s("t")
            .int(1)
            .rec("once")
            .map(1)
            .s("chunk")
            .s("k1")
            .0,
    )
    .unwrap();
    assert_eq!(read_reply(&mut s), Mp::new().map(1).s("ack").s("k1").0);
    assert_closed_without_reply(&mut s);
    assert_eq!(relay.wait_records(1)[0]["msg"], "once");
}

#[test]
fn udp_heartbeats_are_answered_on_the_forward_port_when_enabled() {
    let relay = Relay::start("heartbeat = true\n");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // UDP may drop a datagram: retry within a generous deadline, as out_forward does.
    let reply = common::wait_for(Duration::from_secs(30), "a heartbeat answer", || {
        udp.send_to(b"heartbeat", ("127.0.0.1", relay.port)).ok()?;
        let mut buf = [0u8; 16];
        let (n, _) = udp.recv_from(&mut buf).ok()?;
        Some(buf[..n].to_vec())
    });
    assert_eq!(
        reply,
        vec![0u8],
        "Fluentd answers a heartbeat with one 0x00 byte"
    );
    // Without `heartbeat`, nothing answers on UDP.
    let quiet = Relay::start("");
    udp.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    udp.send_to(b"heartbeat", ("127.0.0.1", quiet.port))
        .unwrap();
    let mut buf = [0u8; 16];
    assert!(
        udp.recv_from(&mut buf).is_err(),
        "no heartbeat answer when disabled"
    );
}

/// A hostile message the relay takes without closing the connection: acknowledged, its good
/// records (`good-N`) delivered, the hostile part dead-lettered as the reason says.
struct Taken {
    name: &'static str,
    source: &'static str,
    buffer: &'static str,
    /// Messages sent one after another on one connection; each asks for an ack.
    messages: fn() -> Vec<Vec<u8>>,
    /// Distinct `good-N` records that must arrive.
    good: usize,
    /// A dead-letter entry whose reason contains this, and whether it is `truncated`.
    dead_letter: Option<(&'static str, bool)>,
}

fn taken_cases() -> Vec<Taken> {
    use forward_support::hostile::*;
    vec![
        Taken {
            name: "gzip bomb: one event of 200 MiB of 0x01 in 200 KiB",
            source: "",
            buffer: "",
            messages: || vec![gzip_bomb("m0")],
            good: 2,
            dead_letter: Some(("record_size_limit", true)),
        },
        Taken {
            name: "20 records and one larger than chunk_limit_size",
            source: "",
            buffer: "chunk_limit_size = \"64k\"",
            messages: || vec![records_and_one_big(20, 100_000, "m0")],
            good: 20,
            dead_letter: Some(("record_size_limit (65536 bytes", true)),
        },
        Taken {
            name: "20 records and one larger than chunk_limit_size but within record_size_limit",
            source: "record_size_limit = \"1m\"",
            buffer: "chunk_limit_size = \"64k\"",
            messages: || vec![records_and_one_big(20, 100_000, "m0")],
            good: 20,
            dead_letter: Some(("over the limit of 65536 bytes", false)),
        },
        Taken {
            name: "2 MiB of control characters in one record (6 bytes of JSON each)",
            source: "",
            buffer: "",
            messages: || vec![control_characters(2 << 20, "m0")],
            good: 2,
            dead_letter: Some(("record_size_limit", true)),
        },
        Taken {
            name: "a record of 500,000 pairs 1: nil",
            source: "",
            buffer: "",
            messages: || vec![many_nils(500_000, "m0")],
            good: 2,
            dead_letter: Some(("record_size_limit", true)),
        },
        Taken {
            name: "150 messages with distinct tags of 2 MiB",
            source: "",
            buffer: "",
            messages: || {
                (0..150)
                    .map(|n| long_tag(n, 2 << 20, &format!("m{n}")))
                    .collect()
            },
            good: 150,
            dead_letter: None,
        },
    ]
}

/// Peak RSS allowed to a relay under any of these inputs: the shipped StatefulSet's limit.
const RSS_LIMIT: u64 = 256 << 20;
/// How much `data_dir` may grow for these few records and dead-letter entries.
const DISK_GROWTH_LIMIT: u64 = 8 << 20;

#[test]
fn hostile_messages_are_taken_within_memory_and_disk_bounds_and_others_keep_being_served() {
    let failed: Vec<_> = taken_cases()
        .into_iter()
        .filter(|case| std::panic::catch_unwind(|| check_taken(case)).is_err())
        .map(|case| case.name)
        .collect();
    assert!(failed.is_empty(), "failed: {failed:#?}");
}

fn check_taken(case: &Taken) {
    // A regression must fail the test, not take the machine down: the relay's address space
    // is capped far above the bound the test checks.
    let limits = [common::Limit::AddressSpace(4 << 30)];
    {
        let name = case.name;
        let relay = Relay::launch(&Launch {
            source: case.source,
            buffer: case.buffer,
            quiet: true,
            limits: &limits,
            ..Launch::default()
        });
        let disk_before = common::dir_size(&relay.data_dir());
        let mut bystander = relay.connect();
        let messages = (case.messages)();
        let mut client = relay.connect();
        client
            .set_read_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let sender = std::thread::spawn(move || {
            messages
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    client.write_all(m).expect("send");
                    (
                        read_reply(&mut client),
                        Mp::new().map(1).s("ack").s(&format!("m{i}")).0,
                    )
                })
                .collect::<Vec<_>>()
        });
        // Meanwhile another client is served.
        bystander
            .write_all(
                &Mp::new()
                    .arr(4)
                    .s("b")
                    .int(1)
                    .rec("bystander")
                    .raw(&forward_support::hostile::options("b", false))
                    .0,
            )
            .unwrap();
        bystander
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        assert_eq!(
            read_reply(&mut bystander),
            Mp::new().map(1).s("ack").s("b").0,
            "{name}: bystander"
        );
        for (got, want) in sender.join().expect("sender") {
            assert_eq!(got, want, "{name}: every message acknowledged");
        }
        // The bystander's record may sit in another chunk than the good ones, delivered by
        // another flush worker in any order: wait for all of them.
        let records = common::wait_for(
            Duration::from_secs(60),
            "the good records and the bystander's",
            || {
                let r = relay.records();
                let good: std::collections::BTreeSet<_> = r
                    .iter()
                    .filter_map(|r| {
                        r["msg"]
                            .as_str()
                            .filter(|m| m.starts_with("good-"))
                            .map(str::to_owned)
                    })
                    .collect();
                let bystander = r.iter().any(|r| r["msg"] == "bystander");
                (good.len() >= case.good && bystander).then_some(r)
            },
        );
        assert!(
            records.iter().any(|r| r["msg"] == "bystander"),
            "{name}: bystander stored"
        );
        let dead = relay.dead_letters();
        match case.dead_letter {
            None => assert!(dead.is_empty(), "{name}: unexpected dead letters {dead:?}"),
            Some((reason, truncated)) => {
                forward_support::hostile::assert_one_dead_letter(&dead, reason, truncated)
            }
        }
        relay.assert_still_serving("after");
        let rss = relay.peak_rss();
        assert!(rss < RSS_LIMIT, "{name}: peak RSS {} MiB", rss >> 20);
        let grown = common::dir_size(&relay.data_dir()).saturating_sub(disk_before);
        assert!(
            grown < DISK_GROWTH_LIMIT,
            "{name}: data_dir grew by {grown} bytes"
        );
        eprintln!(
            "{name}: peak RSS {} MiB, data_dir +{} KiB",
            rss >> 20,
            grown >> 10
        );
    }
}
