//! A step's connection, resolved by the worker that runs it: read from the database, checked,
//! and its credentials opened in memory for the one call.
//!
//! Step messages carry only the connection's id. The row is read for every step, so a
//! connection revoked a moment ago fails the next step with `connection_revoked` before any
//! request leaves, and rotated credentials are used from the next step on.
//!
//! # OAuth tokens
//! An `oauth2_client`, `oauth2_code` or `service_account` connection holds an access token
//! that expires (none at first, for the first two). A
//! worker that finds it expiring within [`REFRESH_BEFORE`] refreshes it, at most once at a
//! time per connection across the whole fleet: it opens a transaction, locks the connection
//! row (`SELECT … FOR UPDATE` on PostgreSQL; on SQLite a `BEGIN IMMEDIATE` transaction, the
//! database's one writer lock), and reads it again. If another worker refreshed it meanwhile,
//! it uses that token; otherwise it asks the token endpoint (`refresh_token` grant,
//! `client_credentials`, or for a service account a JWT it signs with its private key, RFC
//! 7523) and stores the new access token, its expiry and any rotated refresh token in the same
//! transaction. `invalid_grant` marks the connection `needs_reauth` and
//! fails the step `needs_reauth` without calling the API; a token endpoint that is down fails
//! it `upstream_unavailable`, which the engine retries. Refreshes are not written to the
//! audit ledger (the engine owns it); the step's own attempt record is.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{TimeDelta, Utc};
use connectors::Credential;
use connectors::credential::{OAuthConfig, OAuthSecret};
use connectors::oauth::{self, Grant, TokenError};
use connectors::service_account::{self, SigningKey};
use schemas::db::entities::connection::{self, ConnectionStatus};
use schemas::envelope::{ErrorCode, StepMessage};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, DatabaseConnection, DbBackend, EntityTrait, QueryFilter,
    QuerySelect, Set, SqliteTransactionMode, TransactionOptions, TransactionTrait, sea_query::Expr,
};
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::vault::{Aad, Keyring, Sealed};

/// The `kind` connection credentials are sealed under (see [`Aad`]).
pub const KIND: &str = "connection";

/// An OAuth access token expiring sooner than this is refreshed before the step uses it.
pub const REFRESH_BEFORE: TimeDelta = TimeDelta::seconds(60);

/// How often a worker records that it used a connection.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);

/// What a worker needs to run steps that name a connection: the database holding the
/// connections and the master keys that open their credentials.
#[derive(Clone)]
pub struct ConnectionAccess {
    /// The engine's database (read; `last_used_at` is the only write).
    pub db: DatabaseConnection,
    /// Master keys.
    pub keyring: Arc<Keyring>,
}

impl std::fmt::Debug for ConnectionAccess {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ConnectionAccess")
            .field("keyring", &self.keyring)
            .finish_non_exhaustive()
    }
}

impl ConnectionAccess {
    /// Connects to the database at `url` (no migrations: the engine owns the schema).
    pub async fn connect(url: &str, keyring: Arc<Keyring>) -> Result<Self, sea_orm::DbErr> {
        let mut options = sea_orm::ConnectOptions::new(url.to_owned());
        options.sqlx_logging(false).max_connections(4);
        Ok(ConnectionAccess {
            db: sea_orm::Database::connect(options).await?,
            keyring,
        })
    }
}

/// The associated data a connection's credentials are sealed with: bound to its workspace and
/// id, so a row copied elsewhere does not open.
pub fn aad(workspace_id: Uuid, connection_id: Uuid) -> Aad {
    Aad::new(workspace_id, KIND, &connection_id.to_string())
}

/// The scopes `action` (`connector.action`) declares that `granted` (a JSON list) lacks.
/// Scopes are checked when a workflow is applied; this catches a connection whose scopes were
/// reduced since.
pub(crate) fn missing_scopes(action: &str, granted: &serde_json::Value) -> Vec<String> {
    let Some((connector, name)) = action.split_once('.') else {
        return Vec::new();
    };
    let registry = connectors::Registry::builtin();
    let Some(needed) = registry.get(connector).and_then(|m| m.find_action(name)) else {
        return Vec::new();
    };
    let granted: Vec<&str> = granted
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    needed
        .scopes
        .iter()
        .filter(|s| !granted.contains(&s.as_str()))
        .cloned()
        .collect()
}

/// A step's connection, ready for its action.
#[derive(Debug)]
pub(crate) struct Resolved {
    /// The connection's id.
    pub id: Uuid,
    /// Its credential, opened for this step.
    pub credential: Arc<Credential>,
    /// Its base URL, replacing the connector's default.
    pub base_url: Option<reqwest::Url>,
    /// Its request budget: its own, else its connector's default.
    pub rate_limit: Option<connectors::RateLimit>,
}

