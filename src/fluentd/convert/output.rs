//! `<match>`: `kinesis_firehose` (fluent-plugin-kinesis), `file`, `stdout`; `kinesis_streams`
//! is in `kinesis.rs`, sharing the helpers here.

use super::buffer::Keys;
use super::params::Params;
use super::render::Section;
use super::{match_pattern, Cx, Why};
use crate::buffer::key::KeyZone;
use crate::fluentd::syntax::{Directive, Param, Segment, Value};
use crate::primitives::interpolate::placeholder_len;
use crate::sink::firehose::FirehoseConfig;

/// PutRecordBatch's byte limit, which the relay enforces.
const MAX_BYTES_PER_CALL: u64 = 4 << 20;

impl Cx {
    pub(super) fn output(&mut self, d: &Directive, label: Option<&str>) {
        let pattern = match_pattern(d);
        if pattern
            .split_whitespace()
            .any(|p| p == "fluent.**" || p.starts_with("fluent."))
        {
            self.finding(
                &d.pos,
                &d.describe(),
                Why::UnsupportedPlugin,
                "Fluentd's own log events (fluent.*); the relay has none: it logs to stderr and reports through /metrics and /status",
                "remove the section; collect the relay's stderr like any container log",
            );
            return;
        }
        let mut ps = Params::new(d);
        let ty = ps.plugin_type();
        let kind = match ty.as_deref() {
            Some("kinesis_firehose") => "firehose",
            Some("kinesis_streams") => "kinesis_streams",
            Some("kinesis_streams_aggregated") => "kinesis_streams_aggregated",
            Some("file") => "file",
            Some("stdout") => "stdout",
            Some("null") => {
                self.finding(
                    &d.pos,
                    &format!("{} @type null", d.describe()),
                    Why::UnsupportedPlugin,
                    "the relay has no output that discards events",
                    "remove the section and make sure no source sends these tags",
                );
                return;
            }
            other => {
                self.unsupported_plugin(
                    d,
                    other,
                    "output",
                    "kinesis_firehose, kinesis_streams, kinesis_streams_aggregated, file, stdout",
                );
                return;
            }
        };
        let name = self.name(d, kind);
        let mut sec = Section::new(&d.pos, d.describe(), format!("outputs.{name}"));
        sec.string("type", kind);
        sec.string("match", pattern);
        if let Some(l) = label {
            sec.string("label", l);
        }
        self.common_params(&mut ps);
        let mut buffer = None;
        let mut format = None;
        for c in self.without_repeats(d, &["buffer", "format"]) {
            match c.name.as_str() {
                "buffer" => buffer = Some(c),
                "format" => format = Some(c),
                _ => {}
            }
        }
        let keys = Keys::of(buffer);
        match kind {
            "firehose" => self.firehose(d, &mut ps, &mut sec, keys),
            "kinesis_streams" => self.kinesis_streams(d, &mut ps, &mut sec, false, keys),
            "kinesis_streams_aggregated" => self.kinesis_streams(d, &mut ps, &mut sec, true, keys),
            "file" => self.file(&mut ps, &mut sec, format),
            _ => self.stdout(&mut sec, format),
        }
        let aws = matches!(
            kind,
            "firehose" | "kinesis_streams" | "kinesis_streams_aggregated"
        );
        if !aws {
            self.inject(d);
            for c in &d.children {
                if !matches!(c.name.as_str(), "buffer" | "format" | "inject") {
                    self.finding(
                        &c.pos,
                        &c.describe(),
                        Why::UnsupportedParameter,
                        &format!("the relay's {kind} output has no such section"),
                        "remove it",
                    );
                }
            }
        }
        if let (true, Some(f)) = (aws, format) {
            self.format_json(f, true);
        }
        self.buffer(d, buffer, &mut sec);
        self.leftovers(
            &ps,
            &format!("the relay's {kind} output has no such parameter"),
        );
        self.sections.push(sec);
    }

