//! `POST /v1/hooks/{workflow}/{trigger_id}`: a delivery from an external system starts a run.
//!
//! The order of the checks is the order of their cost: the trigger must exist (404) and be
//! enabled (409); the trigger's and the workspace's rate limits must allow it (429 with
//! `Retry-After`); the body is read up to the trigger's limit and no further (413); the
//! signature is verified over the raw bytes (401); only then is the body parsed and the run
//! committed (202 `{run_id}`). The delivery's id (the provider's, or an `Idempotency-Key`)
//! becomes the run's idempotency key, unique in the database and written in the run's
//! transaction, so a redelivery answers 200 with the first run's id and never starts a second.
//!
//! Every rejection is counted by reason ([`Rejections`]) and logged with the workflow, the
//! trigger and the reason, never with the body, a header value or a secret.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use schemas::definition::{DEFAULT_WEBHOOK_BODY_BYTES, SignatureScheme, Trigger, WebhookTrigger};
use serde_json::{Map, Value, json};

use super::limit::Rate;
use super::signature::{self, Rejection};
use crate::api::{ApiError, ApiErrorCode};
use crate::secrets::{self, SecretError};
use crate::service::Shared;
use crate::store::{self, NewRun, Pinned, StoreError};

/// Longest delivery id (or `Idempotency-Key`) accepted.
pub const MAX_DELIVERY_ID: usize = 200;

/// Why a delivery was turned away; each has a counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason {
    /// No such workflow or trigger.
    NotFound,
    /// The trigger is disabled.
    Disabled,
    /// A rate limit was exceeded.
    RateLimited,
    /// The body is over the trigger's limit.
    TooLarge,
    /// The signature is missing, malformed or wrong.
    BadSignature,
    /// The delivery's timestamp is too old or too far ahead.
    Stale,
    /// A secret the trigger names is missing or cannot be opened.
    SecretUnavailable,
    /// The request is malformed in another way (a bad `Idempotency-Key`, inputs the workflow
    /// refuses).
    BadRequest,
    /// Something failed on our side.
    Internal,
}

impl Reason {
    /// Every reason, in a fixed order.
    pub const ALL: [Reason; 9] = [
        Reason::NotFound,
        Reason::Disabled,
        Reason::RateLimited,
        Reason::TooLarge,
        Reason::BadSignature,
        Reason::Stale,
        Reason::SecretUnavailable,
        Reason::BadRequest,
        Reason::Internal,
    ];

    /// The label used in logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reason::NotFound => "not_found",
            Reason::Disabled => "disabled",
            Reason::RateLimited => "rate_limited",
            Reason::TooLarge => "too_large",
            Reason::BadSignature => "bad_signature",
            Reason::Stale => "stale",
            Reason::SecretUnavailable => "secret_unavailable",
            Reason::BadRequest => "bad_request",
            Reason::Internal => "internal",
        }
    }
}

/// Counters of webhook deliveries: accepted, duplicate, and rejected by reason.
#[derive(Debug, Default)]
pub struct Rejections {
    accepted: AtomicU64,
    duplicates: AtomicU64,
    rejected: [AtomicU64; Reason::ALL.len()],
}

impl Rejections {
    /// Deliveries that started a run.
    pub fn accepted(&self) -> u64 {
        self.accepted.load(Ordering::Relaxed)
    }

    /// Redeliveries answered with an earlier run.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Deliveries rejected for `reason`.
    pub fn rejected(&self, reason: Reason) -> u64 {
        let i = Reason::ALL.iter().position(|r| *r == reason).unwrap_or(0);
        self.rejected[i].load(Ordering::Relaxed)
    }

