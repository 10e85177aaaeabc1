//! What the relay sends to AWS is what AWS accepts, and the fakes refuse what AWS refuses.
//!
//! * The relay's SigV4 signature over a captured PutRecordBatch equals the one botocore (an
//!   implementation independent of the relay's and of the fakes') computes for the same bytes.
//! * The fake Firehose accepts what botocore signs and refuses a wrong secret, a missing session
//!   token, an unknown key and a body changed after signing, with AWS's codes; the relay reports
//!   such refusals as credentials errors.
//! * The fake Firehose and the fake STS refuse requests that break the service model with the
//!   codes the services use (`ValidationException`, `SerializationException`,
//!   `ResourceNotFoundException`, `InvalidArgumentException`; STS `ValidationError`,
//!   `MalformedPolicyDocument`).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use common::fake_firehose::FakeFirehose;
use common::fake_sts::FakeSts;
use common::http_server::Request;
use firehose_relay::buffer::{Chunk, ChunkId, Records};
use firehose_relay::ops::metrics::Metrics;
use firehose_relay::sink::firehose::{FirehoseConfig, FirehoseSink};
use firehose_relay::sink::{ErrorClass, Sink};

const KEY: &str = "ASIATEMPORARYKEY";
const SECRET: &str = "temporary-secret";
const TOKEN: &str = "session-token-for-the-temporary-key";

fn chunk(n: usize) -> Chunk {
    let mut r = Records::new();
    for i in 0..n {
        r.push(format!("{{\"i\":{i}}}\n").as_bytes()).unwrap();
    }
    Chunk::new(ChunkId(1), 0, r)
}

/// A sink for stream `s` of `fake` with static credentials (`session_token` optional).
async fn sink(fake: &FakeFirehose, key: &str, secret: &str, token: Option<&str>) -> FirehoseSink {
    let token = token
        .map(|t| format!("session_token = {t:?}\n"))
        .unwrap_or_default();
    let text = format!(
        "delivery_stream = \"s\"\nregion = \"eu-west-1\"\nendpoint_url = \"{}\"\nrequest_timeout = \"5s\"\n\
         [credentials]\ntype = \"static\"\naccess_key_id = {key:?}\nsecret_access_key = {secret:?}\n{token}",
        fake.url
    );
    let cfg: FirehoseConfig = toml::from_str(&text).unwrap();
    FirehoseSink::build("fh", &cfg, &Arc::new(Metrics::new()))
        .await
        .unwrap()
}

fn fake_with_temporary_key() -> FakeFirehose {
    let fake = FakeFirehose::http();
    fake.create_stream("s")
        .allow_temporary_key(KEY, SECRET, TOKEN);
    fake
}

