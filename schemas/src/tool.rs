//! The custom tool definition format: a REST API registered as a connector without code.
//!
//! A tool names a base URL, the auth types a connection to it may use, an optional request
//! budget, and its actions: each an HTTP method, a path template (`/pets/{petId}`), the path,
//! query and header parameters it takes, an optional JSON body, and what calling it does
//! (`side_effect`, from the method unless given). `POST /v1/tools/custom` stores one, an
//! OpenAPI 3 import produces one, and the connectors crate turns it into a connector that
//! behaves like the built-ins.
//!
//! The inputs of an action (a step's `with`) are its parameters by name, plus `body` for the
//! JSON body. A tool holds no secrets: credentials belong to connections, so a definition may
//! travel in step messages.
//!
//! ```
//! use schemas::tool::CustomTool;
//!
//! let tool: CustomTool = serde_json::from_value(serde_json::json!({
//!     "name": "petstore",
//!     "base_url": "https://petstore.example.com/v3",
//!     "auth": [{ "type": "api_key", "in": "header", "name": "api_key" }],
//!     "actions": [{
//!         "name": "get_pet",
//!         "method": "GET",
//!         "path": "/pet/{petId}",
//!         "parameters": [{ "name": "petId", "in": "path", "schema": { "type": "integer" } }]
//!     }]
//! })).unwrap();
//! assert!(tool.check(&[]).is_empty());
//! ```

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

use crate::catalog::SideEffect;

/// Most actions one tool may have.
pub const MAX_ACTIONS: usize = 500;
/// Most parameters one action may take.
pub const MAX_PARAMETERS: usize = 100;
/// Longest tool or action name.
pub const MAX_NAME_LEN: usize = 64;
/// Longest path template.
pub const MAX_PATH_LEN: usize = 2048;
/// Largest stored definition, serialized as JSON.
pub const MAX_DEFINITION_BYTES: usize = 1024 * 1024;

/// The input field that carries an action's JSON body.
pub const BODY_FIELD: &str = "body";

/// Headers an action may not declare as parameters: the HTTP layer and the connection's
/// credential own them.
const RESERVED_HEADERS: &[&str] = &[
    "authorization",
    "host",
    "content-length",
    "content-type",
    "transfer-encoding",
    "connection",
    "upgrade",
    "cookie",
    "traceparent",
];

/// A REST API registered as a tool.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct CustomTool {
    /// Used in `tool.action` in workflows: 1 to 64 lowercase letters, digits and `_`,
    /// starting with a letter; must not be the name of a built-in connector.
    pub name: String,
    /// Display name (the name when empty).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub title: String,
    /// What it is for, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
    /// The API's reference, for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub docs_url: String,
    /// Absolute `http(s)` URL every action's path is appended to; a connection's `base_url`
    /// replaces it.
    pub base_url: String,
    /// Auth types a connection to this tool may use (at least one; `none` for open APIs).
    pub auth: Vec<ToolAuth>,
    /// Request budget per connection unless the connection sets its own (default
    /// [`ToolRateLimit::DEFAULT`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<ToolRateLimit>,
    /// The actions (at least one, at most [`MAX_ACTIONS`]).
    pub actions: Vec<ToolAction>,
}

/// One way a connection may authenticate. Where a key goes is fixed by the connection's own
/// `auth` (`in`, `name`); the values here say what the API expects, for people (and agents)
/// setting up a connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum ToolAuth {
    /// No credentials.
    None,
    /// An API key in a header or query parameter.
    ApiKey {
        /// Where the key goes.
        #[serde(rename = "in")]
        location: KeyLocation,
        /// The header or query parameter name.
        name: String,
    },
    /// `Authorization: Bearer <token>`.
    Bearer,
    /// HTTP basic authentication.
    Basic,
    /// OAuth 2.0 authorization code with PKCE.
    #[serde(rename = "oauth2_code")]
    OAuth2Code {
        /// The authorization endpoint, for people setting up the connection.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        authorize_url: String,
        /// The token endpoint, for people setting up the connection.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        token_url: String,
        /// Scopes the API defines, for people.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        scopes: Vec<String>,
    },
    /// OAuth 2.0 client credentials.
    #[serde(rename = "oauth2_client")]
    OAuth2Client {
        /// The token endpoint, for people setting up the connection.
        #[serde(default, skip_serializing_if = "String::is_empty")]
        token_url: String,
        /// Scopes the API defines, for people.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        scopes: Vec<String>,
    },
}

