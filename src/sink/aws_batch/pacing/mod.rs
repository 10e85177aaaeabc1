//! Quota pacing shared by all flush workers of one batch-put output (Firehose, Kinesis Data
//! Streams: the text says Firehose, and the same holds for a stream's shards).
//!
//! Firehose meters each stream per one-second window (records, bytes and calls; e.g. 1 MiB/s
//! in most regions). Records over the quota fail inside a 200 answer with
//! `ServiceUnavailableException` and must be sent again: a relay that sends faster than the
//! quota spends calls, CPU and request quota on records that come back. Two mechanisms keep the
//! send rate near the quota:
//!
//! * optional token buckets (`max_records_per_second`, `max_bytes_per_second`,
//!   `max_requests_per_second`) with a one-second burst: hard caps, never exceeded and never
//!   raised by the adaptive part. A call larger than the burst waits for a full bucket and then
//!   goes into debt, so it still goes through, just later;
//! * an adaptive **target rate** in records per second ([`Controller`], on unless
//!   `adaptive_pacing = false`), absent (not limiting) until Firehose first throttles.
//!
//! # The controller
//!
//! The signal is a *fraction*, like DCTCP's fraction of marked packets: every answer tells how
//! many of the call's records were throttled (a whole call refused with a throttling error —
//! 429, 503, `ServiceUnavailableException` — counts all of its records). Answers are summed in
//! [`SLOT`]s and the decisions use the last [`WINDOW`] (four slots, one second, Firehose's own
//! metering window), so the throttled fraction `F` of a window in which the relay sent at `R`
//! against a quota `Q < R` is `1 - Q/R`, whatever the window's alignment with Firehose's, and
//! the records accepted in it are `R · (1 - F) = Q`. Answers to calls sent before the last cut
//! are left out: they tell about a rate already acted on.
//!
//! At the end of every slot, with `F` the window's throttled fraction and `b` the
//! rate-independent part of it (below), and a tolerance of 1 % plus three standard deviations
//! of a fraction measured over that many records:
//!
//! * **cut** when both the window and its latest slot are throttled beyond `b` + tolerance, at
//!   most once per [`CUT_SPACING`] (a window plus a slot): the target becomes
//!   `R · (1 - (F - b)) · (1 - `[`CUT_MARGIN`]`)`, the rate Firehose accepted (plus the
//!   baseline's share) less a margin, and that accepted rate becomes the *ceiling*. This is
//!   DCTCP's decrease in proportion to the fraction, with gain 1 instead of ½ and without its
//!   EWMA: DCTCP's marks measure a queue and the EWMA and halving damp a noisy estimate, while
//!   here a one-second window measures the overshoot itself, so one cut lands just under the
//!   quota instead of converging over several windows and throttling meanwhile;
//! * **raise** when the window is clean, CUBIC-shaped: ×2 per slot while the target is under
//!   90 % of the ceiling (the way back after an outage: the rate delivered before it), then a
//!   probe of +[`PROBE_STEP`] per slot that doubles every two seconds without throttling (up to
//!   16×), so the target creeps over the quota by a percent or two before the next cut, and
//!   finds a raised quota within seconds; after [`RELEASE_AFTER`] without throttling, a target
//!   twice the rate actually sent limits nothing and is dropped.
//!
//! **The onset** (the first throttling while nothing limits) cannot wait for a window: a quota
//! metered per second, once used up, refuses nearly everything until its window rolls over,
//! and a relay draining a backlog at three times the quota threw away 37–46 % of what it sent
//! in its first two seconds (the window-based cut first saw a window that mostly held the
//! unthrottled rate, and cut too little). So the answers from the first throttled one on are
//! watched as they come: once more than [`ONSET_FRACTION`] of at least 20 records are
//! throttled (more than any rate-independent share the controller learns to ignore), it cuts
//! at once, without waiting for a slot's end:
//!
//! * in the first window of a busy spell (the throttled call was sent within a second of the
//!   first accepted one since the start, an idle spell or an outage), what Firehose accepted
//!   since then *is* the quota: the first window's accepted records, less the margin, become
//!   the target — TCP's slow start exits the same way, from what got through;
//! * later there is no telling how far over the quota the rate is, so the accepted rate is
//!   halved, as TCP does on a loss, and the first full window at that rate measures the rest
//!   (a proportional cut from there, or the probe climbing back when halving went under);
//! * either way no call goes out until the records sent within the last second fit the new
//!   target ([`Controller::paused_until`]): with a window metered per second and a steady
//!   rate before, that is when the window that ran out rolls over, so the rest of it is not
//!   spent on records that would come back; the decision window restarts empty.
//!
//! In the simulation (`tests.rs`, answers 50 ms after their call, a 10,000 records/s quota
//! metered per aligned second) a backlog at 2, 3 and 10× the quota now loses 9 %, 12 % and
//! 33 % of the first second's records (the calls in flight when the first throttled answer
//! came) where it lost 43 % of each of the first two seconds before; a quota appearing under a
//! relay already at 2, 3 or 10× it costs 9 %, 16 + 22 % and 63 + 63 % of two seconds, and
//! halving under the quota (2×) takes about 8 s of probing to climb back. A slow output (too
//! few records per window to judge a fraction) still gets its onset, gathered over up to
//! [`ONSET_HORIZON`]; under [`MIN_RATE`] the target cannot hold it back, and the per-call
//! backoff of its resends is what backs off.
//!
//! Why it converges: above the quota each cut removes the measured overshoot in one step and
//! lands `CUT_MARGIN` under it; below it nothing is throttled and the probe climbs back at
//! 0.5 % per slot, crossing the margin in about 1.5 s. So the target saw-tooths between
//! `Q · (1 - CUT_MARGIN)` and a few percent over `Q`, with a throttled second every few
//! seconds: on average over 90 % of the quota with a few percent of records throttled (the
//! numbers below). The coarser the calls (500 records against a small quota), the larger each
//! step of the measured rate and the wider the saw-tooth.
//!
//! **Rate-independent failures** (a share of records refused whatever the rate, e.g. a stream
//! shared with producers that keep it at its quota) must not collapse the rate, which halving
//! on every signal did. So every cut is judged one window later: if the fraction did not
//! change (within 30 % or three standard deviations), the cut is undone, and after two such
//! cuts in a row the fraction becomes the baseline `b` that later decisions subtract (at most
//! [`MAX_BASELINE`]). `b` falls back when smaller fractions are seen, and every
//! [`PROBE_EVERY`] one cut ignores it, so a baseline learned from a real quota cannot stick.
//! Failures that are not throttling (500s, unknown codes) never slow pacing down. Nor does
//! the call loop stall on them: a refused record waits for its own backoff and rides in a
//! later call while the flush worker keeps sending ([`super::call`]: records back off, not the
//! worker), so what holds the rate back is the pace alone.
//!
//! **Outages**: a slot in which every answer was a refused call halves the target once per
//! window (down to 1/64 of the ceiling) and keeps the ceiling and the baseline, so the way back
//! doubles per slot to the rate delivered before (1/64 → 90 % in about 1.5 s). Calls backing
//! off (up to 5 s each) wake up when Firehose accepts records again. When nothing was ever
//! delivered there is no rate to go back to, and nothing is limited.
//!
//! Callers that must wait queue for their turn, first come first served, and the one whose
//! turn it is waits for what the pace is *now*, re-checked every [`RECHECK`]. A caller never
//! holds a slot computed from an older, slower pace: when the pace was a slot reserved per
//! caller, calls queued during an outage (500 ms apart, dozens of them with 8 workers) kept
//! their far-off slots after Firehose recovered, and a 2 GiB backlog drained at half speed.
//!
//! # Measured
//!
//! Through the debug binary against the fake endpoint (`tests/firehose_pacing.rs`: 8 flush
//! workers, 100-record calls, a stream metered from the relay's first call at a third of what
//! the relay delivers unmetered, fed at twice the quota; 30 s from the first call, start-up
//! included; 2026-12-03, load average 14–18 on two cores):
//!
//! * records quota (1,800–3,100/s): 92.9–97.1 % of it delivered, 1.0–1.9 % of sent records
//!   throttled (six runs; the first second 4–13 %, where the window-based first cut alone
//!   threw away 43 % of each of the first two seconds and ended at 7–9 % over 20 s);
//! * bytes quota (84,000–140,000 B/s): 95.8–97.2 %, 1.2–1.5 % in four runs, 86 %, 3.7 % in one;
//! * 2 % of records and 5 % of requests failing: 0.45–0.68× the same run's unthrottled rate,
//!   and the same (0.58–0.68×) with adaptive pacing off, while the call loop slept its backoff
//!   before resending a call's few refused records, holding the worker; since records back
//!   off instead, 0.95–1.02× (four runs, load 1–7: the relay keeps up with the test's
//!   15,000 records/s intake);
//! * after a 12 s outage: 90 % of the rate before within 2.0–2.6 s.
//!
//! Later runs, after the call loop change (load 1–7): bytes quota 97.9–98.6 % with 0.7–0.8 %
//! throttled (four runs), records quota 98.6–99.0 %, 0.8–1.2 %; outage back in 2.2–2.6 s. At
//! a load of 12 the records quota held (93.5 %, 1.7 %) and the bytes quota did not (84.2 %,
//! 4.7 %, as once at load 14–21 before): that test is `#[ignore]`d, the cause not found.
//!
//! The 60 s runs of `cargo bench --bench e2e -- --scenario pacing` (500-record calls against
//! 20,000 records/s, a 30 s outage) are in benches/README.md.
//!
//! The controller this replaces doubled a spacing between calls on every throttled call (up to
//! 500 ms) and shrank it by 10 % per clean call: against 2 % of records failing it stayed at the
//! maximum spacing (~1,000 records/s, under 1 % of the unthrottled rate), and against a metered
//! quota of 20,000 records/s 38 % of the records it sent were throttled.

