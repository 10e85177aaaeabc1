//! Metrics of the Firehose sink (label `output`, plus `class` where split by error class).

use std::sync::atomic::AtomicU64;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use crate::ops::metrics::{Labels, Metrics};

fn latency_histogram() -> Histogram {
    // 5 ms … ~41 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// The Firehose families, registered once per registry and shared by all Firehose outputs.
#[derive(Clone)]
pub struct FirehoseMetrics {
    /// PutRecordBatch latency, every attempt.
    pub call_duration: Family<Labels, Histogram, fn() -> Histogram>,
    /// Failed PutRecordBatch calls, by class.
    pub call_errors: Family<Labels, Counter>,
    /// Records refused inside a successful call (FailedPutCount), by class.
    pub record_failures: Family<Labels, Counter>,
    /// Throttling signals (whole call or per record).
    pub throttles: Family<Labels, Counter>,
    /// Firehose records accepted.
    pub records_sent: Family<Labels, Counter>,
    /// Data bytes accepted.
    pub bytes_sent: Family<Labels, Counter>,
    /// Current pacing rate factor (1 = configured rates, lower after throttling).
    pub pacing_factor: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Current adaptive spacing between calls, seconds.
    pub pacing_delay: Family<Labels, Gauge<f64, AtomicU64>>,
    /// Time spent waiting for pacing, seconds.
    pub pacing_wait: Family<Labels, Counter<f64, AtomicU64>>,
}

impl FirehoseMetrics {
    fn new() -> Self {
        FirehoseMetrics {
            call_duration: Family::new_with_constructor(latency_histogram),
            call_errors: Family::default(),
            record_failures: Family::default(),
            throttles: Family::default(),
            records_sent: Family::default(),
            bytes_sent: Family::default(),
            pacing_factor: Family::default(),
            pacing_delay: Family::default(),
            pacing_wait: Family::default(),
        }
    }

    /// The families registered in `metrics` (registered on first use per registry, since a
    /// registry refuses nothing but would print a name twice).
    pub fn get(metrics: &Arc<Metrics>) -> FirehoseMetrics {
        metrics.component(Self::register)
    }

    fn register(metrics: &Metrics) -> FirehoseMetrics {
        let m = FirehoseMetrics::new();
        metrics.register(
            "firehose_put_record_batch_duration_seconds",
            "PutRecordBatch latency per attempt",
            m.call_duration.clone(),
        );
        metrics.register(
            "firehose_call_errors",
            "Failed PutRecordBatch calls, by error class",
            m.call_errors.clone(),
        );
        metrics.register(
            "firehose_record_failures",
            "Records refused in a PutRecordBatch response (FailedPutCount), by error class",
            m.record_failures.clone(),
        );
        metrics.register(
            "firehose_throttles",
            "Throttling signals from Firehose",
            m.throttles.clone(),
        );
        metrics.register(
            "firehose_records_sent",
            "Firehose records accepted",
            m.records_sent.clone(),
        );
        metrics.register(
            "firehose_bytes_sent",
            "Data bytes accepted by Firehose",
            m.bytes_sent.clone(),
        );
        metrics.register(
            "firehose_pacing_rate_factor",
            "Pacing rate factor (1 = configured rates; lower after throttling)",
            m.pacing_factor.clone(),
        );
        metrics.register(
            "firehose_pacing_delay_seconds",
            "Adaptive spacing between PutRecordBatch calls after throttling",
            m.pacing_delay.clone(),
        );
        metrics.register(
            "firehose_pacing_wait_seconds",
            "Time calls waited for pacing",
            m.pacing_wait.clone(),
        );
        m
    }
}
