use super::*;
use crate::buffer::{ChunkId, Records, RetryState};

const MIB: usize = 1024 * 1024;

fn chunk(records: &[Vec<u8>], delivered: &[usize]) -> Chunk {
    let mut r = Records::new();
    for rec in records {
        r.push(rec).unwrap();
    }
    Chunk::new(ChunkId(1), 0, r)
        .with_history(delivered.iter().copied().collect(), RetryState::default())
}

fn plain(partition_key: Option<&str>) -> PlainPacker {
    PlainPacker {
        partition_key: partition_key.map(str::to_owned),
        explicit_hash_key: None,
        gzip: false,
        max_record_bytes: MIB,
    }
}

#[test]
fn fields_are_read_from_the_top_level_only_and_without_copies() {
    let rec = br#"{"a":{"user":"nested"},"user":"u-1","n":12,"h":"340282366920938463463374607431768211455"}
"#;
    let f = read_fields(rec, Some("user"), Some("h"));
    assert_eq!(f.partition_key, Some(Cow::Borrowed("u-1")));
    assert!(matches!(f.partition_key, Some(Cow::Borrowed(_))));
    assert_eq!(
        f.explicit_hash_key.as_deref(),
        Some("340282366920938463463374607431768211455")
    );
    assert_eq!(
        read_fields(rec, Some("n"), None).partition_key.as_deref(),
        Some("12")
    );
    // Missing, null, empty, objects: no value. Not an object: nothing.
    for (rec, key) in [
        (&br#"{"x":1}"#[..], "user"),
        (br#"{"user":null}"#, "user"),
        (br#"{"user":""}"#, "user"),
        (br#"{"user":{"id":1}}"#, "user"),
        (br#"{"user":[1]}"#, "user"),
        (br#""user""#, "user"),
        (b"not json", "user"),
    ] {
        assert_eq!(
            read_fields(rec, Some(key), None),
            Fields::default(),
            "{rec:?}"
        );
    }
    // Escaped keys and values are compared and returned unescaped.
    let f = read_fields(br#"{"us\u0065r":"a\"b"}"#, Some("user"), None);
    assert_eq!(f.partition_key.as_deref(), Some("a\"b"));
}

#[test]
fn each_record_gets_its_field_or_a_random_key_and_missing_ones_are_counted() {
    let recs = vec![
        br#"{"k":"alpha","m":1}"#.to_vec(),
        br#"{"m":2}"#.to_vec(),
        br#"{"k":7}"#.to_vec(),
    ];
    let c = chunk(&recs, &[]);
    let out = plain(Some("k")).pack(&c);
    assert_eq!(out.records.len(), 3);
    assert_eq!(out.records[0].partition_key, "alpha");
    assert_eq!(out.records[1].partition_key.len(), 32);
    assert!(out.records[1]
        .partition_key
        .bytes()
        .all(|b| b.is_ascii_hexdigit()));
    assert_eq!(out.records[2].partition_key, "7");
    assert_eq!(out.random_keys_for_missing, 1);
    assert_eq!(out.records[0].data.bytes(&c), &recs[0][..]);
    // Without `partition_key` every key is random and nothing counts as missing.
    let out = plain(None).pack(&c);
    assert_eq!(out.random_keys_for_missing, 0);
    assert_ne!(out.records[0].partition_key, out.records[1].partition_key);
}

#[test]
fn delivered_records_are_skipped() {
    let recs: Vec<Vec<u8>> = (0..4)
        .map(|n| format!("{{\"n\":{n}}}\n").into_bytes())
        .collect();
    let c = chunk(&recs, &[0, 2]);
    let out = plain(None).pack(&c);
    assert_eq!(out.sources, vec![1, 3]);
    assert_eq!(out.chunk_indices(1), &[3]);
    assert_eq!(out.records[1].data.bytes(&c), &recs[3][..]);
}

/// A JSON record of exactly `len` bytes with partition key field `k` = `key`.
fn record_of(len: usize, key: &str) -> Vec<u8> {
    let head = format!("{{\"k\":\"{key}\",\"p\":\"");
    let mut r = head.into_bytes();
    r.resize(len - 2, b'x');
    r.extend_from_slice(b"\"}");
    r
}

#[test]
fn a_record_of_exactly_the_limit_with_its_key_is_taken_and_one_byte_more_is_rejected() {
    let key = "k".repeat(100);
    let exact = record_of(MIB - key.len(), &key);
    let over = record_of(MIB - key.len() + 1, &key);
    let c = chunk(&[exact.clone(), over], &[]);
    let out = plain(Some("k")).pack(&c);
    assert_eq!(out.records.len(), 1);
    assert_eq!(out.records[0].kinesis_len(), MIB);
    assert_eq!(out.sources, vec![0]);
    assert_eq!(out.rejected.len(), 1);
    let (index, reason) = &out.rejected[0];
    assert_eq!(*index, 1);
    assert!(
        reason.contains("1048477 bytes")
            && reason.contains("100-byte partition key")
            && reason.contains("1048577 bytes, over the limit of 1048576"),
        "{reason}"
    );
}

#[test]
fn unusable_keys_reject_the_record_with_the_reason() {
    let long = "é".repeat(257);
    let recs = vec![
        format!("{{\"k\":\"{long}\"}}").into_bytes(),
        format!("{{\"k\":\"{}\"}}", "é".repeat(256)).into_bytes(),
        br#"{"k":"a","h":"0123"}"#.to_vec(),
        br#"{"k":"a","h":"340282366920938463463374607431768211456"}"#.to_vec(),
        br#"{"k":"a","h":"340282366920938463463374607431768211455"}"#.to_vec(),
        br#"{"k":"a"}"#.to_vec(),
    ];
    let c = chunk(&recs, &[]);
    let packer = PlainPacker {
        explicit_hash_key: Some("h".into()),
        ..plain(Some("k"))
    };
    let out = packer.pack(&c);
    let rejected: Vec<usize> = out.rejected.iter().map(|(i, _)| *i).collect();
    assert_eq!(rejected, vec![0, 2, 3]);
    assert!(out.rejected[0]
        .1
        .contains("at most 256 Unicode characters, this one has 257"));
    assert!(out.rejected[1]
        .1
        .contains("decimal integer from 0 to 2^128-1"));
    assert_eq!(out.sources, vec![1, 4, 5]);
    assert_eq!(
        out.records[1].explicit_hash_key.as_deref(),
        Some("340282366920938463463374607431768211455")
    );
    assert_eq!(out.records[2].explicit_hash_key, None);
}

#[test]
fn gzip_compresses_each_record_and_the_limit_applies_after_compression() {
    let rec = record_of(MIB + 1000, "a");
    let c = chunk(std::slice::from_ref(&rec), &[]);
    let out = PlainPacker {
        gzip: true,
        ..plain(Some("k"))
    }
    .pack(&c);
    assert!(out.rejected.is_empty());
    let mut back = Vec::new();
    std::io::Read::read_to_end(
        &mut flate2::read::GzDecoder::new(out.records[0].data.bytes(&c)),
        &mut back,
    )
    .unwrap();
    assert_eq!(back, rec);
}