use std::sync::atomic::AtomicU64;
use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

mod controller;
pub use controller::{Controller, Decision};

/// Answers are summed per slot; decisions are taken at slot boundaries.
pub const SLOT: Duration = Duration::from_millis(250);
/// Slots per decision window.
const WINDOW_SLOTS: usize = 4;
/// The decision window: Firehose's metering window.
pub const WINDOW: Duration = Duration::from_secs(1);
/// Cuts are at least this far apart: the window after a cut holds only calls paced at the new
/// rate.
pub const CUT_SPACING: Duration = Duration::from_millis(1250);
/// A cut aims this far under the rate Firehose accepted.
pub const CUT_MARGIN: f64 = 0.03;
/// The first probe above the ceiling, per slot; it doubles every two seconds without
/// throttling, up to 16 times.
pub const PROBE_STEP: f64 = 0.005;
/// The highest rate-independent fraction the controller learns to ignore.
pub const MAX_BASELINE: f64 = 0.2;
/// How often a learned baseline is put to the test by a cut that ignores it.
pub const PROBE_EVERY: Duration = Duration::from_secs(10);
/// Without throttling for this long, a target far above the sent rate is dropped.
pub const RELEASE_AFTER: Duration = Duration::from_secs(5);
/// `/status` shows the output as throttled for this long after the last throttled window.
pub const THROTTLED_HOLD: Duration = Duration::from_secs(5);
/// The target never falls below this fraction of the ceiling, nor below [`MIN_RATE`].
pub const MIN_FACTOR: f64 = 1.0 / 64.0;
/// The lowest target, records per second.
pub const MIN_RATE: f64 = 10.0;
/// Fewer records than this in a window decide nothing (except an outage, an onset, and the
/// release of a target that has not been needed for [`RELEASE_AFTER`]).
const MIN_SAMPLE: u64 = 20;
/// The onset: answers from the first throttled one while nothing limits; more than this
/// share of them throttled (over at least [`MIN_SAMPLE`] records) is an exhausted quota.
/// Above [`MAX_BASELINE`], so that a rate-independent share never looks like one.
pub const ONSET_FRACTION: f64 = 0.25;
/// An onset gathers answers for at most this long (a slow output needs more than a window
/// for [`MIN_SAMPLE`] records).
pub const ONSET_HORIZON: Duration = Duration::from_secs(5);
/// Sends are counted in slices this long for the pause after an onset cut.
const SEND_SLICE: Duration = Duration::from_millis(10);
/// The adaptive bucket's burst, as time at the target rate: short, so that sends are spread
/// evenly and a one-second window never sees much more than the target (a call larger than
/// the burst waits for a full bucket and pays off the rest, as with the configured buckets).
/// The bucket holds at least two of the largest calls: holding exactly one, every late
/// wake-up of the waiting caller was lost for good — on a loaded machine the relay sent 80–87 %
/// of a 2,000 records/s target in 100-record calls (a call each 50 ms, wake-ups 5–10 ms late).
const ADAPTIVE_BURST: Duration = Duration::from_millis(50);
/// The caller whose turn it is re-reads the pace at least this often while it waits, so that
/// a speed-up (or a slow-down) reaches it within this long.
pub const RECHECK: Duration = Duration::from_millis(50);