impl ToolAuth {
    /// The name connections use in `auth.type`.
    pub fn type_name(&self) -> &'static str {
        match self {
            ToolAuth::None => "none",
            ToolAuth::ApiKey { .. } => "api_key",
            ToolAuth::Bearer => "bearer",
            ToolAuth::Basic => "basic",
            ToolAuth::OAuth2Code { .. } => "oauth2_code",
            ToolAuth::OAuth2Client { .. } => "oauth2_client",
        }
    }
}

/// Where an API key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum KeyLocation {
    /// A request header.
    Header,
    /// A query parameter.
    Query,
}

impl KeyLocation {
    /// `header` or `query`, as a connection's `auth.in` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyLocation::Header => "header",
            KeyLocation::Query => "query",
        }
    }
}

/// A request budget: `requests` per `per_seconds`, `burst` at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolRateLimit {
    /// Requests allowed per window.
    pub requests: u32,
    /// The window, in seconds (at most 86400).
    pub per_seconds: u32,
    /// Requests that may go at once (1 to `requests`, default 1).
    #[serde(default = "one")]
    pub burst: u32,
}

fn one() -> u32 {
    1
}

impl ToolRateLimit {
    /// The budget of a tool that sets none: 10 requests per second, 10 at once. Generous
    /// enough not to slow an ordinary workflow, low enough that a runaway `for_each` does not
    /// hammer someone's API.
    pub const DEFAULT: ToolRateLimit = ToolRateLimit {
        requests: 10,
        per_seconds: 1,
        burst: 10,
    };
}

/// An HTTP method an action may use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "UPPERCASE")]
pub enum Method {
    /// `GET`.
    Get,
    /// `HEAD`.
    Head,
    /// `POST`.
    Post,
    /// `PUT`.
    Put,
    /// `PATCH`.
    Patch,
    /// `DELETE`.
    Delete,
    /// `OPTIONS`.
    Options,
}

impl Method {
    /// The method as sent.
    pub fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Head => "HEAD",
            Method::Post => "POST",
            Method::Put => "PUT",
            Method::Patch => "PATCH",
            Method::Delete => "DELETE",
            Method::Options => "OPTIONS",
        }
    }

    /// The method named `name`, in any case.
    pub fn parse(name: &str) -> Option<Method> {
        Some(match name.to_ascii_uppercase().as_str() {
            "GET" => Method::Get,
            "HEAD" => Method::Head,
            "POST" => Method::Post,
            "PUT" => Method::Put,
            "PATCH" => Method::Patch,
            "DELETE" => Method::Delete,
            "OPTIONS" => Method::Options,
            _ => return None,
        })
    }

    /// What calling it does unless an action says otherwise: `GET`, `HEAD` and `OPTIONS`
    /// read, `DELETE` destroys, the rest write.
    pub fn side_effect(self) -> SideEffect {
        match self {
            Method::Get | Method::Head | Method::Options => SideEffect::Read,
            Method::Delete => SideEffect::Destructive,
            Method::Post | Method::Put | Method::Patch => SideEffect::Write,
        }
    }

    /// Whether a request body makes sense with it.
    pub fn takes_body(self) -> bool {
        !matches!(self, Method::Get | Method::Head | Method::Options)
    }
}

