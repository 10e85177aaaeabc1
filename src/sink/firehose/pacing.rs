//! Quota pacing shared by all flush workers of one Firehose output.
//!
//! Firehose meters each stream per second (records, requests and bytes; e.g. 1 MiB/s in most
//! regions). A backlog replay after an outage would otherwise send as fast as the workers can
//! and spend most calls being throttled. Two mechanisms keep the send rate under the quota:
//!
//! * optional token buckets (`max_records_per_second`, `max_bytes_per_second`,
//!   `max_requests_per_second`) with a one-second burst. A call larger than the burst waits
//!   for a full bucket and then goes into debt, so it still goes through, just later;
//! * adaptive slow-down: every throttle (a `ServiceUnavailableException`, HTTP 429/503, or
//!   throttled records in a partial failure) halves the bucket rates (at most once per
//!   [`CUT_COOLDOWN`], so one burst of throttled workers counts once) and, when no bucket is
//!   configured, spaces calls by a delay that doubles per throttle; every successful call raises
//!   the rate again by 2 % and shrinks the delay by 10 % until the limits are back to normal.
//!
//! Callers that must wait queue for their turn, first come first served, and the one whose
//! turn it is waits for what the pace is *now*, re-checked every [`RECHECK`]. A caller never
//! holds a slot computed from an older, slower pace: when the pace was a slot reserved per
//! caller, calls queued during an outage (500 ms apart, dozens of them with 8 workers) kept
//! their far-off slots after Firehose recovered, and a 2 GiB backlog drained at half speed.

use std::sync::Mutex;
use std::time::Duration;

use prometheus_client::metrics::gauge::Gauge;
use tokio::time::Instant;

/// A throttle within this long of the previous cut does not cut again.
pub const CUT_COOLDOWN: Duration = Duration::from_millis(250);
/// The rate factor never falls below this (1/64 of the configured rates).
pub const MIN_FACTOR: f64 = 1.0 / 64.0;
/// The first adaptive spacing between calls when no bucket is configured.
pub const MIN_DELAY: Duration = Duration::from_millis(20);
/// The largest adaptive spacing between calls (with 2 workers and 500-record calls this still
/// allows ~1,000 records/s, the smallest regional quota).
pub const MAX_DELAY: Duration = Duration::from_millis(500);
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
    /// Slow down on throttling.
    pub adaptive: bool,
}

#[derive(Debug)]
struct Bucket {
    rate: f64,
    /// Negative while a call larger than the burst is being paid off.
    tokens: f64,
    last: Instant,
}

impl Bucket {
    fn new(rate: f64, now: Instant) -> Self {
        Bucket {
            rate,
            tokens: rate,
            last: now,
        }
    }

    /// Adds the tokens earned since the last refill at `factor` × rate (one second's worth at
    /// most); returns that effective rate.
    fn refill(&mut self, factor: f64, now: Instant) -> f64 {
        let rate = (self.rate * factor).max(f64::MIN_POSITIVE);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
        rate
    }

    /// How long until `n` tokens (a full bucket, for a call larger than it) are there.
    fn wait(&mut self, n: f64, factor: f64, now: Instant) -> Duration {
        let rate = self.refill(factor, now);
        let need = n.min(rate.max(1.0));
        if self.tokens >= need {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64((need - self.tokens) / rate).unwrap_or(MAX_DELAY * 30)
        }
    }
}

#[derive(Debug)]
struct State {
    records: Option<Bucket>,
    bytes: Option<Bucket>,
    requests: Option<Bucket>,
    factor: f64,
    delay: Duration,
    last_call: Option<Instant>,
    last_cut: Option<Instant>,
}

impl State {
    /// How long a call of `records` records and `bytes` bytes must still wait at `now`; when it
    /// need not, the call is counted as sent at `now`.
    fn try_send(&mut self, records: usize, bytes: usize, now: Instant) -> Duration {
        let factor = self.factor;
        let mut buckets = [
            (self.records.as_mut(), records as f64),
            (self.bytes.as_mut(), bytes as f64),
            (self.requests.as_mut(), 1.0),
        ];
        let mut wait = self.last_call.map_or(Duration::ZERO, |last| {
            (last + self.delay).saturating_duration_since(now)
        });
        for (bucket, n) in buckets.iter_mut() {
            if let Some(b) = bucket {
                wait = wait.max(b.wait(*n, factor, now));
            }
        }
        if wait.is_zero() {
            for (bucket, n) in buckets {
                if let Some(b) = bucket {
                    b.tokens -= n;
                }
            }
            self.last_call = Some(now);
        }
        wait
    }
}

