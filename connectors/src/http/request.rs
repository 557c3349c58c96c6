//! `http.request`: one HTTP call to any URL, output `{status, headers, body}`.
//!
//! # Input (the step's `with`)
//! | field | type | meaning |
//! | --- | --- | --- |
//! | `method` | string | `GET` (default), `HEAD`, `POST`, `PUT`, `PATCH`, `DELETE` or `OPTIONS`, any case |
//! | `url` | string | absolute `http` or `https` URL (required) |
//! | `headers` | `{name: string \| number \| bool}` | request headers; `host`, `content-length`, `transfer-encoding`, `connection` and `upgrade` are the client's to set |
//! | `query` | `{name: string \| number \| bool}` | appended to the URL's query, encoded |
//! | `json` | any | body, serialized as JSON (sets `content-type: application/json` unless `headers` does) |
//! | `body` | string | body as is; give `json` or `body`, not both |
//! | `expect` | `[status…]` | statuses that count as success (default: any `2xx`) |
//! | `timeout_ms` | positive integer | a tighter bound than the step's timeout (never a looser one) |
//! | `idempotency` | bool | `true` sends the step's idempotency key (derived from its run and step, the same for every attempt) as `Idempotency-Key`, so a provider that honours it performs a retried write once |
//!
//! A `null` field is the same as leaving it out. An unknown field is an error, so a typo does
//! not silently send a different request.
//!
//! # Output
//! `{ status, headers: {lowercased name: value}, body }`. `body` is the parsed document when
//! the response's content type is JSON (`application/json`, `application/*+json`) and parses; otherwise
//! the text; `null` when empty. A body that is not UTF-8 is base64 and the output then also has
//! `"body_base64": true`. Repeated headers are joined with `, `; credential-like response
//! headers (`set-cookie`, …, see [`super::redact::is_sensitive`]) read `[redacted]`, since
//! outputs are stored and shown.
//!
//! # Failures
//! A status outside `expect` is an error classified like every HTTP failure
//! ([`super::classify()`]): a `500` is retryable, a `400` is not. Its message names the host and
//! status and quotes a short excerpt of the body, with the values of credential-like request
//! headers and query parameters scrubbed out. The step's `traceparent` is forwarded unless
//! `headers` sets one.

use std::time::Duration;

use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use reqwest::{Method, StatusCode, Url};
use schemas::envelope::ErrorCode;
use serde_json::{Map, Value, json};

use super::redact::{REDACTED, Secrets, is_sensitive};
use super::{NoQuirks, Response};
use crate::action::ActionContext;
use crate::error::ActionError;

const FIELDS: &str = "method, url, headers, query, json, body, expect, timeout_ms, idempotency";

const METHODS: [Method; 7] = [
    Method::GET,
    Method::HEAD,
    Method::POST,
    Method::PUT,
    Method::PATCH,
    Method::DELETE,
    Method::OPTIONS,
];

/// Headers that describe the connection or the message framing, which the client computes.
const CLIENT_HEADERS: [&str; 5] = [
    "host",
    "content-length",
    "transfer-encoding",
    "connection",
    "upgrade",
];

/// The JSON Schema of the inputs (the table above).
pub fn input_schema() -> Value {
    let scalars = json!({
        "type": "object",
        "additionalProperties": { "type": ["string", "number", "boolean"] }
    });
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "HttpRequest",
        "type": "object",
        "additionalProperties": false,
        "required": ["url"],
        "properties": {
            "method": { "type": "string", "enum": ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"], "default": "GET" },
            "url": { "type": "string", "format": "uri", "description": "absolute http or https URL" },
            "headers": scalars,
            "query": scalars,
            "json": { "description": "body, serialized as JSON" },
            "body": { "type": "string", "description": "body as is" },
            "expect": { "type": "array", "items": { "type": "integer", "minimum": 100, "maximum": 599 }, "minItems": 1 },
            "timeout_ms": { "type": "integer", "minimum": 1 },
            "idempotency": { "type": "boolean", "description": "send the step's idempotency key as Idempotency-Key" }
        }
    })
}

