//! End to end through moto, a real third-party emulator: the binary delivers into a moto
//! delivery stream, moto writes S3 objects, and every record is read back. Credentials come
//! from static test keys, and from `AssumeRoleWithWebIdentity` against moto's STS (configured
//! endpoint, and the standard `AWS_ENDPOINT_URL_STS` variable with IRSA environment variables).
//! moto does not check signatures or limits; the in-process fakes cover those.

mod common;

use std::time::Duration;

use common::moto::Moto;
use common::relay_run::{assert_all_arrived, run_for, sample_to_firehose_config, sequence_counts};

fn output(moto: &Moto, stream: &str, extra: &str) -> String {
    format!(
        "region = \"us-east-1\"\ndelivery_stream = \"{stream}\"\nendpoint_url = \"{}\"\n{extra}\n",
        moto.url
    )
}

fn check_bucket(moto: &Moto, bucket: &str, log: &str) -> u64 {
    let data = moto.read_bucket(bucket);
    let seen = sequence_counts(data.split_inclusive(|&b| b == b'\n'));
    let n = assert_all_arrived(&seen, "sample", log);
    assert!(seen.values().all(|&c| c == 1), "duplicates in S3");
    n
}

#[test]
fn records_reach_s3_through_moto_with_static_keys() {
    let moto = Moto::start();
    moto.create_stream("relay-static", "static-stream");
    let dir = tempfile::tempdir().unwrap();
    let creds = "[outputs.fh.credentials]\ntype = \"static\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n";
    let config = sample_to_firehose_config(dir.path(), &output(&moto, "static-stream", ""), creds);
    let log = run_for(dir.path(), &config, &[], Duration::from_secs(3));
    assert!(check_bucket(&moto, "relay-static", &log) >= 200);
}

#[test]
fn aggregated_gzip_records_reach_s3_through_moto() {
    let moto = Moto::start();
    moto.create_stream("relay-gzip", "gzip-stream");
    let dir = tempfile::tempdir().unwrap();
    let creds = "[outputs.fh.credentials]\ntype = \"static\"\naccess_key_id = \"testing\"\nsecret_access_key = \"testing\"\n";
    let config = sample_to_firehose_config(
        dir.path(),
        &output(
            &moto,
            "gzip-stream",
            "aggregation = true\ncompression = \"gzip\"",
        ),
        creds,
    );
    let log = run_for(dir.path(), &config, &[], Duration::from_secs(3));
    // moto concatenates records; each is a complete gzip member, so a multi-member decoder
    // yields the newline-delimited JSON.
    let mut text = Vec::new();
    use std::io::Read;
    flate2::read::MultiGzDecoder::new(&moto.read_bucket("relay-gzip")[..])
        .read_to_end(&mut text)
        .unwrap();
    let seen = sequence_counts(text.split_inclusive(|&b| b == b'\n'));
    assert!(assert_all_arrived(&seen, "sample", &log) >= 200);
}

const TOKEN: &str = "eyJ-moto-web-identity-token-not-for-logs";

#[test]
fn web_identity_against_moto_sts_with_sts_endpoint_url() {
    let moto = Moto::start();
    moto.create_stream("relay-wi", "wi-stream");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let creds = format!(
        "[outputs.fh.credentials]\ntype = \"web_identity\"\nrole_arn = \"arn:aws:iam::123456789012:role/relay\"\nweb_identity_token_file = {:?}\nsts_endpoint_url = \"{}\"\n",
        token.display().to_string(),
        moto.url
    );
    let config = sample_to_firehose_config(dir.path(), &output(&moto, "wi-stream", ""), &creds);
    let log = run_for(dir.path(), &config, &[], Duration::from_secs(3));
    assert!(log.contains("AWS credentials obtained"), "{log}");
    assert!(!log.contains(TOKEN), "the token leaked into the log");
    assert!(check_bucket(&moto, "relay-wi", &log) >= 200);
}

#[test]
fn irsa_environment_and_aws_endpoint_url_sts_are_honoured() {
    let moto = Moto::start();
    moto.create_stream("relay-irsa", "irsa-stream");
    let dir = tempfile::tempdir().unwrap();
    let token = dir.path().join("token");
    std::fs::write(&token, TOKEN).unwrap();
    let token_path = token.display().to_string();
    let config = sample_to_firehose_config(dir.path(), &output(&moto, "irsa-stream", ""), "");
    let env = [
        ("AWS_ROLE_ARN", "arn:aws:iam::123456789012:role/irsa"),
        ("AWS_WEB_IDENTITY_TOKEN_FILE", token_path.as_str()),
        ("AWS_ENDPOINT_URL_STS", moto.url.as_str()),
        ("AWS_ACCESS_KEY_ID", ""),
        ("AWS_SECRET_ACCESS_KEY", ""),
    ];
    let log = run_for(dir.path(), &config, &env, Duration::from_secs(3));
    assert!(
        log.contains("web_identity role=arn:aws:iam::123456789012:role/irsa"),
        "{log}"
    );
    assert!(!log.contains(TOKEN), "the token leaked into the log");
    assert!(check_bucket(&moto, "relay-irsa", &log) >= 200);
}
