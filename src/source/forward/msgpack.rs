//! A minimal, allocation-free msgpack reader for bytes that come from the network.
//!
//! Why not a general msgpack crate: the forward source needs three things no general decoder
//! gives together: (1) *framing* — knowing where one message ends without decoding it, resumable
//! across socket reads, so that `message_length_limit` is enforced before a message is buffered;
//! (2) zero-copy access to strings so the transcoder can write JSON straight into the batch;
//! (3) total robustness: every function returns an error instead of panicking, and nothing
//! recurses here, so hostile nesting cannot overflow the stack.

use super::decode::DecodeError;

/// One msgpack item header. Containers carry their element count; their elements follow.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Item<'a> {
    /// `nil`.
    Nil,
    /// `true` / `false`.
    Bool(bool),
    /// Any non-negative integer.
    Uint(u64),
    /// A negative integer.
    Int(i64),
    /// float 32.
    F32(f32),
    /// float 64.
    F64(f64),
    /// str family: bytes that *should* be UTF-8 (not checked here).
    Str(&'a [u8]),
    /// bin family.
    Bin(&'a [u8]),
    /// Array header with its element count.
    Array(u32),
    /// Map header with its pair count.
    Map(u32),
    /// Extension: type and payload.
    Ext(i8, &'a [u8]),
}

impl Item<'_> {
    /// How many values follow this header as its children.
    pub fn children(&self) -> u64 {
        match *self {
            Item::Array(n) => u64::from(n),
            Item::Map(n) => 2 * u64::from(n),
            _ => 0,
        }
    }
}

/// Result of looking at the bytes at one position.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Parsed<'a> {
    /// A complete header (with its payload for str/bin/ext) and the bytes it took.
    Done(Item<'a>, usize),
    /// Not enough bytes yet; at least this many are needed from the position.
    Need(usize),
}

/// What a variable-length payload is.
#[derive(Clone, Copy)]
enum Payload {
    Str,
    Bin,
    /// An extension; its type is the last byte of the header.
    Ext,
}

/// The header of a str, bin or ext item: the payload follows it.
struct PayloadHeader {
    /// Bytes of the header itself.
    size: usize,
    /// Bytes of the payload.
    len: usize,
    kind: Payload,
}

/// Reads the header of a str, bin or ext item (marker `m`, the first byte of `buf`): `None`
/// when `m` is another type, `Some(Err(n))` when the header needs `n` bytes and `buf` is
/// shorter.
fn payload_header(m: u8, buf: &[u8]) -> Option<Result<PayloadHeader, usize>> {
    // Bytes of the length field after the marker: none for fixstr and fixext, whose length is
    // in the marker.
    let (width, kind) = match m {
        0xa0..=0xbf => (0, Payload::Str),
        0xc4..=0xc6 => (1 << (m - 0xc4), Payload::Bin),
        0xd9..=0xdb => (1 << (m - 0xd9), Payload::Str),
        0xc7..=0xc9 => (1 << (m - 0xc7), Payload::Ext),
        0xd4..=0xd8 => (0, Payload::Ext),
        _ => return None,
    };
    let size = 1 + width + usize::from(matches!(kind, Payload::Ext));
    let Some(head) = buf.get(..size) else {
        return Some(Err(size));
    };
    let len = match m {
        0xa0..=0xbf => usize::from(m & 0x1f),
        0xd4..=0xd8 => 1 << (m - 0xd4),
        _ => head[1..1 + width]
            .iter()
            .fold(0, |n, &b| n << 8 | usize::from(b)),
    };
    Some(Ok(PayloadHeader { size, len, kind }))
}

/// The str, bin or ext item of header `h` at the start of `buf`, once its payload is there.
fn with_payload(buf: &[u8], h: PayloadHeader) -> Parsed<'_> {
    let total = h.size.saturating_add(h.len);
    let (Some(payload), Some(&last)) = (buf.get(h.size..total), buf.get(h.size - 1)) else {
        return Parsed::Need(total);
    };
    let item = match h.kind {
        Payload::Str => Item::Str(payload),
        Payload::Bin => Item::Bin(payload),
        Payload::Ext => Item::Ext(last as i8, payload),
    };
    Parsed::Done(item, total)
}