/// The JSON Schema of the output.
pub fn output_schema() -> Value {
    json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "title": "HttpResponse",
        "type": "object",
        "required": ["status", "headers", "body"],
        "properties": {
            "status": { "type": "integer" },
            "headers": { "type": "object", "additionalProperties": { "type": "string" } },
            "body": { "description": "parsed JSON, text, base64 text or null" },
            "body_base64": { "type": "boolean" }
        }
    })
}

/// Runs `http.request` with the step's rendered `with`.
pub async fn execute(ctx: &ActionContext, input: &Value) -> Result<Value, ActionError> {
    let Input {
        method,
        mut url,
        mut headers,
        body,
        expect,
        timeout,
        idempotency,
    } = Input::parse(input)?;
    let secrets = secrets_of(&url, &headers);
    if let Some(credential) = &ctx.credential {
        for name in credential.header_names() {
            if headers.contains_key(name.as_str()) {
                return Err(ActionError::invalid_input(
                    "headers",
                    format!("`{name}` is set by the step's connection; leave it out of `headers`"),
                ));
            }
        }
    }
    if idempotency {
        let key = ctx.idempotency_key.as_deref().ok_or_else(|| {
            ActionError::new(
                ErrorCode::Internal,
                "with.idempotency: this execution has no idempotency key to send",
            )
        })?;
        let key = HeaderValue::from_str(key).map_err(|_| {
            ActionError::new(
                ErrorCode::Internal,
                "the idempotency key is not a valid header value",
            )
        })?;
        headers.insert("idempotency-key", key);
    }
    if let Some(tp) = ctx.traceparent.as_deref()
        && let Ok(tp) = HeaderValue::from_str(tp)
    {
        headers.entry("traceparent").or_insert(tp);
    }
    let host = match url.port() {
        Some(port) => format!("{}:{port}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    };
    let timeout = timeout.map_or(ctx.timeout, |t| t.min(ctx.timeout));
    if let Some(credential) = &ctx.credential {
        credential.apply_to_url(&mut url);
    }
    let mut request = ctx
        .http
        .request(method, url)
        .headers(headers)
        .timeout(timeout);
    if let Some(credential) = &ctx.credential {
        request = credential.apply(request);
    }
    request = match body {
        Body::Empty => request,
        Body::Json(value) => request.json(&value),
        Body::Text(text) => request.body(text),
    };
    let accept = |status: StatusCode| match &expect {
        Some(list) => list.contains(&status.as_u16()),
        None => status.is_success(),
    };
    if let Some(gate) = &ctx.gate {
        gate.admit().await?;
    }
    let result = super::send(
        &ctx.http,
        request,
        ctx.max_response_bytes,
        accept,
        &NoQuirks,
    )
    .await;
    if let Some(gate) = &ctx.gate {
        let response = match &result {
            Ok(response) => Some(response),
            Err(e) => e.response.as_ref(),
        };
        if let Some(response) = response {
            gate.observe(response.status, &response.headers);
        }
    }
    let response = result.map_err(|e| e.into_action_error(&host, &secrets))?;
    Ok(output(response))
}

/// The validated inputs.
struct Input {
    method: Method,
    url: Url,
    headers: HeaderMap,
    body: Body,
    expect: Option<Vec<u16>>,
    timeout: Option<Duration>,
    idempotency: bool,
}

enum Body {
    Empty,
    Json(Value),
    Text(String),
}

impl Input {
    fn parse(input: &Value) -> Result<Input, ActionError> {
        let Some(input) = input.as_object() else {
            return Err(ActionError::new(
                ErrorCode::InvalidInput,
                "with: must be a mapping of inputs",
            ));
        };
        if let Some(unknown) = input.keys().find(|k| !FIELDS.split(", ").any(|f| f == *k)) {
            return Err(ActionError::invalid_input(
                unknown,
                format!("unknown field; expected one of {FIELDS}"),
            ));
        }
        let field = |name: &str| input.get(name).filter(|v| !v.is_null());

        let method = match field("method") {
            None => Method::GET,
            Some(Value::String(m)) => METHODS
                .into_iter()
                .find(|known| known.as_str().eq_ignore_ascii_case(m.trim()))
                .ok_or_else(|| {
                    ActionError::invalid_input(
                        "method",
                        format!("`{m}` is not one of GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS"),
                    )
                })?,
            Some(_) => return Err(ActionError::invalid_input("method", "must be a string")),
        };

        let mut url = match field("url") {
            None => return Err(ActionError::invalid_input("url", "is required")),
            Some(Value::String(u)) => Url::parse(u.trim())
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.has_host())
                // The URL itself is not quoted: its query may hold a key.
                .ok_or_else(|| ActionError::invalid_input("url", "not an absolute http(s) URL"))?,
            Some(_) => return Err(ActionError::invalid_input("url", "must be a string")),
        };

        if let Some(query) = field("query") {
            let query = query
                .as_object()
                .ok_or_else(|| ActionError::invalid_input("query", "must be a mapping"))?;
            let mut pairs = url.query_pairs_mut();
            for (name, value) in query {
                let value = scalar(value).ok_or_else(|| {
                    ActionError::invalid_input(
                        &format!("query.{name}"),
                        "must be a string, number or boolean",
                    )
                })?;
                pairs.append_pair(name, &value);
            }
        }

        let mut headers = HeaderMap::new();
        if let Some(given) = field("headers") {
            let given = given
                .as_object()
                .ok_or_else(|| ActionError::invalid_input("headers", "must be a mapping"))?;
            for (name, value) in given {
                let at = format!("headers.{name}");
                let header = HeaderName::from_bytes(name.as_bytes())
                    .map_err(|_| ActionError::invalid_input(&at, "not a valid header name"))?;
                if CLIENT_HEADERS.contains(&header.as_str()) {
                    return Err(ActionError::invalid_input(
                        &at,
                        "is set by the client from the URL and body; remove it",
                    ));
                }
                let text = scalar(value).ok_or_else(|| {
                    ActionError::invalid_input(&at, "must be a string, number or boolean")
                })?;
                // The value is not quoted: it may be a credential.
                let value = HeaderValue::from_str(&text).map_err(|_| {
                    ActionError::invalid_input(
                        &at,
                        "not a valid header value (no line breaks or control characters)",
                    )
                })?;
                headers.insert(header, value);
            }
        }

        let body = match (field("json"), field("body")) {
            (Some(_), Some(_)) => {
                return Err(ActionError::invalid_input(
                    "body",
                    "give `json` or `body`, not both",
                ));
            }
            (Some(json), None) => Body::Json(json.clone()),
            (None, Some(Value::String(text))) => Body::Text(text.clone()),
            (None, Some(_)) => {
                return Err(ActionError::invalid_input(
                    "body",
                    "must be a string; use `json` for structured data",
                ));
            }
            (None, None) => Body::Empty,
        };

        let expect = match field("expect") {
            None => None,
            Some(Value::Array(list)) if !list.is_empty() => Some(
                list.iter()
                    .enumerate()
                    .map(|(i, v)| {
                        v.as_u64()
                            .and_then(|n| u16::try_from(n).ok())
                            .filter(|n| (100..=599).contains(n))
                            .ok_or_else(|| {
                                ActionError::invalid_input(
                                    &format!("expect[{i}]"),
                                    format!("`{v}` is not an HTTP status code (100-599)"),
                                )
                            })
                    })
                    .collect::<Result<Vec<u16>, _>>()?,
            ),
            Some(_) => {
                return Err(ActionError::invalid_input(
                    "expect",
                    "must be a non-empty list of HTTP status codes",
                ));
            }
        };

        let timeout = match field("timeout_ms") {
            None => None,
            Some(v) => Some(
                v.as_u64()
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis)
                    .ok_or_else(|| {
                        ActionError::invalid_input(
                            "timeout_ms",
                            "must be a positive whole number of milliseconds",
                        )
                    })?,
            ),
        };

        let idempotency = match field("idempotency") {
            None => false,
            Some(Value::Bool(b)) => *b,
            Some(_) => {
                return Err(ActionError::invalid_input(
                    "idempotency",
                    "must be true or false",
                ));
            }
        };
        if idempotency && headers.contains_key("idempotency-key") {
            return Err(ActionError::invalid_input(
                "idempotency",
                "`headers` already sets Idempotency-Key; give one or the other",
            ));
        }

        Ok(Input {
            method,
            url,
            headers,
            body,
            expect,
            timeout,
            idempotency,
        })
    }
}

