//! The core pipeline through the real binary: quick start, `check`, env overrides, SIGTERM.

mod common;

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use common::*;

/// `firehose-relay check --config FILE` with extra environment.
fn check(conf: &Path, env: &[(&str, &str)]) -> std::process::Output {
    Command::new(relay_bin())
        .args(["check", "--config"])
        .arg(conf)
        .env_remove("RELAY_CONFIG")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

/// Every record in every NDJSON file under `dir`.
fn records_in(dir: &Path) -> Vec<serde_json::Value> {
    let mut out = Vec::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut paths: Vec<_> = entries.filter_map(|e| e.ok()).map(|e| e.path()).collect();
    paths.sort();
    for p in paths {
        if p.extension().is_some_and(|e| e == "ndjson") {
            for line in std::fs::read_to_string(&p).unwrap().lines() {
                out.push(
                    serde_json::from_str(line).unwrap_or_else(|e| panic!("{p:?}: {e}: {line}")),
                );
            }
        }
    }
    out
}

#[test]
fn quickstart_writes_the_sample_records_to_files_and_prints_them() {
    let dir = tempfile::tempdir().unwrap();
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/quickstart.toml");
    let mut child = Command::new(relay_bin())
        .args(["run", "--config"])
        .arg(&conf)
        .current_dir(dir.path())
        .env_remove("RELAY_CONFIG")
        .env("RELAY_HTTP__LISTEN", "127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let out_dir = dir.path().join("data/out");
    // flush_interval is 5s in the quick start: wait for the first file to appear.
    wait_for(
        Duration::from_secs(15),
        "a file from the quick start",
        || (!records_in(&out_dir).is_empty()).then_some(()),
    );
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(status.success(), "exit status {status:?}");
    let mut stdout = String::new();
    use std::io::Read;
    child
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut stdout)
        .unwrap();
    let mut log = String::new();
    child
        .stderr
        .take()
        .unwrap()
        .read_to_string(&mut log)
        .unwrap();
    let log = strip_ansi(&log);
    let printed: Vec<&str> = stdout.lines().collect();
    let stored = records_in(&out_dir);
    let generated: usize = log_field(&log, "source stopped", "source=sample", "records_in")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no records_in at shutdown:\n{log}"));
    assert_eq!(
        stored.len(),
        generated,
        "every generated record was stored, the last ones too (flush at shutdown):\n{log}"
    );
    assert!(stored
        .iter()
        .all(|r| r == &serde_json::json!({"message": "sample"})));
    assert_eq!(
        printed.len(),
        stored.len(),
        "every printed event was stored (flush at shutdown)"
    );
    for line in printed {
        // 2020-10-15 08:21:18.081312494 +0000 raw.sample: {"message":"sample"}
        let (stamp, rest) = line.split_at(35);
        assert!(stamp.ends_with(" +0000"), "{line}");
        assert_eq!(rest, " raw.sample: {\"message\":\"sample\"}");
    }
}

#[test]
fn check_rejects_a_misspelled_key_with_exit_status_2() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(
        dir.path(),
        r#"
[sources.s]
type = "sample"
[outputs.o]
type = "stdout"
[outputs.o.buffer]
flush_intervall = "5s"
"#,
    );
    let out = check(&conf, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flush_intervall"), "{err}");
    assert!(err.contains("outputs.o.buffer"), "{err}");
    assert!(err.contains(&conf.display().to_string()), "{err}");
}

#[test]
fn check_prints_the_effective_config_and_run_also_exits_2_on_errors() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(
        dir.path(),
        "[sources.s]\ntype = \"sample\"\n[outputs.o]\ntype = \"stdout\"\n",
    );
    let out = check(
        &conf,
        &[("RELAY_OUTPUTS__O__BUFFER__FLUSH_THREAD_COUNT", "3")],
    );
    assert!(out.status.success());
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("flush_thread_count = 3"), "{text}");
    let out = Command::new(relay_bin())
        .args(["run"])
        .env("RELAY_CONFIG", &conf)
        .env("RELAY_OUTPUTS__O__BUFFER__FLUSH_THREAD_COUNT", "0")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr)
        .contains("RELAY_OUTPUTS__O__BUFFER__FLUSH_THREAD_COUNT"));
}

