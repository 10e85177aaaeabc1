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
    Ext(i8),
}

/// A header of `hsize` bytes followed by a payload of `len` bytes.
fn sized(buf: &[u8], hsize: usize, len: usize, kind: Payload) -> Parsed<'_> {
    let total = hsize.saturating_add(len);
    let Some(payload) = buf.get(hsize..total) else {
        return Parsed::Need(total);
    };
    let item = match kind {
        Payload::Str => Item::Str(payload),
        Payload::Bin => Item::Bin(payload),
        Payload::Ext(t) => Item::Ext(t, payload),
    };
    Parsed::Done(item, total)
}

fn be_u16(b: &[u8]) -> usize {
    usize::from(u16::from_be_bytes([b[0], b[1]]))
}

fn be_u32(b: &[u8]) -> usize {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]]) as usize
}

/// The `N` bytes after a one-byte marker, if present.
#[inline]
fn fixed<const N: usize>(rest: &[u8]) -> Option<[u8; N]> {
    rest.get(1..1 + N)?.try_into().ok()
}

fn arr8(b: &[u8]) -> [u8; 8] {
    [b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]
}

/// Parses the item header at the start of `buf`.
///
/// All index operations are guarded by explicit length checks above them.
pub fn parse(buf: &[u8]) -> Result<Parsed<'_>, DecodeError> {
    let Some(&m) = buf.first() else {
        return Ok(Parsed::Need(1));
    };
    // Fixed-size scalars and container headers: (size of the header, item builder).
    let fixed = |size: usize, f: &dyn Fn(&[u8]) -> Item<'static>| -> Parsed<'static> {
        if buf.len() < size {
            Parsed::Need(size)
        } else {
            Parsed::Done(f(&buf[1..size]), size)
        }
    };
    let need = |n: usize| buf.len() < n;
    Ok(match m {
        0x00..=0x7f => Parsed::Done(Item::Uint(u64::from(m)), 1),
        0x80..=0x8f => Parsed::Done(Item::Map(u32::from(m & 0x0f)), 1),
        0x90..=0x9f => Parsed::Done(Item::Array(u32::from(m & 0x0f)), 1),
        0xa0..=0xbf => sized(buf, 1, usize::from(m & 0x1f), Payload::Str),
        0xc0 => Parsed::Done(Item::Nil, 1),
        0xc1 => return Err(DecodeError::Malformed("byte 0xc1 is not a msgpack type")),
        0xc2 => Parsed::Done(Item::Bool(false), 1),
        0xc3 => Parsed::Done(Item::Bool(true), 1),
        0xc4 | 0xd9 => {
            if need(2) {
                return Ok(Parsed::Need(2));
            }
            sized(
                buf,
                2,
                usize::from(buf[1]),
                if m == 0xc4 {
                    Payload::Bin
                } else {
                    Payload::Str
                },
            )
        }
        0xc5 | 0xda => {
            if need(3) {
                return Ok(Parsed::Need(3));
            }
            sized(
                buf,
                3,
                be_u16(&buf[1..]),
                if m == 0xc5 {
                    Payload::Bin
                } else {
                    Payload::Str
                },
            )
        }
        0xc6 | 0xdb => {
            if need(5) {
                return Ok(Parsed::Need(5));
            }
            sized(
                buf,
                5,
                be_u32(&buf[1..]),
                if m == 0xc6 {
                    Payload::Bin
                } else {
                    Payload::Str
                },
            )
        }
        0xc7 => {
            if need(3) {
                return Ok(Parsed::Need(3));
            }
            sized(buf, 3, usize::from(buf[1]), Payload::Ext(buf[2] as i8))
        }
        0xc8 => {
            if need(4) {
                return Ok(Parsed::Need(4));
            }
            sized(buf, 4, be_u16(&buf[1..]), Payload::Ext(buf[3] as i8))
        }
        0xc9 => {
            if need(6) {
                return Ok(Parsed::Need(6));
            }
            sized(buf, 6, be_u32(&buf[1..]), Payload::Ext(buf[5] as i8))
        }
        0xca => fixed(5, &|b| {
            Item::F32(f32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }),
        0xcb => fixed(9, &|b| Item::F64(f64::from_be_bytes(arr8(b)))),
        0xcc => fixed(2, &|b| Item::Uint(u64::from(b[0]))),
        0xcd => fixed(3, &|b| {
            Item::Uint(u64::from(u16::from_be_bytes([b[0], b[1]])))
        }),
        0xce => fixed(5, &|b| {
            Item::Uint(u64::from(u32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        }),
        0xcf => fixed(9, &|b| Item::Uint(u64::from_be_bytes(arr8(b)))),
        0xd0 => fixed(2, &|b| int(i64::from(b[0] as i8))),
        0xd1 => fixed(3, &|b| int(i64::from(i16::from_be_bytes([b[0], b[1]])))),
        0xd2 => fixed(5, &|b| {
            int(i64::from(i32::from_be_bytes([b[0], b[1], b[2], b[3]])))
        }),
        0xd3 => fixed(9, &|b| int(i64::from_be_bytes(arr8(b)))),
        0xd4..=0xd8 => {
            let len = 1usize << (m - 0xd4);
            if need(2) {
                return Ok(Parsed::Need(2));
            }
            sized(buf, 2, len, Payload::Ext(buf[1] as i8))
        }
        0xdc => fixed(3, &|b| {
            Item::Array(u32::from(u16::from_be_bytes([b[0], b[1]])))
        }),
        0xdd => fixed(5, &|b| {
            Item::Array(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }),
        0xde => fixed(3, &|b| {
            Item::Map(u32::from(u16::from_be_bytes([b[0], b[1]])))
        }),
        0xdf => fixed(5, &|b| {
            Item::Map(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
        }),
        0xe0..=0xff => Parsed::Done(Item::Int(i64::from(m as i8)), 1),
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
    let at = |i: usize| buf.get(i).copied().map(usize::from);
    let sized = |size: usize, payload: Option<usize>| {
        payload.map(|payload| Header {
            size,
            payload,
            children: 0,
        })
    };
    Ok(match m {
        0xa0..=0xbf => sized(1, Some(usize::from(m & 0x1f))),
        0xc4 | 0xd9 => sized(2, at(1)),
        0xc5 | 0xda => sized(3, at(1).zip(at(2)).map(|(a, b)| a << 8 | b)),
        0xc6 | 0xdb => sized(5, buf.get(1..5).map(be_u32)),
        0xc7 => sized(3, at(1).filter(|_| buf.len() >= 3)),
        0xc8 => sized(
            4,
            at(1)
                .zip(at(2))
                .map(|(a, b)| a << 8 | b)
                .filter(|_| buf.len() >= 4),
        ),
        0xc9 => sized(6, buf.get(1..5).map(be_u32).filter(|_| buf.len() >= 6)),
        0xd4..=0xd8 => sized(2, Some(1usize << (m - 0xd4)).filter(|_| buf.len() >= 2)),
        _ => match parse(buf)? {
            Parsed::Done(item, size) => Some(Header {
                size,
                payload: 0,
                children: item.children(),
            }),
            Parsed::Need(_) => None,
        },
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
}

impl Framer {
    /// A framer rejecting messages longer than `limit` bytes.
    pub fn new(limit: usize) -> Self {
        Framer {
            limit,
            pos: 0,
            pending: 1,
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
        Ok(Some(len))
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
