//! The decoder as a specification: one test per protocol rule.

use super::*;
use rmp::encode as enc;

const NOW: EventTime = EventTime(7_000_000_000);

/// Small msgpack writer for building test messages.
#[derive(Default)]
struct Mp(Vec<u8>);

impl Mp {
    fn arr(mut self, n: u32) -> Self {
        enc::write_array_len(&mut self.0, n).unwrap();
        self
    }
    fn map(mut self, n: u32) -> Self {
        enc::write_map_len(&mut self.0, n).unwrap();
        self
    }
    fn s(mut self, v: &str) -> Self {
        enc::write_str(&mut self.0, v).unwrap();
        self
    }
    fn raw_str(mut self, v: &[u8]) -> Self {
        enc::write_str_len(&mut self.0, v.len() as u32).unwrap();
        self.0.extend_from_slice(v);
        self
    }
    fn bin(mut self, v: &[u8]) -> Self {
        enc::write_bin(&mut self.0, v).unwrap();
        self
    }
    fn int(mut self, v: i64) -> Self {
        enc::write_sint(&mut self.0, v).unwrap();
        self
    }
    fn nil(mut self) -> Self {
        enc::write_nil(&mut self.0).unwrap();
        self
    }
    /// EventTime as fixext8.
    fn et(mut self, secs: u32, nanos: u32) -> Self {
        enc::write_ext_meta(&mut self.0, 8, 0).unwrap();
        self.0.extend_from_slice(&secs.to_be_bytes());
        self.0.extend_from_slice(&nanos.to_be_bytes());
        self
    }
    /// EventTime as ext8 (`C7 08 00`), which some clients send.
    fn et_ext8(mut self, secs: u32, nanos: u32) -> Self {
        self.0.extend_from_slice(&[0xc7, 0x08, 0x00]);
        self.0.extend_from_slice(&secs.to_be_bytes());
        self.0.extend_from_slice(&nanos.to_be_bytes());
        self
    }
    fn raw(mut self, bytes: &[u8]) -> Self {
        self.0.extend_from_slice(bytes);
        self
    }
    /// `{"msg": v}`
    fn rec(self, v: &str) -> Self {
        self.map(1).s("msg").s(v)
    }
}

fn decode(bytes: &[u8]) -> Result<Events, DecodeError> {
    decode_with(bytes, &DecodeOptions::default())
}

fn decode_with(bytes: &[u8], opts: &DecodeOptions) -> Result<Events, DecodeError> {
    match decode_message(bytes, opts, NOW)? {
        Message::Events(e) => Ok(e),
        Message::Keepalive => panic!("unexpected keepalive"),
    }
}

fn events(e: &Events) -> Vec<(i64, String)> {
    e.batch.iter().map(|(t, r)| (t.0, r.to_owned())).collect()
}

fn gzip(data: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    g.write_all(data).unwrap();
    g.finish().unwrap()
}

const S: i64 = 1_000_000_000;

