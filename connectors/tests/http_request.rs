//! `http.request` against real HTTP servers on ephemeral ports: a wiremock fake for documented
//! responses, and raw sockets for what a well-behaved server never does (hang, stream forever).

use std::net::SocketAddr;
use std::sync::Once;
use std::time::{Duration, SystemTime};

use anyhow::{Context as _, Result};
use connectors::{ActionContext, ActionError, execute};
use schemas::envelope::ErrorCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;
use wiremock::matchers::{body_json, header, header_exists, method, path, query_param};
use wiremock::{Mock, MockServer, Request, Respond, ResponseTemplate};

/// A context with a crypto provider installed, as every binary does at start.
fn ctx() -> ActionContext {
    static PROVIDER: Once = Once::new();
    PROVIDER.call_once(|| {
        // Err only when a provider is already installed, which is what we want anyway.
        let _ = rustls::crypto::ring::default_provider().install_default();
    });
    ActionContext {
        timeout: Duration::from_secs(10),
        // The fakes listen on 127.0.0.1, which the default policy refuses.
        http: connectors::http::new_client(connectors::http::OutboundPolicy::loopback()),
        ..ActionContext::default()
    }
}

async fn request(ctx: &ActionContext, input: Value) -> Result<Value, ActionError> {
    execute(ctx, "http", "request", input).await
}

async fn expect_err(ctx: &ActionContext, input: Value) -> Result<ActionError> {
    match request(ctx, input).await {
        Ok(out) => anyhow::bail!("expected an error, got {out:#}"),
        Err(e) => Ok(e),
    }
}

/// A fake answering `template` to every request on `/`.
async fn answering(template: ResponseTemplate) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(path("/"))
        .respond_with(template)
        .mount(&server)
        .await;
    server
}

fn secs(n: u64) -> Option<Duration> {
    Some(Duration::from_secs(n))
}

// ---- requests as sent ----

#[tokio::test]
async fn get_sends_query_and_headers() -> Result<()> {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/people"))
        .and(query_param("page", "2"))
        .and(query_param("limit", "10"))
        .and(query_param("active", "true"))
        .and(query_param("q", "a&b c"))
        .and(header("accept", "application/json"))
        .and(header("x-retries", "3"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "n": 1 })))
        .expect(1)
        .mount(&server)
        .await;
    let out = request(
        &ctx(),
        json!({
            "url": format!("{}/people?page=2", server.uri()),
            "query": { "limit": 10, "active": true, "q": "a&b c" },
            "headers": { "Accept": "application/json", "X-Retries": 3 },
        }),
    )
    .await?;
    assert_eq!(out["status"], 200);
    assert_eq!(out["body"], json!({ "n": 1 }));
    Ok(())
}

#[tokio::test]
async fn post_sends_a_json_body() -> Result<()> {
    let server = MockServer::start().await;
    Mock::given(method("POST"))
        .and(path("/items"))
        .and(header("content-type", "application/json"))
        .and(body_json(json!({ "name": "widget", "tags": ["a", "b"] })))
        .respond_with(ResponseTemplate::new(201).set_body_json(json!({ "id": 7 })))
        .expect(1)
        .mount(&server)
        .await;
    let out = request(
        &ctx(),
        json!({
            "method": "post",
            "url": format!("{}/items", server.uri()),
            "json": { "name": "widget", "tags": ["a", "b"] },
        }),
    )
    .await?;
    assert_eq!(out["status"], 201);
    assert_eq!(out["body"]["id"], 7);
    Ok(())
}

#[tokio::test]
async fn idempotency_key_is_sent_only_when_asked() -> Result<()> {
    let server = answering(ResponseTemplate::new(200)).await;
    let ctx = ActionContext {
        idempotency_key: Some("run-1.step-a".into()),
        ..ctx()
    };
    request(
        &ctx,
        json!({ "method": "POST", "url": server.uri(), "idempotency": true }),
    )
    .await?;
    request(&ctx, json!({ "method": "POST", "url": server.uri() })).await?;
    let seen = server.received_requests().await.context("recording")?;
    let keys: Vec<Option<&str>> = seen
        .iter()
        .map(|r| {
            r.headers
                .get("idempotency-key")
                .and_then(|v| v.to_str().ok())
        })
        .collect();
    assert_eq!(keys, [Some("run-1.step-a"), None]);
    Ok(())
}

