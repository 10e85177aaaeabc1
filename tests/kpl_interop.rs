//! The relay's KPL aggregated records read by an independent decoder: `aws-kinesis-agg` (PyPI,
//! the deaggregation library AWS publishes for Python consumers) through
//! `tests/python/kpl_deaggregate.py`. Every user record must come back with its data and
//! partition key, in order, and every protobuf must carry the proto2 `required` fields the
//! KCL's parser insists on.

mod common;

use std::path::Path;

use common::kpl::Read;
use firehose_relay::sink::kpl::{
    self, aggregate, max_data_len, pack, PartitionKeys, UserRecord, MAX_RECORD_BYTES,
};
use md5::Digest;

/// Kinesis records to hand to the decoder, with the user records each must give back.
#[derive(Default)]
struct Case {
    records: Vec<(String, String, Vec<u8>, Vec<UserRecord>)>,
}

impl Case {
    fn add(&mut self, name: &str, key: &str, blob: Vec<u8>, expected: Vec<UserRecord>) {
        self.records
            .push((name.to_owned(), key.to_owned(), blob, expected));
    }

    fn add_packed(&mut self, name: &str, records: &[Vec<u8>], keys: &PartitionKeys) {
        let packed = pack(
            records.iter().enumerate().map(|(i, r)| (i, &r[..])),
            keys,
            MAX_RECORD_BYTES,
        );
        assert!(packed.rejected.is_empty(), "{:?}", packed.rejected);
        for (i, a) in packed.aggregates.iter().enumerate() {
            assert!(a.kinesis_len() <= MAX_RECORD_BYTES);
            let expected = packed
                .indices(i)
                .iter()
                .map(|&r| UserRecord {
                    partition_key: a.partition_key.clone(),
                    explicit_hash_key: None,
                    data: records[r].clone(),
                })
                .collect();
            self.add(
                &format!("{name}-{i:03}"),
                &a.partition_key,
                a.data.clone(),
                expected,
            );
        }
    }

    /// Runs the decoder over the records, written to `dir`.
    fn read_back(&self, dir: &Path) -> Vec<Read> {
        let records: Vec<_> = self
            .records
            .iter()
            .map(|(name, key, blob, _)| (name.clone(), key.clone(), blob.clone()))
            .collect();
        common::kpl::deaggregate(dir, &records)
    }
}

fn json_line(n: usize, len: usize) -> Vec<u8> {
    let mut s = format!("{{\"n\":{n},\"msg\":\"").into_bytes();
    while s.len() < len - 3 {
        s.push(b'a' + (s.len() % 26) as u8);
    }
    s.extend_from_slice(b"\"}\n");
    s
}

fn compare(case: &Case, read: &[Read]) {
    assert_eq!(read.len(), case.records.len());
    let mut users = 0;
    for (name, _, _, expected) in &case.records {
        let got = read
            .iter()
            .find(|r| &r.name == name)
            .unwrap_or_else(|| panic!("{name}: not read back"));
        assert!(
            got.aggregated,
            "{name}: aws-kinesis-agg took it for a plain record"
        );
        assert!(got.complete, "{name}: a proto2 required field is missing");
        assert_eq!(got.records.len(), expected.len(), "{name}: user records");
        for (j, (g, e)) in got.records.iter().zip(expected).enumerate() {
            let data = g.data();
            assert!(data == e.data, "{name} record {j}: data differs");
            assert_eq!(g.partition_key, e.partition_key, "{name} record {j}");
            assert_eq!(
                g.explicit_hash_key, e.explicit_hash_key,
                "{name} record {j}"
            );
        }
        users += expected.len();
    }
    assert!(users > 0);
}

#[test]
fn aws_kinesis_agg_reads_back_every_record_the_relay_aggregated() {
    let dir = tempfile::tempdir().unwrap();
    let mut case = Case::default();

    // 12,000 JSON lines of 200 bytes: three full aggregated records, random keys.
    let lines: Vec<Vec<u8>> = (0..12_000).map(|n| json_line(n, 200)).collect();
    case.add_packed("lines", &lines, &PartitionKeys::Random);

    // Odd records under a fixed non-ASCII key: empty, every byte value, text, 300 KB.
    let odd = vec![
        Vec::new(),
        (0..=255u8).collect(),
        "héllo wörld ✓\n".as_bytes().to_vec(),
        vec![0u8; 300_000],
        b"\n".to_vec(),
    ];
    case.add_packed("odd", &odd, &PartitionKeys::Fixed("ключ-ü".into()));

    // The largest record one aggregated record takes: exactly 1 MiB with the key.
    let max = max_data_len(kpl::RANDOM_KEY_LEN, MAX_RECORD_BYTES).unwrap();
    let biggest = vec![json_line(0, max)];
    case.add_packed("max", &biggest, &PartitionKeys::Random);
    let last = &case.records.last().unwrap();
    assert_eq!(last.2.len() + last.1.len(), MAX_RECORD_BYTES);

    // The general encoder: several keys and explicit hash keys through the tables. Every
    // record has an explicit hash key: aws-kinesis-agg 1.2.3 does not look at whether a record
    // has one and reports entry 0 of the table for those without (the KCL checks).
    let mixed: Vec<UserRecord> = (0..50)
        .map(|i| UserRecord {
            partition_key: format!("key-{}", i % 7),
            explicit_hash_key: Some(format!("{}", u128::MAX - (i % 3) as u128)),
            data: json_line(i, 60 + i),
        })
        .collect();
    case.add("mixed", "outer", aggregate(&mixed), mixed);

    let read = case.read_back(dir.path());
    compare(&case, &read);
}

/// The check can fail: a flipped digest byte and a protobuf without `partition_key_index`
/// (what a proto3-style encoder writes for index 0) are both noticed by the decoder.
#[test]
fn the_independent_decoder_notices_a_bad_digest_and_a_missing_required_field() {
    let dir = tempfile::tempdir().unwrap();
    let mut case = Case::default();
    let mut bad = aggregate(&[UserRecord {
        partition_key: "k".into(),
        explicit_hash_key: None,
        data: b"hello".to_vec(),
    }]);
    let last = bad.len() - 1;
    bad[last] ^= 0x40;
    case.add("bad-digest", "k", bad, Vec::new());

    let protobuf: &[u8] = &[
        0x0A, 0x01, b'k', // partition_key_table = ["k"]
        0x1A, 0x07, 0x1A, 0x05, b'h', b'e', b'l', b'l', b'o', // a record with data only
    ];
    let mut proto3 = kpl::MAGIC.to_vec();
    proto3.extend_from_slice(protobuf);
    proto3.extend_from_slice(&md5::Md5::digest(protobuf));
    case.add("proto3-style", "k", proto3, Vec::new());

    let read = case.read_back(dir.path());
    assert!(
        !read[0].aggregated,
        "a wrong digest makes it a plain record"
    );
    assert!(read[1].aggregated);
    assert!(
        !read[1].complete,
        "index 0 left out: not a valid proto2 Record"
    );
}
