//! Shared helpers for integration tests: the real binary, the addresses it listens on, a Python
//! venv for third-party clients (fluent-logger, msgpack, moto), and polling.
//!
//! The relay's listeners bind port 0 in tests and the tests read the bound address from the
//! relay's log ([`wait_forward_addr`], [`wait_http_addr`]): a port picked by the test and
//! released before the relay binds it could be taken by a test running in parallel.
#![allow(dead_code)]

pub mod fake_firehose;
pub mod fake_kinesis;
pub mod fake_sts;
pub mod http_server;
pub mod kpl;
pub mod moto;
pub mod relay_run;
pub mod sigv4;
pub mod strace;
pub mod tmux;
pub mod web_identity;

use std::io::Write;
use std::net::{SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

/// Path of the `firehose-relay` binary built for this test run.
pub fn relay_bin() -> PathBuf {
    PathBuf::from(env!("CARGO_BIN_EXE_firehose-relay"))
}

/// A free TCP port on 127.0.0.1 (bound and released; the OS does not hand it out again at
/// once). Only for third-party servers that cannot report the port they bound; the relay binds
/// port 0 instead.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free port on 127.0.0.1")
}

/// Writes `text` as `relay.toml` in `dir` and returns its path.
pub fn write_config(dir: &Path, text: &str) -> PathBuf {
    let path = dir.join("relay.toml");
    let mut f = std::fs::File::create(&path).expect("create config");
    f.write_all(text.as_bytes()).expect("write config");
    path
}

/// Starts the relay with `config`, extra environment, stdout and stderr captured to files in
/// the config's directory (`stdout.log`, `stderr.log`).
pub fn spawn_relay(config: &Path, env: &[(&str, &str)]) -> Child {
    spawn_relay_limited(config, env, &[])
}

/// A resource limit for the relay's process, set by a shell's `ulimit` before it `exec`s the
/// relay (as an operator or a container entrypoint would).
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    /// `RLIMIT_NOFILE`: soft and hard.
    Nofile {
        /// Soft limit.
        soft: u64,
        /// Hard limit.
        hard: u64,
    },
    /// `RLIMIT_AS` in bytes (soft and hard).
    AddressSpace(u64),
}

impl Limit {
    fn ulimit(self) -> String {
        match self {
            // The soft limit first: it may not pass the hard one being set.
            Limit::Nofile { soft, hard } => format!("ulimit -S -n {soft} && ulimit -H -n {hard}"),
            Limit::AddressSpace(bytes) => format!("ulimit -v {}", bytes / 1024),
        }
    }
}

/// Like [`spawn_relay`], with resource limits set by `sh` before it becomes the relay.
pub fn spawn_relay_limited(config: &Path, env: &[(&str, &str)], limits: &[Limit]) -> Child {
    let dir = config.parent().expect("config has a parent dir");
    let stdout = std::fs::File::create(dir.join("stdout.log")).expect("stdout log");
    let stderr = std::fs::File::create(dir.join("stderr.log")).expect("stderr log");
    let mut cmd = if limits.is_empty() {
        Command::new(relay_bin())
    } else {
        let mut script: Vec<String> = limits.iter().map(|l| l.ulimit()).collect();
        script.push("exec \"$0\" \"$@\"".to_owned());
        let mut sh = Command::new("sh");
        sh.arg("-c").arg(script.join(" && ")).arg(relay_bin());
        sh
    };
    cmd.arg("run").arg("--config").arg(config);
    cmd.env_remove("RELAY_CONFIG");
    cmd.env(
        "RUST_LOG",
        std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
    );
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.stdout(Stdio::from(stdout)).stderr(Stdio::from(stderr));
    cmd.spawn().expect("start firehose-relay")
}

/// A child process that is killed (SIGKILL) and reaped when dropped, so that a failing test
/// leaves no relay behind. Derefs to the [`Child`].
pub struct KillOnDrop(pub Child);

