use md5::{Digest, Md5};
use proptest::prelude::*;

use super::proto::{AggregatedRecord, Record, Tag};
use super::*;
use crate::buffer::{Chunk, ChunkId, Records, RetryState};

fn user(key: &str, data: &[u8]) -> UserRecord {
    UserRecord {
        partition_key: key.to_owned(),
        explicit_hash_key: None,
        data: data.to_vec(),
    }
}

fn line(n: usize, len: usize) -> Vec<u8> {
    let mut s = format!("{{\"n\":{n},\"p\":\"").into_bytes();
    while s.len() < len - 3 {
        s.push(b'x');
    }
    s.extend_from_slice(b"\"}\n");
    s
}

#[test]
fn bytes_on_the_wire_are_magic_protobuf_md5_with_index_zero_written_out() {
    let mut a = Aggregator::new("k".to_owned(), MAX_RECORD_BYTES);
    assert!(a.try_push(b"hello"));
    assert!(a.try_push(b""));
    let (key, blob) = a.finish();
    assert_eq!(key, "k");
    let protobuf: &[u8] = &[
        0x0A, 0x01, b'k', // partition_key_table[0] = "k"
        0x1A, 0x09, // records[0], 9 bytes
        0x08, 0x00, // partition_key_index = 0, written although it is the default
        0x1A, 0x05, b'h', b'e', b'l', b'l', b'o', // data
        0x1A, 0x04, // records[1], 4 bytes
        0x08, 0x00, 0x1A, 0x00, // index 0, empty data: both present (proto2 required)
    ];
    let mut expected = MAGIC.to_vec();
    expected.extend_from_slice(protobuf);
    expected.extend_from_slice(&Md5::digest(protobuf));
    assert_eq!(blob, expected);
    assert_eq!(
        deaggregate(&blob).unwrap(),
        vec![user("k", b"hello"), user("k", b"")]
    );
}

#[test]
fn the_general_encoder_shares_keys_through_the_tables() {
    let records = vec![
        user("a", b"1"),
        UserRecord {
            partition_key: "b".into(),
            explicit_hash_key: Some("340282366920938463463374607431768211455".into()),
            data: b"2".to_vec(),
        },
        user("a", b"3"),
    ];
    let blob = aggregate(&records);
    let message = decode(&blob).unwrap();
    assert_eq!(message.partition_key_table, vec!["a", "b"]);
    assert_eq!(message.explicit_hash_key_table.len(), 1);
    assert_eq!(message.records[2].partition_key_index, 0);
    assert_eq!(deaggregate(&blob).unwrap(), records);
}

#[test]
fn broken_records_are_refused_with_the_reason() {
    let blob = aggregate(&[user("k", b"data")]);
    assert!(is_aggregated(&blob));
    assert_eq!(decode(b"plain record"), Err(KplError::NotAggregated));
    assert_eq!(decode(&blob[..20]), Err(KplError::NotAggregated));
    // Consumers take 20 bytes (no protobuf at all) for a plain record, so the packer never
    // writes an aggregate without records.
    assert_eq!(
        decode(&encode(&AggregatedRecord::default())),
        Err(KplError::NotAggregated)
    );
    let mut flipped = blob.clone();
    flipped[8] ^= 1;
    assert_eq!(decode(&flipped), Err(KplError::Digest));
    let mut bad_digest = blob.clone();
    let last = bad_digest.len() - 1;
    bad_digest[last] ^= 1;
    assert_eq!(decode(&bad_digest), Err(KplError::Digest));

    let not_protobuf = [0xFFu8; 7];
    let mut framed = MAGIC.to_vec();
    framed.extend_from_slice(&not_protobuf);
    framed.extend_from_slice(&Md5::digest(not_protobuf));
    assert!(matches!(decode(&framed), Err(KplError::Protobuf(_))));

    let out_of_table = encode(&AggregatedRecord {
        partition_key_table: vec!["k".into()],
        explicit_hash_key_table: vec![],
        records: vec![Record {
            partition_key_index: 1,
            explicit_hash_key_index: None,
            data: vec![1],
            tags: vec![],
        }],
    });
    assert_eq!(
        deaggregate(&out_of_table),
        Err(KplError::Index {
            record: 0,
            table: "partition key",
            index: 1,
            len: 1
        })
    );
}

