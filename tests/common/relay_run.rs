//! Runs the real binary with a sample source feeding one Firehose output, stops it with
//! SIGTERM, and checks which sequence numbers arrived against the number of records the relay
//! took in (its `source stopped ... records_in=N` line, written once sources have stopped).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

/// Config text: a sample source with `auto_increment_key = "seq"` feeding output `fh`
/// (firehose settings in `output`, a `credentials` section or nothing in `credentials`),
/// memory buffer, quick flushes.
pub fn sample_to_firehose_config(dir: &Path, output: &str, credentials: &str) -> String {
    format!(
        r#"
data_dir = {data:?}
shutdown_timeout = "20s"
[http]
listen = "127.0.0.1:0"
[sources.sample]
type = "sample"
tag = "app.test"
rate = 20
size = 25
auto_increment_key = "seq"
record = {{ message = "hello from the relay" }}
[outputs.fh]
type = "firehose"
match = "**"
{output}
{credentials}
[outputs.fh.buffer]
type = "memory"
flush_interval = "300ms"
flush_thread_count = 2
retry_wait = "200ms"
retry_max_interval = "1s"
"#,
        data = dir.join("data").display().to_string(),
    )
}

/// Starts the relay, lets it run `for_how_long` once it has started, stops it with SIGTERM
/// and returns its stderr (without colour codes).
pub fn run_for(dir: &Path, config: &str, env: &[(&str, &str)], for_how_long: Duration) -> String {
    let path = super::write_config(dir, config);
    let mut child = super::spawn_relay(&path, env);
    super::wait_for_log(
        dir,
        &mut child,
        "firehose-relay started",
        Duration::from_secs(60),
    );
    std::thread::sleep(for_how_long);
    super::sigterm(&child);
    let status = super::wait_exit(&mut child, Duration::from_secs(40));
    let log = super::strip_ansi(&super::read_log(dir, "stderr.log"));
    assert!(status.success(), "relay exited with {status}:\n{log}");
    log
}

/// `seq` values of newline-delimited JSON records, with how often each arrived.
pub fn sequence_counts<'a>(lines: impl Iterator<Item = &'a [u8]>) -> BTreeMap<u64, usize> {
    let mut seen = BTreeMap::new();
    for line in lines {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let v: serde_json::Value = serde_json::from_slice(line)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(line)));
        let seq = v["seq"].as_u64().expect("seq field");
        *seen.entry(seq).or_default() += 1;
    }
    seen
}

/// Every number the source generated arrived: exactly `0..records_in` of source `source` as
/// the relay's shutdown line counts them, none missing at the end or in between, none
/// unexpected; returns how many.
pub fn assert_all_arrived(seen: &BTreeMap<u64, usize>, source: &str, log: &str) -> u64 {
    let n: u64 = super::log_field(
        log,
        "source stopped",
        &format!("source={source}"),
        "records_in",
    )
    .and_then(|v| v.parse().ok())
    .unwrap_or_else(|| panic!("no `source stopped source={source} records_in=N` line:\n{log}"));
    assert!(n > 0, "the source generated nothing:\n{log}");
    let missing: Vec<u64> = (0..n).filter(|s| !seen.contains_key(s)).collect();
    assert!(
        missing.is_empty(),
        "{} of {n} records lost, first {:?}, last {:?}:\n{log}",
        missing.len(),
        &missing[..missing.len().min(10)],
        missing.last()
    );
    let extra: Vec<&u64> = seen.keys().filter(|s| **s >= n).collect();
    assert!(
        extra.is_empty(),
        "records the source never counted: {extra:?}"
    );
    n
}
