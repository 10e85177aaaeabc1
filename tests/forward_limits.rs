//! Limits on connections and authentication through the real binary: before the handshake a
//! client cannot send more than a PING, failed handshakes are slowed and an address that keeps
//! failing is locked out, UDP heartbeats honour `allow`, and a flood of idle connections cannot
//! take the descriptors the buffer needs (soft `RLIMIT_NOFILE` 256 before starting the relay),
//! and many clients sending large messages at once stay within `in_flight_limit`; a connection
//! waiting for a message holds no read buffer.

mod common;
mod forward_support;

use std::io::{Read, Write};
use std::time::Duration;

use forward_support::{assert_closed_without_reply, hostile, read_reply, Launch, Mp, Relay};

const SECURITY: &str = "[sources.fwd.security]\nshared_key = \"k3y\"\nself_hostname = \"relay\"\n";

#[test]
fn before_authentication_a_client_cannot_send_more_than_a_ping() {
    let relay = Relay::start(SECURITY);
    let mut s = relay.connect();
    hostile::read_helo(&mut s);
    // A PING whose host name announces 1 MiB: refused from its header, long before
    // message_timeout (60 s; the socket's read timeout is 5 s).
    let _ = s.write_all(
        &Mp::new()
            .arr(6)
            .s("PING")
            .raw(&[0xdb, 0, 0x10, 0, 0])
            .raw(&[b'h'; 8192])
            .0,
    );
    assert_closed_without_reply(&mut s);
    relay.wait_log("reason=\"too_large\"");
}

#[test]
fn failed_handshakes_are_delayed_and_an_address_that_keeps_failing_is_locked_out() {
    let relay = Relay::start(SECURITY);
    for i in 0..5 {
        let mut s = relay.connect();
        hostile::read_helo(&mut s);
        let sent = std::time::Instant::now();
        s.write_all(&hostile::wrong_ping()).unwrap();
        let pong = read_reply(&mut s);
        let reason = b"shared_key mismatch";
        assert!(
            pong.windows(reason.len()).any(|w| w == reason),
            "attempt {i}: {pong:?}"
        );
        assert!(
            sent.elapsed() >= Duration::from_millis(900),
            "attempt {i} refused at once"
        );
    }
    // The sixth connection from this address gets no HELO at all.
    let mut s = relay.connect();
    assert_closed_without_reply(&mut s);
    relay.wait_log("reason=\"handshake_lockout\"");
}

#[test]
fn udp_heartbeats_are_answered_only_to_allowed_senders() {
    let relay = Relay::start("heartbeat = true\nallow = [\"10.0.0.0/8\"]\n");
    let udp = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    udp.send_to(&[0], ("127.0.0.1", relay.port)).unwrap();
    relay.wait_log("UDP heartbeat not answered");
    let mut buf = [0u8; 8];
    assert!(
        udp.recv_from(&mut buf).is_err(),
        "a sender outside `allow` got an answer"
    );
    let open = Relay::start("heartbeat = true\n");
    udp.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    udp.send_to(&[0], ("127.0.0.1", open.port)).unwrap();
    assert_eq!(
        udp.recv_from(&mut buf)
            .map(|(n, _)| buf[..n].to_vec())
            .unwrap(),
        vec![0]
    );
}

/// With the soft descriptor limit at 256 and 400 idle clients, a client still gets its message
/// stored and acknowledged and the relay stays ready; `hard` is the hard limit.
fn survives_an_idle_flood(hard: u64) -> Relay {
    let relay = Relay::launch(&Launch {
        http: true,
        limits: &[common::Limit::Nofile { soft: 256, hard }],
        ..Launch::default()
    });
    let mut client = relay.connect();
    let idle = hostile::idle_connections(relay.port, 400);
    assert_eq!(idle.len(), 400, "the relay stopped accepting");
    // The buffer still opens chunk files: a message is stored and acknowledged.
    client
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    client
        .write_all(
            &Mp::new()
                .arr(4)
                .s("t")
                .int(1)
                .rec("after-flood")
                .map(1)
                .s("chunk")
                .s("f")
                .0,
        )
        .unwrap();
    assert_eq!(read_reply(&mut client), Mp::new().map(1).s("ack").s("f").0);
    common::wait_for(Duration::from_secs(30), "the record", || {
        relay
            .records()
            .iter()
            .any(|r| r["msg"] == "after-flood")
            .then_some(())
    });
    common::wait_for(Duration::from_secs(30), "/readyz 200", || {
        (relay.http_get("/readyz").0 == 200).then_some(())
    });
    drop(idle);
    relay
}

