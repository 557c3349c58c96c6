//! Credentials a connection supplies to an action: how they are written when a connection is
//! created, and how they are applied to a request.
//!
//! A connection's `auth` object splits in two: the **secret** part (keys, tokens, passwords)
//! that the engine seals in its vault, and the **config** part (where a key goes, its header
//! name) that is stored in the clear. A worker opens the secret in memory, rebuilds a
//! [`Credential`] for one call, and drops it; [`Credential::secret_values`] lists what must
//! never appear in a step's output or error. `Debug` never shows a secret.

use std::fmt;

use serde_json::{Map, Value, json};
use zeroize::Zeroizing;

/// Most custom headers one connection may set.
pub const MAX_HEADERS: usize = 16;

/// Why an `auth` object is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("auth: {0}")]
pub struct CredentialError(pub String);

/// Where an API key goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyPlacement {
    /// A request header.
    Header,
    /// A query parameter.
    Query,
}

/// Credentials for one call.
pub enum Credential {
    /// An API key in a header or query parameter.
    ApiKey {
        /// Header or query.
        placement: KeyPlacement,
        /// Header or parameter name.
        name: String,
        /// The key.
        value: Zeroizing<String>,
    },
    /// `Authorization: Bearer <token>`.
    Bearer(Zeroizing<String>),
    /// `Authorization: Basic …`.
    Basic {
        /// User name.
        username: Zeroizing<String>,
        /// Password.
        password: Zeroizing<String>,
    },
    /// Custom headers, each sent as given.
    Headers(Vec<(String, Zeroizing<String>)>),
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Credential::ApiKey {
                placement, name, ..
            } => write!(f, "ApiKey({placement:?} {name}: <redacted>)"),
            Credential::Bearer(_) => f.write_str("Bearer(<redacted>)"),
            Credential::Basic { .. } => f.write_str("Basic(<redacted>)"),
            Credential::Headers(h) => {
                let names: Vec<&str> = h.iter().map(|(n, _)| n.as_str()).collect();
                write!(f, "Headers({names:?}: <redacted>)")
            }
        }
    }
}

/// An `auth` object split into what is stored in the clear and what is sealed.
#[derive(Debug, Clone, PartialEq)]
pub struct AuthParts {
    /// `api_key`, `bearer`, `basic` or `headers`.
    pub auth_type: &'static str,
    /// Stored in the clear: where a key goes and its name, header names.
    pub config: Value,
    /// Sealed by the engine's vault; never returned by any API.
    pub secret: Zeroizing<String>,
}