#[test]
fn a_record_filling_the_limit_exactly_fits_and_one_byte_more_is_rejected() {
    // The figure the README and the intake limit's docs give: 96 bytes of overhead.
    assert_eq!(
        max_data_len(RANDOM_KEY_LEN, MAX_RECORD_BYTES),
        Some(1_048_480)
    );
    for keys in [
        PartitionKeys::Random,
        PartitionKeys::Fixed("k".into()),
        PartitionKeys::Fixed("ü".repeat(MAX_PARTITION_KEY_CHARS)),
    ] {
        let max = max_data_len(keys.key_len(), MAX_RECORD_BYTES).unwrap();
        assert_eq!(
            single_record_len(max, keys.key_len()),
            MAX_RECORD_BYTES,
            "{keys:?}: the largest record fills the limit exactly"
        );
        let fits = vec![b'x'; max];
        let over = vec![b'y'; max + 1];
        let packed = pack([(0, &fits[..]), (1, &over[..])], &keys, MAX_RECORD_BYTES);
        assert_eq!(packed.aggregates.len(), 1, "{keys:?}");
        let a = &packed.aggregates[0];
        assert_eq!(a.kinesis_len(), MAX_RECORD_BYTES, "{keys:?}");
        assert_eq!(a.partition_key.len(), keys.key_len());
        assert_eq!(deaggregate(&a.data).unwrap()[0].data, fits);
        assert_eq!(packed.rejected.len(), 1);
        assert_eq!(packed.rejected[0].0, 1);
        let reason = &packed.rejected[0].1;
        assert!(
            reason.contains(&format!("record is {} bytes", max + 1))
                && reason.contains(&format!("{} bytes", MAX_RECORD_BYTES + 1))
                && reason.contains("over the limit of 1048576 bytes per record"),
            "{reason}"
        );
    }
}

#[test]
fn an_aggregate_closes_exactly_when_the_next_record_would_pass_the_limit() {
    let key = PartitionKeys::Fixed("key".into());
    let line = line(0, 200);
    let entry = record_entry_len(line.len());
    let empty = Aggregator::new("key".into(), MAX_RECORD_BYTES).kinesis_len();
    // A limit that holds exactly three lines: three fit, the fourth starts a new aggregate.
    let limit = empty + 3 * entry;
    let records: Vec<_> = (0..7).map(|i| (i, &line[..])).collect();
    let packed = pack(records.iter().copied(), &key, limit);
    let counts: Vec<usize> = (0..packed.aggregates.len())
        .map(|i| packed.indices(i).len())
        .collect();
    assert_eq!(counts, vec![3, 3, 1]);
    assert_eq!(packed.aggregates[0].kinesis_len(), limit);
    let packed = pack(records.iter().copied(), &key, limit - 1);
    assert_eq!(packed.indices(0).len(), 2, "one byte less: two lines");
}

#[test]
fn a_chunk_packs_its_pending_records_in_order_under_one_key_per_aggregate() {
    let lines: Vec<Vec<u8>> = (0..12_000).map(|n| line(n, 200)).collect();
    let mut records = Records::new();
    for l in &lines {
        records.push(l).unwrap();
    }
    let delivered = [3usize, 4, 7000];
    let chunk = Chunk::new(ChunkId(1), 0, records)
        .with_history(delivered.iter().copied().collect(), RetryState::default());
    let packed = pack_chunk(&chunk, &PartitionKeys::Random, MAX_RECORD_BYTES);
    assert!(packed.rejected.is_empty());
    assert_eq!(
        packed.aggregates.len(),
        3,
        "about 5,000 lines of 200 bytes per MiB"
    );
    let mut back = Vec::new();
    let mut carried = Vec::new();
    for (i, a) in packed.aggregates.iter().enumerate() {
        assert!(a.kinesis_len() <= MAX_RECORD_BYTES);
        assert_eq!(a.partition_key.len(), RANDOM_KEY_LEN);
        assert!(a.partition_key.bytes().all(|b| b.is_ascii_hexdigit()));
        let users = deaggregate(&a.data).unwrap();
        assert_eq!(users.len(), packed.indices(i).len());
        assert!(users.iter().all(|u| u.partition_key == a.partition_key));
        back.extend(users.into_iter().map(|u| u.data));
        carried.extend_from_slice(packed.indices(i));
    }
    let expected: Vec<usize> = (0..lines.len())
        .filter(|i| !delivered.contains(i))
        .collect();
    assert_eq!(carried, expected);
    let expected_data: Vec<Vec<u8>> = expected.iter().map(|&i| lines[i].clone()).collect();
    assert_eq!(back, expected_data);
    let keys: std::collections::HashSet<_> =
        packed.aggregates.iter().map(|a| &a.partition_key).collect();
    assert_eq!(keys.len(), 3, "a random key per aggregated record");

    let fixed = pack_chunk(
        &chunk,
        &PartitionKeys::Fixed("app".into()),
        MAX_RECORD_BYTES,
    );
    assert!(fixed.aggregates.iter().all(|a| a.partition_key == "app"));
}

#[test]
fn partition_keys_are_checked_in_unicode_characters() {
    assert!(partition_key_problem("").is_some());
    assert!(partition_key_problem("a").is_none());
    assert!(partition_key_problem(&"ü".repeat(256)).is_none());
    let long = partition_key_problem(&"ü".repeat(257)).unwrap();
    assert!(long.contains("257"), "{long}");
}

