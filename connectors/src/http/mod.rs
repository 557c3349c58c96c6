//! The HTTP layer every connector uses: one client, one way to send and read a response
//! within bounds, failure classification in one place, rate-limit headers, redaction.
//!
//! A connector builds a `reqwest::RequestBuilder` on the [`Client`] from its
//! [`crate::ActionContext`], hands it to [`send`] with the statuses it accepts and its
//! [`Quirks`], and turns a [`CallError`] into an [`ActionError`] with
//! [`CallError::into_action_error`]. [`request`] (`http.request`) is the first such connector.
//! Every call a [`Client`] makes is held to its [`OutboundPolicy`] ([`outbound`]).

pub mod classify;
pub mod outbound;
pub mod ratelimit;
pub mod redact;
pub mod request;

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use tracing::Instrument as _;

pub use classify::{Classification, Failure, NoQuirks, Quirks, Verdict, classify};
pub use outbound::{OutboundPolicy, Refused};
pub use redact::Secrets;

use crate::error::ActionError;

/// Connect timeout of every outbound request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on a response body.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;
/// Redirects followed before giving up.
pub const MAX_REDIRECTS: usize = 5;
/// How much of a failed response's body is read: enough for a provider's error document
/// (and a connector's [`Quirks`]), never a whole error page of arbitrary size.
pub const ERROR_BODY_BYTES: usize = 64 * 1024;
/// Characters of a response body quoted in an error message.
const EXCERPT_CHARS: usize = 200;

/// The HTTP client every outbound call goes through: a `reqwest` client whose every
/// destination is held to an [`OutboundPolicy`].
///
/// Host names are resolved by a resolver that keeps only the addresses the policy allows (so
/// the connection goes to an address that was checked), IP-literal URLs are checked by
/// [`Client::execute`] before sending, and every redirect hop is checked again. Refusals are
/// [`Failure::Refused`]. System proxy settings (`HTTPS_PROXY`, …) are not used: a proxy
/// would resolve names where the policy cannot see them.
///
/// Cloning is cheap and shares the connection pool.
#[derive(Debug, Clone)]
pub struct Client {
    inner: reqwest::Client,
    policy: Arc<OutboundPolicy>,
}

impl Client {
    /// A client for one runtime's actions: connection pooling across every action it runs.
    ///
    /// Callers create it once per runtime and pass it in [`crate::ActionContext`]: pooled
    /// connections are driven by tasks on the runtime that opened them, so a client must not
    /// outlive or cross runtimes.
    ///
    /// Redirects: at most [`MAX_REDIRECTS`], each hop checked against `policy`, and never
    /// from `https` to `http` (the redirect response itself is then returned). `reqwest`
    /// drops `Authorization` and `Cookie` when a redirect leaves the origin.
    ///
    /// # Panics
    /// When no `rustls` crypto provider is installed: a process installs
    /// `rustls::crypto::ring::default_provider()` once at start, before building a client.
    pub fn new(policy: OutboundPolicy) -> Client {
        let policy = Arc::new(policy);
        let checked = policy.clone();
        let redirects = reqwest::redirect::Policy::custom(move |attempt| {
            let downgrade = attempt.url().scheme() == "http"
                && attempt
                    .previous()
                    .last()
                    .is_some_and(|from| from.scheme() == "https");
            if attempt.previous().len() > MAX_REDIRECTS {
                attempt.error(TooManyRedirects)
            } else if let Err(refused) = checked.check_url(attempt.url()) {
                // A host name passes here unless it is a metadata name; the resolver checks
                // its addresses when the hop connects.
                attempt.error(refused)
            } else if downgrade {
                attempt.stop()
            } else {
                attempt.follow()
            }
        });
        Client::build(policy, redirects, CONNECT_TIMEOUT)
    }

    /// A client that follows no redirect (the redirect response is returned as is), with
    /// its own connect timeout: for OAuth token endpoints ([`crate::oauth::new_token_client`]).
    pub fn without_redirects(policy: OutboundPolicy, connect_timeout: Duration) -> Client {
        Client::build(
            Arc::new(policy),
            reqwest::redirect::Policy::none(),
            connect_timeout,
        )
    }

