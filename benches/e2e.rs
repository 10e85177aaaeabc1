//! End-to-end benchmark through the release binary, the way users run it:
//! forward clients (PackedForward, acks with a window) → forward source → `file` buffer
//! (fsync before ack) → Firehose sink over HTTPS (`tls_ca_file`) → an in-process fake Firehose.
//!
//! ```sh
//! cargo bench --bench e2e                         # steady run + backlog run, default knobs
//! cargo bench --bench e2e -- --records 1000000 --connections 2 --workers 8 --scenario steady
//! ```
//!
//! Knobs (`--name value`): `records` (5,000,000), `record-size` (≈200 bytes of JSON),
//! `per-message` (1,000), `connections` (1), `window` (8 unacked messages per connection),
//! `workers` (`flush_thread_count`, 2), `backlog-mb` (2,048), `pacing` (how the backlog drains:
//! `adaptive`, the default config, `unpaced` with `adaptive_pacing = false`, or `both`), `scenario`
//! (`steady`|`backlog`|`pacing`|`all`, or `clients`|`idle`|`streams`, which `all` leaves out),
//! `clients` (`8,64,256`), `idle` (1,000), `output` (`firehose`, `kinesis_streams`,
//! `kinesis_streams_aggregated`: what `steady` and `clients` send through).
//!
//! Scenarios `clients` and `idle` (module `e2e/clients.rs`): busy and idle connection counts.
//!
//! The backlog scenario drains with 2 and 8 flush workers and prints the cores the relay, the
//! fake endpoint and the whole machine used while draining, so the line says what limited it.
//!
//! Printed, in one run so ratios are comparable despite machine noise: records/s and MB/s end to
//! end (load start → last record accepted by the fake), CPU seconds of the relay per million
//! records (`/proc/PID/stat`), peak RSS (`VmHWM`), the disk's own ceiling (sequential `write` +
//! `fdatasync` of the same bytes in message-sized pieces) and the load generator's ceiling (the
//! same load into an in-process server that only decodes and acks), with the CPU that took per
//! million records: machines of this class differ by up to 3× in speed from day to day, and the
//! relay's CPU as a multiple of the generator's is what stays comparable.

#[path = "e2e/clients.rs"]
mod clients;
#[path = "common/firehose_answers.rs"]
mod firehose_answers;
#[path = "../tests/common/http_server.rs"]
#[allow(dead_code)]
mod http_server;
#[path = "e2e/streams.rs"]
mod streams;

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::Semaphore;

use firehose_relay::event::EventTime;
use firehose_relay::source::forward::msgpack::Framer;
use firehose_relay::source::forward::{decode_message, DecodeOptions, Message};

#[derive(Debug, Clone)]
struct Knobs {
    records: u64,
    record_size: usize,
    per_message: u64,
    connections: u64,
    window: usize,
    workers: u32,
    backlog_mb: u64,
    /// Backlog drains with `adaptive`, `unpaced` (adaptive_pacing = false) or `both`.
    pacing: String,
    scenario: String,
    /// Pacing scenarios: the records quota (records/s), how long each quota case is
    /// measured, and the outage.
    quota: u64,
    pacing_secs: u64,
    outage_secs: u64,
    /// Scenario `clients`: the counts of busy connections (`--clients 8,64,256`).
    clients: Vec<u64>,
    /// Scenario `idle`: idle connections held open (`--idle 1000`).
    idle: u64,
    /// The output type the relay sends through: `firehose`, `kinesis_streams` or
    /// `kinesis_streams_aggregated` (the `streams` scenario runs all three).
    output: String,
}

impl Knobs {
    fn from_args() -> Knobs {
        let mut k = Knobs {
            records: 5_000_000,
            record_size: 200,
            per_message: 1000,
            connections: 1,
            window: 8,
            workers: 2,
            backlog_mb: 2048,
            pacing: "both".into(),
            scenario: "all".into(),
            quota: 20_000,
            pacing_secs: 60,
            outage_secs: 30,
            clients: vec![8, 64, 256],
            idle: 1000,
            output: "firehose".into(),
        };
        let args: Vec<String> = std::env::args().skip(1).collect();
        let mut i = 0;
        while i < args.len() {
            let value = args.get(i + 1).cloned().unwrap_or_default();
            let num = || {
                value
                    .replace('_', "")
                    .parse::<u64>()
                    .unwrap_or_else(|_| panic!("{} needs a number", args[i]))
            };
            match args[i].as_str() {
                "--records" => k.records = num(),
                "--record-size" => k.record_size = num() as usize,
                "--per-message" => k.per_message = num(),
                "--connections" => k.connections = num(),
                "--window" => k.window = num() as usize,
                "--workers" => k.workers = num() as u32,
                "--backlog-mb" => k.backlog_mb = num(),
                "--scenario" => k.scenario = value.clone(),
                "--pacing" => k.pacing = value.clone(),
                "--quota" => k.quota = num(),
                "--pacing-secs" => k.pacing_secs = num(),
                "--outage-secs" => k.outage_secs = num(),
                "--clients" => {
                    k.clients = value
                        .split(',')
                        .map(|c| c.trim().parse().expect("--clients 8,64,256"))
                        .collect()
                }
                "--idle" => k.idle = num(),
                "--output" => k.output = value.clone(),
                // `cargo bench` passes --bench; filters are not used here.
                _ => {
                    i += 1;
                    continue;
                }
            }
            i += 2;
        }
        k
    }
}

