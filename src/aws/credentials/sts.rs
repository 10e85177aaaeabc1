//! STS calls that turn a web-identity token or base credentials into temporary credentials.
//!
//! Each fetcher makes exactly one STS call per [`Fetch::fetch`]; scheduling, caching and
//! retrying belong to [`super`]. The web-identity token file is read again on every
//! call, because the kubelet rotates it (at 80 % of its lifetime) and a cached token would
//! eventually be refused.

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use aws_credential_types::Credentials;
use aws_sdk_sts::error::{DisplayErrorContext, ProvideErrorMetadata};
use futures::future::BoxFuture;

use super::config::{read_token, TokenFileError};

/// Provider name recorded in the credentials (shows up in SDK debug logs).
pub const PROVIDER_NAME: &str = "firehose-relay";

/// Why one STS call did not produce credentials. Never contains the token or a secret.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    /// The token file is missing, unreadable or empty.
    #[error(transparent)]
    TokenFile(#[from] TokenFileError),
    /// STS refused or could not be reached.
    #[error("STS {operation} for role {role_arn} failed ({code}): {message}")]
    Sts {
        /// `AssumeRoleWithWebIdentity` or `AssumeRole`.
        operation: &'static str,
        /// The role.
        role_arn: String,
        /// The STS error code (`InvalidIdentityToken`, `ExpiredTokenException`...) or the
        /// transport failure kind.
        code: String,
        /// Full error text.
        message: String,
    },
    /// STS answered without usable credentials.
    #[error("STS {operation} for role {role_arn} returned no usable credentials: {detail}")]
    BadResponse {
        /// The operation.
        operation: &'static str,
        /// The role.
        role_arn: String,
        /// What was wrong.
        detail: String,
    },
}

/// Something that obtains a fresh set of expiring credentials with one call.
pub trait Fetch: Send + Sync + 'static {
    /// One attempt.
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, FetchError>>;
    /// For logs: `web_identity role=… token_file=…` (no secrets).
    fn describe(&self) -> String;
}

/// `AssumeRoleWithWebIdentity` with a token file.
#[derive(Debug, Clone)]
pub struct WebIdentityFetcher {
    /// STS client (unsigned calls; regional endpoint unless overridden).
    pub client: aws_sdk_sts::Client,
    /// Role to assume.
    pub role_arn: String,
    /// The token file.
    pub token_file: PathBuf,
    /// Where the token file path came from (config key or env var), for errors.
    pub token_origin: String,
    /// Session name.
    pub session_name: String,
    /// Inline session policy.
    pub policy: Option<String>,
    /// Requested lifetime.
    pub duration: Duration,
}

/// `AssumeRole` signed with base credentials.
#[derive(Debug, Clone)]
pub struct AssumeRoleFetcher {
    /// STS client (signed with the SDK default chain).
    pub client: aws_sdk_sts::Client,
    /// Role to assume.
    pub role_arn: String,
    /// Session name.
    pub session_name: String,
    /// External id.
    pub external_id: Option<String>,
    /// Inline session policy.
    pub policy: Option<String>,
    /// Requested lifetime.
    pub duration: Duration,
}

fn duration_secs(d: Duration) -> i32 {
    i32::try_from(d.as_secs()).unwrap_or(i32::MAX)
}

fn sts_error<E>(
    operation: &'static str,
    role_arn: &str,
    err: aws_sdk_sts::error::SdkError<E>,
) -> FetchError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_sts::error::SdkError;
    let code = match &err {
        SdkError::ServiceError(s) => s.err().code().unwrap_or("Unknown").to_owned(),
        SdkError::TimeoutError(_) => "Timeout".to_owned(),
        SdkError::DispatchFailure(_) => "Network".to_owned(),
        SdkError::ResponseError(r) => format!("HTTP {}", r.raw().status().as_u16()),
        _ => "Other".to_owned(),
    };
    FetchError::Sts {
        operation,
        role_arn: role_arn.to_owned(),
        code,
        message: DisplayErrorContext(&err).to_string(),
    }
}

fn convert(
    operation: &'static str,
    role_arn: &str,
    creds: Option<&aws_sdk_sts::types::Credentials>,
) -> Result<Credentials, FetchError> {
    let bad = |detail: &str| FetchError::BadResponse {
        operation,
        role_arn: role_arn.to_owned(),
        detail: detail.to_owned(),
    };
    let c = creds.ok_or_else(|| bad("no Credentials element"))?;
    let expiry =
        SystemTime::try_from(*c.expiration()).map_err(|_| bad("Expiration out of range"))?;
    if c.access_key_id().is_empty() || c.secret_access_key().is_empty() {
        return Err(bad("empty access key"));
    }
    Ok(Credentials::new(
        c.access_key_id(),
        c.secret_access_key(),
        Some(c.session_token().to_owned()),
        Some(expiry),
        PROVIDER_NAME,
    ))
}

impl Fetch for WebIdentityFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, FetchError>> {
        Box::pin(async move {
            const OP: &str = "AssumeRoleWithWebIdentity";
            let path = self.token_file.clone();
            let origin = self.token_origin.clone();
            let token = tokio::task::spawn_blocking(move || read_token(&path, &origin))
                .await
                .map_err(|e| FetchError::BadResponse {
                    operation: OP,
                    role_arn: self.role_arn.clone(),
                    detail: format!("token reader task failed: {e}"),
                })??;
            let out = self
                .client
                .assume_role_with_web_identity()
                .role_arn(&self.role_arn)
                .role_session_name(&self.session_name)
                .web_identity_token(token)
                .set_policy(self.policy.clone())
                .duration_seconds(duration_secs(self.duration))
                .send()
                .await
                .map_err(|e| sts_error(OP, &self.role_arn, e))?;
            convert(OP, &self.role_arn, out.credentials())
        })
    }

    fn describe(&self) -> String {
        format!(
            "web_identity role={} token_file={} ({}) session={}",
            self.role_arn,
            self.token_file.display(),
            self.token_origin,
            self.session_name
        )
    }
}

impl Fetch for AssumeRoleFetcher {
    fn fetch(&self) -> BoxFuture<'_, Result<Credentials, FetchError>> {
        Box::pin(async move {
            const OP: &str = "AssumeRole";
            let out = self
                .client
                .assume_role()
                .role_arn(&self.role_arn)
                .role_session_name(&self.session_name)
                .set_external_id(self.external_id.clone())
                .set_policy(self.policy.clone())
                .duration_seconds(duration_secs(self.duration))
                .send()
                .await
                .map_err(|e| sts_error(OP, &self.role_arn, e))?;
            convert(OP, &self.role_arn, out.credentials())
        })
    }

    fn describe(&self) -> String {
        format!(
            "assume_role role={} session={}",
            self.role_arn, self.session_name
        )
    }
}
