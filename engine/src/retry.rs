//! When a failed attempt is tried again.
//!
//! The delay comes from the step's policy (exponential with jitter) and is never shorter than
//! what the provider asked for (`Retry-After`, rate-limit reset). Retries are *scheduled*: the
//! step waits in the database with a due time and the worker that saw the failure is free at
//! once.

use std::time::Duration;

use backon::BackoffBuilder;
use schemas::definition::{RetryPolicy, Step};
use schemas::envelope::StepError;

/// Attempts when a step declares no `retry` policy.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

/// The policy a step runs under, with defaults filled in.
pub fn policy(step: &Step) -> RetryPolicy {
    step.retry.clone().unwrap_or(RetryPolicy {
        max_attempts: DEFAULT_MAX_ATTEMPTS,
        initial: None,
        max: None,
        multiplier: None,
    })
}

/// What to do after attempt `attempt` (1-based) failed with `error`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Try again after this delay.
    RetryAfter(Duration),
    /// Give up: the error is permanent or the attempts are used up.
    GiveUp,
}

/// Decides from the error's code (never its message) and the step's policy.
pub fn decide(policy: &RetryPolicy, attempt: u32, error: &StepError) -> Verdict {
    if !error.code.is_retryable() || attempt >= policy.max_attempts {
        return Verdict::GiveUp;
    }
    let backoff = delay(policy, attempt);
    let asked = error
        .retry_after_ms
        .map(Duration::from_millis)
        .unwrap_or_default();
    Verdict::RetryAfter(backoff.max(asked))
}

/// The policy's delay before attempt `attempt + 1`, with jitter.
pub fn delay(policy: &RetryPolicy, attempt: u32) -> Duration {
    let initial = policy.initial.unwrap_or(RetryPolicy::DEFAULT_INITIAL).get();
    let max = policy.max.unwrap_or(RetryPolicy::DEFAULT_MAX).get();
    let factor = policy.multiplier.unwrap_or(RetryPolicy::DEFAULT_MULTIPLIER) as f32;
    let mut delays = backon::ExponentialBuilder::default()
        .with_min_delay(initial)
        .with_max_delay(max)
        .with_factor(factor)
        .with_jitter()
        .with_max_times(attempt as usize)
        .build();
    // The n-th delay of the sequence belongs to the n-th retry.
    delays
        .nth(attempt.saturating_sub(1) as usize)
        .unwrap_or(max)
        .min(max)
}

#[cfg(test)]
mod tests {
    use super::*;
    use schemas::duration::Duration as Dur;
    use schemas::envelope::ErrorCode;

    fn error(code: ErrorCode, retry_after_ms: Option<u64>) -> StepError {
        StepError {
            http_status: None,
            code,
            message: String::new(),
            retry_after_ms,
        }
    }

    fn policy(max_attempts: u32) -> RetryPolicy {
        RetryPolicy {
            max_attempts,
            initial: Some(Dur::from_secs(1)),
            max: Some(Dur::from_secs(60)),
            multiplier: None,
        }
    }

    #[test]
    fn permanent_errors_are_not_retried() {
        assert_eq!(
            decide(&policy(5), 1, &error(ErrorCode::InvalidInput, None)),
            Verdict::GiveUp
        );
    }

    #[test]
    fn attempts_are_capped() {
        let e = error(ErrorCode::UpstreamUnavailable, None);
        assert!(matches!(decide(&policy(3), 2, &e), Verdict::RetryAfter(_)));
        assert_eq!(decide(&policy(3), 3, &e), Verdict::GiveUp);
    }

    #[test]
    fn retry_after_is_a_floor() {
        let e = error(ErrorCode::RateLimited, Some(30_000));
        assert!(
            matches!(decide(&policy(5), 1, &e), Verdict::RetryAfter(d) if d >= Duration::from_secs(30))
        );
    }

    #[test]
    fn delays_grow_and_stay_under_the_cap() {
        let p = policy(20);
        let first = delay(&p, 1);
        assert!(
            first >= Duration::from_secs(1) && first <= Duration::from_secs(2),
            "{first:?}"
        );
        for attempt in 1..20 {
            assert!(delay(&p, attempt) <= Duration::from_secs(60));
        }
        assert!(delay(&p, 8) >= Duration::from_secs(60));
    }
}