/// The shared pacer of one output.
#[derive(Debug)]
pub struct Pacer {
    adaptive: bool,
    /// Held by the caller whose turn it is; the others queue on it in arrival order.
    turn: tokio::sync::Mutex<()>,
    state: Mutex<State>,
    factor_gauge: Gauge<f64, std::sync::atomic::AtomicU64>,
    delay_gauge: Gauge<f64, std::sync::atomic::AtomicU64>,
}

impl Pacer {
    /// A pacer with `limits`, reporting its rate factor and delay into the given gauges.
    pub fn new(
        limits: PacingLimits,
        factor_gauge: Gauge<f64, std::sync::atomic::AtomicU64>,
        delay_gauge: Gauge<f64, std::sync::atomic::AtomicU64>,
    ) -> Self {
        let now = Instant::now();
        let bucket = |r: Option<f64>| r.filter(|r| *r > 0.0).map(|r| Bucket::new(r, now));
        factor_gauge.set(1.0);
        delay_gauge.set(0.0);
        Pacer {
            adaptive: limits.adaptive,
            turn: tokio::sync::Mutex::new(()),
            state: Mutex::new(State {
                records: bucket(limits.records),
                bytes: bucket(limits.bytes),
                requests: bucket(limits.requests),
                factor: 1.0,
                delay: Duration::ZERO,
                last_call: None,
                last_cut: None,
            }),
            factor_gauge,
            delay_gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a call of `records` records and `bytes` bytes must still wait at `now`; when it
    /// need not, it is counted as sent.
    fn try_send(&self, records: usize, bytes: usize, now: Instant) -> Duration {
        self.lock().try_send(records, bytes, now)
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

    /// The service throttled us: slow down (once per [`CUT_COOLDOWN`]).
    pub fn on_throttle(&self) {
        if !self.adaptive {
            return;
        }
        let now = Instant::now();
        let mut s = self.lock();
        if s.last_cut
            .is_some_and(|t| now.saturating_duration_since(t) < CUT_COOLDOWN)
        {
            return;
        }
        s.last_cut = Some(now);
        let has_buckets = s.records.is_some() || s.bytes.is_some() || s.requests.is_some();
        if has_buckets {
            s.factor = (s.factor * 0.5).max(MIN_FACTOR);
        } else {
            s.delay = (s.delay * 2).clamp(MIN_DELAY, MAX_DELAY);
        }
        self.publish(&s);
    }

    /// A call went through without throttling: speed up again, gradually.
    pub fn on_success(&self) {
        if !self.adaptive {
            return;
        }
        let mut s = self.lock();
        if s.factor >= 1.0 && s.delay.is_zero() {
            return;
        }
        s.factor = (s.factor * 1.02).min(1.0);
        s.delay = s.delay.mul_f64(0.9);
        if s.delay < Duration::from_millis(1) {
            s.delay = Duration::ZERO;
        }
        self.publish(&s);
    }

    fn publish(&self, s: &State) {
        self.factor_gauge.set(s.factor);
        self.delay_gauge.set(s.delay.as_secs_f64());
    }

    /// The current rate factor (1 = configured rates) and call spacing.
    pub fn current(&self) -> (f64, Duration) {
        let s = self.lock();
        (s.factor, s.delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pacer(limits: PacingLimits) -> Pacer {
        Pacer::new(limits, Gauge::default(), Gauge::default())
    }

    /// An adaptive pacer that has been throttled `times` times, each in its own burst.
    fn throttled(times: usize) -> std::sync::Arc<Pacer> {
        let p = pacer(PacingLimits {
            adaptive: true,
            ..Default::default()
        });
        for _ in 0..times {
            p.on_throttle();
            p.lock().last_cut = None;
        }
        std::sync::Arc::new(p)
    }

    fn ms(n: u64) -> Duration {
        Duration::from_millis(n)
    }

    fn near(d: Duration, expected: Duration) -> bool {
        d.abs_diff(expected) < ms(5)
    }

    #[test]
    fn a_record_bucket_limits_the_rate_across_callers() {
        let p = pacer(PacingLimits {
            records: Some(1000.0),
            ..Default::default()
        });
        let t0 = Instant::now();
        // The first second's burst is free, then 500 records wait for 500 tokens: half a second.
        assert_eq!(p.try_send(1000, 0, t0), Duration::ZERO);
        assert!(near(p.try_send(500, 0, t0), ms(500)));
        assert!(
            near(p.try_send(500, 0, t0 + ms(200)), ms(300)),
            "waiting earns tokens"
        );
        assert_eq!(p.try_send(500, 0, t0 + ms(500)), Duration::ZERO);
        assert!(
            near(p.try_send(500, 0, t0 + ms(500)), ms(500)),
            "the next one waits again"
        );
    }

    #[test]
    fn a_call_larger_than_the_burst_waits_for_a_full_bucket_then_pays_it_off() {
        let p = pacer(PacingLimits {
            bytes: Some(1000.0),
            ..Default::default()
        });
        let t0 = Instant::now();
        assert_eq!(
            p.try_send(1, 3000, t0),
            Duration::ZERO,
            "a full bucket lets it through"
        );
        // 2,000 bytes of debt plus a 1,000-byte call: three seconds.
        assert!(near(p.try_send(1, 1000, t0), ms(3000)));
    }

    #[test]
    fn throttling_halves_the_rate_once_per_burst_and_success_restores_it() {
        let p = pacer(PacingLimits {
            bytes: Some(1e6),
            adaptive: true,
            ..Default::default()
        });
        p.on_throttle();
        p.on_throttle();
        assert_eq!(p.current().0, 0.5, "two throttles in one burst count once");
        std::thread::sleep(CUT_COOLDOWN);
        p.on_throttle();
        assert_eq!(p.current().0, 0.25);
        for _ in 0..200 {
            p.on_success();
        }
        assert_eq!(p.current().0, 1.0);
    }

    #[test]
    fn without_buckets_throttling_spaces_calls_and_success_removes_the_spacing() {
        let p = pacer(PacingLimits {
            adaptive: true,
            ..Default::default()
        });
        let t0 = Instant::now();
        assert_eq!(p.try_send(1, 1, t0), Duration::ZERO);
        p.on_throttle();
        assert_eq!(p.current().1, MIN_DELAY);
        assert!(near(p.try_send(1, 1, t0 + ms(5)), MIN_DELAY - ms(5)));
        assert_eq!(p.try_send(1, 1, t0 + MIN_DELAY), Duration::ZERO);
        for _ in 0..100 {
            p.on_success();
        }
        assert_eq!(p.current().1, Duration::ZERO);
        assert_eq!(p.try_send(1, 1, t0 + MIN_DELAY), Duration::ZERO);
    }

    #[test]
    fn a_waiting_call_sees_a_speed_up_at_once() {
        let p = throttled(8);
        assert_eq!(p.current().1, MAX_DELAY);
        let t0 = Instant::now();
        assert_eq!(p.try_send(1, 1, t0), Duration::ZERO);
        assert!(near(p.try_send(1, 1, t0 + ms(10)), MAX_DELAY - ms(10)));
        p.on_success();
        assert!(
            near(p.try_send(1, 1, t0 + ms(10)), MAX_DELAY * 9 / 10 - ms(10)),
            "the same call, asking again, waits for the new pace"
        );
    }

    #[tokio::test]
    async fn calls_queued_during_an_outage_go_out_as_soon_as_the_service_recovers() {
        let p = throttled(8);
        assert_eq!(p.current().1, MAX_DELAY);
        p.acquire(1, 1).await;
        // Sixteen callers queue behind a 500 ms spacing: 8 s if each kept the pace of its arrival.
        let started = Instant::now();
        let callers: Vec<_> = (0..16)
            .map(|_| {
                let p = std::sync::Arc::clone(&p);
                tokio::spawn(async move { p.acquire(1, 1).await })
            })
            .collect();
        tokio::time::sleep(ms(100)).await;
        for _ in 0..100 {
            p.on_success();
        }
        for c in callers {
            c.await.unwrap();
        }
        // At the old pace the sixteen would need 16 × 500 ms = 8 s; released at the recovery
        // they leave within about one old spacing. Half the old pace's time is the bound: it
        // tells the two apart with room for a slow, shared machine.
        let took = started.elapsed();
        assert!(
            took < MAX_DELAY * 16 / 2,
            "queued calls left soon after the recovery, not at the old pace: {took:?}"
        );
    }

    #[tokio::test]
    async fn queued_calls_keep_the_spacing_between_them() {
        let p = throttled(2);
        assert_eq!(p.current().1, MIN_DELAY * 2);
        let started = Instant::now();
        let callers: Vec<_> = (0..5)
            .map(|_| {
                let p = std::sync::Arc::clone(&p);
                tokio::spawn(async move { p.acquire(1, 1).await })
            })
            .collect();
        for c in callers {
            c.await.unwrap();
        }
        // The first goes at once, the other four 40 ms apart: 160 ms. The upper bound leaves a
        // slow machine ten times that, and fails callers spaced by the slowest pace (4 × 500 ms).
        let took = started.elapsed();
        assert!(
            took >= MIN_DELAY * 2 * 4 && took < MAX_DELAY * 4,
            "{took:?}"
        );
    }

    #[test]
    fn not_adaptive_ignores_throttles() {
        let p = pacer(PacingLimits::default());
        p.on_throttle();
        assert_eq!(p.current(), (1.0, Duration::ZERO));
        let t0 = Instant::now();
        assert_eq!(p.try_send(10_000, 10_000_000, t0), Duration::ZERO);
        assert_eq!(p.try_send(10_000, 10_000_000, t0), Duration::ZERO);
    }
}
