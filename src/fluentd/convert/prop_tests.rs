//! For configs generated from the supported subset: the relay loads the same effective
//! configuration from the fluent.conf (converted in memory, what `run` does), from the TOML
//! `convert` writes, and from TOML written independently here from the same model. The last
//! comparison is what makes the test able to fail: a converter that drops or misreads a
//! parameter loads "consistently" wrong through the first two paths, but not through the third.

use std::fmt::Write as _;
use std::path::Path;

use proptest::prelude::*;

use crate::config::{Config, ConfigSource};

#[derive(Debug, Clone)]
enum Source {
    Forward {
        port: u16,
        bind: &'static str,
        skip_invalid_event: Option<bool>,
        deny_keepalive: Option<bool>,
        add_tag_prefix: Option<String>,
        chunk_size_limit_kib: Option<u32>,
        shared_key: Option<String>,
    },
    Sample {
        tag: String,
        rate: u32,
        size: u32,
    },
}

#[derive(Debug, Clone)]
struct Buffer {
    file: Option<bool>,
    flush_interval_s: Option<u32>,
    chunk_limit_kib: Option<u32>,
    flush_thread_count: Option<u32>,
    retry_max_times: Option<u32>,
    retry_forever: Option<bool>,
    overflow_action: Option<&'static str>,
    /// `<buffer tag>`.
    tag: bool,
    /// `<buffer time>` and its parameters.
    time: Option<TimeKey>,
    /// `time` written before `tag`.
    time_first: bool,
    /// `flush_mode` as written (`default` too).
    flush_mode: Option<&'static str>,
}

#[derive(Debug, Clone)]
struct TimeKey {
    /// As written, and in seconds.
    timekey: (&'static str, u32),
    wait_s: Option<u32>,
    use_utc: Option<bool>,
    zone: Option<&'static str>,
}

impl Buffer {
    /// The flush mode Fluentd takes: `default` (or none) is `lazy` with a time key.
    fn effective_mode(&self) -> Option<&'static str> {
        match self.flush_mode {
            Some("default") | None if self.time.is_some() => Some("lazy"),
            Some("default") => Some("interval"),
            m => m,
        }
    }

    /// The chunk keys, in the order the generated `<buffer ARG>` writes them.
    fn keys(&self) -> Vec<&'static str> {
        let mut keys = Vec::new();
        if self.tag {
            keys.push("tag");
        }
        if self.time.is_some() {
            if self.time_first {
                keys.insert(0, "time");
            } else {
                keys.push("time");
            }
        }
        keys
    }

    /// `<buffer ARG>`.
    fn arg(&self) -> String {
        self.keys().join(", ")
    }
}

/// Which fluent-plugin-kinesis output: they share the parameters modelled here.
#[derive(Debug, Clone, Copy)]
enum Kind {
    Firehose,
    Streams,
    Aggregated,
}

impl Kind {
    /// (`@type`, its stream parameter) in fluent.conf.
    fn fluent(self) -> (&'static str, &'static str) {
        match self {
            Kind::Firehose => ("kinesis_firehose", "delivery_stream_name"),
            Kind::Streams => ("kinesis_streams", "stream_name"),
            Kind::Aggregated => ("kinesis_streams_aggregated", "stream_name"),
        }
    }

    /// (`type`, its stream key) in the relay's TOML.
    fn relay(self) -> (&'static str, &'static str) {
        match self {
            Kind::Firehose => ("firehose", "delivery_stream"),
            Kind::Streams => ("kinesis_streams", "stream_name"),
            Kind::Aggregated => ("kinesis_streams_aggregated", "stream_name"),
        }
    }
}

#[derive(Debug, Clone)]
enum Output {
    Firehose {
        kind: Kind,
        stream: String,
        append_new_line: Option<bool>,
        retries: Option<u32>,
        max_count: Option<u32>,
        buffer: Option<Buffer>,
    },
    Stdout,
}

