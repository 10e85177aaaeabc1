//! The operations endpoint through the real binary: metrics move with traffic and parse as
//! valid exposition, health and readiness, `/status`, readiness flipping on SIGTERM, and the
//! endpoint answering (alive, not ready) while the buffers are recovered at startup.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;

fn get(port: u16, path: &str) -> (u16, String) {
    let url = format!("http://127.0.0.1:{port}{path}");
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        match reqwest::get(&url).await {
            Ok(r) => {
                let code = r.status().as_u16();
                (code, r.text().await.unwrap_or_default())
            }
            Err(e) => (0, e.to_string()),
        }
    })
}

/// Parses exposition text with the Prometheus project's own Python parser (strict OpenMetrics).
fn assert_valid_exposition(text: &str, dir: &Path) {
    let file = dir.join("metrics.txt");
    std::fs::write(&file, text).unwrap();
    let out = std::process::Command::new(python())
        .arg("-c")
        .arg(
            "import sys\nfrom prometheus_client.openmetrics.parser import text_string_to_metric_families as p\n\
             fams = list(p(open(sys.argv[1]).read()))\nprint(len(fams))",
        )
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "invalid exposition:\n{}\n---\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn metric(text: &str, name_and_labels: &str) -> Option<f64> {
    text.lines()
        .find(|l| l.starts_with(name_and_labels))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

fn config(dir: &Path, out_path: &Path, extra: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            r#"
data_dir = "{data}"
shutdown_timeout = "3s"
[http]
listen = "127.0.0.1:0"
[sources.gen]
type = "sample"
tag = "app"
rate = 50
[outputs.out]
type = "file"
path = "{out}"
[outputs.out.buffer]
type = "memory"
flush_interval = "1s"
retry_wait = "200ms"
{extra}
"#,
            data = dir.join("data").display(),
            out = out_path.display(),
        ),
    )
}

#[test]
fn metrics_move_with_traffic_and_parse_as_valid_exposition() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), &dir.path().join("out"), "");
    let mut child = spawn_relay(&conf, &[]);
    let port = wait_http_addr(dir.path(), &mut child).port();
    wait_for(Duration::from_secs(10), "/readyz 200", || {
        (get(port, "/readyz").0 == 200).then_some(())
    });
    assert_eq!(get(port, "/healthz"), (200, "ok\n".to_owned()));

    let (_, first) = get(port, "/metrics");
    let records_in = |t: &str| metric(t, "firehose_relay_records_in_total{source=\"gen\"}");
    let delivered = |t: &str| metric(t, "firehose_relay_records_delivered_total{output=\"out\"}");
    let later = wait_for(Duration::from_secs(10), "delivered records", || {
        let (_, t) = get(port, "/metrics");
        (delivered(&t).unwrap_or(0.0) > 0.0).then_some(t)
    });
    assert!(
        records_in(&later).unwrap() > records_in(&first).unwrap_or(0.0),
        "{later}"
    );
    assert!(
        later.contains("firehose_relay_buffer_limit_bytes{output=\"out\"} 536870912"),
        "{later}"
    );
    assert!(later.contains("firehose_relay_flush_attempts_total{output=\"out\"}"));
    assert_eq!(
        metric(&later, "firehose_relay_ready "),
        Some(1.0),
        "{later}"
    );
    assert_valid_exposition(&later, dir.path());

    let (code, status) = get(port, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["ready"], true);
    assert!(
        status["outputs"]["out"]["buffer_fill_ratio"]
            .as_f64()
            .unwrap()
            < 0.01
    );
    assert!(
        status["outputs"]["out"]["last_delivery_unix"]
            .as_i64()
            .unwrap()
            > 1_600_000_000
    );

    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}