fn interval_config(dir: &Path) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            r#"
data_dir = "{data}"
[http]
listen = ""
[sources.s]
type = "sample"
tag = "t"
rate = 20
auto_increment_key = "n"
[outputs.o]
type = "file"
path = "{out}"
[outputs.o.buffer]
type = "memory"
flush_interval = "60s"
"#,
            data = dir.join("data").display(),
            out = dir.join("out").display()
        ),
    )
}

#[test]
fn an_environment_variable_changes_flush_interval() {
    let dir = tempfile::tempdir().unwrap();
    let conf = interval_config(dir.path());
    let mut child = spawn_relay(&conf, &[("RELAY_OUTPUTS__O__BUFFER__FLUSH_INTERVAL", "1s")]);
    // With the file's 60 s nothing would be written for a minute; with 1 s files appear.
    wait_for(Duration::from_secs(8), "a flushed file", || {
        (!records_in(&dir.path().join("out")).is_empty()).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
}

#[test]
fn sigterm_flushes_staged_records_before_exit() {
    let dir = tempfile::tempdir().unwrap();
    let conf = interval_config(dir.path());
    let mut child = spawn_relay(&conf, &[]);
    wait_for_log(
        dir.path(),
        &mut child,
        "firehose-relay started",
        Duration::from_secs(60),
    );
    // Let some records be staged (20/s); how many does not matter, the relay counts them.
    std::thread::sleep(Duration::from_millis(1000));
    assert!(
        records_in(&dir.path().join("out")).is_empty(),
        "nothing flushed before 60 s"
    );
    sigterm(&child);
    let status = wait_exit(&mut child, Duration::from_secs(20));
    assert!(
        status.success(),
        "{status:?}\n{}",
        read_log(dir.path(), "stderr.log")
    );
    let log = strip_ansi(&read_log(dir.path(), "stderr.log"));
    let generated: u64 = log_field(&log, "source stopped", "source=s", "records_in")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no records_in at shutdown:\n{log}"));
    assert!(generated > 0, "{log}");
    let stored = records_in(&dir.path().join("out"));
    let ids: Vec<u64> = stored.iter().map(|r| r["n"].as_u64().unwrap()).collect();
    let expected: Vec<u64> = (0..generated).collect();
    assert_eq!(
        ids, expected,
        "every emitted record, in order, none missing"
    );
    // The last line says what the shutdown delivered and that nothing is left.
    assert!(
        log.contains(&format!(
            "stopped: {generated} records delivered during shutdown, nothing left in the buffers"
        )),
        "{log}"
    );
}

fn file_buffer_config(dir: &Path, buffer: &str) -> std::path::PathBuf {
    write_config(
        dir,
        &format!(
            r#"
data_dir = "{data}"
[http]
listen = ""
[sources.s]
type = "sample"
tag = "t"
rate = 20
auto_increment_key = "n"
[outputs.o]
type = "file"
path = "{out}"
[outputs.o.buffer]
type = "file"
{buffer}
"#,
            data = dir.join("data").display(),
            out = dir.join("out").display()
        ),
    )
}

/// Starts the relay, lets it stage records for a second, stops it with `signal` and returns
/// its log and how many records the source generated.
fn run_then_signal(dir: &Path, conf: &Path, signal: &str) -> (String, u64) {
    let mut child = KillOnDrop(spawn_relay(conf, &[]));
    wait_for_log(
        dir,
        &mut child,
        "firehose-relay started",
        Duration::from_secs(60),
    );
    std::thread::sleep(Duration::from_millis(1000));
    let ok = Command::new("kill")
        .args([signal, &child.id().to_string()])
        .status()
        .unwrap()
        .success();
    assert!(ok);
    let status = wait_exit(&mut child, Duration::from_secs(30));
    let log = strip_ansi(&read_log(dir, "stderr.log"));
    assert!(status.success(), "{status:?}\n{log}");
    let generated = log_field(&log, "source stopped", "source=s", "records_in")
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no records_in at shutdown:\n{log}"));
    assert!(generated > 0, "{log}");
    (log, generated)
}

fn stored_ids(dir: &Path) -> Vec<u64> {
    let mut ids: Vec<u64> = records_in(&dir.join("out"))
        .iter()
        .map(|r| r["n"].as_u64().unwrap())
        .collect();
    ids.sort_unstable();
    ids
}

#[test]
fn sigint_stops_as_gracefully_as_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    let conf = file_buffer_config(dir.path(), "flush_interval = \"60s\"");
    let (log, generated) = run_then_signal(dir.path(), &conf, "-INT");
    assert!(log.contains("SIGINT received"), "{log}");
    assert_eq!(stored_ids(dir.path()), (0..generated).collect::<Vec<_>>());
}

#[test]
fn without_flush_at_shutdown_staged_records_stay_on_disk_for_the_next_start() {
    let dir = tempfile::tempdir().unwrap();
    let conf = file_buffer_config(
        dir.path(),
        "flush_interval = \"60s\"\nflush_at_shutdown = false",
    );
    let (log, generated) = run_then_signal(dir.path(), &conf, "-TERM");
    assert!(stored_ids(dir.path()).is_empty(), "nothing flushed at exit");
    assert!(log.contains("records left in the buffer at exit"), "{log}");
    assert!(
        log.contains(&format!(
            "stopped: 0 records delivered during shutdown, {generated} records left on disk in {}",
            dir.path().join("data/buffer").display()
        )),
        "{log}"
    );
    // The next start recovers and delivers them. It has no sample source (a new one would
    // count from 0 again and could stand in for lost records): a forward source nobody uses.
    let conf = file_buffer_config(dir.path(), "flush_interval = \"1s\"");
    let text = std::fs::read_to_string(&conf).unwrap().replace(
        "type = \"sample\"\ntag = \"t\"\nrate = 20\nauto_increment_key = \"n\"",
        "type = \"forward\"\nlisten = \"127.0.0.1:0\"",
    );
    assert!(text.contains("forward"));
    std::fs::write(&conf, text).unwrap();
    let _relay = KillOnDrop(spawn_relay(&conf, &[]));
    wait_for(Duration::from_secs(60), "the recovered records", || {
        (stored_ids(dir.path()) == (0..generated).collect::<Vec<_>>()).then_some(())
    });
}

#[test]
fn lazy_flush_mode_delivers_only_full_chunks_until_shutdown() {
    let dir = tempfile::tempdir().unwrap();
    let conf = file_buffer_config(
        dir.path(),
        "flush_mode = \"lazy\"\nflush_interval = \"100ms\"\nchunk_limit_records = 10\nflush_thread_interval = \"20ms\"",
    );
    let _relay = KillOnDrop(spawn_relay(&conf, &[]));
    // Files appear as chunks fill (20 records/s, 10 per chunk), each holding a full chunk,
    // although flush_interval would have flushed partial ones every 100 ms.
    let files = wait_for(Duration::from_secs(60), "two full chunks", || {
        let files: Vec<_> = std::fs::read_dir(dir.path().join("out"))
            .ok()?
            .filter_map(|e| e.ok())
            .map(|e| e.path())
            .filter(|p| p.extension().is_some_and(|x| x == "ndjson"))
            .collect();
        (files.len() >= 2).then_some(files)
    });
    for f in files {
        let lines = std::fs::read_to_string(&f).unwrap().lines().count();
        assert_eq!(lines, 10, "{} holds a full chunk", f.display());
    }
}

#[test]
fn secrets_never_appear_in_check_the_logs_or_status() {
    let dir = tempfile::tempdir().unwrap();
    let secrets = [
        "k3y-s3cret",
        "pw-s3cret",
        "proxy-s3cret",
        "AKIDS3CRET",
        "sk-s3cret",
    ];
    let text = format!(
        r#"
data_dir = "{data}"
[http]
listen = "127.0.0.1:0"
[sources.fwd]
type = "forward"
listen = "127.0.0.1:0"
[sources.fwd.security]
shared_key = "k3y-s3cret"
users = [{{ username = "alice", password = "pw-s3cret" }}]
[outputs.fh]
type = "firehose"
delivery_stream = "logs"
region = "eu-west-1"
endpoint_url = "http://127.0.0.1:9"
proxy_url = "http://proxyuser:proxy-s3cret@127.0.0.1:9"
[outputs.fh.credentials]
type = "static"
access_key_id = "AKIDS3CRET"
secret_access_key = "sk-s3cret"
[outputs.fh.buffer]
type = "memory"
"#,
        data = dir.path().join("data").display()
    );
    let conf = write_config(dir.path(), &text);
    let out = check(&conf, &[]);
    let printed =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{printed}");
    assert!(
        printed.contains("proxy_url = \"http://<redacted>@127.0.0.1:9\""),
        "{printed}"
    );
    let mut child = KillOnDrop(spawn_relay(&conf, &[("RUST_LOG", "debug")]));
    let http = wait_http_addr(dir.path(), &mut child).port();
    // The endpoint answers while the buffers recover; wait for the running relay's document.
    let status = wait_for(Duration::from_secs(30), "/status of a ready relay", || {
        let (code, body) = http_get(http, "/status");
        (code == 200 && body.contains("\"phase\":\"ready\"")).then_some(body)
    });
    sigterm(&child);
    wait_exit(&mut child, Duration::from_secs(90));
    let log = read_log(dir.path(), "stderr.log") + &read_log(dir.path(), "stdout.log");
    // A wrong type for a secret is an error that does not quote it.
    let numeric = write_config(
        dir.path(),
        &text.replace("shared_key = \"k3y-s3cret\"", "shared_key = 731942"),
    );
    let out = check(&numeric, &[]);
    let error = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{error}");
    assert!(!error.contains("731942"), "{error}");
    // The same for a user's password.
    let numeric = write_config(
        dir.path(),
        &text.replace("password = \"pw-s3cret\"", "password = 582317"),
    );
    let out = check(&numeric, &[]);
    let error = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(2), "{error}");
    assert!(!error.contains("582317"), "{error}");
    for s in secrets {
        for (what, text) in [("check", &printed), ("log", &log), ("/status", &status)] {
            assert!(!text.contains(s), "{s} in {what}:\n{text}");
        }
    }
}

