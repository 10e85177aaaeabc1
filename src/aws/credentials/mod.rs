//! Credentials for AWS outputs, with a scheduled background refresh for STS-based ones.
//!
//! The SDK's own web-identity provider sits behind a lazy cache: it refreshes only when a
//! request finds the credentials (nearly) expired, so the request waits on STS, fails with it,
//! and nothing retries ahead of time. Here a background task renews STS credentials
//! `refresh_before` ahead of expiry (capped at half their lifetime, minus up to 20 % jitter so
//! that replicas do not all call STS at once). When STS fails it keeps the current credentials
//! and retries with backoff while they are valid, logging and counting each failure. Requests
//! read the cached credentials through [`RefreshingProvider`], which never waits: once they have
//! expired it fails at once, the flush counts a `credentials` error, and the records wait in
//! the buffer until a refresh succeeds.
//!
//! Metrics (label `output`): `aws_credentials_expiry_timestamp_seconds`,
//! `aws_credentials_refreshes_total`, `aws_credentials_refresh_failures_total`.

pub mod config;
pub mod refresher;
pub mod sts;

use std::sync::Arc;
use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_credential_types::provider::SharedCredentialsProvider;
use aws_credential_types::Credentials;
use aws_sdk_sts::config::Region;
use aws_smithy_runtime_api::client::http::SharedHttpClient;

use self::config::{AssumeRoleConfig, CredentialsConfig, StsOptions, WebIdentityConfig};
use self::refresher::{CredentialMetrics, RefreshTask, Refresher, RefreshingProvider};
use self::sts::{AssumeRoleFetcher, Fetch, WebIdentityFetcher};
use crate::ops::metrics::Metrics;

/// Timeout of one STS call.
const STS_CALL_TIMEOUT: Duration = Duration::from_secs(10);

/// What an AWS client of one output needs.
#[derive(Clone)]
pub struct AwsContext {
    /// Output name (logs, metric labels).
    pub output: String,
    /// The output's region (default for STS).
    pub region: Region,
    /// The HTTP client (CA bundle, proxy).
    pub http: SharedHttpClient,
    /// Process metrics.
    pub metrics: Arc<Metrics>,
}

/// The credentials of one output, ready for an SDK client.
#[derive(Debug)]
pub struct OutputCredentials {
    /// What the client calls.
    pub provider: SharedCredentialsProvider,
    /// True when the provider answers from its own cache (then the SDK's lazy cache is
    /// switched off so no request ever waits on a refresh).
    pub self_cached: bool,
    /// The refresher, for forced refreshes.
    pub refresher: Option<Arc<Refresher>>,
    /// Keeps the background task alive.
    pub task: Option<RefreshTask>,
    /// For logs.
    pub description: String,
}

/// Why credentials could not be set up (distinct from STS failing later, which is retried).
#[derive(Debug, thiserror::Error)]
pub enum CredentialsSetupError {
    /// A required setting is missing.
    #[error("credentials: {0}")]
    Missing(String),
}

/// Builds the credentials of an output from its `credentials` section (or the environment).
pub async fn build(
    config: Option<&CredentialsConfig>,
    ctx: &AwsContext,
) -> Result<OutputCredentials, CredentialsSetupError> {
    let from_env;
    let config = match config {
        Some(c) => Some(c),
        None => {
            from_env = WebIdentityConfig::from_env().map(CredentialsConfig::WebIdentity);
            from_env.as_ref()
        }
    };
    match config {
        Some(CredentialsConfig::Static(s)) => {
            let creds = Credentials::new(
                &s.access_key_id,
                &s.secret_access_key,
                s.session_token.clone(),
                None,
                "firehose-relay-static",
            );
            Ok(OutputCredentials {
                provider: SharedCredentialsProvider::new(creds),
                self_cached: true,
                refresher: None,
                task: None,
                description: "static".to_owned(),
            })
        }
        Some(CredentialsConfig::WebIdentity(w)) => {
            let fetcher = web_identity_fetcher(w, ctx).await?;
            Ok(start_refresher(Box::new(fetcher), &w.sts(), ctx).await)
        }
        Some(CredentialsConfig::AssumeRole(a)) => {
            let fetcher = assume_role_fetcher(a, ctx).await?;
            Ok(start_refresher(Box::new(fetcher), &a.sts(), ctx).await)
        }
        Some(CredentialsConfig::Default(_)) | None => {
            let sdk = aws_config::defaults(BehaviorVersion::latest())
                .region(ctx.region.clone())
                .http_client(ctx.http.clone())
                .load()
                .await;
            let provider = sdk.credentials_provider().ok_or_else(|| {
                CredentialsSetupError::Missing(
                    "the SDK default credential chain is not available".to_owned(),
                )
            })?;
            Ok(OutputCredentials {
                provider,
                self_cached: false,
                refresher: None,
                task: None,
                description: "sdk default chain".to_owned(),
            })
        }
    }
}

