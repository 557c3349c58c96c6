//! Twilio as documented at <https://www.twilio.com/docs/messaging/api/message-resource>:
//! `POST /2010-04-01/Accounts/{AccountSid}/Messages.json`, form-encoded, HTTP basic auth with
//! the Account SID (or an API key) and secret, `201` with the Message resource, errors as
//! `{"code", "message", "more_info", "status"}` and rate limits as `429` with code `20429`.

mod support;

use std::time::Duration;

use anyhow::Result;
use base64::Engine as _;
use schemas::envelope::ErrorCode;
use serde_json::{Value, json};
use support::{basic, ctx, run, run_err};
use wiremock::matchers::{body_string, header, method, path, query_param};
use wiremock::{Mock, MockServer, ResponseTemplate};

const SID: &str = "ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";
const AUTH_TOKEN: &str = "your_auth_token_0123456789abcdef";

async fn twilio() -> (MockServer, connectors::ActionContext) {
    let server = MockServer::start().await;
    let ctx = ctx(&server, basic(SID, AUTH_TOKEN));
    (server, ctx)
}

fn basic_header(user: &str, password: &str) -> String {
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"))
    )
}

fn created(from: Value, service: Value) -> Value {
    json!({
        "account_sid": SID,
        "api_version": "2010-04-01",
        "body": "Your code is 123456",
        "date_created": "Thu, 24 Aug 2023 05:01:45 +0000",
        "date_sent": null,
        "date_updated": "Thu, 24 Aug 2023 05:01:45 +0000",
        "direction": "outbound-api",
        "error_code": null,
        "error_message": null,
        "from": from,
        "num_media": "0",
        "num_segments": "1",
        "price": null,
        "price_unit": null,
        "messaging_service_sid": service,
        "sid": "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "status": "queued",
        "subresource_uris": { "media": "/2010-04-01/Accounts/ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Messages/SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Media.json" },
        "to": "+15558675310",
        "uri": "/2010-04-01/Accounts/ACXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX/Messages/SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX.json"
    })
}

fn twilio_error(code: u32, status: u16, message: &str) -> Value {
    json!({
        "code": code,
        "message": message,
        "more_info": format!("https://www.twilio.com/docs/errors/{code}"),
        "status": status
    })
}

#[tokio::test]
async fn send_sms_posts_the_form_with_basic_auth() -> Result<()> {
    let (server, ctx) = twilio().await;
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{SID}/Messages.json")))
        .and(header("authorization", basic_header(SID, AUTH_TOKEN).as_str()))
        .and(header("content-type", "application/x-www-form-urlencoded"))
        .and(body_string(
            "To=%2B15558675310&From=%2B15017122661&Body=Your+code+is+123456&StatusCallback=https%3A%2F%2Fhooks.example.com%2Fsms%3Fstep%3D1",
        ))
        .respond_with(
            ResponseTemplate::new(201).set_body_json(created(json!("+15017122661"), Value::Null)),
        )
        .expect(1)
        .mount(&server)
        .await;
    let out = run(
        &ctx,
        "twilio",
        "send_sms",
        json!({
            "to": "+15558675310", "from": "+15017122661", "body": "Your code is 123456",
            "status_callback": "https://hooks.example.com/sms?step=1"
        }),
    )
    .await?;
    assert_eq!(
        out,
        json!({
            "sid": "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "status": "queued", "to": "+15558675310",
            "from": "+15017122661", "num_segments": "1"
        })
    );
    Ok(())
}

#[tokio::test]
async fn an_api_key_connection_names_the_account_in_the_input() -> Result<()> {
    let server = MockServer::start().await;
    let key = "SKXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX";
    let ctx = ctx(&server, basic(key, "api-key-secret-value"));
    Mock::given(method("POST"))
        .and(path(format!("/2010-04-01/Accounts/{SID}/Messages.json")))
        .and(header("authorization", basic_header(key, "api-key-secret-value").as_str()))
        .and(body_string(
            "To=%2B15558675310&MessagingServiceSid=MGXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX&Body=Your+code+is+123456",
        ))
        .respond_with(ResponseTemplate::new(201).set_body_json(created(
            Value::Null,
            json!("MGXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX"),
        )))
        .expect(1)
        .mount(&server)
        .await;
    let input = json!({
        "to": "+15558675310", "messaging_service_sid": "MGXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX",
        "body": "Your code is 123456"
    });
    let e = run_err(&ctx, "twilio", "send_sms", input.clone()).await?;
    assert_eq!(
        e.message,
        "with.account_sid: is required when the connection's username is not an Account SID (`AC…`)"
    );
    let mut with_account = input;
    with_account["account_sid"] = json!(SID);
    let out = run(&ctx, "twilio", "send_sms", with_account).await?;
    assert_eq!(out["from"], Value::Null);
    assert_eq!(out["sid"], "SMXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX");
    Ok(())
}

