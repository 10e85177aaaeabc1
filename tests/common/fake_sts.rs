//! An in-process fake of STS `AssumeRoleWithWebIdentity` (Query protocol, form-encoded body,
//! XML answer) that issues credentials with a short lifetime and remembers every token it was
//! given, so tests can check key validity, refresh timing and token rotation.
//!
//! It validates parameters as STS does (constraints from botocore's `sts` model):
//! `RoleArn` 20–2048 characters and an IAM role ARN, `RoleSessionName` 2–64 of `[\w+=,.@-]`,
//! `WebIdentityToken` 4–20,000 characters, `DurationSeconds` 900–43,200 and at most the role's
//! `MaxSessionDuration` ([`FakeSts::set_max_session_duration`]), `Policy` 1–2,048 characters of
//! JSON; a violation is answered `400 ValidationError` (or `MalformedPolicyDocument`) in STS's
//! XML error shape. Issued keys are signed-for by their secret and session token: see
//! [`FakeSts::key_lookup`].

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use super::http_server::{serve, Handler, OwnedRuntime, Reply, Request};
use super::sigv4::KeyInfo;

/// Credentials the fake issued.
#[derive(Debug, Clone)]
pub struct Issued {
    pub access_key: String,
    pub secret: String,
    pub session_token: String,
    pub issued: SystemTime,
    pub expires: SystemTime,
    pub token: String,
    pub role_arn: String,
    pub session_name: String,
    pub duration_seconds: Option<u32>,
    pub policy: Option<String>,
}

struct State {
    lifetime: Duration,
    down: bool,
    issued: Vec<Issued>,
    refused: u32,
    max_session_duration: u32,
    /// Calls refused as invalid (`Code: message`).
    invalid: Vec<String>,
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
            max_session_duration: 43_200,
            invalid: Vec::new(),
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

    /// The role's `MaxSessionDuration` (1 to 12 hours in IAM; 12 hours here unless set).
    pub fn set_max_session_duration(&self, seconds: u32) {
        self.state.lock().unwrap().max_session_duration = seconds;
    }

    /// Calls refused as invalid requests (`Code: message`).
    pub fn invalid_calls(&self) -> Vec<String> {
        self.state.lock().unwrap().invalid.clone()
    }

    pub fn issued(&self) -> Vec<Issued> {
        self.state.lock().unwrap().issued.clone()
    }

    /// Calls refused while down.
    pub fn refused(&self) -> u32 {
        self.state.lock().unwrap().refused
    }

    /// What a service fake needs to check a signature made with `key`: the secret and session
    /// token issued with it, and whether it has expired. `None` for keys never issued here.
    pub fn key_info(&self, key: &str) -> Option<KeyInfo> {
        let now = SystemTime::now();
        let s = self.state.lock().unwrap();
        let i = s.issued.iter().find(|i| i.access_key == key)?;
        Some(KeyInfo {
            secret: i.secret.clone(),
            session_token: Some(i.session_token.clone()),
            expired: now >= i.expires,
        })
    }