fn time_key() -> impl Strategy<Value = TimeKey> {
    (
        prop_oneof![
            Just(("60", 60)),
            Just(("300", 300)),
            Just(("1h", 3600)),
            Just(("1d", 86_400))
        ],
        proptest::option::of(0u32..1200),
        proptest::option::of(any::<bool>()),
        proptest::option::of(prop_oneof![Just("+09:00"), Just("-0500"), Just("UTC")]),
    )
        .prop_map(|(timekey, wait_s, use_utc, zone)| TimeKey {
            timekey,
            wait_s,
            use_utc,
            zone,
        })
}

#[derive(Debug, Clone)]
struct Model {
    /// (source, index into `labels` or none)
    sources: Vec<(Source, Option<usize>)>,
    /// (pattern, label)
    filters: Vec<(String, Option<usize>)>,
    /// (pattern, label, output)
    outputs: Vec<(String, Option<usize>, Output)>,
}

const LABELS: &[&str] = &["@A", "@B"];

fn word() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9]{0,6}"
}

fn pattern() -> impl Strategy<Value = String> {
    prop_oneof![
        Just("**".to_owned()),
        word().prop_map(|w| format!("{w}.**")),
        (word(), word()).prop_map(|(a, b)| format!("{a}.* {b}.**")),
        (word(), word()).prop_map(|(a, b)| format!("{{{a},{b}}}.**")),
    ]
}

fn buffer() -> impl Strategy<Value = Buffer> {
    (
        proptest::option::of(any::<bool>()),
        proptest::option::of(1u32..600),
        proptest::option::of(64u32..65536),
        proptest::option::of(1u32..16),
        proptest::option::of(0u32..100),
        proptest::option::of(any::<bool>()),
        proptest::option::of(prop_oneof![
            Just("throw_exception"),
            Just("block"),
            Just("drop_oldest_chunk")
        ]),
        (
            any::<bool>(),
            proptest::option::of(time_key()),
            any::<bool>(),
            proptest::option::of(prop_oneof![
                Just("default"),
                Just("interval"),
                Just("immediate"),
                Just("lazy")
            ]),
        ),
    )
        .prop_map(
            |(file, fi, cl, ftc, rmt, rf, oa, (tag, time, time_first, flush_mode))| {
                let mut b = Buffer {
                    file,
                    flush_interval_s: fi,
                    chunk_limit_kib: cl,
                    flush_thread_count: ftc,
                    retry_max_times: rmt,
                    retry_forever: rf,
                    overflow_action: oa,
                    tag,
                    time,
                    time_first,
                    flush_mode,
                };
                // Fluentd refuses (or ignores) a flush_interval the mode does not use.
                if b.effective_mode().is_some_and(|m| m != "interval") {
                    b.flush_interval_s = None;
                }
                b
            },
        )
}

fn output() -> impl Strategy<Value = Output> {
    prop_oneof![
        3 => (
            "[a-zA-Z0-9_.-]{1,20}",
            proptest::option::of(any::<bool>()),
            proptest::option::of(0u32..20),
            proptest::option::of(1u32..=500),
            proptest::option::of(buffer()),
            proptest::option::of(prop_oneof![Just("${tag}"), Just("${tag[0]}"), Just("${tag[-1]}")]),
            proptest::option::of(prop_oneof![Just("%Y%m%d"), Just("%Y-%m-%d-%H")]),
            prop_oneof![2 => Just(Kind::Firehose), 1 => Just(Kind::Streams), 1 => Just(Kind::Aggregated)],
        )
            .prop_map(|(mut stream, append_new_line, retries, max_count, buffer, tag_ph, time_ph, kind)| {
                // Placeholders only with their chunk key (without it the conversion is refused).
                let keys = buffer.as_ref().map_or((false, false), |b| (b.tag, b.time.is_some()));
                if let (Some(p), true) = (tag_ph, keys.0) {
                    stream = format!("{stream}-{p}");
                }
                if let (Some(p), true) = (time_ph, keys.1) {
                    stream = format!("{stream}-{p}");
                }
                Output::Firehose {
                    kind,
                    stream,
                    append_new_line,
                    retries,
                    max_count,
                    buffer,
                }
            }),
        1 => Just(Output::Stdout),
    ]
}

