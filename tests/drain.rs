//! A backlog left on disk, through the real binary: `drain` delivers it and exits 0 with the
//! buffer empty, or stops at `--timeout` with exit 1, a summary of what is left and nothing
//! lost; `run` after a restart logs the backlog's progress until it is delivered.
//!
//! The backlog is made the way it happens: a relay runs while the (fake) Firehose refuses every
//! record, then stops; its file buffer keeps everything.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::Duration;

use common::fake_firehose::FakeFirehose;
use common::relay_run::sequence_counts;

const KEY: &str = "AKIDDRAINTEST";
const SECRET: &str = "drain-secret-value";

fn fake() -> FakeFirehose {
    let fh = FakeFirehose::http();
    fh.create_stream("drain-stream").allow_key(KEY, SECRET);
    fh
}

/// Sample source → Firehose output `fh` through a file buffer. `retry` holds the buffer's
/// retry settings; `extra` more output keys.
fn config(dir: &Path, fh: &FakeFirehose, retry: &str, extra: &str) -> PathBuf {
    common::write_config(
        dir,
        &format!(
            r#"
data_dir = {data:?}
shutdown_timeout = "3s"
[http]
listen = ""
[sources.sample]
type = "sample"
tag = "app.test"
rate = 50
size = 20
auto_increment_key = "seq"
record = {{ message = "left on the volume" }}
[outputs.fh]
type = "firehose"
region = "us-east-1"
delivery_stream = "drain-stream"
endpoint_url = "{url}"
adaptive_pacing = false
retries_on_batch_request = 1
{extra}
[outputs.fh.credentials]
type = "static"
access_key_id = "{KEY}"
secret_access_key = "{SECRET}"
[outputs.fh.buffer]
type = "file"
flush_interval = "300ms"
flush_thread_count = 2
{retry}
"#,
            data = dir.join("data").display().to_string(),
            url = fh.url,
        ),
    )
}

/// Runs the relay for a few seconds while `fh` refuses every record, stops it, and returns
/// how many records its buffer kept.
fn leave_a_backlog(dir: &Path, conf: &Path, fh: &FakeFirehose) -> u64 {
    fh.set_record_failure_rate(1.0);
    let mut child = common::spawn_relay(conf, &[]);
    std::thread::sleep(Duration::from_secs(3));
    common::sigterm(&child);
    let status = common::wait_exit(&mut child, Duration::from_secs(30));
    let log = common::read_log(dir, "stderr.log");
    assert!(status.success(), "{status}\n{log}");
    assert!(fh.accepted().is_empty(), "the fake refused everything");
    let left = records_in_buffer(dir);
    assert!(left >= 1000, "only {left} records buffered:\n{log}");
    left
}

/// `records=` of output `fh` in `buffer stats`.
fn records_in_buffer(dir: &Path) -> u64 {
    let out = Command::new(common::relay_bin())
        .args(["buffer", "stats", "--output", "fh", "--data-dir"])
        .arg(dir.join("data"))
        .env_remove("RELAY_CONFIG")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text.split('\t')
        .find_map(|f| f.strip_prefix("records="))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no records= in {text}"))
}

/// Runs `drain ARGS --config CONF`; its status, stdout and stderr.
fn drain(conf: &Path, args: &[&str]) -> (ExitStatus, String, String) {
    let dir = conf.parent().unwrap();
    let (out, err) = (dir.join("drain.out"), dir.join("drain.err"));
    let mut child = Command::new(common::relay_bin())
        .arg("drain")
        .args(args)
        .arg("--config")
        .arg(conf)
        .env_remove("RELAY_CONFIG")
        .env("RUST_LOG", "info")
        .stdout(std::fs::File::create(&out).unwrap())
        .stderr(std::fs::File::create(&err).unwrap())
        .spawn()
        .unwrap();
    let status = common::wait_exit(&mut child, Duration::from_secs(120));
    let read = |p: &Path| std::fs::read_to_string(p).unwrap_or_default();
    (status, read(&out), read(&err))
}

