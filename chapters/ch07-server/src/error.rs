//! Errors as OpenAI's API returns them: a status code and `{"error": {"message", "type", "code"}}`.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

// ANCHOR: api_error
#[derive(Debug, Clone, thiserror::Error)]
#[error("{status}: {message}")]
pub struct ApiError {
    pub status: StatusCode,
    pub message: String,
    /// OpenAI's error type: `invalid_request_error`, `server_error`, ...
    pub kind: &'static str,
    pub code: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "invalid_request_error", code: None }
    }
    /// The prompt (plus the tokens asked for) does not fit the context.
    pub fn context_length(message: impl Into<String>) -> Self {
        ApiError { code: Some("context_length_exceeded"), ..ApiError::bad_request(message) }
    }
    pub fn too_large(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::PAYLOAD_TOO_LARGE, ..ApiError::bad_request(message) }
    }
    /// Backpressure: the waiting queue is full; the client should retry later.
    pub fn busy(message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError { status: StatusCode::TOO_MANY_REQUESTS, message, kind: "rate_limit_error", code: None }
    }
    /// Shutting down, or the engine is gone.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message, kind: "server_error", code: None }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, ..ApiError::bad_request(message) }
    }
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "message": self.message, "type": self.kind, "param": null, "code": self.code } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
// ANCHOR_END: api_error