/// The relay with `args`, no config from the environment and `env` added.
fn relay_cmd(args: &[&str], env: &[(&str, &str)]) -> std::process::Output {
    Command::new(relay_bin())
        .args(args)
        .env_remove("RELAY_CONFIG")
        .env_remove("RELAY_DATA_DIR")
        .envs(env.iter().copied())
        .output()
        .unwrap()
}

#[test]
fn unknown_keys_and_types_get_a_plain_list_and_the_nearest_valid_name() {
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(
        dir.path(),
        "[sources.s]\ntype = \"sample\"\n[outputs.o]\ntype = \"file\"\npath = \"/tmp/x\"\n\
         [outputs.o.buffer]\nflush_intervall = \"5s\"\n",
    );
    let out = check(&conf, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown key `flush_intervall`, did you mean `flush_interval`?"),
        "{err}"
    );
    // The valid keys as a plain list: no quotes inside quotes.
    assert!(err.contains("(valid: type, chunk_limit_size, "), "{err}");
    assert!(!err.contains("one of"), "{err}");
    assert!(!err.contains("``"), "{err}");
    // A misspelled section in the environment: the variable and the nearest key.
    let out = check(&conf, &[("RELAY_OUTPUTS__O__BUFER__FLUSH_INTERVAL", "5s")]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("RELAY_OUTPUTS__O"), "{err}");
    assert!(
        err.contains("unknown key `bufer`, did you mean `buffer`?"),
        "{err}"
    );
    // A misspelled type; and a value of an enumerated key.
    let conf = write_config(
        dir.path(),
        "[sources.s]\ntype = \"sample\"\n[outputs.o]\ntype = \"firehos\"\n\
         [outputs.o.buffer]\noverflow_action = \"blok\"\n",
    );
    let err = String::from_utf8_lossy(&check(&conf, &[]).stderr).into_owned();
    assert!(
        err.contains(
            "unknown type `firehos`, did you mean `firehose`? (valid: firehose, kinesis_streams, kinesis_streams_aggregated, file, stdout)"
        ),
        "{err}"
    );
    let conf = write_config(
        dir.path(),
        "[sources.s]\ntype = \"sample\"\n[outputs.o]\ntype = \"stdout\"\n\
         [outputs.o.buffer]\noverflow_action = \"blok\"\n",
    );
    let err = String::from_utf8_lossy(&check(&conf, &[]).stderr).into_owned();
    assert!(
        err.contains("unknown value `blok`, did you mean `block`?"),
        "{err}"
    );
    // Nothing close: no guess, just the list.
    let conf = write_config(
        dir.path(),
        "[sources.s]\ntype = \"sample\"\nbananas = 3\n[outputs.o]\ntype = \"stdout\"\n",
    );
    let err = String::from_utf8_lossy(&check(&conf, &[]).stderr).into_owned();
    assert!(err.contains("unknown key `bananas` (valid: "), "{err}");
}

