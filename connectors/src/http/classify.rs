//! Failure classification for every HTTP connector, decided from types and status codes.
//!
//! Every way an outbound call can fail is a [`Failure`]; [`classify`] turns one into a
//! [`Verdict`]: a stable [`ErrorCode`] and, when the code is retryable, how long the provider
//! asked us to wait. A connector whose provider bends HTTP (Slack's `200` with `ok: false`,
//! GitHub's secondary rate limits on `403`) implements [`Quirks`] to judge a response before
//! the generic rules do.

use std::time::Duration;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schemas::envelope::ErrorCode;

/// Whether a failed call is worth another attempt, and when.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Classification {
    /// Try again, not before `after` when the provider said so.
    Retryable {
        /// Provider-requested wait.
        after: Option<Duration>,
    },
    /// Do not try again.
    Permanent,
}

/// The decision about one failure: its code and the provider's requested wait.
///
/// Retryability follows from the code ([`ErrorCode::is_retryable`]), so the two cannot
/// disagree; a wait is kept only on a retryable verdict.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verdict {
    code: ErrorCode,
    after: Option<Duration>,
}

impl Verdict {
    /// A verdict with `code`; `after` is dropped when the code is not retryable.
    pub fn new(code: ErrorCode, after: Option<Duration>) -> Self {
        Verdict {
            code,
            after: after.filter(|_| code.is_retryable()),
        }
    }

    /// The stable code.
    pub fn code(&self) -> ErrorCode {
        self.code
    }

    /// The provider's requested wait, on a retryable verdict.
    pub fn retry_after(&self) -> Option<Duration> {
        self.after
    }

    /// Retryable (with its wait) or permanent.
    pub fn classification(&self) -> Classification {
        if self.code.is_retryable() {
            Classification::Retryable { after: self.after }
        } else {
            Classification::Permanent
        }
    }
}

/// Everything that can go wrong with one outbound call.
///
/// The messages say what happened without the URL or any header, so they are safe to show.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Failure {
    /// The provider answered with a status the caller does not accept.
    #[error("answered {status}")]
    Status {
        /// The status.
        status: StatusCode,
        /// What the response asked us to wait ([`super::ratelimit::wait_hint`]).
        retry_after: Option<Duration>,
    },
    /// A connector's [`Quirks`] judged the response a failure, whatever its status.
    #[error("answered {status} but reported a failure")]
    Rejected {
        /// The status.
        status: StatusCode,
        /// The connector's decision.
        verdict: Verdict,
    },
    /// No complete answer within the timeout.
    #[error("did not answer in time")]
    Timeout,
    /// The connection could not be opened (refused, DNS, TLS handshake).
    #[error("could not be reached{}", cause(*.io))]
    Connect {
        /// The operating system's reason, when there was one.
        io: Option<std::io::ErrorKind>,
    },
    /// The connection broke while sending the request or reading the response.
    #[error("dropped the connection mid-exchange{}", cause(*.io))]
    Transport {
        /// The operating system's reason, when there was one.
        io: Option<std::io::ErrorKind>,
    },
    /// Redirects went past [`super::MAX_REDIRECTS`].
    #[error("redirected too many times")]
    Redirect,
    /// The response body is larger than the cap; it was not read past the cap.
    #[error("sent a response larger than the {limit}-byte limit")]
    TooLarge {
        /// The cap, in bytes.
        limit: usize,
    },
    /// The request could not be built from its inputs.
    #[error("could not be sent: the request is malformed")]
    Request,
    /// The outbound policy refused the destination (or a redirect's); nothing was sent.
    #[error("{0}")]
    Refused(super::Refused),
}

impl Failure {
    /// The failure a client error stands for, from its kind, never its text.
    pub fn from_reqwest(e: &reqwest::Error) -> Self {
        // A resolver's or redirect policy's refusal arrives wrapped as a connect or redirect
        // error.
        if let Some(refused) = super::outbound::refusal(e) {
            Failure::Refused(refused)
        } else if e.is_timeout() {
            Failure::Timeout
        } else if e.is_connect() {
            Failure::Connect { io: io_kind(e) }
        } else if e.is_redirect() {
            Failure::Redirect
        } else if e.is_builder() {
            Failure::Request
        } else {
            Failure::Transport { io: io_kind(e) }
        }
    }
}

/// The kind of the first I/O error under `e`: a fixed phrase such as "connection refused",
/// where the errors' own text may carry the URL.
fn io_kind(e: &reqwest::Error) -> Option<std::io::ErrorKind> {
    let mut source = std::error::Error::source(e);
    while let Some(err) = source {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            return Some(io.kind());
        }
        source = err.source();
    }
    None
}

fn cause(io: Option<std::io::ErrorKind>) -> String {
    io.map(|kind| format!(" ({kind})")).unwrap_or_default()
}