fn run_check(args: &[&str]) -> (bool, String) {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/sigv4_check.py");
    let out = std::process::Command::new(common::python())
        .arg(script)
        .args(args)
        .output()
        .expect("run sigv4_check.py");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

#[tokio::test]
async fn the_relays_signature_is_the_one_botocore_computes_for_the_same_bytes() {
    let fake = fake_with_temporary_key();
    let sink = sink(&fake, KEY, SECRET, Some(TOKEN)).await;
    let d = sink.deliver(&chunk(20)).await;
    assert!(d.error.is_none(), "{:?} {:?}", d.error, fake.refusals());
    let req = fake.requests().pop().expect("a captured request");
    assert_eq!(req.header("x-amz-security-token"), Some(TOKEN));
    let host = req.header("host").expect("host header").to_owned();
    let captured = serde_json::json!({
        "method": req.method,
        "url": format!("http://{host}{}", req.path),
        "headers": req.headers,
        "body_b64": base64::engine::general_purpose::STANDARD.encode(&req.body),
        "access_key": KEY,
        "secret": SECRET,
        "session_token": TOKEN,
    });
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("request.json");
    std::fs::write(&file, captured.to_string()).unwrap();
    let (ok, text) = run_check(&["recompute", file.to_str().unwrap()]);
    assert!(ok, "botocore disagrees with the relay's signature:\n{text}");

    // The same check fails on a body other than the signed one: botocore is really checking.
    let mut tampered = captured.clone();
    let mut body = req.body.clone();
    body[0] = b' ';
    tampered["body_b64"] = base64::engine::general_purpose::STANDARD
        .encode(&body)
        .into();
    std::fs::write(&file, tampered.to_string()).unwrap();
    let (ok, text) = run_check(&["recompute", file.to_str().unwrap()]);
    assert!(!ok, "botocore accepted a changed body:\n{text}");
}

#[test]
fn the_fake_accepts_what_botocore_signs_and_refuses_what_aws_refuses() {
    let fake = fake_with_temporary_key();
    let call = |stream: &str, key: &str, secret: &str, token: &str, expect: &str| {
        let (ok, text) = run_check(&["call", &fake.url, stream, key, secret, token, expect]);
        assert!(ok, "{stream} {key} {token}: {text}");
    };
    call("s", KEY, SECRET, TOKEN, "ok");
    call("s", KEY, "wrong-secret", TOKEN, "InvalidSignatureException");
    call("s", KEY, SECRET, "-", "UnrecognizedClientException");
    call(
        "s",
        KEY,
        SECRET,
        "another-token",
        "UnrecognizedClientException",
    );
    call(
        "s",
        "AKIDNEVERISSUED",
        SECRET,
        "-",
        "UnrecognizedClientException",
    );
    call("missing", KEY, SECRET, TOKEN, "ResourceNotFoundException");
    let accepted = fake.accepted();
    assert_eq!(
        accepted,
        vec![
            b"{\"from\":\"botocore\"}\n".to_vec(),
            b"\x00\xff binary".to_vec()
        ]
    );
}

#[tokio::test]
async fn a_wrong_secret_or_a_dropped_session_token_fails_as_a_credentials_error() {
    let fake = fake_with_temporary_key();
    for (secret, token, code) in [
        ("wrong-secret", Some(TOKEN), "InvalidSignatureException"),
        (SECRET, None, "UnrecognizedClientException"),
    ] {
        let before = fake.refusals().len();
        let d = sink(&fake, KEY, secret, token)
            .await
            .deliver(&chunk(3))
            .await;
        let e = d.error.unwrap_or_else(|| panic!("{code}: delivered"));
        assert_eq!(e.class, ErrorClass::Credentials, "{code}: {e}");
        assert!(d.delivered.is_empty());
        let refusals = &fake.refusals()[before..];
        assert!(
            !refusals.is_empty() && refusals.iter().all(|r| r.starts_with(code)),
            "{refusals:?}"
        );
    }
    assert!(fake.accepted().is_empty());
}

/// Sends `req` (already signed) to `url` and returns the status and the error code.
async fn send(url: &str, req: &Request) -> (u16, String) {
    let client = reqwest::Client::new();
    let mut builder = client.request(
        reqwest::Method::from_bytes(req.method.as_bytes()).unwrap(),
        format!("{url}{}", req.path),
    );
    for (k, v) in &req.headers {
        builder = builder.header(k, v);
    }
    let resp = builder.body(req.body.clone()).send().await.unwrap();
    let status = resp.status().as_u16();
    let text = resp.text().await.unwrap();
    let code = serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| v["__type"].as_str().map(str::to_owned))
        .or_else(|| {
            let start = text.find("<Code>")? + 6;
            let end = text.find("</Code>")?;
            Some(text[start..end].to_owned())
        })
        .unwrap_or_default();
    (status, code)
}

/// A PutRecordBatch request with `body`, signed with the fake's temporary key.
fn put_record_batch(fake: &FakeFirehose, body: &[u8]) -> Request {
    let mut req = Request {
        method: "POST".into(),
        path: "/".into(),
        headers: vec![
            ("host".into(), format!("127.0.0.1:{}", fake.addr.port())),
            ("content-type".into(), "application/x-amz-json-1.1".into()),
            (
                "x-amz-target".into(),
                "Firehose_20150804.PutRecordBatch".into(),
            ),
        ],
        body: body.to_vec(),
    };
    common::sigv4::sign(&mut req, KEY, SECRET, Some(TOKEN), "us-east-1", "firehose");
    req
}

fn records_body(stream: &str, records: &[Vec<u8>]) -> Vec<u8> {
    let list: Vec<serde_json::Value> = records
        .iter()
        .map(|r| serde_json::json!({"Data": base64::engine::general_purpose::STANDARD.encode(r)}))
        .collect();
    serde_json::json!({"DeliveryStreamName": stream, "Records": list})
        .to_string()
        .into_bytes()
}

#[tokio::test]
async fn a_body_changed_after_signing_is_refused_and_the_signed_one_accepted() {
    let fake = fake_with_temporary_key();
    let mut req = put_record_batch(&fake, &records_body("s", &[b"signed".to_vec()]));
    let signed_body = req.body.clone();
    req.body = records_body("s", &[b"sent!!".to_vec()]);
    assert_eq!(
        send(&fake.url, &req).await,
        (400, "InvalidSignatureException".into())
    );
    req.body = signed_body;
    assert_eq!(send(&fake.url, &req).await, (200, String::new()));
    assert_eq!(fake.accepted(), vec![b"signed".to_vec()]);
}

