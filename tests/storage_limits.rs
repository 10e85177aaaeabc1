//! The limits and corruption handling of issue 15 on the real binary, where the buffer-level
//! tests cannot reach: the dead-letter limit on the intake path, the quarantine limit at
//! startup, and a corrupt frame in the middle of a chunk (defect 5) counted in `/metrics` and
//! `/status`.
//!
//! * `at_the_dead_letter_limit_an_intake_reject_leaves_its_message_unacknowledged`
//! * `at_the_quarantine_limit_an_unreadable_chunk_stays_on_disk_until_there_is_room`
//! * `a_corrupt_frame_in_the_middle_of_a_chunk_loses_only_its_records_and_is_counted`

mod common;
mod forward_support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::Duration;

use common::KillOnDrop;
use firehose_relay::flush::deadletter::DeadLetter;
use forward_support::Mp;

/// A relay run in `root/<run>` (its config and logs), on the shared `root/data` and a file
/// output writing to `root/out` (records are the `msg` field of each event).
struct Run {
    relay: KillOnDrop,
    dir: PathBuf,
    fwd: SocketAddr,
    http: u16,
}

fn start(root: &Path, run: &str, storage: &str, flush_interval: &str) -> Run {
    let dir = root.join(run);
    std::fs::create_dir_all(&dir).unwrap();
    let r = root.display();
    let conf = common::write_config(
        &dir,
        &format!(
            r#"
data_dir = "{r}/data"
shutdown_timeout = "10s"
[storage]
{storage}
[http]
listen = "127.0.0.1:0"
[sources.fwd]
type = "forward"
listen = "127.0.0.1:0"
[outputs.out]
type = "file"
match = "**"
path = "{r}/out"
data_key = "msg"
[outputs.out.buffer]
type = "file"
flush_interval = "{flush_interval}"
"#
        ),
    );
    let mut relay = KillOnDrop(common::spawn_relay(&conf, &[("RUST_LOG", "info")]));
    let fwd = common::wait_forward_addr(&dir, &mut relay, "fwd");
    let http = common::wait_http_addr(&dir, &mut relay).port();
    Run {
        relay,
        dir,
        fwd,
        http,
    }
}

impl Run {
    fn log(&self) -> String {
        common::strip_ansi(&common::read_log(&self.dir, "stderr.log"))
    }

    /// The value of the metric line starting with `series` (name and labels), if any.
    fn metric(&self, series: &str) -> Option<f64> {
        let (status, body) = common::http_get(self.http, "/metrics");
        assert_eq!(status, 200, "{body}");
        body.lines()
            .find_map(|l| l.strip_prefix(series)?.trim().parse().ok())
    }

    fn status(&self) -> serde_json::Value {
        let (status, body) = common::http_get(self.http, "/status");
        assert_eq!(status, 200, "{body}");
        serde_json::from_str(&body).unwrap()
    }

    /// SIGTERM, and a clean exit.
    fn stop(mut self) {
        common::sigterm(&self.relay);
        let status = common::wait_exit(&mut self.relay, Duration::from_secs(30));
        assert!(status.success(), "{status}:\n{}", self.log());
    }
}

/// `[tag, [[time, event]...], {"chunk": chunk}]`.
fn message(chunk: &str, events: &[Mp]) -> Vec<u8> {
    let mut m = Mp::new().arr(3).s("app").arr(events.len() as u32);
    for e in events {
        m = m.arr(2).int(1_600_000_000).raw(&e.0);
    }
    m.map(1).s("chunk").s(chunk).0
}

fn msg(text: &str) -> Mp {
    Mp::new().map(1).s("msg").s(text)
}

/// Sends `events` as one message with an ack request; true if the ack came within `wait`.
fn send(addr: SocketAddr, chunk: &str, events: &[Mp], wait: Duration) -> bool {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(wait)).unwrap();
    s.write_all(&message(chunk, events)).unwrap();
    let want = Mp::new().map(1).s("ack").s(chunk).0;
    let mut got = vec![0u8; want.len()];
    match s.read_exact(&mut got) {
        Ok(()) => {
            assert_eq!(got, want, "unexpected reply");
            true
        }
        Err(_) => false,
    }
}

