//! `type = "stdout"` filter: prints `2020-10-15 08:21:18.081312494 +0000 tag: {"k":"v"}` for each
//! event, exactly like Fluentd's `<filter> @type stdout`, and passes the events on unchanged.

use std::io::Write;

use serde::{Deserialize, Serialize};

use super::Filter;
use crate::event::EventBatch;

/// `[filters.NAME]` with `type = "stdout"`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StdoutFilterConfig {
    /// The component type (already used to choose this struct).
    #[serde(rename = "type", default, skip_serializing)]
    pub type_tag: crate::primitives::TypeTag,
    /// Tags to print.
    #[serde(rename = "match", default = "crate::primitives::component::match_all")]
    pub pattern: String,
    /// Fluentd's `@label`: only events of sources with the same label reach it (none: the
    /// top level).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub label: Option<String>,
}

/// Prints events to stdout.
pub struct StdoutFilter;

/// Renders one batch in Fluentd's stdout format.
pub fn render(batch: &EventBatch, out: &mut Vec<u8>) {
    for (time, record) in batch.iter() {
        // Writing into a Vec cannot fail.
        let _ = writeln!(out, "{time} {}: {record}", batch.tag());
    }
}

impl Filter for StdoutFilter {
    fn apply(&self, batch: &mut EventBatch) {
        let mut text = Vec::with_capacity(batch.json_bytes() + batch.len() * 48);
        render(batch, &mut text);
        // One write per batch under the stdout lock keeps lines of concurrent sources whole. A
        // closed stdout must not stop the pipeline, so the error is ignored.
        let _ = std::io::stdout().lock().write_all(&text);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;

    #[test]
    fn renders_like_fluentd() {
        let mut b = EventBatch::new("raw.sample");
        b.push_raw(
            EventTime::from_parts(1_602_750_078, 81_312_494),
            r#"{"message":"sample"}"#,
        );
        let mut out = Vec::new();
        render(&b, &mut out);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2020-10-15 08:21:18.081312494 +0000 raw.sample: {\"message\":\"sample\"}\n"
        );
    }
}
