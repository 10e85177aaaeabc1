//! Helpers for the forward source's integration tests: a relay with a forward source writing
//! into a file sink, a raw client, and a msgpack builder.
#![allow(dead_code)]

pub mod hostile;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::Duration;

use crate::common;

/// A running relay with one forward source (`fwd`) and one file output.
pub struct Relay {
    pub dir: tempfile::TempDir,
    pub port: u16,
    /// The operations endpoint's port, when [`Launch::http`] was set.
    pub http_port: Option<u16>,
    pub child: Child,
}

/// How to start a [`Relay`] beyond the defaults.
#[derive(Default)]
pub struct Launch<'a> {
    /// TOML inside `[sources.fwd]` (may open sub-tables at its end).
    pub source: &'a str,
    /// TOML inside `[outputs.out.buffer]`.
    pub buffer: &'a str,
    /// Serve the operations endpoint.
    pub http: bool,
    /// Leave out the stdout filter that prints every event.
    pub quiet: bool,
    /// Resource limits of the relay's process.
    pub limits: &'a [common::Limit],
}

impl Relay {
    /// Starts the relay; `source_extra` is TOML appended inside `[sources.fwd]` (it may open
    /// sub-tables such as `[sources.fwd.security]` at its end).
    pub fn start(source_extra: &str) -> Relay {
        Relay::start_with(source_extra, "")
    }

    /// Like [`Relay::start`]; `buffer_extra` goes into `[outputs.out.buffer]`.
    pub fn start_with(source_extra: &str, buffer_extra: &str) -> Relay {
        Relay::launch(&Launch {
            source: source_extra,
            buffer: buffer_extra,
            ..Launch::default()
        })
    }

    /// Starts the relay as `how` says.
    pub fn launch(how: &Launch<'_>) -> Relay {
        let dir = tempfile::tempdir().expect("tempdir");
        let d = dir.path().display();
        let http = if how.http { "127.0.0.1:0" } else { "" };
        let print = if how.quiet {
            ""
        } else {
            "[filters.print]\ntype = \"stdout\"\nmatch = \"**\""
        };
        let (source_extra, buffer_extra) = (how.source, how.buffer);
        let config = format!(
            r#"
data_dir = "{d}/data"
shutdown_timeout = "5s"

[http]
listen = "{http}"

{print}

[outputs.out]
type = "file"
match = "**"
path = "{d}/out"

[outputs.out.buffer]
# The durable buffer: an ack means fsynced.
type = "file"
flush_mode = "immediate"
flush_thread_interval = "20ms"
flush_thread_burst_interval = "0s"
{buffer_extra}

[sources.fwd]
type = "forward"
listen = "127.0.0.1:0"
{source_extra}
"#
        );
        let path = common::write_config(dir.path(), &config);
        let child = common::spawn_relay_limited(&path, &[], how.limits);
        // Owned by the Relay before anything can panic, so that its Drop stops the process.
        let mut relay = Relay {
            dir,
            port: 0,
            http_port: None,
            child,
        };
        // Port 0: the relay reports the port it bound, so parallel tests cannot collide.
        relay.port = common::wait_forward_addr(relay.dir.path(), &mut relay.child, "fwd").port();
        if how.http {
            let addr = common::wait_http_addr(relay.dir.path(), &mut relay.child);
            relay.http_port = Some(addr.port());
        }
        common::wait_for_log(
            relay.dir.path(),
            &mut relay.child,
            "firehose-relay started",
            Duration::from_secs(60),
        );
        relay
    }

