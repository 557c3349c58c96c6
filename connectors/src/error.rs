//! The one error type every action returns.

use std::time::Duration;

use schemas::envelope::ErrorCode;

/// Why an action failed.
///
/// Callers branch on [`ActionError::code`] and [`ActionError::is_retryable`], never on the
/// message. Whether a failure is retryable follows from its code alone
/// ([`ErrorCode::is_retryable`]): the code is what travels in step results and audit records,
/// so a separate flag could disagree with what the engine later decides from the code.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ActionError {
    /// Stable code.
    pub code: ErrorCode,
    /// For people: never credentials, never a whole response body (at most a short excerpt).
    pub message: String,
    /// How long the provider asked us to wait (`Retry-After`, rate-limit reset); only ever set
    /// on a retryable error.
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

    /// `invalid_input` naming the offending field of the step's `with`, e.g.
    /// `with.url: not an absolute http(s) URL`.
    pub fn invalid_input(field: &str, problem: impl std::fmt::Display) -> Self {
        ActionError::new(ErrorCode::InvalidInput, format!("with.{field}: {problem}"))
    }

    /// Whether another attempt may succeed.
    pub fn is_retryable(&self) -> bool {
        self.code.is_retryable()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn invalid_input_names_the_field_under_with() {
        let e = ActionError::invalid_input("url", "is required");
        assert_eq!(e.code, ErrorCode::InvalidInput);
        assert_eq!(e.to_string(), "with.url: is required");
        assert!(!e.is_retryable());
    }
}
