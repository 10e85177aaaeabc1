use super::*;
use crate::fluentd::parse_str;

fn conv(text: &str) -> Conversion {
    convert(&parse_str(text, "fluent.conf").expect("parses"))
}

/// The converted TOML as a table (it must always be valid TOML).
fn table(c: &Conversion) -> toml::Table {
    c.toml
        .parse()
        .unwrap_or_else(|e| panic!("invalid TOML ({e}):\n{}", c.toml))
}

fn at<'t>(t: &'t toml::Table, path: &str) -> &'t toml::Value {
    let mut v: Option<&toml::Value> = None;
    let mut cur = t;
    for key in path.split('.') {
        let next = cur
            .get(key)
            .unwrap_or_else(|| panic!("no `{path}` (at `{key}`) in:\n{t}"));
        if let toml::Value::Table(inner) = next {
            cur = inner;
        }
        v = Some(next);
    }
    v.unwrap()
}

fn subjects(c: &Conversion) -> Vec<(u32, String, Why)> {
    c.findings
        .iter()
        .map(|f| (f.pos.line, f.subject.clone(), f.why))
        .collect()
}

const AGGREGATOR: &str = r##"<source>
  @type forward
  @id in_forward
  port 24225
  bind 127.0.0.1
  chunk_size_limit 16m
  skip_invalid_event false
  add_tag_prefix fwd
  <security>
    self_hostname relay
    shared_key "#{ENV['SHARED_KEY']}"
    user_auth true
    <user>
      username alice
      password 'p@ss'
    </user>
  </security>
</source>

<match fwd.app.**>
  @type kinesis_firehose
  @id firehose
  region eu-west-1
  delivery_stream_name "#{ENV['FIREHOSE_STREAM_NAME'] || 'logs'}"
  append_new_line false
  data_key log
  compression gzip
  retries_on_batch_request 3
  batch_request_max_count 250
  batch_request_max_size 2m
  endpoint https://firehose.eu-west-1.amazonaws.com
  http_proxy http://proxy:3128
  ssl_verify_peer true
  <web_identity_credentials>
    role_arn arn:aws:iam::123456789012:role/relay
    web_identity_token_file /var/run/secrets/eks.amazonaws.com/serviceaccount/token
    role_session_name fluentd
    duration_seconds 1800
  </web_identity_credentials>
  <format>
    @type json
  </format>
  <buffer>
    @type file
    path /var/log/fluent/firehose.*.buffer
    chunk_limit_size 2m
    total_limit_size 4g
    flush_mode interval
    flush_interval 5s
    flush_thread_count 4
    flush_thread_interval 0.5
    flush_at_shutdown true
    overflow_action drop_oldest_chunk
    retry_type periodic
    retry_wait 2s
    retry_max_interval 1m
    retry_timeout 1h
    retry_max_times 10
    retry_randomize false
  </buffer>
</match>
"##;

