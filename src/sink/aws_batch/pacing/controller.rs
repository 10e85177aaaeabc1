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
    /// The first heavy throttling while nothing limited: target from the quota's first
    /// window (or half the rate), calls paused until the last window's sends fit it.
    Onset,
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
    target: Option<f64>,
    /// The accepted rate at the last cut, or the highest since; regains aim here.
    ceiling: f64,
    /// The learned rate-independent fraction.
    baseline: f64,
    slots: [Slot; WINDOW_SLOTS],
    /// Index of the current slot in `slots`.
    current: usize,
    /// When the current slot started.
    slot_start: Instant,
    last_cut: Option<Instant>,
    /// The latest slot in which nothing was accepted.
    last_outage: Option<Instant>,
    /// The latest halving for an outage.
    last_outage_cut: Option<Instant>,
    pending: Option<PendingCut>,
    /// Last window with throttling beyond the baseline (or an outage).
    last_throttled: Option<Instant>,
    last_probe: Instant,
    /// Hard cap from `max_records_per_second`.
    cap: Option<f64>,
    /// Latest window's fraction.
    fraction: f64,
    /// An outage was seen and nothing has been accepted since.
    in_outage: bool,
    /// Cuts in a row after which the fraction did not change.
    unresponsive: u32,
    /// When the first call with an accepted record was sent (since the start, an idle spell
    /// or an outage): Firehose's first metering window of this busy spell starts about then.
    epoch: Option<Instant>,
    /// Records accepted in answers to calls sent since `epoch`.
    epoch_accepted: u64,
    /// Answers since the first throttled one while the target does not limit (the onset).
    onset: Slot,
    /// When the onset's first throttled call was sent, and when its answer came.
    onset_sent: Option<Instant>,
    onset_at: Option<Instant>,
    /// Records sent per [`SEND_SLICE`] over the last window (oldest first), for the pause
    /// after an onset cut.
    sends: std::collections::VecDeque<(Instant, u64)>,
    /// No call may be sent before this (set by an onset cut).
    paused_until: Option<Instant>,
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
            epoch: None,
            epoch_accepted: 0,
            onset: Slot::default(),
            onset_sent: None,
            onset_at: None,
            sends: std::collections::VecDeque::new(),
            paused_until: None,
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
        let accepted = answered - throttled.min(answered);
        if accepted > 0 {
            self.in_outage = false;
            if self.epoch.is_none() {
                self.epoch = Some(sent_at);
                self.epoch_accepted = 0;
            }
        }
        if self.epoch.is_some_and(|e| sent_at >= e) {
            self.epoch_accepted += accepted;
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
        if self.target.is_none() && !refused && self.onset_cut(answered, throttled, sent_at, now) {
            decisions.push(Decision::Onset);
        }
        decisions
    }

    /// Watches the answers from the first throttled one while nothing limits, and cuts at
    /// once when they show an exhausted quota (see the module docs: the onset).
    fn onset_cut(&mut self, answered: u64, throttled: u64, sent_at: Instant, now: Instant) -> bool {
        if self
            .onset_at
            .is_some_and(|t| now.saturating_duration_since(t) > ONSET_HORIZON)
        {
            self.onset = Slot::default();
            self.onset_at = None;
            self.onset_sent = None;
        }
        if self.onset_at.is_none() {
            if throttled == 0 {
                return false;
            }
            self.onset_at = Some(now);
            self.onset_sent = Some(sent_at);
        }
        self.onset.answered += answered;
        self.onset.throttled += throttled;
        let o = self.onset;
        if o.answered < MIN_SAMPLE || (o.throttled as f64) <= ONSET_FRACTION * o.answered as f64 {
            return false;
        }
        // A quota exhausted: a window metered per second refuses nearly everything until it
        // rolls over. In the first window of a busy spell, what it accepted is the quota;
        // later there is no telling how far over it the rate is, so halve it (as TCP does on
        // a loss), and let a full window at that rate measure the rest.
        let secs = WINDOW.as_secs_f64();
        let first_window = match (self.epoch, self.onset_sent) {
            (Some(e), Some(t)) => t.saturating_duration_since(e) < WINDOW,
            _ => false,
        };
        let w = self.window();
        let rate = if first_window {
            self.epoch_accepted as f64 / secs
        } else {
            let elapsed = now
                .saturating_duration_since(self.onset_at.unwrap_or(now))
                .as_secs_f64();
            // A slow output gathers its onset over more than a window.
            let accepted = (w.answered - w.throttled) as f64 / secs;
            accepted.max((o.answered - o.throttled) as f64 / elapsed.max(secs)) / 2.0
        };
        self.ceiling = rate;
        self.target = Some(self.capped(rate * (1.0 - CUT_MARGIN)));
        self.last_cut = Some(now);
        self.last_throttled = Some(now);
        self.pending = None;
        self.onset = Slot::default();
        self.onset_at = None;
        self.onset_sent = None;
        // The window held the rate before the cut: the next decisions see only what follows.
        self.slots = [Slot::default(); WINDOW_SLOTS];
        self.pause(now);
        true
    }

    /// After an onset cut, no call goes out until the records sent within the last window fit
    /// the new target: a quota metered per second is used up until its window rolls over, so
    /// whatever is sent before then comes back refused.
    fn pause(&mut self, now: Instant) {
        let Some(target) = self.target else {
            return;
        };
        let budget = target * WINDOW.as_secs_f64();
        let mut sent: u64 = self.sends.iter().map(|s| s.1).sum();
        let mut until = None;
        for &(at, n) in &self.sends {
            if sent as f64 <= budget {
                break;
            }
            sent -= n;
            until = Some(at + SEND_SLICE + WINDOW);
        }
        self.paused_until = until.filter(|&u| u > now);
    }

    /// Counts `records` sent at `now` (for the pause after an onset cut).
    pub fn on_send(&mut self, records: u64, now: Instant) {
        while self
            .sends
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.0) >= WINDOW)
        {
            self.sends.pop_front();
        }
        match self.sends.back_mut() {
            Some(last) if now.saturating_duration_since(last.0) < SEND_SLICE => last.1 += records,
            _ => self.sends.push_back((now, records)),
        }
    }

    /// No call may go out before this.
    pub fn paused_until(&self) -> Option<Instant> {
        self.paused_until
    }

    /// The accepted rate that regains aim at, records per second.
    pub fn ceiling(&self) -> f64 {
        self.ceiling
    }

    /// The throttled fraction of the latest window.
    pub fn fraction(&self) -> f64 {
        self.fraction
    }

    /// An outage was seen and nothing has been accepted since.
    pub fn in_outage(&self) -> bool {
        self.in_outage
    }

    /// Sets the target as a decision would (tests of the pacer).
    #[cfg(test)]
    pub(super) fn set_target(&mut self, rate: Option<f64>) {
        self.target = rate;
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
            // Idle for a while: start the slots from now; the next busy spell starts a new
            // metering window.
            self.slot_start = now;
            self.epoch = None;
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

    fn floor(&self) -> f64 {
        (self.ceiling * MIN_FACTOR).max(MIN_RATE)
    }

    fn capped(&self, rate: f64) -> f64 {
        let rate = rate.max(self.floor());
        match self.cap {
            Some(c) => rate.min(c),
            None => rate,
        }
    }

    /// The decision at the end of a slot, from the last window and its latest slot.
    fn decide(&mut self, now: Instant) -> Decision {
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
            // Too few records to judge a fraction; a target not needed for a while goes.
            let clean = self
                .last_throttled
                .is_none_or(|t| now.saturating_duration_since(t) >= RELEASE_AFTER);
            if w.throttled == 0 && clean && self.target.is_some() && self.pending.is_none() {
                self.target = None;
                return Decision::Raise;
            }
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
    fn outage(&mut self, sent_rate: f64, now: Instant) -> Decision {
        self.in_outage = true;
        self.epoch = None;
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
    fn cut(
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

    fn raise(&mut self, to: f64, _now: Instant) -> Decision {
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
