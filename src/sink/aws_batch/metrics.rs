//! Metrics of a batch-put output (label `output`, plus `class` where split by error class).
//!
//! Every service has the same families under its own prefix ([`Names`]: `firehose_…` for
//! PutRecordBatch, `kinesis_…` for PutRecords). The families are registered once per registry
//! and service ([`Families`]); each output looks up its own handles once, when it is built
//! ([`OutputMetrics`]), so a call bumps counters without building label sets or hashing them.

use std::sync::atomic::AtomicU64;
use std::sync::{Arc, OnceLock};

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};

use super::pacing::PacingMetrics;
use crate::ops::metrics::Metrics;
use crate::sink::ErrorClass;

/// Labels of a per-output series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct OutputLabels {
    /// The output's name.
    pub output: String,
}

/// Labels of a per-output series split by error class.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
pub struct ClassLabels {
    /// The output's name.
    pub output: String,
    /// The error class ([`ErrorClass::as_str`]).
    pub class: ErrorClass,
}

fn latency_histogram() -> Histogram {
    // 5 ms … ~41 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 14))
}

/// How one service's families are named and described.
#[derive(Debug, Clone, Copy)]
pub struct Names {
    /// Prefix of every family, e.g. `firehose`.
    pub prefix: &'static str,
    /// Name of the latency histogram, e.g. `firehose_put_record_batch_duration_seconds`.
    pub call_duration: &'static str,
    /// The service, in help texts (`Firehose`).
    pub service: &'static str,
    /// The batch call, in help texts (`PutRecordBatch`).
    pub call: &'static str,
    /// The field of a 200 answer counting refused records (`FailedPutCount`).
    pub failed_count: &'static str,
}

/// One service's families, registered once per registry and shared by all its outputs.
#[derive(Clone)]
pub struct Families {
    /// Call latency, every attempt.
    pub call_duration: Family<OutputLabels, Histogram, fn() -> Histogram>,
    /// Failed calls, by class.
    pub call_errors: Family<ClassLabels, Counter>,
    /// Records refused inside a successful call (FailedPutCount), by class.
    pub record_failures: Family<ClassLabels, Counter>,
    /// Throttling signals (whole call or per record).
    pub throttles: Family<OutputLabels, Counter>,
    /// Service records accepted.
    pub records_sent: Family<OutputLabels, Counter>,
    /// Data bytes accepted.
    pub bytes_sent: Family<OutputLabels, Counter>,
    /// Adaptive target / the rate delivered before throttling (1 = not limiting).
    pub pacing_factor: Family<OutputLabels, Gauge<f64, AtomicU64>>,
    /// Adaptive target rate, records per second (0 = not limiting).
    pub pacing_target: Family<OutputLabels, Gauge<f64, AtomicU64>>,
    /// Throttled fraction of the records answered in the last second.
    pub pacing_throttled_fraction: Family<OutputLabels, Gauge<f64, AtomicU64>>,
    /// The throttled fraction pacing learned does not depend on the rate.
    pub pacing_baseline_fraction: Family<OutputLabels, Gauge<f64, AtomicU64>>,
    /// Cuts of the adaptive target.
    pub pacing_cuts: Family<OutputLabels, Counter>,
    /// Raises of the adaptive target.
    pub pacing_raises: Family<OutputLabels, Counter>,
    /// Time spent waiting for pacing, seconds.
    pub pacing_wait: Family<OutputLabels, Counter<f64, AtomicU64>>,
}

impl Families {
    /// Unregistered families (tests, and [`Families::register`]).
    pub fn new() -> Self {
        Families {
            call_duration: Family::new_with_constructor(latency_histogram),
            call_errors: Family::default(),
            record_failures: Family::default(),
            throttles: Family::default(),
            records_sent: Family::default(),
            bytes_sent: Family::default(),
            pacing_factor: Family::default(),
            pacing_target: Family::default(),
            pacing_throttled_fraction: Family::default(),
            pacing_baseline_fraction: Family::default(),
            pacing_cuts: Family::default(),
            pacing_raises: Family::default(),
            pacing_wait: Family::default(),
        }
    }

    /// The handles of output `output`.
    pub fn for_output(&self, output: &str) -> OutputMetrics {
        let labels = OutputLabels {
            output: output.to_owned(),
        };
        OutputMetrics {
            call_duration: self.call_duration.get_or_create(&labels).clone(),
            call_errors: ByClass::new(&self.call_errors, output),
            record_failures: ByClass::new(&self.record_failures, output),
            throttles: self.throttles.get_or_create(&labels).clone(),
            records_sent: self.records_sent.get_or_create(&labels).clone(),
            bytes_sent: self.bytes_sent.get_or_create(&labels).clone(),
            pacing: PacingMetrics {
                factor: self.pacing_factor.get_or_create(&labels).clone(),
                target: self.pacing_target.get_or_create(&labels).clone(),
                throttled_fraction: self
                    .pacing_throttled_fraction
                    .get_or_create(&labels)
                    .clone(),
                baseline_fraction: self.pacing_baseline_fraction.get_or_create(&labels).clone(),
                cuts: self.pacing_cuts.get_or_create(&labels).clone(),
                raises: self.pacing_raises.get_or_create(&labels).clone(),
            },
            pacing_wait: self.pacing_wait.get_or_create(&labels).clone(),
        }
    }

