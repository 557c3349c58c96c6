//! Microsoft Teams as documented at <https://learn.microsoft.com/graph/api/channel-post-messages>
//! and <https://learn.microsoft.com/graph/api/chatmessage-post-replies>: `POST` of a
//! `chatMessage` under `/v1.0/teams/{team-id}/channels/{channel-id}/messages` with
//! `Authorization: Bearer`, `201` with the message, Graph's `{"error": {"code", "message"}}`
//! on failure and `429` with `Retry-After`; incoming webhooks take an Adaptive Card in a
//! message envelope and no Graph token.

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::{Value, json};
use support::{bearer, ctx, run, run_err};
use wiremock::matchers::{body_json, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "eyJ0eXAiOiJKV1QiLCJub25jZSI6Imdyb3VwLXRva2VuIn0.teams-test";
const TEAM: &str = "fbe2bf47-16c8-47cf-b4a5-4b9b187c508b";
const CHANNEL: &str = "19:4a95f7d8db4c4e7fae857bcebe0623e6@thread.tacv2";

async fn teams() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx(&server, bearer(TOKEN));
    (server, ctx)
}

fn created(id: &str, reply_to: Value) -> Value {
    json!({
        "@odata.context": format!("https://graph.microsoft.com/v1.0/$metadata#teams('{TEAM}')/channels('19%3A4a95f7d8db4c4e7fae857bcebe0623e6%40thread.tacv2')/messages/$entity"),
        "id": id,
        "replyToId": reply_to,
        "etag": id,
        "messageType": "message",
        "createdDateTime": "2021-03-29T03:53:52.035Z",
        "lastModifiedDateTime": "2021-03-29T03:53:52.035Z",
        "importance": "normal",
        "locale": "en-us",
        "webUrl": format!("https://teams.microsoft.com/l/message/19%3A4a95f7d8db4c4e7fae857bcebe0623e6%40thread.tacv2/{id}?groupId={TEAM}"),
        "from": { "user": { "id": "8ea0e38b-efb3-4757-924a-5f94061cf8c2", "displayName": "Robin Kline" } },
        "body": { "contentType": "html", "content": "Hello World" },
        "channelIdentity": { "teamId": TEAM, "channelId": CHANNEL }
    })
}

#[tokio::test]
async fn post_channel_message_sends_the_documented_request() -> Result<()> {
    let (server, ctx) = teams().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/v1.0/teams/{TEAM}/channels/{CHANNEL}/messages"
        )))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "subject": "Deploy",
            "body": { "contentType": "html", "content": "<b>Deploy</b> finished" }
        })))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(created("1616990032035", Value::Null)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "teams",
        "post_channel_message",
        json!({ "team_id": TEAM, "channel_id": CHANNEL, "html": "<b>Deploy</b> finished", "subject": "Deploy" }),
    )
    .await?;
    assert_eq!(out["id"], "1616990032035");
    assert_eq!(out["reply_to_id"], Value::Null);
    assert_eq!(out["created_date_time"], "2021-03-29T03:53:52.035Z");
    assert!(
        out["web_url"]
            .as_str()
            .is_some_and(|u| u.starts_with("https://teams.microsoft.com/l/message/"))
    );
    Ok(())
}

#[tokio::test]
async fn reply_to_message_posts_to_the_replies_of_the_message() -> Result<()> {
    let (server, ctx) = teams().await;
    Mock::given(method("POST"))
        .and(path(format!(
            "/v1.0/teams/{TEAM}/channels/{CHANNEL}/messages/1616990032035/replies"
        )))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_json(json!({
            "body": { "contentType": "text", "content": "Rolled back" }
        })))
        .respond_with(
            ResponseTemplate::new(201)
                .set_body_json(created("1616990171266", json!("1616990032035"))),
        )
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "teams",
        "reply_to_message",
        json!({ "team_id": TEAM, "channel_id": CHANNEL, "message_id": "1616990032035", "text": "Rolled back" }),
    )
    .await?;
    assert_eq!(out["id"], "1616990171266");
    assert_eq!(out["reply_to_id"], "1616990032035");
    Ok(())
}

#[tokio::test]
async fn post_webhook_sends_an_adaptive_card_without_the_graph_token() -> Result<()> {
    let (server, ctx) = teams().await;
    let webhook_url = format!(
        "{}/workflows/6f7c1b9a/triggers/manual/paths/invoke?api-version=2016-06-01&sig=s3cr3tSig",
        server.uri()
    );
    Mock::given(method("POST"))
        .and(path("/workflows/6f7c1b9a/triggers/manual/paths/invoke"))
        .and(query_param("sig", "s3cr3tSig"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "type": "message",
            "attachments": [{
                "contentType": "application/vnd.microsoft.card.adaptive",
                "contentUrl": null,
                "content": {
                    "type": "AdaptiveCard",
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "version": "1.4",
                    "body": [
                        { "type": "TextBlock", "text": "Deploy", "weight": "Bolder", "size": "Medium", "wrap": true },
                        { "type": "TextBlock", "text": "v2.5.0 is live", "wrap": true }
                    ]
                }
            }]
        })))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "teams",
        "post_webhook",
        json!({ "webhook_url": webhook_url, "title": "Deploy", "text": "v2.5.0 is live" }),
    )
    .await?;
    assert_eq!(out, json!({ "status": 202 }));
    let requests = server.received_requests().await.unwrap_or_default();
    assert!(
        requests
            .iter()
            .all(|r| r.headers.get("authorization").is_none())
    );

    // A whole card goes in the envelope as given; a legacy connector answers `200` and `1`.
    server.reset().await;
    let card = json!({ "type": "AdaptiveCard", "version": "1.2", "body": [{ "type": "TextBlock", "text": "Hi" }] });
    Mock::given(method("POST"))
        .and(path("/workflows/6f7c1b9a/triggers/manual/paths/invoke"))
        .and(body_json(json!({
            "type": "message",
            "attachments": [{ "contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": null, "content": card }]
        })))
        .respond_with(ResponseTemplate::new(200).set_body_string("1"))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "teams",
        "post_webhook",
        json!({ "webhook_url": webhook_url, "card": card }),
    )
    .await?;
    assert_eq!(out, json!({ "status": 200 }));
    Ok(())
}