    fn count(&self, reason: Reason) {
        if let Some(i) = Reason::ALL.iter().position(|r| *r == reason) {
            self.rejected[i].fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A refusal: its counter and the response.
struct Refused {
    reason: Reason,
    error: Box<ApiError>,
}

impl Refused {
    fn new(reason: Reason, code: ApiErrorCode, message: impl Into<String>) -> Self {
        Refused {
            reason,
            error: Box::new(ApiError::new(code, message)),
        }
    }
}

impl From<StoreError> for Refused {
    fn from(e: StoreError) -> Self {
        let reason = match e {
            StoreError::InvalidInput(_) => Reason::BadRequest,
            StoreError::WorkflowNotFound(_) => Reason::NotFound,
            _ => Reason::Internal,
        };
        Refused {
            reason,
            error: Box::new(e.into()),
        }
    }
}

/// The handler.
pub async fn receive(
    State(s): State<Shared>,
    Path((workflow, trigger_id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match deliver(&s, &workflow, &trigger_id, query.as_deref(), &headers, body).await {
        Ok((run_id, created)) => {
            if created {
                s.hooks.accepted.fetch_add(1, Ordering::Relaxed);
                (StatusCode::ACCEPTED, Json(json!({ "run_id": run_id }))).into_response()
            } else {
                s.hooks.duplicates.fetch_add(1, Ordering::Relaxed);
                (
                    StatusCode::OK,
                    Json(json!({ "run_id": run_id, "duplicate": true })),
                )
                    .into_response()
            }
        }
        Err(refused) => {
            s.hooks.count(refused.reason);
            let reason = refused.reason.as_str();
            if refused.reason == Reason::Internal {
                tracing::error!(%workflow, trigger = %trigger_id, reason, "webhook delivery failed");
            } else {
                tracing::warn!(
                    %workflow,
                    trigger = %trigger_id,
                    reason,
                    error = %refused.error.message,
                    "webhook delivery rejected"
                );
            }
            refused.error.into_response()
        }
    }
}

async fn deliver(
    s: &Shared,
    workflow_name: &str,
    trigger_id: &str,
    query: Option<&str>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(uuid::Uuid, bool), Refused> {
    let workspace_id = store::default_workspace();
    let not_found = || {
        Refused::new(
            Reason::NotFound,
            ApiErrorCode::NotFound,
            format!("workflow `{workflow_name}` has no webhook trigger `{trigger_id}`"),
        )
    };
    let (version, workflow) = s
        .definitions
        .latest(&s.db, workspace_id, workflow_name)
        .await?
        .ok_or_else(not_found)?;
    let hook = workflow
        .triggers
        .iter()
        .find_map(|t| match t {
            Trigger::Webhook(w) if w.id == trigger_id => Some(w.clone()),
            _ => None,
        })
        .ok_or_else(not_found)?;
    if !hook.enabled {
        return Err(Refused::new(
            Reason::Disabled,
            ApiErrorCode::Conflict,
            format!("webhook trigger `{trigger_id}` of workflow `{workflow_name}` is disabled"),
        ));
    }
    limit(s, workspace_id, workflow_name, &hook)?;
    let raw = read_body(&hook, headers, body).await?;

    let verified = verify(s, workspace_id, &hook, headers, &raw).await?;
    let body = parse_body(headers, &raw);
    let delivery_id = match verified.delivery_id {
        Some(id) => Some(id),
        None => idempotency_key(headers)?.or_else(|| body_event_id(&hook, &body)),
    };
    if let Some(id) = &delivery_id
        && (id.is_empty() || id.len() > MAX_DELIVERY_ID)
    {
        return Err(Refused::new(
            Reason::BadRequest,
            ApiErrorCode::InvalidInput,
            format!("the delivery id must be 1 to {MAX_DELIVERY_ID} characters"),
        ));
    }
    let trigger = json!({
        "kind": "webhook",
        "id": trigger_id,
        "delivery_id": delivery_id,
        "body": body,
        "headers": visible_headers(&hook, headers),
        "query": query_map(query),
    });
    let started = s
        .starter
        .start(NewRun {
            pinned: Pinned {
                workspace_id,
                name: workflow_name.to_owned(),
                version,
                workflow,
            },
            input: Value::Null,
            idempotency_key: delivery_id.map(|id| format!("webhook:{trigger_id}:{id}")),
            trigger,
            // A sender's `traceparent` is not trusted as the run's parent: the run's trace
            // starts here.
            traceparent: None,
        })
        .await?;
    Ok((started.run_id, started.created))
}

fn limit(
    s: &Shared,
    workspace_id: uuid::Uuid,
    workflow_name: &str,
    hook: &WebhookTrigger,
) -> Result<(), Refused> {
    let now = Instant::now();
    let mut checks = Vec::with_capacity(2);
    if let Some(r) = hook.rate_limit {
        checks.push((
            format!("hook/{workspace_id}/{workflow_name}/{}", hook.id),
            Rate {
                requests: r.requests,
                per: r.per.get(),
            },
            "this trigger",
        ));
    }
    if let Some(rate) = s.webhook_workspace_rate {
        checks.push((format!("workspace/{workspace_id}"), rate, "this workspace"));
    }
    for (key, rate, whose) in checks {
        if let Err(wait) = s.limiter.take(&key, rate, now) {
            let secs = retry_after_secs(wait);
            let error = ApiError::new(
                ApiErrorCode::RateLimited,
                format!(
                    "the webhook rate limit of {whose} ({} per {}) is exceeded; retry in {secs}s",
                    rate.requests,
                    humantime(rate.per)
                ),
            )
            .with_details(json!({ "retry_after_seconds": secs }))
            .with_retry_after(secs);
            return Err(Refused {
                reason: Reason::RateLimited,
                error: Box::new(error),
            });
        }
    }
    Ok(())
}

/// Reads the body up to the trigger's limit: a declared length over it is refused before
/// reading anything, and a body that turns out longer is refused as soon as it passes it.
async fn read_body(
    hook: &WebhookTrigger,
    headers: &HeaderMap,
    body: Body,
) -> Result<axum::body::Bytes, Refused> {
    let max = hook.max_body_bytes.unwrap_or(DEFAULT_WEBHOOK_BODY_BYTES);
    let too_large = || Refused {
        reason: Reason::TooLarge,
        error: Box::new(
            ApiError::new(
                ApiErrorCode::PayloadTooLarge,
                format!("the body is larger than this trigger's limit of {max} bytes"),
            )
            .with_details(json!({ "limit_bytes": max })),
        ),
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > max) {
        return Err(too_large());
    }
    let max = usize::try_from(max).unwrap_or(usize::MAX);
    let mut stream = body.into_data_stream();
    let mut buf = Vec::with_capacity(
        declared.map_or(8 * 1024, |n| usize::try_from(n).unwrap_or(max).min(max)),
    );
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|_| {
            Refused::new(
                Reason::BadRequest,
                ApiErrorCode::InvalidInput,
                "the request body could not be read",
            )
        })?;
        if buf.len() + chunk.len() > max {
            return Err(too_large());
        }
        buf.extend_from_slice(&chunk);
    }
    Ok(axum::body::Bytes::from(buf))
}

async fn verify(
    s: &Shared,
    workspace_id: uuid::Uuid,
    hook: &WebhookTrigger,
    headers: &HeaderMap,
    raw: &[u8],
) -> Result<signature::Verified, Refused> {
    let Some(sig) = &hook.signature else {
        // Validation refuses a webhook trigger without `signature`; a stored definition from
        // an older build is treated as unsigned-not-allowed.
        return Err(Refused::new(
            Reason::SecretUnavailable,
            ApiErrorCode::Unauthorized,
            "this trigger has no signature configuration",
        ));
    };
    let names: Vec<&str> = sig.secret_names().collect();
    let keys = if sig.scheme == SignatureScheme::None {
        Vec::new()
    } else {
        secrets::open_present(
            &s.db,
            Some(&s.secrets),
            s.keyring.as_deref(),
            workspace_id,
            &names,
        )
        .await
        .map_err(|e| match e {
            SecretError::Db(_) => Refused {
                reason: Reason::Internal,
                error: Box::new(ApiError::internal(e)),
            },
            _ => {
                tracing::warn!(trigger = %hook.id, error = %e, "webhook secret unavailable");
                Refused::new(
                    Reason::SecretUnavailable,
                    ApiErrorCode::Unauthorized,
                    "the delivery cannot be verified: the trigger's secret is not available",
                )
            }
        })?
    };
    signature::verify(sig, &keys, headers, raw, SystemTime::now()).map_err(|e| {
        let reason = match e {
            Rejection::Stale { .. } => Reason::Stale,
            Rejection::Secret(_) => Reason::SecretUnavailable,
            _ => Reason::BadSignature,
        };
        Refused::new(reason, ApiErrorCode::Unauthorized, e.to_string())
    })
}

fn idempotency_key(headers: &HeaderMap) -> Result<Option<String>, Refused> {
    match headers.get("idempotency-key") {
        None => Ok(None),
        Some(v) => v
            .to_str()
            .ok()
            .filter(|v| !v.is_empty() && v.len() <= MAX_DELIVERY_ID)
            .map(|v| Some(v.to_owned()))
            .ok_or_else(|| {
                Refused::new(
                    Reason::BadRequest,
                    ApiErrorCode::InvalidInput,
                    format!(
                        "Idempotency-Key must be 1 to {MAX_DELIVERY_ID} visible ASCII characters"
                    ),
                )
            }),
    }
}

/// Providers whose delivery id is in the signed body: Stripe's event `id`, Slack's `event_id`.
fn body_event_id(hook: &WebhookTrigger, body: &Value) -> Option<String> {
    let field = match hook.signature.as_ref()?.scheme {
        SignatureScheme::Stripe => "id",
        SignatureScheme::Slack => "event_id",
        _ => return None,
    };
    body.get(field)?.as_str().map(str::to_owned)
}

/// JSON when the body is JSON, fields when it is a form, text when it is text, and
/// `{"base64": …}` otherwise. An empty body is `null`.
fn parse_body(headers: &HeaderMap, raw: &[u8]) -> Value {
    use base64::Engine as _;
    if raw.iter().all(u8::is_ascii_whitespace) {
        return Value::Null;
    }
    if let Ok(v) = serde_json::from_slice::<Value>(raw) {
        return v;
    }
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    if content_type.starts_with("application/x-www-form-urlencoded") {
        return Value::Object(form_map(raw));
    }
    match std::str::from_utf8(raw) {
        Ok(text) => Value::String(text.to_owned()),
        Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(raw) }),
    }
}

fn form_map(raw: &[u8]) -> Map<String, Value> {
    form_urlencoded::parse(raw)
        .map(|(k, v)| (k.into_owned(), Value::String(v.into_owned())))
        .collect()
}

fn query_map(query: Option<&str>) -> Value {
    Value::Object(form_map(query.unwrap_or_default().as_bytes()))
}

/// Headers that carry credentials or signatures never reach the run.
const HIDDEN_HEADERS: [&str; 9] = [
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-api-key",
    "x-hub-signature",
    "x-hub-signature-256",
    "stripe-signature",
    "x-slack-signature",
    "webhook-signature",
];

fn visible_headers(hook: &WebhookTrigger, headers: &HeaderMap) -> Value {
    let custom = hook
        .signature
        .as_ref()
        .and_then(|s| s.header.as_deref())
        .map(str::to_ascii_lowercase);
    let mut out = Map::new();
    for (name, value) in headers {
        let name = name.as_str();
        if HIDDEN_HEADERS.contains(&name) || custom.as_deref() == Some(name) {
            continue;
        }
        let Ok(value) = value.to_str() else { continue };
        match out.get_mut(name) {
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                out.insert(name.to_owned(), Value::String(value.to_owned()));
            }
        }
    }
    Value::Object(out)
}

fn humantime(d: Duration) -> String {
    if d.subsec_nanos() == 0 {
        format!("{}s", d.as_secs())
    } else {
        format!("{}ms", d.as_millis())
    }
}

/// Seconds to wait, as `Retry-After` says it, for a wait of `d`.
pub fn retry_after_secs(d: Duration) -> u64 {
    (d.as_secs() + u64::from(d.subsec_nanos() > 0)).max(1)
}
