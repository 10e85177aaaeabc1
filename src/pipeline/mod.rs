//! The routing core: filters, then the first output whose `match` covers the tag, then that
//! output's formatter and buffer. Sources call [`Pipeline::emit`] directly and wait for it, so
//! backpressure from a full buffer reaches the source (and a forward client's TCP window) with
//! no queue in between.
//!
//! * Filters ([`filter`]) run in file order on every batch their `match` covers; then the batch
//!   goes to the first output whose `match` covers its tag ([`router`]: Fluentd's tag patterns).
//!   A tag no output matches is dropped, counted (`records_dropped_total{reason=
//!   "no_output_matched"}`) and logged at most every 10 s.
//! * Records are formatted once, here ([`mod@format`]), into what the sink sends. A record the
//!   output can never deliver (larger than Firehose accepts, `data_key` missing) is written to
//!   the dead-letter directory before the rest is appended, so it is not lost and does not block
//!   the batch.
//! * [`Pipeline::emit`] resolves only when every record of the batch is stored by the buffer or
//!   durably dead-lettered; if either fails, the emit fails and nothing may be acknowledged.
//! * Routing decisions are cached per tag, at most 4,096 tags (then the cache starts over), so
//!   random tags cannot grow memory.

pub mod filter;
pub mod format;
pub mod rejects;
pub mod route_cache;
pub mod router;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use self::filter::Filter;
use self::format::Formatter;
use self::rejects::{Naming, Rejects};
use self::route_cache::RouteCache;
use self::router::TagPattern;
use crate::buffer::key::KeyRule;
use crate::buffer::{AppendError, Buffer, ChunkKey, Records};
use crate::event::EventBatch;
use crate::flush::deadletter::DeadLetter;
use crate::ops::logging::Throttle;
use crate::ops::metrics::{output_label, source_label, Metrics};
use crate::sink::{OutputConfig, Sink};

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

/// A filter with the events it applies to: those of its label whose tag its `match` covers.
pub struct FilterStage {
    /// Its label (`None`: the top level).
    pub label: Option<String>,
    /// Its `match`.
    pub pattern: TagPattern,
    /// The filter.
    pub filter: Box<dyn Filter>,
}

/// Fluentd's label for events an output cannot take (here: records an output's formatter
/// rejects). When no output has this label, those records go to the dead-letter directory.
pub const ERROR_LABEL: &str = "@ERROR";

/// What events of one label (or of the top level) go through: the label's filters in config
/// order, then the first of its outputs whose `match` covers the tag (Fluentd's `<label>`).
#[derive(Default)]
struct Route {
    filters: Vec<(TagPattern, Box<dyn Filter>)>,
    /// Indices into [`Pipeline::outputs`], in matching order.
    outputs: Vec<usize>,
    cache: Mutex<RouteCache>,
}

impl Route {
    /// The output (index into `all`) that takes `tag`, if any.
    fn output_for(&self, tag: &str, all: &[Arc<Output>]) -> Option<usize> {
        let mut cache = self.cache.lock().unwrap_or_else(|e| e.into_inner());
        cache.get_or_route(tag, || {
            self.outputs
                .iter()
                .copied()
                .find(|&i| all[i].pattern.matches(tag))
        })
    }
}

/// Filters and outputs by label, in config order.
pub struct Pipeline {
    routes: HashMap<Option<String>, Route>,
    outputs: Vec<Arc<Output>>,
    metrics: Arc<Metrics>,
    dead_letter: Arc<DeadLetter>,
    unmatched_log: Throttle,
    rejected_log: Throttle,
}

