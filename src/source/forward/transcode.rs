//! msgpack → JSON text, written straight into the batch's string (no value tree, no
//! per-record allocation). Strings are escaped by [`crate::json_text`].
//!
//! msgpack can express things JSON cannot; these are the choices, made so that every output is
//! valid JSON and no client can make a record disappear by sending an odd type:
//!
//! | msgpack | JSON |
//! |---|---|
//! | str with invalid UTF-8 | string, invalid sequences replaced by U+FFFD (Fluentd passes raw bytes, which a JSON consumer such as Firehose → S3 → Athena would reject anyway) |
//! | bin | string, decoded as UTF-8 with replacement (old clients send text as bin; base64 would make it unreadable) |
//! | float NaN / ±inf | `null` |
//! | ext 0 with 8 bytes (EventTime) | number of seconds with 9 decimals, e.g. `1602750078.081312494` |
//! | other ext | string: base64 of the payload |
//! | map key that is not a str | its JSON text as a string: `1` → `"1"`, `nil` → `"null"`, `[1,2]` → `"[1,2]"`; bin keys as text. Inside such a key, a key that is itself an array or map becomes `"<array>"` / `"<map>"`: each level of keys-in-keys would escape the text again and double its size, so a few hundred bytes could otherwise expand to gigabytes (found by the fuzzer) |
//! | duplicate keys | kept as they are (JSON parsers keep the last one) |
//!
//! Nesting is limited to [`MAX_DEPTH`] so that a hostile record cannot exhaust the stack, and
//! the text written is limited by the caller's `limit` (an absolute length of `out`): writing
//! stops with [`DecodeError::RecordTooLarge`] as soon as a value would pass it. A string is
//! checked before it is written (its JSON is at least as long as its bytes) and containers after
//! each element, so a record is never materialised beyond its bound: at most one string's
//! escaping (up to 6 bytes per byte of what was still allowed) goes past it.
//!
//! A record's keys, and its short string values, are mostly the bytes of the record before
//! (a log stream's records share their fields): [`Repeats`] keeps the JSON text of each
//! position's string from the last record, and a string equal to it is written from there,
//! without checking its UTF-8 or looking for bytes to escape again. That made decoding about
//! 40 % cheaper (`benches/forward_decode.rs`, 1,000 records of seven short fields: 319–391 µs
//! → 187–229 µs per message, alternating runs; the e2e bench's relay under `perf`, records of
//! three fields and a 155-byte message: 243 → 138 ms of decoding per million records).
//! Positions count every string written, nested maps' too: records shaped as Fluent Bit's
//! Kubernetes filter leaves them (`forward_decode`'s `packed_kubernetes`) decode in 275–343 µs
//! per 1,000 instead of 427–488 µs with top-level strings only; the flat records unchanged
//! (171–191 against 167–220 µs; alternating runs, load 3–3.8).

use base64::Engine;

use super::decode::DecodeError;
use super::msgpack::{Cursor, Item};
use crate::json_text::{write_bytes_as_string, write_escaped};

/// Deepest array/map nesting accepted inside a record.
pub const MAX_DEPTH: usize = 64;

/// Strings of a record remembered by [`Repeats`]: its first 64 (keys and values, nested ones
/// included, in the order they are written).
const MAX_REPEAT_SLOTS: usize = 64;
/// Longest string [`Repeats`] remembers: longer ones are seldom repeated (messages), and
/// comparing them costs about what checking them does.
const MAX_REPEAT_LEN: usize = 64;
/// A position whose string changed this many times more often than it repeated is no
/// longer remembered (a value that differs in every record: copying it would be wasted).
const MAX_REPEAT_MISSES: u32 = 8;

/// The strings of the last record, by position (the N-th string key or value written, at any
/// depth: records of the same shape put the same key at the same position), with their JSON
/// text. Kept for one message.
#[derive(Default)]
pub struct Repeats {
    slots: Vec<Slot>,
    /// Position of the next string of the record being written.
    next: usize,
}

#[derive(Default)]
struct Slot {
    bytes: Vec<u8>,
    json: String,
    /// Times the string differed from the last one, less the times it repeated.
    misses: u32,
}

