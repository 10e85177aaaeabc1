//! What `top` shows, computed from the relay's own `/metrics`: a [`Snapshot`] per scrape, and a
//! [`View`] (rows with rates) from two consecutive snapshots. Pure functions, no I/O.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use prometheus_parse::{Scrape, Value};

/// Metric names, as exposed (the test suite checks that every one exists on a running relay).
const RECORDS_IN: &str = "firehose_relay_records_in_total";
const CONNECTIONS_OPEN: &str = "firehose_relay_forward_connections_open";
const RECORDS_BUFFERED: &str = "firehose_relay_records_buffered_total";
const RECORDS_DELIVERED: &str = "firehose_relay_records_delivered_total";
const BUFFER_BYTES: &str = "firehose_relay_buffer_bytes";
const BUFFER_LIMIT: &str = "firehose_relay_buffer_limit_bytes";
const OLDEST_AGE: &str = "firehose_relay_buffer_oldest_queued_age_seconds";
const CHUNKS: &str = "firehose_relay_buffer_chunks";
const FAILURES: &str = "firehose_relay_flush_failures_total";
const PACING: &str = "firehose_relay_firehose_pacing_rate_factor";
const CREDENTIALS_EXPIRY: &str = "firehose_relay_aws_credentials_expiry_timestamp_seconds";
const READY: &str = "firehose_relay_ready";

/// Every metric name `top` reads.
pub const METRICS_USED: &[&str] = &[
    RECORDS_IN,
    CONNECTIONS_OPEN,
    RECORDS_BUFFERED,
    RECORDS_DELIVERED,
    BUFFER_BYTES,
    BUFFER_LIMIT,
    OLDEST_AGE,
    CHUNKS,
    FAILURES,
    PACING,
    CREDENTIALS_EXPIRY,
    READY,
];

/// Sorted `(label, value)` pairs of one sample.
type LabelSet = Vec<(String, String)>;

/// One scrape: every plain sample (counters, gauges) by name and labels.
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    samples: BTreeMap<String, Vec<(LabelSet, f64)>>,
    /// When it was taken (monotonic, for rates).
    pub taken: Option<std::time::Instant>,
    /// Wall clock time it was taken, for expiry times.
    pub unix: f64,
}

impl Snapshot {
    /// Parses an exposition (Prometheus or OpenMetrics text).
    pub fn parse(text: &str, taken: std::time::Instant, now: SystemTime) -> std::io::Result<Self> {
        let scrape = Scrape::parse(text.lines().map(|l| Ok(l.to_owned())))?;
        let mut samples: BTreeMap<String, Vec<(LabelSet, f64)>> = BTreeMap::new();
        for s in scrape.samples {
            let v = match s.value {
                Value::Counter(v) | Value::Gauge(v) | Value::Untyped(v) => v,
                Value::Histogram(_) | Value::Summary(_) => continue,
            };
            let mut labels: LabelSet = s
                .labels
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            labels.sort();
            samples.entry(s.metric).or_default().push((labels, v));
        }
        Ok(Snapshot {
            samples,
            taken: Some(taken),
            unix: now
                .duration_since(UNIX_EPOCH)
                .unwrap_or(Duration::ZERO)
                .as_secs_f64(),
        })
    }

    /// Sum of `metric` by the value of label `by`, over samples that have every `(k, v)` of
    /// `filter`.
    fn by(&self, metric: &str, by: &str, filter: &[(&str, &str)]) -> BTreeMap<String, f64> {
        let mut out = BTreeMap::new();
        for (labels, v) in self.samples.get(metric).into_iter().flatten() {
            let get = |k: &str| labels.iter().find(|(l, _)| l == k).map(|(_, v)| v.as_str());
            if !filter.iter().all(|(k, want)| get(k) == Some(*want)) {
                continue;
            }
            if let Some(key) = get(by) {
                *out.entry(key.to_owned()).or_insert(0.0) += v;
            }
        }
        out
    }

    fn one(&self, metric: &str, by: &str, key: &str) -> Option<f64> {
        self.by(metric, by, &[]).get(key).copied()
    }
}

/// One source row.
#[derive(Debug, Clone, PartialEq)]
pub struct SourceRow {
    /// Source name.
    pub name: String,
    /// Events received per second since the previous snapshot.
    pub records_per_s: Option<f64>,
    /// Events received since the relay started.
    pub records_total: f64,
    /// Open forward connections (forward sources only).
    pub connections: Option<f64>,
}

