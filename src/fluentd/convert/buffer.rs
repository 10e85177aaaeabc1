//! `<buffer>` of an output: Fluentd's parameters with the relay's same-named keys; `path` of a
//! file buffer becomes `data_dir`.

use std::path::Path;

use super::params::Params;
use super::render::Section;
use super::{Cx, Why};
use crate::fluentd::syntax::Directive;
use crate::primitives::{ByteSize, ConfigDuration};

/// Durations, sizes and booleans the relay's buffer has under Fluentd's own names.
const DURATIONS: &[&str] = &[
    "flush_interval",
    "flush_thread_interval",
    "flush_thread_burst_interval",
    "retry_wait",
    "retry_max_interval",
    "retry_timeout",
];
const SIZES: &[&str] = &["chunk_limit_size", "total_limit_size"];
const BOOLS: &[&str] = &["flush_at_shutdown", "retry_randomize", "retry_forever"];
const COUNTS: &[&str] = &[
    "chunk_limit_records",
    "flush_thread_count",
    "retry_max_times",
];

impl Cx {
    /// Converts `buffer` (or notes the defaults when there is none) into `out.buffer`.
    pub(super) fn buffer(&mut self, d: &Directive, buffer: Option<&Directive>, out: &mut Section) {
        let Some(b) = buffer else {
            self.default_buffer_warning(d, None);
            return;
        };
        let mut ps = Params::new(b);
        let mut sec = Section::new(&b.pos, b.describe(), format!("{}.buffer", out.path));
        let ty = self.buffer_kind(b, &mut ps, &mut sec);
        self.same_named(&mut ps, &mut sec);
        self.queue_limit_length(&mut ps, &mut sec, ty.as_deref());
        self.buffer_unsupported(b, &mut ps);
        self.leftovers(&ps, "the relay's buffer has no such parameter");
        self.default_buffer_warning(d, Some(&sec));
        if !sec.is_empty() {
            out.children.push(sec);
        }
    }

    /// Chunk keys (reported), `@type` and a file buffer's `path` (the relay's `data_dir`).
    /// Returns the `@type`.
    fn buffer_kind(
        &mut self,
        b: &Directive,
        ps: &mut Params<'_>,
        sec: &mut Section,
    ) -> Option<String> {
        let keys: Vec<&str> = b
            .arg
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .collect();
        if !keys.is_empty() {
            self.finding(
                &b.pos,
                &format!("<buffer {}>", keys.join(", ")),
                Why::UnsupportedParameter,
                "chunk keys are not supported yet: the relay keeps one sequence of chunks per output, not one per tag, time or record key",
                "remove the chunk keys (and placeholders that need them); write one <match> per tag or stream instead",
            );
        }
        let ty = ps.plugin_type();
        match ty.as_deref() {
            Some(t @ ("file" | "memory")) => sec.string("type", t),
            None => {}
            Some(other) => self.finding(
                &b.pos,
                &format!("<buffer> @type {other}"),
                Why::UnsupportedPlugin,
                "the relay's buffers are file (durable) and memory",
                "use @type file or memory",
            ),
        }
        if let Some(p) = ps.take("path") {
            if ty.as_deref() == Some("file") {
                if let Some(dir) = self.string(p) {
                    self.data_dir_from(&p.pos, &dir);
                }
            } else {
                self.warn(&p.pos, "path is not converted: only a file buffer has one");
            }
        }
        ty
    }

    /// The parameters the relay's buffer has under Fluentd's names.
    fn same_named(&mut self, ps: &mut Params<'_>, sec: &mut Section) {
        for key in DURATIONS {
            if let Some(p) = ps.take(key) {
                if let Some(t) = self.time(p) {
                    sec.string(key, ConfigDuration(t).to_string());
                }
            }
        }
        for key in SIZES {
            if let Some(p) = ps.take(key) {
                if let Some(n) = self.size(p) {
                    sec.string(key, ByteSize(n).to_string());
                }
            }
        }
        for key in BOOLS {
            if let Some(p) = ps.take(key) {
                if let Some(v) = self.boolean(p) {
                    sec.set(key, v);
                }
            }
        }
        for key in COUNTS {
            if let Some(p) = ps.take(key) {
                if let Some(n) = self.count::<u32>(p) {
                    sec.set(key, i64::from(n));
                }
            }
        }
        if let Some(p) = ps.take("retry_exponential_backoff_base") {
            if let Some(f) = self.float(p) {
                sec.set("retry_exponential_backoff_base", f);
            }
        }
        if let Some(p) = ps.take("flush_mode") {
            if let Some(m) = self.choice(p, &["default", "interval", "immediate", "lazy"]) {
                // Without a time chunk key, Fluentd's `default` is `interval`.
                let m = if m == "default" {
                    "interval".to_owned()
                } else {
                    m
                };
                sec.string("flush_mode", m);
            }
        }
        if let Some(p) = ps.take("overflow_action") {
            if let Some(a) = self.choice(p, &["throw_exception", "block", "drop_oldest_chunk"]) {
                sec.string("overflow_action", a);
            }
        }
        if let Some(p) = ps.take("retry_type") {
            if let Some(t) = self.choice(p, &["exponential_backoff", "periodic"]) {
                sec.string("retry_type", t);
            }
        }
    }