/// Configured limits (per second, for the whole output); `None` = unlimited.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct PacingLimits {
    /// Records per second.
    pub records: Option<f64>,
    /// Data bytes per second.
    pub bytes: Option<f64>,
    /// PutRecordBatch calls per second.
    pub requests: Option<f64>,
    /// Adapt a target rate to throttling.
    pub adaptive: bool,
}

/// Where the pacer reports its state (families in [`super::metrics`]).
#[derive(Debug, Clone, Default)]
pub struct PacingMetrics {
    /// Target / ceiling (1 while the target does not limit).
    pub factor: Gauge<f64, AtomicU64>,
    /// The adaptive target, records per second (0 while it does not limit).
    pub target: Gauge<f64, AtomicU64>,
    /// Throttled fraction of the records answered in the last window.
    pub throttled_fraction: Gauge<f64, AtomicU64>,
    /// The learned rate-independent fraction.
    pub baseline_fraction: Gauge<f64, AtomicU64>,
    /// Cuts of the target.
    pub cuts: Counter,
    /// Raises of the target.
    pub raises: Counter,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    /// Burst, seconds at `rate`.
    burst: f64,
    /// Negative while a call larger than the burst is being paid off.
    tokens: f64,
    last: Instant,
    /// The bucket holds at least this many tokens (the adaptive bucket: two of the largest
    /// calls, see [`ADAPTIVE_BURST`]).
    min_cap: f64,
}

