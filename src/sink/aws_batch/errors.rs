//! Maps AWS SDK errors (batch-put calls and per-record error codes) to [`ErrorClass`].
//!
//! The table of codes is shared by the services: they use the same AWS error vocabulary, and a
//! service adds its own codes through [`super::BatchPut::class_of_code`].
//!
//! The class decides what happens next: throttling, 5xx, timeouts and connection errors are
//! retried inside the flush with backoff; configuration and IAM problems
//! (`ResourceNotFoundException`, `AccessDeniedException`, `InvalidArgumentException`,
//! rejected credentials) end the flush at once, are logged loudly and retried on the chunk's
//! schedule, since an operator may be fixing them right now.

use aws_credential_types::provider::error::CredentialsError;
use aws_smithy_runtime_api::client::orchestrator::HttpResponse;
use aws_smithy_runtime_api::client::result::SdkError;
use aws_smithy_types::error::display::DisplayErrorContext;
use aws_smithy_types::error::metadata::ProvideErrorMetadata;

use crate::sink::ErrorClass;

/// Class of an error code, as found in a service error or a per-record `ErrorCode`.
pub fn class_of_code(code: &str) -> Option<ErrorClass> {
    Some(match code {
        "ServiceUnavailableException"
        | "ThrottlingException"
        | "Throttling"
        | "TooManyRequestsException"
        | "SlowDown"
        | "RequestLimitExceeded"
        | "LimitExceededException" => ErrorClass::Throttled,
        "InternalFailure"
        | "InternalFailureException"
        | "InternalError"
        | "InternalServerError"
        | "ServiceFailure" => ErrorClass::Server,
        "ResourceNotFoundException" => ErrorClass::ResourceNotFound,
        "AccessDeniedException"
        | "AccessDenied"
        | "InvalidKMSResourceException"
        | "KMSAccessDeniedException" => ErrorClass::AccessDenied,
        "InvalidArgumentException"
        | "ValidationException"
        | "SerializationException"
        | "InvalidSourceException" => ErrorClass::InvalidArgument,
        "ExpiredTokenException"
        | "ExpiredToken"
        | "UnrecognizedClientException"
        | "InvalidClientTokenId"
        | "InvalidSignatureException"
        | "SignatureDoesNotMatch"
        | "IncompleteSignature"
        | "MissingAuthenticationToken"
        | "MissingAuthenticationTokenException"
        | "RequestExpired" => ErrorClass::Credentials,
        _ => return None,
    })
}

/// Class of an HTTP status when the body named no known error code.
pub fn class_of_status(status: u16) -> ErrorClass {
    match status {
        429 | 503 => ErrorClass::Throttled,
        500..=599 => ErrorClass::Server,
        401 => ErrorClass::Credentials,
        403 => ErrorClass::AccessDenied,
        404 => ErrorClass::ResourceNotFound,
        400..=499 => ErrorClass::InvalidArgument,
        _ => ErrorClass::Other,
    }
}

/// Class of a per-record failure in a batch-put response. Unknown codes are treated as
/// server-side failures: the record was not accepted and will be resent.
pub fn class_of_record_code(code: &str) -> ErrorClass {
    match class_of_code(code) {
        Some(c) => c,
        None => ErrorClass::Server,
    }
}

/// True when the error is worth retrying within the same flush.
pub fn retry_in_flush(class: ErrorClass) -> bool {
    matches!(
        class,
        ErrorClass::Throttled | ErrorClass::Server | ErrorClass::Network | ErrorClass::Timeout
    )
}

/// Classifies an SDK error of any operation; `class_of_code` reads the service's error codes.
pub fn classify_with<E, R>(
    err: &SdkError<E, R>,
    class_of_code: impl Fn(&str) -> Option<ErrorClass>,
) -> ErrorClass
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug + HasStatus + 'static,
{
    if chain_has_credentials_error(err) {
        return ErrorClass::Credentials;
    }
    match err {
        SdkError::TimeoutError(_) => ErrorClass::Timeout,
        SdkError::DispatchFailure(d) => {
            if d.is_timeout() {
                ErrorClass::Timeout
            } else if d.is_user() {
                ErrorClass::Other
            } else {
                ErrorClass::Network
            }
        }
        SdkError::ResponseError(r) => class_of_status(r.raw().status_code()),
        SdkError::ServiceError(s) => s
            .err()
            .code()
            .and_then(class_of_code)
            .unwrap_or_else(|| class_of_status(s.raw().status_code())),
        SdkError::ConstructionFailure(_) => ErrorClass::Other,
        _ => ErrorClass::Other,
    }
}

/// Full text of an SDK error with its causes (never contains credentials: the SDK does not put
/// them into errors, and our provider's errors name files and roles, not secrets).
pub fn describe<E, R>(err: &SdkError<E, R>) -> String
where
    E: std::error::Error + 'static,
    R: std::fmt::Debug,
{
    DisplayErrorContext(err).to_string()
}

/// The HTTP status of a raw response, abstracted so classification can be unit-tested.
pub trait HasStatus {
    /// The status code.
    fn status_code(&self) -> u16;
}

impl HasStatus for HttpResponse {
    fn status_code(&self) -> u16 {
        self.status().as_u16()
    }
}

fn chain_has_credentials_error(err: &(dyn std::error::Error + 'static)) -> bool {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<CredentialsError>().is_some() {
            return true;
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_and_statuses_are_throttled() {
        assert_eq!(
            class_of_code("ServiceUnavailableException"),
            Some(ErrorClass::Throttled)
        );
        assert_eq!(class_of_status(429), ErrorClass::Throttled);
        assert_eq!(class_of_status(503), ErrorClass::Throttled);
        assert_eq!(class_of_status(500), ErrorClass::Server);
    }

    #[test]
    fn operator_errors_are_recognised() {
        assert_eq!(
            class_of_code("ResourceNotFoundException"),
            Some(ErrorClass::ResourceNotFound)
        );
        assert_eq!(
            class_of_code("AccessDeniedException"),
            Some(ErrorClass::AccessDenied)
        );
        assert_eq!(
            class_of_code("InvalidArgumentException"),
            Some(ErrorClass::InvalidArgument)
        );
        assert_eq!(
            class_of_code("ExpiredTokenException"),
            Some(ErrorClass::Credentials)
        );
        assert_eq!(
            class_of_code("UnrecognizedClientException"),
            Some(ErrorClass::Credentials)
        );
        for c in [
            "ResourceNotFoundException",
            "AccessDeniedException",
            "ExpiredTokenException",
        ] {
            assert!(!retry_in_flush(class_of_code(c).unwrap()), "{c}");
        }
    }

    #[test]
    fn unknown_per_record_codes_are_resent() {
        assert_eq!(class_of_record_code("InternalFailure"), ErrorClass::Server);
        assert_eq!(class_of_record_code("SomethingNew"), ErrorClass::Server);
        assert!(retry_in_flush(class_of_record_code(
            "ServiceUnavailableException"
        )));
    }
}
