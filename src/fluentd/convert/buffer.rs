//! `<buffer>` of an output: Fluentd's parameters with the relay's same-named keys; `path` of a
//! file buffer becomes `data_dir`; the chunk keys `tag` and `time` (`<buffer tag, time>`) with
//! `timekey*` become `chunk_keys` and the relay's `timekey*`, and `flush_mode` takes Fluentd's
//! default for them (`lazy` with a time key).

use std::path::Path;

use super::params::Params;
use super::render::Section;
use super::{Cx, Why};
use crate::buffer::key::KeyZone;
use crate::fluentd::syntax::Directive;
use crate::primitives::{ByteSize, ConfigDuration};

/// The chunk keys of a `<buffer ARG>` the relay has: `tag` and `time`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(super) struct Keys {
    pub(super) tag: bool,
    pub(super) time: bool,
}

impl Keys {
    /// The keys written in `<buffer ARG>` (none without a `<buffer>`).
    pub(super) fn of(buffer: Option<&Directive>) -> Keys {
        let mut k = Keys::default();
        for key in buffer.map_or(Vec::new(), |b| split_keys(&b.arg)) {
            match key {
                "tag" => k.tag = true,
                "time" => k.time = true,
                _ => {}
            }
        }
        k
    }
}

/// The chunk keys of `<buffer ARG>` as Fluentd splits them: by commas, trimmed.
fn split_keys(arg: &str) -> Vec<&str> {
    arg.split(',')
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .collect()
}

