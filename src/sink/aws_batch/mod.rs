//! The AWS batch-put layer: what the Firehose output (`PutRecordBatch`) and the Kinesis Data
//! Streams outputs (`PutRecords`) share. Each service is a small face ([`BatchPut`]): how a
//! chunk's records become the service's records, what one call looks like on the wire, its
//! limits, how its answer lists per-record results, and which of its error codes mean what.
//! Everything else is here, once:
//!
//! 1. the face packs the pending records of a chunk ([`BatchPut::encode`]), remembering which
//!    chunk records each service record carries; a record that can never fit is reported as
//!    rejected and dead-lettered by the flush worker;
//! 2. [`batch`] splits them into calls within the service's record and byte limits;
//! 3. each call waits for [`pacing`], is sent, and when the service accepts only part of it
//!    (a failed count above zero, which comes with HTTP 200) only the failed records are sent
//!    again, up to `retries_on_batch_request` times, each after its own backoff and in a later
//!    call of the chunk while the rest of it keeps going ([`call`]: records back off, not the
//!    flush worker); records of failed calls (throttling, 5xx, timeouts, connection errors)
//!    are resent the same way, calls failing in a row back off the worker, and configuration
//!    and IAM errors ([`errors`]) stop the attempt at once;
//! 4. every chunk record whose service record was confirmed goes into `Delivery::delivered`
//!    (made durable by the flush worker, so a crash never resends it); the rest stay in the
//!    buffer and are retried on the chunk's schedule. Nothing is dropped.
//!
//! Neither service has an idempotency key, so a record whose call timed out after the service
//! accepted it is sent again: duplicates are possible exactly where a delivery was not
//! confirmed.
//!
//! The SDK's own retries are off ([`connect`]): this layer retries, so that pacing sees every
//! throttle and a partial failure resends only the failed records. Metrics ([`metrics`]) are
//! the same families for every service, under the service's prefix.

pub mod batch;
pub mod call;
#[cfg(test)]
pub mod capture;
pub mod connect;
pub mod errors;
pub mod metrics;
pub mod pacing;
pub mod prebuilt;
pub mod settings;
#[cfg(test)]
mod tests;

use std::ops::Range;
use std::time::Instant;

use async_trait::async_trait;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use futures::stream::FuturesUnordered;
use futures::StreamExt;

use self::batch::CallLimits;
use self::call::{ChunkCalls, Next, RecordAnswer, Refusal};
use self::metrics::OutputMetrics;
use self::pacing::{Pacer, PacingStatus};
use super::{Delivery, ErrorClass, Sink, SinkError};
use crate::aws::credentials::OutputCredentials;
use crate::buffer::Chunk;

/// Where the bytes of one service record are.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Data {
    /// Records that are adjacent in the chunk and sent as they are: a byte range of the chunk's
    /// record data. The common case (one record each, or a packed run with nothing delivered in
    /// between) costs no copy and no allocation.
    Span(Range<usize>),
    /// Bytes made for this record: compressed, or packed from records that are not adjacent
    /// (a previous attempt delivered some in between).
    Owned(Vec<u8>),
}

impl Data {
    /// Size in bytes.
    pub fn len(&self) -> usize {
        match self {
            Data::Span(r) => r.len(),
            Data::Owned(d) => d.len(),
        }
    }

    /// True when there are no bytes.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl Data {
    /// The bytes. `chunk` must be the chunk the record was packed from.
    pub fn bytes<'a>(&'a self, chunk: &'a Chunk) -> &'a [u8] {
        match self {
            Data::Span(r) => chunk.records.as_bytes().get(r.clone()).unwrap_or(&[]),
            Data::Owned(d) => d,
        }
    }
}

/// Gzips one service record on its own (`compression = "gzip"`), fast level: a consumer can
/// decompress any record without its neighbours.
pub fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    use std::io::Write;
    let mut enc = flate2::write::GzEncoder::new(
        Vec::with_capacity(data.len() / 4 + 64),
        flate2::Compression::fast(),
    );
    enc.write_all(data)?;
    enc.finish()
}

/// A chunk's records packed for one service: service records in chunk order, each carrying
/// one or more chunk records.
pub trait PackedChunk: Send + Sync {
    /// How many service records there are.
    fn len(&self) -> usize;
    /// True when there are none.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// The bytes service record `i` counts against the per-call limit (and the bytes/s
    /// pacing), as the service meters them.
    fn size(&self, i: usize) -> usize;
    /// The chunk indices service record `i` carries.
    fn chunk_indices(&self, i: usize) -> &[usize];
    /// Chunk records that can never be sent (too large…), with the reason.
    fn rejected(&self) -> &[(usize, String)];
}

