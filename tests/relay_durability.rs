//! "An ack means the records are on disk", checked on the real binary under a forward client
//! (the buffer-level versions of these tests are in `buffer_crash.rs`):
//!
//! * `each_ack_is_written_after_the_fdatasync_of_the_chunk_files_holding_its_records`: the
//!   relay runs under `strace -f`; before the socket write of each ack, every chunk file written
//!   so far was fdatasynced after its last write, and the chunk directory after the file was
//!   created. (`kill -9` leaves the page cache behind, so only a trace can show a missing sync.)
//! * `kill_9_under_acked_load_loses_no_acknowledged_record`: the relay is killed with SIGKILL
//!   at random moments while a client sends acked messages, each time once it writes new chunks
//!   into reused files of delivered ones (`/status` `reuse_pool`); after the last restart every
//!   acknowledged record reaches the output (duplicates allowed: at-least-once).

mod common;
mod forward_support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::Write;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::strace::completed_calls;
use forward_support::{read_records, Mp};
use rand::Rng;

/// A relay with a forward source on port 0 and a file output, on the durable file buffer.
fn config(dir: &Path, buffer: &str) -> std::path::PathBuf {
    let d = dir.display();
    common::write_config(
        dir,
        &format!(
            r#"
data_dir = "{d}/data"
shutdown_timeout = "10s"
[http]
listen = ""
[sources.fwd]
type = "forward"
listen = "127.0.0.1:0"
[outputs.out]
type = "file"
match = "**"
path = "{d}/out"
[outputs.out.buffer]
type = "file"
{buffer}
"#
        ),
    )
}

/// `[tag, [[time, {"id": N}]...], {"chunk": chunk}]` for the given ids.
fn message(chunk: &str, ids: &[u64]) -> Vec<u8> {
    let mut m = Mp::new().arr(3).s("durable").arr(ids.len() as u32);
    for id in ids {
        m = m.arr(2).int(1_600_000_000).map(1).s("id").int(*id as i64);
    }
    m.map(1).s("chunk").s(chunk).0
}

fn ack(chunk: &str) -> Vec<u8> {
    Mp::new().map(1).s("ack").s(chunk).0
}

/// Sends `message` and reads its ack; `Err` if the connection broke or the ack differs.
fn send_acked(s: &mut TcpStream, chunk: &str, ids: &[u64]) -> std::io::Result<()> {
    use std::io::Read;
    s.write_all(&message(chunk, ids))?;
    let want = ack(chunk);
    let mut got = vec![0u8; want.len()];
    s.read_exact(&mut got)?;
    if got != want {
        return Err(std::io::Error::other(format!("unexpected reply {got:?}")));
    }
    Ok(())
}

/// The pid of the relay started by `strace` (its only child).
fn traced_child(strace: &Child) -> u32 {
    let path = format!("/proc/{0}/task/{0}/children", strace.id());
    common::wait_for(Duration::from_secs(30), "the traced relay's pid", || {
        std::fs::read_to_string(&path)
            .ok()?
            .split_whitespace()
            .next()?
            .parse()
            .ok()
    })
}

