//! Prometheus metrics, one registry per process. Components receive an `Arc<Metrics>` and bump
//! the counters; the HTTP endpoint renders the registry.
//!
//! Labels: `source` for inputs, `output` for outputs, plus `reason` / `class` where a counter
//! is split by cause. Names follow the Prometheus conventions (`_total`, `_bytes`, `_seconds`).

use prometheus_client::encoding::text::encode;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::{Metric, Registry};
use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::sync::atomic::AtomicU64;
use std::sync::Mutex;

use crate::buffer::BufferStats;

/// Label set: (name, value) pairs.
pub type Labels = Vec<(&'static str, String)>;

/// All metrics of the relay.
pub struct Metrics {
    registry: Mutex<Registry>,
    /// Metric sets of components (forward sources, Firehose outputs…), one per type, created and
    /// registered by the first component instance that asks.
    components: Mutex<HashMap<TypeId, Box<dyn Any + Send + Sync>>>,
    /// Events received, by source.
    pub records_in: Family<Labels, Counter>,
    /// JSON bytes received, by source.
    pub bytes_in: Family<Labels, Counter>,
    /// Events not accepted, by source/output and reason.
    pub records_dropped: Family<Labels, Counter>,
    /// Delivery attempts, by output.
    pub flush_attempts: Family<Labels, Counter>,
    /// Attempts that delivered everything pending, by output.
    pub flush_successes: Family<Labels, Counter>,
    /// Failed attempts, by output and error class.
    pub flush_failures: Family<Labels, Counter>,
    /// Records stored in an output's buffer (what the output takes in), by output.
    pub records_buffered: Family<Labels, Counter>,
    /// Records delivered, by output.
    pub records_delivered: Family<Labels, Counter>,
    /// Records sent again after a failure, by output.
    pub records_retried: Family<Labels, Counter>,
    /// Records written to the dead-letter directory, by output.
    pub records_dead_lettered: Family<Labels, Counter>,
    /// Unix time of the last fully successful delivery, by output.
    pub last_delivery_timestamp: Family<Labels, Gauge>,
    /// Buffer chunks by output and state (`staged`, `queued`, `in_flight`, `retrying`).
    pub buffer_chunks: Family<Labels, Gauge>,
    /// Records kept in the buffer, by output.
    pub buffer_records: Family<Labels, Gauge>,
    /// Logical bytes kept in the buffer, by output.
    pub buffer_bytes: Family<Labels, Gauge>,
    /// `total_limit_size`, by output.
    pub buffer_limit_bytes: Family<Labels, Gauge>,
    /// Age of the oldest queued chunk, by output (0 when none is queued).
    pub buffer_oldest_queued_age: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Chunks removed by `overflow_action = "drop_oldest_chunk"`, by output.
    pub buffer_dropped_chunks: Family<Labels, Gauge>,
    /// Open chunks closed early because `max_open_chunks` were open, by output.
    pub buffer_chunks_closed_early: Family<Labels, Gauge>,
    /// 1 while `/readyz` answers 200, else 0 (set at scrape time), so an alert can say that a
    /// relay answers scrapes but takes no clients.
    pub ready: Gauge,
    /// Health of an output's buffer storage: 1 for the current `state` (`ok`, `full`,
    /// `failed`), 0 for the others.
    pub buffer_storage_state: Family<Labels, Gauge>,
    /// Bytes of purged chunks' files kept for reuse in the output's `data_dir`.
    pub buffer_reuse_pool_bytes: Family<Labels, Gauge>,
    /// Bytes, limit and refused writes of the dead-letter and quarantine directories, by
    /// `dir` (`dead_letter`, `quarantine`) and `kind` (`bytes`, `limit_bytes`).
    pub dir_bytes: Family<Labels, Gauge>,
    /// Writes refused at a directory's limit since start, by `dir`.
    pub dir_refused_writes: Family<Labels, Gauge>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A fresh registry with every metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("firehose_relay");
        let m = Metrics {
            records_in: Family::default(),
            bytes_in: Family::default(),
            records_dropped: Family::default(),
            flush_attempts: Family::default(),
            flush_successes: Family::default(),
            flush_failures: Family::default(),
            records_buffered: Family::default(),
            records_delivered: Family::default(),
            records_retried: Family::default(),
            records_dead_lettered: Family::default(),
            last_delivery_timestamp: Family::default(),
            buffer_chunks: Family::default(),
            buffer_records: Family::default(),
            buffer_bytes: Family::default(),
            buffer_limit_bytes: Family::default(),
            buffer_oldest_queued_age: Family::default(),
            buffer_dropped_chunks: Family::default(),
            buffer_chunks_closed_early: Family::default(),
            ready: Gauge::default(),
            buffer_storage_state: Family::default(),
            buffer_reuse_pool_bytes: Family::default(),
            dir_bytes: Family::default(),
            dir_refused_writes: Family::default(),
            registry: Mutex::new(Registry::default()),
            components: Mutex::new(HashMap::new()),
        };
        m.register_flow(&mut registry);
        m.register_buffer(&mut registry);
        Metrics {
            registry: Mutex::new(registry),
            ..m
        }
    }

    /// Registers the counters of records flowing through: intake, delivery, retries.
    fn register_flow(&self, registry: &mut Registry) {
        registry.register(
            "records_in",
            "Events received, by source",
            self.records_in.clone(),
        );
        registry.register(
            "bytes_in",
            "JSON bytes of events received, by source",
            self.bytes_in.clone(),
        );
        registry.register(
            "records_dropped",
            "Events not accepted, by reason",
            self.records_dropped.clone(),
        );
        registry.register(
            "flush_attempts",
            "Chunk delivery attempts",
            self.flush_attempts.clone(),
        );
        registry.register(
            "flush_successes",
            "Chunk delivery attempts that delivered every pending record",
            self.flush_successes.clone(),
        );
        registry.register(
            "flush_failures",
            "Failed chunk delivery attempts, by error class",
            self.flush_failures.clone(),
        );
        registry.register(
            "records_buffered",
            "Records stored in the output's buffer",
            self.records_buffered.clone(),
        );
        registry.register(
            "records_delivered",
            "Records delivered",
            self.records_delivered.clone(),
        );
        registry.register(
            "records_retried",
            "Records sent again after a failed attempt",
            self.records_retried.clone(),
        );
        registry.register(
            "records_dead_lettered",
            "Records written to the dead-letter directory",
            self.records_dead_lettered.clone(),
        );
        registry.register(
            "last_delivery_timestamp_seconds",
            "Unix time of the last fully successful delivery",
            self.last_delivery_timestamp.clone(),
        );
    }

    /// Registers the gauges of the buffers' contents and readiness.
    fn register_buffer(&self, registry: &mut Registry) {
        registry.register(
            "buffer_chunks",
            "Buffer chunks by state (staged, queued, in_flight, retrying)",
            self.buffer_chunks.clone(),
        );
        registry.register(
            "buffer_records",
            "Records kept in the buffer",
            self.buffer_records.clone(),
        );
        registry.register(
            "buffer_bytes",
            "Logical bytes kept in the buffer (what total_limit_size limits)",
            self.buffer_bytes.clone(),
        );
        registry.register(
            "buffer_limit_bytes",
            "total_limit_size of the buffer",
            self.buffer_limit_bytes.clone(),
        );
        registry.register(
            "buffer_oldest_queued_age_seconds",
            "Age of the oldest queued chunk (0 when none is queued)",
            self.buffer_oldest_queued_age.clone(),
        );
        registry.register(
            "buffer_dropped_chunks",
            "Chunks dropped by overflow_action = drop_oldest_chunk since start",
            self.buffer_dropped_chunks.clone(),
        );
        registry.register(
            "buffer_chunks_closed_early",
            "Open chunks closed (queued) before they were full or due because max_open_chunks chunks were open (chunk keys), since start",
            self.buffer_chunks_closed_early.clone(),
        );
        registry.register(
            "storage_dir_bytes",
            "Size (kind=bytes) and limit (kind=limit_bytes) of the dead-letter and quarantine directories (dir=dead_letter|quarantine), on the buffer's volume",
            self.dir_bytes.clone(),
        );
        registry.register(
            "storage_dir_refused_writes",
            "Writes refused since start because the directory (dir=dead_letter|quarantine) was at its limit; what would have been written stays in the buffer or unacknowledged",
            self.dir_refused_writes.clone(),
        );
        registry.register(
            "buffer_storage_state",
            "1 for the current state of the output's buffer storage: ok, full (appends refused for lack of room; delivery goes on) or failed (I/O error; restart to recover)",
            self.buffer_storage_state.clone(),
        );
        registry.register(
            "buffer_reuse_pool_bytes",
            "Bytes of purged chunks' files kept to be overwritten by new chunks (at most 64 MiB per data_dir, the same for each of its file-buffered outputs; emptied when the volume is full)",
            self.buffer_reuse_pool_bytes.clone(),
        );
        registry.register(
            "ready",
            "1 while /readyz answers 200 (buffers recovered, sources listening, not shutting down, no buffer above ready_max_buffer_fill), else 0",
            self.ready.clone(),
        );
    }

    /// Registers a metric owned by a component (a source's connection gauge, a sink's latency
    /// histogram...). `name` gets the `firehose_relay_` prefix; counters get `_total` appended
    /// by the encoder. Call it once per name, at startup.
    pub fn register(&self, name: &str, help: &str, metric: impl Metric) {
        self.registry
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .register(name, help, metric);
    }

    /// The metric set of type `T` for this registry: created (and its metrics registered) by
    /// `init` on first use, shared by every later caller. Several instances of one component
    /// (two forward sources) thus share families, told apart by labels, and no name is
    /// registered twice.
    pub fn component<T: Clone + Send + Sync + 'static>(
        &self,
        init: impl FnOnce(&Metrics) -> T,
    ) -> T {
        let mut components = self.components.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(existing) = components
            .get(&TypeId::of::<T>())
            .and_then(|b| b.downcast_ref::<T>())
        {
            return existing.clone();
        }
        let created = init(self);
        components.insert(TypeId::of::<T>(), Box::new(created.clone()));
        created
    }

    /// Prometheus text exposition of every metric.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let registry = self.registry.lock().unwrap_or_else(|e| e.into_inner());
        // Encoding into a String cannot fail.
        let _ = encode(&mut out, &registry);
        out
    }
}

