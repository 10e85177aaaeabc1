//! Each `overflow_action` through the forward port, with an output that cannot deliver (its
//! path is a regular file) so the buffer fills up, then repaired so it drains:
//!
//! * `throw_exception`: the message that does not fit gets no ack (the client resends it),
//!   the connection stays usable, and every acknowledged record is delivered after repair;
//! * `block`: the relay stops reading, so the client's writes stall (TCP back-pressure) with no
//!   ack lost; after repair everything sent is acknowledged and delivered;
//! * `drop_oldest_chunk`: every message is acknowledged, the oldest chunks are dropped and
//!   counted in `firehose_relay_buffer_dropped_chunks`, and the newest records are delivered.

mod common;
mod forward_support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use forward_support::{read_records, Mp};

/// A relay whose output path is blocked by a regular file; chunks of 8 KiB, 32 KiB in all.
struct Full {
    dir: tempfile::TempDir,
    /// Kept for its Drop: the relay stops with the test.
    _child: common::KillOnDrop,
    port: u16,
    http: u16,
}

impl Full {
    fn start(action: &str) -> Full {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().display();
        std::fs::write(dir.path().join("out"), "not a directory").unwrap();
        let conf = common::write_config(
            dir.path(),
            &format!(
                r#"
data_dir = "{d}/data"
shutdown_timeout = "10s"
[http]
listen = "127.0.0.1:0"
[sources.fwd]
type = "forward"
listen = "127.0.0.1:0"
[outputs.out]
type = "file"
match = "**"
path = "{d}/out"
[outputs.out.buffer]
type = "file"
chunk_limit_size = "8k"
total_limit_size = "32k"
overflow_action = "{action}"
flush_interval = "100ms"
flush_thread_interval = "20ms"
retry_wait = "100ms"
retry_max_interval = "500ms"
"#
            ),
        );
        let mut child = common::KillOnDrop(common::spawn_relay(&conf, &[]));
        let port = common::wait_forward_addr(dir.path(), &mut child, "fwd").port();
        let http = common::wait_http_addr(dir.path(), &mut child).port();
        Full {
            dir,
            _child: child,
            port,
            http,
        }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        s
    }

    fn out(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Lets the output deliver: the blocking file is replaced by a directory.
    fn repair(&self) {
        std::fs::remove_file(self.out()).unwrap();
        std::fs::create_dir(self.out()).unwrap();
    }

    /// The `n` fields of every delivered record.
    fn delivered(&self) -> BTreeSet<u64> {
        read_records(&self.out())
            .iter()
            .filter_map(|r| r["n"].as_u64())
            .collect()
    }

    fn wait_delivered(&self, want: &BTreeSet<u64>) {
        common::wait_for(Duration::from_secs(60), "the records delivered", || {
            want.is_subset(&self.delivered()).then_some(())
        });
    }

    fn metrics(&self) -> String {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let url = format!("http://127.0.0.1:{}/metrics", self.http);
        rt.block_on(async { reqwest::get(&url).await.unwrap().text().await.unwrap() })
    }

    fn log(&self) -> String {
        common::strip_ansi(&common::read_log(self.dir.path(), "stderr.log"))
    }
}

/// A Message-mode event `{"n": n, "pad": 2 KB}` asking for an ack with chunk id `c{n}`.
fn message(n: u64) -> Vec<u8> {
    Mp::new()
        .arr(4)
        .s("overflow")
        .int(1_600_000_000)
        .map(2)
        .s("n")
        .int(n as i64)
        .s("pad")
        .s(&"x".repeat(2000))
        .map(1)
        .s("chunk")
        .s(&format!("c{n}"))
        .0
}

fn ack(n: u64) -> Vec<u8> {
    Mp::new().map(1).s("ack").s(&format!("c{n}")).0
}

/// Reads exactly one ack of `n`; `None` on timeout.
fn read_ack(s: &mut TcpStream, n: u64, timeout: Duration) -> Option<()> {
    s.set_read_timeout(Some(timeout)).unwrap();
    let want = ack(n);
    let mut got = vec![0u8; want.len()];
    match s.read_exact(&mut got) {
        Ok(()) => {
            assert_eq!(got, want, "acks come in order");
            Some(())
        }
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            None
        }
        Err(e) => panic!("connection failed: {e}"),
    }
}

