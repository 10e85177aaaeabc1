//! JSON text: escaping strings, and finding the bytes that need it, 8 bytes at a time.
//!
//! Shared by everything that writes JSON by hand: the forward source's msgpack → JSON
//! transcoder and the Firehose request writer (the stream name). (Responses are read with
//! `serde_json`.) `serde_json` escapes the same bytes the same way; a property test holds this
//! module to that.

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
/// (log text rarely needs escaping, so most words are skipped whole).
#[inline]
pub fn next_escape(bytes: &[u8], mut from: usize) -> Option<usize> {
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

#[cfg(test)]
mod tests {
    use super::*;

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
}
