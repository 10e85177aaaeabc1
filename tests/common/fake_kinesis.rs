//! An in-process fake of Kinesis Data Streams' PutRecords (AWS JSON 1.1,
//! `X-Amz-Target: Kinesis_20131202.PutRecords`, base64 data), with fault injection, storing
//! accepted records per shard as Kinesis routes them.
//!
//! It answers as Kinesis does, so a client bug cannot pass unnoticed:
//! * every request must carry a valid SigV4 signature for service `kinesis` made with a key
//!   the fake knows ([`FakeKinesis::allow_key`]);
//! * the body must match the service model: `StreamName` (1–128 of `[a-zA-Z0-9_.-]`) or
//!   `StreamARN`, `Records` 1–500, each with `Data` (base64, at most 1 MiB), `PartitionKey`
//!   (1–256 Unicode characters) and optionally `ExplicitHashKey` (`0|[1-9]\d{0,38}`), else
//!   `ValidationException` / `SerializationException`;
//! * a record whose data plus partition key is over 1 MiB, or more than 5 MiB of data plus
//!   keys in one call, is `InvalidArgumentException`;
//! * an unknown stream is `ResourceNotFoundException`.
//!
//! Accepted records go to the shard whose hash-key range holds the explicit hash key, else
//! the MD5 of the partition key read as a big-endian 128-bit integer; a stream's shards split
//! the hash-key space evenly, as `CreateStream` does.
//!
//! Faults: a queue consumed one per accepted call ([`Fault`]), per-record
//! `ProvisionedThroughputExceededException` with a probability, whole calls failing with a
//! probability (500 `InternalFailure`), and a per-shard quota per aligned one-second window
//! (records and bytes, 1,000 and 1 MiB on AWS), records over it refused inside the 200 answer.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use md5::{Digest, Md5};
use rand::Rng;

use super::fake_firehose::error_reply;
use super::http_server::{serve, Handler, OwnedRuntime, Reply, Request};
use super::sigv4::{self, KeyInfo};

/// Kinesis's per-record limit (data plus partition key) and per-call limits.
pub const MAX_RECORD: usize = 1024 * 1024;
pub const MAX_RECORDS_PER_CALL: usize = 500;
pub const MAX_BYTES_PER_CALL: usize = 5 * 1024 * 1024;
pub const ACCOUNT: &str = "123456789012";
pub const REGION: &str = "eu-west-1";

/// What to do with one call that passed authentication and validation.
#[derive(Debug, Clone)]
pub enum Fault {
    /// Answer with this status and error code, accepting nothing.
    Error(u16, &'static str),
    /// Reset the connection after reading the request, accepting nothing.
    Reset,
    /// Accept normally but answer only after this delay.
    Slow(Duration),
    /// Refuse these record positions with this code, accept the rest.
    FailRecords(Vec<usize>, &'static str),
}

/// One record as received.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub data: Vec<u8>,
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
}

/// One PutRecords call as received.
#[derive(Debug, Clone)]
pub struct Call {
    pub at: Instant,
    pub stream: String,
    pub records: Vec<Record>,
    /// Data plus partition key bytes, what Kinesis meters per call.
    pub bytes: usize,
    pub accepted: Vec<bool>,
    /// False when the client may not have seen the answer (slow reply).
    pub confirmed: bool,
    pub status: u16,
    pub error: Option<String>,
}

/// A shard's quota per one-second window.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Quota {
    pub records: Option<u64>,
    pub bytes: Option<u64>,
}

#[derive(Default)]
struct Stream {
    shards: Vec<Vec<Record>>,
    /// Per shard: (window, records, bytes) used.
    meters: Vec<(u64, u64, u64)>,
}

#[derive(Default)]
struct State {
    faults: VecDeque<Fault>,
    record_failure_rate: f64,
    request_failure_rate: f64,
    quota: Quota,
    epoch: Option<Instant>,
    calls: Vec<Call>,
    refusals: Vec<String>,
    streams: HashMap<String, Stream>,
    keys: HashMap<String, KeyInfo>,
}

