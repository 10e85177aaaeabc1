//! `[outputs.NAME.credentials]`: where an AWS output gets its credentials.
//!
//! ```toml
//! [outputs.firehose.credentials]
//! type                    = "web_identity"      # "assume_role" | "static" | "default"
//! role_arn                = "${AWS_ROLE_ARN}"
//! web_identity_token_file = "${AWS_WEB_IDENTITY_TOKEN_FILE}"
//! ```
//!
//! Without the section: `AWS_ROLE_ARN` + `AWS_WEB_IDENTITY_TOKEN_FILE` (what the EKS IRSA webhook
//! injects) if both are set, else the SDK default chain. Secrets (`secret_access_key`,
//! `session_token`, and `access_key_id`) are in [`crate::config::SECRET_KEYS`], so `check`
//! redacts them, and their `Debug` form hides them.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::primitives::ConfigDuration;

/// Environment variable with the role ARN (set by the IRSA webhook).
pub const ENV_ROLE_ARN: &str = "AWS_ROLE_ARN";
/// Environment variable with the projected service-account token's path.
pub const ENV_TOKEN_FILE: &str = "AWS_WEB_IDENTITY_TOKEN_FILE";
/// Environment variable with a session name (the SDK's convention).
pub const ENV_SESSION_NAME: &str = "AWS_ROLE_SESSION_NAME";

/// Shortest session STS grants.
pub const MIN_DURATION_SECONDS: u32 = 900;
/// Longest session STS grants (a role's MaxSessionDuration may be lower).
pub const MAX_DURATION_SECONDS: u32 = 43_200;

/// The `credentials` section, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum CredentialsConfig {
    /// STS `AssumeRoleWithWebIdentity` with a (Kubernetes) token file, refreshed on a schedule.
    WebIdentity(WebIdentityConfig),
    /// STS `AssumeRole` from the SDK default chain's credentials, refreshed on a schedule.
    AssumeRole(AssumeRoleConfig),
    /// Fixed keys.
    Static(StaticCredentialsConfig),
    /// The SDK default chain (environment, profile, web identity, ECS, IMDS), SDK-cached.
    Default(DefaultChainConfig),
}

/// Options shared by the STS-based types (the same keys in both sections; serde cannot flatten
/// them while refusing unknown keys, so each section repeats them and [`WebIdentityConfig::sts`]
/// collects them).
#[derive(Debug, Clone, PartialEq)]
pub struct StsOptions {
    /// `duration_seconds`.
    pub duration_seconds: u32,
    /// `sts_region`.
    pub sts_region: Option<String>,
    /// `sts_endpoint_url`.
    pub sts_endpoint_url: Option<String>,
    /// `refresh_before`.
    pub refresh_before: ConfigDuration,
}

/// `type = "web_identity"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WebIdentityConfig {
    /// Role to assume; default `$AWS_ROLE_ARN`.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// The OIDC token file, re-read on every STS call; default `$AWS_WEB_IDENTITY_TOKEN_FILE`.
    #[serde(default)]
    pub web_identity_token_file: Option<PathBuf>,
    /// Session name (visible in CloudTrail); default `$AWS_ROLE_SESSION_NAME`, else derived
    /// from the pod/host name.
    #[serde(default)]
    pub role_session_name: Option<String>,
    /// Inline session policy narrowing the role's permissions.
    #[serde(default)]
    pub policy: Option<String>,
    /// Session lifetime requested from STS (900–43200 s; the role's maximum may be lower).
    #[serde(default = "default_duration_seconds")]
    pub duration_seconds: u32,
    /// Region of the STS endpoint; default: the output's region (regional endpoint).
    #[serde(default)]
    pub sts_region: Option<String>,
    /// STS endpoint override (e.g. `https://sts.amazonaws.com` for the global endpoint, a VPC
    /// endpoint, or a test server). `AWS_ENDPOINT_URL_STS` is honoured when this is unset.
    #[serde(default)]
    pub sts_endpoint_url: Option<String>,
    /// Renew this long before expiry (capped at half the session's lifetime).
    #[serde(default = "default_refresh_before")]
    pub refresh_before: ConfigDuration,
}

