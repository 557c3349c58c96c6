//! Custom tools: a [`Connector`] built from a [`CustomTool`] definition.
//!
//! A custom tool's action renders one HTTP request from the step's `with`:
//!
//! - each `{name}` of the path template from the path parameter `name`, percent-encoded as
//!   (part of) one path segment, so `a/b` or `..` cannot change the path's shape;
//! - query parameters (an array repeats the parameter, `?tag=a&tag=b`);
//! - header parameters;
//! - the `body` input, sent as JSON.
//!
//! Inputs are checked against the action's input schema first (required fields, unknown
//! fields, JSON types, enums, nested objects and arrays), so a mistake is `invalid_input`
//! naming the field rather than a request the provider refuses. The request then goes through
//! [`Call`] like every built-in's: the connection's base URL and credential, the outbound
//! policy, the fleet-wide budget, response caps and the one failure classification (a `429`
//! with `Retry-After` is `rate_limited` and retried after it, a `404` is `not_found`).
//!
//! The output is `http.request`'s: `{status, headers, body}` (`body` parsed as JSON when the
//! response says it is JSON, else text, base64 with `body_base64: true` for bytes).

use std::sync::Arc;

use reqwest::header::{HeaderName, HeaderValue};
use reqwest::{Method, Url};
use schemas::envelope::ErrorCode;
use schemas::tool::{self, CustomTool, ParamLocation, ToolAction, ToolAuth, ToolProblem};
use serde_json::{Map, Value};

use crate::error::ActionError;
use crate::manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
use crate::sdk::{Call, Connector};

/// Deepest nesting of input values checked against a schema; deeper values are accepted as
/// they are (the provider still checks them).
const MAX_CHECK_DEPTH: usize = 32;

/// A registered REST API as a connector.
#[derive(Debug, Clone)]
pub struct CustomConnector {
    tool: Arc<CustomTool>,
    manifest: Manifest,
}

impl CustomConnector {
    /// The connector of `tool`, or every problem of the definition (see
    /// [`CustomTool::check`]; `reserved` are the names it may not take).
    pub fn new(tool: CustomTool, reserved: &[&str]) -> Result<Self, Vec<ToolProblem>> {
        let mut problems = tool.check(reserved);
        match Url::parse(&tool.base_url) {
            Ok(url) if matches!(url.scheme(), "http" | "https") && url.has_host() => {}
            _ if problems.iter().any(|p| p.path == "base_url") => {}
            _ => problems.push(ToolProblem {
                path: "base_url".into(),
                message: "is not an absolute http(s) URL".into(),
            }),
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        let manifest = manifest_of(&tool);
        Ok(CustomConnector {
            tool: Arc::new(tool),
            manifest,
        })
    }

    /// The definition it was built from.
    pub fn tool(&self) -> &CustomTool {
        &self.tool
    }
}

/// The manifest of a custom tool: category `generic`, its auth types, base URL, budget (its
/// own or [`tool::ToolRateLimit::DEFAULT`]) and one action per definition action, whose input
/// schema is [`ToolAction::input_schema`] and whose output is `http.request`'s.
pub fn manifest_of(tool: &CustomTool) -> Manifest {
    let auth: Vec<AuthType> = tool
        .auth
        .iter()
        .map(|a| match a {
            ToolAuth::None => AuthType::None,
            ToolAuth::ApiKey { .. } => AuthType::ApiKey,
            ToolAuth::Bearer => AuthType::Bearer,
            ToolAuth::Basic => AuthType::Basic,
            ToolAuth::OAuth2Code { .. } => AuthType::OAuth2Code,
            ToolAuth::OAuth2Client { .. } => AuthType::OAuth2Client,
        })
        .collect();
    let limit = tool.rate_limit.unwrap_or(tool::ToolRateLimit::DEFAULT);
    let mut manifest = Manifest::new(&tool.name, tool.display_title(), Category::Generic)
        .auth(&auth)
        .base_url(&tool.base_url)
        .docs(&tool.docs_url)
        .rate_limit(RateLimit {
            requests: limit.requests,
            per_seconds: limit.per_seconds,
            burst: limit.burst,
        });
    if auth == [AuthType::None] {
        // An open API needs no account; a connection may still set a base URL or budget.
        manifest = manifest.connection_optional();
    }
    for action in &tool.actions {
        let mut a = ActionManifest::new(
            &action.name,
            &action.summary,
            action.effective_side_effect(),
        )
        .input_schema_value(action.input_schema())
        .output_schema_value(crate::http::request::output_schema());
        a.scopes.clone_from(&action.scopes);
        // PUT and DELETE are idempotent by HTTP's definition (RFC 9110 §9.2.2).
        if matches!(action.method, tool::Method::Put | tool::Method::Delete) {
            a = a.idempotent();
        }
        manifest = manifest.action(a);
    }
    manifest
}

#[async_trait::async_trait]
impl Connector for CustomConnector {
    fn manifest(&self) -> &Manifest {
        &self.manifest
    }