/// One PackedForward message body (everything but the options map), shared by all messages.
struct Load {
    prefix: Arc<Vec<u8>>,
    per_message: u64,
    json_bytes_per_record: usize,
}

const CHUNK_ID_LEN: usize = 24;

impl Load {
    fn new(per_message: u64, record_size: usize) -> Load {
        // {"message":"xxx…","seq":N,"host":"bench"} ≈ record_size bytes of JSON.
        let filler = "x".repeat(record_size.saturating_sub(45).max(1));
        let mut payload = Vec::new();
        let now = EventTime::now();
        let mut json_len = 0;
        for seq in 0..per_message {
            rmp::encode::write_array_len(&mut payload, 2).unwrap();
            let mut t = [0u8; 8];
            t[..4].copy_from_slice(&(now.secs() as u32).to_be_bytes());
            t[4..].copy_from_slice(&now.subsec_nanos().to_be_bytes());
            rmp::encode::write_ext_meta(&mut payload, 8, 0).unwrap();
            payload.extend_from_slice(&t);
            rmp::encode::write_map_len(&mut payload, 3).unwrap();
            rmp::encode::write_str(&mut payload, "message").unwrap();
            rmp::encode::write_str(&mut payload, &filler).unwrap();
            rmp::encode::write_str(&mut payload, "seq").unwrap();
            rmp::encode::write_uint(&mut payload, seq).unwrap();
            rmp::encode::write_str(&mut payload, "host").unwrap();
            rmp::encode::write_str(&mut payload, "bench").unwrap();
            json_len = serde_json::json!({"message": filler, "seq": seq, "host": "bench"})
                .to_string()
                .len()
                + 1;
        }
        let mut prefix = Vec::with_capacity(payload.len() + 32);
        rmp::encode::write_array_len(&mut prefix, 3).unwrap();
        rmp::encode::write_str(&mut prefix, "bench.load").unwrap();
        rmp::encode::write_bin_len(&mut prefix, payload.len() as u32).unwrap();
        prefix.extend_from_slice(&payload);
        Load {
            prefix: Arc::new(prefix),
            per_message,
            json_bytes_per_record: json_len,
        }
    }

    fn options(&self, conn: u64, seq: u64) -> Vec<u8> {
        let chunk = format!("c{conn:03}-{seq:0width$}", width = CHUNK_ID_LEN - 5);
        let mut o = Vec::with_capacity(48);
        rmp::encode::write_map_len(&mut o, 2).unwrap();
        rmp::encode::write_str(&mut o, "chunk").unwrap();
        rmp::encode::write_str(&mut o, &chunk).unwrap();
        rmp::encode::write_str(&mut o, "size").unwrap();
        rmp::encode::write_uint(&mut o, self.per_message).unwrap();
        o
    }
}

/// Sends `messages` messages on one connection keeping at most `window` unacknowledged, and
/// returns when every ack has arrived.
async fn drive(
    port: u16,
    conn: u64,
    messages: u64,
    load: Arc<Load>,
    window: usize,
) -> std::io::Result<()> {
    let stream = TcpStream::connect(("127.0.0.1", port)).await?;
    stream.set_nodelay(true)?;
    let (mut rd, mut wr) = stream.into_split();
    let permits = Arc::new(Semaphore::new(window));
    let writer_permits = Arc::clone(&permits);
    let writer_load = Arc::clone(&load);
    let writer = tokio::spawn(async move {
        for seq in 0..messages {
            writer_permits
                .acquire()
                .await
                .expect("semaphore open")
                .forget();
            wr.write_all(&writer_load.prefix).await?;
            wr.write_all(&writer_load.options(conn, seq)).await?;
        }
        Ok::<_, std::io::Error>(wr)
    });
    // {"ack": "<24 chars>"} is 1 + 4 + 1 + 24 bytes.
    let mut ack = [0u8; 30];
    for _ in 0..messages {
        rd.read_exact(&mut ack).await?;
        if &ack[..5] != b"\x81\xa3ack" {
            return Err(std::io::Error::other(format!("unexpected reply {ack:?}")));
        }
        permits.add_permits(1);
    }
    writer.await.map_err(std::io::Error::other)??;
    Ok(())
}

