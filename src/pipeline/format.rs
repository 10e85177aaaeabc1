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

/// An event that could not be formatted for this output.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejected {
    /// Index of the event in its batch.
    pub index: usize,
    /// Why, for the log and the dead-letter file.
    pub reason: String,
    /// The event's JSON text, kept for the dead-letter file.
    pub record: String,
}

/// Formats batches for one output.
#[derive(Debug, Clone)]
pub struct Formatter {
    options: FormatOptions,
    max_record_bytes: Option<usize>,
}

impl Formatter {
    /// A formatter; records larger than `max_record_bytes` after formatting are rejected (the
    /// Firehose sink sets 1,024,000: Firehose refuses larger records).
    pub fn new(options: FormatOptions, max_record_bytes: Option<usize>) -> Self {
        Formatter {
            options,
            max_record_bytes,
        }
    }

    /// Appends the formatted records of `batch` to `out`; events that cannot be sent are
    /// returned instead of being dropped silently.
    pub fn format(&self, batch: &EventBatch, out: &mut Records) -> Vec<Rejected> {
        let mut rejected = Vec::new();
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
                            out.unseal_tail();
                            rejected.push(Rejected {
                                index,
                                reason: format!("record has no field `{key}` (data_key)"),
                                record: record.to_owned(),
                            });
                            continue;
                        }
                    }
                }
            }
            if self.options.append_new_line {
                out.data_mut().push(b'\n');
            }
            let size = out.byte_len() - start;
            if let Some(max) = self.max_record_bytes {
                if size > max {
                    out.unseal_tail();
                    rejected.push(Rejected {
                        index,
                        reason: format!(
                            "formatted record is {size} bytes, over the limit of {max} bytes"
                        ),
                        record: record.to_owned(),
                    });
                    continue;
                }
            }
            if out.seal().is_err() {
                out.unseal_tail();
                rejected.push(Rejected {
                    index,
                    reason: "batch exceeds 4 GiB".to_owned(),
                    record: record.to_owned(),
                });
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

    fn texts(r: &Records) -> Vec<String> {
        r.iter()
            .map(|b| String::from_utf8(b.to_vec()).unwrap())
            .collect()
    }

    #[test]
    fn default_is_json_lines() {
        let mut out = Records::new();
        let rej = Formatter::new(FormatOptions::default(), None)
            .format(&batch(&[r#"{"a":1}"#, r#"{"b":"x"}"#]), &mut out);
        assert!(rej.is_empty());
        assert_eq!(texts(&out), vec!["{\"a\":1}\n", "{\"b\":\"x\"}\n"]);
    }

    #[test]
    fn data_key_sends_one_field_and_rejects_records_without_it() {
        let opts = FormatOptions {
            append_new_line: false,
            data_key: Some("log".into()),
        };
        let mut out = Records::new();
        let rej = Formatter::new(opts, None).format(
            &batch(&[
                r#"{"log":"line one","k":1}"#,
                r#"{"other":1}"#,
                r#"{"log":{"n":2}}"#,
            ]),
            &mut out,
        );
        assert_eq!(texts(&out), vec!["line one", "{\"n\":2}"]);
        assert_eq!(rej.len(), 1);
        assert_eq!(rej[0].index, 1);
        assert!(rej[0].reason.contains("no field `log`"));
    }

    #[test]
    fn oversized_records_are_rejected_and_the_rest_kept() {
        let big = format!(r#"{{"m":"{}"}}"#, "x".repeat(100));
        let mut out = Records::new();
        let rej = Formatter::new(FormatOptions::default(), Some(50))
            .format(&batch(&[r#"{"a":1}"#, &big, r#"{"b":2}"#]), &mut out);
        assert_eq!(texts(&out), vec!["{\"a\":1}\n", "{\"b\":2}\n"]);
        assert_eq!(rej.len(), 1);
        assert!(
            rej[0].reason.contains("over the limit of 50 bytes"),
            "{}",
            rej[0].reason
        );
    }
}
