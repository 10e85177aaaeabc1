//! One forward-protocol message (already framed) → one [`EventBatch`] plus its ack id.
//!
//! Modes are told apart by the type of element `[1]` (Forward Protocol Specification v1):
//! array → Forward, str/bin → PackedForward (gzip when option `compressed` is `"gzip"`,
//! possibly several concatenated members), anything else → Message. A top-level `nil` is a
//! keepalive.
//!
//! Two kinds of bad input, handled differently:
//! * a bad **message** (malformed msgpack, not an array, tag not a UTF-8 string, bad gzip,
//!   decompressed size over the limit, too deep) is a [`DecodeError`]: nothing of the message is
//!   emitted, no ack is sent, and the connection is closed, because a stream whose framing we
//!   cannot trust cannot be resynchronised;
//! * a bad **event** inside a good message (time not an integer/EventTime, record not a map,
//!   entry not `[time, record]`) is skipped and counted when `skip_invalid_event` is on (the
//!   default, like Fluentd), and the message is still acknowledged since a resend could never
//!   succeed. With `skip_invalid_event = false` it fails the whole message instead.
//!
//! And one kind of *big* input: a record whose JSON would pass `record_size_limit` is not
//! written out. The transcoder stops at the limit, the rest of its msgpack is skipped, and the
//! batch carries an [`Oversized`] description (time, size, the first 4 KiB) that the pipeline
//! dead-letters; the message's other events are stored and acknowledged as usual.
//!
//! CompressedPackedForward payloads are inflated an entry at a time (module `inflate`), so what one
//! message costs in memory is its frame, its JSON and one bounded window, never its inflated
//! size.

mod inflate;
mod pieces;

pub use pieces::{decode_bounded, decode_stream};

use super::msgpack::{Cursor, Item};
use super::transcode;
use crate::event::{EventBatch, EventTime, Oversized};

/// Why a message was rejected. The connection that sent it is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    /// The bytes are not valid msgpack.
    #[error("malformed msgpack: {0}")]
    Malformed(&'static str),
    /// The message is longer than `message_length_limit`.
    #[error("message longer than message_length_limit ({limit} bytes)")]
    TooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// Arrays/maps nested deeper than we accept.
    #[error("values nested deeper than {limit} levels")]
    TooDeep {
        /// The limit.
        limit: usize,
    },
    /// Valid msgpack, but not the shape of a forward message.
    #[error("not a forward message: {0}")]
    WrongType(&'static str),
    /// The tag is not a msgpack str.
    #[error("tag is not a string")]
    TagNotString,
    /// The tag is a str whose bytes are not UTF-8 (record values are repaired instead; a tag
    /// decides routing, so it is never guessed).
    #[error("tag is not valid UTF-8")]
    TagNotUtf8,
    /// The JSON variant of the protocol, which this source does not implement.
    #[error("the JSON variant of the forward protocol is not supported; send msgpack")]
    JsonNotSupported,
    /// `compressed` names a codec we do not support.
    #[error("unsupported compression {0:?} (only \"gzip\" and \"text\" are supported)")]
    UnsupportedCompression(String),
    /// The gzip payload is corrupt or truncated.
    #[error("bad gzip payload: {0}")]
    Gzip(String),
    /// The payload decompresses to more than `decompression_size_limit`.
    #[error("payload decompresses to more than decompression_size_limit ({limit} bytes)")]
    DecompressedTooLarge {
        /// The limit in bytes.
        limit: usize,
    },
    /// An invalid event with `skip_invalid_event = false`.
    #[error("invalid event: {0}")]
    InvalidEvent(&'static str),
    /// A record's JSON passes `record_size_limit`. The decoder turns this into an
    /// [`Oversized`] record; it only ends a message where the record cannot be skipped.
    #[error("record larger than record_size_limit")]
    RecordTooLarge,
}

impl DecodeError {
    /// Short label for the `reason` of the invalid-message counter.
    pub fn reason(&self) -> &'static str {
        match self {
            DecodeError::Malformed(_) => "malformed",
            DecodeError::TooLarge { .. } => "too_large",
            DecodeError::TooDeep { .. } => "too_deep",
            DecodeError::WrongType(_) => "wrong_type",
            DecodeError::TagNotString => "tag_not_string",
            DecodeError::TagNotUtf8 => "invalid_utf8",
            DecodeError::JsonNotSupported => "json",
            DecodeError::UnsupportedCompression(_) => "unsupported_compression",
            DecodeError::Gzip(_) => "bad_gzip",
            DecodeError::DecompressedTooLarge { .. } => "decompression_limit",
            DecodeError::InvalidEvent(_) => "invalid_event",
            DecodeError::RecordTooLarge => "record_too_large",
        }
    }
}

/// `record_size_limit` when nothing else decides it: the largest record Firehose accepts
/// (1,000 KiB), the usual destination. The relay derives the real default from its outputs.
pub const DEFAULT_RECORD_SIZE_LIMIT: usize = 1_024_000;

/// How messages are turned into events (from the source config, plus per-connection fields).
#[derive(Debug, Clone)]
pub struct DecodeOptions {
    /// Skip invalid events inside a valid message instead of failing it.
    pub skip_invalid_event: bool,
    /// Largest decompressed CompressedPackedForward payload.
    pub decompression_size_limit: usize,
    /// Largest JSON text of one record; larger records become [`Oversized`].
    pub record_size_limit: usize,
    /// Prepended to every tag, followed by `.`.
    pub tag_prefix: Option<String>,
    /// Fields added to every record (`source_address_key`, `source_hostname_key`), as
    /// (key, value); a record's own field of the same name is replaced.
    pub extra_fields: Vec<(String, String)>,
}

impl Default for DecodeOptions {
    fn default() -> Self {
        DecodeOptions {
            skip_invalid_event: true,
            decompression_size_limit: 256 << 20,
            record_size_limit: DEFAULT_RECORD_SIZE_LIMIT,
            tag_prefix: None,
            extra_fields: Vec::new(),
        }
    }
}

/// A decoded message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// `nil`: keepalive/heartbeat, nothing to do.
    Keepalive,
    /// Events to emit.
    Events(Events),
}

