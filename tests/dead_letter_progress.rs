//! `dead-letter replay` on a terminal shows a progress bar (tmux captures it), and without one
//! prints a line per entry and a summary (what scripts and logs read).

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::tmux::Tmux;
use firehose_relay::buffer::Records;
use firehose_relay::flush::deadletter::{DeadLetter, NewEntry};

const ENTRIES: usize = 30;
const RECORDS_EACH: usize = 100;

fn dead_letters(data: &Path) {
    let dl = DeadLetter::new(data);
    for e in 0..ENTRIES {
        let mut records = Records::new();
        for r in 0..RECORDS_EACH {
            records
                .push(format!("{{\"entry\":{e},\"n\":{r}}}").as_bytes())
                .unwrap();
        }
        dl.write(NewEntry {
            output: "fh",
            reason: "retry_timeout exceeded",
            tag: None,
            stream: None,
            attempts: 3,
            created_ms: Some(1),
            records: &records,
        })
        .unwrap();
    }
}

#[test]
fn replay_shows_a_progress_bar_on_a_terminal() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    dead_letters(&data);
    let done = dir.path().join("done");
    let session = Tmux::start(
        "replay",
        &format!(
            "{bin} dead-letter replay --data-dir {data} > {out} && touch {done}; sleep 60",
            bin = common::relay_bin().display(),
            data = data.display(),
            out = dir.path().join("stdout").display(),
            done = done.display(),
        ),
    );
    common::wait_for(Duration::from_secs(30), "the replay to finish", || {
        done.exists().then_some(())
    });
    let screen = session.capture();
    let total = ENTRIES * RECORDS_EACH;
    assert!(
        screen.contains("replaying dead letters [")
            && screen.contains(&format!("] {ENTRIES}/{ENTRIES} entries, {total} records")),
        "no finished progress bar on the terminal:\n{screen}"
    );
    let stdout = std::fs::read_to_string(dir.path().join("stdout")).unwrap();
    assert_eq!(
        stdout.trim(),
        format!(
            "replayed {ENTRIES} entries ({total} records) into the buffer in {}",
            data.display()
        ),
        "a bar instead of a line per entry"
    );
}

#[test]
fn replay_without_a_terminal_prints_a_line_per_entry_and_a_summary() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    dead_letters(&data);
    let out = Command::new(common::relay_bin())
        .args(["dead-letter", "replay", "--data-dir"])
        .arg(&data)
        .env_remove("RELAY_CONFIG")
        .output()
        .unwrap();
    let (stdout, stderr) = (
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr),
    );
    assert!(out.status.success(), "{stderr}");
    assert!(
        !stderr.contains("replaying dead letters"),
        "no bar: {stderr}"
    );
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), ENTRIES + 1, "{stdout}");
    assert!(lines[..ENTRIES]
        .iter()
        .all(|l| l.contains(&format!("\toutput=fh\trecords={RECORDS_EACH}\tchunk="))));
    assert!(lines[ENTRIES].starts_with(&format!(
        "replayed {ENTRIES} entries ({} records)",
        ENTRIES * RECORDS_EACH
    )));
}