#[test]
fn each_ack_is_written_after_the_fdatasync_of_the_chunk_files_holding_its_records() {
    if Command::new("strace").arg("-V").output().is_err() {
        panic!("this test needs strace: install it (apt-get install -y strace)");
    }
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), "flush_interval = \"60s\"");
    let trace = dir.path().join("trace.txt");
    let stderr = std::fs::File::create(dir.path().join("stderr.log")).unwrap();
    let mut strace = common::KillOnDrop(
        Command::new("strace")
            .args(["-f", "-qq", "-s", "256", "-o"])
            .arg(&trace)
            .args([
                "-e",
                "trace=openat,close,write,writev,sendto,sendmsg,pwrite64,pwritev,fsync,fdatasync",
            ])
            .arg(common::relay_bin())
            .args(["run", "--config"])
            .arg(&conf)
            .env_remove("RELAY_CONFIG")
            .env("RUST_LOG", "info")
            .stdout(Stdio::null())
            .stderr(Stdio::from(stderr))
            .spawn()
            .expect("start strace"),
    );
    let addr = common::wait_forward_addr(dir.path(), &mut strace, "fwd");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let messages = 6u64;
    for i in 0..messages {
        let ids: Vec<u64> = (i * 10..i * 10 + 10).collect();
        send_acked(&mut s, &format!("durable-{i}"), &ids).expect("acked");
    }
    drop(s);
    let relay = traced_child(&strace);
    let status = Command::new("kill")
        .args(["-TERM", &relay.to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let status = common::wait_exit(&mut strace, Duration::from_secs(60));
    assert!(
        status.success(),
        "{}",
        common::read_log(dir.path(), "stderr.log")
    );

    let text = std::fs::read_to_string(&trace).unwrap();
    let chunk_dir = dir.path().join("data/buffer/chunks/out");
    let chunk_dir = chunk_dir.display().to_string();
    let mut fds: HashMap<String, String> = HashMap::new();
    let mut last_write: BTreeMap<String, usize> = BTreeMap::new();
    let mut last_sync: BTreeMap<String, usize> = BTreeMap::new();
    let mut created: Vec<usize> = Vec::new();
    let mut acked: BTreeSet<u64> = BTreeSet::new();
    for (i, c) in completed_calls(&text).iter().enumerate() {
        let fd = c.args.split(',').next().unwrap_or("").trim().to_owned();
        match c.name.as_str() {
            "openat" if c.result != "-1" => {
                if let Some(path) = c.args.split('"').nth(1) {
                    if path.ends_with(".chunk") && c.args.contains("O_CREAT") {
                        created.push(i);
                    }
                    fds.insert(c.result.clone(), path.to_owned());
                }
            }
            "close" => {
                fds.remove(&fd);
            }
            "write" | "writev" | "sendto" | "sendmsg" | "pwrite64" | "pwritev"
                if c.result != "-1" =>
            {
                let ack_of = (0..messages)
                    .find(|m| c.args.contains("ack") && c.args.contains(&format!("durable-{m}\"")));
                if let Some(m) = ack_of {
                    let unsynced: Vec<&String> = last_write
                        .iter()
                        .filter(|(p, w)| {
                            p.ends_with(".chunk") && last_sync.get(*p).is_none_or(|s| s <= *w)
                        })
                        .map(|(p, _)| p)
                        .collect();
                    assert!(
                        !last_write.keys().all(|p| !p.ends_with(".chunk")),
                        "ack of durable-{m} (#{i}) before any chunk file was written"
                    );
                    assert!(
                        unsynced.is_empty(),
                        "ack of durable-{m} (#{i}) while {unsynced:?} had writes not yet \
                         fdatasynced; trace in {}",
                        trace.display()
                    );
                    let dir_synced = last_sync.get(&chunk_dir).copied();
                    assert!(
                        created.iter().all(|c| dir_synced.is_some_and(|s| s > *c)),
                        "ack of durable-{m} (#{i}): the chunk directory was not fsynced after \
                         the chunk files were created ({created:?}, last sync {dir_synced:?})"
                    );
                    acked.insert(m);
                } else if let Some(path) = fds.get(&fd) {
                    last_write.insert(path.clone(), i);
                }
            }
            "fsync" | "fdatasync" if c.result == "0" => {
                if let Some(path) = fds.get(&fd) {
                    last_sync.insert(path.clone(), i);
                }
            }
            _ => {}
        }
    }
    assert_eq!(
        acked,
        (0..messages).collect::<BTreeSet<u64>>(),
        "every ack was found in the trace ({})",
        trace.display()
    );
}

/// Sends acked messages of 10 records until the connection breaks or `stop` is set, adding
/// the ids of each acknowledged message to `acked` as soon as its ack is read.
fn acked_load(
    addr: std::net::SocketAddr,
    first_id: u64,
    stop: Arc<AtomicBool>,
    acked: Arc<Mutex<Vec<u64>>>,
) {
    let Ok(mut s) = TcpStream::connect(addr) else {
        return;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(30)));
    let mut next = first_id;
    while !stop.load(Ordering::Relaxed) {
        let ids: Vec<u64> = (next..next + 10).collect();
        if send_acked(&mut s, &format!("c{next}"), &ids).is_err() {
            break;
        }
        acked.lock().unwrap().extend(&ids);
        next += 10;
    }
}

