//! Slack's Web API as documented at <https://api.slack.com/methods>: every method a `POST`
//! or `GET` on `/api/{method}` with `Authorization: Bearer`, failures as `200` with
//! `{"ok": false, "error": …}`, rate limits as `429` with `Retry-After`.

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::json;
use support::{bearer, ctx_at, run, run_err};
use wiremock::matchers::{body_json, body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "xoxb-test-token-123456";

async fn slack() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx_at(&format!("{}/api", server.uri()), Some(bearer(TOKEN)));
    (server, ctx)
}

#[tokio::test]
async fn post_message_sends_the_documented_request() -> Result<()> {
    let (server, ctx) = slack().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.postMessage"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "channel": "C123ABC456",
            "text": "Deploy finished",
            "thread_ts": "1503435956.000247"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "channel": "C123ABC456",
            "ts": "1503435957.000247",
            "message": { "text": "Deploy finished", "type": "message", "bot_id": "B123ABC456" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "slack",
        "post_message",
        json!({ "channel": "C123ABC456", "text": "Deploy finished", "thread_ts": "1503435956.000247" }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "channel": "C123ABC456", "ts": "1503435957.000247" })
    );
    Ok(())
}

#[tokio::test]
async fn ok_false_is_classified_by_its_error_string() -> Result<()> {
    let (server, ctx) = slack().await;
    for (error, code) in [
        ("channel_not_found", ErrorCode::NotFound),
        ("invalid_auth", ErrorCode::Unauthorized),
        ("token_revoked", ErrorCode::ConnectionRevoked),
        ("missing_scope", ErrorCode::Forbidden),
        ("invalid_blocks", ErrorCode::InvalidInput),
    ] {
        server.reset().await;
        Mock::given(path("/api/chat.postMessage"))
            .respond_with(
                ResponseTemplate::new(200).set_body_json(json!({ "ok": false, "error": error })),
            )
            .mount(&server)
            .await;
        let e = run_err(
            &ctx,
            "slack",
            "post_message",
            json!({ "channel": "C1", "text": "x" }),
        )
        .await?;
        assert_eq!(e.code, code, "{error}");
        assert!(e.message.contains(error), "{error}: {}", e.message);
        assert!(!e.message.contains(TOKEN));
    }
    Ok(())
}