#[tokio::test]
async fn bad_inputs_are_refused_before_any_call() -> Result<()> {
    let (server, ctx) = twilio().await;
    let e = run_err(
        &ctx,
        "twilio",
        "send_sms",
        json!({ "to": "+15558675310", "body": "x" }),
    )
    .await?;
    assert_eq!(
        e.message,
        "with.from: give `from` or `messaging_service_sid`, exactly one"
    );
    let e = run_err(
        &ctx,
        "twilio",
        "send_sms",
        json!({ "to": "+15558675310", "from": "+15017122661", "body": "x", "account_sid": "../../Other" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(e.message.starts_with("with.account_sid:"), "{}", e.message);
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
async fn an_invalid_number_is_a_permanent_input_error() -> Result<()> {
    let (server, ctx) = twilio().await;
    Mock::given(path(format!("/2010-04-01/Accounts/{SID}/Messages.json")))
        .respond_with(ResponseTemplate::new(400).set_body_json(twilio_error(
            21211,
            400,
            "The 'To' number +1555 is not a valid phone number.",
        )))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "twilio",
        "send_sms",
        json!({ "to": "+1555", "from": "+15017122661", "body": "x" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert_eq!(e.status, Some(400));
    assert!(e.message.contains("21211"), "{}", e.message);
    assert!(!e.message.contains(AUTH_TOKEN));

    // A recipient who replied STOP cannot be messaged: forbidden, not a bad input.
    server.reset().await;
    Mock::given(path(format!("/2010-04-01/Accounts/{SID}/Messages.json")))
        .respond_with(ResponseTemplate::new(400).set_body_json(twilio_error(
            21610,
            400,
            "Attempt to send to unsubscribed recipient",
        )))
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "twilio",
        "send_sms",
        json!({ "to": "+15558675310", "from": "+15017122661", "body": "x" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Forbidden);
    Ok(())
}

#[tokio::test]
async fn too_many_requests_is_rate_limited() -> Result<()> {
    let (server, ctx) = twilio().await;
    Mock::given(path(format!("/2010-04-01/Accounts/{SID}/Messages.json")))
        .respond_with(
            ResponseTemplate::new(429)
                .insert_header("retry-after", "2")
                .set_body_json(twilio_error(20429, 429, "Too Many Requests")),
        )
        .mount(&server)
        .await;
    let e = run_err(
        &ctx,
        "twilio",
        "send_sms",
        json!({ "to": "+15558675310", "from": "+15017122661", "body": "x" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert_eq!(e.retry_after, Some(Duration::from_secs(2)));
    assert_eq!(e.status, Some(429));
    Ok(())
}

#[tokio::test]
async fn wrong_credentials_are_unauthorized() -> Result<()> {
    let (server, ctx) = twilio().await;
    Mock::given(path(format!("/2010-04-01/Accounts/{SID}.json")))
        .respond_with(ResponseTemplate::new(401).set_body_json(twilio_error(
            20003,
            401,
            "Authenticate",
        )))
        .mount(&server)
        .await;
    let e = connectors::Registry::builtin()
        .health(&ctx, "twilio")
        .await
        .expect_err("refused");
    assert_eq!(e.code, ErrorCode::Unauthorized);
    Ok(())
}

#[tokio::test]
async fn health_reads_the_account() -> Result<()> {
    let (server, ctx) = twilio().await;
    Mock::given(method("GET"))
        .and(path(format!("/2010-04-01/Accounts/{SID}.json")))
        .and(header(
            "authorization",
            basic_header(SID, AUTH_TOKEN).as_str(),
        ))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "sid": SID, "friendly_name": "Shop", "status": "active", "type": "Full"
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "twilio")
        .await?;

    // An API key lists the accounts it can see.
    let server = MockServer::start().await;
    let ctx = support::ctx(
        &server,
        basic("SKXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXXX", "secret-value"),
    );
    Mock::given(method("GET"))
        .and(path("/2010-04-01/Accounts.json"))
        .and(query_param("PageSize", "1"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({
            "accounts": [{ "sid": SID, "status": "active" }], "page": 0, "page_size": 1
        })))
        .expect(1)
        .mount(&server)
        .await;
    connectors::Registry::builtin()
        .health(&ctx, "twilio")
        .await?;
    Ok(())
}
