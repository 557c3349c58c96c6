//! Gmail as documented at <https://developers.google.com/gmail/api/reference/rest>: calls under
//! `/gmail/v1/users/me/` with `Authorization: Bearer`, mail sent as a base64url RFC 2822
//! message in `{"raw": …}`, lists paged by `nextPageToken`, Google's error body with
//! `errors[].reason`, and rate limits as `429` or `403` `rateLimitExceeded`.

mod support;

use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use schemas::envelope::ErrorCode;
use serde_json::{Value, json};
use support::{bearer, ctx, run, run_err};
use wiremock::matchers::{body_json, header, method, path, query_param, query_param_is_missing};
use wiremock::{Mock, MockServer, ResponseTemplate};

const TOKEN: &str = "ya29.a0AfH6SMBgmail-test-token";

async fn gmail() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx(&server, bearer(TOKEN));
    (server, ctx)
}

fn b64(text: &str) -> String {
    base64::engine::general_purpose::STANDARD.encode(text)
}

fn raw(message: &str) -> String {
    base64::engine::general_purpose::URL_SAFE.encode(message)
}

fn google_error(code: u16, status: &str, reason: &str, message: &str) -> Value {
    json!({
        "error": {
            "code": code,
            "message": message,
            "errors": [{ "message": message, "domain": "global", "reason": reason }],
            "status": status
        }
    })
}

#[tokio::test]
async fn send_posts_the_message_as_base64url_rfc_2822() -> Result<()> {
    let (server, ctx) = gmail().await;
    let subject = "Ваш заказ 1042 отправлен";
    let text = "Hi Ada,\nyour parcel has shipped.";
    let html = "<p>Hi Ada,<br>your parcel has <b>shipped</b>.</p>";
    let message = format!(
        "To: \"Ada Lovelace\" <ada@example.com>\r\n\
         Cc: bob@example.com,\r\n =?UTF-8?B?{}?= <zoe@example.com>\r\n\
         Bcc: audit@example.com\r\n\
         Subject: =?UTF-8?B?{}?=\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: multipart/alternative; boundary=\"=_switchyard_alternative\"\r\n\r\n\
         --=_switchyard_alternative\r\n\
         Content-Type: text/plain; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
         --=_switchyard_alternative\r\n\
         Content-Type: text/html; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n\
         --=_switchyard_alternative--\r\n",
        b64("Zoë Ünlü"),
        b64(subject),
        b64(text),
        b64(html),
    );
    Mock::given(method("POST"))
        .and(path("/gmail/v1/users/me/messages/send"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({ "raw": raw(&message) })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "18c2b9b5f3a4e6d1", "threadId": "18c2b9b5f3a4e6d1", "labelIds": ["SENT"]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "gmail",
        "send",
        json!({
            "to": "Ada Lovelace <ada@example.com>",
            "cc": ["bob@example.com", "Zoë Ünlü <zoe@example.com>"],
            "bcc": "audit@example.com",
            "subject": subject,
            "text": text,
            "html": html
        }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "id": "18c2b9b5f3a4e6d1", "thread_id": "18c2b9b5f3a4e6d1", "label_ids": ["SENT"] })
    );
    Ok(())
}

