//! One delivery attempt of a chunk and the bookkeeping that follows: records the sink
//! delivered are counted, records it rejected are dead-lettered, and the chunk is committed
//! (all handled), released with its delivered set and next retry time, or, once its retries are
//! exhausted, dead-lettered as a whole. Nothing leaves the buffer before it is delivered or
//! durably in the dead-letter directory.

use std::sync::Arc;

use super::deadletter::NewEntry;
use super::retry::RetryDecision;
use super::Worker;
use crate::buffer::{now_ms, Chunk, DeliveredSet, Records};
use crate::sink::{Delivery, ErrorClass, SinkError};

impl Worker {
    /// One delivery attempt of `chunk`, and the bookkeeping that follows.
    pub(super) async fn flush(&self, chunk: Chunk) {
        let m = &self.metrics;
        m.flush_attempts.get_or_create(&self.labels).inc();
        if chunk.retry.failures > 0 {
            m.records_retried
                .get_or_create(&self.labels)
                .inc_by(chunk.pending_count() as u64);
        }
        let outcome = self.output.sink.deliver(&chunk).await;
        let (delivered, error) = self.tally(&chunk, outcome).await;
        if delivered.count() >= chunk.records.len() {
            self.succeeded(&chunk).await;
        } else {
            self.failed(&chunk, delivered, error).await;
        }
    }

    /// What an attempt leaves: the records handled so far (delivered before or now, and those
    /// the sink rejected once they are dead-lettered) and the error, if any. Newly delivered
    /// records are counted.
    async fn tally(&self, chunk: &Chunk, outcome: Delivery) -> (DeliveredSet, Option<SinkError>) {
        let mut delivered = chunk.delivered.clone();
        let newly = outcome
            .delivered
            .iter()
            .filter(|&i| i < chunk.records.len() && !chunk.delivered.contains(i))
            .count();
        delivered.union_with(&outcome.delivered);
        self.metrics
            .records_delivered
            .get_or_create(&self.labels)
            .inc_by(newly as u64);

        let mut error = outcome.error;
        if !outcome.rejected.is_empty() {
            match self.dead_letter_rejected(chunk, &outcome.rejected).await {
                Ok(()) => {
                    for (i, _) in &outcome.rejected {
                        delivered.insert(*i);
                    }
                }
                Err(e) => {
                    error.get_or_insert(SinkError::new(
                        ErrorClass::Io,
                        format!("cannot dead-letter rejected records: {e}"),
                    ));
                }
            }
        }
        (delivered, error)
    }

