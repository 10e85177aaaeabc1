//! The forward source through the real binary, with a Rust client writing raw msgpack: every
//! carrier mode, both time encodings, gzip, options, and acks only for stored messages.

mod common;
mod forward_support;

use std::io::Write;

use forward_support::{assert_closed_without_reply, gzip, read_reply, Mp, Relay};

fn ack(chunk: &str) -> Vec<u8> {
    Mp::new().map(1).s("ack").s(chunk).0
}

/// Sends `msg` and expects the ack for `chunk`.
fn send_acked(relay: &Relay, msg: &Mp, chunk: &str) {
    let mut s = relay.connect();
    s.write_all(&msg.0).unwrap();
    assert_eq!(read_reply(&mut s), ack(chunk), "ack for {chunk}");
}

fn entry(time: Mp, msg: &str) -> Vec<u8> {
    Mp::new().arr(2).raw(&time.0).rec(msg).0
}

#[test]
fn all_modes_with_integer_and_event_times() {
    let relay = Relay::start("");
    let chunk = |id: &str| Mp::new().map(1).s("chunk").s(id);

    // Message, integer time and EventTime.
    send_acked(
        &relay,
        &Mp::new()
            .arr(4)
            .s("m.int")
            .int(1_600_000_000)
            .rec("message-int")
            .raw(&chunk("c1").0),
        "c1",
    );
    send_acked(
        &relay,
        &Mp::new()
            .arr(4)
            .s("m.et")
            .et(1_600_000_000, 42)
            .rec("message-et")
            .raw(&chunk("c2").0),
        "c2",
    );
    // Forward.
    let fwd = Mp::new()
        .arr(3)
        .s("f")
        .arr(2)
        .raw(&entry(Mp::new().int(1_600_000_001), "forward-1"))
        .raw(&entry(Mp::new().et(1_600_000_002, 7), "forward-2"))
        .raw(&chunk("c3").0);
    send_acked(&relay, &fwd, "c3");
    // PackedForward as bin and as str (Fluentd's out_forward sends str).
    let mut payload = entry(Mp::new().int(1_600_000_003), "packed-1");
    payload.extend(entry(Mp::new().et(1_600_000_004, 9), "packed-2"));
    send_acked(
        &relay,
        &Mp::new()
            .arr(3)
            .s("p.bin")
            .bin(&payload)
            .raw(&chunk("c4").0),
        "c4",
    );
    send_acked(
        &relay,
        &Mp::new()
            .arr(3)
            .s("p.str")
            .raw_str(&payload)
            .raw(&chunk("c5").0),
        "c5",
    );
    // CompressedPackedForward with two gzip members.
    let mut z = gzip(&entry(Mp::new().int(1_600_000_005), "gzip-1"));
    z.extend(gzip(&entry(Mp::new().et(1_600_000_006, 1), "gzip-2")));
    let opts = Mp::new()
        .map(3)
        .s("chunk")
        .s("c6")
        .s("compressed")
        .s("gzip")
        .s("size")
        .int(2);
    send_acked(&relay, &Mp::new().arr(3).s("z").bin(&z).raw(&opts.0), "c6");

    relay.wait_records(10);
    let out = relay.stdout();
    for line in [
        "2020-09-13 12:26:40.000000000 +0000 m.int: {\"msg\":\"message-int\"}",
        "2020-09-13 12:26:40.000000042 +0000 m.et: {\"msg\":\"message-et\"}",
        "2020-09-13 12:26:41.000000000 +0000 f: {\"msg\":\"forward-1\"}",
        "2020-09-13 12:26:42.000000007 +0000 f: {\"msg\":\"forward-2\"}",
        "2020-09-13 12:26:43.000000000 +0000 p.bin: {\"msg\":\"packed-1\"}",
        "2020-09-13 12:26:44.000000009 +0000 p.str: {\"msg\":\"packed-2\"}",
        "2020-09-13 12:26:45.000000000 +0000 z: {\"msg\":\"gzip-1\"}",
        "2020-09-13 12:26:46.000000001 +0000 z: {\"msg\":\"gzip-2\"}",
    ] {
        assert!(out.contains(line), "missing {line:?} in:\n{out}");
    }
}

#[test]
fn messages_without_chunk_get_no_reply_and_keepalives_are_ignored() {
    let relay = Relay::start("");
    let mut s = relay.connect();
    s.write_all(&[0xc0]).unwrap();
    s.write_all(&Mp::new().arr(3).s("quiet").int(1).rec("no-ack").0)
        .unwrap();
    s.write_all(&[0xc0]).unwrap();
    relay.wait_records(1);
    s.shutdown(std::net::Shutdown::Write).unwrap();
    assert_closed_without_reply(&mut s);
}

#[test]
fn tag_prefix_and_source_address_are_added() {
    let relay = Relay::start(
        "add_tag_prefix = \"edge\"\nsource_address_key = \"client_ip\"\nsource_hostname_key = \"client_host\"\n",
    );
    let msg = Mp::new()
        .arr(4)
        .s("app")
        .int(1)
        .map(2)
        .s("msg")
        .s("x")
        .s("client_ip")
        .s("spoofed")
        .map(1)
        .s("chunk")
        .s("a1");
    send_acked(&relay, &msg, "a1");
    let recs = relay.wait_records(1);
    assert_eq!(
        recs[0],
        serde_json::json!({"msg": "x", "client_ip": "127.0.0.1", "client_host": "127.0.0.1"})
    );
    assert!(relay.stdout().contains(" edge.app: "), "{}", relay.stdout());
}

#[test]
fn a_message_the_buffer_refuses_is_not_acknowledged_and_the_connection_stays_usable() {
    // A record larger than a chunk goes to the dead-letter directory, which cannot be created
    // (a file is in its place): the message cannot be stored whole, so it is not acknowledged.
    let relay = Relay::start_with("", "chunk_limit_size = \"1k\"");
    std::fs::write(relay.data_dir().join("dead-letter"), "in the way").unwrap();
    let mut s = relay.connect();
    let big = "x".repeat(2000);
    s.write_all(
        &Mp::new()
            .arr(4)
            .s("big")
            .int(1)
            .rec(&big)
            .map(1)
            .s("chunk")
            .s("b1")
            .0,
    )
    .unwrap();
    // Nothing comes back for b1; a small message on the same connection is acked.
    s.write_all(
        &Mp::new()
            .arr(4)
            .s("small")
            .int(1)
            .rec("ok")
            .map(1)
            .s("chunk")
            .s("b2")
            .0,
    )
    .unwrap();
    assert_eq!(read_reply(&mut s), ack("b2"));
    relay.wait_log("not acknowledged");
}