    fn build(
        policy: Arc<OutboundPolicy>,
        redirects: reqwest::redirect::Policy,
        connect_timeout: Duration,
    ) -> Client {
        let builder = reqwest::Client::builder()
            .connect_timeout(connect_timeout)
            .redirect(redirects)
            .no_proxy()
            .dns_resolver(Arc::new(outbound::FilteringResolver {
                policy: policy.clone(),
            }))
            .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")));
        // Building fails only on a broken TLS setup, which every call would hit anyway; the
        // panic message names the missing crypto provider. The fallback keeps the policy's
        // resolver out, so it refuses everything rather than connect unchecked.
        let inner = builder.build().unwrap_or_else(|_| {
            reqwest::Client::builder()
                .no_proxy()
                .dns_resolver(Arc::new(outbound::FilteringResolver {
                    policy: Arc::new(OutboundPolicy::default()),
                }))
                .build()
                .unwrap_or_default()
        });
        Client { inner, policy }
    }

    /// The policy its calls are held to.
    pub fn policy(&self) -> &OutboundPolicy {
        &self.policy
    }

    /// A request to `url`; send it with [`Client::execute`] (or [`send`]).
    pub fn request(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        self.inner.request(method, url)
    }

    /// A `GET` of `url`.
    pub fn get(&self, url: Url) -> reqwest::RequestBuilder {
        self.request(Method::GET, url)
    }

    /// A `POST` to `url`.
    pub fn post(&self, url: Url) -> reqwest::RequestBuilder {
        self.request(Method::POST, url)
    }

    /// Sends `request` on this client once its URL passes the policy (an IP literal is
    /// checked here; a host name's addresses when it is resolved), and returns the response
    /// (its body not yet read). The request is sent on this client whichever client built it, so the policy's
    /// resolver is the one that resolves it.
    pub async fn execute(
        &self,
        request: reqwest::RequestBuilder,
    ) -> Result<reqwest::Response, Failure> {
        let (_, request) = request.build_split();
        let request = request.map_err(|e| Failure::from_reqwest(&e))?;
        self.policy
            .check_url(request.url())
            .map_err(Failure::Refused)?;
        // Method, host and status only: a URL's path and query, headers and bodies may hold
        // credentials or personal data, and spans leave the process.
        let span = tracing::info_span!(
            "http.request",
            method = %request.method(),
            host = request.url().host_str().unwrap_or_default(),
            status = tracing::field::Empty,
        );
        let answer = self
            .inner
            .execute(request)
            .instrument(span.clone())
            .await
            .map_err(|e| Failure::from_reqwest(&e));
        if let Ok(response) = &answer {
            span.record("status", response.status().as_u16());
        }
        answer
    }
}

/// [`Client::new`]: the client of one runtime's actions.
pub fn new_client(policy: OutboundPolicy) -> Client {
    Client::new(policy)
}

#[derive(Debug, thiserror::Error)]
#[error("more than {MAX_REDIRECTS} redirects")]
struct TooManyRedirects;

/// A response read within its caps.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// The status.
    pub status: StatusCode,
    /// The headers, as received.
    pub headers: HeaderMap,
    /// The body: whole for an accepted response, at most [`ERROR_BODY_BYTES`] otherwise.
    pub body: Vec<u8>,
}

/// Why [`send`] failed, with the response when the provider answered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{failure}")]
pub struct CallError {
    /// What went wrong; [`classify()`] decides what it means.
    pub failure: Failure,
    /// The response, when there was one (its body cut at [`ERROR_BODY_BYTES`]).
    pub response: Option<Response>,
}

impl CallError {
    fn new(failure: Failure) -> Self {
        CallError {
            failure,
            response: None,
        }
    }

    /// The [`ActionError`] for this failure: code and wait from [`classify()`], and a message
    /// naming `host` (never the URL, whose query may hold a key) with a short excerpt of any
    /// response body, every value in `secrets` scrubbed from it.
    pub fn into_action_error(self, host: &str, secrets: &Secrets) -> ActionError {
        let verdict = classify(&self.failure);
        // A refusal names the host or address it refused (a redirect's, perhaps), not `host`.
        let mut message = match &self.failure {
            Failure::Refused(refused) => refused.to_string(),
            other => format!("{host} {other}"),
        };
        if let Some(quote) = self
            .response
            .as_ref()
            .and_then(|r| excerpt(&r.body, secrets))
        {
            message.push_str(": ");
            message.push_str(&quote);
        }
        ActionError {
            code: verdict.code(),
            message,
            retry_after: verdict.retry_after(),
            status: self.response.map(|r| r.status.as_u16()),
        }
    }
}

