//! `firehose-relay top` against a running relay under load: the plain table (`--once`, or
//! stdout not a terminal) shows the expected rows and plausible numbers, and the interactive
//! screen runs in a real terminal (tmux: start it, capture the pane, check the rows, press `q`,
//! check it exits 0).

mod common;

use std::net::{SocketAddr, TcpStream};
use std::path::Path;
use std::process::{Child, Command};
use std::time::Duration;

use common::fake_firehose::Fault;
use common::tmux::{self, Tmux};
use common::web_identity::WebIdentityAws;

/// A relay taking 1,000 records/s from a sample source into a Firehose output (web-identity
/// credentials from the fake STS, a few throttled calls), with an idle forward source and an
/// idle file output.
struct Loaded {
    child: Child,
    http: SocketAddr,
    _forward_client: TcpStream,
    _aws: WebIdentityAws,
    _dir: tempfile::TempDir,
}

impl Drop for Loaded {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn loaded_relay() -> Loaded {
    let dir = tempfile::tempdir().unwrap();
    let aws = WebIdentityAws::start(dir.path());
    aws.fh.push_faults([
        Fault::Error(400, "ThrottlingException"),
        Fault::Error(400, "ThrottlingException"),
    ]);
    let conf = common::write_config(
        dir.path(),
        &format!(
            r#"
data_dir = {data:?}
shutdown_timeout = "5s"
[http]
listen = "127.0.0.1:0"
[sources.gen]
type = "sample"
tag = "app.gen"
rate = 50
size = 20
[sources.fwd]
type = "forward"
listen = "127.0.0.1:0"
[outputs.fh]
type = "firehose"
match = "app.**"
# A throttled call fails its chunk's attempt, so the failures column has something to show.
retries_on_batch_request = 0
{aws}
[outputs.fh.buffer]
type = "memory"
flush_interval = "200ms"
retry_wait = "100ms"
[outputs.local]
type = "file"
match = "other.**"
path = {out:?}
"#,
            data = dir.path().join("data").display().to_string(),
            out = dir.path().join("out").display().to_string(),
            aws = aws.output_toml("fh"),
        ),
    );
    let mut child = common::spawn_relay(&conf, &[]);
    let http = common::wait_http_addr(dir.path(), &mut child);
    let forward = common::wait_forward_addr(dir.path(), &mut child, "fwd");
    let forward_client = TcpStream::connect(forward).unwrap();
    common::wait_for(Duration::from_secs(60), "deliveries to the fake", || {
        (aws.fh.accepted().len() > 1000).then_some(())
    });
    Loaded {
        child,
        http,
        _forward_client: forward_client,
        _aws: aws,
        _dir: dir,
    }
}

fn top(args: &[&str]) -> std::process::Output {
    Command::new(common::relay_bin())
        .arg("top")
        .args(args)
        .env_remove("RELAY_CONFIG")
        .output()
        .unwrap()
}

/// The cells of the table row that starts with `name` (cells are separated by two or more
/// spaces; the buffer bar and the credentials cell contain single spaces).
fn row(text: &str, name: &str) -> Vec<String> {
    let line = text
        .lines()
        .find(|l| l.starts_with(&format!("{name} ")))
        .unwrap_or_else(|| panic!("no row `{name}` in:\n{text}"));
    line.split("  ")
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_owned)
        .collect()
}

fn number(cell: &str) -> f64 {
    cell.parse()
        .unwrap_or_else(|_| panic!("`{cell}` is not a number"))
}

