//! The outbound policy against real sockets: every internal address form is refused before a
//! connection is made, redirects are checked hop by hop, and an allowlist opens exactly what
//! it lists.
//!
//! "No connection" is proven with listeners that count what they accept: each test connects
//! to its listener once itself at the end, so a count of exactly one shows the listener was
//! up and the client never reached it. Fakes that must not be reached say `.expect(0)`.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use connectors::ActionContext;
use connectors::http::OutboundPolicy;
use connectors::oauth::{self, Grant, TokenError};
use schemas::envelope::ErrorCode;
use serde_json::json;
use wiremock::matchers::{method, path};
use wiremock::{Mock, MockServer, ResponseTemplate};

/// A context held to `policy`.
fn ctx_with(policy: OutboundPolicy) -> ActionContext {
    support::init();
    ActionContext {
        timeout: Duration::from_secs(10),
        http: connectors::http::new_client(policy),
        ..ActionContext::default()
    }
}

/// A context with the production default: every internal address refused.
fn default_ctx() -> ActionContext {
    ctx_with(OutboundPolicy::default())
}

/// A TCP listener on `addr` recording the peer of every connection it accepts.
struct Counting {
    addr: SocketAddr,
    peers: Arc<Mutex<Vec<SocketAddr>>>,
}

impl Counting {
    async fn bind(addr: &str) -> Result<Counting> {
        let listener = tokio::net::TcpListener::bind(addr).await?;
        let addr = listener.local_addr()?;
        let peers = Arc::new(Mutex::new(Vec::new()));
        let seen = peers.clone();
        tokio::spawn(async move {
            while let Ok((socket, peer)) = listener.accept().await {
                seen.lock().unwrap().push(peer);
                drop(socket);
            }
        });
        Ok(Counting { addr, peers })
    }

    fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Connects once itself and waits until that connection is accepted, then asserts it is
    /// the only one: the listener worked, and nothing else reached it (connections are
    /// accepted in the order they arrived, so an earlier one would be listed first).
    async fn assert_untouched(&self) -> Result<()> {
        let probe = tokio::net::TcpStream::connect(self.addr).await?;
        let me = probe.local_addr()?;
        tokio::time::timeout(Duration::from_secs(10), async {
            while !self.peers.lock().unwrap().contains(&me) {
                tokio::task::yield_now().await;
            }
        })
        .await?;
        assert_eq!(
            *self.peers.lock().unwrap(),
            vec![me],
            "the client connected to {}",
            self.addr
        );
        Ok(())
    }
}

/// Runs `http.request` on `url` under `ctx`, expecting a refusal, and returns its message.
async fn refused(ctx: &ActionContext, url: &str) -> Result<String> {
    let e = support::run_err(ctx, "http", "request", json!({ "url": url })).await?;
    assert_eq!(e.code, ErrorCode::Forbidden, "{url}: {e}");
    assert!(!e.is_retryable(), "{url}");
    assert_eq!(e.status, None, "{url}: a refusal has no response");
    assert!(
        e.message.contains("no connection was made"),
        "{url}: {}",
        e.message
    );
    Ok(e.message)
}

// ---- loopback forms, proven with a counting listener ----

#[tokio::test]
async fn loopback_literals_in_every_spelling_are_refused_without_a_connection() -> Result<()> {
    let ctx = default_ctx();
    let listener = Counting::bind("127.0.0.1:0").await?;
    let port = listener.port();
    for url in [
        format!("http://127.0.0.1:{port}/"),
        format!("http://[::ffff:127.0.0.1]:{port}/"),
        format!("http://0x7f000001:{port}/"),
        format!("http://2130706433:{port}/"),
        format!("http://0177.0.0.1:{port}/"),
        format!("http://127.1:{port}/"),
        format!("https://127.0.0.1:{port}/"),
    ] {
        let message = refused(&ctx, &url).await?;
        assert!(
            message.contains("127.0.0.1") && message.contains("loopback"),
            "{url}: {message}"
        );
        assert!(message.contains("--allow-outbound"), "{url}: {message}");
    }
    listener.assert_untouched().await
}

