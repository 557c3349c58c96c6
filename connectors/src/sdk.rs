//! The connector SDK: the [`Connector`] trait, the [`Call`] every action sends its requests
//! through, and helpers for inputs, paths and pages.
//!
//! A connector is a type implementing [`Connector`]: it returns its [`Manifest`] and runs an
//! action by name with the step's rendered `with`. It never builds its own client, applies
//! credentials, reads response bodies or classifies failures itself: [`Call`] does all of that
//! the same way for every connector, so base-URL overrides, the credential, the fleet-wide
//! request budget, the trace header, response caps, redaction and error codes are uniform.
//!
//! ```
//! use connectors::sdk::{Call, Connector, parse_input};
//! use connectors::{ActionError, ActionManifest, AuthType, Manifest};
//! use connectors::manifest::Category;
//! use serde_json::{Value, json};
//!
//! #[derive(Debug)]
//! struct Echo(Manifest);
//!
//! #[derive(serde::Deserialize, schemars::JsonSchema)]
//! #[serde(deny_unknown_fields)]
//! struct Say { text: String }
//!
//! impl Echo {
//!     fn new() -> Self {
//!         Echo(Manifest::new("echo", "Echo", Category::Generic)
//!             .auth(&[AuthType::Bearer])
//!             .base_url("https://echo.example.com")
//!             .action(ActionManifest::write("say", "Say something").input::<Say>()))
//!     }
//! }
//!
//! #[async_trait::async_trait]
//! impl Connector for Echo {
//!     fn manifest(&self) -> &Manifest { &self.0 }
//!     async fn execute(&self, call: &Call<'_>, action: &str, input: Value) -> Result<Value, ActionError> {
//!         match action {
//!             "say" => {
//!                 let say: Say = parse_input(input)?;
//!                 let request = call.post(&["v1", "say"]).json(&json!({ "text": say.text }));
//!                 call.send_json(request).await
//!             }
//!             _ => Err(call.unknown_action(action)),
//!         }
//!     }
//!     async fn health(&self, call: &Call<'_>) -> Result<(), ActionError> {
//!         call.send(call.get(&["v1", "me"])).await.map(drop)
//!     }
//! }
//! ```

use std::fmt;
use std::future::Future;
use std::time::SystemTime;

use reqwest::header::HeaderMap;
use reqwest::{Method, StatusCode, Url};
use schemas::envelope::ErrorCode;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::action::ActionContext;
use crate::error::ActionError;
use crate::http::{self, NoQuirks, Quirks, Response, Secrets};
use crate::manifest::{Manifest, Pagination};

/// An integration: its manifest and the code that runs its actions.
#[async_trait::async_trait]
pub trait Connector: Send + Sync + fmt::Debug {
    /// What it offers.
    fn manifest(&self) -> &Manifest;

    /// How its provider bends HTTP (Slack's `200` with `ok: false`, GitHub's `403` rate
    /// limits); the generic rules by default.
    fn quirks(&self) -> &dyn Quirks {
        &NoQuirks
    }

    /// Runs `action` with the step's rendered `with`. `action` is one of the manifest's
    /// (the validator checked the name); an unknown one is [`Call::unknown_action`].
    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError>;

    /// Checks that the connection's credentials work with one cheap, read-only call (who am
    /// I, list one item). A connector whose provider has no such call returns `Ok(())`.
    async fn health(&self, call: &Call<'_>) -> Result<(), ActionError>;
}

/// Admits each outbound request of a connection under its request budget, fleet-wide.
///
/// The worker implements it (the budget is shared through NATS); this crate only calls it,
/// once before every request an action sends, so an action that pages or batches spends one
/// unit per request it really makes.
#[async_trait::async_trait]
pub trait RequestGate: Send + Sync + fmt::Debug {
    /// Returns once one more request fits the budget, or `rate_limited` (with the wait in
    /// `retry_after`) when the wait is too long to hold a worker slot for.
    async fn admit(&self) -> Result<(), ActionError>;

    /// Sees the status and headers of every response, to learn the provider's own limits
    /// (`X-RateLimit-Remaining: 0` with a reset time) and share them with the fleet.
    fn observe(&self, status: StatusCode, headers: &HeaderMap);
}

/// One action's outbound calls: the base URL (the connection's, or the manifest's default),
/// the credential, the budget, the trace header, caps and failure classification.
pub struct Call<'a> {
    /// Timeouts, credential, client and keys of this execution.
    pub ctx: &'a ActionContext,
    /// The connector's manifest.
    pub manifest: &'a Manifest,
    base: Url,
    quirks: &'a dyn Quirks,
    secrets: Secrets,
}