/// The budget of a connection: its own `rate_limit`, else its connector's default.
fn rate_limit(row: &connection::Model) -> Option<connectors::RateLimit> {
    row.rate_limit
        .clone()
        .and_then(|v| serde_json::from_value::<connectors::RateLimit>(v).ok())
        .filter(|l| l.check().is_ok())
        .or_else(|| {
            connectors::Registry::builtin()
                .get(&row.connector)
                .and_then(|m| m.rate_limit)
        })
}

/// Resolves connections for one worker.
#[derive(Debug, Default)]
pub(crate) struct Resolver {
    access: Option<ConnectionAccess>,
    last_used: Mutex<HashMap<Uuid, Instant>>,
    /// Where token endpoints may be (the worker's outbound policy).
    outbound: connectors::http::OutboundPolicy,
    /// For token endpoints; built on first use (after the process installed its TLS provider).
    token_http: std::sync::OnceLock<connectors::http::Client>,
    /// Where token refreshes are counted.
    metrics: std::sync::Arc<crate::metrics::WorkerMetrics>,
}

/// Why a step's connection cannot be used; the step fails with this code and message.
pub(crate) type Refusal = (ErrorCode, String);

impl Resolver {
    pub fn new(
        access: Option<ConnectionAccess>,
        outbound: connectors::http::OutboundPolicy,
        metrics: std::sync::Arc<crate::metrics::WorkerMetrics>,
    ) -> Self {
        Resolver {
            access,
            outbound,
            metrics,
            last_used: Mutex::default(),
            token_http: std::sync::OnceLock::new(),
        }
    }

    /// The step's connection, opened, or `None` when it names none.
    pub async fn resolve(&self, step: &StepMessage) -> Result<Option<Resolved>, Refusal> {
        let Some(id) = step.connection_id else {
            return Ok(None);
        };
        let Some(access) = &self.access else {
            return Err((
                ErrorCode::Internal,
                "this worker cannot use connections: start it with the database URL and the master key".into(),
            ));
        };
        let row = connection::Entity::find_by_id(id)
            .filter(connection::Column::WorkspaceId.eq(step.workspace_id))
            .one(&access.db)
            .await
            .map_err(|e| {
                (
                    ErrorCode::UpstreamUnavailable,
                    format!("reading the step's connection failed: {e}"),
                )
            })?;
        let Some(row) = row else {
            return Err(revoked());
        };
        usable(&row)?;
        let missing = missing_scopes(&step.action, &row.scopes);
        if !missing.is_empty() {
            return Err((
                ErrorCode::InsufficientScope,
                format!(
                    "the step's connection no longer holds scope(s) {} that `{}` needs; no request was made",
                    missing.join(", "),
                    step.action
                ),
            ));
        }
        let text = open(access, &row)?;
        let mut base_url = row.base_url.clone();
        let credential = if is_oauth(&row.auth_type) {
            let (config, secret) = oauth_parts(&row, &text)?;
            drop(text);
            if fresh(&config, &secret) {
                Credential::from_parts(&row.auth_type, &row.config, &secret.to_json())
                    .map_err(|e| (ErrorCode::Internal, e.to_string()))?
            } else {
                let (credential, adopted) = self.refresh(access, &row, step).await?;
                if adopted.is_some() {
                    base_url = adopted;
                }
                credential
            }
        } else {
            Credential::from_parts(&row.auth_type, &row.config, &text)
                .map_err(|e| (ErrorCode::Internal, e.to_string()))?
        };
        self.touch(access, id);
        Ok(Some(Resolved {
            id,
            credential: Arc::new(credential),
            base_url: base_url
                .as_deref()
                .and_then(|u| reqwest::Url::parse(u).ok()),
            rate_limit: rate_limit(&row),
        }))
    }

