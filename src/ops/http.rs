//! The operations endpoint: `GET /metrics` (Prometheus text), `/healthz` (alive), `/readyz`
//! (ready for clients), `/status` (JSON: is the data safe?).
//!
//! The endpoint listens before the buffers are recovered: replaying a large backlog from
//! `data_dir` can take minutes, and a pod whose probes cannot connect meanwhile is killed (and
//! starts the recovery again). During recovery `/healthz` is 200, `/readyz` is 503
//! `not ready: recovering: ...`, `/metrics` has the process's metrics with
//! `firehose_relay_ready 0`, and `/status` says `"phase": "recovering"` with no outputs yet.
//!
//! Readiness is about data safety, not only liveness: it is 503 until the buffers are recovered
//! and every source listens, 503 as soon as shutdown starts, 503 while a buffer's storage is
//! full or failed (appends are refused), and (with `http.ready_max_buffer_fill`) 503 while a
//! buffer is nearly full. `/healthz` is 503 only when a buffer's storage failed (an I/O error:
//! nothing is stored until a restart recovers from disk).
//!
//! The endpoint is bounded like the forward port: at most [`HTTP_MAX_CONNECTIONS`] connections
//! (more are accepted and closed at once, counted in
//! `firehose_relay_http_connections_rejected_total`), request headers must arrive within
//! [`HTTP_HEADER_TIMEOUT`], and a connection lives at most [`HTTP_CONNECTION_MAX_AGE`] (clients
//! reconnect), so idle or slow clients cannot hold descriptors or memory. HTTP/1.1 only.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::Context;
use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use serde::{Deserialize, Serialize};

use crate::buffer::file::space::{DirUsage, StorageHealth};
use crate::buffer::now_ms;
use crate::fds::AcceptBackoff;
use crate::ops::logging::Throttle;
use crate::ops::metrics::{output_label, Metrics};
use crate::pipeline::Pipeline;

/// Most connections served at once. Probes and a scraper need a few; the rest of the
/// descriptors belong to the buffer and the forward clients ([`crate::fds::FD_RESERVE`]).
pub const HTTP_MAX_CONNECTIONS: usize = 64;
/// A request's headers must arrive within this time (slowloris guard).
pub const HTTP_HEADER_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection is closed after this long, whatever it is doing (a scrape takes milliseconds).
pub const HTTP_CONNECTION_MAX_AGE: Duration = Duration::from_secs(30);

/// `[http]`: the operations endpoint (metrics, health).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Address to listen on; an empty string disables the endpoint.
    pub listen: String,
    /// When set (0–1), `/readyz` answers 503 while any output's buffer is fuller than this
    /// fraction of its `total_limit_size`, so a load balancer steers new clients elsewhere.
    pub ready_max_buffer_fill: Option<f64>,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            listen: "0.0.0.0:24231".to_owned(),
            ready_max_buffer_fill: None,
        }
    }
}

/// Where the relay is in its life, as `/status` reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// The buffers are being recovered from `data_dir` (the start of every run).
    Recovering,
    /// Buffers recovered; outputs and sources are being started.
    Starting,
    /// Sources listen: clients are welcome.
    Ready,
    /// Shutdown started.
    ShuttingDown,
}

const RECOVERING: u8 = 0;
const STARTING: u8 = 1;
const READY: u8 = 2;

/// Process-wide readiness flags.
#[derive(Debug, Default)]
pub struct Health {
    /// [`RECOVERING`], [`STARTING`] or [`READY`]; only moves forward.
    stage: AtomicU8,
    shutting_down: AtomicBool,
}

impl Health {
    /// Buffers recovered: outputs and sources are starting.
    pub fn set_recovered(&self) {
        self.stage.fetch_max(STARTING, Ordering::AcqRel);
    }

    /// Buffers recovered and sources listening.
    pub fn set_ready(&self) {
        self.stage.fetch_max(READY, Ordering::AcqRel);
    }

    /// Shutdown started: readiness fails from now on.
    pub fn set_shutting_down(&self) {
        self.shutting_down.store(true, Ordering::Release);
    }

    /// Started and not stopping.
    pub fn is_ready(&self) -> bool {
        self.phase() == Phase::Ready
    }

    /// Shutdown started.
    pub fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    /// Where the relay is.
    pub fn phase(&self) -> Phase {
        if self.is_shutting_down() {
            return Phase::ShuttingDown;
        }
        match self.stage.load(Ordering::Acquire) {
            RECOVERING => Phase::Recovering,
            STARTING => Phase::Starting,
            _ => Phase::Ready,
        }
    }
}

/// What the handlers need.
#[derive(Clone)]
pub struct HttpState {
    /// The process's metrics (the pipeline's, once there is one).
    pub metrics: Arc<Metrics>,
    /// The running pipeline, set with [`HttpState::set_pipeline`] once the buffers are
    /// recovered and the outputs built; until then the endpoint answers for the process alone.
    pipeline: Arc<OnceLock<Arc<Pipeline>>>,
    /// Readiness flags.
    pub health: Arc<Health>,
    /// `http.ready_max_buffer_fill`.
    pub max_fill: Option<f64>,
}