/// Runs the whole load; returns when every message was acknowledged.
async fn run_load(port: u16, k: &Knobs, load: &Arc<Load>, records: u64) -> Duration {
    let start = Instant::now();
    let messages = records / k.per_message;
    let mut tasks = Vec::new();
    for c in 0..k.connections {
        let n = messages / k.connections + u64::from(c < messages % k.connections);
        tasks.push(tokio::spawn(drive(port, c, n, Arc::clone(load), k.window)));
    }
    for t in tasks {
        t.await.expect("load task").expect("load connection failed");
    }
    start.elapsed()
}

/// The fake Firehose: counts records and answers success (or 503 while refusing). For the
/// pacing scenarios it also meters a quota per one-second window (records and data bytes;
/// records over it fail inside the 200 answer with ServiceUnavailableException, as Firehose
/// meters a stream) and fails a share of records (in 200 answers) and of requests (500)
/// whatever the rate.
#[derive(Default)]
struct Fake {
    records: AtomicU64,
    bytes: AtomicU64,
    calls: AtomicU64,
    refusing: AtomicBool,
    /// Records per one-second window (0 = unmetered).
    quota_records: AtomicU64,
    /// Data bytes per one-second window (0 = unmetered).
    quota_bytes: AtomicU64,
    /// Records failing whatever the rate, parts per million.
    record_fail_ppm: AtomicU64,
    /// Requests failing with 500 whatever the rate, parts per million.
    request_fail_ppm: AtomicU64,
    /// Records answered (accepted or refused, in 200 answers and refused calls).
    sent: AtomicU64,
    /// Records throttled (refused inside 200 answers, or in 503 calls).
    throttled: AtomicU64,
    /// (window, records, bytes) used of the current one-second window.
    meter: std::sync::Mutex<(u64, u64, u64)>,
    /// Kinesis records accepted by PutRecords (what a stream's records/s quota counts; an
    /// aggregated record is one of them however many user records it carries).
    kinesis_records: AtomicU64,
    epoch: std::sync::OnceLock<Instant>,
}

impl Fake {
    fn metered(&self) -> bool {
        self.quota_records.load(Ordering::Relaxed) > 0
            || self.quota_bytes.load(Ordering::Relaxed) > 0
            || self.record_fail_ppm.load(Ordering::Relaxed) > 0
    }
}