/// The one decision for every HTTP failure.
///
/// Statuses: `408` is `timeout`; `429` is `rate_limited`; `5xx` is `upstream_unavailable`,
/// except `501` (the server will never do this), which is permanent like every other `4xx`:
/// `401` `unauthorized`, `403` `forbidden`, `404`/`410` `not_found`, `409`/`412` `conflict`,
/// the rest (and any `1xx`–`3xx` the caller did not accept) `invalid_input`.
/// Timeouts are `timeout`, connection failures `upstream_unavailable`, both retryable; a
/// destination the outbound policy refuses is `forbidden`.
pub fn classify(failure: &Failure) -> Verdict {
    match failure {
        Failure::Status {
            status,
            retry_after,
        } => Verdict::new(code_for_status(*status), *retry_after),
        Failure::Rejected { verdict, .. } => *verdict,
        Failure::Timeout => Verdict::new(ErrorCode::Timeout, None),
        Failure::Connect { .. } | Failure::Transport { .. } => {
            Verdict::new(ErrorCode::UpstreamUnavailable, None)
        }
        // Same inputs, same redirects, same body: another attempt ends the same way.
        Failure::Redirect | Failure::TooLarge { .. } | Failure::Request => {
            Verdict::new(ErrorCode::InvalidInput, None)
        }
        // Policy, not the provider: permanent until an operator opens the destination.
        Failure::Refused(_) => Verdict::new(ErrorCode::Forbidden, None),
    }
}

fn code_for_status(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 | 410 => ErrorCode::NotFound,
        409 | 412 => ErrorCode::Conflict,
        408 => ErrorCode::Timeout,
        429 => ErrorCode::RateLimited,
        501 => ErrorCode::InvalidInput,
        500..=599 => ErrorCode::UpstreamUnavailable,
        _ => ErrorCode::InvalidInput,
    }
}

/// A connector's own reading of its provider's responses, for providers that bend HTTP.
///
/// [`super::send`] consults it for every response it reads, accepted or not, before the
/// generic status rules.
pub trait Quirks: Send + Sync {
    /// `Some(verdict)` makes this response a failure with that verdict; `None` leaves it to
    /// the generic rules. `body` is the whole body of an accepted response, or the first
    /// [`super::ERROR_BODY_BYTES`] of any other.
    fn judge(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Verdict>;
}

/// The generic rules alone, for providers that use HTTP as specified.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoQuirks;

impl Quirks for NoQuirks {
    fn judge(&self, _: StatusCode, _: &HeaderMap, _: &[u8]) -> Option<Verdict> {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: u16) -> Failure {
        Failure::Status {
            status: StatusCode::from_u16(code).expect("status"),
            retry_after: Some(Duration::from_secs(1)),
        }
    }

    #[test]
    fn retryable_statuses_are_408_429_and_5xx_but_501() {
        for s in [408, 429, 500, 502, 503, 504, 505] {
            assert_eq!(
                classify(&status(s)).classification(),
                Classification::Retryable {
                    after: Some(Duration::from_secs(1))
                },
                "{s}"
            );
        }
        for s in [200, 302, 400, 401, 403, 404, 405, 409, 413, 422, 501] {
            assert_eq!(
                classify(&status(s)).classification(),
                Classification::Permanent,
                "{s}"
            );
        }
    }

    #[test]
    fn statuses_map_to_the_stable_codes() {
        for (s, code) in [
            (400, ErrorCode::InvalidInput),
            (401, ErrorCode::Unauthorized),
            (403, ErrorCode::Forbidden),
            (404, ErrorCode::NotFound),
            (409, ErrorCode::Conflict),
            (422, ErrorCode::InvalidInput),
            (429, ErrorCode::RateLimited),
            (500, ErrorCode::UpstreamUnavailable),
            (501, ErrorCode::InvalidInput),
        ] {
            assert_eq!(classify(&status(s)).code(), code, "{s}");
        }
    }

    #[test]
    fn permanent_verdicts_carry_no_wait() {
        assert_eq!(classify(&status(400)).retry_after(), None);
    }

    #[test]
    fn network_failures_are_retryable_and_oversized_bodies_are_not() {
        assert_eq!(classify(&Failure::Timeout).code(), ErrorCode::Timeout);
        assert_eq!(
            classify(&Failure::Connect { io: None }).code(),
            ErrorCode::UpstreamUnavailable
        );
        assert_eq!(
            classify(&Failure::Transport { io: None }).classification(),
            Classification::Retryable { after: None }
        );
        assert_eq!(
            classify(&Failure::TooLarge { limit: 1 }).classification(),
            Classification::Permanent
        );
    }

    /// Slack answers `200` with `{"ok": false, "error": "..."}` for failures.
    struct SlackLike;

    impl Quirks for SlackLike {
        fn judge(&self, _: StatusCode, _: &HeaderMap, body: &[u8]) -> Option<Verdict> {
            let body: serde_json::Value = serde_json::from_slice(body).ok()?;
            if body["ok"] != false {
                return None;
            }
            let code = match body["error"].as_str() {
                Some("ratelimited") => ErrorCode::RateLimited,
                Some("invalid_auth" | "not_authed") => ErrorCode::Unauthorized,
                Some("token_revoked") => ErrorCode::ConnectionRevoked,
                _ => ErrorCode::InvalidInput,
            };
            Some(Verdict::new(code, None))
        }
    }

    #[test]
    fn quirks_turn_a_200_with_ok_false_into_a_classified_failure() {
        let judge =
            |body: &str| SlackLike.judge(StatusCode::OK, &HeaderMap::new(), body.as_bytes());
        assert_eq!(judge(r#"{"ok": true}"#), None);
        let revoked = judge(r#"{"ok": false, "error": "token_revoked"}"#).expect("a failure");
        assert_eq!(revoked.code(), ErrorCode::ConnectionRevoked);
        let limited = Failure::Rejected {
            status: StatusCode::OK,
            verdict: judge(r#"{"ok": false, "error": "ratelimited"}"#).expect("a failure"),
        };
        assert_eq!(
            classify(&limited).classification(),
            Classification::Retryable { after: None }
        );
    }
}