    /// A lookup for [`super::fake_firehose::FakeFirehose::trust_keys_from`].
    pub fn key_lookup(self: &Arc<Self>) -> super::fake_firehose::KeyLookup {
        let me = Arc::clone(self);
        Arc::new(move |k| me.key_info(k))
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

/// A parameter check that failed: STS's error code and message.
type Invalid = (&'static str, String);

fn constraint(value: &str, field: &str, rule: &str) -> Invalid {
    (
        "ValidationError",
        format!("1 validation error detected: Value '{value}' at '{field}' failed to satisfy constraint: {rule}"),
    )
}

fn required<'a>(value: &'a Option<String>, field: &str) -> Result<&'a str, Invalid> {
    value.as_deref().ok_or_else(|| {
        (
            "ValidationError",
            format!("1 validation error detected: Value null at '{field}' failed to satisfy constraint: Member must not be null"),
        )
    })
}

fn length(value: &str, field: &str, min: usize, max: usize) -> Result<(), Invalid> {
    let n = value.chars().count();
    if (min..=max).contains(&n) {
        Ok(())
    } else {
        Err(constraint(
            value,
            field,
            &format!("Member must have length between {min} and {max}"),
        ))
    }
}

/// `arn:aws:iam::<12 digits>:role/<path/name>` (also the aws-cn and aws-us-gov partitions).
fn is_role_arn(arn: &str) -> bool {
    let parts: Vec<&str> = arn.splitn(6, ':').collect();
    let ["arn", partition, "iam", "", account, resource] = parts[..] else {
        return false;
    };
    partition.starts_with("aws")
        && account.len() == 12
        && account.bytes().all(|b| b.is_ascii_digit())
        && resource
            .strip_prefix("role/")
            .is_some_and(|r| !r.is_empty())
}

/// The checked parameters of one call.
struct Params {
    role_arn: String,
    session_name: String,
    token: String,
    duration_seconds: Option<u32>,
    policy: Option<String>,
}

fn validate(get: impl Fn(&str) -> Option<String>, max_session: u32) -> Result<Params, Invalid> {
    let (arn, name, token) = (
        get("RoleArn"),
        get("RoleSessionName"),
        get("WebIdentityToken"),
    );
    let arn = required(&arn, "roleArn")?;
    length(arn, "roleArn", 20, 2048)?;
    if !is_role_arn(arn) {
        return Err(("ValidationError", format!("Request ARN is invalid: {arn}")));
    }
    let name = required(&name, "roleSessionName")?;
    length(name, "roleSessionName", 2, 64)?;
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
    if !name.chars().all(ok_char) {
        return Err(constraint(
            name,
            "roleSessionName",
            "Member must satisfy regular expression pattern: [\\w+=,.@-]*",
        ));
    }
    let token = required(&token, "webIdentityToken")?;
    length(token, "webIdentityToken", 4, 20_000)?;
    let duration_seconds = match get("DurationSeconds") {
        None => None,
        Some(d) => {
            let secs: i64 = d.parse().map_err(|_| {
                (
                    "ValidationError",
                    format!("Value '{d}' at 'durationSeconds' is not an integer"),
                )
            })?;
            if secs < 900 {
                return Err(constraint(
                    &d,
                    "durationSeconds",
                    "Member must have value greater than or equal to 900",
                ));
            }
            if secs > 43_200 {
                return Err(constraint(
                    &d,
                    "durationSeconds",
                    "Member must have value less than or equal to 43200",
                ));
            }
            if secs > i64::from(max_session) {
                return Err((
                    "ValidationError",
                    format!("The requested DurationSeconds exceeds the MaxSessionDuration set for this role ({max_session})."),
                ));
            }
            Some(secs as u32)
        }
    };
    let policy = get("Policy");
    if let Some(p) = &policy {
        length(p, "policy", 1, 2048)?;
        if serde_json::from_str::<serde_json::Value>(p).is_err() {
            return Err((
                "MalformedPolicyDocument",
                "The policy is not in the valid JSON format.".to_owned(),
            ));
        }
    }
    Ok(Params {
        role_arn: arn.to_owned(),
        session_name: name.to_owned(),
        token: token.to_owned(),
        duration_seconds,
        policy,
    })
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
    let p = match validate(get, s.max_session_duration) {
        Ok(p) => p,
        Err((code, message)) => {
            s.invalid.push(format!("{code}: {message}"));
            return xml_error(400, code, &message);
        }
    };
    let n = s.issued.len();
    let now = SystemTime::now();
    let expires = now + s.lifetime;
    let issued = Issued {
        access_key: format!("ASIAFAKE{n:08}"),
        secret: format!("fake-secret-{n}"),
        session_token: format!("session-token-{n}"),
        issued: now,
        expires,
        token: p.token,
        role_arn: p.role_arn,
        session_name: p.session_name,
        duration_seconds: p.duration_seconds,
        policy: p.policy,
    };
    let exp = chrono::DateTime::<chrono::Utc>::from(expires).format("%Y-%m-%dT%H:%M:%S%.3fZ");
    let body = format!(
        r#"<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:ns:sa</SubjectFromWebIdentityToken>
    <Audience>sts.amazonaws.com</Audience>
    <AssumedRoleUser><Arn>{arn}/{session}</Arn><AssumedRoleId>AROAFAKE:{session}</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <SessionToken>{token}</SessionToken>
      <SecretAccessKey>{secret}</SecretAccessKey>
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
        secret = issued.secret,
        token = issued.session_token,
    );
    s.issued.push(issued);
    Reply::Response {
        status: 200,
        content_type: "text/xml",
        body: body.into_bytes(),
    }
}