fn source() -> impl Strategy<Value = Source> {
    prop_oneof![
        (
            1024u16..65535,
            prop_oneof![Just("0.0.0.0"), Just("127.0.0.1"), Just("::")],
            proptest::option::of(any::<bool>()),
            proptest::option::of(any::<bool>()),
            proptest::option::of(word()),
            proptest::option::of(1u32..65536),
            proptest::option::of("[a-zA-Z0-9]{1,16}"),
        )
            .prop_map(|(port, bind, sie, dk, prefix, csl, key)| Source::Forward {
                port,
                bind,
                skip_invalid_event: sie,
                deny_keepalive: dk,
                add_tag_prefix: prefix,
                chunk_size_limit_kib: csl,
                shared_key: key,
            }),
        (word(), 1u32..100, 1u32..10).prop_map(|(tag, rate, size)| Source::Sample {
            tag,
            rate,
            size
        }),
    ]
}

fn model() -> impl Strategy<Value = Model> {
    let label = || proptest::option::of(0..LABELS.len());
    (
        proptest::collection::vec((pattern(), label(), output()), 1..5),
        proptest::collection::vec((pattern(), label()), 0..3),
        proptest::collection::vec(
            (source(), any::<proptest::sample::Index>(), any::<bool>()),
            1..4,
        ),
    )
        .prop_map(|(mut outputs, mut filters, sources)| {
            // A source may only name a label some output carries.
            let defined: Vec<usize> = outputs.iter().filter_map(|o| o.1).collect();
            let sources = sources
                .into_iter()
                .map(|(s, i, labelled)| {
                    let l = (labelled && !defined.is_empty()).then(|| *i.get(&defined));
                    (s, l)
                })
                .collect();
            // fluent.conf groups a label's sections in one <label> block: order them so.
            outputs.sort_by_key(|o| o.1);
            filters.sort_by_key(|f| f.1);
            Model {
                sources,
                filters,
                outputs,
            }
        })
}

fn buffer_path(i: usize) -> String {
    format!("/tmp/relay-prop/buf{i}")
}

impl Model {
    fn fluent_conf(&self) -> String {
        let mut s = String::new();
        for (i, (src, label)) in self.sources.iter().enumerate() {
            let _ = writeln!(s, "<source>\n  @id src{i}");
            if let Some(l) = label {
                let _ = writeln!(s, "  @label {}", LABELS[*l]);
            }
            match src {
                Source::Forward {
                    port,
                    bind,
                    skip_invalid_event,
                    deny_keepalive,
                    add_tag_prefix,
                    chunk_size_limit_kib,
                    shared_key,
                } => {
                    let _ = writeln!(s, "  @type forward\n  port {port}\n  bind {bind}");
                    if let Some(b) = skip_invalid_event {
                        let _ = writeln!(s, "  skip_invalid_event {b}");
                    }
                    if let Some(b) = deny_keepalive {
                        let _ = writeln!(s, "  deny_keepalive {b}");
                    }
                    if let Some(p) = add_tag_prefix {
                        let _ = writeln!(s, "  add_tag_prefix {p}");
                    }
                    if let Some(k) = chunk_size_limit_kib {
                        let _ = writeln!(s, "  chunk_size_limit {k}k");
                    }
                    if let Some(k) = shared_key {
                        let _ = writeln!(s, "  <security>\n    self_hostname relay\n    shared_key \"{k}\"\n  </security>");
                    }
                }
                Source::Sample { tag, rate, size } => {
                    let _ = writeln!(
                        s,
                        "  @type sample\n  tag {tag}\n  rate {rate}\n  size {size}"
                    );
                }
            }
            s.push_str("</source>\n");
        }
        for group in std::iter::once(None).chain((0..LABELS.len()).map(Some)) {
            let mut body = String::new();
            for (i, (pat, l)) in self.filters.iter().enumerate() {
                if *l == group {
                    let _ = writeln!(
                        body,
                        "<filter {pat}>\n  @type stdout\n  @id filter{i}\n</filter>"
                    );
                }
            }
            for (i, (pat, l, out)) in self.outputs.iter().enumerate() {
                if *l == group {
                    fluent_output(&mut body, i, pat, out);
                }
            }
            match group {
                None => s.push_str(&body),
                Some(l) if !body.is_empty() => {
                    let _ = write!(s, "<label {}>\n{body}</label>\n", LABELS[l]);
                }
                Some(_) => {}
            }
        }
        s
    }

