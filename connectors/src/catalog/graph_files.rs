//! What the OneDrive and Excel connectors share on Microsoft Graph
//! (<https://learn.microsoft.com/en-us/graph/errors>): the drive a request addresses, and
//! the reading of Graph's errors.
//!
//! Graph answers failures with an HTTP status and `{"error": {"code", "message",
//! "innerError": {…}}}`, where `innerError` may nest more specific codes (the workbook API's
//! `transientFailure`, for one). Throttling is `429` (sometimes `503`) with `Retry-After`,
//! which the generic rules already read. [`GraphQuirks`] corrects what the status alone gets
//! wrong:
//! - `507 Insufficient Storage` (`quotaLimitReached`) is not an outage: the drive is full, and
//!   another attempt fails the same way, so it is `forbidden`;
//! - `423 Locked` (a file open for editing, a checked-out item) is `conflict`, not a bad
//!   request;
//! - `activityLimitReached` is `rate_limited` whatever the status;
//! - a workbook `transientFailure` is `upstream_unavailable` (retryable) whatever the status.
//!
//! Reference for the workbook codes: <https://learn.microsoft.com/en-us/graph/workbook-error-codes>.

use std::time::SystemTime;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schemas::envelope::ErrorCode;
use serde_json::Value;

use crate::http::{Quirks, Verdict, ratelimit};

/// The Graph API version every request uses.
pub const VERSION: &str = "v1.0";

/// The path of a drive: the signed-in user's (`/v1.0/me/drive`), or the one with `drive_id`
/// (`/v1.0/drives/{drive-id}`, a SharePoint library or another user's drive).
pub fn drive_path(drive_id: Option<&str>) -> Vec<&str> {
    match drive_id {
        Some(id) => vec![VERSION, "drives", id],
        None => vec![VERSION, "me", "drive"],
    }
}

/// Graph's error body, read for [`GraphQuirks`].
#[derive(Debug)]
pub struct GraphQuirks;

impl Quirks for GraphQuirks {
    fn judge(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Verdict> {
        if status.is_success() {
            return None;
        }
        let wait = || ratelimit::wait_hint(status, headers, SystemTime::now());
        let error = serde_json::from_slice::<Value>(body)
            .map(|b| b["error"].clone())
            .unwrap_or(Value::Null);
        let codes = error_codes(&error);
        let has = |code: &str| codes.iter().any(|c| c.eq_ignore_ascii_case(code));
        if status == StatusCode::INSUFFICIENT_STORAGE || has("quotaLimitReached") {
            return Some(Verdict::new(ErrorCode::Forbidden, None));
        }
        if has("activityLimitReached") {
            return Some(Verdict::new(ErrorCode::RateLimited, wait()));
        }
        if has("transientFailure") {
            return Some(Verdict::new(ErrorCode::UpstreamUnavailable, wait()));
        }
        if status == StatusCode::LOCKED {
            return Some(Verdict::new(ErrorCode::Conflict, None));
        }
        None
    }
}

/// `error.code` and the codes of every nested `innerError`, outermost first.
fn error_codes(error: &Value) -> Vec<&str> {
    let mut codes = Vec::new();
    let mut at = error;
    // Graph nests a handful of levels; the bound keeps a hostile body from costing much.
    for _ in 0..8 {
        if let Some(code) = at["code"].as_str() {
            codes.push(code);
        }
        match at.get("innerError").or_else(|| at.get("innererror")) {
            Some(inner) if inner.is_object() => at = inner,
            _ => break,
        }
    }
    codes
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn judge(status: u16, body: Value) -> Option<ErrorCode> {
        GraphQuirks
            .judge(
                StatusCode::from_u16(status).expect("status"),
                &HeaderMap::new(),
                body.to_string().as_bytes(),
            )
            .map(|v| v.code())
    }

    #[test]
    fn statuses_the_generic_rules_misread_are_corrected() {
        let full = json!({ "error": { "code": "quotaLimitReached", "message": "Insufficient Space Available" } });
        assert_eq!(judge(507, full), Some(ErrorCode::Forbidden));
        let locked = json!({ "error": { "code": "resourceLocked", "message": "The resource you are attempting to access is locked" } });
        assert_eq!(judge(423, locked), Some(ErrorCode::Conflict));
    }

    #[test]
    fn nested_workbook_codes_are_read() {
        let transient = json!({ "error": { "code": "conflict", "message": "x",
            "innerError": { "code": "transientFailure", "message": "y" } } });
        assert_eq!(judge(409, transient), Some(ErrorCode::UpstreamUnavailable));
        let other = json!({ "error": { "code": "itemNotFound", "message": "x" } });
        assert_eq!(judge(404, other), None);
        assert_eq!(judge(500, json!("not an error document")), None);
    }
}