#[tokio::test]
async fn traceparent_is_forwarded() -> Result<()> {
    let tp = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let server = MockServer::start().await;
    Mock::given(header("traceparent", tp))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&server)
        .await;
    let ctx = ActionContext {
        traceparent: Some(tp.into()),
        ..ctx()
    };
    let out = request(&ctx, json!({ "url": server.uri() })).await?;
    assert_eq!(out["status"], 204);
    assert_eq!(out["body"], Value::Null);
    Ok(())
}

// ---- response bodies ----

#[tokio::test]
async fn json_response_body_is_parsed() -> Result<()> {
    let server = answering(ResponseTemplate::new(200).set_body_raw(
        r#"{"ok": true, "items": [1, 2]}"#,
        "application/json; charset=utf-8",
    ))
    .await;
    let out = request(&ctx(), json!({ "url": server.uri() })).await?;
    assert_eq!(out["body"], json!({ "ok": true, "items": [1, 2] }));
    assert_eq!(
        out["headers"]["content-type"],
        "application/json; charset=utf-8"
    );
    assert_eq!(out.get("body_base64"), None);
    Ok(())
}

#[tokio::test]
async fn text_response_body_is_a_string() -> Result<()> {
    let server = answering(
        ResponseTemplate::new(200).set_body_raw("{\"looks\": \"like json\"}", "text/plain"),
    )
    .await;
    let out = request(&ctx(), json!({ "url": server.uri() })).await?;
    assert_eq!(out["body"], "{\"looks\": \"like json\"}");
    Ok(())
}

#[tokio::test]
async fn binary_response_body_is_base64_with_a_flag() -> Result<()> {
    let server = answering(
        ResponseTemplate::new(200)
            .set_body_raw(vec![0xff, 0x00, 0xfe, 0x10], "application/octet-stream"),
    )
    .await;
    let out = request(&ctx(), json!({ "url": server.uri() })).await?;
    assert_eq!(out["body"], "/wD+EA==");
    assert_eq!(out["body_base64"], true);
    Ok(())
}

#[tokio::test]
async fn credential_like_response_headers_are_redacted_in_the_output() -> Result<()> {
    let server = answering(
        ResponseTemplate::new(200)
            .insert_header("set-cookie", "session=abcdef")
            .insert_header("x-request-id", "r-1"),
    )
    .await;
    let out = request(&ctx(), json!({ "url": server.uri() })).await?;
    assert_eq!(out["headers"]["set-cookie"], "[redacted]");
    assert_eq!(out["headers"]["x-request-id"], "r-1");
    Ok(())
}

// ---- failures, classified ----

#[tokio::test]
async fn server_error_is_retryable_upstream_unavailable() -> Result<()> {
    let server = answering(ResponseTemplate::new(500).set_body_string("database on fire")).await;
    let e = expect_err(&ctx(), json!({ "url": server.uri() })).await?;
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    assert!(e.is_retryable());
    assert_eq!(e.status, Some(500));
    assert_eq!(e.retry_after, None);
    assert!(e.message.contains("500"), "{}", e.message);
    assert!(e.message.contains("database on fire"), "{}", e.message);
    Ok(())
}

#[tokio::test]
async fn too_many_requests_with_retry_after_seconds_is_rate_limited_with_that_wait() -> Result<()> {
    let server = answering(ResponseTemplate::new(429).insert_header("retry-after", "2")).await;
    let e = expect_err(&ctx(), json!({ "url": server.uri() })).await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    assert!(e.is_retryable());
    assert_eq!(e.retry_after, secs(2));
    Ok(())
}

#[tokio::test]
async fn retry_after_as_an_http_date_sets_the_wait() -> Result<()> {
    let at = httpdate::fmt_http_date(SystemTime::now() + Duration::from_secs(30));
    let server =
        answering(ResponseTemplate::new(503).insert_header("retry-after", at.as_str())).await;
    let e = expect_err(&ctx(), json!({ "url": server.uri() })).await?;
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    let wait = e.retry_after.context("a wait")?;
    // HTTP dates have whole seconds and a little time passes between writing and reading it.
    assert!(
        wait > Duration::from_secs(27) && wait <= Duration::from_secs(30),
        "{wait:?}"
    );
    Ok(())
}