#[test]
fn without_a_config_file_the_error_says_how_to_give_one() {
    for args in [&["check"][..], &["run"], &["drain"]] {
        let out = relay_cmd(args, &[]);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("--config FILE"), "{args:?}: {err}");
        assert!(err.contains("$RELAY_CONFIG"), "{args:?}: {err}");
        assert!(!err.contains("firehose_relay::"), "{args:?}: {err}");
    }
    // A file without sources: the key, and no internal type name as its origin.
    let dir = tempfile::tempdir().unwrap();
    let conf = write_config(dir.path(), "[outputs.o]\ntype = \"stdout\"\n");
    let err = String::from_utf8_lossy(&check(&conf, &[]).stderr).into_owned();
    assert!(
        err.contains("`sources` (built-in default): at least one source is required"),
        "{err}"
    );
}

#[test]
fn buffer_and_dead_letter_tools_say_where_their_data_dir_comes_from() {
    let default = "/var/lib/firehose-relay";
    // Nothing given: the default is used and the message says what would set another.
    let out = relay_cmd(&["buffer", "stats"], &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("using the default data directory {default}")),
        "{err}"
    );
    for hint in ["--data-dir DIR", "$RELAY_DATA_DIR", "--config FILE"] {
        assert!(err.contains(hint), "{hint}: {err}");
    }
    assert!(!err.contains("firehose_relay::"), "{err}");
    if !Path::new(default).join("buffer/db").exists() {
        assert_eq!(out.status.code(), Some(1), "{err}");
    }

    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let missing_s = missing.to_str().unwrap();
    // --data-dir, $RELAY_DATA_DIR and a config's data_dir each name themselves; a missing
    // directory is an error and is not created.
    for args in [
        &["buffer", "stats"][..],
        &["buffer", "dump"],
        &["dead-letter", "list"],
        &["dead-letter", "replay"],
    ] {
        let mut with_flag = args.to_vec();
        with_flag.extend(["--data-dir", missing_s]);
        let out = relay_cmd(&with_flag, &[]);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("no data directory {missing_s} (from --data-dir)")),
            "{args:?}: {err}"
        );
        let out = relay_cmd(args, &[("RELAY_DATA_DIR", missing_s)]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!(
                "no data directory {missing_s} (from $RELAY_DATA_DIR)"
            )),
            "{args:?}: {err}"
        );
        assert!(!missing.exists(), "{args:?} created {missing_s}");
    }
    let conf = write_config(
        dir.path(),
        &format!(
            "data_dir = \"{missing_s}\"\n[sources.s]\ntype = \"sample\"\n\
             [outputs.o]\ntype = \"stdout\"\n"
        ),
    );
    let out = relay_cmd(
        &["buffer", "stats", "--config", conf.to_str().unwrap()],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "no data directory {missing_s} (the data_dir of {})",
            conf.display()
        )),
        "{err}"
    );
    // A directory without a buffer database.
    let out = relay_cmd(
        &[
            "buffer",
            "stats",
            "--data-dir",
            dir.path().to_str().unwrap(),
        ],
        &[],
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "no buffer database in {} (from --data-dir)",
            dir.path().display()
        )),
        "{err}"
    );
}