#[tokio::test]
async fn the_fake_firehose_refuses_invalid_requests_as_firehose_does() {
    let fake = fake_with_temporary_key();
    let one = vec![b"x".to_vec()];
    let big = vec![vec![b'x'; 1_000_000]; 5];
    let cases: Vec<(&str, Vec<u8>, &str)> = vec![
        ("not JSON", b"{".to_vec(), "SerializationException"),
        (
            "no Records",
            br#"{"DeliveryStreamName":"s"}"#.to_vec(),
            "ValidationException",
        ),
        (
            "no stream name",
            br#"{"Records":[{"Data":"eA=="}]}"#.to_vec(),
            "ValidationException",
        ),
        (
            "empty Records",
            records_body("s", &[]),
            "ValidationException",
        ),
        (
            "501 records",
            records_body("s", &vec![b"x".to_vec(); 501]),
            "ValidationException",
        ),
        (
            "Records not a list",
            br#"{"DeliveryStreamName":"s","Records":{}}"#.to_vec(),
            "SerializationException",
        ),
        (
            "Data not a string",
            br#"{"DeliveryStreamName":"s","Records":[{"Data":7}]}"#.to_vec(),
            "SerializationException",
        ),
        (
            "Data not base64",
            br#"{"DeliveryStreamName":"s","Records":[{"Data":"%%%"}]}"#.to_vec(),
            "SerializationException",
        ),
        (
            "record without Data",
            br#"{"DeliveryStreamName":"s","Records":[{}]}"#.to_vec(),
            "ValidationException",
        ),
        (
            "record over 1,024,000 bytes",
            records_body("s", &[vec![b'x'; 1_024_001]]),
            "ValidationException",
        ),
        (
            "stream name with a space",
            records_body("a b", &one),
            "ValidationException",
        ),
        (
            "stream name of 65 characters",
            records_body(&"a".repeat(65), &one),
            "ValidationException",
        ),
        (
            "over 4 MiB in one call",
            records_body("s", &big),
            "InvalidArgumentException",
        ),
        (
            "unknown stream",
            records_body("other", &one),
            "ResourceNotFoundException",
        ),
    ];
    for (what, body, code) in cases {
        let got = send(&fake.url, &put_record_batch(&fake, &body)).await;
        assert_eq!(got, (400, code.to_owned()), "{what}");
    }
    assert!(fake.accepted().is_empty());
    // At the limits exactly, Firehose accepts.
    let edge = records_body("s", &[vec![b'x'; 1_024_000], Vec::new()]);
    assert_eq!(
        send(&fake.url, &put_record_batch(&fake, &edge)).await.0,
        200
    );
    let many = records_body("s", &vec![b"x".to_vec(); 500]);
    assert_eq!(
        send(&fake.url, &put_record_batch(&fake, &many)).await.0,
        200
    );
}

fn sts_form(params: &[(&str, &str)]) -> Request {
    let mut body = String::from("Action=AssumeRoleWithWebIdentity&Version=2011-06-15");
    for (k, v) in params {
        let v: String = v
            .bytes()
            .map(|b| match b {
                b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                    (b as char).to_string()
                }
                _ => format!("%{b:02X}"),
            })
            .collect();
        body.push_str(&format!("&{k}={v}"));
    }
    Request {
        method: "POST".into(),
        path: "/".into(),
        headers: vec![(
            "content-type".into(),
            "application/x-www-form-urlencoded".into(),
        )],
        body: body.into_bytes(),
    }
}