fn fake_handler(fake: Arc<Fake>) -> http_server::Handler {
    Arc::new(move |req: http_server::Request| {
        let fake = Arc::clone(&fake);
        Box::pin(async move {
            let refuse = |status: u16, code: &str| http_server::Reply::Response {
                status,
                content_type: "application/x-amz-json-1.1",
                body: format!(r#"{{"__type":"{code}","message":"Slow down."}}"#).into_bytes(),
            };
            if req.header("x-amz-target") == Some("Kinesis_20131202.PutRecords") {
                return streams::put_records_reply(&fake, &req.body);
            }
            let request_fail = fake.request_fail_ppm.load(Ordering::Relaxed);
            if request_fail > 0 && rand::random::<u64>() % 1_000_000 < request_fail {
                return refuse(500, "InternalFailure");
            }
            let body = &req.body;
            // Data sizes of the records, in order. Memchr's SIMD search: the fake shares the
            // machine with the relay, so it should take as little of the CPU being measured
            // as it can.
            let mut sizes = Vec::with_capacity(500);
            let mut i = 0;
            let data_key = memchr::memmem::Finder::new(b"\"Data\":\"");
            while let Some(pos) = data_key.find(&body[i..]) {
                let start = i + pos + 8;
                let end = memchr::memchr(b'"', &body[start..])
                    .map(|e| start + e)
                    .unwrap_or(body.len());
                sizes.push(((end - start) / 4 * 3) as u64);
                i = end;
            }
            let n = sizes.len() as u64;
            if fake.refusing.load(Ordering::Relaxed) {
                fake.sent.fetch_add(n, Ordering::Relaxed);
                fake.throttled.fetch_add(n, Ordering::Relaxed);
                return refuse(503, "ServiceUnavailableException");
            }
            let mut failed = vec![false; sizes.len()];
            if fake.metered() {
                let fail_ppm = fake.record_fail_ppm.load(Ordering::Relaxed);
                let (qr, qb) = (
                    fake.quota_records.load(Ordering::Relaxed),
                    fake.quota_bytes.load(Ordering::Relaxed),
                );
                let now = Instant::now();
                let window = now
                    .duration_since(*fake.epoch.get_or_init(|| now))
                    .as_secs();
                let mut m = fake.meter.lock().unwrap();
                if window > m.0 {
                    *m = (window, 0, 0);
                }
                for (f, &size) in failed.iter_mut().zip(&sizes) {
                    let fails = fail_ppm > 0 && rand::random::<u64>() % 1_000_000 < fail_ppm;
                    if fails || (qr > 0 && m.1 + 1 > qr) || (qb > 0 && m.2 + size > qb) {
                        *f = true;
                    } else {
                        m.1 += 1;
                        m.2 += size;
                    }
                }
            }
            let refused = failed.iter().filter(|f| **f).count() as u64;
            let data_bytes: u64 = sizes
                .iter()
                .zip(&failed)
                .filter(|(_, f)| !**f)
                .map(|(s, _)| s)
                .sum();
            fake.calls.fetch_add(1, Ordering::Relaxed);
            fake.bytes.fetch_add(data_bytes, Ordering::Relaxed);
            fake.records.fetch_add(n - refused, Ordering::Relaxed);
            fake.sent.fetch_add(n, Ordering::Relaxed);
            fake.throttled.fetch_add(refused, Ordering::Relaxed);
            let body = firehose_answers::put_record_batch_answer(&failed);
            http_server::Reply::Response {
                status: 200,
                content_type: "application/x-amz-json-1.1",
                body,
            }
        })
    })
}

/// Counters of the fake at one moment.
#[derive(Debug, Clone, Copy)]
struct Sample {
    at: Instant,
    records: u64,
    bytes: u64,
    sent: u64,
    throttled: u64,
}

impl Fake {
    fn sample(&self) -> Sample {
        Sample {
            at: Instant::now(),
            records: self.records.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            sent: self.sent.load(Ordering::Relaxed),
            throttled: self.throttled.load(Ordering::Relaxed),
        }
    }

    /// Samples every 100 ms for `d`.
    fn watch(&self, d: Duration) -> Vec<Sample> {
        let end = Instant::now() + d;
        let mut out = vec![self.sample()];
        while Instant::now() < end {
            std::thread::sleep(Duration::from_millis(100));
            out.push(self.sample());
        }
        out
    }
}

/// Records/s, bytes/s and the throttled fraction of sent records between two samples.
fn rates(a: &Sample, b: &Sample) -> (f64, f64, f64) {
    let secs = b.at.duration_since(a.at).as_secs_f64().max(1e-9);
    let sent = (b.sent - a.sent).max(1) as f64;
    (
        (b.records - a.records) as f64 / secs,
        (b.bytes - a.bytes) as f64 / secs,
        (b.throttled - a.throttled) as f64 / sent,
    )
}

/// `N` distinct free ports on 127.0.0.1: all are bound before any is released, since a port
/// released by one call can be handed out again by the next (a relay given the same port for
/// two listeners does not start).
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<_> = (0..N)
        .map(|_| std::net::TcpListener::bind("127.0.0.1:0").unwrap())
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

fn clock_ticks() -> f64 {
    Command::new("getconf")
        .arg("CLK_TCK")
        .output()
        .ok()
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(100.0)
}

/// CPU seconds (user + system) used so far by process `pid`.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the parenthesised command name; utime and stime are fields 14 and 15.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: f64 = f.get(11).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0)
        + f.get(12).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    ticks / clock_ticks()
}

/// Busy and total CPU seconds of the whole machine (all cores) from `/proc/stat`: busy time
/// includes the kernel threads that write back and journal the buffer's files, which neither
/// the relay's nor this process's own CPU time shows.
fn machine_cpu_seconds() -> (f64, f64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap_or_default();
    let ticks: Vec<f64> = stat
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is already in user).
    let total: f64 = ticks.iter().take(8).sum();
    let idle = ticks.get(3).copied().unwrap_or(0.0) + ticks.get(4).copied().unwrap_or(0.0);
    ((total - idle) / clock_ticks(), total / clock_ticks())
}

/// Current anonymous / file-backed resident memory of `pid`, for telling heap from page cache.
fn rss_breakdown(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .filter(|l| {
            l.starts_with("RssAnon:") || l.starts_with("RssFile:") || l.starts_with("Threads:")
        })
        .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Peak resident set size (VmHWM) of `pid`, in MiB.
fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(0.0)
}

/// What every scenario runs against: the runtime, the generated load, the fake endpoint (and
/// its port), the directory relays keep their files in and the CA the fake's certificate
/// chains to.
#[derive(Clone, Copy)]
struct Bench<'a> {
    rt: &'a tokio::runtime::Runtime,
    load: &'a Arc<Load>,
    fake: &'a Arc<Fake>,
    fake_port: u16,
    dir: &'a Path,
    ca: &'a Path,
}

struct Relay {
    child: Child,
    forward_port: u16,
    dir: PathBuf,
}

