//! Arbitrary bytes into the forward stream decoder: it must never panic, and every record it
//! produces must be one valid JSON object (the `EventBatch` invariant).
#![no_main]

use firehose_relay::source::forward::{decode_stream, DecodeOptions, Message};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Small limits so that the size checks are exercised too.
    let opts = DecodeOptions {
        decompression_size_limit: 1 << 20,
        extra_fields: vec![("host".to_owned(), "127.0.0.1".to_owned())],
        ..DecodeOptions::default()
    };
    let (messages, _error) = decode_stream(data, 64 << 10, &opts);
    for m in messages {
        if let Message::Events(e) = m {
            for (_, record) in e.batch.iter() {
                let v: serde_json::Value = serde_json::from_str(record)
                    .unwrap_or_else(|err| panic!("invalid JSON {record:?}: {err}"));
                assert!(v.is_object(), "not an object: {record}");
            }
        }
    }
});
