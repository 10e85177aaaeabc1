//! When to retry a chunk that failed, and when to give up (Fluentd's retry parameters).
//!
//! * `exponential_backoff`: the n-th retry waits `retry_wait * base^(n-1)`, capped by
//!   `retry_max_interval`; `periodic`: always `retry_wait`.
//! * `retry_randomize` spreads each wait by ±12.5 % so that many chunks failing together do not
//!   retry in lockstep.
//! * Give up when the first failure is older than `retry_timeout` or after `retry_max_times`
//!   retries, never with `retry_forever`. As in Fluentd, the last retry is moved to the deadline
//!   instead of being skipped.
//!
//! The jitter comes from the `backoff` crate (one of the project's core dependencies). `backoff` is
//! unmaintained (RUSTSEC-2025-0012), so it is used here and nowhere else: swapping it for
//! `backon` touches this file only.

use std::time::Duration;

use backoff::backoff::Backoff;

use crate::buffer::config::{BufferConfig, RetryType};
use crate::buffer::RetryState;

/// Fluentd's `randomize_width`.
pub const RANDOMIZE_WIDTH: f64 = 0.125;

/// The retry rules of one output.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    kind: RetryType,
    wait: Duration,
    base: f64,
    max_interval: Option<Duration>,
    randomize: bool,
    timeout: Duration,
    max_times: Option<u32>,
    forever: bool,
}

/// What to do with a chunk after a failed attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// Try again; the new state says when.
    Retry(RetryState),
    /// Retries are exhausted: dead-letter the chunk.
    GiveUp {
        /// Failures counted, including this one.
        failures: u32,
    },
}

impl RetryPolicy {
    /// The policy of a buffer section.
    pub fn from_config(cfg: &BufferConfig) -> Self {
        RetryPolicy {
            kind: cfg.retry_type,
            wait: cfg.retry_wait.0,
            base: cfg.retry_exponential_backoff_base,
            max_interval: cfg.retry_max_interval.map(|d| d.0),
            randomize: cfg.retry_randomize,
            timeout: cfg.retry_timeout.0,
            max_times: cfg.retry_max_times,
            forever: cfg.retry_forever,
        }
    }

    /// The wait before retry number `retry` (1-based), before randomization.
    pub fn base_wait(&self, retry: u32) -> Duration {
        let raw = match self.kind {
            RetryType::Periodic => self.wait,
            RetryType::ExponentialBackoff => {
                let exp = i32::try_from(retry.saturating_sub(1)).unwrap_or(i32::MAX);
                let secs = self.wait.as_secs_f64() * self.base.powi(exp);
                // Far beyond any sensible interval: treat as "very long", not as an overflow.
                Duration::try_from_secs_f64(secs).unwrap_or(Duration::from_secs(u32::MAX as u64))
            }
        };
        match self.max_interval {
            Some(max) if raw > max => max,
            _ => raw,
        }
    }

    /// The wait before retry number `retry`, with jitter when `retry_randomize` is on.
    pub fn wait(&self, retry: u32) -> Duration {
        let base = self.base_wait(retry);
        if !self.randomize || base.is_zero() {
            return base;
        }
        let mut jitter = backoff::ExponentialBackoff {
            current_interval: base,
            initial_interval: base,
            randomization_factor: RANDOMIZE_WIDTH,
            multiplier: 1.0,
            max_interval: base.saturating_mul(2),
            max_elapsed_time: None,
            ..Default::default()
        };
        jitter.next_backoff().unwrap_or(base)
    }

    /// Records a failure at `now_ms` and decides what comes next.
    pub fn on_failure(&self, previous: RetryState, now_ms: u64) -> RetryDecision {
        let failures = previous.failures.saturating_add(1);
        let first = previous.first_failure_ms.unwrap_or(now_ms);
        if !self.forever {
            let deadline = first.saturating_add(duration_ms(self.timeout));
            let retries_done = failures - 1;
            let out_of_times = self.max_times.is_some_and(|max| retries_done >= max);
            if out_of_times || now_ms >= deadline {
                return RetryDecision::GiveUp { failures };
            }
            let next = now_ms
                .saturating_add(duration_ms(self.wait(failures)))
                .min(deadline);
            return RetryDecision::Retry(RetryState {
                failures,
                first_failure_ms: Some(first),
                next_attempt_ms: next,
            });
        }
        RetryDecision::Retry(RetryState {
            failures,
            first_failure_ms: Some(first),
            next_attempt_ms: now_ms.saturating_add(duration_ms(self.wait(failures))),
        })
    }
}

