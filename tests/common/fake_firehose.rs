//! An in-process fake of Kinesis Data Firehose's PutRecordBatch (AWS JSON 1.1,
//! `X-Amz-Target: Firehose_20150804.PutRecordBatch`, base64 records), over HTTP or HTTPS, with
//! fault injection, recording every call.
//!
//! It answers as Firehose does, so a client bug cannot pass unnoticed:
//! * every request must carry a valid SigV4 signature ([`super::sigv4`]) made with a key the
//!   fake knows ([`FakeFirehose::allow_key`], or keys an STS fake issued through
//!   [`FakeFirehose::trust_keys_from`]), else `InvalidSignatureException`,
//!   `UnrecognizedClientException` or `ExpiredTokenException`;
//! * the body must match the service model (the constraints botocore's `firehose` model
//!   gives: `DeliveryStreamName` 1–64 of `[a-zA-Z0-9_.-]`, `Records` 1–500, `Data` a base64
//!   blob of at most 1,024,000 bytes), else `ValidationException` or, for wrong JSON types and
//!   bad base64, `SerializationException`;
//! * more than 4 MiB of data in one call is `InvalidArgumentException`;
//! * a stream that was not created ([`FakeFirehose::create_stream`]) is
//!   `ResourceNotFoundException`.
//!
//! Faults: a queue consumed one per accepted call ([`Fault`]), a per-record failure
//! probability and a per-request one (500), both whatever the rate, an outage switch (every
//! call refused with 503), and a metered quota ([`FakeFirehose::set_quota`]): records and data
//! bytes per aligned one-second window, records over it refused inside the 200 answer with
//! `ServiceUnavailableException`, as Firehose meters a stream.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::Rng;

use super::http_server::{serve, Handler, OwnedRuntime, Reply, Request, TestCa};
use super::sigv4::{self, KeyInfo};

/// Firehose's per-record limit (data bytes before base64).
pub const MAX_RECORD: usize = 1_024_000;
/// PutRecordBatch limits.
pub const MAX_RECORDS_PER_CALL: usize = 500;
pub const MAX_BYTES_PER_CALL: usize = 4 * 1024 * 1024;
/// How many raw requests the fake keeps for [`FakeFirehose::requests`].
pub const KEPT_REQUESTS: usize = 64;
/// The account the fake pretends to be (it appears in error messages, as in AWS's).
pub const ACCOUNT: &str = "123456789012";

/// What to do with one call that passed authentication and validation.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and error code (`__type`), accepting nothing.
    Error(u16, &'static str),
    /// Reset the connection after reading the request, accepting nothing.
    Reset,
    /// Accept normally but answer only after this delay (the client may have given up: such
    /// records may be delivered twice).
    Slow(Duration),
    /// Refuse these record positions (ServiceUnavailableException), accept the rest.
    FailRecords(Vec<usize>),
}

/// One PutRecordBatch call as received.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub stream: String,
    pub records: Vec<Vec<u8>>,
    /// Data bytes (decoded), what Firehose meters.
    pub data_bytes: usize,
    pub access_key: Option<String>,
    /// Region of the signature's credential scope.
    pub region: Option<String>,
    /// Per record: accepted by the fake.
    pub accepted: Vec<bool>,
    /// False when the client may not have seen the answer (slow reply).
    pub confirmed: bool,
    pub status: u16,
    /// The error code answered for the whole call, if any.
    pub error: Option<String>,
}

/// Looks up an access key the fake did not register itself (e.g. one an STS fake issued).
pub type KeyLookup = Arc<dyn Fn(&str) -> Option<KeyInfo> + Send + Sync>;

/// A stream's quota per one-second window; `None` = unmetered.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quota {
    pub records: Option<u64>,
    pub bytes: Option<u64>,
}

/// What the quota meter has used of the current one-second window.
#[derive(Default)]
struct Meter {
    window: u64,
    records: u64,
    bytes: u64,
}

#[derive(Default)]
struct State {
    faults: VecDeque<Fault>,
    record_failure_rate: f64,
    request_failure_rate: f64,
    outage: bool,
    quota: Quota,
    meter: Meter,
    /// Windows are counted from here.
    epoch: Option<Instant>,
    calls: Vec<Call>,
    requests: VecDeque<Request>,
    refusals: Vec<String>,
    streams: HashSet<String>,
    keys: HashMap<String, KeyInfo>,
    lookup: Option<KeyLookup>,
}

