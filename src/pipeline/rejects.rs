//! What the pipeline keeps of the records it cannot buffer for an output: those its formatter
//! rejects (larger than the output takes, no `data_key` field) and those a source found too
//! large at intake ([`Oversized`]). They go to the dead-letter directory, never dropped silently,
//! and writing them is bounded too: a record up to [`DEAD_LETTER_RECORD_BYTES`] is kept whole
//! (and can be replayed); a larger one is kept as a one-line description — tag, time, size and
//! its first [`Oversized::PREFIX_BYTES`] — in an entry marked `truncated`.

use crate::event::{EventBatch, EventTime, Oversized};
use crate::flush::deadletter::DeadLetter;
use crate::pipeline::format::Rejected;

/// The largest rejected record kept whole in the dead-letter directory (1 MiB: Firehose's
/// record limit plus room for the line end, so anything an output refused for its size is
/// kept when it came within a source's default bound).
pub const DEAD_LETTER_RECORD_BYTES: usize = 1 << 20;

/// The records of one batch that go to the dead-letter directory.
#[derive(Debug, Default)]
pub struct Rejects {
    /// (reason, index in the batch): kept whole.
    whole: Vec<(String, usize)>,
    /// (reason, description line): too large to keep.
    described: Vec<(String, Vec<u8>)>,
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
                    out.described.push((reason, line));
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
            out.described.push((reason, line));
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
            .or_else(|| self.described.first().map(|(r, _)| r.as_str()))
    }

    /// Writes the entries (blocking I/O); returns the number of records written.
    pub fn write(&self, dl: &DeadLetter, output: &str, batch: &EventBatch) -> std::io::Result<u64> {
        let tag = Some(batch.tag());
        // The original event as one JSON line, so that a replay can re-route it.
        let whole = self
            .whole
            .iter()
            .filter_map(|(reason, i)| Some((reason.as_str(), batch.line(*i)?.as_bytes())));
        let mut n = dl.write_by_reason(output, (tag, None), None, whole)?;
        let described = self
            .described
            .iter()
            .map(|(reason, line)| (reason.as_str(), line.as_slice()));
        n += dl.write_descriptions_by_reason(output, tag, described)?;
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
        assert_eq!(rejects.write(&dl, "out", &batch).unwrap(), 3);
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
}
