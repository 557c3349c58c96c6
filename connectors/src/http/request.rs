//! `http.request`: one HTTP call, output `{status, headers, body}`.
//!
//! Input (the step's `with`):
//! `{ method = "GET", url, headers?: {name: value}, query?: {name: scalar}, json?: any,
//!    body?: string, expect?: [status…], idempotency?: bool }`.
//! A status in `expect` (default: any 2xx) is success; any other is an error classified like
//! every HTTP failure. With `idempotency: true` the step's idempotency key (derived from the run
//! and step) is sent as `Idempotency-Key`.

use futures::StreamExt;
use reqwest::Method;
use reqwest::header::{HeaderMap, HeaderName, HeaderValue};
use serde_json::{Map, Value, json};

use super::classify::{Classification, classify, code_for_status};
use crate::action::ActionContext;
use crate::error::ActionError;
use schemas::envelope::ErrorCode;

/// Runs the action.
pub async fn execute(ctx: &ActionContext, input: &Value) -> Result<Value, ActionError> {
    let Some(input) = input.as_object() else {
        return Err(ActionError::new(
            ErrorCode::InvalidInput,
            "with: must be a mapping",
        ));
    };
    for key in input.keys() {
        if !matches!(
            key.as_str(),
            "method" | "url" | "headers" | "query" | "json" | "body" | "expect" | "idempotency"
        ) {
            return Err(ActionError::invalid_input(
                key,
                "unknown field; expected method, url, headers, query, json, body, expect or idempotency",
            ));
        }
    }
    let method = match input.get("method") {
        None => Method::GET,
        Some(Value::String(m)) => {
            Method::from_bytes(m.to_ascii_uppercase().as_bytes()).map_err(|_| {
                ActionError::invalid_input("method", format!("`{m}` is not an HTTP method"))
            })?
        }
        Some(_) => return Err(ActionError::invalid_input("method", "must be a string")),
    };
    let url = input
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| ActionError::invalid_input("url", "is required"))?;
    let mut url = reqwest::Url::parse(url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https"))
        .ok_or_else(|| ActionError::invalid_input("url", "not an absolute http(s) URL"))?;
    if let Some(q) = input.get("query") {
        let q = q
            .as_object()
            .ok_or_else(|| ActionError::invalid_input("query", "must be a mapping"))?;
        let mut pairs = url.query_pairs_mut();
        for (k, v) in q {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => v.to_string(),
                _ => {
                    return Err(ActionError::invalid_input(
                        &format!("query.{k}"),
                        "must be a string, number or boolean",
                    ));
                }
            };
            pairs.append_pair(k, &v);
        }
    }
    let mut headers = HeaderMap::new();
    if let Some(h) = input.get("headers") {
        let h = h
            .as_object()
            .ok_or_else(|| ActionError::invalid_input("headers", "must be a mapping"))?;
        for (k, v) in h {
            let name = HeaderName::from_bytes(k.as_bytes()).map_err(|_| {
                ActionError::invalid_input(&format!("headers.{k}"), "not a valid header name")
            })?;
            let text = v
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| v.to_string());
            let value = HeaderValue::from_str(&text).map_err(|_| {
                ActionError::invalid_input(&format!("headers.{k}"), "not a valid header value")
            })?;
            headers.insert(name, value);
        }
    }
    if input.get("idempotency").and_then(Value::as_bool) == Some(true)
        && let Some(key) = &ctx.idempotency_key
        && let Ok(v) = HeaderValue::from_str(key)
    {
        headers.insert("idempotency-key", v);
    }
    if let Some(tp) = &ctx.traceparent
        && let Ok(v) = HeaderValue::from_str(tp)
    {
        headers.entry("traceparent").or_insert(v);
    }
    let expect: Option<Vec<u16>> = match input.get("expect") {
        None => None,
        Some(Value::Array(list)) => Some(
            list.iter()
                .map(|v| {
                    v.as_u64()
                        .and_then(|n| u16::try_from(n).ok())
                        .filter(|n| (100..=599).contains(n))
                })
                .collect::<Option<Vec<u16>>>()
                .ok_or_else(|| {
                    ActionError::invalid_input("expect", "must be a list of HTTP status codes")
                })?,
        ),
        Some(_) => {
            return Err(ActionError::invalid_input(
                "expect",
                "must be a list of HTTP status codes",
            ));
        }
    };

    let mut request = ctx
        .http
        .request(method, url.clone())
        .headers(headers)
        .timeout(ctx.timeout);
    match (input.get("json"), input.get("body")) {
        (Some(_), Some(_)) => {
            return Err(ActionError::invalid_input(
                "body",
                "give `json` or `body`, not both",
            ));
        }
        (Some(j), None) => request = request.json(j),
        (None, Some(Value::String(b))) => request = request.body(b.clone()),
        (None, Some(_)) => {
            return Err(ActionError::invalid_input(
                "body",
                "must be a string; use `json` for structured data",
            ));
        }
        (None, None) => {}
    }
    let host = url.host_str().unwrap_or("").to_owned();
    url.set_query(None);
    let response = request
        .send()
        .await
        .map_err(|e| transport_error(&e, &host))?;
    let status = response.status().as_u16();
    let response_headers = response.headers().clone();
    let content_type = response_headers
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_owned();
    let bytes = read_bounded(response, ctx.max_response_bytes, &host).await?;
    let body = decode_body(&content_type, bytes);
    let ok = match &expect {
        Some(list) => list.contains(&status),
        None => (200..300).contains(&status),
    };
    if !ok {
        let after = match classify(status, &response_headers) {
            Classification::Retryable { after } => after,
            Classification::Permanent => None,
        };
        let excerpt: String = match &body {
            Value::String(s) => s.chars().take(200).collect(),
            other => other.to_string().chars().take(200).collect(),
        };
        let mut code = code_for_status(status);
        if expect.is_some() && (200..300).contains(&status) {
            code = ErrorCode::InvalidInput;
        }
        return Err(ActionError {
            code,
            message: format!("{host} answered {status}: {excerpt}"),
            retry_after: after,
            status: Some(status),
        });
    }
    let mut out_headers = Map::new();
    for (name, value) in &response_headers {
        if let Ok(v) = value.to_str() {
            out_headers.insert(name.as_str().to_owned(), Value::String(v.to_owned()));
        }
    }
    Ok(json!({ "status": status, "headers": out_headers, "body": body }))
}

