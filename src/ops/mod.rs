//! Operating the relay: the HTTP endpoint (metrics, health, status), the Prometheus registry,
//! and logging.

pub mod http;
pub mod logging;
pub mod metrics;