/// The events of one message and what to answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Events {
    /// The events (possibly none, e.g. all invalid).
    pub batch: EventBatch,
    /// The ack to send once the batch is stored: msgpack `{"ack": <chunk>}`, echoing the
    /// client's chunk id byte for byte. `None` when the client did not ask for one.
    pub ack: Option<Vec<u8>>,
    /// Events skipped because they were invalid.
    pub invalid_events: usize,
    /// Why the first skipped event was invalid.
    pub invalid_reason: Option<&'static str>,
}

/// What the options map said.
#[derive(Default)]
struct MessageOptions<'a> {
    chunk: Option<&'a [u8]>,
    compressed: Option<&'a [u8]>,
}

/// Why decoding stopped.
enum Stop {
    /// The message is bad.
    Decode(DecodeError),
    /// The payload inflated past the inline budget: decode it again on the blocking pool.
    OverBudget,
}

impl From<DecodeError> for Stop {
    fn from(e: DecodeError) -> Self {
        Stop::Decode(e)
    }
}

/// Decodes one framed message. `now` replaces times of `0`/`nil`.
pub fn decode_message(
    frame: &[u8],
    opts: &DecodeOptions,
    now: EventTime,
) -> Result<Message, DecodeError> {
    match decode(frame, opts, now, None, None) {
        Ok(m) => Ok(m),
        Err(Stop::Decode(e)) => Err(e),
        // Without a budget the inflater never asks for one.
        Err(Stop::OverBudget) => Err(DecodeError::Malformed("internal: no inline budget")),
    }
}