    /// Peak resident set size of the relay so far, in bytes.
    pub fn peak_rss(&self) -> u64 {
        common::peak_rss(self.child.id())
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// Dead-letter entries: (metadata, the `.ndjson` text), oldest first.
    pub fn dead_letters(&self) -> Vec<(serde_json::Value, String)> {
        let root = self.data_dir().join("dead-letter");
        let mut metas: Vec<PathBuf> = std::fs::read_dir(&root)
            .into_iter()
            .flatten()
            .filter_map(|d| d.ok())
            .flat_map(|d| std::fs::read_dir(d.path()).into_iter().flatten())
            .filter_map(|f| f.ok().map(|f| f.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "json"))
            .collect();
        metas.sort();
        metas
            .into_iter()
            .map(|m| {
                let meta = serde_json::from_slice(&std::fs::read(&m).unwrap()).unwrap();
                let data = std::fs::read_to_string(m.with_extension("ndjson")).unwrap_or_default();
                (meta, data)
            })
            .collect()
    }

    /// An HTTP GET on the operations endpoint: (status, body); status 0 when it failed.
    pub fn http_get(&self, path: &str) -> (u16, String) {
        common::http_get(self.http_port.expect("started with http"), path)
    }

    /// The relay's log, without terminal colour codes.
    pub fn stderr(&self) -> String {
        strip_ansi(&common::read_log(self.dir.path(), "stderr.log"))
    }

    pub fn stdout(&self) -> String {
        common::read_log(self.dir.path(), "stdout.log")
    }

    pub fn out_dir(&self) -> PathBuf {
        self.dir.path().join("out")
    }

    /// Every record the file sink wrote so far.
    pub fn records(&self) -> Vec<serde_json::Value> {
        read_records(&self.out_dir())
    }

    /// Waits until at least `n` records were written, and returns them.
    pub fn wait_records(&self, n: usize) -> Vec<serde_json::Value> {
        common::wait_for(Duration::from_secs(15), &format!("{n} records"), || {
            let r = self.records();
            (r.len() >= n).then_some(r)
        })
    }

    /// Waits until the stderr log contains `text`.
    pub fn wait_log(&self, text: &str) {
        let start = std::time::Instant::now();
        while !self.stderr().contains(text) {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "no log line with {text:?} in:\n{}",
                self.stderr()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self) -> TcpStream {
        let s = TcpStream::connect(("127.0.0.1", self.port)).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    /// A fresh client sends a valid message with an ack request and must get the ack: the
    /// process still serves after whatever happened before.
    pub fn assert_still_serving(&self, marker: &str) {
        let mut s = self.connect();
        let msg = Mp::new()
            .arr(4)
            .s("alive")
            .int(1)
            .rec(marker)
            .map(1)
            .s("chunk")
            .s(marker);
        s.write_all(&msg.0).unwrap();
        assert_eq!(read_reply(&mut s), Mp::new().map(1).s("ack").s(marker).0);
        let recs = self.wait_records(1);
        common::wait_for(Duration::from_secs(10), "the marker record", || {
            self.records()
                .iter()
                .any(|r| r["msg"] == marker)
                .then_some(())
        });
        drop(recs);
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn read_records(dir: &Path) -> Vec<serde_json::Value> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut files: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
        .collect();
    files.sort();
    let mut out = Vec::new();
    for f in files {
        let text = std::fs::read_to_string(&f).unwrap_or_default();
        for line in text.lines().filter(|l| !l.is_empty()) {
            out.push(
                serde_json::from_str(line).unwrap_or_else(|e| panic!("bad JSON {line:?}: {e}")),
            );
        }
    }
    out
}

pub use crate::common::strip_ansi;

/// Reads one reply without panicking; `None` on error.
pub fn try_read_reply(s: &mut TcpStream) -> Option<Vec<u8>> {
    let mut buf = vec![0u8; 4096];
    s.read(&mut buf).ok().map(|n| buf[..n].to_vec())
}

/// Reads one reply (an ack, a PONG...) of up to 4 KiB; empty if the server closed first.
pub fn read_reply(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = vec![0u8; 4096];
    match s.read(&mut buf) {
        Ok(n) => buf[..n].to_vec(),
        Err(e) => panic!("no reply: {e}"),
    }
}

/// Asserts the server closes the connection without sending anything (in particular no ack).
pub fn assert_closed_without_reply(s: &mut TcpStream) {
    let mut buf = Vec::new();
    match s.read_to_end(&mut buf) {
        Ok(_) => assert!(buf.is_empty(), "server replied {buf:?} instead of closing"),
        // A reset also means closed, and nothing was read.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("connection not closed: {e}"),
    }
}

/// Small msgpack writer.
#[derive(Default, Clone)]
pub struct Mp(pub Vec<u8>);

impl Mp {
    pub fn new() -> Self {
        Mp::default()
    }
    pub fn arr(mut self, n: u32) -> Self {
        rmp::encode::write_array_len(&mut self.0, n).unwrap();
        self
    }
    pub fn map(mut self, n: u32) -> Self {
        rmp::encode::write_map_len(&mut self.0, n).unwrap();
        self
    }
    pub fn s(mut self, v: &str) -> Self {
        rmp::encode::write_str(&mut self.0, v).unwrap();
        self
    }
    pub fn raw_str(mut self, v: &[u8]) -> Self {
        rmp::encode::write_str_len(&mut self.0, v.len() as u32).unwrap();
        self.0.extend_from_slice(v);
        self
    }
    pub fn bin(mut self, v: &[u8]) -> Self {
        rmp::encode::write_bin(&mut self.0, v).unwrap();
        self
    }
    pub fn int(mut self, v: i64) -> Self {
        rmp::encode::write_sint(&mut self.0, v).unwrap();
        self
    }
    pub fn et(mut self, secs: u32, nanos: u32) -> Self {
        rmp::encode::write_ext_meta(&mut self.0, 8, 0).unwrap();
        self.0.extend_from_slice(&secs.to_be_bytes());
        self.0.extend_from_slice(&nanos.to_be_bytes());
        self
    }
    pub fn raw(mut self, b: &[u8]) -> Self {
        self.0.extend_from_slice(b);
        self
    }
    /// `{"msg": v}`
    pub fn rec(self, v: &str) -> Self {
        self.map(1).s("msg").s(v)
    }
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    g.write_all(data).unwrap();
    g.finish().unwrap()
}

/// The Python interpreter of the test venv and the driver script.
pub fn python_driver() -> (PathBuf, PathBuf) {
    let py = common::python();
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/forward_client.py");
    (py, script)
}

/// Runs the Python driver; panics with its output if it fails.
pub fn run_python(args: &[&str]) -> String {
    let (py, script) = python_driver();
    let out = std::process::Command::new(py)
        .arg(script)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "python driver {args:?} failed:\nstdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    stdout
}