impl Repeats {
    /// Writes `b` (a str or bin, key or value: the record's next string) as a JSON string into
    /// `out`, from the text remembered at its position when it is the same string; `out` stays
    /// within `limit`.
    fn write(&mut self, b: &[u8], out: &mut String, limit: usize) -> Result<(), DecodeError> {
        let slot = self.next;
        self.next += 1;
        if slot >= MAX_REPEAT_SLOTS || b.len() > MAX_REPEAT_LEN {
            room(out, limit, b.len() + 2)?;
            write_bytes_as_string(out, b);
            return Ok(());
        }
        if self.slots.len() <= slot {
            self.slots.resize_with(slot + 1, Slot::default);
        }
        let s = &mut self.slots[slot];
        // The same check as the string's own below, so that a record past its limit stops at
        // the same place either way.
        room(out, limit, b.len() + 2)?;
        if s.bytes == b && !s.json.is_empty() {
            out.push_str(&s.json);
            s.misses = s.misses.saturating_sub(1);
            return Ok(());
        }
        let start = out.len();
        write_bytes_as_string(out, b);
        if s.misses < MAX_REPEAT_MISSES {
            s.misses += 1;
            s.bytes.clear();
            s.bytes.extend_from_slice(b);
            s.json.clear();
            s.json.push_str(&out[start..]);
        }
        Ok(())
    }
}

/// Writes the JSON object of a record map of `n` pairs (header already read) into `out`,
/// `extra` fields replacing the record's own of the same name, keeping `out` within `limit`.
/// Its string keys and values go through `repeats`.
pub fn write_record(
    cur: &mut Cursor<'_>,
    n: u32,
    out: &mut String,
    limit: usize,
    extra: &[(String, String)],
    repeats: &mut Repeats,
) -> Result<(), DecodeError> {
    repeats.next = 0;
    out.push('{');
    let mut first = true;
    for _ in 0..n {
        let key = cur.next_item()?;
        if let Item::Str(k) = key {
            if extra.iter().any(|(name, _)| name.as_bytes() == k) {
                cur.skip_values(1)?;
                continue;
            }
        }
        if !first {
            out.push(',');
        }
        first = false;
        // Strings at the top, the most common case, without the call.
        match key {
            Item::Str(b) | Item::Bin(b) => repeats.write(b, out, limit)?,
            other => key_text(cur, other, out, 1, false, limit, repeats)?,
        }
        out.push(':');
        match cur.next_item()? {
            Item::Str(b) | Item::Bin(b) => repeats.write(b, out, limit)?,
            value => write_value(cur, value, out, 1, false, limit, repeats)?,
        }
    }
    for (name, value) in extra {
        if !first {
            out.push(',');
        }
        first = false;
        write_escaped(out, name);
        out.push(':');
        write_escaped(out, value);
    }
    out.push('}');
    if out.len() > limit {
        return Err(DecodeError::RecordTooLarge);
    }
    Ok(())
}

fn write_f64(out: &mut String, v: f64) {
    if v.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(v));
    } else {
        out.push_str("null");
    }
}

fn write_f32(out: &mut String, v: f32) {
    if v.is_finite() {
        out.push_str(ryu::Buffer::new().format_finite(v));
    } else {
        out.push_str("null");
    }
}

/// Fails when `out` plus `adding` bytes would be longer than `limit`.
#[inline]
fn room(out: &str, limit: usize, adding: usize) -> Result<(), DecodeError> {
    if out.len().saturating_add(adding) > limit {
        Err(DecodeError::RecordTooLarge)
    } else {
        Ok(())
    }
}

/// Writes the value that starts with `item` (already read from `cur`), keeping `out` within
/// `limit` bytes.
pub fn write_item(
    cur: &mut Cursor<'_>,
    item: Item<'_>,
    out: &mut String,
    depth: usize,
    limit: usize,
) -> Result<(), DecodeError> {
    write_value(cur, item, out, depth, false, limit, &mut Repeats::default())
}

