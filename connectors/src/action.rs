//! Executing an action: the closed set of actions that run today, in one `match`.

use std::time::Duration;

use schemas::envelope::ErrorCode;
use serde_json::Value;

use crate::error::ActionError;
use crate::http;

/// What an action runs with besides its inputs.
#[derive(Debug, Clone)]
pub struct ActionContext {
    /// Upper bound on the whole call.
    pub timeout: Duration,
    /// Key for providers that deduplicate writes, derived from the run and step.
    pub idempotency_key: Option<String>,
    /// W3C trace context to forward where the connector allows.
    pub traceparent: Option<String>,
    /// Cap on a response body.
    pub max_response_bytes: usize,
    /// The HTTP client (from [`http::new_client`]), shared by the actions of one runtime.
    pub http: reqwest::Client,
}

impl Default for ActionContext {
    fn default() -> Self {
        ActionContext {
            timeout: Duration::from_secs(30),
            idempotency_key: None,
            traceparent: None,
            max_response_bytes: http::DEFAULT_MAX_RESPONSE_BYTES,
            http: http::new_client(),
        }
    }
}

/// Runs `connector.action` with rendered inputs.
///
/// ```no_run
/// # async fn example() {
/// let ctx = connectors::ActionContext::default();
/// let out = connectors::execute(&ctx, "http", "request",
///     serde_json::json!({ "url": "https://example.com" })).await;
/// # }
/// ```
pub async fn execute(
    ctx: &ActionContext,
    connector: &str,
    action: &str,
    input: Value,
) -> Result<Value, ActionError> {
    match (connector, action) {
        ("http", "request") => http::request::execute(ctx, &input).await,
        _ => Err(ActionError::new(
            ErrorCode::InvalidInput,
            format!("connector `{connector}` has no executable action `{action}` yet"),
        )),
    }
}