#[test]
fn readiness_fails_as_soon_as_sigterm_arrives() {
    let dir = tempfile::tempdir().unwrap();
    // The output path is a regular file, so every flush fails and the memory buffer keeps
    // retrying until shutdown_timeout (8 s): a window in which the process is still serving.
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let conf = config(dir.path(), &blocker, "");
    let text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("shutdown_timeout = \"3s\"", "shutdown_timeout = \"8s\"");
    std::fs::write(&conf, text).unwrap();
    let mut child = spawn_relay(&conf, &[]);
    let port = wait_http_addr(dir.path(), &mut child).port();
    wait_for(Duration::from_secs(30), "/readyz 200", || {
        (get(port, "/readyz").0 == 200).then_some(())
    });
    // Records staged and a flush failed: there is something left to drain.
    wait_for(Duration::from_secs(30), "a failed flush", || {
        let (_, t) = get(port, "/metrics");
        (metric(&t, "firehose_relay_flush_failures_total{output=\"out\"").unwrap_or(0.0) > 0.0)
            .then_some(())
    });
    let start = Instant::now();
    sigterm(&child);
    let (code, body) = wait_for(Duration::from_secs(7), "/readyz 503", || {
        let r = get(port, "/readyz");
        (r.0 == 503).then_some(r)
    });
    assert_eq!(code, 503);
    assert!(body.contains("shutting down"), "{body}");
    assert_eq!(get(port, "/healthz").0, 200, "still alive while draining");
    let status = wait_exit(&mut child, Duration::from_secs(60));
    assert!(status.success(), "{status:?}");
    assert!(
        start.elapsed() >= Duration::from_secs(7),
        "kept retrying until shutdown_timeout (8 s), stopped after {:?}",
        start.elapsed()
    );
    let log = read_log(dir.path(), "stderr.log");
    assert!(log.contains("records left in the buffer at exit"), "{log}");
}

#[test]
fn readiness_fails_while_the_buffer_is_above_the_fill_threshold() {
    let dir = tempfile::tempdir().unwrap();
    let blocker = dir.path().join("not-a-dir");
    std::fs::write(&blocker, "x").unwrap();
    let conf = config(
        dir.path(),
        &blocker,
        "total_limit_size = \"4k\"\nchunk_limit_size = \"1k\"\noverflow_action = \"drop_oldest_chunk\"",
    );
    let conf_text = std::fs::read_to_string(&conf)
        .unwrap()
        .replace("[http]\n", "[http]\nready_max_buffer_fill = 0.5\n");
    std::fs::write(&conf, conf_text).unwrap();
    let mut child = spawn_relay(&conf, &[]);
    let port = wait_http_addr(dir.path(), &mut child).port();
    // 50 records/s of 21 bytes fill half of 4 KiB within a few seconds, and nothing drains.
    // (The endpoint answers 503 "recovering" before the buffers are recovered, too.)
    let body = wait_for(
        Duration::from_secs(15),
        "/readyz 503 for a full buffer",
        || {
            let (code, body) = get(port, "/readyz");
            (code == 503 && body.contains("full")).then_some(body)
        },
    );
    assert!(
        body.contains("buffer of output `out`") && body.contains("full"),
        "{body}"
    );
    let (_, metrics) = get(port, "/metrics");
    assert_eq!(
        metric(&metrics, "firehose_relay_ready "),
        Some(0.0),
        "{metrics}"
    );
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn readyz_is_503_until_the_relay_reports_ready_and_again_once_shutdown_starts() {
    use firehose_relay::flush::deadletter::DeadLetter;
    use firehose_relay::ops::http::{serve, Health, HttpState};
    use firehose_relay::ops::metrics::Metrics;
    use firehose_relay::pipeline::Pipeline;
    use std::sync::Arc;

    let dir = tempfile::tempdir().unwrap();
    let health = Arc::new(Health::default());
    let metrics = Arc::new(Metrics::new());
    let state = HttpState::new(Arc::clone(&metrics), Arc::clone(&health), None);
    let addr = serve("127.0.0.1:0", state.clone()).await.unwrap();
    let readyz = || async move {
        let r = reqwest::get(format!("http://{addr}/readyz")).await.unwrap();
        (r.status().as_u16(), r.text().await.unwrap())
    };
    // The relay marks itself ready only after buffers are recovered and sources listen.
    let (code, body) = readyz().await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("recovering"), "{body}");
    health.set_recovered();
    let (code, body) = readyz().await;
    assert_eq!(code, 503, "{body}");
    assert!(body.contains("starting"), "{body}");
    state.set_pipeline(Arc::new(Pipeline::new(
        Vec::new(),
        Vec::new(),
        metrics,
        Arc::new(DeadLetter::new(dir.path())),
    )));
    health.set_ready();
    assert_eq!(readyz().await.0, 200);
    health.set_shutting_down();
    let (code, body) = readyz().await;
    assert_eq!(code, 503);
    assert!(body.contains("shutting down"), "{body}");
}

