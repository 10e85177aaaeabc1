//! Memory of the whole pipeline under hostile input, through the release binary with default
//! limits: forward source → `file` buffer (fdatasync before ack) → `file` output.
//!
//! ```sh
//! cargo bench --bench hostile_memory                       # every scenario
//! cargo bench --bench hostile_memory -- --scenario bomb    # bomb | flood | flood-escaped
//! ```
//!
//! Scenarios, each on a fresh relay, printing the relay's peak RSS (`VmHWM`), its idle RSS
//! before the load, the time to the last ack and how much `data_dir` grew:
//! * `bomb`: one CompressedPackedForward message of ~200 KiB that inflates to one event of
//!   200 MiB of `0x01` (6 bytes of JSON each), sent `--bombs` times (3) on one connection;
//! * `flood`: 8 connections each sending `--messages` (4) messages of the maximum size
//!   (`message_length_limit`, 32 MiB) of 1 KiB text records, without waiting for acks;
//! * `flood-escaped`: the same with records of 150 KiB of `0x01`, whose JSON is 6× larger
//!   (900 KiB, just within the default per-record bound): the worst case for the transcoder.
//!
//! Knobs: `--scenario`, `--bombs N`, `--messages N`, `--connections N`.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MIB: usize = 1 << 20;
/// The forward source's default `message_length_limit`.
const MESSAGE_LENGTH_LIMIT: usize = 32 * MIB;

struct Knobs {
    scenario: String,
    bombs: usize,
    messages: usize,
    connections: usize,
}

impl Knobs {
    fn from_args() -> Knobs {
        let mut k = Knobs {
            scenario: "all".into(),
            bombs: 3,
            messages: 4,
            connections: 8,
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        for pair in args.windows(2) {
            let num = || pair[1].parse::<usize>().unwrap_or(0);
            match pair[0].as_str() {
                "--scenario" => k.scenario = pair[1].clone(),
                "--bombs" => k.bombs = num(),
                "--messages" => k.messages = num(),
                "--connections" => k.connections = num(),
                _ => {}
            }
        }
        k
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// `VmHWM` or `VmRSS` of `pid`, in MiB.
fn status_mib(pid: u32, field: &str) -> f64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.split_whitespace().next()?.parse::<f64>().ok())
        .map_or(0.0, |kb| kb / 1024.0)
}

fn dir_size(dir: &Path) -> u64 {
    std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

struct Relay {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
}

impl Relay {
    fn start() -> Relay {
        let dir = tempfile::tempdir().expect("tempdir");
        let port = free_port();
        let d = dir.path().display();
        let conf = format!(
            r#"
data_dir = "{d}/data"
shutdown_timeout = "5s"
[http]
listen = ""
[sources.in]
type = "forward"
listen = "127.0.0.1:{port}"
[outputs.out]
type = "file"
path = "{d}/out"
[outputs.out.buffer]
type = "file"
flush_interval = "200ms"
flush_thread_burst_interval = "0s"
"#
        );
        let path = dir.path().join("relay.toml");
        std::fs::write(&path, conf).unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_firehose-relay"))
            .args(["run", "--config"])
            .arg(&path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.path().join("relay.log")).unwrap(),
            ))
            .spawn()
            .expect("start the relay");
        let start = Instant::now();
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "relay did not start"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Relay { child, port, dir }
    }

    fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(600))).unwrap();
        s
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    g.write_all(data).unwrap();
    g.finish().unwrap()
}

/// `{"chunk": chunk}` (with `"compressed": "gzip"` when `gzip`).
fn options(out: &mut Vec<u8>, chunk: &str, gzip: bool) {
    rmp::encode::write_map_len(out, if gzip { 2 } else { 1 }).unwrap();
    if gzip {
        rmp::encode::write_str(out, "compressed").unwrap();
        rmp::encode::write_str(out, "gzip").unwrap();
    }
    rmp::encode::write_str(out, "chunk").unwrap();
    rmp::encode::write_str(out, chunk).unwrap();
}

/// One event of 200 MiB of `0x01`, gzip members of 1 MiB each.
fn bomb(chunk: &str) -> Vec<u8> {
    let mut head = Vec::new();
    rmp::encode::write_array_len(&mut head, 2).unwrap();
    rmp::encode::write_uint(&mut head, 1).unwrap();
    rmp::encode::write_map_len(&mut head, 1).unwrap();
    rmp::encode::write_str(&mut head, "k").unwrap();
    rmp::encode::write_str_len(&mut head, 200 * MIB as u32).unwrap();
    let mib = gzip(&vec![0x01; MIB]);
    let mut payload = gzip(&head);
    for _ in 0..200 {
        payload.extend_from_slice(&mib);
    }
    let mut m = Vec::new();
    rmp::encode::write_array_len(&mut m, 3).unwrap();
    rmp::encode::write_str(&mut m, "bomb").unwrap();
    rmp::encode::write_bin(&mut m, &payload).unwrap();
    options(&mut m, chunk, true);
    m
}

