//! CompressedPackedForward payloads, inflated an entry at a time.
//!
//! A gzip payload of 200 KiB can inflate to 200 MiB (a gzip bomb: one event holding 200 MiB of
//! the same byte). Inflating it whole before decoding would hold all of it, so the payload is
//! read through a window: the next `[time, record]` entry is framed in the window, decoded and
//! dropped, then the window moves on. An entry larger than the window cannot be a record any
//! output takes (see [`window_for`]): it is streamed past without being kept, and what its first
//! bytes say becomes an oversized record (or an invalid event). Memory per message is the window
//! plus the JSON of the records, whatever the payload inflates to; `decompression_size_limit`
//! still bounds the inflating work.

use std::io::Read;

use super::{DecodeError, EventSink, Stop};
use crate::source::forward::msgpack::{header, Cursor, Framer};

/// Bytes inflated per read.
const READ_BYTES: usize = 64 * 1024;

/// The largest entry held whole. msgpack may be denser than the JSON it becomes: a float32 takes
/// 5 bytes for the 4 of `"0.5"` and a separator, an integer encoded in 9 bytes may print as 1 digit.
/// Realistic records stay well within 4 bytes of msgpack per byte of JSON, so an entry beyond
/// 4 × `record_size_limit` is treated as an oversized record without being decoded whole.
pub(super) fn window_for(record_size_limit: usize) -> usize {
    record_size_limit.saturating_mul(4).max(READ_BYTES)
}

/// The inflated bytes not yet decoded: `buf[start..]`.
struct Inflater<'p> {
    decoder: flate2::read::MultiGzDecoder<&'p [u8]>,
    buf: Vec<u8>,
    start: usize,
    total: usize,
    limit: usize,
    budget: Option<usize>,
}

impl Inflater<'_> {
    /// Inflates up to [`READ_BYTES`] more; false at the end of the payload.
    fn fill(&mut self) -> Result<bool, Stop> {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
        let old = self.buf.len();
        self.buf.resize(old + READ_BYTES, 0);
        let read = self.decoder.read(&mut self.buf[old..]);
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                self.buf.truncate(old);
                return Err(DecodeError::Gzip(e.to_string()).into());
            }
        };
        self.buf.truncate(old + n);
        self.total += n;
        if self.total > self.limit {
            return Err(DecodeError::DecompressedTooLarge { limit: self.limit }.into());
        }
        if self.budget.is_some_and(|b| self.total > b) {
            return Err(Stop::OverBudget);
        }
        Ok(n > 0)
    }

    fn rest(&self) -> &[u8] {
        &self.buf[self.start..]
    }
}