#[tokio::test]
async fn x_ratelimit_reset_epoch_sets_the_wait_on_429() -> Result<()> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)?
        .as_secs();
    let server = answering(
        ResponseTemplate::new(429)
            .insert_header("x-ratelimit-remaining", "0")
            .insert_header("x-ratelimit-reset", (now + 60).to_string().as_str()),
    )
    .await;
    let e = expect_err(&ctx(), json!({ "url": server.uri() })).await?;
    assert_eq!(e.code, ErrorCode::RateLimited);
    let wait = e.retry_after.context("a wait")?;
    assert!(
        wait > Duration::from_secs(57) && wait <= Duration::from_secs(60),
        "{wait:?}"
    );
    Ok(())
}

#[tokio::test]
async fn bad_request_is_permanent_invalid_input() -> Result<()> {
    let server = answering(
        ResponseTemplate::new(400).set_body_json(json!({ "error": "email is malformed" })),
    )
    .await;
    let e = expect_err(&ctx(), json!({ "url": server.uri() })).await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(!e.is_retryable());
    assert_eq!(e.status, Some(400));
    assert!(e.message.contains("email is malformed"), "{}", e.message);
    Ok(())
}

async fn code_for(status: u16) -> Result<ActionError> {
    let server = answering(ResponseTemplate::new(status).insert_header("retry-after", "5")).await;
    expect_err(&ctx(), json!({ "url": server.uri() })).await
}

#[tokio::test]
async fn unauthorized_is_permanent_unauthorized() -> Result<()> {
    let e = code_for(401).await?;
    assert_eq!(
        (e.code, e.is_retryable(), e.retry_after),
        (ErrorCode::Unauthorized, false, None)
    );
    Ok(())
}

#[tokio::test]
async fn forbidden_is_permanent_forbidden() -> Result<()> {
    let e = code_for(403).await?;
    assert_eq!(
        (e.code, e.is_retryable(), e.retry_after),
        (ErrorCode::Forbidden, false, None)
    );
    Ok(())
}

#[tokio::test]
async fn not_found_is_permanent_not_found() -> Result<()> {
    let e = code_for(404).await?;
    assert_eq!(
        (e.code, e.is_retryable(), e.retry_after),
        (ErrorCode::NotFound, false, None)
    );
    Ok(())
}

#[tokio::test]
async fn not_implemented_is_permanent() -> Result<()> {
    let e = code_for(501).await?;
    assert_eq!(
        (e.code, e.is_retryable(), e.status),
        (ErrorCode::InvalidInput, false, Some(501))
    );
    Ok(())
}

#[tokio::test]
async fn expect_404_makes_a_404_a_success() -> Result<()> {
    let server =
        answering(ResponseTemplate::new(404).set_body_json(json!({ "found": false }))).await;
    let out = request(&ctx(), json!({ "url": server.uri(), "expect": [200, 404] })).await?;
    assert_eq!(out["status"], 404);
    assert_eq!(out["body"]["found"], false);
    Ok(())
}

#[tokio::test]
async fn a_2xx_outside_expect_is_a_permanent_error() -> Result<()> {
    let server = answering(ResponseTemplate::new(202)).await;
    let e = expect_err(&ctx(), json!({ "url": server.uri(), "expect": [200] })).await?;
    assert_eq!((e.code, e.status), (ErrorCode::InvalidInput, Some(202)));
    Ok(())
}

#[tokio::test]
async fn redirect_loop_is_refused() -> Result<()> {
    let server = MockServer::start().await;
    Mock::given(path("/loop"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", "/loop"))
        .mount(&server)
        .await;
    let e = expect_err(&ctx(), json!({ "url": format!("{}/loop", server.uri()) })).await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    let hops = server.received_requests().await.context("recording")?.len();
    assert_eq!(hops, connectors::http::MAX_REDIRECTS + 1);
    Ok(())
}

/// A server that accepts connections and never answers.
async fn silent_server() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let mut open = Vec::new();
        while let Ok((socket, _)) = listener.accept().await {
            open.push(socket);
        }
    });
    Ok(addr)
}

