//! A step's connection, resolved by the worker that runs it: read from the database, checked,
//! and its credentials opened in memory for the one call.
//!
//! Step messages carry only the connection's id. The row is read for every step, so a
//! connection revoked a moment ago fails the next step with `connection_revoked` before any
//! request leaves, and rotated credentials are used from the next step on.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::Utc;
use connectors::Credential;
use schemas::db::entities::connection::{self, ConnectionStatus};
use schemas::envelope::{ErrorCode, StepMessage};
use sea_orm::{ColumnTrait, DatabaseConnection, EntityTrait, QueryFilter, sea_query::Expr};
use uuid::Uuid;

use crate::vault::{Aad, Keyring, Sealed};

/// The `kind` connection credentials are sealed under (see [`Aad`]).
pub const KIND: &str = "connection";

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
pub(crate) fn missing_scopes(action: &str, granted: &serde_json::Value) -> Vec<&'static str> {
    let Some((connector, name)) = action.split_once('.') else {
        return Vec::new();
    };
    let needed = connectors::Registry::builtin()
        .get(connector)
        .and_then(|m| m.action(name))
        .map_or(&[][..], |a| a.scopes);
    let granted: Vec<&str> = granted
        .as_array()
        .map(|a| a.iter().filter_map(serde_json::Value::as_str).collect())
        .unwrap_or_default();
    needed
        .iter()
        .copied()
        .filter(|s| !granted.contains(s))
        .collect()
}

/// Resolves connections for one worker.
#[derive(Debug, Default)]
pub(crate) struct Resolver {
    access: Option<ConnectionAccess>,
    last_used: Mutex<HashMap<Uuid, Instant>>,
}

/// Why a step's connection cannot be used; the step fails with this code and message.
pub(crate) type Refusal = (ErrorCode, String);

impl Resolver {
    pub fn new(access: Option<ConnectionAccess>) -> Self {
        Resolver {
            access,
            last_used: Mutex::default(),
        }
    }

    /// The credential of the step's connection, or `None` when it names none.
    pub async fn resolve(&self, step: &StepMessage) -> Result<Option<Arc<Credential>>, Refusal> {
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
        let revoked = || {
            (
                ErrorCode::ConnectionRevoked,
                "the step's connection was revoked or deleted; no request was made".to_owned(),
            )
        };
        let Some(row) = row else {
            return Err(revoked());
        };
        let (Some(version), Some(wrapped_key), Some(ciphertext)) =
            (row.key_version, row.wrapped_key, row.ciphertext)
        else {
            return Err(revoked());
        };
        if row.status != ConnectionStatus::Active {
            return Err(revoked());
        }
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
        let sealed = Sealed {
            key_version: u32::try_from(version).unwrap_or(0),
            wrapped_key,
            ciphertext,
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
        let credential = Credential::from_parts(&row.auth_type, &row.config, text)
            .map_err(|e| (ErrorCode::Internal, e.to_string()))?;
        self.touch(access, id);
        Ok(Some(Arc::new(credential)))
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

#[cfg(test)]
mod tests {
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
