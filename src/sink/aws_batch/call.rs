//! One batch-put call and its resends: which of its records are confirmed, which are still to
//! send, and what a 200 answer with per-record failures means for them.
//!
//! Nothing here is Firehose-specific. PutRecordBatch (Firehose) and PutRecords (Kinesis Data
//! Streams) answer a call the same way: HTTP 200 with one entry per record, in order, each
//! either accepted or refused with an `ErrorCode` and `ErrorMessage`. A refused record is sent
//! again in the next attempt, alone with the other refused ones, so a partial failure never
//! duplicates what was accepted; an entry missing from the answer counts as refused (sent
//! again: a duplicate at worst, never a loss).

use std::time::Duration;

use rand::Rng;

use super::metrics::OutputMetrics;
use crate::sink::ErrorClass;

/// First backoff between resends inside a flush; doubles per attempt.
const FIRST_BACKOFF: Duration = Duration::from_millis(100);
/// Longest backoff between resends inside a flush.
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Backoff before resend number `attempt` (1-based): 100 ms doubling to 5 s, 50–100 % jitter.
pub fn backoff(attempt: u32) -> Duration {
    let exp = attempt.saturating_sub(1).min(16);
    let d = (FIRST_BACKOFF * 2u32.pow(exp)).min(MAX_BACKOFF);
    d.mul_f64(rand::thread_rng().gen_range(0.5..=1.0))
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
    /// Records refused or unanswered.
    pub failed: usize,
    /// Of those, refused as throttled.
    pub throttled: usize,
    /// Records the call carried.
    pub sent: usize,
}

/// The records of one call (indices into the call's records) and where each stands.
#[derive(Debug)]
pub struct Call {
    confirmed: Vec<bool>,
    todo: Vec<usize>,
}

impl Call {
    /// A call of `records` records, none confirmed.
    pub fn new(records: usize) -> Self {
        Call {
            confirmed: vec![false; records],
            todo: (0..records).collect(),
        }
    }

    /// The records the next attempt sends, in order.
    pub fn todo(&self) -> &[usize] {
        &self.todo
    }

    /// Which records were confirmed, by index.
    pub fn into_confirmed(self) -> Vec<bool> {
        self.confirmed
    }

    /// Sorts a 200 answer to the last attempt (`answers` in the order of [`Call::todo`]):
    /// accepted records are confirmed and counted (`size_of` gives a record's data bytes),
    /// refused and unanswered ones stay to do and are counted by class (`class_of` classifies
    /// the service's per-record codes). `None` when every record was accepted.
    pub fn tally<'a>(
        &mut self,
        answers: impl IntoIterator<Item = RecordAnswer<'a>>,
        size_of: impl Fn(usize) -> usize,
        class_of: impl Fn(&str) -> ErrorClass,
        metrics: &OutputMetrics,
    ) -> Option<Refusal> {
        let mut answers = answers.into_iter();
        let sent = self.todo.len();
        let (mut answered, mut accepted, mut accepted_bytes) = (0usize, 0u64, 0u64);
        let mut failed = Vec::new();
        let mut throttled = 0;
        let mut first: Option<(ErrorClass, String)> = None;
        for &i in &self.todo {
            let Some(answer) = answers.next() else {
                failed.push(i);
                continue;
            };
            answered += 1;
            let Some(code) = answer.error_code else {
                self.confirmed[i] = true;
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
        let refusal = Refusal {
            class,
            detail,
            failed: failed.len(),
            throttled,
            sent,
        };
        self.todo = failed;
        Some(refusal)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sink::aws_batch::errors::class_of_record_code;
    use crate::sink::aws_batch::metrics::Families;

    fn answer(code: Option<&'static str>) -> RecordAnswer<'static> {
        RecordAnswer {
            error_code: code,
            error_message: code.map(|_| "slow down"),
        }
    }

    #[test]
    fn refused_and_unanswered_records_are_sent_again_and_nothing_else() {
        let metrics = Families::new().for_output("t");
        let mut call = Call::new(4);
        let ok = answer(None);
        let throttled = answer(Some("ServiceUnavailableException"));
        // Three answers for four records: the last record is unanswered.
        let refusal = call
            .tally([ok, throttled, ok], |_| 10, class_of_record_code, &metrics)
            .unwrap();
        assert_eq!(
            (
                refusal.class,
                refusal.failed,
                refusal.throttled,
                refusal.sent
            ),
            (ErrorClass::Throttled, 2, 1, 4)
        );
        assert_eq!(refusal.detail, "ServiceUnavailableException: slow down");
        assert_eq!(call.todo(), &[1, 3]);
        assert_eq!(
            (metrics.records_sent.get(), metrics.bytes_sent.get()),
            (2, 20)
        );
        assert_eq!(metrics.throttles.get(), 1);
        // The resend carries records 1 and 3; both accepted.
        assert!(call
            .tally([ok, ok], |_| 10, class_of_record_code, &metrics)
            .is_none());
        assert_eq!(call.into_confirmed(), vec![true; 4]);
    }

    #[test]
    fn a_short_answer_without_codes_is_an_incomplete_response() {
        let metrics = Families::new().for_output("t");
        let mut call = Call::new(3);
        let refusal = call
            .tally([answer(None)], |_| 1, class_of_record_code, &metrics)
            .unwrap();
        assert_eq!(refusal.class, ErrorClass::Other);
        assert_eq!(refusal.detail, "response has 1 entries for 3 records");
        assert_eq!(call.todo(), &[1, 2]);
    }
}