/// Every line the file output wrote.
fn delivered(root: &Path) -> Vec<String> {
    let Ok(rd) = std::fs::read_dir(root.join("out")) else {
        return Vec::new();
    };
    let mut lines: Vec<String> = rd
        .filter_map(Result::ok)
        .flat_map(|e| {
            std::fs::read_to_string(e.path())
                .unwrap_or_default()
                .lines()
                .map(str::to_owned)
                .collect::<Vec<_>>()
        })
        .collect();
    lines.sort();
    lines
}

/// The files under `root/data/quarantine`.
fn quarantine_files(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("data/quarantine"))
        .map(|rd| rd.filter_map(|e| Some(e.ok()?.path())).collect())
        .unwrap_or_default()
}

/// The chunk files of output `out`.
fn chunk_files(root: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(root.join("data/buffer/chunks/out"))
        .map(|rd| {
            rd.filter_map(|e| Some(e.ok()?.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "chunk"))
                .collect()
        })
        .unwrap_or_default()
}

/// Sends `n` acknowledged messages of one record each (`rec-<i>`), then `kill -9`s the relay
/// before it flushes (`flush_interval` is an hour): the records are in one staged chunk, one
/// frame per message. Returns the chunk file.
fn staged_chunk_of(root: &Path, n: usize) -> PathBuf {
    let run = start(root, "fill", "", "1h");
    for i in 0..n {
        let rec = format!("rec-{i}-{}", "p".repeat(40));
        assert!(
            send(
                run.fwd,
                &format!("c{i}"),
                &[msg(&rec)],
                Duration::from_secs(30)
            ),
            "message {i} not acknowledged:\n{}",
            run.log()
        );
    }
    let mut relay = run.relay;
    relay.kill().unwrap();
    relay.wait().unwrap();
    let files = chunk_files(root);
    assert_eq!(files.len(), 1, "{files:?}");
    files[0].clone()
}

/// The file offsets of the frames of a chunk file without a key (24-byte header).
fn frames(file: &[u8]) -> Vec<usize> {
    let mut at = 24;
    let mut out = Vec::new();
    while at < file.len() {
        out.push(at);
        at += 4 + u32::from_le_bytes(file[at..at + 4].try_into().unwrap()) as usize;
    }
    out
}

#[test]
fn at_the_dead_letter_limit_an_intake_reject_leaves_its_message_unacknowledged() {
    let root = tempfile::tempdir().unwrap();
    let run = start(
        root.path(),
        "run",
        "dead_letter_limit_size = \"4k\"",
        "100ms",
    );
    // A record without `msg` is dead-lettered at intake; within the limit the message is
    // acknowledged.
    let no_msg = |text: &str| Mp::new().map(1).s("other").s(text);
    assert!(
        send(
            run.fwd,
            "m1",
            &[no_msg("small"), msg("kept-1")],
            Duration::from_secs(30)
        ),
        "{}",
        run.log()
    );
    // One that would take the directory past its limit is refused: the message is not
    // acknowledged, so the client keeps it and resends.
    assert!(
        !send(
            run.fwd,
            "m2",
            &[no_msg(&"y".repeat(8000)), msg("kept-2")],
            Duration::from_secs(5)
        ),
        "a message whose reject could not be dead-lettered was acknowledged"
    );
    let refused = run
        .metric("firehose_relay_storage_dir_refused_writes{dir=\"dead_letter\"}")
        .expect("the refused-writes metric");
    assert!(refused >= 1.0, "refused writes: {refused}");
    let status = run.status();
    assert!(
        status["dead_letter"]["refused_writes"].as_u64() >= Some(1),
        "{status}"
    );
    assert_eq!(status["dead_letter"]["limit_bytes"], 4096, "{status}");
    assert!(
        run.log().contains("dead-letter directory at its limit"),
        "{}",
        run.log()
    );
    let entries = DeadLetter::new(&root.path().join("data")).list().unwrap();
    assert_eq!(entries.len(), 1, "only the first reject is dead-lettered");
    common::wait_for(Duration::from_secs(30), "kept-1 delivered", || {
        delivered(root.path())
            .contains(&"kept-1".to_owned())
            .then_some(())
    });
    run.stop();
}

