//! `webhook`: a JSON notification posted to a receiver of your own, optionally signed.
//!
//! The receiver is the connection's `base_url` (there is no default), plus the step's
//! optional `path`. Every delivery carries `Idempotency-Key` (the step's key, the same for
//! every attempt) so a receiver can drop a retried duplicate.
//!
//! Authentication follows the connection's auth type (a connection always holds one):
//! - `bearer`, `basic`, `headers`: applied to the request as usual, for receivers behind
//!   their own authentication;
//! - `api_key`: the key is the **signing secret** and is never sent (its `in` and `name` are
//!   not used). Each delivery carries `X-Switchyard-Timestamp: <unix seconds>` and
//!   `X-Switchyard-Signature: sha256=<hex>`, the HMAC-SHA256 under the secret of
//!   `<timestamp>.<body>` (the body exactly as sent). A receiver recomputes it, compares in
//!   constant time, and refuses stale timestamps to stop replays.
//!
//! Any `2xx` is a delivery; other statuses are classified by the generic rules (`429` and
//! `5xx` retried, with `Retry-After`).

use reqwest::{Method, Url};
use schemars::JsonSchema;
use schemas::envelope::ErrorCode;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::credential::Credential;
use crate::error::ActionError;
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector, output, parse_input, unix_now};

/// The header carrying the signature.
pub const SIGNATURE_HEADER: &str = "X-Switchyard-Signature";
/// The header carrying the signed timestamp.
pub const TIMESTAMP_HEADER: &str = "X-Switchyard-Timestamp";

/// The outbound webhook connector.
#[derive(Debug)]
pub struct Webhook(Manifest);

impl Default for Webhook {
    fn default() -> Self {
        Self::new()
    }
}

impl Webhook {
    /// Its manifest: no default base URL (each connection names its receiver).
    pub fn new() -> Self {
        Webhook(
            Manifest::new("webhook", "Outbound webhook", Category::Communication)
                .auth(&[
                    AuthType::ApiKey,
                    AuthType::Bearer,
                    AuthType::Basic,
                    AuthType::Headers,
                ])
                // A polite default for a receiver of unknown capacity; connections set their own.
                .rate_limit(RateLimit::per_second(10).with_burst(10))
                .action(
                    ActionManifest::write("notify", "POST a JSON payload to the receiver")
                        .idempotency_key("Idempotency-Key")
                        .input::<Notify>()
                        .output::<Delivery>(),
                ),
        )
    }
}

/// `notify` inputs.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Notify {
    /// The JSON body to post.
    pub payload: Value,
    /// Path under the connection's base URL, e.g. `hooks/orders` (each segment
    /// percent-encoded; no `.` or `..` segments).
    pub path: Option<String>,
}

/// The receiver's answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Delivery {
    /// HTTP status.
    pub status: u16,
    /// The response body: JSON when it parses, else text, `null` when empty.
    pub body: Value,
}

#[async_trait::async_trait]
impl Connector for Webhook {
    fn manifest(&self) -> &Manifest {
        &self.0
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        match action {
            "notify" => notify(call, parse_input(input)?).await,
            _ => Err(call.unknown_action(action)),
        }
    }

    /// Nothing to check: a receiver has no identity call, and a test delivery would be a
    /// real notification.
    async fn health(&self, _call: &Call<'_>) -> Result<(), ActionError> {
        Ok(())
    }
}

/// The receiver's URL: base URL plus `path`.
fn target(call: &Call<'_>, path: Option<&str>) -> Result<Url, ActionError> {
    let segments: Vec<&str> = path
        .unwrap_or_default()
        .split('/')
        .filter(|s| !s.is_empty())
        .collect();
    if segments.iter().any(|s| *s == "." || *s == "..") {
        return Err(ActionError::invalid_input(
            "path",
            "cannot hold `.` or `..` segments",
        ));
    }
    Ok(call.url(&segments))
}

/// `sha256=<hex>`: HMAC-SHA256 under `secret` of `<timestamp>.<body>`.
pub fn signature(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    use std::fmt::Write as _;
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret);
    let mut context = ring::hmac::Context::with_key(&key);
    context.update(timestamp.to_string().as_bytes());
    context.update(b".");
    context.update(body);
    let tag = context.sign();
    let mut out = String::from("sha256=");
    for byte in tag.as_ref() {
        let _ = write!(out, "{byte:02x}");
    }
    out
}

async fn notify(call: &Call<'_>, input: Notify) -> Result<Value, ActionError> {
    let url = target(call, input.path.as_deref())?;
    let body = serde_json::to_vec(&input.payload)
        .map_err(|e| ActionError::new(ErrorCode::Internal, format!("encoding the payload: {e}")))?;
    let mut request = match call.ctx.credential.as_deref() {
        // The signing secret signs; it never travels.
        Some(Credential::ApiKey { value, .. }) => {
            let timestamp = unix_now();
            call.request_unauthenticated(Method::POST, url)
                .header(TIMESTAMP_HEADER, timestamp.to_string())
                .header(
                    SIGNATURE_HEADER,
                    signature(value.as_bytes(), timestamp, &body),
                )
        }
        _ => call.request_url(Method::POST, url),
    };
    if let Some(key) = call.idempotency_key() {
        request = request.header("Idempotency-Key", key);
    }
    let response = call
        .send(
            request
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(body),
        )
        .await?;
    let body = if response.body.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&response.body)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&response.body).into_owned()))
    };
    output(&Delivery {
        status: response.status.as_u16(),
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signature_is_hmac_sha256_of_timestamp_dot_body_in_hex() {
        // Python: hmac.new(b"Jefe", b'1700000000.{"a":1}', hashlib.sha256).hexdigest()
        assert_eq!(
            signature(b"Jefe", 1_700_000_000, br#"{"a":1}"#),
            "sha256=fa5f6481efc59da48b19c9dc10196c9953e5651f8304b3a318b6b87d70272e0a"
        );
    }
}