/// One output in `/status`.
#[derive(Debug, Serialize)]
pub struct OutputStatus {
    /// Buffer bytes / `total_limit_size`.
    pub buffer_fill_ratio: f64,
    /// The buffer's counters.
    pub buffer: crate::buffer::BufferStats,
    /// Age of the oldest queued chunk.
    pub oldest_queued_age_seconds: Option<f64>,
    /// Queued chunks that failed at least once.
    pub chunks_in_retry: usize,
    /// Unix time of the last fully successful delivery.
    pub last_delivery_unix: Option<i64>,
    /// Unix time the output's credentials expire.
    pub credential_expiry_unix: Option<u64>,
    /// Firehose throttled the output (beyond what does not depend on the rate) within the
    /// last few seconds.
    pub throttled: bool,
    /// Adaptive pacing (Firehose outputs with `adaptive_pacing`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pacing: Option<crate::sink::aws_batch::pacing::PacingStatus>,
    /// Records delivered per resolved stream name (outputs whose stream name has
    /// placeholders; at most 100 names, the rest under `_other`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<crate::sink::stream_name::StreamStatus>,
}

/// The `/status` document.
#[derive(Debug, Serialize)]
pub struct Status {
    /// Same as `/readyz`.
    pub ready: bool,
    /// `recovering` (buffers being recovered from `data_dir`; `outputs` is empty until they
    /// are), `starting`, `ready` or `shutting_down`.
    pub phase: Phase,
    /// Shutdown in progress.
    pub shutting_down: bool,
    /// Per output.
    pub outputs: std::collections::BTreeMap<String, OutputStatus>,
    /// The dead-letter directory's size against `storage.dead_letter_limit_size` (absent
    /// before the pipeline is built).
    pub dead_letter: Option<DirUsage>,
    /// The quarantine directory's size against `storage.quarantine_limit_size`.
    pub quarantine: Option<DirUsage>,
}

fn fill_ratio(s: &crate::buffer::BufferStats) -> f64 {
    if s.limit_bytes == 0 {
        0.0
    } else {
        s.bytes as f64 / s.limit_bytes as f64
    }
}

impl HttpState {
    /// State for an endpoint that starts before the pipeline exists.
    pub fn new(metrics: Arc<Metrics>, health: Arc<Health>, max_fill: Option<f64>) -> HttpState {
        HttpState {
            metrics,
            pipeline: Arc::new(OnceLock::new()),
            health,
            max_fill,
        }
    }

    /// The pipeline is built (buffers recovered): `/status` and `/metrics` report its outputs
    /// from now on. Only the first call counts.
    pub fn set_pipeline(&self, pipeline: Arc<Pipeline>) {
        let _ = self.pipeline.set(pipeline);
    }

    /// The outputs of the pipeline, none before it is built.
    fn outputs(&self) -> &[Arc<crate::pipeline::Output>] {
        self.pipeline.get().map_or(&[], |p| p.outputs())
    }

    fn status(&self) -> Status {
        let now = now_ms();
        let mut outputs = std::collections::BTreeMap::new();
        for o in self.outputs() {
            let s = o.buffer.stats();
            let last = self
                .metrics
                .last_delivery_timestamp
                .get_or_create(&output_label(&o.name))
                .get();
            let pacing = o.sink.pacing_status();
            outputs.insert(
                o.name.clone(),
                OutputStatus {
                    throttled: pacing.is_some_and(|p| p.throttled),
                    pacing,
                    buffer_fill_ratio: fill_ratio(&s),
                    oldest_queued_age_seconds: s
                        .oldest_queued_ms
                        .map(|t| now.saturating_sub(t) as f64 / 1000.0),
                    chunks_in_retry: s.retrying_chunks,
                    last_delivery_unix: (last > 0).then_some(last),
                    credential_expiry_unix: o.sink.credential_expiry_ms().map(|ms| ms / 1000),
                    streams: o.sink.streams(),
                    buffer: s,
                },
            );
        }
        Status {
            ready: self.readiness().is_ok(),
            phase: self.health.phase(),
            shutting_down: self.health.is_shutting_down(),
            outputs,
            dead_letter: self.pipeline.get().map(|p| p.dead_letter().usage()),
            quarantine: self
                .pipeline
                .get()
                .map(|p| p.dead_letter().quarantine_usage()),
        }
    }

    /// `Ok` when ready, else why not.
    fn readiness(&self) -> Result<(), String> {
        match self.health.phase() {
            Phase::ShuttingDown => return Err("shutting down".into()),
            Phase::Recovering => {
                return Err("recovering: the buffers are being recovered from data_dir".into())
            }
            Phase::Starting => {
                return Err("starting: outputs and sources not listening yet".into());
            }
            Phase::Ready => {}
        }
        // A full or failed store refuses appends: clients must go elsewhere.
        self.storage_problem()?;
        if let Some(max) = self.max_fill {
            for o in self.outputs() {
                let fill = fill_ratio(&o.buffer.stats());
                if fill > max {
                    return Err(format!(
                        "buffer of output `{}` is {:.0}% full (ready_max_buffer_fill = {:.0}%)",
                        o.name,
                        fill * 100.0,
                        max * 100.0
                    ));
                }
            }
        }
        Ok(())
    }
}

