//! The adaptive controller: a target rate from the throttled fraction of each one-second window
//! (the model and why it converges are in the parent module's docs).

use super::*;

/// Answers summed over one slot.
#[derive(Debug, Default, Clone, Copy)]
struct Slot {
    /// Records answered (accepted, throttled, or refused by the service for another reason).
    answered: u64,
    /// Of those, throttled.
    throttled: u64,
    /// Of those, in calls refused as a whole.
    refused: u64,
}

/// A cut waiting for the window that shows whether it helped.
#[derive(Debug, Clone, Copy)]
struct PendingCut {
    at: Instant,
    /// The target before the cut (None: it did not limit).
    before: Option<f64>,
    /// The window's fraction that caused it.
    fraction: f64,
    /// The ceiling before the cut.
    ceiling: f64,
}

/// What a window decided (for tests and logs).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Decision {
    /// Too little data.
    None,
    /// Target cut (by the throttled fraction).
    Cut,
    /// Nothing accepted: target halved.
    Outage,
    /// A cut did not change the fraction: undone, baseline learned.
    Undo,
    /// Target raised (or released).
    Raise,
    /// Throttled, but a cut is too recent.
    Hold,
}

/// Tolerance of a throttled fraction measured over `n` records around `b`: 1 % plus three
/// standard deviations.
fn tolerance(n: u64, b: f64) -> f64 {
    0.01 + 3.0 * (b.max(0.005) * (1.0 - b) / n as f64).sqrt()
}

/// Throttled beyond `b` (and its tolerance).
fn over(s: Slot, b: f64) -> bool {
    s.answered > 0 && s.throttled as f64 / s.answered as f64 > b + tolerance(s.answered, b)
}

/// The adaptive part: a target rate from the throttled fraction (see the module docs).
#[derive(Debug)]
pub struct Controller {
    /// Records per second; `None` = not limiting.
    pub(super) target: Option<f64>,
    /// The accepted rate at the last cut, or the highest since; regains aim here.
    pub(super) ceiling: f64,
    /// The learned rate-independent fraction.
    pub(super) baseline: f64,
    slots: [Slot; WINDOW_SLOTS],
    /// Index of the current slot in `slots`.
    pub(super) current: usize,
    /// When the current slot started.
    pub(super) slot_start: Instant,
    pub(super) last_cut: Option<Instant>,
    /// The latest slot in which nothing was accepted.
    pub(super) last_outage: Option<Instant>,
    /// The latest halving for an outage.
    pub(super) last_outage_cut: Option<Instant>,
    pending: Option<PendingCut>,
    /// Last window with throttling beyond the baseline (or an outage).
    pub(super) last_throttled: Option<Instant>,
    pub(super) last_probe: Instant,
    /// Hard cap from `max_records_per_second`.
    pub(super) cap: Option<f64>,
    /// Latest window's fraction.
    pub(super) fraction: f64,
    /// An outage was seen and nothing has been accepted since.
    pub(super) in_outage: bool,
    /// Cuts in a row after which the fraction did not change.
    pub(super) unresponsive: u32,
    /// Created at.
    pub(super) started: Instant,
}

impl Controller {
    /// A controller that does not limit yet; `cap` is the configured records/s limit.
    pub fn new(cap: Option<f64>, now: Instant) -> Self {
        Controller {
            target: None,
            ceiling: 0.0,
            baseline: 0.0,
            slots: [Slot::default(); WINDOW_SLOTS],
            current: 0,
            slot_start: now,
            last_cut: None,
            last_outage: None,
            last_outage_cut: None,
            pending: None,
            last_throttled: None,
            last_probe: now,
            cap,
            fraction: 0.0,
            in_outage: false,
            unresponsive: 0,
            started: now,
        }
    }

    /// The target in records per second, `None` while it does not limit.
    pub fn target(&self) -> Option<f64> {
        self.target
    }

    /// The learned rate-independent fraction.
    pub fn baseline(&self) -> f64 {
        self.baseline
    }

    /// Adds one answer: `answered` records came back, `throttled` of them throttled. Returns
    /// the decisions of the slots that ended before `now`.
    pub fn record(&mut self, answered: u64, throttled: u64, now: Instant) -> Vec<Decision> {
        self.record_answer(answered, throttled, false, now, now)
    }

    /// Adds a call refused as a whole with a throttling error.
    pub fn record_refused(&mut self, records: u64, now: Instant) -> Vec<Decision> {
        self.record_answer(records, records, true, now, now)
    }