/// Splits a connection's `auth` object, checking its shape:
///
/// - `{"type": "api_key", "in": "header"|"query", "name": "X-API-Key", "key": "…"}`
/// - `{"type": "bearer", "token": "…"}`
/// - `{"type": "basic", "username": "…", "password": "…"}`
/// - `{"type": "headers", "headers": {"X-Token": "…"}}`
/// - `{"type": "oauth2_client", "token_url": "…", "client_id": "…", "client_secret": "…",
///   "scopes"?: ["…"]}` (client credentials grant; the worker obtains tokens itself)
/// - `{"type": "oauth2_code", "authorize_url": "…", "token_url": "…", "client_id": "…",
///   "client_secret"?: "…", "scopes"?: ["…"]}` (authorization code with PKCE; a person
///   authorizes it through `GET /v1/oauth/{connection}/start`)
/// - `{"type": "service_account", "token_url"?: "…", "client_email": "…", "private_key":
///   "-----BEGIN PRIVATE KEY-----…", "private_key_id"?: "…", "scopes": ["…"], "subject"?: "…"}`,
///   or `{"type": "service_account", "key": {…Google's key file…}, "scopes": ["…"],
///   "subject"?: "…"}` (JWT bearer grant, RFC 7523; `token_url` defaults to Google's; the key
///   is parsed here, so a bad one is refused when the connection is created)
///
/// For the OAuth types the URLs, client id and scopes are clear config (and later the access
/// token's `expires_at`); the client secret, and later the access and refresh tokens, are
/// sealed (see [`OAuthSecret`]). A service account keeps its email, key id, token URL, scopes
/// and subject clear and seals its private key (and later its access token).
pub fn split_auth(auth: &Value) -> Result<AuthParts, CredentialError> {
    let obj = auth
        .as_object()
        .ok_or_else(|| err("must be an object with a `type`"))?;
    let kind = obj.get("type").and_then(Value::as_str).ok_or_else(|| {
        err("`type` is required: api_key, bearer, basic, headers, oauth2_client, oauth2_code or service_account")
    })?;
    let allowed: &[&str] = match kind {
        "api_key" => &["type", "in", "name", "key"],
        "bearer" => &["type", "token"],
        "basic" => &["type", "username", "password"],
        "headers" => &["type", "headers"],
        "oauth2_client" => &["type", "token_url", "client_id", "client_secret", "scopes"],
        "oauth2_code" => &[
            "type",
            "authorize_url",
            "token_url",
            "client_id",
            "client_secret",
            "scopes",
        ],
        "service_account" if obj.contains_key("key") => &["type", "key", "scopes", "subject"],
        "service_account" => &[
            "type",
            "token_url",
            "client_email",
            "private_key",
            "private_key_id",
            "scopes",
            "subject",
        ],
        other => {
            return Err(err(format!(
                "type `{}` is not one of api_key, bearer, basic, headers, oauth2_client, oauth2_code, service_account",
                other.escape_debug()
            )));
        }
    };
    if let Some(extra) = obj.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(err(format!(
            "`{}` is not a field of `{kind}` (fields: {})",
            extra.escape_debug(),
            allowed.join(", ")
        )));
    }
    let text = |field: &str| -> Result<&str, CredentialError> {
        obj.get(field)
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .ok_or_else(|| {
                err(format!(
                    "`{field}` is required and must be a non-empty string"
                ))
            })
    };
    let secret = |v: Value| Zeroizing::new(v.to_string());
    Ok(match kind {
        "api_key" => {
            let placement = text("in")?;
            if placement != "header" && placement != "query" {
                return Err(err("`in` must be `header` or `query`"));
            }
            let name = if placement == "header" {
                header_name(text("name")?)?
            } else {
                query_name(text("name")?)?
            };
            AuthParts {
                auth_type: "api_key",
                config: json!({ "in": placement, "name": name }),
                secret: secret(json!({ "key": header_value(text("key")?, "key")? })),
            }
        }
        "bearer" => AuthParts {
            auth_type: "bearer",
            config: json!({}),
            secret: secret(json!({ "token": header_value(text("token")?, "token")? })),
        },
        "service_account" => service_account(obj)?,
        "basic" => AuthParts {
            auth_type: "basic",
            config: json!({}),
            secret: secret(json!({ "username": text("username")?, "password": text("password")? })),
        },
        "oauth2_client" | "oauth2_code" => {
            let mut config = Map::new();
            if kind == "oauth2_code" {
                config.insert(
                    "authorize_url".into(),
                    Value::String(http_url(text("authorize_url")?, "authorize_url")?),
                );
            }
            config.insert(
                "token_url".into(),
                Value::String(http_url(text("token_url")?, "token_url")?),
            );
            config.insert("client_id".into(), Value::String(text("client_id")?.into()));
            config.insert("scopes".into(), oauth_scopes(obj.get("scopes"))?);
            let client_secret = if kind == "oauth2_client" {
                Some(text("client_secret")?.to_owned())
            } else {
                match obj.get("client_secret") {
                    None | Some(Value::Null) => None,
                    Some(_) => Some(text("client_secret")?.to_owned()),
                }
            };
            AuthParts {
                auth_type: if kind == "oauth2_client" {
                    "oauth2_client"
                } else {
                    "oauth2_code"
                },
                config: Value::Object(config),
                secret: OAuthSecret {
                    client_secret,
                    access_token: None,
                    refresh_token: None,
                    private_key: None,
                }
                .to_json(),
            }
        }
        _ => {
            let headers = obj
                .get("headers")
                .and_then(Value::as_object)
                .filter(|h| !h.is_empty() && h.len() <= MAX_HEADERS)
                .ok_or_else(|| {
                    err(format!(
                        "`headers` must be an object of 1 to {MAX_HEADERS} header names to values"
                    ))
                })?;
            let mut names = Vec::new();
            let mut values = Map::new();
            for (name, value) in headers {
                let name = header_name(name)?;
                let value = value
                    .as_str()
                    .ok_or_else(|| err(format!("header `{name}` must be a string")))?;
                values.insert(
                    name.clone(),
                    Value::String(header_value(value, &name)?.into()),
                );
                names.push(Value::String(name));
            }
            AuthParts {
                auth_type: "headers",
                config: json!({ "names": names }),
                secret: secret(json!({ "headers": values })),
            }
        }
    })
}

