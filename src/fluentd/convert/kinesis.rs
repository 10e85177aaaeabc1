//! `<match>` with `@type kinesis_streams` (fluent-plugin-kinesis) → `type = "kinesis_streams"`,
//! and the batch-call parameters every fluent-plugin-kinesis output shares.

use super::buffer::Keys;
use super::params::Params;
use super::render::Section;
use super::{Cx, Why};
use crate::fluentd::syntax::Directive;
use crate::primitives::ByteSize;
use crate::sink::kinesis_streams::{MAX_BYTES_PER_CALL, MAX_RECORD_BYTES};

/// Records per call, the same for PutRecords and PutRecordBatch.
const MAX_RECORDS_PER_CALL: i64 = 500;

impl Cx {
    /// `kinesis_streams` and `kinesis_streams_aggregated` (`aggregated`): the stream, the
    /// partition key (a record field, or the aggregated records' fixed key), then what they
    /// share with `kinesis_firehose` (endpoint, records, calls, credentials).
    pub(super) fn kinesis_streams(
        &mut self,
        d: &Directive,
        ps: &mut Params<'_>,
        sec: &mut Section,
        aggregated: bool,
        keys: Keys,
    ) {
        match ps.take("stream_name") {
            Some(p) => {
                if let Some(v) = self.stream_name(p, keys, "Kinesis Data Streams") {
                    sec.string("stream_name", v);
                }
            }
            None => self.finding(
                &d.pos,
                "stream_name",
                Why::InvalidValue,
                "kinesis_streams needs a stream_name",
                "add it",
            ),
        }
        let key = if aggregated {
            "fixed_partition_key"
        } else {
            "partition_key"
        };
        self.copy_string(ps, key, sec, key);
        if aggregated {
            // The plugin's limits count user records in its one aggregated record per call; the
            // relay fills aggregated records up to 1 MiB and calls up to 500 of them and 5 MiB.
            for name in ["batch_request_max_count", "batch_request_max_size"] {
                if let Some(p) = ps.take(name) {
                    self.warn(&p.pos, format!("{name} is not converted: the relay packs aggregated records up to the 1 MiB Kinesis record limit and sends up to 500 of them (5 MiB) per PutRecords call"));
                }
            }
        }
        self.endpoint_params(ps, sec);
        self.firehose_records(ps, sec);
        if aggregated {
            // Its own resends; the limits were taken above.
            if let Some(p) = ps.take("retries_on_batch_request") {
                if let Some(n) = self.count::<u32>(p) {
                    sec.set("retries_on_batch_request", i64::from(n));
                }
            }
        } else {
            self.batch_calls(ps, sec, "PutRecords", MAX_BYTES_PER_CALL as u64);
        }
        if let Some(p) = ps.take("max_record_size") {
            if let Some(n) = self.size(p) {
                if n < MAX_RECORD_BYTES as u64 {
                    self.finding(
                        &p.pos,
                        "max_record_size",
                        Why::UnsupportedParameter,
                        "the relay's per-record limit is Kinesis's own (1 MiB, data plus partition key); a smaller one cannot be set on the output",
                        "remove it, or set record_size_limit on the forward source",
                    );
                } else {
                    self.warn(&p.pos, "max_record_size: the relay dead-letters records over Kinesis's 1 MiB, data plus partition key (the plugin logs and drops them)");
                }
            }
        }
        self.firehose_differences(ps);
        self.credentials(d, ps, sec);
        self.inject(d);
    }

