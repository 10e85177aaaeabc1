//! The file buffer through the real binary: the relay runs on it by default, and
//! `buffer stats|dump` and `dead-letter replay` work on a stopped relay's data_dir.
mod common;

use std::process::Command;
use std::time::Duration;

use firehose_relay::buffer::Records;
use firehose_relay::flush::deadletter::{DeadLetter, NewEntry};

fn relay(args: &[&str], data_dir: &std::path::Path) -> std::process::Output {
    Command::new(common::relay_bin())
        .args(args)
        .arg("--data-dir")
        .arg(data_dir)
        .env_remove("RELAY_CONFIG")
        .output()
        .unwrap()
}

#[test]
fn the_relay_delivers_through_the_file_buffer_and_leaves_an_inspectable_queue() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let out = dir.path().join("out");
    let config = common::write_config(
        dir.path(),
        &format!(
            r#"
data_dir = "{}"
[http]
listen = ""
[sources.sample]
type = "sample"
tag = "raw.sample"
rate = 50
record = {{ message = "sample" }}
[outputs.local]
type = "file"
match = "**"
path = "{}"
[outputs.local.buffer]
flush_interval = "1s"
"#,
            data.display(),
            out.display()
        ),
    );
    let mut child = common::spawn_relay(&config, &[]);
    common::wait_for(Duration::from_secs(20), "an output file", || {
        std::fs::read_dir(&out).ok()?.next().map(|_| ())
    });
    common::sigterm(&child);
    let status = common::wait_exit(&mut child, Duration::from_secs(20));
    assert!(
        status.success(),
        "{}",
        common::read_log(dir.path(), "stderr.log")
    );
    assert!(
        data.join("buffer").join("db").is_file(),
        "buffer.type defaults to file"
    );

    let stats = relay(&["buffer", "stats"], &data);
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(
        stats.status.success(),
        "{}",
        String::from_utf8_lossy(&stats.stderr)
    );
    assert!(
        text.contains("output=local") && text.contains("physical_bytes_on_disk="),
        "{text}"
    );
    // The store's health (issue 15): ok on a volume with room, with the room it sees.
    let health = text
        .lines()
        .find(|l| l.starts_with("storage="))
        .unwrap_or_else(|| panic!("no storage health line:\n{text}"));
    assert!(
        health.starts_with("storage=ok\t")
            && health.contains("available_bytes=")
            && health.contains("reserve_bytes=")
            && health.contains("ballast="),
        "{health}"
    );
}

#[test]
fn dead_letter_replay_moves_entries_back_into_the_queue_and_dump_shows_them() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path();
    let mut records = Records::new();
    records.push(b"{\"n\":1}\n").unwrap();
    records.push(b"{\"n\":2}").unwrap();
    DeadLetter::new(data)
        .write(NewEntry {
            output: "fh",
            reason: "retry_timeout exceeded",
            tag: None,
            stream: None,
            attempts: 3,
            created_ms: Some(1),
            records: &records,
        })
        .unwrap();
    // A description of a record too large to keep is not data: replay leaves it alone.
    let mut described = Records::new();
    described
        .push(b"{\"tag\":\"app\",\"size_bytes\":209715200,\"prefix\":\"{\"}\n")
        .unwrap();
    DeadLetter::new(data)
        .write_descriptions(NewEntry {
            output: "fh",
            reason: "record larger than record_size_limit",
            tag: Some("app"),
            stream: None,
            attempts: 0,
            created_ms: None,
            records: &described,
        })
        .unwrap();

    let replay = relay(&["dead-letter", "replay"], data);
    assert!(
        replay.status.success(),
        "{}",
        String::from_utf8_lossy(&replay.stderr)
    );
    assert!(String::from_utf8_lossy(&replay.stdout).contains("skipped"));
    let left = DeadLetter::new(data).list().unwrap();
    assert_eq!(
        left.len(),
        1,
        "replayed entries are removed, descriptions kept"
    );
    assert!(left[0].as_ref().unwrap().meta.truncated);

    let dump = relay(&["buffer", "dump", "--output", "fh"], data);
    assert!(
        dump.status.success(),
        "{}",
        String::from_utf8_lossy(&dump.stderr)
    );
    assert_eq!(
        String::from_utf8_lossy(&dump.stdout),
        "{\"n\":1}\n{\"n\":2}\n"
    );

    let stats = relay(&["buffer", "stats", "--output", "fh"], data);
    let text = String::from_utf8_lossy(&stats.stdout);
    assert!(
        text.contains("queued_chunks=1") && text.contains("records=2"),
        "{text}"
    );

    let missing = relay(&["buffer", "stats"], &data.join("nowhere"));
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("no data directory"));
    let bare = tempfile::tempdir().unwrap();
    let no_db = relay(&["buffer", "stats"], bare.path());
    assert!(!no_db.status.success());
    assert!(String::from_utf8_lossy(&no_db.stderr).contains("no buffer database"));
}