#[test]
fn drain_names_a_missing_data_dir_instead_of_finding_nothing_to_drain() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing");
    let conf = write_config(
        dir.path(),
        &format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"\"\n[sources.s]\ntype = \"sample\"\n\
             [outputs.o]\ntype = \"file\"\npath = \"{}\"\n",
            missing.display(),
            dir.path().join("out").display()
        ),
    );
    let out = relay_cmd(&["drain", "--config", conf.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "no data directory {} to drain (it is the config's data_dir, or $RELAY_DATA_DIR",
            missing.display()
        )),
        "{err}"
    );
    assert!(!missing.exists(), "drain created {}", missing.display());
}

#[test]
fn run_names_where_an_unusable_data_dir_comes_from() {
    let dir = tempfile::tempdir().unwrap();
    // A file where the directory should be: it cannot be created.
    let blocker = dir.path().join("file");
    std::fs::write(&blocker, "x").unwrap();
    let data = blocker.join("data");
    let conf = write_config(
        dir.path(),
        &format!(
            "data_dir = \"{}\"\n[http]\nlisten = \"\"\n[sources.s]\ntype = \"sample\"\n\
             [outputs.o]\ntype = \"stdout\"\n",
            data.display()
        ),
    );
    let out = relay_cmd(&["run", "--config", conf.to_str().unwrap()], &[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "cannot create data_dir {} (set it with `data_dir` in the config or $RELAY_DATA_DIR; \
             default /var/lib/firehose-relay)",
            data.display()
        )),
        "{err}"
    );
}

