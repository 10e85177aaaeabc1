//! Quota pacing shared by all flush workers of one Firehose output.
//!
//! Firehose meters each stream per second (records, requests and bytes; e.g. 1 MiB/s in most
//! regions). A backlog replay after an outage would otherwise send as fast as the workers can
//! and spend most calls being throttled. Two mechanisms keep the send rate under the quota:
//!
//! * optional token buckets (`max_records_per_second`, `max_bytes_per_second`,
//!   `max_requests_per_second`) with a one-second burst. A call reserves its tokens up front and
//!   sleeps off any deficit, so a call larger than the burst still goes through, just later;
//! * adaptive slow-down: every throttle (a `ServiceUnavailableException`, HTTP 429/503, or
//!   throttled records in a partial failure) halves the bucket rates (at most once per
//!   [`CUT_COOLDOWN`], so one burst of throttled workers counts once) and, when no bucket is
//!   configured, spaces calls by a delay that doubles per throttle; every successful call raises
//!   the rate again by 2 % and shrinks the delay by 10 % until the limits are back to normal.

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

    /// Takes `n` tokens at `factor` × rate; returns how long the caller must wait.
    fn reserve(&mut self, n: f64, factor: f64, now: Instant) -> Duration {
        let rate = (self.rate * factor).max(f64::MIN_POSITIVE);
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * rate).min(rate.max(1.0));
        self.tokens -= n;
        if self.tokens >= 0.0 {
            Duration::ZERO
        } else {
            Duration::try_from_secs_f64(-self.tokens / rate).unwrap_or(MAX_DELAY * 30)
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
    next_slot: Instant,
    last_cut: Option<Instant>,
}

/// The shared pacer of one output.
#[derive(Debug)]
pub struct Pacer {
    adaptive: bool,
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
            state: Mutex::new(State {
                records: bucket(limits.records),
                bytes: bucket(limits.bytes),
                requests: bucket(limits.requests),
                factor: 1.0,
                delay: Duration::ZERO,
                next_slot: now,
                last_cut: None,
            }),
            factor_gauge,
            delay_gauge,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// How long a call of `records` records and `bytes` bytes must wait; reserves its share.
    pub fn reserve(&self, records: usize, bytes: usize) -> Duration {
        let now = Instant::now();
        let mut s = self.lock();
        let factor = s.factor;
        let mut wait = Duration::ZERO;
        if let Some(b) = s.records.as_mut() {
            wait = wait.max(b.reserve(records as f64, factor, now));
        }
        if let Some(b) = s.bytes.as_mut() {
            wait = wait.max(b.reserve(bytes as f64, factor, now));
        }
        if let Some(b) = s.requests.as_mut() {
            wait = wait.max(b.reserve(1.0, factor, now));
        }
        if !s.delay.is_zero() {
            let slot = s.next_slot.max(now);
            wait = wait.max(slot - now);
            s.next_slot = slot + s.delay;
        }
        wait
    }

    /// Waits until a call of `records` records and `bytes` bytes may be sent; returns the wait.
    pub async fn acquire(&self, records: usize, bytes: usize) -> Duration {
        let wait = self.reserve(records, bytes);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        wait
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

    #[test]
    fn a_record_bucket_limits_the_rate_across_callers() {
        let p = pacer(PacingLimits {
            records: Some(1000.0),
            ..Default::default()
        });
        // The first second's burst is free, then 500 records cost half a second each.
        assert_eq!(p.reserve(1000, 0), Duration::ZERO);
        let w1 = p.reserve(500, 0);
        let w2 = p.reserve(500, 0);
        assert!((w1.as_secs_f64() - 0.5).abs() < 0.05, "{w1:?}");
        assert!((w2.as_secs_f64() - 1.0).abs() < 0.05, "{w2:?}");
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
        assert_eq!(p.reserve(1, 1), Duration::ZERO);
        p.on_throttle();
        assert_eq!(p.current().1, MIN_DELAY);
        assert_eq!(p.reserve(1, 1), Duration::ZERO);
        let w = p.reserve(1, 1);
        assert!(
            w > MIN_DELAY / 2 && w <= MIN_DELAY,
            "the second call waits for its slot: {w:?}"
        );
        for _ in 0..100 {
            p.on_success();
        }
        assert_eq!(p.current().1, Duration::ZERO);
    }

    #[test]
    fn not_adaptive_ignores_throttles() {
        let p = pacer(PacingLimits::default());
        p.on_throttle();
        assert_eq!(p.current(), (1.0, Duration::ZERO));
        assert_eq!(p.reserve(10_000, 10_000_000), Duration::ZERO);
    }
}
