//! Sources produce [`EventBatch`]es and hand them to an [`Emitter`]. An emit resolves once the
//! events are stored by the buffer of the output they were routed to (for the file buffer:
//! fsynced), which is what lets the forward source acknowledge safely.

pub mod forward;
pub mod sample;

use std::sync::Arc;

use serde::Serialize;

use crate::event::EventBatch;
use crate::pipeline::{EmitError, Pipeline};

/// `[sources.NAME]`, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum SourceConfig {
    /// Generates events at a fixed rate (Fluentd's `sample`, formerly `dummy`).
    Sample(sample::SampleConfig),
    /// Receives events from Fluentd/Fluent Bit/fluent-logger clients (Fluentd's `forward`).
    /// Boxed: its config is several times larger than the other variants.
    Forward(Box<forward::ForwardConfig>),
}

impl SourceConfig {
    /// Reads the source at `path` (e.g. `sources.in`), choosing the variant by its `type`.
    #[allow(clippy::result_large_err)] // figment's error type; runs once at startup
    pub fn extract(figment: &figment::Figment, path: &str) -> Result<Self, figment::Error> {
        use crate::primitives::component::{component_type, extract_component, unknown_type};
        match component_type(figment, path)?.as_str() {
            "forward" => Ok(SourceConfig::Forward(extract_component(figment, path)?)),
            "sample" => Ok(SourceConfig::Sample(extract_component(figment, path)?)),
            other => Err(unknown_type(path, other, &["forward", "sample"])),
        }
    }

    /// Fluentd's `@label` of the source.
    pub fn label(&self) -> Option<&str> {
        match self {
            SourceConfig::Sample(c) => c.label.as_deref(),
            SourceConfig::Forward(c) => c.label.as_deref(),
        }
    }

    /// Values that parse but cannot work, as (key, message).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        match self {
            SourceConfig::Sample(c) => c.problems(),
            SourceConfig::Forward(c) => c.problems(),
        }
    }
}

/// A source's handle on the pipeline.
#[derive(Clone)]
pub struct Emitter {
    source: Arc<str>,
    label: Option<Arc<str>>,
    pipeline: Arc<Pipeline>,
}

impl Emitter {
    /// An emitter for the source named `source`, whose events go to `label`'s filters and
    /// outputs (`None`: the top level's).
    pub fn new(source: &str, label: Option<&str>, pipeline: Arc<Pipeline>) -> Self {
        Emitter {
            source: source.into(),
            label: label.map(Arc::from),
            pipeline,
        }
    }

    /// The source's name (a metric label).
    pub fn source(&self) -> &str {
        &self.source
    }

    /// Routes, filters, formats and buffers the batch; resolves once it is stored.
    pub async fn emit(&self, batch: EventBatch) -> Result<(), EmitError> {
        self.pipeline
            .emit(&self.source, self.label.as_deref(), batch)
            .await
    }

    /// The pipeline (metrics, readiness).
    pub fn pipeline(&self) -> &Arc<Pipeline> {
        &self.pipeline
    }
}

/// Starts a source. Resolves once it is ready (e.g. listening), so that a bind error surfaces at
/// startup rather than later; the returned task ends after `shutdown`.
/// Network sources hold a slot of `fds` per client connection.
pub async fn spawn(
    name: &str,
    config: SourceConfig,
    emitter: Emitter,
    shutdown: crate::shutdown::Shutdown,
    fds: crate::fds::FdBudget,
) -> anyhow::Result<tokio::task::JoinHandle<()>> {
    tracing::info!(source = name, "starting source");
    Ok(match config {
        SourceConfig::Sample(c) => tokio::spawn(sample::run(c, emitter, shutdown)),
        SourceConfig::Forward(c) => forward::spawn(name, *c, emitter, shutdown, fds).await?,
    })
}