/// The fake service. Dropping it stops it.
pub struct FakeFirehose {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`.
    pub url: String,
    /// PEM of the CA that signed the HTTPS certificate.
    pub ca_pem: Option<String>,
    state: Arc<Mutex<State>>,
    _rt: OwnedRuntime,
}

impl FakeFirehose {
    pub fn http() -> FakeFirehose {
        Self::start(None)
    }

    pub fn https() -> FakeFirehose {
        Self::start(Some(TestCa::new()))
    }

    fn start(ca: Option<TestCa>) -> FakeFirehose {
        let rt = OwnedRuntime::new();
        let state = Arc::new(Mutex::new(State::default()));
        let s = Arc::clone(&state);
        let handler: Handler = Arc::new(move |req| {
            let s = Arc::clone(&s);
            Box::pin(async move { handle(req, &s).await })
        });
        let tls = ca.as_ref().map(|c| Arc::clone(&c.server_config));
        let addr = rt.block_on(serve(tls, handler));
        let url = match &ca {
            Some(_) => format!("https://localhost:{}", addr.port()),
            None => format!("http://127.0.0.1:{}", addr.port()),
        };
        FakeFirehose {
            addr,
            url,
            ca_pem: ca.map(|c| c.ca_pem),
            state,
            _rt: rt,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Creates a delivery stream; calls naming any other get `ResourceNotFoundException`.
    pub fn create_stream(&self, name: &str) -> &Self {
        self.lock().streams.insert(name.to_owned());
        self
    }

    /// Accepts calls signed with this long-term key pair.
    pub fn allow_key(&self, access_key: &str, secret: &str) -> &Self {
        self.lock().keys.insert(
            access_key.to_owned(),
            KeyInfo {
                secret: secret.to_owned(),
                session_token: None,
                expired: false,
            },
        );
        self
    }

    /// Accepts calls signed with temporary credentials: the key pair plus this session token
    /// in `X-Amz-Security-Token`.
    pub fn allow_temporary_key(&self, access_key: &str, secret: &str, token: &str) -> &Self {
        self.lock().keys.insert(
            access_key.to_owned(),
            KeyInfo {
                secret: secret.to_owned(),
                session_token: Some(token.to_owned()),
                expired: false,
            },
        );
        self
    }

    /// Also accepts the keys `lookup` knows (e.g. [`super::fake_sts::FakeSts::key_lookup`]).
    pub fn trust_keys_from(&self, lookup: KeyLookup) -> &Self {
        self.lock().lookup = Some(lookup);
        self
    }

    /// Queues faults for the next accepted calls, one per call.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// Each record of each call fails with this probability (ServiceUnavailableException).
    pub fn set_record_failure_rate(&self, p: f64) {
        self.lock().record_failure_rate = p;
    }

    /// Each call fails with this probability (500 InternalFailure, nothing accepted).
    pub fn set_request_failure_rate(&self, p: f64) {
        self.lock().request_failure_rate = p;
    }

    /// While on, every call is refused (503 ServiceUnavailableException).
    pub fn set_outage(&self, on: bool) {
        self.lock().outage = on;
    }

    /// Meters the stream: per aligned one-second window at most `quota.records` records and
    /// `quota.bytes` data bytes are accepted; the rest of each call fails inside the 200 answer
    /// (ServiceUnavailableException), as Firehose answers a stream over its quota.
    pub fn set_quota(&self, quota: Quota) {
        self.lock().quota = quota;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// The last [`KEPT_REQUESTS`] requests as they arrived (headers and body), refused ones
    /// included.
    pub fn requests(&self) -> Vec<Request> {
        self.lock().requests.iter().cloned().collect()
    }

    /// Calls refused for a reason of the client's making (`code: message`): a bad signature,
    /// an unknown key or stream, a request Firehose would not accept. Injected faults are
    /// not refusals.
    pub fn refusals(&self) -> Vec<String> {
        self.lock().refusals.clone()
    }

    /// Every record accepted, in arrival order (duplicates included).
    pub fn accepted(&self) -> Vec<Vec<u8>> {
        let s = self.lock();
        s.calls.iter().flat_map(Call::accepted_records).collect()
    }

    /// Records accepted in calls whose answer the client may have missed.
    pub fn unconfirmed(&self) -> Vec<Vec<u8>> {
        let s = self.lock();
        s.calls
            .iter()
            .filter(|c| !c.confirmed)
            .flat_map(Call::accepted_records)
            .collect()
    }
}

impl Call {
    fn accepted_records(&self) -> impl Iterator<Item = Vec<u8>> + '_ {
        self.records
            .iter()
            .zip(&self.accepted)
            .filter(|(_, a)| **a)
            .map(|(r, _)| r.clone())
    }
}

/// An error answer as AWS JSON 1.1 services give it.
pub fn error_reply(status: u16, code: &str, message: &str) -> Reply {
    Reply::Response {
        status,
        content_type: "application/x-amz-json-1.1",
        body: serde_json::json!({"__type": code, "message": message})
            .to_string()
            .into_bytes(),
    }
}

/// A request Firehose refuses before looking at its records.
struct Refused {
    status: u16,
    code: &'static str,
    message: String,
}

impl Refused {
    fn new(status: u16, code: &'static str, message: impl Into<String>) -> Refused {
        Refused {
            status,
            code,
            message: message.into(),
        }
    }
}

/// The parts of a valid PutRecordBatch body.
struct Body {
    stream: String,
    records: Vec<Vec<u8>>,
}

/// Reads the body as Firehose's JSON 1.1 deserializer and validator would: wrong JSON types
/// and bad base64 are `SerializationException`, model constraints `ValidationException` (all
/// violations listed, as AWS does), then the 4 MiB limit and the stream's existence.
fn parse_body(body: &[u8], streams: &HashSet<String>) -> Result<Body, Refused> {
    let serialization = |m: String| Refused::new(400, "SerializationException", m);
    let v: serde_json::Value =
        serde_json::from_slice(body).map_err(|e| serialization(e.to_string()))?;
    let obj = v
        .as_object()
        .ok_or_else(|| serialization("the body is not a JSON object".into()))?;
    let mut violations = Vec::new();
    let stream = match obj.get("DeliveryStreamName") {
        None | Some(serde_json::Value::Null) => {
            violations.push("Value null at 'deliveryStreamName' failed to satisfy constraint: Member must not be null".to_owned());
            String::new()
        }
        Some(serde_json::Value::String(s)) => {
            let valid_chars = s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if s.is_empty() || s.len() > 64 || !valid_chars {
                violations.push(format!("Value '{s}' at 'deliveryStreamName' failed to satisfy constraint: Member must have length between 1 and 64 and match pattern [a-zA-Z0-9_.-]+"));
            }
            s.clone()
        }
        Some(other) => {
            return Err(serialization(format!(
                "DeliveryStreamName must be a string, got {other}"
            )))
        }
    };
    let mut records = Vec::new();
    match obj.get("Records") {
        None | Some(serde_json::Value::Null) => violations.push(
            "Value null at 'records' failed to satisfy constraint: Member must not be null"
                .to_owned(),
        ),
        Some(serde_json::Value::Array(list)) => {
            if list.is_empty() || list.len() > MAX_RECORDS_PER_CALL {
                violations.push(format!("Value at 'records' with {} members failed to satisfy constraint: Member must have length between 1 and {MAX_RECORDS_PER_CALL}", list.len()));
            }
            for (i, r) in list.iter().enumerate() {
                let data = match r.as_object().map(|o| o.get("Data")) {
                    None => return Err(serialization(format!("records[{i}] is not an object"))),
                    Some(None | Some(serde_json::Value::Null)) => {
                        violations.push(format!("Value null at 'records.{}.member.data' failed to satisfy constraint: Member must not be null", i + 1));
                        continue;
                    }
                    Some(Some(serde_json::Value::String(s))) => s,
                    Some(Some(other)) => {
                        return Err(serialization(format!(
                            "records[{i}].Data must be a base64 string, got {other}"
                        )))
                    }
                };
                let bytes = base64::engine::general_purpose::STANDARD
                    .decode(data)
                    .map_err(|e| serialization(format!("records[{i}].Data: {e}")))?;
                if bytes.len() > MAX_RECORD {
                    violations.push(format!("Value at 'records.{}.member.data' failed to satisfy constraint: Member must have length less than or equal to {MAX_RECORD}", i + 1));
                }
                records.push(bytes);
            }
        }
        Some(other) => {
            return Err(serialization(format!(
                "Records must be a list, got {other}"
            )))
        }
    }
    if !violations.is_empty() {
        let n = violations.len();
        let s = if n == 1 { "" } else { "s" };
        return Err(Refused::new(
            400,
            "ValidationException",
            format!(
                "{n} validation error{s} detected: {}",
                violations.join("; ")
            ),
        ));
    }
    let total: usize = records.iter().map(Vec::len).sum();
    if total > MAX_BYTES_PER_CALL {
        return Err(Refused::new(
            400,
            "InvalidArgumentException",
            format!("Records size {total} exceeds the {MAX_BYTES_PER_CALL} bytes limit"),
        ));
    }
    if !streams.contains(&stream) {
        return Err(Refused::new(
            400,
            "ResourceNotFoundException",
            format!("Firehose {stream} under account {ACCOUNT} not found."),
        ));
    }
    Ok(Body { stream, records })
}

/// Authenticates and validates; `Err` is the answer to send.
fn check(req: &Request, state: &Mutex<State>) -> Result<(Body, sigv4::Authorization), Refused> {
    if req.header("x-amz-target") != Some("Firehose_20150804.PutRecordBatch") {
        return Err(Refused::new(
            400,
            "UnknownOperationException",
            "only PutRecordBatch is faked",
        ));
    }
    let (keys, lookup, streams) = {
        let s = state.lock().unwrap();
        (s.keys.clone(), s.lookup.clone(), s.streams.clone())
    };
    let auth = sigv4::verify(req, "firehose", |k| {
        keys.get(k)
            .cloned()
            .or_else(|| lookup.as_ref().and_then(|l| l(k)))
    })
    .map_err(|r| Refused::new(400, r.code, r.message))?;
    Ok((parse_body(&req.body, &streams)?, auth))
}

async fn handle(req: Request, state: &Mutex<State>) -> Reply {
    {
        let mut s = state.lock().unwrap();
        if s.requests.len() == KEPT_REQUESTS {
            s.requests.pop_front();
        }
        s.requests.push_back(req.clone());
    }
    let mut call = Call {
        at: Instant::now(),
        stream: String::new(),
        records: Vec::new(),
        data_bytes: 0,
        access_key: req.access_key(),
        region: sigv4::parse_authorization(req.header("authorization").unwrap_or_default())
            .map(|a| a.region),
        accepted: Vec::new(),
        confirmed: true,
        status: 200,
        error: None,
    };
    let body = match check(&req, state) {
        Ok((body, _)) => body,
        Err(r) => {
            call.status = r.status;
            call.error = Some(r.code.to_owned());
            let mut s = state.lock().unwrap();
            s.refusals.push(format!("{}: {}", r.code, r.message));
            s.calls.push(call);
            return error_reply(r.status, r.code, &r.message);
        }
    };
    call.stream = body.stream;
    call.data_bytes = body.records.iter().map(Vec::len).sum();
    call.records = body.records;
    let n = call.records.len();
    let (fault, rate) = {
        let mut s = state.lock().unwrap();
        (s.faults.pop_front(), s.record_failure_rate)
    };
    let whole_call = {
        let s = state.lock().unwrap();
        if s.outage {
            Some(Fault::Error(503, "ServiceUnavailableException"))
        } else if s.request_failure_rate > 0.0
            && rand::thread_rng().gen_bool(s.request_failure_rate)
        {
            Some(Fault::Error(500, "InternalFailure"))
        } else {
            None
        }
    };
    let fault = whole_call.or(fault);
    let mut failed = vec![false; n];
    match fault {
        Some(Fault::Error(status, code)) => {
            call.accepted = vec![false; n];
            call.status = status;
            call.error = Some(code.to_owned());
            state.lock().unwrap().calls.push(call);
            return error_reply(status, code, "injected");
        }
        Some(Fault::Reset) => {
            call.accepted = vec![false; n];
            call.status = 0;
            state.lock().unwrap().calls.push(call);
            return Reply::Reset;
        }
        Some(Fault::Slow(d)) => {
            call.confirmed = false;
            call.accepted = vec![true; n];
            state.lock().unwrap().calls.push(call);
            tokio::time::sleep(d).await;
            return ok_reply(&vec![false; n]);
        }
        Some(Fault::FailRecords(positions)) => {
            for p in positions {
                if p < n {
                    failed[p] = true;
                }
            }
        }
        None => {}
    }
    if rate > 0.0 {
        let mut rng = rand::thread_rng();
        for f in failed.iter_mut() {
            if rng.gen_bool(rate) {
                *f = true;
            }
        }
    }
    let mut s = state.lock().unwrap();
    let quota = s.quota;
    if quota != Quota::default() {
        // Metered when the records are looked at, windows only moving forward.
        let now = Instant::now();
        let epoch = *s.epoch.get_or_insert(now);
        let window = now.saturating_duration_since(epoch).as_secs();
        if window > s.meter.window {
            s.meter = Meter {
                window,
                ..Meter::default()
            };
        }
        for (f, r) in failed.iter_mut().zip(&call.records) {
            if *f {
                continue;
            }
            let over = quota.records.is_some_and(|q| s.meter.records + 1 > q)
                || quota
                    .bytes
                    .is_some_and(|q| s.meter.bytes + r.len() as u64 > q);
            if over {
                *f = true;
            } else {
                s.meter.records += 1;
                s.meter.bytes += r.len() as u64;
            }
        }
    }
    call.accepted = failed.iter().map(|f| !f).collect();
    s.calls.push(call);
    drop(s);
    ok_reply(&failed)
}

fn ok_reply(failed: &[bool]) -> Reply {
    let responses: Vec<serde_json::Value> = failed
        .iter()
        .enumerate()
        .map(|(i, f)| {
            if *f {
                serde_json::json!({"ErrorCode": "ServiceUnavailableException", "ErrorMessage": "Slow down."})
            } else {
                serde_json::json!({"RecordId": format!("rec-{i}")})
            }
        })
        .collect();
    let body = serde_json::json!({
        "FailedPutCount": failed.iter().filter(|f| **f).count(),
        "Encrypted": false,
        "RequestResponses": responses,
    });
    Reply::Response {
        status: 200,
        content_type: "application/x-amz-json-1.1",
        body: body.to_string().into_bytes(),
    }
}