#[test]
fn a_flood_of_idle_connections_does_not_starve_the_buffer_of_descriptors() {
    // The hard limit is higher (a container's usual 1M, or the test machine's): the relay
    // raises its soft limit and serves all 400.
    let relay = survives_an_idle_flood(common::nofile_hard_limit());
    relay.wait_log("file descriptor limit");
    assert!(
        relay.stderr().contains("initial_soft=256"),
        "{}",
        relay.stderr()
    );
    // Raised: none of the 400 was refused for want of descriptors.
    let metrics = relay.http_get("/metrics").1;
    assert!(
        !metrics.lines().any(|l| {
            l.starts_with("firehose_relay_forward_connections_rejected_total{")
                && l.contains("fd_limit")
                && !l.ends_with(" 0")
        }),
        "connections refused although the hard limit allows them:\n{metrics}"
    );
    assert!(
        !relay.stderr().contains("reason=\"fd_limit\""),
        "{}",
        relay.stderr()
    );
    relay.assert_still_serving("after");
}

#[test]
fn when_the_hard_limit_is_low_connections_beyond_the_budget_are_refused_and_counted() {
    let relay = survives_an_idle_flood(256);
    relay.wait_log("reason=\"fd_limit\"");
    let metrics = relay.http_get("/metrics").1;
    let refused = metrics
        .lines()
        .find(|l| {
            l.starts_with("firehose_relay_forward_connections_rejected_total{")
                && l.contains("fd_limit")
        })
        .and_then(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .unwrap_or(0);
    assert!(refused > 100, "refused {refused}:\n{metrics}");
    relay.assert_still_serving("after");
}

/// A metric's value from `/metrics` text (`name{labels} value`).
fn metric(text: &str, name: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name) && l[name.len()..].starts_with('{'))
        .and_then(|l| l.rsplit(' ').next()?.parse().ok())
}

#[test]
fn many_clients_sending_large_messages_stay_within_in_flight_limit_and_all_are_acknowledged() {
    const LIMIT: u64 = 256 * 1024;
    const CLIENTS: usize = 24;
    const MESSAGES: usize = 4;
    const ENTRIES: usize = 300;
    let relay = Relay::launch(&Launch {
        source: "in_flight_limit = \"256k\"\n",
        http: true,
        quiet: true,
        ..Launch::default()
    });
    // PackedForward messages of ~75 KiB (300 records of ~250 B); the first client's are ~450 KiB,
    // larger than the whole budget.
    let message = |client: usize, m: usize| {
        let entries = if client == 0 { 6 * ENTRIES } else { ENTRIES };
        let mut payload = Vec::new();
        for e in 0..entries {
            let text = format!("c{client}-m{m}-e{e}-{}", "x".repeat(220));
            payload.extend(Mp::new().arr(2).int(1).rec(&text).0);
        }
        let chunk = format!("c{client}m{m}");
        let bytes = Mp::new()
            .arr(3)
            .s("t")
            .bin(&payload)
            .raw(&forward_support::hostile::options(&chunk, false))
            .0;
        (bytes, Mp::new().map(1).s("ack").s(&chunk).0)
    };
    let port = relay.port;
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            std::thread::spawn(move || {
                let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                s.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
                let mut acks = Vec::new();
                for m in 0..MESSAGES {
                    let (bytes, ack) = message(c, m);
                    s.write_all(&bytes).unwrap();
                    acks.extend(ack);
                }
                // Acks come in message order: every message was stored.
                let mut got = vec![0u8; acks.len()];
                s.read_exact(&mut got)
                    .unwrap_or_else(|e| panic!("client {c}: not every message acknowledged: {e}"));
                assert_eq!(got, acks, "client {c}");
            })
        })
        .collect();
    for c in clients {
        c.join().unwrap();
    }
    let metrics = relay.http_get("/metrics").1;
    let peak = metric(&metrics, "firehose_relay_forward_in_flight_peak_bytes").unwrap();
    let now = metric(&metrics, "firehose_relay_forward_in_flight_bytes").unwrap();
    let waits = metric(&metrics, "firehose_relay_forward_in_flight_waits_total").unwrap();
    assert!(peak <= LIMIT as f64, "peak {peak} above the budget");
    assert!(
        peak >= (LIMIT / 2) as f64,
        "peak {peak}: the budget was hardly used"
    );
    assert!(
        waits > 0.0,
        "no connection ever waited for the budget:\n{metrics}"
    );
    assert_eq!(now, 0.0, "bytes still counted in flight after every ack");
    let expected = (CLIENTS - 1 + 6) * MESSAGES * ENTRIES;
    assert_eq!(relay.wait_records(expected).len(), expected);
}