/// One service's face of the layer.
#[async_trait]
pub trait BatchPut: Send + Sync + 'static {
    /// The packed records of one chunk.
    type Packed: PackedChunk;
    /// The SDK's output of a successful call.
    type Output: Send;
    /// The SDK's error of the call.
    type Error: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static;

    /// The call's name, for logs and errors (`PutRecordBatch`).
    const OPERATION: &'static str;

    /// Packs the records of `chunk` that are not delivered yet.
    async fn encode(&self, chunk: &Chunk) -> Self::Packed;

    /// Sends service records `todo` (indices into `packed`, in order) in one call.
    async fn put(
        &self,
        chunk: &Chunk,
        packed: &Self::Packed,
        todo: &[usize],
    ) -> Result<Self::Output, SdkError<Self::Error, HttpResponse>>;

    /// The per-record results of a successful call, in the order of the records sent.
    fn answers(output: &Self::Output) -> impl Iterator<Item = RecordAnswer<'_>>;

    /// Class of an error code of this service (in an error answer or a per-record result);
    /// `None` when unknown. Default: the codes shared by the services ([`errors`]).
    fn class_of_code(code: &str) -> Option<ErrorClass> {
        errors::class_of_code(code)
    }

    /// The destination, for logs and errors: ``stream `logs` (eu-west-1)``.
    fn destination(&self) -> String;

    /// The destination of `chunk` (its stream name resolved from the chunk's key), for logs,
    /// errors and dead-letter entries. Default: [`BatchPut::destination`].
    fn destination_of(&self, _chunk: &Chunk) -> String {
        self.destination()
    }

    /// The resolved stream name of `chunk`, when it depends on the chunk.
    fn resolved_stream(&self, _chunk: &Chunk) -> Option<String> {
        None
    }

    /// `records` of `chunk` were delivered (per-stream counts). Default: nothing.
    fn delivered(&self, _chunk: &Chunk, _records: usize) {}

    /// Records delivered per resolved stream, for `/status`.
    fn streams(&self) -> Vec<crate::sink::stream_name::StreamStatus> {
        Vec::new()
    }

    /// A short description for logs (`firehose stream=logs region=eu-west-1`).
    fn describe(&self) -> String;
}

/// How an output sends its calls: the settings every batch-put output has.
#[derive(Debug, Clone, Copy)]
pub struct Sending {
    /// Per-call limits (already within the service's).
    pub limits: CallLimits,
    /// Resends within one flush.
    pub retries: u32,
    /// Calls of one chunk in flight at once.
    pub concurrency: usize,
}

/// Sends chunks through one service face. Shared by the output's flush workers.
pub struct BatchPutSink<S: BatchPut> {
    service: S,
    sending: Sending,
    pacer: Pacer,
    metrics: OutputMetrics,
    credentials: OutputCredentials,
}

/// The outcome of one call.
enum Attempt {
    /// A 200 answer; `refused` lists what it refused, with the error describing it.
    Answered {
        todo: Vec<usize>,
        refused: Option<(Vec<usize>, SinkError)>,
    },
    /// The call failed as a whole; `retry` when its class is retried within the flush.
    Failed {
        todo: Vec<usize>,
        error: SinkError,
        retry: bool,
    },
}

impl<S: BatchPut> BatchPutSink<S> {
    /// Reports the outcome of a call to the chunk's bookkeeping.
    fn settle(&self, chunk: &Chunk, calls: &mut ChunkCalls, attempt: Attempt) {
        let now = tokio::time::Instant::now();
        let error = match attempt {
            Attempt::Answered { todo, refused } => match refused {
                None => {
                    calls.answered(&todo, None, now);
                    return;
                }
                Some((failed, error)) => {
                    calls.answered(&todo, Some((&failed, error.clone())), now);
                    error
                }
            },
            Attempt::Failed { todo, error, retry } => {
                calls.failed(&todo, error.clone(), retry, now);
                error
            }
        };
        tracing::debug!(destination = %self.service.destination_of(chunk), waiting = calls.waiting(), in_flight = calls.in_flight(), error = %error, "resending within the flush");
    }

    /// A sink of `service`; `pacer` and `metrics` are the output's.
    pub fn new(
        service: S,
        sending: Sending,
        pacer: Pacer,
        metrics: OutputMetrics,
        credentials: OutputCredentials,
    ) -> Self {
        BatchPutSink {
            service,
            sending,
            pacer,
            metrics,
            credentials,
        }
    }

    /// The service face.
    pub fn service(&self) -> &S {
        &self.service
    }

    /// Sends the records `todo` of `packed` in one call (after pacing lets it go) and sorts
    /// the answer.
    async fn attempt(&self, chunk: &Chunk, packed: &S::Packed, todo: Vec<usize>) -> Attempt {
        self.pace(packed, &todo).await;
        let sent_at = tokio::time::Instant::now();
        let started = Instant::now();
        let result = self.service.put(chunk, packed, &todo).await;
        self.metrics
            .call_duration
            .observe(started.elapsed().as_secs_f64());
        match result {
            Ok(out) => {
                let size_of = |i: usize| packed.size(i);
                let class_of = |code: &str| S::class_of_code(code).unwrap_or(ErrorClass::Server);
                let refusal =
                    call::tally(&todo, S::answers(&out), size_of, class_of, &self.metrics);
                let throttled = refusal.as_ref().map_or(0, |r| r.throttled);
                self.pacer.on_answer(todo.len(), throttled, sent_at);
                let refused = refusal.map(|r| {
                    let error = self.refused(chunk, &r);
                    (r.failed, error)
                });
                Attempt::Answered { todo, refused }
            }
            Err(e) => {
                let error = self.call_failed(chunk, &e, todo.len(), sent_at);
                let retry = errors::retry_in_flush(error.class);
                Attempt::Failed { todo, error, retry }
            }
        }
    }

