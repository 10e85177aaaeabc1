//! What the pipeline keeps of the records it cannot buffer for an output: those its formatter
//! rejects (larger than the output takes, no `data_key` field) and those a source found too
//! large at intake ([`Oversized`]). They go to the dead-letter directory, never dropped silently,
//! and writing them is bounded too: a record up to [`DEAD_LETTER_RECORD_BYTES`] is kept whole
//! (and can be replayed); a larger one is kept as a one-line description — tag, time, size and
//! its first [`Oversized::PREFIX_BYTES`] — in an entry marked `truncated`.
//!
//! Entries carry the records' tag, and for an output with chunk key `time` their time slot
//! (one entry per slot), so that `dead-letter replay` gives them the key they would have had in
//! a chunk; for an output whose stream name has placeholders, the stream it resolves to.

use std::collections::BTreeMap;

use crate::buffer::key::KeyRule;
use crate::buffer::ChunkKey;
use crate::event::{EventBatch, EventTime, Oversized};
use crate::flush::deadletter::DeadLetter;
use crate::pipeline::format::Rejected;
use crate::sink::stream_name::StreamName;

/// The largest rejected record kept whole in the dead-letter directory (1 MiB: Firehose's
/// record limit plus room for the line end, so anything an output refused for its size is
/// kept when it came within a source's default bound).
pub const DEAD_LETTER_RECORD_BYTES: usize = 1 << 20;

/// The records of one batch that go to the dead-letter directory.
#[derive(Debug, Default)]
pub struct Rejects {
    /// (reason, index in the batch): kept whole.
    whole: Vec<(String, usize)>,
    /// (reason, event time, description line): too large to keep.
    described: Vec<(String, EventTime, Vec<u8>)>,
}

/// How an output keys its chunks and names its stream, for the entries of its rejects.
#[derive(Debug, Clone, Default)]
pub struct Naming {
    /// Its chunk keys.
    pub rule: KeyRule,
    /// Its stream name, when it has placeholders.
    pub stream: Option<StreamName>,
}

impl Naming {
    /// The key records of `tag` at `time` would have in a chunk (the tag is kept whatever the
    /// chunk keys: entries always name it).
    fn key(&self, tag: &str, time: EventTime) -> ChunkKey {
        ChunkKey {
            tag: Some(tag.to_owned()),
            timekey: self.rule.slot_of(time.secs()),
        }
    }

    /// The stream records of `key` would have gone to, when the name depends on the key.
    fn stream(&self, key: &ChunkKey) -> Option<String> {
        self.stream.as_ref().map(|s| s.resolve(key).0)
    }
}

impl Rejects {
    /// Sorts what the formatter rejected from `batch`, and the batch's oversized records.
    pub fn collect(batch: &EventBatch, rejected: Vec<Rejected>) -> Self {
        let mut out = Rejects::default();
        for r in rejected {
            match batch.record(r.index) {
                Some(text) if text.len() > DEAD_LETTER_RECORD_BYTES => {
                    let time = batch.time(r.index).unwrap_or(EventTime(0));
                    let line = describe(batch.tag(), time, text.len(), &Oversized::prefix_of(text));
                    let reason = format!(
                        "{}; larger than {DEAD_LETTER_RECORD_BYTES} bytes, so only its tag, time, \
                         size and first {} bytes are kept",
                        r.reason,
                        Oversized::PREFIX_BYTES
                    );
                    out.described.push((reason, time, line));
                }
                Some(_) => out.whole.push((r.reason, r.index)),
                None => {}
            }
        }
        for o in batch.oversized() {
            let reason = format!(
                "record larger than record_size_limit ({} bytes of JSON) at intake; only its tag, \
                 time, size as received and first {} bytes are kept",
                o.limit,
                Oversized::PREFIX_BYTES
            );
            let line = describe(batch.tag(), o.time, o.received_bytes, &o.prefix);
            out.described.push((reason, o.time, line));
        }
        out
    }

    /// Number of records.
    pub fn len(&self) -> usize {
        self.whole.len() + self.described.len()
    }

    /// True when nothing was rejected.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The first reason, for the log.
    pub fn first_reason(&self) -> Option<&str> {
        self.whole
            .first()
            .map(|(r, _)| r.as_str())
            .or_else(|| self.described.first().map(|(r, _, _)| r.as_str()))
    }