impl Relay {
    /// Starts the relay; `extra_output` and `extra_buffer` are TOML lines added to the output's
    /// table and to its buffer table.
    fn start(
        dir: &Path,
        fake_port: u16,
        ca: &Path,
        k: &Knobs,
        extra_output: &str,
        extra_buffer: &str,
    ) -> Relay {
        let [forward_port, http_port] = free_ports();
        let conf = format!(
            r#"
data_dir = "{data}"
shutdown_timeout = "5s"
[http]
listen = "127.0.0.1:{http_port}"
[sources.in]
type = "forward"
listen = "127.0.0.1:{forward_port}"
[outputs.fh]
{output}
region = "us-east-1"
endpoint_url = "https://127.0.0.1:{fake_port}"
tls_ca_file = "{ca}"
{extra_output}
[outputs.fh.credentials]
type = "static"
access_key_id = "AKIDBENCH"
secret_access_key = "bench-secret"
[outputs.fh.buffer]
type = "file"
chunk_limit_size = "1m"
flush_interval = "500ms"
flush_thread_interval = "100ms"
flush_thread_count = {workers}
flush_thread_burst_interval = "0s"
{extra_buffer}
"#,
            data = dir.join("data").display(),
            ca = ca.display(),
            workers = k.workers,
            output = match k.output.as_str() {
                "firehose" => "type = \"firehose\"\ndelivery_stream = \"bench\"".to_owned(),
                streams => format!("type = \"{streams}\"\nstream_name = \"bench\""),
            },
        );
        let conf_path = dir.join("relay.toml");
        std::fs::write(&conf_path, conf).unwrap();
        // E2E_PERF=FILE profiles the relay with `perf record` (CPU figures then include perf).
        // E2E_WRAP="heaptrack -o /tmp/relay" runs the relay under any wrapper command.
        let wrap = std::env::var("E2E_WRAP")
            .ok()
            .filter(|w| !w.trim().is_empty());
        let mut cmd = match std::env::var("E2E_PERF") {
            _ if wrap.is_some() => {
                let words: Vec<String> = wrap
                    .iter()
                    .flat_map(|w| w.split_whitespace())
                    .map(str::to_owned)
                    .collect();
                let mut c = Command::new(&words[0]);
                c.args(&words[1..]);
                c.arg(env!("CARGO_BIN_EXE_firehose-relay"));
                c
            }
            Ok(out) => {
                let mut c = Command::new("perf");
                c.args([
                    "record",
                    "-e",
                    "cpu-clock",
                    "-F",
                    "499",
                    "--call-graph",
                    "dwarf,16384",
                    "-o",
                    &out,
                    "--",
                ]);
                c.arg(env!("CARGO_BIN_EXE_firehose-relay"));
                c
            }
            Err(_) => Command::new(env!("CARGO_BIN_EXE_firehose-relay")),
        };
        let mut child = cmd
            .args(["run", "--config"])
            .arg(&conf_path)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::from(
                std::fs::File::create(dir.join("relay.log")).unwrap(),
            ))
            .spawn()
            .expect("start the relay");
        let start = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", forward_port)).is_err() {
            if let Some(status) = child.try_wait().unwrap() {
                panic!(
                    "relay exited ({status}) before listening: {}",
                    std::fs::read_to_string(dir.join("relay.log")).unwrap_or_default()
                );
            }
            assert!(
                start.elapsed() < Duration::from_secs(30),
                "relay did not start; see {}",
                dir.join("relay.log").display()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        Relay {
            child,
            forward_port,
            dir: dir.to_owned(),
        }
    }

    fn stop(mut self) {
        let _ = Command::new("kill")
            .arg("-TERM")
            .arg(self.child.id().to_string())
            .status();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(self.dir.join("data"));
    }
}