/// The fake service. Dropping it stops it.
pub struct FakeKinesis {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT`.
    pub url: String,
    state: Arc<Mutex<State>>,
    _rt: OwnedRuntime,
}

impl FakeKinesis {
    pub fn http() -> FakeKinesis {
        let rt = OwnedRuntime::new();
        let state = Arc::new(Mutex::new(State::default()));
        let s = Arc::clone(&state);
        let handler: Handler = Arc::new(move |req| {
            let s = Arc::clone(&s);
            Box::pin(async move { handle(req, &s).await })
        });
        let addr = rt.block_on(serve(None, handler));
        FakeKinesis {
            addr,
            url: format!("http://127.0.0.1:{}", addr.port()),
            state,
            _rt: rt,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Creates a stream of `shards` shards (reachable by name and by ARN).
    pub fn create_stream(&self, name: &str, shards: usize) -> &Self {
        self.lock().streams.insert(
            name.to_owned(),
            Stream {
                shards: vec![Vec::new(); shards],
                meters: vec![(0, 0, 0); shards],
            },
        );
        self
    }

    /// The ARN of stream `name`.
    pub fn arn(name: &str) -> String {
        format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/{name}")
    }

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

    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// Each record fails with this probability (ProvisionedThroughputExceededException).
    pub fn set_record_failure_rate(&self, p: f64) {
        self.lock().record_failure_rate = p;
    }

    /// Each call fails with this probability (500 InternalFailure).
    pub fn set_request_failure_rate(&self, p: f64) {
        self.lock().request_failure_rate = p;
    }

    /// Meters every shard per aligned one-second window.
    pub fn set_quota(&self, quota: Quota) {
        self.lock().quota = quota;
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    pub fn refusals(&self) -> Vec<String> {
        self.lock().refusals.clone()
    }

    /// The records of each shard of `stream`, in the order stored.
    pub fn shards(&self, stream: &str) -> Vec<Vec<Record>> {
        self.lock()
            .streams
            .get(stream)
            .map(|s| s.shards.clone())
            .unwrap_or_default()
    }

    /// Every record accepted in `stream`, over all shards.
    pub fn accepted(&self, stream: &str) -> Vec<Record> {
        self.shards(stream).concat()
    }
}

/// The shard of `hash` among `shards` shards splitting the 128-bit hash-key space evenly.
pub fn shard_of(hash: u128, shards: usize) -> usize {
    if shards <= 1 {
        return 0;
    }
    let width = u128::MAX / shards as u128 + 1;
    ((hash / width) as usize).min(shards - 1)
}

/// The hash key of a record: its explicit hash key, else the MD5 of its partition key.
pub fn hash_key(r: &Record) -> u128 {
    match r.explicit_hash_key.as_deref().and_then(|h| h.parse().ok()) {
        Some(h) => h,
        None => u128::from_be_bytes(Md5::digest(r.partition_key.as_bytes()).into()),
    }
}

struct Refused {
    status: u16,
    code: &'static str,
    message: String,
}

fn refused(status: u16, code: &'static str, message: impl Into<String>) -> Refused {
    Refused {
        status,
        code,
        message: message.into(),
    }
}

fn is_hash_key(h: &str) -> bool {
    h == "0"
        || (h.len() <= 39
            && h.bytes().all(|b| b.is_ascii_digit())
            && !h.starts_with('0')
            && !h.is_empty())
}

/// Reads the body as Kinesis's deserializer and validator would.
fn parse_body(body: &[u8]) -> Result<(String, Vec<Record>), Refused> {
    let ser = |m: String| refused(400, "SerializationException", m);
    let v: serde_json::Value = serde_json::from_slice(body).map_err(|e| ser(e.to_string()))?;
    let obj = v.as_object().ok_or_else(|| ser("not an object".into()))?;
    let mut violations = Vec::new();
    let stream = match (obj.get("StreamName"), obj.get("StreamARN")) {
        (Some(serde_json::Value::String(s)), None) => {
            let ok = s
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b"_.-".contains(&b));
            if s.is_empty() || s.len() > 128 || !ok {
                violations.push(format!(
                    "Value '{s}' at 'streamName' failed to satisfy constraint"
                ));
            }
            s.clone()
        }
        (None, Some(serde_json::Value::String(a))) => {
            let prefix = format!("arn:aws:kinesis:{REGION}:{ACCOUNT}:stream/");
            match a.strip_prefix(&prefix) {
                Some(name) => name.to_owned(),
                None => {
                    return Err(refused(
                        400,
                        "ResourceNotFoundException",
                        format!("Stream {a} not found"),
                    ))
                }
            }
        }
        _ => {
            return Err(refused(
                400,
                "InvalidArgumentException",
                "exactly one of StreamName and StreamARN must be given",
            ))
        }
    };
    let Some(serde_json::Value::Array(list)) = obj.get("Records") else {
        return Err(ser("Records must be a list".into()));
    };
    if list.is_empty() || list.len() > MAX_RECORDS_PER_CALL {
        violations.push(format!(
            "Value at 'records' with {} members failed to satisfy constraint: Member must have length between 1 and {MAX_RECORDS_PER_CALL}",
            list.len()
        ));
    }
    let mut records = Vec::new();
    for (i, r) in list.iter().enumerate() {
        let o = r
            .as_object()
            .ok_or_else(|| ser(format!("records[{i}] is not an object")))?;
        let text = |k: &str| match o.get(k) {
            None | Some(serde_json::Value::Null) => Ok(None),
            Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
            Some(other) => Err(ser(format!(
                "records[{i}].{k} must be a string, got {other}"
            ))),
        };
        let data = text("Data")?.unwrap_or_default();
        let data = base64::engine::general_purpose::STANDARD
            .decode(data)
            .map_err(|e| ser(format!("records[{i}].Data: {e}")))?;
        let Some(partition_key) = text("PartitionKey")? else {
            violations.push(format!(
                "Value null at 'records.{}.member.partitionKey'",
                i + 1
            ));
            continue;
        };
        let chars = partition_key.chars().count();
        if !(1..=256).contains(&chars) {
            violations.push(format!(
                "Value at 'records.{}.member.partitionKey' failed to satisfy constraint: Member must have length between 1 and 256",
                i + 1
            ));
        }
        if data.len() > MAX_RECORD {
            violations.push(format!(
                "Value at 'records.{}.member.data' failed to satisfy constraint: Member must have length less than or equal to {MAX_RECORD}",
                i + 1
            ));
        }
        let explicit_hash_key = text("ExplicitHashKey")?;
        if let Some(h) = &explicit_hash_key {
            if !is_hash_key(h) || h.parse::<u128>().is_err() {
                violations.push(format!("Value '{h}' at 'records.{}.member.explicitHashKey' failed to satisfy constraint", i + 1));
            }
        }
        records.push(Record {
            data,
            partition_key,
            explicit_hash_key,
        });
    }
    if !violations.is_empty() {
        let n = violations.len();
        return Err(refused(
            400,
            "ValidationException",
            format!("{n} validation errors detected: {}", violations.join("; ")),
        ));
    }
    for (i, r) in records.iter().enumerate() {
        let size = r.data.len() + r.partition_key.len();
        if size > MAX_RECORD {
            return Err(refused(
                400,
                "InvalidArgumentException",
                format!("Record {i} has size {size}, over the {MAX_RECORD} bytes limit (data plus partition key)"),
            ));
        }
    }
    let total: usize = records
        .iter()
        .map(|r| r.data.len() + r.partition_key.len())
        .sum();
    if total > MAX_BYTES_PER_CALL {
        return Err(refused(
            400,
            "InvalidArgumentException",
            format!("Records size {total} exceeds the {MAX_BYTES_PER_CALL} bytes limit"),
        ));
    }
    Ok((stream, records))
}

fn check(req: &Request, state: &Mutex<State>) -> Result<(String, Vec<Record>), Refused> {
    if req.header("x-amz-target") != Some("Kinesis_20131202.PutRecords") {
        return Err(refused(
            400,
            "UnknownOperationException",
            "only PutRecords is faked",
        ));
    }
    let keys = state.lock().unwrap().keys.clone();
    sigv4::verify(req, "kinesis", |k| keys.get(k).cloned())
        .map_err(|r| refused(400, r.code, r.message))?;
    let (stream, records) = parse_body(&req.body)?;
    if !state.lock().unwrap().streams.contains_key(&stream) {
        return Err(refused(
            400,
            "ResourceNotFoundException",
            format!("Stream {stream} under account {ACCOUNT} not found."),
        ));
    }
    Ok((stream, records))
}

async fn handle(req: Request, state: &Mutex<State>) -> Reply {
    let (reply, slow) = answer(req, state);
    if let Some(d) = slow {
        tokio::time::sleep(d).await;
    }
    reply
}

/// The answer to a request, and how long to hold it back.
fn answer(req: Request, state: &Mutex<State>) -> (Reply, Option<Duration>) {
    let mut call = Call {
        at: Instant::now(),
        stream: String::new(),
        records: Vec::new(),
        bytes: 0,
        accepted: Vec::new(),
        confirmed: true,
        status: 200,
        error: None,
    };
    let (stream, records) = match check(&req, state) {
        Ok(b) => b,
        Err(r) => {
            call.status = r.status;
            call.error = Some(r.code.to_owned());
            let mut s = state.lock().unwrap();
            s.refusals.push(format!("{}: {}", r.code, r.message));
            s.calls.push(call);
            return (error_reply(r.status, r.code, &r.message), None);
        }
    };
    call.bytes = records
        .iter()
        .map(|r| r.data.len() + r.partition_key.len())
        .sum();
    call.stream = stream.clone();
    call.records = records;
    let n = call.records.len();
    let mut s = state.lock().unwrap();
    let mut fault = s.faults.pop_front();
    if s.request_failure_rate > 0.0 && rand::thread_rng().gen_bool(s.request_failure_rate) {
        fault = Some(Fault::Error(500, "InternalFailure"));
    }
    let mut failed: Vec<Option<&'static str>> = vec![None; n];
    let mut slow = None;
    match fault {
        Some(Fault::Error(status, code)) => {
            call.accepted = vec![false; n];
            call.status = status;
            call.error = Some(code.to_owned());
            s.calls.push(call);
            return (error_reply(status, code, "injected"), None);
        }
        Some(Fault::Reset) => {
            call.accepted = vec![false; n];
            call.status = 0;
            s.calls.push(call);
            return (Reply::Reset, None);
        }
        Some(Fault::Slow(d)) => slow = Some(d),
        Some(Fault::FailRecords(positions, code)) => {
            for p in positions.into_iter().filter(|&p| p < n) {
                failed[p] = Some(code);
            }
        }
        None => {}
    }
    let rate = s.record_failure_rate;
    if rate > 0.0 {
        let mut rng = rand::thread_rng();
        for f in failed.iter_mut().filter(|f| f.is_none()) {
            if rng.gen_bool(rate) {
                *f = Some("ProvisionedThroughputExceededException");
            }
        }
    }
    let quota = s.quota;
    let now = Instant::now();
    let epoch = *s.epoch.get_or_insert(now);
    let window = now.saturating_duration_since(epoch).as_secs();
    let mut answers = Vec::with_capacity(n);
    let st = s.streams.get_mut(&stream).expect("checked");
    let shards = st.shards.len();
    for (r, f) in call.records.iter().zip(failed.iter_mut()) {
        let shard = shard_of(hash_key(r), shards);
        if f.is_none() && quota != Quota::default() {
            let m = &mut st.meters[shard];
            if window > m.0 {
                *m = (window, 0, 0);
            }
            let size = (r.data.len() + r.partition_key.len()) as u64;
            let over = quota.records.is_some_and(|q| m.1 + 1 > q)
                || quota.bytes.is_some_and(|q| m.2 + size > q);
            if over {
                *f = Some("ProvisionedThroughputExceededException");
            } else {
                m.1 += 1;
                m.2 += size;
            }
        }
        answers.push(match f {
            Some(code) => {
                serde_json::json!({"ErrorCode": code, "ErrorMessage": "Rate exceeded for shard."})
            }
            None => {
                st.shards[shard].push(r.clone());
                serde_json::json!({
                    "SequenceNumber": format!("4959{:052}", st.shards[shard].len()),
                    "ShardId": format!("shardId-{shard:012}"),
                })
            }
        });
    }
    call.accepted = failed.iter().map(Option::is_none).collect();
    call.confirmed = slow.is_none();
    let failed_count = failed.iter().filter(|f| f.is_some()).count();
    s.calls.push(call);
    drop(s);
    let body = serde_json::json!({
        "FailedRecordCount": failed_count,
        "Records": answers,
    });
    let reply = Reply::Response {
        status: 200,
        content_type: "application/x-amz-json-1.1",
        body: body.to_string().into_bytes(),
    };
    (reply, slow)
}