    /// Refreshes the OAuth tokens of `stale` (read without a lock), or uses the ones another
    /// worker stored meanwhile. See the module docs. Also returns the connection's base URL
    /// when the row read under the lock has one `stale` lacked: taken from this token
    /// response's `instance_url`, or stored by the worker that refreshed meanwhile.
    async fn refresh(
        &self,
        access: &ConnectionAccess,
        stale: &connection::Model,
        step: &StepMessage,
    ) -> Result<(Credential, Option<String>), Refusal> {
        let db = &access.db;
        let backend = db.get_database_backend();
        let tx = if backend == DbBackend::Sqlite {
            db.begin_with_options(TransactionOptions {
                sqlite_transaction_mode: Some(SqliteTransactionMode::Immediate),
                ..TransactionOptions::default()
            })
            .await
        } else {
            db.begin().await
        }
        .map_err(db_unavailable)?;
        let mut query = connection::Entity::find_by_id(stale.id)
            .filter(connection::Column::WorkspaceId.eq(stale.workspace_id));
        if backend == DbBackend::Postgres {
            query = query.lock_exclusive();
        }
        let row = query
            .one(&tx)
            .await
            .map_err(db_unavailable)?
            .ok_or_else(revoked)?;
        // Re-checked under the lock: another worker may have refreshed it, or found it needs
        // a person, while this one waited.
        usable(&row)?;
        let text = open(access, &row)?;
        let (config, secret) = oauth_parts(&row, &text)?;
        drop(text);
        if fresh(&config, &secret) {
            let _ = tx.rollback().await;
            self.metrics.oauth_refresh("reused");
            return Credential::from_parts(&row.auth_type, &row.config, &secret.to_json())
                .map(|c| (c, row.base_url.clone()))
                .map_err(|e| (ErrorCode::Internal, e.to_string()));
        }
        // Signed now, under the lock: its `iat` is the moment it is sent.
        let assertion = if row.auth_type == "service_account" {
            Some(sign_assertion(&config, &secret)?)
        } else {
            None
        };
        let grant = if let Some(assertion) = &assertion {
            Some(Grant::JwtBearer { assertion })
        } else if row.auth_type == "oauth2_client" {
            Some(Grant::ClientCredentials {
                scopes: &config.scopes,
            })
        } else {
            secret
                .refresh_token
                .as_deref()
                .map(|refresh_token| Grant::RefreshToken { refresh_token })
        };
        let grant_name = match &grant {
            Some(Grant::JwtBearer { .. }) => "jwt_bearer",
            Some(Grant::ClientCredentials { .. }) => "client_credentials",
            Some(Grant::RefreshToken { .. }) => "refresh_token",
            Some(_) | None => "none",
        };
        let asked = std::time::Instant::now();
        let answer = match &grant {
            Some(grant) => {
                let http = self
                    .token_http
                    .get_or_init(|| connectors::oauth::new_token_client(self.outbound.clone()));
                oauth::request_token(
                    http,
                    &oauth::Client {
                        token_url: &config.token_url,
                        client_id: &config.client_id,
                        client_secret: secret.client_secret.as_deref(),
                    },
                    grant,
                )
                .await
            }
            // The access token expired and there is nothing to renew it with.
            None => Err(TokenError::InvalidGrant),
        };
        let tokens = match answer {
            Ok(tokens) => tokens,
            Err(TokenError::InvalidGrant) => {
                let mut active: connection::ActiveModel = row.clone().into();
                active.status = Set(ConnectionStatus::NeedsReauth);
                active.updated_at = Set(Utc::now());
                active.update(&tx).await.map_err(db_unavailable)?;
                let record = token_record(&row, step, grant_name, asked, Some("needs_reauth"));
                crate::audit::append(&tx, vec![(row.workspace_id, record)])
                    .await
                    .map_err(db_unavailable)?;
                tx.commit().await.map_err(db_unavailable)?;
                self.metrics.oauth_refresh("needs_reauth");
                tracing::warn!(connection_id = %row.id, "oauth grant refused: connection needs reauthorization");
                return Err(needs_reauth(&row));
            }
            Err(e) => {
                let code = if e.is_retryable() {
                    ErrorCode::UpstreamUnavailable
                } else if matches!(e, TokenError::Refused(_)) {
                    // The token URL is on an address the outbound policy refuses.
                    ErrorCode::Forbidden
                } else {
                    ErrorCode::Unauthorized
                };
                // Nothing about the connection changes; the failed call is still recorded.
                let word = serde_json::to_value(code)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default();
                let record = token_record(&row, step, grant_name, asked, Some(&word));
                crate::audit::append(&tx, vec![(row.workspace_id, record)])
                    .await
                    .map_err(db_unavailable)?;
                tx.commit().await.map_err(db_unavailable)?;
                self.metrics.oauth_refresh("failed");
                tracing::warn!(connection_id = %row.id, code = %word, "oauth token refresh failed");
                return Err((
                    code,
                    format!(
                        "refreshing the connection's OAuth token failed: {e}; no request was made"
                    ),
                ));
            }
        };
        let now = Utc::now();
        let expires_at = tokens.expires_at(now);
        // A provider that rotates refresh tokens sends a new one, and the old one is spent;
        // one that does not leaves the old one valid.
        let stored = secret.renewed(&tokens, true);
        let sealed = access
            .keyring
            .seal(&aad(row.workspace_id, row.id), stored.to_json().as_bytes())
            .map_err(|e| {
                (
                    ErrorCode::Internal,
                    format!("sealing the refreshed token failed: {e}"),
                )
            })?;
        let adopted = tokens.base_url_to_adopt(row.base_url.as_deref());
        let mut active: connection::ActiveModel = row.clone().into();
        if let Some(base_url) = &adopted {
            active.base_url = Set(Some(base_url.clone()));
        }
        active.config = Set(OAuthConfig::with_expiry(&row.config, expires_at));
        active.key_version = Set(Some(i32::try_from(sealed.key_version).unwrap_or(i32::MAX)));
        active.wrapped_key = Set(Some(sealed.wrapped_key));
        active.ciphertext = Set(Some(sealed.ciphertext));
        active.updated_at = Set(now);
        active.update(&tx).await.map_err(db_unavailable)?;
        let mut record = token_record(&row, step, grant_name, asked, None);
        record.details = Some(serde_json::json!({
            "grant": grant_name,
            "expires_at": expires_at,
            "refresh_token_rotated": tokens.refresh_token.is_some(),
            "base_url_from_token": adopted,
        }));
        crate::audit::append(&tx, vec![(row.workspace_id, record)])
            .await
            .map_err(db_unavailable)?;
        tx.commit().await.map_err(db_unavailable)?;
        self.metrics.oauth_refresh("refreshed");
        tracing::info!(connection_id = %row.id, rotated = tokens.refresh_token.is_some(), "oauth token refreshed");
        let base_url = adopted.or_else(|| row.base_url.clone());
        Ok((Credential::Bearer(tokens.access_token), base_url))
    }

