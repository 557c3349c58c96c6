//! The outbound webhook: a JSON `POST` to the connection's base URL with `Idempotency-Key`,
//! signed with `X-Switchyard-Signature: sha256=<hex>` over `<timestamp>.<body>` when the
//! connection holds a signing secret (an `api_key` connection, whose key is never sent).

mod support;

use std::time::Duration;

use anyhow::{Context as _, Result};
use schemas::envelope::ErrorCode;
use serde_json::json;
use support::{api_key_header, bearer, credential, ctx_at, run, run_err};
use wiremock::matchers::{body_json, header, method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SECRET: &str = "whsec_5WbX5kEWLlfzsGNjH64I8lOOqUB6e8FH";

#[tokio::test]
async fn notify_posts_the_payload_with_the_steps_idempotency_key() -> Result<()> {
    let server = MockServer::start().await;
    let ctx = ctx_at(
        &format!("{}/hooks", server.uri()),
        Some(bearer("receiver-token-123456")),
    );
    Mock::given(method("POST"))
        .and(path("/hooks/orders/paid"))
        .and(header("content-type", "application/json"))
        .and(header("idempotency-key", "run-1:step-1"))
        .and(header("authorization", "Bearer receiver-token-123456"))
        .and(body_json(
            json!({ "event": "order.paid", "order": { "id": 1042, "total": 99.5 } }),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "received": true })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "webhook",
        "notify",
        json!({ "path": "/orders/paid", "payload": { "event": "order.paid", "order": { "id": 1042, "total": 99.5 } } }),
    )
    .await?;
    assert_eq!(out, json!({ "status": 200, "body": { "received": true } }));
    let requests = server.received_requests().await.unwrap_or_default();
    assert!(requests[0].headers.get("x-switchyard-signature").is_none());
    Ok(())
}

#[tokio::test]
async fn a_signing_secret_signs_the_timestamp_and_body_and_is_never_sent() -> Result<()> {
    let server = MockServer::start().await;
    let ctx = ctx_at(
        &server.uri(),
        Some(credential(
            "api_key",
            json!({ "in": "query", "name": "secret" }),
            json!({ "key": SECRET }),
        )),
    );
    Mock::given(method("POST"))
        .and(path("/"))
        .and(header("idempotency-key", "run-1:step-1"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "webhook",
        "notify",
        json!({ "payload": { "text": "Zoë paid" } }),
    )
    .await?;
    assert_eq!(out, json!({ "status": 204, "body": null }));
    let requests = server.received_requests().await.unwrap_or_default();
    let request = requests.first().context("one delivery")?;
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let timestamp = header("x-switchyard-timestamp").context("a timestamp")?;
    let now = connectors::sdk::unix_now();
    let sent_at: u64 = timestamp.parse()?;
    assert!(now.abs_diff(sent_at) < 60, "{timestamp}");
    let mut signed = format!("{timestamp}.").into_bytes();
    signed.extend_from_slice(&request.body);
    let tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, SECRET.as_bytes()),
        &signed,
    );
    let hex: String = tag.as_ref().iter().map(|b| format!("{b:02x}")).collect();
    assert_eq!(
        header("x-switchyard-signature"),
        Some(format!("sha256={hex}"))
    );
    assert_eq!(request.body, "{\"text\":\"Zoë paid\"}".as_bytes());
    // The secret travels nowhere: not in the URL, not in any header.
    assert!(!request.url.as_str().contains(SECRET));
    assert!(request.url.query().is_none());
    assert!(header("authorization").is_none());
    for (_, value) in request.headers.iter() {
        assert!(!value.to_str().unwrap_or_default().contains(SECRET));
    }
    Ok(())
}

#[tokio::test]
async fn a_header_api_key_is_also_only_a_signing_secret() -> Result<()> {
    let server = MockServer::start().await;
    let ctx = ctx_at(
        &server.uri(),
        Some(api_key_header("X-Webhook-Secret", SECRET)),
    );
    Mock::given(method("POST"))
        .respond_with(ResponseTemplate::new(202).set_body_string("queued"))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(&ctx, "webhook", "notify", json!({ "payload": [1, 2] })).await?;
    assert_eq!(out, json!({ "status": 202, "body": "queued" }));
    let requests = server.received_requests().await.unwrap_or_default();
    assert!(requests[0].headers.get("x-webhook-secret").is_none());
    assert!(requests[0].headers.get("x-switchyard-signature").is_some());
    Ok(())
}

#[tokio::test]
async fn receiver_failures_are_classified_by_status() -> Result<()> {
    let server = MockServer::start().await;
    let ctx = ctx_at(&server.uri(), None);
    Mock::given(path("/busy"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "12")
                .set_body_json(json!({ "error": "slow down" })),
        )
        .mount(&server)
        .await;
    Mock::given(path("/gone"))
        .respond_with(ResponseTemplate::new(410).set_body_string("endpoint removed"))
        .mount(&server)
        .await;
    Mock::given(path("/bad"))
        .respond_with(
            ResponseTemplate::new(400).set_body_json(json!({ "error": "missing field `order`" })),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "webhook",
        "notify",
        json!({ "path": "busy", "payload": {} }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(12)));
    let e = run_err(
        &ctx,
        "webhook",
        "notify",
        json!({ "path": "gone", "payload": {} }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::NotFound);
    let e = run_err(
        &ctx,
        "webhook",
        "notify",
        json!({ "path": "bad", "payload": {} }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(!e.is_retryable());
    assert!(e.message.contains("missing field"), "{}", e.message);
    Ok(())
}

#[tokio::test]
async fn bad_paths_and_missing_receivers_are_refused_before_any_call() -> Result<()> {
    let server = MockServer::start().await;
    let ctx = ctx_at(&server.uri(), None);
    let e = run_err(
        &ctx,
        "webhook",
        "notify",
        json!({ "path": "hooks/../admin", "payload": {} }),
    )
    .await?;
    assert_eq!(e.message, "with.path: cannot hold `.` or `..` segments");
    let e = run_err(&ctx, "webhook", "notify", json!({ "path": "x" })).await?;
    assert_eq!(e.message, "with: missing field `payload`");
    assert!(
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
    let no_receiver = connectors::ActionContext {
        base_url: None,
        ..ctx_at(&server.uri(), None)
    };
    let e = run_err(&no_receiver, "webhook", "notify", json!({ "payload": {} })).await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(
        e.message.contains("set `base_url` on the connection"),
        "{}",
        e.message
    );
    Ok(())
}

#[tokio::test]
async fn health_sends_nothing() -> Result<()> {
    let server = MockServer::start().await;
    let ctx = ctx_at(&server.uri(), None);
    connectors::Registry::builtin()
        .health(&ctx, "webhook")
        .await?;
    assert!(
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
    Ok(())
}
