//! The one error type of every HTTP handler (live API, alerts, reports, enrollment): maps to a
//! status and a Russian message, logs 5xx and never leaks internals. A leaf, so each component's
//! router uses it without importing `api`.

use axum::Json;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

/// Errors of the API. 5xx are logged; bodies never leak internals.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The requested object does not exist.
    #[error("не найдено: {0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("неверный запрос: {0}")]
    BadRequest(String),
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, msg) = match &self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, self.to_string()),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, self.to_string()),
        };
        (status, Json(serde_json::json!({ "error": msg }))).into_response()
    }
}
