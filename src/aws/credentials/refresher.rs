//! The scheduled refresh of STS-based credentials: a [`Refresher`] caches the current
//! credentials and renews them in a background task ahead of expiry; a [`RefreshingProvider`]
//! hands them to the SDK without ever waiting (see the module docs of [`super`]).

use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::{future, ProvideCredentials};
use aws_credential_types::Credentials;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use rand::Rng;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use super::sts::{Fetch, FetchError};
use crate::ops::metrics::{output_label, Labels, Metrics};

/// First wait after a failed refresh; doubles per failure.
const FIRST_RETRY: Duration = Duration::from_millis(500);
/// Longest wait between refresh attempts after failures while credentials are valid.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// Longest wait between refresh attempts once no valid credentials are left (deliveries are
/// blocked, so recover quickly when STS comes back).
const MAX_RETRY_EXPIRED: Duration = Duration::from_secs(5);
/// How long `build` waits for the first credentials before starting anyway (the background
/// task keeps trying; records wait in the buffer).
const FIRST_FETCH_TIMEOUT: Duration = Duration::from_secs(15);
/// Forced refreshes (after the service said the credentials expired) are at most this frequent.
const MIN_FORCED_INTERVAL: Duration = Duration::from_secs(5);

/// Credential metrics, shared by all outputs of one process.
#[derive(Clone, Default)]
pub struct CredentialMetrics {
    /// Unix time the current credentials expire.
    pub expiry: Family<Labels, Gauge>,
    /// Successful refreshes.
    pub refreshes: Family<Labels, Counter>,
    /// Failed refresh attempts.
    pub failures: Family<Labels, Counter>,
}

impl CredentialMetrics {
    /// The families registered in `metrics` (registered on first use per registry).
    pub fn get(metrics: &Arc<Metrics>) -> CredentialMetrics {
        metrics.component(Self::register)
    }

    fn register(metrics: &Metrics) -> CredentialMetrics {
        let m = CredentialMetrics::default();
        metrics.register(
            "aws_credentials_expiry_timestamp_seconds",
            "Unix time at which the output's current AWS credentials expire",
            m.expiry.clone(),
        );
        metrics.register(
            "aws_credentials_refreshes",
            "Successful credential refreshes",
            m.refreshes.clone(),
        );
        metrics.register(
            "aws_credentials_refresh_failures",
            "Failed credential refresh attempts (STS errors, unreadable token file)",
            m.failures.clone(),
        );
        m
    }
}

/// What a refresh loop shares with the provider the SDK calls.
pub struct Refresher {
    current: RwLock<Option<Credentials>>,
    last_error: RwLock<Option<String>>,
    fetcher: Box<dyn Fetch>,
    refresh_before: Duration,
    wake: Notify,
    output: String,
    labels: Labels,
    metrics: CredentialMetrics,
}

impl std::fmt::Debug for Refresher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Refresher")
            .field("fetcher", &self.fetcher.describe())
            .field("expiry", &self.expiry())
            .finish()
    }
}

impl Refresher {
    /// A refresher around `fetcher`; call [`Refresher::start`] to obtain credentials.
    pub fn new(
        fetcher: Box<dyn Fetch>,
        refresh_before: Duration,
        output: &str,
        metrics: CredentialMetrics,
    ) -> Arc<Refresher> {
        Arc::new(Refresher {
            current: RwLock::new(None),
            last_error: RwLock::new(None),
            fetcher,
            refresh_before,
            wake: Notify::new(),
            output: output.to_owned(),
            labels: output_label(output),
            metrics,
        })
    }

