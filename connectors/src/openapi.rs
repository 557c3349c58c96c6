//! OpenAPI 3.0 and 3.1 documents imported as custom tools.
//!
//! Each operation becomes an action:
//!
//! | OpenAPI | custom tool |
//! | --- | --- |
//! | `operationId` (`addPet`) | action name, snake case (`add_pet`); else method and path (`get_pet_pet_id`) |
//! | `summary`, else the first line of `description` | `summary` |
//! | path, query and header `parameters` (path-level and operation-level, `$ref`s inlined) | `parameters` |
//! | `requestBody` with `application/json` (or `…+json`) content | `body` |
//! | the method | `side_effect` (`GET`/`HEAD`/`OPTIONS` read, `DELETE` destructive, others write) |
//! | `security` (the operation's, else the document's) over `components.securitySchemes` | the tool's `auth`; OAuth 2.0 scopes become the action's `scopes` when every alternative is OAuth 2.0 |
//! | `servers[0].url` (variables at their defaults) | `base_url` |
//!
//! Local `$ref`s (`#/components/…`) are inlined, with a guard against cycles and a depth cap
//! (a cut schema accepts anything). OpenAPI 3.0's `nullable: true` becomes a `null` type.
//! What cannot be imported — cookie parameters, non-JSON bodies, remote `$ref`s, implicit or
//! password OAuth flows, OpenID Connect, `TRACE` operations — is left out and reported as a
//! warning, never dropped silently. Swagger 2.0 documents are refused.

use schemas::tool::{
    self, CustomTool, KeyLocation, ParamLocation, ToolAction, ToolAuth, ToolBody, ToolParameter,
    ToolProblem,
};
use serde::Serialize;
use serde_json::{Map, Value};

/// Largest document accepted, in bytes.
pub const MAX_DOCUMENT_BYTES: usize = 4 * 1024 * 1024;
/// Deepest `$ref` chain inlined into one schema.
pub const MAX_REF_DEPTH: usize = 32;
/// Most schema nodes one action's inputs may grow to by inlining; past it the rest accepts
/// anything (a guard against documents whose references multiply).
pub const MAX_SCHEMA_NODES: usize = 20_000;

/// How an import is shaped.
#[derive(Debug, Clone, Default)]
pub struct ImportOptions {
    /// The tool's name; else made from `info.title`.
    pub name: Option<String>,
    /// The base URL, replacing `servers`.
    pub base_url: Option<String>,
    /// What a relative `servers[0].url` (`/v3`) is resolved against.
    pub server_base: Option<String>,
    /// Names the tool may not take (the built-in connectors).
    pub reserved: Vec<String>,
}

/// Something of the document that was not imported, and where.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ImportWarning {
    /// Where in the document, e.g. `paths./pet/{petId}/uploadImage.post.requestBody`.
    pub path: String,
    /// What was left out and why.
    pub message: String,
}

/// The tool made from a document, and what was left out.
#[derive(Debug, Clone, PartialEq)]
pub struct Imported {
    /// The tool.
    pub tool: CustomTool,
    /// What was not imported.
    pub warnings: Vec<ImportWarning>,
}

/// Why a document could not be imported.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ImportError {
    /// Larger than [`MAX_DOCUMENT_BYTES`].
    #[error("the document is {0} bytes; at most {MAX_DOCUMENT_BYTES} are accepted")]
    TooLarge(usize),
    /// Neither JSON nor YAML.
    #[error("the document is not JSON or YAML: {0}")]
    Unreadable(String),
    /// A Swagger 2.0 document.
    #[error(
        "this is a Swagger 2.0 document; only OpenAPI 3.0 and 3.1 are imported (convert it first, e.g. with swagger2openapi)"
    )]
    Swagger2,
    /// Not an OpenAPI 3.0 or 3.1 document.
    #[error("`openapi`: {0}")]
    Version(String),
    /// Nothing to import, or too much.
    #[error("`paths`: {0}")]
    Operations(String),
    /// No usable base URL.
    #[error("`servers`: {0}")]
    Server(String),
    /// The tool made from the document is not a valid tool.
    #[error("the imported tool is not valid: {}", .0.iter().map(ToString::to_string).collect::<Vec<_>>().join("; "))]
    Invalid(Vec<ToolProblem>),
}

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "options", "head", "patch", "trace",
];