/// The parts of a `service_account` auth object (see [`split_auth`]), given its fields as
/// written or as Google's key file names them (`key`).
fn service_account(obj: &Map<String, Value>) -> Result<AuthParts, CredentialError> {
    // Google's key file: its own field names, and fields Switchyard does not use (project id,
    // client id, certificate URLs), which are left alone.
    let (fields, token_field, key_field) = match obj.get("key") {
        Some(Value::Object(key)) => {
            if key.get("type").is_some_and(|t| t != "service_account") {
                return Err(err(
                    "`key` must be a service account's key file (its `type` is `service_account`)",
                ));
            }
            (key, "token_uri", "key.private_key")
        }
        Some(_) => {
            return Err(err(
                "`key` must be the JSON object of a service account's key file",
            ));
        }
        None => (obj, "token_url", "private_key"),
    };
    let named = |field: &str, shown: &str| -> Result<Option<&str>, CredentialError> {
        match fields.get(field) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) if !s.is_empty() && s.len() <= 1024 => Ok(Some(s)),
            Some(_) => Err(err(format!(
                "`{shown}` must be a non-empty string of at most 1024 bytes"
            ))),
        }
    };
    let prefix = if obj.contains_key("key") { "key." } else { "" };
    let required = |field: &str| -> Result<&str, CredentialError> {
        named(field, &format!("{prefix}{field}"))?.ok_or_else(|| {
            err(format!(
                "`{prefix}{field}` is required and must be a non-empty string"
            ))
        })
    };
    let token_url = match named(token_field, &format!("{prefix}{token_field}"))? {
        Some(url) => http_url(url, &format!("{prefix}{token_field}"))?,
        None => crate::service_account::GOOGLE_TOKEN_URL.to_owned(),
    };
    let client_email = required("client_email")?;
    let private_key = fields
        .get("private_key")
        .and_then(Value::as_str)
        .filter(|k| !k.is_empty())
        .ok_or_else(|| {
            err(format!(
                "`{key_field}` is required and must be a PEM string"
            ))
        })?;
    // Parsed now so a bad key is refused at creation; the message never quotes the key.
    crate::service_account::SigningKey::from_pem(private_key).map_err(|e| err(e.to_string()))?;
    let scopes = oauth_scopes(obj.get("scopes"))?;
    if scopes.as_array().is_none_or(Vec::is_empty) {
        return Err(err(
            "`scopes` is required for a service account: the token endpoint grants only the scopes its assertion names",
        ));
    }
    let mut config = Map::new();
    config.insert("token_url".into(), Value::String(token_url));
    config.insert("client_email".into(), Value::String(client_email.into()));
    if let Some(id) = named("private_key_id", &format!("{prefix}private_key_id"))? {
        config.insert("private_key_id".into(), Value::String(id.into()));
    }
    config.insert("scopes".into(), scopes);
    match obj.get("subject") {
        None | Some(Value::Null) => {}
        Some(Value::String(s)) if !s.is_empty() && s.len() <= 320 => {
            config.insert("subject".into(), Value::String(s.clone()));
        }
        Some(_) => {
            return Err(err(
                "`subject` must be the email of the user to act for (at most 320 bytes)",
            ));
        }
    }
    Ok(AuthParts {
        auth_type: "service_account",
        config: Value::Object(config),
        secret: OAuthSecret {
            client_secret: None,
            access_token: None,
            refresh_token: None,
            private_key: Some(private_key.to_owned()),
        }
        .to_json(),
    })
}

/// Most OAuth scopes one connection may ask for.
pub const MAX_OAUTH_SCOPES: usize = 100;

/// An `http` or `https` URL, as written.
fn http_url(text: &str, what: &str) -> Result<String, CredentialError> {
    match reqwest::Url::parse(text) {
        Ok(url) if matches!(url.scheme(), "http" | "https") && url.host().is_some() => {
            Ok(text.to_owned())
        }
        _ => Err(err(format!("`{what}` must be an absolute http(s) URL"))),
    }
}

/// The OAuth scopes to ask the provider for: strings without spaces (the wire form joins them
/// with spaces, RFC 6749 §3.3).
fn oauth_scopes(value: Option<&Value>) -> Result<Value, CredentialError> {
    let bad = || {
        err(format!(
            "`scopes` must be an array of at most {MAX_OAUTH_SCOPES} strings without spaces"
        ))
    };
    let Some(value) = value.filter(|v| !v.is_null()) else {
        return Ok(json!([]));
    };
    let list = value.as_array().ok_or_else(bad)?;
    if list.len() > MAX_OAUTH_SCOPES {
        return Err(bad());
    }
    for scope in list {
        let ok = scope.as_str().is_some_and(|s| {
            !s.is_empty()
                && s.len() <= 256
                && s.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        });
        if !ok {
            return Err(bad());
        }
    }
    Ok(value.clone())
}

