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
  delivery_stream_name logs-${tag}
  region eu-west-1
  ssl_verify_peer false
  compression zlib
  aws_key_id "#{File.read('/key')}"
  aws_sec_key x
  <inject>
    time_key time
  </inject>
  <buffer tag>
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
            (18, "delivery_stream_name".into(), Why::UnsupportedParameter),
            (
                20,
                "ssl_verify_peer false".into(),
                Why::UnsupportedParameter
            ),
            (21, "compression".into(), Why::UnsupportedParameter),
            (22, "aws_key_id".into(), Why::UnsupportedParameter),
            (24, "<inject>".into(), Why::UnsupportedParameter),
            (27, "<buffer tag>".into(), Why::UnsupportedParameter),
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

#[test]
fn placeholders_are_reported_but_environment_defaults_are_not() {
    for (value, placeholder) in [
        ("logs-${tag}", true),
        ("logs-${tag[1]}", true),
        ("logs-%Y%m%d", true),
        ("\"#{ENV['S'] || 'logs'}\"", false),
        ("\"#{ENV.fetch('S', 'x')}-cost$\"", false),
    ] {
        let c = conv(&format!(
            "<match **>\n @type kinesis_firehose\n region r\n delivery_stream_name {value}\n</match>\n"
        ));
        assert_eq!(!c.is_faithful(), placeholder, "{value}: {}", c.report());
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
