//! The call loop's bookkeeping: which records of a chunk go into the next call, which are
//! confirmed, which wait to be sent again and until when.
//!
//! Nothing here is Firehose-specific. PutRecordBatch (Firehose) and PutRecords (Kinesis Data
//! Streams) answer a call the same way: HTTP 200 with one entry per record, in order, each
//! either accepted or refused with an `ErrorCode` and `ErrorMessage`. A refused record is sent
//! again, in a later call with other records, so a partial failure never duplicates what was
//! accepted; an entry missing from the answer counts as refused (sent again: a duplicate at
//! worst, never a loss).
//!
//! # Records back off, not the worker
//!
//! A flush worker sends one chunk at a time, up to `max_concurrent_calls` calls of it at once
//! ([`ChunkCalls::next`] says what the next call carries). What comes back is sorted per
//! record:
//!
//! * **a record refused inside a 200 answer** waits for *its own* due time and then rides in
//!   the next call, ahead of the chunk's records not sent yet (calls stay within the
//!   per-call limits, and each call carries its records in chunk order). Meanwhile the worker
//!   keeps sending the rest of the chunk. When its call was mostly accepted (at most
//!   [`MAX_BASELINE`] of it refused: the share of rate-independent failures pacing learns to
//!   ignore; or it was the only record refused), its first [`PROMPT_RESENDS`] resends are due at once and the later ones back off
//!   exponentially ([`backoff`]: 50–100 ms doubling to 5 s) per record; when the call was
//!   refused beyond that share, every resend backs off;
//! * **a whole call that fails** (5xx, a throttling error for the call, a timeout, a
//!   connection error) among answered calls is treated the same way (its records ride in the
//!   next call), and the worker carries on; but when [`FAILING_IN_A_ROW`] or more calls fail
//!   in a row without an answer in between, the service itself is in trouble: their records
//!   back off from the first resend, only one call is in flight, and each waits a [`backoff`]
//!   growing with the failures after the last one, exponentially, as a lone call's resends
//!   did; after more than `retries_on_batch_request` failed calls in a row the flush ends (the
//!   rest goes back to the buffer and the chunk's retry schedule takes over, so an outage does
//!   not keep a large chunk's worker for minutes);
//! * configuration and IAM errors end the flush at once.
//!
//! Why: the resend backoff used to hold the worker, one call at a time. With 2 % of records
//! refused whatever the rate (a stream kept at its quota by other producers, a shard's hot
//! key), nearly every 100-record call has a record to resend, and each call's 50–100 ms sleep
//! before resending it bounded a worker to about one call per backoff: the relay delivered
//! 0.001× its unthrottled rate in release (2,507 against 2,249,496 records/s) and 0.45–0.68×
//! in a loaded debug build; now 0.61× in release (1,118,894 against 1,829,458 records/s, the
//! bench's numbers and steps are in benches/README.md). A backoff is meant to spare the service a record (or a call) that
//! just failed, not to stop the records that did not; and the *rate* of everything sent,
//! resends included, is pacing's job ([`super::pacing`]), which sees every answer.
//!
//! When refusals persist, a record is sent at most `retries_on_batch_request + 1` times in one
//! flush, backing off further each time; then it stays in the buffer (undelivered, with the
//! flush's error) and is retried on the chunk's schedule, and dead-lettered when that gives
//! up, like every undelivered record. The flush ends when every record is confirmed or has
//! used its sends, waiting only for the last resends' due times.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::Rng;
use tokio::time::Instant;

use super::batch::CallLimits;
use super::metrics::OutputMetrics;
use super::pacing::MAX_BASELINE;
use crate::sink::{ErrorClass, SinkError};

/// First backoff between resends inside a flush; doubles per attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest backoff between resends inside a flush.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Backoff before resend number `attempt` (1-based): 100 ms doubling to 5 s, 50–100 % jitter.
pub fn backoff(attempt: u32) -> Duration {
    backoff_with(attempt, jitter())
}

/// A jitter factor for [`backoff_with`]: 50–100 %.
fn jitter() -> f64 {
    rand::thread_rng().gen_range(0.5..=1.0)
}

