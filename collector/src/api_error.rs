//! The one error type of every HTTP handler (live API, alerts, reports, enrollment): maps to a
//! status, an English code and a Russian message, logs 5xx and never leaks internals. A leaf, so
//! each component's router uses it without importing `api`.
//!
//! Every error body has one shape: `{"error": "<code>", "message": "<по-русски>"}` (plus
//! `"field"` when one field is at fault). The extractors here ([`Query`], [`Path`],
//! [`JsonBody`]) wrap axum's so that their rejections (unknown query keys, bad JSON, a body over
//! the limit) take that shape too instead of English `text/plain`.

use axum::Json;
use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use serde::de::DeserializeOwned;

/// Errors of the API. 5xx are logged; bodies never leak internals.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ApiError {
    /// The requested object does not exist.
    #[error("не найдено: {0}")]
    NotFound(String),
    /// The request is malformed.
    #[error("неверный запрос: {0}")]
    BadRequest(String),
    /// One field's value is refused; the message names it.
    #[error("{field}: {message}")]
    Field {
        /// The field (query key, JSON key) at fault.
        field: &'static str,
        /// What is wrong, in Russian.
        message: String,
    },
    /// The request body is over the limit.
    #[error("тело запроса слишком велико (не больше {0} КиБ)")]
    TooLarge(usize),
    /// A bounded collection is full.
    #[error("{0}")]
    LimitReached(String),
    /// The component is not ready (e.g. no history store yet).
    #[error("{0}")]
    Unavailable(String),
    /// Anything else: logged, answered without details.
    #[error("внутренняя ошибка")]
    Internal(String),
}

/// The JSON body limit of the API (`DefaultBodyLimit` in `lib.rs`), KiB.
pub(crate) const BODY_LIMIT_KIB: usize = 64;

impl ApiError {
    /// The field `field` has a bad value.
    pub(crate) fn field(field: &'static str, message: impl Into<String>) -> ApiError {
        ApiError::Field {
            field,
            message: message.into(),
        }
    }

    fn status_code(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::Field { .. } => (StatusCode::BAD_REQUEST, "invalid_field"),
            ApiError::TooLarge(_) => (StatusCode::PAYLOAD_TOO_LARGE, "too_large"),
            ApiError::LimitReached(_) => (StatusCode::BAD_REQUEST, "limit_reached"),
            ApiError::Unavailable(_) => (StatusCode::SERVICE_UNAVAILABLE, "unavailable"),
            ApiError::Internal(_) => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        }
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.status_code();
        if let ApiError::Internal(e) = &self {
            tracing::error!(error = %e, "HTTP handler failed");
        }
        let mut body = serde_json::json!({ "error": code, "message": self.to_string() });
        if let ApiError::Field { field, .. } = &self {
            body["field"] = (*field).into();
        }
        if status == StatusCode::PAYLOAD_TOO_LARGE {
            // The unread rest of the body makes the connection unusable: say so, so that
            // clients do not reuse it for their next request.
            return (
                status,
                [(axum::http::header::CONNECTION, "close")],
                Json(body),
            )
                .into_response();
        }
        (status, Json(body)).into_response()
    }
}

/// A serde message (`unknown field `x`, expected one of `a`, `b``, `state: invalid type: …`)
/// told in Russian, with the field named when serde names it.
fn serde_ru(msg: &str) -> String {
    let quoted = |after: &str| -> Option<String> {
        let rest = &msg[msg.find(after)? + after.len()..];
        let rest = rest.strip_prefix('`')?;
        Some(rest[..rest.find('`')?].to_string())
    };
    if let Some(f) = quoted("unknown field ") {
        let allowed: Vec<&str> = msg
            .split_once("expected one of ")
            .or_else(|| msg.split_once("expected "))
            .map(|(_, l)| l.split(", ").map(|s| s.trim_matches('`')).collect())
            .unwrap_or_default();
        return if allowed.is_empty() {
            format!("неизвестный параметр {f:?}")
        } else {
            format!(
                "неизвестный параметр {f:?}; допустимы: {}",
                allowed.join(", ")
            )
        };
    }
    if let Some(f) = quoted("missing field ") {
        return format!("не указано обязательное поле {f:?}");
    }
    // After axum's English prefix ("Failed to deserialize …: "), serde_path_to_error (axum's
    // JSON) puts "path: " before the message.
    let detail = msg.split_once(": ").map_or(msg, |(_, d)| d);
    let field = detail.split_once(": ").map(|(f, _)| f).filter(|f| {
        !f.is_empty()
            && f.chars()
                .all(|c| c.is_ascii_alphanumeric() || "_.[]".contains(c))
    });
    match field {
        Some(f) => format!("неверное значение поля {f:?}"),
        None => "неверный формат значения".to_string(),
    }
}