#[test]
fn kill_9_under_acked_load_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(
        dir.path(),
        "flush_interval = \"200ms\"\nflush_thread_interval = \"20ms\"\nretry_wait = \"100ms\"\nretry_max_interval = \"1s\"",
    );
    // With the HTTP endpoint, to see the pool of reused chunk files at work.
    let text = std::fs::read_to_string(&conf).unwrap();
    std::fs::write(
        &conf,
        text.replace("[http]\nlisten = \"\"", "[http]\nlisten = \"127.0.0.1:0\""),
    )
    .unwrap();
    let mut rng = rand::thread_rng();
    let acked: Arc<Mutex<Vec<u64>>> = Arc::default();
    let started = Instant::now();
    let kills = 10u64;
    for run in 0..kills {
        let mut relay = common::KillOnDrop(common::spawn_relay(&conf, &[]));
        let addr = common::wait_forward_addr(dir.path(), &mut relay, "fwd");
        let http = common::wait_http_addr(dir.path(), &mut relay);
        let stop = Arc::new(AtomicBool::new(false));
        let before = acked.lock().unwrap().len();
        let clients: Vec<_> = (0..2u64)
            .map(|c| {
                let (stop, acked) = (Arc::clone(&stop), Arc::clone(&acked));
                std::thread::spawn(move || {
                    acked_load(addr, run * 100_000_000 + c * 10_000_000, stop, acked)
                })
            })
            .collect();
        // Kill at a random moment once the load is acknowledged (the previous run's backlog
        // was recovered by then).
        common::wait_for(Duration::from_secs(60), "a first ack", || {
            if let Ok(Some(status)) = relay.try_wait() {
                panic!(
                    "relay exited with {status}:\n{}",
                    common::read_log(dir.path(), "stderr.log")
                );
            }
            (acked.lock().unwrap().len() > before).then_some(())
        });
        // ... and new chunks go into reused files of delivered ones (the pool fills again
        // after every start: it is not kept across restarts).
        common::wait_for(Duration::from_secs(30), "a chunk in a reused file", || {
            let (code, body) = common::http_get(http.port(), "/status");
            let status: serde_json::Value = serde_json::from_str(&body).ok()?;
            let reused =
                status["outputs"]["out"]["buffer"]["reuse_pool"]["reused_chunks"].as_u64()?;
            (code == 200 && reused > 0).then_some(())
        });
        std::thread::sleep(Duration::from_millis(rng.gen_range(100..800)));
        relay.kill().unwrap(); // SIGKILL
        relay.wait().unwrap();
        stop.store(true, Ordering::Relaxed);
        for c in clients {
            c.join().unwrap();
        }
        assert!(
            acked.lock().unwrap().len() > before,
            "run {run}: nothing was acknowledged before the kill:\n{}",
            common::read_log(dir.path(), "stderr.log")
        );
    }
    let acked: BTreeSet<u64> = acked.lock().unwrap().iter().copied().collect();
    // The last start drains what the kills left behind.
    let mut relay = common::KillOnDrop(common::spawn_relay(&conf, &[]));
    let out = dir.path().join("out");
    let missing = |delivered: &BTreeSet<u64>| -> Vec<u64> {
        acked
            .iter()
            .copied()
            .filter(|id| !delivered.contains(id))
            .collect()
    };
    let delivered_ids = || -> BTreeSet<u64> {
        read_records(&out)
            .iter()
            .filter_map(|r| r["id"].as_u64())
            .collect()
    };
    let deadline = Instant::now() + Duration::from_secs(120);
    while !missing(&delivered_ids()).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(100));
    }
    common::sigterm(&relay);
    let status = common::wait_exit(&mut relay, Duration::from_secs(60));
    let log = common::read_log(dir.path(), "stderr.log");
    assert!(status.success(), "{log}");
    let delivered = delivered_ids();
    let lost = missing(&delivered);
    let records = read_records(&out).len();
    println!(
        "relay kill -9 test: {kills} kills in {:?}, {} records acknowledged, {} distinct \
         delivered ({} with duplicates), {} lost",
        started.elapsed(),
        acked.len(),
        delivered.len(),
        records,
        lost.len()
    );
    assert!(
        lost.is_empty(),
        "{} acknowledged records lost, e.g. {:?}",
        lost.len(),
        &lost[..lost.len().min(10)]
    );
}