#[test]
fn message_mode_with_integer_time() {
    let m = Mp::default().arr(3).s("app").int(1_600_000_000).rec("hi");
    let e = decode(&m.0).unwrap();
    assert_eq!(e.batch.tag(), "app");
    assert_eq!(
        events(&e),
        vec![(1_600_000_000 * S, r#"{"msg":"hi"}"#.into())]
    );
    assert_eq!(e.ack, None);
}

#[test]
fn message_mode_with_event_time_in_both_ext_forms() {
    for m in [
        Mp::default().arr(3).s("app").et(1_600_000_000, 5).rec("a"),
        Mp::default()
            .arr(3)
            .s("app")
            .et_ext8(1_600_000_000, 5)
            .rec("a"),
    ] {
        let e = decode(&m.0).unwrap();
        assert_eq!(events(&e)[0].0, 1_600_000_000 * S + 5);
    }
}

#[test]
fn zero_or_nil_time_means_now() {
    for m in [
        Mp::default().arr(3).s("a").int(0).rec("x"),
        Mp::default().arr(3).s("a").nil().rec("x"),
        Mp::default().arr(3).s("a").et(0, 0).rec("x"),
    ] {
        assert_eq!(events(&decode(&m.0).unwrap())[0].0, NOW.0);
    }
}

#[test]
fn chunk_option_asks_for_an_ack_echoing_the_chunk() {
    let m = Mp::default()
        .arr(4)
        .s("app")
        .int(1)
        .rec("x")
        .map(1)
        .s("chunk")
        .s("YWJj");
    let e = decode(&m.0).unwrap();
    let want = Mp::default().map(1).s("ack").s("YWJj").0;
    assert_eq!(e.ack, Some(want));
}

#[test]
fn forward_mode_with_options() {
    let m = Mp::default()
        .arr(3)
        .s("fw")
        .arr(2)
        .arr(2)
        .int(10)
        .rec("a")
        .arr(2)
        .et(11, 1)
        .rec("b")
        .map(2)
        .s("size")
        .int(2)
        .s("chunk")
        .s("id");
    let e = decode(&m.0).unwrap();
    assert_eq!(
        events(&e),
        vec![
            (10 * S, r#"{"msg":"a"}"#.into()),
            (11 * S + 1, r#"{"msg":"b"}"#.into())
        ]
    );
    assert!(e.ack.is_some());
}

fn packed_entries() -> Vec<u8> {
    Mp::default()
        .arr(2)
        .int(20)
        .rec("p1")
        .arr(2)
        .et(21, 2)
        .rec("p2")
        .0
}

#[test]
fn packed_forward_accepts_bin_and_str_payloads() {
    let payload = packed_entries();
    for m in [
        Mp::default().arr(2).s("pk").bin(&payload),
        Mp::default().arr(3).s("pk").raw_str(&payload).map(0),
    ] {
        let e = decode(&m.0).unwrap();
        assert_eq!(
            events(&e),
            vec![
                (20 * S, r#"{"msg":"p1"}"#.into()),
                (21 * S + 2, r#"{"msg":"p2"}"#.into())
            ]
        );
    }
}

#[test]
fn compressed_packed_forward_with_several_gzip_members() {
    let payload = packed_entries();
    let (a, b) = payload.split_at(7);
    let mut z = gzip(a);
    z.extend(gzip(b));
    let m = Mp::default()
        .arr(3)
        .s("gz")
        .bin(&z)
        .map(1)
        .s("compressed")
        .s("gzip");
    let e = decode(&m.0).unwrap();
    assert_eq!(e.batch.len(), 2);
}

#[test]
fn compressed_text_means_uncompressed() {
    let m = Mp::default()
        .arr(3)
        .s("t")
        .bin(&packed_entries())
        .map(1)
        .s("compressed")
        .s("text");
    assert_eq!(decode(&m.0).unwrap().batch.len(), 2);
}

#[test]
fn truncated_gzip_is_an_error() {
    let z = gzip(&packed_entries());
    let m = Mp::default()
        .arr(3)
        .s("gz")
        .bin(&z[..z.len() - 4])
        .map(1)
        .s("compressed")
        .s("gzip");
    assert!(matches!(decode(&m.0), Err(DecodeError::Gzip(_))));
}

#[test]
fn zip_bomb_is_stopped_at_the_decompression_limit() {
    let z = gzip(&vec![0u8; 1 << 20]);
    let m = Mp::default()
        .arr(3)
        .s("gz")
        .bin(&z)
        .map(1)
        .s("compressed")
        .s("gzip");
    let opts = DecodeOptions {
        decompression_size_limit: 64 << 10,
        ..Default::default()
    };
    assert_eq!(
        decode_with(&m.0, &opts),
        Err(DecodeError::DecompressedTooLarge { limit: 64 << 10 })
    );
}

#[test]
fn unknown_compression_is_an_error() {
    let m = Mp::default()
        .arr(3)
        .s("z")
        .bin(&[1])
        .map(1)
        .s("compressed")
        .s("zstd");
    assert!(matches!(
        decode(&m.0),
        Err(DecodeError::UnsupportedCompression(_))
    ));
}

#[test]
fn fluent_signal_time_with_metadata() {
    let payload = Mp::default()
        .arr(2)
        .arr(2)
        .et(30, 3)
        .map(1)
        .s("otel")
        .int(1)
        .rec("m")
        .0;
    let m = Mp::default()
        .arr(3)
        .s("fb")
        .bin(&payload)
        .map(1)
        .s("fluent_signal")
        .int(0);
    let e = decode(&m.0).unwrap();
    assert_eq!(events(&e), vec![(30 * S + 3, r#"{"msg":"m"}"#.into())]);
}

#[test]
fn nil_is_a_keepalive() {
    assert_eq!(
        decode_message(&[0xc0], &DecodeOptions::default(), NOW),
        Ok(Message::Keepalive)
    );
}

#[test]
fn invalid_events_are_skipped_and_the_rest_kept() {
    let m = Mp::default()
        .arr(2)
        .s("fw")
        .arr(4)
        .arr(2)
        .s("not a time")
        .rec("bad time")
        .arr(2)
        .int(1)
        .s("not a map")
        .int(5)
        .arr(2)
        .int(2)
        .rec("good");
    let e = decode(&m.0).unwrap();
    assert_eq!(events(&e), vec![(2 * S, r#"{"msg":"good"}"#.into())]);
    assert_eq!(e.invalid_events, 3);
}

#[test]
fn invalid_events_fail_the_message_when_not_skipped() {
    let m = Mp::default().arr(3).s("a").s("x").rec("y");
    let opts = DecodeOptions {
        skip_invalid_event: false,
        ..Default::default()
    };
    // Element [1] is a str, so this is PackedForward with a garbage payload → malformed.
    assert!(decode_with(&m.0, &opts).is_err());
    let m = Mp::default().arr(3).s("a").int(1).int(2);
    assert_eq!(
        decode_with(&m.0, &opts),
        Err(DecodeError::InvalidEvent("record is not a map"))
    );
    assert_eq!(decode(&m.0).unwrap().invalid_events, 1);
}

#[test]
fn bad_messages() {
    let cases: Vec<(Vec<u8>, &str)> = vec![
        (Mp::default().int(5).0, "wrong_type"),
        (Mp::default().map(0).0, "wrong_type"),
        (Mp::default().arr(1).s("a").0, "wrong_type"),
        (
            Mp::default().arr(3).int(1).int(1).rec("x").0,
            "tag_not_string",
        ),
        (
            Mp::default()
                .arr(3)
                .raw_str(&[0xff, 0xfe])
                .int(1)
                .rec("x")
                .0,
            "invalid_utf8",
        ),
        (
            Mp::default().arr(2).s("a").bin(&[0x92, 0x01]).0,
            "malformed",
        ),
        (Mp::default().arr(2).s("a").bin(&[0xc1]).0, "malformed"),
        (b"{\"json\":1}".to_vec(), "json"),
    ];
    for (bytes, reason) in cases {
        let err = decode(&bytes).unwrap_err();
        assert_eq!(err.reason(), reason, "{err}");
    }
}

#[test]
fn tag_prefix_and_extra_fields() {
    let m = Mp::default()
        .arr(3)
        .s("app")
        .int(1)
        .map(2)
        .s("host")
        .s("spoofed")
        .s("k")
        .int(1);
    let opts = DecodeOptions {
        tag_prefix: Some("fwd".into()),
        extra_fields: vec![("host".into(), "10.0.0.1".into())],
        ..Default::default()
    };
    let e = decode_with(&m.0, &opts).unwrap();
    assert_eq!(e.batch.tag(), "fwd.app");
    assert_eq!(events(&e)[0].1, r#"{"k":1,"host":"10.0.0.1"}"#);
    let empty = Mp::default().arr(3).s("app").int(1).map(0);
    assert_eq!(
        events(&decode_with(&empty.0, &opts).unwrap())[0].1,
        r#"{"host":"10.0.0.1"}"#
    );
}

#[test]
fn records_are_always_valid_json() {
    let m = Mp::default()
        .arr(3)
        .s("j")
        .int(1)
        .map(5)
        .s("bin")
        .bin(b"\x00raw\xff")
        .int(7)
        .s("int key")
        .s("nested")
        .map(1)
        .s("a")
        .arr(2)
        .nil()
        .raw(&[0xcb, 0x7f, 0xf0, 0, 0, 0, 0, 0, 0])
        .raw_str(b"bad\xc3")
        .s("v")
        .s("t")
        .et(1, 2);
    let e = decode(&m.0).unwrap();
    let (_, rec) = &events(&e)[0];
    let v: serde_json::Value = serde_json::from_str(rec).unwrap();
    assert_eq!(v["bin"], "\u{0}raw\u{fffd}");
    assert_eq!(v["7"], "int key");
    assert_eq!(v["nested"]["a"], serde_json::json!([null, null]));
    assert_eq!(v["bad\u{fffd}"], "v");
    assert!(rec.contains("\"t\":1.000000002"), "{rec}");
}

#[test]
fn decode_stream_stops_at_the_first_bad_message_keeping_earlier_ones() {
    let mut bytes = Mp::default().arr(3).s("a").int(1).rec("1").0;
    bytes.push(0xc0);
    bytes.extend(Mp::default().int(3).0);
    bytes.extend(Mp::default().arr(3).s("a").int(1).rec("never").0);
    let (msgs, err) = decode_stream(&bytes, 1 << 20, &DecodeOptions::default());
    assert_eq!(msgs.len(), 2);
    assert_eq!(err.map(|e| e.reason()), Some("wrong_type"));
}

#[test]
fn a_record_over_record_size_limit_is_described_and_the_others_kept() {
    let big = "x".repeat(5000);
    let m = Mp::default()
        .arr(3)
        .s("t")
        .arr(3)
        .arr(2)
        .int(1)
        .rec("a")
        .arr(2)
        .int(2)
        .rec(&big)
        .arr(2)
        .int(3)
        .rec("b")
        .map(1)
        .s("chunk")
        .s("c");
    let opts = DecodeOptions {
        record_size_limit: 1000,
        ..Default::default()
    };
    let e = decode_with(&m.0, &opts).unwrap();
    assert_eq!(
        events(&e),
        vec![
            (1_000_000_000, r#"{"msg":"a"}"#.to_owned()),
            (3_000_000_000, r#"{"msg":"b"}"#.to_owned())
        ]
    );
    assert!(e.ack.is_some(), "the message is still acknowledged");
    let o = &e.batch.oversized()[0];
    assert_eq!(o.time, EventTime(2_000_000_000));
    assert_eq!(o.received_bytes, Mp::default().rec(&big).0.len());
    assert!(o.prefix.starts_with(r#"{"msg":"#), "{}", o.prefix);
    assert!(o.prefix.len() <= 4096);
}

mod properties {
    use super::*;
    use proptest::prelude::*;

    fn assert_records_are_json_objects(e: &Events) {
        for (_, record) in e.batch.iter() {
            let v: serde_json::Value = serde_json::from_str(record)
                .unwrap_or_else(|err| panic!("invalid JSON {record:?}: {err}"));
            assert!(v.is_object());
        }
    }

    proptest! {
        /// Whatever follows a valid Message-mode prefix, decoding never panics and every
        /// record it yields is a JSON object.
        #[test]
        fn any_record_bytes_give_valid_json_or_an_error(tail in proptest::collection::vec(any::<u8>(), 0..256)) {
            let mut bytes = Mp::default().arr(3).s("t").int(1).0;
            bytes.extend(&tail);
            if let Ok(Message::Events(e)) = decode_message(&bytes, &DecodeOptions::default(), NOW) {
                assert_records_are_json_objects(&e);
            }
        }

        /// Same for arbitrary PackedForward payloads, with extra fields injected.
        #[test]
        fn any_packed_payload_gives_valid_json_or_an_error(payload in proptest::collection::vec(any::<u8>(), 0..256)) {
            let bytes = Mp::default().arr(2).s("t").bin(&payload).0;
            let opts = DecodeOptions {
                extra_fields: vec![("ip".into(), "::1".into())],
                ..Default::default()
            };
            if let Ok(Message::Events(e)) = decode_message(&bytes, &opts, NOW) {
                assert_records_are_json_objects(&e);
            }
        }

        /// With a small per-record bound, no record is longer than it, whatever the bytes.
        #[test]
        fn no_record_passes_record_size_limit(tail in proptest::collection::vec(any::<u8>(), 0..512)) {
            let mut bytes = Mp::default().arr(3).s("t").int(1).0;
            bytes.extend(&tail);
            let opts = DecodeOptions {
                record_size_limit: 32,
                ..Default::default()
            };
            if let Ok(Message::Events(e)) = decode_message(&bytes, &opts, NOW) {
                assert_records_are_json_objects(&e);
                for (_, r) in e.batch.iter() {
                    prop_assert!(r.len() <= 32, "{} bytes: {}", r.len(), r);
                }
            }
        }

        /// Framing a stream split at any point gives the same messages as framing it whole.
        #[test]
        fn framing_is_independent_of_how_bytes_arrive(split in 0usize..64) {
            let mut stream = Mp::default().arr(3).s("a").int(1).rec("x").0;
            stream.extend(Mp::default().arr(2).s("b").bin(&Mp::default().arr(2).int(2).rec("y").0).0);
            let split = split.min(stream.len());
            let mut f = crate::source::forward::msgpack::Framer::new(1 << 20);
            let first = f.advance(&stream[..split]).unwrap();
            let whole = crate::source::forward::msgpack::Framer::new(1 << 20).advance(&stream).unwrap();
            match first {
                Some(len) => prop_assert_eq!(Some(len), whole),
                None => prop_assert_eq!(f.advance(&stream).unwrap(), whole),
            }
        }
    }
}