impl Metrics {
    /// Copies a buffer's current state into the buffer gauges (called at scrape time, so the
    /// buffers never pay for metrics on their hot path).
    pub fn observe_buffer(&self, output: &str, s: &BufferStats, now_ms: u64) {
        let labels = output_label(output);
        for (state, n) in [
            ("staged", s.staged_chunks),
            ("queued", s.queued_chunks),
            ("in_flight", s.in_flight_chunks),
            ("retrying", s.retrying_chunks),
        ] {
            let mut l = labels.clone();
            l.push(("state", state.to_owned()));
            self.buffer_chunks.get_or_create(&l).set(clamp(n as u64));
        }
        self.buffer_records
            .get_or_create(&labels)
            .set(clamp(s.records));
        self.buffer_bytes.get_or_create(&labels).set(clamp(s.bytes));
        self.buffer_limit_bytes
            .get_or_create(&labels)
            .set(clamp(s.limit_bytes));
        self.buffer_dropped_chunks
            .get_or_create(&labels)
            .set(clamp(s.dropped_chunks));
        self.buffer_chunks_closed_early
            .get_or_create(&labels)
            .set(clamp(s.closed_early_chunks));
        self.buffer_reuse_pool_bytes
            .get_or_create(&labels)
            .set(clamp(s.reuse_pool.bytes));
        let current = s.storage.state();
        for state in ["ok", "full", "failed"] {
            let mut l = labels.clone();
            l.push(("state", state.to_owned()));
            self.buffer_storage_state
                .get_or_create(&l)
                .set(i64::from(state == current));
        }
        let age = s
            .oldest_queued_ms
            .map(|t| now_ms.saturating_sub(t) as f64 / 1000.0)
            .unwrap_or(0.0);
        self.buffer_oldest_queued_age
            .get_or_create(&labels)
            .set(age);
    }
}

impl Metrics {
    /// Copies the dead-letter and quarantine directories' usage into their gauges (at scrape
    /// time).
    pub fn observe_dirs(
        &self,
        dead_letter: &crate::buffer::file::space::DirUsage,
        quarantine: &crate::buffer::file::space::DirUsage,
    ) {
        for (dir, u) in [("dead_letter", dead_letter), ("quarantine", quarantine)] {
            for (kind, v) in [("bytes", u.bytes), ("limit_bytes", u.limit_bytes)] {
                let l: Labels = vec![("dir", dir.to_owned()), ("kind", kind.to_owned())];
                self.dir_bytes.get_or_create(&l).set(clamp(v));
            }
            let l: Labels = vec![("dir", dir.to_owned())];
            self.dir_refused_writes
                .get_or_create(&l)
                .set(clamp(u.refused_writes));
        }
    }
}

fn clamp(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `[("output", name)]`.
pub fn output_label(name: &str) -> Labels {
    vec![("output", name.to_owned())]
}

/// `[("source", name)]`.
pub fn source_label(name: &str) -> Labels {
    vec![("source", name.to_owned())]
}