    /// Batch calls (`op`): resends and the per-call limits (500 records, `max_bytes`).
    pub(super) fn batch_calls(
        &mut self,
        ps: &mut Params<'_>,
        sec: &mut Section,
        op: &str,
        max_bytes: u64,
    ) {
        if let Some(p) = ps.take("retries_on_batch_request") {
            if let Some(n) = self.count::<u32>(p) {
                sec.set("retries_on_batch_request", i64::from(n));
            }
        }
        if let Some(p) = ps.take("batch_request_max_count") {
            if let Some(n) = self.integer(p) {
                if (1..=MAX_RECORDS_PER_CALL).contains(&n) {
                    sec.set("max_records_per_call", n);
                } else {
                    self.finding(
                        &p.pos,
                        "batch_request_max_count",
                        Why::InvalidValue,
                        &format!("{n} is outside {op}'s 1–500 records"),
                        "use at most 500",
                    );
                }
            }
        }
        if let Some(p) = ps.take("batch_request_max_size") {
            if let Some(n) = self.size(p) {
                if (1..=max_bytes).contains(&n) {
                    sec.string("max_bytes_per_call", ByteSize(n).to_string());
                } else {
                    self.finding(
                        &p.pos,
                        "batch_request_max_size",
                        Why::InvalidValue,
                        &format!("outside {op}'s {}", ByteSize(max_bytes)),
                        &format!("use at most {}", ByteSize(max_bytes)),
                    );
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::fluentd::convert::{convert, Why};
    use crate::fluentd::parse_str;

    #[test]
    fn kinesis_streams_converts_with_its_parameters() {
        let text = r#"<match app.**>
  @type kinesis_streams
  stream_name logs
  region eu-west-1
  partition_key user_id
  batch_request_max_size 5m
  batch_request_max_count 250
  retries_on_batch_request 3
  <web_identity_credentials>
    role_arn arn:aws:iam::123456789012:role/relay
    web_identity_token_file /var/run/secrets/token
    role_session_name relay
  </web_identity_credentials>
</match>
"#;
        let c = convert(&parse_str(text, "fluent.conf").unwrap());
        assert!(c.findings.is_empty(), "{:?}", c.findings);
        let t: toml::Table = c.toml.parse().unwrap();
        let o = &t["outputs"].as_table().unwrap().values().next().unwrap();
        assert_eq!(o["type"].as_str(), Some("kinesis_streams"));
        assert_eq!(o["stream_name"].as_str(), Some("logs"));
        assert_eq!(o["partition_key"].as_str(), Some("user_id"));
        assert_eq!(o["max_bytes_per_call"].as_str(), Some("5m"));
        assert_eq!(o["max_records_per_call"].as_integer(), Some(250));
        assert_eq!(o["credentials"]["type"].as_str(), Some("web_identity"));
        // The converted output is a valid kinesis_streams configuration.
        let cfg: crate::sink::kinesis_streams::KinesisStreamsConfig =
            toml::from_str(&toml::to_string(o).unwrap()).unwrap();
        assert!(
            cfg.problems()
                .iter()
                .all(|(k, _)| k.starts_with("credentials")),
            "{:?}",
            cfg.problems()
        );
    }

    #[test]
    fn kinesis_streams_aggregated_converts_with_its_fixed_key() {
        let text = "<match **>\n  @type kinesis_streams_aggregated\n  stream_name agg\n  region eu-west-1\n  fixed_partition_key k1\n  batch_request_max_count 100000\n</match>\n";
        let c = convert(&parse_str(text, "fluent.conf").unwrap());
        assert!(c.findings.is_empty(), "{:?}", c.findings);
        let t: toml::Table = c.toml.parse().unwrap();
        let o = &t["outputs"].as_table().unwrap().values().next().unwrap();
        assert_eq!(o["type"].as_str(), Some("kinesis_streams_aggregated"));
        assert_eq!(o["stream_name"].as_str(), Some("agg"));
        assert_eq!(o["fixed_partition_key"].as_str(), Some("k1"));
        assert!(o.get("max_records_per_call").is_none());
    }

    #[test]
    fn over_the_putrecords_limits_and_placeholders_are_findings() {
        let text = "<match **>\n  @type kinesis_streams\n  stream_name ${tag}\n  batch_request_max_size 6m\n</match>\n";
        let c = convert(&parse_str(text, "fluent.conf").unwrap());
        let whys: Vec<(&str, Why)> = c
            .findings
            .iter()
            .map(|f| (f.subject.as_str(), f.why))
            .collect();
        // `${tag}` without <buffer tag>: Fluentd would send to the stream literally named so.
        assert!(
            whys.contains(&("stream_name", Why::InvalidValue)),
            "{whys:?}"
        );
        assert!(
            whys.contains(&("batch_request_max_size", Why::InvalidValue)),
            "{whys:?}"
        );
        assert!(
            c.findings
                .iter()
                .any(|f| f.reason.contains("PutRecords's 5m")),
            "{:?}",
            c.findings
        );
    }

    #[test]
    fn stream_name_placeholders_convert_with_their_chunk_keys() {
        for ty in ["kinesis_streams", "kinesis_streams_aggregated"] {
            let text = format!("<match **>\n  @type {ty}\n  region r\n  stream_name logs-${{tag[1]}}-%Y%m%d\n  <buffer tag, time>\n    timekey 1h\n  </buffer>\n</match>\n");
            let c = convert(&parse_str(&text, "fluent.conf").unwrap());
            assert!(c.findings.is_empty(), "{ty}: {:?}", c.findings);
            let t: toml::Table = c.toml.parse().unwrap();
            let o = &t["outputs"].as_table().unwrap().values().next().unwrap();
            assert_eq!(o["stream_name"].as_str(), Some("logs-${tag[1]}-%Y%m%d"));
            assert_eq!(o["buffer"]["flush_mode"].as_str(), Some("lazy"));
        }
    }
}