/// The `N` bytes after a one-byte marker, if present.
#[inline]
fn fixed<const N: usize>(rest: &[u8]) -> Option<[u8; N]> {
    rest.get(1..1 + N)?.try_into().ok()
}

/// A fixed-size item at the start of `buf`: the marker, then `N` bytes that `item` reads.
fn scalar<const N: usize>(
    buf: &[u8],
    item: impl FnOnce([u8; N]) -> Item<'static>,
) -> Parsed<'static> {
    match fixed::<N>(buf) {
        Some(b) => Parsed::Done(item(b), 1 + N),
        None => Parsed::Need(1 + N),
    }
}

/// Parses the item header at the start of `buf`.
pub fn parse(buf: &[u8]) -> Result<Parsed<'_>, DecodeError> {
    let Some(&m) = buf.first() else {
        return Ok(Parsed::Need(1));
    };
    Ok(match m {
        0x00..=0x7f => Parsed::Done(Item::Uint(u64::from(m)), 1),
        0x80..=0x8f => Parsed::Done(Item::Map(u32::from(m & 0x0f)), 1),
        0x90..=0x9f => Parsed::Done(Item::Array(u32::from(m & 0x0f)), 1),
        0xc0 => Parsed::Done(Item::Nil, 1),
        0xc2 => Parsed::Done(Item::Bool(false), 1),
        0xc3 => Parsed::Done(Item::Bool(true), 1),
        0xca => scalar(buf, |b| Item::F32(f32::from_be_bytes(b))),
        0xcb => scalar(buf, |b| Item::F64(f64::from_be_bytes(b))),
        0xcc => scalar(buf, |b| Item::Uint(u64::from(u8::from_be_bytes(b)))),
        0xcd => scalar(buf, |b| Item::Uint(u64::from(u16::from_be_bytes(b)))),
        0xce => scalar(buf, |b| Item::Uint(u64::from(u32::from_be_bytes(b)))),
        0xcf => scalar(buf, |b| Item::Uint(u64::from_be_bytes(b))),
        0xd0 => scalar(buf, |b| int(i64::from(i8::from_be_bytes(b)))),
        0xd1 => scalar(buf, |b| int(i64::from(i16::from_be_bytes(b)))),
        0xd2 => scalar(buf, |b| int(i64::from(i32::from_be_bytes(b)))),
        0xd3 => scalar(buf, |b| int(i64::from_be_bytes(b))),
        0xdc => scalar(buf, |b| Item::Array(u32::from(u16::from_be_bytes(b)))),
        0xdd => scalar(buf, |b| Item::Array(u32::from_be_bytes(b))),
        0xde => scalar(buf, |b| Item::Map(u32::from(u16::from_be_bytes(b)))),
        0xdf => scalar(buf, |b| Item::Map(u32::from_be_bytes(b))),
        0xe0..=0xff => Parsed::Done(Item::Int(i64::from(m as i8)), 1),
        // str, bin and ext; and 0xc1, the one byte msgpack leaves unused.
        _ => match payload_header(m, buf) {
            Some(Ok(h)) => with_payload(buf, h),
            Some(Err(need)) => Parsed::Need(need),
            None => return Err(DecodeError::Malformed("byte 0xc1 is not a msgpack type")),
        },
    })
}

/// An item's header without its payload, for reading past values that are not all in memory.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// Bytes of the header itself.
    pub size: usize,
    /// Bytes of str/bin/ext payload after it.
    pub payload: usize,
    /// Values that follow as its children (containers).
    pub children: u64,
}