#[test]
fn check_no_credentials_validates_the_production_config_without_the_pods_credentials() {
    let conf = Path::new(env!("CARGO_MANIFEST_DIR")).join("conf/relay.toml");
    let check_prod = |flag: Option<&str>, env: &[(&str, &str)]| {
        let mut cmd = Command::new(relay_bin());
        cmd.args(["check", "--config"]).arg(&conf);
        cmd.args(flag);
        for var in [
            "RELAY_CONFIG",
            "AWS_ROLE_ARN",
            "AWS_WEB_IDENTITY_TOKEN_FILE",
            "AWS_REGION",
            "FIREHOSE_DELIVERY_STREAM",
        ] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied()).output().unwrap()
    };
    // Without the pod's variables a plain check fails on them...
    let out = check_prod(None, &[]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("AWS_ROLE_ARN"), "{err}");
    // ...and --no-credentials checks the rest.
    let out = check_prod(Some("--no-credentials"), &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}\n{text}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(text.contains("role_arn = \"${AWS_ROLE_ARN}\""), "{text}");
    assert!(
        text.contains("delivery_stream = \"fluentd-streams\""),
        "{text}"
    );
    assert!(
        text.contains("# --no-credentials: the credentials' role_arn, web_identity_token_file"),
        "{text}"
    );
    // What is not credentials is still checked.
    let out = check_prod(
        Some("--no-credentials"),
        &[("RELAY_OUTPUTS__FIREHOSE__BUFFER__FLUSH_THREAD_COUNT", "0")],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("flush_thread_count"), "{err}");
    assert!(!err.contains("AWS_ROLE_ARN"), "{err}");
}

/// Runs the relay on a small config for about two seconds, with stderr on a terminal (a pty
/// from `script`), and returns what it wrote there.
fn log_on_a_terminal(env: &[(&str, &str)]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let conf = interval_config(dir.path());
    let command = format!(
        "timeout -s TERM 2 {} run --config {}",
        relay_bin().display(),
        conf.display()
    );
    let out = Command::new("script")
        .args(["-q", "-e", "-c", &command, "/dev/null"])
        .env_remove("RELAY_CONFIG")
        .env_remove("NO_COLOR")
        .env("RUST_LOG", "info")
        .envs(env.iter().copied())
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run `script` (util-linux) to give the relay a terminal");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn logs_are_coloured_only_on_a_terminal_and_never_with_no_color() {
    let tty = log_on_a_terminal(&[]);
    assert!(tty.contains("firehose-relay started"), "{tty}");
    assert!(tty.contains("\u{1b}["), "colours on a terminal:\n{tty}");
    let plain = log_on_a_terminal(&[("NO_COLOR", "1")]);
    assert!(plain.contains("firehose-relay started"), "{plain}");
    assert!(!plain.contains('\u{1b}'), "NO_COLOR=1:\n{plain}");
    // Not a terminal (a file, as under kubectl logs or journald): plain.
    let dir = tempfile::tempdir().unwrap();
    let conf = interval_config(dir.path());
    let (log, _) = run_then_signal(dir.path(), &conf, "-TERM");
    let raw = read_log(dir.path(), "stderr.log");
    assert!(log.contains("firehose-relay started"), "{log}");
    assert!(!raw.contains('\u{1b}'), "{raw}");
}
