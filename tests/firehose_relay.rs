//! The real binary (sample source → memory buffer → firehose) against the in-process fake
//! Firehose with faults: everything arrives, duplicates only where the fake did not confirm.

mod common;

use std::time::Duration;

use common::fake_firehose::{FakeFirehose, Fault};
use common::relay_run::{assert_all_arrived, run_for, sample_to_firehose_config, sequence_counts};

const STATIC: &str = r#"
[outputs.fh.credentials]
type = "static"
access_key_id = "AKIDRELAYTEST"
secret_access_key = "relay-secret-value"
"#;

#[test]
fn the_relay_delivers_every_record_through_faults_over_https() {
    let fake = FakeFirehose::https();
    fake.create_stream("relay-stream")
        .allow_key("AKIDRELAYTEST", "relay-secret-value");
    fake.set_record_failure_rate(0.2);
    fake.push_faults([
        Fault::Error(503, "ServiceUnavailableException"),
        Fault::Reset,
        Fault::Error(500, "InternalFailure"),
        Fault::Error(400, "ResourceNotFoundException"),
    ]);
    // The injected per-record failures do not depend on the send rate, unlike real throttling,
    // so adaptive slow-down would only stretch the run; it is tested on the sink directly.
    let dir = tempfile::tempdir().unwrap();
    let ca = dir.path().join("ca.pem");
    std::fs::write(&ca, fake.ca_pem.as_ref().unwrap()).unwrap();
    let output = format!(
        "region = \"us-east-1\"\ndelivery_stream = \"relay-stream\"\nendpoint_url = \"{}\"\ntls_ca_file = {:?}\nmax_records_per_call = 40\nadaptive_pacing = false\n",
        fake.url,
        ca.display().to_string()
    );
    let config = sample_to_firehose_config(dir.path(), &output, STATIC);
    let log = run_for(dir.path(), &config, &[], Duration::from_secs(4));

    let accepted = fake.accepted();
    let seen = sequence_counts(accepted.iter().map(Vec::as_slice));
    let n = assert_all_arrived(&seen, "sample", &log);
    assert!(n >= 500, "only {n} records");
    assert!(
        seen.values().all(|&c| c == 1),
        "no duplicates: every failure was explicit"
    );
    assert!(fake.refusals().is_empty(), "{:?}", fake.refusals());
    assert!(fake
        .calls()
        .iter()
        .all(|c| c.records.len() <= 40 && c.stream == "relay-stream"));
    assert!(
        log.contains("ResourceNotFoundException"),
        "the operator error was logged:\n{log}"
    );
    assert!(!log.contains("relay-secret-value"), "secret in the log");
}
