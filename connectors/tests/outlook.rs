//! Outlook mail as documented at <https://learn.microsoft.com/graph/api/user-sendmail> and
//! <https://learn.microsoft.com/graph/api/user-list-messages>: `POST /v1.0/me/sendMail`
//! answering `202` with no body, `GET /v1.0/me/messages` with OData `$top`, `$select` and
//! `$filter`, paged by `@odata.nextLink`; Graph's error body and throttling.

mod support;

use std::time::Duration;

use anyhow::Result;
use schemas::envelope::ErrorCode;
use serde_json::{Value, json};
use support::{bearer, ctx, run, run_err};
use wiremock::matchers::{body_json, header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "EwBwA8l6BAAUO9chh8cJscQLmU-outlook-test";

async fn outlook() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx(&server, bearer(TOKEN));
    (server, ctx)
}

fn message(id: &str, subject: &str) -> Value {
    json!({
        "@odata.etag": "W/\"CQAAABYAAAAiIsqMbYjsT5e/T7KzowPTAAEMTBu8\"",
        "id": id,
        "subject": subject,
        "receivedDateTime": "2024-05-01T10:00:00Z",
        "isRead": false,
        "from": { "emailAddress": { "name": "Ada Lovelace", "address": "ada@example.com" } }
    })
}

#[tokio::test]
async fn send_posts_send_mail_and_accepts_202() -> Result<()> {
    let (server, ctx) = outlook().await;
    Mock::given(method("POST"))
        .and(path("/v1.0/me/sendMail"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({
            "message": {
                "subject": "Meet for lunch?",
                "body": { "contentType": "text", "content": "The new cafeteria is open." },
                "toRecipients": [
                    { "emailAddress": { "address": "frannis@contoso.com", "name": "Fran Nis" } }
                ],
                "ccRecipients": [
                    { "emailAddress": { "address": "danas@contoso.com" } }
                ]
            },
            "saveToSentItems": true
        })))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "outlook",
        "send",
        json!({
            "to": "Fran Nis <frannis@contoso.com>",
            "cc": ["danas@contoso.com"],
            "subject": "Meet for lunch?",
            "text": "The new cafeteria is open."
        }),
    )
    .await?;
    assert_eq!(out, json!({ "accepted": true }));
    Ok(())
}