    /// Time chunk keys (reported), parameters without a meaning here (ignored with a note)
    /// and subsections (reported).
    fn buffer_unsupported(&mut self, b: &Directive, ps: &mut Params<'_>) {
        for key in ["timekey", "timekey_wait", "timekey_use_utc", "timekey_zone"] {
            if let Some(p) = ps.take(key) {
                self.finding(
                    &p.pos,
                    key,
                    Why::UnsupportedParameter,
                    "time chunk keys are not supported yet",
                    "remove it (chunks are closed by flush_interval and chunk_limit_size)",
                );
            }
        }
        self.ignored(
            ps.take("queued_chunks_limit_size"),
            "the relay queues a chunk when it is due and its flush workers take them in order",
        );
        self.ignored(
            ps.take("chunk_full_threshold"),
            "the relay closes a chunk when the next record would not fit",
        );
        self.ignored(
            ps.take("compress"),
            "the relay's buffer stores chunks uncompressed",
        );
        self.ignored(
            ps.take("delayed_commit_timeout"),
            "the relay commits each chunk when its delivery returns",
        );
        self.ignored(
            ps.take("retry_secondary_threshold"),
            "the relay has no secondary output",
        );
        self.ignored(ps.take("disable_chunk_backup"), "chunks the relay can never deliver are dead-lettered (see `firehose-relay dead-letter list`)");
        for c in &b.children {
            self.finding(
                &c.pos,
                &c.describe(),
                Why::UnsupportedParameter,
                "<buffer> has no subsections",
                "remove it",
            );
        }
    }

    /// `queue_limit_length` (v0.12): Fluentd sets `total_limit_size` to it times the chunk
    /// size when `total_limit_size` is not given.
    fn queue_limit_length(&mut self, ps: &mut Params<'_>, sec: &mut Section, ty: Option<&str>) {
        let Some(p) = ps.take("queue_limit_length") else {
            return;
        };
        let Some(n) = self.count::<u32>(p) else {
            return;
        };
        if sec.has("total_limit_size") {
            self.warn(
                &p.pos,
                "queue_limit_length is not converted: total_limit_size is given",
            );
            return;
        }
        let chunk = match ps.take("chunk_limit_size").and_then(|c| c.value.literal()) {
            Some(text) => crate::fluentd::types::size(&text).unwrap_or(0),
            // Fluentd's defaults: 8m in memory, 256m on file.
            None if ty == Some("file") => 256 << 20,
            None => 8 << 20,
        };
        match chunk.checked_mul(u64::from(n)).filter(|t| *t > 0) {
            Some(total) => {
                sec.string("total_limit_size", ByteSize(total).to_string());
                self.warn(
                    &p.pos,
                    format!("queue_limit_length {n} is converted as Fluentd does: total_limit_size = {n} × chunk_limit_size = {}", ByteSize(total)),
                );
            }
            None => self.finding(
                &p.pos,
                "queue_limit_length",
                Why::InvalidValue,
                "out of range",
                "write total_limit_size instead",
            ),
        }
    }

    /// `path` of a file buffer: the first one becomes `data_dir`; the relay keeps every
    /// file buffer in one database there.
    fn data_dir_from(&mut self, pos: &crate::fluentd::syntax::Pos, written: &str) {
        // Fluentd takes a directory, or a file pattern with `*` whose directory holds the chunks.
        let dir = if written.contains('*') {
            Path::new(written)
                .parent()
                .map(|p| p.display().to_string())
                .unwrap_or_default()
        } else {
            written.to_owned()
        };
        self.warn(
            pos,
            format!("buffer path: the relay keeps its own database in `{dir}` and does not read Fluentd's chunk files; let Fluentd flush its buffer (flush_at_shutdown) before switching"),
        );
        match &self.data_dir {
            None => self.data_dir = Some((dir, pos.clone())),
            Some((first, _)) if *first == dir => {}
            Some((first, at)) => {
                let message = format!(
                    "buffer path: every file buffer of the relay lives in data_dir `{first}` (from {at}); this output's chunks go there too"
                );
                self.warn(pos, message);
            }
        }
    }

    /// One warning per output naming the relay defaults that differ from Fluentd's for what
    /// the fluent.conf leaves out.
    fn default_buffer_warning(&mut self, d: &Directive, sec: Option<&Section>) {
        let has = |k: &str| sec.is_some_and(|s| s.has(k));
        let fluentd_file = sec.is_some_and(|s| s.get_str("type") == Some("file"));
        let relay_file = sec.is_none_or(|s| s.get_str("type") != Some("memory"));
        let mut differ = Vec::new();
        if !has("type") {
            differ.push("type file (Fluentd: memory): durable across restarts, under data_dir");
        }
        if !has("chunk_limit_size") {
            differ.push("chunk_limit_size 1m (Fluentd: 8m memory, 256m file)");
        }
        if !has("total_limit_size") && relay_file {
            differ.push("total_limit_size 8g (Fluentd: 512m memory, 64g file)");
        }
        if !has("flush_at_shutdown") && fluentd_file {
            differ.push("flush_at_shutdown true (Fluentd: false for file)");
        }
        if !differ.is_empty() {
            self.warn(
                &d.pos,
                format!(
                    "{}: buffer parameters not given take the relay's defaults: {}",
                    d.describe(),
                    differ.join("; ")
                ),
            );
        }
    }
}