/// Issue 16's escaped flood in small: a message whose JSON is six times its size (records of
/// control characters, each `\u0001` in JSON) and far larger than the budget. Its JSON must
/// never be in memory whole: it is stored in pieces within the budget, and acknowledged once.
#[test]
fn a_message_whose_json_is_far_larger_than_the_budget_is_stored_in_pieces_within_it() {
    const RECORDS: usize = 80;
    const RECORD: usize = 150 * 1024;
    let relay = Relay::launch(&Launch {
        source: "in_flight_limit = \"2m\"\n",
        http: true,
        quiet: true,
        ..Launch::default()
    });
    let mut payload = Vec::new();
    for _ in 0..RECORDS {
        let record = Mp::new().map(1).s("k").raw_str(&vec![0x01; RECORD]).0;
        payload.extend(Mp::new().arr(2).int(1).raw(&record).0);
    }
    let message = Mp::new()
        .arr(3)
        .s("t")
        .bin(&payload)
        .raw(&forward_support::hostile::options("escaped", false))
        .0;
    let json_bytes = RECORDS * (RECORD * 6 + 10);
    let idle = relay.peak_rss();
    let mut s = relay.connect();
    s.set_read_timeout(Some(Duration::from_secs(300))).unwrap();
    s.write_all(&message).unwrap();
    assert_eq!(
        forward_support::read_reply(&mut s),
        Mp::new().map(1).s("ack").s("escaped").0
    );
    let records = relay.wait_records(RECORDS);
    assert_eq!(records.len(), RECORDS);
    assert!(records.iter().all(|r| r["k"]
        .as_str()
        .is_some_and(|k| k.len() == RECORD && k.bytes().all(|b| b == 1))));
    let peak = relay.peak_rss();
    let grown = peak.saturating_sub(idle);
    eprintln!(
        "message {} MiB, its JSON {} MiB, relay peak RSS {} MiB ({} MiB before the message)",
        message.len() >> 20,
        json_bytes >> 20,
        peak >> 20,
        idle >> 20
    );
    // The frame (12 MiB) and a piece (half the budget and one record of ~900 KiB, 2 MiB
    // reserved) with what the buffer and the output hold: well under half of the message's
    // JSON (70 MiB). Decoded whole, its text alone doubled its way up to 120 MiB.
    assert!(
        grown < json_bytes as u64 / 2,
        "RSS grew by {} MiB: the message's JSON ({} MiB) was in memory at once",
        grown >> 20,
        json_bytes >> 20
    );
    let metrics = relay.http_get("/metrics").1;
    let in_flight_peak = metric(&metrics, "firehose_relay_forward_in_flight_peak_bytes").unwrap();
    assert!(in_flight_peak <= (2 << 20) as f64, "{in_flight_peak}");
}

/// `Recv-Q` and `Send-Q` of the established TCP socket with local port `local` and peer port
/// `peer`, from `ss`: bytes the kernel holds that its owner has not read, and has not sent.
fn socket_queues(local: u16, peer: u16) -> Option<(u64, u64)> {
    let out = std::process::Command::new("ss")
        .args(["-tnH", "state", "established"])
        .arg(format!("( sport = :{local} )"))
        .output()
        .expect("ss (iproute2) runs");
    String::from_utf8_lossy(&out.stdout).lines().find_map(|l| {
        let cols: Vec<&str> = l.split_whitespace().collect();
        if !cols.get(3)?.ends_with(&format!(":{peer}")) {
            return None;
        }
        Some((cols[0].parse().ok()?, cols[1].parse().ok()?))
    })
}