    /// Waits until pacing lets a call of the records `todo` go.
    async fn pace(&self, packed: &S::Packed, todo: &[usize]) {
        let bytes: usize = todo.iter().map(|&i| packed.size(i)).sum();
        let waited = self.pacer.acquire(todo.len(), bytes).await;
        if !waited.is_zero() {
            self.metrics.pacing_wait.inc_by(waited.as_secs_f64());
        }
    }

    /// The error of an answer that refused some records (pacing has seen the answer).
    fn refused(&self, chunk: &Chunk, refusal: &Refusal) -> SinkError {
        SinkError::new(
            refusal.class,
            format!(
                "{} to {}: {} of {} records failed, first: {}",
                S::OPERATION,
                self.service.destination_of(chunk),
                refusal.failed.len(),
                refusal.sent,
                refusal.detail
            ),
        )
    }

    /// Classifies and counts a failed call of `records` records; throttling is a signal for
    /// pacing, and rejected credentials ask for a refresh at once.
    fn call_failed(
        &self,
        chunk: &Chunk,
        e: &SdkError<S::Error, HttpResponse>,
        records: usize,
        sent_at: tokio::time::Instant,
    ) -> SinkError {
        let class = errors::classify_with(e, S::class_of_code);
        self.metrics.call_errors.get(class).inc();
        match class {
            ErrorClass::Throttled => {
                self.metrics.throttles.inc();
                self.pacer.on_call_throttled(records, sent_at);
            }
            ErrorClass::Credentials => {
                if let Some(r) = &self.credentials.refresher {
                    r.request_refresh();
                }
            }
            _ => {}
        }
        SinkError::new(
            class,
            format!(
                "{} to {}: {}",
                S::OPERATION,
                self.service.destination_of(chunk),
                errors::describe(e)
            ),
        )
    }
}

#[async_trait]
impl<S: BatchPut> Sink for BatchPutSink<S> {
    async fn deliver(&self, chunk: &Chunk) -> Delivery {
        let packed = self.service.encode(chunk).await;
        let mut delivery = Delivery {
            rejected: packed.rejected().to_vec(),
            ..Default::default()
        };
        let sizes = (0..packed.len()).map(|i| packed.size(i)).collect();
        let mut calls = ChunkCalls::new(sizes, self.sending.limits, self.sending.retries);
        // Up to `max_concurrent_calls` calls of this chunk in flight. Refused records and the
        // records of failed calls wait for their own due time and ride in a later call, while
        // the rest of the chunk keeps going (`call`'s module docs); whatever is still not
        // confirmed at the end stays pending for the chunk's next attempt.
        let packed = &packed;
        let mut in_flight = FuturesUnordered::new();
        let concurrency = self.sending.concurrency.max(1);
        loop {
            let now = tokio::time::Instant::now();
            let next = if in_flight.len() >= concurrency {
                Next::Answer
            } else {
                calls.next(now)
            };
            match next {
                Next::Send(todo) => in_flight.push(self.attempt(chunk, packed, todo)),
                Next::Done => break,
                Next::Answer => match in_flight.next().await {
                    Some(attempt) => self.settle(chunk, &mut calls, attempt),
                    None => break,
                },
                Next::Until(t) => {
                    let wait = t.saturating_duration_since(now);
                    tokio::select! {
                        Some(attempt) = in_flight.next(), if !in_flight.is_empty() => {
                            self.settle(chunk, &mut calls, attempt);
                        }
                        recovered = self.pacer.backoff(wait) => {
                            if recovered {
                                calls.recovered(tokio::time::Instant::now());
                            }
                        }
                    }
                }
            }
        }
        let (confirmed, error) = calls.finish();
        for (k, ok) in confirmed.iter().enumerate() {
            if *ok {
                for &i in packed.chunk_indices(k) {
                    delivery.delivered.insert(i);
                }
            }
        }
        delivery.error = error;
        self.service.delivered(chunk, delivery.delivered.count());
        delivery
    }

    fn describe(&self) -> String {
        self.service.describe()
    }

    fn destination_of(&self, chunk: &Chunk) -> Option<String> {
        self.service.resolved_stream(chunk)
    }

    fn streams(&self) -> Vec<crate::sink::stream_name::StreamStatus> {
        self.service.streams()
    }

    fn pacing_status(&self) -> Option<PacingStatus> {
        self.pacer.status()
    }
}