/// The sealed part of an OAuth connection: the client secret (or a service account's private
/// key), and once tokens were issued, the access and refresh tokens. `Debug` shows none of them.
#[derive(Default, serde::Serialize, serde::Deserialize)]
pub struct OAuthSecret {
    /// `client_secret`, for a confidential client.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client_secret: Option<String>,
    /// The current access token.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_token: Option<String>,
    /// The current refresh token (replaced when the provider rotates it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// A service account's PKCS#8 PEM private key, which signs its assertions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub private_key: Option<String>,
}

impl fmt::Debug for OAuthSecret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("OAuthSecret")
            .field(
                "client_secret",
                &self.client_secret.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "access_token",
                &self.access_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "refresh_token",
                &self.refresh_token.as_ref().map(|_| "<redacted>"),
            )
            .field(
                "private_key",
                &self.private_key.as_ref().map(|_| "<redacted>"),
            )
            .finish()
    }
}

impl Drop for OAuthSecret {
    fn drop(&mut self) {
        use zeroize::Zeroize as _;
        for s in [
            &mut self.client_secret,
            &mut self.access_token,
            &mut self.refresh_token,
            &mut self.private_key,
        ]
        .into_iter()
        .flatten()
        {
            s.zeroize();
        }
    }
}

impl OAuthSecret {
    /// Reads an opened secret.
    pub fn from_json(secret: &str) -> Result<Self, CredentialError> {
        serde_json::from_str(secret).map_err(|_| err("the stored secret is not readable"))
    }

    /// What is sealed.
    pub fn to_json(&self) -> Zeroizing<String> {
        Zeroizing::new(serde_json::to_string(self).unwrap_or_else(|_| "{}".to_owned()))
    }

    /// The secret to store after a token endpoint issued `tokens`: the client's own secrets
    /// kept, the new access token, and the refresh token the provider sent. When it sent none,
    /// `keep_refresh` keeps the one held now (a provider that does not rotate refresh tokens
    /// leaves the old one valid); a fresh authorization passes `false`, since what it held
    /// before was refused.
    pub fn renewed(&self, tokens: &crate::oauth::Tokens, keep_refresh: bool) -> OAuthSecret {
        OAuthSecret {
            client_secret: self.client_secret.clone(),
            private_key: self.private_key.clone(),
            access_token: Some(tokens.access_token.to_string()),
            refresh_token: tokens
                .refresh_token
                .as_ref()
                .map(|t| t.to_string())
                .or_else(|| keep_refresh.then(|| self.refresh_token.clone()).flatten()),
        }
    }
}

/// The clear part of an OAuth connection, as [`split_auth`] writes it and token refreshes
/// update it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OAuthConfig {
    /// The authorize endpoint (`oauth2_code` only).
    pub authorize_url: Option<String>,
    /// The token endpoint.
    pub token_url: String,
    /// `client_id`; for a service account, its `client_email` (the assertion's issuer).
    pub client_id: String,
    /// Scopes to ask for.
    pub scopes: Vec<String>,
    /// A service account's key id (the assertion's `kid`).
    pub private_key_id: Option<String>,
    /// The user a service account acts for (the assertion's `sub`; domain-wide delegation).
    pub subject: Option<String>,
    /// When the current access token expires, if one was issued with an expiry.
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
}

impl OAuthConfig {
    /// Reads a connection's clear config.
    pub fn from_config(config: &Value) -> Result<Self, CredentialError> {
        let text = |field: &str| {
            config[field]
                .as_str()
                .map(str::to_owned)
                .ok_or_else(|| err(format!("the stored config has no `{field}`")))
        };
        Ok(OAuthConfig {
            authorize_url: config["authorize_url"].as_str().map(str::to_owned),
            token_url: text("token_url")?,
            client_id: text("client_id").or_else(|_| text("client_email"))?,
            scopes: config["scopes"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(str::to_owned)
                        .collect()
                })
                .unwrap_or_default(),
            private_key_id: config["private_key_id"].as_str().map(str::to_owned),
            subject: config["subject"].as_str().map(str::to_owned),
            expires_at: config["expires_at"]
                .as_str()
                .and_then(|s| chrono::DateTime::parse_from_rfc3339(s).ok())
                .map(|t| t.with_timezone(&chrono::Utc)),
        })
    }

    /// The config to store: `config` with `expires_at` set (or removed).
    pub fn with_expiry(config: &Value, expires_at: Option<chrono::DateTime<chrono::Utc>>) -> Value {
        let mut config = config.clone();
        if let Some(map) = config.as_object_mut() {
            match expires_at {
                Some(at) => {
                    map.insert(
                        "expires_at".into(),
                        Value::String(at.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)),
                    );
                }
                None => {
                    map.remove("expires_at");
                }
            }
        }
        config
    }
}