fn check_table(text: &str, http: SocketAddr) {
    assert!(
        text.starts_with(&format!("firehose-relay at http://{http}: ready\n")),
        "{text}"
    );
    assert!(
        text.contains("SOURCE  RECORDS/S  CONNECTIONS  RECORDS"),
        "{text}"
    );
    // The sample source sends 1,000 records/s; the machine may be slow, so the bounds are wide.
    let gen = row(text, "gen");
    assert!((200.0..5000.0).contains(&number(&gen[1])), "{gen:?}");
    assert_eq!(gen[2], "-", "a sample source has no connections");
    assert!(number(&gen[3]) > 1000.0, "{gen:?}");
    let fwd = row(text, "fwd");
    assert_eq!(fwd[1..], ["0.0", "1", "0"], "idle, one client connected");

    let fh = row(text, "fh");
    assert_eq!(fh.len(), 9, "{fh:?}");
    assert!(number(&fh[1]) > 200.0, "records in: {fh:?}");
    assert!(number(&fh[2]) > 200.0, "records delivered: {fh:?}");
    assert!(
        fh[3].starts_with("#") || fh[3].starts_with('.'),
        "bar: {fh:?}"
    );
    assert!(fh[3].contains('%'), "{fh:?}");
    assert!(fh[6].starts_with("throttled:"), "failures by class: {fh:?}");
    let pacing = number(&fh[7]);
    assert!(pacing > 0.0 && pacing <= 1.0, "{fh:?}");
    assert!(
        fh[8].starts_with("expires in ") && (fh[8].ends_with('m') || fh[8].ends_with('s')),
        "{fh:?}"
    );
    let local = row(text, "local");
    assert_eq!(local[1..3], ["0.0", "0.0"], "idle output: {local:?}");
    assert_eq!(
        local[7..],
        ["-", "-"],
        "no pacing, no credentials: {local:?}"
    );
}

#[test]
fn top_once_prints_the_rows_and_numbers_of_a_relay_under_load() {
    let relay = loaded_relay();
    let url = format!("http://{}", relay.http);
    let out = top(&["--once", "--interval", "2s", "--url", &url]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    check_table(&text, relay.http);

    // Without a terminal on stdout, the same plain table (here: a pipe).
    let out = top(&["--interval", "1s", "--url", &relay.http.to_string()]);
    assert!(out.status.success());
    check_table(&String::from_utf8_lossy(&out.stdout), relay.http);
}

#[test]
fn top_says_which_relay_it_cannot_reach() {
    let port = common::free_port();
    let out = top(&["--once", "--url", &format!("http://127.0.0.1:{port}")]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("cannot reach http://127.0.0.1:{port}/metrics")),
        "{err}"
    );
}

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok().filter(|s| !s.is_empty())
}

#[test]
fn top_runs_in_a_real_terminal_and_q_quits_with_status_0() {
    tmux::require();
    let relay = loaded_relay();
    let dir = tempfile::tempdir().unwrap();
    let status_file = dir.path().join("status");
    let session = Tmux::start(
        "top",
        &format!(
            "{bin} top --url http://{http}; echo $? > {status}; sleep 60",
            bin = common::relay_bin().display(),
            http = relay.http,
            status = status_file.display(),
        ),
    );

    // Rates appear from the second refresh on.
    let screen = common::wait_for(Duration::from_secs(30), "top's screen with rates", || {
        let screen = session.capture();
        let gen = screen.lines().find(|l| l.contains("│gen "))?;
        gen.split_whitespace()
            .nth(1)
            .is_some_and(|r| r.parse::<f64>().is_ok())
            .then_some(screen)
    });
    for expected in [
        "firehose-relay top",
        "ready",
        "(q quits)",
        "Sources",
        "Outputs",
        "RECORDS/S",
        "CREDENTIALS",
        "│fwd ",
        "│fh ",
        "│local ",
        "expires in",
        "throttled:",
    ] {
        assert!(
            screen.contains(expected),
            "`{expected}` not on screen:\n{screen}"
        );
    }
    assert!(
        screen.contains('█') || screen.contains('░'),
        "fill bar:\n{screen}"
    );
    assert!(read(&status_file).is_none(), "still running");

    session.send_keys("q");
    let status = common::wait_for(Duration::from_secs(10), "top to exit after q", || {
        read(&status_file)
    });
    assert_eq!(status.trim(), "0", "{}", session.capture());
}