    /// Writes the entries (blocking I/O), one per reason and chunk key, for output `output`
    /// named as `naming` says; returns the number of records written.
    pub fn write(
        &self,
        dl: &DeadLetter,
        output: &str,
        batch: &EventBatch,
        naming: &Naming,
    ) -> std::io::Result<u64> {
        let tag = batch.tag();
        // The original event as one JSON line, so that a replay can re-route it.
        let mut whole: BTreeMap<ChunkKey, Vec<(&str, &[u8])>> = BTreeMap::new();
        for (reason, i) in &self.whole {
            let (Some(line), Some(time)) = (batch.line(*i), batch.time(*i)) else {
                continue;
            };
            whole
                .entry(naming.key(tag, time))
                .or_default()
                .push((reason.as_str(), line.as_bytes()));
        }
        let mut n = 0;
        for (key, items) in whole {
            let stream = naming.stream(&key);
            n += dl.write_by_reason(output, (&key, stream.as_deref()), None, items)?;
        }
        let mut described: BTreeMap<ChunkKey, Vec<(&str, &[u8])>> = BTreeMap::new();
        for (reason, time, line) in &self.described {
            described
                .entry(naming.key(tag, *time))
                .or_default()
                .push((reason.as_str(), line.as_slice()));
        }
        for (key, items) in described {
            let stream = naming.stream(&key);
            n += dl.write_descriptions_by_reason(output, (&key, stream.as_deref()), items)?;
        }
        Ok(n)
    }
}

/// The line kept for a record too large to keep.
fn describe(tag: &str, time: EventTime, size_bytes: usize, prefix: &str) -> Vec<u8> {
    let mut line = serde_json::json!({
        "tag": tag,
        "time": time.to_string(),
        "size_bytes": size_bytes,
        "prefix": prefix,
    })
    .to_string()
    .into_bytes();
    line.push(b'\n');
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_rejects_are_kept_whole_and_large_ones_described() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path());
        let mut batch = EventBatch::new("app");
        batch.push_raw(EventTime(0), r#"{"small":1}"#);
        let huge = format!(r#"{{"m":"{}"}}"#, "x".repeat(DEAD_LETTER_RECORD_BYTES));
        batch.push_raw(EventTime(0), &huge);
        batch.push_oversized(Oversized {
            time: EventTime(0),
            received_bytes: 200 << 20,
            limit: 1000,
            prefix: r#"{"k":"#.to_owned(),
        });
        let rejected = (0..2)
            .map(|index| Rejected {
                index,
                reason: "too big for the output".to_owned(),
            })
            .collect();
        let rejects = Rejects::collect(&batch, rejected);
        assert_eq!(rejects.len(), 3);
        assert_eq!(
            rejects
                .write(&dl, "out", &batch, &Naming::default())
                .unwrap(),
            3
        );
        let entries: Vec<_> = dl.list().unwrap().into_iter().map(|e| e.unwrap()).collect();
        let whole: Vec<_> = entries.iter().filter(|e| !e.meta.truncated).collect();
        assert_eq!(whole.len(), 1);
        let kept = DeadLetter::read_records(whole[0]).unwrap();
        assert_eq!(kept.get(0), Some(&b"{\"small\":1}\n"[..]));
        let described: Vec<_> = entries.iter().filter(|e| e.meta.truncated).collect();
        assert_eq!(described.len(), 2);
        let mut total = 0;
        for e in described {
            let lines = DeadLetter::read_records(e).unwrap();
            let v: serde_json::Value = serde_json::from_slice(lines.get(0).unwrap()).unwrap();
            assert_eq!(v["tag"], "app");
            assert!(lines.byte_len() < 2 * Oversized::PREFIX_BYTES);
            total += v["size_bytes"].as_u64().unwrap();
        }
        assert_eq!(total, huge.len() as u64 + (200 << 20));
    }

    #[test]
    fn rejects_of_a_keyed_output_are_kept_per_time_slot_with_their_resolved_stream() {
        let dir = tempfile::tempdir().unwrap();
        let dl = DeadLetter::new(dir.path());
        let buffer: crate::buffer::config::BufferConfig = toml::from_str(
            "chunk_keys = [\"tag\", \"time\"]\ntimekey = \"1d\"\ntimekey_use_utc = true",
        )
        .unwrap();
        let naming = Naming {
            rule: buffer.key_rule(),
            stream: Some(StreamName::new("logs-${tag[1]}-%Y%m%d", &buffer)),
        };
        let mut batch = EventBatch::new("app.web");
        // 2020-09-13 and 2020-09-14 (UTC).
        let (day1, day2) = (1_600_000_000_i64, 1_600_000_000_i64 + 86_400);
        for t in [day1, day2, day1] {
            batch.push_raw(EventTime(t * 1_000_000_000), r#"{"a":1}"#);
        }
        let rejected = (0..3)
            .map(|index| Rejected {
                index,
                reason: "no data_key".to_owned(),
            })
            .collect();
        let rejects = Rejects::collect(&batch, rejected);
        assert_eq!(rejects.write(&dl, "out", &batch, &naming).unwrap(), 3);
        let mut got: Vec<(Option<i64>, Option<String>, usize)> = dl
            .list()
            .unwrap()
            .into_iter()
            .map(|e| {
                let m = e.unwrap().meta;
                assert_eq!(m.tag.as_deref(), Some("app.web"));
                (m.timekey, m.stream, m.records)
            })
            .collect();
        got.sort();
        assert_eq!(
            got,
            [
                (Some(1_599_955_200), Some("logs-web-20200913".to_owned()), 2),
                (Some(1_600_041_600), Some("logs-web-20200914".to_owned()), 1),
            ]
        );
    }
}