    /// The families of `names`, registered in `metrics`. Call it once per registry and
    /// service (through [`Metrics::component`] with a type of the service's own), since a
    /// registry refuses nothing but would print a name twice.
    pub fn register(metrics: &Metrics, names: &Names) -> Families {
        let m = Families::new();
        let Names {
            prefix,
            service,
            call,
            failed_count,
            ..
        } = *names;
        let family = |suffix: &str| format!("{prefix}_{suffix}");
        metrics.register(
            names.call_duration,
            &format!("{call} latency per attempt"),
            m.call_duration.clone(),
        );
        metrics.register(
            &family("call_errors"),
            &format!("Failed {call} calls, by error class"),
            m.call_errors.clone(),
        );
        metrics.register(
            &family("record_failures"),
            &format!("Records refused in a {call} response ({failed_count}), by error class"),
            m.record_failures.clone(),
        );
        metrics.register(
            &family("throttles"),
            &format!("Throttling signals from {service}"),
            m.throttles.clone(),
        );
        metrics.register(
            &family("records_sent"),
            &format!("{service} records accepted"),
            m.records_sent.clone(),
        );
        metrics.register(
            &family("bytes_sent"),
            &format!("Data bytes accepted by {service}"),
            m.bytes_sent.clone(),
        );
        metrics.register(
            &family("pacing_rate_factor"),
            "Adaptive pacing target as a fraction of the rate delivered before throttling (1 = not limiting)",
            m.pacing_factor.clone(),
        );
        metrics.register(
            &family("pacing_target_records_per_second"),
            "Adaptive pacing target rate, records per second (0 = not limiting)",
            m.pacing_target.clone(),
        );
        metrics.register(
            &family("pacing_throttled_fraction"),
            "Throttled fraction of the records answered in the last second",
            m.pacing_throttled_fraction.clone(),
        );
        metrics.register(
            &family("pacing_baseline_fraction"),
            "Throttled fraction that adaptive pacing found not to depend on the rate, and ignores",
            m.pacing_baseline_fraction.clone(),
        );
        metrics.register(
            &family("pacing_cuts"),
            "Cuts of the adaptive pacing target",
            m.pacing_cuts.clone(),
        );
        metrics.register(
            &family("pacing_raises"),
            "Raises of the adaptive pacing target",
            m.pacing_raises.clone(),
        );
        metrics.register(
            &family("pacing_wait_seconds"),
            "Time calls waited for pacing",
            m.pacing_wait.clone(),
        );
        m
    }
}

impl Default for Families {
    fn default() -> Self {
        Families::new()
    }
}

/// The metric handles of one output, looked up once, from its service's [`Families`].
#[derive(Debug, Clone)]
pub struct OutputMetrics {
    /// Call latency, every attempt.
    pub call_duration: Histogram,
    /// Failed calls, by class.
    pub call_errors: ByClass,
    /// Records refused inside a successful call, by class.
    pub record_failures: ByClass,
    /// Throttling signals (whole call or per record).
    pub throttles: Counter,
    /// Records accepted.
    pub records_sent: Counter,
    /// Data bytes accepted.
    pub bytes_sent: Counter,
    /// The pacer's gauges and counters.
    pub pacing: PacingMetrics,
    /// Time spent waiting for pacing, seconds.
    pub pacing_wait: Counter<f64, AtomicU64>,
}

/// One output's counters of a family split by error class. Each class's series is created the
/// first time that class happens (so `/metrics` shows only classes that occurred) and then
/// kept.
#[derive(Debug, Clone)]
pub struct ByClass {
    family: Family<ClassLabels, Counter>,
    output: String,
    counters: Arc<[OnceLock<Counter>; ErrorClass::ALL.len()]>,
}

impl ByClass {
    fn new(family: &Family<ClassLabels, Counter>, output: &str) -> Self {
        ByClass {
            family: family.clone(),
            output: output.to_owned(),
            counters: Arc::new(std::array::from_fn(|_| OnceLock::new())),
        }
    }

    /// The counter of `class`.
    pub fn get(&self, class: ErrorClass) -> &Counter {
        self.counters[class.index()].get_or_init(|| {
            let labels = ClassLabels {
                output: self.output.clone(),
                class,
            };
            self.family.get_or_create(&labels).clone()
        })
    }
}
