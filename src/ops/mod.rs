//! Operating the relay: the HTTP endpoint ([`http`]: `/metrics`, `/healthz`, `/readyz`,
//! `/status`), the Prometheus registry every component registers its families in
//! ([`metrics`]), logging with rate-limited warnings ([`logging`]), and [`top`], the live
//! terminal view of a running relay (a client of `/metrics`).
//!
//! Every fault is visible here: a metric counts it, `/status` says whether the data is safe,
//! and warnings that can repeat under load go through a [`logging::Throttle`] so that a storm
//! of bad input cannot flood the log.

pub mod http;
pub mod logging;
pub mod metrics;
pub mod top;