    async fn execute(
        &self,
        call: &Call<'_>,
        action: &str,
        input: Value,
    ) -> Result<Value, ActionError> {
        let Some(found) = self.tool.find_action(action) else {
            return Err(call.unknown_action(action));
        };
        let schema = self
            .manifest
            .find_action(action)
            .map(|a| &a.input_schema)
            .ok_or_else(|| call.unknown_action(action))?;
        let input = match input {
            Value::Null => Map::new(),
            Value::Object(map) => map,
            _ => {
                return Err(ActionError::new(
                    ErrorCode::InvalidInput,
                    "with: must be a mapping of inputs",
                ));
            }
        };
        check_inputs(&self.tool.name, found, schema, &input)?;
        let request = render(call, found, &input)?;
        let response = call.send(request).await?;
        Ok(crate::http::request::output(response))
    }

    /// A custom API has no known cheap call: nothing is sent.
    async fn health(&self, _call: &Call<'_>) -> Result<(), ActionError> {
        Ok(())
    }
}

/// Checks the step's `with` against the action's input schema.
fn check_inputs(
    tool: &str,
    action: &ToolAction,
    schema: &Value,
    input: &Map<String, Value>,
) -> Result<(), ActionError> {
    let properties = schema["properties"].as_object();
    for key in input.keys() {
        if properties.is_none_or(|p| !p.contains_key(key)) {
            let known: Vec<&str> = properties
                .map(|p| p.keys().map(String::as_str).collect())
                .unwrap_or_default();
            return Err(ActionError::invalid_input(
                key,
                format!(
                    "`{tool}.{}` has no such input (inputs: {})",
                    action.name,
                    if known.is_empty() {
                        "none".to_owned()
                    } else {
                        known.join(", ")
                    }
                ),
            ));
        }
    }
    check_value(&Value::Object(input.clone()), schema, "", 0)
}

/// Checks `value` against the parts of JSON Schema that decide whether a request makes sense:
/// `type` (one or a list; `integer` is a number without a fraction), `enum`, `const`,
/// `required`, `properties`, `additionalProperties: false` and `items`. Other keywords
/// (formats, lengths, patterns, combinators) are left to the provider.
fn check_value(value: &Value, schema: &Value, at: &str, depth: usize) -> Result<(), ActionError> {
    let Some(schema) = schema.as_object() else {
        return match schema {
            Value::Bool(false) => Err(invalid(at, "is not accepted here")),
            _ => Ok(()),
        };
    };
    if depth > MAX_CHECK_DEPTH {
        return Ok(());
    }
    if let Some(types) = schema.get("type") {
        let allowed: Vec<&str> = match types {
            Value::String(t) => vec![t.as_str()],
            Value::Array(list) => list.iter().filter_map(Value::as_str).collect(),
            _ => Vec::new(),
        };
        if !allowed.is_empty() && !allowed.iter().any(|t| is_type(value, t)) {
            return Err(invalid(
                at,
                format!("must be {} (got {})", allowed.join(" or "), type_of(value)),
            ));
        }
    }
    if let Some(Value::Array(choices)) = schema.get("enum")
        && !choices.contains(value)
    {
        let shown: Vec<String> = choices.iter().take(20).map(Value::to_string).collect();
        return Err(invalid(at, format!("must be one of {}", shown.join(", "))));
    }
    if let Some(expected) = schema.get("const")
        && expected != value
    {
        return Err(invalid(at, format!("must be {expected}")));
    }
    match value {
        Value::Object(map) => {
            for name in schema
                .get("required")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .filter_map(Value::as_str)
            {
                if map.get(name).is_none_or(Value::is_null) {
                    return Err(invalid(&join(at, name), "is required"));
                }
            }
            let properties = schema.get("properties").and_then(Value::as_object);
            let closed = schema.get("additionalProperties") == Some(&Value::Bool(false));
            for (key, v) in map {
                match properties.and_then(|p| p.get(key)) {
                    Some(s) => check_value(v, s, &join(at, key), depth + 1)?,
                    None if closed && !at.is_empty() => {
                        return Err(invalid(&join(at, key), "is not a known field"));
                    }
                    None => {
                        if let Some(extra) = schema.get("additionalProperties")
                            && extra.is_object()
                        {
                            check_value(v, extra, &join(at, key), depth + 1)?;
                        }
                    }
                }
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for (i, item) in items.iter().enumerate() {
                    check_value(item, item_schema, &format!("{at}[{i}]"), depth + 1)?;
                }
            }
        }
        _ => {}
    }
    Ok(())
}

fn join(at: &str, key: &str) -> String {
    if at.is_empty() {
        key.to_owned()
    } else {
        format!("{at}.{key}")
    }
}

fn invalid(at: &str, problem: impl std::fmt::Display) -> ActionError {
    if at.is_empty() {
        ActionError::new(ErrorCode::InvalidInput, format!("with: {problem}"))
    } else {
        ActionError::invalid_input(at, problem)
    }
}

fn is_type(value: &Value, name: &str) -> bool {
    match name {
        "string" => value.is_string(),
        "number" => value.is_number(),
        "integer" => {
            value.is_i64()
                || value.is_u64()
                || value
                    .as_f64()
                    .is_some_and(|f| f.fract() == 0.0 && f.is_finite())
        }
        "boolean" => value.is_boolean(),
        "array" => value.is_array(),
        "object" => value.is_object(),
        "null" => value.is_null(),
        // An unknown type name constrains nothing.
        _ => true,
    }
}

fn type_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// A parameter's value as it goes on the wire: strings as they are, numbers and booleans as
/// JSON writes them.
fn scalar(value: &Value, field: &str) -> Result<String, ActionError> {
    match value {
        Value::String(s) => Ok(s.clone()),
        Value::Number(n) => Ok(n.to_string()),
        Value::Bool(b) => Ok(b.to_string()),
        _ => Err(ActionError::invalid_input(
            field,
            "must be a string, number or boolean",
        )),
    }
}

/// The request of `action` for `input` (already checked against its schema).
fn render(
    call: &Call<'_>,
    action: &ToolAction,
    input: &Map<String, Value>,
) -> Result<reqwest::RequestBuilder, ActionError> {
    let given = |name: &str| input.get(name).filter(|v| !v.is_null());
    let mut url = call.base().clone();
    {
        let mut segments = url.path_segments_mut().map_err(|()| {
            ActionError::new(
                ErrorCode::InvalidInput,
                "the connection's base_url cannot take a path",
            )
        })?;
        segments.pop_if_empty();
        for template in action.path.split('/').skip(1) {
            let mut segment = String::new();
            let mut rest = template;
            while let Some(open) = rest.find('{') {
                segment.push_str(&rest[..open]);
                let after = &rest[open + 1..];
                let close = after.find('}').unwrap_or(after.len());
                let name = &after[..close];
                let value =
                    given(name).ok_or_else(|| ActionError::invalid_input(name, "is required"))?;
                let text = scalar(value, name)?;
                if text.is_empty() {
                    return Err(ActionError::invalid_input(
                        name,
                        "must not be empty (it fills a path segment)",
                    ));
                }
                segment.push_str(&text);
                rest = after.get(close + 1..).unwrap_or_default();
            }
            segment.push_str(rest);
            // `push` percent-encodes `/`, `?`, `#`, `%` and the rest; a whole segment of `.`
            // or `..` would be dropped or walk up, so it is refused.
            if segment == "." || segment == ".." {
                return Err(ActionError::new(
                    ErrorCode::InvalidInput,
                    format!(
                        "with: a path parameter of `{}` may not make the segment `{segment}`",
                        action.path
                    ),
                ));
            }
            segments.push(&segment);
        }
    }
    {
        let mut pairs: Vec<(String, String)> = Vec::new();
        for p in action
            .parameters
            .iter()
            .filter(|p| p.location == ParamLocation::Query)
        {
            match given(&p.name) {
                None => {}
                Some(Value::Array(items)) => {
                    for item in items {
                        pairs.push((p.name.clone(), scalar(item, &p.name)?));
                    }
                }
                Some(v) => pairs.push((p.name.clone(), scalar(v, &p.name)?)),
            }
        }
        if !pairs.is_empty() {
            let mut query = url.query_pairs_mut();
            for (k, v) in &pairs {
                query.append_pair(k, v);
            }
        }
    }
    let method = Method::from_bytes(action.method.as_str().as_bytes())
        .map_err(|_| ActionError::new(ErrorCode::Internal, "unknown HTTP method"))?;
    let taken: Vec<String> = call
        .ctx
        .credential
        .as_ref()
        .map(|c| c.header_names())
        .unwrap_or_default();
    let mut request = call.request_url(method, url);
    for p in action
        .parameters
        .iter()
        .filter(|p| p.location == ParamLocation::Header)
    {
        let Some(v) = given(&p.name) else { continue };
        if taken.contains(&p.name.to_ascii_lowercase()) {
            return Err(ActionError::invalid_input(
                &p.name,
                format!(
                    "header `{}` is set by the step's connection; leave it out",
                    p.name
                ),
            ));
        }
        let name = HeaderName::from_bytes(p.name.as_bytes())
            .map_err(|_| ActionError::invalid_input(&p.name, "is not a header name"))?;
        let value = HeaderValue::from_str(&scalar(v, &p.name)?)
            .map_err(|_| ActionError::invalid_input(&p.name, "is not a valid header value"))?;
        request = request.header(name, value);
    }
    if action.body.is_some()
        && let Some(body) = input.get(tool::BODY_FIELD)
    {
        request = request.json(body);
    }
    Ok(request)
}

/// Runs `action` of the custom tool `tool` with the step's rendered `with`: the worker's path
/// for a step whose message carries its tool's definition. The definition is checked again
/// here (a worker trusts no message blindly); a bad one is `invalid_input`.
pub async fn execute(
    ctx: &crate::ActionContext,
    tool: &CustomTool,
    action: &str,
    input: Value,
) -> Result<Value, ActionError> {
    if tool.find_action(action).is_none() {
        // Removed from the tool since the workflow was applied.
        return Err(ActionError::new(
            ErrorCode::InvalidInput,
            format!(
                "custom tool `{}` has no action `{}` (it may have been replaced since the workflow was applied)",
                tool.name.escape_debug(),
                action.escape_debug()
            ),
        ));
    }
    let connector = CustomConnector::new(tool.clone(), &[]).map_err(|problems| {
        ActionError::new(
            ErrorCode::InvalidInput,
            format!(
                "the definition of custom tool `{}` is not valid: {}",
                tool.name.escape_debug(),
                problems
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join("; ")
            ),
        )
    })?;
    let call = Call::new(ctx, &connector)?;
    if connector.manifest.find_action(action).is_none() {
        return Err(call.unknown_action(action));
    }
    connector.execute(&call, action, input).await
}
