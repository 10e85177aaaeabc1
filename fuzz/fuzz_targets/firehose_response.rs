//! Arbitrary bytes as a PutRecordBatch response body: neither reader may panic, and the fast
//! reader of Firehose's own spelling must never accept a body that serde_json refuses or reads
//! differently.
#![no_main]

use firehose_relay::sink::firehose::response::check_readers_agree;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    check_readers_agree(data);
});