/// Reads the header at the start of `buf`, without needing its payload; `None` when `buf` is
/// too short for the header itself.
pub fn header(buf: &[u8]) -> Result<Option<Header>, DecodeError> {
    let Some(&m) = buf.first() else {
        return Ok(None);
    };
    if let Some(h) = payload_header(m, buf) {
        return Ok(h.ok().map(|h| Header {
            size: h.size,
            payload: h.len,
            children: 0,
        }));
    }
    Ok(match parse(buf)? {
        Parsed::Done(item, size) => Some(Header {
            size,
            payload: 0,
            children: item.children(),
        }),
        Parsed::Need(_) => None,
    })
}

/// Signed msgpack ints may carry non-negative values; normalise them to `Uint`.
fn int(v: i64) -> Item<'static> {
    if v >= 0 {
        Item::Uint(v as u64)
    } else {
        Item::Int(v)
    }
}

/// Finds where one msgpack value ends in a byte stream that arrives in pieces.
///
/// It keeps only a position and the number of values still expected (a container header adds
/// its children), so resuming after more bytes arrive costs nothing and no stack is needed.
/// It fails as soon as the message is known to exceed `limit` bytes — from a str/bin length
/// header, before the payload was ever received.
#[derive(Debug, Clone)]
pub struct Framer {
    limit: usize,
    pos: usize,
    pending: u64,
    /// Length the current message is known to reach at least (0 before any byte was seen).
    at_least: usize,
}

impl Framer {
    /// A framer rejecting messages longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Framer {
            limit,
            pos: 0,
            pending: 1,
            at_least: 0,
        }
    }

    /// Looks at `buf`, which starts at the current message's first byte and holds everything
    /// received since. `Ok(Some(len))` when the message is `buf[..len]` (the framer then resets
    /// for the next message); `Ok(None)` when more bytes are needed.
    pub fn advance(&mut self, buf: &[u8]) -> Result<Option<usize>, DecodeError> {
        while self.pending > 0 {
            let rest = buf.get(self.pos..).unwrap_or_default();
            match parse(rest)? {
                Parsed::Need(n) => {
                    if self.pos.saturating_add(n) > self.limit {
                        return Err(DecodeError::TooLarge { limit: self.limit });
                    }
                    self.at_least = self.pos + n;
                    return Ok(None);
                }
                Parsed::Done(item, used) => {
                    self.pos += used;
                    if self.pos > self.limit {
                        return Err(DecodeError::TooLarge { limit: self.limit });
                    }
                    self.pending = self.pending - 1 + item.children();
                }
            }
        }
        let len = self.pos;
        self.pos = 0;
        self.pending = 1;
        self.at_least = 0;
        Ok(Some(len))
    }

    /// After `advance` returned `Ok(None)`: the length the current message is known to reach
    /// at least. Far beyond the bytes received when a str/bin payload (PackedForward's entries)
    /// announced its length; just past them while items keep coming one by one.
    pub fn at_least(&self) -> usize {
        self.at_least
    }

    /// True when no byte of the next message has been consumed yet.
    pub fn at_message_start(&self) -> bool {
        self.pos == 0
    }
}