impl fmt::Debug for Call<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Call")
            .field("connector", &self.manifest.name)
            .field("host", &self.base.host_str())
            .finish_non_exhaustive()
    }
}

impl<'a> Call<'a> {
    /// The calls of one action of `connector` under `ctx`.
    ///
    /// Fails with `invalid_input` when the connection's base URL is not an absolute `http(s)`
    /// URL, or when a connector that needs a connection has no base URL at all (one whose
    /// every account lives on its own host, such as Jira or Salesforce).
    pub fn new(ctx: &'a ActionContext, connector: &'a dyn Connector) -> Result<Self, ActionError> {
        let manifest = connector.manifest();
        let base = match &ctx.base_url {
            Some(url) => Some(url.clone()),
            None => Url::parse(&manifest.default_base_url).ok(),
        };
        let base = match base {
            Some(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => url,
            Some(_) => {
                return Err(ActionError::new(
                    ErrorCode::InvalidInput,
                    "the connection's base_url is not an absolute http(s) URL",
                ));
            }
            // The generic HTTP action takes its URL from each step.
            None if !manifest.requires_connection => Url::parse("http://0.0.0.0/")
                .map_err(|_| ActionError::new(ErrorCode::Internal, "no placeholder base URL"))?,
            None => {
                return Err(ActionError::new(
                    ErrorCode::InvalidInput,
                    format!(
                        "connector `{}` has no default base URL; set `base_url` on the connection",
                        manifest.name
                    ),
                ));
            }
        };
        let mut secrets = Secrets::default();
        if let Some(credential) = &ctx.credential {
            for value in credential.secret_values() {
                secrets.note("credential", &value);
            }
        }
        Ok(Call {
            ctx,
            manifest,
            base,
            quirks: connector.quirks(),
            secrets,
        })
    }

    /// The base URL requests are built on.
    pub fn base(&self) -> &Url {
        &self.base
    }

    /// The base URL with `segments` appended, each percent-encoded as one path segment (so an
    /// input such as `a/b` or `..` cannot change the path's shape).
    pub fn url(&self, segments: &[&str]) -> Url {
        let mut url = self.base.clone();
        if let Ok(mut path) = url.path_segments_mut() {
            path.pop_if_empty().extend(segments);
        }
        url
    }

    /// A URL the provider handed back (a `next` link, an upload URL). It must be on the base
    /// URL's scheme, host and port, since the credential is sent with it.
    pub fn same_origin(&self, link: &str) -> Result<Url, ActionError> {
        let url = self.base.join(link).map_err(|_| {
            ActionError::new(
                ErrorCode::UpstreamUnavailable,
                "the provider sent a link that is not a URL",
            )
        })?;
        if url.origin() != self.base.origin() {
            return Err(ActionError::new(
                ErrorCode::UpstreamUnavailable,
                "the provider sent a link to another host; it was not followed with the connection's credentials",
            ));
        }
        Ok(url)
    }

    /// A request to `url` with the credential applied, the step's timeout and the trace
    /// header.
    pub fn request_url(&self, method: Method, mut url: Url) -> reqwest::RequestBuilder {
        if let Some(credential) = &self.ctx.credential {
            credential.apply_to_url(&mut url);
        }
        let mut request = self.ctx.http.request(method, url).timeout(self.ctx.timeout);
        if let Some(credential) = &self.ctx.credential {
            request = credential.apply(request);
        }
        if let Some(tp) = &self.ctx.traceparent {
            request = request.header("traceparent", tp);
        }
        request
    }

    /// A request to a URL the provider handed out for one use (a pre-signed upload URL, on
    /// another host): the step's timeout and trace header, and no credential.
    pub fn request_unauthenticated(&self, method: Method, url: Url) -> reqwest::RequestBuilder {
        let mut request = self.ctx.http.request(method, url).timeout(self.ctx.timeout);
        if let Some(tp) = &self.ctx.traceparent {
            request = request.header("traceparent", tp);
        }
        request
    }

    /// A request to the base URL plus `segments` (see [`Call::url`]).
    pub fn request(&self, method: Method, segments: &[&str]) -> reqwest::RequestBuilder {
        self.request_url(method, self.url(segments))
    }

    /// `GET` base + `segments`.
    pub fn get(&self, segments: &[&str]) -> reqwest::RequestBuilder {
        self.request(Method::GET, segments)
    }

    /// `POST` base + `segments`.
    pub fn post(&self, segments: &[&str]) -> reqwest::RequestBuilder {
        self.request(Method::POST, segments)
    }

    /// `PUT` base + `segments`.
    pub fn put(&self, segments: &[&str]) -> reqwest::RequestBuilder {
        self.request(Method::PUT, segments)
    }

    /// `PATCH` base + `segments`.
    pub fn patch(&self, segments: &[&str]) -> reqwest::RequestBuilder {
        self.request(Method::PATCH, segments)
    }

    /// `DELETE` base + `segments`.
    pub fn delete(&self, segments: &[&str]) -> reqwest::RequestBuilder {
        self.request(Method::DELETE, segments)
    }

    /// The step's idempotency key (the same for every attempt of the step).
    pub fn idempotency_key(&self) -> Option<&str> {
        self.ctx.idempotency_key.as_deref()
    }

    /// Sends `request` under the connection's budget and reads the response: any `2xx` is
    /// accepted (after the connector's [`Quirks`]); anything else is an [`ActionError`]
    /// classified by status, naming the host and quoting a scrubbed excerpt of the body.
    pub async fn send(&self, request: reqwest::RequestBuilder) -> Result<Response, ActionError> {
        self.send_accepting(request, |s| s.is_success()).await
    }

    /// [`Call::send`] with the statuses that count as success chosen by `accept`.
    pub async fn send_accepting(
        &self,
        request: reqwest::RequestBuilder,
        accept: impl Fn(StatusCode) -> bool,
    ) -> Result<Response, ActionError> {
        if let Some(gate) = &self.ctx.gate {
            gate.admit().await?;
        }
        let host = self.host();
        let result = http::send(
            &self.ctx.http,
            request,
            self.ctx.max_response_bytes,
            accept,
            self.quirks,
        )
        .await;
        if let Some(gate) = &self.ctx.gate {
            match &result {
                Ok(response) => gate.observe(response.status, &response.headers),
                Err(e) => {
                    if let Some(response) = &e.response {
                        gate.observe(response.status, &response.headers);
                    }
                }
            }
        }
        result.map_err(|e| e.into_action_error(&host, &self.secrets))
    }

    /// [`Call::send`], then the body as JSON (`null` when empty).
    pub async fn send_json(&self, request: reqwest::RequestBuilder) -> Result<Value, ActionError> {
        let response = self.send(request).await?;
        json_body(&response)
    }

    /// `unsupported action` for a name the manifest does not list.
    pub fn unknown_action(&self, action: &str) -> ActionError {
        ActionError::new(
            ErrorCode::InvalidInput,
            format!(
                "connector `{}` has no action `{}`",
                self.manifest.name,
                action.escape_debug()
            ),
        )
    }

    /// A failure the provider reported in a `2xx` body, with a stable `code`, naming the
    /// host.
    pub fn provider_error(&self, code: ErrorCode, detail: &str) -> ActionError {
        ActionError::new(
            code,
            format!("{} reported {}", self.host(), self.secrets.scrub(detail)),
        )
    }

    fn host(&self) -> String {
        match self.base.port() {
            Some(port) => format!("{}:{port}", self.base.host_str().unwrap_or_default()),
            None => self.base.host_str().unwrap_or_default().to_owned(),
        }
    }
}

/// A response body as JSON: `null` when empty, `upstream_unavailable` when it does not parse
/// (a provider answering HTML from a proxy).
pub fn json_body(response: &Response) -> Result<Value, ActionError> {
    if response.body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&response.body).map_err(|_| {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            format!(
                "the provider answered {} with a body that is not JSON",
                response.status
            ),
        )
    })
}