    /// `<format>`: the relay writes records as JSON; other formatters are reported. Without
    /// `@type`, the plugin's default formatter applies: JSON when `default_json`.
    fn format_json(&mut self, f: &Directive, default_json: bool) {
        let mut ps = Params::new(f);
        match ps.plugin_type().as_deref() {
            Some("json") => {}
            None if default_json => {}
            other => {
                self.finding(
                    &f.pos,
                    &format!("<format> @type {}", other.unwrap_or("(none)")),
                    Why::UnsupportedPlugin,
                    "the relay formats records as JSON only",
                    "use `@type json`, or reshape the records before they reach the relay",
                );
                return;
            }
        }
        self.leftovers(&ps, "the relay's JSON format has no options");
    }

    /// `@type file`: the relay writes one file of JSON lines per chunk into `path`.
    fn file(&mut self, ps: &mut Params<'_>, sec: &mut Section, format: Option<&Directive>) {
        match ps.take("path") {
            Some(p) => {
                if let Some(v) = self.string(p) {
                    if v.contains('%') || v.contains('*') {
                        self.finding(
                            &p.pos,
                            "path",
                            Why::DifferentSemantics,
                            "time placeholders and `*` in the path are not supported: the relay writes into one directory",
                            "give a directory",
                        );
                    } else {
                        self.warn(
                            &p.pos,
                            format!("path: the relay writes one file per chunk into the directory `{v}` (Fluentd writes `{v}.<time>_<n>.log` files)"),
                        );
                        sec.string("path", v);
                    }
                }
            }
            None => self.finding(
                &ps.pos(),
                "path",
                Why::InvalidValue,
                "the file output needs a path",
                "add `path`",
            ),
        }
        if let Some(p) = ps.take("append") {
            if self.boolean(p) == Some(true) {
                self.warn(
                    &p.pos,
                    "append: the relay never appends; each chunk is a new complete file",
                );
            }
        }
        self.ignored(
            ps.take("symlink_path"),
            "the relay writes no symlink to the newest file",
        );
        if let Some(p) = ps.take("compress") {
            if p.value.literal().as_deref() != Some("text") {
                self.finding(
                    &p.pos,
                    "compress",
                    Why::UnsupportedParameter,
                    "the relay's file output writes uncompressed files",
                    "remove it, or compress the files afterwards",
                );
            }
        }
        self.record_lines(sec, format, "file");
    }

    fn stdout(&mut self, sec: &mut Section, format: Option<&Directive>) {
        self.record_lines(sec, format, "stdout");
    }

    /// `file` and `stdout` write the record as JSON (Fluentd's `<format> @type json`); their
    /// default formats (`out_file`, `stdout`) put time and tag first, which the relay does not.
    fn record_lines(&mut self, sec: &mut Section, format: Option<&Directive>, kind: &str) {
        match format {
            Some(f) => self.format_json(f, false),
            None => self.finding(
                &sec.pos,
                &format!("@type {kind} without <format>"),
                Why::DifferentSemantics,
                &format!("Fluentd's default {kind} format writes `time tag record` lines; the relay writes the record as JSON"),
                "add `<format> @type json </format>` (on three lines) to accept JSON lines",
            ),
        }
    }

    fn firehose(&mut self, d: &Directive, ps: &mut Params<'_>, sec: &mut Section, keys: Keys) {
        self.firehose_destination(d, ps, sec, keys);
        self.firehose_records(ps, sec);
        self.batch_calls(ps, sec, "PutRecordBatch", MAX_BYTES_PER_CALL);
        self.firehose_differences(ps);
        self.credentials(d, ps, sec);
        self.inject(d);
    }

    /// Where records go: stream, region, endpoint, proxy, certificate checks.
    fn firehose_destination(
        &mut self,
        d: &Directive,
        ps: &mut Params<'_>,
        sec: &mut Section,
        keys: Keys,
    ) {
        match ps.take("delivery_stream_name") {
            Some(p) => {
                if let Some(v) = self.stream_name(p, keys, "Firehose") {
                    sec.string("delivery_stream", v);
                }
            }
            None => self.finding(
                &d.pos,
                "delivery_stream_name",
                Why::InvalidValue,
                "kinesis_firehose needs a delivery_stream_name",
                "add it",
            ),
        }
        self.endpoint_params(ps, sec);
    }