/// `in_key`: the value is being rendered as the text of a non-string map key (its strings do
/// not go through `repeats`).
fn write_value(
    cur: &mut Cursor<'_>,
    item: Item<'_>,
    out: &mut String,
    depth: usize,
    in_key: bool,
    limit: usize,
    repeats: &mut Repeats,
) -> Result<(), DecodeError> {
    match item {
        Item::Nil => out.push_str("null"),
        Item::Bool(true) => out.push_str("true"),
        Item::Bool(false) => out.push_str("false"),
        Item::Uint(v) => out.push_str(itoa::Buffer::new().format(v)),
        Item::Int(v) => out.push_str(itoa::Buffer::new().format(v)),
        Item::F32(v) => write_f32(out, v),
        Item::F64(v) => write_f64(out, v),
        Item::Str(b) | Item::Bin(b) if !in_key => repeats.write(b, out, limit)?,
        Item::Str(b) | Item::Bin(b) => {
            room(out, limit, b.len() + 2)?;
            write_bytes_as_string(out, b);
        }
        Item::Ext(0, p) if p.len() == 8 => {
            let secs = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
            let nanos = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
            out.push_str(itoa::Buffer::new().format(secs));
            out.push('.');
            let n = nanos.min(999_999_999);
            let digits = itoa::Buffer::new().format(n).len();
            for _ in digits..9 {
                out.push('0');
            }
            out.push_str(itoa::Buffer::new().format(n));
        }
        Item::Ext(_, p) => {
            room(out, limit, p.len() + 2)?;
            out.push('"');
            base64::engine::general_purpose::STANDARD.encode_string(p, out);
            out.push('"');
        }
        Item::Array(n) => {
            let depth = enter(depth)?;
            out.push('[');
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                let child = cur.next_item()?;
                write_value(cur, child, out, depth, in_key, limit, repeats)?;
                room(out, limit, 0)?;
            }
            out.push(']');
        }
        Item::Map(n) => {
            let depth = enter(depth)?;
            out.push('{');
            for i in 0..n {
                if i > 0 {
                    out.push(',');
                }
                let key = cur.next_item()?;
                key_text(cur, key, out, depth, in_key, limit, repeats)?;
                out.push(':');
                let value = cur.next_item()?;
                write_value(cur, value, out, depth, in_key, limit, repeats)?;
                room(out, limit, 0)?;
            }
            out.push('}');
        }
    }
    Ok(())
}

fn enter(depth: usize) -> Result<usize, DecodeError> {
    if depth >= MAX_DEPTH {
        Err(DecodeError::TooDeep { limit: MAX_DEPTH })
    } else {
        Ok(depth + 1)
    }
}