fn any_user_record() -> impl Strategy<Value = UserRecord> {
    (
        prop::sample::select(vec!["a", "key-2", "ü", "0123456789abcdef0123456789abcdef"]),
        prop::option::of(prop::sample::select(vec!["0", "17", "99999"])),
        prop::collection::vec(any::<u8>(), 0..300),
    )
        .prop_map(|(k, h, data)| UserRecord {
            partition_key: k.to_owned(),
            explicit_hash_key: h.map(str::to_owned),
            data,
        })
}

fn any_message() -> impl Strategy<Value = AggregatedRecord> {
    let record = (
        any::<u64>(),
        prop::option::of(any::<u64>()),
        prop::collection::vec(any::<u8>(), 0..64),
        prop::collection::vec((".{0,4}", prop::option::of(".{0,4}")), 0..2),
    )
        .prop_map(|(pk, ehk, data, tags)| Record {
            partition_key_index: pk,
            explicit_hash_key_index: ehk,
            data,
            tags: tags
                .into_iter()
                .map(|(key, value)| Tag { key, value })
                .collect(),
        });
    (
        prop::collection::vec(".{0,8}", 0..4),
        prop::collection::vec("[0-9]{1,39}", 0..3),
        prop::collection::vec(record, 1..20),
    )
        .prop_map(|(p, e, r)| AggregatedRecord {
            partition_key_table: p,
            explicit_hash_key_table: e,
            records: r,
        })
}

proptest! {
    #[test]
    fn decode_inverts_encode(message in any_message()) {
        prop_assert_eq!(decode(&encode(&message)).unwrap(), message);
    }

    #[test]
    fn deaggregate_inverts_aggregate(records in prop::collection::vec(any_user_record(), 1..40)) {
        prop_assert_eq!(deaggregate(&aggregate(&records)).unwrap(), records);
    }

    /// Packing never passes the limit, fills each aggregate until the next record would pass
    /// it, rejects exactly the records too large alone, and every other record comes back in
    /// order under its aggregate's key. The sizes are the bytes written, not the arithmetic.
    #[test]
    fn packing_stays_within_the_limit_and_loses_nothing(
        lens in prop::collection::vec(0usize..400, 0..60),
        limit in 30usize..1500,
        fixed in prop::option::of("[a-z]{1,12}"),
    ) {
        let keys = fixed.map_or(PartitionKeys::Random, PartitionKeys::Fixed);
        let data: Vec<Vec<u8>> =
            lens.iter().enumerate().map(|(i, &n)| vec![i as u8; n]).collect();
        let packed = pack(data.iter().enumerate().map(|(i, d)| (i, &d[..])), &keys, limit);
        let max = max_data_len(keys.key_len(), limit);
        let too_large: Vec<usize> = (0..data.len())
            .filter(|&i| max.is_none_or(|m| data[i].len() > m))
            .collect();
        prop_assert_eq!(
            packed.rejected.iter().map(|r| r.0).collect::<Vec<_>>(),
            too_large.clone()
        );
        let mut carried = Vec::new();
        for (i, a) in packed.aggregates.iter().enumerate() {
            prop_assert!(a.kinesis_len() <= limit, "{} > {}", a.kinesis_len(), limit);
            let users = deaggregate(&a.data).unwrap();
            prop_assert_eq!(users.len(), packed.indices(i).len());
            for (u, &idx) in users.iter().zip(packed.indices(i)) {
                prop_assert_eq!(&u.data, &data[idx]);
                prop_assert_eq!(&u.partition_key, &a.partition_key);
            }
            if let Some(next) = packed.aggregates.get(i + 1) {
                let first = packed.sources[next.sources.start];
                prop_assert!(
                    a.kinesis_len() + record_entry_len(data[first].len()) > limit,
                    "aggregate {} closed early", i
                );
            }
            carried.extend_from_slice(packed.indices(i));
        }
        let expected: Vec<usize> =
            (0..data.len()).filter(|i| !too_large.contains(i)).collect();
        prop_assert_eq!(carried, expected);
    }

    /// The running size matches what the bytes come to, record by record.
    #[test]
    fn the_size_arithmetic_is_exact(
        lens in prop::collection::vec(0usize..20_000, 1..12),
        key in ".{1,40}",
    ) {
        let mut a = Aggregator::new(key.clone(), usize::MAX);
        for (i, &n) in lens.iter().enumerate() {
            prop_assert!(a.try_push(&vec![7u8; n]));
            let mut copy = Aggregator::new(key.clone(), usize::MAX);
            for &m in &lens[..=i] {
                copy.try_push(&vec![7u8; m]);
            }
            let (k, blob) = copy.finish();
            prop_assert_eq!(a.kinesis_len(), blob.len() + k.len());
        }
        if lens.len() == 1 {
            prop_assert_eq!(single_record_len(lens[0], key.len()), a.kinesis_len());
        }
    }
}