    /// When the current credentials expire, if there are any.
    pub fn expiry(&self) -> Option<SystemTime> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .as_ref()
            .and_then(Credentials::expiry)
    }

    /// The current credentials if still valid, else an error saying why there are none.
    pub fn current(&self) -> Result<Credentials, CredentialsError> {
        let guard = self.current.read().unwrap_or_else(|e| e.into_inner());
        if let Some(c) = guard.as_ref() {
            if c.expiry().is_none_or(|e| e > SystemTime::now()) {
                return Ok(c.clone());
            }
        }
        let state = if guard.is_some() {
            "expired"
        } else {
            "not obtained yet"
        };
        let last = self
            .last_error
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .unwrap_or_else(|| "no attempt finished yet".to_owned());
        Err(CredentialsError::not_loaded(format!(
            "credentials of output `{}` ({}) are {state}; last refresh error: {last}",
            self.output,
            self.fetcher.describe()
        )))
    }

    /// Asks the background task to refresh now (e.g. the service called the credentials
    /// expired). Ignored when the last refresh is very recent.
    pub fn request_refresh(&self) {
        self.wake.notify_one();
    }

    /// One fetch; stores the result and updates metrics. Returns the new expiry.
    async fn refresh_once(&self) -> Result<Option<SystemTime>, FetchError> {
        match self.fetcher.fetch().await {
            Ok(creds) => {
                let expiry = creds.expiry();
                *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(creds);
                *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = None;
                self.metrics.refreshes.get_or_create(&self.labels).inc();
                if let Some(e) = expiry {
                    let secs = e
                        .duration_since(SystemTime::UNIX_EPOCH)
                        .unwrap_or_default()
                        .as_secs();
                    self.metrics
                        .expiry
                        .get_or_create(&self.labels)
                        .set(i64::try_from(secs).unwrap_or(i64::MAX));
                }
                Ok(expiry)
            }
            Err(e) => {
                *self.last_error.write().unwrap_or_else(|e| e.into_inner()) = Some(e.to_string());
                self.metrics.failures.get_or_create(&self.labels).inc();
                Err(e)
            }
        }
    }

    /// When to refresh credentials that expire at `expiry`, received at `now`.
    pub fn refresh_delay(&self, expiry: SystemTime, now: SystemTime) -> Duration {
        let lifetime = expiry.duration_since(now).unwrap_or_default();
        let ahead = self.refresh_before.min(lifetime / 2);
        let jitter = ahead.mul_f64(rand::thread_rng().gen_range(0.0..0.2));
        lifetime.saturating_sub(ahead + jitter)
    }

    /// Fetches the first credentials (waiting at most 15 s) and starts the
    /// background task. The task stops when the returned handle is dropped.
    pub async fn start(self: &Arc<Self>) -> RefreshTask {
        let first = tokio::time::timeout(FIRST_FETCH_TIMEOUT, self.refresh_once()).await;
        let mut failures = 0u32;
        match &first {
            Ok(Ok(_)) => {
                tracing::info!(output = %self.output, provider = %self.fetcher.describe(), expiry = ?self.expiry().map(chrono_utc),
                    "AWS credentials obtained")
            }
            Ok(Err(e)) => {
                failures = 1;
                tracing::error!(output = %self.output, error = %e,
                    "cannot obtain AWS credentials; records wait in the buffer while this is retried")
            }
            Err(_) => {
                failures = 1;
                tracing::error!(output = %self.output, provider = %self.fetcher.describe(),
                    timeout_s = FIRST_FETCH_TIMEOUT.as_secs(), "obtaining AWS credentials timed out; retrying in the background")
            }
        }
        let me = Arc::clone(self);
        RefreshTask(tokio::spawn(async move { me.run(failures).await }))
    }

    async fn run(self: Arc<Self>, mut failures: u32) {
        let mut last_attempt = tokio::time::Instant::now();
        loop {
            let wait = if failures == 0 {
                match self.expiry() {
                    Some(e) => self.refresh_delay(e, SystemTime::now()),
                    // Credentials without expiry never need a refresh.
                    None => Duration::from_secs(3600),
                }
            } else {
                self.retry_delay(failures)
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.wake.notified() => {
                    let since = last_attempt.elapsed();
                    if since < MIN_FORCED_INTERVAL {
                        tokio::time::sleep(MIN_FORCED_INTERVAL - since).await;
                    }
                    tracing::info!(output = %self.output, "refreshing AWS credentials early: the service refused the current ones");
                }
            }
            last_attempt = tokio::time::Instant::now();
            match self.refresh_once().await {
                Ok(expiry) => {
                    if failures > 0 {
                        tracing::info!(output = %self.output, failures, "AWS credentials refreshed after failures");
                    } else {
                        tracing::debug!(output = %self.output, expiry = ?expiry.map(chrono_utc), "AWS credentials refreshed");
                    }
                    failures = 0;
                }
                Err(e) => {
                    failures = failures.saturating_add(1);
                    match self.expiry() {
                        Some(exp) if exp > SystemTime::now() => {
                            let left = exp.duration_since(SystemTime::now()).unwrap_or_default();
                            tracing::warn!(output = %self.output, failures, valid_for_s = left.as_secs(), error = %e,
                                "AWS credential refresh failed; the current credentials are still valid, retrying");
                        }
                        _ => tracing::error!(output = %self.output, failures, error = %e,
                            "AWS credential refresh failed and no valid credentials are left; deliveries wait until it succeeds"),
                    }
                }
            }
        }
    }

    /// Backoff after `failures` failed attempts: doubling from 0.5 s to 30 s (5 s once the
    /// credentials have expired), ±20 % jitter, and never longer than half the remaining
    /// validity (so a short outage before expiry gets several attempts).
    fn retry_delay(&self, failures: u32) -> Duration {
        let exp = failures.saturating_sub(1).min(16);
        let mut d = (FIRST_RETRY * 2u32.pow(exp)).min(MAX_RETRY);
        match self.expiry().map(|e| e.duration_since(SystemTime::now())) {
            Some(Ok(left)) => d = d.min((left / 2).max(Duration::from_millis(200))),
            _ => d = d.min(MAX_RETRY_EXPIRED),
        }
        d.mul_f64(rand::thread_rng().gen_range(0.8..1.2))
    }
}