#[test]
fn drain_delivers_a_backlog_and_stops_at_its_timeout_without_losing_any() {
    let dir = tempfile::tempdir().unwrap();
    let fh = fake();
    // A retry wait of an hour: only a drain that tries every chunk at once finishes in time.
    let conf = config(dir.path(), &fh, "retry_wait = \"1h\"", "");
    let buffered = leave_a_backlog(dir.path(), &conf, &fh);

    // Firehose still refuses: stop at the timeout, keep everything, say what is left.
    let (status, _, stderr) = drain(&conf, &["--timeout", "5s"]);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("--timeout passed"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "output `fh`: 0 records delivered, left: {buffered} records"
        )),
        "{stderr}"
    );
    assert!(fh.accepted().is_empty());
    assert_eq!(records_in_buffer(dir.path()), buffered, "nothing lost");

    // Firehose accepts: everything goes out, exit 0, the buffer is empty.
    fh.set_record_failure_rate(0.0);
    let (status, stdout, stderr) = drain(&conf, &["--timeout", "90s"]);
    assert!(status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("every buffer is empty"), "{stdout}");
    assert!(
        stdout.contains(&format!(
            "output `fh`: {buffered} records delivered, buffer empty"
        )),
        "{stdout}"
    );
    assert!(
        stderr.contains("drain: delivering the backlog recovered from disk"),
        "{stderr}"
    );
    let accepted = fh.accepted();
    let seen = sequence_counts(accepted.iter().map(Vec::as_slice));
    assert!(
        seen.keys().copied().eq(0..buffered),
        "every record, from 0 to {buffered}: {} arrived",
        seen.len()
    );
    assert!(seen.values().all(|&n| n == 1), "each once");
    assert_eq!(records_in_buffer(dir.path()), 0);

    // Draining an empty buffer is immediate and builds no sink.
    let calls = fh.calls().len();
    let (status, stdout, stderr) = drain(&conf, &[]);
    assert!(status.success(), "{stderr}");
    assert!(stdout.contains("nothing to drain"), "{stdout}");
    assert_eq!(fh.calls().len(), calls);
}

#[test]
fn a_restarted_relay_logs_the_progress_of_its_backlog_until_it_is_delivered() {
    let dir = tempfile::tempdir().unwrap();
    let fh = fake();
    let retry = "retry_wait = \"500ms\"\nretry_max_interval = \"1s\"";
    let conf = config(dir.path(), &fh, retry, "");
    let buffered = leave_a_backlog(dir.path(), &conf, &fh);

    // Restart with Firehose accepting, paced so that the backlog takes several seconds.
    fh.set_record_failure_rate(0.0);
    let paced = config(
        dir.path(),
        &fh,
        retry,
        &format!("max_records_per_second = {}", buffered / 8),
    );
    let mut child = common::spawn_relay(&paced, &[]);
    let log = common::wait_for(Duration::from_secs(90), "the backlog delivered", || {
        let log = common::read_log(dir.path(), "stderr.log");
        log.contains("the backlog recovered from disk is delivered")
            .then_some(log)
    });
    common::sigterm(&child);
    assert!(common::wait_exit(&mut child, Duration::from_secs(30)).success());

    let progress: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("backlog replay in progress"))
        .collect();
    assert!(!progress.is_empty(), "{log}");
    let field = |line: &str, name: &str| -> String {
        line.split_whitespace()
            .find_map(|w| w.strip_prefix(&format!("{name}=")))
            .unwrap_or_else(|| panic!("no {name} in {line}"))
            .to_owned()
    };
    let left: Vec<u64> = progress
        .iter()
        .map(|l| field(l, "records_left").parse().unwrap())
        .collect();
    assert!(
        left.iter().all(|&n| n > 0 && n < buffered),
        "{left:?}\n{log}"
    );
    assert!(
        left.windows(2).all(|w| w[1] <= w[0]),
        "counts down: {left:?}"
    );
    for line in &progress {
        assert!(field(line, "bytes_left").parse::<u64>().unwrap() > 0);
        assert!(field(line, "records_per_second").parse::<f64>().unwrap() > 0.0);
        let eta = field(line, "eta");
        assert!(eta.ends_with('s') || eta.ends_with('m'), "{line}");
    }
    let seen = sequence_counts(fh.accepted().iter().map(Vec::as_slice));
    assert!(
        (0..buffered).all(|s| seen.contains_key(&s)),
        "the whole backlog was delivered"
    );
}
