//! Executing an action: the context it runs in, and dispatch to its connector.

use std::time::Duration;

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
    /// The HTTP client (from [`http::new_client`]), shared by the actions of one runtime; its
    /// [`http::OutboundPolicy`] decides which destinations the action may reach.
    pub http: http::Client,
    /// The step's connection's credentials, opened for this call only.
    pub credential: Option<std::sync::Arc<crate::credential::Credential>>,
    /// The connection's base URL, replacing the manifest's default (tests, self-hosted
    /// editions such as GitHub Enterprise or GitLab self-managed).
    pub base_url: Option<reqwest::Url>,
    /// The connection's fleet-wide request budget, admitting each request an action sends.
    pub gate: Option<std::sync::Arc<dyn crate::sdk::RequestGate>>,
}

impl Default for ActionContext {
    /// A 30 s timeout, no idempotency key or trace, [`http::DEFAULT_MAX_RESPONSE_BYTES`], and a
    /// new client refusing every internal address (so a `rustls` crypto provider must be
    /// installed first, see [`http::new_client`]).
    fn default() -> Self {
        ActionContext {
            timeout: Duration::from_secs(30),
            idempotency_key: None,
            traceparent: None,
            max_response_bytes: http::DEFAULT_MAX_RESPONSE_BYTES,
            http: http::new_client(http::OutboundPolicy::default()),
            credential: None,
            base_url: None,
            gate: None,
        }
    }
}

/// Runs `connector.action` of a built-in connector with its rendered inputs (the step's
/// `with`) and returns its output. See [`crate::Registry::execute`].
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
    crate::Registry::builtin()
        .execute(ctx, connector, action, input)
        .await
}