/// The budget stops reading, not just counting: while one message holds all of it, the relay
/// reads no more than the first 8 KiB of another client's message (what it read: what the
/// client wrote less what the kernel still holds on both ends, seen with `ss`), and reads,
/// stores and acknowledges it once the budget comes back. The permit gauge alone cannot tell
/// a connection that reads without permits.
#[test]
fn while_the_budget_is_used_up_other_connections_leave_their_messages_unread() {
    let relay = Relay::launch(&Launch {
        source: "in_flight_limit = \"64k\"\n",
        http: true,
        quiet: true,
        ..Launch::default()
    });
    let message = |chunk: &str, entries: usize| {
        let mut payload = Vec::new();
        for e in 0..entries {
            let text = format!("{chunk}-{e}-{}", "x".repeat(200));
            payload.extend(Mp::new().arr(2).int(1).rec(&text).0);
        }
        let bytes = Mp::new()
            .arr(3)
            .s("t")
            .bin(&payload)
            .raw(&forward_support::hostile::options(chunk, false))
            .0;
        (bytes, Mp::new().map(1).s("ack").s(chunk).0)
    };
    let in_flight = || {
        metric(
            &relay.http_get("/metrics").1,
            "firehose_relay_forward_in_flight_bytes",
        )
        .unwrap_or(0.0)
    };
    // A: a message of ~1 MiB, larger than the budget, sent in part: it takes all of it.
    let (big, big_ack) = message("big", 4500);
    let mut a = relay.connect();
    a.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    a.write_all(&big[..200 * 1024]).unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while in_flight() < (64 * 1024) as f64 {
        assert!(
            std::time::Instant::now() < deadline,
            "A never took the budget"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    // B: a whole message of ~90 KiB, within what the kernel buffers between the two ends.
    let (small, small_ack) = message("small", 400);
    let mut b = relay.connect();
    b.set_read_timeout(Some(Duration::from_secs(120))).unwrap();
    let b_port = b.local_addr().unwrap().port();
    b.write_all(&small).unwrap();
    std::thread::sleep(Duration::from_secs(2));
    let (unread, _) = socket_queues(relay.port, b_port).expect("the relay's end in ss");
    let (_, unsent) = socket_queues(b_port, relay.port).expect("B's end in ss");
    let read = small.len() as u64 - unread - unsent;
    assert!(
        read <= 8 * 1024,
        "the relay read {read} bytes of B's {}-byte message while the budget was used up",
        small.len()
    );
    // A completes: both are stored and acknowledged, in order, and the budget comes back.
    a.write_all(&big[200 * 1024..]).unwrap();
    let mut got = vec![0u8; big_ack.len()];
    a.read_exact(&mut got).unwrap();
    assert_eq!(got, big_ack);
    let mut got = vec![0u8; small_ack.len()];
    b.read_exact(&mut got).unwrap();
    assert_eq!(got, small_ack);
    assert_eq!(relay.wait_records(4500 + 400).len(), 4500 + 400);
    assert_eq!(in_flight(), 0.0);
}

/// A gzip message's JSON is many times its bytes: with the budget free it takes what its JSON
/// needs at once and is stored whole (its peak in the gauge), not cut into pieces of 1.5 × its
/// compressed size.
#[test]
fn a_gzip_message_takes_what_its_json_needs_when_the_budget_is_free() {
    let relay = Relay::launch(&Launch {
        source: "in_flight_limit = \"8m\"\n",
        http: true,
        quiet: true,
        ..Launch::default()
    });
    let mut entries = Vec::new();
    for e in 0..10_000 {
        let text = format!("gz-{e}-{}", "y".repeat(200));
        entries.extend(Mp::new().arr(2).int(1).rec(&text).0);
    }
    let payload = forward_support::gzip(&entries);
    let message = Mp::new()
        .arr(3)
        .s("t")
        .bin(&payload)
        .raw(&forward_support::hostile::options("gz", true))
        .0;
    assert!(message.len() < 100 * 1024, "{}", message.len());
    let mut s = relay.connect();
    s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    s.write_all(&message).unwrap();
    assert_eq!(read_reply(&mut s), Mp::new().map(1).s("ack").s("gz").0);
    assert_eq!(relay.wait_records(10_000).len(), 10_000);
    let metrics = relay.http_get("/metrics").1;
    let peak = metric(&metrics, "firehose_relay_forward_in_flight_peak_bytes").unwrap();
    // ~2.2 MB of JSON: counted whole (in pieces the peak stays at 2.5 × the ~10 KiB message).
    assert!(
        peak >= 2e6,
        "peak {peak}: the message's JSON was not taken whole"
    );
    assert!(peak <= (8 << 20) as f64, "{peak}");
    assert_eq!(
        metric(&metrics, "firehose_relay_forward_in_flight_bytes"),
        Some(0.0)
    );
}

/// Current resident set size (`VmRSS`) of process `pid`, in bytes.
fn rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS in /proc/PID/status");
    kib * 1024
}

/// A connection waiting for a message, before its first one or between two, holds no read
/// buffer (an 8 KiB probe each, before) and a small task: the relay's RSS per idle connection,
/// measured over 400 of them, both freshly opened and after each sent a message. In this debug
/// build: 12.4 KiB fresh and 16.7 KiB after a message with the read buffer; 8.2–8.4 and
/// 10.8–11.1 KiB without it; 2.5 and 4.6 KiB once the TLS path and the queue of messages being
/// stored were boxed (the task's future was 5.0 KiB, as large as the TLS state, and the queue
/// kept an empty slot of 2.4 KiB).
#[test]
fn connections_waiting_for_a_message_hold_no_read_buffer() {
    const CONNECTIONS: usize = 400;
    const MAX_FRESH: u64 = 4 * 1024;
    const MAX_AFTER_ONE: u64 = 7 * 1024;
    let relay = Relay::launch(&Launch {
        quiet: true,
        ..Launch::default()
    });
    let pid = relay.child.id();
    let message = |i: usize| {
        let chunk = format!("idle{i}");
        let bytes = Mp::new()
            .arr(3)
            .s("t")
            .arr(1)
            .arr(2)
            .int(1)
            .rec(&format!("idle-{i}"))
            .map(1)
            .s("chunk")
            .s(&chunk)
            .0;
        (bytes, Mp::new().map(1).s("ack").s(&chunk).0)
    };
    let send = |s: &mut std::net::TcpStream, i: usize| {
        let (bytes, ack) = message(i);
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
        s.write_all(&bytes).unwrap();
        assert_eq!(read_reply(s), ack, "connection {i}");
    };
    // Warm up: the paths a message takes have allocated once.
    for i in 0..20 {
        send(&mut relay.connect(), CONNECTIONS + i);
    }
    std::thread::sleep(Duration::from_secs(1));
    let before = rss(pid);
    let mut idle = hostile::idle_connections(relay.port, CONNECTIONS);
    assert_eq!(idle.len(), CONNECTIONS, "the relay stopped accepting");
    std::thread::sleep(Duration::from_secs(2));
    let fresh = rss(pid).saturating_sub(before) / CONNECTIONS as u64;
    for (i, s) in idle.iter_mut().enumerate() {
        send(s, i);
    }
    std::thread::sleep(Duration::from_secs(2));
    let after_one = rss(pid).saturating_sub(before) / CONNECTIONS as u64;
    eprintln!(
        "relay RSS {} KiB before; per idle connection: {fresh} B freshly opened, {after_one} B after one message each",
        before >> 10
    );
    assert!(
        fresh <= MAX_FRESH,
        "{fresh} bytes per connection that never sent anything"
    );
    assert!(
        after_one <= MAX_AFTER_ONE,
        "{after_one} bytes per connection waiting for its second message"
    );
    assert_eq!(relay.wait_records(CONNECTIONS + 20).len(), CONNECTIONS + 20);
    drop(idle);
}