/// Imports an OpenAPI 3.0 or 3.1 document, JSON or YAML.
pub fn import(text: &str, options: &ImportOptions) -> Result<Imported, ImportError> {
    if text.len() > MAX_DOCUMENT_BYTES {
        return Err(ImportError::TooLarge(text.len()));
    }
    // The definitions' own parser: YAML and JSON alike, bounded in size, depth, nodes (aliases
    // expanded count too, so an alias bomb is an error) and scalar length.
    let limits = schemas::source::Limits {
        max_bytes: MAX_DOCUMENT_BYTES,
        max_depth: 128,
        max_nodes: 1_000_000,
        max_scalar_bytes: 1024 * 1024,
    };
    let doc = schemas::source::parse_with_limits(text, limits)
        .map_err(|e| ImportError::Unreadable(e.to_string()))?;
    import_value(&doc.value, options)
}

/// Imports a document already parsed.
pub fn import_value(doc: &Value, options: &ImportOptions) -> Result<Imported, ImportError> {
    if !doc.is_object() {
        return Err(ImportError::Unreadable(
            "the document is not a mapping".into(),
        ));
    }
    if doc.get("swagger").is_some() {
        return Err(ImportError::Swagger2);
    }
    let version = match doc.get("openapi") {
        Some(Value::String(v)) => v.clone(),
        Some(other) => other.to_string(),
        None => {
            return Err(ImportError::Version(
                "missing; this is not an OpenAPI document".into(),
            ));
        }
    };
    if !(version.starts_with("3.0") || version.starts_with("3.1")) {
        return Err(ImportError::Version(format!(
            "version {version} is not supported; import OpenAPI 3.0 or 3.1"
        )));
    }
    let mut importer = Importer {
        doc,
        warnings: Vec::new(),
        auth: Vec::new(),
        nodes: 0,
    };
    let base_url = importer.base_url(options)?;
    let name = match &options.name {
        Some(n) => n.clone(),
        None => slug(doc["info"]["title"].as_str().unwrap_or("api")),
    };
    let actions = importer.actions()?;
    let info = &doc["info"];
    let tool = CustomTool {
        name,
        title: info["title"].as_str().unwrap_or_default().to_owned(),
        description: first_line(info["description"].as_str().unwrap_or_default()),
        docs_url: doc["externalDocs"]["url"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
        base_url,
        auth: if importer.auth.is_empty() {
            vec![ToolAuth::None]
        } else {
            importer.auth.clone()
        },
        rate_limit: None,
        actions,
    };
    let reserved: Vec<&str> = options.reserved.iter().map(String::as_str).collect();
    let problems = tool.check(&reserved);
    if !problems.is_empty() {
        return Err(ImportError::Invalid(problems));
    }
    Ok(Imported {
        tool,
        warnings: importer.warnings,
    })
}

struct Importer<'a> {
    doc: &'a Value,
    warnings: Vec<ImportWarning>,
    auth: Vec<ToolAuth>,
    /// Schema nodes made for the current action.
    nodes: usize,
}

