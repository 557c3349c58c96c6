//! Connections: a workspace's accounts on external systems, created by an admin, referenced by
//! name from definitions, used by workers by id.
//!
//! The `auth` object given at creation is split ([`connectors::credential::split_auth`]): its
//! secret part is sealed by the vault, bound to the workspace and the connection's id, and
//! never returned by any API; its clear part (where a key goes, header names) is kept beside
//! it. Rotating replaces the sealed part; revoking erases it and marks the connection
//! `revoked`, so the next step that uses it fails `connection_revoked` before any request.
//! An `oauth2_code` connection starts `pending` and becomes `active` through the flow in
//! [`crate::oauth`]; a worker that meets `invalid_grant` marks it `needs_reauth`.

use chrono::Utc;
use connectors::Registry;
use schemas::db::entities::connection::{self, ConnectionStatus};
use schemas::definition::Workflow;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Set,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::vault::{Keyring, VaultError};

/// Most scopes one connection may list.
pub const MAX_SCOPES: usize = 100;

/// Why a connection operation failed.
#[derive(Debug, thiserror::Error)]
pub enum ConnectionError {
    /// The database said no.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// Sealing failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// No master key is configured.
    #[error(
        "no master key is configured (set SWITCHYARD_MASTER_KEY or --master-key-file), so credentials cannot be stored"
    )]
    NoKeyring,
    /// The request is malformed; the message says where.
    #[error("{0}")]
    Invalid(String),
    /// No connection has this name (in this workspace).
    #[error("connection `{0}` does not exist")]
    NotFound(String),
    /// A connection with this name exists.
    #[error(
        "connection `{0}` already exists; rotate its credentials with PUT /v1/connections/{0}/credentials"
    )]
    Exists(String),
}

/// A request to create a connection.
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewConnection {
    /// Name definitions refer to.
    pub name: String,
    /// Connector, e.g. `http`.
    pub connector: String,
    /// The `auth` object (its shape depends on `type`).
    pub auth: Value,
    /// Scopes granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Base URL replacing the connector's default.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Request budget replacing the connector's default.
    #[serde(default)]
    pub rate_limit: Option<Value>,
}

/// A connection's settings: `base_url` and `rate_limit`, each `null` for the connector's
/// default.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// Base URL replacing the connector's default.
    #[serde(default)]
    pub base_url: Option<String>,
    /// Request budget replacing the connector's default.
    #[serde(default)]
    pub rate_limit: Option<Value>,
}

/// Longest base URL accepted.
const MAX_BASE_URL: usize = 2_048;

/// Checks settings, returning them as stored: the base URL normalised, the budget as JSON.
fn check_settings(
    base_url: Option<String>,
    rate_limit: Option<Value>,
) -> Result<(Option<String>, Option<Value>), ConnectionError> {
    let base_url = match base_url {
        None => None,
        Some(text) => {
            let invalid = |why: &str| ConnectionError::Invalid(format!("`base_url`: {why}"));
            if text.len() > MAX_BASE_URL {
                return Err(invalid("longer than 2048 characters"));
            }
            let url = reqwest::Url::parse(text.trim())
                .map_err(|e| invalid(&format!("not a URL ({e})")))?;
            if !matches!(url.scheme(), "http" | "https") || !url.has_host() {
                return Err(invalid("must be an absolute http or https URL"));
            }
            if !url.username().is_empty() || url.password().is_some() {
                return Err(invalid(
                    "must not hold credentials; put them in `auth`, where they are sealed",
                ));
            }
            if url.query().is_some() || url.fragment().is_some() {
                return Err(invalid("must not have a query or fragment"));
            }
            Some(url.to_string())
        }
    };
    let rate_limit = match rate_limit {
        None | Some(Value::Null) => None,
        Some(value) => {
            let limit: connectors::RateLimit = serde_json::from_value(value).map_err(|e| {
                ConnectionError::Invalid(format!(
                    "`rate_limit`: {e}; expected {{\"requests\": n, \"per_seconds\": n, \"burst\"?: n}}"
                ))
            })?;
            limit
                .check()
                .map_err(|e| ConnectionError::Invalid(format!("`rate_limit`: {e}")))?;
            Some(json!(limit))
        }
    };
    Ok((base_url, rate_limit))
}

