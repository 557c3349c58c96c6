//! The one error type every action returns.

use std::time::Duration;

use schemas::envelope::ErrorCode;

/// Why an action failed. Workers and the engine branch on [`ActionError::code`] and
/// [`ActionError::is_retryable`], never on the message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    /// Stable code.
    pub code: ErrorCode,
    /// For people; never contains credentials or a whole response body.
    pub message: String,
    /// When the provider said to come back (`Retry-After`, rate-limit reset).
    pub retry_after: Option<Duration>,
    /// The HTTP status, when the provider answered.
    pub status: Option<u16>,
}

impl ActionError {
    /// An error with no status and no retry hint.
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        ActionError {
            code,
            message: message.into(),
            retry_after: None,
            status: None,
        }
    }

    /// `invalid_input` naming the offending field of the step's `with`.
    pub fn invalid_input(field: &str, problem: impl std::fmt::Display) -> Self {
        ActionError::new(ErrorCode::InvalidInput, format!("with.{field}: {problem}"))
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable()
    }
}