#[tokio::test]
async fn send_html_with_bcc_reply_to_and_no_sent_copy() -> Result<()> {
    let (server, ctx) = outlook().await;
    Mock::given(method("POST"))
        .and(path("/v1.0/me/sendMail"))
        .and(body_json(json!({
            "message": {
                "subject": "Report",
                "body": { "contentType": "html", "content": "<p>Attached</p>" },
                "toRecipients": [{ "emailAddress": { "address": "a@contoso.com" } }],
                "bccRecipients": [{ "emailAddress": { "address": "audit@contoso.com" } }],
                "replyTo": [{ "emailAddress": { "address": "ops@contoso.com", "name": "Ops" } }]
            },
            "saveToSentItems": false
        })))
        .respond_with(ResponseTemplate::new(202))
        .expect(1)
        .mount(&server)
        .await;
    run(
        &ctx,
        "outlook",
        "send",
        json!({
            "to": "a@contoso.com", "bcc": "audit@contoso.com", "reply_to": "Ops <ops@contoso.com>",
            "subject": "Report", "html": "<p>Attached</p>", "save_to_sent_items": false
        }),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn list_messages_follows_next_links_up_to_the_limit() -> Result<()> {
    let (server, ctx) = outlook().await;
    let next = format!(
        "{}/v1.0/me/mailFolders/inbox/messages?%24top=3&%24select=subject%2cfrom&%24filter=isRead+eq+false&%24skip=2",
        server.uri()
    );
    let last = format!(
        "{}/v1.0/me/mailFolders/inbox/messages?%24top=3&%24select=subject%2cfrom&%24filter=isRead+eq+false&%24skip=5",
        server.uri()
    );
    Mock::given(method("GET"))
        .and(path("/v1.0/me/mailFolders/inbox/messages"))
        .and(query_param("$skip", "2"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "@odata.context": "https://graph.microsoft.com/v1.0/$metadata#users('me')/mailFolders('inbox')/messages(subject,from)",
            "value": [message("AAMk3", "Three"), message("AAMk4", "Four"), message("AAMk5", "Five")],
            "@odata.nextLink": last
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/v1.0/me/mailFolders/inbox/messages"))
        .and(query_param_is_missing("$skip"))
        .and(query_param("$top", "3"))
        .and(query_param("$select", "subject,from"))
        .and(query_param("$filter", "isRead eq false"))
        .and(query_param("$orderby", "receivedDateTime desc"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [message("AAMk1", "One"), message("AAMk2", "Two")],
            "@odata.nextLink": next
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "outlook",
        "list_messages",
        json!({
            "folder": "inbox", "select": ["subject", "from"], "filter": "isRead eq false",
            "order_by": "receivedDateTime desc", "limit": 3
        }),
    )
    .await?;
    let ids: Vec<&str> = out["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(ids, ["AAMk1", "AAMk2", "AAMk3"]);
    assert_eq!(out["next_cursor"], last.as_str());
    Ok(())
}

#[tokio::test]
async fn a_next_link_to_another_host_is_not_followed() -> Result<()> {
    let (server, ctx) = outlook().await;
    Mock::given(path("/v1.0/me/messages"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "value": [message("AAMk1", "One")],
            "@odata.nextLink": "https://attacker.example/v1.0/me/messages?$skip=1"
        })))
        .expect(1)
        .mount(&server)
        .await;
    let e = run_err(&ctx, "outlook", "list_messages", json!({ "limit": 5 })).await?;
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    assert!(e.message.contains("another host"), "{}", e.message);
    let e = run_err(
        &ctx,
        "outlook",
        "list_messages",
        json!({ "cursor": "https://attacker.example/v1.0/me/messages" }),
    )
    .await?;
    assert!(e.message.contains("another host"), "{}", e.message);
    Ok(())
}

#[tokio::test]
async fn mailbox_throttling_is_a_rate_limit_with_retry_after() -> Result<()> {
    let (server, ctx) = outlook().await;
    Mock::given(path("/v1.0/me/sendMail"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "38")
                .set_body_json(json!({
                    "error": {
                        "code": "ApplicationThrottled",
                        "message": "Application is over its MailboxConcurrency limit."
                    }
                })),
        )
        .mount(&server)
        .await;
    let input = json!({ "to": "a@contoso.com", "subject": "s", "text": "t" });
    let e = run_err(&ctx, "outlook", "send", input.clone()).await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(38)));

    // The same throttling code under a 503 is still a rate limit.
    server.reset().await;
    Mock::given(path("/v1.0/me/sendMail"))
        .respond_with(
            ResponseTemplate::new(503)
                .insert_header("retry-after", "4")
                .set_body_json(json!({
                    "error": { "code": "MailboxConcurrency", "message": "Too many concurrent requests." }
                })),
        )
        .mount(&server)
        .await;
    let e = run_err(&ctx, "outlook", "send", input).await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(4)));
    assert_eq!(e.status, Some(503));
    Ok(())
}

#[tokio::test]
async fn invalid_recipients_are_permanent() -> Result<()> {
    let (server, ctx) = outlook().await;
    Mock::given(path("/v1.0/me/sendMail"))
        .respond_with(ResponseTemplate::new(400).set_body_json(json!({
            "error": {
                "code": "ErrorInvalidRecipients",
                "message": "At least one recipient isn't valid.",
                "innerError": { "date": "2024-05-01T10:00:00", "request-id": "1e2a7c0a-6d7e-4a9f-bb0b-7f1c2d3e4f50" }
            }
        })))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "outlook",
        "send",
        json!({ "to": "a@contoso.com", "subject": "s", "text": "t" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(!e.is_retryable());
    assert!(
        e.message.contains("ErrorInvalidRecipients"),
        "{}",
        e.message
    );
    let e = run_err(
        &ctx,
        "outlook",
        "send",
        json!({ "subject": "s", "text": "t" }),
    )
    .await?;
    assert_eq!(
        e.message,
        "with.to: give at least one recipient in `to`, `cc` or `bcc`"
    );
    Ok(())
}

#[tokio::test]
async fn health_reads_me() -> Result<()> {
    let (server, ctx) = outlook().await;
    Mock::given(method("GET"))
        .and(path("/v1.0/me"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "87d349ed-44d7-43e1-9a83-5f2406dee5bd"
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "outlook")
        .await?;
    Ok(())
}