    /// Adds an answer to a call sent at `sent_at`. Answers to calls sent before the last cut
    /// tell about the rate before it, already acted on: they do not count.
    pub(super) fn record_answer(
        &mut self,
        answered: u64,
        throttled: u64,
        refused: bool,
        sent_at: Instant,
        now: Instant,
    ) -> Vec<Decision> {
        let mut decisions = self.advance(now);
        if throttled < answered {
            self.in_outage = false;
        }
        if self.last_cut.is_some_and(|c| sent_at < c) {
            return decisions;
        }
        let s = &mut self.slots[self.current];
        s.answered += answered;
        s.throttled += throttled;
        if refused {
            s.refused += answered;
        }
        let full_window = now.saturating_duration_since(self.started) >= WINDOW;
        if self.target.is_none() && throttled > 0 && !refused && full_window {
            // The first throttling while nothing limits: the relay may be sending far over
            // the quota. Limit it at once to what was accepted in the last second (an
            // underestimate: answers to accepted calls may still be on their way), and cut
            // properly at the slot's end, when they are in. (In the first second the window
            // does not hold a second's worth yet: the slot's end decides.)
            let w = self.window();
            let latest = self.slots[self.current];
            let b = self.baseline;
            if w.answered >= MIN_SAMPLE && over(w, b) && over(latest, b) {
                let accepted = (w.answered - w.throttled) as f64 / WINDOW.as_secs_f64();
                self.target = Some(self.capped(accepted * (1.0 - CUT_MARGIN)));
                decisions.push(Decision::Cut);
            }
        }
        decisions
    }

    /// Ends the slots that are over by `now`, deciding at each boundary.
    pub fn advance(&mut self, now: Instant) -> Vec<Decision> {
        let mut out = Vec::new();
        let mut steps = 0;
        while now.saturating_duration_since(self.slot_start) >= SLOT {
            self.slot_start += SLOT;
            steps += 1;
            if steps <= WINDOW_SLOTS + 1 {
                out.push(self.decide(self.slot_start));
            }
            self.current = (self.current + 1) % WINDOW_SLOTS;
            self.slots[self.current] = Slot::default();
        }
        if steps > WINDOW_SLOTS + 1 {
            // Idle for a while: start the slots from now.
            self.slot_start = now;
        }
        out
    }

    fn window(&self) -> Slot {
        self.slots.iter().fold(Slot::default(), |a, s| Slot {
            answered: a.answered + s.answered,
            throttled: a.throttled + s.throttled,
            refused: a.refused + s.refused,
        })
    }

    pub(super) fn floor(&self) -> f64 {
        (self.ceiling * MIN_FACTOR).max(MIN_RATE)
    }

    pub(super) fn capped(&self, rate: f64) -> f64 {
        let rate = rate.max(self.floor());
        match self.cap {
            Some(c) => rate.min(c),
            None => rate,
        }
    }