impl Bucket {
    fn new(rate: f64, burst: f64, tokens: f64, now: Instant) -> Self {
        Bucket {
            rate,
            burst,
            tokens,
            last: now,
            min_cap: 1.0,
        }
    }

    fn cap(&self) -> f64 {
        (self.rate * self.burst).max(self.min_cap)
    }

    /// Adds the tokens earned since the last refill (a burst's worth at most).
    fn refill(&mut self, now: Instant) {
        let rate = self.rate.max(f64::MIN_POSITIVE);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(self.cap());
    }

    /// How long until `n` tokens (a full bucket, for a call larger than it) are there.
    fn wait(&mut self, n: f64, now: Instant) -> Duration {
        self.refill(now);
        let need = n.min(self.cap());
        if self.tokens >= need {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64((need - self.tokens) / self.rate.max(f64::MIN_POSITIVE))
                .unwrap_or(Duration::from_secs(60))
        }
    }
}

#[derive(Debug)]
struct State {
    records: Option<Bucket>,
    bytes: Option<Bucket>,
    requests: Option<Bucket>,
    /// The adaptive target's bucket (records), while it limits.
    adaptive: Option<Bucket>,
    controller: Option<Controller>,
}

impl State {
    /// How long a call of `records` records and `bytes` bytes must still wait at `now`; when it
    /// need not, the call is counted as sent at `now`.
    fn try_send(&mut self, records: usize, bytes: usize, now: Instant) -> Duration {
        if let Some(b) = self.adaptive.as_mut() {
            b.min_cap = b.min_cap.max(2.0 * records as f64);
        }
        let mut buckets = [
            (self.records.as_mut(), records as f64),
            (self.bytes.as_mut(), bytes as f64),
            (self.requests.as_mut(), 1.0),
            (self.adaptive.as_mut(), records as f64),
        ];
        let mut wait = Duration::ZERO;
        for (bucket, n) in buckets.iter_mut() {
            if let Some(b) = bucket {
                wait = wait.max(b.wait(*n, now));
            }
        }
        if wait.is_zero() {
            for (bucket, n) in buckets {
                if let Some(b) = bucket {
                    b.tokens -= n;
                }
            }
        }
        wait
    }

