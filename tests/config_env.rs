//! `RELAY_*` environment variables through the real binary: those that address configuration
//! keys are configuration (a misspelled key is still an error naming the variable); the rest
//! belong to someone else — Kubernetes' service links for a Service named `relay`, a wrapper
//! script's `RELAY_BIN` — and must not stop the relay.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;

/// What Kubernetes injects into every pod of a namespace that has a Service named `relay`
/// (ports 24224 and 24231), plus a wrapper script's variable.
const NOT_OURS: &[(&str, &str)] = &[
    ("RELAY_SERVICE_HOST", "10.0.0.1"),
    ("RELAY_SERVICE_PORT", "24224"),
    ("RELAY_SERVICE_PORT_FORWARD", "24224"),
    ("RELAY_PORT", "tcp://10.0.0.1:24224"),
    ("RELAY_PORT_24224_TCP", "tcp://10.0.0.1:24224"),
    ("RELAY_PORT_24224_TCP_PROTO", "tcp"),
    ("RELAY_PORT_24224_TCP_PORT", "24224"),
    ("RELAY_PORT_24224_TCP_ADDR", "10.0.0.1"),
    ("RELAY_PORT_24231_TCP_ADDR", "10.0.0.1"),
    ("RELAY_BIN", "/usr/local/bin/firehose-relay"),
];

/// A sample source feeding a file output named `firehose` (so that
/// `RELAY_OUTPUTS__FIREHOSE__...` addresses a real output).
fn config(dir: &Path) -> PathBuf {
    write_config(
        dir,
        &format!(
            r#"
data_dir = {data:?}
shutdown_timeout = "5s"
[http]
listen = "127.0.0.1:0"
[sources.gen]
type = "sample"
tag = "app"
rate = 20
[outputs.firehose]
type = "file"
path = {out:?}
[outputs.firehose.buffer]
type = "memory"
flush_interval = "300ms"
"#,
            data = dir.join("data").display().to_string(),
            out = dir.join("out").display().to_string(),
        ),
    )
}

fn delivered_files(dir: &Path) -> usize {
    std::fs::read_dir(dir.join("out"))
        .map(|d| d.count())
        .unwrap_or(0)
}

#[test]
fn service_link_and_wrapper_variables_do_not_stop_the_relay() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path());
    let mut env = NOT_OURS.to_vec();
    // Ours, next to theirs: still applied.
    env.push(("RELAY_OUTPUTS__FIREHOSE__BUFFER__FLUSH_INTERVAL", "200ms"));
    env.push(("RUST_LOG", "debug"));
    let mut child = spawn_relay(&conf, &env);
    wait_for(Duration::from_secs(20), "records delivered", || {
        if let Some(status) = child.try_wait().unwrap() {
            panic!(
                "the relay exited with {status}:\n{}",
                read_log(dir.path(), "stderr.log")
            );
        }
        (delivered_files(dir.path()) > 0).then_some(())
    });
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    let log = read_log(dir.path(), "stderr.log");
    assert!(status.success(), "{status}\n{log}");
    // Listed once, at debug level, so whoever wonders can see what was left alone.
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("not configuration"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(lines[0].contains("DEBUG"), "{}", lines[0]);
    for (name, _) in NOT_OURS {
        assert!(lines[0].contains(name), "{name} in {}", lines[0]);
    }
}

#[test]
fn check_shows_the_variables_it_leaves_alone() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path());
    let out = Command::new(relay_bin())
        .args(["check", "--config"])
        .arg(&conf)
        .env_remove("RELAY_CONFIG")
        .envs(NOT_OURS.iter().copied())
        .env("RELAY_OUTPUTS__FIREHOSE__BUFFER__FLUSH_INTERVAL", "2s")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("flush_interval = \"2s\""), "{stdout}");
    let note = stdout
        .lines()
        .find(|l| l.contains("not configuration"))
        .unwrap_or_else(|| panic!("no note about ignored variables:\n{stdout}"));
    assert!(note.starts_with('#'), "a TOML comment: {note}");
    for (name, _) in NOT_OURS {
        assert!(note.contains(name), "{name} in {note}");
    }
    assert!(
        !note.contains("RELAY_OUTPUTS__"),
        "a variable that is configuration is not listed as ignored: {note}"
    );
    assert!(
        !stdout.contains("tcp://10.0.0.1"),
        "values are not printed, only names:\n{stdout}"
    );
}

#[test]
fn a_misspelled_key_under_a_known_section_is_still_an_error_naming_the_variable() {
    let dir = tempfile::tempdir().unwrap();
    let conf = config(dir.path());
    for subcommand in ["run", "check"] {
        let out = Command::new(relay_bin())
            .arg(subcommand)
            .arg("--config")
            .arg(&conf)
            .env_remove("RELAY_CONFIG")
            .envs(NOT_OURS.iter().copied())
            .env("RELAY_OUTPUTS__FIREHOSE__BUFER__FLUSH_INTERVAL", "5s")
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{subcommand}: {stderr}");
        assert!(
            stderr.contains("RELAY_OUTPUTS__FIREHOSE__BUFER"),
            "{subcommand}: {stderr}"
        );
        assert!(stderr.contains("bufer"), "{subcommand}: {stderr}");
    }
}