fn chrono_utc(t: SystemTime) -> String {
    chrono::DateTime::<chrono::Utc>::from(t).to_rfc3339()
}

/// The background refresh task; aborted on drop.
#[derive(Debug)]
pub struct RefreshTask(JoinHandle<()>);

impl Drop for RefreshTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// The SDK-facing side of a [`Refresher`]: answers at once from the cache.
#[derive(Debug, Clone)]
pub struct RefreshingProvider(pub Arc<Refresher>);

impl ProvideCredentials for RefreshingProvider {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::ready(self.0.current())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    /// Issues credentials valid for `life`, failing while `fail` is set.
    struct FakeFetch {
        life: Duration,
        calls: AtomicU32,
        fail: std::sync::atomic::AtomicBool,
    }

    impl Fetch for Arc<FakeFetch> {
        fn fetch(&self) -> futures::future::BoxFuture<'_, Result<Credentials, FetchError>> {
            Box::pin(async move {
                let n = self.calls.fetch_add(1, Ordering::SeqCst);
                if self.fail.load(Ordering::SeqCst) {
                    return Err(FetchError::BadResponse {
                        operation: "Test",
                        role_arn: "r".into(),
                        detail: "down".into(),
                    });
                }
                Ok(Credentials::new(
                    format!("AK{n}"),
                    "secret",
                    None,
                    Some(SystemTime::now() + self.life),
                    "test",
                ))
            })
        }
        fn describe(&self) -> String {
            "fake".into()
        }
    }

    fn refresher(life: Duration, refresh_before: Duration) -> (Arc<FakeFetch>, Arc<Refresher>) {
        let f = Arc::new(FakeFetch {
            life,
            calls: AtomicU32::new(0),
            fail: false.into(),
        });
        let r = Refresher::new(
            Box::new(Arc::clone(&f)),
            refresh_before,
            "out",
            CredentialMetrics::default(),
        );
        (f, r)
    }

    #[test]
    fn refresh_is_scheduled_ahead_of_expiry_within_half_the_lifetime() {
        let (_, r) = refresher(Duration::from_secs(3600), Duration::from_secs(300));
        let now = SystemTime::now();
        for _ in 0..50 {
            let d = r.refresh_delay(now + Duration::from_secs(3600), now);
            assert!(
                d <= Duration::from_secs(3300) && d >= Duration::from_secs(3240),
                "{d:?}"
            );
            let short = r.refresh_delay(now + Duration::from_secs(4), now);
            assert!(
                short <= Duration::from_secs(2) && short >= Duration::from_millis(1600),
                "{short:?}"
            );
        }
    }

    #[tokio::test]
    async fn credentials_are_renewed_before_they_expire_and_never_served_expired() {
        let (f, r) = refresher(Duration::from_millis(1200), Duration::from_secs(300));
        let _task = r.start().await;
        let provider = RefreshingProvider(Arc::clone(&r));
        let mut keys = std::collections::BTreeSet::new();
        // Renewed about every 0.6 s: five keys take ~3 s; the deadline only bounds a hang.
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while keys.len() < 5 {
            assert!(std::time::Instant::now() < until, "not renewed: {keys:?}");
            let c = provider
                .provide_credentials()
                .await
                .expect("always valid credentials");
            assert!(c.expiry().unwrap() > SystemTime::now());
            keys.insert(c.access_key_id().to_owned());
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(f.calls.load(Ordering::SeqCst) >= 5);
    }

    #[tokio::test]
    async fn a_failing_refresh_keeps_the_old_credentials_and_recovers() {
        let (f, r) = refresher(Duration::from_secs(3), Duration::from_secs(300));
        let _task = r.start().await;
        let expiry = r.current().unwrap().expiry().unwrap();
        f.fail.store(true, Ordering::SeqCst);
        // Waits on conditions and on the credentials' own expiry, not on fixed margins.
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while f.calls.load(Ordering::SeqCst) < 2 {
            assert!(std::time::Instant::now() < until, "refresh not retried");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let still_valid = r.current();
        if SystemTime::now() < expiry {
            assert!(still_valid.is_ok(), "still valid while refreshes fail");
        }
        if let Ok(left) = expiry.duration_since(SystemTime::now()) {
            tokio::time::sleep(left + Duration::from_millis(50)).await;
        }
        let err = r.current().unwrap_err();
        assert!(
            aws_smithy_types_display(&err).contains("expired"),
            "{err:?}"
        );
        f.fail.store(false, Ordering::SeqCst);
        let until = std::time::Instant::now() + Duration::from_secs(60);
        while r.current().is_err() && std::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(r.current().is_ok(), "recovered after STS came back");
    }

    fn aws_smithy_types_display(e: &CredentialsError) -> String {
        aws_sdk_sts::error::DisplayErrorContext(e).to_string()
    }
}