/// Sends `request` on `client` ([`Client::execute`]: refused destinations are never
/// connected to) and reads the response within bounds.
///
/// A status for which `accept` is true has its whole body read, failing with
/// [`Failure::TooLarge`] as soon as it passes `limit` bytes (checked while streaming, so an
/// oversized body is never held in memory). Any other status is a [`Failure::Status`] with the
/// first [`ERROR_BODY_BYTES`] of its body. `quirks` sees every response first and may turn it
/// into a [`Failure::Rejected`].
pub async fn send(
    client: &Client,
    request: reqwest::RequestBuilder,
    limit: usize,
    accept: impl Fn(StatusCode) -> bool,
    quirks: &dyn Quirks,
) -> Result<Response, CallError> {
    let mut response = client.execute(request).await.map_err(CallError::new)?;
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let accepted = accept(status);
    let body = if accepted {
        read_limited(response, limit).await?
    } else {
        read_prefix(response, ERROR_BODY_BYTES).await
    };
    let verdict = quirks.judge(status, &headers, &body);
    let response = Response {
        status,
        headers,
        body,
    };
    let failure = match verdict {
        Some(verdict) => Failure::Rejected { status, verdict },
        None if accepted => return Ok(response),
        None => Failure::Status {
            status,
            retry_after: ratelimit::wait_hint(status, &response.headers, SystemTime::now()),
        },
    };
    Err(CallError {
        failure,
        response: Some(response),
    })
}

async fn read_limited(mut response: reqwest::Response, limit: usize) -> Result<Vec<u8>, CallError> {
    let too_large = || CallError::new(Failure::TooLarge { limit });
    // A declared length over the cap is refused before reading a byte; an undeclared or
    // understated one is caught chunk by chunk below.
    if response
        .content_length()
        .is_some_and(|n| n > u64::try_from(limit).unwrap_or(u64::MAX))
    {
        return Err(too_large());
    }
    let mut body = Vec::new();
    while let Some(chunk) = response
        .chunk()
        .await
        .map_err(|e| CallError::new(Failure::from_reqwest(&e)))?
    {
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}

/// Up to `limit` bytes of the body. A read that fails midway keeps what arrived: the status
/// already says what went wrong, the body only illustrates it.
async fn read_prefix(mut response: reqwest::Response, limit: usize) -> Vec<u8> {
    let mut body = Vec::new();
    while body.len() < limit {
        match response.chunk().await {
            Ok(Some(chunk)) => {
                let room = limit - body.len();
                body.extend_from_slice(&chunk[..chunk.len().min(room)]);
            }
            Ok(None) | Err(_) => break,
        }
    }
    body
}

/// A one-line quote of `body` for an error message, scrubbed, at most [`EXCERPT_CHARS`].
fn excerpt(body: &[u8], secrets: &Secrets) -> Option<String> {
    if body.is_empty() {
        return None;
    }
    let text = match std::str::from_utf8(body) {
        Ok(text) => text,
        // Cut mid-character by `read_prefix`: keep the valid part.
        Err(e) if e.error_len().is_none() => std::str::from_utf8(&body[..e.valid_up_to()]).ok()?,
        Err(_) => return Some(format!("({} bytes of binary data)", body.len())),
    };
    // Scrub before cutting, so a credential straddling the cut cannot leave a readable half.
    let scrubbed = secrets.scrub(text);
    let one_line = scrubbed
        .split(|c: char| c.is_whitespace() || c.is_control())
        .filter(|w| !w.is_empty())
        .collect::<Vec<_>>()
        .join(" ");
    if one_line.is_empty() {
        return None;
    }
    let mut quote: String = one_line.chars().take(EXCERPT_CHARS).collect();
    if quote.len() < one_line.len() {
        quote.push('…');
    }
    Some(quote)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn excerpt_is_one_short_line() {
        let body = format!("line one\n\tline two {}", "x".repeat(500));
        let quote = excerpt(body.as_bytes(), &Secrets::default()).expect("an excerpt");
        assert!(quote.starts_with("line one line two xxx"), "{quote}");
        assert_eq!(quote.chars().count(), EXCERPT_CHARS + 1);
        assert!(quote.ends_with('…'));
    }

    #[test]
    fn excerpt_of_binary_says_so() {
        assert_eq!(
            excerpt(&[0xff, 0xfe, 0x00, 0x01], &Secrets::default()).as_deref(),
            Some("(4 bytes of binary data)")
        );
    }

    #[test]
    fn excerpt_keeps_text_cut_mid_character() {
        let body = "héllo".as_bytes();
        assert_eq!(
            excerpt(&body[..2], &Secrets::default()).as_deref(),
            Some("h")
        );
    }
}
