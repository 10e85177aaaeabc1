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

/// Events sharing one tag, with their records stored contiguously as JSON lines.
///
/// Invariant: every record slice is the text of one valid JSON object, and each is followed by
/// `\n` in the batch's text. Builders that write raw JSON ([`EventBatch::push_raw`]) are
/// responsible for the first part; the forward transcoder is fuzzed and property-tested for
/// exactly this. The newline is what makes the batch's text already the bytes of the default
/// output format (JSON lines), so [`EventBatch::take_json_lines`] hands them to the buffer
/// without a copy.
///
/// Records a source could not take whole (larger than its per-record bound) travel beside the
/// events as [`Oversized`] descriptions, so that the pipeline dead-letters them for the output
/// their tag routes to.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventBatch {
    tag: String,
    times: Vec<EventTime>,
    json: String,
    /// End of each record's line (after its `\n`).
    ends: Vec<usize>,
    oversized: Vec<Oversized>,
}

/// A record that was larger than its source's per-record bound: what is kept of it instead of
/// the record (which was never materialised).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Oversized {
    /// The event's time.
    pub time: EventTime,
    /// Its size as received (msgpack bytes for the forward source).
    pub received_bytes: usize,
    /// The bound it passed (bytes of JSON).
    pub limit: usize,
    /// The start of its JSON text, at most [`Oversized::PREFIX_BYTES`], cut at a character
    /// boundary (it is not valid JSON on its own).
    pub prefix: String,
}

impl Oversized {
    /// How much of an oversized record's text is kept: enough to tell which application sent
    /// it, small enough that a flood of them costs little memory or disk.
    pub const PREFIX_BYTES: usize = 4096;

    /// The first [`Oversized::PREFIX_BYTES`] of `text`, cut at a character boundary.
    pub fn prefix_of(text: &str) -> String {
        let mut end = text.len().min(Self::PREFIX_BYTES);
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text[..end].to_owned()
    }
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
            json: String::with_capacity(bytes.saturating_add(events)),
            ends: Vec::with_capacity(events),
            oversized: Vec::new(),
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

    /// Number of events (not counting oversized records).
    pub fn len(&self) -> usize {
        self.times.len()
    }

    /// True when the batch holds neither an event nor an oversized record.
    pub fn is_empty(&self) -> bool {
        self.times.is_empty() && self.oversized.is_empty()
    }

    /// Total JSON bytes of all records (without their line ends).
    pub fn json_bytes(&self) -> usize {
        self.json.len() - self.ends.len()
    }

    /// Bytes of memory this batch's records hold: what a message costs between the socket and
    /// the buffer (the one place that says so; a global in-flight budget would count this).
    pub fn held_bytes(&self) -> usize {
        self.json.capacity()
            + self.ends.capacity() * std::mem::size_of::<usize>()
            + self.times.capacity() * std::mem::size_of::<EventTime>()
            + self.oversized.iter().map(|o| o.prefix.len()).sum::<usize>()
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

    /// Where the record being written in place starts in [`EventBatch::raw_json_mut`].
    pub fn raw_start(&self) -> usize {
        self.ends.last().copied().unwrap_or(0)
    }

    /// Seals the text written since the previous record as one record with `time`.
    pub fn commit_raw(&mut self, time: EventTime) {
        self.json.push('\n');
        self.times.push(time);
        self.ends.push(self.json.len());
    }

    /// Discards text written since the previous record (an invalid event was skipped).
    pub fn rollback_raw(&mut self) {
        let end = self.raw_start();
        self.json.truncate(end);
    }

    /// Records a record that was too large to take (see [`Oversized`]).
    pub fn push_oversized(&mut self, oversized: Oversized) {
        self.oversized.push(oversized);
    }

    /// The records that were too large to take.
    pub fn oversized(&self) -> &[Oversized] {
        &self.oversized
    }

    /// The events in order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = (EventTime, &str)> + '_ {
        let mut start = 0;
        self.times
            .iter()
            .zip(self.ends.iter())
            .map(move |(time, &end)| {
                let record = &self.json[start..end - 1];
                start = end;
                (*time, record)
            })
    }

    /// The time of event `i`.
    pub fn time(&self, i: usize) -> Option<EventTime> {
        self.times.get(i).copied()
    }

    /// The JSON text of event `i`.
    pub fn record(&self, i: usize) -> Option<&str> {
        self.line(i).map(|l| &l[..l.len() - 1])
    }

    /// The JSON text of event `i` followed by its `\n`.
    pub fn line(&self, i: usize) -> Option<&str> {
        let end = *self.ends.get(i)?;
        let start = if i == 0 { 0 } else { self.ends[i - 1] };
        self.json.get(start..end)
    }

    /// Moves the records out as JSON lines (`{...}\n` each) with the end offset of each line,
    /// leaving the batch without events (its tag and oversized records stay). No byte is copied.
    pub fn take_json_lines(&mut self) -> (Vec<u8>, Vec<usize>) {
        self.rollback_raw();
        self.times.clear();
        (
            std::mem::take(&mut self.json).into_bytes(),
            std::mem::take(&mut self.ends),
        )
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
        assert_eq!(b.record(1), Some(r#"{"b":2}"#));
        let (lines, ends) = b.take_json_lines();
        assert_eq!(lines, b"{\"a\":1}\n{\"b\":2}\n");
        assert_eq!(ends, vec![8, 16]);
        assert!(b.is_empty());
    }

    #[test]
    fn prefixes_are_cut_at_character_boundaries() {
        let text = "é".repeat(Oversized::PREFIX_BYTES);
        let p = Oversized::prefix_of(&text);
        assert!(p.len() <= Oversized::PREFIX_BYTES && p.len() >= Oversized::PREFIX_BYTES - 1);
        assert_eq!(Oversized::prefix_of("{\"a\""), "{\"a\"");
    }
}