    /// The relay TOML this model means, written from the model without the converter.
    fn expected_toml(&self) -> String {
        let mut s = String::new();
        let first_file = self
            .outputs
            .iter()
            .enumerate()
            .find_map(|(i, (_, _, o))| match o {
                Output::Firehose {
                    buffer:
                        Some(Buffer {
                            file: Some(true), ..
                        }),
                    ..
                } => Some(i),
                _ => None,
            });
        if let Some(i) = first_file {
            let _ = writeln!(s, "data_dir = \"{}\"", buffer_path(i));
        }
        for (i, (src, label)) in self.sources.iter().enumerate() {
            let _ = writeln!(s, "[sources.src{i}]");
            if let Some(l) = label {
                let _ = writeln!(s, "label = \"{}\"", LABELS[*l]);
            }
            match src {
                Source::Forward {
                    port,
                    bind,
                    skip_invalid_event,
                    deny_keepalive,
                    add_tag_prefix,
                    chunk_size_limit_kib,
                    shared_key,
                } => {
                    let host = if bind.contains(':') {
                        format!("[{bind}]")
                    } else {
                        (*bind).to_owned()
                    };
                    let _ = writeln!(
                        s,
                        "type = \"forward\"\nlisten = \"{host}:{port}\"\nheartbeat = true"
                    );
                    if let Some(b) = skip_invalid_event {
                        let _ = writeln!(s, "skip_invalid_event = {b}");
                    }
                    if let Some(b) = deny_keepalive {
                        let _ = writeln!(s, "deny_keepalive = {b}");
                    }
                    if let Some(p) = add_tag_prefix {
                        let _ = writeln!(s, "add_tag_prefix = \"{p}\"");
                    }
                    if let Some(k) = chunk_size_limit_kib {
                        let _ = writeln!(s, "message_length_limit = {}", u64::from(*k) << 10);
                    }
                    if let Some(k) = shared_key {
                        let _ = writeln!(s, "[sources.src{i}.security]\nshared_key = \"{k}\"\nself_hostname = \"relay\"");
                    }
                }
                Source::Sample { tag, rate, size } => {
                    let _ = writeln!(
                        s,
                        "type = \"sample\"\ntag = \"{tag}\"\nrate = {rate}.0\nsize = {size}"
                    );
                }
            }
        }
        for (i, (pat, l)) in self.filters.iter().enumerate() {
            let _ = writeln!(
                s,
                "[filters.filter{i}]\ntype = \"stdout\"\nmatch = \"{pat}\""
            );
            if let Some(l) = l {
                let _ = writeln!(s, "label = \"{}\"", LABELS[*l]);
            }
        }
        for (i, (pat, l, out)) in self.outputs.iter().enumerate() {
            let _ = writeln!(s, "[outputs.out{i}]\nmatch = \"{pat}\"");
            if let Some(l) = l {
                let _ = writeln!(s, "label = \"{}\"", LABELS[*l]);
            }
            match out {
                Output::Stdout => s.push_str("type = \"stdout\"\n"),
                Output::Firehose {
                    kind,
                    stream,
                    append_new_line,
                    retries,
                    max_count,
                    buffer,
                } => {
                    let (ty, key) = kind.relay();
                    let _ = writeln!(
                        s,
                        "type = \"{ty}\"\nregion = \"eu-west-1\"\n{key} = \"{stream}\""
                    );
                    if let Some(b) = append_new_line {
                        let _ = writeln!(s, "append_new_line = {b}");
                    }
                    if let Some(r) = retries {
                        let _ = writeln!(s, "retries_on_batch_request = {r}");
                    }
                    // The aggregated output packs its own calls: the count is not converted.
                    if let (Some(m), false) = (max_count, matches!(kind, Kind::Aggregated)) {
                        let _ = writeln!(s, "max_records_per_call = {m}");
                    }
                    if let Some(b) = buffer {
                        let _ = writeln!(s, "[outputs.out{i}.buffer]");
                        if let Some(f) = b.file {
                            let _ = writeln!(s, "type = \"{}\"", if f { "file" } else { "memory" });
                        }
                        if let Some(v) = b.flush_interval_s {
                            let _ = writeln!(s, "flush_interval = \"{v}s\"");
                        }
                        if let Some(v) = b.chunk_limit_kib {
                            let _ = writeln!(s, "chunk_limit_size = {}", u64::from(v) << 10);
                        }
                        if let Some(v) = b.flush_thread_count {
                            let _ = writeln!(s, "flush_thread_count = {v}");
                        }
                        if let Some(v) = b.retry_max_times {
                            let _ = writeln!(s, "retry_max_times = {v}");
                        }
                        if let Some(v) = b.retry_forever {
                            let _ = writeln!(s, "retry_forever = {v}");
                        }
                        if let Some(v) = b.overflow_action {
                            let _ = writeln!(s, "overflow_action = \"{v}\"");
                        }
                        expected_keys(&mut s, b);
                    }
                }
            }
        }
        s
    }
}

