//! AWS Signature Version 4, checked the way an AWS front end checks it: the fakes recompute the
//! signature of each request from the secret they know for its access key and from the bytes
//! that actually arrived (body included), and refuse a mismatch with AWS's error codes.
//!
//! Written from AWS's SigV4 specification ("Create a signed AWS API request"): canonical
//! request, string to sign, HMAC-SHA256 key derivation `AWS4+secret → date → region → service →
//! "aws4_request"`. `tests/aws_requests.rs` holds this verifier and the relay's signer to
//! botocore's independent implementation.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use super::http_server::Request;

/// What a fake knows about one access key.
#[derive(Debug, Clone)]
pub struct KeyInfo {
    /// The secret access key the signature must be made with.
    pub secret: String,
    /// For temporary credentials: the session token the request must carry in
    /// `X-Amz-Security-Token`.
    pub session_token: Option<String>,
    /// The credentials' expiry has passed.
    pub expired: bool,
}

/// Why a request is refused, as AWS answers it (all HTTP 400 for JSON and Query services).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    /// The error code (`__type` in JSON, `Code` in XML).
    pub code: &'static str,
    /// AWS's message for it.
    pub message: String,
}

impl Refusal {
    fn new(code: &'static str, message: impl Into<String>) -> Refusal {
        Refusal {
            code,
            message: message.into(),
        }
    }

    fn unrecognized() -> Refusal {
        Refusal::new(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    }

    fn mismatch(detail: &str) -> Refusal {
        Refusal::new(
            "InvalidSignatureException",
            format!(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. ({detail})"
            ),
        )
    }
}

/// The parsed `Authorization` header.
#[derive(Debug, Clone)]
pub struct Authorization {
    pub access_key: String,
    pub date: String,
    pub region: String,
    pub service: String,
    pub signed_headers: Vec<String>,
    pub signature: String,
}

/// Parses `AWS4-HMAC-SHA256 Credential=AK/DATE/REGION/SERVICE/aws4_request,
/// SignedHeaders=a;b, Signature=hex`.
pub fn parse_authorization(value: &str) -> Option<Authorization> {
    let rest = value.strip_prefix("AWS4-HMAC-SHA256 ")?;
    let mut credential = None;
    let mut signed = None;
    let mut signature = None;
    for part in rest.split(',') {
        let (k, v) = part.trim().split_once('=')?;
        match k {
            "Credential" => credential = Some(v),
            "SignedHeaders" => signed = Some(v),
            "Signature" => signature = Some(v),
            _ => return None,
        }
    }
    let scope: Vec<&str> = credential?.split('/').collect();
    let [key, date, region, service, "aws4_request"] = scope[..] else {
        return None;
    };
    Some(Authorization {
        access_key: key.to_owned(),
        date: date.to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers: signed?.split(';').map(str::to_owned).collect(),
        signature: signature?.to_owned(),
    })
}

fn sha256_hex(data: &[u8]) -> String {
    hex::encode(Sha256::digest(data))
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut m = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes any key length");
    m.update(data);
    m.finalize().into_bytes().to_vec()
}

/// RFC 3986 encoding as SigV4 wants it: unreserved characters kept, everything else `%XX`.
fn uri_encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// The canonical request of SigV4 for `req` as it arrived, with the payload hashed from the
/// received body (so a body that differs from the signed one cannot match).
pub fn canonical_request(req: &Request, signed_headers: &[String]) -> String {
    let (path, query) = req.path.split_once('?').unwrap_or((&req.path, ""));
    // Services other than S3 encode the (already encoded) path once more.
    let uri = uri_encode(if path.is_empty() { "/" } else { path }, true);
    let mut params: Vec<(String, String)> = query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            (uri_encode(k, false), uri_encode(v, false))
        })
        .collect();
    params.sort();
    let query = params
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join("&");
    let mut headers = String::new();
    for name in signed_headers {
        let values: Vec<String> = req
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.split_whitespace().collect::<Vec<_>>().join(" "))
            .collect();
        headers.push_str(&format!("{name}:{}\n", values.join(",")));
    }
    format!(
        "{}\n{uri}\n{query}\n{headers}\n{}\n{}",
        req.method,
        signed_headers.join(";"),
        sha256_hex(&req.body)
    )
}

/// The signature SigV4 gives `req` under `secret` with the scope in `auth`.
pub fn signature(req: &Request, auth: &Authorization, secret: &str, amz_date: &str) -> String {
    let scope = format!(
        "{}/{}/{}/aws4_request",
        auth.date, auth.region, auth.service
    );
    let string_to_sign = format!(
        "AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{}",
        sha256_hex(canonical_request(req, &auth.signed_headers).as_bytes())
    );
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), auth.date.as_bytes());
    let k_region = hmac(&k_date, auth.region.as_bytes());
    let k_service = hmac(&k_region, auth.service.as_bytes());
    let k_signing = hmac(&k_service, b"aws4_request");
    hex::encode(hmac(&k_signing, string_to_sign.as_bytes()))
}