/// Decodes a message on the calling (async) thread if that is cheap: `None` as soon as its
/// payload inflates past `budget` bytes, and the caller decodes it again with
/// [`decode_message`] on the blocking pool. The decision rests on the decompressed size, which
/// only inflating tells; the work wasted is bounded by `budget`.
pub fn decode_small(
    frame: &[u8],
    opts: &DecodeOptions,
    now: EventTime,
    budget: usize,
) -> Option<Result<Message, DecodeError>> {
    match decode(frame, opts, now, Some(budget), None) {
        Ok(m) => Some(Ok(m)),
        Err(Stop::Decode(e)) => Some(Err(e)),
        Err(Stop::OverBudget) => None,
    }
}

fn decode(
    frame: &[u8],
    opts: &DecodeOptions,
    now: EventTime,
    budget: Option<usize>,
    pieces: Option<pieces::Pieces<'_>>,
) -> Result<Message, Stop> {
    if let Some(b'{' | b'[') = frame.first() {
        return Err(DecodeError::JsonNotSupported.into());
    }
    let mut cur = Cursor::new(frame);
    let Some(len) = message_len(&mut cur)? else {
        return Ok(Message::Keepalive);
    };
    let tag = read_tag(&mut cur, opts)?;
    let options = options_ahead(&mut cur, len)?;
    let capacity = frame.len() + frame.len() / 4;
    let capacity = pieces
        .as_ref()
        .map_or(capacity, |p| capacity.min(p.capacity(opts)));
    let mut out = Events {
        batch: EventBatch::with_capacity(tag, 1, capacity),
        ack: options.chunk.map(ack_for),
        invalid_events: 0,
        invalid_reason: None,
    };
    let mut sink = EventSink {
        opts,
        now,
        out: &mut out,
        pieces,
        repeats: transcode::Repeats::default(),
    };
    sink.body(&mut cur, options.compressed, budget)?;
    Ok(Message::Events(out))
}

/// Reads the message's array header: its element count, or `None` for a keepalive (`nil`).
fn message_len(cur: &mut Cursor<'_>) -> Result<Option<u32>, DecodeError> {
    match cur.next_item()? {
        Item::Nil => Ok(None),
        Item::Array(n @ 2..=4) => Ok(Some(n)),
        Item::Array(_) => Err(DecodeError::WrongType("array must have 2 to 4 elements")),
        _ => Err(DecodeError::WrongType("message is not an array")),
    }
}

/// Reads the tag, with `tag_prefix` applied.
fn read_tag(cur: &mut Cursor<'_>, opts: &DecodeOptions) -> Result<String, DecodeError> {
    let tag = match cur.next_item()? {
        Item::Str(b) => std::str::from_utf8(b).map_err(|_| DecodeError::TagNotUtf8)?,
        other => {
            cur.skip_children(&other)?;
            return Err(DecodeError::TagNotString);
        }
    };
    Ok(match &opts.tag_prefix {
        Some(p) => format!("{p}.{tag}"),
        None => tag.to_owned(),
    })
}

/// Reads the options of a message of `len` elements whose body starts at `cur`. They come
/// last, but `compressed` decides how to read the body, so they are read first: the body's
/// first item tells the mode and so how many values to skip. `cur` is left at the body.
fn options_ahead<'a>(cur: &mut Cursor<'a>, len: u32) -> Result<MessageOptions<'a>, DecodeError> {
    let body = cur.pos();
    let second = cur.next_item()?;
    let is_message_mode = !matches!(second, Item::Array(_) | Item::Str(_) | Item::Bin(_));
    let (event_values, option_present) = match (is_message_mode, len) {
        (true, 3) => (2, false),
        (true, 4) => (2, true),
        (true, _) => {
            return Err(DecodeError::WrongType(
                "Message mode needs [tag, time, record]",
            ))
        }
        (false, 2) => (1, false),
        (false, 3) => (1, true),
        (false, _) => return Err(DecodeError::WrongType("too many elements")),
    };
    cur.seek(body);
    cur.skip_values(event_values)?;
    let options = if option_present {
        read_options(cur)?
    } else {
        MessageOptions::default()
    };
    cur.seek(body);
    Ok(options)
}

