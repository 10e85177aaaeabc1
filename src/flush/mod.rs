//! Flush workers: move chunks from an output's buffer to its sink, with retries, partial
//! delivery and dead-lettering.
//!
//! Per output there are `flush_thread_count` workers and, in `interval` mode, one enqueue timer.
//! The timing follows Fluentd's output plugin (`enqueue_thread_run` and `flush_thread_run` in
//! fluentd's `lib/fluent/plugin/output.rb`):
//! * the timer closes staged chunks older than `flush_interval`, checking every
//!   `max(flush_interval / 11, flush_thread_interval)`;
//! * an idle worker sleeps `flush_thread_interval` (or until the next retry is due);
//! * after a chunk, while more are queued, a worker pauses `flush_thread_burst_interval`;
//! * but a worker is woken at once whenever a chunk is queued, so under steady input chunks go
//!   out as soon as they are closed and the pauses only pace a backlog replay.
//!
//! Retries are per chunk (Fluentd keeps one retry state per output, so one poisoned chunk slows
//! everything; here the others keep flowing).
//!
//! What a worker relies on and keeps (`attempt.rs`):
//!
//! * a chunk is committed (removed) only when each of its records was delivered or written to
//!   the dead-letter directory, durably; if that write fails the chunk stays and is retried;
//! * a failed attempt releases the chunk with the records it delivered, so the next attempt
//!   (also after a crash, with the file buffer) resends only the rest;
//! * giving up (`retry_timeout`, `retry_max_times`) dead-letters the undelivered records, never
//!   drops them.

mod attempt;
pub mod deadletter;
pub mod progress;
pub mod retry;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::JoinHandle;

use self::deadletter::DeadLetter;
use self::retry::RetryPolicy;
use crate::buffer::config::{BufferConfig, BufferType, FlushMode};
use crate::buffer::{now_ms, Buffer, Enqueue};
use crate::ops::logging::Throttle;
use crate::ops::metrics::{output_label, Labels, Metrics};
use crate::pipeline::Output;

/// What the flush workers should be doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushPhase {
    /// Normal operation.
    Running,
    /// Sources have stopped: flush what is ready as fast as possible, then exit when idle.
    Draining,
    /// There are no sources (`firehose-relay drain`): deliver everything as fast as possible
    /// (no pause between chunks), retrying failed chunks on their schedule, until the phase
    /// changes.
    Emptying,
    /// Finish the chunk in hand and take no other (`drain` past its timeout).
    Stopping,
}

/// Timing parameters of one output's workers.
#[derive(Debug, Clone)]
struct Timing {
    mode: FlushMode,
    flush_interval: Duration,
    thread_interval: Duration,
    burst_interval: Duration,
    /// `"time"` is a chunk key: in `lazy` mode chunks are queued once their slot has ended
    /// (plus `timekey_wait`), Fluentd's lazy rule.
    timekeyed: bool,
}

impl Timing {
    fn from_config(cfg: &BufferConfig) -> Self {
        Timing {
            mode: cfg.flush_mode,
            flush_interval: cfg.flush_interval.0,
            thread_interval: cfg.flush_thread_interval.0,
            burst_interval: cfg.flush_thread_burst_interval.0,
            timekeyed: cfg.key_rule().timekey_secs.is_some(),
        }
    }

    /// Which staged chunks the enqueue timer closes at `now` (Unix ms), if it runs at all:
    /// `interval` by age, `lazy` with a time key by slot end; otherwise only full chunks
    /// close (and everything at shutdown).
    fn due(&self, now: u64) -> Option<Enqueue> {
        let age_ms = u64::try_from(self.flush_interval.as_millis()).unwrap_or(u64::MAX);
        match self.mode {
            FlushMode::Interval => Some(Enqueue::CreatedBefore(now.saturating_sub(age_ms))),
            FlushMode::Lazy if self.timekeyed => Some(Enqueue::SlotEndedBefore(now)),
            _ => None,
        }
    }

    fn enqueue_check_period(&self) -> Duration {
        if self.mode == FlushMode::Lazy {
            return self.thread_interval.max(Duration::from_millis(10));
        }
        (self.flush_interval / 11)
            .max(self.thread_interval)
            .max(Duration::from_millis(10))
    }
}

/// Everything a worker needs, shared by the workers of one output.
struct Worker {
    output: Arc<Output>,
    metrics: Arc<Metrics>,
    dead_letter: Arc<DeadLetter>,
    retry: RetryPolicy,
    timing: Timing,
    labels: Labels,
    failure_log: Throttle,
}