fn wait_records(fake: &Fake, want: u64, limit: Duration) -> Instant {
    let start = Instant::now();
    loop {
        if fake.records.load(Ordering::Relaxed) >= want {
            return Instant::now();
        }
        assert!(
            start.elapsed() < limit,
            "fake got {} of {want} records",
            fake.records.load(Ordering::Relaxed)
        );
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The disk's ceiling: the same bytes, written sequentially with an fdatasync per message.
fn disk_ceiling(dir: &Path, total_bytes: u64, piece: usize) -> f64 {
    let path = dir.join("ceiling.bin");
    let buf = vec![b'x'; piece];
    let mut f = std::fs::File::create(&path).unwrap();
    let start = Instant::now();
    let mut written = 0u64;
    while written < total_bytes {
        f.write_all(&buf).unwrap();
        f.sync_data().unwrap();
        written += piece as u64;
    }
    let secs = start.elapsed().as_secs_f64();
    let _ = std::fs::remove_file(&path);
    written as f64 / secs
}

/// The load generator's ceiling: a server that only frames, decodes and acks.
async fn generator_ceiling(k: &Knobs, load: &Arc<Load>) -> f64 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    tokio::spawn(async move {
        while let Ok((mut sock, _)) = listener.accept().await {
            tokio::spawn(async move {
                let _ = sock.set_nodelay(true);
                let mut buf = Vec::with_capacity(1 << 20);
                let mut framer = Framer::new(64 << 20);
                let opts = DecodeOptions::default();
                let mut chunk = vec![0u8; 256 << 10];
                loop {
                    let n = match sock.read(&mut chunk).await {
                        Ok(0) | Err(_) => return,
                        Ok(n) => n,
                    };
                    buf.extend_from_slice(&chunk[..n]);
                    while let Ok(Some(len)) = framer.advance(&buf) {
                        let frame: Vec<u8> = buf.drain(..len).collect();
                        if let Ok(Message::Events(ev)) =
                            decode_message(&frame, &opts, EventTime::now())
                        {
                            if let Some(ack) = ev.ack {
                                if sock.write_all(&ack).await.is_err() {
                                    return;
                                }
                            }
                        }
                    }
                }
            });
        }
    });
    let elapsed = run_load(port, k, load, k.records).await;
    k.records as f64 / elapsed.as_secs_f64()
}

fn main() {
    let k = Knobs::from_args();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let tmp = tempfile::tempdir().unwrap();
    let ca = http_server::TestCa::new();
    let ca_path = tmp.path().join("ca.pem");
    std::fs::write(&ca_path, &ca.ca_pem).unwrap();
    let fake = Arc::new(Fake::default());
    let fake_addr = rt.block_on(http_server::serve(
        Some(Arc::clone(&ca.server_config)),
        fake_handler(Arc::clone(&fake)),
    ));
    let load = Arc::new(Load::new(k.per_message, k.record_size));
    let bench = Bench {
        rt: &rt,
        load: &load,
        fake: &fake,
        fake_port: fake_addr.port(),
        dir: tmp.path(),
        ca: &ca_path,
    };
    let rec_bytes = load.json_bytes_per_record as f64;
    println!(
        "e2e: {k:?}, {} JSON bytes per record",
        load.json_bytes_per_record
    );

    if k.scenario == "steady" || k.scenario == "all" {
        // The generator's own CPU per million records (sending plus decoding and acking, nothing
        // else) is this machine's yardstick: machines of this class differ by 3× in speed, and
        // the relay's CPU per record relative to it stays comparable across them.
        let gen_cpu0 = cpu_seconds(std::process::id());
        let gen = rt.block_on(generator_ceiling(&k, &load));
        let gen_cpu = (cpu_seconds(std::process::id()) - gen_cpu0) / (k.records as f64 / 1e6);
        let disk = disk_ceiling(
            tmp.path(),
            k.records * load.json_bytes_per_record as u64,
            (k.per_message as usize) * load.json_bytes_per_record,
        );
        let relay = Relay::start(tmp.path(), fake_addr.port(), &ca_path, &k, "", "");
        let pid = relay.child.id();
        let cpu0 = cpu_seconds(pid);
        fake.records.store(0, Ordering::Relaxed);
        let start = Instant::now();
        let acked = rt.block_on(run_load(relay.forward_port, &k, &load, k.records));
        let end = wait_records(&fake, k.records, Duration::from_secs(600));
        let secs = end.duration_since(start).as_secs_f64();
        let cpu = cpu_seconds(pid) - cpu0;
        let rss = peak_rss_mib(pid);
        let rate = k.records as f64 / secs;
        println!(
            "steady: {} records in {secs:.2} s (all acked after {:.2} s)",
            k.records,
            acked.as_secs_f64()
        );
        println!(
            "  relay end to end      {rate:>12.0} records/s  {:>8.1} MB/s",
            rate * rec_bytes / 1e6
        );
        println!(
            "  relay CPU             {:>12.2} CPU-s per million records",
            cpu / (k.records as f64 / 1e6)
        );
        println!(
            "  relay peak RSS        {rss:>12.1} MiB  (now: {})",
            rss_breakdown(pid)
        );
        println!(
            "  generator ceiling     {gen:>12.0} records/s  (relay = {:.2}× of it)",
            rate / gen
        );
        println!(
            "  generator CPU         {gen_cpu:>12.2} CPU-s per million records  (relay = {:.1}× of it)",
            cpu / (k.records as f64 / 1e6) / gen_cpu
        );
        println!("  disk ceiling          {:>12.0} records/s  {:>8.1} MB/s write+fdatasync per message (relay = {:.2}× of it)", disk / rec_bytes, disk / 1e6, rate * rec_bytes / disk);
        println!(
            "  firehose calls        {:>12}",
            fake.calls.load(Ordering::Relaxed)
        );
        relay.stop();
    }

    if k.scenario == "backlog" || k.scenario == "all" {
        let records = (k.backlog_mb << 20) / load.json_bytes_per_record as u64 / k.per_message
            * k.per_message;
        let pacings: &[bool] = match k.pacing.as_str() {
            "adaptive" => &[true],
            "unpaced" => &[false],
            _ => &[true, false],
        };
        for (&adaptive, workers) in pacings
            .iter()
            .flat_map(|p| [2u32, 8].into_iter().map(move |w| (p, w)))
        {
            let kk = Knobs {
                workers,
                ..k.clone()
            };
            fake.refusing.store(true, Ordering::Relaxed);
            fake.records.store(0, Ordering::Relaxed);
            let relay = Relay::start(
                tmp.path(),
                fake_addr.port(),
                &ca_path,
                &kk,
                &format!("adaptive_pacing = {adaptive}"),
                "total_limit_size = \"8g\"\nretry_wait = \"100ms\"\nretry_max_interval = \"500ms\"\nretry_randomize = false\nretry_forever = true",
            );
            let pid = relay.child.id();
            let loaded = rt.block_on(run_load(relay.forward_port, &kk, &load, records));
            let rss_loaded = peak_rss_mib(pid);
            // CPU of the relay, of this process (the fake endpoint) and of the whole machine
            // during the drain: when the machine is busy on every core, CPU limits the drain.
            let (relay_cpu, fake_cpu) = (cpu_seconds(pid), cpu_seconds(std::process::id()));
            let (busy0, total0) = machine_cpu_seconds();
            let start = Instant::now();
            fake.refusing.store(false, Ordering::Relaxed);
            let end = wait_records(&fake, records, Duration::from_secs(1800));
            let secs = end.duration_since(start).as_secs_f64();
            let relay_cores = (cpu_seconds(pid) - relay_cpu) / secs;
            let fake_cores = (cpu_seconds(std::process::id()) - fake_cpu) / secs;
            let (busy1, total1) = machine_cpu_seconds();
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get()) as f64;
            let machine_busy = (busy1 - busy0) / (total1 - total0).max(1e-9) * cores;
            println!(
                "backlog {} MB ({records} records), flush_thread_count {workers}, {}: loaded in {:.1} s, drained at {:.0} records/s ({:.1} MB/s), peak RSS {:.1} MiB (after loading {:.1} MiB)",
                k.backlog_mb,
                if adaptive { "adaptive pacing" } else { "unpaced" },
                loaded.as_secs_f64(),
                records as f64 / secs,
                records as f64 * rec_bytes / secs / 1e6,
                peak_rss_mib(pid),
                rss_loaded,
            );
            println!(
                "  during the drain: relay {relay_cores:.2} cores, fake endpoint {fake_cores:.2}, whole machine busy {machine_busy:.2} of {cores}",
            );
            relay.stop();
        }
    }

    if k.scenario == "clients" {
        clients::clients(&bench, &k);
    }
    if k.scenario == "streams" {
        streams::streams(&bench, &k);
    }
    if k.scenario == "idle" {
        clients::idle(&bench, &k);
    }

    if k.scenario == "pacing" || k.scenario == "all" {
        pacing_scenarios(&bench, &k);
    }
}

