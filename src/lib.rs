//! firehose-relay: takes log records from Fluentd-compatible clients, keeps them in a
//! crash-safe on-disk chunk queue, and delivers them to Amazon Kinesis Data Firehose.
//!
//! Data flows one way (see `DESIGN.md` in the project's shared notes):
//! sources → [`pipeline`] (filters, routing by tag, formatting) → per-output [`buffer`] →
//! [`flush`] workers → [`sink`]s.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod app;
pub mod aws;
pub mod buffer;
pub mod config;
pub mod drain;
pub mod event;
pub mod fluentd;
pub mod flush;
pub mod fsutil;
pub mod json_text;
pub mod ops;
pub mod pipeline;
pub mod primitives;
pub mod shutdown;
pub mod sink;
pub mod source;
