//! The routing core: filters, then the first output whose `match` covers the tag, then that
//! output's formatter and buffer. Sources call [`Pipeline::emit`] directly and wait for it, so
//! backpressure from a full buffer reaches the source (and a forward client's TCP window) with
//! no queue in between.

pub mod filter;
pub mod format;
pub mod router;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::filter::Filter;
use self::format::Formatter;
use self::router::TagPattern;
use crate::buffer::{AppendError, Buffer, Records};
use crate::event::EventBatch;
use crate::flush::deadletter::DeadLetter;
use crate::ops::logging::Throttle;
use crate::ops::metrics::{output_label, source_label, Metrics};
use crate::sink::{OutputConfig, Sink};

/// Most distinct tags whose routing decision is cached; beyond that the cache is cleared, so a
/// client sending random tags cannot grow memory without bound.
const ROUTE_CACHE_LIMIT: usize = 4096;

/// One configured output at run time.
pub struct Output {
    /// Its name in the config.
    pub name: String,
    /// Its `match`.
    pub pattern: TagPattern,
    /// How events become records.
    pub formatter: Formatter,
    /// Its chunk queue.
    pub buffer: Arc<dyn Buffer>,
    /// Where chunks go.
    pub sink: Arc<dyn Sink>,
    /// Its config.
    pub config: OutputConfig,
}