fn err(m: impl Into<String>) -> CredentialError {
    CredentialError(m.into())
}

fn header_name(name: &str) -> Result<String, CredentialError> {
    reqwest::header::HeaderName::from_bytes(name.as_bytes())
        .map(|n| n.as_str().to_owned())
        .map_err(|_| {
            err(format!(
                "`{}` is not a valid header name",
                name.escape_debug()
            ))
        })
}

/// A query parameter's name, kept as written (query names are case-sensitive).
fn query_name(name: &str) -> Result<String, CredentialError> {
    let ok = name.len() <= 128
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.~[]".contains(&b));
    if ok {
        Ok(name.to_owned())
    } else {
        Err(err(format!(
            "`{}` is not a valid query parameter name",
            name.escape_debug()
        )))
    }
}

fn header_value<'a>(value: &'a str, what: &str) -> Result<&'a str, CredentialError> {
    // Checked without quoting the value: it is a secret.
    if reqwest::header::HeaderValue::from_str(value).is_ok() {
        Ok(value)
    } else {
        Err(err(format!(
            "`{what}` holds characters a request header cannot carry"
        )))
    }
}

/// The sealed part, as [`split_auth`] writes it.
#[derive(serde::Deserialize)]
struct Stored {
    key: Option<String>,
    token: Option<String>,
    username: Option<String>,
    password: Option<String>,
    headers: Option<std::collections::BTreeMap<String, String>>,
    access_token: Option<String>,
}

impl Credential {
    /// Rebuilds the credential from a connection's stored parts: its type, its clear config and
    /// its opened secret (the JSON [`split_auth`] produced).
    pub fn from_parts(
        auth_type: &str,
        config: &Value,
        secret: &str,
    ) -> Result<Credential, CredentialError> {
        // Strings move into `Zeroizing` as they are; nothing is copied.
        let stored: Stored =
            serde_json::from_str(secret).map_err(|_| err("the stored secret is not readable"))?;
        let field = |value: Option<String>, name: &str| {
            value
                .map(Zeroizing::new)
                .ok_or_else(|| err(format!("the stored secret has no `{name}`")))
        };
        Ok(match auth_type {
            "api_key" => Credential::ApiKey {
                placement: if config["in"] == "query" {
                    KeyPlacement::Query
                } else {
                    KeyPlacement::Header
                },
                name: config["name"].as_str().unwrap_or("x-api-key").to_owned(),
                value: field(stored.key, "key")?,
            },
            "bearer" => Credential::Bearer(field(stored.token, "token")?),
            // The worker refreshes the token before it rebuilds the credential.
            "oauth2_client" | "oauth2_code" | "service_account" => Credential::Bearer(
                stored
                    .access_token
                    .map(Zeroizing::new)
                    .ok_or_else(|| err("the connection holds no access token yet"))?,
            ),
            "basic" => Credential::Basic {
                username: field(stored.username, "username")?,
                password: field(stored.password, "password")?,
            },
            "headers" => Credential::Headers(
                stored
                    .headers
                    .unwrap_or_default()
                    .into_iter()
                    .map(|(k, v)| (k, Zeroizing::new(v)))
                    .collect(),
            ),
            other => return Err(err(format!("auth type `{other}` cannot be applied"))),
        })
    }

    /// Adds a query-parameter key to the URL (before the request is built).
    pub fn apply_to_url(&self, url: &mut reqwest::Url) {
        if let Credential::ApiKey {
            placement: KeyPlacement::Query,
            name,
            value,
        } = self
        {
            url.query_pairs_mut().append_pair(name, value);
        }
    }

    /// Adds the credential's headers to a request.
    pub fn apply(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match self {
            Credential::ApiKey {
                placement: KeyPlacement::Header,
                name,
                value,
            } => req.header(name.as_str(), value.as_str()),
            Credential::ApiKey { .. } => req,
            Credential::Bearer(token) => req.bearer_auth(token.as_str()),
            Credential::Basic { username, password } => {
                req.basic_auth(username.as_str(), Some(password.as_str()))
            }
            Credential::Headers(headers) => headers
                .iter()
                .fold(req, |r, (n, v)| r.header(n.as_str(), v.as_str())),
        }
    }

