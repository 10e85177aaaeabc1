//! Arbitrary bytes into the forward stream decoder: it must never panic, every record it
//! produces must be one valid JSON object (the `EventBatch` invariant), and no record may be
//! longer than `record_size_limit`: what passes it is described (time, size, a prefix of at
//! most 4 KiB), never materialised.
#![no_main]

use firehose_relay::event::Oversized;
use firehose_relay::source::forward::{decode_stream, DecodeOptions, Message};
use libfuzzer_sys::fuzz_target;

/// Small, so that inputs of a few KiB reach it (and the inflater's window of 64 KiB).
const RECORD_SIZE_LIMIT: usize = 2048;

fuzz_target!(|data: &[u8]| {
    // Small limits so that the size checks are exercised too.
    let opts = DecodeOptions {
        decompression_size_limit: 1 << 20,
        record_size_limit: RECORD_SIZE_LIMIT,
        extra_fields: vec![("host".to_owned(), "127.0.0.1".to_owned())],
        ..DecodeOptions::default()
    };
    let (messages, _error) = decode_stream(data, 64 << 10, &opts);
    for m in messages {
        if let Message::Events(e) = m {
            for (_, record) in e.batch.iter() {
                assert!(
                    record.len() <= RECORD_SIZE_LIMIT,
                    "a record of {} bytes passed the limit",
                    record.len()
                );
                let v: serde_json::Value = serde_json::from_str(record)
                    .unwrap_or_else(|err| panic!("invalid JSON {record:?}: {err}"));
                assert!(v.is_object(), "not an object: {record}");
            }
            for o in e.batch.oversized() {
                assert!(o.prefix.len() <= Oversized::PREFIX_BYTES);
                assert!(o.received_bytes > 0 && o.limit == RECORD_SIZE_LIMIT);
            }
        }
    }
});