impl From<QueryRejection> for ApiError {
    fn from(e: QueryRejection) -> ApiError {
        ApiError::BadRequest(format!("параметры запроса: {}", serde_ru(&e.body_text())))
    }
}

impl From<PathRejection> for ApiError {
    fn from(e: PathRejection) -> ApiError {
        ApiError::BadRequest(format!("путь: {}", serde_ru(&e.body_text())))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(e: JsonRejection) -> ApiError {
        match &e {
            _ if e.status() == StatusCode::PAYLOAD_TOO_LARGE => ApiError::TooLarge(BODY_LIMIT_KIB),
            JsonRejection::MissingJsonContentType(_) => {
                ApiError::BadRequest("нужен заголовок Content-Type: application/json".into())
            }
            JsonRejection::JsonSyntaxError(_) => {
                ApiError::BadRequest("тело запроса — не JSON".into())
            }
            JsonRejection::JsonDataError(_) => {
                ApiError::BadRequest(format!("тело запроса: {}", serde_ru(&e.body_text())))
            }
            _ => ApiError::BadRequest("не удалось прочитать тело запроса".into()),
        }
    }
}

/// `axum::extract::Query` whose rejection is an [`ApiError`].
#[derive(Debug)]
pub(crate) struct Query<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Query(v) =
            axum::extract::Query::<T>::from_request_parts(parts, state).await?;
        Ok(Query(v))
    }
}

/// `axum::extract::Path` whose rejection is an [`ApiError`].
#[derive(Debug)]
pub(crate) struct Path<T>(pub(crate) T);

impl<T: DeserializeOwned + Send, S: Send + Sync> FromRequestParts<S> for Path<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        let axum::extract::Path(v) =
            axum::extract::Path::<T>::from_request_parts(parts, state).await?;
        Ok(Path(v))
    }
}

/// `axum::Json` as a request body whose rejection is an [`ApiError`].
#[derive(Debug)]
pub(crate) struct JsonBody<T>(pub(crate) T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let Json(v) = Json::<T>::from_request(req, state).await?;
        Ok(JsonBody(v))
    }
}

/// The answer to a method a route does not take.
pub(crate) async fn no_method() -> Response {
    let mut r = ApiError::BadRequest("этот метод здесь не поддерживается".into()).into_response();
    *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
    r
}

/// The answer to a route that does not exist.
pub(crate) async fn no_route() -> ApiError {
    ApiError::NotFound("такого адреса в API нет".into())
}

#[cfg(test)]
mod tests {
    use super::serde_ru;

    #[test]
    fn serde_messages_in_russian() {
        let check = |msg: &str, want: &str| assert_eq!(serde_ru(msg), want, "{msg}");
        check(
            "Failed to deserialize query string: unknown field `bogus`, expected one of `mo`, `state`, `role`",
            "неизвестный параметр \"bogus\"; допустимы: mo, state, role",
        );
        check(
            "Failed to deserialize the JSON body into the target type: missing field `rule` at line 1 column 2",
            "не указано обязательное поле \"rule\"",
        );
        check(
            "Failed to deserialize the JSON body into the target type: duration_secs: invalid type: string \"x\", expected u64 at line 1 column 20",
            "неверное значение поля \"duration_secs\"",
        );
        check(
            "Failed to deserialize query string: invalid digit found in string",
            "неверный формат значения",
        );
    }
}