#[tokio::test]
async fn the_fake_sts_refuses_invalid_parameters_as_sts_does() {
    let sts = FakeSts::start(Duration::from_secs(60));
    sts.set_max_session_duration(3600);
    let arn = "arn:aws:iam::123456789012:role/relay";
    let good = [
        ("RoleArn", arn),
        ("RoleSessionName", "relay-0"),
        ("WebIdentityToken", "a-jwt-token"),
    ];
    let with = |k: &'static str, v: &'static str| -> Vec<(&'static str, &'static str)> {
        let mut p: Vec<_> = good.iter().copied().filter(|(n, _)| *n != k).collect();
        if !v.is_empty() {
            p.push((k, v));
        }
        p
    };
    let long_policy: &'static str = Box::leak(
        format!(
            "{{\"Version\":\"2012-10-17\",\"Statement\":[],\"Pad\":\"{}\"}}",
            "x".repeat(2048)
        )
        .into_boxed_str(),
    );
    let cases = [
        ("no RoleArn", with("RoleArn", ""), "ValidationError"),
        (
            "RoleArn not an ARN",
            with("RoleArn", "not-an-arn-but-long-enough"),
            "ValidationError",
        ),
        (
            "RoleArn too short",
            with("RoleArn", "arn:aws:iam::1:r"),
            "ValidationError",
        ),
        (
            "no session name",
            with("RoleSessionName", ""),
            "ValidationError",
        ),
        (
            "session name of 1",
            with("RoleSessionName", "a"),
            "ValidationError",
        ),
        (
            "session name with a space",
            with("RoleSessionName", "relay 0"),
            "ValidationError",
        ),
        (
            "session name of 65",
            with(
                "RoleSessionName",
                Box::leak("a".repeat(65).into_boxed_str()),
            ),
            "ValidationError",
        ),
        ("no token", with("WebIdentityToken", ""), "ValidationError"),
        (
            "DurationSeconds 899",
            [&good[..], &[("DurationSeconds", "899")]].concat(),
            "ValidationError",
        ),
        (
            "DurationSeconds 43201",
            [&good[..], &[("DurationSeconds", "43201")]].concat(),
            "ValidationError",
        ),
        (
            "DurationSeconds over the role's maximum",
            [&good[..], &[("DurationSeconds", "7200")]].concat(),
            "ValidationError",
        ),
        (
            "Policy over 2048 characters",
            [&good[..], &[("Policy", long_policy)]].concat(),
            "ValidationError",
        ),
        (
            "Policy not JSON",
            [&good[..], &[("Policy", "allow everything")]].concat(),
            "MalformedPolicyDocument",
        ),
    ];
    for (what, params, code) in cases {
        let got = send(&sts.url, &sts_form(&params)).await;
        assert_eq!(got, (400, code.to_owned()), "{what}");
    }
    assert!(sts.issued().is_empty());
    for params in [
        good.to_vec(),
        [
            &good[..],
            &[
                ("DurationSeconds", "900"),
                ("Policy", "{\"Version\":\"2012-10-17\"}"),
            ],
        ]
        .concat(),
        [&good[..], &[("DurationSeconds", "3600")]].concat(),
    ] {
        assert_eq!(
            send(&sts.url, &sts_form(&params)).await.0,
            200,
            "{params:?}"
        );
    }
    assert_eq!(sts.issued().len(), 3);
}

#[tokio::test]
async fn a_session_longer_than_the_role_allows_is_a_credentials_error_naming_sts_s_reason() {
    let sts = Arc::new(FakeSts::start(Duration::from_secs(60)));
    sts.set_max_session_duration(3600);
    let fh = FakeFirehose::http();
    fh.create_stream("s").trust_keys_from(sts.key_lookup());
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, "a-jwt-token").unwrap();
    let text = format!(
        "delivery_stream = \"s\"\nregion = \"eu-west-1\"\nendpoint_url = \"{}\"\n[credentials]\n\
         type = \"web_identity\"\nrole_arn = \"arn:aws:iam::123456789012:role/relay\"\n\
         web_identity_token_file = {:?}\nduration_seconds = 7200\nsts_endpoint_url = \"{}\"\n",
        fh.url,
        token.display().to_string(),
        sts.url
    );
    let cfg: FirehoseConfig = toml::from_str(&text).unwrap();
    let d = match FirehoseSink::build("fh", &cfg, &Arc::new(Metrics::new())).await {
        Ok(sink) => sink.deliver(&chunk(2)).await,
        Err(e) => panic!("the sink must start and report the refusal when delivering: {e:#}"),
    };
    let e = d.error.expect("no credentials");
    assert_eq!(e.class, ErrorClass::Credentials, "{e}");
    assert!(
        sts.invalid_calls()
            .iter()
            .any(|c| c.contains("MaxSessionDuration")),
        "{:?}",
        sts.invalid_calls()
    );
    assert!(
        fh.calls().is_empty(),
        "nothing was sent without credentials"
    );
}

#[tokio::test]
async fn an_endpoint_with_an_untrusted_certificate_is_refused_before_anything_is_sent() {
    // The fake's certificate is signed by a test CA the sink is not told about.
    let fake = FakeFirehose::https();
    fake.create_stream("s")
        .allow_temporary_key(KEY, SECRET, TOKEN);
    let d = sink(&fake, KEY, SECRET, Some(TOKEN))
        .await
        .deliver(&chunk(3))
        .await;
    let e = d
        .error
        .expect("an untrusted certificate must fail the call");
    assert!(d.delivered.is_empty());
    assert!(
        fake.requests().is_empty(),
        "no request reached a server that failed verification"
    );
    assert!(
        format!("{e}").to_lowercase().contains("certificate")
            || format!("{e:?}").to_lowercase().contains("certificate"),
        "the error says why: {e:?}"
    );
}
