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
    /// The request field at fault, when there is one.
    pub param: Option<&'static str>,
}

impl ApiError {
    pub fn bad_request(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::BAD_REQUEST, message: message.into(), kind: "invalid_request_error", code: None, param: None }
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
        ApiError { status: StatusCode::TOO_MANY_REQUESTS, message, kind: "rate_limit_error", code: None, param: None }
    }
    /// Shutting down, or the engine is gone.
    pub fn unavailable(message: impl Into<String>) -> Self {
        let message = message.into();
        ApiError { status: StatusCode::SERVICE_UNAVAILABLE, message, kind: "server_error", code: None, param: None }
    }
    /// A bug on the server's side (a task that panicked).
    pub fn internal(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::INTERNAL_SERVER_ERROR, ..ApiError::unavailable(message) }
    }
    /// A field of OpenAI's API this server does not implement, set to something other than its
    /// default: a 400 that says so, rather than a 200 that ignored it.
    pub fn unsupported(param: &'static str, what: &str) -> Self {
        let message = format!("`{param}` is not supported by this server ({what}); leave it unset");
        ApiError { param: Some(param), code: Some("unsupported_parameter"), ..ApiError::bad_request(message) }
    }
    /// `model` names a model this server does not serve (OpenAI's 404).
    pub fn model_not_found(model: &str, served: &str) -> Self {
        let message = format!("The model `{model}` does not exist; this server serves `{served}` (GET /v1/models)");
        ApiError { param: Some("model"), code: Some("model_not_found"), ..ApiError::not_found(message) }
    }
    pub fn not_found(message: impl Into<String>) -> Self {
        ApiError { status: StatusCode::NOT_FOUND, ..ApiError::bad_request(message) }
    }
    pub fn body(&self) -> serde_json::Value {
        serde_json::json!({ "error": { "message": self.message, "type": self.kind, "param": self.param, "code": self.code } })
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status, Json(self.body())).into_response()
    }
}
// ANCHOR_END: api_error