    /// Records the use, at most once a minute per connection, without holding up the step.
    fn touch(&self, access: &ConnectionAccess, id: Uuid) {
        let now = Instant::now();
        if let Ok(mut seen) = self.last_used.lock() {
            if seen
                .get(&id)
                .is_some_and(|at| now.saturating_duration_since(*at) < LAST_USED_EVERY)
            {
                return;
            }
            if seen.len() > 10_000 {
                seen.clear();
            }
            seen.insert(id, now);
        }
        let db = access.db.clone();
        tokio::spawn(async move {
            let _ = connection::Entity::update_many()
                .col_expr(
                    connection::Column::LastUsedAt,
                    Expr::value(Some(Utc::now())),
                )
                .filter(connection::Column::Id.eq(id))
                .exec(&db)
                .await;
        });
    }
}

/// The ledger record of one call to a connection's token endpoint, made for `step`: who
/// caused it (the step's run), which connection, which grant, and how it ended — never a token.
fn token_record(
    row: &connection::Model,
    step: &StepMessage,
    grant: &str,
    asked: std::time::Instant,
    error: Option<&str>,
) -> crate::audit::Entry {
    crate::audit::Entry {
        kind: "connection.token_requested",
        principal: "worker".into(),
        via: "run",
        at: Utc::now(),
        run_id: Some(step.run_id),
        step_id: Some(step.step_id.clone()),
        item_index: step.item_index.and_then(|i| i32::try_from(i).ok()),
        attempt: i32::try_from(step.attempt).ok(),
        connector: Some(row.connector.clone()),
        action: Some("oauth.token".into()),
        connection_id: Some(row.id),
        outcome: if error.is_some() { "error" } else { "success" },
        error_code: error.map(str::to_owned),
        duration_ms: i64::try_from(asked.elapsed().as_millis()).ok(),
        details: Some(serde_json::json!({ "grant": grant })),
        ..crate::audit::Entry::default()
    }
}

fn revoked() -> Refusal {
    (
        ErrorCode::ConnectionRevoked,
        "the step's connection was revoked or deleted; no request was made".to_owned(),
    )
}

fn needs_reauth(row: &connection::Model) -> Refusal {
    let how = if row.auth_type == "oauth2_code" {
        format!("an admin opens GET /v1/oauth/{}/start", row.name)
    } else {
        // Client credentials and service-account keys are not renewed by signing in.
        format!(
            "an admin gives it new credentials with PUT /v1/connections/{}/credentials",
            row.name
        )
    };
    (
        ErrorCode::NeedsReauth,
        format!(
            "connection `{}` must be authorized again ({how}); no request was made",
            row.name
        ),
    )
}