#[tokio::test]
async fn send_replies_in_a_thread_with_a_plain_text_body() -> Result<()> {
    let (server, ctx) = gmail().await;
    let message = format!(
        "From: support@shop.example\r\n\
         To: ada@example.com\r\n\
         In-Reply-To: <CAF=abc@mail.gmail.com>\r\n\
         References: <CAF=abc@mail.gmail.com>\r\n\
         Subject: Re: Order 1042\r\n\
         MIME-Version: 1.0\r\n\
         Content-Type: text/plain; charset=\"UTF-8\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}\r\n",
        b64("It left the warehouse today.")
    );
    Mock::given(method("POST"))
        .and(path("/gmail/v1/users/me/messages/send"))
        .and(body_json(
            json!({ "raw": raw(&message), "threadId": "18c2b9b5f3a4e6d1" }),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "18c2ba0d2c7b9e55", "threadId": "18c2b9b5f3a4e6d1", "labelIds": ["SENT"]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "gmail",
        "send",
        json!({
            "from": "support@shop.example",
            "to": "ada@example.com",
            "subject": "Re: Order 1042",
            "text": "It left the warehouse today.",
            "thread_id": "18c2b9b5f3a4e6d1",
            "in_reply_to": "<CAF=abc@mail.gmail.com>"
        }),
    )
    .await?;
    assert_eq!(out["id"], "18c2ba0d2c7b9e55");
    Ok(())
}

#[tokio::test]
async fn header_injection_and_missing_parts_are_refused_before_any_call() -> Result<()> {
    let (server, ctx) = gmail().await;
    for (input, expected) in [
        (
            json!({ "to": "ada@example.com\r\nBcc: all@example.com", "subject": "s", "text": "t" }),
            "with.to: an address cannot hold line breaks or control characters",
        ),
        (
            json!({ "to": "ada@example.com", "subject": "s\r\nBcc: all@example.com", "text": "t" }),
            "with.subject: cannot hold line breaks",
        ),
        (
            json!({ "to": ["ada@example.com", "not-an-address"], "subject": "s", "text": "t" }),
            "with.to[1]: `not-an-address` is not an email address",
        ),
        (
            json!({ "subject": "s", "text": "t" }),
            "with.to: give at least one recipient in `to`, `cc` or `bcc`",
        ),
        (
            json!({ "to": "ada@example.com", "subject": "s" }),
            "with.text: give `text`, `html` or both",
        ),
    ] {
        let e = run_err(&ctx, "gmail", "send", input).await?;
        assert_eq!(e.code, ErrorCode::InvalidInput);
        assert_eq!(e.message, expected);
    }
    let e = run_err(
        &ctx,
        "gmail",
        "send",
        json!({ "to": "ada@example.com", "subject": "s", "body": "t" }),
    )
    .await?;
    assert!(
        e.message.starts_with("with.body: unknown field"),
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
async fn list_messages_follows_page_tokens_up_to_the_limit() -> Result<()> {
    let (server, ctx) = gmail().await;
    Mock::given(method("GET"))
        .and(path("/gmail/v1/users/me/messages"))
        .and(query_param("pageToken", "04928147712398346716"))
        .and(query_param("maxResults", "1"))
        .and(query_param("q", "from:ada is:unread"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messages": [{ "id": "18c2b9b5f3a4e6d3", "threadId": "18c2b9b5f3a4e6d3" }],
            "nextPageToken": "13360716052227812075",
            "resultSizeEstimate": 4
        })))
        .expect(1)
        .mount(&server)
        .await;
    Mock::given(method("GET"))
        .and(path("/gmail/v1/users/me/messages"))
        .and(query_param_is_missing("pageToken"))
        .and(query_param("maxResults", "3"))
        .and(query_param("q", "from:ada is:unread"))
        .and(query_param("labelIds", "INBOX"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messages": [
                { "id": "18c2b9b5f3a4e6d1", "threadId": "18c2b9b5f3a4e6d1" },
                { "id": "18c2b9b5f3a4e6d2", "threadId": "18c2b9b5f3a4e6d1" }
            ],
            "nextPageToken": "04928147712398346716",
            "resultSizeEstimate": 4
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "gmail",
        "list_messages",
        json!({ "q": "from:ada is:unread", "label_ids": ["INBOX"], "limit": 3 }),
    )
    .await?;
    let ids: Vec<&str> = out["items"]
        .as_array()
        .map(|a| a.iter().filter_map(|m| m["id"].as_str()).collect())
        .unwrap_or_default();
    assert_eq!(
        ids,
        ["18c2b9b5f3a4e6d1", "18c2b9b5f3a4e6d2", "18c2b9b5f3a4e6d3"]
    );
    assert_eq!(out["next_cursor"], "13360716052227812075");

    // The last page has no token.
    server.reset().await;
    Mock::given(path("/gmail/v1/users/me/messages"))
        .and(query_param("pageToken", "13360716052227812075"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "messages": [{ "id": "18c2b9b5f3a4e6d4", "threadId": "18c2b9b5f3a4e6d4" }],
            "resultSizeEstimate": 1
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "gmail",
        "list_messages",
        json!({ "cursor": "13360716052227812075" }),
    )
    .await?;
    assert_eq!(out["items"].as_array().map(Vec::len), Some(1));
    assert_eq!(out["next_cursor"], Value::Null);
    Ok(())
}

#[tokio::test]
async fn get_message_decodes_headers_and_bodies() -> Result<()> {
    let (server, ctx) = gmail().await;
    let url_b64 = |t: &str| base64::engine::general_purpose::URL_SAFE.encode(t);
    Mock::given(method("GET"))
        .and(path("/gmail/v1/users/me/messages/18c2b9b5f3a4e6d1"))
        .and(query_param("format", "full"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "18c2b9b5f3a4e6d1",
            "threadId": "18c2b9b5f3a4e6d1",
            "labelIds": ["UNREAD", "INBOX"],
            "snippet": "Where is my order?",
            "sizeEstimate": 2048,
            "historyId": "987654",
            "internalDate": "1701430000000",
            "payload": {
                "partId": "",
                "mimeType": "multipart/alternative",
                "headers": [
                    { "name": "From", "value": "Ada Lovelace <ada@example.com>" },
                    { "name": "To", "value": "support@shop.example" },
                    { "name": "Subject", "value": "Order 1042" },
                    { "name": "Date", "value": "Fri, 1 Dec 2023 11:26:40 +0000" }
                ],
                "body": { "size": 0 },
                "parts": [
                    { "partId": "0", "mimeType": "text/plain", "headers": [], "body": { "size": 18, "data": url_b64("Where is my order?") } },
                    { "partId": "1", "mimeType": "text/html", "headers": [], "body": { "size": 25, "data": url_b64("<p>Where is my order?</p>") } }
                ]
            }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "gmail",
        "get_message",
        json!({ "id": "18c2b9b5f3a4e6d1" }),
    )
    .await?;
    assert_eq!(out["subject"], "Order 1042");
    assert_eq!(out["from"], "Ada Lovelace <ada@example.com>");
    assert_eq!(out["to"], "support@shop.example");
    assert_eq!(out["date"], "Fri, 1 Dec 2023 11:26:40 +0000");
    assert_eq!(out["text"], "Where is my order?");
    assert_eq!(out["html"], "<p>Where is my order?</p>");
    assert_eq!(out["label_ids"], json!(["UNREAD", "INBOX"]));
    assert_eq!(out["raw"]["historyId"], "987654");

    server.reset().await;
    Mock::given(method("GET"))
        .and(path("/gmail/v1/users/me/messages/18c2b9b5f3a4e6d1"))
        .and(query_param("format", "metadata"))
        .and(query_param("metadataHeaders", "Subject"))
        .and(query_param("metadataHeaders", "From"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "18c2b9b5f3a4e6d1",
            "threadId": "18c2b9b5f3a4e6d1",
            "labelIds": ["INBOX"],
            "payload": { "mimeType": "multipart/alternative", "headers": [{ "name": "Subject", "value": "Order 1042" }] }
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "gmail",
        "get_message",
        json!({ "id": "18c2b9b5f3a4e6d1", "format": "metadata", "metadata_headers": ["Subject", "From"] }),
    )
    .await?;
    assert_eq!(out["subject"], "Order 1042");
    assert_eq!(out["text"], Value::Null);
    Ok(())
}

#[tokio::test]
async fn add_label_modifies_the_message() -> Result<()> {
    let (server, ctx) = gmail().await;
    Mock::given(method("POST"))
        .and(path("/gmail/v1/users/me/messages/18c2b9b5f3a4e6d1/modify"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .and(body_json(json!({ "addLabelIds": ["Label_12", "STARRED"], "removeLabelIds": ["UNREAD"] })))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "id": "18c2b9b5f3a4e6d1", "threadId": "18c2b9b5f3a4e6d1", "labelIds": ["INBOX", "Label_12", "STARRED"]
        })))
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "gmail",
        "add_label",
        json!({ "id": "18c2b9b5f3a4e6d1", "label_ids": ["Label_12", "STARRED"], "remove_label_ids": ["UNREAD"] }),
    )
    .await?;
    assert_eq!(
        out,
        json!({ "id": "18c2b9b5f3a4e6d1", "label_ids": ["INBOX", "Label_12", "STARRED"] })
    );
    Ok(())
}

#[tokio::test]
async fn forbidden_403_with_a_rate_limit_reason_is_a_rate_limit() -> Result<()> {
    let (server, ctx) = gmail().await;
    Mock::given(path("/gmail/v1/users/me/messages/send"))
        .respond_with(ResponseTemplate::new(403).set_body_json(google_error(
            403,
            "PERMISSION_DENIED",
            "userRateLimitExceeded",
            "User-rate limit exceeded.",
        )))
        .mount(&server)
        .await;
    let input = json!({ "to": "ada@example.com", "subject": "s", "text": "t" });
    let e = run_err(&ctx, "gmail", "send", input.clone()).await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.status, Some(403));

    // A 403 for a missing scope stays forbidden.
    server.reset().await;
    Mock::given(path("/gmail/v1/users/me/messages/send"))
        .respond_with(ResponseTemplate::new(403).set_body_json(google_error(
            403,
            "PERMISSION_DENIED",
            "insufficientPermissions",
            "Request had insufficient authentication scopes.",
        )))
        .mount(&server)
        .await;
    let e = run_err(&ctx, "gmail", "send", input).await?;
    assert_eq!(e.code, ErrorCode::Forbidden);
    assert!(!e.message.contains(TOKEN));
    Ok(())
}

