//! A message whose JSON would be large, decoded in bounded pieces.
//!
//! The JSON of a message can be ~6× its msgpack (each control byte becomes `\u0001`), so a
//! message of `message_length_limit` (32 MiB) could become ~190 MiB of JSON, more than the
//! whole process may use. [`decode_bounded`] hands the JSON out as batches of at most a given
//! size (plus the record that crosses it: records are never split), so that the caller stores
//! one piece before the next is written. Memory per message is then its frame and one piece,
//! whatever its JSON adds up to.

use super::{decode, DecodeError, DecodeOptions, EventSink, Message, Stop};
use crate::event::{EventBatch, EventTime};
use crate::source::forward::msgpack::Framer;

/// Where [`decode_bounded`] hands out pieces.
pub(super) struct Pieces<'a> {
    /// A piece is handed out once its JSON reaches this many bytes.
    limit: usize,
    hand_out: &'a mut dyn FnMut(EventBatch) -> Result<(), DecodeError>,
}

impl Pieces<'_> {
    /// The JSON capacity of a piece: its limit and the record that crosses it (capped, so a
    /// small limit does not reserve a whole `record_size_limit`), reserved at once so that
    /// the text never doubles while it is written.
    pub(super) fn capacity(&self, opts: &DecodeOptions) -> usize {
        self.limit
            .saturating_add(opts.record_size_limit.min(self.limit))
    }
}

impl EventSink<'_, '_> {
    /// Called after each record (or oversized description): hands the batch out as a piece
    /// once its JSON reached the piece limit, and goes on with an empty batch.
    pub(super) fn piece_done(&mut self) -> Result<(), DecodeError> {
        let Some(pieces) = &mut self.pieces else {
            return Ok(());
        };
        let batch = &mut self.out.batch;
        if batch.json_bytes() + batch.len() < pieces.limit {
            return Ok(());
        }
        let next = EventBatch::with_capacity(batch.tag(), 1, pieces.capacity(self.opts));
        (pieces.hand_out)(std::mem::replace(batch, next))
    }
}

/// Decodes one framed message like [`super::decode_message`], handing its events out through
/// `hand_out` in batches whose JSON text (with newlines) reaches `piece_limit` bytes, plus the
/// one record that crossed it. The returned message holds the last piece (possibly empty),
/// the ack and the counts of invalid events of the whole message. An error can come after
/// some pieces were handed out; an error of `hand_out` ends decoding with that error.
pub fn decode_bounded(
    frame: &[u8],
    opts: &DecodeOptions,
    now: EventTime,
    piece_limit: usize,
    hand_out: &mut dyn FnMut(EventBatch) -> Result<(), DecodeError>,
) -> Result<Message, DecodeError> {
    let pieces = Pieces {
        limit: piece_limit.max(1),
        hand_out,
    };
    match decode(frame, opts, now, None, Some(pieces)) {
        Ok(m) => Ok(m),
        Err(Stop::Decode(e)) => Err(e),
        Err(Stop::OverBudget) => Err(DecodeError::Malformed("internal: no inline budget")),
    }
}