#[test]
fn the_aggregator_converts_faithfully_parameter_by_parameter() {
    let c = conv(AGGREGATOR);
    assert!(c.is_faithful(), "{}", c.report());
    let t = table(&c);
    assert_eq!(at(&t, "data_dir").as_str(), Some("/var/log/fluent"));
    let s = "sources.in_forward";
    for (key, want) in [
        ("type", "forward"),
        ("listen", "127.0.0.1:24225"),
        ("message_length_limit", "16m"),
        ("add_tag_prefix", "fwd"),
        ("security.shared_key", "${SHARED_KEY}"),
        ("security.self_hostname", "relay"),
    ] {
        assert_eq!(at(&t, &format!("{s}.{key}")).as_str(), Some(want), "{key}");
    }
    assert_eq!(
        at(&t, &format!("{s}.skip_invalid_event")).as_bool(),
        Some(false)
    );
    let users = at(&t, &format!("{s}.security.users")).as_array().unwrap();
    assert_eq!(users[0]["username"].as_str(), Some("alice"));
    assert_eq!(users[0]["password"].as_str(), Some("p@ss"));

    let o = "outputs.firehose";
    for (key, want) in [
        ("type", "firehose"),
        ("match", "fwd.app.**"),
        ("region", "eu-west-1"),
        ("delivery_stream", "${FIREHOSE_STREAM_NAME:-logs}"),
        ("data_key", "log"),
        ("compression", "gzip"),
        ("max_bytes_per_call", "2m"),
        ("endpoint_url", "https://firehose.eu-west-1.amazonaws.com"),
        ("proxy_url", "http://proxy:3128"),
        ("credentials.type", "web_identity"),
        (
            "credentials.role_arn",
            "arn:aws:iam::123456789012:role/relay",
        ),
        ("credentials.role_session_name", "fluentd"),
        ("buffer.type", "file"),
        ("buffer.chunk_limit_size", "2m"),
        ("buffer.total_limit_size", "4g"),
        ("buffer.flush_mode", "interval"),
        ("buffer.flush_interval", "5s"),
        ("buffer.flush_thread_interval", "500ms"),
        ("buffer.overflow_action", "drop_oldest_chunk"),
        ("buffer.retry_type", "periodic"),
        ("buffer.retry_wait", "2s"),
        ("buffer.retry_max_interval", "1m"),
        ("buffer.retry_timeout", "1h"),
    ] {
        assert_eq!(at(&t, &format!("{o}.{key}")).as_str(), Some(want), "{key}");
    }
    for (key, want) in [
        ("retries_on_batch_request", 3),
        ("max_records_per_call", 250),
        ("credentials.duration_seconds", 1800),
        ("buffer.flush_thread_count", 4),
        ("buffer.retry_max_times", 10),
    ] {
        assert_eq!(
            at(&t, &format!("{o}.{key}")).as_integer(),
            Some(want),
            "{key}"
        );
    }
    assert_eq!(
        at(&t, &format!("{o}.append_new_line")).as_bool(),
        Some(false)
    );
    assert_eq!(
        at(&t, &format!("{o}.buffer.retry_randomize")).as_bool(),
        Some(false)
    );
    // A comment above each section names its line.
    assert!(
        c.toml
            .contains("# from fluent.conf:1 <source>\n[sources.in_forward]\n"),
        "{}",
        c.toml
    );
    assert!(c
        .toml
        .contains("# from fluent.conf:20 <match fwd.app.**>\n[outputs.firehose]\n"));
    assert!(c
        .toml
        .contains("# from fluent.conf:13 <user>\n[[sources.in_forward.security.users]]\n"));
}