impl Pipeline {
    /// Assembles a pipeline from built parts; outputs carry their label in their config.
    pub fn new(
        filters: Vec<FilterStage>,
        outputs: Vec<Arc<Output>>,
        metrics: Arc<Metrics>,
        dead_letter: Arc<DeadLetter>,
    ) -> Self {
        let mut routes: HashMap<Option<String>, Route> = HashMap::new();
        for f in filters {
            let route = routes.entry(f.label).or_default();
            route.filters.push((f.pattern, f.filter));
        }
        for (i, o) in outputs.iter().enumerate() {
            let label = o.config.label().map(str::to_owned);
            routes.entry(label).or_default().outputs.push(i);
        }
        Pipeline {
            routes,
            outputs,
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

    /// The largest record any output takes (the default per-record bound of sources): the
    /// largest formatted record of the output that takes the largest, or `None` when one of
    /// them has no limit.
    pub fn largest_record_bytes(&self) -> Option<usize> {
        self.outputs
            .iter()
            .map(|o| o.formatter.max_record_bytes())
            .try_fold(0, |max, limit| limit.map(|l| max.max(l)))
    }

    /// Filters, routes, formats and buffers `batch` of a source with `label`; resolves once the
    /// buffer has stored it. Records the output rejects go to the `@ERROR` label when some
    /// output has it, else to the dead-letter directory.
    pub async fn emit(
        &self,
        source: &str,
        label: Option<&str>,
        batch: EventBatch,
    ) -> Result<(), EmitError> {
        if batch.is_empty() {
            return Ok(());
        }
        let labels = source_label(source);
        let events = (batch.len() + batch.oversized().len()) as u64;
        self.metrics
            .records_in
            .get_or_create(&labels)
            .inc_by(events);
        self.metrics
            .bytes_in
            .get_or_create(&labels)
            .inc_by(batch.json_bytes() as u64);
        let error_route =
            label != Some(ERROR_LABEL) && self.routes.contains_key(&Some(ERROR_LABEL.to_owned()));
        let rejected = self.emit_in(source, label, batch, error_route).await?;
        if let Some(rejected) = rejected {
            self.emit_in(source, Some(ERROR_LABEL), rejected, false)
                .await?;
        }
        Ok(())
    }

    /// [`Self::emit`] within one label. With `return_rejected`, rejected records come back as
    /// a batch (for `@ERROR`) instead of being dead-lettered.
    async fn emit_in(
        &self,
        source: &str,
        label: Option<&str>,
        mut batch: EventBatch,
        return_rejected: bool,
    ) -> Result<Option<EventBatch>, EmitError> {
        let route = self.routes.get(&label.map(str::to_owned));
        let found = route.and_then(|route| {
            for (pattern, filter) in &route.filters {
                if pattern.matches(batch.tag()) {
                    filter.apply(&mut batch);
                }
            }
            route.output_for(batch.tag(), &self.outputs)
        });
        let Some(index) = found else {
            self.metrics
                .records_dropped
                .get_or_create(&vec![
                    ("source", source.to_owned()),
                    ("reason", "no_output_matched".to_owned()),
                ])
                .inc_by((batch.len() + batch.oversized().len()) as u64);
            if let Some(suppressed) = self.unmatched_log.allow() {
                tracing::warn!(
                    tag = batch.tag(),
                    label = label.unwrap_or("(none)"),
                    events = batch.len() + batch.oversized().len(),
                    suppressed,
                    "no output matches this tag; events dropped"
                );
            }
            return Ok(None);
        };
        let output = &self.outputs[index];
        let rule = output.config.buffer().key_rule();
        // Event times, for the time slot of each record (taken before formatting, which may
        // move the batch's text out).
        let times: Vec<i64> = if rule.timekey_secs.is_some() {
            batch.iter().map(|(t, _)| t.secs()).collect()
        } else {
            Vec::new()
        };
        let (records, mut rejected) = output.formatter.format(&mut batch);
        let parts = keyed_parts(&rule, batch.tag(), &times, &rejected, records);
        let mut for_error_label = None;
        if return_rejected && !rejected.is_empty() {
            for_error_label = Some(rejected_batch(&batch, &rejected));
            rejected.clear();
        }
        // Oversized records are only descriptions: they go to the dead-letter directory even
        // when an `@ERROR` label exists, since no output could take what is left of them.
        let rejects = Rejects::collect(&batch, rejected);
        if !rejects.is_empty() {
            self.dead_letter_rejects(output, batch, rejects).await?;
        }
        // Records of several time slots go to their chunks one append each: if a later one
        // fails, the batch is not acknowledged and the client resends all of it (at least once).
        for (key, records) in parts {
            let stored = records.len() as u64;
            output.buffer.append_keyed(&key, records).await?;
            self.metrics
                .records_buffered
                .get_or_create(&output_label(&output.name))
                .inc_by(stored);
        }
        Ok(for_error_label)
    }

    /// Writes what `output` cannot take to the dead-letter directory (on the blocking pool).
    async fn dead_letter_rejects(
        &self,
        output: &Output,
        batch: EventBatch,
        rejects: Rejects,
    ) -> Result<(), EmitError> {
        let count = rejects.len() as u64;
        if let Some(suppressed) = self.rejected_log.allow() {
            tracing::error!(output = %output.name, tag = batch.tag(), records = count,
                reason = rejects.first_reason().unwrap_or(""), suppressed,
                "records cannot be delivered by this output; written to the dead-letter directory");
        }
        let dead_letter = Arc::clone(&self.dead_letter);
        let name = output.name.clone();
        let naming = Naming {
            rule: output.config.buffer().key_rule(),
            stream: output.config.stream_name(),
        };
        tokio::task::spawn_blocking(move || rejects.write(&dead_letter, &name, &batch, &naming))
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

/// The formatted `records` of events of `tag` split by chunk key (see [`crate::buffer::key`]):
/// the record order is kept within each key. `times` are the Unix seconds of every event of the
/// batch (empty when the rule has no time key) and `rejected` the events that produced no record.
fn keyed_parts(
    rule: &KeyRule,
    tag: &str,
    times: &[i64],
    rejected: &[crate::pipeline::format::Rejected],
    records: Records,
) -> Vec<(ChunkKey, Records)> {
    if records.is_empty() {
        return Vec::new();
    }
    if !rule.is_keyed() {
        return vec![(ChunkKey::default(), records)];
    }
    if rule.timekey_secs.is_none() {
        return vec![(rule.key(tag, 0), records)];
    }
    // Record i is the i-th event that was not rejected (rejected indices are increasing).
    let mut skip = rejected.iter().map(|r| r.index).peekable();
    let mut slots = Vec::with_capacity(records.len());
    for (event, &t) in times.iter().enumerate() {
        if skip.peek() == Some(&event) {
            skip.next();
            continue;
        }
        slots.push(rule.slot_of(t));
    }
    let first = slots.first().copied().flatten();
    if slots.len() != records.len() || slots.iter().all(|&s| s == first) {
        let mut key = rule.key(tag, 0);
        key.timekey = first;
        return vec![(key, records)];
    }
    let mut by_slot: std::collections::BTreeMap<Option<i64>, Records> = Default::default();
    for (i, slot) in slots.into_iter().enumerate() {
        if let Some(r) = records.get(i) {
            // Each part is smaller than the whole, which fits.
            let _ = by_slot.entry(slot).or_default().push(r);
        }
    }
    by_slot
        .into_iter()
        .map(|(slot, r)| {
            let mut key = rule.key(tag, 0);
            key.timekey = slot;
            (key, r)
        })
        .collect()
}

/// The rejected events of `batch`, with their times, as a batch of the same tag.
fn rejected_batch(
    batch: &EventBatch,
    rejected: &[crate::pipeline::format::Rejected],
) -> EventBatch {
    let mut out = EventBatch::new(batch.tag());
    for r in rejected {
        if let (Some(time), Some(record)) = (batch.time(r.index), batch.record(r.index)) {
            out.push_raw(time, record);
        }
    }
    out
}

#[cfg(test)]
mod tests;