fn fluent_output(s: &mut String, i: usize, pat: &str, out: &Output) {
    let _ = writeln!(s, "<match {pat}>\n  @id out{i}");
    match out {
        Output::Stdout => s.push_str("  @type stdout\n  <format>\n    @type json\n  </format>\n"),
        Output::Firehose {
            kind,
            stream,
            append_new_line,
            retries,
            max_count,
            buffer,
        } => {
            let (ty, key) = kind.fluent();
            let _ = writeln!(s, "  @type {ty}\n  region eu-west-1\n  {key} {stream}");
            if let Some(b) = append_new_line {
                let _ = writeln!(s, "  append_new_line {b}");
            }
            if let Some(r) = retries {
                let _ = writeln!(s, "  retries_on_batch_request {r}");
            }
            if let Some(m) = max_count {
                let _ = writeln!(s, "  batch_request_max_count {m}");
            }
            if let Some(b) = buffer {
                let _ = writeln!(s, "  <buffer {}>", b.arg());
                match b.file {
                    Some(true) => {
                        let _ = writeln!(s, "    @type file\n    path {}", buffer_path(i));
                    }
                    Some(false) => s.push_str("    @type memory\n"),
                    None => {}
                }
                if let Some(v) = b.flush_interval_s {
                    let _ = writeln!(s, "    flush_interval {v}");
                }
                if let Some(v) = b.chunk_limit_kib {
                    let _ = writeln!(s, "    chunk_limit_size {v}k");
                }
                if let Some(v) = b.flush_thread_count {
                    let _ = writeln!(s, "    flush_thread_count {v}");
                }
                if let Some(v) = b.retry_max_times {
                    let _ = writeln!(s, "    retry_max_times {v}");
                }
                if let Some(v) = b.retry_forever {
                    let _ = writeln!(s, "    retry_forever {v}");
                }
                if let Some(v) = b.overflow_action {
                    let _ = writeln!(s, "    overflow_action {v}");
                }
                if let Some(m) = b.flush_mode {
                    let _ = writeln!(s, "    flush_mode {m}");
                }
                if let Some(t) = &b.time {
                    let _ = writeln!(s, "    timekey {}", t.timekey.0);
                    if let Some(w) = t.wait_s {
                        let _ = writeln!(s, "    timekey_wait {w}");
                    }
                    if let Some(u) = t.use_utc {
                        let _ = writeln!(s, "    timekey_use_utc {u}");
                    }
                    if let Some(z) = t.zone {
                        let _ = writeln!(s, "    timekey_zone {z}");
                    }
                }
                s.push_str("  </buffer>\n");
            }
        }
    }
    s.push_str("</match>\n");
}