    /// Brings the adaptive bucket in line with the controller's target.
    fn sync_target(&mut self, now: Instant) {
        let target = self.controller.as_ref().and_then(Controller::target);
        match (target, self.adaptive.as_mut()) {
            (None, _) => self.adaptive = None,
            (Some(t), Some(b)) => {
                b.refill(now);
                b.rate = t;
                b.tokens = b.tokens.min(b.cap());
            }
            (Some(t), None) => {
                self.adaptive = Some(Bucket::new(t, ADAPTIVE_BURST.as_secs_f64(), 0.0, now));
            }
        }
    }
}

/// What `/status` shows of an output's pacing.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct PacingStatus {
    /// The target limits the rate, or Firehose throttled (beyond the rate-independent
    /// baseline) within the last few seconds.
    pub throttled: bool,
    /// The adaptive target, records per second, while it limits.
    pub target_records_per_second: Option<f64>,
    /// Throttled fraction of the last window.
    pub throttled_fraction: f64,
}

/// The shared pacer of one output.
#[derive(Debug)]
pub struct Pacer {
    /// Held by the caller whose turn it is; the others queue on it in arrival order.
    turn: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    metrics: PacingMetrics,
    /// Woken when Firehose accepts records again after an outage.
    recovered: tokio::sync::Notify,
}

impl Pacer {
    /// A pacer with `limits`, reporting into `metrics`.
    pub fn new(limits: PacingLimits, metrics: PacingMetrics) -> Self {
        let now = Instant::now();
        let bucket = |r: Option<f64>| r.filter(|r| *r > 0.0).map(|r| Bucket::new(r, 1.0, r, now));
        metrics.factor.set(1.0);
        metrics.target.set(0.0);
        Pacer {
            turn: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                records: bucket(limits.records),
                bytes: bucket(limits.bytes),
                requests: bucket(limits.requests),
                adaptive: None,
                controller: limits
                    .adaptive
                    .then(|| Controller::new(limits.records.filter(|r| *r > 0.0), now)),
            }),
            metrics,
            recovered: tokio::sync::Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a call of `records` records and `bytes` bytes must still wait at `now`; when it
    /// need not, it is counted as sent.
    fn try_send(&self, records: usize, bytes: usize, now: Instant) -> Duration {
        let mut s = self.lock();
        let mut paused = Duration::ZERO;
        if let Some(c) = s.controller.as_mut() {
            let decisions = c.advance(now);
            paused = c
                .paused_until()
                .map_or(Duration::ZERO, |t| t.saturating_duration_since(now));
            self.apply(&mut s, &decisions, now);
        }
        if !paused.is_zero() {
            return paused;
        }
        let wait = s.try_send(records, bytes, now);
        if wait.is_zero() {
            if let Some(c) = s.controller.as_mut() {
                c.on_send(records as u64, now);
            }
        }
        wait
    }

