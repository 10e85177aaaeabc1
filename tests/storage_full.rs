//! A full disk, on the real binary: `data_dir` on a 48 MiB tmpfs mounted by the test (tests run
//! as root here; without the right to mount, the test says why it is skipped and passes).
//!
//! 1. While the fake Firehose refuses every record, a forward client sends acknowledged
//!    messages until the volume is full: the relay stays up, refuses further acks, `/readyz` is
//!    503 (`/healthz` stays 200: the store is full, not broken) and `/status` says why.
//! 2. `kill -9`, and a restart on the still full volume works.
//! 3. The fake accepts again: the backlog drains, the relay becomes ready, acks resume, and
//!    every acknowledged record arrives.

mod common;
mod forward_support;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use common::fake_firehose::FakeFirehose;
use forward_support::Mp;

/// A tmpfs of `size` mounted on a temporary directory, unmounted on drop.
struct Tmpfs(tempfile::TempDir);

impl Tmpfs {
    /// `Err` says why it cannot be mounted here.
    fn mount(size: &str) -> Result<Tmpfs, String> {
        let dir = tempfile::tempdir().map_err(|e| e.to_string())?;
        let out = Command::new("mount")
            .args(["-t", "tmpfs", "-o", &format!("size={size}"), "tmpfs"])
            .arg(dir.path())
            .output()
            .map_err(|e| format!("cannot run mount: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "mount -t tmpfs failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(Tmpfs(dir))
    }

    fn path(&self) -> &Path {
        self.0.path()
    }
}

impl Drop for Tmpfs {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg(self.0.path()).status();
    }
}

const PAD: usize = 2000;
const PER_MESSAGE: u64 = 50;

/// `[tag, [[time, {"id": N, "pad": "..."}]...], {"chunk": chunk}]`.
fn message(chunk: &str, ids: &[u64]) -> Vec<u8> {
    let pad = "x".repeat(PAD);
    let mut m = Mp::new().arr(3).s("full").arr(ids.len() as u32);
    for id in ids {
        m = m
            .arr(2)
            .int(1_600_000_000)
            .map(2)
            .s("id")
            .int(*id as i64)
            .s("pad")
            .s(&pad);
    }
    m.map(1).s("chunk").s(chunk).0
}

/// Sends one message on a new connection; true if it was acknowledged within `wait`.
fn send_acked(addr: SocketAddr, chunk: &str, ids: &[u64], wait: Duration) -> bool {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(wait));
    if s.write_all(&message(chunk, ids)).is_err() {
        return false;
    }
    let want = Mp::new().map(1).s("ack").s(chunk).0;
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got).is_ok() && got == want
}

fn config(dir: &Path, data_dir: &Path, fake: &FakeFirehose) -> std::path::PathBuf {
    common::write_config(
        dir,
        &format!(
            r#"
data_dir = {data:?}
shutdown_timeout = "10s"
[http]
listen = "127.0.0.1:0"
[sources.fwd]
type = "forward"
listen = "127.0.0.1:0"
[outputs.fh]
type = "firehose"
match = "**"
region = "us-east-1"
delivery_stream = "full-stream"
endpoint_url = "{url}"
adaptive_pacing = false
[outputs.fh.credentials]
type = "static"
access_key_id = "AKIDFULLTEST"
secret_access_key = "full-secret"
[outputs.fh.buffer]
type = "file"
chunk_limit_size = "1m"
total_limit_size = "1g"
flush_interval = "200ms"
flush_thread_interval = "50ms"
retry_wait = "200ms"
retry_max_interval = "1s"
retry_randomize = false
retry_forever = true
"#,
            data = data_dir.display().to_string(),
            url = fake.url,
        ),
    )
}

/// Ids of every record the fake accepted (records hold newline-delimited JSON events).
fn delivered_ids(fake: &FakeFirehose) -> BTreeSet<u64> {
    let mut ids = BTreeSet::new();
    for record in fake.accepted() {
        for line in record.split(|&b| b == b'\n') {
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            let v: serde_json::Value = serde_json::from_slice(line).expect("JSON event");
            ids.insert(v["id"].as_u64().expect("id"));
        }
    }
    ids
}