/// Replaces a connection's settings.
pub async fn set_settings<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    name: &str,
    settings: Settings,
) -> Result<connection::Model, ConnectionError> {
    let (base_url, rate_limit) = check_settings(settings.base_url, settings.rate_limit)?;
    let row = find(db, workspace_id, name)
        .await?
        .ok_or_else(|| ConnectionError::NotFound(name.to_owned()))?;
    let mut active: connection::ActiveModel = row.into();
    active.base_url = Set(base_url);
    active.rate_limit = Set(rate_limit);
    active.updated_at = Set(Utc::now());
    Ok(active.update(db).await?)
}

/// The API view of a connection: never a secret.
/// `used_by` are the workflows whose latest version names it; `agents` the agents the
/// workspace's policy lets use it.
pub fn view(row: &connection::Model, used_by: &[String], agents: &[String]) -> Value {
    json!({
        "name": row.name,
        "connector": row.connector,
        "auth_type": row.auth_type,
        "auth": row.config,
        "status": row.status,
        "scopes": row.scopes,
        "base_url": row.base_url,
        "rate_limit": row.rate_limit,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "last_used_at": row.last_used_at,
        "used_by": used_by,
        "agents": agents,
    })
}

fn sealed_parts(
    keyring: &Keyring,
    workspace_id: Uuid,
    id: Uuid,
    secret: &str,
) -> Result<(i32, Vec<u8>, Vec<u8>), ConnectionError> {
    let sealed = keyring.seal(
        &workers::connection_aad(workspace_id, id),
        secret.as_bytes(),
    )?;
    Ok((
        i32::try_from(sealed.key_version).unwrap_or(i32::MAX),
        sealed.wrapped_key,
        sealed.ciphertext,
    ))
}

/// Creates a connection.
pub async fn create<C: ConnectionTrait>(
    db: &C,
    keyring: Option<&Keyring>,
    registry: &Registry,
    workspace_id: Uuid,
    new: NewConnection,
) -> Result<connection::Model, ConnectionError> {
    if !schemas::validate::is_connection_name(&new.name) {
        return Err(ConnectionError::Invalid(format!(
            "`name`: `{}` must be 1 to 64 lowercase letters, digits, `-` and `_`, starting with a letter or digit",
            new.name.escape_debug()
        )));
    }
    let manifest = registry.get(&new.connector).ok_or_else(|| {
        ConnectionError::Invalid(format!(
            "`connector`: there is no connector `{}`",
            new.connector.escape_debug()
        ))
    })?;
    let parts = connectors::credential::split_auth(&new.auth)
        .map_err(|e| ConnectionError::Invalid(e.to_string()))?;
    let allowed = manifest
        .auth
        .iter()
        .filter_map(|a| serde_json::to_value(a).ok())
        .any(|a| a == parts.auth_type);
    if !allowed {
        return Err(ConnectionError::Invalid(format!(
            "auth: connector `{}` does not take `{}` credentials",
            new.connector, parts.auth_type
        )));
    }
    check_scopes(&new.scopes)?;
    let (base_url, rate_limit) = check_settings(new.base_url, new.rate_limit)?;
    let keyring = keyring.ok_or(ConnectionError::NoKeyring)?;
    if find(db, workspace_id, &new.name).await?.is_some() {
        return Err(ConnectionError::Exists(new.name));
    }
    let id = Uuid::now_v7();
    let (version, wrapped_key, ciphertext) =
        sealed_parts(keyring, workspace_id, id, &parts.secret)?;
    let now = Utc::now();
    let row = connection::ActiveModel {
        id: Set(id),
        workspace_id: Set(workspace_id),
        name: Set(new.name.clone()),
        connector: Set(new.connector),
        auth_type: Set(parts.auth_type.to_owned()),
        status: Set(initial_status(parts.auth_type)),
        scopes: Set(json!(new.scopes)),
        config: Set(parts.config),
        key_version: Set(Some(version)),
        wrapped_key: Set(Some(wrapped_key)),
        ciphertext: Set(Some(ciphertext)),
        created_at: Set(now),
        updated_at: Set(now),
        last_used_at: Set(None),
        base_url: Set(base_url),
        rate_limit: Set(rate_limit),
    };
    // Two creators racing on one name: the unique index lets one in.
    row.insert(db).await.map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => ConnectionError::Exists(new.name),
        _ => ConnectionError::Db(e),
    })
}

/// The status of a connection given new credentials: `pending` for `oauth2_code`, whose
/// tokens come only once a person authorizes it (`GET /v1/oauth/{name}/start`); `active`
/// otherwise (an `oauth2_client` connection gets its tokens from the first step that uses it).
fn initial_status(auth_type: &str) -> ConnectionStatus {
    if auth_type == "oauth2_code" {
        ConnectionStatus::Pending
    } else {
        ConnectionStatus::Active
    }
}

