//! `firehose-relay check` on Firehose outputs: impossible credentials settings exit 2 naming
//! the key, and secrets never appear in the printed configuration.

mod common;

use std::process::Command;

fn check(config: &str) -> std::process::Output {
    let dir = tempfile::tempdir().unwrap();
    let path = common::write_config(dir.path(), config);
    Command::new(common::relay_bin())
        .args(["check", "--config"])
        .arg(&path)
        .env_remove("RELAY_CONFIG")
        .env_remove("AWS_ROLE_ARN")
        .env_remove("AWS_WEB_IDENTITY_TOKEN_FILE")
        .env("SECRET_FROM_ENV", "wJalrXUtnFEMI-very-secret")
        .output()
        .unwrap()
}

const HEAD: &str = r#"
data_dir = "/tmp/relay-check-test"
[sources.sample]
type = "sample"
[outputs.fh]
type = "firehose"
region = "eu-west-1"
delivery_stream = "s"
"#;

#[test]
fn web_identity_mistakes_exit_2_and_name_each_key() {
    let out = check(&format!(
        "{HEAD}[outputs.fh.credentials]\ntype = \"web_identity\"\nweb_identity_token_file = \"/nonexistent/token\"\nduration_seconds = 50000\n"
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    for key in [
        "outputs.fh.credentials.role_arn",
        "outputs.fh.credentials.web_identity_token_file",
        "outputs.fh.credentials.duration_seconds",
    ] {
        assert!(err.contains(key), "{key} missing from:\n{err}");
    }
    assert!(err.contains("/nonexistent/token"), "{err}");
}

#[test]
fn static_keys_are_redacted_in_check_output() {
    let out = check(&format!(
        "{HEAD}[outputs.fh.credentials]\ntype = \"static\"\naccess_key_id = \"AKIAEXAMPLEKEY\"\nsecret_access_key = \"${{SECRET_FROM_ENV}}\"\nsession_token = \"tok-123\"\n"
    ));
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(text.contains("<redacted>"), "{text}");
    for secret in ["wJalrXUtnFEMI-very-secret", "tok-123", "AKIAEXAMPLEKEY"] {
        assert!(!text.contains(secret), "{secret} leaked:\n{text}");
    }
}

#[test]
fn bad_firehose_limits_are_refused() {
    let out = check(&format!(
        "{HEAD}max_records_per_call = 501\nmax_bytes_per_call = \"5MiB\"\n"
    ));
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("outputs.fh.max_records_per_call")
            && err.contains("outputs.fh.max_bytes_per_call"),
        "{err}"
    );
}