/// Writes a map key: strings as they are, anything else as its JSON text in a string; `out`
/// stays within `limit` bytes.
fn key_text(
    cur: &mut Cursor<'_>,
    key: Item<'_>,
    out: &mut String,
    depth: usize,
    in_key: bool,
    limit: usize,
    repeats: &mut Repeats,
) -> Result<(), DecodeError> {
    match key {
        Item::Str(b) | Item::Bin(b) if !in_key => repeats.write(b, out, limit)?,
        Item::Str(b) | Item::Bin(b) => {
            room(out, limit, b.len() + 2)?;
            write_bytes_as_string(out, b);
        }
        Item::Array(_) | Item::Map(_) if in_key => {
            cur.skip_children(&key)?;
            out.push_str(if matches!(key, Item::Array(_)) {
                "\"<array>\""
            } else {
                "\"<map>\""
            });
        }
        other => {
            // Escaping only lengthens the text: what is left of the limit bounds it too.
            let mut text = String::new();
            let left = limit.saturating_sub(out.len());
            write_value(cur, other, &mut text, depth, true, left, repeats)?;
            write_escaped(out, &text);
            room(out, limit, 0)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn transcode(bytes: &[u8]) -> Result<String, DecodeError> {
        let mut cur = Cursor::new(bytes);
        let item = cur.next_item()?;
        let mut out = String::new();
        write_item(&mut cur, item, &mut out, 0, usize::MAX)?;
        Ok(out)
    }

    #[test]
    fn invalid_utf8_becomes_replacement_characters() {
        assert_eq!(transcode(&[0xa2, 0xff, b'a']).unwrap(), "\"\u{fffd}a\"");
    }

    #[test]
    fn non_finite_floats_become_null() {
        let nan = [0xcb, 0x7f, 0xf8, 0, 0, 0, 0, 0, 0];
        assert_eq!(transcode(&nan).unwrap(), "null");
        let one_half = [0xca, 0x3f, 0x00, 0x00, 0x00];
        assert_eq!(transcode(&one_half).unwrap(), "0.5");
    }

    #[test]
    fn non_string_keys_are_stringified() {
        // {1: true, nil: 2, [1, "x"]: 3}
        let bytes = [0x83, 0x01, 0xc3, 0xc0, 0x02, 0x92, 0x01, 0xa1, b'x', 0x03];
        let json = transcode(&bytes).unwrap();
        assert_eq!(json, r#"{"1":true,"null":2,"[1,\"x\"]":3}"#);
        serde_json::from_str::<serde_json::Value>(&json).unwrap();
    }

    #[test]
    fn keys_nested_in_keys_cannot_amplify_the_output() {
        // Found by the fuzzer: maps used as keys of maps used as keys... re-escaped at every
        // level, 300 bytes of msgpack asked for gigabytes of JSON.
        let mut bytes = vec![0x81; 40];
        bytes.extend([0x01, 0x02]);
        bytes.extend(vec![0x03; 39]);
        let json = transcode(&bytes).unwrap();
        assert!(json.len() < 200, "{} bytes: {json}", json.len());
        serde_json::from_str::<serde_json::Value>(&json).unwrap();
        // {{1: 2}: 3} keeps the inner map's text.
        assert_eq!(
            transcode(&[0x81, 0x81, 0x01, 0x02, 0x03]).unwrap(),
            r#"{"{\"1\":2}":3}"#
        );
    }

    #[test]
    fn event_time_and_other_ext_values() {
        let et = [0xd7, 0x00, 0x5f, 0x88, 0x07, 0x7e, 0x04, 0xd9, 0x8b, 0x6e];
        assert_eq!(transcode(&et).unwrap(), "1602750334.081365870");
        let other = [0xd4, 0x05, 0xff];
        assert_eq!(transcode(&other).unwrap(), "\"/w==\"");
    }

    #[test]
    fn writing_stops_at_the_limit_whatever_makes_the_text_grow() {
        let limit = 1000;
        // A string of control characters (1 byte → 6), a map of many nils (2 bytes → 9), an
        // array of small floats, keys that are arrays: each passes the limit quickly.
        let mut control = vec![0xdb];
        control.extend(100_000u32.to_be_bytes());
        control.extend(vec![0x01; 100_000]);
        let mut nils = vec![0xdf];
        nils.extend(100_000u32.to_be_bytes());
        for _ in 0..100_000 {
            nils.extend([0x01, 0xc0]);
        }
        let mut floats = vec![0xdd];
        floats.extend(100_000u32.to_be_bytes());
        for _ in 0..100_000 {
            floats.extend([0xca, 0x3f, 0x00, 0x00, 0x00]);
        }
        let mut array_keys = vec![0xdf];
        array_keys.extend(100_000u32.to_be_bytes());
        for _ in 0..100_000 {
            array_keys.extend([0x92, 0x01, 0x02, 0xc0]);
        }
        for bytes in [control, nils, floats, array_keys] {
            let mut cur = Cursor::new(&bytes);
            let item = cur.next_item().unwrap();
            let mut out = String::new();
            assert_eq!(
                write_item(&mut cur, item, &mut out, 0, limit),
                Err(DecodeError::RecordTooLarge)
            );
            assert!(out.len() <= limit + 64, "{} bytes written", out.len());
        }
    }

    #[test]
    fn nesting_beyond_the_limit_is_an_error() {
        let mut bytes = vec![0x91; MAX_DEPTH + 1];
        bytes.push(0xc0);
        assert_eq!(
            transcode(&bytes),
            Err(DecodeError::TooDeep { limit: MAX_DEPTH })
        );
    }

    mod repeats {
        use super::*;
        use proptest::prelude::*;

        /// A msgpack str (`bin` false) or bin of `b`.
        fn string(out: &mut Vec<u8>, b: &[u8], bin: bool) {
            out.extend([if bin { 0xc4 } else { 0xd9 }, b.len() as u8]);
            out.extend(b);
        }

        #[derive(Debug, Clone)]
        enum Value {
            Str(Vec<u8>),
            Bin(Vec<u8>),
            Int(u8),
            Nil,
            Map(Vec<(Vec<u8>, Vec<u8>)>),
        }

        fn encode(out: &mut Vec<u8>, v: &Value) {
            match v {
                Value::Str(b) => string(out, b, false),
                Value::Bin(b) => string(out, b, true),
                Value::Int(i) => out.push(i & 0x7f),
                Value::Nil => out.push(0xc0),
                Value::Map(pairs) => {
                    out.push(0x80 | pairs.len() as u8);
                    for (k, v) in pairs {
                        string(out, k, false);
                        string(out, v, false);
                    }
                }
            }
        }

        /// Few distinct strings, so that records repeat each other's: plain, needing escapes,
        /// invalid UTF-8, multi-byte, longer than what is remembered, and arbitrary.
        fn text() -> impl Strategy<Value = Vec<u8>> {
            prop_oneof![
                Just(b"message".to_vec()),
                Just(b"a\"b\\".to_vec()),
                Just(vec![0xff, b'x', 0xc3]),
                Just("h\u{e9}\u{1f600}".as_bytes().to_vec()),
                Just(vec![1, b'\n']),
                Just(Vec::new()),
                Just(vec![b'k'; MAX_REPEAT_LEN + 1]),
                proptest::collection::vec(any::<u8>(), 0..6),
            ]
        }

        fn value() -> impl Strategy<Value = Value> {
            prop_oneof![
                text().prop_map(Value::Str),
                text().prop_map(Value::Bin),
                any::<u8>().prop_map(Value::Int),
                Just(Value::Nil),
                proptest::collection::vec((text(), text()), 0..3).prop_map(Value::Map),
            ]
        }

        /// A record map: keys are str, bin or int.
        fn record() -> impl Strategy<Value = Vec<u8>> {
            proptest::collection::vec((value(), value()), 0..6).prop_map(|fields| {
                let mut out = vec![0x80 | fields.len() as u8];
                for (k, v) in &fields {
                    let k = match k {
                        Value::Map(_) | Value::Nil => Value::Int(7),
                        k => k.clone(),
                    };
                    encode(&mut out, &k);
                    encode(&mut out, v);
                }
                out
            })
        }

        /// Writes each record after the text of the ones before (as a batch does), within
        /// `limit` bytes of its own, through `repeats` or, when `None`, a fresh one each.
        fn write_all(
            records: &[Vec<u8>],
            limit: usize,
            mut repeats: Option<&mut Repeats>,
        ) -> Vec<(Result<(), DecodeError>, String)> {
            let mut out = String::new();
            let extra = [("host".to_owned(), "relay".to_owned())];
            let mut results = Vec::new();
            for r in records {
                let mut cur = Cursor::new(r);
                let Ok(Item::Map(n)) = cur.next_item() else {
                    panic!("not a map")
                };
                let start = out.len();
                let mut fresh = Repeats::default();
                let repeats = repeats.as_deref_mut().unwrap_or(&mut fresh);
                let res = write_record(
                    &mut cur,
                    n,
                    &mut out,
                    start.saturating_add(limit),
                    &extra,
                    repeats,
                );
                results.push((res, out[start..].to_owned()));
            }
            results
        }

        proptest! {
            // Regression seeds live next to this file, not in a top-level directory.
            #![proptest_config(ProptestConfig {
                failure_persistence: Some(Box::new(
                    proptest::test_runner::FileFailurePersistence::WithSource(
                        "proptest-regressions",
                    ),
                )),
                ..ProptestConfig::default()
            })]

            /// Records written with the strings of the ones before remembered are written
            /// exactly as without (text, errors, and the text up to an error), whatever the
            /// strings, their positions and the record size limit.
            #[test]
            fn remembered_strings_change_nothing(
                records in proptest::collection::vec(record(), 1..12),
                limit in prop_oneof![Just(usize::MAX), 4usize..160],
            ) {
                let mut repeats = Repeats::default();
                let shared = write_all(&records, limit, Some(&mut repeats));
                prop_assert_eq!(shared, write_all(&records, limit, None));
            }
        }

        #[test]
        fn a_repeated_string_is_written_from_the_last_record() {
            // {"k\"": "v"} twice, then {"k\"": "w"}.
            let rec = |v: u8| vec![0x81, 0xa2, b'k', b'"', 0xa1, v];
            let mut repeats = Repeats::default();
            let mut out = String::new();
            for v in [b'v', b'v', b'w'] {
                let r = rec(v);
                let mut cur = Cursor::new(&r);
                assert_eq!(cur.next_item(), Ok(Item::Map(1)));
                write_record(&mut cur, 1, &mut out, usize::MAX, &[], &mut repeats).unwrap();
            }
            assert_eq!(out, r#"{"k\"":"v"}{"k\"":"v"}{"k\"":"w"}"#);
            assert_eq!(repeats.slots[0].json, r#""k\"""#);
            assert_eq!(repeats.slots[1].json, r#""w""#);
        }
    }
}
