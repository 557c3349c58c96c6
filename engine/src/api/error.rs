//! API errors: a small, stable set of codes, mapped to HTTP statuses in one place.

use axum::Json;
use axum::extract::rejection::{BytesRejection, PathRejection, QueryRejection};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};

/// The codes an API error may carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ApiErrorCode {
    /// The request is malformed (bad JSON, bad query parameter, bad header).
    InvalidInput,
    /// A workflow definition failed validation; `details.problems` lists every problem.
    InvalidDefinition,
    /// The request's credentials or signature are missing or wrong.
    Unauthorized,
    /// The caller is authenticated but its role does not allow this.
    Forbidden,
    /// The thing named does not exist (in the caller's workspace).
    NotFound,
    /// The request conflicts with current state (e.g. cancelling a finished run).
    Conflict,
    /// The body is larger than the route accepts.
    PayloadTooLarge,
    /// Too many requests; `Retry-After` says when to try again.
    RateLimited,
    /// A dependency (database, NATS) is not answering.
    Unavailable,
    /// A bug or unexpected condition on our side; details are in the logs, not the response.
    Internal,
}

impl ApiErrorCode {
    /// The HTTP status for this code; the only place the mapping lives.
    pub fn status(self) -> StatusCode {
        match self {
            ApiErrorCode::InvalidInput => StatusCode::BAD_REQUEST,
            ApiErrorCode::InvalidDefinition => StatusCode::UNPROCESSABLE_ENTITY,
            ApiErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
            ApiErrorCode::Forbidden => StatusCode::FORBIDDEN,
            ApiErrorCode::NotFound => StatusCode::NOT_FOUND,
            ApiErrorCode::Conflict => StatusCode::CONFLICT,
            ApiErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
            ApiErrorCode::RateLimited => StatusCode::TOO_MANY_REQUESTS,
            ApiErrorCode::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ApiErrorCode::Internal => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

/// An error answered as `{"error": {"code", "message", "details"}}`.
#[derive(Debug)]
pub struct ApiError {
    /// Stable code.
    pub code: ApiErrorCode,
    /// For people.
    pub message: String,
    /// Structured extras (validation problems, the offending field).
    pub details: Value,
    /// Seconds for the `Retry-After` header, on `rate_limited` and `unavailable` answers.
    pub retry_after: Option<u64>,
}

impl ApiError {
    /// An error with no details.
    pub fn new(code: ApiErrorCode, message: impl Into<String>) -> Self {
        ApiError {
            code,
            message: message.into(),
            details: Value::Null,
            retry_after: None,
        }
    }

    /// Asks the client to wait `seconds` before trying again (`Retry-After`).
    pub fn with_retry_after(mut self, seconds: u64) -> Self {
        self.retry_after = Some(seconds);
        self
    }

    /// Attaches details.
    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// `not_found` for a named thing.
    pub fn not_found(what: impl Into<String>) -> Self {
        ApiError::new(ApiErrorCode::NotFound, format!("{} not found", what.into()))
    }

    /// `internal`, logging the cause here so it never reaches the response.
    pub fn internal(cause: impl std::fmt::Display) -> Self {
        tracing::error!(error = %cause, "internal error");
        ApiError::new(
            ApiErrorCode::Internal,
            "internal error; see the engine's logs",
        )
    }
}

impl From<sea_orm::DbErr> for ApiError {
    fn from(e: sea_orm::DbErr) -> Self {
        ApiError::internal(e)
    }
}

impl From<BytesRejection> for ApiError {
    fn from(r: BytesRejection) -> Self {
        if r.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::new(
                ApiErrorCode::PayloadTooLarge,
                format!(
                    "the body is larger than the {} bytes this route accepts",
                    super::MAX_BODY_BYTES
                ),
            )
            .with_details(json!({ "limit_bytes": super::MAX_BODY_BYTES }))
        } else {
            ApiError::new(ApiErrorCode::InvalidInput, r.body_text())
        }
    }
}

impl From<QueryRejection> for ApiError {
    fn from(r: QueryRejection) -> Self {
        ApiError::new(ApiErrorCode::InvalidInput, r.body_text())
    }
}

impl From<PathRejection> for ApiError {
    fn from(r: PathRejection) -> Self {
        ApiError::new(ApiErrorCode::InvalidInput, r.body_text())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body = json!({
            "error": { "code": self.code, "message": self.message, "details": self.details }
        });
        let mut response = (self.code.status(), Json(body)).into_response();
        if self.code == ApiErrorCode::Unauthorized {
            response.headers_mut().insert(
                axum::http::header::WWW_AUTHENTICATE,
                axum::http::HeaderValue::from_static("Bearer"),
            );
        }
        if let Some(secs) = self.retry_after {
            response.headers_mut().insert(
                axum::http::header::RETRY_AFTER,
                axum::http::HeaderValue::from(secs),
            );
        }
        response
    }
}
