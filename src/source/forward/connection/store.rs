//! From a framed message to its ack: decoding (inline, on the blocking pool, or in pieces) and
//! storing, with the message's bytes of `in_flight_limit` held until the buffer resolved it.

use std::sync::Arc;

use bytes::Bytes;
use tokio::io::{AsyncRead, AsyncWrite};

use super::{Conn, ConnError, Shared};
use crate::event::{EventBatch, EventTime, Oversized};
use crate::source::forward::budget::Held;
use crate::source::forward::decode::{
    decode_bounded, decode_message, decode_small, DecodeError, DecodeOptions, Events, Message,
};

/// Messages larger than this, or whose gzip payload inflates to more, are decoded on the
/// blocking pool so that a big message does not stall the other connections sharing the
/// runtime thread. Smaller ones are decoded in place: decoding runs at ~1 GB/s, so 256 KiB
/// (~1,000 records, what Fluent Bit sends per message under load) holds the thread for
/// ~250 µs, less than the two thread hand-offs it would otherwise cost (the profile showed
/// scheduler wake-ups as a tenth of the relay's CPU). A gzip message is first inflated in place
/// up to this many bytes; past them it starts again on the blocking pool (at most 256 KiB of
/// inflating wasted, for messages that cost far more).
const OFFLOAD_BYTES: usize = 256 * 1024;
/// The smallest piece a message's JSON is cut into (see [`piece_limit`]), so that a tiny
/// message of control characters is not stored a record at a time.
const MIN_PIECE: usize = 16 * 1024;

/// A decoded message on its way to the buffer.
pub(super) enum Decoded {
    /// All of its events.
    Whole(Events),
    /// Its events in pieces, decoded on the blocking pool one piece ahead of the store (the
    /// decoder waits for each piece to be stored before it writes the next).
    Pieces {
        pieces: tokio::sync::mpsc::Receiver<EventBatch>,
        stored: std::sync::mpsc::SyncSender<()>,
        decoder: tokio::task::JoinHandle<Result<Message, DecodeError>>,
    },
}

/// How many bytes of JSON a message holding `held` bytes of the budget for a frame of
/// `frame_len` bytes may have at once: the rest of what it holds; half the budget for a
/// message that holds all of it (its frame alone may be larger).
fn piece_limit(held: usize, frame_len: usize, budget: usize) -> usize {
    let rest = held.saturating_sub(frame_len);
    if held >= budget {
        rest.max(budget / 2)
    } else {
        rest.max(MIN_PIECE)
    }
}

/// Bytes of JSON text (with newlines) of a decoded message.
fn checked_text(events: &Events) -> usize {
    events.batch.json_bytes() + events.batch.len()
}

/// Stores one decoded message; resolves to its ack when stored, `None` when there is nothing to
/// send (no ack requested, or the buffer refused: then the client resends). The message's
/// bytes of `in_flight_limit` are given back once the append resolved. A message in pieces is
/// acknowledged once every piece is stored; when one is refused the rest is not stored (the
/// client resends the message, so the pieces already stored are stored twice: at least once).
pub(super) async fn store(shared: &Shared, decoded: Decoded, held: Held) -> Option<Vec<u8>> {
    let events = match decoded {
        Decoded::Whole(events) => events,
        Decoded::Pieces {
            mut pieces,
            stored,
            decoder,
        } => {
            while let Some(piece) = pieces.recv().await {
                if !emit(shared, piece).await {
                    // Dropping the receiver ends the decoder.
                    return None;
                }
                // The decoder waits for this before it writes the next piece.
                let _ = stored.try_send(());
            }
            match decoder.await {
                Ok(Ok(Message::Events(last))) => last,
                Ok(Ok(Message::Keepalive)) => return None,
                Ok(Err(e)) => {
                    // The message was decoded once before: decoding it again cannot fail.
                    tracing::error!(source = %shared.name, error = %e,
                        "a forward message failed when decoded in pieces; not acknowledged");
                    return None;
                }
                Err(e) => {
                    tracing::error!(source = %shared.name, error = %e,
                        "the decoder of a forward message died; not acknowledged");
                    return None;
                }
            }
        }
    };
    let stored = emit(shared, events.batch).await;
    drop(held);
    if stored {
        events.ack
    } else {
        None
    }
}

/// Emits one batch; false (counted and logged) when the buffer refused it.
async fn emit(shared: &Shared, batch: EventBatch) -> bool {
    match shared.emitter.emit(batch).await {
        Ok(()) => true,
        Err(e) => {
            shared.emit_failures.inc();
            if let Some(suppressed) = shared.emit_log.allow() {
                tracing::warn!(source = %shared.name, error = %e, suppressed,
                    "could not store a forward message; not acknowledged");
            }
            false
        }
    }
}

