//! Filters see every batch whose tag their `match` covers, in config order, before the batch is
//! routed to an output.

pub mod stdout;

use serde::Serialize;

use crate::event::EventBatch;

/// `[filters.NAME]`, chosen by `type`.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum FilterConfig {
    /// Prints each event in Fluentd's stdout format and passes it on.
    Stdout(stdout::StdoutFilterConfig),
}

impl FilterConfig {
    /// Reads the filter at `path`, choosing the variant by its `type`.
    #[allow(clippy::result_large_err)] // figment's error type; runs once at startup
    pub fn extract(figment: &figment::Figment, path: &str) -> Result<Self, figment::Error> {
        use crate::primitives::component::{component_type, extract_component, unknown_type};
        match component_type(figment, path)?.as_str() {
            "stdout" => Ok(FilterConfig::Stdout(extract_component(figment, path)?)),
            other => Err(unknown_type(path, other, &["stdout"])),
        }
    }

    /// The `match` pattern.
    pub fn pattern(&self) -> &str {
        match self {
            FilterConfig::Stdout(c) => &c.pattern,
        }
    }

    /// The label it belongs to (`None`: the top level).
    pub fn label(&self) -> Option<&str> {
        match self {
            FilterConfig::Stdout(c) => c.label.as_deref(),
        }
    }

    /// Builds the filter.
    pub fn build(&self) -> Box<dyn Filter> {
        match self {
            FilterConfig::Stdout(_) => Box::new(stdout::StdoutFilter),
        }
    }
}

/// A filter. Runs on the source's task, so it must be quick.
pub trait Filter: Send + Sync {
    /// Inspects or changes the batch.
    fn apply(&self, batch: &mut EventBatch);
}