#[tokio::test]
async fn timeout_is_retryable_timeout() -> Result<()> {
    let addr = silent_server().await?;
    let e = expect_err(
        &ctx(),
        json!({ "url": format!("http://{addr}/"), "timeout_ms": 200 }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Timeout);
    assert!(e.is_retryable());
    assert_eq!(e.status, None);
    Ok(())
}

#[tokio::test]
async fn connection_refused_is_retryable_upstream_unavailable() -> Result<()> {
    // A port that was just free and is closed again.
    let addr = TcpListener::bind("127.0.0.1:0").await?.local_addr()?;
    let e = expect_err(&ctx(), json!({ "url": format!("http://{addr}/") })).await?;
    assert_eq!(e.code, ErrorCode::UpstreamUnavailable);
    assert!(e.is_retryable());
    assert_eq!(
        e.message,
        format!("{addr} could not be reached (connection refused)")
    );
    Ok(())
}

#[tokio::test]
async fn response_declared_over_the_size_cap_is_refused() -> Result<()> {
    let server = answering(ResponseTemplate::new(200).set_body_bytes(vec![b'x'; 64 * 1024])).await;
    let ctx = ActionContext {
        max_response_bytes: 1024,
        ..ctx()
    };
    let e = expect_err(&ctx, json!({ "url": server.uri() })).await?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(e.message.contains("1024-byte limit"), "{}", e.message);
    Ok(())
}

/// A server whose every response is `200` with a chunked body that never ends.
async fn endless_body_server() -> Result<SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let Ok((mut socket, _)) = listener.accept().await else {
            return;
        };
        let mut request = Vec::new();
        let mut buf = [0u8; 1024];
        while !request.windows(4).any(|w| w == b"\r\n\r\n") {
            match socket.read(&mut buf).await {
                Ok(0) | Err(_) => return,
                Ok(n) => request.extend_from_slice(&buf[..n]),
            }
        }
        let head =
            "HTTP/1.1 200 OK\r\ncontent-type: text/plain\r\ntransfer-encoding: chunked\r\n\r\n";
        if socket.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        let chunk = format!("4000\r\n{}\r\n", "x".repeat(0x4000));
        // Writes fail once the client hangs up, which is what ends this loop.
        while socket.write_all(chunk.as_bytes()).await.is_ok() {}
    });
    Ok(addr)
}

#[tokio::test]
async fn streamed_response_over_the_size_cap_is_refused_without_reading_it_all() -> Result<()> {
    let addr = endless_body_server().await?;
    let ctx = ActionContext {
        max_response_bytes: 1024 * 1024,
        ..ctx()
    };
    // The body never ends, so only stopping at the cap can finish this call.
    let e = tokio::time::timeout(
        Duration::from_secs(30),
        expect_err(&ctx, json!({ "url": format!("http://{addr}/") })),
    )
    .await
    .context("the endless body was read past the cap")??;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert!(e.message.contains("1048576-byte limit"), "{}", e.message);
    Ok(())
}

/// Answers 401 with a body echoing every request header and the URL, as debugging
/// endpoints and some error pages do.
struct Echo;

impl Respond for Echo {
    fn respond(&self, request: &Request) -> ResponseTemplate {
        let mut text = format!("you sent {}\n", request.url);
        for (name, value) in &request.headers {
            text.push_str(&format!("{name}: {}\n", value.to_str().unwrap_or("?")));
        }
        ResponseTemplate::new(401).set_body_string(text)
    }
}