    /// Every record is handled: the chunk leaves the buffer.
    async fn succeeded(&self, chunk: &Chunk) {
        if let Err(e) = self.buffer().commit(chunk.id).await {
            tracing::error!(output = %self.output.name, chunk = %chunk.id, error = %e,
                "delivered chunk could not be removed from the buffer; it may be sent again");
        }
        let m = &self.metrics;
        m.flush_successes.get_or_create(&self.labels).inc();
        m.last_delivery_timestamp
            .get_or_create(&self.labels)
            .set(i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX));
    }

    /// Records are left: the failure is counted, and the chunk goes back to the queue with its
    /// next retry time, or is dead-lettered once its retries are exhausted.
    async fn failed(&self, chunk: &Chunk, delivered: DeliveredSet, error: Option<SinkError>) {
        let error = error.unwrap_or_else(|| {
            SinkError::new(
                ErrorClass::Other,
                format!(
                    "sink left {} records neither delivered nor failed",
                    chunk.records.len() - delivered.count()
                ),
            )
        });
        let mut labels = self.labels.clone();
        labels.push(("class", error.class.as_str().to_owned()));
        self.metrics.flush_failures.get_or_create(&labels).inc();

        let pending = chunk.records.len() - delivered.count();
        match self.retry.on_failure(chunk.retry, now_ms()) {
            RetryDecision::Retry(next) => {
                if let Some(suppressed) = self.failure_log.allow() {
                    let wait_s = next.next_attempt_ms.saturating_sub(now_ms()) as f64 / 1000.0;
                    if error.class.needs_operator() {
                        tracing::error!(output = %self.output.name, sink = %self.output.sink.describe(),
                            chunk = %chunk.id, failures = next.failures, pending, retry_in_s = wait_s,
                            suppressed, error = %error, "delivery failed; check the output's configuration and IAM permissions");
                    } else {
                        tracing::warn!(output = %self.output.name, chunk = %chunk.id,
                            failures = next.failures, pending, retry_in_s = wait_s, suppressed,
                            error = %error, "delivery failed; will retry");
                    }
                }
                if let Err(e) = self.buffer().release(chunk.id, delivered, next).await {
                    tracing::error!(output = %self.output.name, chunk = %chunk.id, error = %e,
                        "cannot return the chunk to the queue");
                }
            }
            RetryDecision::GiveUp { failures } => {
                self.give_up(chunk, delivered, failures, &error).await;
            }
        }
    }

    async fn give_up(
        &self,
        chunk: &Chunk,
        delivered: DeliveredSet,
        failures: u32,
        error: &SinkError,
    ) {
        let mut rest = Records::new();
        for i in (0..chunk.records.len()).filter(|&i| !delivered.contains(i)) {
            if let Some(r) = chunk.records.get(i) {
                let _ = rest.push(r);
            }
        }
        let reason =
            format!("retries exhausted after {failures} failed attempts; last error: {error}");
        let count = rest.len() as u64;
        let dl = Arc::clone(&self.dead_letter);
        let name = self.output.name.clone();
        let created = chunk.created_ms;
        let reason_for_entry = reason.clone();
        let key = chunk.key.clone();
        let stream = self.output.sink.destination_of(chunk);
        let written = tokio::task::spawn_blocking(move || {
            let entry = NewEntry {
                output: &name,
                reason: &reason_for_entry,
                tag: key.tag.as_deref(),
                stream: stream.as_deref(),
                attempts: failures,
                created_ms: Some(created),
                records: &rest,
            };
            dl.write_in_slot(entry, key.timekey)
        })
        .await
        .map_err(std::io::Error::other)
        .and_then(|r| r);
        match written {
            Ok(path) => {
                tracing::error!(output = %self.output.name, chunk = %chunk.id, records = count,
                    path = %path.display(), %reason, "chunk dead-lettered");
                self.metrics
                    .records_dead_lettered
                    .get_or_create(&self.labels)
                    .inc_by(count);
                if let Err(e) = self.buffer().commit(chunk.id).await {
                    tracing::error!(output = %self.output.name, chunk = %chunk.id, error = %e,
                        "dead-lettered chunk could not be removed from the buffer");
                }
            }
            Err(e) => {
                // Never drop: keep the chunk and try again later.
                tracing::error!(output = %self.output.name, chunk = %chunk.id, error = %e,
                    "cannot write the dead-letter file; keeping the chunk in the buffer");
                let retry = crate::buffer::RetryState {
                    failures,
                    first_failure_ms: chunk.retry.first_failure_ms,
                    next_attempt_ms: now_ms() + self.retry.wait(failures).as_millis() as u64,
                };
                if let Err(e) = self.buffer().release(chunk.id, delivered, retry).await {
                    tracing::error!(output = %self.output.name, chunk = %chunk.id, error = %e,
                        "cannot return the chunk to the queue");
                }
            }
        }
    }

    async fn dead_letter_rejected(
        &self,
        chunk: &Chunk,
        rejected: &[(usize, String)],
    ) -> std::io::Result<()> {
        if let Some((_, first_reason)) = rejected.first() {
            tracing::error!(output = %self.output.name, chunk = %chunk.id, records = rejected.len(),
                reason = %first_reason,
                "records rejected by the destination; writing them to the dead-letter directory");
        }
        let dl = Arc::clone(&self.dead_letter);
        let name = self.output.name.clone();
        let (created, records) = (chunk.created_ms, chunk.records.clone());
        let rejected = rejected.to_vec();
        let key = chunk.key.clone();
        let stream = self.output.sink.destination_of(chunk);
        let count = tokio::task::spawn_blocking(move || {
            let items = rejected
                .iter()
                .filter_map(|(i, reason)| Some((reason.as_str(), records.get(*i)?)));
            dl.write_by_reason(&name, (&key, stream.as_deref()), Some(created), items)
        })
        .await
        .map_err(std::io::Error::other)??;
        self.metrics
            .records_dead_lettered
            .get_or_create(&self.labels)
            .inc_by(count);
        Ok(())
    }
}
