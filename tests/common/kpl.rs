//! KPL aggregated records read back by an independent decoder: `aws-kinesis-agg` (PyPI, the
//! deaggregation library AWS publishes for Python consumers) through
//! `tests/python/kpl_deaggregate.py`.

use std::path::Path;

use base64::Engine;

/// What the decoder read from one Kinesis record.
#[derive(Debug, serde::Deserialize)]
pub struct Read {
    /// The name the record was written under.
    pub name: String,
    /// aws-kinesis-agg took it as aggregated (it passes anything else through as one record).
    pub aggregated: bool,
    /// Every proto2 `required` field is present (what the KCL's parser insists on).
    pub complete: bool,
    /// The user records, in order.
    pub records: Vec<ReadRecord>,
}

/// One user record as the decoder read it.
#[derive(Debug, serde::Deserialize)]
pub struct ReadRecord {
    pub partition_key: String,
    pub explicit_hash_key: Option<String>,
    pub data_b64: String,
}

impl ReadRecord {
    /// The record's bytes.
    pub fn data(&self) -> Vec<u8> {
        base64::engine::general_purpose::STANDARD
            .decode(&self.data_b64)
            .expect("the decoder writes base64")
    }
}

/// Writes each Kinesis record `(name, partition key, data)` to `dir` and returns what
/// aws-kinesis-agg reads from them, in name order.
pub fn deaggregate(dir: &Path, records: &[(String, String, Vec<u8>)]) -> Vec<Read> {
    for (name, key, blob) in records {
        std::fs::write(dir.join(format!("{name}.bin")), blob).unwrap();
        std::fs::write(dir.join(format!("{name}.key")), key).unwrap();
    }
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/python/kpl_deaggregate.py");
    let out = std::process::Command::new(super::python())
        .arg(script)
        .arg(dir)
        .output()
        .expect("run kpl_deaggregate.py");
    assert!(
        out.status.success(),
        "kpl_deaggregate.py failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("kpl_deaggregate.py prints JSON")
}
