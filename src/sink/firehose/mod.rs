//! `type = "firehose"`: delivers chunks to Amazon Kinesis Data Firehose with PutRecordBatch.
//!
//! One delivery attempt of a chunk:
//! 1. [`aggregate`] turns the pending records into Firehose records (one each, or packed, and
//!    optionally gzipped), remembering which chunk records each carries; a record that can
//!    never fit is reported as rejected and dead-lettered by the flush worker;
//! 2. [`batch`] splits them into calls of at most 500 records and 4 MiB;
//! 3. each call waits for [`pacing`], is sent, and when Firehose accepts only part of it
//!    (`FailedPutCount > 0`, which comes with HTTP 200) only the failed records are sent again,
//!    with backoff, up to `retries_on_batch_request` times; failed calls (throttling, 5xx,
//!    timeouts, connection errors) are retried the same way, while configuration and IAM
//!    errors ([`errors`]) stop the attempt at once;
//! 4. every chunk record whose Firehose record was confirmed goes into `Delivery::delivered`;
//!    the rest stay in the buffer and are retried on the chunk's schedule. Nothing is dropped.
//!
//! Firehose has no idempotency key, so a record whose call timed out after Firehose accepted it
//! is sent again: duplicates are possible exactly where a delivery was not confirmed.
//!
//! The SDK's own retries are off: this module retries, so that pacing sees every throttle and a
//! partial failure resends only the failed records.

pub mod aggregate;
pub mod batch;
pub mod call;
pub mod config;
pub mod errors;
pub mod metrics;
pub mod pacing;
pub mod request;
pub mod response;

use std::sync::Arc;
use std::time::{Duration, Instant};

use async_trait::async_trait;
use aws_config::retry::RetryConfig;
use aws_config::timeout::TimeoutConfig;
use aws_config::BehaviorVersion;
use aws_sdk_firehose::config::http::HttpResponse;
use aws_sdk_firehose::error::SdkError;
use aws_sdk_firehose::operation::put_record_batch::{PutRecordBatchError, PutRecordBatchOutput};
use aws_smithy_types::body::SdkBody;
use futures::StreamExt;

pub use config::{Compression, FirehoseConfig};

use self::aggregate::{Encoded, Encoder, Packed, MAX_RECORD_BYTES};
use self::batch::CallLimits;
use self::call::{backoff, Call, RecordAnswer, Refusal};
use self::metrics::{FirehoseMetrics, OutputMetrics};
use self::pacing::{Pacer, PacingLimits};
use super::{Delivery, ErrorClass, Sink, SinkError};
use crate::aws::credentials::{AwsContext, OutputCredentials};
use crate::aws::http::{build_http_client, HttpOptions};
use crate::buffer::Chunk;
use crate::ops::metrics::Metrics;

