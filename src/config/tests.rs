//! Configuration loading, as a user experiences it: file, environment, errors.

use super::*;
use figment::Jail;

const BASE: &str = r#"
data_dir = "/tmp/relay-test"

[sources.gen]
type = "sample"
tag  = "app.gen"

[outputs.zeta]
type  = "file"
match = "app.**"
path  = "/tmp/relay-test/out"

[outputs.zeta.buffer]
type           = "memory"
flush_interval = "10s"

[outputs.alpha]
type  = "stdout"
match = "**"
"#;

fn load(jail: &mut Jail, text: &str) -> Result<Config, ConfigError> {
    jail.create_file("relay.toml", text).expect("write config");
    Config::load(&ConfigSource {
        file: Some(jail.directory().join("relay.toml")),
    })
}

#[test]
fn file_values_override_defaults() {
    Jail::expect_with(|jail| {
        let cfg = load(jail, BASE).unwrap();
        let out = &cfg.outputs["zeta"];
        assert_eq!(out.buffer().flush_interval, ConfigDuration::secs(10));
        assert_eq!(
            out.buffer().flush_thread_count,
            1,
            "untouched keys keep their default"
        );
        assert_eq!(cfg.shutdown_timeout, ConfigDuration::secs(60));
        Ok(())
    });
}

#[test]
fn environment_overrides_the_file() {
    Jail::expect_with(|jail| {
        jail.set_env("RELAY_OUTPUTS__ZETA__BUFFER__FLUSH_INTERVAL", "5s");
        jail.set_env("RELAY_OUTPUTS__ZETA__BUFFER__FLUSH_THREAD_COUNT", "4");
        jail.set_env("RELAY_SHUTDOWN_TIMEOUT", "30");
        let cfg = load(jail, BASE).unwrap();
        let buffer = cfg.outputs["zeta"].buffer();
        assert_eq!(buffer.flush_interval, ConfigDuration::secs(5));
        assert_eq!(buffer.flush_thread_count, 4);
        assert_eq!(cfg.shutdown_timeout, ConfigDuration::secs(30));
        Ok(())
    });
}

#[test]
fn variables_are_expanded_in_file_strings() {
    Jail::expect_with(|jail| {
        jail.set_env("OUT_DIR", "/srv/logs");
        let text = BASE
            .replace("/tmp/relay-test/out", "${OUT_DIR}/relay")
            .replace("app.gen", "${GEN_TAG:-app.default}");
        let cfg = load(jail, &text).unwrap();
        let crate::sink::OutputConfig::File(f) = &cfg.outputs["zeta"] else {
            panic!()
        };
        assert_eq!(f.path, PathBuf::from("/srv/logs/relay"));
        let crate::source::SourceConfig::Sample(s) = &cfg.sources["gen"] else {
            panic!("gen is a sample source")
        };
        assert_eq!(s.tag, "app.default");
        Ok(())
    });
}

#[test]
fn an_unset_variable_is_an_error_naming_it_and_the_key() {
    Jail::expect_with(|jail| {
        let text = BASE.replace("/tmp/relay-test/out", "${RELAY_TEST_SURELY_UNSET}");
        let err = load(jail, &text).unwrap_err().to_string();
        assert!(err.contains("RELAY_TEST_SURELY_UNSET"), "{err}");
        assert!(err.contains("outputs.zeta.path"), "{err}");
        assert!(err.contains("relay.toml"), "{err}");
        Ok(())
    });
}

#[test]
fn a_misspelled_key_in_the_file_is_named_with_the_file() {
    Jail::expect_with(|jail| {
        let text = BASE.replace("flush_interval = \"10s\"", "flush_intervall = \"10s\"");
        let err = load(jail, &text).unwrap_err().to_string();
        assert!(err.contains("flush_intervall"), "{err}");
        assert!(err.contains("outputs.zeta.buffer"), "{err}");
        assert!(err.contains("relay.toml"), "{err}");
        Ok(())
    });
}

