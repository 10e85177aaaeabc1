//! How a batch-put output's hand-written request body replaces the SDK's serialization.
//!
//! Each output writes its call's JSON document in one pass from the records' bytes
//! (`firehose::request`, `kinesis_streams::request`) and makes the call through the SDK with an
//! empty record list. [`PrebuiltBody`], an interceptor registered once on the output's SDK
//! client, swaps the document in *before* signing, so SigV4 signs exactly these bytes and
//! everything else (endpoint resolution, credentials, timeouts, response parsing, error
//! classification) stays the SDK's. The body reaches the interceptor through a task-local that
//! the call is made in ([`with_body`]).
//!
//! Why not a per-call `customize().mutate_request(…)`, as before: customizing a call makes the
//! SDK build a config-override plugin for it (a config layer, runtime components merged with
//! the client's, one more interceptor list) on every call. Measured with `cargo bench --bench
//! firehose_call` (the CPU of the thread that runs the sink and its allocations, per call); the
//! numbers are in `benches/README.md`, section "calls (2026-12-03, fourth sitting)".

use std::future::Future;

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextMut;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::orchestrator::Metadata;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::body::SdkBody;
use aws_smithy_types::config_bag::ConfigBag;
use bytes::Bytes;

tokio::task_local! {
    /// The body of the batch-put call being made in this task ([`with_body`]).
    static BODY: Bytes;
}

/// Runs `call` (one call of `PrebuiltBody`'s operation) with `body` as its request body.
pub async fn with_body<F: Future>(body: Bytes, call: F) -> F::Output {
    BODY.scope(body, call).await
}

/// Whether the call being made is `operation` (for interceptors registered on a client).
pub fn is_operation(cfg: &ConfigBag, operation: &str) -> bool {
    cfg.load::<Metadata>()
        .is_some_and(|m| m.name() == operation)
}

/// Interceptor of an output's SDK client: replaces the request body the SDK serialized for
/// `operation` (an empty record list) with the one [`with_body`] gives, before signing. A call
/// of `operation` made without [`with_body`] fails instead of sending an empty record list;
/// other operations are left alone.
#[derive(Debug)]
pub struct PrebuiltBody {
    /// `PutRecordBatch`, `PutRecords`.
    pub operation: &'static str,
}

impl Intercept for PrebuiltBody {
    fn name(&self) -> &'static str {
        "PrebuiltBody"
    }

    fn modify_before_signing(
        &self,
        context: &mut BeforeTransmitInterceptorContextMut<'_>,
        _runtime_components: &RuntimeComponents,
        cfg: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        if !is_operation(cfg, self.operation) {
            return Ok(());
        }
        let body = BODY.try_with(Bytes::clone).map_err(|_| {
            format!(
                "{} called without its prebuilt body (prebuilt::with_body)",
                self.operation
            )
        })?;
        let req = context.request_mut();
        req.headers_mut()
            .insert("content-length", body.len().to_string());
        *req.body_mut() = SdkBody::from(body);
        Ok(())
    }
}