fn db_unavailable(e: sea_orm::DbErr) -> Refusal {
    (
        ErrorCode::UpstreamUnavailable,
        format!("reading the step's connection failed: {e}"),
    )
}

/// Refuses a connection whose status does not allow use.
fn usable(row: &connection::Model) -> Result<(), Refusal> {
    match row.status {
        ConnectionStatus::Active => Ok(()),
        ConnectionStatus::Revoked => Err(revoked()),
        ConnectionStatus::Error => Err((
            ErrorCode::Internal,
            format!(
                "connection `{}` failed its last test (its credentials could not be opened); store new credentials with PUT /v1/connections/{}/credentials",
                row.name, row.name
            ),
        )),
        ConnectionStatus::NeedsReauth => Err(needs_reauth(row)),
        ConnectionStatus::Pending => Err((
            ErrorCode::NeedsReauth,
            format!(
                "connection `{}` has not been authorized yet (an admin opens GET /v1/oauth/{}/start); no request was made",
                row.name, row.name
            ),
        )),
    }
}

/// Opens the row's sealed credentials.
fn open(access: &ConnectionAccess, row: &connection::Model) -> Result<Zeroizing<String>, Refusal> {
    let (Some(version), Some(wrapped_key), Some(ciphertext)) =
        (row.key_version, &row.wrapped_key, &row.ciphertext)
    else {
        return Err(revoked());
    };
    let sealed = Sealed {
        key_version: u32::try_from(version).unwrap_or(0),
        wrapped_key: wrapped_key.clone(),
        ciphertext: ciphertext.clone(),
    };
    let secret = access
        .keyring
        .open(&aad(row.workspace_id, row.id), &sealed)
        .map_err(|e| {
            (
                ErrorCode::Internal,
                format!("the connection's credentials cannot be opened: {e}"),
            )
        })?;
    let text = std::str::from_utf8(&secret).map_err(|_| {
        (
            ErrorCode::Internal,
            "the connection's credentials are not readable".to_owned(),
        )
    })?;
    Ok(Zeroizing::new(text.to_owned()))
}

fn is_oauth(auth_type: &str) -> bool {
    matches!(
        auth_type,
        "oauth2_client" | "oauth2_code" | "service_account"
    )
}

/// A service account's JWT bearer assertion, signed with its sealed key, issued now.
fn sign_assertion(
    config: &OAuthConfig,
    secret: &OAuthSecret,
) -> Result<Zeroizing<String>, Refusal> {
    // The key was checked when the connection was created; failing here means the stored row
    // is damaged, which no retry repairs.
    let internal = |e: service_account::KeyError| {
        (
            ErrorCode::Internal,
            format!("the service account's key cannot sign: {e}; no request was made"),
        )
    };
    let pem = secret.private_key.as_deref().ok_or_else(|| {
        (
            ErrorCode::Internal,
            "the service account's stored secret has no private key; no request was made"
                .to_owned(),
        )
    })?;
    let key = SigningKey::from_pem(pem).map_err(internal)?;
    service_account::sign(
        &key,
        &service_account::Assertion {
            issuer: &config.client_id,
            audience: &config.token_url,
            scopes: &config.scopes,
            subject: config.subject.as_deref(),
            key_id: config.private_key_id.as_deref(),
        },
        Utc::now().timestamp(),
    )
    .map_err(internal)
}

fn oauth_parts(
    row: &connection::Model,
    secret: &str,
) -> Result<(OAuthConfig, OAuthSecret), Refusal> {
    let internal =
        |e: connectors::credential::CredentialError| (ErrorCode::Internal, e.to_string());
    Ok((
        OAuthConfig::from_config(&row.config).map_err(internal)?,
        OAuthSecret::from_json(secret).map_err(internal)?,
    ))
}

/// Whether the access token may be used as it is: present, and not expiring within
/// [`REFRESH_BEFORE`] (a token issued without `expires_in` is used until refused).
fn fresh(config: &OAuthConfig, secret: &OAuthSecret) -> bool {
    secret.access_token.is_some()
        && config
            .expires_at
            .is_none_or(|at| at - Utc::now() > REFRESH_BEFORE)
}

#[cfg(test)]
mod scope_tests {
    use serde_json::json;

    use super::missing_scopes;

    #[test]
    fn scopes_an_action_declares_must_all_be_granted() {
        assert_eq!(missing_scopes("github.create_issue", &json!([])), ["repo"]);
        assert!(missing_scopes("github.create_issue", &json!(["repo", "gist"])).is_empty());
        assert!(missing_scopes("http.request", &json!([])).is_empty());
        assert!(missing_scopes("nonsense", &json!(null)).is_empty());
    }
}