#[tokio::test]
async fn secrets_in_headers_never_appear_in_error_messages() -> Result<()> {
    let server = MockServer::start().await;
    Mock::given(header_exists("authorization"))
        .respond_with(Echo)
        .mount(&server)
        .await;
    let secrets = [
        "sk-live-0123456789abcdef",
        "k3y-ABCDEF",
        "c00kie-v4lue",
        "qu3ry-t0ken",
    ];
    let e = expect_err(
        &ctx(),
        json!({
            "url": format!("{}/?api_token={}", server.uri(), secrets[3]),
            "headers": {
                "Authorization": format!("Bearer {}", secrets[0]),
                "X-API-Key": secrets[1],
                "Cookie": format!("session={}", secrets[2]),
            },
        }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Unauthorized);
    let shown = format!("{e} {e:?}");
    for secret in secrets {
        assert!(!shown.contains(secret), "{secret} leaked: {shown}");
    }
    assert!(e.message.contains("[redacted]"), "{}", e.message);
    Ok(())
}

// ---- bad input ----

async fn invalid(input: Value) -> Result<String> {
    let e = expect_err(&ctx(), input).await?;
    assert_eq!(e.code, ErrorCode::InvalidInput, "{e}");
    Ok(e.message)
}

#[tokio::test]
async fn missing_url_is_invalid_input_naming_url() -> Result<()> {
    assert_eq!(
        invalid(json!({ "method": "GET" })).await?,
        "with.url: is required"
    );
    Ok(())
}

#[tokio::test]
async fn ftp_url_is_invalid_input_naming_url() -> Result<()> {
    assert_eq!(
        invalid(json!({ "url": "ftp://example.com/file" })).await?,
        "with.url: not an absolute http(s) URL"
    );
    Ok(())
}

#[tokio::test]
async fn relative_url_is_invalid_input_naming_url() -> Result<()> {
    assert_eq!(
        invalid(json!({ "url": "/people" })).await?,
        "with.url: not an absolute http(s) URL"
    );
    Ok(())
}

#[tokio::test]
async fn bad_method_is_invalid_input_naming_method() -> Result<()> {
    let message = invalid(json!({ "method": "FETCH", "url": "http://example.com" })).await?;
    assert!(
        message.starts_with("with.method: `FETCH` is not one of"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn headers_not_a_mapping_is_invalid_input_naming_headers() -> Result<()> {
    assert_eq!(
        invalid(json!({ "url": "http://example.com", "headers": ["accept: text/plain"] })).await?,
        "with.headers: must be a mapping"
    );
    Ok(())
}

#[tokio::test]
async fn header_value_with_a_line_break_is_invalid_input_naming_the_header() -> Result<()> {
    let message =
        invalid(json!({ "url": "http://example.com", "headers": { "x-note": "a\r\nb" } })).await?;
    assert!(
        message.starts_with("with.headers.x-note: not a valid header value"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn nested_query_value_is_invalid_input_naming_the_parameter() -> Result<()> {
    assert_eq!(
        invalid(json!({ "url": "http://example.com", "query": { "ids": [1, 2] } })).await?,
        "with.query.ids: must be a string, number or boolean"
    );
    Ok(())
}

#[tokio::test]
async fn json_and_body_together_are_invalid_input() -> Result<()> {
    assert_eq!(
        invalid(json!({ "url": "http://example.com", "json": {}, "body": "x" })).await?,
        "with.body: give `json` or `body`, not both"
    );
    Ok(())
}

#[tokio::test]
async fn expect_with_a_non_status_is_invalid_input_naming_the_entry() -> Result<()> {
    assert_eq!(
        invalid(json!({ "url": "http://example.com", "expect": [200, 99] })).await?,
        "with.expect[1]: `99` is not an HTTP status code (100-599)"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_field_is_invalid_input_naming_it() -> Result<()> {
    let message = invalid(json!({ "url": "http://example.com", "heders": {} })).await?;
    assert!(
        message.starts_with("with.heders: unknown field"),
        "{message}"
    );
    Ok(())
}

#[tokio::test]
async fn unknown_action_is_invalid_input() -> Result<()> {
    let e = execute(&ctx(), "http", "fetch", json!({})).await;
    let e = e.err().context("an error")?;
    assert_eq!(e.code, ErrorCode::InvalidInput);
    assert_eq!(e.message, "connector `http` has no action `fetch`");
    let e = execute(&ctx(), "nope", "fetch", json!({})).await;
    let e = e.err().context("an error")?;
    assert_eq!(e.message, "there is no connector `nope`");
    Ok(())
}