/// The step's `with` as `T`, or `invalid_input` naming the field: `with.channel: missing
/// field` or `with.blocks[2].type: invalid type: integer, expected a string`.
///
/// `T` should be `#[serde(deny_unknown_fields)]`, so a misspelt input is refused instead of
/// silently left out of the request.
pub fn parse_input<T: DeserializeOwned>(input: Value) -> Result<T, ActionError> {
    // `null` (no `with` at all) reads as an empty mapping, so all-optional inputs work.
    let input = if input.is_null() {
        Value::Object(serde_json::Map::new())
    } else {
        input
    };
    serde_path_to_error::deserialize(input).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        if path == "." {
            ActionError::new(ErrorCode::InvalidInput, format!("with: {inner}"))
        } else {
            ActionError::new(ErrorCode::InvalidInput, format!("with.{path}: {inner}"))
        }
    })
}

/// `value` as the output of an action (its declared output type).
pub fn output<T: serde::Serialize>(value: &T) -> Result<Value, ActionError> {
    serde_json::to_value(value)
        .map_err(|e| ActionError::new(ErrorCode::Internal, format!("encoding the output: {e}")))
}

/// One page of a listing: its items and the cursor of the next page (`None` at the end).
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    /// The items on this page.
    pub items: Vec<Value>,
    /// Where the next page starts, in the provider's terms.
    pub next: Option<String>,
}

