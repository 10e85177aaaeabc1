//! The call loop's bookkeeping ([`super::ChunkCalls`]) and answer sorting ([`super::tally`]).

use super::*;
use crate::sink::aws_batch::errors::class_of_record_code;
use crate::sink::aws_batch::metrics::Families;

fn answer(code: Option<&'static str>) -> RecordAnswer<'static> {
    RecordAnswer {
        error_code: code,
        error_message: code.map(|_| "slow down"),
    }
}

fn calls(n: usize, max_records: usize, retries: u32) -> ChunkCalls {
    let limits = CallLimits {
        max_records,
        max_bytes: 1 << 20,
    };
    ChunkCalls::new(vec![10; n], limits, retries)
}

fn error(class: ErrorClass) -> SinkError {
    SinkError::new(class, "test")
}

fn send(c: &mut ChunkCalls, now: Instant) -> Vec<usize> {
    match c.next(now) {
        Next::Send(todo) => todo,
        other => panic!("expected a call, got {other:?}"),
    }
}

#[test]
fn refused_and_unanswered_records_are_returned_and_nothing_else() {
    let metrics = Families::new().for_output("t");
    let ok = answer(None);
    let throttled = answer(Some("ServiceUnavailableException"));
    // Three answers for four records: the last record is unanswered.
    let refusal = tally(
        &[10, 11, 12, 13],
        [ok, throttled, ok],
        |_| 10,
        class_of_record_code,
        &metrics,
    )
    .unwrap();
    assert_eq!(
        (refusal.class, refusal.throttled, refusal.sent),
        (ErrorClass::Throttled, 1, 4)
    );
    assert_eq!(refusal.failed, vec![11, 13]);
    assert_eq!(refusal.detail, "ServiceUnavailableException: slow down");
    assert_eq!(
        (metrics.records_sent.get(), metrics.bytes_sent.get()),
        (2, 20)
    );
    assert_eq!(metrics.throttles.get(), 1);
    assert!(tally(&[11, 13], [ok, ok], |_| 10, class_of_record_code, &metrics).is_none());
}

#[test]
fn a_short_answer_without_codes_is_an_incomplete_response() {
    let metrics = Families::new().for_output("t");
    let refusal = tally(
        &[0, 1, 2],
        [answer(None)],
        |_| 1,
        class_of_record_code,
        &metrics,
    )
    .unwrap();
    assert_eq!(refusal.class, ErrorClass::Other);
    assert_eq!(refusal.detail, "response has 1 entries for 3 records");
    assert_eq!(refusal.failed, vec![1, 2]);
}

#[test]
fn a_mostly_accepted_call_has_its_refused_records_ride_in_the_next_call() {
    let now = Instant::now();
    let mut c = calls(250, 100, 8);
    let first = send(&mut c, now);
    assert_eq!(first, (0..100).collect::<Vec<_>>());
    let second = send(&mut c, now);
    assert_eq!(second, (100..200).collect::<Vec<_>>());
    // 2 of 100 refused: sent again at once, ahead of the records not sent yet, in order,
    // and the call stays within 100 records.
    c.answered(&first, Some((&[7, 57], error(ErrorClass::Server))), now);
    let third = send(&mut c, now);
    let mut want = vec![7, 57];
    want.extend(200..250);
    assert_eq!(third, want);
    // Refused again: the next resends go at once too, alone (nothing else is left).
    c.answered(&third, Some((&[7], error(ErrorClass::Server))), now);
    for _ in 1..PROMPT_RESENDS {
        assert_eq!(send(&mut c, now), vec![7]);
        c.answered(&[7], Some((&[7], error(ErrorClass::Server))), now);
    }
    // Once more: now it backs off (50-100 ms), and the worker has nothing else to send.
    let Next::Until(due) = c.next(now) else {
        panic!("the resend after the prompt ones waits")
    };
    let wait = due - now;
    assert!(
        wait >= Duration::from_millis(50) && wait <= Duration::from_millis(100),
        "{wait:?}"
    );
    c.answered(&second, None, now);
    assert_eq!(send(&mut c, due), vec![7]);
    assert_eq!(c.next(due), Next::Answer);
    c.answered(&[7], None, due);
    assert_eq!(c.next(due), Next::Done);
    let (confirmed, error) = c.finish();
    assert!(confirmed.iter().all(|c| *c) && error.is_none());
}

#[test]
fn a_call_refused_beyond_the_baseline_share_backs_off_from_the_first_resend() {
    let now = Instant::now();
    let mut c = calls(10, 100, 8);
    let todo = send(&mut c, now);
    let refused: Vec<usize> = (0..5).collect();
    c.answered(&todo, Some((&refused, error(ErrorClass::Throttled))), now);
    let Next::Until(due) = c.next(now) else {
        panic!("half of the call refused: its records back off")
    };
    assert!(due - now >= Duration::from_millis(50));
    assert_eq!(send(&mut c, due), refused);
}

#[test]
fn a_record_is_sent_at_most_retries_plus_one_times_and_the_rest_is_delivered() {
    let start = Instant::now();
    let mut now = start;
    let mut c = calls(20, 100, 6);
    let mut sent = 0;
    loop {
        match c.next(now) {
            Next::Send(todo) => {
                sent += 1;
                let refused = todo.contains(&4).then_some(4);
                let refusal = refused.map(|r| (vec![r], error(ErrorClass::Server)));
                let refusal = refusal.as_ref().map(|(f, e)| (f.as_slice(), e.clone()));
                c.answered(&todo, refusal, now);
            }
            Next::Until(t) => now = t,
            Next::Answer => unreachable!("one call at a time here"),
            Next::Done => break,
        }
    }
    assert_eq!(sent, 7, "the first send and 6 resends");
    assert!(
        now - start >= Duration::from_millis(50),
        "the resends after the prompt ones backed off"
    );
    let (confirmed, error) = c.finish();
    assert_eq!(confirmed.iter().filter(|c| !**c).count(), 1);
    assert!(!confirmed[4]);
    assert_eq!(error.unwrap().class, ErrorClass::Server);
}

#[test]
fn one_failed_call_does_not_stop_the_others_but_failures_in_a_row_back_off() {
    let now = Instant::now();
    let mut c = calls(1000, 100, 8);
    let a = send(&mut c, now);
    let b = send(&mut c, now);
    // A lone 500: its records ride in the next call, at once.
    c.failed(&a, error(ErrorClass::Server), true, now);
    let next = send(&mut c, now);
    assert_eq!(next, a);
    // A second failure in a row may still be chance (5 % of calls failing at random).
    c.failed(&b, error(ErrorClass::Server), true, now);
    let next2 = send(&mut c, now);
    assert_eq!(next2, b);
    // A third: one call at a time, after a backoff.
    c.failed(&next, error(ErrorClass::Server), true, now);
    assert_eq!(c.next(now), Next::Answer, "a call is still in flight");
    c.failed(&next2, error(ErrorClass::Server), true, now);
    let Next::Until(gate) = c.next(now) else {
        panic!("four failed calls in a row: wait")
    };
    // backoff(2): 100-200 ms.
    let wait = gate - now;
    assert!(
        wait >= Duration::from_millis(100) && wait <= Duration::from_millis(200),
        "{wait:?}"
    );
    let probe = send(&mut c, gate);
    assert_eq!(c.next(gate), Next::Answer, "only one call while calls fail");
    // An answer ends the spell: calls flow again.
    c.answered(&probe, None, gate);
    assert!(matches!(c.next(gate), Next::Send(_) | Next::Until(_)));
}

#[test]
fn more_failed_calls_in_a_row_than_retries_end_the_flush() {
    let mut now = Instant::now();
    let mut c = calls(1000, 100, 2);
    let mut sent = 0;
    loop {
        match c.next(now) {
            Next::Send(todo) => {
                sent += 1;
                c.failed(&todo, error(ErrorClass::Throttled), true, now);
            }
            Next::Until(t) => now = t,
            Next::Answer => unreachable!(),
            Next::Done => break,
        }
    }
    assert_eq!(sent, 3, "the first call and 2 more, not 10 calls × 3");
    let (confirmed, error) = c.finish();
    assert!(confirmed.iter().all(|c| !*c));
    assert_eq!(error.unwrap().class, ErrorClass::Throttled);
}

#[test]
fn a_configuration_error_ends_the_flush_at_once() {
    let now = Instant::now();
    let mut c = calls(1000, 100, 8);
    let a = send(&mut c, now);
    let b = send(&mut c, now);
    c.failed(&a, error(ErrorClass::AccessDenied), false, now);
    assert_eq!(c.next(now), Next::Answer, "the call in flight finishes");
    c.answered(&b, None, now);
    assert_eq!(c.next(now), Next::Done);
    let (confirmed, error) = c.finish();
    assert_eq!(confirmed.iter().filter(|c| **c).count(), 100);
    assert_eq!(error.unwrap().class, ErrorClass::AccessDenied);
}

#[test]
fn after_a_recovery_resends_go_at_once() {
    let now = Instant::now();
    let mut c = calls(100, 100, 8);
    let a = send(&mut c, now);
    c.failed(&a, error(ErrorClass::Throttled), true, now);
    assert_eq!(send(&mut c, now), a, "a lone failure: sent again at once");
    c.failed(&a, error(ErrorClass::Throttled), true, now);
    assert_eq!(send(&mut c, now), a, "two in a row: still at once");
    c.failed(&a, error(ErrorClass::Throttled), true, now);
    assert!(
        matches!(c.next(now), Next::Until(_)),
        "three in a row: wait"
    );
    c.recovered(now);
    assert_eq!(send(&mut c, now), a);
}