#[test]
fn a_misspelled_key_in_the_environment_names_the_variable() {
    Jail::expect_with(|jail| {
        jail.set_env("RELAY_OUTPUTS__ZETA__BUFFER__FLUSH_INTERVALL", "5s");
        let err = load(jail, BASE).unwrap_err().to_string();
        assert!(err.contains("flush_intervall"), "{err}");
        assert!(
            err.contains("RELAY_OUTPUTS__ZETA__BUFFER__FLUSH_INTERVALL"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn a_wrong_type_names_the_key() {
    Jail::expect_with(|jail| {
        let text = BASE.replace("flush_interval = \"10s\"", "flush_thread_count = \"many\"");
        let err = load(jail, &text).unwrap_err().to_string();
        assert!(
            err.contains("outputs.zeta.buffer.flush_thread_count"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn a_bad_duration_explains_the_accepted_forms() {
    Jail::expect_with(|jail| {
        let text = BASE.replace("\"10s\"", "\"10 fortnights\"");
        let err = load(jail, &text).unwrap_err().to_string();
        assert!(err.contains("invalid duration `10 fortnights`"), "{err}");
        assert!(err.contains("outputs.zeta.buffer.flush_interval"), "{err}");
        Ok(())
    });
}

#[test]
fn impossible_values_name_key_and_source() {
    Jail::expect_with(|jail| {
        let text = BASE.replace(
            "flush_interval = \"10s\"",
            "flush_thread_count = 0\nchunk_limit_size = \"2g\"\ntotal_limit_size = \"1g\"",
        );
        let err = load(jail, &text).unwrap_err().to_string();
        assert!(
            err.contains("`outputs.zeta.buffer.flush_thread_count` in ")
                && err.contains("relay.toml: must be at least 1"),
            "{err}"
        );
        assert!(
            err.contains("`outputs.zeta.buffer.chunk_limit_size`")
                && err.contains("must not be larger than total_limit_size"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn impossible_values_from_the_environment_name_the_variable() {
    Jail::expect_with(|jail| {
        jail.set_env("RELAY_OUTPUTS__ZETA__BUFFER__FLUSH_THREAD_COUNT", "0");
        let err = load(jail, BASE).unwrap_err().to_string();
        assert!(
            err.contains(
                "from environment variable RELAY_OUTPUTS__ZETA__BUFFER__FLUSH_THREAD_COUNT"
            ),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn bad_match_patterns_are_rejected() {
    Jail::expect_with(|jail| {
        let text = BASE.replace("match = \"app.**\"", "match = \"{app,web\"");
        let err = load(jail, &text).unwrap_err().to_string();
        assert!(
            err.contains("outputs.zeta.match") && err.contains("unbalanced braces"),
            "{err}"
        );
        Ok(())
    });
}

#[test]
fn outputs_keep_the_order_of_the_file() {
    Jail::expect_with(|jail| {
        let cfg = load(jail, BASE).unwrap();
        assert_eq!(cfg.output_order(), vec!["zeta", "alpha"]);
        Ok(())
    });
}

#[test]
fn a_missing_file_is_a_clear_error() {
    let err = Config::load(&ConfigSource {
        file: Some(PathBuf::from("/nonexistent/relay.toml")),
    })
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("/nonexistent/relay.toml does not exist"),
        "{err}"
    );
}

#[test]
fn secrets_are_redacted_when_printed() {
    let mut v: toml::Value = toml::from_str(
        "[sources.f]\nshared_key = \"s3cret\"\n[outputs.o.credentials]\nsecret_access_key = \"x\"\naccess_key_id = \"AKIA\"\nrole_arn = \"arn:aws:iam::1:role/r\"",
    )
    .unwrap();
    redact(&mut v);
    let text = toml::to_string(&v).unwrap();
    for secret in ["s3cret", "\"x\"", "AKIA"] {
        assert!(!text.contains(secret), "{secret} leaked: {text}");
    }
    assert!(
        text.contains("arn:aws:iam::1:role/r"),
        "non-secret keys stay visible: {text}"
    );
}

#[test]
fn labels_must_start_with_at_and_a_source_must_name_a_defined_one() {
    Jail::expect_with(|jail| {
        let labelled = BASE.replace(
            "tag  = \"app.gen\"",
            "tag  = \"app.gen\"\nlabel = \"@main\"",
        );
        let err = load(jail, &labelled).unwrap_err().to_string();
        assert!(
            err.contains("`sources.gen.label`")
                && err.contains("no filter or output has label `@main`"),
            "{err}"
        );
        let fixed = labelled.replace("match = \"**\"", "match = \"**\"\nlabel = \"@main\"");
        let cfg = load(jail, &fixed).unwrap();
        assert_eq!(cfg.sources["gen"].label(), Some("@main"));
        assert_eq!(cfg.outputs["alpha"].label(), Some("@main"));
        let bad = fixed.replace("\"@main\"", "\"main\"");
        let err = load(jail, &bad).unwrap_err().to_string();
        assert!(err.contains("labels start with `@`"), "{err}");
        Ok(())
    });
}

#[test]
fn secrets_given_with_the_wrong_type_are_not_quoted_in_the_error() {
    Jail::expect_with(|jail| {
        let text = format!(
            "{BASE}\n[sources.fwd]\ntype = \"forward\"\n[sources.fwd.security]\nshared_key = 987654321\n"
        );
        let err = load(jail, &text).unwrap_err().to_string();
        assert!(!err.contains("987654321"), "{err}");
        assert!(
            err.contains("sources.fwd.security.shared_key") && err.contains("an integer"),
            "{err}"
        );
        jail.set_env("RELAY_SOURCES__FWD__SECURITY__SHARED_KEY", "ok");
        jail.set_env(
            "RELAY_SOURCES__FWD__SECURITY__USERS",
            "[{username=\"a\",password=55512}]",
        );
        let err = load(jail, &text).unwrap_err().to_string();
        assert!(!err.contains("55512"), "{err}");
        Ok(())
    });
}

#[test]
fn user_information_of_urls_is_redacted_when_printed() {
    let mut v: toml::Value = toml::from_str(
        "[outputs.fh]\nproxy_url = \"http://bob:hunter2@proxy.local:3128\"\nendpoint_url = \"https://firehose.local\"",
    )
    .unwrap();
    redact(&mut v);
    let text = toml::to_string(&v).unwrap();
    assert!(!text.contains("hunter2") && !text.contains("bob"), "{text}");
    assert!(
        text.contains("http://<redacted>@proxy.local:3128"),
        "{text}"
    );
    assert!(text.contains("https://firehose.local"), "{text}");
}