#[tokio::test]
async fn too_many_requests_carries_retry_after() -> Result<()> {
    let (server, ctx) = gmail().await;
    Mock::given(path("/gmail/v1/users/me/messages"))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "17")
                .set_body_json(google_error(
                    429,
                    "RESOURCE_EXHAUSTED",
                    "rateLimitExceeded",
                    "Too many concurrent requests for user.",
                )),
        )
        .mount(&server)
        .await;
    let e = run_err(&ctx, "gmail", "list_messages", json!({})).await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(17)));
    Ok(())
}

#[tokio::test]
async fn a_missing_message_is_not_found() -> Result<()> {
    let (server, ctx) = gmail().await;
    Mock::given(path("/gmail/v1/users/me/messages/nope"))
        .respond_with(ResponseTemplate::new(404).set_body_json(google_error(
            404,
            "NOT_FOUND",
            "notFound",
            "Requested entity was not found.",
        )))
        .mount(&server)
        .await;
    let e = run_err(&ctx, "gmail", "get_message", json!({ "id": "nope" })).await?;
    assert_eq!(e.code, ErrorCode::NotFound);
    assert!(
        e.message.contains("Requested entity was not found"),
        "{}",
        e.message
    );
    Ok(())
}

#[tokio::test]
async fn health_reads_the_profile() -> Result<()> {
    let (server, ctx) = gmail().await;
    Mock::given(method("GET"))
        .and(path("/gmail/v1/users/me/profile"))
        .and(header("authorization", format!("Bearer {TOKEN}").as_str()))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "emailAddress": "support@shop.example", "messagesTotal": 1204, "threadsTotal": 877, "historyId": "987654"
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "gmail")
        .await?;
    Ok(())
}
