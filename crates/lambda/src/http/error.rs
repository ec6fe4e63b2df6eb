//! The ONE place where failures become HTTP responses: `{"error": {"code", "message", "field"?}}`.
//! Client mistakes are 4xx with a stable code; dependency failures are an opaque `503 unavailable` with
//! `Retry-After`, logged with their whole cause chain. Nothing here ever returns a 5xx for caller input.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;

use countersign_core::error::error_chain;
use countersign_core::service::requests::RequestError;

/// Seconds a client should wait before retrying a `503`.
pub const RETRY_AFTER_SECONDS: u32 = 2;

#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub field: Option<&'static str>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), field: None }
    }

    pub fn invalid(field: Option<&'static str>, message: impl Into<String>) -> Self {
        Self { field, ..Self::new(StatusCode::BAD_REQUEST, "invalid_request", message) }
    }
}

impl From<RequestError> for ApiError {
    fn from(e: RequestError) -> Self {
        let status = match &e {
            RequestError::Invalid { .. }
            | RequestError::ReasonRequired { .. }
            | RequestError::BreakGlassReason { .. } => StatusCode::BAD_REQUEST,
            RequestError::Unauthenticated(_) => StatusCode::UNAUTHORIZED,
            RequestError::AccountNotAllowed(_)
            | RequestError::NoMatchingPolicy(_)
            | RequestError::LongTermCredentials(_)
            | RequestError::BreakGlassNotAllowed(_)
            | RequestError::DrillsNotAllowed(_)
            | RequestError::SessionMismatch(_) => StatusCode::FORBIDDEN,
            RequestError::TooManyPending { .. } | RequestError::BreakGlassLimit { .. } => StatusCode::TOO_MANY_REQUESTS,
            RequestError::NotFound => StatusCode::NOT_FOUND,
            RequestError::IdempotencyConflict
            | RequestError::AlreadyDecided(_)
            | RequestError::NotApproved(_)
            | RequestError::AlreadyRedeemed(_)
            | RequestError::ApprovalExpired(_)
            | RequestError::ArtifactMismatch(_)
            | RequestError::Drill(_) => StatusCode::CONFLICT,
            RequestError::PayloadTooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            RequestError::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
            RequestError::Unavailable(_) | RequestError::SigningUnavailable(_) => StatusCode::SERVICE_UNAVAILABLE,
        };
        let message = match &e {
            RequestError::Unavailable(inner) => {
                tracing::error!(error = %error_chain(inner), "dependency unavailable");
                "a dependency is temporarily unavailable; retry later".to_string()
            }
            RequestError::SigningUnavailable(inner) => {
                tracing::error!(error = %error_chain(inner), "receipt signing key unavailable");
                "the receipt signing key is temporarily unavailable; retry later".to_string()
            }
            _ => e.to_string(),
        };
        Self { status, code: e.code(), message, field: e.field() }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut body = json!({"error": {"code": self.code, "message": self.message}});
        if let Some(f) = self.field {
            body["error"]["field"] = json!(f);
        }
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::SERVICE_UNAVAILABLE || self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from(RETRY_AFTER_SECONDS));
        }
        resp
    }
}