fn check_scopes(scopes: &[String]) -> Result<(), ConnectionError> {
    if scopes.len() > MAX_SCOPES
        || scopes
            .iter()
            .any(|s| s.is_empty() || s.len() > 256 || s.chars().any(char::is_whitespace))
    {
        return Err(ConnectionError::Invalid(format!(
            "`scopes`: at most {MAX_SCOPES} scopes, each 1 to 256 characters without spaces"
        )));
    }
    Ok(())
}

/// A connection by name.
pub async fn find<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    name: &str,
) -> Result<Option<connection::Model>, ConnectionError> {
    Ok(connection::Entity::find()
        .filter(connection::Column::WorkspaceId.eq(workspace_id))
        .filter(connection::Column::Name.eq(name))
        .one(db)
        .await?)
}

/// Every connection of a workspace, by name.
pub async fn list(
    db: &DatabaseConnection,
    workspace_id: Uuid,
) -> Result<Vec<connection::Model>, ConnectionError> {
    Ok(connection::Entity::find()
        .filter(connection::Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(connection::Column::Name)
        .all(db)
        .await?)
}

/// Replaces a connection's credentials (same auth type or another the connector takes); no
/// workflow changes. A revoked connection becomes active again (or `pending`, for
/// `oauth2_code`: its tokens are gone with the old secret until a person authorizes it).
pub async fn rotate<C: ConnectionTrait>(
    db: &C,
    keyring: Option<&Keyring>,
    registry: &Registry,
    workspace_id: Uuid,
    name: &str,
    auth: &Value,
) -> Result<connection::Model, ConnectionError> {
    let row = find(db, workspace_id, name)
        .await?
        .ok_or_else(|| ConnectionError::NotFound(name.to_owned()))?;
    let parts = connectors::credential::split_auth(auth)
        .map_err(|e| ConnectionError::Invalid(e.to_string()))?;
    let allowed = registry.get(&row.connector).is_some_and(|m| {
        m.auth
            .iter()
            .filter_map(|a| serde_json::to_value(a).ok())
            .any(|a| a == parts.auth_type)
    });
    if !allowed {
        return Err(ConnectionError::Invalid(format!(
            "auth: connector `{}` does not take `{}` credentials",
            row.connector, parts.auth_type
        )));
    }
    let keyring = keyring.ok_or(ConnectionError::NoKeyring)?;
    let (version, wrapped_key, ciphertext) =
        sealed_parts(keyring, workspace_id, row.id, &parts.secret)?;
    let mut active: connection::ActiveModel = row.into();
    active.auth_type = Set(parts.auth_type.to_owned());
    active.config = Set(parts.config);
    active.status = Set(initial_status(parts.auth_type));
    active.key_version = Set(Some(version));
    active.wrapped_key = Set(Some(wrapped_key));
    active.ciphertext = Set(Some(ciphertext));
    active.updated_at = Set(Utc::now());
    Ok(active.update(db).await?)
}

/// Replaces the scopes a connection was granted. Steps whose actions need a scope no longer
/// granted fail `insufficient_scope` before any request; workflows are not re-checked.
pub async fn set_scopes<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    name: &str,
    scopes: Vec<String>,
) -> Result<connection::Model, ConnectionError> {
    check_scopes(&scopes)?;
    let row = find(db, workspace_id, name)
        .await?
        .ok_or_else(|| ConnectionError::NotFound(name.to_owned()))?;
    let mut active: connection::ActiveModel = row.into();
    active.scopes = Set(json!(scopes));
    active.updated_at = Set(Utc::now());
    Ok(active.update(db).await?)
}

/// Disconnects: erases the credentials and marks the connection revoked. Workflows keep
/// naming it; their steps fail `connection_revoked` until its credentials are set again.
pub async fn revoke<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    name: &str,
) -> Result<connection::Model, ConnectionError> {
    let row = find(db, workspace_id, name)
        .await?
        .ok_or_else(|| ConnectionError::NotFound(name.to_owned()))?;
    let mut active: connection::ActiveModel = row.into();
    active.status = Set(ConnectionStatus::Revoked);
    active.key_version = Set(None);
    active.wrapped_key = Set(None);
    active.ciphertext = Set(None);
    active.updated_at = Set(Utc::now());
    Ok(active.update(db).await?)
}

/// Names of the workflows whose latest version has a step naming `connection`.
pub fn used_by<'a>(
    workflows: impl IntoIterator<Item = &'a (String, i32, std::sync::Arc<Workflow>)>,
    connection: &str,
) -> Vec<String> {
    workflows
        .into_iter()
        .filter(|(_, _, w)| {
            w.steps
                .iter()
                .any(|s| s.connection.as_deref() == Some(connection))
        })
        .map(|(name, _, _)| name.clone())
        .collect()
}