/// [`backoff`] with the jitter factor given, so that the records of one call share it.
fn backoff_with(attempt: u32, jitter: f64) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let d = (FIRST_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF);
    d.mul_f64(jitter)
}

/// Resends of a record, after isolated failures, that go out with the next call before its
/// resends back off. A flush ends only when its last resend is due, so a backoff at the end
/// of a chunk holds the worker. With 2 % of records refused and 5 % of calls failing, a send
/// fails about 7 % of the time and a chunk of 5,000 records has 1.7 records failing a third
/// time, 0.12 a fourth and 0.008 a fifth: with one or two prompt resends most chunks ended
/// with a 50–100 ms wait (a release build sends the whole chunk in ~10 ms), with four under
/// 1 % of them.
const PROMPT_RESENDS: u32 = 4;

/// Calls failing in a row (without an answer in between) that show the service in trouble
/// rather than a rate-independent failure: with 5 % of calls failing at random, two of a
/// chunk's ~12 calls fail in a row in 3 % of chunks, three in 0.15 %.
const FAILING_IN_A_ROW: u32 = 3;

/// How long a record waits before it is sent again: it was sent `sends` times, and it failed
/// in an `isolated` way (a call mostly accepted, or a lone failed call among answered ones,
/// which a rate-independent failure explains) or not (a call refused beyond
/// [`MAX_BASELINE`], failed calls in a row). Isolated: the first [`PROMPT_RESENDS`] resends
/// at once, then backing off; otherwise backing off from the first resend. `jitter` as for
/// [`backoff_with`].
fn resend_delay(sends: u32, isolated: bool, jitter: f64) -> Duration {
    match (isolated, sends) {
        (true, n) if n <= PROMPT_RESENDS => Duration::ZERO,
        (true, n) => backoff_with(n - PROMPT_RESENDS, jitter),
        (false, n) => backoff_with(n, jitter),
    }
}

/// How the service answered one record of a call.
#[derive(Debug, Clone, Copy, Default)]
pub struct RecordAnswer<'a> {
    /// Set when the record was refused.
    pub error_code: Option<&'a str>,
    /// Why, when refused.
    pub error_message: Option<&'a str>,
}

/// The first refusal of an answer, and how many records it left to send.
#[derive(Debug)]
pub struct Refusal {
    /// Class of the first refused record's code.
    pub class: ErrorClass,
    /// Its code and message, or why the answer was incomplete.
    pub detail: String,
    /// The records refused or unanswered (as given in `todo`).
    pub failed: Vec<usize>,
    /// Of those, refused as throttled.
    pub throttled: usize,
    /// Records the call carried.
    pub sent: usize,
}

/// Sorts a 200 answer to a call of the records `todo` (`answers` in the same order): accepted
/// records are counted (`size_of` gives a record's data bytes), refused and unanswered ones
/// are counted by class (`class_of` classifies the service's per-record codes) and returned.
/// `None` when every record was accepted.
pub fn tally<'a>(
    todo: &[usize],
    answers: impl IntoIterator<Item = RecordAnswer<'a>>,
    size_of: impl Fn(usize) -> usize,
    class_of: impl Fn(&str) -> ErrorClass,
    metrics: &OutputMetrics,
) -> Option<Refusal> {
    let mut answers = answers.into_iter();
    let sent = todo.len();
    let (mut answered, mut accepted, mut accepted_bytes) = (0usize, 0u64, 0u64);
    let mut failed = Vec::new();
    let mut throttled = 0;
    let mut first: Option<(ErrorClass, String)> = None;
    for &i in todo {
        let Some(answer) = answers.next() else {
            failed.push(i);
            continue;
        };
        answered += 1;
        let Some(code) = answer.error_code else {
            accepted += 1;
            accepted_bytes += size_of(i) as u64;
            continue;
        };
        let class = class_of(code);
        metrics.record_failures.get(class).inc();
        if class == ErrorClass::Throttled {
            metrics.throttles.inc();
            throttled += 1;
        }
        first.get_or_insert_with(|| {
            let message = answer.error_message.unwrap_or_default();
            (class, format!("{code}: {message}"))
        });
        failed.push(i);
    }
    metrics.records_sent.inc_by(accepted);
    metrics.bytes_sent.inc_by(accepted_bytes);
    if failed.is_empty() {
        return None;
    }
    let answered = answered + answers.count();
    let (class, detail) = first.unwrap_or_else(|| {
        let why = format!("response has {answered} entries for {sent} records");
        (ErrorClass::Other, why)
    });
    Some(Refusal {
        class,
        detail,
        failed,
        throttled,
        sent,
    })
}