/// Fluentd's `CHUNK_KEY_PATTERN`: what a record-field chunk key may be written with.
fn valid_record_key(key: &str) -> bool {
    let body = key.strip_prefix("$.").unwrap_or(key);
    !body.is_empty()
        && !key.starts_with("$[")
        && body
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_.@".contains(c))
}

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
        let keys = self.chunk_keys(b, &mut ps, &mut sec);
        self.same_named(&mut ps, &mut sec);
        self.flush_mode(&mut ps, &mut sec, keys);
        self.queue_limit_length(&mut ps, &mut sec, ty.as_deref());
        self.buffer_unsupported(b, &mut ps);
        self.leftovers(&ps, "the relay's buffer has no such parameter");
        self.default_buffer_warning(d, Some(&sec));
        if !sec.is_empty() {
            out.children.push(sec);
        }
    }

    /// `@type` and a file buffer's `path` (the relay's `data_dir`). Returns the `@type`.
    fn buffer_kind(
        &mut self,
        b: &Directive,
        ps: &mut Params<'_>,
        sec: &mut Section,
    ) -> Option<String> {
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

    /// Parameters without a meaning here (ignored with a note) and subsections (reported).
    fn buffer_unsupported(&mut self, b: &Directive, ps: &mut Params<'_>) {
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

    /// `<buffer tag, time>`: `tag` and `time` become `chunk_keys` (in the order written, each
    /// once: Fluentd ignores a repeat), with `timekey`, `timekey_wait`, `timekey_use_utc` and
    /// `timekey_zone` when `time` is one of them (Fluentd reads them only then: without it they
    /// are ignored, with a warning). Record-field keys (`$.x`, `key`) are reported.
    fn chunk_keys(&mut self, b: &Directive, ps: &mut Params<'_>, sec: &mut Section) -> Keys {
        let mut keys = Keys::default();
        let mut names: Vec<&str> = Vec::new();
        for key in split_keys(&b.arg) {
            match key {
                "tag" | "time" => {
                    keys.tag |= key == "tag";
                    keys.time |= key == "time";
                    if !names.contains(&key) {
                        names.push(key);
                    }
                }
                k if valid_record_key(k) => self.finding(
                    &b.pos,
                    &format!("<buffer {}> chunk key `{k}`", b.arg.trim()),
                    Why::UnsupportedParameter,
                    "record-field chunk keys are not supported: the relay keeps chunks apart by tag and time only",
                    "remove the key (and its `${...}` placeholder); give records that need their own stream their own tag and <match>, or use `${tag}`",
                ),
                k => self.finding(
                    &b.pos,
                    &format!("<buffer {}> chunk key `{k}`", b.arg.trim()),
                    Why::InvalidValue,
                    "Fluentd refuses it: chunk_keys specification includes invalid char",
                    "chunk keys are tag, time, or record fields ($.a.b)",
                ),
            }
        }
        if !names.is_empty() {
            sec.set(
                "chunk_keys",
                toml::Value::Array(names.iter().map(|n| toml::Value::from(*n)).collect()),
            );
            self.warn(
                &b.pos,
                format!("<buffer {}>: the relay keeps at most {} chunks open per output (max_open_chunks); a new key at that bound closes the oldest open chunk early (queued, never dropped)", b.arg.trim(), crate::buffer::config::DEFAULT_MAX_OPEN_CHUNKS),
            );
        }
        let timekey = ps.take("timekey");
        let wait = ps.take("timekey_wait");
        let utc = ps.take("timekey_use_utc");
        let zone = ps.take("timekey_zone");
        if !keys.time {
            for p in [timekey, wait, utc, zone].into_iter().flatten() {
                self.warn(
                    &p.pos,
                    format!("`{}` is not converted: Fluentd uses it only with `time` in the chunk keys (<buffer time>), and there is none", p.key),
                );
            }
            return keys;
        }
        match timekey {
            None => self.finding(
                &b.pos,
                &format!("<buffer {}>", b.arg.trim()),
                Why::InvalidValue,
                "Fluentd refuses it: <buffer ...> argument includes 'time', but timekey is not configured",
                "add timekey (the length of a time slot, e.g. `timekey 1h`)",
            ),
            Some(p) => {
                if let Some(t) = self.time(p) {
                    if t.as_secs() == 0 || t.subsec_nanos() != 0 {
                        self.finding(
                            &p.pos,
                            "timekey",
                            Why::InvalidValue,
                            "the relay's time slots are whole seconds, at least 1 (Fluentd refuses 0 too)",
                            "write a whole number of seconds, e.g. 1h",
                        );
                    } else {
                        sec.string("timekey", ConfigDuration(t).to_string());
                    }
                }
            }
        }
        if let Some(p) = wait {
            if let Some(t) = self.time(p) {
                sec.string("timekey_wait", ConfigDuration(t).to_string());
            }
        }
        let use_utc = utc.and_then(|p| self.boolean(p)).unwrap_or(false);
        if use_utc {
            sec.set("timekey_use_utc", true);
        }
        if let Some(p) = zone {
            let written = p.value.literal();
            match (use_utc, written) {
                (true, _) => self.warn(
                    &p.pos,
                    "timekey_zone is not converted: timekey_use_utc true wins over it (in Fluentd too)",
                ),
                (false, None) => {
                    self.typed(p, |t| Ok(t.to_owned()));
                }
                (false, Some(z)) => match KeyZone::parse(&z) {
                    Ok(_) => sec.string("timekey_zone", z.trim()),
                    Err(e) => {
                        let named = z.contains('/') || z.trim().chars().all(|c| c.is_ascii_alphabetic());
                        let (why, reason, advice) = if named {
                            (
                                Why::UnsupportedParameter,
                                format!("named time zone `{z}`: the relay has no zone database, it takes fixed offsets only"),
                                "write the zone's offset (timekey_zone +09:00); if the zone has daylight saving time, its offset changes twice a year: use timekey_use_utc true and UTC names instead",
                            )
                        } else {
                            (Why::InvalidValue, e, "write a fixed offset like +09:00 or -0500")
                        };
                        self.finding(&p.pos, "timekey_zone", why, &reason, advice);
                    }
                },
            }
        }
        keys
    }

    /// `flush_mode`, as Fluentd decides it: `default` (or none) is `lazy` with a time chunk
    /// key, `interval` without (the relay's own default is `interval`, so `lazy` is written).
    /// `flush_interval` has no effect unless the mode is `interval`: Fluentd ignores it with a
    /// warning when the mode is its default, and refuses it when the mode is written.
    fn flush_mode(&mut self, ps: &mut Params<'_>, sec: &mut Section, keys: Keys) {
        let written = ps.take("flush_mode");
        let chosen = written.and_then(|p| {
            self.choice(p, &["default", "interval", "immediate", "lazy"])
                .map(|m| (p, m))
        });
        let default = if keys.time { "lazy" } else { "interval" };
        let mode = match &chosen {
            Some((_, m)) if m != "default" => m.as_str(),
            _ => default,
        };
        if mode != "interval" || chosen.is_some() {
            sec.string("flush_mode", mode);
        }
        if mode == "interval" || !sec.has("flush_interval") {
            return;
        }
        let Some(p) = ps.take("flush_interval") else {
            return;
        };
        sec.remove("flush_interval");
        match written {
            Some(w) => self.finding(
                &p.pos,
                "flush_interval",
                Why::InvalidValue,
                &format!("Fluentd refuses it: 'flush_interval' can't be specified when 'flush_mode' is not 'interval' explicitly: '{mode}' (line {})", w.pos.line),
                "remove flush_interval, or use flush_mode interval",
            ),
            None => self.warn(
                &p.pos,
                format!("flush_interval is not converted: Fluentd ignores it because the default flush_mode with a time chunk key is '{mode}' (chunks are flushed timekey_wait after their slot ends); write `flush_mode interval` to flush by age instead"),
            ),
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
