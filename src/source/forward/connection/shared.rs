//! What every connection of one forward source shares ([`Shared`]): the source's settings,
//! its metrics and log throttles, TLS and the handshake's security, and the in-flight budget.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use tokio_rustls::TlsAcceptor;

use super::super::auth_guard::AuthGuard;
use super::super::budget::InFlight;
use super::super::decode::{DecodeOptions, DEFAULT_RECORD_SIZE_LIMIT};
use super::super::handshake::Security;
use super::super::metrics::ForwardMetrics;
use super::super::ForwardConfig;
use super::ConnError;
use crate::ops::logging::Throttle;
use crate::ops::metrics::{source_label, Labels};
use crate::source::Emitter;

/// How often the same kind of warning may be logged per source.
const LOG_PERIOD: Duration = Duration::from_secs(10);
/// One [`Throttle`] per reason, so that a flood of one kind of bad input cannot hide the
/// first occurrence of another kind. Reasons are a small fixed set of labels.
#[derive(Default)]
pub(super) struct ReasonThrottle(std::sync::Mutex<Vec<(&'static str, Arc<Throttle>)>>);

impl ReasonThrottle {
    pub(super) fn allow(&self, reason: &'static str) -> Option<u64> {
        let throttle = {
            let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
            match all.iter().find(|(r, _)| *r == reason) {
                Some((_, t)) => Arc::clone(t),
                None => {
                    let t = Arc::new(Throttle::new(LOG_PERIOD));
                    all.push((reason, Arc::clone(&t)));
                    t
                }
            }
        };
        throttle.allow()
    }
}

/// What every connection of one forward source shares.
pub struct Shared {
    /// The source name.
    pub name: String,
    pub(super) labels: Labels,
    pub(super) emitter: Emitter,
    pub(super) metrics: Arc<ForwardMetrics>,
    pub(super) acks_sent: Counter,
    pub(super) emit_failures: Counter,
    pub(super) invalid_events: Counter,
    pub(super) oversized_records: Counter,
    pub(super) acceptor: Option<TlsAcceptor>,
    pub(super) security: Option<Security>,
    pub(super) auth_guard: AuthGuard,
    pub(super) message_length_limit: usize,
    pub(super) in_flight: InFlight,
    pub(super) decode: DecodeOptions,
    pub(super) source_address_key: Option<String>,
    pub(super) source_hostname_key: Option<String>,
    pub(super) idle_timeout: Option<Duration>,
    pub(super) message_timeout: Duration,
    pub(super) deny_keepalive: bool,
    pub(super) bad_input_log: ReasonThrottle,
    pub(super) emit_log: Throttle,
    pub(super) reject_log: Throttle,
}

impl Shared {
    /// From the source's config; fails only on values `problems()` would also report.
    pub fn new(
        name: &str,
        config: &ForwardConfig,
        emitter: Emitter,
        metrics: Arc<ForwardMetrics>,
        acceptor: Option<TlsAcceptor>,
    ) -> anyhow::Result<Shared> {
        let labels = source_label(name);
        let size = |v: u64, key: &str| {
            usize::try_from(v).map_err(|_| anyhow::anyhow!("{key} is too large for this platform"))
        };
        let acks_sent = metrics.acks_sent.get_or_create(&labels).clone();
        let emit_failures = metrics.emit_failures.get_or_create(&labels).clone();
        let invalid_events = metrics.invalid_events.get_or_create(&labels).clone();
        let oversized_records = metrics.oversized_records.get_or_create(&labels).clone();
        let record_size_limit = match config.record_size_limit {
            Some(limit) => size(limit.0, "record_size_limit")?,
            None => emitter
                .pipeline()
                .largest_record_bytes()
                .unwrap_or(DEFAULT_RECORD_SIZE_LIMIT),
        };
        let in_flight = InFlight::new(
            size(config.in_flight_limit.0, "in_flight_limit")?,
            metrics.in_flight_bytes.get_or_create(&labels).clone(),
            metrics.in_flight_peak_bytes.get_or_create(&labels).clone(),
            metrics.in_flight_waits.get_or_create(&labels).clone(),
        );
        Ok(Shared {
            name: name.to_owned(),
            in_flight,
            acks_sent,
            emit_failures,
            invalid_events,
            oversized_records,
            labels,
            emitter,
            metrics,
            acceptor,
            security: config.security.as_ref().map(Security::new),
            auth_guard: AuthGuard::default(),
            message_length_limit: size(config.message_length_limit.0, "message_length_limit")?,
            decode: DecodeOptions {
                skip_invalid_event: config.skip_invalid_event,
                decompression_size_limit: size(
                    config.decompression_size_limit.0,
                    "decompression_size_limit",
                )?,
                record_size_limit,
                tag_prefix: config.add_tag_prefix.clone(),
                extra_fields: Vec::new(),
            },
            source_address_key: config.source_address_key.clone(),
            source_hostname_key: config.source_hostname_key.clone(),
            idle_timeout: Some(config.idle_timeout.0).filter(|d| !d.is_zero()),
            message_timeout: config.message_timeout.0,
            deny_keepalive: config.deny_keepalive,
            bad_input_log: ReasonThrottle::default(),
            emit_log: Throttle::new(LOG_PERIOD),
            reject_log: Throttle::new(LOG_PERIOD),
        })
    }

    /// The `in_flight_limit` in force, in bytes.
    pub fn in_flight_limit(&self) -> usize {
        self.in_flight.limit()
    }

    /// The per-record bound in force.
    pub fn record_size_limit(&self) -> usize {
        self.decode.record_size_limit
    }

    /// True when `peer` failed the handshake too often lately and is to be refused.
    pub fn locked_out(&self, peer: SocketAddr) -> bool {
        self.security.is_some()
            && self
                .auth_guard
                .is_locked_out(peer.ip(), std::time::Instant::now())
    }

    pub(super) fn labels_with(&self, key: &'static str, value: &str) -> Labels {
        let mut l = self.labels.clone();
        l.push((key, value.to_owned()));
        l
    }

    /// Counts a failed `accept`.
    pub fn count_accept_error(&self, reason: &'static str) {
        self.metrics
            .accept_errors
            .get_or_create(&self.labels_with("reason", reason))
            .inc();
    }

    /// Counts and logs a connection refused before it was served.
    pub fn reject(&self, peer: SocketAddr, reason: &'static str, why: &str) {
        self.metrics
            .connections_rejected
            .get_or_create(&self.labels_with("reason", reason))
            .inc();
        if let Some(suppressed) = self.reject_log.allow() {
            tracing::warn!(source = %self.name, %peer, reason, suppressed, "forward connection refused: {why}");
        }
    }

    /// Decode options for one client (its address in `source_*_key` fields).
    pub(super) fn options_for(&self, peer: SocketAddr) -> DecodeOptions {
        let mut opts = self.decode.clone();
        let ip = peer.ip().to_string();
        for key in [&self.source_address_key, &self.source_hostname_key]
            .into_iter()
            .flatten()
        {
            if !opts.extra_fields.iter().any(|(k, _)| k == key) {
                opts.extra_fields.push((key.clone(), ip.clone()));
            }
        }
        opts
    }

    /// Logs and counts why a connection ended early.
    pub(super) fn report(&self, peer: SocketAddr, err: &ConnError) {
        let warn = |reason: &'static str| {
            if let Some(suppressed) = self.bad_input_log.allow(reason) {
                tracing::warn!(source = %self.name, %peer, reason, error = %err, suppressed,
                    "closing forward connection");
            }
        };
        match err {
            ConnError::Decode(e) => {
                self.metrics
                    .invalid_messages
                    .get_or_create(&self.labels_with("reason", e.reason()))
                    .inc();
                warn(e.reason());
            }
            ConnError::MessageTimeout(_) => {
                self.metrics
                    .invalid_messages
                    .get_or_create(&self.labels_with("reason", "timeout"))
                    .inc();
                warn("timeout");
            }
            ConnError::Handshake(reason) => {
                self.metrics
                    .handshake_failures
                    .get_or_create(&self.labels_with("reason", reason))
                    .inc();
                warn(reason);
            }
            ConnError::Tls(_) => {
                self.metrics
                    .handshake_failures
                    .get_or_create(&self.labels_with("reason", "tls"))
                    .inc();
                warn("tls");
            }
            ConnError::Internal(_) => {
                tracing::error!(source = %self.name, %peer, error = %err, "forward connection failed");
            }
            ConnError::Truncated(_) | ConnError::Io(_) => {
                tracing::debug!(source = %self.name, %peer, error = %err, "forward connection ended");
            }
        }
    }
}