    /// Waits until a call of `records` records and `bytes` bytes may be sent, counts it as
    /// sent, and returns how long it waited.
    pub async fn acquire(&self, records: usize, bytes: usize) -> Duration {
        let started = Instant::now();
        let _turn = self.turn.lock().await;
        loop {
            let wait = self.try_send(records, bytes, Instant::now());
            if wait.is_zero() {
                return started.elapsed();
            }
            tokio::time::sleep(wait.min(RECHECK)).await;
        }
    }

    /// Sleeps `backoff` before a resend, or less when Firehose accepts records again after an
    /// outage (then returns true): records backing off up to 5 s each would otherwise wait
    /// after the recovery (the target, halved during the outage, still spaces the calls).
    pub async fn backoff(&self, backoff: Duration) -> bool {
        let recovered = self.recovered.notified();
        tokio::select! {
            () = tokio::time::sleep(backoff) => false,
            () = recovered => true,
        }
    }

    /// A 200 answer to a call sent at `sent_at`: `answered` records came back, `throttled` of
    /// them throttled.
    pub fn on_answer(&self, answered: usize, throttled: usize, sent_at: Instant) {
        self.record(answered, throttled, false, sent_at);
    }

    /// A whole call of `records` records, sent at `sent_at`, refused with a throttling error.
    pub fn on_call_throttled(&self, records: usize, sent_at: Instant) {
        self.record(records, records, true, sent_at);
    }

    fn record(&self, answered: usize, throttled: usize, refused: bool, sent_at: Instant) {
        let now = Instant::now();
        let mut s = self.lock();
        let Some(c) = s.controller.as_mut() else {
            return;
        };
        let was_out = c.in_outage();
        let decisions = c.record_answer(answered as u64, throttled as u64, refused, sent_at, now);
        if was_out && !c.in_outage() {
            self.recovered.notify_waiters();
        }
        self.apply(&mut s, &decisions, now);
    }

    /// Counts, logs and applies the controller's decisions.
    fn apply(&self, s: &mut State, decisions: &[Decision], now: Instant) {
        if decisions.is_empty() {
            return;
        }
        let Some(c) = &s.controller else {
            return;
        };
        for d in decisions {
            if !matches!(d, Decision::None | Decision::Hold) {
                tracing::debug!(decision = ?d, target = ?c.target(), fraction = c.fraction(),
                    baseline = c.baseline(), ceiling = c.ceiling(), paused_until = ?c.paused_until(),
                    "adaptive pacing");
            }
            match d {
                Decision::Cut | Decision::Outage | Decision::Onset => {
                    self.metrics.cuts.inc();
                }
                Decision::Raise | Decision::Undo => {
                    self.metrics.raises.inc();
                }
                Decision::None | Decision::Hold => {}
            }
        }
        s.sync_target(now);
        self.publish(s);
    }

    fn publish(&self, s: &State) {
        let Some(c) = &s.controller else {
            return;
        };
        let target = c.target();
        self.metrics.target.set(target.unwrap_or(0.0));
        self.metrics.factor.set(match target {
            Some(t) if c.ceiling() > 0.0 => (t / c.ceiling()).min(1.0),
            _ => 1.0,
        });
        self.metrics.throttled_fraction.set(c.fraction());
        self.metrics.baseline_fraction.set(c.baseline());
    }

    /// The adaptive state for `/status` (`None` when adaptive pacing is off).
    pub fn status(&self) -> Option<PacingStatus> {
        let s = self.lock();
        let c = s.controller.as_ref()?;
        Some(PacingStatus {
            throttled: c.throttled(Instant::now()),
            target_records_per_second: c.target(),
            throttled_fraction: c.fraction(),
        })
    }

    /// The adaptive target, records per second, while it limits.
    pub fn target(&self) -> Option<f64> {
        self.lock().controller.as_ref().and_then(Controller::target)
    }
}

#[cfg(test)]
mod tests;