#[test]
fn what_does_not_convert_is_reported_with_line_reason_and_advice() {
    let c = conv(
        r##"<system>
  workers 4
</system>
<source>
  @type tail
  path /var/log/*.log
</source>
<source>
  @type forward
  linger_timeout 5
  bogus 1
</source>
<match fluent.**>
  @type stdout
</match>
<match app.**>
  @type kinesis_firehose
  delivery_stream_name logs-${tag}-%Y
  region eu-west-1
  ssl_verify_peer false
  compression zlib
  aws_key_id "#{File.read('/key')}"
  aws_sec_key x
  <inject>
    time_key time
  </inject>
  <buffer tag, $.user>
    flush_interval 500ms
  </buffer>
</match>
<match other.**>
  @type s3
</match>
"##,
    );
    assert_eq!(
        subjects(&c),
        vec![
            (2, "<system> workers".into(), Why::UnsupportedParameter),
            (4, "<source> @type tail".into(), Why::UnsupportedPlugin),
            (11, "bogus".into(), Why::UnsupportedParameter),
            (13, "<match fluent.**>".into(), Why::UnsupportedPlugin),
            (18, "delivery_stream_name".into(), Why::InvalidValue),
            (
                20,
                "ssl_verify_peer false".into(),
                Why::UnsupportedParameter
            ),
            (21, "compression".into(), Why::UnsupportedParameter),
            (22, "aws_key_id".into(), Why::UnsupportedParameter),
            (24, "<inject>".into(), Why::UnsupportedParameter),
            (
                27,
                "<buffer tag, $.user> chunk key `$.user`".into(),
                Why::UnsupportedParameter
            ),
            (28, "flush_interval".into(), Why::InvalidValue),
            (
                31,
                "<match other.**> @type s3".into(),
                Why::UnsupportedPlugin
            ),
        ],
        "{}",
        c.report()
    );
    let report = c.report();
    assert!(report.contains("fluent.conf:20: ssl_verify_peer false: unsupported parameter: the relay always verifies"), "{report}");
    assert!(report.contains("tls_ca_file"), "{report}");
    assert!(report.contains("500 minutes"), "{report}");
    assert!(report.contains("`#{File.read('/key')}`"), "{report}");
    // linger_timeout has no effect: a warning, not a finding.
    assert!(
        c.warnings.iter().any(|w| w.pos.line == 10),
        "{:?}",
        c.warnings
    );
    // What converted is still there.
    let t = table(&c);
    assert_eq!(
        at(&t, "outputs.firehose.region").as_str(),
        Some("eu-west-1")
    );
}

#[test]
fn labels_put_their_filters_and_outputs_under_the_label() {
    let c = conv(
        r##"<source>
  @type sample
  tag app.a
  @label @STAGING
</source>
<label @STAGING>
  <filter **>
    @type stdout
  </filter>
  <match **>
    @type stdout
    <format>
      @type json
    </format>
  </match>
</label>
<label @ERROR>
  <match **>
    @type file
    path /var/log/relay/errors
    <format>
      @type json
    </format>
  </match>
</label>
<label @FLUENT_LOG>
  <match **>
    @type stdout
  </match>
</label>
"##,
    );
    assert_eq!(
        subjects(&c),
        vec![(26, "<label @FLUENT_LOG>".into(), Why::UnsupportedPlugin)]
    );
    let t = table(&c);
    assert_eq!(at(&t, "sources.sample.label").as_str(), Some("@STAGING"));
    assert_eq!(
        at(&t, "filters.stdout_filter.label").as_str(),
        Some("@STAGING")
    );
    assert_eq!(at(&t, "filters.stdout_filter.match").as_str(), Some("**"));
    assert_eq!(at(&t, "outputs.stdout.label").as_str(), Some("@STAGING"));
    assert_eq!(at(&t, "outputs.file.label").as_str(), Some("@ERROR"));
    assert_eq!(
        at(&t, "outputs.file.path").as_str(),
        Some("/var/log/relay/errors")
    );
}

#[test]
fn forward_security_clients_and_tls() {
    let c = conv(
        r##"<source>
  @type forward
  <transport tls>
    cert_path /etc/tls/tls.crt
    private_key_path /etc/tls/tls.key
    client_cert_auth true
    ca_path /etc/tls/ca.crt
    version TLSv1_2
  </transport>
  <security>
    shared_key k
    allow_anonymous_source false
    <client>
      network 10.0.0.0/8
    </client>
    <client>
      host 192.168.1.5
    </client>
    <user>
      username u
      password p
    </user>
  </security>
</source>
<match **>
  @type kinesis_firehose
  delivery_stream_name s
  aws_key_id AKIAEXAMPLE
  aws_sec_key secret
  <buffer>
    queue_limit_length 4
    chunk_limit_size 2m
  </buffer>
</match>
"##,
    );
    assert!(c.is_faithful(), "{}", c.report());
    let t = table(&c);
    assert_eq!(
        at(&t, "sources.forward.listen").as_str(),
        Some("0.0.0.0:24224")
    );
    assert_eq!(
        at(&t, "sources.forward.tls.key_path").as_str(),
        Some("/etc/tls/tls.key")
    );
    assert_eq!(
        at(&t, "sources.forward.tls.client_ca_path").as_str(),
        Some("/etc/tls/ca.crt")
    );
    let allow: Vec<_> = at(&t, "sources.forward.allow")
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert_eq!(allow, ["10.0.0.0/8", "192.168.1.5"]);
    // user_auth is off: Fluentd does not check users, neither does the converted config.
    assert!(at(&t, "sources.forward.security").get("users").is_none());
    assert_eq!(
        at(&t, "outputs.firehose.credentials.type").as_str(),
        Some("static")
    );
    assert_eq!(
        at(&t, "outputs.firehose.credentials.access_key_id").as_str(),
        Some("AKIAEXAMPLE")
    );
    // Fluentd's v0.12 queue_limit_length: total = chunk × length.
    assert_eq!(
        at(&t, "outputs.firehose.buffer.total_limit_size").as_str(),
        Some("8m")
    );
}

#[test]
fn names_come_from_id_made_valid_keys_and_never_collide() {
    let c = conv(
        "<source>\n @type sample\n tag a\n @id My-Sample.1\n</source>\n<source>\n @type sample\n tag b\n</source>\n<source>\n @type dummy\n tag c\n</source>\n<match **>\n @type stdout\n <format>\n @type json\n </format>\n</match>\n",
    );
    assert!(c.is_faithful(), "{}", c.report());
    let t = table(&c);
    let names: Vec<_> = t["sources"].as_table().unwrap().keys().cloned().collect();
    assert_eq!(names, ["my_sample_1", "sample", "sample_2"]);
}

#[test]
fn file_and_stdout_outputs_need_json_lines_to_be_faithful() {
    let c = conv("<source>\n @type sample\n tag a\n</source>\n<match **>\n @type file\n path /tmp/x\n</match>\n");
    assert_eq!(
        subjects(&c),
        vec![(
            5,
            "@type file without <format>".into(),
            Why::DifferentSemantics
        )]
    );
}

/// The relay loads `c`'s TOML (its own validation agrees with the converter's).
fn loads(c: &Conversion) -> crate::config::Config {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("relay.toml");
    std::fs::write(&path, &c.toml).unwrap();
    crate::config::Config::load(&crate::config::ConfigSource { file: Some(path) })
        .unwrap_or_else(|e| panic!("{e}\n{}", c.toml))
}

fn firehose_with(stream: &str, buffer: &str) -> Conversion {
    conv(&format!(
        "<source>\n @type sample\n tag a\n</source>\n<match **>\n @type kinesis_firehose\n region r\n delivery_stream_name {stream}\n{buffer}</match>\n"
    ))
}

#[test]
fn placeholders_without_their_chunk_key_are_reported_as_fluentd_would_send_them() {
    for (value, buffer, finding) in [
        (
            "logs-${tag}",
            "",
            Some((Why::InvalidValue, "chunk key 'tag' is not configured")),
        ),
        (
            "logs-${tag[1]}",
            " <buffer>\n </buffer>\n",
            Some((Why::InvalidValue, "chunk key 'tag' is not configured")),
        ),
        (
            "logs-%Y%m%d",
            " <buffer tag>\n </buffer>\n",
            Some((Why::InvalidValue, "chunk key 'time' is not configured")),
        ),
        (
            "logs-${chunk_id}",
            " <buffer tag>\n </buffer>\n",
            Some((Why::UnsupportedParameter, "placeholder `${chunk_id}`")),
        ),
        (
            "logs-${user}",
            " <buffer tag>\n </buffer>\n",
            Some((Why::UnsupportedParameter, "placeholder `${user}`")),
        ),
        (
            "logs-%Q",
            " <buffer time>\n  timekey 1h\n </buffer>\n",
            Some((Why::InvalidValue, "not a strftime directive")),
        ),
        ("logs-${tag}", " <buffer tag>\n </buffer>\n", None),
        (
            "logs-${tag[-1]}-%Y%m%d",
            " <buffer time,tag>\n  timekey 1d\n </buffer>\n",
            None,
        ),
        ("\"#{ENV['S'] || 'logs'}\"", "", None),
        ("\"#{ENV.fetch('S', 'x')}-cost$\"", "", None),
    ] {
        let c = firehose_with(value, buffer);
        let found: Vec<(Why, &str)> = c
            .findings
            .iter()
            .filter(|f| f.subject == "delivery_stream_name")
            .map(|f| (f.why, f.reason.as_str()))
            .collect();
        match finding {
            Some((why, text)) => {
                assert_eq!(found.len(), 1, "{value}: {}", c.report());
                assert_eq!(found[0].0, why, "{value}: {}", c.report());
                assert!(found[0].1.contains(text), "{value}: {}", c.report());
                // What Fluentd would do: send to the name as written.
                if why == Why::InvalidValue && !text.contains("strftime") {
                    assert!(found[0].1.contains("literally named"), "{}", found[0].1);
                }
                assert!(!c.toml.contains("delivery_stream ="), "{}", c.toml);
            }
            None => {
                assert!(c.is_faithful(), "{value}: {}", c.report());
                loads(&c);
            }
        }
    }
}

#[test]
fn a_tag_chunk_key_and_tag_placeholders_convert() {
    let c = firehose_with(
        "logs-${tag[1]}.${tag}",
        " <buffer tag>\n  @type memory\n  flush_interval 5s\n </buffer>\n",
    );
    assert!(c.is_faithful(), "{}", c.report());
    let t = table(&c);
    assert_eq!(
        at(&t, "outputs.firehose.delivery_stream").as_str(),
        Some("logs-${tag[1]}.${tag}")
    );
    assert_eq!(
        at(&t, "outputs.firehose.buffer.chunk_keys"),
        &toml::Value::Array(vec!["tag".into()])
    );
    // Without a time key Fluentd's default flush mode is interval, the relay's too.
    assert!(!c.toml.contains("flush_mode"), "{}", c.toml);
    assert_eq!(
        at(&t, "outputs.firehose.buffer.flush_interval").as_str(),
        Some("5s")
    );
    assert!(
        c.warnings
            .iter()
            .any(|w| w.message.contains("max_open_chunks")),
        "{:?}",
        c.warnings
    );
    let cfg = loads(&c);
    let out = &cfg.outputs["firehose"];
    assert!(out.buffer().key_rule().tag);
    // A repeated key is one key (Fluentd deletes every "tag" from the list).
    let c = firehose_with("s", " <buffer tag , tag>\n </buffer>\n");
    assert!(c.is_faithful(), "{}", c.report());
    assert_eq!(
        at(&table(&c), "outputs.firehose.buffer.chunk_keys"),
        &toml::Value::Array(vec!["tag".into()])
    );
}

#[test]
fn a_time_chunk_key_converts_with_its_timekeys_and_fluentds_lazy_default() {
    let c = firehose_with(
        "logs-${tag}-%Y%m%d%H",
        " <buffer tag, time>\n  timekey 1h\n  timekey_wait 5m\n  timekey_use_utc true\n </buffer>\n",
    );
    assert!(c.is_faithful(), "{}", c.report());
    let t = table(&c);
    let b = |k: &str| at(&t, &format!("outputs.firehose.buffer.{k}")).clone();
    assert_eq!(
        b("chunk_keys"),
        toml::Value::Array(vec!["tag".into(), "time".into()])
    );
    assert_eq!(b("timekey").as_str(), Some("1h"));
    assert_eq!(b("timekey_wait").as_str(), Some("5m"));
    assert_eq!(b("timekey_use_utc").as_bool(), Some(true));
    assert_eq!(b("flush_mode").as_str(), Some("lazy"));
    let cfg = loads(&c);
    let rule = cfg.outputs["firehose"].buffer().key_rule();
    assert_eq!((rule.tag, rule.timekey_secs), (true, Some(3600)));
    assert_eq!(rule.zone, Some(crate::buffer::key::KeyZone::Utc));

    // flush_mode written: kept; `default` is lazy with a time key.
    for (mode, want) in [
        ("interval", "interval"),
        ("default", "lazy"),
        ("immediate", "immediate"),
    ] {
        let c = firehose_with(
            "s",
            &format!(" <buffer time>\n  timekey 1d\n  flush_mode {mode}\n </buffer>\n"),
        );
        assert!(c.is_faithful(), "{}", c.report());
        assert_eq!(
            at(&table(&c), "outputs.firehose.buffer.flush_mode").as_str(),
            Some(want)
        );
        loads(&c);
    }
    // flush_interval with the default (lazy) mode: Fluentd ignores it with a warning.
    let c = firehose_with(
        "s",
        " <buffer time>\n  timekey 1d\n  flush_interval 10s\n </buffer>\n",
    );
    assert!(c.is_faithful(), "{}", c.report());
    assert!(!c.toml.contains("flush_interval"), "{}", c.toml);
    assert!(
        c.warnings
            .iter()
            .any(|w| w.pos.line == 11 && w.message.contains("flush_interval is not converted")),
        "{:?}",
        c.warnings
    );
    // ... and refuses it with a non-interval mode written.
    let c = firehose_with(
        "s",
        " <buffer time>\n  timekey 1d\n  flush_mode lazy\n  flush_interval 10s\n </buffer>\n",
    );
    assert_eq!(
        subjects(&c),
        [(12, "flush_interval".into(), Why::InvalidValue)],
        "{}",
        c.report()
    );
    // With the interval mode the time key only keeps chunks apart.
    let c = firehose_with(
        "s",
        " <buffer time>\n  timekey 1d\n  flush_mode interval\n  flush_interval 10s\n </buffer>\n",
    );
    assert!(c.is_faithful(), "{}", c.report());
    assert_eq!(
        at(&table(&c), "outputs.firehose.buffer.flush_interval").as_str(),
        Some("10s")
    );
}

#[test]
fn time_keys_need_a_timekey_and_zones_are_offsets() {
    // `time` without timekey: Fluentd's own error.
    let c = firehose_with("s", " <buffer time>\n </buffer>\n");
    assert_eq!(
        subjects(&c),
        [(9, "<buffer time>".into(), Why::InvalidValue)]
    );
    assert!(c.findings[0]
        .reason
        .contains("but timekey is not configured"));
    for bad in ["0", "1.5"] {
        let c = firehose_with(
            "s",
            &format!(" <buffer time>\n  timekey {bad}\n </buffer>\n"),
        );
        assert_eq!(
            subjects(&c),
            [(10, "timekey".into(), Why::InvalidValue)],
            "{bad}"
        );
    }
    // Without `time`, Fluentd ignores the timekey parameters; so does the conversion.
    let c = firehose_with(
        "s",
        " <buffer tag>\n  timekey 1h\n  timekey_zone Asia/Tokyo\n </buffer>\n",
    );
    assert!(c.is_faithful(), "{}", c.report());
    assert!(!c.toml.contains("timekey"), "{}", c.toml);
    assert_eq!(
        c.warnings
            .iter()
            .filter(|w| w.message.contains("only with `time`"))
            .count(),
        2,
        "{:?}",
        c.warnings
    );
    loads(&c);
    // Fixed offsets convert; a named zone is reported with what to write instead.
    let c = firehose_with(
        "logs-%Y%m%d",
        " <buffer time>\n  timekey 1d\n  timekey_zone +09:00\n </buffer>\n",
    );
    assert!(c.is_faithful(), "{}", c.report());
    assert_eq!(
        at(&table(&c), "outputs.firehose.buffer.timekey_zone").as_str(),
        Some("+09:00")
    );
    loads(&c);
    let c = firehose_with(
        "s",
        " <buffer time>\n  timekey 1d\n  timekey_zone Asia/Tokyo\n </buffer>\n",
    );
    assert_eq!(
        subjects(&c),
        [(11, "timekey_zone".into(), Why::UnsupportedParameter)]
    );
    assert!(c.findings[0].advice.contains("+09:00"), "{}", c.report());
    let c = firehose_with(
        "s",
        " <buffer time>\n  timekey 1d\n  timekey_zone +25:00\n </buffer>\n",
    );
    assert_eq!(
        subjects(&c),
        [(11, "timekey_zone".into(), Why::InvalidValue)]
    );
    // timekey_use_utc wins over a zone, as in Fluentd.
    let c = firehose_with("s", " <buffer time>\n  timekey 1d\n  timekey_zone Asia/Tokyo\n  timekey_use_utc true\n </buffer>\n");
    assert!(c.is_faithful(), "{}", c.report());
    assert!(!c.toml.contains("timekey_zone"), "{}", c.toml);
    assert_eq!(
        loads(&c).outputs["firehose"].buffer().key_rule().zone,
        Some(crate::buffer::key::KeyZone::Utc)
    );
}

#[test]
fn record_field_chunk_keys_are_reported() {
    for (arg, why) in [
        ("$.kubernetes.namespace", Why::UnsupportedParameter),
        ("tag, user_id", Why::UnsupportedParameter),
        ("$['a']", Why::InvalidValue),
        ("a/b", Why::InvalidValue),
    ] {
        let c = firehose_with("s", &format!(" <buffer {arg}>\n </buffer>\n"));
        assert_eq!(c.findings.len(), 1, "{arg}: {}", c.report());
        assert_eq!(c.findings[0].why, why, "{arg}: {}", c.report());
        assert!(c.findings[0].subject.contains("chunk key"), "{arg}");
        assert!(table(&c).get("outputs").is_some());
    }
}

/// Fluentd refuses a single-valued section written twice; the converter reports the repeat
/// (found by `any_parsed_config_converts_to_valid_toml`: two `<transport tls>` made one TOML
/// table twice) and keeps the first.
#[test]
fn a_single_section_given_twice_is_reported_and_the_first_is_kept() {
    let c = conv(
        "<source>\n  @type forward\n  <transport tls>\n    cert_path /a\n    private_key_path /k\n  </transport>\n  <transport tls>\n    cert_path /b\n    private_key_path /k\n  </transport>\n</source>\n<match **>\n  @type stdout\n  <format>\n    @type json\n  </format>\n  <format>\n    @type json\n  </format>\n  <buffer>\n    @type memory\n  </buffer>\n  <buffer>\n    @type file\n  </buffer>\n</match>\n",
    );
    let t = table(&c);
    assert_eq!(at(&t, "sources.forward.tls.cert_path").as_str(), Some("/a"));
    let repeats: Vec<(u32, Why)> = c
        .findings
        .iter()
        .filter(|f| f.reason.contains("more than once"))
        .map(|f| (f.pos.line, f.why))
        .collect();
    assert_eq!(
        repeats,
        [
            (7, Why::InvalidValue),
            (17, Why::InvalidValue),
            (23, Why::InvalidValue)
        ],
        "{:#?}",
        c.findings
    );
}