/// Decodes a whole byte stream as one connection would, without I/O: the entry point of the
/// fuzz target and of the benchmark. Returns the messages decoded before the first error, and
/// that error. Bytes of an incomplete last message are ignored (a connection would wait).
pub fn decode_stream(
    bytes: &[u8],
    message_length_limit: usize,
    opts: &DecodeOptions,
) -> (Vec<Message>, Option<DecodeError>) {
    let mut framer = Framer::new(message_length_limit);
    let mut messages = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let len = match framer.advance(rest) {
            Ok(Some(len)) => len,
            Ok(None) => break,
            Err(e) => return (messages, Some(e)),
        };
        let (frame, tail) = rest.split_at(len);
        rest = tail;
        match super::decode_message(frame, opts, EventTime(0)) {
            Ok(m) => messages.push(m),
            Err(e) => return (messages, Some(e)),
        }
    }
    (messages, None)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::forward::decode::Events;

    /// A PackedForward message of `n` records, each one string field of `len` bytes of `byte`.
    fn message(n: usize, len: usize, byte: u8) -> Vec<u8> {
        let mut entries = Vec::new();
        for _ in 0..n {
            entries.extend_from_slice(&[0x92, 0x01, 0x81, 0xa1, b'k', 0xdb]);
            entries.extend_from_slice(&(len as u32).to_be_bytes());
            entries.extend(std::iter::repeat_n(byte, len));
        }
        let mut m = vec![0x93, 0xa1, b't', 0xc6];
        m.extend_from_slice(&(entries.len() as u32).to_be_bytes());
        m.extend_from_slice(&entries);
        m.extend_from_slice(&[0x81, 0xa5, b'c', b'h', b'u', b'n', b'k', 0xa2, b'i', b'd']);
        m
    }

    fn events(m: Message) -> Events {
        match m {
            Message::Events(e) => e,
            Message::Keepalive => panic!("keepalive"),
        }
    }

    #[test]
    fn pieces_stay_within_the_limit_plus_one_record_and_add_up_to_the_whole_message() {
        // 100 records of 1,000 control bytes: ~6,000 bytes of JSON each.
        let frame = message(100, 1000, 0x01);
        let opts = DecodeOptions::default();
        let whole = events(super::super::decode_message(&frame, &opts, EventTime(0)).unwrap());
        assert_eq!(whole.batch.len(), 100);
        let record = whole.batch.line(0).unwrap().len();
        assert!(record > 6000, "{record}");

        let mut pieces = Vec::new();
        let last = decode_bounded(&frame, &opts, EventTime(0), 50_000, &mut |b| {
            pieces.push(b);
            Ok(())
        })
        .map(events)
        .unwrap();
        assert_eq!(last.ack.as_deref(), whole.ack.as_deref());
        assert!(pieces.len() >= 10, "{} pieces", pieces.len());
        for p in &pieces {
            let bytes = p.json_bytes() + p.len();
            assert!(bytes >= 50_000 && bytes < 50_000 + record, "{bytes}");
            // Reserved once: the text never grew past its capacity.
            assert!(p.held_bytes() < 2 * 50_000 + 4096, "{}", p.held_bytes());
        }
        let lines: Vec<String> = pieces
            .iter()
            .chain(std::iter::once(&last.batch))
            .flat_map(|b| (0..b.len()).map(|i| b.line(i).unwrap().to_owned()))
            .collect();
        let expected: Vec<String> = (0..100)
            .map(|i| whole.batch.line(i).unwrap().to_owned())
            .collect();
        assert_eq!(lines, expected);
    }

    #[test]
    fn a_message_within_the_limit_is_not_cut_and_errors_of_the_hand_out_end_decoding() {
        let frame = message(10, 100, b'a');
        let opts = DecodeOptions::default();
        let mut handed = 0;
        let last = decode_bounded(&frame, &opts, EventTime(0), 1 << 20, &mut |_| {
            handed += 1;
            Ok(())
        })
        .map(events)
        .unwrap();
        assert_eq!((handed, last.batch.len()), (0, 10));

        let refused = decode_bounded(&frame, &opts, EventTime(0), 500, &mut |_| {
            Err(DecodeError::Malformed("stop"))
        });
        assert_eq!(refused, Err(DecodeError::Malformed("stop")));
    }

    #[test]
    fn a_malformed_message_fails_in_pieces_as_it_does_whole() {
        let mut frame = message(10, 100, b'a');
        // Cut the last entry's string short: the payload is truncated.
        let at = frame.len() - 10 - 50;
        frame.drain(at..at + 20);
        let len = (frame.len() - 8 - 10) as u32;
        frame[4..8].copy_from_slice(&len.to_be_bytes());
        let opts = DecodeOptions::default();
        let whole = super::super::decode_message(&frame, &opts, EventTime(0));
        assert!(whole.is_err(), "{whole:?}");
        let pieces = decode_bounded(&frame, &opts, EventTime(0), 300, &mut |_| Ok(()));
        assert_eq!(pieces.map(|_| ()), whole.map(|_| ()));
    }
}