/// Checks a definition's connections before it is stored: each named connection exists in the
/// workspace and holds the scopes its actions declare. Returns one message per problem, with
/// the step's path.
pub async fn check_workflow(
    db: &DatabaseConnection,
    registry: &Registry,
    workspace_id: Uuid,
    workflow: &Workflow,
) -> Result<Vec<(String, String)>, ConnectionError> {
    let mut problems = Vec::new();
    let named: Vec<&str> = workflow
        .steps
        .iter()
        .filter_map(|s| s.connection.as_deref())
        .collect();
    if named.is_empty() {
        return Ok(problems);
    }
    let rows = connection::Entity::find()
        .filter(connection::Column::WorkspaceId.eq(workspace_id))
        .filter(connection::Column::Name.is_in(named.iter().copied()))
        .all(db)
        .await?;
    for (i, step) in workflow.steps.iter().enumerate() {
        let Some(name) = step.connection.as_deref() else {
            continue;
        };
        let path = format!("steps[{i}].connection");
        let Some(row) = rows.iter().find(|r| r.name == name) else {
            problems.push((
                path,
                format!("connection `{name}` does not exist in this workspace; create it first (POST /v1/connections)"),
            ));
            continue;
        };
        let action = step.action.as_deref().unwrap_or_default();
        let Some((connector, action_name)) = action.split_once('.') else {
            continue;
        };
        if row.connector != connector {
            problems.push((
                path,
                format!(
                    "connection `{name}` is a `{}` connection, not `{connector}`",
                    row.connector
                ),
            ));
            continue;
        }
        let granted: Vec<&str> = row
            .scopes
            .as_array()
            .map(|a| a.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if let Some(needed) = registry
            .get(connector)
            .and_then(|m| m.find_action(action_name))
            .map(|a| a.scopes.clone())
        {
            let missing: Vec<&str> = needed
                .iter()
                .map(String::as_str)
                .filter(|s| !granted.contains(s))
                .collect();
            if !missing.is_empty() {
                problems.push((
                    path,
                    format!(
                        "`{action}` needs scope(s) {} that connection `{name}` was not granted",
                        missing.join(", ")
                    ),
                ));
            }
        }
    }
    Ok(problems)
}

/// Auth types whose secret is an OAuth token set rather than a static credential.
const OAUTH_TYPES: [&str; 3] = ["oauth2_code", "oauth2_client", "service_account"];

/// What `POST /v1/connections/{name}/test` found: each check in order, and the row as it is
/// now (its status is `error` if its credentials could not be opened).
#[derive(Debug)]
pub struct Tested {
    /// Whether every check passed.
    pub ok: bool,
    /// `{check, ok, detail}` for each check made.
    pub checks: Vec<Value>,
    /// The connection after the test.
    pub row: connection::Model,
}

/// Tests a connection without running a workflow: its status allows use, its credentials open
/// with this engine's master keys (and rebuild into what a request would carry), an OAuth
/// token's expiry, and — when `probe` is given — a `GET` of that URL with the credential
/// applied, answered 2xx. Credentials that cannot be opened mark the connection `error`.
pub async fn test(
    db: &DatabaseConnection,
    keyring: Option<&Keyring>,
    http: &connectors::http::Client,
    registry: &Registry,
    workspace_id: Uuid,
    name: &str,
    probe: Option<reqwest::Url>,
) -> Result<Tested, ConnectionError> {
    let mut row = find(db, workspace_id, name)
        .await?
        .ok_or_else(|| ConnectionError::NotFound(name.to_owned()))?;
    let keyring = keyring.ok_or(ConnectionError::NoKeyring)?;
    let mut checks = Vec::new();
    let mut check = |name: &str, ok: bool, detail: String| {
        checks.push(json!({ "check": name, "ok": ok, "detail": detail }));
        ok
    };
    let usable = match row.status {
        ConnectionStatus::Active | ConnectionStatus::Error => true,
        ConnectionStatus::Pending | ConnectionStatus::NeedsReauth => false,
        ConnectionStatus::Revoked => false,
    };
    check(
        "status",
        usable,
        match row.status {
            ConnectionStatus::Pending | ConnectionStatus::NeedsReauth => {
                format!("needs a person to authorize it (GET /v1/oauth/{name}/start)")
            }
            ConnectionStatus::Revoked => "revoked: its credentials were erased".into(),
            _ => "usable".into(),
        },
    );
    let sealed = match (row.key_version, &row.wrapped_key, &row.ciphertext) {
        (Some(v), Some(w), Some(c)) => Some(crate::vault::Sealed {
            key_version: u32::try_from(v).unwrap_or(0),
            wrapped_key: w.clone(),
            ciphertext: c.clone(),
        }),
        _ => None,
    };
    let Some(sealed) = sealed else {
        check("credentials", false, "none are stored".into());
        return Ok(Tested {
            ok: false,
            checks,
            row,
        });
    };
    let opened = keyring.open(&workers::connection_aad(row.workspace_id, row.id), &sealed);
    let text = match opened {
        Ok(bytes) => String::from_utf8(bytes.to_vec())
            .map(zeroize::Zeroizing::new)
            .map_err(|_| "they are not text".to_owned()),
        Err(e) => Err(e.to_string()),
    };
    let text = match text {
        Ok(text) => text,
        Err(why) => {
            check("credentials", false, format!("cannot be opened: {why}"));
            let mut active: connection::ActiveModel = row.into();
            active.status = Set(ConnectionStatus::Error);
            active.updated_at = Set(Utc::now());
            row = active.update(db).await?;
            return Ok(Tested {
                ok: false,
                checks,
                row,
            });
        }
    };
    let credential = if OAUTH_TYPES.contains(&row.auth_type.as_str()) {
        let expires = connectors::credential::OAuthConfig::from_config(&row.config)
            .ok()
            .and_then(|c| c.expires_at);
        let token = connectors::credential::OAuthSecret::from_json(&text)
            .ok()
            .and_then(|s| s.access_token.clone());
        check(
            "credentials",
            true,
            match (&token, expires) {
                (Some(_), Some(at)) => format!("open; the access token expires at {at}"),
                (Some(_), None) => "open; the access token has no expiry".into(),
                (None, _) => "open; no access token yet (a worker obtains one on first use)".into(),
            },
        );
        token.map(|t| connectors::Credential::Bearer(zeroize::Zeroizing::new(t)))
    } else {
        match connectors::Credential::from_parts(&row.auth_type, &row.config, &text) {
            Ok(c) => {
                check("credentials", true, "open".into());
                Some(c)
            }
            Err(e) => {
                check("credentials", false, e.to_string());
                None
            }
        }
    };
    let credential = credential.map(std::sync::Arc::new);
    if probe.is_none()
        && let Some(credential) = credential.as_ref()
    {
        let ctx = connectors::ActionContext {
            timeout: std::time::Duration::from_secs(10),
            idempotency_key: None,
            traceparent: None,
            max_response_bytes: connectors::http::ERROR_BODY_BYTES,
            http: http.clone(),
            credential: Some(credential.clone()),
            base_url: row
                .base_url
                .as_deref()
                .and_then(|u| reqwest::Url::parse(u).ok()),
            gate: None,
        };
        match registry.health(&ctx, &row.connector).await {
            Ok(()) => check(
                "health",
                true,
                "the connector's health call succeeded".into(),
            ),
            Err(e) => check(
                "health",
                false,
                format!("{}: {e}", json!(e.code).as_str().unwrap_or("failed")),
            ),
        };
    }
    if let (Some(url), Some(credential)) = (probe, credential.as_ref()) {
        let mut url = url;
        credential.apply_to_url(&mut url);
        let shown = {
            let mut u = url.clone();
            u.set_query(None);
            u.to_string()
        };
        // Held to the engine's outbound policy like every other call: the probe URL is the
        // caller's, and must not reach the engine's own network.
        let answer = http
            .execute(
                credential
                    .apply(http.get(url))
                    .timeout(std::time::Duration::from_secs(10)),
            )
            .await;
        match answer {
            Ok(r) => {
                let status = r.status();
                check(
                    "probe",
                    status.is_success(),
                    format!("GET {shown} answered {}", status.as_u16()),
                );
            }
            Err(failure) => {
                // The failure's message names neither the URL nor the credential.
                let why = match failure {
                    connectors::http::Failure::Refused(refused) => refused.to_string(),
                    connectors::http::Failure::Timeout => "timed out".to_owned(),
                    connectors::http::Failure::Connect { .. } => "could not connect".to_owned(),
                    _ => "request error".to_owned(),
                };
                check("probe", false, format!("GET {shown} failed: {why}"));
            }
        }
    }
    let ok = usable && checks.iter().all(|c| c["ok"] == true);
    Ok(Tested { ok, checks, row })
}
