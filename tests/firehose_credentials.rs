//! Web-identity credentials with a scheduled refresh, against a fake STS that issues
//! short-lived keys and a fake Firehose that accepts only keys that are currently valid.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use common::fake_firehose::FakeFirehose;
use common::fake_sts::FakeSts;
use firehose_relay::buffer::{Chunk, ChunkId, Records};
use firehose_relay::ops::metrics::Metrics;
use firehose_relay::sink::firehose::{FirehoseConfig, FirehoseSink};
use firehose_relay::sink::{ErrorClass, Sink};

fn chunk(n: usize, tag: &str) -> Chunk {
    let mut r = Records::new();
    for i in 0..n {
        r.push(format!("{{\"tag\":\"{tag}\",\"i\":{i}}}\n").as_bytes())
            .unwrap();
    }
    Chunk::new(ChunkId(1), 0, r)
}

struct Setup {
    sts: Arc<FakeSts>,
    fh: FakeFirehose,
    token_file: std::path::PathBuf,
    _dir: tempfile::TempDir,
    metrics: Arc<Metrics>,
    sink: FirehoseSink,
}

async fn setup(lifetime: Duration) -> Setup {
    let sts = Arc::new(FakeSts::start(lifetime));
    let fh = FakeFirehose::http();
    fh.create_stream("s").trust_keys_from(sts.key_lookup());
    let dir = tempfile::tempdir().unwrap();
    let token_file = dir.path().join("token");
    std::fs::write(&token_file, "token-1\n").unwrap();
    let text = format!(
        r#"
delivery_stream = "s"
region = "eu-west-1"
endpoint_url = "{fh}"
[credentials]
type = "web_identity"
role_arn = "arn:aws:iam::123456789012:role/relay"
web_identity_token_file = {file:?}
role_session_name = "relay-test"
duration_seconds = 900
sts_endpoint_url = "{sts}"
"#,
        fh = fh.url,
        sts = sts.url,
        file = token_file.display().to_string()
    );
    let cfg: FirehoseConfig = toml::from_str(&text).unwrap();
    let metrics = Arc::new(Metrics::new());
    let sink = FirehoseSink::build("fh", &cfg, &metrics).await.unwrap();
    Setup {
        sts,
        fh,
        token_file,
        _dir: dir,
        metrics,
        sink,
    }
}

#[tokio::test]
async fn every_call_is_signed_with_a_valid_key_and_refresh_happens_before_expiry() {
    let s = setup(Duration::from_secs(3)).await;
    let start = Instant::now();
    let mut rotated_at = None;
    let mut slowest = Duration::ZERO;
    while start.elapsed() < Duration::from_secs(10) {
        if rotated_at.is_none() && start.elapsed() > Duration::from_secs(5) {
            std::fs::write(&s.token_file, "token-2\n").unwrap();
            rotated_at = Some(SystemTime::now());
        }
        let t = Instant::now();
        let d = s.sink.deliver(&chunk(5, "x")).await;
        slowest = slowest.max(t.elapsed());
        assert!(d.error.is_none(), "at {:?}: {:?}", start.elapsed(), d.error);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let calls = s.fh.calls();
    assert!(calls.len() > 50);
    assert!(
        calls.iter().all(|c| c.status == 200),
        "every call carried a valid key"
    );
    let issued = s.sts.issued();
    assert!(
        issued.len() >= 4,
        "several expiry periods, {} refreshes",
        issued.len()
    );
    for pair in issued.windows(2) {
        assert!(
            pair[1].issued < pair[0].expires,
            "refreshed before the previous keys expired"
        );
    }
    let keys: std::collections::BTreeSet<_> =
        calls.iter().filter_map(|c| c.access_key.clone()).collect();
    assert!(keys.len() >= 3, "calls used the renewed keys: {keys:?}");
    assert!(
        slowest < Duration::from_millis(500),
        "no flush waited on STS: {slowest:?}"
    );
    assert!(issued
        .iter()
        .all(|i| i.role_arn.ends_with("role/relay") && i.session_name == "relay-test"));
    assert_eq!(issued[0].duration_seconds, Some(900));
    let rotated_at = rotated_at.unwrap();
    let after: Vec<_> = issued.iter().filter(|i| i.issued > rotated_at).collect();
    assert!(!after.is_empty());
    assert!(
        after.iter().all(|i| i.token == "token-2"),
        "the next STS call carried the new token"
    );
    assert!(issued
        .iter()
        .filter(|i| i.issued < rotated_at)
        .all(|i| i.token == "token-1"));
    let text = s.metrics.render();
    assert!(
        text.contains("firehose_relay_aws_credentials_expiry_timestamp_seconds{output=\"fh\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn records_wait_while_sts_is_down_and_are_delivered_after_it_recovers() {
    let s = setup(Duration::from_secs(2)).await;
    assert!(s.sink.deliver(&chunk(3, "before")).await.error.is_none());
    s.sts.set_down(true);
    tokio::time::sleep(Duration::from_millis(2500)).await;
    // The keys have expired and no refresh succeeded: the flush fails fast as a credentials
    // error and the records stay pending.
    let t = Instant::now();
    let d = s.sink.deliver(&chunk(3, "during")).await;
    assert!(
        t.elapsed() < Duration::from_millis(500),
        "no waiting on STS"
    );
    let e = d.error.expect("no valid credentials");
    assert_eq!(e.class, ErrorClass::Credentials, "{e}");
    assert!(d.delivered.is_empty());
    assert!(
        s.sts.refused() >= 2,
        "refresh was retried while STS was down"
    );
    s.sts.set_down(false);
    let until = Instant::now() + Duration::from_secs(10);
    let mut c = chunk(3, "during");
    loop {
        let d = s.sink.deliver(&c).await;
        c.delivered.union_with(&d.delivered);
        if d.error.is_none() {
            break;
        }
        assert!(
            Instant::now() < until,
            "not delivered after STS recovered: {:?}",
            d.error
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let got: Vec<String> =
        s.fh.accepted()
            .iter()
            .map(|r| String::from_utf8_lossy(r).to_string())
            .collect();
    assert_eq!(got.iter().filter(|r| r.contains("during")).count(), 3);
    let text = s.metrics.render();
    assert!(
        text.contains("firehose_relay_aws_credentials_refresh_failures_total{output=\"fh\"}"),
        "{text}"
    );
}

#[tokio::test]
async fn an_unreadable_token_file_is_a_config_problem_naming_path_and_source() {
    let cfg: FirehoseConfig = toml::from_str(
        r#"
delivery_stream = "s"
region = "eu-west-1"
[credentials]
type = "web_identity"
web_identity_token_file = "/nonexistent/relay/token"
duration_seconds = 60
"#,
    )
    .unwrap();
    let p = cfg.problems();
    let text = format!("{p:?}");
    assert!(
        p.iter().any(|(k, _)| *k == "credentials.duration_seconds"),
        "{text}"
    );
    assert!(
        p.iter()
            .any(|(k, m)| *k == "credentials.web_identity_token_file"
                && m.contains("/nonexistent/relay/token")),
        "{text}"
    );
}