/// One output row.
#[derive(Debug, Clone, PartialEq)]
pub struct OutputRow {
    /// Output name.
    pub name: String,
    /// Records stored in its buffer per second.
    pub in_per_s: Option<f64>,
    /// Records delivered per second.
    pub out_per_s: Option<f64>,
    /// Buffer bytes / total_limit_size.
    pub fill: Option<f64>,
    /// Buffer bytes.
    pub bytes: f64,
    /// Age of the oldest queued chunk (none queued: `None`).
    pub oldest_s: Option<f64>,
    /// Queued chunks that failed at least once.
    pub retrying: f64,
    /// Failed deliveries since start, by error class.
    pub failures: BTreeMap<String, f64>,
    /// Firehose pacing factor (Firehose outputs only).
    pub pacing: Option<f64>,
    /// Seconds until its AWS credentials expire (refreshed credentials only).
    pub credentials_expire_in_s: Option<f64>,
}

/// Everything on one screen.
#[derive(Debug, Clone, PartialEq)]
pub struct View {
    /// `/readyz` state, from `firehose_relay_ready`.
    pub ready: Option<bool>,
    /// Per source.
    pub sources: Vec<SourceRow>,
    /// Per output.
    pub outputs: Vec<OutputRow>,
}

/// Per-second rate of `key` between two snapshots (`None` without a previous one, or after a
/// counter reset, i.e. a relay restart).
fn rate(
    prev: Option<(&BTreeMap<String, f64>, Duration)>,
    cur: &BTreeMap<String, f64>,
    key: &str,
) -> Option<f64> {
    let (prev, dt) = prev?;
    let (a, b) = (prev.get(key).copied().unwrap_or(0.0), *cur.get(key)?);
    (b >= a && dt > Duration::ZERO).then(|| (b - a) / dt.as_secs_f64())
}