/// `{"ack": <chunk>}` as msgpack, reusing the chunk's own encoding.
fn ack_for(chunk: &[u8]) -> Vec<u8> {
    let mut ack = Vec::with_capacity(5 + chunk.len());
    ack.extend_from_slice(&[0x81, 0xa3, b'a', b'c', b'k']);
    ack.extend_from_slice(chunk);
    ack
}

fn read_options<'a>(cur: &mut Cursor<'a>) -> Result<MessageOptions<'a>, DecodeError> {
    let mut o = MessageOptions::default();
    let n = match cur.next_item()? {
        Item::Map(n) => n,
        Item::Nil => return Ok(o),
        _ => return Err(DecodeError::WrongType("option is not a map")),
    };
    for _ in 0..n {
        let key = cur.next_item()?;
        cur.skip_children(&key)?;
        let start = cur.pos();
        let value = cur.next_item()?;
        cur.skip_children(&value)?;
        match (key, value) {
            (Item::Str(b"chunk"), _) => o.chunk = Some(cur.slice_from(start)),
            (Item::Str(b"compressed"), Item::Str(c)) => o.compressed = Some(c),
            (Item::Str(b"compressed"), _) => {
                return Err(DecodeError::WrongType("option compressed is not a string"))
            }
            _ => {}
        }
    }
    Ok(o)
}

/// Writes events into the output, applying the invalid-event policy.
struct EventSink<'o, 'p> {
    opts: &'o DecodeOptions,
    now: EventTime,
    out: &'o mut Events,
    /// Set when the output is handed out in pieces ([`decode_bounded`]).
    pieces: Option<pieces::Pieces<'p>>,
    /// The last record's strings (see [`transcode::Repeats`]).
    repeats: transcode::Repeats,
}

impl EventSink<'_, '_> {
    fn invalid(&mut self, reason: &'static str) -> Result<(), DecodeError> {
        if !self.opts.skip_invalid_event {
            return Err(DecodeError::InvalidEvent(reason));
        }
        self.out.invalid_events += 1;
        self.out.invalid_reason.get_or_insert(reason);
        Ok(())
    }

    /// The events after the tag: Forward (an array of entries), PackedForward (entries in a
    /// str/bin payload, gzip when `compressed` says so) or Message (time and record).
    fn body(
        &mut self,
        cur: &mut Cursor<'_>,
        compressed: Option<&[u8]>,
        budget: Option<usize>,
    ) -> Result<(), Stop> {
        match cur.next_item()? {
            Item::Array(n) => {
                for _ in 0..n {
                    self.entry(cur)?;
                }
            }
            Item::Str(payload) | Item::Bin(payload) => match compressed {
                None | Some(b"text") => self.packed(payload)?,
                Some(b"gzip") => inflate::packed_gzip(self, payload, budget)?,
                Some(other) => {
                    return Err(DecodeError::UnsupportedCompression(
                        String::from_utf8_lossy(other).into_owned(),
                    )
                    .into())
                }
            },
            time => {
                let time = self.time(cur, time)?;
                self.record(cur, time)?;
            }
        }
        Ok(())
    }

    /// PackedForward payload: `[time, record]` entries back to back.
    fn packed(&mut self, payload: &[u8]) -> Result<(), DecodeError> {
        let mut cur = Cursor::new(payload);
        while !cur.is_empty() {
            self.entry(&mut cur)?;
        }
        Ok(())
    }

    /// One `[time, record]` entry.
    fn entry(&mut self, cur: &mut Cursor<'_>) -> Result<(), DecodeError> {
        match cur.next_item()? {
            Item::Array(2) => {
                let t = cur.next_item()?;
                let time = self.time(cur, t)?;
                self.record(cur, time)
            }
            other => {
                cur.skip_children(&other)?;
                self.invalid("entry is not a [time, record] array")
            }
        }
    }

