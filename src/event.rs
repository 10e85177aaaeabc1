//! Events as they travel from sources through filters to the buffer.
//!
//! A source produces an [`EventBatch`]: one tag and many `(time, record)` pairs, exactly the
//! shape of a Fluentd forward message. Routing is decided once per batch (one tag), and the
//! records of a batch live back to back in one `String` so that a 1,000-event forward message
//! costs a handful of allocations, not thousands.
//!
//! Records are kept as JSON object text. That is the form the outputs need (Firehose receives
//! JSON lines), so a forward source can transcode msgpack straight into it and no value tree is
//! ever built on the hot path.

use std::fmt;

/// Event time in nanoseconds since the Unix epoch (Fluentd's EventTime has nanosecond
/// resolution; integer-second times are widened).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct EventTime(pub i64);

impl EventTime {
    /// The current wall-clock time.
    pub fn now() -> Self {
        let now = chrono::Utc::now();
        EventTime(now.timestamp_nanos_opt().unwrap_or(i64::MAX))
    }

    /// From seconds and nanoseconds, as carried by Fluentd's EventTime ext type.
    pub fn from_parts(secs: i64, nanos: u32) -> Self {
        EventTime(
            secs.saturating_mul(1_000_000_000)
                .saturating_add(i64::from(nanos)),
        )
    }

    /// Whole seconds since the epoch.
    pub fn secs(self) -> i64 {
        self.0.div_euclid(1_000_000_000)
    }

    /// Nanoseconds within the second.
    pub fn subsec_nanos(self) -> u32 {
        // rem_euclid of a positive modulus is in 0..1e9, which fits in u32.
        self.0.rem_euclid(1_000_000_000) as u32
    }
}

impl fmt::Display for EventTime {
    /// Fluentd's stdout format: `2020-10-15 08:21:18.081312494 +0000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match chrono::DateTime::from_timestamp(self.secs(), self.subsec_nanos()) {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%d %H:%M:%S%.9f +0000")),
            None => write!(f, "{}", self.0),
        }
    }
}

/// Events sharing one tag, with their records stored contiguously as JSON objects.
///
/// Invariant: every record slice is the text of one valid JSON object. Builders that write
/// raw JSON ([`EventBatch::push_raw`]) are responsible for it; the forward transcoder is
/// fuzzed and property-tested for exactly this.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventBatch {
    tag: String,
    times: Vec<EventTime>,
    json: String,
    ends: Vec<usize>,
}

impl EventBatch {
    /// An empty batch for `tag`.
    pub fn new(tag: impl Into<String>) -> Self {
        EventBatch {
            tag: tag.into(),
            ..Default::default()
        }
    }

    /// An empty batch with room for `events` records of `bytes` JSON text in total.
    pub fn with_capacity(tag: impl Into<String>, events: usize, bytes: usize) -> Self {
        EventBatch {
            tag: tag.into(),
            times: Vec::with_capacity(events),
            json: String::with_capacity(bytes),
            ends: Vec::with_capacity(events),
        }
    }

    /// The tag every event of the batch carries.
    pub fn tag(&self) -> &str {
        &self.tag
    }

    /// Replaces the tag (e.g. `add_tag_prefix`).
    pub fn set_tag(&mut self, tag: String) {
        self.tag = tag;
    }

    /// Number of events.
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// True when the batch holds no event.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty()
    }

    /// Total JSON bytes of all records.
    pub fn json_bytes(&self) -> usize {
        self.json.len()
    }

    /// Appends a record given as a JSON object value.
    pub fn push_map(
        &mut self,
        time: EventTime,
        record: &serde_json::Map<String, serde_json::Value>,
    ) {
        // Serializing a Map into a String cannot fail: keys are strings and serde_json's
        // Value never holds non-finite floats.
        let text = serde_json::to_string(record).unwrap_or_else(|_| "{}".to_owned());
        self.push_raw(time, &text);
    }

    /// Appends a record given as JSON object text. The caller guarantees it is one valid JSON
    /// object (see the type's invariant).
    pub fn push_raw(&mut self, time: EventTime, json_object: &str) {
        self.json.push_str(json_object);
        self.commit_raw(time);
    }

    /// Gives direct access to the JSON text so that a transcoder can write the next record in
    /// place; call [`EventBatch::commit_raw`] when it is complete or
    /// [`EventBatch::rollback_raw`] to abandon it.
    pub fn raw_json_mut(&mut self) -> &mut String {
        &mut self.json
    }

    /// Seals the text written since the previous record as one record with `time`.
    pub fn commit_raw(&mut self, time: EventTime) {
        self.times.push(time);
        self.ends.push(self.json.len());
    }

    /// Discards text written since the previous record (an invalid event was skipped).
    pub fn rollback_raw(&mut self) {
        let end = self.ends.last().copied().unwrap_or(0);
        self.json.truncate(end);
    }

    /// The events in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (EventTime, &str)> + '_ {
        let mut start = 0;
        self.times
            .iter()
            .zip(self.ends.iter())
            .map(move |(time, &end)| {
                let record = &self.json[start..end];
                start = end;
                (*time, record)
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_matches_fluentd_stdout_format() {
        let t = EventTime::from_parts(1_602_750_078, 81_312_494);
        assert_eq!(t.to_string(), "2020-10-15 08:21:18.081312494 +0000");
    }

    #[test]
    fn negative_times_split_into_seconds_and_nanos() {
        let t = EventTime(-1);
        assert_eq!(t.secs(), -1);
        assert_eq!(t.subsec_nanos(), 999_999_999);
    }

    #[test]
    fn batch_keeps_records_in_order_and_rollback_discards_partial_text() {
        let mut b = EventBatch::new("app.web");
        b.push_raw(EventTime(1), r#"{"a":1}"#);
        b.raw_json_mut().push_str(r#"{"broken"#);
        b.rollback_raw();
        b.push_raw(EventTime(2), r#"{"b":2}"#);
        let got: Vec<_> = b.iter().collect();
        assert_eq!(
            got,
            vec![(EventTime(1), r#"{"a":1}"#), (EventTime(2), r#"{"b":2}"#)]
        );
        assert_eq!(b.json_bytes(), 14);
    }
}
