//! Metrics of forward sources. One set of families per metrics registry, shared by every
//! forward source of the process and split by the `source` label, because a registry refuses
//! (or duplicates) a name registered twice.

use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;

use crate::ops::metrics::{Labels, Metrics};

/// Counters and gauges of the forward sources.
#[derive(Default)]
pub struct ForwardMetrics {
    /// Connections currently open, by source.
    pub connections_open: Family<Labels, Gauge>,
    /// Connections accepted, by source.
    pub connections_accepted: Family<Labels, Counter>,
    /// Connections refused (`max_connections`, `allow`, `fd_limit`, `handshake_lockout`), by
    /// source and reason.
    pub connections_rejected: Family<Labels, Counter>,
    /// Messages rejected as malformed (their connection was closed), by source and reason.
    pub invalid_messages: Family<Labels, Counter>,
    /// Events skipped inside otherwise valid messages (`skip_invalid_event`), by source.
    pub invalid_events: Family<Labels, Counter>,
    /// Acks written, by source.
    pub acks_sent: Family<Labels, Counter>,
    /// Messages whose emit failed (not acknowledged; the client resends), by source.
    pub emit_failures: Family<Labels, Counter>,
    /// Failed `shared_key` handshakes, by source and reason.
    pub handshake_failures: Family<Labels, Counter>,
    /// Records larger than `record_size_limit` (dead-lettered as a description), by source.
    pub oversized_records: Family<Labels, Counter>,
    /// UDP heartbeats not answered because the sender is not in `allow`, by source.
    pub heartbeats_refused: Family<Labels, Counter>,
    /// Failed accepts (e.g. out of file descriptors), by source and reason.
    pub accept_errors: Family<Labels, Counter>,
    /// Bytes of `in_flight_limit` taken by messages being read, decoded or stored, by source.
    pub in_flight_bytes: Family<Labels, Gauge>,
    /// The highest `in_flight_bytes` since start, by source.
    pub in_flight_peak_bytes: Family<Labels, Gauge>,
    /// Times a connection stopped reading because `in_flight_limit` was used up, by source.
    pub in_flight_waits: Family<Labels, Counter>,
}

impl ForwardMetrics {
    /// The forward metrics registered in `metrics`, registering them on first use.
    pub fn for_registry(metrics: &Arc<Metrics>) -> Arc<ForwardMetrics> {
        metrics.component(Self::register)
    }

    fn register(metrics: &Metrics) -> Arc<ForwardMetrics> {
        let m = Arc::new(ForwardMetrics::default());
        metrics.register(
            "forward_connections_open",
            "Forward connections currently open",
            m.connections_open.clone(),
        );
        metrics.register(
            "forward_connections_accepted",
            "Forward connections accepted",
            m.connections_accepted.clone(),
        );
        metrics.register(
            "forward_connections_rejected",
            "Forward connections refused, by reason",
            m.connections_rejected.clone(),
        );
        metrics.register(
            "forward_invalid_messages",
            "Forward messages rejected as malformed (connection closed, no ack), by reason",
            m.invalid_messages.clone(),
        );
        metrics.register(
            "forward_invalid_events",
            "Events skipped inside valid forward messages (skip_invalid_event)",
            m.invalid_events.clone(),
        );
        metrics.register(
            "forward_acks_sent",
            "Forward acks written",
            m.acks_sent.clone(),
        );
        metrics.register(
            "forward_emit_failures",
            "Forward messages not stored (and not acknowledged)",
            m.emit_failures.clone(),
        );
        metrics.register(
            "forward_handshake_failures",
            "Failed shared_key handshakes, by reason",
            m.handshake_failures.clone(),
        );
        metrics.register(
            "forward_oversized_records",
            "Records larger than record_size_limit, dead-lettered as a description",
            m.oversized_records.clone(),
        );
        metrics.register(
            "forward_heartbeats_refused",
            "UDP heartbeats not answered: the sender is not in `allow`",
            m.heartbeats_refused.clone(),
        );
        metrics.register(
            "forward_accept_errors",
            "Failed accepts of forward connections, by reason (emfile: out of file descriptors)",
            m.accept_errors.clone(),
        );
        metrics.register(
            "forward_in_flight_bytes",
            "Bytes of in_flight_limit held by forward messages being read, decoded or stored",
            m.in_flight_bytes.clone(),
        );
        metrics.register(
            "forward_in_flight_peak_bytes",
            "Highest forward_in_flight_bytes since start",
            m.in_flight_peak_bytes.clone(),
        );
        metrics.register(
            "forward_in_flight_waits",
            "Times a forward connection stopped reading because in_flight_limit was used up",
            m.in_flight_waits.clone(),
        );
        m
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_set_per_registry() {
        let a = Arc::new(Metrics::new());
        let b = Arc::new(Metrics::new());
        let m1 = ForwardMetrics::for_registry(&a);
        let m2 = ForwardMetrics::for_registry(&a);
        let m3 = ForwardMetrics::for_registry(&b);
        assert!(Arc::ptr_eq(&m1, &m2));
        assert!(!Arc::ptr_eq(&m1, &m3));
        m1.acks_sent
            .get_or_create(&vec![("source", "x".into())])
            .inc();
        let text = a.render();
        assert_eq!(
            text.matches("# HELP firehose_relay_forward_acks_sent")
                .count(),
            1
        );
        assert!(text.contains("firehose_relay_forward_acks_sent_total{source=\"x\"} 1"));
    }
}