/// The relay's chunk keys, `timekey*` and `flush_mode` for `b`, written from the model.
fn expected_keys(s: &mut String, b: &Buffer) {
    let keys: Vec<String> = b.keys().iter().map(|k| format!("{k:?}")).collect();
    if !keys.is_empty() {
        let _ = writeln!(s, "chunk_keys = [{}]", keys.join(", "));
    }
    if let Some(m) = b.effective_mode() {
        let _ = writeln!(s, "flush_mode = \"{m}\"");
    }
    if let Some(t) = &b.time {
        let _ = writeln!(s, "timekey = \"{}s\"", t.timekey.1);
        if let Some(w) = t.wait_s {
            let _ = writeln!(s, "timekey_wait = \"{w}s\"");
        }
        match (t.use_utc, t.zone) {
            (Some(true), _) => s.push_str("timekey_use_utc = true\n"),
            (_, Some(z)) => {
                let _ = writeln!(s, "timekey_zone = \"{z}\"");
            }
            _ => {}
        }
    }
}

fn load(path: &Path) -> Config {
    let mut c = Config::load(&ConfigSource {
        file: Some(path.to_owned()),
    })
    .unwrap_or_else(|e| {
        panic!(
            "{}: {e}\n{}",
            path.display(),
            std::fs::read_to_string(path).unwrap_or_default()
        )
    });
    c.fluentd_warnings.clear();
    c
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 64,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    #[test]
    fn fluent_conf_and_its_conversion_load_the_same_effective_config(m in model()) {
        let dir = tempfile::tempdir().unwrap();
        let fluent = dir.path().join("fluent.conf");
        std::fs::write(&fluent, m.fluent_conf()).unwrap();
        let conversion = super::convert_file(&fluent).unwrap();
        prop_assert!(conversion.is_faithful(), "{}\n{}", conversion.report(), m.fluent_conf());
        let converted = dir.path().join("converted.toml");
        std::fs::write(&converted, &conversion.toml).unwrap();
        let expected = dir.path().join("expected.toml");
        std::fs::write(&expected, m.expected_toml()).unwrap();

        let from_fluent = load(&fluent);
        let from_converted = load(&converted);
        let from_expected = load(&expected);
        prop_assert_eq!(&from_fluent, &from_converted);
        prop_assert_eq!(&from_fluent.order, &from_converted.order);
        prop_assert_eq!(&from_fluent, &from_expected, "{}\n---\n{}", m.fluent_conf(), conversion.toml);
        prop_assert_eq!(&from_fluent.order, &from_expected.order);
    }
}

