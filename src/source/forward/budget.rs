//! `in_flight_limit`: one budget of message bytes for all connections of a forward source,
//! between the sockets and the buffer. A connection takes permits for a message before it reads
//! the message's body and hands them to the message's store; they come back when the buffer
//! resolved the append (stored or refused). When the budget is used up connections stop reading
//! (the clients' TCP windows fill up), so memory does not grow with the number of clients.
//!
//! What a message takes counts its bytes twice over: its msgpack as received (the frame) and the
//! JSON it becomes, which lives alongside the frame while it is decoded and alone once the frame
//! is freed. A message of `n` bytes takes [`with_json`]`(n)`: `n` for the frame and
//! [`json_allowance`]`(n)` (1.5 × `n`, more than realistic records need: JSON is ~1.1–1.3× their
//! msgpack) for its JSON. A message whose JSON would pass its allowance (control characters
//! become six bytes each) is decoded and stored in pieces of at most its allowance (see
//! `decode::decode_bounded`), one piece at a time; once a message is decoded whole it keeps
//! only what its JSON holds. So memory between the sockets and the buffer stays within the
//! budget, apart from the record that crosses a piece's end (records are never split, each is
//! within `record_size_limit`).
//!
//! How much a message takes is decided once, before its body is read (never more while holding
//! some: two connections each holding half and waiting for the rest would wait forever):
//! * the first [`PROBE`] bytes of a message are read without permits (what an idle or waiting
//!   connection holds: its framing header, or a whole small message);
//! * a message whose length is announced by a str/bin header (PackedForward and
//!   CompressedPackedForward, what Fluentd and Fluent Bit send) takes that length plus [`SLACK`]
//!   for the option map that follows;
//! * a message of unknown length past the probe (Forward mode with entries sent one by one, a
//!   large Message mode record) takes `message_length_limit`, and gives back what it did not use
//!   as soon as it is framed;
//! * a message larger than the whole budget takes all of it (and alone is read past it); its
//!   JSON pieces are then half the budget each.
//!
//! A message whose JSON turns out larger than its share (a gzip payload: its JSON is many times
//! its bytes) first tries to take the difference at once, without waiting
//! ([`InFlight::try_grow`]), and is stored whole when it gets it; in pieces only when the budget
//! is busy.
//!
//! (Each of these lengths `n` taken as [`with_json`]`(n)`.) A message that outgrows its take (an
//! option map longer than [`SLACK`]) gives its permits back and waits for the
//! `message_length_limit` take; its bytes already received are not counted during that wait.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes of a message read before it takes permits.
pub const PROBE: usize = 8 * 1024;
/// Taken beyond a PackedForward message's announced entries, for the option map after them.
pub const SLACK: usize = 4 * 1024;

/// What a message of `wire` bytes takes: the bytes themselves and [`json_allowance`].
pub fn with_json(wire: usize) -> usize {
    wire.saturating_add(json_allowance(wire))
}

/// The bytes of JSON a message of `wire` bytes may hold at once: 1.5 × `wire`.
pub fn json_allowance(wire: usize) -> usize {
    wire.saturating_add(wire / 2)
}

/// The budget of one forward source.
pub struct InFlight {
    permits: Arc<Semaphore>,
    limit: usize,
    bytes: Gauge,
    peak: Gauge,
    waits: Counter,
}

impl InFlight {
    /// A budget of `limit` bytes (at most `u32::MAX`, checked by the config) reporting to the
    /// given metrics.
    pub fn new(limit: usize, bytes: Gauge, peak: Gauge, waits: Counter) -> InFlight {
        let limit = limit.clamp(1, u32::MAX as usize);
        InFlight {
            permits: Arc::new(Semaphore::new(limit)),
            limit,
            bytes,
            peak,
            waits,
        }
    }

    /// The budget in bytes.
    pub fn limit(&self) -> usize {
        self.limit
    }

    /// Holding nothing.
    pub fn nothing(&self) -> Held {
        Held::none(&self.bytes)
    }

    /// Takes `n` bytes (all of the budget when `n` is larger), waiting while they are in use
    /// elsewhere (counted in `forward_in_flight_waits_total`). Cancel-safe: a dropped wait takes
    /// nothing.
    pub async fn take(&self, n: usize) -> Held {
        let n = n.clamp(1, self.limit) as u32;
        let permit = match Arc::clone(&self.permits).try_acquire_many_owned(n) {
            Ok(p) => p,
            Err(_) => {
                self.waits.inc();
                match Arc::clone(&self.permits).acquire_many_owned(n).await {
                    Ok(p) => p,
                    // The semaphore is never closed; should it be, nothing is counted any more
                    // rather than every connection stopping.
                    Err(_) => return Held::none(&self.bytes),
                }
            }
        };
        let now = self.bytes.inc_by(i64::from(n)) + i64::from(n);
        self.peak.inner().fetch_max(now, Ordering::Relaxed);
        Held {
            permit: Some(permit),
            bytes: self.bytes.clone(),
        }
    }
}

