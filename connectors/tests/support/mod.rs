//! What every connector test needs: a context pointed at a fake provider over real HTTP, with
//! a credential applied the way a worker applies a connection's.
#![allow(dead_code)]

use std::sync::{Arc, Once};
use std::time::Duration;

use anyhow::Result;
use connectors::{ActionContext, ActionError, Credential};
use serde_json::{Value, json};
use wiremock::MockServer;

/// Installs the TLS crypto provider once, as every binary does at start.
pub fn init() {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
}

/// A context whose connection points at `base` (the fake's URL, plus any path prefix the
/// provider's base URL has) and authenticates with `credential`.
pub fn ctx_at(base: &str, credential: Option<Credential>) -> ActionContext {
    init();
    ActionContext {
        timeout: Duration::from_secs(10),
        idempotency_key: Some("run-1:step-1".into()),
        credential: credential.map(Arc::new),
        base_url: Some(reqwest::Url::parse(base).unwrap_or_else(|e| panic!("{base}: {e}"))),
        // The fakes listen on 127.0.0.1, which the default policy refuses.
        http: connectors::http::new_client(connectors::http::OutboundPolicy::loopback()),
        ..ActionContext::default()
    }
}

/// A context on `server` with `credential`.
pub fn ctx(server: &MockServer, credential: Credential) -> ActionContext {
    ctx_at(&server.uri(), Some(credential))
}

/// A bearer token credential (what OAuth connections become once the worker has a token).
pub fn bearer(token: &str) -> Credential {
    credential("bearer", json!({}), json!({ "token": token }))
}

/// A basic-auth credential.
pub fn basic(username: &str, password: &str) -> Credential {
    credential(
        "basic",
        json!({}),
        json!({ "username": username, "password": password }),
    )
}

/// An API key in a header.
pub fn api_key_header(name: &str, key: &str) -> Credential {
    credential(
        "api_key",
        json!({ "in": "header", "name": name }),
        json!({ "key": key }),
    )
}

/// A credential of any type from its stored parts.
pub fn credential(auth_type: &str, config: Value, secret: Value) -> Credential {
    Credential::from_parts(auth_type, &config, &secret.to_string())
        .unwrap_or_else(|e| panic!("credential: {e}"))
}

/// Runs `connector.action`.
pub async fn run(
    ctx: &ActionContext,
    connector: &str,
    action: &str,
    input: Value,
) -> Result<Value, ActionError> {
    connectors::execute(ctx, connector, action, input).await
}

/// Runs `connector.action`, expecting a failure.
pub async fn run_err(
    ctx: &ActionContext,
    connector: &str,
    action: &str,
    input: Value,
) -> Result<ActionError> {
    match run(ctx, connector, action, input).await {
        Ok(out) => anyhow::bail!("expected an error, got {out:#}"),
        Err(e) => Ok(e),
    }
}