/// A PackedForward message just under `message_length_limit` of records `{"m": value}`.
fn max_message(value: &[u8], chunk: &str) -> Vec<u8> {
    let mut entry = Vec::new();
    rmp::encode::write_array_len(&mut entry, 2).unwrap();
    rmp::encode::write_uint(&mut entry, 1).unwrap();
    rmp::encode::write_map_len(&mut entry, 1).unwrap();
    rmp::encode::write_str(&mut entry, "m").unwrap();
    rmp::encode::write_str_len(&mut entry, value.len() as u32).unwrap();
    entry.extend_from_slice(value);
    let n = (MESSAGE_LENGTH_LIMIT - 4096) / entry.len();
    let mut m = Vec::with_capacity(MESSAGE_LENGTH_LIMIT);
    rmp::encode::write_array_len(&mut m, 3).unwrap();
    rmp::encode::write_str(&mut m, "flood").unwrap();
    rmp::encode::write_bin_len(&mut m, (n * entry.len()) as u32).unwrap();
    for _ in 0..n {
        m.extend_from_slice(&entry);
    }
    options(&mut m, chunk, false);
    m
}

/// Reads exactly `n` acks (whatever their ids) from `s`.
fn read_acks(s: &mut TcpStream, n: usize) {
    let mut seen = 0;
    let mut buf = [0u8; 4096];
    while seen < n {
        let got = s.read(&mut buf).expect("read acks");
        assert!(got > 0, "connection closed after {seen} acks");
        // Each ack is a map with the key "ack".
        seen += buf[..got].windows(4).filter(|w| w == b"\xa3ack").count();
    }
}

fn report(name: &str, relay: &Relay, idle: f64, started: Instant, disk_before: u64) {
    let pid = relay.child.id();
    println!(
        "{name}: peak RSS {:.1} MiB (idle {idle:.1} MiB), last ack after {:.1} s, data_dir +{} KiB",
        status_mib(pid, "VmHWM:"),
        started.elapsed().as_secs_f64(),
        dir_size(&relay.dir.path().join("data")).saturating_sub(disk_before) >> 10
    );
}

fn run_bomb(k: &Knobs) {
    let relay = Relay::start();
    let idle = status_mib(relay.child.id(), "VmRSS:");
    let disk = dir_size(&relay.dir.path().join("data"));
    let messages: Vec<_> = (0..k.bombs).map(|i| bomb(&format!("b{i}"))).collect();
    let started = Instant::now();
    let mut s = relay.connect();
    for m in &messages {
        s.write_all(m).unwrap();
        read_acks(&mut s, 1);
    }
    report(
        &format!(
            "bomb ({} × {} KiB → 200 MiB)",
            k.bombs,
            messages[0].len() >> 10
        ),
        &relay,
        idle,
        started,
        disk,
    );
}

fn run_flood(k: &Knobs, name: &str, value: &[u8]) {
    let relay = Relay::start();
    let idle = status_mib(relay.child.id(), "VmRSS:");
    let disk = dir_size(&relay.dir.path().join("data"));
    let message = std::sync::Arc::new(max_message(value, "f"));
    let started = Instant::now();
    let clients: Vec<_> = (0..k.connections)
        .map(|_| {
            let mut s = relay.connect();
            let (m, n) = (std::sync::Arc::clone(&message), k.messages);
            std::thread::spawn(move || {
                let mut reader = s.try_clone().unwrap();
                let acks = std::thread::spawn(move || read_acks(&mut reader, n));
                for _ in 0..n {
                    s.write_all(&m).unwrap();
                }
                acks.join().unwrap();
            })
        })
        .collect();
    for c in clients {
        c.join().expect("client");
    }
    report(
        &format!(
            "{name} ({} connections × {} messages of {} MiB)",
            k.connections,
            k.messages,
            message.len() >> 20
        ),
        &relay,
        idle,
        started,
        disk,
    );
}

fn main() {
    let k = Knobs::from_args();
    let all = k.scenario == "all";
    if all || k.scenario == "bomb" {
        run_bomb(&k);
    }
    if all || k.scenario == "flood" {
        let text: Vec<u8> = (0..1024).map(|i| b'a' + (i % 26) as u8).collect();
        run_flood(&k, "flood of 1 KiB text records", &text);
    }
    if all || k.scenario == "flood-escaped" {
        run_flood(&k, "flood of 150 KiB 0x01 records", &vec![0x01; 150 * 1024]);
    }
}