/// Decodes the entries of a gzip payload (one or more members) into `sink`.
pub(super) fn packed_gzip(
    sink: &mut EventSink<'_, '_>,
    payload: &[u8],
    budget: Option<usize>,
) -> Result<(), Stop> {
    let window = window_for(sink.opts.record_size_limit);
    let mut z = Inflater {
        decoder: flate2::read::MultiGzDecoder::new(payload),
        buf: Vec::with_capacity(READ_BYTES),
        start: 0,
        total: 0,
        limit: sink.opts.decompression_size_limit,
        budget,
    };
    let mut framer = Framer::new(window);
    loop {
        match framer.advance(z.rest()) {
            Ok(Some(len)) => {
                let entry = &z.buf[z.start..z.start + len];
                sink.entry(&mut Cursor::new(entry))?;
                z.start += len;
            }
            Ok(None) => {
                if !z.fill()? {
                    return if z.rest().is_empty() {
                        Ok(())
                    } else {
                        Err(DecodeError::Malformed("value is truncated").into())
                    };
                }
            }
            Err(DecodeError::TooLarge { .. }) => {
                framer = Framer::new(window);
                let head_end = z.buf.len().min(z.start + window);
                let found = sink.oversized_entry(&z.buf[z.start..head_end])?;
                let received = skip_entry(&mut z)?;
                if let Some(mut oversized) = found {
                    oversized.received_bytes = received;
                    sink.out.batch.push_oversized(oversized);
                    sink.piece_done()?;
                }
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Reads past the entry at `z.start` without keeping it; returns its size.
fn skip_entry(z: &mut Inflater<'_>) -> Result<usize, Stop> {
    let mut pending: u64 = 1;
    let mut discard: usize = 0;
    let mut seen = 0;
    loop {
        // Consume what is in the window: payload bytes, then whole headers.
        loop {
            if discard > 0 {
                let d = discard.min(z.rest().len());
                z.start += d;
                seen += d;
                discard -= d;
                if discard > 0 {
                    break;
                }
            }
            if pending == 0 {
                return Ok(seen);
            }
            let Some(h) = header(z.rest())? else {
                break;
            };
            z.start += h.size;
            seen += h.size;
            discard = h.payload;
            pending = pending - 1 + h.children;
        }
        if !z.fill()? {
            return Err(DecodeError::Malformed("value is truncated").into());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::EventTime;
    use crate::source::forward::decode::{decode_message, decode_small, DecodeOptions, Message};
    use std::io::Write;

    fn gzip(parts: &[&[u8]]) -> Vec<u8> {
        // One member per part: the payload is their concatenation once inflated.
        let mut out = Vec::new();
        for p in parts {
            let mut g = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            g.write_all(p).unwrap();
            out.extend(g.finish().unwrap());
        }
        out
    }

    /// `["t", bin(payload), {"compressed": "gzip"}]`
    fn message(payload: &[u8]) -> Vec<u8> {
        let mut m = vec![0x93, 0xa1, b't', 0xc6];
        m.extend((payload.len() as u32).to_be_bytes());
        m.extend(payload);
        m.extend([0x81, 0xaa]);
        m.extend(b"compressed");
        m.extend([0xa4]);
        m.extend(b"gzip");
        m
    }

    /// `[1, {"k": str32 of `len` bytes]` without its payload.
    fn big_entry_head(len: u32) -> Vec<u8> {
        let mut e = vec![0x92, 0x01, 0x81, 0xa1, b'k', 0xdb];
        e.extend(len.to_be_bytes());
        e
    }

    const SMALL: &[u8] = &[0x92, 0x01, 0x81, 0xa1, b'm', 0xa2, b'o', b'k'];

    fn opts(record_size_limit: usize) -> DecodeOptions {
        DecodeOptions {
            record_size_limit,
            ..DecodeOptions::default()
        }
    }

    fn events(m: Message) -> crate::source::forward::decode::Events {
        match m {
            Message::Events(e) => e,
            Message::Keepalive => panic!("keepalive"),
        }
    }

    #[test]
    fn an_entry_larger_than_the_window_is_streamed_past_and_reported_oversized() {
        // 20 MiB of 0x01 in one record between two small ones, over 21 gzip members.
        let head = big_entry_head(20 << 20);
        let mib = vec![0x01u8; 1 << 20];
        let mut parts: Vec<&[u8]> = vec![SMALL, &head];
        parts.extend(std::iter::repeat_n(&mib[..], 20));
        parts.push(SMALL);
        let msg = message(&gzip(&parts));
        let e = events(decode_message(&msg, &opts(1000), EventTime(0)).unwrap());
        let records: Vec<_> = e.batch.iter().map(|(_, r)| r.to_owned()).collect();
        assert_eq!(records, vec![r#"{"m":"ok"}"#, r#"{"m":"ok"}"#]);
        let big = &e.batch.oversized()[0];
        assert_eq!(big.received_bytes, head.len() + (20 << 20));
        assert_eq!(big.limit, 1000);
        assert!(big.prefix.starts_with(r#"{"k":"#), "{}", big.prefix);
        assert!(e.batch.held_bytes() < 1 << 20, "{}", e.batch.held_bytes());
    }

    #[test]
    fn a_record_within_the_window_but_over_the_limit_is_cut_while_transcoding() {
        let mut entry = big_entry_head(3000);
        entry.extend(vec![b'x'; 3000]);
        let msg = message(&gzip(&[&entry, SMALL]));
        let e = events(decode_message(&msg, &opts(1000), EventTime(0)).unwrap());
        assert_eq!(e.batch.len(), 1);
        let big = &e.batch.oversized()[0];
        assert_eq!(big.received_bytes, entry.len() - 2);
        assert_eq!(big.prefix, r#"{"k":"#);
    }

    #[test]
    fn the_inline_budget_is_decided_on_the_inflated_size() {
        let small = message(&gzip(&[SMALL]));
        assert!(decode_small(&small, &opts(1000), EventTime(0), 1 << 16).is_some());
        let zeros = vec![0xc0u8; 1 << 20];
        let big = message(&gzip(&[&zeros]));
        assert!(big.len() < 1 << 16, "compressed {} bytes", big.len());
        assert!(decode_small(&big, &opts(1000), EventTime(0), 1 << 16).is_none());
    }

    #[test]
    fn truncated_and_oversized_payloads_are_errors() {
        let head = big_entry_head(1 << 20);
        let cut = message(&gzip(&[&head, &[0x01; 1000]]));
        assert_eq!(
            decode_message(&cut, &opts(100), EventTime(0)),
            Err(DecodeError::Malformed("value is truncated"))
        );
        let limited = DecodeOptions {
            decompression_size_limit: 1 << 20,
            ..opts(100)
        };
        let mut huge = head.clone();
        huge.extend(vec![0x01; 1 << 20]);
        assert_eq!(
            decode_message(&message(&gzip(&[&huge])), &limited, EventTime(0)),
            Err(DecodeError::DecompressedTooLarge { limit: 1 << 20 })
        );
    }
}