/// Why the sink could not be built (the relay does not start).
#[derive(Debug, thiserror::Error)]
pub enum FirehoseBuildError {
    /// No region anywhere.
    #[error("no region: set `region` or AWS_REGION")]
    NoRegion,
    /// HTTP client (CA file, proxy).
    #[error(transparent)]
    Http(#[from] crate::aws::http::HttpClientError),
    /// Credentials setup.
    #[error(transparent)]
    Credentials(#[from] crate::aws::credentials::CredentialsSetupError),
}

/// Sends chunks to one delivery stream. Shared by the output's flush workers.
pub struct FirehoseSink {
    client: aws_sdk_firehose::Client,
    stream: String,
    region: String,
    encoder: Encoder,
    limits: CallLimits,
    retries: u32,
    concurrency: usize,
    pacer: Pacer,
    metrics: OutputMetrics,
    credentials: OutputCredentials,
}

/// The outcome of sending one call's records (with its resends).
struct CallOutcome {
    confirmed: Vec<bool>,
    error: Option<SinkError>,
}

impl CallOutcome {
    fn of(call: Call, error: Option<SinkError>) -> Self {
        CallOutcome {
            confirmed: call.into_confirmed(),
            error,
        }
    }
}

impl FirehoseSink {
    /// Builds the client (HTTP, credentials, endpoint) for output `name`.
    pub async fn build(
        name: &str,
        cfg: &FirehoseConfig,
        metrics: &Arc<Metrics>,
    ) -> Result<Self, FirehoseBuildError> {
        let region = match &cfg.region {
            Some(r) => aws_config::Region::new(r.clone()),
            None => aws_config::default_provider::region::DefaultRegionChain::builder()
                .build()
                .region()
                .await
                .ok_or(FirehoseBuildError::NoRegion)?,
        };
        let http = build_http_client(&HttpOptions {
            tls_ca_file: cfg.tls_ca_file.clone(),
            proxy_url: cfg.proxy_url.clone(),
        })?;
        let ctx = AwsContext {
            output: name.to_owned(),
            region: region.clone(),
            http: http.clone(),
            metrics: Arc::clone(metrics),
        };
        let credentials = crate::aws::credentials::build(cfg.credentials.as_ref(), &ctx).await?;
        let timeout = cfg.request_timeout.0;
        let mut loader = aws_config::defaults(BehaviorVersion::latest())
            .region(region.clone())
            .http_client(http)
            .retry_config(RetryConfig::disabled())
            .timeout_config(
                TimeoutConfig::builder()
                    .operation_attempt_timeout(timeout)
                    .connect_timeout(timeout.min(Duration::from_secs(10)))
                    .build(),
            )
            .credentials_provider(credentials.provider.clone());
        if credentials.self_cached {
            loader = loader.identity_cache(aws_config::identity::IdentityCache::no_cache());
        }
        let sdk = loader.load().await;
        let mut builder = aws_sdk_firehose::config::Builder::from(&sdk);
        if let Some(url) = &cfg.endpoint_url {
            builder = builder.endpoint_url(url);
        }
        let output_metrics = FirehoseMetrics::get(metrics).for_output(name);
        let pacer = Pacer::new(
            PacingLimits {
                records: cfg.max_records_per_second,
                bytes: cfg.max_bytes_per_second.map(|b| b.0 as f64),
                requests: cfg.max_requests_per_second,
                adaptive: cfg.adaptive_pacing,
            },
            output_metrics.pacing.clone(),
        );
        tracing::info!(output = name, stream = %cfg.delivery_stream, region = %region,
            endpoint = cfg.endpoint_url.as_deref().unwrap_or("default"), credentials = %credentials.description,
            aggregation = cfg.aggregation, compression = ?cfg.compression, "firehose output configured");
        Ok(FirehoseSink {
            client: aws_sdk_firehose::Client::from_conf(builder.build()),
            stream: cfg.delivery_stream.clone(),
            region: region.to_string(),
            encoder: Encoder {
                aggregation: cfg.aggregation,
                gzip: cfg.compression == Compression::Gzip,
                max_record_bytes: MAX_RECORD_BYTES,
            },
            limits: CallLimits {
                max_records: cfg.max_records_per_call,
                max_bytes: usize::try_from(cfg.max_bytes_per_call.0).unwrap_or(usize::MAX),
            },
            retries: cfg.retries_on_batch_request,
            concurrency: cfg.max_concurrent_calls,
            pacer,
            metrics: output_metrics,
            credentials,
        })
    }

    async fn encode(&self, chunk: &Chunk) -> Encoded {
        if !self.encoder.gzip {
            return self.encoder.encode(chunk);
        }
        // Compression is CPU work: keep it off the async workers.
        let encoder = self.encoder;
        let owned = chunk.clone();
        match tokio::task::spawn_blocking(move || encoder.encode(&owned)).await {
            Ok(e) => e,
            Err(_) => self.encoder.encode(chunk),
        }
    }

    /// Sends `records` (encoded from `chunk`) as one call, resending what is refused or fails
    /// with backoff up to `retries_on_batch_request` times; reports which were confirmed.
    async fn send_call(&self, chunk: &Chunk, records: &[Packed]) -> CallOutcome {
        let mut call = Call::new(records.len());
        let mut attempt: u32 = 0;
        loop {
            self.pace(&call, records).await;
            let sent_at = tokio::time::Instant::now();
            let error = match self.put(chunk, records, call.todo()).await {
                Ok(out) => {
                    let answers = out.request_responses().iter().map(|r| RecordAnswer {
                        error_code: r.error_code(),
                        error_message: r.error_message(),
                    });
                    let sent = call.todo().len();
                    match call.tally(answers, |i| records[i].len(), &self.metrics) {
                        None => {
                            self.pacer.on_answer(sent, 0, sent_at);
                            return CallOutcome::of(call, None);
                        }
                        Some(refusal) => {
                            self.pacer.on_answer(sent, refusal.throttled, sent_at);
                            self.refused(refusal)
                        }
                    }
                }
                Err(e) => {
                    let error = self.call_failed(&e, call.todo().len(), sent_at);
                    if !errors::retry_in_flush(error.class) {
                        return CallOutcome::of(call, Some(error));
                    }
                    error
                }
            };
            attempt += 1;
            if attempt > self.retries {
                return CallOutcome::of(call, Some(error));
            }
            tracing::debug!(stream = %self.stream, attempt, pending = call.todo().len(), error = %error, "resending within the flush");
            self.pacer.backoff(backoff(attempt)).await;
        }
    }

    /// Waits until pacing lets the next attempt of `call` go.
    async fn pace(&self, call: &Call, records: &[Packed]) {
        let bytes: usize = call.todo().iter().map(|&i| records[i].len()).sum();
        let waited = self.pacer.acquire(call.todo().len(), bytes).await;
        if !waited.is_zero() {
            self.metrics.pacing_wait.inc_by(waited.as_secs_f64());
        }
    }

    /// One PutRecordBatch request of the records `todo`.
    ///
    /// The body is written here in one pass and swapped in before signing (see [`request`]);
    /// the SDK serializes an empty record list that is thrown away. Successful responses are
    /// read by [`response`], without the record ids.
    async fn put(
        &self,
        chunk: &Chunk,
        records: &[Packed],
        todo: &[usize],
    ) -> Result<PutRecordBatchOutput, SdkError<PutRecordBatchError, HttpResponse>> {
        let body = request::put_record_batch_body(
            &self.stream,
            todo.iter().map(|&i| records[i].bytes(chunk)),
        );
        let started = Instant::now();
        let result = self
            .client
            .put_record_batch()
            .delivery_stream_name(&self.stream)
            .set_records(Some(Vec::new()))
            .customize()
            .mutate_request(move |req| {
                req.headers_mut()
                    .insert("content-length", body.len().to_string());
                *req.body_mut() = SdkBody::from(body.clone());
            })
            .interceptor(response::FastResponses)
            .send()
            .await;
        self.metrics
            .call_duration
            .observe(started.elapsed().as_secs_f64());
        result
    }

    /// The error of an answer that refused some records (pacing has seen the answer).
    fn refused(&self, refusal: Refusal) -> SinkError {
        SinkError::new(
            refusal.class,
            format!(
                "PutRecordBatch to stream `{}` ({}): {} of {} records failed, first: {}",
                self.stream, self.region, refusal.failed, refusal.sent, refusal.detail
            ),
        )
    }

    /// Classifies and counts a failed call of `records` records; throttling is a signal for
    /// pacing, and rejected credentials ask for a refresh at once.
    fn call_failed(
        &self,
        e: &SdkError<PutRecordBatchError, HttpResponse>,
        records: usize,
        sent_at: tokio::time::Instant,
    ) -> SinkError {
        let class = errors::classify(e);
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
                "PutRecordBatch to stream `{}` ({}): {}",
                self.stream,
                self.region,
                errors::describe(e)
            ),
        )
    }
}