    /// Reads a time; `None` when it is invalid (its value is consumed either way).
    fn time(
        &mut self,
        cur: &mut Cursor<'_>,
        item: Item<'_>,
    ) -> Result<Option<EventTime>, DecodeError> {
        Ok(match item {
            Item::Nil | Item::Uint(0) => Some(self.now),
            Item::Uint(s) => Some(EventTime::from_parts(
                i64::try_from(s).unwrap_or(i64::MAX),
                0,
            )),
            Item::Int(s) => Some(EventTime::from_parts(s, 0)),
            Item::Ext(0, p) if p.len() == 8 => {
                let secs = u32::from_be_bytes([p[0], p[1], p[2], p[3]]);
                let nanos = u32::from_be_bytes([p[4], p[5], p[6], p[7]]);
                if secs == 0 && nanos == 0 {
                    Some(self.now)
                } else if nanos >= 1_000_000_000 {
                    None
                } else {
                    Some(EventTime::from_parts(i64::from(secs), nanos))
                }
            }
            // Fluent Bit v2+ (`fluent_signal`): [EventTime, metadata].
            Item::Array(2) => {
                let inner = cur.next_item()?;
                let time = match inner {
                    Item::Array(_) => {
                        cur.skip_children(&inner)?;
                        None
                    }
                    other => self.time(cur, other)?,
                };
                cur.skip_values(1)?;
                time
            }
            other => {
                cur.skip_children(&other)?;
                None
            }
        })
    }

    /// Reads a record and commits it with `time`, or skips the event if either is invalid. A
    /// record past `record_size_limit` is skipped and described as [`Oversized`].
    fn record(&mut self, cur: &mut Cursor<'_>, time: Option<EventTime>) -> Result<(), DecodeError> {
        let start = cur.pos();
        let item = cur.next_item()?;
        let Item::Map(n) = item else {
            cur.skip_children(&item)?;
            return self.invalid("record is not a map");
        };
        let Some(time) = time else {
            cur.skip_values(2 * u64::from(n))?;
            return self.invalid("time is not an integer or EventTime");
        };
        let limit = self.opts.record_size_limit;
        let batch = &mut self.out.batch;
        let text_start = batch.raw_start();
        let written = transcode::write_record(
            cur,
            n,
            batch.raw_json_mut(),
            text_start.saturating_add(limit),
            &self.opts.extra_fields,
            &mut self.repeats,
        );
        match written {
            Ok(()) => {
                batch.commit_raw(time);
                self.piece_done()
            }
            Err(DecodeError::RecordTooLarge) => {
                let prefix = Oversized::prefix_of(&batch.raw_json_mut()[text_start..]);
                batch.rollback_raw();
                cur.seek(start);
                cur.skip_values(1)?;
                batch.push_oversized(Oversized {
                    time,
                    received_bytes: cur.pos() - start,
                    limit,
                    prefix,
                });
                self.piece_done()
            }
            Err(e) => {
                batch.rollback_raw();
                Err(e)
            }
        }
    }

    /// An entry too large for the inflater's window, of which only its first bytes (`head`)
    /// are at hand: an oversized record (its size still to be filled in) when it is a valid
    /// event, else `None` and an invalid event.
    fn oversized_entry(&mut self, head: &[u8]) -> Result<Option<Oversized>, DecodeError> {
        let mut cur = Cursor::new(head);
        if cur.next_item() != Ok(Item::Array(2)) {
            return self
                .invalid("entry is not a [time, record] array")
                .map(|()| None);
        }
        let time = match cur.next_item() {
            Ok(t) => self.time(&mut cur, t).ok().flatten(),
            Err(_) => None,
        };
        let (Some(time), Ok(Item::Map(n))) = (time, cur.next_item()) else {
            return self
                .invalid("time is not an integer or EventTime, or record is not a map")
                .map(|()| None);
        };
        let limit = self.opts.record_size_limit;
        let mut text = String::new();
        // It cannot complete: the record goes on beyond `head`. What it wrote is the prefix.
        let _ = transcode::write_record(
            &mut cur,
            n,
            &mut text,
            limit,
            &self.opts.extra_fields,
            &mut transcode::Repeats::default(),
        );
        Ok(Some(Oversized {
            time,
            received_bytes: 0,
            limit,
            prefix: Oversized::prefix_of(&text),
        }))
    }
}

#[cfg(test)]
mod tests;
