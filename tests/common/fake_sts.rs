//! An in-process fake of STS `AssumeRoleWithWebIdentity` (Query protocol, form-encoded body,
//! XML answer) that issues credentials with a short lifetime and remembers every token it was
//! given, so tests can check key validity, refresh timing and token rotation.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::http_server::{serve, Handler, OwnedRuntime, Reply, Request};

/// Credentials the fake issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_key: String,
    pub issued: SystemTime,
    pub expires: SystemTime,
    pub token: String,
    pub role_arn: String,
    pub session_name: String,
    pub duration_seconds: Option<u32>,
}

struct State {
    lifetime: Duration,
    down: bool,
    issued: Vec<Issued>,
    refused: u32,
}

/// The fake service.
pub struct FakeSts {
    pub addr: SocketAddr,
    pub url: String,
    state: Arc<Mutex<State>>,
    _rt: OwnedRuntime,
}

impl FakeSts {
    /// Issues credentials valid for `lifetime` (whatever DurationSeconds says).
    pub fn start(lifetime: Duration) -> FakeSts {
        let rt = OwnedRuntime::new();
        let state = Arc::new(Mutex::new(State {
            lifetime,
            down: false,
            issued: Vec::new(),
            refused: 0,
        }));
        let s = Arc::clone(&state);
        let handler: Handler = Arc::new(move |req| {
            let s = Arc::clone(&s);
            Box::pin(async move { handle(req, &s) })
        });
        let addr = rt.block_on(serve(None, handler));
        FakeSts {
            addr,
            url: format!("http://127.0.0.1:{}", addr.port()),
            state,
            _rt: rt,
        }
    }

    /// While down, every call gets HTTP 503.
    pub fn set_down(&self, down: bool) {
        self.state.lock().unwrap().down = down;
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.state.lock().unwrap().issued.clone()
    }

    /// Calls refused while down.
    pub fn refused(&self) -> u32 {
        self.state.lock().unwrap().refused
    }

    /// True if `key` was issued here and has not expired.
    pub fn is_valid(&self, key: &str) -> bool {
        let now = SystemTime::now();
        self.state
            .lock()
            .unwrap()
            .issued
            .iter()
            .any(|i| i.access_key == key && now < i.expires)
    }

    /// A predicate for [`super::fake_firehose::FakeFirehose::set_key_check`].
    pub fn key_check(self: &Arc<Self>) -> super::fake_firehose::KeyCheck {
        let me = Arc::clone(self);
        Arc::new(move |k| me.is_valid(k))
    }
}

fn form(body: &[u8]) -> Vec<(String, String)> {
    String::from_utf8_lossy(body)
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (decode(k), decode(v)))
        .collect()
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3]).unwrap_or("00");
                out.push(u8::from_str_radix(hex, 16).unwrap_or(b'?'));
                i += 2;
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).to_string()
}

fn xml_error(status: u16, code: &str, message: &str) -> Reply {
    let body = format!(
        "<ErrorResponse xmlns=\"https://sts.amazonaws.com/doc/2011-06-15/\"><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fake</RequestId></ErrorResponse>"
    );
    Reply::Response {
        status,
        content_type: "text/xml",
        body: body.into_bytes(),
    }
}

fn handle(req: Request, state: &Mutex<State>) -> Reply {
    let params = form(&req.body);
    let get = |k: &str| params.iter().find(|(n, _)| n == k).map(|(_, v)| v.clone());
    let mut s = state.lock().unwrap();
    if s.down {
        s.refused += 1;
        return xml_error(503, "ServiceUnavailable", "injected outage");
    }
    if get("Action").as_deref() != Some("AssumeRoleWithWebIdentity") {
        return xml_error(
            400,
            "InvalidAction",
            "only AssumeRoleWithWebIdentity is faked",
        );
    }
    let Some(token) = get("WebIdentityToken").filter(|t| !t.is_empty()) else {
        return xml_error(400, "InvalidIdentityToken", "no token");
    };
    let n = s.issued.len();
    let now = SystemTime::now();
    let expires = now + s.lifetime;
    let issued = Issued {
        access_key: format!("ASIAFAKE{n:08}"),
        issued: now,
        expires,
        token,
        role_arn: get("RoleArn").unwrap_or_default(),
        session_name: get("RoleSessionName").unwrap_or_default(),
        duration_seconds: get("DurationSeconds").and_then(|d| d.parse().ok()),
    };
    let exp = chrono::DateTime::<chrono::Utc>::from(expires).format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let body = format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser><Arn>{arn}/{session}</Arn><AssumedRoleId>AROAFAKE:{session}</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <SessionToken>session-token-{n}</SessionToken>
      <SecretAccessKey>fake-secret-{n}</SecretAccessKey>
      <Expiration>{exp}</Expiration>
      <AccessKeyId>{key}</AccessKeyId>
    </Credentials>
    <Provider>fake</Provider>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>fake-{n}</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>"#,
        arn = issued.role_arn,
        session = issued.session_name,
        key = issued.access_key,
    );
    s.issued.push(issued);
    Reply::Response {
        status: 200,
        content_type: "text/xml",
        body: body.into_bytes(),
    }
}