async fn metrics(State(st): State<HttpState>) -> Response {
    let now = now_ms();
    let m = &st.metrics;
    for o in st.outputs() {
        m.observe_buffer(&o.name, &o.buffer.stats(), now);
    }
    if let Some(p) = st.pipeline.get() {
        m.observe_dirs(
            &p.dead_letter().usage(),
            &p.dead_letter().quarantine_usage(),
        );
    }
    m.ready.set(i64::from(st.readiness().is_ok()));
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        m.render(),
    )
        .into_response()
}

impl HttpState {
    /// `Err` naming the first output whose buffer storage is not ok (full or failed).
    fn storage_problem(&self) -> Result<(), String> {
        for o in self.outputs() {
            let health = o.buffer.stats().storage;
            if let Some(reason) = health.reason() {
                return Err(format!(
                    "buffer storage of output `{}` is {}: {reason}",
                    o.name,
                    health.state()
                ));
            }
        }
        Ok(())
    }

    /// `Err` when a buffer's storage failed (poisoned until a restart recovers from disk).
    fn liveness(&self) -> Result<(), String> {
        for o in self.outputs() {
            if let StorageHealth::Failed { reason } = o.buffer.stats().storage {
                return Err(format!(
                    "buffer storage of output `{}` failed: {reason}; restart to recover from disk",
                    o.name
                ));
            }
        }
        Ok(())
    }
}

/// 200 while the process can make progress; 503 once a buffer's storage failed (an I/O error
/// or a failed fdatasync: nothing more is stored until a restart recovers from disk, so the
/// orchestrator should restart the relay). A full volume is not a liveness failure.
async fn healthz(State(st): State<HttpState>) -> Response {
    match st.liveness() {
        Ok(()) => (StatusCode::OK, "ok\n".to_owned()).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("unhealthy: {why}\n"),
        )
            .into_response(),
    }
}

async fn readyz(State(st): State<HttpState>) -> Response {
    match st.readiness() {
        Ok(()) => (StatusCode::OK, "ready\n".to_owned()).into_response(),
        Err(why) => (
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not ready: {why}\n"),
        )
            .into_response(),
    }
}

async fn status(State(st): State<HttpState>) -> Json<Status> {
    Json(st.status())
}

/// The router, separate from binding so tests can drive it.
pub fn router(state: HttpState) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/status", get(status))
        .with_state(state)
}

/// Binds `listen` and serves in a background task until the process ends (it keeps answering
/// during shutdown so probes see the 503).
pub async fn serve(listen: &str, state: HttpState) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on http.listen = {listen}"))?;
    let addr = listener.local_addr()?;
    let rejected = prometheus_client::metrics::counter::Counter::default();
    state.metrics.register(
        "http_connections_rejected",
        "Connections to the operations endpoint closed at once: HTTP_MAX_CONNECTIONS reached",
        rejected.clone(),
    );
    let app = router(state);
    tokio::spawn(accept_loop(listener, app, rejected));
    tracing::info!(%addr, max_connections = HTTP_MAX_CONNECTIONS,
        "http endpoint listening (/metrics /healthz /readyz /status)");
    Ok(addr)
}

async fn accept_loop(
    listener: tokio::net::TcpListener,
    app: Router,
    rejected: prometheus_client::metrics::counter::Counter,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(HTTP_MAX_CONNECTIONS));
    let mut backoff = AcceptBackoff::default();
    let log = Throttle::new(Duration::from_secs(10));
    loop {
        let stream = match listener.accept().await {
            Ok((stream, _)) => {
                backoff.reset();
                stream
            }
            Err(e) => {
                let wait = backoff.next_wait();
                if let Some(suppressed) = log.allow() {
                    tracing::warn!(error = %e, suppressed, retry_in_ms = wait.as_millis() as u64,
                        "http endpoint: accept failed");
                }
                tokio::time::sleep(wait).await;
                continue;
            }
        };
        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
            rejected.inc();
            if let Some(suppressed) = log.allow() {
                tracing::warn!(
                    max_connections = HTTP_MAX_CONNECTIONS,
                    suppressed,
                    "http endpoint: too many connections; closing new ones"
                );
            }
            continue;
        };
        tokio::spawn(serve_connection(stream, app.clone(), slot));
    }
}

/// One connection, with the header timeout and the age limit.
async fn serve_connection(
    stream: tokio::net::TcpStream,
    app: Router,
    slot: tokio::sync::OwnedSemaphorePermit,
) {
    let service = hyper_util::service::TowerToHyperService::new(app);
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(HTTP_HEADER_TIMEOUT)
        .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
    if let Ok(Err(e)) = tokio::time::timeout(HTTP_CONNECTION_MAX_AGE, conn).await {
        tracing::debug!(error = %e, "http endpoint: connection ended with an error");
    }
    drop(slot);
}