/// One operation of the API.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolAction {
    /// Used in `tool.action`: 1 to 64 lowercase letters, digits and `_`, starting with a
    /// letter.
    pub name: String,
    /// One line for people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub summary: String,
    /// The HTTP method.
    pub method: Method,
    /// Path appended to the base URL, starting with `/`; `{name}` placeholders are filled
    /// from path parameters, each percent-encoded as one segment.
    pub path: String,
    /// Path, query and header parameters.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub parameters: Vec<ToolParameter>,
    /// The JSON body, taken from the `body` input.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body: Option<ToolBody>,
    /// What calling it does; from the method when absent (`GET`/`HEAD` read, `DELETE`
    /// destructive, others write). Destructive actions wait for approval.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub side_effect: Option<SideEffect>,
    /// Provider scopes the connection must have been granted.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub scopes: Vec<String>,
}

impl ToolAction {
    /// Its side effect: the one given, else the method's.
    pub fn effective_side_effect(&self) -> SideEffect {
        self.side_effect
            .unwrap_or_else(|| self.method.side_effect())
    }

    /// The JSON Schema of its inputs (a step's `with`): an object with one property per
    /// parameter and `body` for the JSON body, no others.
    pub fn input_schema(&self) -> Value {
        let mut properties = Map::new();
        let mut required = Vec::new();
        for p in &self.parameters {
            let mut schema = match &p.schema {
                Value::Object(o) => o.clone(),
                _ => Map::new(),
            };
            if !p.description.is_empty() && !schema.contains_key("description") {
                schema.insert("description".into(), Value::String(p.description.clone()));
            }
            schema.insert("x-in".into(), Value::String(p.location.as_str().into()));
            properties.insert(p.name.clone(), Value::Object(schema));
            if p.is_required() {
                required.push(Value::String(p.name.clone()));
            }
        }
        if let Some(body) = &self.body {
            properties.insert(BODY_FIELD.into(), body.schema.clone());
            if body.required {
                required.push(Value::String(BODY_FIELD.into()));
            }
        }
        json!({
            "type": "object",
            "additionalProperties": false,
            "required": required,
            "properties": properties,
        })
    }
}

/// Where a parameter goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum ParamLocation {
    /// Fills a `{name}` placeholder of the path.
    Path,
    /// A query parameter (an array repeats the parameter).
    Query,
    /// A request header.
    Header,
}

impl ParamLocation {
    /// `path`, `query` or `header`.
    pub fn as_str(self) -> &'static str {
        match self {
            ParamLocation::Path => "path",
            ParamLocation::Query => "query",
            ParamLocation::Header => "header",
        }
    }
}

/// One parameter of an action; its input field has the parameter's name.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolParameter {
    /// The name on the wire (placeholder, query parameter or header), and the input field.
    pub name: String,
    /// Where it goes.
    #[serde(rename = "in")]
    pub location: ParamLocation,
    /// Whether a step must give it (path parameters always must).
    #[serde(default)]
    pub required: bool,
    /// JSON Schema of its value: a string, number, integer or boolean (a query parameter may
    /// also be an array of those).
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    pub schema: Value,
    /// For people.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub description: String,
}

impl ToolParameter {
    /// Whether a step must give it.
    pub fn is_required(&self) -> bool {
        self.required || self.location == ParamLocation::Path
    }
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

fn is_empty_object(v: &Value) -> bool {
    v.as_object().is_some_and(Map::is_empty)
}

/// An action's JSON body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ToolBody {
    /// JSON Schema of the body (the `body` input).
    #[serde(default = "empty_object", skip_serializing_if = "is_empty_object")]
    pub schema: Value,
    /// Whether a step must give it.
    #[serde(default)]
    pub required: bool,
}

/// One thing wrong with a definition, where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ToolProblem {
    /// Where, e.g. `actions[2].path`.
    pub path: String,
    /// What is wrong, for people.
    pub message: String,
}