    /// A stream name (`delivery_stream_name`, `stream_name`) with Fluentd's chunk placeholders,
    /// which fluent-plugin-kinesis resolves per chunk with `extract_placeholders`: strftime
    /// (`%Y%m%d`) with `time` in the chunk keys, `${tag}` / `${tag[N]}` with `tag`. The relay
    /// resolves the same ones the same way. Without their chunk key Fluentd leaves them as
    /// written (the plugin does not check), so every call would name a stream that cannot
    /// exist; that, `${key}` of record-field chunk keys and `${chunk_id}` are reported.
    /// `service` names the destination in the report.
    pub(super) fn stream_name(&mut self, p: &Param, keys: Keys, service: &str) -> Option<String> {
        let v = self.string(p)?;
        let found = Placeholders::of(&p.value);
        let before = self.findings.len();
        let cannot = format!("so every chunk would go to the stream literally named `{v}`, which {service} refuses (a stream name is letters, digits, `_`, `.` and `-`)");
        if found.tag && !keys.tag {
            self.finding(
                &p.pos,
                &p.key,
                Why::InvalidValue,
                &format!("`{v}` has tag placeholders, but chunk key 'tag' is not configured: Fluentd does not replace them then, {cannot}"),
                "add tag to the buffer's chunk keys: <buffer tag>",
            );
        }
        if found.time && !keys.time {
            self.finding(
                &p.pos,
                &p.key,
                Why::InvalidValue,
                &format!("`{v}` has timestamp placeholders, but chunk key 'time' is not configured: Fluentd does not format them then, {cannot}"),
                "add time to the buffer's chunk keys with a timekey: <buffer time> and timekey 1d (or 1h)",
            );
        } else if found.time && KeyZone::Utc.strftime(0, &v).is_none() {
            self.finding(
                &p.pos,
                &p.key,
                Why::InvalidValue,
                &format!("`{v}` has a `%` that is not a strftime directive the relay knows"),
                "use strftime's %Y %m %d %H %M %S (write %% for a `%`)",
            );
        }
        for other in &found.other {
            self.finding(
                &p.pos,
                &p.key,
                Why::UnsupportedParameter,
                &format!("placeholder `{other}` in `{v}`: the relay resolves ${{tag}}, ${{tag[N]}} and strftime only (no record-field chunk keys, no chunk id)"),
                "build the name from the tag and time instead",
            );
        }
        (self.findings.len() == before).then_some(v)
    }

    /// Region, endpoint, proxy, certificate checks: the same for every AWS output.
    pub(super) fn endpoint_params(&mut self, ps: &mut Params<'_>, sec: &mut Section) {
        self.copy_string(ps, "region", sec, "region");
        self.copy_string(ps, "endpoint", sec, "endpoint_url");
        self.copy_string(ps, "http_proxy", sec, "proxy_url");
        if let Some(p) = ps.take("ssl_verify_peer") {
            if self.boolean(p) == Some(false) {
                self.finding(
                    &p.pos,
                    "ssl_verify_peer false",
                    Why::UnsupportedParameter,
                    "the relay always verifies the endpoint's certificate; it will not send credentials and logs to a server it cannot authenticate",
                    "remove it; for a private CA (a proxy, LocalStack) give its PEM bundle in the output's tls_ca_file",
                );
            }
        }
    }

    /// How each record is written: newline, data key, compression.
    pub(super) fn firehose_records(&mut self, ps: &mut Params<'_>, sec: &mut Section) {
        if let Some(p) = ps.take("append_new_line") {
            if let Some(b) = self.boolean(p) {
                sec.set("append_new_line", b);
            }
        }
        self.copy_string(ps, "data_key", sec, "data_key");
        if let Some(p) = ps.take("compression") {
            match p.value.literal().as_deref().map(str::trim) {
                Some("gzip") => sec.string("compression", "gzip"),
                Some("" | "none") => {}
                _ => self.finding(
                    &p.pos,
                    "compression",
                    Why::UnsupportedParameter,
                    "the relay compresses Firehose records with gzip only (zlib is a different format for the consumer)",
                    "use `compression gzip` and make the consumer read gzip, or remove it",
                ),
            }
        }
    }