    /// Header names this credential sets, so a step's own headers cannot replace them.
    pub fn header_names(&self) -> Vec<String> {
        match self {
            Credential::ApiKey {
                placement: KeyPlacement::Header,
                name,
                ..
            } => vec![name.to_ascii_lowercase()],
            Credential::ApiKey { .. } => Vec::new(),
            Credential::Bearer(_) | Credential::Basic { .. } => vec!["authorization".into()],
            Credential::Headers(h) => h.iter().map(|(n, _)| n.to_ascii_lowercase()).collect(),
        }
    }

    /// Every secret string this credential holds, and the forms it takes on the wire, so
    /// outputs and errors can be scrubbed of them (a provider may echo a request back).
    pub fn secret_values(&self) -> Vec<Zeroizing<String>> {
        use base64::Engine as _;
        match self {
            Credential::ApiKey { value, .. } => vec![value.clone()],
            Credential::Bearer(token) => vec![token.clone()],
            Credential::Basic { username, password } => {
                let pair = format!("{}:{}", username.as_str(), password.as_str());
                vec![
                    password.clone(),
                    Zeroizing::new(base64::engine::general_purpose::STANDARD.encode(pair)),
                ]
            }
            Credential::Headers(h) => h.iter().map(|(_, v)| v.clone()).collect(),
        }
    }
}