impl Importer<'_> {
    fn warn(&mut self, path: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(ImportWarning {
            path: path.into(),
            message: message.into(),
        });
    }

    fn base_url(&mut self, options: &ImportOptions) -> Result<String, ImportError> {
        if let Some(url) = &options.base_url {
            return Ok(url.trim_end_matches('/').to_owned());
        }
        let Some(server) = self.doc["servers"].get(0) else {
            return Err(ImportError::Server(
                "the document lists no server; give `base_url`".into(),
            ));
        };
        let mut url = server["url"].as_str().unwrap_or_default().to_owned();
        if let Some(vars) = server["variables"].as_object() {
            for (name, var) in vars {
                let value = var["default"].as_str().unwrap_or_default();
                url = url.replace(&format!("{{{name}}}"), value);
            }
        }
        if url.starts_with("http://") || url.starts_with("https://") {
            return Ok(url.trim_end_matches('/').to_owned());
        }
        let Some(base) = &options.server_base else {
            return Err(ImportError::Server(format!(
                "servers[0].url `{url}` is relative; give `base_url` or `server_base`"
            )));
        };
        let joined = reqwest::Url::parse(base)
            .and_then(|b| b.join(&url))
            .map_err(|e| ImportError::Server(format!("`server_base` with `{url}`: {e}")))?;
        Ok(joined.as_str().trim_end_matches('/').to_owned())
    }

    fn actions(&mut self) -> Result<Vec<ToolAction>, ImportError> {
        let Some(paths) = self.doc["paths"].as_object() else {
            return Err(ImportError::Operations("the document has no paths".into()));
        };
        let count = paths
            .values()
            .filter_map(Value::as_object)
            .map(|item| METHODS.iter().filter(|m| item.contains_key(**m)).count())
            .sum::<usize>();
        if count == 0 {
            return Err(ImportError::Operations(
                "the document has no operations".into(),
            ));
        }
        if count > tool::MAX_ACTIONS {
            return Err(ImportError::Operations(format!(
                "{count} operations; at most {} are imported as one tool",
                tool::MAX_ACTIONS
            )));
        }
        let mut actions: Vec<ToolAction> = Vec::new();
        for (path, item) in paths {
            let item = match item.get("$ref") {
                Some(_) => self.resolve(item, &format!("paths.{path}")),
                None => item.clone(),
            };
            let Some(item) = item.as_object() else {
                continue;
            };
            let shared = item.get("parameters").cloned().unwrap_or(Value::Null);
            // In the document's order, as its authors grouped them.
            for (method, op) in item {
                let method = method.as_str();
                if !METHODS.contains(&method) {
                    continue;
                }
                let at = format!("paths.{path}.{method}");
                if method == "trace" {
                    self.warn(at, "TRACE operations are not imported");
                    continue;
                }
                self.nodes = 0;
                if let Some(action) = self.action(path, method, op, &shared, &at) {
                    let mut action = action;
                    // Two operations with one name (missing or clashing ids) stay apart.
                    if actions.iter().any(|a| a.name == action.name) {
                        let base = action.name.clone();
                        let mut n = 2;
                        while actions.iter().any(|a| a.name == action.name) {
                            action.name = format!("{}_{n}", cut(&base, tool::MAX_NAME_LEN - 4));
                            n += 1;
                        }
                        self.warn(
                            format!("{at}.operationId"),
                            format!(
                                "the action name `{base}` was taken; named `{}`",
                                action.name
                            ),
                        );
                    }
                    actions.push(action);
                }
            }
        }
        Ok(actions)
    }

    fn action(
        &mut self,
        path: &str,
        method: &str,
        op: &Value,
        shared: &Value,
        at: &str,
    ) -> Option<ToolAction> {
        let verb = tool::Method::parse(method)?;
        let name = match op["operationId"].as_str() {
            Some(id) if !slug(id).is_empty() => slug(id),
            _ => slug(&format!("{method} {path}")),
        };
        let summary = op["summary"]
            .as_str()
            .filter(|s| !s.trim().is_empty())
            .map(first_line)
            .unwrap_or_else(|| first_line(op["description"].as_str().unwrap_or_default()));
        let mut parameters: Vec<ToolParameter> = Vec::new();
        let op_params = op.get("parameters").cloned().unwrap_or(Value::Null);
        // Operation-level parameters override path-level ones of the same name and place.
        for (list, list_at) in [
            (&op_params, format!("{at}.parameters")),
            (shared, format!("paths.{path}.parameters")),
        ] {
            for (i, raw) in list.as_array().into_iter().flatten().enumerate() {
                let here = format!("{list_at}[{i}]");
                let p = self.resolve(raw, &here);
                if let Some(param) = self.parameter(&p, &here)
                    && !parameters
                        .iter()
                        .any(|q| q.name == param.name && q.location == param.location)
                {
                    if parameters.iter().any(|q| q.name == param.name) {
                        self.warn(
                            &here,
                            format!(
                                "a second parameter named `{}` (in {}) is not imported: inputs are named after parameters",
                                param.name,
                                param.location.as_str()
                            ),
                        );
                        continue;
                    }
                    parameters.push(param);
                }
            }
        }
        // Keep the order of the path's placeholders first, as people read the path.
        parameters.sort_by_key(|p| p.location != ParamLocation::Path);
        let body = match op.get("requestBody") {
            None => None,
            Some(raw) => {
                let here = format!("{at}.requestBody");
                let rb = self.resolve(raw, &here);
                self.body(&rb, &here, verb)
            }
        };
        if body.is_some() && parameters.iter().any(|p| p.name == tool::BODY_FIELD) {
            self.warn(
                format!("{at}.parameters"),
                "a parameter named `body` is not imported: `body` is the input of the JSON body",
            );
            parameters.retain(|p| p.name != tool::BODY_FIELD);
        }
        let scopes = self.security(op, at);
        Some(ToolAction {
            name,
            summary,
            method: verb,
            path: path.to_owned(),
            parameters,
            body,
            side_effect: None,
            scopes,
        })
    }

    fn parameter(&mut self, p: &Value, at: &str) -> Option<ToolParameter> {
        let name = p["name"].as_str().unwrap_or_default().to_owned();
        let location = match p["in"].as_str() {
            Some("path") => ParamLocation::Path,
            Some("query") => ParamLocation::Query,
            Some("header") => ParamLocation::Header,
            Some("cookie") => {
                self.warn(
                    at,
                    format!(
                        "cookie parameter `{name}` is not imported: custom tools send no cookies"
                    ),
                );
                return None;
            }
            other => {
                self.warn(
                    at,
                    format!("parameter `{name}` has an unknown location {other:?}; not imported"),
                );
                return None;
            }
        };
        if location == ParamLocation::Header
            && ["accept", "content-type", "authorization"]
                .contains(&name.to_ascii_lowercase().as_str())
        {
            // OpenAPI itself says these header parameters are ignored (3.0 §4.7.12).
            self.warn(
                at,
                format!("header parameter `{name}` is not imported: the HTTP layer and the connection set it"),
            );
            return None;
        }
        let raw_schema = match (p.get("schema"), p["content"].as_object()) {
            (Some(s), _) => s.clone(),
            (None, Some(content)) => content
                .values()
                .next()
                .and_then(|c| c.get("schema"))
                .cloned()
                .unwrap_or(Value::Object(Map::new())),
            (None, None) => Value::Object(Map::new()),
        };
        let schema = self.schema(&raw_schema, &format!("{at}.schema"), &mut Vec::new());
        Some(ToolParameter {
            name,
            location,
            required: p["required"].as_bool().unwrap_or(false),
            schema,
            description: first_line(p["description"].as_str().unwrap_or_default()),
        })
    }

    fn body(&mut self, rb: &Value, at: &str, method: tool::Method) -> Option<ToolBody> {
        let content = rb["content"].as_object()?;
        let json = content
            .iter()
            .find(|(k, _)| is_json(k))
            .map(|(_, v)| v.clone());
        let Some(media) = json else {
            let kinds: Vec<&str> = content.keys().map(String::as_str).collect();
            self.warn(
                at,
                format!(
                    "the request body is only {}; custom tools send JSON bodies, so the action is imported without one",
                    kinds.join(", ")
                ),
            );
            return None;
        };
        if !method.takes_body() {
            self.warn(
                at,
                format!(
                    "a {} request takes no body; it is not imported",
                    method.as_str()
                ),
            );
            return None;
        }
        let raw = media
            .get("schema")
            .cloned()
            .unwrap_or(Value::Object(Map::new()));
        let schema = self.schema(&raw, &format!("{at}.content.schema"), &mut Vec::new());
        Some(ToolBody {
            schema,
            required: rb["required"].as_bool().unwrap_or(false),
        })
    }

    /// The scopes an operation needs, and its security schemes added to the tool's auth.
    fn security(&mut self, op: &Value, at: &str) -> Vec<String> {
        let requirements = op.get("security").or_else(|| self.doc.get("security"));
        let Some(list) = requirements.and_then(Value::as_array) else {
            self.add_auth(ToolAuth::None);
            return Vec::new();
        };
        if list.is_empty() {
            self.add_auth(ToolAuth::None);
            return Vec::new();
        }
        let mut all_oauth = true;
        let mut scopes: Vec<String> = Vec::new();
        for requirement in list {
            let Some(requirement) = requirement.as_object() else {
                continue;
            };
            if requirement.is_empty() {
                // `{}` among the alternatives: anonymous access is allowed.
                self.add_auth(ToolAuth::None);
                all_oauth = false;
                continue;
            }
            if requirement.len() > 1 {
                self.warn(
                    format!("{at}.security"),
                    "a requirement combining several schemes is imported as any one of them: a connection carries one credential",
                );
            }
            for (scheme_name, wanted) in requirement {
                match self.scheme(scheme_name) {
                    Some(auth @ (ToolAuth::OAuth2Code { .. } | ToolAuth::OAuth2Client { .. })) => {
                        self.add_auth(auth);
                        for s in wanted
                            .as_array()
                            .into_iter()
                            .flatten()
                            .filter_map(Value::as_str)
                        {
                            if !scopes.iter().any(|x| x == s) {
                                scopes.push(s.to_owned());
                            }
                        }
                    }
                    Some(auth) => {
                        self.add_auth(auth);
                        all_oauth = false;
                    }
                    None => all_oauth = false,
                }
            }
        }
        if all_oauth { scopes } else { Vec::new() }
    }

    fn add_auth(&mut self, auth: ToolAuth) {
        if let Some(same) = self.auth.iter().find(|a| a.type_name() == auth.type_name()) {
            if *same != auth
                && !self.warnings.iter().any(|w| {
                    w.path == "components.securitySchemes" && w.message.contains(auth.type_name())
                })
            {
                self.warn(
                    "components.securitySchemes",
                    format!(
                        "several `{}` schemes differ; the tool keeps the first, and a connection says where its credential goes",
                        auth.type_name()
                    ),
                );
            }
            return;
        }
        self.auth.push(auth);
    }

    /// The auth of a named security scheme, or `None` (with a warning, once) when it cannot
    /// be used.
    fn scheme(&mut self, name: &str) -> Option<ToolAuth> {
        let at = format!("components.securitySchemes.{name}");
        let raw = self.doc["components"]["securitySchemes"].get(name).cloned();
        let Some(raw) = raw else {
            self.warn_once(&at, format!("security scheme `{name}` is not defined"));
            return None;
        };
        let scheme = self.resolve(&raw, &at);
        match scheme["type"].as_str() {
            Some("apiKey") => {
                let key = scheme["name"].as_str().unwrap_or_default().to_owned();
                match scheme["in"].as_str() {
                    Some("header") => Some(ToolAuth::ApiKey {
                        location: KeyLocation::Header,
                        name: key,
                    }),
                    Some("query") => Some(ToolAuth::ApiKey {
                        location: KeyLocation::Query,
                        name: key,
                    }),
                    _ => {
                        self.warn_once(
                            &at,
                            format!(
                                "API key `{name}` goes in a cookie; custom tools send no cookies"
                            ),
                        );
                        None
                    }
                }
            }
            Some("http") => match scheme["scheme"]
                .as_str()
                .map(str::to_ascii_lowercase)
                .as_deref()
            {
                Some("bearer") => Some(ToolAuth::Bearer),
                Some("basic") => Some(ToolAuth::Basic),
                other => {
                    self.warn_once(
                        &at,
                        format!(
                            "HTTP auth scheme {other:?} is not supported (bearer and basic are)"
                        ),
                    );
                    None
                }
            },
            Some("oauth2") => {
                let flows = &scheme["flows"];
                let scopes = |flow: &Value| -> Vec<String> {
                    flow["scopes"]
                        .as_object()
                        .map(|s| s.keys().cloned().collect())
                        .unwrap_or_default()
                };
                if let Some(flow) = flows.get("authorizationCode") {
                    Some(ToolAuth::OAuth2Code {
                        authorize_url: flow["authorizationUrl"]
                            .as_str()
                            .unwrap_or_default()
                            .to_owned(),
                        token_url: flow["tokenUrl"].as_str().unwrap_or_default().to_owned(),
                        scopes: scopes(flow),
                    })
                } else if let Some(flow) = flows.get("clientCredentials") {
                    Some(ToolAuth::OAuth2Client {
                        token_url: flow["tokenUrl"].as_str().unwrap_or_default().to_owned(),
                        scopes: scopes(flow),
                    })
                } else {
                    let kinds: Vec<&str> = flows
                        .as_object()
                        .map(|f| f.keys().map(String::as_str).collect())
                        .unwrap_or_default();
                    self.warn_once(
                        &at,
                        format!(
                            "OAuth 2.0 flow(s) {} of `{name}` are not supported (authorizationCode and clientCredentials are); operations that allow only this scheme need another auth type on their connection",
                            kinds.join(", ")
                        ),
                    );
                    None
                }
            }
            other => {
                self.warn_once(
                    &at,
                    format!("security scheme type {other:?} of `{name}` is not supported"),
                );
                None
            }
        }
    }

    fn warn_once(&mut self, at: &str, message: String) {
        if !self.warnings.iter().any(|w| w.path == at) {
            self.warn(at, message);
        }
    }

    /// `value` itself, or what its local `$ref` points at (one level; objects that are not
    /// schemas: parameters, request bodies, schemes, path items).
    fn resolve(&mut self, value: &Value, at: &str) -> Value {
        let mut current = value.clone();
        for _ in 0..MAX_REF_DEPTH {
            let Some(r) = current.get("$ref").and_then(Value::as_str) else {
                return current;
            };
            match self.pointer(r) {
                Ok(found) => current = found.clone(),
                Err(message) => {
                    self.warn(at, message);
                    return Value::Object(Map::new());
                }
            }
        }
        self.warn(at, "a chain of `$ref`s is too long; not followed");
        Value::Object(Map::new())
    }

    fn pointer(&self, reference: &str) -> Result<&Value, String> {
        let Some(local) = reference.strip_prefix('#') else {
            return Err(format!(
                "`$ref: {reference}` points outside the document; remote references are not fetched, so it accepts anything"
            ));
        };
        let decoded = percent_decode(local);
        self.doc
            .pointer(&decoded)
            .ok_or_else(|| format!("`$ref: {reference}` points at nothing in the document"))
    }

    /// A JSON Schema made from an OpenAPI schema: local `$ref`s inlined (`stack` holds the
    /// references being expanded, to cut cycles), `nullable` turned into a `null` type,
    /// `xml` and `x-` extensions dropped.
    fn schema(&mut self, value: &Value, at: &str, stack: &mut Vec<String>) -> Value {
        self.nodes += 1;
        if self.nodes > MAX_SCHEMA_NODES {
            if self.nodes == MAX_SCHEMA_NODES + 1 {
                self.warn(
                    at,
                    format!("the schema grows past {MAX_SCHEMA_NODES} nodes once references are inlined; the rest accepts anything"),
                );
            }
            return Value::Object(Map::new());
        }
        match value {
            Value::Object(obj) => {
                if let Some(r) = obj.get("$ref").and_then(Value::as_str) {
                    if stack.iter().any(|s| s == r) {
                        self.warn_once(
                            at,
                            format!("`{r}` refers back to itself; the recursion is cut here and accepts anything"),
                        );
                        return Value::Object(Map::new());
                    }
                    if stack.len() >= MAX_REF_DEPTH {
                        self.warn_once(
                            at,
                            format!("references nest deeper than {MAX_REF_DEPTH}; cut here"),
                        );
                        return Value::Object(Map::new());
                    }
                    let target = match self.pointer(r) {
                        Ok(t) => t.clone(),
                        Err(message) => {
                            self.warn(at, message);
                            return Value::Object(Map::new());
                        }
                    };
                    stack.push(r.to_owned());
                    let out = self.schema(&target, at, stack);
                    stack.pop();
                    return out;
                }
                let mut out = Map::new();
                for (k, v) in obj {
                    if k == "xml" || k.starts_with("x-") || k == "nullable" {
                        continue;
                    }
                    let converted = match k.as_str() {
                        "properties" | "patternProperties" | "$defs" | "definitions" => {
                            match v.as_object() {
                                Some(props) => {
                                    let mut m = Map::new();
                                    for (name, s) in props {
                                        m.insert(
                                            name.clone(),
                                            self.schema(s, &format!("{at}.{k}.{name}"), stack),
                                        );
                                    }
                                    Value::Object(m)
                                }
                                None => v.clone(),
                            }
                        }
                        "items"
                        | "additionalProperties"
                        | "not"
                        | "contains"
                        | "if"
                        | "then"
                        | "else"
                        | "propertyNames"
                        | "unevaluatedProperties"
                        | "unevaluatedItems" => self.schema(v, &format!("{at}.{k}"), stack),
                        "allOf" | "anyOf" | "oneOf" | "prefixItems" => match v.as_array() {
                            Some(list) => Value::Array(
                                list.iter()
                                    .enumerate()
                                    .map(|(i, s)| self.schema(s, &format!("{at}.{k}[{i}]"), stack))
                                    .collect(),
                            ),
                            None => v.clone(),
                        },
                        _ => v.clone(),
                    };
                    out.insert(k.clone(), converted);
                }
                if obj.get("nullable") == Some(&Value::Bool(true)) {
                    match out.get_mut("type") {
                        Some(Value::String(t)) => {
                            let t = std::mem::take(t);
                            out.insert("type".into(), Value::Array(vec![t.into(), "null".into()]));
                        }
                        Some(Value::Array(list)) if !list.contains(&Value::from("null")) => {
                            list.push("null".into());
                        }
                        _ => {}
                    }
                }
                Value::Object(out)
            }
            other => other.clone(),
        }
    }
}

