//! Test support: an SDK interceptor that captures the request body the SDK is about to send and
//! then stops the call, so each output's hand-written request body can be compared with the
//! SDK's own serializer without a network.

use std::sync::{Arc, Mutex};

use aws_smithy_runtime_api::box_error::BoxError;
use aws_smithy_runtime_api::client::interceptors::context::BeforeTransmitInterceptorContextRef;
use aws_smithy_runtime_api::client::interceptors::Intercept;
use aws_smithy_runtime_api::client::runtime_components::RuntimeComponents;
use aws_smithy_types::config_bag::ConfigBag;

/// Captures the body the SDK is about to send, then stops the call (no network needed).
#[derive(Debug, Default, Clone)]
pub struct Capture(Arc<Mutex<Option<Vec<u8>>>>);

impl Capture {
    /// The captured body, if a call got as far as sending.
    pub fn take(&self) -> Option<Vec<u8>> {
        self.0.lock().unwrap().take()
    }
}

impl Intercept for Capture {
    fn name(&self) -> &'static str {
        "Capture"
    }

    fn read_before_transmit(
        &self,
        context: &BeforeTransmitInterceptorContextRef<'_>,
        _: &RuntimeComponents,
        _: &mut ConfigBag,
    ) -> Result<(), BoxError> {
        *self.0.lock().unwrap() = context.request().body().bytes().map(<[u8]>::to_vec);
        Err("captured".into())
    }
}
