//! What the Microsoft Graph connectors (Teams, Outlook) share: the error format, throttling,
//! the identity call and `@odata.nextLink` paging.
//!
//! Graph (<https://learn.microsoft.com/graph/errors>) answers failures with the HTTP status
//! and `{"error": {"code": "…", "message": "…", "innerError": {…}}}`. Throttling is `429`
//! with `Retry-After` (<https://learn.microsoft.com/graph/throttling>), which the generic
//! rules already read; some workloads report throttling under another status with a
//! throttling `error.code` (Outlook's `ApplicationThrottled` and `MailboxConcurrency`,
//! OneDrive's `activityLimitReached`), which [`GraphQuirks`] turns into `rate_limited`.
//! Collections page with `@odata.nextLink`, an absolute URL on the same host.

use std::time::SystemTime;

use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schemas::envelope::ErrorCode;
use serde_json::Value;

use crate::error::ActionError;
use crate::http::{Quirks, Verdict, ratelimit};
use crate::sdk::{Call, Page};

/// Graph's default host; requests go to `/v1.0/…` under it.
pub const GRAPH_BASE_URL: &str = "https://graph.microsoft.com";

/// The API version segment of every request.
pub const VERSION: &str = "v1.0";

/// `error.code` values Graph workloads use for throttling, whatever the status.
const THROTTLING_CODES: &[&str] = &[
    "TooManyRequests",
    "ApplicationThrottled",
    "MailboxConcurrency",
    "activityLimitReached",
    "throttledRequest",
];

/// Graph's throttling codes on statuses other than `429`.
#[derive(Debug)]
pub struct GraphQuirks;

impl Quirks for GraphQuirks {
    fn judge(&self, status: StatusCode, headers: &HeaderMap, body: &[u8]) -> Option<Verdict> {
        if status.is_success() || status == StatusCode::TOO_MANY_REQUESTS {
            return None;
        }
        let code = error_code(body)?;
        THROTTLING_CODES.contains(&code.as_str()).then(|| {
            Verdict::new(
                ErrorCode::RateLimited,
                ratelimit::wait_hint(status, headers, SystemTime::now()),
            )
        })
    }
}

/// `error.code` of a Graph error body.
pub fn error_code(body: &[u8]) -> Option<String> {
    let body: Value = serde_json::from_slice(body).ok()?;
    body["error"]["code"].as_str().map(str::to_owned)
}

/// The health call of a Graph connection: `GET /v1.0/me` for a delegated (user) token; an
/// app-only token has no `/me` (Graph answers `400`), so it reads `/v1.0/organization`.
pub async fn health(call: &Call<'_>) -> Result<(), ActionError> {
    let me = call
        .send(call.get(&[VERSION, "me"]).query(&[("$select", "id")]))
        .await;
    match me {
        Ok(_) => Ok(()),
        Err(e) if e.status == Some(400) => call
            .send(
                call.get(&[VERSION, "organization"])
                    .query(&[("$select", "id")]),
            )
            .await
            .map(drop),
        Err(e) => Err(e),
    }
}

/// A Graph `itemBody`: `{"contentType": "text"|"html", "content": …}`, from `text` or
/// `html` (exactly one).
pub fn item_body(text: Option<String>, html: Option<String>) -> Result<Value, ActionError> {
    let (content_type, content) = match (text, html) {
        (Some(text), None) => ("text", text),
        (None, Some(html)) => ("html", html),
        _ => {
            return Err(ActionError::invalid_input(
                "text",
                "give `text` or `html`, exactly one",
            ));
        }
    };
    Ok(serde_json::json!({ "contentType": content_type, "content": content }))
}

/// One page of a Graph collection: `value` and `@odata.nextLink`.
pub fn page(answer: &Value) -> Page {
    Page {
        items: answer["value"].as_array().cloned().unwrap_or_default(),
        next: answer["@odata.nextLink"].as_str().map(str::to_owned),
    }
}

/// The text field `field` of a Graph answer, or `upstream_unavailable`.
pub fn text(value: &Value, field: &str) -> Result<String, ActionError> {
    value[field].as_str().map(str::to_owned).ok_or_else(|| {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            format!("Microsoft Graph's answer has no `{field}`"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttling_codes_are_rate_limits_whatever_the_status() {
        let mut headers = HeaderMap::new();
        headers.insert(
            "retry-after",
            reqwest::header::HeaderValue::from_static("7"),
        );
        let body = br#"{"error":{"code":"ApplicationThrottled","message":"Application is over its MailboxConcurrency limit."}}"#;
        let verdict = GraphQuirks
            .judge(StatusCode::SERVICE_UNAVAILABLE, &headers, body)
            .expect("a verdict");
        assert_eq!(verdict.code(), ErrorCode::RateLimited);
        assert_eq!(
            verdict.retry_after(),
            Some(std::time::Duration::from_secs(7))
        );
        let other = br#"{"error":{"code":"ErrorItemNotFound","message":"x"}}"#;
        assert_eq!(
            GraphQuirks.judge(StatusCode::NOT_FOUND, &headers, other),
            None
        );
        assert_eq!(GraphQuirks.judge(StatusCode::OK, &headers, body), None);
    }
}