#[tokio::test]
async fn post_webhook_failures_name_the_webhook_not_its_url() -> Result<()> {
    let (server, ctx) = teams().await;
    let webhook_url = format!("{}/webhookb2/abc/IncomingWebhook/def/s3cr3t", server.uri());
    Mock::given(path("/webhookb2/abc/IncomingWebhook/def/s3cr3t"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "5")
                .set_body_string("Too many requests"),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "teams",
        "post_webhook",
        json!({ "webhook_url": webhook_url, "text": "hi" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(5)));
    assert!(
        e.message.starts_with("the incoming webhook answered 429"),
        "{}",
        e.message
    );
    assert!(!e.message.contains("s3cr3t"), "{}", e.message);
    Ok(())
}

#[tokio::test]
async fn graph_errors_are_classified_by_status() -> Result<()> {
    let (server, ctx) = teams().await;
    for (status, code, expected) in [
        (404, "NotFound", ErrorCode::NotFound),
        (403, "Forbidden", ErrorCode::Forbidden),
        (401, "InvalidAuthenticationToken", ErrorCode::Unauthorized),
        (400, "BadRequest", ErrorCode::InvalidInput),
    ] {
        server.reset().await;
        Mock::given(path(format!("/v1.0/teams/{TEAM}/channels/{CHANNEL}/messages")))
            .respond_with(ResponseTemplate::new(status).set_body_json(json!({
                "error": {
                    "code": code,
                    "message": "The request could not be completed.",
                    "innerError": { "date": "2024-05-01T10:00:00", "request-id": "b7f7c1c4-a2c0-4b7d-8a36-1d4b1c9c0f3e" }
                }
            })))
            .mount(&server)
            .await;
        let e = run_err(
            &ctx,
            "teams",
            "post_channel_message",
            json!({ "team_id": TEAM, "channel_id": CHANNEL, "text": "x" }),
        )
        .await?;
        assert_eq!(e.code, expected, "{code}");
        assert_eq!(e.status, Some(status));
        assert!(e.message.contains(code), "{}", e.message);
        assert!(!e.message.contains(TOKEN));
    }
    Ok(())
}

#[tokio::test]
async fn throttling_carries_graphs_retry_after() -> Result<()> {
    let (server, ctx) = teams().await;
    Mock::given(path(format!(
        "/v1.0/teams/{TEAM}/channels/{CHANNEL}/messages"
    )))
    .respond_with(
        ResponseTemplate::new(429)
            .insert_header("retry-after", "10")
            .set_body_json(json!({
                "error": { "code": "TooManyRequests", "message": "Too many requests." }
            })),
    )
    .mount(&server)
    .await;
    let e = run_err(
        &ctx,
        "teams",
        "post_channel_message",
        json!({ "team_id": TEAM, "channel_id": CHANNEL, "text": "x" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(10)));
    assert_eq!(e.status, Some(429));
    Ok(())
}

#[tokio::test]
async fn bad_inputs_are_refused_before_any_call() -> Result<()> {
    let (server, ctx) = teams().await;
    let base = json!({ "team_id": TEAM, "channel_id": CHANNEL });
    let mut both = base.clone();
    both["text"] = json!("a");
    both["html"] = json!("<b>a</b>");
    for input in [base, both] {
        let e = run_err(&ctx, "teams", "post_channel_message", input).await?;
        assert_eq!(e.message, "with.text: give `text` or `html`, exactly one");
    }
    let e = run_err(
        &ctx,
        "teams",
        "post_webhook",
        json!({ "webhook_url": "ftp://example.com/hook", "text": "x" }),
    )
    .await?;
    assert_eq!(e.message, "with.webhook_url: not an absolute http(s) URL");
    let e = run_err(
        &ctx,
        "teams",
        "post_webhook",
        json!({ "webhook_url": format!("{}/hook", server.uri()), "card": { "type": "MessageCard" } }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(e.message.starts_with("with.card:"), "{}", e.message);
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
async fn health_reads_me_and_falls_back_to_the_organization_for_app_tokens() -> Result<()> {
    let (server, ctx) = teams().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/me"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users(id)/$entity",
            "id": "48d31887-5fad-4d73-a9f5-3c356e68a038"
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "teams")
        .await?;

    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/me"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": { "code": "BadRequest", "message": "/me request is only valid with delegated authentication flow." }
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/organization"))
        .and(query_param("$select", "id"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [{ "id": "2432b57b-0abd-43db-aa7b-16eadd115d34" }]
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "teams")
        .await?;

    server.reset().await;
    Mock::given(path("/v1.0/me"))
        .respond_with(ResponseTemplate::new(401).set_body_json(json!({
            "error": { "code": "InvalidAuthenticationToken", "message": "Access token has expired or is not yet valid." }
        })))
        .mount(&server)
        .await;
    let e = connectors::Registry::builtin()
        .health(&ctx, "teams")
        .await
        .expect_err("expired");
    assert_eq!(e.code, ErrorCode::Unauthorized);
    Ok(())
}