fn status_json(http: SocketAddr) -> serde_json::Value {
    let (code, body) = common::http_get(http.port(), "/status");
    assert_eq!(code, 200, "{body}");
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

struct Running {
    relay: common::KillOnDrop,
    forward: SocketAddr,
    http: SocketAddr,
}

fn start(dir: &Path, conf: &Path) -> Running {
    let mut relay = common::KillOnDrop(common::spawn_relay(conf, &[]));
    let forward = common::wait_forward_addr(dir, &mut relay, "fwd");
    let http = common::wait_http_addr(dir, &mut relay);
    Running {
        relay,
        forward,
        http,
    }
}

#[test]
fn a_full_volume_refuses_acks_survives_kill_9_and_drains_once_firehose_is_back() {
    let fs = match Tmpfs::mount("48m") {
        Ok(fs) => fs,
        Err(why) => {
            eprintln!("skipped: this test mounts a tmpfs and needs root (CAP_SYS_ADMIN): {why}");
            return;
        }
    };
    let fake = FakeFirehose::http();
    fake.create_stream("full-stream")
        .allow_key("AKIDFULLTEST", "full-secret");
    // Firehose refuses every record (ServiceUnavailableException) until phase 3.
    fake.set_record_failure_rate(1.0);
    let dir = tempfile::tempdir().unwrap();
    let data_dir = fs.path().join("data");
    let conf = config(dir.path(), &data_dir, &fake);

    // 1. Fill the volume with acknowledged records.
    let mut run = start(dir.path(), &conf);
    let mut acked: Vec<u64> = Vec::new();
    let mut next = 0u64;
    let mut refused = 0;
    let started = Instant::now();
    while refused < 3 {
        assert!(
            started.elapsed() < Duration::from_secs(240),
            "the volume never filled: {} records acknowledged",
            acked.len()
        );
        let ids: Vec<u64> = (next..next + PER_MESSAGE).collect();
        next += PER_MESSAGE;
        if send_acked(
            run.forward,
            &format!("m{}", ids[0]),
            &ids,
            Duration::from_secs(3),
        ) {
            assert_eq!(refused, 0, "an ack after a refusal while nothing drains");
            acked.extend(&ids);
        } else {
            refused += 1;
        }
        if let Ok(Some(status)) = run.relay.try_wait() {
            panic!(
                "the relay exited with {status} on a full volume:\n{}",
                common::read_log(dir.path(), "stderr.log")
            );
        }
    }
    let acked_bytes = acked.len() * PAD;
    println!(
        "full volume: {} records ({} MB) acknowledged before the first refusal",
        acked.len(),
        acked_bytes >> 20
    );
    // Of 48 MiB: sled's first segment (8 MiB), the ballast (8 MiB + the reserve) and the
    // reserve (1 MiB) are not for records.
    assert!(
        acked_bytes > 24 << 20,
        "refused long before the 48 MiB volume was full: {acked_bytes} bytes acked\n{}",
        common::read_log(dir.path(), "stderr.log")
    );
    let (code, body) = common::http_get(run.http.port(), "/readyz");
    assert_eq!(code, 503, "/readyz on a full volume: {body}");
    assert!(body.contains("full"), "{body}");
    let (code, body) = common::http_get(run.http.port(), "/healthz");
    assert_eq!(code, 200, "/healthz: the store is full, not broken: {body}");
    let status = status_json(run.http);
    let storage = &status["outputs"]["fh"]["buffer"]["storage"];
    assert_eq!(storage["state"], "full", "{status}");
    assert!(
        storage["reason"].as_str().is_some_and(|r| !r.is_empty()),
        "{status}"
    );
    // The dead-letter directory and the quarantine share the volume: their sizes and limits
    // are reported too.
    assert_eq!(
        status["dead_letter"]["limit_bytes"],
        1u64 << 30,
        "default storage.dead_letter_limit_size: {status}"
    );
    assert!(status["quarantine"]["bytes"].is_u64(), "{status}");
    let (_, metrics) = common::http_get(run.http.port(), "/metrics");
    for line in [
        "firehose_relay_buffer_storage_state{output=\"fh\",state=\"full\"} 1",
        "firehose_relay_storage_dir_bytes{dir=\"dead_letter\",kind=\"limit_bytes\"} 1073741824",
        "firehose_relay_storage_dir_refused_writes{dir=\"quarantine\"} 0",
    ] {
        assert!(metrics.contains(line), "{line} in:\n{metrics}");
    }

    // 2. kill -9 and start again on the full volume.
    run.relay.kill().unwrap();
    run.relay.wait().unwrap();
    let mut run = start(dir.path(), &conf);
    common::wait_for_log(
        dir.path(),
        &mut run.relay,
        "firehose-relay started",
        Duration::from_secs(60),
    );
    let (code, body) = common::http_get(run.http.port(), "/healthz");
    assert_eq!(code, 200, "{body}");

    // 3. Firehose accepts again: everything acknowledged arrives, and acks resume.
    fake.set_record_failure_rate(0.0);
    let acked_set: BTreeSet<u64> = acked.iter().copied().collect();
    common::wait_for(
        Duration::from_secs(180),
        "every acknowledged record delivered",
        || {
            if let Ok(Some(status)) = run.relay.try_wait() {
                panic!(
                    "relay exited with {status}:\n{}",
                    common::read_log(dir.path(), "stderr.log")
                );
            }
            let got = delivered_ids(&fake);
            acked_set.is_subset(&got).then_some(())
        },
    );
    common::wait_for(Duration::from_secs(60), "/readyz 200", || {
        (common::http_get(run.http.port(), "/readyz").0 == 200).then_some(())
    });
    let status = status_json(run.http);
    assert_eq!(
        status["outputs"]["fh"]["buffer"]["storage"]["state"], "ok",
        "{status}"
    );
    let more: Vec<u64> = (next..next + PER_MESSAGE).collect();
    assert!(
        send_acked(run.forward, "after", &more, Duration::from_secs(10)),
        "acks resume once space is back:\n{}",
        common::read_log(dir.path(), "stderr.log")
    );
    common::wait_for(Duration::from_secs(60), "the new records delivered", || {
        let got = delivered_ids(&fake);
        more.iter().all(|id| got.contains(id)).then_some(())
    });
    common::sigterm(&run.relay);
    let status = common::wait_exit(&mut run.relay, Duration::from_secs(60));
    assert!(
        status.success(),
        "{}",
        common::read_log(dir.path(), "stderr.log")
    );
}
