//! Failure classification for every HTTP connector, decided from status codes and error kinds.

use std::time::{Duration, SystemTime};

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

/// The error code for an HTTP status that is a failure.
pub fn code_for_status(status: u16) -> ErrorCode {
    match status {
        401 => ErrorCode::Unauthorized,
        403 => ErrorCode::Forbidden,
        404 | 410 => ErrorCode::NotFound,
        409 | 412 => ErrorCode::Conflict,
        408 | 504 => ErrorCode::Timeout,
        429 => ErrorCode::RateLimited,
        500..=599 if status != 501 => ErrorCode::UpstreamUnavailable,
        _ => ErrorCode::InvalidInput,
    }
}

/// Retry 408, 429 and 5xx except 501; everything else is permanent.
pub fn classify(status: u16, headers: &HeaderMap) -> Classification {
    let retryable =
        status == 408 || status == 429 || ((500..=599).contains(&status) && status != 501);
    if retryable {
        Classification::Retryable {
            after: retry_after(headers, SystemTime::now()),
        }
    } else {
        Classification::Permanent
    }
}

/// The wait a response asks for: `Retry-After` (seconds or HTTP-date), else a rate-limit
/// reset header. Garbage values are ignored rather than trusted.
pub fn retry_after(headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let get = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
    };
    if let Some(v) = get("retry-after") {
        if let Ok(secs) = v.parse::<u64>() {
            return Some(Duration::from_secs(secs.min(86_400)));
        }
        if let Ok(at) = httpdate_parse(v) {
            return Some(at.duration_since(now).unwrap_or_default());
        }
    }
    for name in ["ratelimit-reset", "x-ratelimit-reset"] {
        if let Some(secs) = get(name).and_then(|v| v.parse::<u64>().ok()) {
            // Providers disagree: some send seconds until reset, others the reset instant in
            // epoch seconds. A value larger than a day cannot be a delay, so it is an instant.
            if secs > 86_400 {
                let at = SystemTime::UNIX_EPOCH + Duration::from_secs(secs);
                return Some(
                    at.duration_since(now)
                        .unwrap_or_default()
                        .min(Duration::from_secs(86_400)),
                );
            }
            return Some(Duration::from_secs(secs));
        }
    }
    None
}

/// Parses an IMF-fixdate (`Sun, 06 Nov 1994 08:49:37 GMT`), the only form senders must use.
fn httpdate_parse(v: &str) -> Result<SystemTime, ()> {
    let dt = chrono::DateTime::parse_from_rfc2822(v).map_err(|_| ())?;
    let secs = u64::try_from(dt.timestamp()).map_err(|_| ())?;
    Ok(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header"));
        }
        h
    }

    #[test]
    fn statuses_classify_as_documented() {
        let none = HeaderMap::new();
        for s in [408, 429, 500, 502, 503, 504] {
            assert!(
                matches!(classify(s, &none), Classification::Retryable { .. }),
                "{s}"
            );
        }
        for s in [400, 401, 403, 404, 409, 422, 501] {
            assert_eq!(classify(s, &none), Classification::Permanent, "{s}");
        }
        assert_eq!(code_for_status(429), ErrorCode::RateLimited);
        assert_eq!(code_for_status(400), ErrorCode::InvalidInput);
        assert_eq!(code_for_status(501), ErrorCode::InvalidInput);
    }

    #[test]
    fn retry_after_seconds_and_dates_are_read() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777);
        assert_eq!(
            retry_after(&headers(&[("retry-after", "2")]), now),
            Some(Duration::from_secs(2))
        );
        assert_eq!(
            retry_after(
                &headers(&[("retry-after", "Sun, 06 Nov 1994 08:49:47 GMT")]),
                now
            ),
            Some(Duration::from_secs(10))
        );
        assert_eq!(retry_after(&headers(&[("retry-after", "soon")]), now), None);
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", "30")]), now),
            Some(Duration::from_secs(30))
        );
        assert_eq!(
            retry_after(&headers(&[("x-ratelimit-reset", "784111807")]), now),
            Some(Duration::from_secs(30))
        );
    }
}