impl std::ops::Deref for KillOnDrop {
    type Target = Child;
    fn deref(&self) -> &Child {
        &self.0
    }
}

impl std::ops::DerefMut for KillOnDrop {
    fn deref_mut(&mut self) -> &mut Child {
        &mut self.0
    }
}

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A plain HTTP/1.1 GET on `127.0.0.1:port`: (status, body); status 0 when it failed.
pub fn http_get(port: u16, path: &str) -> (u16, String) {
    use std::io::Read;
    let mut s = match std::net::TcpStream::connect(("127.0.0.1", port)) {
        Ok(s) => s,
        Err(e) => return (0, e.to_string()),
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    if let Err(e) = s.write_all(req.as_bytes()) {
        return (0, e.to_string());
    }
    let mut text = String::new();
    if let Err(e) = s.read_to_string(&mut text) {
        return (0, e.to_string());
    }
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0);
    let body = text.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

/// This process's hard `RLIMIT_NOFILE`.
pub fn nofile_hard_limit() -> u64 {
    rlimit::Resource::NOFILE.get().expect("getrlimit").1
}

/// Peak resident set size (`VmHWM`) of process `pid`, in bytes.
pub fn peak_rss(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("/proc status");
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmHWM in /proc/PID/status");
    kib * 1024
}

/// Bytes of the files under `dir` (0 if it does not exist).
pub fn dir_size(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .filter_map(|e| e.ok())
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}

/// Sends SIGTERM to a child process.
pub fn sigterm(child: &Child) {
    let status = Command::new("kill")
        .arg("-TERM")
        .arg(child.id().to_string())
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -TERM failed");
}

/// Waits for a child to exit, at most `limit`; kills it and panics on timeout.
pub fn wait_exit(child: &mut Child, limit: Duration) -> std::process::ExitStatus {
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Polls `check` every 20 ms until it returns `Some`, at most `limit`.
pub fn wait_for<T>(limit: Duration, what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(v) = check() {
            return v;
        }
        if start.elapsed() > limit {
            panic!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits until something listens on `127.0.0.1:port`.
pub fn wait_listening(port: u16, limit: Duration) {
    wait_for(limit, &format!("a listener on port {port}"), || {
        std::net::TcpStream::connect(("127.0.0.1", port))
            .ok()
            .map(|_| ())
    });
}

/// Waits until the relay's `stderr.log` in `dir` contains `text`; panics with the log if the
/// process exits first or `limit` passes.
pub fn wait_for_log(dir: &Path, child: &mut Child, text: &str, limit: Duration) -> String {
    wait_for(limit, &format!("{text:?} in the relay's log"), || {
        let log = strip_ansi(&read_log(dir, "stderr.log"));
        if log.contains(text) {
            return Some(log);
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("relay exited with {status} before logging {text:?}:\n{log}");
        }
        None
    })
}

/// The value of `field=` on the last log line containing `message` and `selector` (e.g.
/// `source=fwd`; empty: any line), from a log without colour codes.
pub fn log_field(log: &str, message: &str, selector: &str, field: &str) -> Option<String> {
    let line = log.lines().rev().find(|l| {
        // String fields are quoted in the text log (`source="fwd"`), others are not.
        l.contains(message)
            && (selector.is_empty() || l.split_whitespace().any(|w| w.replace('"', "") == selector))
    })?;
    let key = format!("{field}=");
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&key))
        .map(|v| v.trim_matches('"').to_owned())
}

/// Where forward source `source` of the relay logging to `dir` listens (configured with port
/// 0), from its `forward source listening` line.
pub fn wait_forward_addr(dir: &Path, child: &mut Child, source: &str) -> SocketAddr {
    let selector = format!("source={source}");
    let log = wait_for(
        Duration::from_secs(60),
        "the forward listener's address",
        || {
            let log = wait_for_log(
                dir,
                child,
                "forward source listening",
                Duration::from_secs(60),
            );
            log_field(&log, "forward source listening", &selector, "address").map(|_| log)
        },
    );
    let addr = log_field(&log, "forward source listening", &selector, "address").unwrap();
    addr.parse()
        .unwrap_or_else(|e| panic!("bad address {addr:?} ({e}) in:\n{log}"))
}

/// Where the relay logging to `dir` serves its HTTP endpoint (configured with port 0).
pub fn wait_http_addr(dir: &Path, child: &mut Child) -> SocketAddr {
    let log = wait_for_log(
        dir,
        child,
        "http endpoint listening",
        Duration::from_secs(60),
    );
    let addr = log_field(&log, "http endpoint listening", "", "addr")
        .unwrap_or_else(|| panic!("no addr= on the http endpoint's line:\n{log}"));
    addr.parse()
        .unwrap_or_else(|e| panic!("bad address {addr:?} ({e}) in:\n{log}"))
}

/// Removes ANSI escape sequences (`ESC [ ... letter`) from a log.
pub fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' && chars.peek() == Some(&'[') {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// Reads a log file the relay wrote (empty if missing).
pub fn read_log(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap_or_default()
}

/// A Python interpreter in a venv with `tests/python/requirements.txt` installed. Created once
/// per test process at `$RELAY_TEST_VENV` (default: `firehose-relay-venv` in the system temp
/// dir) and reused across runs. Panics with a clear message if pip cannot install.
pub fn python() -> PathBuf {
    static PY: OnceLock<PathBuf> = OnceLock::new();
    PY.get_or_init(|| {
        let venv = std::env::var_os("RELAY_TEST_VENV")
            .map(PathBuf::from)
            .unwrap_or_else(|| std::env::temp_dir().join("firehose-relay-venv"));
        let py = venv.join("bin").join("python");
        let reqs = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/requirements.txt");
        let stamp = venv.join(".requirements");
        let wanted = std::fs::read_to_string(&reqs).expect("read tests/python/requirements.txt");
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && py.exists() {
            return py;
        }
        // Serialize venv creation across concurrently running test binaries.
        let lock_path = std::env::temp_dir().join("firehose-relay-venv.lock");
        let lock = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .expect("venv lock file");
        let _guard = FileLock::acquire(lock);
        if std::fs::read_to_string(&stamp).ok().as_deref() == Some(wanted.as_str()) && py.exists() {
            return py;
        }
        // Says why the interop tests are silent for a minute or more the first time. Written
        // to the stderr handle, not with `eprintln!`: the test harness captures the print
        // macros (shown only for failing tests), not the handle.
        let _ = writeln!(
            std::io::stderr(),
            "firehose-relay tests: creating the Python venv {} from {} (first run only: pip \
             downloads from PyPI, a minute or more)",
            venv.display(),
            reqs.display()
        );
        let ok = Command::new("python3")
            .args(["-m", "venv"])
            .arg(&venv)
            .status()
            .map(|s| s.success())
            .unwrap_or(false);
        assert!(
            ok,
            "cannot create a Python venv at {} (is python3-venv installed?)",
            venv.display()
        );
        let out = Command::new(&py)
            .args([
                "-m",
                "pip",
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
            ])
            .arg(&reqs)
            .output()
            .expect("run pip");
        assert!(
            out.status.success(),
            "pip could not install the test requirements ({}); the interop tests need them:\n{}",
            reqs.display(),
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(&stamp, wanted).expect("write venv stamp");
        py
    })
    .clone()
}

/// An exclusive `flock` held until dropped.
struct FileLock(std::fs::File);

impl FileLock {
    fn acquire(file: std::fs::File) -> FileLock {
        // std::fs::File::lock (flock on Unix) is stable since Rust 1.89.
        file.lock().expect("lock venv");
        FileLock(file)
    }
}

impl Drop for FileLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}