/// What a paging action returns: `{items, next_cursor}`.
#[derive(Debug, Clone, PartialEq, serde::Serialize, schemars::JsonSchema)]
pub struct Listing {
    /// The items, at most `limit`.
    pub items: Vec<Value>,
    /// Pass as `cursor` to continue; `null` when there is nothing more.
    pub next_cursor: Option<String>,
}

/// The number of items a paging action returns: `requested`, or the manifest's default,
/// refused above its maximum.
pub fn page_limit(requested: Option<u32>, pagination: &Pagination) -> Result<usize, ActionError> {
    match requested {
        None => Ok(pagination.default_limit as usize),
        Some(0) => Err(ActionError::invalid_input("limit", "must be at least 1")),
        Some(n) if n > pagination.max_limit => Err(ActionError::invalid_input(
            "limit",
            format!("must be at most {}", pagination.max_limit),
        )),
        Some(n) => Ok(n as usize),
    }
}

/// Follows pages from `cursor` until `limit` items are collected or the provider has no more.
///
/// `fetch(cursor, wanted)` fetches one page starting at `cursor` (`None`: the first), asking
/// for `wanted` items at most. When a page overshoots `limit`, the extra items are dropped
/// and the cursor still points past the page: callers size pages with `wanted` so that this
/// does not happen with providers that honour a page size.
pub async fn collect_pages<F, Fut>(
    limit: usize,
    cursor: Option<String>,
    mut fetch: F,
) -> Result<Listing, ActionError>
where
    F: FnMut(Option<String>, usize) -> Fut,
    Fut: Future<Output = Result<Page, ActionError>>,
{
    let mut items = Vec::new();
    let mut cursor = cursor;
    loop {
        let wanted = limit - items.len();
        let page = fetch(cursor.take(), wanted).await?;
        let empty = page.items.is_empty();
        items.extend(page.items.into_iter().take(wanted));
        cursor = page.next.filter(|c| !c.is_empty());
        // An empty page with a cursor would loop forever on a misbehaving provider.
        if items.len() >= limit || cursor.is_none() || empty {
            return Ok(Listing {
                items,
                next_cursor: cursor,
            });
        }
    }
}

/// Seconds since the Unix epoch, for providers that take timestamps.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct In {
        channel: String,
        blocks: Option<Vec<Block>>,
    }

    #[derive(Debug, serde::Deserialize)]
    #[allow(dead_code)]
    struct Block {
        r#type: String,
    }

    #[test]
    fn input_errors_name_the_field() {
        let e = parse_input::<In>(serde_json::json!({})).expect_err("missing");
        assert_eq!(e.code, ErrorCode::InvalidInput);
        assert_eq!(e.message, "with: missing field `channel`");
        let e = parse_input::<In>(
            serde_json::json!({"channel": "c", "blocks": [{"type": "a"}, {"type": 1}]}),
        )
        .expect_err("bad type");
        assert!(
            e.message.starts_with("with.blocks[1].type: invalid type"),
            "{}",
            e.message
        );
        let e = parse_input::<In>(serde_json::json!({"channel": "c", "chanel": "x"}))
            .expect_err("unknown");
        assert!(
            e.message.contains("unknown field `chanel`"),
            "{}",
            e.message
        );
    }

    #[tokio::test]
    async fn pages_are_followed_until_the_limit() {
        let listing = collect_pages(5, None, |cursor, wanted| async move {
            let start: usize = cursor.as_deref().map_or(0, |c| c.parse().unwrap_or(0));
            let n = wanted.min(2);
            Ok(Page {
                items: (start..start + n).map(Value::from).collect(),
                next: Some((start + n).to_string()),
            })
        })
        .await
        .expect("pages");
        assert_eq!(listing.items, (0..5).map(Value::from).collect::<Vec<_>>());
        assert_eq!(listing.next_cursor.as_deref(), Some("5"));
    }

    #[tokio::test]
    async fn an_empty_page_ends_the_listing() {
        let listing = collect_pages(5, None, |_, _| async {
            Ok(Page {
                items: Vec::new(),
                next: Some("again".into()),
            })
        })
        .await
        .expect("pages");
        assert!(listing.items.is_empty());
    }
}