fn duration_ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::primitives::units::ConfigDuration;

    fn policy(f: impl FnOnce(&mut BufferConfig)) -> RetryPolicy {
        let mut cfg = BufferConfig {
            retry_randomize: false,
            ..BufferConfig::default()
        };
        f(&mut cfg);
        RetryPolicy::from_config(&cfg)
    }

    #[test]
    fn exponential_waits_double_from_retry_wait() {
        let p = policy(|_| {});
        let waits: Vec<_> = (1..=5).map(|n| p.wait(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 8, 16]);
    }

    #[test]
    fn max_interval_caps_the_wait() {
        let p = policy(|c| c.retry_max_interval = Some(ConfigDuration::secs(5)));
        let waits: Vec<_> = (1..=5).map(|n| p.wait(n).as_secs()).collect();
        assert_eq!(waits, vec![1, 2, 4, 5, 5]);
        assert_eq!(
            p.wait(10_000),
            Duration::from_secs(5),
            "huge exponents do not overflow"
        );
    }

    #[test]
    fn periodic_waits_are_constant() {
        let p = policy(|c| {
            c.retry_type = RetryType::Periodic;
            c.retry_wait = ConfigDuration::secs(3);
        });
        assert_eq!(p.wait(1), p.wait(7));
        assert_eq!(p.wait(7), Duration::from_secs(3));
    }

    #[test]
    fn randomized_waits_stay_within_an_eighth() {
        let p = policy(|c| c.retry_randomize = true);
        let (mut lo, mut hi) = (f64::MAX, 0f64);
        for _ in 0..2000 {
            let w = p.wait(4).as_secs_f64();
            assert!(
                (7.0 - 1e-9..=9.0 + 1e-9).contains(&w),
                "8s ± 12.5% gave {w}"
            );
            lo = lo.min(w);
            hi = hi.max(w);
        }
        assert!(lo < 7.5 && hi > 8.5, "jitter covers the range: {lo}..{hi}");
    }

    #[test]
    fn gives_up_after_max_times_retries() {
        let p = policy(|c| c.retry_max_times = Some(2));
        let mut st = RetryState::default();
        for _ in 0..2 {
            match p.on_failure(st, 1000) {
                RetryDecision::Retry(next) => st = next,
                RetryDecision::GiveUp { .. } => panic!("gave up too early at {st:?}"),
            }
        }
        // The third failure is the first attempt plus two retries failing: give up.
        assert_eq!(
            p.on_failure(st, 1000),
            RetryDecision::GiveUp { failures: 3 }
        );
    }

    #[test]
    fn timeout_counts_from_the_first_failure_and_clamps_the_last_retry() {
        let p = policy(|c| c.retry_timeout = ConfigDuration::secs(10));
        let RetryDecision::Retry(s1) = p.on_failure(RetryState::default(), 0) else {
            panic!()
        };
        assert_eq!(
            (s1.failures, s1.first_failure_ms, s1.next_attempt_ms),
            (1, Some(0), 1000)
        );
        // At t=8s the 16 s wait would pass the deadline: the last retry is at the deadline.
        let s = RetryState { failures: 4, ..s1 };
        let RetryDecision::Retry(s5) = p.on_failure(s, 8_000) else {
            panic!()
        };
        assert_eq!(s5.next_attempt_ms, 10_000);
        assert_eq!(
            p.on_failure(s5, 10_000),
            RetryDecision::GiveUp { failures: 6 }
        );
    }

    #[test]
    fn retry_forever_ignores_limits() {
        let p = policy(|c| {
            c.retry_forever = true;
            c.retry_max_times = Some(0);
            c.retry_timeout = ConfigDuration::secs(1);
        });
        let st = RetryState {
            failures: 100,
            first_failure_ms: Some(0),
            next_attempt_ms: 0,
        };
        assert!(matches!(
            p.on_failure(st, 1_000_000),
            RetryDecision::Retry(_)
        ));
    }
}