#[tokio::test]
async fn ipv6_loopback_is_refused_without_a_connection() -> Result<()> {
    let ctx = default_ctx();
    // A machine without IPv6 cannot listen on ::1; the refusal is still checked.
    let listener = Counting::bind("[::1]:0").await.ok();
    let port = listener.as_ref().map_or(9, Counting::port);
    let message = refused(&ctx, &format!("http://[::1]:{port}/")).await?;
    assert!(
        message.contains("refused to call ::1: a loopback address"),
        "{message}"
    );
    if let Some(listener) = listener {
        listener.assert_untouched().await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_host_name_resolving_to_loopback_is_refused_without_a_connection() -> Result<()> {
    let ctx = default_ctx();
    let listener = Counting::bind("127.0.0.1:0").await?;
    let message = refused(&ctx, &format!("http://localhost:{}/", listener.port())).await?;
    assert!(
        message.contains("refused to call localhost: it resolves to")
            && message.contains("a loopback address")
            && message.contains("`--allow-outbound localhost`"),
        "{message}"
    );
    listener.assert_untouched().await
}

// ---- other internal ranges and metadata names ----

#[tokio::test]
async fn internal_addresses_and_metadata_names_are_refused() -> Result<()> {
    let ctx = default_ctx();
    for (url, says) in [
        (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254: a link-local address",
        ),
        (
            "http://metadata.google.internal/computeMetadata/v1/",
            "metadata.google.internal: a cloud metadata service name",
        ),
        (
            "http://metadata/",
            "metadata: a cloud metadata service name",
        ),
        ("http://10.0.0.1/", "10.0.0.1: a private address"),
        ("http://172.16.5.4/", "172.16.5.4: a private address"),
        ("http://192.168.1.1/", "192.168.1.1: a private address"),
        (
            "http://100.64.0.1/",
            "100.64.0.1: a shared (carrier-grade NAT) address",
        ),
        ("http://[fd00::1]/", "fd00::1: a unique-local address"),
        ("http://[fe80::1]/", "fe80::1: a link-local address"),
        (
            "http://[::ffff:169.254.169.254]/",
            "::ffff:169.254.169.254: a link-local address",
        ),
        (
            "http://[64:ff9b::a9fe:a9fe]/",
            "64:ff9b::a9fe:a9fe: a link-local address",
        ),
        ("http://0.0.0.0/", "0.0.0.0: an unspecified address"),
        (
            "http://255.255.255.255/",
            "255.255.255.255: a broadcast address",
        ),
        ("http://224.0.0.1/", "224.0.0.1: a multicast address"),
    ] {
        let message = refused(&ctx, url).await?;
        assert!(message.contains(says), "{url}: {message}");
    }
    Ok(())
}

#[tokio::test]
async fn a_connections_base_url_on_an_internal_address_is_refused() -> Result<()> {
    let listener = Counting::bind("127.0.0.1:0").await?;
    let mut ctx = support::ctx_at(
        &format!("http://127.0.0.1:{}/api", listener.port()),
        Some(support::bearer("xoxb-test")),
    );
    ctx.http = connectors::http::new_client(OutboundPolicy::default());
    let e = support::run_err(
        &ctx,
        "slack",
        "post_message",
        json!({ "channel": "C1", "text": "hi" }),
    )
    .await?;
    assert_eq!(e.code, ErrorCode::Forbidden, "{e}");
    assert!(e.message.contains("refused to call 127.0.0.1"), "{e}");
    assert!(!e.message.contains("xoxb-test"), "{e}");
    listener.assert_untouched().await
}

#[tokio::test]
async fn an_oauth_token_url_on_an_internal_address_is_refused() -> Result<()> {
    support::init();
    let listener = Counting::bind("127.0.0.1:0").await?;
    let token_url = format!("http://127.0.0.1:{}/token", listener.port());
    let http = oauth::new_token_client(OutboundPolicy::default());
    let e = oauth::request_token(
        &http,
        &oauth::Client {
            token_url: &token_url,
            client_id: "id",
            client_secret: Some("secret"),
        },
        &Grant::ClientCredentials { scopes: &[] },
    )
    .await
    .expect_err("refused");
    let TokenError::Refused(refused) = &e else {
        panic!("expected a refusal, got {e:?}");
    };
    assert_eq!(refused.address, Some("127.0.0.1".parse()?));
    assert!(!e.is_retryable());
    assert!(e.to_string().contains("--allow-outbound 127.0.0.1"), "{e}");
    listener.assert_untouched().await
}

// ---- redirects ----

/// A fake answering `302 Location: to` on `/`.
async fn redirecting(to: &str) -> MockServer {
    let server = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/"))
        .respond_with(ResponseTemplate::new(302).insert_header("location", to))
        .expect(1)
        .mount(&server)
        .await;
    server
}

#[tokio::test]
async fn a_redirect_from_an_allowed_fake_to_an_internal_address_is_refused() -> Result<()> {
    // The test support's policy: loopback open, everything else internal shut.
    let ctx = support::ctx_at("http://127.0.0.1:9/", None);
    for to in [
        "http://169.254.169.254/latest/meta-data/",
        "http://metadata.google.internal/computeMetadata/v1/",
        "http://10.0.0.1/admin",
        "http://[fd00::1]/",
        "ftp://127.0.0.1/",
    ] {
        let fake = redirecting(to).await;
        let e = support::run_err(&ctx, "http", "request", json!({ "url": fake.uri() })).await?;
        assert_eq!(e.code, ErrorCode::Forbidden, "{to}: {e}");
        assert!(e.message.starts_with("refused to call"), "{to}: {e}");
        fake.verify().await;
    }
    Ok(())
}

#[tokio::test]
async fn a_redirect_to_an_unlisted_loopback_address_is_refused_without_a_connection() -> Result<()>
{
    // Only 127.0.0.1 is open; the redirect goes to 127.0.0.2, a listener of its own.
    let ctx = ctx_with("127.0.0.1".parse()?);
    let target = Counting::bind("127.0.0.2:0").await?;
    let fake = redirecting(&format!("http://127.0.0.2:{}/", target.port())).await;
    let e = support::run_err(&ctx, "http", "request", json!({ "url": fake.uri() })).await?;
    assert_eq!(e.code, ErrorCode::Forbidden, "{e}");
    assert!(
        e.message
            .contains("refused to call 127.0.0.2: a loopback address"),
        "{e}"
    );
    fake.verify().await;
    target.assert_untouched().await
}

#[tokio::test]
async fn a_redirect_from_a_host_opened_by_name_to_a_literal_it_does_not_open_is_refused()
-> Result<()> {
    // `localhost` is open by name, 127.0.0.1 is not: the second fake must never be reached.
    let ctx = ctx_with("localhost".parse()?);
    let internal = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(200))
        .expect(0)
        .mount(&internal)
        .await;
    let fake = redirecting(&format!("{}/secret", internal.uri())).await;
    let via_name = format!("http://localhost:{}/", fake.address().port());
    let e = support::run_err(&ctx, "http", "request", json!({ "url": via_name })).await?;
    assert_eq!(e.code, ErrorCode::Forbidden, "{e}");
    assert!(e.message.contains("refused to call 127.0.0.1"), "{e}");
    fake.verify().await;
    internal.verify().await;
    Ok(())
}

// ---- the allowlist ----

#[tokio::test]
async fn an_allowlisted_address_is_reachable_and_nothing_else_is() -> Result<()> {
    let ctx = ctx_with("127.0.0.1".parse()?);
    let fake = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/ok"))
        .respond_with(ResponseTemplate::new(200).set_body_json(json!({ "ok": true })))
        .expect(1)
        .mount(&fake)
        .await;
    let out = support::run(
        &ctx,
        "http",
        "request",
        json!({ "url": format!("{}/ok", fake.uri()) }),
    )
    .await?;
    assert_eq!(out["body"], json!({ "ok": true }));
    fake.verify().await;

    let other = Counting::bind("127.0.0.2:0").await?;
    refused(&ctx, &format!("http://127.0.0.2:{}/", other.port())).await?;
    refused(&ctx, "http://169.254.169.254/").await?;
    refused(&ctx, "http://10.0.0.1/").await?;
    other.assert_untouched().await
}

#[tokio::test]
async fn a_redirect_between_allowed_hosts_is_followed() -> Result<()> {
    let ctx = ctx_with("127.0.0.1".parse()?);
    let target = MockServer::start().await;
    Mock::given(method("GET"))
        .and(path("/landed"))
        .respond_with(ResponseTemplate::new(200))
        .expect(1)
        .mount(&target)
        .await;
    let fake = redirecting(&format!("{}/landed", target.uri())).await;
    let out = support::run(&ctx, "http", "request", json!({ "url": fake.uri() })).await?;
    assert_eq!(out["status"], 200);
    fake.verify().await;
    target.verify().await;
    Ok(())
}

#[tokio::test]
async fn an_allowlisted_range_opens_the_addresses_in_it() -> Result<()> {
    let ctx = ctx_with("127.0.0.0/30".parse()?);
    let inside = MockServer::start().await;
    Mock::given(method("GET"))
        .respond_with(ResponseTemplate::new(204))
        .expect(1)
        .mount(&inside)
        .await;
    let out = support::run(&ctx, "http", "request", json!({ "url": inside.uri() })).await?;
    assert_eq!(out["status"], 204);
    let outside = Counting::bind("127.0.0.5:0").await?;
    refused(&ctx, &format!("http://127.0.0.5:{}/", outside.port())).await?;
    outside.assert_untouched().await
}