    /// Parameters the relay handles its own way (record size, dropping after retries,
    /// backoff, the plugin's debugging switches): warnings, or findings where the difference
    /// changes what is delivered.
    pub(super) fn firehose_differences(&mut self, ps: &mut Params<'_>) {
        if let Some(p) = ps.take("max_record_size") {
            if let Some(n) = self.size(p) {
                if n < FirehoseConfig::MAX_RECORD_BYTES as u64 {
                    self.finding(
                        &p.pos,
                        "max_record_size",
                        Why::UnsupportedParameter,
                        "the relay's per-record limit is Firehose's own (1,024,000 bytes); a smaller one cannot be set on the output",
                        "remove it, or set record_size_limit on the forward source",
                    );
                } else {
                    self.warn(&p.pos, "max_record_size: the relay dead-letters records over Firehose's 1,024,000 bytes (the plugin logs and drops them)");
                }
            }
        }
        if let Some(p) = ps.take("drop_failed_records_after_batch_request_retries") {
            if self.boolean(p) != Some(false) {
                self.warn(&p.pos, "drop_failed_records_after_batch_request_retries: the relay never drops records after retries_on_batch_request; they go back to the buffer and are retried on the chunk's schedule (retry_timeout, retry_max_times), then dead-lettered");
            }
        }
        if let Some(p) = ps.take("reset_backoff_if_success") {
            if self.boolean(p) == Some(false) {
                self.warn(&p.pos, "reset_backoff_if_success false is not converted: the relay paces itself (adaptive_pacing) instead");
            }
        }
        self.ignored(
            ps.take("monitor_num_of_batch_request_retries"),
            "the relay counts resends in its own metrics",
        );
        self.ignored(
            ps.take("log_truncate_max_size"),
            "the relay logs no record contents",
        );
        self.ignored(
            ps.take("debug"),
            "set RUST_LOG=firehose_relay=debug instead",
        );
        if let Some(p) = ps.take("chomp_record") {
            if self.boolean(p) == Some(true) {
                self.finding(&p.pos, "chomp_record", Why::UnsupportedParameter, "the relay's JSON records have no trailing newline to strip; this v2 compatibility switch has no equivalent", "remove it");
            }
        }
        if let Some(p) = ps.take("use_aws_cli_credential") {
            self.finding(
                &p.pos,
                "use_aws_cli_credential",
                Why::UnsupportedParameter,
                "the relay does not run the AWS CLI",
                "remove it; the default chain reads the same profile files",
            );
        }
    }

    /// `<inject>`: adding time and tag fields; only an empty section converts.
    pub(super) fn inject(&mut self, d: &Directive) {
        for c in d.children.iter().filter(|c| c.name == "inject") {
            if c.params.is_empty() && c.children.is_empty() {
                continue;
            }
            self.finding(
                &c.pos,
                "<inject>",
                Why::UnsupportedParameter,
                "the relay does not add time, tag or host fields to records",
                "add the fields on the client (fluent-bit's record_modifier, the application), or remove the section",
            );
        }
    }
}

/// The chunk placeholders written in a value (what the environment gives is not looked at).
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Placeholders {
    /// `${tag}` or `${tag[N]}`.
    pub(super) tag: bool,
    /// A `%` (strftime).
    pub(super) time: bool,
    /// Any other `${...}`: record-field keys, `${chunk_id}`.
    pub(super) other: Vec<String>,
}

impl Placeholders {
    pub(super) fn of(value: &Value) -> Placeholders {
        let mut found = Placeholders::default();
        for s in &value.segments {
            let Segment::Text(t) = s else { continue };
            found.time |= t.contains('%');
            let mut rest = t.as_str();
            while let Some(i) = rest.find("${") {
                let at = &rest[i..];
                if let Some(n) = placeholder_len(at) {
                    found.tag = true;
                    rest = &at[n..];
                } else {
                    let n = at.find('}').map_or(at.len(), |e| e + 1);
                    found.other.push(at[..n].to_owned());
                    rest = &at[n..];
                }
            }
        }
        found
    }
}