/// Why an emit failed. Nothing of the batch may be acknowledged.
#[derive(Debug, thiserror::Error)]
pub enum EmitError {
    /// The output's buffer refused the records.
    #[error(transparent)]
    Append(#[from] AppendError),
    /// Records that can never be delivered could not be written to the dead-letter directory.
    #[error("cannot write rejected records to the dead-letter directory: {0}")]
    DeadLetter(#[source] std::io::Error),
}

/// Filters and outputs, in config order.
pub struct Pipeline {
    filters: Vec<(TagPattern, Box<dyn Filter>)>,
    outputs: Vec<Arc<Output>>,
    route_cache: Mutex<HashMap<String, Option<usize>>>,
    metrics: Arc<Metrics>,
    dead_letter: Arc<DeadLetter>,
    unmatched_log: Throttle,
    rejected_log: Throttle,
}

impl Pipeline {
    /// Assembles a pipeline from built parts.
    pub fn new(
        filters: Vec<(TagPattern, Box<dyn Filter>)>,
        outputs: Vec<Arc<Output>>,
        metrics: Arc<Metrics>,
        dead_letter: Arc<DeadLetter>,
    ) -> Self {
        Pipeline {
            filters,
            outputs,
            route_cache: Mutex::new(HashMap::new()),
            metrics,
            dead_letter,
            unmatched_log: Throttle::new(Duration::from_secs(10)),
            rejected_log: Throttle::new(Duration::from_secs(10)),
        }
    }

    /// The outputs in matching order.
    pub fn outputs(&self) -> &[Arc<Output>] {
        &self.outputs
    }

    /// The metrics registry.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// The dead-letter directory.
    pub fn dead_letter(&self) -> &Arc<DeadLetter> {
        &self.dead_letter
    }

    fn route(&self, tag: &str) -> Option<usize> {
        let mut cache = self.route_cache.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(&hit) = cache.get(tag) {
            return hit;
        }
        let found = self.outputs.iter().position(|o| o.pattern.matches(tag));
        if cache.len() >= ROUTE_CACHE_LIMIT {
            cache.clear();
        }
        cache.insert(tag.to_owned(), found);
        found
    }

    /// Filters, routes, formats and buffers `batch`; resolves once the buffer has stored it.
    pub async fn emit(&self, source: &str, mut batch: EventBatch) -> Result<(), EmitError> {
        if batch.is_empty() {
            return Ok(());
        }
        let labels = source_label(source);
        self.metrics
            .records_in
            .get_or_create(&labels)
            .inc_by(batch.len() as u64);
        self.metrics
            .bytes_in
            .get_or_create(&labels)
            .inc_by(batch.json_bytes() as u64);
        for (pattern, filter) in &self.filters {
            if pattern.matches(batch.tag()) {
                filter.apply(&mut batch);
            }
        }
        let Some(index) = self.route(batch.tag()) else {
            self.metrics
                .records_dropped
                .get_or_create(&vec![
                    ("source", source.to_owned()),
                    ("reason", "no_output_matched".to_owned()),
                ])
                .inc_by(batch.len() as u64);
            if let Some(suppressed) = self.unmatched_log.allow() {
                tracing::warn!(
                    tag = batch.tag(),
                    events = batch.len(),
                    suppressed,
                    "no output matches this tag; events dropped"
                );
            }
            return Ok(());
        };
        let output = &self.outputs[index];
        let mut records = Records::with_capacity(batch.len(), batch.json_bytes() + batch.len());
        let rejected = output.formatter.format(&batch, &mut records);
        if !rejected.is_empty() {
            self.dead_letter_rejected(output, &batch, rejected).await?;
        }
        output.buffer.append(records).await?;
        Ok(())
    }

    async fn dead_letter_rejected(
        &self,
        output: &Output,
        batch: &EventBatch,
        rejected: Vec<crate::pipeline::format::Rejected>,
    ) -> Result<(), EmitError> {
        let count = rejected.len() as u64;
        if let Some(suppressed) = self.rejected_log.allow() {
            tracing::error!(output = %output.name, tag = batch.tag(), records = count,
                reason = %rejected[0].reason, suppressed,
                "records cannot be delivered by this output; written to the dead-letter directory");
        }
        let dead_letter = Arc::clone(&self.dead_letter);
        let name = output.name.clone();
        let tag = batch.tag().to_owned();
        tokio::task::spawn_blocking(move || {
            // The original event, one JSON line each, so a replay can re-route it.
            let lines: Vec<(&str, Vec<u8>)> = rejected
                .iter()
                .map(|r| (r.reason.as_str(), format!("{}\n", r.record).into_bytes()))
                .collect();
            let items = lines
                .iter()
                .map(|(reason, line)| (*reason, line.as_slice()));
            dead_letter.write_by_reason(&name, Some(&tag), None, items)
        })
        .await
        .map_err(|e| EmitError::DeadLetter(std::io::Error::other(e)))?
        .map_err(EmitError::DeadLetter)?;
        self.metrics
            .records_dead_lettered
            .get_or_create(&output_label(&output.name))
            .inc_by(count);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::config::BufferConfig;
    use crate::buffer::memory::MemoryBuffer;
    use crate::buffer::policy::BufferPolicy;
    use crate::buffer::{now_ms, Enqueue};
    use crate::event::EventTime;
    use crate::pipeline::format::FormatOptions;
    use crate::sink::stdout::{StdoutOutputConfig, StdoutSink};

    struct Recorder(&'static str, Arc<Mutex<Vec<String>>>);
    impl Filter for Recorder {
        fn apply(&self, batch: &mut EventBatch) {
            self.1
                .lock()
                .unwrap()
                .push(format!("{}:{}", self.0, batch.tag()));
        }
    }

    fn output(name: &str, pattern: &str) -> Arc<Output> {
        let buffer = BufferConfig::default();
        Arc::new(Output {
            name: name.into(),
            pattern: TagPattern::parse(pattern).unwrap(),
            formatter: Formatter::new(FormatOptions::default(), None),
            buffer: Arc::new(MemoryBuffer::new(BufferPolicy::from_config(name, &buffer))),
            sink: Arc::new(StdoutSink),
            config: OutputConfig::Stdout(StdoutOutputConfig {
                type_tag: Default::default(),
                pattern: pattern.into(),
                append_new_line: true,
                data_key: None,
                buffer,
            }),
        })
    }

    async fn stored(o: &Output) -> Vec<String> {
        o.buffer.enqueue_staged(Enqueue::All).await.unwrap();
        let mut out = Vec::new();
        while let Some(c) = o.buffer.take(now_ms()).await.unwrap() {
            out.extend(
                c.records
                    .iter()
                    .map(|r| String::from_utf8_lossy(r).into_owned()),
            );
        }
        out
    }

    fn batch(tag: &str, record: &str) -> EventBatch {
        let mut b = EventBatch::new(tag);
        b.push_raw(EventTime(0), record);
        b
    }

    #[tokio::test]
    async fn events_go_to_the_first_matching_output_after_matching_filters_in_order() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let filters: Vec<(TagPattern, Box<dyn Filter>)> = vec![
            (
                TagPattern::parse("app.**").unwrap(),
                Box::new(Recorder("f1", Arc::clone(&seen))),
            ),
            (
                TagPattern::parse("sys.*").unwrap(),
                Box::new(Recorder("f2", Arc::clone(&seen))),
            ),
            (
                TagPattern::parse("**").unwrap(),
                Box::new(Recorder("f3", Arc::clone(&seen))),
            ),
        ];
        let (apps, all) = (output("apps", "app.**"), output("all", "**"));
        let dir = tempfile::tempdir().unwrap();
        let p = Pipeline::new(
            filters,
            vec![Arc::clone(&apps), Arc::clone(&all)],
            Arc::new(Metrics::new()),
            Arc::new(DeadLetter::new(dir.path())),
        );
        p.emit("src", batch("app.web", r#"{"a":1}"#)).await.unwrap();
        p.emit("src", batch("sys.kern", r#"{"b":2}"#))
            .await
            .unwrap();
        assert_eq!(
            *seen.lock().unwrap(),
            vec!["f1:app.web", "f3:app.web", "f2:sys.kern", "f3:sys.kern"]
        );
        assert_eq!(
            stored(&apps).await,
            vec!["{\"a\":1}\n"],
            "first match wins, no copy"
        );
        assert_eq!(stored(&all).await, vec!["{\"b\":2}\n"]);
    }

    #[tokio::test]
    async fn unmatched_events_are_counted_and_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let metrics = Arc::new(Metrics::new());
        let p = Pipeline::new(
            vec![],
            vec![output("apps", "app.**")],
            Arc::clone(&metrics),
            Arc::new(DeadLetter::new(dir.path())),
        );
        p.emit("src", batch("other", "{}")).await.unwrap();
        let labels = vec![
            ("source", "src".to_owned()),
            ("reason", "no_output_matched".to_owned()),
        ];
        assert_eq!(metrics.records_dropped.get_or_create(&labels).get(), 1);
        assert_eq!(
            metrics.records_in.get_or_create(&source_label("src")).get(),
            1
        );
    }
}