impl View {
    /// The view of `cur`, with rates since `prev`.
    pub fn between(prev: Option<&Snapshot>, cur: &Snapshot) -> View {
        let dt = match (prev.and_then(|p| p.taken), cur.taken) {
            (Some(a), Some(b)) => Some(b.saturating_duration_since(a)),
            _ => None,
        };
        let pair = |metric: &str, by: &str| {
            let now = cur.by(metric, by, &[]);
            let before = prev.map(|p| p.by(metric, by, &[]));
            (before, now)
        };

        let (in_prev, in_now) = pair(RECORDS_IN, "source");
        let connections = cur.by(CONNECTIONS_OPEN, "source", &[]);
        let sources = in_now
            .iter()
            .map(|(name, &total)| SourceRow {
                name: name.clone(),
                records_per_s: rate(in_prev.as_ref().zip(dt), &in_now, name),
                records_total: total,
                connections: connections.get(name).copied(),
            })
            .collect();

        let (buf_prev, buf_now) = pair(RECORDS_BUFFERED, "output");
        let (out_prev, out_now) = pair(RECORDS_DELIVERED, "output");
        let limits = cur.by(BUFFER_LIMIT, "output", &[]);
        let retrying = cur.by(CHUNKS, "output", &[("state", "retrying")]);
        let outputs = limits
            .iter()
            .map(|(name, &limit)| {
                let bytes = cur.one(BUFFER_BYTES, "output", name).unwrap_or(0.0);
                let failures = cur.by(FAILURES, "class", &[("output", name)]);
                OutputRow {
                    name: name.clone(),
                    in_per_s: rate(buf_prev.as_ref().zip(dt), &buf_now, name),
                    out_per_s: rate(out_prev.as_ref().zip(dt), &out_now, name),
                    fill: (limit > 0.0).then(|| bytes / limit),
                    bytes,
                    oldest_s: cur.one(OLDEST_AGE, "output", name).filter(|&a| a > 0.0),
                    retrying: retrying.get(name).copied().unwrap_or(0.0),
                    failures: failures.into_iter().filter(|(_, n)| *n > 0.0).collect(),
                    pacing: cur.one(PACING, "output", name),
                    credentials_expire_in_s: cur
                        .one(CREDENTIALS_EXPIRY, "output", name)
                        .map(|t| t - cur.unix),
                }
            })
            .collect();
        let ready = cur
            .samples
            .get(READY)
            .and_then(|s| s.first())
            .map(|(_, v)| *v > 0.0);
        View {
            ready,
            sources,
            outputs,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    fn exposition(records_in: u64, delivered: u64, buffered: u64) -> String {
        format!(
            "# TYPE firehose_relay_records_in counter\n\
             firehose_relay_records_in_total{{source=\"forward\"}} {records_in}\n\
             firehose_relay_records_in_total{{source=\"sample\"}} 7\n\
             # TYPE firehose_relay_forward_connections_open gauge\n\
             firehose_relay_forward_connections_open{{source=\"forward\"}} 3\n\
             # TYPE firehose_relay_records_buffered counter\n\
             firehose_relay_records_buffered_total{{output=\"fh\"}} {buffered}\n\
             # TYPE firehose_relay_records_delivered counter\n\
             firehose_relay_records_delivered_total{{output=\"fh\"}} {delivered}\n\
             # TYPE firehose_relay_buffer_bytes gauge\n\
             firehose_relay_buffer_bytes{{output=\"fh\"}} 250\n\
             firehose_relay_buffer_bytes{{output=\"local\"}} 0\n\
             # TYPE firehose_relay_buffer_limit_bytes gauge\n\
             firehose_relay_buffer_limit_bytes{{output=\"fh\"}} 1000\n\
             firehose_relay_buffer_limit_bytes{{output=\"local\"}} 1000\n\
             # TYPE firehose_relay_buffer_oldest_queued_age_seconds gauge\n\
             firehose_relay_buffer_oldest_queued_age_seconds{{output=\"fh\"}} 12.5\n\
             firehose_relay_buffer_oldest_queued_age_seconds{{output=\"local\"}} 0\n\
             # TYPE firehose_relay_buffer_chunks gauge\n\
             firehose_relay_buffer_chunks{{output=\"fh\",state=\"queued\"}} 4\n\
             firehose_relay_buffer_chunks{{output=\"fh\",state=\"retrying\"}} 2\n\
             # TYPE firehose_relay_flush_failures counter\n\
             firehose_relay_flush_failures_total{{output=\"fh\",class=\"throttled\"}} 5\n\
             firehose_relay_flush_failures_total{{output=\"fh\",class=\"network\"}} 1\n\
             firehose_relay_flush_failures_total{{output=\"fh\",class=\"server\"}} 0\n\
             # TYPE firehose_relay_firehose_pacing_rate_factor gauge\n\
             firehose_relay_firehose_pacing_rate_factor{{output=\"fh\"}} 0.5\n\
             # TYPE firehose_relay_aws_credentials_expiry_timestamp_seconds gauge\n\
             firehose_relay_aws_credentials_expiry_timestamp_seconds{{output=\"fh\"}} 1000600\n\
             # TYPE firehose_relay_ready gauge\n\
             firehose_relay_ready 1\n\
             # EOF\n"
        )
    }

    #[test]
    fn rates_come_from_two_snapshots_and_the_rest_from_the_latest() {
        let t0 = Instant::now();
        let now = UNIX_EPOCH + Duration::from_secs(1_000_000);
        let a = Snapshot::parse(&exposition(100, 40, 90), t0, now).unwrap();
        let b =
            Snapshot::parse(&exposition(300, 140, 290), t0 + Duration::from_secs(2), now).unwrap();

        let first = View::between(None, &a);
        assert_eq!(
            first.sources[0].records_per_s, None,
            "no rate from one scrape"
        );

        let v = View::between(Some(&a), &b);
        assert_eq!(v.ready, Some(true));
        assert_eq!(
            v.sources,
            vec![
                SourceRow {
                    name: "forward".into(),
                    records_per_s: Some(100.0),
                    records_total: 300.0,
                    connections: Some(3.0),
                },
                SourceRow {
                    name: "sample".into(),
                    records_per_s: Some(0.0),
                    records_total: 7.0,
                    connections: None,
                },
            ]
        );
        let fh = &v.outputs[0];
        assert_eq!(fh.name, "fh");
        assert_eq!((fh.in_per_s, fh.out_per_s), (Some(100.0), Some(50.0)));
        assert_eq!(
            (fh.fill, fh.bytes, fh.oldest_s),
            (Some(0.25), 250.0, Some(12.5))
        );
        assert_eq!(fh.retrying, 2.0);
        assert_eq!(
            fh.failures
                .iter()
                .map(|(k, v)| (k.as_str(), *v))
                .collect::<Vec<_>>(),
            [("network", 1.0), ("throttled", 5.0)]
        );
        assert_eq!(
            (fh.pacing, fh.credentials_expire_in_s),
            (Some(0.5), Some(600.0))
        );
        let local = &v.outputs[1];
        assert_eq!(
            (local.oldest_s, local.pacing, local.in_per_s),
            (None, None, None)
        );
    }

    #[test]
    fn a_counter_that_went_down_means_a_restart_and_gives_no_rate() {
        let t0 = Instant::now();
        let a = Snapshot::parse(&exposition(500, 0, 0), t0, SystemTime::now()).unwrap();
        let b = Snapshot::parse(
            &exposition(20, 0, 0),
            t0 + Duration::from_secs(1),
            SystemTime::now(),
        )
        .unwrap();
        assert_eq!(View::between(Some(&a), &b).sources[0].records_per_s, None);
    }
}