#[test]
fn at_the_quarantine_limit_an_unreadable_chunk_stays_on_disk_until_there_is_room() {
    let root = tempfile::tempdir().unwrap();
    let chunk = staged_chunk_of(root.path(), 3);
    // Bit rot in the chunk file's header: the chunk cannot be read at all.
    let mut bytes = std::fs::read(&chunk).unwrap();
    bytes[6] ^= 0x20;
    std::fs::write(&chunk, &bytes).unwrap();

    let run = start(
        root.path(),
        "limited",
        "quarantine_limit_size = \"16\"",
        "100ms",
    );
    assert!(
        run.log()
            .contains("no room to quarantine an unreadable chunk"),
        "{}",
        run.log()
    );
    let refused = run
        .metric("firehose_relay_storage_dir_refused_writes{dir=\"quarantine\"}")
        .expect("the refused-writes metric");
    assert!(refused >= 1.0, "refused writes: {refused}");
    assert!(chunk.exists(), "the unreadable chunk is left on disk");
    assert!(
        quarantine_files(root.path()).is_empty(),
        "{:?}",
        quarantine_files(root.path())
    );
    // The relay works meanwhile.
    assert!(send(run.fwd, "n1", &[msg("new")], Duration::from_secs(30)));
    common::wait_for(Duration::from_secs(30), "the new record delivered", || {
        delivered(root.path())
            .contains(&"new".to_owned())
            .then_some(())
    });
    run.stop();

    // With room, the next start moves it to quarantine (a copy of its file included).
    let run = start(root.path(), "room", "", "100ms");
    assert!(!chunk.exists(), "the chunk is moved away");
    let q = quarantine_files(root.path());
    assert!(
        q.iter()
            .any(|p| p.extension().is_some_and(|x| x == "chunk")
                && std::fs::read(p).unwrap() == bytes),
        "{q:?}"
    );
    assert_eq!(
        run.metric("firehose_relay_buffer_quarantined_chunks_total{output=\"out\"}"),
        Some(1.0)
    );
    run.stop();
}

#[test]
fn a_corrupt_frame_in_the_middle_of_a_chunk_loses_only_its_records_and_is_counted() {
    let root = tempfile::tempdir().unwrap();
    let chunk = staged_chunk_of(root.path(), 3);
    let mut bytes = std::fs::read(&chunk).unwrap();
    let at = frames(&bytes);
    assert_eq!(at.len(), 3, "one frame per acknowledged message");
    // Bit rot in the record bytes of the middle frame; its length prefix is intact.
    let last = at[2] - 1;
    bytes[last] ^= 0x01;
    std::fs::write(&chunk, &bytes).unwrap();

    let run = start(root.path(), "run", "", "100ms");
    let want: Vec<String> = [0, 2]
        .iter()
        .map(|i| format!("rec-{i}-{}", "p".repeat(40)))
        .collect();
    common::wait_for(
        Duration::from_secs(30),
        "the records around the corrupt frame delivered",
        || (delivered(root.path()) == want).then_some(()),
    );
    assert_eq!(
        run.metric("firehose_relay_buffer_corrupt_frames_total{output=\"out\"}"),
        Some(1.0)
    );
    assert_eq!(
        run.metric("firehose_relay_buffer_quarantined_chunks_total{output=\"out\"}"),
        Some(0.0)
    );
    let status = run.status();
    assert_eq!(
        status["outputs"]["out"]["buffer"]["corrupt_frames"], 1,
        "{status}"
    );
    let log = run.log();
    assert!(
        log.contains("corrupt frames in a staged chunk's file"),
        "{log}"
    );
    assert!(
        !log.contains("unacknowledged append"),
        "corruption is not reported as a cut append:\n{log}"
    );
    let q = quarantine_files(root.path());
    assert!(
        q.iter()
            .any(|p| p.to_string_lossy().ends_with(".reason.txt")
                && std::fs::read_to_string(p)
                    .unwrap()
                    .contains("corrupt frame")),
        "{q:?}"
    );
    run.stop();
}
