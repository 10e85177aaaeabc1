//! Stream names with Fluentd's chunk placeholders (`delivery_stream = "logs-${tag[1]}-%Y%m%d"`),
//! resolved per chunk from its key ([`crate::buffer::key`]), as Fluentd's
//! `extract_placeholders` does for fluent-plugin-kinesis:
//!
//! 1. with `"time"` in `chunk_keys`, the name is formatted with strftime at the start of the
//!    chunk's time slot, in the zone of `timekey_use_utc` / `timekey_zone`;
//! 2. with `"tag"`, `${tag}` becomes the chunk's tag and `${tag[N]}` its N-th dot-separated
//!    part, counted from 0, or from the end when N is negative (`${tag[-1]}` is the last part);
//!    a part the tag does not have becomes the empty string (Fluentd replaces it with nothing
//!    too) and a warning is logged.
//!
//! A placeholder whose chunk key is not configured is a config error ([`StreamName::problems`]),
//! as Fluentd's `placeholder_validate!` makes it one (fluent-plugin-kinesis does not call it:
//! Fluentd would send to the name as written, which the service refuses).
//!
//! The Firehose output's `delivery_stream` and the Kinesis outputs' `stream_name` use it.

use prometheus_client::metrics::counter::Counter;

use crate::buffer::config::BufferConfig;
use crate::buffer::key::{KeyRule, KeyZone};
use crate::buffer::ChunkKey;
use crate::primitives::interpolate::placeholder_len;

/// A stream name, possibly with placeholders.
#[derive(Debug, Clone)]
pub struct StreamName {
    template: String,
    tag: bool,
    time: bool,
    zone: KeyZone,
}

/// One piece of a template: literal text or a tag placeholder.
enum Piece<'a> {
    Text(&'a str),
    Tag,
    TagPart(i64),
}

fn pieces(template: &str) -> Vec<Piece<'_>> {
    let mut out = Vec::new();
    let (mut text_start, mut at) = (0, 0);
    while let Some(c) = template[at..].chars().next() {
        let n = if c == '$' {
            placeholder_len(&template[at..])
        } else {
            None
        };
        let Some(n) = n else {
            at += c.len_utf8();
            continue;
        };
        if at > text_start {
            out.push(Piece::Text(&template[text_start..at]));
        }
        let p = &template[at..at + n];
        out.push(
            match p.strip_prefix("${tag[").and_then(|s| s.strip_suffix("]}")) {
                Some(i) => Piece::TagPart(i.parse().unwrap_or(i64::MAX)),
                None => Piece::Tag,
            },
        );
        at += n;
        text_start = at;
    }
    if template.len() > text_start {
        out.push(Piece::Text(&template[text_start..]));
    }
    out
}

impl StreamName {
    /// The name `template` of an output whose buffer is `buffer`.
    pub fn new(template: &str, buffer: &BufferConfig) -> StreamName {
        let rule: KeyRule = buffer.key_rule();
        StreamName {
            template: template.to_owned(),
            tag: rule.tag,
            time: rule.timekey_secs.is_some(),
            zone: rule.zone.unwrap_or(KeyZone::Local),
        }
    }

    /// The template as configured.
    pub fn template(&self) -> &str {
        &self.template
    }

    /// True when the name depends on the chunk (it has placeholders that are resolved).
    pub fn is_templated(&self) -> bool {
        (self.time && self.template.contains('%'))
            || (self.tag
                && pieces(&self.template)
                    .iter()
                    .any(|p| !matches!(p, Piece::Text(_))))
    }

