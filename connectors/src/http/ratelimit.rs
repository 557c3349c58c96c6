//! How long a provider asks us to wait: `Retry-After` and the rate-limit reset headers.
//!
//! Every value comes from a server we do not control, so each parser accepts only what it
//! can read unambiguously, returns `None` for anything else, and caps the wait at
//! [`MAX_WAIT`].

use std::time::{Duration, SystemTime};

use reqwest::StatusCode;
use reqwest::header::HeaderMap;

/// The longest wait we take from a provider. A longer one is a misconfigured or hostile
/// server; the step's retry policy still bounds how long a run keeps trying.
pub const MAX_WAIT: Duration = Duration::from_secs(24 * 60 * 60);

/// Reset values up to this many seconds are a delay (`30` = in thirty seconds).
const DELAY_LIMIT_SECS: f64 = 24.0 * 60.0 * 60.0;

/// Reset values from this many seconds on are a Unix time (`1_000_000_000` is September 2001).
const EPOCH_FLOOR_SECS: f64 = 1_000_000_000.0;

/// Reads a `Retry-After` value: delta-seconds (`120`) or an HTTP-date
/// (`Sun, 06 Nov 1994 08:49:37 GMT`, or the two obsolete forms recipients must still accept).
///
/// A date in the past means "now" (zero). Anything else (negative or fractional numbers,
/// words, empty) is `None`.
pub fn parse_retry_after(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    if !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit()) {
        // Digits too many for a u64 still mean "a very long time".
        let secs = value.parse::<u64>().unwrap_or(u64::MAX);
        return Some(Duration::from_secs(secs).min(MAX_WAIT));
    }
    let at = httpdate::parse_http_date(value).ok()?;
    Some(until(at, now))
}

/// Reads a `RateLimit-Reset` or `X-RateLimit-Reset` value.
///
/// No standard settles what these carry: GitHub and Twitter send the reset instant in Unix
/// seconds, the IETF draft and many gateways send seconds until the reset. The heuristic:
/// - up to one day (`86400`) is a delay in seconds, since no real window is longer;
/// - from `1_000_000_000` (September 2001) on is a Unix time, since no delay is that long;
/// - in between fits neither and is ignored.
///
/// Fractional seconds (`1.5`, `1700000000.250`) are accepted, as some providers send them.
/// A reset instant in the past means "now" (zero).
pub fn parse_reset(value: &str, now: SystemTime) -> Option<Duration> {
    let value = value.trim();
    // `f64::from_str` also reads `inf`, `NaN` and exponents; providers send plain decimals.
    if value.is_empty() || !value.bytes().all(|b| b.is_ascii_digit() || b == b'.') {
        return None;
    }
    let secs: f64 = value.parse().ok()?;
    if secs <= DELAY_LIMIT_SECS {
        return Duration::try_from_secs_f64(secs).ok();
    }
    if secs >= EPOCH_FLOOR_SECS {
        let at = SystemTime::UNIX_EPOCH.checked_add(Duration::try_from_secs_f64(secs).ok()?)?;
        return Some(until(at, now));
    }
    None
}

/// The wait a failed response asks for, or `None` when it says nothing readable.
///
/// `Retry-After` counts for every status. The reset headers count only on `429`: providers
/// such as GitHub send them on every response as the end of the current quota window, and a
/// `503` is no reason to wait for that window to close.
pub fn wait_hint(status: StatusCode, headers: &HeaderMap, now: SystemTime) -> Option<Duration> {
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(wait) = header("retry-after").and_then(|v| parse_retry_after(v, now)) {
        return Some(wait);
    }
    if status != StatusCode::TOO_MANY_REQUESTS {
        return None;
    }
    ["ratelimit-reset", "x-ratelimit-reset"]
        .into_iter()
        .find_map(|name| header(name).and_then(|v| parse_reset(v, now)))
}

fn until(at: SystemTime, now: SystemTime) -> Duration {
    at.duration_since(now).unwrap_or_default().min(MAX_WAIT)
}

#[cfg(test)]
mod tests {
    use super::*;
    use reqwest::header::HeaderValue;