/// `type = "assume_role"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AssumeRoleConfig {
    /// Role to assume.
    #[serde(default)]
    pub role_arn: Option<String>,
    /// Session name; default derived from the pod/host name.
    #[serde(default)]
    pub role_session_name: Option<String>,
    /// External id the role's trust policy asks for.
    #[serde(default)]
    pub external_id: Option<String>,
    /// Inline session policy.
    #[serde(default)]
    pub policy: Option<String>,
    /// Session lifetime requested from STS (900–43200 s; the role's maximum may be lower).
    #[serde(default = "default_duration_seconds")]
    pub duration_seconds: u32,
    /// Region of the STS endpoint; default: the output's region (regional endpoint).
    #[serde(default)]
    pub sts_region: Option<String>,
    /// STS endpoint override (e.g. `https://sts.amazonaws.com` for the global endpoint, a VPC
    /// endpoint, or a test server). `AWS_ENDPOINT_URL_STS` is honoured when this is unset.
    #[serde(default)]
    pub sts_endpoint_url: Option<String>,
    /// Renew this long before expiry (capped at half the session's lifetime).
    #[serde(default = "default_refresh_before")]
    pub refresh_before: ConfigDuration,
}

/// `type = "static"`.
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticCredentialsConfig {
    /// Access key id.
    pub access_key_id: String,
    /// Secret access key.
    pub secret_access_key: String,
    /// Session token of temporary credentials.
    #[serde(default)]
    pub session_token: Option<String>,
}

impl std::fmt::Debug for StaticCredentialsConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StaticCredentialsConfig")
            .field("access_key_id", &"<redacted>")
            .field("secret_access_key", &"<redacted>")
            .field(
                "session_token",
                &self.session_token.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

/// `type = "default"` (no options).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DefaultChainConfig {}

fn default_duration_seconds() -> u32 {
    3600
}

fn default_refresh_before() -> ConfigDuration {
    ConfigDuration::secs(300)
}

/// A value taken from the config or from an environment variable, remembering which, so that
/// errors can say where to fix it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sourced<T> {
    /// The value.
    pub value: T,
    /// `credentials.role_arn` or `$AWS_ROLE_ARN`.
    pub origin: String,
}

fn from_config_or_env<T: Clone>(
    configured: Option<&T>,
    key: &str,
    env: &str,
    parse: impl Fn(String) -> T,
) -> Option<Sourced<T>> {
    match configured {
        Some(v) => Some(Sourced {
            value: v.clone(),
            origin: format!("credentials.{key}"),
        }),
        None => std::env::var(env)
            .ok()
            .filter(|v| !v.trim().is_empty())
            .map(|v| Sourced {
                value: parse(v),
                origin: format!("${env}"),
            }),
    }
}

impl WebIdentityConfig {
    /// The STS options of this section.
    pub fn sts(&self) -> StsOptions {
        StsOptions {
            duration_seconds: self.duration_seconds,
            sts_region: self.sts_region.clone(),
            sts_endpoint_url: self.sts_endpoint_url.clone(),
            refresh_before: self.refresh_before,
        }
    }
    /// Settings taken from the IRSA environment variables alone (no `credentials` section).
    pub fn from_env() -> Option<WebIdentityConfig> {
        let arn = std::env::var(ENV_ROLE_ARN).ok().filter(|v| !v.is_empty())?;
        let file = std::env::var_os(ENV_TOKEN_FILE).filter(|v| !v.is_empty())?;
        Some(WebIdentityConfig {
            role_arn: Some(arn),
            web_identity_token_file: Some(PathBuf::from(file)),
            role_session_name: None,
            policy: None,
            duration_seconds: default_duration_seconds(),
            sts_region: None,
            sts_endpoint_url: None,
            refresh_before: default_refresh_before(),
        })
    }

    /// The role ARN and where it came from.
    pub fn role_arn(&self) -> Option<Sourced<String>> {
        from_config_or_env(self.role_arn.as_ref(), "role_arn", ENV_ROLE_ARN, |v| v)
            .filter(|s| !s.value.trim().is_empty())
    }

    /// The token file and where it came from.
    pub fn token_file(&self) -> Option<Sourced<PathBuf>> {
        from_config_or_env(
            self.web_identity_token_file.as_ref(),
            "web_identity_token_file",
            ENV_TOKEN_FILE,
            PathBuf::from,
        )
        .filter(|s| !s.value.as_os_str().is_empty())
    }

    /// The session name: configured, `$AWS_ROLE_SESSION_NAME`, or derived from the host.
    pub fn session_name(&self) -> String {
        self.role_session_name
            .clone()
            .or_else(|| {
                std::env::var(ENV_SESSION_NAME)
                    .ok()
                    .filter(|v| !v.is_empty())
            })
            .unwrap_or_else(default_session_name)
    }