fn transport_error(e: &reqwest::Error, host: &str) -> ActionError {
    // The error's own text can contain the full URL with credentials in its query: say only
    // what kind of failure it was and where.
    if e.is_timeout() {
        ActionError::new(ErrorCode::Timeout, format!("{host} did not answer in time"))
    } else if e.is_connect() {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            format!("cannot connect to {host}"),
        )
    } else if e.is_builder() {
        ActionError::new(
            ErrorCode::InvalidInput,
            format!("the request to {host} could not be built"),
        )
    } else {
        ActionError::new(
            ErrorCode::UpstreamUnavailable,
            format!("request to {host} failed"),
        )
    }
}

/// Reads the body chunk by chunk and stops at the cap, so an oversized response is refused
/// without being held in memory.
async fn read_bounded(
    response: reqwest::Response,
    max: usize,
    host: &str,
) -> Result<Vec<u8>, ActionError> {
    if response.content_length().is_some_and(|n| n > max as u64) {
        return Err(too_large(host, max));
    }
    let mut stream = response.bytes_stream();
    let mut out = Vec::new();
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| transport_error(&e, host))?;
        if out.len() + chunk.len() > max {
            return Err(too_large(host, max));
        }
        out.extend_from_slice(&chunk);
    }
    Ok(out)
}

fn too_large(host: &str, max: usize) -> ActionError {
    ActionError::new(
        ErrorCode::InvalidInput,
        format!("the response from {host} is larger than the {max}-byte limit"),
    )
}

fn decode_body(content_type: &str, bytes: Vec<u8>) -> Value {
    if bytes.is_empty() {
        return Value::Null;
    }
    if content_type.contains("json")
        && let Ok(v) = serde_json::from_slice::<Value>(&bytes)
    {
        return v;
    }
    match String::from_utf8(bytes) {
        Ok(s) => Value::String(s),
        Err(e) => {
            use base64::Engine as _;
            json!({ "base64": base64::engine::general_purpose::STANDARD.encode(e.into_bytes()) })
        }
    }
}
