//! What every batch-put output sets up the same way before its first call: the region, the
//! HTTP client (`tls_ca_file`, `proxy_url`), the credentials (with `web_identity` and its
//! refresher) and the SDK configuration (the SDK's own retries and stall detection off, one
//! attempt's timeout).
//! The service's face then builds its own SDK client from [`Connection::sdk`], adding its
//! `endpoint_url`; `AWS_ENDPOINT_URL_<SERVICE>` is read by the SDK when none is set.

use std::sync::Arc;
use std::time::Duration;

use aws_config::retry::RetryConfig;
use aws_config::stalled_stream_protection::StalledStreamProtectionConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::{BehaviorVersion, Region, SdkConfig};

use crate::aws::credentials::config::CredentialsConfig;
use crate::aws::credentials::{AwsContext, OutputCredentials};
use crate::aws::http::{build_http_client, HttpOptions};
use crate::ops::metrics::Metrics;

/// Why an output could not be built (the relay does not start).
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    /// No region anywhere.
    #[error("no region: set `region` or AWS_REGION")]
    NoRegion,
    /// HTTP client (CA file, proxy).
    #[error(transparent)]
    Http(#[from] crate::aws::http::HttpClientError),
    /// Credentials setup.
    #[error(transparent)]
    Credentials(#[from] crate::aws::credentials::CredentialsSetupError),
}

/// The connection settings an output's configuration gives.
#[derive(Debug, Clone, Copy)]
pub struct ConnectOptions<'a> {
    /// `region`; `None`: the SDK's default chain (`AWS_REGION`, profile…).
    pub region: Option<&'a str>,
    /// `tls_ca_file` and `proxy_url`.
    pub http: &'a HttpOptions,
    /// The `credentials` section.
    pub credentials: Option<&'a CredentialsConfig>,
    /// Timeout of one call attempt.
    pub request_timeout: Duration,
}

/// The region, credentials and SDK configuration of one output.
pub struct Connection {
    /// The region the output sends to.
    pub region: Region,
    /// Its credentials (kept: they hold the refresher).
    pub credentials: OutputCredentials,
    /// SDK configuration for the service's client.
    pub sdk: SdkConfig,
}

/// Sets up the connection of output `name`.
pub async fn connect(
    name: &str,
    opts: ConnectOptions<'_>,
    metrics: &Arc<Metrics>,
) -> Result<Connection, BuildError> {
    let region = match opts.region {
        Some(r) => Region::new(r.to_owned()),
        None => aws_config::default_provider::region::DefaultRegionChain::builder()
            .build()
            .region()
            .await
            .ok_or(BuildError::NoRegion)?,
    };
    let http = build_http_client(opts.http)?;
    let ctx = AwsContext {
        output: name.to_owned(),
        region: region.clone(),
        http: http.clone(),
        metrics: Arc::clone(metrics),
    };
    let credentials = crate::aws::credentials::build(opts.credentials, &ctx).await?;
    let timeout = opts.request_timeout;
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region.clone())
        .http_client(http)
        .retry_config(RetryConfig::disabled())
        // Every attempt, the upload of its body and the read of its answer included, is bounded
        // by `request_timeout` (the attempt timeout below), so a stalled call fails anyway. The
        // SDK's stall detection wraps both bodies in a throughput meter checked on every poll:
        // 1.5 % of the relay's CPU in the e2e bench's profile (benches/README.md, "calls").
        .stalled_stream_protection(StalledStreamProtectionConfig::disabled())
        .timeout_config(
            TimeoutConfig::builder()
                .operation_attempt_timeout(timeout)
                .connect_timeout(timeout.min(Duration::from_secs(10)))
                .build(),
        )
        .credentials_provider(credentials.provider.clone());
    if credentials.self_cached {
        loader = loader.identity_cache(aws_config::identity::IdentityCache::no_cache());
    }
    let sdk = loader.load().await;
    Ok(Connection {
        region,
        credentials,
        sdk,
    })
}