    /// The decision at the end of a slot, from the last window and its latest slot.
    pub(super) fn decide(&mut self, now: Instant) -> Decision {
        let w = self.window();
        let latest = self.slots[self.current];
        if w.answered == 0 {
            return Decision::None;
        }
        let n = w.answered as f64;
        let fraction = w.throttled as f64 / n;
        self.fraction = fraction;
        let sent_rate = n / WINDOW.as_secs_f64();
        let accepted_rate = (w.answered - w.throttled) as f64 / WINDOW.as_secs_f64();

        if latest.answered > 0 && latest.refused == latest.answered {
            // Only whole calls refused (a quota refuses records inside 200 answers instead).
            return self.outage(sent_rate, now);
        }
        if w.answered < MIN_SAMPLE {
            return Decision::None;
        }

        // Was the last cut worth it?
        if let Some(p) = self.pending {
            if now.saturating_duration_since(p.at) >= CUT_SPACING {
                self.pending = None;
                let sigma = (p.fraction * (1.0 - p.fraction) / n).sqrt();
                if (fraction - p.fraction).abs() <= (0.3 * p.fraction).max(3.0 * sigma) {
                    // The fraction did not follow the rate: undo the cut, and after two such
                    // cuts in a row take the fraction for one that does not depend on it.
                    self.unresponsive += 1;
                    if self.unresponsive >= 2 {
                        self.baseline = fraction.min(p.fraction).min(MAX_BASELINE);
                        self.last_probe = now;
                    }
                    self.target = p.before.map(|t| self.capped(t));
                    self.ceiling = p.ceiling;
                    return Decision::Undo;
                }
                self.unresponsive = 0;
                self.baseline = self.baseline.min(fraction);
            }
        }

        let b = self.baseline;
        // Every PROBE_EVERY, the baseline is ignored once, so that one learned from a real
        // quota cannot stick.
        let probe = b > 0.0 && now.saturating_duration_since(self.last_probe) >= PROBE_EVERY;
        let b_eff = if probe { 0.0 } else { b };
        let regain = self.target.is_some_and(|t| t < 0.9 * self.ceiling);
        if over(w, b) {
            self.last_throttled = Some(now);
        }
        if over(w, b_eff) {
            let after_outage = self
                .last_outage
                .is_some_and(|t| now.saturating_duration_since(t) < CUT_SPACING);
            let cut_ready = self
                .last_cut
                .is_none_or(|t| now.saturating_duration_since(t) >= CUT_SPACING);
            let latest_over = over(latest, b_eff);
            if latest_over && cut_ready && self.pending.is_none() && !after_outage {
                if probe {
                    self.last_probe = now;
                }
                return self.cut(sent_rate, accepted_rate, fraction, fraction - b_eff, now);
            }
            if latest.answered > 0 && !latest_over && regain {
                return self.raise(self.target.unwrap_or(0.0) * 2.0, now);
            }
            if over(w, b) {
                return Decision::Hold;
            }
        }

        // Not throttled beyond the baseline.
        if fraction < b {
            self.baseline += (fraction - b) / 8.0;
            if self.baseline < 0.001 {
                self.baseline = 0.0;
            }
        }
        self.ceiling = self.ceiling.max(accepted_rate);
        let Some(target) = self.target else {
            return Decision::None;
        };
        if regain {
            return self.raise(target * 2.0, now);
        }
        if self.pending.is_some() {
            // Wait for the window that judges the cut.
            return Decision::Hold;
        }
        let clean_for = self
            .last_throttled
            .map_or(Duration::MAX, |t| now.saturating_duration_since(t));
        if clean_for >= RELEASE_AFTER && target >= 2.0 * sent_rate {
            self.target = None;
            return Decision::Raise;
        }
        let doublings = clean_for.saturating_sub(Duration::from_secs(2)).as_secs() / 2;
        let step = PROBE_STEP * 2f64.powi(doublings.min(4) as i32);
        self.raise(target * (1.0 + step), now)
    }

    /// Every call of the latest slot refused: an outage (or a call quota). The rate does not
    /// matter then, but do not hammer: halve (once per window), and keep the ceiling and the
    /// baseline for the way back. A cut just before was the outage's start: its ceiling stays.
    pub(super) fn outage(&mut self, sent_rate: f64, now: Instant) -> Decision {
        self.in_outage = true;
        self.last_throttled = Some(now);
        self.last_outage = Some(now);
        if let Some(p) = self.pending.take() {
            self.ceiling = self.ceiling.max(p.ceiling);
        }
        if self.ceiling <= 0.0 {
            // Nothing was ever delivered: no rate to go back to, so none to limit.
            return Decision::Hold;
        }
        if self
            .last_outage_cut
            .is_some_and(|t| now.saturating_duration_since(t) < WINDOW)
        {
            return Decision::Hold;
        }
        self.last_outage_cut = Some(now);
        let from = self.target.unwrap_or(sent_rate).min(self.ceiling);
        self.target = Some(self.capped(from / 2.0));
        Decision::Outage
    }

    /// Cuts the target to the rate Firehose accepted (plus the baseline's share) less the
    /// margin; the next window judges the cut.
    pub(super) fn cut(
        &mut self,
        sent_rate: f64,
        accepted_rate: f64,
        fraction: f64,
        excess: f64,
        now: Instant,
    ) -> Decision {
        let before = self.target;
        self.pending = Some(PendingCut {
            at: now,
            before,
            fraction,
            ceiling: self.ceiling,
        });
        self.ceiling = accepted_rate;
        self.target = Some(self.capped(sent_rate * (1.0 - excess) * (1.0 - CUT_MARGIN)));
        self.last_cut = Some(now);
        Decision::Cut
    }

    pub(super) fn raise(&mut self, to: f64, _now: Instant) -> Decision {
        let to = if self.target.is_some_and(|t| t < 0.9 * self.ceiling) {
            to.min(self.ceiling)
        } else {
            to
        };
        self.target = Some(self.capped(to));
        Decision::Raise
    }

    /// Throttled: the target limits the rate (it holds the rate at what Firehose accepts), or
    /// Firehose throttled beyond the baseline within the last [`THROTTLED_HOLD`].
    pub fn throttled(&self, now: Instant) -> bool {
        self.target.is_some()
            || self
                .last_throttled
                .is_some_and(|t| now.saturating_duration_since(t) < THROTTLED_HOLD)
    }
}
