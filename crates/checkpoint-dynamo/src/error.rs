//! The one place DynamoDB SDK errors become [`checkpoint_core::Error`].
//!
//! A failed condition (`ConditionalCheckFailedException`) never reaches this function: the store
//! reads the holder from the failure and reports a typed kind. Everything else is
//! [`Error::Backend`]; it is retryable when trying again can help: throttling
//! (`ProvisionedThroughputExceededException`, `ThrottlingException`, `RequestLimitExceeded`),
//! server faults (`InternalServerError`, `ServiceUnavailable`, any 5xx), transaction conflicts,
//! timeouts, dispatch failures (connection refused or dropped) and unreadable responses.

use std::error::Error as StdError;

use aws_sdk_dynamodb::config::http::HttpResponse;
use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use checkpoint_core::Error;

pub(crate) const STORE: &str = "dynamodb";

const RETRYABLE_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "ThrottlingException",
    "Throttling",
    "RequestLimitExceeded",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    "LimitExceededException",
];

/// Maps an SDK error of operation `op` into the contract's error, keeping the SDK error as the
/// source. The message carries the SDK's full error context (code and message), never a request
/// or credentials.
pub(crate) fn map_error<E>(op: &'static str, err: SdkError<E, HttpResponse>) -> Error
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
{
    let retryable = match &err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => {
            true
        }
        SdkError::ServiceError(service) => {
            let code = service.err().code().unwrap_or_default();
            let status = service.raw().status().as_u16();
            RETRYABLE_CODES.contains(&code) || (500..600).contains(&status)
        }
        _ => false,
    };
    let message = match &err {
        SdkError::ServiceError(service) => format!(
            "{op}: {} (HTTP {}): {}",
            service.err().code().unwrap_or("unknown error"),
            service.raw().status().as_u16(),
            service.err().message().unwrap_or_default()
        ),
        other => format!("{op}: {}", DisplayErrorContext(other)),
    };
    Error::Backend {
        store: STORE,
        retryable,
        message,
        source: Some(Box::new(err)),
    }
}