/// Signs a hand-made request in place (for tests that send requests no SDK would): adds
/// `X-Amz-Date`, `X-Amz-Security-Token` when `token` is set, and an `Authorization` header
/// over every header the request has (they must include `host`).
pub fn sign(
    req: &mut Request,
    access_key: &str,
    secret: &str,
    token: Option<&str>,
    region: &str,
    service: &str,
) {
    let amz_date = chrono::Utc::now().format("%Y%m%dT%H%M%SZ").to_string();
    req.headers.push(("X-Amz-Date".into(), amz_date.clone()));
    if let Some(t) = token {
        req.headers
            .push(("X-Amz-Security-Token".into(), t.to_owned()));
    }
    let mut signed: Vec<String> = req
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .collect();
    signed.sort();
    signed.dedup();
    let auth = Authorization {
        access_key: access_key.to_owned(),
        date: amz_date[..8].to_owned(),
        region: region.to_owned(),
        service: service.to_owned(),
        signed_headers: signed,
        signature: String::new(),
    };
    let sig = signature(req, &auth, secret, &amz_date);
    req.headers.push((
        "Authorization".into(),
        format!(
            "AWS4-HMAC-SHA256 Credential={access_key}/{}/{region}/{service}/aws4_request, SignedHeaders={}, Signature={sig}",
            auth.date,
            auth.signed_headers.join(";")
        ),
    ));
}

/// Checks `req`'s SigV4 signature for `service`; `lookup` gives what the fake knows about an
/// access key. Returns the parsed header on success.
pub fn verify(
    req: &Request,
    service: &str,
    lookup: impl Fn(&str) -> Option<KeyInfo>,
) -> Result<Authorization, Refusal> {
    let Some(value) = req.header("authorization") else {
        return Err(Refusal::new(
            "MissingAuthenticationTokenException",
            "Missing Authentication Token",
        ));
    };
    let auth = parse_authorization(value).ok_or_else(|| {
        Refusal::new(
            "IncompleteSignatureException",
            format!(
                "Authorization header requires Credential, SignedHeaders and Signature: {value}"
            ),
        )
    })?;
    let Some(key) = lookup(&auth.access_key) else {
        return Err(Refusal::unrecognized());
    };
    // A temporary key is only valid together with its session token, and the token must be
    // covered by the signature.
    if let Some(token) = &key.session_token {
        let sent = req.header("x-amz-security-token");
        if sent != Some(token.as_str())
            || !auth
                .signed_headers
                .iter()
                .any(|h| h == "x-amz-security-token")
        {
            return Err(Refusal::unrecognized());
        }
    }
    if key.expired {
        return Err(Refusal::new(
            "ExpiredTokenException",
            "The security token included in the request is expired",
        ));
    }
    if auth.service != service {
        return Err(Refusal::mismatch(&format!(
            "credential scope names service {:?}, expected {service:?}",
            auth.service
        )));
    }
    for required in ["host", "x-amz-date"] {
        if !auth.signed_headers.iter().any(|h| h == required) {
            return Err(Refusal::mismatch(&format!("{required} is not signed")));
        }
    }
    let amz_date = req.header("x-amz-date").unwrap_or_default().to_owned();
    if !amz_date.starts_with(&auth.date) {
        return Err(Refusal::mismatch(
            "X-Amz-Date differs from the scope's date",
        ));
    }
    // AWS refuses signatures more than 15 minutes away from its clock.
    let signed_at = chrono::NaiveDateTime::parse_from_str(&amz_date, "%Y%m%dT%H%M%SZ")
        .map_err(|_| Refusal::mismatch("X-Amz-Date is not a basic ISO 8601 UTC time"))?
        .and_utc();
    if (chrono::Utc::now() - signed_at).num_seconds().abs() > 15 * 60 {
        return Err(Refusal::new(
            "InvalidSignatureException",
            format!("Signature expired: {amz_date} is more than 15 minutes from the server's time"),
        ));
    }
    if let Some(claimed) = req.header("x-amz-content-sha256") {
        if claimed != sha256_hex(&req.body) {
            return Err(Refusal::mismatch(
                "x-amz-content-sha256 is not the body's hash",
            ));
        }
    }
    let want = signature(req, &auth, &key.secret, &amz_date);
    if want != auth.signature {
        return Err(Refusal::mismatch("signature differs"));
    }
    Ok(auth)
}