#[test]
fn throw_exception_leaves_the_message_that_does_not_fit_unacknowledged() {
    let relay = Full::start("throw_exception");
    let mut s = relay.connect();
    let mut acked = BTreeSet::new();
    let mut refused = None;
    // 32 KiB hold about 15 messages of 2 KB; 100 is a bound, not an expectation.
    for n in 0..100 {
        s.write_all(&message(n)).unwrap();
        match read_ack(&mut s, n, Duration::from_secs(5)) {
            Some(()) => {
                acked.insert(n);
            }
            None => {
                refused = Some(n);
                break;
            }
        }
    }
    let refused =
        refused.unwrap_or_else(|| panic!("the buffer never overflowed:\n{}", relay.log()));
    assert!(!acked.is_empty(), "nothing fitted");
    common::wait_for(Duration::from_secs(30), "the refusal in the log", || {
        relay.log().contains("not acknowledged").then_some(())
    });
    relay.repair();
    relay.wait_delivered(&acked);
    // The connection is still usable once there is room again.
    let next = 1000;
    common::wait_for(Duration::from_secs(60), "room for a new message", || {
        let mut fresh = relay.connect();
        fresh.write_all(&message(next)).unwrap();
        read_ack(&mut fresh, next, Duration::from_secs(5))
    });
    assert!(
        !relay.delivered().contains(&refused),
        "the unacknowledged message {refused} was not stored"
    );
}

#[test]
fn block_stops_reading_so_the_client_stalls_and_then_everything_is_acknowledged() {
    let relay = Full::start("block");
    let writer = relay.connect();
    writer
        .set_write_timeout(Some(Duration::from_secs(3)))
        .unwrap();
    let mut reader = writer.try_clone().unwrap();
    // Send until a write stalls: the buffer is full, the relay stopped reading, and the
    // socket buffers filled up. Bounded by count: loopback buffers hold a few MiB at most.
    let mut sent = 0u64;
    let mut w = &writer;
    let mut pending: Option<(Vec<u8>, usize)> = None;
    'send: while sent < 20_000 {
        let msg = message(sent);
        let mut off = 0;
        while off < msg.len() {
            match w.write(&msg[off..]) {
                Ok(k) => off += k,
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                    ) =>
                {
                    pending = Some((msg, off));
                    break 'send;
                }
                Err(e) => panic!("write failed: {e}"),
            }
        }
        sent += 1;
    }
    let stalled = pending.is_some();
    assert!(stalled, "{sent} messages sent without back-pressure");
    // While blocked, only what fitted was acknowledged, in order.
    let mut acked = 0u64;
    while read_ack(&mut reader, acked, Duration::from_secs(2)).is_some() {
        acked += 1;
    }
    assert!(
        acked < sent,
        "{acked} of {sent} acknowledged while the buffer was full"
    );
    assert!(acked > 0, "nothing fitted into the buffer");
    let blocked_at = acked;
    // Repaired, the relay drains, reads on, and acknowledges every message sent, the one
    // whose write stalled included once its rest is written.
    relay.repair();
    writer.set_write_timeout(None).unwrap();
    let started = Instant::now();
    if let Some((msg, off)) = pending {
        w.write_all(&msg[off..]).unwrap();
        sent += 1;
    }
    while acked < sent {
        assert!(
            read_ack(&mut reader, acked, Duration::from_secs(60)).is_some(),
            "ack {acked} of {sent} missing {:?} after repair:\n{}",
            started.elapsed(),
            relay.log()
        );
        acked += 1;
    }
    assert!(acked > blocked_at);
    relay.wait_delivered(&(0..sent).collect());
}

#[test]
fn drop_oldest_chunk_acknowledges_everything_and_counts_the_dropped_chunks() {
    let relay = Full::start("drop_oldest_chunk");
    let mut s = relay.connect();
    let total = 60;
    for n in 0..total {
        s.write_all(&message(n)).unwrap();
        assert!(
            read_ack(&mut s, n, Duration::from_secs(30)).is_some(),
            "message {n} not acknowledged:\n{}",
            relay.log()
        );
    }
    let dropped = common::wait_for(Duration::from_secs(30), "a dropped chunk", || {
        let text = relay.metrics();
        let v = text
            .lines()
            .find(|l| l.starts_with("firehose_relay_buffer_dropped_chunks{output=\"out\"}"))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())?;
        (v > 0.0).then_some(v)
    });
    relay.repair();
    // The newest message is kept; the oldest went with the dropped chunks.
    relay.wait_delivered(&BTreeSet::from([total - 1]));
    std::thread::sleep(Duration::from_millis(500));
    let delivered = relay.delivered();
    assert!(
        !delivered.contains(&0),
        "the oldest chunk was dropped: {delivered:?}"
    );
    // 2 KB records in 8 KiB chunks: each dropped chunk held at least one record.
    let lost = total - delivered.len() as u64;
    assert!(
        lost >= dropped as u64,
        "{dropped} chunks dropped, {lost} records missing: {delivered:?}"
    );
}
