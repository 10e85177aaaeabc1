//! Running the relay on a fluent.conf (issue 18), through the real binary: each fixture under
//! `tests/fluentd/` converts (or is refused with the expected report), passes `check`, and runs:
//! events from its sample source and from a real forward client (fluent-logger, or the
//! shared-key handshake) reach the fake Firehose under the stream names the fluent.conf gives,
//! signed with keys the fake STS issued for the web-identity token.

mod common;

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::Arc;
use std::time::Duration;

use common::fake_firehose::FakeFirehose;
use common::fake_sts::FakeSts;
use common::KillOnDrop;

const ROLE_ARN: &str = "arn:aws:iam::123456789012:role/fluentd";
const SHARED_KEY: &str = "fixture-shared-key";

/// A copy of fixture `name` in a fresh directory (the relay writes its logs next to the config).
fn fixture(name: &str) -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let from = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fluentd")
        .join(name);
    copy_dir(&from, &tmp.path().join(name));
    let conf = tmp.path().join(name).join("fluent.conf");
    (tmp, conf)
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// `firehose-relay ARGS` in `dir` with `env`.
fn relay_cmd(dir: &Path, args: &[&str], env: &[(String, String)]) -> Output {
    let mut cmd = Command::new(common::relay_bin());
    cmd.current_dir(dir).args(args).env_remove("RELAY_CONFIG");
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("run firehose-relay")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// The fake STS and Firehose, with the given streams, and the projected token.
struct Aws {
    sts: Arc<FakeSts>,
    fh: FakeFirehose,
    token: PathBuf,
}

impl Aws {
    fn start(dir: &Path, streams: &[&str]) -> Aws {
        let sts = Arc::new(FakeSts::start(Duration::from_secs(3600)));
        let fh = FakeFirehose::http();
        for s in streams {
            fh.create_stream(s);
        }
        fh.trust_keys_from(sts.key_lookup());
        let token = dir.join("token");
        std::fs::write(&token, "header.payload.signature").unwrap();
        Aws { sts, fh, token }
    }

    /// What a pod with IRSA has, plus the fakes' endpoints, a data directory in `dir` and
    /// ports chosen by the system.
    fn env(&self, dir: &Path) -> Vec<(String, String)> {
        [
            ("AWS_ROLE_ARN", ROLE_ARN.to_owned()),
            (
                "AWS_WEB_IDENTITY_TOKEN_FILE",
                self.token.display().to_string(),
            ),
            ("AWS_ENDPOINT_URL_STS", self.sts.url.clone()),
            ("AWS_ENDPOINT_URL_FIREHOSE", self.fh.url.clone()),
            ("RELAY_DATA_DIR", dir.join("data").display().to_string()),
            ("RELAY_HTTP__LISTEN", "127.0.0.1:0".to_owned()),
            ("FORWARD_PORT", "0".to_owned()),
            ("FLUENT_SHARED_KEY", SHARED_KEY.to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// Records that arrived per stream, as text.
    fn records(&self) -> Vec<(String, String)> {
        self.fh
            .calls()
            .into_iter()
            .flat_map(|c| {
                let stream = c.stream.clone();
                c.records
                    .into_iter()
                    .zip(c.accepted)
                    .filter(|(_, ok)| *ok)
                    .map(move |(r, _)| (stream.clone(), text(&r)))
            })
            .collect()
    }

    /// Every call was signed with a key the fake STS issued for our role and token, with
    /// the session name of the fluent.conf.
    fn assert_signed_with_web_identity(&self, session_name: &str) {
        let issued = self.sts.issued();
        assert!(!issued.is_empty(), "the relay never called STS");
        for i in &issued {
            assert_eq!(i.role_arn, ROLE_ARN);
            assert_eq!(i.token, "header.payload.signature");
            assert_eq!(i.session_name, session_name);
        }
        let keys: BTreeSet<String> = issued.iter().map(|i| i.access_key.clone()).collect();
        let calls = self.fh.calls();
        assert!(!calls.is_empty());
        for c in &calls {
            let key = c.access_key.clone().unwrap_or_default();
            assert!(
                keys.contains(&key),
                "call signed with {key}, not an STS key"
            );
        }
        assert!(self.fh.refusals().is_empty(), "{:?}", self.fh.refusals());
    }
}

/// Converts, checks and starts the relay on `conf`; returns the running relay.
fn convert_check_and_start(conf: &Path, env: &[(String, String)]) -> KillOnDrop {
    let dir = conf.parent().unwrap();
    let out = relay_cmd(dir, &["convert", "fluent.conf", "-o", "relay.toml"], env);
    assert_eq!(
        out.status.code(),
        Some(0),
        "convert:\n{}",
        text(&out.stderr)
    );
    let toml = std::fs::read_to_string(dir.join("relay.toml")).unwrap();
    assert!(toml.contains("\n# from "), "{toml}");
    // check accepts the fluent.conf itself and its conversion, with the same settings.
    let fluent = relay_cmd(dir, &["check", "--config", "fluent.conf"], env);
    assert!(fluent.status.success(), "check:\n{}", text(&fluent.stderr));
    let converted = relay_cmd(dir, &["check", "--config", "relay.toml"], env);
    assert!(
        converted.status.success(),
        "check:\n{}",
        text(&converted.stderr)
    );
    assert_eq!(text(&fluent.stdout), text(&converted.stdout));

    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    KillOnDrop(common::spawn_relay(conf, &env))
}

fn forward_client(args: &[&str]) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/forward_client.py");
    let out = Command::new(common::python())
        .arg(script)
        .args(args)
        .output()
        .expect("run the python client");
    assert!(
        out.status.success(),
        "forward client {args:?}:\n{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
}

/// Waits until `want` holds for the records that arrived.
fn wait_records(aws: &Aws, what: &str, want: impl Fn(&[(String, String)]) -> bool) {
    common::wait_for(Duration::from_secs(60), what, || {
        let r = aws.records();
        want(&r).then_some(())
    });
}

fn has(records: &[(String, String)], stream: &str, needle: &str) -> bool {
    records
        .iter()
        .any(|(s, r)| s == stream && r.contains(needle))
}

fn stop(mut relay: KillOnDrop, dir: &Path) -> String {
    common::sigterm(&relay);
    let status = common::wait_exit(&mut relay, Duration::from_secs(40));
    let log = common::strip_ansi(&common::read_log(dir, "stderr.log"));
    assert!(status.success(), "relay exited with {status}:\n{log}");
    log
}

#[test]
fn the_forward_and_firehose_aggregator_runs_as_it_is() {
    let (tmp, conf) = fixture("aggregator");
    let dir = conf.parent().unwrap().to_path_buf();
    let aws = Aws::start(tmp.path(), &["application-logs"]);
    let env = aws.env(tmp.path());
    let mut relay = convert_check_and_start(&conf, &env);
    let addr = common::wait_forward_addr(&dir, &mut relay, "in_forward");
    // The shared-key handshake of <security>, then one acknowledged message.
    forward_client(&["handshake", &addr.port().to_string(), SHARED_KEY, "ok"]);
    wait_records(&aws, "heartbeat and forwarded records", |r| {
        has(r, "application-logs", r#""message":"heartbeat""#)
            && has(r, "application-logs", r#""msg":"secure""#)
    });
    // A client with the wrong key is refused, as by Fluentd.
    forward_client(&["handshake", &addr.port().to_string(), "wrong", "fail"]);
    let log = stop(relay, &dir);
    aws.assert_signed_with_web_identity("fluentd-aggregator");
    assert!(aws.records().iter().all(|(s, _)| s == "application-logs"));
    // Records end with the newline of append_new_line and carry the auto-increment key.
    assert!(aws
        .records()
        .iter()
        .any(|(_, r)| r.ends_with('\n') && r.contains(r#""seq":"#)));
    assert!(log.contains("fluent.conf"), "warnings are logged:\n{log}");
}

#[test]
fn the_docker_split_config_with_includes_and_an_env_stream_name_runs() {
    let (tmp, conf) = fixture("docker");
    let dir = conf.parent().unwrap().to_path_buf();
    let aws = Aws::start(tmp.path(), &["from-env"]);
    let mut env = aws.env(tmp.path());
    env.push(("FIREHOSE_STREAM_NAME".into(), "from-env".into()));
    let mut relay = convert_check_and_start(&conf, &env);
    let addr = common::wait_forward_addr(&dir, &mut relay, "forward");
    forward_client(&["logger", &addr.port().to_string()]);
    wait_records(&aws, "dummy and fluent-logger records", |r| {
        has(r, "from-env", "hello from dummy") && has(r, "from-env", "logger-3")
    });
    stop(relay, &dir);
    // No credentials section: IRSA's variables, as the plugin's default chain would use.
    let issued = aws.sts.issued();
    assert!(!issued.is_empty());
    let keys: BTreeSet<_> = issued.iter().map(|i| i.access_key.clone()).collect();
    assert!(aws
        .fh
        .calls()
        .iter()
        .all(|c| keys.contains(c.access_key.as_deref().unwrap_or_default())));
    // The stdout filter printed the dummy events in Fluentd's format.
    let stdout = common::read_log(&dir, "stdout.log");
    assert!(stdout.contains("docker.dummy: {"), "{stdout}");
    // Without FIREHOSE_STREAM_NAME, the default written in the Ruby expression applies.
    let mut env = aws.env(tmp.path());
    env.retain(|(k, _)| k != "FIREHOSE_STREAM_NAME");
    let out = relay_cmd(&dir, &["check", "--config", "fluent.conf"], &env);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains(r#"delivery_stream = "docker-logs""#),
        "{}",
        text(&out.stdout)
    );
}

#[test]
fn labels_route_forwarded_and_local_events_to_their_own_streams() {
    let (tmp, conf) = fixture("labels");
    let dir = conf.parent().unwrap().to_path_buf();
    let aws = Aws::start(tmp.path(), &["app-logs", "forwarded-logs"]);
    let env = aws.env(tmp.path());
    let mut relay = convert_check_and_start(&conf, &env);
    let addr = common::wait_forward_addr(&dir, &mut relay, "forward");
    forward_client(&["logger", &addr.port().to_string()]);
    wait_records(&aws, "records on both streams", |r| {
        has(r, "forwarded-logs", "logger-1") && has(r, "app-logs", r#""message":"sample""#)
    });
    stop(relay, &dir);
    aws.assert_signed_with_web_identity("fluentd-labels");
    for (stream, record) in aws.records() {
        let forwarded = record.contains("logger-");
        assert_eq!(stream == "forwarded-logs", forwarded, "{stream}: {record}");
    }
}

/// The lines of a report: `file:line: subject: why`, without the explanation.
fn report_lines(stderr: &str) -> Vec<String> {
    stderr
        .lines()
        .filter(|l| l.starts_with("  "))
        .map(|l| {
            let parts: Vec<&str> = l.trim().splitn(4, ": ").collect();
            parts[..3.min(parts.len())].join(": ")
        })
        .collect()
}

#[test]
fn unsupported_parts_are_listed_by_convert_and_refused_by_check_and_run() {
    let (tmp, conf) = fixture("unsupported");
    let dir = conf.parent().unwrap().to_path_buf();
    let aws = Aws::start(tmp.path(), &["logs"]);
    let env = aws.env(tmp.path());
    let expected: Vec<String> = std::fs::read_to_string(dir.join("expected-report.txt"))
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let out = relay_cmd(&dir, &["convert", "fluent.conf"], &env);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
    assert_eq!(
        report_lines(&text(&out.stderr)),
        expected,
        "{}",
        text(&out.stderr)
    );
    // What converted is printed all the same.
    assert!(text(&out.stdout).contains("[outputs.firehose]"));
    for args in [["check", "--config"], ["run", "--config"]] {
        let out = relay_cmd(&dir, &[args[0], args[1], "fluent.conf"], &env);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert_eq!(
            report_lines(&text(&out.stderr)),
            expected,
            "{}",
            text(&out.stderr)
        );
    }
    assert!(aws.fh.calls().is_empty());
}

/// `<buffer tag>` + `logs-${tag}`, and `<buffer tag, time>` + `archive-${tag[1]}-%Y%m%d` with
/// Fluentd's default lazy flush: sample events and fluent-logger's events reach the streams
/// their tag (and event time) name; a day's slot goes out once the day is over, today's at
/// shutdown.
#[test]
fn chunk_keys_and_stream_placeholders_run_per_tag_and_day() {
    let (tmp, conf) = fixture("tag_placeholders");
    let dir = conf.parent().unwrap().to_path_buf();
    // fluent-logger sends py.logger now and on 2020-09-13 (UTC), and py.int on 2020-09-13.
    let today = format!("archive-logger-{}", chrono::Utc::now().format("%Y%m%d"));
    let streams = [
        "logs-app.web",
        "logs-app.db",
        "archive-logger-20200913",
        "archive-int-20200913",
        today.as_str(),
    ];
    let aws = Aws::start(tmp.path(), &streams);
    let env = aws.env(tmp.path());
    let toml = {
        let out = relay_cmd(&dir, &["convert", "fluent.conf"], &env);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        text(&out.stdout)
    };
    assert!(
        toml.contains(r#"delivery_stream = "logs-${tag}""#),
        "{toml}"
    );
    assert!(toml.contains(r#"chunk_keys = ["tag", "time"]"#), "{toml}");
    assert!(toml.contains(r#"flush_mode = "lazy""#), "{toml}");
    let mut relay = convert_check_and_start(&conf, &env);
    let addr = common::wait_forward_addr(&dir, &mut relay, "forward");
    forward_client(&["logger", &addr.port().to_string()]);
    wait_records(&aws, "records under their tag's and day's stream", |r| {
        has(r, "logs-app.web", "from web")
            && has(r, "logs-app.db", "from db")
            && has(r, "archive-logger-20200913", "logger-2")
            && has(r, "archive-int-20200913", "logger-3")
    });
    // Today's slot is not over: lazy keeps it until shutdown (flush_at_shutdown).
    assert!(!has(&aws.records(), &today, "logger-1"));
    stop(relay, &dir);
    let records = aws.records();
    assert!(has(&records, &today, "logger-1"), "{records:?}");
    aws.assert_signed_with_web_identity("fluentd-tags");
    for (stream, record) in &records {
        let want = if record.contains("from web") {
            "logs-app.web"
        } else if record.contains("from db") {
            "logs-app.db"
        } else if record.contains("logger-2") {
            "archive-logger-20200913"
        } else if record.contains("logger-3") {
            "archive-int-20200913"
        } else {
            today.as_str()
        };
        assert_eq!(stream, want, "{record}");
    }
}

#[test]
fn malformed_fluent_conf_is_a_clear_error_with_file_and_line_and_status_2() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::write(dir.join("loop_a.conf"), "@include loop_b.conf\n").unwrap();
    std::fs::write(
        dir.join("loop_b.conf"),
        "<source>\n  @type sample\n</source>\n@include loop_a.conf\n",
    )
    .unwrap();
    let cases: [(&str, &str, &str); 4] = [
        (
            "unclosed.conf",
            "<source>\n  @type forward\n<match **>\n  @type stdout\n</match>\n",
            "is never closed",
        ),
        (
            "quoting.conf",
            "<source>\n  @type sample\n  tag \"app\n</source>\n",
            "unterminated",
        ),
        (
            "include.conf",
            "# split config\n@include missing/output.conf\n",
            "no such file",
        ),
        ("loop_a.conf", "", "loop"),
    ];
    for (name, body, why) in cases {
        if !body.is_empty() {
            std::fs::write(dir.join(name), body).unwrap();
        }
        for args in [
            vec!["convert", name],
            vec!["check", "--config", name],
            vec!["run", "--config", name],
        ] {
            let out = relay_cmd(dir, &args, &[]);
            let err = text(&out.stderr);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
            assert!(err.contains(why), "{args:?}: {err}");
            assert!(!err.contains("panicked"), "{err}");
            let located = err
                .match_indices(".conf:")
                .any(|(i, _)| err[i + ".conf:".len()..].starts_with(|c: char| c.is_ascii_digit()));
            assert!(located, "no file:line in {err}");
        }
    }
}

/// The first fenced block after the line starting with `marker` in the README.
fn readme_block(marker: &str) -> String {
    let readme =
        std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("README.md")).unwrap();
    let at = readme
        .find(marker)
        .unwrap_or_else(|| panic!("README has no `{marker}`"));
    let rest = &readme[at..];
    let open = rest.find("```").unwrap();
    let body = &rest[open..];
    let body = &body[body.find('\n').unwrap() + 1..];
    body[..body.find("```\n").unwrap()].to_owned()
}

#[test]
fn the_readme_before_and_after_is_what_convert_prints() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("fluent.conf"),
        readme_block("Before (an aggregator"),
    )
    .unwrap();
    let out = relay_cmd(tmp.path(), &["convert", "fluent.conf"], &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout),
        readme_block("After (`firehose-relay convert")
    );
}

#[test]
fn a_value_the_relay_refuses_names_the_fluent_conf_and_the_key() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("fluent.conf"),
        "<source>\n  @type sample\n  tag a\n</source>\n<match **>\n  @type kinesis_firehose\n  region eu-west-1\n  delivery_stream_name s\n  <buffer>\n    flush_thread_count 0\n  </buffer>\n</match>\n",
    )
    .unwrap();
    let out = relay_cmd(tmp.path(), &["check", "--config", "fluent.conf"], &[]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains(
            "`outputs.firehose.buffer.flush_thread_count` in fluent.conf: must be at least 1"
        ),
        "{}",
        text(&out.stderr)
    );
}