/// True when the server has closed `s` (end of file or reset), waiting up to the socket's
/// read timeout.
fn closed_by_server(s: &mut std::net::TcpStream) -> bool {
    use std::io::Read;
    let mut buf = [0u8; 256];
    match s.read(&mut buf) {
        Ok(0) => true,
        Ok(_) => false,
        Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
    }
}

#[test]
fn idle_and_slow_clients_cannot_hold_the_endpoint() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path(), &dir.path().join("out"), "");
    let mut child = KillOnDrop(spawn_relay(&conf, &[]));
    let port = wait_http_addr(dir.path(), &mut child).port();
    wait_for(Duration::from_secs(10), "/readyz 200", || {
        (get(port, "/readyz").0 == 200).then_some(())
    });
    // A slowloris: half a request, then nothing. It is closed (header timeout), not kept.
    let mut slow = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    slow.write_all(b"GET /metrics HTTP/1.1\r\nHost: x\r\n")
        .unwrap();
    slow.set_read_timeout(Some(Duration::from_secs(60)))
        .unwrap();
    // 300 idle connections: those beyond the limit are closed at once.
    let mut idle: Vec<_> = (0..300)
        .map(|_| std::net::TcpStream::connect(("127.0.0.1", port)).unwrap())
        .collect();
    let started = Instant::now();
    assert!(
        closed_by_server(&mut slow),
        "the half-sent request was not closed in time"
    );
    assert!(
        started.elapsed() < Duration::from_secs(40),
        "closed only after {:?}",
        started.elapsed()
    );
    for s in &mut idle {
        s.set_read_timeout(Some(Duration::from_secs(60))).unwrap();
    }
    let closed = idle.iter_mut().map(closed_by_server).filter(|&c| c).count();
    assert_eq!(closed, 300, "every idle connection is closed in the end");
    let (_, metrics) = get(port, "/metrics");
    let refused = metric(&metrics, "firehose_relay_http_connections_rejected_total").unwrap_or(0.0);
    assert!(refused >= 200.0, "refused {refused}:\n{metrics}");
    assert_eq!(get(port, "/readyz").0, 200);
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(10)).success());
}