/// A query or header value as text; `None` for mappings and lists.
fn scalar(value: &Value) -> Option<String> {
    match value {
        Value::String(s) => Some(s.clone()),
        Value::Number(_) | Value::Bool(_) => Some(value.to_string()),
        Value::Null | Value::Array(_) | Value::Object(_) => None,
    }
}

/// The credential-like values of a request: sensitive headers and query parameters, and a
/// password in the URL.
fn secrets_of(url: &Url, headers: &HeaderMap) -> Secrets {
    let mut secrets = Secrets::default();
    for (name, value) in headers {
        if let Ok(value) = value.to_str() {
            secrets.note(name.as_str(), value);
        }
    }
    for (name, value) in url.query_pairs() {
        secrets.note(&name, &value);
    }
    if let Some(password) = url.password() {
        secrets.note("password", password);
    }
    secrets
}

pub(crate) fn output(response: Response) -> Value {
    let mut headers = Map::new();
    for name in response.headers.keys() {
        let value = if is_sensitive(name.as_str()) {
            REDACTED.to_owned()
        } else {
            response
                .headers
                .get_all(name)
                .iter()
                .map(|v| String::from_utf8_lossy(v.as_bytes()))
                .collect::<Vec<_>>()
                .join(", ")
        };
        headers.insert(name.as_str().to_owned(), Value::String(value));
    }
    let content_type = response
        .headers
        .get(reqwest::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    let mut out = json!({ "status": response.status.as_u16(), "headers": headers });
    let (body, base64) = decode_body(content_type, response.body);
    out["body"] = body;
    if base64 {
        out["body_base64"] = Value::Bool(true);
    }
    out
}

/// The body as JSON, text or base64, and whether it is base64.
fn decode_body(content_type: &str, bytes: Vec<u8>) -> (Value, bool) {
    if bytes.is_empty() {
        return (Value::Null, false);
    }
    if is_json(content_type)
        && let Ok(value) = serde_json::from_slice::<Value>(&bytes)
    {
        return (value, false);
    }
    match String::from_utf8(bytes) {
        Ok(text) => (Value::String(text), false),
        Err(e) => {
            use base64::Engine as _;
            let encoded = base64::engine::general_purpose::STANDARD.encode(e.into_bytes());
            (Value::String(encoded), true)
        }
    }
}

fn is_json(content_type: &str) -> bool {
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json"
        || (essence.starts_with("application/") && essence.ends_with("+json"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_content_types_are_recognised() {
        for ct in [
            "application/json",
            "Application/JSON; charset=utf-8",
            "application/problem+json",
        ] {
            assert!(is_json(ct), "{ct}");
        }
        for ct in ["text/plain", "application/jsonl", "", "text/json+html"] {
            assert!(!is_json(ct), "{ct}");
        }
    }

    #[test]
    fn json_content_type_that_does_not_parse_is_returned_as_text() {
        assert_eq!(
            decode_body("application/json", b"{oops".to_vec()),
            (Value::String("{oops".into()), false)
        );
    }
}