impl std::fmt::Display for ToolProblem {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// Whether `name` is a tool or action name: 1 to 64 lowercase ASCII letters, digits and `_`,
/// starting with a letter.
pub fn is_identifier(name: &str) -> bool {
    let mut bytes = name.bytes();
    matches!(bytes.next(), Some(b'a'..=b'z'))
        && name.len() <= MAX_NAME_LEN
        && bytes.all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
}

/// Whether `name` is an HTTP header name (an RFC 9110 token).
fn is_token(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 256
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Whether `url` looks like an absolute `http(s)` URL with a host; the connectors crate
/// parses it fully.
fn is_http_url(url: &str) -> bool {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"));
    rest.is_some_and(|r| {
        let host = r.split(['/', '?', '#']).next().unwrap_or_default();
        !host.is_empty() && !host.contains('@') && !r.contains(['?', '#']) && !url.contains(' ')
    })
}

/// The `{name}` placeholders of a path template, or why it is malformed.
pub fn placeholders(path: &str) -> Result<Vec<&str>, String> {
    let mut out = Vec::new();
    let mut rest = path;
    while let Some(open) = rest.find(['{', '}']) {
        if rest.as_bytes()[open] == b'}' {
            return Err("has a `}` without a `{`".into());
        }
        let after = &rest[open + 1..];
        let close = after
            .find('}')
            .ok_or_else(|| "has a `{` without a `}`".to_owned())?;
        let name = &after[..close];
        if name.is_empty() || name.contains(['{', '/']) {
            return Err(format!("has a malformed placeholder `{{{name}}}`"));
        }
        out.push(name);
        rest = &after[close + 1..];
    }
    Ok(out)
}

impl CustomTool {
    /// Its display name.
    pub fn display_title(&self) -> &str {
        if self.title.is_empty() {
            &self.name
        } else {
            &self.title
        }
    }

    /// The action called `name`.
    pub fn find_action(&self, name: &str) -> Option<&ToolAction> {
        self.actions.iter().find(|a| a.name == name)
    }

    /// Every problem of the definition, each with its path; empty when it is sound.
    /// `reserved` are names it may not take (the built-in connectors).
    pub fn check(&self, reserved: &[&str]) -> Vec<ToolProblem> {
        let mut problems = Vec::new();
        let mut report = |path: String, message: String| {
            problems.push(ToolProblem { path, message });
        };
        if !is_identifier(&self.name) {
            report(
                "name".into(),
                format!(
                    "`{}` must be 1 to {MAX_NAME_LEN} lowercase letters, digits and `_`, starting with a letter",
                    self.name.escape_debug()
                ),
            );
        } else if reserved.contains(&self.name.as_str()) {
            report(
                "name".into(),
                format!(
                    "`{}` is a built-in connector; choose another name",
                    self.name
                ),
            );
        }
        if !is_http_url(&self.base_url) {
            report(
                "base_url".into(),
                "must be an absolute http(s) URL with a host and no query or fragment".into(),
            );
        }
        if self.auth.is_empty() {
            report(
                "auth".into(),
                "list at least one auth type (`{\"type\": \"none\"}` for an open API)".into(),
            );
        }
        for (i, auth) in self.auth.iter().enumerate() {
            if self.auth[..i]
                .iter()
                .any(|a| a.type_name() == auth.type_name())
            {
                report(
                    format!("auth[{i}]"),
                    format!("auth type `{}` is listed twice", auth.type_name()),
                );
            }
            if let ToolAuth::ApiKey { location, name } = auth {
                let ok = match location {
                    KeyLocation::Header => is_token(name),
                    KeyLocation::Query => !name.is_empty() && name.len() <= 256,
                };
                if !ok {
                    report(
                        format!("auth[{i}].name"),
                        format!(
                            "`{}` is not a valid {} name",
                            name.escape_debug(),
                            location.as_str()
                        ),
                    );
                }
            }
        }
        if let Some(limit) = &self.rate_limit {
            if limit.requests == 0 || limit.per_seconds == 0 {
                report(
                    "rate_limit".into(),
                    "`requests` and `per_seconds` must be positive".into(),
                );
            } else if limit.per_seconds > 86_400 {
                report(
                    "rate_limit.per_seconds".into(),
                    "must be at most 86400 (one day)".into(),
                );
            } else if limit.burst == 0 || limit.burst > limit.requests {
                report(
                    "rate_limit.burst".into(),
                    "must be between 1 and `requests`".into(),
                );
            }
        }
        if self.actions.is_empty() {
            report("actions".into(), "list at least one action".into());
        }
        if self.actions.len() > MAX_ACTIONS {
            report(
                "actions".into(),
                format!(
                    "at most {MAX_ACTIONS} actions (found {})",
                    self.actions.len()
                ),
            );
        }
        for (i, action) in self.actions.iter().enumerate() {
            let at = |field: &str| format!("actions[{i}].{field}");
            if !is_identifier(&action.name) {
                report(
                    at("name"),
                    format!(
                        "`{}` must be 1 to {MAX_NAME_LEN} lowercase letters, digits and `_`, starting with a letter",
                        action.name.escape_debug()
                    ),
                );
            } else if self.actions[..i].iter().any(|a| a.name == action.name) {
                report(
                    at("name"),
                    format!("action `{}` is defined twice", action.name),
                );
            }
            check_action(action, &at, &mut report);
        }
        problems
    }
}

fn check_action(
    action: &ToolAction,
    at: &dyn Fn(&str) -> String,
    report: &mut dyn FnMut(String, String),
) {
    if !action.path.starts_with('/') || action.path.len() > MAX_PATH_LEN {
        report(
            at("path"),
            format!("must start with `/` and be at most {MAX_PATH_LEN} characters"),
        );
    }
    if action.path.contains(['?', '#', ' ']) {
        report(
            at("path"),
            "must not hold `?`, `#` or spaces: declare query parameters in `parameters`".into(),
        );
    }
    let names = match placeholders(&action.path) {
        Ok(names) => names,
        Err(e) => {
            report(at("path"), e);
            Vec::new()
        }
    };
    for name in &names {
        if !action
            .parameters
            .iter()
            .any(|p| p.location == ParamLocation::Path && p.name == *name)
        {
            report(
                at("path"),
                format!("placeholder {{{name}}} has no path parameter"),
            );
        }
    }
    if action.parameters.len() > MAX_PARAMETERS {
        report(
            at("parameters"),
            format!("at most {MAX_PARAMETERS} parameters"),
        );
    }
    for (j, p) in action.parameters.iter().enumerate() {
        let here = |field: &str| at(&format!("parameters[{j}].{field}"));
        if p.name.is_empty() || p.name.len() > 256 || p.name.chars().any(char::is_control) {
            report(here("name"), "must be 1 to 256 visible characters".into());
        }
        if p.name == BODY_FIELD && action.body.is_some() {
            report(
                here("name"),
                "`body` is the input of the JSON body; rename this parameter".into(),
            );
        }
        if action.parameters[..j].iter().any(|q| q.name == p.name) {
            report(
                here("name"),
                format!(
                    "a parameter named `{}` is declared twice (input fields are parameter names)",
                    p.name.escape_debug()
                ),
            );
        }
        match p.location {
            ParamLocation::Path if !names.contains(&p.name.as_str()) => report(
                here("name"),
                format!(
                    "path parameter `{}` has no {{{}}} placeholder in the path",
                    p.name.escape_debug(),
                    p.name.escape_debug()
                ),
            ),
            ParamLocation::Header if !is_token(&p.name) => report(
                here("name"),
                format!("`{}` is not a header name", p.name.escape_debug()),
            ),
            ParamLocation::Header
                if RESERVED_HEADERS.contains(&p.name.to_ascii_lowercase().as_str()) =>
            {
                report(
                    here("name"),
                    format!(
                        "header `{}` is set by the connection or the HTTP layer",
                        p.name
                    ),
                );
            }
            _ => {}
        }
        if !p.schema.is_object() && !p.schema.is_boolean() {
            report(here("schema"), "must be a JSON Schema object".into());
        }
    }
    if let Some(body) = &action.body {
        if !action.method.takes_body() {
            report(
                at("body"),
                format!("a {} request takes no body", action.method.as_str()),
            );
        }
        if !body.schema.is_object() && !body.schema.is_boolean() {
            report(at("body.schema"), "must be a JSON Schema object".into());
        }
    }
    for (j, scope) in action.scopes.iter().enumerate() {
        if scope.is_empty() || scope.contains(char::is_whitespace) {
            report(
                at(&format!("scopes[{j}]")),
                "must be a non-empty scope without spaces".into(),
            );
        }
    }
}

/// The JSON Schema of the definition format.
pub fn tool_schema() -> Value {
    schemars::schema_for!(CustomTool).to_value()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tool(actions: Value) -> CustomTool {
        serde_json::from_value(json!({
            "name": "shop",
            "base_url": "https://shop.example.com/api",
            "auth": [{ "type": "bearer" }],
            "actions": actions,
        }))
        .unwrap_or_else(|e| panic!("{e}"))
    }

    #[test]
    fn a_sound_tool_has_no_problems() {
        let t = tool(json!([{
            "name": "get_item", "method": "GET", "path": "/items/{id}",
            "parameters": [{ "name": "id", "in": "path", "schema": { "type": "string" } },
                           { "name": "fields", "in": "query" }]
        }, {
            "name": "add_item", "method": "POST", "path": "/items",
            "body": { "schema": { "type": "object" }, "required": true }
        }]));
        assert_eq!(t.check(&[]), vec![]);
        assert_eq!(t.actions[0].effective_side_effect(), SideEffect::Read);
        assert_eq!(t.actions[1].effective_side_effect(), SideEffect::Write);
        let schema = t.actions[0].input_schema();
        assert_eq!(schema["required"], json!(["id"]));
        assert_eq!(schema["properties"]["id"]["x-in"], "path");
    }

    #[test]
    fn every_problem_is_reported_with_its_path() {
        let mut t = tool(json!([{
            "name": "a", "method": "GET", "path": "/x/{id}"
        }, {
            "name": "a", "method": "GET", "path": "items",
            "body": { "schema": {} },
            "parameters": [{ "name": "Authorization", "in": "header" },
                           { "name": "q", "in": "path" }]
        }]));
        t.name = "http".into();
        t.base_url = "ftp://x".into();
        let problems: Vec<String> = t.check(&["http"]).iter().map(ToString::to_string).collect();
        for expected in [
            "name: `http` is a built-in connector",
            "base_url: must be an absolute",
            "actions[0].path: placeholder {id} has no path parameter",
            "actions[1].name: action `a` is defined twice",
            "actions[1].path: must start with `/`",
            "actions[1].parameters[0].name: header `Authorization` is set by",
            "actions[1].parameters[1].name: path parameter `q` has no {q} placeholder",
            "actions[1].body: a GET request takes no body",
        ] {
            assert!(
                problems.iter().any(|p| p.starts_with(expected)),
                "missing {expected:?} in {problems:#?}"
            );
        }
    }

    #[test]
    fn unknown_fields_are_refused() {
        let e = serde_json::from_value::<CustomTool>(json!({
            "name": "x", "base_url": "https://x", "auth": [], "actions": [], "actoins": []
        }))
        .expect_err("unknown field");
        assert!(e.to_string().contains("actoins"), "{e}");
    }

    #[test]
    fn placeholders_are_parsed() {
        assert_eq!(placeholders("/a/{b}/c/{d}"), Ok(vec!["b", "d"]));
        assert!(placeholders("/a/{b").is_err());
        assert!(placeholders("/a/b}").is_err());
        assert!(placeholders("/a/{}").is_err());
    }
}