async fn start_refresher(
    fetcher: Box<dyn Fetch>,
    sts: &StsOptions,
    ctx: &AwsContext,
) -> OutputCredentials {
    let description = fetcher.describe();
    let refresher = Refresher::new(
        fetcher,
        sts.refresh_before.0,
        &ctx.output,
        CredentialMetrics::get(&ctx.metrics),
    );
    let task = refresher.start().await;
    OutputCredentials {
        provider: SharedCredentialsProvider::new(RefreshingProvider(Arc::clone(&refresher))),
        self_cached: true,
        refresher: Some(refresher),
        task: Some(task),
        description,
    }
}

/// An STS client for the region/endpoint in `sts`; `signed` clients use the SDK default chain.
async fn sts_client(sts: &StsOptions, ctx: &AwsContext, signed: bool) -> aws_sdk_sts::Client {
    let region = sts
        .sts_region
        .clone()
        .map(Region::new)
        .unwrap_or_else(|| ctx.region.clone());
    // The refresher retries with its own backoff and counts and logs every failure; SDK
    // retries would hide failures inside one long attempt.
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .region(region)
        .http_client(ctx.http.clone())
        .retry_config(aws_config::retry::RetryConfig::disabled())
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(STS_CALL_TIMEOUT)
                .connect_timeout(Duration::from_secs(5))
                .build(),
        );
    if !signed {
        loader = loader.no_credentials();
    }
    let sdk = loader.load().await;
    let mut builder = aws_sdk_sts::config::Builder::from(&sdk);
    if let Some(url) = &sts.sts_endpoint_url {
        builder = builder.endpoint_url(url);
    }
    aws_sdk_sts::Client::from_conf(builder.build())
}

async fn web_identity_fetcher(
    w: &WebIdentityConfig,
    ctx: &AwsContext,
) -> Result<WebIdentityFetcher, CredentialsSetupError> {
    let role = w.role_arn().ok_or_else(|| {
        CredentialsSetupError::Missing(format!(
            "web_identity needs role_arn (or ${})",
            config::ENV_ROLE_ARN
        ))
    })?;
    let file = w.token_file().ok_or_else(|| {
        CredentialsSetupError::Missing(format!(
            "web_identity needs web_identity_token_file (or ${})",
            config::ENV_TOKEN_FILE
        ))
    })?;
    let sts = w.sts();
    Ok(WebIdentityFetcher {
        client: sts_client(&sts, ctx, false).await,
        role_arn: role.value,
        token_file: file.value,
        token_origin: file.origin,
        session_name: w.session_name(),
        policy: w.policy.clone(),
        duration: Duration::from_secs(u64::from(sts.duration_seconds)),
    })
}

async fn assume_role_fetcher(
    a: &AssumeRoleConfig,
    ctx: &AwsContext,
) -> Result<AssumeRoleFetcher, CredentialsSetupError> {
    let role = a
        .role_arn
        .clone()
        .filter(|r| !r.trim().is_empty())
        .ok_or_else(|| CredentialsSetupError::Missing("assume_role needs role_arn".to_owned()))?;
    let sts = a.sts();
    Ok(AssumeRoleFetcher {
        client: sts_client(&sts, ctx, true).await,
        role_arn: role,
        session_name: a.session_name(),
        external_id: a.external_id.clone(),
        policy: a.policy.clone(),
        duration: Duration::from_secs(u64::from(sts.duration_seconds)),
    })
}