/// Reads items one after another from a complete byte slice (a framed message, or a
/// PackedForward payload). Running out of bytes is an error here.
#[derive(Debug, Clone)]
pub struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor at the start of `buf`.
    pub fn new(buf: &'a [u8]) -> Self {
        Cursor { buf, pos: 0 }
    }

    /// True when every byte was read.
    pub fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Current position (for [`Cursor::slice_from`] and [`Cursor::seek`]).
    pub fn pos(&self) -> usize {
        self.pos
    }

    /// Moves to a position previously returned by [`Cursor::pos`].
    pub fn seek(&mut self, pos: usize) {
        self.pos = pos.min(self.buf.len());
    }

    /// The bytes between `start` and the current position.
    pub fn slice_from(&self, start: usize) -> &'a [u8] {
        self.buf.get(start..self.pos).unwrap_or_default()
    }

    /// Reads the next item header.
    ///
    /// The types that make up nearly all log records (fixstr, str8, positive fixint, fixmap,
    /// fixarray) are read inline; the rest goes through [`parse`]. The profile showed why: a
    /// call to `parse` returns its large `Result` through memory, and reading it back stalled
    /// on store forwarding for about a sixth of the whole decode time; hence also `always`.
    #[inline(always)]
    pub fn next_item(&mut self) -> Result<Item<'a>, DecodeError> {
        let rest = self.buf.get(self.pos..).unwrap_or_default();
        if let Some(&m) = rest.first() {
            let fast = match m {
                0x00..=0x7f => Some((Item::Uint(u64::from(m)), 1)),
                0x80..=0x8f => Some((Item::Map(u32::from(m & 0x0f)), 1)),
                0x90..=0x9f => Some((Item::Array(u32::from(m & 0x0f)), 1)),
                0xa0..=0xbf => {
                    let end = 1 + usize::from(m & 0x1f);
                    rest.get(1..end).map(|b| (Item::Str(b), end))
                }
                0xd9 => rest.get(1).and_then(|&len| {
                    let end = 2 + usize::from(len);
                    rest.get(2..end).map(|b| (Item::Str(b), end))
                }),
                0xcc => rest.get(1).map(|&b| (Item::Uint(u64::from(b)), 2)),
                0xcd => fixed::<2>(rest).map(|b| (Item::Uint(u64::from(u16::from_be_bytes(b))), 3)),
                0xce => fixed::<4>(rest).map(|b| (Item::Uint(u64::from(u32::from_be_bytes(b))), 5)),
                0xcb => fixed::<8>(rest).map(|b| (Item::F64(f64::from_be_bytes(b)), 9)),
                // fixext 8: EventTime, in every entry of Fluent Bit and Fluentd ≥ 0.14.
                0xd7 => rest
                    .get(1)
                    .zip(rest.get(2..10))
                    .map(|(&t, p)| (Item::Ext(t as i8, p), 10)),
                _ => None,
            };
            if let Some((item, used)) = fast {
                self.pos += used;
                return Ok(item);
            }
        }
        match parse(rest)? {
            Parsed::Done(item, used) => {
                self.pos += used;
                Ok(item)
            }
            Parsed::Need(_) => Err(DecodeError::Malformed("value is truncated")),
        }
    }

    /// Skips `n` more values (children of containers included), without recursion.
    pub fn skip_values(&mut self, mut n: u64) -> Result<(), DecodeError> {
        while n > 0 {
            let item = self.next_item()?;
            n = n - 1 + item.children();
        }
        Ok(())
    }

    /// Skips the children of an item just read.
    pub fn skip_children(&mut self, item: &Item<'_>) -> Result<(), DecodeError> {
        self.skip_values(item.children())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame_all(bytes: &[u8], limit: usize) -> Result<Vec<usize>, DecodeError> {
        let mut f = Framer::new(limit);
        let mut out = Vec::new();
        let mut start = 0;
        while let Some(len) = f.advance(&bytes[start..])? {
            out.push(len);
            start += len;
            if start == bytes.len() {
                break;
            }
        }
        Ok(out)
    }

    #[test]
    fn framer_splits_consecutive_values() {
        // [1, "ab", {"k": nil}] then nil then 300
        let bytes = [
            0x93, 0x01, 0xa2, b'a', b'b', 0x81, 0xa1, b'k', 0xc0, 0xc0, 0xcd, 0x01, 0x2c,
        ];
        assert_eq!(frame_all(&bytes, 100).unwrap(), vec![9, 1, 3]);
    }

    #[test]
    fn framer_resumes_byte_by_byte() {
        let bytes = [0x92, 0xa3, b'a', b'b', b'c', 0x91, 0xcc, 0xff];
        let mut f = Framer::new(100);
        for end in 0..bytes.len() {
            assert_eq!(f.advance(&bytes[..end]).unwrap(), None, "at {end}");
        }
        assert_eq!(f.advance(&bytes).unwrap(), Some(bytes.len()));
    }

    #[test]
    fn framer_rejects_oversized_string_before_its_payload_arrives() {
        // str32 announcing 1 GiB, only the header received.
        let header = [0xdb, 0x40, 0x00, 0x00, 0x00];
        let err = Framer::new(1 << 20).advance(&header).unwrap_err();
        assert_eq!(err, DecodeError::TooLarge { limit: 1 << 20 });
    }

    #[test]
    fn framer_rejects_huge_array_counts_once_bytes_exceed_the_limit() {
        let mut bytes = vec![0xdd, 0xff, 0xff, 0xff, 0xff];
        bytes.extend(std::iter::repeat_n(0xc0, 64));
        assert!(matches!(
            Framer::new(32).advance(&bytes),
            Err(DecodeError::TooLarge { .. })
        ));
    }

    #[test]
    fn headers_are_read_without_their_payload() {
        let str32 = [0xdb, 0x0c, 0x80, 0x00, 0x00];
        let h = Header {
            size: 5,
            payload: 200 << 20,
            children: 0,
        };
        assert_eq!(header(&str32).unwrap(), Some(h));
        assert_eq!(header(&str32[..3]).unwrap(), None);
        assert_eq!(
            header(&[0x92, 0x01]).unwrap().map(|h| (h.size, h.children)),
            Some((1, 2))
        );
        assert_eq!(header(&[0xcd, 0x01]).unwrap(), None);
        // Every header agrees with `parse` on complete input.
        for bytes in [
            &[0xa2, b'a', b'b'][..],
            &[0xc4, 0x01, 0xff],
            &[0xc7, 0x01, 0x05, 0xff],
            &[0xd5, 0x05, 0x01, 0x02],
            &[0xde, 0x00, 0x01],
        ] {
            let h = header(bytes).unwrap().unwrap();
            let Parsed::Done(item, used) = parse(bytes).unwrap() else {
                panic!("{bytes:?}")
            };
            assert_eq!(h.size + h.payload, used, "{bytes:?}");
            assert_eq!(h.children, item.children());
        }
    }

    #[test]
    fn reserved_byte_is_malformed() {
        assert!(matches!(parse(&[0xc1]), Err(DecodeError::Malformed(_))));
    }

    #[test]
    fn integers_of_every_width() {
        let cases: &[(&[u8], Item<'_>)] = &[
            (&[0xd0, 0x80], Item::Int(-128)),
            (&[0xd1, 0xff, 0x00], Item::Int(-256)),
            (&[0xd2, 0x00, 0x00, 0x00, 0x05], Item::Uint(5)),
            (&[0xcf, 0, 0, 0, 1, 0, 0, 0, 0], Item::Uint(1 << 32)),
            (&[0xff], Item::Int(-1)),
        ];
        for (bytes, want) in cases {
            assert_eq!(parse(bytes).unwrap(), Parsed::Done(*want, bytes.len()));
        }
    }

    #[test]
    fn ext_forms() {
        let fixext8 = [0xd7, 0x00, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            parse(&fixext8).unwrap(),
            Parsed::Done(Item::Ext(0, &fixext8[2..]), 10)
        );
        let ext8 = [0xc7, 0x08, 0x00, 1, 2, 3, 4, 5, 6, 7, 8];
        assert_eq!(
            parse(&ext8).unwrap(),
            Parsed::Done(Item::Ext(0, &ext8[3..]), 11)
        );
    }

    proptest::proptest! {
        /// The cursor's inline fast path reads exactly what `parse` reads, truncation included.
        #[test]
        fn next_item_agrees_with_parse(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..40)) {
            let mut cur = Cursor::new(&bytes);
            let got = cur.next_item();
            match parse(&bytes) {
                Ok(Parsed::Done(item, used)) => {
                    proptest::prop_assert_eq!(got, Ok(item));
                    proptest::prop_assert_eq!(cur.pos(), used);
                }
                Ok(Parsed::Need(_)) => proptest::prop_assert!(got.is_err()),
                Err(e) => proptest::prop_assert_eq!(got, Err(e)),
            }
        }
    }
}
