//! `type = "sample"`: generates events at a fixed rate, like Fluentd's `sample` input. Used by
//! the quick start and by tests that need a steady trickle of records without a client.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::Emitter;
use crate::event::{EventBatch, EventTime};
use crate::ops::logging::Throttle;
use crate::shutdown::Shutdown;

/// `[sources.NAME]` with `type = "sample"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SampleConfig {
    /// The component type (already used to choose this struct).
    #[serde(rename = "type", default, skip_serializing)]
    pub type_tag: crate::primitives::TypeTag,
    /// Fluentd's `@label`: its events go only to the filters and outputs with this label
    /// (none: to those without a label).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
    /// Tag of the generated events.
    pub tag: String,
    /// Emissions per second (may be fractional, e.g. 0.5 = one every two seconds).
    pub rate: f64,
    /// Events per emission.
    pub size: u32,
    /// The record to emit.
    pub record: serde_json::Map<String, serde_json::Value>,
    /// If set, a field of this name holds a counter that increases with every event.
    pub auto_increment_key: Option<String>,
}

impl Default for SampleConfig {
    fn default() -> Self {
        let mut record = serde_json::Map::new();
        record.insert("message".into(), serde_json::Value::String("sample".into()));
        SampleConfig {
            type_tag: Default::default(),
            label: None,
            tag: "sample".to_owned(),
            rate: 1.0,
            size: 1,
            record,
            auto_increment_key: None,
        }
    }
}

impl SampleConfig {
    /// Values that parse but cannot work.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut p = Vec::new();
        if !(self.rate > 0.0 && self.rate <= 1_000_000.0) {
            p.push((
                "rate",
                "must be greater than 0 and at most 1000000".to_owned(),
            ));
        }
        if self.size == 0 || self.size > 1_000_000 {
            p.push(("size", "must be between 1 and 1000000".to_owned()));
        }
        if self.tag.is_empty() {
            p.push(("tag", "must not be empty".to_owned()));
        }
        p
    }
}

/// Runs the sample source until shutdown.
pub async fn run(config: SampleConfig, emitter: Emitter, mut shutdown: Shutdown) {
    let period = Duration::from_secs_f64(1.0 / config.rate);
    let mut ticker = tokio::time::interval(period);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut counter: u64 = 0;
    let throttle = Throttle::new(Duration::from_secs(10));
    loop {
        tokio::select! {
            _ = shutdown.recv() => break,
            _ = ticker.tick() => {}
        }
        let mut batch = EventBatch::new(config.tag.clone());
        let now = EventTime::now();
        for _ in 0..config.size {
            match &config.auto_increment_key {
                Some(key) => {
                    let mut record = config.record.clone();
                    record.insert(key.clone(), counter.into());
                    batch.push_map(now, &record);
                }
                None => batch.push_map(now, &config.record),
            }
            counter += 1;
        }
        if let Err(e) = emitter.emit(batch).await {
            if let Some(suppressed) = throttle.allow() {
                tracing::warn!(source = emitter.source(), error = %e, suppressed, "sample source could not emit");
            }
        }
    }
}