/// Starts the workers (and the enqueue timer) of `output`. They run until the phase becomes
/// [`FlushPhase::Draining`] and nothing ready is left.
pub fn spawn(
    output: Arc<Output>,
    metrics: Arc<Metrics>,
    dead_letter: Arc<DeadLetter>,
    phase: watch::Receiver<FlushPhase>,
) -> Vec<JoinHandle<()>> {
    let cfg = output.config.buffer().clone();
    let worker = Arc::new(Worker {
        labels: output_label(&output.name),
        retry: RetryPolicy::from_config(&cfg),
        timing: Timing::from_config(&cfg),
        output,
        metrics,
        dead_letter,
        failure_log: Throttle::new(Duration::from_secs(10)),
    });
    let mut handles = Vec::new();
    if worker.timing.due(0).is_some() {
        let w = Arc::clone(&worker);
        let phase = phase.clone();
        handles.push(tokio::spawn(async move { w.enqueue_timer(phase).await }));
    }
    for _ in 0..cfg.flush_thread_count {
        let w = Arc::clone(&worker);
        let phase = phase.clone();
        handles.push(tokio::spawn(async move { w.run(phase).await }));
    }
    handles
}

/// Waits `d`, or less if `phase` changes or the future `wake` completes.
async fn pause(
    d: Duration,
    phase: &mut watch::Receiver<FlushPhase>,
    wake: impl std::future::Future<Output = ()>,
) {
    tokio::select! {
        _ = tokio::time::sleep(d) => {}
        _ = phase.changed() => {}
        _ = wake => {}
    }
}

impl Worker {
    fn buffer(&self) -> &dyn Buffer {
        self.output.buffer.as_ref()
    }

    async fn enqueue_timer(&self, mut phase: watch::Receiver<FlushPhase>) {
        let period = self.timing.enqueue_check_period();
        while *phase.borrow_and_update() == FlushPhase::Running {
            pause(period, &mut phase, std::future::pending()).await;
            let Some(which) = self.timing.due(now_ms()) else {
                return;
            };
            if let Err(e) = self.buffer().enqueue_staged(which).await {
                tracing::error!(output = %self.output.name, error = %e, "cannot queue staged chunks");
            }
        }
    }