    /// The name for the chunk of `key`. The second value names a tag part the tag does not
    /// have (resolved to nothing), for a warning.
    pub fn resolve(&self, key: &ChunkKey) -> (String, Option<String>) {
        let timed = match (self.time, key.timekey) {
            (true, Some(slot)) => self
                .zone
                .strftime(slot, &self.template)
                .unwrap_or_else(|| self.template.clone()),
            _ => self.template.clone(),
        };
        let Some(tag) = key.tag.as_deref().filter(|_| self.tag) else {
            return (timed, None);
        };
        let parts: Vec<&str> = tag.split('.').collect();
        let mut out = String::with_capacity(timed.len() + tag.len());
        let mut missing = None;
        for piece in pieces(&timed) {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Tag => out.push_str(tag),
                Piece::TagPart(i) => {
                    let n = parts.len() as i64;
                    let at = if i < 0 { n + i } else { i };
                    match usize::try_from(at).ok().and_then(|a| parts.get(a)) {
                        Some(p) => out.push_str(p),
                        None => missing = Some(format!("${{tag[{i}]}}")),
                    }
                }
            }
        }
        (out, missing)
    }

    /// The name for the chunk of `key` for a sink to call: the template itself when it has no
    /// placeholders; a tag part the tag does not have is logged (at most once per `log`'s
    /// interval) and replaced with nothing, as Fluentd does.
    pub fn resolve_logged(
        &self,
        key: &ChunkKey,
        log: &crate::ops::logging::Throttle,
    ) -> std::borrow::Cow<'_, str> {
        if !self.is_templated() {
            return std::borrow::Cow::Borrowed(&self.template);
        }
        let (name, missing) = self.resolve(key);
        if let Some(part) = missing {
            if let Some(suppressed) = log.allow() {
                tracing::warn!(template = %self.template, tag = key.tag.as_deref().unwrap_or(""),
                    placeholder = %part, stream = %name, suppressed,
                    "the tag has no such part; the placeholder was replaced with nothing (as Fluentd does)");
            }
        }
        std::borrow::Cow::Owned(name)
    }

    /// Why the template cannot work with `buffer`'s chunk keys (as `(key, message)` of the
    /// output's `field`), Fluentd's `placeholder_validate!`.
    pub fn problems(template: &str, buffer: &BufferConfig) -> Vec<String> {
        let rule = buffer.key_rule();
        let mut p = Vec::new();
        let tagged = pieces(template)
            .iter()
            .any(|p| !matches!(p, Piece::Text(_)));
        if tagged && !rule.tag {
            p.push(format!(
                "`{template}` has tag placeholders, but chunk key \"tag\" is not configured: add \
                 chunk_keys = [\"tag\"] to the output's buffer section (Fluentd: <buffer tag>)"
            ));
        }
        if template.contains('%') {
            if rule.timekey_secs.is_none() {
                p.push(format!(
                    "`{template}` has timestamp placeholders (%), but chunk key \"time\" is not \
                     configured: add chunk_keys = [\"time\"] and timekey to the output's buffer \
                     section (Fluentd: <buffer time> with timekey)"
                ));
            } else if KeyZone::Utc.strftime(0, template).is_none() {
                p.push(format!("`{template}` has an invalid strftime directive"));
            }
        }
        p
    }
}

/// Most resolved streams an output names in its metrics and `/status`. Chunk keys come from
/// tags, which clients choose: past this many distinct names the rest are counted together
/// under [`OTHER_STREAMS`], so the series of an output stay bounded whatever the tags.
pub const MAX_NAMED_STREAMS: usize = 100;
/// The `stream` label of records of streams beyond [`MAX_NAMED_STREAMS`].
pub const OTHER_STREAMS: &str = "_other";

/// What one resolved stream received, for `/status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct StreamStatus {
    /// The resolved name (or [`OTHER_STREAMS`]).
    pub stream: String,
    /// Records delivered to it since start.
    pub records_delivered: u64,
    /// Unix time of its last delivery.
    pub last_delivery_unix: i64,
}

/// Labels of a per-stream series.
#[derive(Debug, Clone, PartialEq, Eq, Hash, prometheus_client::encoding::EncodeLabelSet)]
pub struct StreamLabels {
    /// The output's name.
    pub output: String,
    /// The resolved stream (or [`OTHER_STREAMS`]).
    pub stream: String,
}

/// `firehose_relay_stream_records_delivered_total{output, stream}`, shared by every output.
#[derive(Clone)]
pub struct StreamFamily(pub prometheus_client::metrics::family::Family<StreamLabels, Counter>);

impl StreamFamily {
    /// The family of `metrics`, registered on first use.
    pub fn of(metrics: &crate::ops::metrics::Metrics) -> StreamFamily {
        metrics.component(|m| {
            let f = StreamFamily(Default::default());
            m.register(
                "stream_records_delivered",
                "Records delivered per resolved stream name (outputs with placeholders in the stream name; at most 100 names per output, the rest under stream=\"_other\")",
                f.0.clone(),
            );
            f
        })
    }
}

/// Deliveries of one output per resolved stream, bounded by [`MAX_NAMED_STREAMS`].
pub struct StreamTracker {
    output: String,
    family: StreamFamily,
    streams: std::sync::Mutex<std::collections::BTreeMap<String, (Counter, StreamStatus)>>,
}

impl StreamTracker {
    /// The tracker of output `output`.
    pub fn new(output: &str, family: StreamFamily) -> StreamTracker {
        StreamTracker {
            output: output.to_owned(),
            family,
            streams: Default::default(),
        }
    }

