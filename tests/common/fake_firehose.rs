//! An in-process fake of Kinesis Data Firehose's PutRecordBatch (AWS JSON 1.1,
//! `X-Amz-Target: Firehose_20150804.PutRecordBatch`, base64 records), over HTTP or HTTPS, with
//! fault injection, recording every call.
//!
//! Faults: a queue consumed one per call ([`Fault`]), a per-record failure probability, and an
//! optional access-key check (only keys accepted by a predicate, e.g. those the fake STS issued
//! and that have not expired).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use rand::Rng;

use super::http_server::{serve, Handler, OwnedRuntime, Reply, Request, TestCa};

/// Firehose's per-record limit (data bytes before base64).
pub const MAX_RECORD: usize = 1_024_000;
/// PutRecordBatch limits.
pub const MAX_RECORDS_PER_CALL: usize = 500;
pub const MAX_BYTES_PER_CALL: usize = 4 * 1024 * 1024;

/// What to do with one call.
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
    /// Per record: accepted by the fake.
    pub accepted: Vec<bool>,
    /// False when the client may not have seen the answer (slow reply).
    pub confirmed: bool,
    pub status: u16,
}

#[derive(Default)]
struct State {
    faults: VecDeque<Fault>,
    record_failure_rate: f64,
    calls: Vec<Call>,
    limit_violations: Vec<String>,
}

pub type KeyCheck = Arc<dyn Fn(&str) -> bool + Send + Sync>;

/// The fake service. Dropping it stops it.
pub struct FakeFirehose {
    pub addr: SocketAddr,
    /// `http://127.0.0.1:PORT` or `https://localhost:PORT`.
    pub url: String,
    /// PEM of the CA that signed the HTTPS certificate.
    pub ca_pem: Option<String>,
    state: Arc<Mutex<State>>,
    key_check: Arc<Mutex<Option<KeyCheck>>>,
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
        let key_check: Arc<Mutex<Option<KeyCheck>>> = Arc::new(Mutex::new(None));
        let (s, k) = (Arc::clone(&state), Arc::clone(&key_check));
        let handler: Handler = Arc::new(move |req| {
            let (s, k) = (Arc::clone(&s), Arc::clone(&k));
            Box::pin(async move { handle(req, &s, &k).await })
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
            key_check,
            _rt: rt,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Queues faults for the next calls, one per call.
    pub fn push_faults(&self, faults: impl IntoIterator<Item = Fault>) {
        self.lock().faults.extend(faults);
    }

    /// Each record of each call fails with this probability (ServiceUnavailableException).
    pub fn set_record_failure_rate(&self, p: f64) {
        self.lock().record_failure_rate = p;
    }

    /// Accept only calls signed with a key this predicate accepts (others: 400
    /// ExpiredTokenException).
    pub fn set_key_check(&self, check: KeyCheck) {
        *self.key_check.lock().unwrap() = Some(check);
    }

    pub fn calls(&self) -> Vec<Call> {
        self.lock().calls.clone()
    }

    /// Limits a call broke (500 records, 4 MiB, 1,024,000 bytes per record).
    pub fn limit_violations(&self) -> Vec<String> {
        self.lock().limit_violations.clone()
    }

    /// Every record accepted, in arrival order (duplicates included).
    pub fn accepted(&self) -> Vec<Vec<u8>> {
        let s = self.lock();
        s.calls
            .iter()
            .flat_map(|c| {
                c.records
                    .iter()
                    .zip(&c.accepted)
                    .filter(|(_, a)| **a)
                    .map(|(r, _)| r.clone())
            })
            .collect()
    }

    /// Records accepted in calls whose answer the client may have missed.
    pub fn unconfirmed(&self) -> Vec<Vec<u8>> {
        let s = self.lock();
        s.calls
            .iter()
            .filter(|c| !c.confirmed)
            .flat_map(|c| {
                c.records
                    .iter()
                    .zip(&c.accepted)
                    .filter(|(_, a)| **a)
                    .map(|(r, _)| r.clone())
            })
            .collect()
    }
}

fn error_reply(status: u16, code: &str, message: &str) -> Reply {
    Reply::Response {
        status,
        content_type: "application/x-amz-json-1.1",
        body: serde_json::json!({"__type": code, "message": message})
            .to_string()
            .into_bytes(),
    }
}

async fn handle(req: Request, state: &Mutex<State>, key_check: &Mutex<Option<KeyCheck>>) -> Reply {
    if req.header("x-amz-target") != Some("Firehose_20150804.PutRecordBatch") {
        return error_reply(
            400,
            "UnknownOperationException",
            "only PutRecordBatch is faked",
        );
    }
    let access_key = req.access_key();
    let body: serde_json::Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => return error_reply(400, "SerializationException", &e.to_string()),
    };
    let stream = body["DeliveryStreamName"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut records = Vec::new();
    for r in body["Records"].as_array().cloned().unwrap_or_default() {
        let data = base64::engine::general_purpose::STANDARD
            .decode(r["Data"].as_str().unwrap_or_default())
            .unwrap_or_default();
        records.push(data);
    }
    let data_bytes: usize = records.iter().map(Vec::len).sum();
    let mut call = Call {
        at: Instant::now(),
        stream,
        records,
        data_bytes,
        access_key: access_key.clone(),
        accepted: Vec::new(),
        confirmed: true,
        status: 200,
    };
    let check = key_check.lock().unwrap().clone();
    let (fault, rate) = {
        let mut s = state.lock().unwrap();
        if call.records.len() > MAX_RECORDS_PER_CALL {
            s.limit_violations
                .push(format!("{} records in one call", call.records.len()));
        }
        if call.data_bytes > MAX_BYTES_PER_CALL {
            s.limit_violations
                .push(format!("{} bytes in one call", call.data_bytes));
        }
        for r in &call.records {
            if r.len() > MAX_RECORD {
                s.limit_violations
                    .push(format!("a record of {} bytes", r.len()));
            }
        }
        (s.faults.pop_front(), s.record_failure_rate)
    };
    let n = call.records.len();
    if let Some(check) = check {
        if !access_key.as_deref().is_some_and(|k| check(k)) {
            call.accepted = vec![false; n];
            call.status = 400;
            state.lock().unwrap().calls.push(call);
            return error_reply(
                400,
                "ExpiredTokenException",
                "The security token included in the request is expired",
            );
        }
    }
    let mut failed = vec![false; n];
    match fault {
        Some(Fault::Error(status, code)) => {
            call.accepted = vec![false; n];
            call.status = status;
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
    call.accepted = failed.iter().map(|f| !f).collect();
    state.lock().unwrap().calls.push(call);
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