/// What the call loop does next ([`ChunkCalls::next`]).
#[derive(Debug, PartialEq, Eq)]
pub enum Next {
    /// Send these records (indices into the packed chunk, in order) in one call.
    Send(Vec<usize>),
    /// Nothing may be sent before this (a resend's due time, or the backoff after failed
    /// calls); an answer that comes first may change that.
    Until(Instant),
    /// Wait for an answer to a call in flight.
    Answer,
    /// Every record is confirmed or has used its sends (or the flush was ended), and no call
    /// is in flight.
    Done,
}

/// The calls of one chunk in one flush: which records are confirmed, which are still to send
/// (not sent yet, or waiting to be sent again until their due time), how many times each was
/// sent, and whether the service is failing whole calls (see the module docs).
#[derive(Debug)]
pub struct ChunkCalls {
    /// Metered size of each record.
    sizes: Vec<usize>,
    limits: CallLimits,
    /// Resends allowed per record, and failed calls in a row before the flush ends.
    retries: u32,
    confirmed: Vec<bool>,
    /// Times each record was sent in this flush.
    sends: Vec<u32>,
    /// Records from here on were never sent.
    next_fresh: usize,
    /// Records to send again, with their due time, by index.
    resend: BTreeMap<usize, Instant>,
    /// Whole calls failed since the last answer.
    failed_calls: u32,
    /// No call before this (after [`FAILING_IN_A_ROW`] or more failed calls in a row).
    gate: Option<Instant>,
    in_flight: usize,
    /// Set when the flush ends early (a configuration error, or too many failed calls).
    ended: bool,
    /// Why records are left undelivered.
    error: Option<SinkError>,
}

impl ChunkCalls {
    /// The calls of records of the given sizes, none sent yet.
    pub fn new(sizes: Vec<usize>, limits: CallLimits, retries: u32) -> Self {
        let n = sizes.len();
        ChunkCalls {
            sizes,
            limits,
            retries,
            confirmed: vec![false; n],
            sends: vec![0; n],
            next_fresh: 0,
            resend: BTreeMap::new(),
            failed_calls: 0,
            gate: None,
            in_flight: 0,
            ended: false,
            error: None,
        }
    }

    /// Calls sent and not answered yet.
    pub fn in_flight(&self) -> usize {
        self.in_flight
    }

    /// What to do at `now`. A [`Next::Send`] counts the call as in flight until
    /// [`ChunkCalls::answered`] or [`ChunkCalls::failed`] reports it.
    pub fn next(&mut self, now: Instant) -> Next {
        let idle = if self.in_flight > 0 {
            Next::Answer
        } else {
            Next::Done
        };
        if self.ended || (self.next_fresh == self.sizes.len() && self.resend.is_empty()) {
            return idle;
        }
        // The service fails whole calls: one call at a time, each after a backoff.
        if self.failed_calls >= FAILING_IN_A_ROW && self.in_flight > 0 {
            return Next::Answer;
        }
        if let Some(gate) = self.gate.filter(|g| *g > now) {
            return Next::Until(gate);
        }
        let max_records = self.limits.max_records.max(1);
        let max_bytes = self.limits.max_bytes.max(1);
        let (mut todo, mut bytes) = (Vec::new(), 0usize);
        // A record larger than `max_bytes` goes alone, as in [`CallLimits::split`].
        let fits = |count: usize, bytes: usize, size: usize| {
            count == 0 || (count < max_records && bytes + size <= max_bytes)
        };
        // Due resends first (they are older than anything not sent yet), then fresh records.
        for (&i, &due) in &self.resend {
            if due > now {
                continue;
            }
            if !fits(todo.len(), bytes, self.sizes[i]) {
                break;
            }
            todo.push(i);
            bytes += self.sizes[i];
        }
        for i in &todo {
            self.resend.remove(i);
        }
        while self.next_fresh < self.sizes.len()
            && fits(todo.len(), bytes, self.sizes[self.next_fresh])
        {
            todo.push(self.next_fresh);
            bytes += self.sizes[self.next_fresh];
            self.next_fresh += 1;
        }
        if todo.is_empty() {
            // Only resends not due yet are left.
            return match self.resend.values().min() {
                Some(&due) => Next::Until(due),
                None => idle,
            };
        }
        for &i in &todo {
            self.sends[i] += 1;
        }
        self.in_flight += 1;
        Next::Send(todo)
    }