/// The adaptive pacing cases of issue 17, each with 8 flush workers and a backlog loaded while
/// the fake refuses every call: a records quota and a bytes quota (delivered/s over
/// `pacing_secs` against the quota, throttled fraction of the records sent), rate-independent
/// failures (2 % of records, 5 % of requests; delivered/s against the same run's unthrottled
/// rate), and an outage (`outage_secs`; how soon the rate is back to 90 % of the rate before).
fn pacing_scenarios(bench: &Bench<'_>, k: &Knobs) {
    let Bench {
        rt,
        load,
        fake,
        fake_port,
        dir,
        ca,
    } = *bench;
    let kk = Knobs {
        workers: 8,
        ..k.clone()
    };
    let buffer = "total_limit_size = \"8g\"\nretry_wait = \"100ms\"\nretry_max_interval = \"500ms\"\nretry_randomize = false\nretry_forever = true";
    let rec_bytes = load.json_bytes_per_record as u64;
    // Loads `records` into a fresh relay while the fake refuses everything.
    let start = |records: u64| {
        fake.refusing.store(true, Ordering::Relaxed);
        let relay = Relay::start(dir, fake_port, ca, &kk, "", buffer);
        let records = records / k.per_message * k.per_message;
        rt.block_on(run_load(relay.forward_port, &kk, load, records));
        relay
    };
    let reset = || {
        for c in [
            &fake.quota_records,
            &fake.quota_bytes,
            &fake.record_fail_ppm,
            &fake.request_fail_ppm,
        ] {
            c.store(0, Ordering::Relaxed);
        }
    };
    let secs = Duration::from_secs(k.pacing_secs);
    // Enough backlog to stay over the quota for the whole measurement.
    let quota_backlog = k.quota * (k.pacing_secs + 10) * 3 / 2;

    for bytes_quota in [false, true] {
        reset();
        let relay = start(quota_backlog);
        let (what, quota) = if bytes_quota {
            let q = k.quota * rec_bytes;
            fake.quota_bytes.store(q, Ordering::Relaxed);
            ("bytes", q)
        } else {
            fake.quota_records.store(k.quota, Ordering::Relaxed);
            ("records", k.quota)
        };
        fake.refusing.store(false, Ordering::Relaxed);
        let samples = fake.watch(secs);
        let (records, bytes, throttled) = rates(&samples[0], samples.last().unwrap());
        let delivered = if bytes_quota { bytes } else { records };
        println!(
            "pacing, {what} quota {quota}/s, 8 workers, {} s: delivered {delivered:.0} {what}/s = {:.1} % of the quota ({records:.0} records/s), {:.2} % of sent records throttled",
            k.pacing_secs,
            delivered / quota as f64 * 100.0,
            throttled * 100.0
        );
        let per_10s: Vec<String> = samples
            .chunks(100)
            .filter_map(|c| {
                let (r, b, t) = rates(c.first()?, c.last()?);
                let d = if bytes_quota { b } else { r };
                Some(format!(
                    "{:.1}%/{:.1}%",
                    d / quota as f64 * 100.0,
                    t * 100.0
                ))
            })
            .collect();
        println!("  per 10 s (of quota / throttled): {}", per_10s.join(" "));
        relay.stop();
    }

    // Rate-independent failures: the same backlog drained by two fresh relays, one with
    // every call answered, one with the failures from its first call; each watched over its
    // first seconds of draining. (One relay watched unthrottled and then failing ran out of
    // backlog in release builds: 8 workers drain ~1.8M records/s here, 11M records in 6 s.)
    let drain_rate = |record_fail_ppm: u64, request_fail_ppm: u64| {
        reset();
        let relay = start((k.backlog_mb << 20) / rec_bytes);
        fake.record_fail_ppm
            .store(record_fail_ppm, Ordering::Relaxed);
        fake.request_fail_ppm
            .store(request_fail_ppm, Ordering::Relaxed);
        fake.refusing.store(false, Ordering::Relaxed);
        std::thread::sleep(Duration::from_millis(500));
        let watched = fake.watch(Duration::from_secs(3));
        reset();
        relay.stop();
        rates(&watched[0], watched.last().unwrap())
    };
    let (unthrottled, _, _) = drain_rate(0, 0);
    let (during, _, throttled) = drain_rate(20_000, 50_000);
    println!(
        "pacing, 2 % of records and 5 % of requests failing, 8 workers: unthrottled {unthrottled:.0} records/s, with failures {during:.0} records/s = {:.2}× ({:.2} % of sent records refused)",
        during / unthrottled,
        throttled * 100.0
    );

    // Outage at the records quota.
    let before_secs = 20;
    let after_secs = 10;
    let relay = start(k.quota * (before_secs + after_secs + 10) * 3 / 2);
    fake.quota_records.store(k.quota, Ordering::Relaxed);
    fake.refusing.store(false, Ordering::Relaxed);
    let before = fake.watch(Duration::from_secs(before_secs));
    let pre = rates(&before[before.len() - 100], before.last().unwrap()).0;
    fake.refusing.store(true, Ordering::Relaxed);
    std::thread::sleep(Duration::from_secs(k.outage_secs));
    fake.refusing.store(false, Ordering::Relaxed);
    let after = fake.watch(Duration::from_secs(after_secs));
    // The end of the first one-second window (100 ms steps) at 90 % of the rate before.
    let back = (0..after.len().saturating_sub(10))
        .find(|&i| rates(&after[i], &after[i + 10]).0 >= 0.9 * pre)
        .map(|i| after[i + 10].at.duration_since(after[0].at));
    let (post, _, post_throttled) = rates(&after[0], after.last().unwrap());
    println!(
        "pacing, {} s outage at the records quota {}/s, 8 workers: {pre:.0} records/s before; back at 90 % after {}; {post:.0} records/s over the {after_secs} s after ({:.2} % throttled)",
        k.outage_secs,
        k.quota,
        back.map_or("never".to_owned(), |d| format!("{:.1} s", d.as_secs_f64())),
        post_throttled * 100.0
    );
    reset();
    relay.stop();
}
