//! Turns events into the bytes an output will send, once, when they enter the buffer: a flush
//! then only moves bytes.
//!
//! Default: the record's JSON object followed by `\n` (`append_new_line`). With `data_key`, only
//! that field is sent: a string as its raw text, anything else as JSON.

use serde::{Deserialize, Serialize};

use crate::buffer::Records;
use crate::event::EventBatch;

/// Formatting options of an output.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FormatOptions {
    /// Add `\n` after each record (default true), so records stay newline-delimited in S3.
    pub append_new_line: bool,
    /// Send only this field of each record.
    pub data_key: Option<String>,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            append_new_line: true,
            data_key: None,
        }
    }
}

/// An event that could not be formatted for this output. Its text stays in the batch
/// ([`EventBatch::record`]) for the dead-letter file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Index of the event in its batch.
    pub index: usize,
    /// Why, for the log and the dead-letter file.
    pub reason: String,
}

/// Formats batches for one output.
#[derive(Debug, Clone)]
pub struct Formatter {
    options: FormatOptions,
    max_record_bytes: Option<usize>,
}

impl Formatter {
    /// A formatter; records larger than `max_record_bytes` after formatting are rejected (the
    /// output's `chunk_limit_size`, and for Firehose 1,024,000: Firehose refuses larger records).
    pub fn new(options: FormatOptions, max_record_bytes: Option<usize>) -> Self {
        Formatter {
            options,
            max_record_bytes,
        }
    }

    /// The largest formatted record this output takes, if it has a limit.
    pub fn max_record_bytes(&self) -> Option<usize> {
        self.max_record_bytes
    }

    /// The formatted records of `batch`, and the events that cannot be sent (returned instead
    /// of being dropped silently).
    ///
    /// In the default format (JSON lines) the batch's text already is the records' bytes: when
    /// every record fits, it is moved out of the batch, not copied, so a record is copied once
    /// on its way from the socket to the buffer (by the transcoder). Otherwise the records are
    /// copied one by one and the batch keeps the text of the rejected ones.
    pub fn format(&self, batch: &mut EventBatch) -> (Records, Vec<Rejected>) {
        if self.takes_lines_as_they_are(batch) {
            let (data, ends) = batch.take_json_lines();
            // Checked above: every end fits in u32; the batch's ends are increasing and the
            // last one is its length.
            let ends = ends.into_iter().map(|e| e as u32).collect();
            return (Records::from_trusted_parts(data, ends), Vec::new());
        }
        let mut out = Records::with_capacity(batch.len(), batch.json_bytes() + batch.len());
        let rejected = self.format_copy(batch, &mut out);
        (out, rejected)
    }

    fn takes_lines_as_they_are(&self, batch: &EventBatch) -> bool {
        let default_format = self.options.append_new_line && self.options.data_key.is_none();
        let total = batch.json_bytes() + batch.len();
        default_format
            && u32::try_from(total).is_ok()
            && self
                .max_record_bytes
                .is_none_or(|max| batch.iter().all(|(_, record)| record.len() < max))
    }

    fn format_copy(&self, batch: &EventBatch, out: &mut Records) -> Vec<Rejected> {
        let mut rejected = Vec::new();
        let mut reject = |out: &mut Records, index: usize, reason: String| {
            out.unseal_tail();
            rejected.push(Rejected { index, reason });
        };
        for (index, (_, record)) in batch.iter().enumerate() {
            let start = out.byte_len();
            let data = out.data_mut();
            match &self.options.data_key {
                None => data.extend_from_slice(record.as_bytes()),
                Some(key) => {
                    let field =
                        serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(record)
                            .ok()
                            .and_then(|mut m| m.remove(key));
                    match field {
                        Some(serde_json::Value::String(s)) => data.extend_from_slice(s.as_bytes()),
                        Some(other) => data.extend_from_slice(other.to_string().as_bytes()),
                        None => {
                            reject(
                                out,
                                index,
                                format!("record has no field `{key}` (data_key)"),
                            );
                            continue;
                        }
                    }
                }
            }
            if self.options.append_new_line {
                out.data_mut().push(b'\n');
            }
            let size = out.byte_len() - start;
            if let Some(max) = self.max_record_bytes.filter(|&max| size > max) {
                let reason =
                    format!("formatted record is {size} bytes, over the limit of {max} bytes");
                reject(out, index, reason);
                continue;
            }
            if out.seal().is_err() {
                reject(out, index, "batch exceeds 4 GiB".to_owned());
            }
        }
        rejected
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    fn batch(records: &[&str]) -> EventBatch {
        let mut b = EventBatch::new("t");
        for r in records {
            b.push_raw(EventTime(0), r);
        }
        b
    }

    impl Formatter {
        fn format_copy_for_test(&self, batch: &EventBatch) -> (Records, Vec<Rejected>) {
            let mut out = Records::new();
            let rejected = self.format_copy(batch, &mut out);
            (out, rejected)
        }
    }

    fn texts(r: &Records) -> Vec<String> {
        r.iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn default_is_json_lines() {
        let (out, rej) = Formatter::new(FormatOptions::default(), Some(100))
            .format(&mut batch(&[r#"{"a":1}"#, r#"{"b":"x"}"#]));
        assert!(rej.is_empty());
        assert_eq!(texts(&out), vec!["{\"a\":1}\n", "{\"b\":\"x\"}\n"]);
        let (copied, _) = Formatter::new(FormatOptions::default(), Some(100))
            .format_copy_for_test(&batch(&[r#"{"a":1}"#, r#"{"b":"x"}"#]));
        assert_eq!(copied, out, "moving the lines and copying them agree");
    }

    #[test]
    fn without_newlines_records_are_copied_bare() {
        let opts = FormatOptions {
            append_new_line: false,
            data_key: None,
        };
        let (out, _) = Formatter::new(opts, None).format(&mut batch(&[r#"{"a":1}"#, "{}"]));
        assert_eq!(texts(&out), vec!["{\"a\":1}", "{}"]);
    }

    #[test]
    fn data_key_sends_one_field_and_rejects_records_without_it() {
        let opts = FormatOptions {
            append_new_line: false,
            data_key: Some("log".into()),
        };
        let (out, rej) = Formatter::new(opts, None).format(&mut batch(&[
            r#"{"log":"line one","k":1}"#,
            r#"{"other":1}"#,
            r#"{"log":{"n":2}}"#,
        ]));
        assert_eq!(texts(&out), vec!["line one", "{\"n\":2}"]);
        assert_eq!(rej.len(), 1);
        assert_eq!(rej[0].index, 1);
        assert!(rej[0].reason.contains("no field `log`"));
    }

    #[test]
    fn oversized_records_are_rejected_and_the_rest_kept() {
        let big = format!(r#"{{"m":"{}"}}"#, "x".repeat(100));
        let mut b = batch(&[r#"{"a":1}"#, &big, r#"{"b":2}"#]);
        let (out, rej) = Formatter::new(FormatOptions::default(), Some(50)).format(&mut b);
        assert_eq!(texts(&out), vec!["{\"a\":1}\n", "{\"b\":2}\n"]);
        assert_eq!(rej.len(), 1);
        assert_eq!(
            b.record(rej[0].index),
            Some(big.as_str()),
            "kept for the dead letter"
        );
        assert!(
            rej[0].reason.contains("over the limit of 50 bytes"),
            "{}",
            rej[0].reason
        );
    }
}