fn is_json(media_type: &str) -> bool {
    let essence = media_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    essence == "application/json" || essence.ends_with("+json")
}

/// `addPet` → `add_pet`, `get /pet/{petId}` → `get_pet_pet_id`: lowercase letters, digits and
/// `_`, starting with a letter, at most [`tool::MAX_NAME_LEN`].
pub fn slug(text: &str) -> String {
    let mut out = String::new();
    let mut prev_lower = false;
    for c in text.chars() {
        if c.is_ascii_uppercase() {
            if prev_lower && !out.ends_with('_') {
                out.push('_');
            }
            out.push(c.to_ascii_lowercase());
            prev_lower = false;
        } else if c.is_ascii_lowercase() || c.is_ascii_digit() {
            out.push(c);
            prev_lower = true;
        } else {
            if !out.is_empty() && !out.ends_with('_') {
                out.push('_');
            }
            prev_lower = false;
        }
    }
    let trimmed = out.trim_matches('_');
    let start = trimmed
        .find(|c: char| c.is_ascii_lowercase())
        .unwrap_or(trimmed.len());
    cut(trimmed[start..].trim_end_matches('_'), tool::MAX_NAME_LEN)
        .trim_end_matches('_')
        .to_owned()
}

fn cut(text: &str, max: usize) -> &str {
    // ASCII only here, so any byte index is a boundary.
    &text[..text.len().min(max)]
}

fn first_line(text: &str) -> String {
    let line = text
        .lines()
        .map(str::trim)
        .find(|l| !l.is_empty())
        .unwrap_or_default();
    if line.chars().count() > 200 {
        let short: String = line.chars().take(199).collect();
        format!("{short}…")
    } else {
        line.to_owned()
    }
}

/// `%7B` → `{`, and JSON Pointer text left as is (`~1` is decoded by `Value::pointer`).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let Some(b) = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
        {
            out.push(b);
            i += 3;
            continue;
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_snake_case() {
        assert_eq!(slug("addPet"), "add_pet");
        assert_eq!(slug("getPetById"), "get_pet_by_id");
        assert_eq!(slug("get /pet/{petId}"), "get_pet_pet_id");
        assert_eq!(
            slug("Swagger Petstore - OpenAPI 3.0"),
            "swagger_petstore_open_api_3_0"
        );
        assert_eq!(slug("123 go"), "go");
    }

    #[test]
    fn percent_escapes_in_refs_are_decoded() {
        assert_eq!(
            percent_decode("/paths/~1pets~1%7Bid%7D"),
            "/paths/~1pets~1{id}"
        );
    }
}