#[tokio::test]
async fn rate_limits_carry_slacks_retry_after() -> Result<()> {
    let (server, ctx) = slack().await;
    Mock::given(path("/api/chat.postMessage"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "30")
                .set_body_json(json!({ "ok": false, "error": "ratelimited" })),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "slack",
        "post_message",
        json!({ "channel": "C1", "text": "x" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(30)));
    assert_eq!(e.status, Some(429));
    Ok(())
}

#[tokio::test]
async fn bad_inputs_are_refused_before_any_call() -> Result<()> {
    let (server, ctx) = slack().await;
    let e = run_err(&ctx, "slack", "post_message", json!({ "text": "x" })).await?;
    assert_eq!(e.message, "with: missing field `channel`");
    let e = run_err(&ctx, "slack", "post_message", json!({ "channel": "C1" })).await?;
    assert_eq!(e.message, "with.text: give `text`, `blocks` or both");
    let e = run_err(
        &ctx,
        "slack",
        "post_message",
        json!({ "channel": "C1", "txt": "x" }),
    )
    .await?;
    assert!(
        e.message.starts_with("with.txt: unknown field `txt`"),
        "{}",
        e.message
    );
    assert!(
        server
            .received_requests()
            .await
            .unwrap_or_default()
            .is_empty()
    );
    Ok(())
}

#[tokio::test]
async fn update_message_posts_chat_update() -> Result<()> {
    let (server, ctx) = slack().await;
    Mock::given(method("POST"))
        .and(path("/api/chat.update"))
        .and(body_json(
            json!({ "channel": "C1", "ts": "1.2", "text": "edited" }),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "channel": "C1", "ts": "1.2", "text": "edited"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "slack",
        "update_message",
        json!({ "channel": "C1", "ts": "1.2", "text": "edited" }),
    )
    .await?;
    assert_eq!(out["ts"], "1.2");
    Ok(())
}

#[tokio::test]
async fn list_channels_follows_cursors_up_to_the_limit() -> Result<()> {
    let (server, ctx) = slack().await;
    Mock::given(method("GET"))
        .and(path("/api/conversations.list"))
        .and(query_param("cursor", "dGVhbTpDMDYxRkE1UEI="))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "channels": [{ "id": "C3", "name": "random" }, { "id": "C4", "name": "ops" }],
            "response_metadata": { "next_cursor": "dGVhbTpDMDYxRkE1UEc=" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/api/conversations.list"))
        .and(query_param("limit", "3"))
        .and(query_param("exclude_archived", "true"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "channels": [{ "id": "C1", "name": "general" }, { "id": "C2", "name": "dev" }],
            "response_metadata": { "next_cursor": "dGVhbTpDMDYxRkE1UEI=" }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "slack",
        "list_channels",
        json!({ "limit": 3, "exclude_archived": true }),
    )
    .await?;
    let ids: Vec<&str> = out["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|c| c["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["C1", "C2", "C3"]);
    assert_eq!(out["next_cursor"], "dGVhbTpDMDYxRkE1UEc=");
    let e = run_err(&ctx, "slack", "list_channels", json!({ "limit": 5000 })).await?;
    assert_eq!(e.message, "with.limit: must be at most 1000");
    Ok(())
}

#[tokio::test]
async fn lookup_user_by_email_reads_the_user() -> Result<()> {
    let (server, ctx) = slack().await;
    Mock::given(method("GET"))
        .and(path("/api/users.lookupByEmail"))
        .and(query_param("email", "spengler@ghostbusters.example.com"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true,
            "user": { "id": "W012A3CDE", "team_id": "T012AB3C4", "name": "spengler", "real_name": "Egon Spengler" }
        })))
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "slack",
        "lookup_user_by_email",
        json!({ "email": "spengler@ghostbusters.example.com" }),
    )
    .await?;
    assert_eq!(out["id"], "W012A3CDE");
    assert_eq!(out["real_name"], "Egon Spengler");
    server.reset().await;
    Mock::given(path("/api/users.lookupByEmail"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "ok": false, "error": "users_not_found" })),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "slack",
        "lookup_user_by_email",
        json!({ "email": "nobody@example.com" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::NotFound);
    Ok(())
}

#[tokio::test]
async fn upload_file_uses_the_external_upload_flow() -> Result<()> {
    let (server, ctx) = slack().await;
    let upload_url = format!("{}/upload/v1/ABC123", server.uri());
    Mock::given(method("GET"))
        .and(path("/api/files.getUploadURLExternal"))
        .and(query_param("filename", "report.csv"))
        .and(query_param("length", "8"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "upload_url": upload_url, "file_id": "F123ABC456"
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/upload/v1/ABC123"))
        .and(body_string("a,b\n1,2\n"))
        .respond_with(ResponseTemplate::new(200).set_body_string("OK - 8"))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("POST"))
        .and(path("/api/files.completeUploadExternal"))
        .and(body_json(json!({
            "files": [{ "id": "F123ABC456", "title": "Weekly report" }],
            "channel_id": "C1",
            "initial_comment": "here it is"
        })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "ok": true, "files": [{ "id": "F123ABC456", "title": "Weekly report" }]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "slack",
        "upload_file",
        json!({ "filename": "report.csv", "content": "a,b\n1,2\n", "title": "Weekly report",
                "channel_id": "C1", "initial_comment": "here it is" }),
    )
    .await?;
    assert_eq!(out, json!({ "id": "F123ABC456", "title": "Weekly report" }));
    // The pre-signed upload URL gets the bytes without the token.
    let requests = server.received_requests().await.unwrap_or_default();
    let upload = requests
        .iter()
        .find(|r| r.url.path().starts_with("/upload/"))
        .expect("upload");
    assert!(upload.headers.get("authorization").is_none());
    Ok(())
}

#[tokio::test]
async fn health_calls_auth_test() -> Result<()> {
    let (server, ctx) = slack().await;
    Mock::given(method("POST"))
        .and(path("/api/auth.test"))
        .respond_with(
            ResponseTemplate::new(200)
                .set_body_json(json!({ "ok": true, "team": "T", "user": "bot" })),
        )
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "slack")
        .await?;
    Ok(())
}