    /// Values that parse but cannot work, as (key under the output, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.role_arn().is_none() {
            p.push((
                "credentials.role_arn",
                format!("missing: set it, or set ${ENV_ROLE_ARN} (type = \"web_identity\")"),
            ));
        }
        match self.token_file() {
            None => p.push((
                "credentials.web_identity_token_file",
                format!("missing: set it, or set ${ENV_TOKEN_FILE}"),
            )),
            Some(f) => {
                if let Err(e) = check_token_file(&f.value, &f.origin) {
                    p.push(("credentials.web_identity_token_file", e.to_string()));
                }
            }
        }
        if let Some(name) = &self.role_session_name {
            if let Err(e) = check_session_name(name) {
                p.push(("credentials.role_session_name", e));
            }
        }
        p.extend(self.sts().problems());
        p
    }
}

impl AssumeRoleConfig {
    /// The STS options of this section.
    pub fn sts(&self) -> StsOptions {
        StsOptions {
            duration_seconds: self.duration_seconds,
            sts_region: self.sts_region.clone(),
            sts_endpoint_url: self.sts_endpoint_url.clone(),
            refresh_before: self.refresh_before,
        }
    }
    /// Values that parse but cannot work.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.role_arn.as_deref().is_none_or(|a| a.trim().is_empty()) {
            p.push((
                "credentials.role_arn",
                "missing (type = \"assume_role\")".to_owned(),
            ));
        }
        if let Some(name) = &self.role_session_name {
            if let Err(e) = check_session_name(name) {
                p.push(("credentials.role_session_name", e));
            }
        }
        p.extend(self.sts().problems());
        p
    }

    /// The session name: configured or derived from the host.
    pub fn session_name(&self) -> String {
        self.role_session_name
            .clone()
            .unwrap_or_else(default_session_name)
    }
}

impl Default for StsOptions {
    fn default() -> Self {
        StsOptions {
            duration_seconds: default_duration_seconds(),
            sts_region: None,
            sts_endpoint_url: None,
            refresh_before: default_refresh_before(),
        }
    }
}

impl StsOptions {
    fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if !(MIN_DURATION_SECONDS..=MAX_DURATION_SECONDS).contains(&self.duration_seconds) {
            p.push((
                "credentials.duration_seconds",
                format!(
                    "{} is out of range: STS grants {MIN_DURATION_SECONDS} to {MAX_DURATION_SECONDS} seconds",
                    self.duration_seconds
                ),
            ));
        }
        if self.refresh_before.0.is_zero() {
            p.push((
                "credentials.refresh_before",
                "must be greater than 0".to_owned(),
            ));
        }
        if let Some(url) = &self.sts_endpoint_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                p.push((
                    "credentials.sts_endpoint_url",
                    format!("`{url}` is not an http(s) URL"),
                ));
            }
        }
        p
    }
}

impl StaticCredentialsConfig {
    /// Values that parse but cannot work (never echoing the values).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if self.access_key_id.trim().is_empty() {
            p.push(("credentials.access_key_id", "must not be empty".to_owned()));
        }
        if self.secret_access_key.trim().is_empty() {
            p.push((
                "credentials.secret_access_key",
                "must not be empty".to_owned(),
            ));
        }
        p
    }
}

impl CredentialsConfig {
    /// Values that parse but cannot work, as (key under the output, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        match self {
            CredentialsConfig::WebIdentity(c) => c.problems(),
            CredentialsConfig::AssumeRole(c) => c.problems(),
            CredentialsConfig::Static(c) => c.problems(),
            CredentialsConfig::Default(_) => Vec::new(),
        }
    }
}

/// Why the token file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum TokenFileError {
    /// Missing or unreadable.
    #[error("cannot read the web identity token file {path} (from {origin}): {source}")]
    Unreadable {
        /// The file.
        path: String,
        /// `credentials.web_identity_token_file` or `$AWS_WEB_IDENTITY_TOKEN_FILE`.
        origin: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// Present but empty.
    #[error("the web identity token file {path} (from {origin}) is empty")]
    Empty {
        /// The file.
        path: String,
        /// Where the path came from.
        origin: String,
    },
}

/// Reads the token (trimmed). Never logs or returns the token in an error.
pub fn read_token(path: &Path, origin: &str) -> Result<String, TokenFileError> {
    let text = std::fs::read_to_string(path).map_err(|source| TokenFileError::Unreadable {
        path: path.display().to_string(),
        origin: origin.to_owned(),
        source,
    })?;
    let token = text.trim();
    if token.is_empty() {
        return Err(TokenFileError::Empty {
            path: path.display().to_string(),
            origin: origin.to_owned(),
        });
    }
    Ok(token.to_owned())
}