/// Replaces every occurrence of each secret in every string of `value` with `[redacted]`.
pub fn scrub(value: &mut Value, secrets: &[Zeroizing<String>]) {
    if secrets.is_empty() {
        return;
    }
    match value {
        Value::String(s) => {
            for secret in secrets.iter().filter(|s| s.len() >= 4) {
                if s.contains(secret.as_str()) {
                    *s = s.replace(secret.as_str(), "[redacted]");
                }
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| scrub(v, secrets)),
        Value::Object(map) => map.values_mut().for_each(|v| scrub(v, secrets)),
        _ => {}
    }
}

/// [`scrub`] for a plain string.
pub fn scrub_text(text: &str, secrets: &[Zeroizing<String>]) -> String {
    let mut v = Value::String(text.to_owned());
    scrub(&mut v, secrets);
    match v {
        Value::String(s) => s,
        _ => String::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn roundtrip(auth: Value) -> Credential {
        let parts = split_auth(&auth).unwrap();
        assert!(
            !parts.config.to_string().contains("s3cr3t-value"),
            "secrets stay out of the clear config: {}",
            parts.config
        );
        Credential::from_parts(parts.auth_type, &parts.config, &parts.secret).unwrap()
    }

    #[test]
    fn each_auth_type_splits_and_rebuilds() {
        let c = roundtrip(
            json!({ "type": "api_key", "in": "query", "name": "apiKey", "key": "s3cr3t-value" }),
        );
        assert!(
            matches!(c, Credential::ApiKey { placement: KeyPlacement::Query, ref name, .. } if name == "apiKey")
        );
        let c = roundtrip(json!({ "type": "bearer", "token": "s3cr3t-value" }));
        assert_eq!(c.header_names(), ["authorization"]);
        let c =
            roundtrip(json!({ "type": "basic", "username": "ada", "password": "s3cr3t-value" }));
        assert_eq!(c.secret_values().len(), 2);
        let c = roundtrip(json!({ "type": "headers", "headers": { "X-Token": "s3cr3t-value" } }));
        assert_eq!(c.header_names(), ["x-token"]);
        assert!(!format!("{c:?}").contains("s3cr3t"), "{c:?}");
    }

    #[test]
    fn oauth_auth_keeps_urls_and_client_id_clear_and_seals_the_client_secret() {
        let parts = split_auth(&json!({
            "type": "oauth2_code",
            "authorize_url": "https://idp.example/authorize",
            "token_url": "https://idp.example/token",
            "client_id": "switchyard",
            "client_secret": "s3cr3t-value",
            "scopes": ["contacts.read", "offline_access"],
        }))
        .unwrap();
        assert_eq!(parts.auth_type, "oauth2_code");
        assert_eq!(parts.config["client_id"], "switchyard");
        assert_eq!(parts.config["scopes"][1], "offline_access");
        assert!(!parts.config.to_string().contains("s3cr3t"));
        let secret = OAuthSecret::from_json(&parts.secret).unwrap();
        assert_eq!(secret.client_secret.as_deref(), Some("s3cr3t-value"));
        assert!(!format!("{secret:?}").contains("s3cr3t"));
        // Not usable until a person authorizes it.
        assert!(Credential::from_parts(parts.auth_type, &parts.config, &parts.secret).is_err());
        let authorized = OAuthSecret {
            access_token: Some("at-s3cr3t".into()),
            client_secret: secret.client_secret.clone(),
            refresh_token: None,
            private_key: None,
        };
        let c =
            Credential::from_parts("oauth2_code", &parts.config, &authorized.to_json()).unwrap();
        assert_eq!(c.header_names(), ["authorization"]);
        let at = chrono::DateTime::parse_from_rfc3339("2030-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&chrono::Utc);
        let config = OAuthConfig::with_expiry(&parts.config, Some(at));
        let read = OAuthConfig::from_config(&config).unwrap();
        assert_eq!(read.expires_at, Some(at));
        assert_eq!(
            read.authorize_url.as_deref(),
            Some("https://idp.example/authorize")
        );
        let public = split_auth(&json!({
            "type": "oauth2_code",
            "authorize_url": "https://idp.example/authorize",
            "token_url": "https://idp.example/token",
            "client_id": "switchyard",
        }))
        .unwrap();
        assert_eq!(public.config["scopes"], json!([]));
        assert!(
            OAuthSecret::from_json(&public.secret)
                .unwrap()
                .client_secret
                .is_none()
        );
    }

    #[test]
    fn bad_auth_objects_say_what_is_wrong_without_quoting_secrets() {
        for (auth, expect) in [
            (json!("token"), "object"),
            (json!({ "token": "x" }), "`type` is required"),
            (json!({ "type": "oauth" }), "not one of"),
            (
                json!({ "type": "oauth2_client", "token_url": "ftp://x/t", "client_id": "c", "client_secret": "s3cr3t" }),
                "`token_url` must be an absolute http(s) URL",
            ),
            (
                json!({ "type": "oauth2_client", "token_url": "https://x/t", "client_id": "c" }),
                "`client_secret` is required",
            ),
            (
                json!({ "type": "oauth2_code", "token_url": "https://x/t", "client_id": "c" }),
                "`authorize_url` is required",
            ),
            (
                json!({ "type": "oauth2_code", "authorize_url": "https://x/a", "token_url": "https://x/t", "client_id": "c", "scopes": ["a b"] }),
                "`scopes` must be",
            ),
            (json!({ "type": "bearer" }), "`token` is required"),
            (
                json!({ "type": "bearer", "token": "x", "extra": 1 }),
                "`extra` is not a field",
            ),
            (
                json!({ "type": "api_key", "in": "body", "name": "k", "key": "x" }),
                "`in` must be",
            ),
            (
                json!({ "type": "api_key", "in": "header", "name": "bad name", "key": "x" }),
                "not a valid header name",
            ),
            (
                json!({ "type": "bearer", "token": "line\nbreak-s3cr3t" }),
                "cannot carry",
            ),
            (json!({ "type": "headers", "headers": {} }), "1 to 16"),
        ] {
            let e = split_auth(&auth).unwrap_err().to_string();
            assert!(e.contains(expect), "{auth}: {e}");
            assert!(!e.contains("s3cr3t"), "{e}");
        }
    }

    /// A throwaway 2048-bit RSA key made for these tests only; it signs nothing real.
    const TEST_KEY: &str = include_str!("../../tests/fixtures/service-account-test-key.pem");

    #[test]
    fn a_service_account_keeps_its_identity_clear_and_seals_its_key() {
        let parts = split_auth(&json!({
            "type": "service_account",
            "client_email": "robot@project.iam.gserviceaccount.com",
            "private_key": TEST_KEY,
            "private_key_id": "k-1",
            "scopes": ["https://www.googleapis.com/auth/spreadsheets"],
            "subject": "ada@example.com",
        }))
        .unwrap();
        assert_eq!(parts.auth_type, "service_account");
        assert_eq!(
            parts.config,
            json!({
                "token_url": "https://oauth2.googleapis.com/token",
                "client_email": "robot@project.iam.gserviceaccount.com",
                "private_key_id": "k-1",
                "scopes": ["https://www.googleapis.com/auth/spreadsheets"],
                "subject": "ada@example.com",
            })
        );
        let secret = OAuthSecret::from_json(&parts.secret).unwrap();
        assert_eq!(secret.private_key.as_deref(), Some(TEST_KEY));
        assert!(!format!("{secret:?}").contains("PRIVATE KEY"), "{secret:?}");
        let config = OAuthConfig::from_config(&parts.config).unwrap();
        assert_eq!(config.client_id, "robot@project.iam.gserviceaccount.com");
        assert_eq!(config.private_key_id.as_deref(), Some("k-1"));
        assert_eq!(config.subject.as_deref(), Some("ada@example.com"));
        // No token until the worker signs its first assertion.
        assert!(Credential::from_parts(parts.auth_type, &parts.config, &parts.secret).is_err());

        // Google's key file as it is handed out, unused fields and all.
        let file = json!({
            "type": "service_account",
            "project_id": "project",
            "private_key_id": "k-2",
            "private_key": TEST_KEY,
            "client_email": "robot@project.iam.gserviceaccount.com",
            "client_id": "1234567890",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": "https://oauth2.example/token",
            "auth_provider_x509_cert_url": "https://www.googleapis.com/oauth2/v1/certs",
            "client_x509_cert_url": "https://www.googleapis.com/robot/v1/metadata/x509/robot",
            "universe_domain": "googleapis.com",
        });
        let parts = split_auth(&json!({
            "type": "service_account", "key": file, "scopes": ["drive.file"],
        }))
        .unwrap();
        assert_eq!(
            parts.config,
            json!({
                "token_url": "https://oauth2.example/token",
                "client_email": "robot@project.iam.gserviceaccount.com",
                "private_key_id": "k-2",
                "scopes": ["drive.file"],
            })
        );
        assert_eq!(
            OAuthSecret::from_json(&parts.secret)
                .unwrap()
                .private_key
                .as_deref(),
            Some(TEST_KEY)
        );
    }

    #[test]
    fn a_bad_service_account_is_refused_without_quoting_its_key() {
        let pkcs1 = TEST_KEY.replace("PRIVATE KEY", "RSA PRIVATE KEY");
        let broken = TEST_KEY.replacen('M', "%", 1);
        let sa = |key: &str| json!({ "type": "service_account", "client_email": "r@p.example", "private_key": key, "scopes": ["s"] });
        for (auth, expect) in [
            (sa("not a key"), "is not a PEM block"),
            (sa(&pkcs1), "`RSA PRIVATE KEY` (PKCS#1)"),
            (sa(&broken), "not valid base64"),
            (
                json!({ "type": "service_account", "client_email": "r@p.example", "private_key": TEST_KEY }),
                "`scopes` is required",
            ),
            (
                json!({ "type": "service_account", "private_key": TEST_KEY, "scopes": ["s"] }),
                "`client_email` is required",
            ),
            (
                json!({ "type": "service_account", "key": { "private_key": TEST_KEY }, "scopes": ["s"] }),
                "`key.client_email` is required",
            ),
            (
                json!({ "type": "service_account", "key": { "client_email": "r@p.example", "private_key": &broken }, "scopes": ["s"] }),
                "not valid base64",
            ),
            (
                json!({ "type": "service_account", "key": { "type": "authorized_user" }, "scopes": ["s"] }),
                "service account's key file",
            ),
            (
                json!({ "type": "service_account", "key": "{}", "scopes": ["s"] }),
                "JSON object",
            ),
            (
                json!({ "type": "service_account", "key": {}, "client_email": "r@p.example", "scopes": ["s"] }),
                "`client_email` is not a field",
            ),
            (
                json!({ "type": "service_account", "token_url": "file:///t", "client_email": "r@p.example", "private_key": TEST_KEY, "scopes": ["s"] }),
                "`token_url` must be an absolute http(s) URL",
            ),
        ] {
            let e = split_auth(&auth).unwrap_err().to_string();
            assert!(e.contains(expect), "{e}");
            for line in TEST_KEY.lines().filter(|l| !l.starts_with("-----")) {
                assert!(!e.contains(&line[..12]), "quotes the key: {e}");
            }
        }
    }

    #[test]
    fn scrubbing_replaces_secrets_and_their_wire_forms() {
        let c =
            roundtrip(json!({ "type": "basic", "username": "ada", "password": "s3cr3t-value" }));
        let mut out = json!({
            "echo": { "authorization": "Basic YWRhOnMzY3IzdC12YWx1ZQ==", "note": "pw s3cr3t-value here" },
            "list": ["s3cr3t-value"],
        });
        scrub(&mut out, &c.secret_values());
        assert!(!out.to_string().contains("s3cr3t"), "{out}");
        assert!(
            !out.to_string().contains("YWRhOnMzY3IzdC12YWx1ZQ=="),
            "{out}"
        );
    }
}