impl<S> Conn<'_, S>
where
    S: AsyncRead + AsyncWrite + Unpin + Send,
{
    /// Decodes one message holding `held` bytes of the budget; `None` for a keepalive. Small
    /// messages are decoded in place, large ones on the blocking pool (off the async workers).
    /// A message whose JSON fits in what it holds beside its frame comes back whole, holding
    /// only what its JSON holds (its frame is freed); one whose JSON does not is decoded
    /// again in pieces of that size and keeps what it holds until its last piece is stored.
    pub(super) async fn decode(
        &mut self,
        frame: Bytes,
        mut held: Held,
        opts: &Arc<DecodeOptions>,
    ) -> Result<Option<(Decoded, Held)>, ConnError> {
        let now = EventTime::now();
        let budget = &self.shared.in_flight;
        let limit = piece_limit(held.len(), frame.len(), budget.limit());
        // JSON beyond what the message holds for it, when free at once, is taken rather than
        // cutting the message (a gzip message's JSON is many times its bytes).
        let mut fits = |m: &Result<Message, DecodeError>| match m {
            Ok(Message::Events(e)) => {
                let json = e.batch.held_bytes();
                json < limit || budget.try_grow(&mut held, json - limit)
            }
            _ => true,
        };
        let inline = if frame.len() > OFFLOAD_BYTES {
            None
        } else {
            decode_small(&frame, opts, now, OFFLOAD_BYTES).filter(&mut fits)
        };
        let whole = match inline {
            Some(decoded) => decoded,
            None => {
                // Decoded once (handing out nothing beyond one piece): the message is checked
                // whole before anything of it is stored, and comes back whole when it fits.
                let task_opts = Arc::clone(opts);
                let task_frame = frame.clone();
                let checked = tokio::task::spawn_blocking(move || {
                    let mut text = 0usize;
                    let mut oversized = Vec::new();
                    let last = decode_bounded(&task_frame, &task_opts, now, limit, &mut |b| {
                        text += b.json_bytes() + b.len();
                        oversized.extend_from_slice(b.oversized());
                        Ok(())
                    });
                    (last, text, oversized)
                })
                .await
                .map_err(|e| ConnError::Internal(e.to_string()))?;
                match checked {
                    (Ok(Message::Events(last)), earlier @ 1.., oversized) => {
                        // Whole, its text may take up to twice its length (it grows by doubling).
                        let text = 2 * (checked_text(&last) + earlier);
                        if budget.try_grow(&mut held, text.saturating_sub(limit)) {
                            let (opts, frame) = (Arc::clone(opts), frame.clone());
                            tokio::task::spawn_blocking(move || decode_message(&frame, &opts, now))
                                .await
                                .map_err(|e| ConnError::Internal(e.to_string()))?
                        } else {
                            self.report(&last, &oversized);
                            let decoded = self.in_pieces(frame, opts, now, limit);
                            return Ok(Some((decoded, held)));
                        }
                    }
                    (last, _, _) => last,
                }
            }
        };
        drop(frame);
        let Message::Events(events) = whole? else {
            return Ok(None);
        };
        self.report(&events, &[]);
        // The frame is freed: the message now holds its JSON.
        let json = held.split(events.batch.held_bytes());
        drop(held);
        Ok(Some((Decoded::Whole(events), json)))
    }

    /// Starts decoding `frame` again on the blocking pool, handing out pieces of `limit`.
    fn in_pieces(
        &self,
        frame: Bytes,
        opts: &Arc<DecodeOptions>,
        now: EventTime,
        limit: usize,
    ) -> Decoded {
        let (tx, pieces) = tokio::sync::mpsc::channel(1);
        let (stored, wait) = std::sync::mpsc::sync_channel(1);
        let opts = Arc::clone(opts);
        let decoder = tokio::task::spawn_blocking(move || {
            decode_bounded(&frame, &opts, now, limit, &mut |piece| {
                let gone = DecodeError::Malformed("the connection is gone");
                tx.blocking_send(piece).map_err(|_| gone.clone())?;
                wait.recv().map_err(|_| gone)
            })
        });
        Decoded::Pieces {
            pieces,
            stored,
            decoder,
        }
    }

    /// Counts and logs the invalid events and oversized records of a message (`oversized`:
    /// those of its pieces before the last).
    fn report(&self, events: &Events, oversized: &[Oversized]) {
        let shared = self.shared;
        if events.invalid_events > 0 {
            shared.invalid_events.inc_by(events.invalid_events as u64);
            if let Some(suppressed) = shared.bad_input_log.allow("invalid_event") {
                tracing::warn!(source = %shared.name, tag = events.batch.tag(),
                    skipped = events.invalid_events, reason = events.invalid_reason.unwrap_or(""),
                    suppressed, "skipped invalid events (skip_invalid_event)");
            }
        }
        let last = events.batch.oversized();
        let count = oversized.len() + last.len();
        if let Some(first) = oversized.first().or(last.first()) {
            shared.oversized_records.inc_by(count as u64);
            if let Some(suppressed) = shared.bad_input_log.allow("record_too_large") {
                tracing::warn!(source = %shared.name, tag = events.batch.tag(),
                    records = count, received_bytes = first.received_bytes,
                    record_size_limit = first.limit, reason = "record_too_large", suppressed,
                    "records larger than record_size_limit: dead-lettered as a description, the \
                     rest of the message is stored");
            }
        }
    }
}