impl InFlight {
    /// Takes `n` more bytes into `held` if they are free right now (never waits, so a message
    /// holding some may ask: see the module's rules); false when they are not.
    pub fn try_grow(&self, held: &mut Held, n: usize) -> bool {
        let Ok(n32) = u32::try_from(n) else {
            return false;
        };
        if n == 0 {
            return true;
        }
        let Ok(more) = Arc::clone(&self.permits).try_acquire_many_owned(n32) else {
            return false;
        };
        let now = self.bytes.inc_by(i64::from(n32)) + i64::from(n32);
        self.peak.inner().fetch_max(now, Ordering::Relaxed);
        match &mut held.permit {
            Some(p) => p.merge(more),
            None => held.permit = Some(more),
        }
        true
    }
}

/// Bytes of the budget held; given back when dropped.
pub struct Held {
    permit: Option<OwnedSemaphorePermit>,
    bytes: Gauge,
}

impl Held {
    fn none(bytes: &Gauge) -> Held {
        Held {
            permit: None,
            bytes: bytes.clone(),
        }
    }

    /// Bytes held.
    pub fn len(&self) -> usize {
        self.permit.as_ref().map_or(0, |p| p.num_permits())
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Moves `n` bytes (at most all) into a new `Held`.
    pub fn split(&mut self, n: usize) -> Held {
        let n = n.min(self.len());
        let permit = match (&mut self.permit, n) {
            (_, 0) => None,
            (Some(p), n) if n == p.num_permits() => self.permit.take(),
            (Some(p), n) => p.split(n),
            (None, _) => None,
        };
        Held {
            permit,
            bytes: self.bytes.clone(),
        }
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        if let Some(p) = self.permit.take() {
            self.bytes.dec_by(p.num_permits() as i64);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(limit: usize) -> InFlight {
        InFlight::new(
            limit,
            Gauge::default(),
            Gauge::default(),
            Counter::default(),
        )
    }

    #[tokio::test]
    async fn takes_wait_for_bytes_given_back_and_are_counted() {
        let b = Arc::new(budget(1000));
        let mut first = b.take(600).await;
        assert_eq!(b.bytes.get(), 600);
        let frame = first.split(250);
        assert_eq!((first.len(), frame.len()), (350, 250));
        // 500 more do not fit until 100 come back.
        let waiting = tokio::spawn({
            let b = Arc::clone(&b);
            async move { b.take(500).await.len() }
        });
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(!waiting.is_finished());
        assert_eq!(b.waits.get(), 1);
        drop(frame);
        assert_eq!(b.bytes.get(), 350);
        assert_eq!(waiting.await.unwrap(), 500);
        drop(first);
        assert_eq!(b.bytes.get(), 0);
        assert_eq!(b.peak.get(), 850);
    }

    #[tokio::test]
    async fn growing_takes_only_bytes_free_at_once() {
        let b = budget(1000);
        let mut held = b.take(600).await;
        assert!(!b.try_grow(&mut held, 500));
        assert_eq!((held.len(), b.bytes.get()), (600, 600));
        assert!(b.try_grow(&mut held, 400));
        assert_eq!(
            (held.len(), b.bytes.get(), b.peak.get()),
            (1000, 1000, 1000)
        );
        drop(held);
        assert_eq!(b.permits.available_permits(), 1000);
        assert_eq!(b.bytes.get(), 0);
    }

    #[tokio::test]
    async fn a_take_larger_than_the_budget_takes_all_of_it() {
        let b = budget(1000);
        let all = b.take(5000).await;
        assert_eq!(all.len(), 1000);
        assert_eq!(b.permits.available_permits(), 0);
        drop(all);
        assert_eq!(b.permits.available_permits(), 1000);
    }

    #[tokio::test]
    async fn splitting_everything_or_nothing() {
        let b = budget(100);
        let mut h = b.take(40).await;
        assert!(h.split(0).is_empty());
        let all = h.split(40);
        assert!(h.is_empty());
        assert_eq!(all.len(), 40);
        drop(h);
        assert_eq!(b.bytes.get(), 40);
    }
}
