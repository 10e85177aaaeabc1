//! `firehose-relay drain`: delivers everything the buffers of a data directory hold, with the
//! outputs of the config and no sources, then exits. Made for the volume a pod leaves behind
//! when a StatefulSet scales down (`conf/kubernetes/drain-job.yaml`), and for any stopped
//! relay whose backlog should go out before its disk is reused.
//!
//! * When every buffer is already empty it returns at once, before building any sink (so no
//!   AWS call is made).
//! * Every queued chunk is tried at once: retry schedules computed before the relay stopped are
//!   dropped (failure counts are kept, so `retry_timeout` and `retry_max_times` still lead to
//!   the dead-letter directory); failed chunks are retried on their new schedule, with no pause
//!   between chunks.
//! * Progress is logged every few seconds (records and bytes left, rate, time to go).
//! * It ends when every buffer is empty, or at the timeout or SIGTERM/SIGINT: then workers
//!   finish the chunk in hand (at most [`STOP_GRACE`]) and what is left stays in the buffer for
//!   the next drain or run. Nothing is lost either way.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::app::{build_outputs, open_buffers, wait_for_signal};
use crate::buffer::{Buffer, BufferStats, Enqueue};
use crate::config::Config;
use crate::flush::deadletter::DeadLetter;
use crate::flush::{self, FlushPhase};
use crate::ops::metrics::{output_label, Metrics};
use crate::pipeline::Output;

/// How long workers may finish the chunk in hand once the drain stops early.
pub const STOP_GRACE: Duration = Duration::from_secs(30);

/// How often the drain checks whether the buffers are empty.
const POLL: Duration = Duration::from_millis(200);

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every buffer was empty from the start.
    NothingToDrain,
    /// Everything was delivered (or dead-lettered); every buffer is empty.
    Drained,
    /// The timeout passed first; the rest is still in the buffer.
    TimedOut,
    /// SIGTERM or SIGINT came first; the rest is still in the buffer.
    Interrupted,
}

/// One output after the drain.
#[derive(Debug, Clone)]
pub struct OutputReport {
    /// Output name.
    pub name: String,
    /// Records delivered by this drain.
    pub delivered: u64,
    /// Records written to the dead-letter directory by this drain.
    pub dead_lettered: u64,
    /// What is still in its buffer.
    pub left: BufferStats,
}

/// What a drain did.
#[derive(Debug, Clone)]
pub struct Report {
    /// How it ended.
    pub outcome: Outcome,
    /// Per output, in matching order.
    pub outputs: Vec<OutputReport>,
    /// How long it took.
    pub elapsed: Duration,
}

fn is_empty(s: &BufferStats) -> bool {
    s.staged_chunks + s.queued_chunks + s.in_flight_chunks == 0 && s.records == 0
}

/// Drains the buffers of `config.data_dir`; `timeout` bounds the whole drain.
pub async fn drain(config: &Config, timeout: Option<Duration>) -> anyhow::Result<Report> {
    let started = Instant::now();
    let metrics = Arc::new(Metrics::new());
    let dead_letter = Arc::new(DeadLetter::with_limits(
        &config.data_dir,
        config.storage.dead_letter_limit_size.0,
        config.storage.quarantine_limit_size.0,
    ));
    let buffers = open_buffers(config, &metrics, &dead_letter)
        .await
        .context("cannot open the buffers (is a relay still running on this data_dir?)")?;
    if buffers.iter().all(|(_, b)| is_empty(&b.stats())) {
        let outputs = buffers
            .iter()
            .map(|(name, b)| report_of(name, b.as_ref(), &metrics))
            .collect();
        return Ok(Report {
            outcome: Outcome::NothingToDrain,
            outputs,
            elapsed: started.elapsed(),
        });
    }
    let outputs = build_outputs(config, &metrics, buffers).await?;
    let workers = Workers::start(&outputs, &metrics, &dead_letter).await?;
    let outcome = wait_until_empty(&outputs, timeout).await;
    workers.stop(outcome).await;
    let reports = outputs
        .iter()
        .map(|o| report_of(&o.name, o.buffer.as_ref(), &metrics))
        .collect();
    Ok(Report {
        outcome,
        outputs: reports,
        elapsed: started.elapsed(),
    })
}

/// The flush workers and progress logs of a drain.
struct Workers {
    phase: watch::Sender<FlushPhase>,
    workers: Vec<JoinHandle<()>>,
    progress: Vec<JoinHandle<()>>,
}