    async fn run(&self, mut phase: watch::Receiver<FlushPhase>) {
        let signal = self.buffer().queued_signal();
        loop {
            let now_phase = *phase.borrow_and_update();
            let draining = now_phase == FlushPhase::Draining;
            if now_phase == FlushPhase::Stopping {
                return;
            }
            let queued = signal.notified();
            tokio::pin!(queued);
            queued.as_mut().enable();
            let now = now_ms();
            match self.buffer().take(now).await {
                Ok(Some(chunk)) => {
                    self.flush(chunk).await;
                    if now_phase == FlushPhase::Running && self.buffer().stats().queued_chunks > 0 {
                        pause(self.timing.burst_interval, &mut phase, queued).await;
                    }
                }
                Ok(None) if draining => {
                    // A memory buffer loses whatever is left at exit, so keep retrying until
                    // shutdown_timeout stops us; a file buffer keeps it for the next start.
                    let memory = self.output.config.buffer().kind == BufferType::Memory;
                    let stats = self.buffer().stats();
                    if !memory || stats.queued_chunks == 0 {
                        return;
                    }
                    let wait = stats
                        .next_retry_ms
                        .map(|t| Duration::from_millis(t.saturating_sub(now)))
                        .unwrap_or(self.timing.thread_interval)
                        .min(self.timing.thread_interval);
                    pause(wait, &mut phase, queued).await;
                }
                Ok(None) => {
                    let mut wait = self.timing.thread_interval;
                    if let Some(next) = self.buffer().stats().next_retry_ms {
                        wait = wait.min(Duration::from_millis(next.saturating_sub(now)));
                    }
                    pause(wait, &mut phase, queued).await;
                }
                Err(e) => {
                    tracing::error!(output = %self.output.name, error = %e, "cannot take a chunk from the buffer");
                    if draining {
                        return;
                    }
                    pause(
                        self.timing.thread_interval,
                        &mut phase,
                        std::future::pending(),
                    )
                    .await;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::buffer::memory::MemoryBuffer;
    use crate::buffer::policy::BufferPolicy;
    use crate::buffer::{Chunk, DeliveredSet, Records};
    use crate::pipeline::format::{FormatOptions, Formatter};
    use crate::pipeline::router::TagPattern;
    use crate::primitives::units::ConfigDuration;
    use crate::sink::{Delivery, ErrorClass, OutputConfig, Sink, SinkError};
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// One scripted answer of the sink.
    type Answer = Box<dyn Fn(&Chunk) -> Delivery + Send>;

    /// A sink that answers each attempt from a script and records what it was sent.
    #[derive(Default)]
    struct ScriptedSink {
        script: Mutex<Vec<Answer>>,
        sent: Mutex<Vec<Vec<String>>>,
    }

    #[async_trait]
    impl Sink for ScriptedSink {
        async fn deliver(&self, chunk: &Chunk) -> Delivery {
            let pending: Vec<String> = chunk
                .pending()
                .map(|i| String::from_utf8_lossy(chunk.records.get(i).unwrap()).into_owned())
                .collect();
            self.sent.lock().unwrap().push(pending);
            let mut script = self.script.lock().unwrap();
            if script.is_empty() {
                Delivery::all(chunk)
            } else {
                (script.remove(0))(chunk)
            }
        }
        fn describe(&self) -> String {
            "scripted".into()
        }
    }

    fn output(sink: Arc<ScriptedSink>, tweak: impl FnOnce(&mut BufferConfig)) -> Arc<Output> {
        let mut cfg = OutputConfig::Stdout(crate::sink::stdout::StdoutOutputConfig {
            type_tag: Default::default(),
            pattern: "**".into(),
            label: None,
            append_new_line: true,
            data_key: None,
            buffer: BufferConfig::default(),
        });
        let OutputConfig::Stdout(c) = &mut cfg else {
            unreachable!()
        };
        c.buffer.kind = BufferType::Memory;
        c.buffer.flush_mode = FlushMode::Immediate;
        c.buffer.retry_wait = ConfigDuration::millis(20);
        c.buffer.retry_randomize = false;
        c.buffer.flush_thread_interval = ConfigDuration::millis(20);
        tweak(&mut c.buffer);
        let policy = BufferPolicy::from_config("out", &c.buffer);
        Arc::new(Output {
            name: "out".into(),
            pattern: TagPattern::parse("**").unwrap(),
            formatter: Formatter::new(FormatOptions::default(), None),
            buffer: Arc::new(MemoryBuffer::new(policy)),
            sink,
            config: cfg,
        })
    }

    fn records(items: &[&str]) -> Records {
        let mut r = Records::new();
        for i in items {
            r.push(i.as_bytes()).unwrap();
        }
        r
    }

    async fn run_until_empty(out: &Arc<Output>, dl: Arc<DeadLetter>) -> Arc<Metrics> {
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = watch::channel(FlushPhase::Running);
        let handles = spawn(Arc::clone(out), Arc::clone(&metrics), dl, rx);
        let start = std::time::Instant::now();
        while out.buffer.stats().records > 0 {
            assert!(
                start.elapsed() < Duration::from_secs(5),
                "buffer never drained"
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tx.send_replace(FlushPhase::Draining);
        for h in handles {
            h.await.unwrap();
        }
        metrics
    }

    #[tokio::test]
    async fn partial_delivery_resends_only_the_failed_records() {
        let sink = Arc::new(ScriptedSink::default());
        sink.script
            .lock()
            .unwrap()
            .push(Box::new(|_: &Chunk| Delivery {
                delivered: [0, 2].into_iter().collect::<DeliveredSet>(),
                rejected: vec![],
                error: Some(SinkError::new(ErrorClass::Throttled, "slow down")),
            }));
        let out = output(Arc::clone(&sink), |_| {});
        out.buffer
            .append(records(&["a\n", "b\n", "c\n", "d\n"]))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let m = run_until_empty(&out, Arc::new(DeadLetter::new(dir.path()))).await;
        let sent = sink.sent.lock().unwrap().clone();
        assert_eq!(
            sent,
            vec![vec!["a\n", "b\n", "c\n", "d\n"], vec!["b\n", "d\n"]]
        );
        let labels = output_label("out");
        assert_eq!(m.records_delivered.get_or_create(&labels).get(), 4);
        assert_eq!(m.records_retried.get_or_create(&labels).get(), 2);
        let mut failed = labels.clone();
        failed.push(("class", "throttled".into()));
        assert_eq!(m.flush_failures.get_or_create(&failed).get(), 1);
    }

    #[tokio::test]
    async fn rejected_records_are_dead_lettered_and_the_rest_delivered() {
        let sink = Arc::new(ScriptedSink::default());
        sink.script
            .lock()
            .unwrap()
            .push(Box::new(|_: &Chunk| Delivery {
                delivered: [0, 2].into_iter().collect::<DeliveredSet>(),
                rejected: vec![(1, "record too large".into())],
                error: None,
            }));
        let out = output(Arc::clone(&sink), |_| {});
        out.buffer
            .append(records(&["a\n", "huge\n", "c\n"]))
            .await
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dl = Arc::new(DeadLetter::new(dir.path()));
        run_until_empty(&out, Arc::clone(&dl)).await;
        assert_eq!(sink.sent.lock().unwrap().len(), 1, "no retry needed");
        let entries = dl.list().unwrap();
        assert_eq!(entries.len(), 1);
        let e = entries[0].as_ref().unwrap();
        assert_eq!(e.meta.reason, "record too large");
        assert_eq!(DeadLetter::read_records(e).unwrap(), records(&["huge\n"]));
    }

    #[tokio::test]
    async fn exhausted_retries_dead_letter_the_undelivered_records() {
        let sink = Arc::new(ScriptedSink::default());
        for _ in 0..3 {
            sink.script
                .lock()
                .unwrap()
                .push(Box::new(|_: &Chunk| Delivery {
                    delivered: [0].into_iter().collect::<DeliveredSet>(),
                    rejected: vec![],
                    error: Some(SinkError::new(ErrorClass::AccessDenied, "not authorized")),
                }));
        }
        let out = output(Arc::clone(&sink), |b| b.retry_max_times = Some(2));
        out.buffer.append(records(&["a\n", "b\n"])).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dl = Arc::new(DeadLetter::new(dir.path()));
        let m = run_until_empty(&out, Arc::clone(&dl)).await;
        assert_eq!(
            sink.sent.lock().unwrap().len(),
            3,
            "first attempt + 2 retries"
        );
        let entries = dl.list().unwrap();
        let e = entries[0].as_ref().unwrap();
        assert_eq!(DeadLetter::read_records(e).unwrap(), records(&["b\n"]));
        assert_eq!(e.meta.attempts, 3);
        assert!(
            e.meta.reason.contains("access_denied: not authorized"),
            "{}",
            e.meta.reason
        );
        assert_eq!(
            m.records_dead_lettered
                .get_or_create(&output_label("out"))
                .get(),
            1
        );
    }

    #[tokio::test]
    async fn a_failing_chunk_does_not_hold_back_the_next_one() {
        let sink = Arc::new(ScriptedSink::default());
        sink.script.lock().unwrap().push(Box::new(|_: &Chunk| {
            Delivery::failed(SinkError::new(ErrorClass::Server, "500"))
        }));
        let out = output(Arc::clone(&sink), |b| {
            b.retry_wait = ConfigDuration::millis(300)
        });
        out.buffer.append(records(&["first\n"])).await.unwrap();
        out.buffer.append(records(&["second\n"])).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        run_until_empty(&out, Arc::new(DeadLetter::new(dir.path()))).await;
        let sent = sink.sent.lock().unwrap().clone();
        assert_eq!(
            sent,
            vec![vec!["first\n"], vec!["second\n"], vec!["first\n"]]
        );
    }

    /// At `storage.dead_letter_limit_size` nothing is dropped: a chunk whose retries are
    /// exhausted stays in the buffer (retried on its schedule), and the refusal is counted.
    #[tokio::test]
    async fn at_the_dead_letter_limit_a_chunk_that_gives_up_stays_in_the_buffer() {
        let sink = Arc::new(ScriptedSink::default());
        for _ in 0..1000 {
            sink.script.lock().unwrap().push(Box::new(|_: &Chunk| {
                Delivery::failed(SinkError::new(ErrorClass::AccessDenied, "not authorized"))
            }));
        }
        let out = output(Arc::clone(&sink), |b| b.retry_max_times = Some(0));
        out.buffer.append(records(&["a\n", "b\n"])).await.unwrap();
        let dir = tempfile::tempdir().unwrap();
        let dl = Arc::new(DeadLetter::with_limits(dir.path(), 10, 1 << 30));
        let metrics = Arc::new(Metrics::new());
        let (tx, rx) = watch::channel(FlushPhase::Running);
        let handles = spawn(Arc::clone(&out), metrics, Arc::clone(&dl), rx);
        let start = std::time::Instant::now();
        while dl.usage().refused_writes < 3 {
            assert!(start.elapsed() < Duration::from_secs(5), "never gave up");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        tx.send_replace(FlushPhase::Stopping);
        for h in handles {
            h.await.unwrap();
        }
        assert_eq!(out.buffer.stats().records, 2, "the chunk is kept");
        assert!(dl.list().unwrap().is_empty(), "nothing past the limit");
        assert!(
            sink.sent.lock().unwrap().len() >= 3,
            "retried on its schedule"
        );
    }
}
