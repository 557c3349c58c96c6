//! Executing an action: the closed set of actions that run today, in one `match`.

use std::time::Duration;

use schemas::envelope::ErrorCode;
use serde_json::Value;

use crate::error::ActionError;
use crate::http;

/// What an action runs with besides its inputs.
#[derive(Debug, Clone)]
pub struct ActionContext {
    /// Upper bound on the whole call, connecting through reading the last byte.
    pub timeout: Duration,
    /// Key for providers that deduplicate writes, derived from the run and step so every
    /// attempt of a step sends the same one.
    pub idempotency_key: Option<String>,
    /// W3C trace context (`traceparent`) to forward, so the provider's logs join the run's trace.
    pub traceparent: Option<String>,
    /// Cap on a response body, in bytes; a larger response fails without being read whole.
    pub max_response_bytes: usize,
    /// The HTTP client (from [`http::new_client`]), shared by the actions of one runtime.
    pub http: reqwest::Client,
    /// The step's connection's credentials, opened for this call only.
    pub credential: Option<std::sync::Arc<crate::credential::Credential>>,
}

impl Default for ActionContext {
    /// A 30 s timeout, no idempotency key or trace, [`http::DEFAULT_MAX_RESPONSE_BYTES`], and a
    /// new client (so a `rustls` crypto provider must be installed first, see
    /// [`http::new_client`]).
    fn default() -> Self {
        ActionContext {
            timeout: Duration::from_secs(30),
            idempotency_key: None,
            traceparent: None,
            max_response_bytes: http::DEFAULT_MAX_RESPONSE_BYTES,
            http: http::new_client(),
            credential: None,
        }
    }
}

/// Runs `connector.action` with its rendered inputs (the step's `with`) and returns its output.
///
/// Only `http.request` executes today ([`http::request`] documents its inputs and output);
/// any other name is `invalid_input`.
///
/// ```no_run
/// # async fn example() {
/// use schemas::envelope::ErrorCode;
///
/// let ctx = connectors::ActionContext::default();
/// let input = serde_json::json!({ "url": "https://api.example.com/people", "query": { "limit": 10 } });
/// match connectors::execute(&ctx, "http", "request", input).await {
///     Ok(output) => println!("status {}", output["status"]),
///     Err(e) if e.is_retryable() => println!("try again after {:?}: {e}", e.retry_after),
///     Err(e) if e.code == ErrorCode::Unauthorized => println!("reconnect the account: {e}"),
///     Err(e) => println!("failed for good: {e}"),
/// }
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
