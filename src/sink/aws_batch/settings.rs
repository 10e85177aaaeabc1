//! Checks of the settings every batch-put output has (region, per-call limits, rates,
//! endpoint, proxy, TLS, credentials), so each output's `problems()` reports them alike.

use std::path::Path;

use super::batch::CallLimits;
use super::pacing::PacingLimits;
use crate::aws::credentials::config::CredentialsConfig;
use crate::primitives::{ByteSize, ConfigDuration, SecretUrl};

/// Problems as (key under the output, message).
pub type Problems = Vec<(&'static str, String)>;

/// A region set to nothing, or none set anywhere.
pub fn region_problems(region: Option<&str>) -> Problems {
    let mut p = Vec::new();
    if region.is_some_and(|r| r.trim().is_empty()) {
        p.push(("region", "must not be empty".to_owned()));
    }
    let env_region = ["AWS_REGION", "AWS_DEFAULT_REGION"]
        .iter()
        .any(|v| std::env::var(v).is_ok_and(|r| !r.is_empty()));
    if region.is_none() && !env_region {
        p.push((
            "region",
            "not set, and neither AWS_REGION nor AWS_DEFAULT_REGION is set".to_owned(),
        ));
    }
    p
}

/// The per-call and rate settings of an output, with its service's hard per-call limits.
#[derive(Debug, Clone, Copy)]
pub struct Sending<'a> {
    /// The call, for messages (`PutRecords`).
    pub operation: &'static str,
    /// The service's limit on records per call.
    pub service_max_records: usize,
    /// The service's limit on bytes per call, and its spelling (`5MiB`).
    pub service_max_bytes: (usize, &'static str),
    /// `max_records_per_call`.
    pub max_records_per_call: usize,
    /// `max_bytes_per_call`.
    pub max_bytes_per_call: ByteSize,
    /// `max_concurrent_calls`.
    pub max_concurrent_calls: usize,
    /// `request_timeout`.
    pub request_timeout: &'a ConfigDuration,
    /// `max_records_per_second`.
    pub max_records_per_second: Option<f64>,
    /// `max_requests_per_second`.
    pub max_requests_per_second: Option<f64>,
    /// `max_bytes_per_second`.
    pub max_bytes_per_second: Option<ByteSize>,
    /// `retries_on_batch_request`.
    pub retries_on_batch_request: u32,
    /// `adaptive_pacing`.
    pub adaptive_pacing: bool,
}

impl Sending<'_> {
    /// What the call loop uses: the configured per-call limits within the service's, the
    /// resends and the concurrency.
    pub fn call_settings(&self) -> super::Sending {
        super::Sending {
            limits: CallLimits {
                max_records: self.max_records_per_call,
                max_bytes: usize::try_from(self.max_bytes_per_call.0).unwrap_or(usize::MAX),
            }
            .within(CallLimits {
                max_records: self.service_max_records,
                max_bytes: self.service_max_bytes.0,
            }),
            retries: self.retries_on_batch_request,
            concurrency: self.max_concurrent_calls,
        }
    }

    /// What the pacer is given: the output-wide rates and whether it adapts to throttling.
    pub fn pacing_limits(&self) -> PacingLimits {
        PacingLimits {
            records: self.max_records_per_second,
            bytes: self.max_bytes_per_second.map(|b| b.0 as f64),
            requests: self.max_requests_per_second,
            adaptive: self.adaptive_pacing,
        }
    }
}

/// Problems of the per-call limits and rates.
pub fn sending_problems(s: &Sending<'_>) -> Problems {
    let mut p = Vec::new();
    let (op, max_records) = (s.operation, s.service_max_records);
    if !(1..=max_records).contains(&s.max_records_per_call) {
        p.push((
            "max_records_per_call",
            format!("must be between 1 and {max_records} ({op} limit)"),
        ));
    }
    let (max_bytes, spelled) = s.service_max_bytes;
    if s.max_bytes_per_call.0 == 0 || s.max_bytes_per_call.0 > max_bytes as u64 {
        p.push((
            "max_bytes_per_call",
            format!("must be greater than 0 and at most {spelled} ({op} limit)"),
        ));
    }
    if !(1..=64).contains(&s.max_concurrent_calls) {
        p.push((
            "max_concurrent_calls",
            "must be between 1 and 64".to_owned(),
        ));
    }
    if s.request_timeout.0.is_zero() {
        p.push(("request_timeout", "must be greater than 0".to_owned()));
    }
    for (key, v) in [
        ("max_records_per_second", s.max_records_per_second),
        ("max_requests_per_second", s.max_requests_per_second),
    ] {
        if v.is_some_and(|v| !(v > 0.0 && v.is_finite())) {
            p.push((key, "must be a positive number".to_owned()));
        }
    }
    if s.max_bytes_per_second.is_some_and(|b| b.0 == 0) {
        p.push(("max_bytes_per_second", "must be greater than 0".to_owned()));
    }
    p
}

/// Problems of the endpoint, proxy, TLS and credentials settings.
pub fn connection_problems(
    endpoint_url: Option<&str>,
    proxy_url: Option<&SecretUrl>,
    tls_ca_file: Option<&Path>,
    credentials: Option<&CredentialsConfig>,
) -> Problems {
    let mut p = Vec::new();
    let urls = [
        ("endpoint_url", endpoint_url),
        ("proxy_url", proxy_url.map(|u| u.expose())),
    ];
    for (key, url) in urls {
        if url.is_some_and(|u| !(u.starts_with("http://") || u.starts_with("https://"))) {
            p.push((key, "must be an http:// or https:// URL".to_owned()));
        }
    }
    if let Some(ca) = tls_ca_file {
        if let Err(e) = crate::aws::http::read_ca_file(ca) {
            p.push(("tls_ca_file", e.to_string()));
        }
    }
    match credentials {
        Some(c) => p.extend(c.problems()),
        // IRSA variables present: check them as if they had been written out.
        None => {
            if let Some(w) = crate::aws::credentials::config::WebIdentityConfig::from_env() {
                p.extend(w.problems());
            }
        }
    }
    p
}
