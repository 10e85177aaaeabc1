//! Bad input closes only the offending connection, with a warning that names the reason; no
//! ack is sent for the bad message, earlier valid messages of that connection are kept, and
//! the process goes on serving other clients.

mod common;
mod forward_support;

use std::io::Write;
use std::time::Duration;

use forward_support::{assert_closed_without_reply, gzip, read_reply, Mp, Relay};

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