/// The relay's buffer directory of output `out`, and a chunk file the previous run left in it.
fn a_chunk_file(data: &Path) -> std::path::PathBuf {
    let chunks = data.join("buffer").join("chunks");
    let mut files: Vec<_> = walk(&chunks)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|e| e == "chunk"))
        .collect();
    files.sort();
    files
        .pop()
        .unwrap_or_else(|| panic!("no chunk file under {}", chunks.display()))
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let p = e.path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// A relay restarted on a backlog serves its endpoint while it recovers the buffers: /healthz
/// 200 (a liveness probe does not kill a pod replaying a large backlog), /readyz 503
/// "recovering", /metrics with `ready 0`, /status `phase: recovering`; then 200 once recovered,
/// and the backlog is delivered.
///
/// The recovery is held for as long as the test needs by a named pipe (FIFO) with a chunk
/// file's name next to the real chunks: recovery reads every staged chunk's file, and reading
/// the pipe waits until the test opens its other end, like a read from a very slow disk. A
/// backlog big enough to take long on every machine would make the test slow and still racy.
#[test]
fn the_endpoint_answers_while_the_buffers_recover_and_is_ready_after() {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out");
    let data = dir.path().join("data");
    // A file buffer that keeps what it staged at exit: the backlog of the next start.
    let conf = config(dir.path(), &out, "");
    let text = std::fs::read_to_string(&conf).unwrap();
    let text = text
        .replace("rate = 50\n", "rate = 50\nauto_increment_key = \"seq\"\n")
        .replace(
            "type = \"memory\"\nflush_interval = \"1s\"",
            "type = \"file\"\nflush_interval = \"1h\"\nflush_at_shutdown = false",
        );
    std::fs::write(&conf, &text).unwrap();
    let mut first = KillOnDrop(spawn_relay(&conf, &[]));
    wait_for_log(
        dir.path(),
        &mut first,
        "firehose-relay started",
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_secs(2));
    sigterm(&first);
    assert!(wait_exit(&mut first, Duration::from_secs(30)).success());
    let log = strip_ansi(&read_log(dir.path(), "stderr.log"));
    let records: u64 = log_field(&log, "source stopped", "source=gen", "records_in")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no records_in:\n{log}"));
    assert!(records > 0, "{log}");
    assert!(!out.exists(), "nothing delivered by the first run");

    // The slow part of the disk: a staged chunk whose read waits for the test.
    let real = a_chunk_file(&data);
    let last: u64 = u64::from_str_radix(real.file_stem().unwrap().to_str().unwrap(), 16).unwrap();
    let fifo = real.with_file_name(format!("{:016x}.chunk", last + 100));
    let made = std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap();
    assert!(made.success());

    let mut child = KillOnDrop(spawn_relay(&conf, &[]));
    let port = wait_http_addr(dir.path(), &mut child).port();
    let (code, body) = get(port, "/readyz");
    assert_eq!(
        (code, body.as_str()),
        (
            503,
            "not ready: recovering: the buffers are being recovered from data_dir\n"
        )
    );
    assert_eq!(get(port, "/healthz"), (200, "ok\n".to_owned()));
    let (code, metrics) = get(port, "/metrics");
    assert_eq!(code, 200);
    assert_eq!(
        metric(&metrics, "firehose_relay_ready "),
        Some(0.0),
        "{metrics}"
    );
    let (code, status) = get(port, "/status");
    assert_eq!(code, 200);
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["phase"], "recovering", "{status}");
    assert_eq!(status["ready"], false, "{status}");
    let log = strip_ansi(&read_log(dir.path(), "stderr.log"));
    assert!(!log.contains("buffer recovered from disk"), "{log}");

    // The disk answers (an empty file: a chunk created but never written, which recovery
    // removes); the relay finishes recovering and becomes ready.
    let release =
        std::thread::spawn(move || drop(std::fs::OpenOptions::new().write(true).open(fifo)));
    wait_for(
        Duration::from_secs(60),
        "/readyz 200 after recovery",
        || (get(port, "/readyz").0 == 200).then_some(()),
    );
    release.join().unwrap();
    let log = strip_ansi(&read_log(dir.path(), "stderr.log"));
    let listening = log.find("http endpoint listening").unwrap();
    let recovered = log
        .find("buffer recovered from disk")
        .unwrap_or_else(|| panic!("{log}"));
    assert!(listening < recovered, "{log}");
    assert_eq!(
        log_field(&log, "buffer recovered from disk", "output=out", "records").as_deref(),
        Some(records.to_string().as_str()),
        "{log}"
    );
    let (_, status) = get(port, "/status");
    let status: serde_json::Value = serde_json::from_str(&status).unwrap();
    assert_eq!(status["phase"], "ready", "{status}");

    // The backlog goes out: every record of the first run, once.
    let seen = wait_for(Duration::from_secs(30), "the backlog delivered", || {
        let text: String = walk(&out)
            .iter()
            .filter(|p| p.extension().is_some_and(|e| e == "ndjson"))
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect();
        let seen = common::relay_run::sequence_counts(text.lines().map(str::as_bytes));
        (seen.len() as u64 >= records).then_some(seen)
    });
    assert!(seen.keys().copied().eq(0..records), "{seen:?}");
    assert!(seen.values().all(|&n| n == 1), "{seen:?}");
    sigterm(&child);
    assert!(wait_exit(&mut child, Duration::from_secs(30)).success());
}
