//! Turns SDK failures into `StoreError`, keeping the SDK error as the `source` (never in a message).

use std::fmt;

use aws_sdk_dynamodb::error::{DisplayErrorContext, ProvideErrorMetadata, SdkError};
use aws_sdk_dynamodb::operation::transact_write_items::TransactWriteItemsError;

use countersign_core::ports::StoreError;

/// Error codes that mean "try again later": throttling, capacity, service-side faults, contention.
const TRANSIENT_CODES: &[&str] = &[
    "ProvisionedThroughputExceededException",
    "RequestLimitExceeded",
    "ThrottlingException",
    "InternalServerError",
    "ServiceUnavailable",
    "TransactionConflictException",
    "TransactionInProgressException",
    // A missing table is a deployment or configuration problem, not a caller mistake.
    "ResourceNotFoundException",
];

/// Cancellation reason: another transaction was working on one of the items. Worth retrying at once.
pub const TRANSACTION_CONFLICT: &str = "TransactionConflict";
/// Cancellation reasons that mean "slow down": reported as `Unavailable` (retry later).
pub const THROTTLED_REASONS: &[&str] = &["ProvisionedThroughputExceeded", "ThrottlingError", "RequestLimitExceeded"];

pub const CONDITION_FAILED: &str = "ConditionalCheckFailed";

/// A failed DynamoDB call: which operation, wrapping the SDK error as its source.
#[derive(Debug)]
pub struct DynamoCallFailed {
    pub op: &'static str,
    pub code: Option<String>,
    pub source: Box<dyn std::error::Error + Send + Sync>,
}

impl fmt::Display for DynamoCallFailed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.code {
            Some(c) => write!(f, "DynamoDB {} failed ({c})", self.op),
            None => write!(f, "DynamoDB {} failed", self.op),
        }
    }
}

impl std::error::Error for DynamoCallFailed {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        Some(self.source.as_ref())
    }
}

/// The audit chain kept moving under us for every attempt.
#[derive(Debug, thiserror::Error)]
#[error("DynamoDB {op}: gave up after {attempts} attempts lost to concurrent writers")]
pub struct ContentionExhausted {
    pub op: &'static str,
    pub attempts: u32,
}

fn is_transient<E: ProvideErrorMetadata, R>(err: &SdkError<E, R>, status: Option<u16>) -> bool {
    match err {
        SdkError::TimeoutError(_) | SdkError::DispatchFailure(_) | SdkError::ResponseError(_) => true,
        SdkError::ServiceError(se) => {
            status.is_some_and(|s| s >= 500) || se.err().code().is_some_and(|c| TRANSIENT_CODES.contains(&c))
        }
        _ => false,
    }
}

/// Classifies any SDK failure: transient ones become `Unavailable`, the rest `Other` (a bug or a
/// misconfiguration), logged here with the whole chain because `Other` carries only a short message.
pub fn from_sdk<E>(op: &'static str, err: SdkError<E, aws_sdk_dynamodb::config::http::HttpResponse>) -> StoreError
where
    E: ProvideErrorMetadata + std::error::Error + Send + Sync + 'static,
{
    let status = err.raw_response().map(|r| r.status().as_u16());
    let code = err.as_service_error().and_then(|e| e.code()).map(str::to_string);
    if is_transient(&err, status) {
        return StoreError::Unavailable(Box::new(DynamoCallFailed { op, code, source: Box::new(err) }));
    }
    tracing::error!(op, error = %DisplayErrorContext(&err), "DynamoDB refused a call");
    match code {
        Some(c) => StoreError::Other(format!("DynamoDB {op} was refused ({c})")),
        None => StoreError::Other(format!("DynamoDB {op} could not be sent")),
    }
}

/// The per-item cancellation codes of a cancelled transaction (`"None"` for items that were fine), or
/// `None` if the failure was not a cancellation.
pub fn cancellation_codes(
    err: &SdkError<TransactWriteItemsError, aws_sdk_dynamodb::config::http::HttpResponse>,
) -> Option<Vec<String>> {
    match err.as_service_error() {
        Some(TransactWriteItemsError::TransactionCanceledException(e)) => {
            Some(e.cancellation_reasons().iter().map(|r| r.code().unwrap_or("None").to_string()).collect())
        }
        _ => None,
    }
}

pub fn build_error(what: &'static str, e: aws_sdk_dynamodb::error::BuildError) -> StoreError {
    StoreError::Other(format!("cannot build DynamoDB {what}: {e}"))
}

/// Wraps any failure as `Unavailable`, whatever its kind (a throttled transaction, say).
pub fn unavailable<E>(op: &'static str, code: &str, err: E) -> StoreError
where
    E: std::error::Error + Send + Sync + 'static,
{
    StoreError::Unavailable(Box::new(DynamoCallFailed { op, code: Some(code.to_string()), source: Box::new(err) }))
}