    /// A 200 answer to the call of `todo`: `refusal` lists what it refused (with the error
    /// that describes it), `None` when it accepted everything.
    pub fn answered(
        &mut self,
        todo: &[usize],
        refusal: Option<(&[usize], SinkError)>,
        now: Instant,
    ) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.failed_calls = 0;
        self.gate = None;
        for &i in todo {
            self.confirmed[i] = true;
        }
        let Some((failed, error)) = refusal else {
            return;
        };
        // At most one record more than the baseline share of the call: small calls (resends
        // often go in a few) refuse a large share of themselves by chance.
        let isolated = failed.len() as f64 <= 1.0 + MAX_BASELINE * todo.len() as f64;
        // One jitter for the call: its records are due together and ride in one call.
        let jitter = jitter();
        for &i in failed {
            self.confirmed[i] = false;
            let delay = resend_delay(self.sends[i], isolated, jitter);
            self.again(i, now + delay, &error);
        }
    }

    /// The call of `todo` failed as a whole with `error`; `retry` says whether its class is
    /// worth retrying within the flush.
    pub fn failed(&mut self, todo: &[usize], error: SinkError, retry: bool, now: Instant) {
        self.in_flight = self.in_flight.saturating_sub(1);
        if !retry {
            // Configuration, IAM, credentials: nothing else goes out in this flush.
            self.ended = true;
            self.error = Some(error);
            return;
        }
        self.failed_calls += 1;
        if self.failed_calls > self.retries {
            // An outage: the chunk's retry schedule takes over.
            self.ended = true;
            self.error = Some(error);
            return;
        }
        if self.failed_calls >= FAILING_IN_A_ROW {
            self.gate = Some(now + backoff(self.failed_calls + 1 - FAILING_IN_A_ROW));
        }
        // A failed call among answered ones: its records ride in the next call.
        let isolated = self.failed_calls < FAILING_IN_A_ROW;
        let jitter = jitter();
        for &i in todo {
            let delay = resend_delay(self.sends[i], isolated, jitter);
            self.again(i, now + delay, &error);
        }
    }

    /// Record `i` failed: sent again at `due`, unless it used its sends.
    fn again(&mut self, i: usize, due: Instant, error: &SinkError) {
        if self.sends[i] > self.retries {
            self.error.get_or_insert_with(|| error.clone());
        } else {
            self.resend.insert(i, due);
        }
    }

    /// The service accepts records again after an outage (seen by pacing, from any worker):
    /// what waits for a backoff may go now.
    pub fn recovered(&mut self, now: Instant) {
        self.failed_calls = 0;
        self.gate = None;
        for due in self.resend.values_mut() {
            *due = (*due).min(now);
        }
    }

    /// Records waiting to be sent again.
    pub fn waiting(&self) -> usize {
        self.resend.len()
    }

    /// Which records were confirmed, by index, and why the others were not (`None` when all
    /// were).
    pub fn finish(self) -> (Vec<bool>, Option<SinkError>) {
        let error = if self.confirmed.iter().all(|c| *c) {
            None
        } else {
            Some(self.error.unwrap_or_else(|| {
                SinkError::new(ErrorClass::Other, "records left unsent".to_owned())
            }))
        };
        (self.confirmed, error)
    }
}

#[cfg(test)]
mod tests;