/// A piece of a fluent.conf-like text: parameters, or a section of them with nested sections;
/// the names and plugin types the converter knows, values of every shape (some wrong).
fn line() -> impl Strategy<Value = String> {
    // A section tag and the `@type` line it usually has.
    let tags = prop_oneof![
        Just(("source", "@type forward")),
        Just(("source", "@type sample\ntag a.b")),
        Just(("source", "@type tail")),
        Just((
            "match **",
            "@type kinesis_firehose\nregion r\ndelivery_stream_name s"
        )),
        Just(("match app.**", "@type file\npath /tmp/x")),
        Just(("match fluent.**", "@type stdout")),
        Just(("filter **", "@type stdout")),
        Just(("label @X", "")),
        Just(("label @ERROR", "")),
        Just(("buffer", "@type file\npath /tmp/b")),
        Just(("buffer tag", "")),
        Just(("buffer tag, time", "timekey 1h")),
        Just(("buffer time", "timekey_zone Asia/Tokyo")),
        Just(("buffer $.x, tag", "")),
        Just(("security", "shared_key k")),
        Just(("user", "username u\npassword p")),
        Just(("client", "network 10.0.0.0/8")),
        Just(("transport tls", "cert_path /c\nprivate_key_path /k")),
        Just(("format", "@type json")),
        Just(("inject", "")),
        Just(("web_identity_credentials", "role_arn arn:aws:iam::1:role/r")),
        Just(("assume_role_credentials", "")),
        Just(("system", "")),
    ];
    let keys = prop_oneof![
        Just("@type"),
        Just("@id"),
        Just("@label"),
        Just("port"),
        Just("bind"),
        Just("tag"),
        Just("rate"),
        Just("sample"),
        Just("shared_key"),
        Just("user_auth"),
        Just("allow_anonymous_source"),
        Just("network"),
        Just("host"),
        Just("username"),
        Just("password"),
        Just("cert_path"),
        Just("private_key_path"),
        Just("client_cert_auth"),
        Just("delivery_stream_name"),
        Just("region"),
        Just("compression"),
        Just("ssl_verify_peer"),
        Just("batch_request_max_size"),
        Just("path"),
        Just("flush_interval"),
        Just("chunk_limit_size"),
        Just("queue_limit_length"),
        Just("flush_mode"),
        Just("timekey"),
        Just("timekey_wait"),
        Just("timekey_use_utc"),
        Just("timekey_zone"),
        Just("stream_name"),
        Just("duration_seconds"),
        Just("aws_key_id"),
        Just("aws_sec_key"),
    ];
    let values = prop_oneof![
        Just(String::new()),
        Just("forward".to_owned()),
        Just("sample".to_owned()),
        Just("kinesis_firehose".to_owned()),
        Just("file".to_owned()),
        Just("json".to_owned()),
        Just("true".to_owned()),
        Just("1.5m".to_owned()),
        Just("\"#{ENV['X'] || 'd'}\"".to_owned()),
        Just("\"#{Time.now}\"".to_owned()),
        Just("{\"k\":[1,null]}".to_owned()),
        Just("[{\"a\":1},{\"b\":2}]".to_owned()),
        Just("logs-${tag[1]}-%Y%m%d".to_owned()),
        Just("${chunk_id}-${tag}".to_owned()),
        Just("+09:00".to_owned()),
        "[ -~]{0,12}",
    ];
    let param = (keys, values).prop_map(|(k, v)| format!("{k} {v}"));
    let leaf = proptest::collection::vec(param.clone(), 0..6).prop_map(|ps| ps.join("\n"));
    // Balanced sections nested up to 3 deep, so that most texts parse.
    leaf.prop_recursive(3, 64, 6, move |inner| {
        (
            tags.clone(),
            proptest::collection::vec(param.clone(), 0..6),
            proptest::collection::vec(inner, 0..4),
        )
            .prop_map(|((t, ty), ps, children)| {
                let name = t.split(' ').next().unwrap_or(t);
                format!(
                    "<{t}>\n{ty}\n{}\n{}\n</{name}>",
                    ps.join("\n"),
                    children.join("\n")
                )
            })
    })
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        failure_persistence: None,
        ..ProptestConfig::default()
    })]

    /// Whatever parses converts without panicking, into valid TOML, with every finding inside
    /// the text (the fuzz target checks the same on arbitrary bytes).
    #[test]
    fn any_parsed_config_converts_to_valid_toml(sections in proptest::collection::vec(line(), 1..6)) {
        let text = sections.join("\n");
        let lines: Vec<&str> = text.lines().collect();
        if let Ok(parsed) = crate::fluentd::parse_str(&text, "fluent.conf") {
            let c = super::convert(&parsed);
            prop_assert!(c.toml.parse::<toml::Table>().is_ok(), "{}\n---\n{}", text, c.toml);
            let n = u32::try_from(lines.len() + 1).unwrap();
            for f in &c.findings {
                prop_assert!(f.pos.line >= 1 && f.pos.line <= n, "{}", f);
            }
        }
    }
}