fn check_token_file(path: &Path, origin: &str) -> Result<(), TokenFileError> {
    read_token(path, origin).map(|_| ())
}

/// STS accepts 2–64 characters of `[\w+=,.@-]`.
fn check_session_name(name: &str) -> Result<(), String> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "_+=,.@-".contains(c);
    if !(2..=64).contains(&name.len()) || !name.chars().all(ok_char) {
        return Err(format!(
            "`{name}` is not a valid session name: 2 to 64 characters of letters, digits and _+=,.@-"
        ));
    }
    Ok(())
}

/// `firehose-relay-<pod or host name>`, cleaned up to what STS accepts, so CloudTrail shows
/// which replica made a call.
pub fn default_session_name() -> String {
    let host = std::env::var("POD_NAME")
        .ok()
        .or_else(|| std::env::var("HOSTNAME").ok())
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty());
    let mut name = match host {
        Some(h) => format!("firehose-relay-{h}"),
        None => "firehose-relay".to_owned(),
    };
    name = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "_+=,.@-".contains(c) {
                c
            } else {
                '-'
            }
        })
        .collect();
    name.truncate(64);
    name
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<CredentialsConfig, toml::de::Error> {
        toml::from_str(text)
    }

    #[test]
    fn each_type_parses_with_its_keys() {
        let c = parse("type = \"web_identity\"\nrole_arn = \"arn:aws:iam::1:role/r\"\nweb_identity_token_file = \"/t\"\nduration_seconds = 900\nrefresh_before = \"1m\"").unwrap();
        let CredentialsConfig::WebIdentity(w) = c else {
            panic!("{c:?}")
        };
        assert_eq!(w.duration_seconds, 900);
        assert_eq!(w.refresh_before, ConfigDuration::secs(60));
        assert!(matches!(
            parse("type = \"static\"\naccess_key_id = \"a\"\nsecret_access_key = \"b\"").unwrap(),
            CredentialsConfig::Static(_)
        ));
        assert!(matches!(
            parse("type = \"default\"").unwrap(),
            CredentialsConfig::Default(_)
        ));
        assert!(matches!(
            parse("type = \"assume_role\"\nrole_arn = \"x\"\nexternal_id = \"e\"").unwrap(),
            CredentialsConfig::AssumeRole(_)
        ));
    }

    #[test]
    fn unknown_keys_are_refused() {
        let err = parse("type = \"web_identity\"\nrole_arm = \"x\"")
            .unwrap_err()
            .to_string();
        assert!(err.contains("role_arm"), "{err}");
    }

    #[test]
    fn duration_out_of_range_and_unreadable_token_file_are_problems() {
        let c = WebIdentityConfig {
            role_arn: Some("arn:aws:iam::1:role/r".into()),
            web_identity_token_file: Some("/nonexistent/token".into()),
            role_session_name: None,
            policy: None,
            duration_seconds: 60,
            sts_region: None,
            sts_endpoint_url: None,
            refresh_before: ConfigDuration::secs(300),
        };
        let p = c.problems();
        let keys: Vec<_> = p.iter().map(|(k, _)| *k).collect();
        assert_eq!(
            keys,
            vec![
                "credentials.web_identity_token_file",
                "credentials.duration_seconds"
            ]
        );
        assert!(
            p[0].1.contains("/nonexistent/token")
                && p[0].1.contains("credentials.web_identity_token_file"),
            "{}",
            p[0].1
        );
    }

    #[test]
    fn an_empty_token_file_names_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("token");
        std::fs::write(&f, "  \n").unwrap();
        let e = read_token(&f, "$AWS_WEB_IDENTITY_TOKEN_FILE")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains(&f.display().to_string())
                && e.contains("$AWS_WEB_IDENTITY_TOKEN_FILE")
                && e.contains("empty"),
            "{e}"
        );
    }

    #[test]
    fn static_keys_never_show_in_debug() {
        let c = StaticCredentialsConfig {
            access_key_id: "AKIAXXX".into(),
            secret_access_key: "s3cr3t".into(),
            session_token: Some("tok".into()),
        };
        let d = format!("{c:?}");
        assert!(
            !d.contains("s3cr3t") && !d.contains("tok\"") && !d.contains("AKIAXXX"),
            "{d}"
        );
    }

    #[test]
    fn default_session_name_is_valid() {
        assert!(
            check_session_name(&default_session_name()).is_ok(),
            "{}",
            default_session_name()
        );
    }
}