    /// Counts `records` delivered to `stream` now.
    pub fn delivered(&self, stream: &str, records: usize) {
        if records == 0 {
            return;
        }
        let mut streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        let name = if streams.contains_key(stream) || streams.len() < MAX_NAMED_STREAMS {
            stream
        } else {
            OTHER_STREAMS
        };
        let (counter, status) = streams.entry(name.to_owned()).or_insert_with(|| {
            let counter = self
                .family
                .0
                .get_or_create(&StreamLabels {
                    output: self.output.clone(),
                    stream: name.to_owned(),
                })
                .clone();
            (
                counter,
                StreamStatus {
                    stream: name.to_owned(),
                    records_delivered: 0,
                    last_delivery_unix: 0,
                },
            )
        });
        counter.inc_by(records as u64);
        status.records_delivered += records as u64;
        status.last_delivery_unix = chrono::Utc::now().timestamp();
    }

    /// Every stream delivered to, by name.
    pub fn status(&self) -> Vec<StreamStatus> {
        let streams = self.streams.lock().unwrap_or_else(|e| e.into_inner());
        streams.values().map(|(_, s)| s.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffer(keys: &str) -> BufferConfig {
        toml::from_str(keys).unwrap()
    }

    fn key(tag: &str, slot: Option<i64>) -> ChunkKey {
        ChunkKey {
            tag: Some(tag.to_owned()),
            timekey: slot,
        }
    }

    #[test]
    fn tag_parts_count_from_either_end_and_missing_ones_are_empty() {
        let b = buffer("chunk_keys = [\"tag\"]");
        let n = StreamName::new("logs-${tag}-${tag[1]}-${tag[-1]}", &b);
        assert!(n.is_templated());
        assert_eq!(
            n.resolve(&key("kube.app.web", None)),
            ("logs-kube.app.web-app-web".to_owned(), None)
        );
        let (name, missing) = n.resolve(&key("single", None));
        assert_eq!(name, "logs-single--single");
        assert_eq!(missing.as_deref(), Some("${tag[1]}"));
        let plain = StreamName::new("logs", &b);
        assert!(!plain.is_templated());
        assert_eq!(plain.resolve(&key("a.b", None)).0, "logs");
    }

    #[test]
    fn time_is_formatted_first_so_a_percent_in_a_tag_stays() {
        let b =
            buffer("chunk_keys = [\"tag\", \"time\"]\ntimekey = \"1h\"\ntimekey_use_utc = true");
        let n = StreamName::new("${tag[0]}-%Y%m%d%H", &b);
        assert_eq!(
            n.resolve(&key("a%Y.b", Some(1_796_292_000))).0,
            "a%Y-2026120310"
        );
        let tokyo = buffer("chunk_keys = [\"time\"]\ntimekey = \"1d\"\ntimekey_zone = \"+09:00\"");
        // The day slot that starts at 2026-12-03 00:00 in Tokyo.
        let slot = 1_796_223_600;
        let n = StreamName::new("logs-%Y-%m-%d", &tokyo);
        assert_eq!(n.resolve(&key("x", Some(slot))).0, "logs-2026-12-03");
    }

    #[test]
    fn the_streams_an_output_names_are_bounded() {
        let t = StreamTracker::new("o", StreamFamily(Default::default()));
        for i in 0..MAX_NAMED_STREAMS + 50 {
            t.delivered(&format!("s{i}"), 2);
        }
        t.delivered("s0", 1);
        let st = t.status();
        assert_eq!(st.len(), MAX_NAMED_STREAMS + 1);
        let other = st.iter().find(|s| s.stream == OTHER_STREAMS).unwrap();
        assert_eq!(other.records_delivered, 100);
        let s0 = st.iter().find(|s| s.stream == "s0").unwrap();
        assert_eq!(s0.records_delivered, 3);
    }

    #[test]
    fn placeholders_without_their_chunk_key_are_refused() {
        let none = buffer("");
        assert_eq!(StreamName::problems("logs-${tag}", &none).len(), 1);
        assert_eq!(StreamName::problems("logs-%Y", &none).len(), 1);
        assert!(StreamName::problems("logs", &none).is_empty());
        let tag = buffer("chunk_keys = [\"tag\"]");
        assert!(StreamName::problems("logs-${tag[-2]}", &tag).is_empty());
        assert_eq!(StreamName::problems("logs-${tag}-%Y", &tag).len(), 1);
        let time = buffer("chunk_keys = [\"time\"]\ntimekey = \"1h\"");
        assert!(StreamName::problems("logs-%Y%m%d", &time).is_empty());
        assert_eq!(StreamName::problems("logs-%Q", &time).len(), 1);
    }
}