#[async_trait]
impl Sink for FirehoseSink {
    async fn deliver(&self, chunk: &Chunk) -> Delivery {
        let encoded = self.encode(chunk).await;
        let mut delivery = Delivery {
            rejected: encoded.rejected.clone(),
            ..Default::default()
        };
        let calls = self.limits.split(encoded.records.iter().map(Packed::len));
        // Up to `max_concurrent_calls` calls of this chunk in flight; each reports which of its
        // records were confirmed, and whatever failed stays pending for the chunk's next attempt.
        let records = &encoded.records;
        let mut outcomes = futures::stream::iter(calls)
            .map(|range| async move {
                let outcome = self.send_call(chunk, &records[range.clone()]).await;
                (range, outcome)
            })
            .buffer_unordered(self.concurrency);
        while let Some((range, outcome)) = outcomes.next().await {
            for (k, ok) in outcome.confirmed.iter().enumerate() {
                if *ok {
                    for &i in encoded.chunk_indices(range.start + k) {
                        delivery.delivered.insert(i);
                    }
                }
            }
            if let Some(e) = outcome.error {
                delivery.error.get_or_insert(e);
            }
        }
        delivery
    }

    fn describe(&self) -> String {
        format!("firehose stream={} region={}", self.stream, self.region)
    }

    fn pacing_status(&self) -> Option<pacing::PacingStatus> {
        self.pacer.status()
    }
}