    /// `Sun, 06 Nov 1994 08:49:37 GMT`, the example date of the HTTP specification.
    fn now() -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(784_111_777)
    }

    fn secs(n: u64) -> Option<Duration> {
        Some(Duration::from_secs(n))
    }

    #[test]
    fn retry_after_reads_delta_seconds() {
        assert_eq!(parse_retry_after("2", now()), secs(2));
        assert_eq!(parse_retry_after(" 120 ", now()), secs(120));
        assert_eq!(parse_retry_after("0", now()), secs(0));
    }

    #[test]
    fn retry_after_reads_all_three_http_date_forms() {
        for date in [
            "Sun, 06 Nov 1994 08:49:47 GMT",
            "Sunday, 06-Nov-94 08:49:47 GMT",
            "Sun Nov  6 08:49:47 1994",
        ] {
            assert_eq!(parse_retry_after(date, now()), secs(10), "{date}");
        }
    }

    #[test]
    fn retry_after_date_in_the_past_means_now() {
        assert_eq!(
            parse_retry_after("Sun, 06 Nov 1994 08:00:00 GMT", now()),
            secs(0)
        );
    }

    #[test]
    fn retry_after_is_capped_at_a_day() {
        assert_eq!(parse_retry_after("999999", now()), Some(MAX_WAIT));
        assert_eq!(
            parse_retry_after("99999999999999999999999", now()),
            Some(MAX_WAIT)
        );
        assert_eq!(
            parse_retry_after("Fri, 01 Jan 2100 00:00:00 GMT", now()),
            Some(MAX_WAIT)
        );
    }

    #[test]
    fn retry_after_garbage_is_ignored() {
        for v in [
            "",
            "soon",
            "-5",
            "1.5",
            "2s",
            "0x10",
            "Sun, 32 Nov 1994 08:49:37 GMT",
        ] {
            assert_eq!(parse_retry_after(v, now()), None, "{v:?}");
        }
    }

    #[test]
    fn reset_up_to_a_day_is_a_delay() {
        assert_eq!(parse_reset("30", now()), secs(30));
        assert_eq!(parse_reset("86400", now()), secs(86_400));
        assert_eq!(parse_reset("1.5", now()), Some(Duration::from_millis(1500)));
    }

    #[test]
    fn reset_from_2001_on_is_a_unix_time() {
        assert_eq!(parse_reset("784111807", now()), None, "1994 is neither");
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        assert_eq!(parse_reset("1700000030", now), secs(30));
        assert_eq!(
            parse_reset("1700000000.250", now),
            Some(Duration::from_millis(250))
        );
        assert_eq!(parse_reset("1600000000", now), secs(0), "past means now");
        assert_eq!(parse_reset("1800000000", now), Some(MAX_WAIT));
    }

    #[test]
    fn reset_garbage_is_ignored() {
        for v in ["", "soon", "-5", "1e3", "inf", "NaN", "1.2.3", "500000"] {
            assert_eq!(parse_reset(v, now()), None, "{v:?}");
        }
    }

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).expect("header value"));
        }
        h
    }

    #[test]
    fn retry_after_wins_over_reset_headers() {
        let h = headers(&[("retry-after", "5"), ("x-ratelimit-reset", "60")]);
        assert_eq!(wait_hint(StatusCode::TOO_MANY_REQUESTS, &h, now()), secs(5));
    }

    #[test]
    fn reset_headers_count_only_on_429() {
        let h = headers(&[("ratelimit-reset", "60"), ("x-ratelimit-reset", "90")]);
        assert_eq!(
            wait_hint(StatusCode::TOO_MANY_REQUESTS, &h, now()),
            secs(60)
        );
        assert_eq!(wait_hint(StatusCode::SERVICE_UNAVAILABLE, &h, now()), None);
    }

    #[test]
    fn garbage_retry_after_falls_back_to_reset() {
        let h = headers(&[("retry-after", "later"), ("x-ratelimit-reset", "7")]);
        assert_eq!(wait_hint(StatusCode::TOO_MANY_REQUESTS, &h, now()), secs(7));
    }
}
