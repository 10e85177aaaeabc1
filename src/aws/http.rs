//! The HTTP client shared by the Firehose and STS clients of one output.
//!
//! Built on the SDK's own hyper/rustls client (so connection pooling, timeouts and TCP_NODELAY
//! behave as the SDK expects) with two additions the SDK's default client does not configure:
//! an extra trusted CA bundle (`tls_ca_file`: private endpoints, TLS-inspecting proxies, test
//! servers) and an HTTP(S) proxy (`proxy_url`, else `HTTPS_PROXY`/`HTTP_PROXY`/`NO_PROXY`).

use std::path::{Path, PathBuf};

use aws_smithy_http_client::proxy::ProxyConfig;
use aws_smithy_http_client::tls::{self, TlsContext, TrustStore};
use aws_smithy_http_client::{Builder, Connector};
use aws_smithy_runtime_api::client::http::SharedHttpClient;

/// How to reach AWS.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HttpOptions {
    /// PEM bundle trusted in addition to the system roots.
    pub tls_ca_file: Option<PathBuf>,
    /// Proxy for all requests; `None` = the standard proxy environment variables.
    pub proxy_url: Option<crate::primitives::SecretUrl>,
}

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum HttpClientError {
    /// The CA file could not be read.
    #[error("cannot read tls_ca_file {path}: {source}")]
    CaUnreadable {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The CA file holds no PEM certificate.
    #[error(
        "tls_ca_file {path} contains no PEM certificate (-----BEGIN CERTIFICATE-----){detail}"
    )]
    CaInvalid {
        /// The file.
        path: String,
        /// Parser detail, if any.
        detail: String,
    },
    /// The TLS settings were refused.
    #[error("invalid TLS settings: {0}")]
    Tls(String),
    /// The proxy URL is not usable.
    #[error("invalid proxy_url: {0}")]
    Proxy(String),
}

/// Checks that `path` holds at least one PEM certificate and returns the file's bytes.
pub fn read_ca_file(path: &Path) -> Result<Vec<u8>, HttpClientError> {
    let pem = std::fs::read(path).map_err(|source| HttpClientError::CaUnreadable {
        path: path.display().to_string(),
        source,
    })?;
    let mut count = 0;
    for cert in rustls_pemfile::certs(&mut pem.as_slice()) {
        match cert {
            Ok(_) => count += 1,
            Err(e) => {
                return Err(HttpClientError::CaInvalid {
                    path: path.display().to_string(),
                    detail: format!(": {e}"),
                })
            }
        }
    }
    if count == 0 {
        return Err(HttpClientError::CaInvalid {
            path: path.display().to_string(),
            detail: String::new(),
        });
    }
    Ok(pem)
}

/// The proxy configuration for `options`.
fn proxy_config(options: &HttpOptions) -> Result<ProxyConfig, HttpClientError> {
    match &options.proxy_url {
        None => Ok(ProxyConfig::from_env()),
        Some(url) => {
            // The error may quote the URL: never with its credentials.
            let mut config = ProxyConfig::all(url.expose()).map_err(|e| {
                let text = e.to_string().replace(url.expose(), &url.to_string());
                HttpClientError::Proxy(text)
            })?;
            if let Some(no_proxy) = std::env::var("NO_PROXY")
                .ok()
                .or_else(|| std::env::var("no_proxy").ok())
            {
                config = config.no_proxy(no_proxy);
            }
            Ok(config)
        }
    }
}

/// Builds the client: rustls (aws-lc), system roots plus `tls_ca_file`, proxy, TCP_NODELAY,
/// pooled keep-alive connections.
pub fn build_http_client(options: &HttpOptions) -> Result<SharedHttpClient, HttpClientError> {
    let mut trust = TrustStore::default();
    if let Some(path) = &options.tls_ca_file {
        trust = trust.with_pem_certificate(read_ca_file(path)?);
    }
    let tls_context = TlsContext::builder()
        .with_trust_store(trust)
        .build()
        .map_err(|e| HttpClientError::Tls(e.to_string()))?;
    let proxy = proxy_config(options)?;
    Ok(
        Builder::new().build_with_connector_fn(move |settings, components| {
            let mut builder = Connector::builder()
                .enable_tcp_nodelay(true)
                .proxy_config(proxy.clone())
                .tls_provider(tls::Provider::Rustls(
                    tls::rustls_provider::CryptoMode::AwsLc,
                ))
                .tls_context(tls_context.clone());
            builder.set_connector_settings(settings.cloned());
            if let Some(components) = components {
                builder.set_sleep_impl(components.sleep_impl());
            }
            builder.build()
        }),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_ca_file_without_certificates_is_refused_with_its_path() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("ca.pem");
        std::fs::write(&f, "not a certificate").unwrap();
        let e = read_ca_file(&f).unwrap_err().to_string();
        assert!(
            e.contains(&f.display().to_string()) && e.contains("no PEM certificate"),
            "{e}"
        );
        let e = read_ca_file(&dir.path().join("missing.pem"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("missing.pem"), "{e}");
    }

    #[test]
    fn a_bad_proxy_url_is_refused() {
        let opts = HttpOptions {
            tls_ca_file: None,
            proxy_url: Some("::not a url".into()),
        };
        assert!(build_http_client(&opts).is_err());
    }
}
