//! msgpack → JSON text, written straight into the batch's string (no value tree, no
//! per-record allocation).
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
//! Nesting is limited to [`MAX_DEPTH`] so that a hostile record cannot exhaust the stack.

use base64::Engine;

use super::decode::DecodeError;
use super::msgpack::{Cursor, Item};

/// Deepest array/map nesting accepted inside a record.
pub const MAX_DEPTH: usize = 64;

/// Bytes that must be escaped inside a JSON string: `"`, `\` and control characters.
static ESCAPE: [bool; 256] = {
    let mut t = [false; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = true;
        i += 1;
    }
    t[b'"' as usize] = true;
    t[b'\\' as usize] = true;
    t
};

/// `0x01` in every byte of a word.
const ONES: u64 = 0x0101_0101_0101_0101;
/// The high bit of every byte of a word.
const HIGHS: u64 = 0x8080_8080_8080_8080;

/// For 8 bytes read little-endian: a high bit set in the byte of the *first* byte that must
/// be escaped (the lowest set bit is exact; bits above it may be spurious), 0 if none is.
/// `x - 0x01…` borrows into a byte's high bit only where that byte was 0 (or a borrow came
/// from below, i.e. above an earlier hit); `& !x` drops bytes that had it set already (UTF-8
/// bytes ≥ 0x80).
#[inline]
fn escape_mask(w: u64) -> u64 {
    let control = w.wrapping_sub(ONES * 0x20) & !w;
    let q = w ^ (ONES * u64::from(b'"'));
    let quote = q.wrapping_sub(ONES) & !q;
    let b = w ^ (ONES * u64::from(b'\\'));
    let backslash = b.wrapping_sub(ONES) & !b;
    (control | quote | backslash) & HIGHS
}

/// Position of the first byte of `bytes[from..]` that must be escaped, 8 bytes at a time
/// (log text rarely needs escaping, so most words are skipped whole). Also how the Firehose
/// sink finds the end of a string in a response ([`crate::sink::firehose::response`]).
#[inline]
pub(crate) fn next_escape(bytes: &[u8], mut from: usize) -> Option<usize> {
    while let Some(Ok(word)) = bytes.get(from..from + 8).map(<[u8; 8]>::try_from) {
        let mask = escape_mask(u64::from_le_bytes(word));
        if mask != 0 {
            return Some(from + (mask.trailing_zeros() / 8) as usize);
        }
        from += 8;
    }
    // The last 0–7 bytes, one at a time.
    let tail = bytes.get(from..)?;
    tail.iter()
        .position(|&b| ESCAPE[usize::from(b)])
        .map(|p| from + p)
}

/// Appends `s` as a JSON string literal.
pub fn write_escaped(out: &mut String, s: &str) {
    out.reserve(s.len() + 2);
    out.push('"');
    let bytes = s.as_bytes();
    let mut start = 0;
    while let Some(i) = next_escape(bytes, start) {
        let b = bytes[i];
        // Escaped bytes are ASCII, so `i` and `start` are always char boundaries.
        out.push_str(&s[start..i]);
        match b {
            b'"' => out.push_str("\\\""),
            b'\\' => out.push_str("\\\\"),
            b'\n' => out.push_str("\\n"),
            b'\r' => out.push_str("\\r"),
            b'\t' => out.push_str("\\t"),
            0x08 => out.push_str("\\b"),
            0x0c => out.push_str("\\f"),
            _ => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0x0f)]));
            }
        }
        start = i + 1;
    }
    out.push_str(&s[start..]);
    out.push('"');
}

/// Appends bytes that should be UTF-8 as a JSON string, replacing invalid sequences.
/// (`simdutf8` validates the common all-ASCII text several times faster than `std`.)
pub fn write_bytes_as_string(out: &mut String, bytes: &[u8]) {
    match simdutf8::basic::from_utf8(bytes) {
        Ok(s) => write_escaped(out, s),
        Err(_) => write_escaped(out, &String::from_utf8_lossy(bytes)),
    }
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

/// Writes the value that starts with `item` (already read from `cur`).
pub fn write_item(
    cur: &mut Cursor<'_>,
    item: Item<'_>,
    out: &mut String,
    depth: usize,
) -> Result<(), DecodeError> {
    write_value(cur, item, out, depth, false)
}

/// `in_key`: the value is being rendered as the text of a non-string map key.
fn write_value(
    cur: &mut Cursor<'_>,
    item: Item<'_>,
    out: &mut String,
    depth: usize,
    in_key: bool,
) -> Result<(), DecodeError> {
    match item {
        Item::Nil => out.push_str("null"),
        Item::Bool(true) => out.push_str("true"),
        Item::Bool(false) => out.push_str("false"),
        Item::Uint(v) => out.push_str(itoa::Buffer::new().format(v)),
        Item::Int(v) => out.push_str(itoa::Buffer::new().format(v)),
        Item::F32(v) => write_f32(out, v),
        Item::F64(v) => write_f64(out, v),
        Item::Str(b) | Item::Bin(b) => write_bytes_as_string(out, b),
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
                write_value(cur, child, out, depth, in_key)?;
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
                key_text(cur, key, out, depth, in_key)?;
                out.push(':');
                let value = cur.next_item()?;
                write_value(cur, value, out, depth, in_key)?;
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

/// Writes a map key: strings as they are, anything else as its JSON text in a string.
pub fn write_key(
    cur: &mut Cursor<'_>,
    key: Item<'_>,
    out: &mut String,
    depth: usize,
) -> Result<(), DecodeError> {
    key_text(cur, key, out, depth, false)
}

fn key_text(
    cur: &mut Cursor<'_>,
    key: Item<'_>,
    out: &mut String,
    depth: usize,
    in_key: bool,
) -> Result<(), DecodeError> {
    match key {
        Item::Str(b) | Item::Bin(b) => write_bytes_as_string(out, b),
        Item::Array(_) | Item::Map(_) if in_key => {
            cur.skip_children(&key)?;
            out.push_str(if matches!(key, Item::Array(_)) {
                "\"<array>\""
            } else {
                "\"<map>\""
            });
        }
        other => {
            let mut text = String::new();
            write_value(cur, other, &mut text, depth, true)?;
            write_escaped(out, &text);
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
        write_item(&mut cur, item, &mut out, 0)?;
        Ok(out)
    }

    #[test]
    fn strings_are_escaped_for_json() {
        let mut out = String::new();
        write_escaped(&mut out, "a\"b\\c\nd\u{1}é");
        assert_eq!(out, r#""a\"b\\c\nd\u0001é""#);
        let parsed: String = serde_json::from_str(&out).unwrap();
        assert_eq!(parsed, "a\"b\\c\nd\u{1}é");
    }

    proptest::proptest! {
        /// The word-at-a-time scan escapes exactly what serde_json escapes, wherever the special
        /// bytes fall relative to 8-byte words (including next to multi-byte characters).
        #[test]
        fn escaping_matches_serde_json(s in "[a-z\"\\\\\u{0}-\u{1f}\u{7f}é€😀 ]{0,40}") {
            let mut out = String::new();
            write_escaped(&mut out, &s);
            proptest::prop_assert_eq!(out, serde_json::to_string(&s).unwrap());
        }
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
    fn nesting_beyond_the_limit_is_an_error() {
        let mut bytes = vec![0x91; MAX_DEPTH + 1];
        bytes.push(0xc0);
        assert_eq!(
            transcode(&bytes),
            Err(DecodeError::TooDeep { limit: MAX_DEPTH })
        );
    }
}