impl Workers {
    /// Makes every chunk of `outputs` due now (staged ones queued) and starts their flush
    /// workers and progress logs.
    async fn start(
        outputs: &[Arc<Output>],
        metrics: &Arc<Metrics>,
        dead_letter: &Arc<DeadLetter>,
    ) -> anyhow::Result<Workers> {
        let (phase, phase_rx) = watch::channel(FlushPhase::Emptying);
        let mut workers = Vec::new();
        let mut progress = Vec::new();
        for output in outputs {
            output.buffer.retry_all_now();
            output
                .buffer
                .enqueue_staged(Enqueue::All)
                .await
                .with_context(|| format!("output `{}`: cannot queue staged chunks", output.name))?;
            progress.extend(flush::progress::spawn(
                Arc::clone(output),
                "drain",
                flush::progress::EVERY,
            ));
            workers.extend(flush::spawn(
                Arc::clone(output),
                Arc::clone(metrics),
                Arc::clone(dead_letter),
                phase_rx.clone(),
            ));
        }
        Ok(Workers {
            phase,
            workers,
            progress,
        })
    }

    /// Lets the workers finish (all of it when drained, else the chunk in hand, at most
    /// [`STOP_GRACE`]) and stops the progress logs.
    async fn stop(mut self, outcome: Outcome) {
        self.phase.send_replace(match outcome {
            Outcome::Drained => FlushPhase::Draining,
            _ => FlushPhase::Stopping,
        });
        let all = futures::future::join_all(self.workers.iter_mut());
        if tokio::time::timeout(STOP_GRACE, all).await.is_err() {
            tracing::warn!(
                grace_s = STOP_GRACE.as_secs(),
                "flush workers did not finish their chunk in time; stopping them (those records \
                 stay in the buffer and may be sent again)"
            );
            self.workers.iter().for_each(|w| w.abort());
        }
        self.progress.iter().for_each(|p| p.abort());
    }
}

/// Waits until every buffer of `outputs` is empty, the timeout passes or a signal comes.
async fn wait_until_empty(outputs: &[Arc<Output>], timeout: Option<Duration>) -> Outcome {
    let deadline = timeout.map(|t| tokio::time::Instant::now() + t);
    let signal = async {
        if let Err(e) = wait_for_signal().await {
            tracing::warn!(error = %e, "signals cannot stop this drain; use --timeout");
            std::future::pending::<()>().await;
        }
    };
    tokio::pin!(signal);
    loop {
        if outputs.iter().all(|o| is_empty(&o.buffer.stats())) {
            return Outcome::Drained;
        }
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = sleep_until(deadline) => return Outcome::TimedOut,
            _ = &mut signal => return Outcome::Interrupted,
        }
    }
}

/// Sleeps until `deadline`, or forever without one.
async fn sleep_until(deadline: Option<tokio::time::Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

fn report_of(name: &str, buffer: &dyn Buffer, metrics: &Metrics) -> OutputReport {
    let labels = output_label(name);
    OutputReport {
        name: name.to_owned(),
        delivered: metrics.records_delivered.get_or_create(&labels).get(),
        dead_lettered: metrics.records_dead_lettered.get_or_create(&labels).get(),
        left: buffer.stats(),
    }
}

impl Report {
    /// True when nothing is left in any buffer.
    pub fn is_empty(&self) -> bool {
        self.outputs.iter().all(|o| is_empty(&o.left))
    }

    /// Lines for the operator: per output, what was delivered and what is left.
    pub fn lines(&self) -> Vec<String> {
        self.outputs
            .iter()
            .map(|o| {
                let mut line = format!("output `{}`: {} records delivered", o.name, o.delivered);
                if o.dead_lettered > 0 {
                    line.push_str(&format!(
                        ", {} records dead-lettered (see `firehose-relay dead-letter list`)",
                        o.dead_lettered
                    ));
                }
                if is_empty(&o.left) {
                    line.push_str(", buffer empty");
                } else {
                    let chunks =
                        o.left.staged_chunks + o.left.queued_chunks + o.left.in_flight_chunks;
                    line.push_str(&format!(
                        ", left: {} records, {} bytes in {chunks} chunks ({} failed at least once)",
                        o.left.records, o.left.bytes, o.left.retrying_chunks
                    ));
                }
                line
            })
            .collect()
    }
}
