//! Who is calling: principals, their bearer tokens, and the role each route needs.
//!
//! Every API route except health, OpenAPI, metrics and webhook deliveries (which are
//! authenticated by their signature) takes an [`Auth`] extractor whose type names the least
//! role the route needs, so a handler cannot forget the check:
//!
//! ```ignore
//! async fn put_workflow(Auth(caller, ..): Auth<Author>, ...) { /* caller.workspace_id */ }
//! ```
//!
//! A token is `sy_` and 43 characters of base64url (256 random bits). Only its SHA-256 digest
//! is stored, under a unique index, so a token is looked up by digest and the token itself is
//! shown once, when it is created. A token is refused once revoked or past its expiry; every
//! query a handler makes is scoped by the caller's workspace, never by an id from the request.

use std::collections::HashMap;
use std::marker::PhantomData;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use base64::Engine as _;
use chrono::{DateTime, Utc};
use ring::rand::{SecureRandom, SystemRandom};
use schemas::db::entities::principal::{self, PrincipalKind, Role};
use schemas::db::entities::{api_token, workspace};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait, QueryFilter,
    QueryOrder, Set,
};
use serde_json::{Value, json};
use sha2::Digest as _;
use uuid::Uuid;
use zeroize::Zeroizing;

use crate::api::{ApiError, ApiErrorCode};
use crate::service::Shared;

/// Every token starts with this.
pub const TOKEN_PREFIX: &str = "sy_";
/// Characters of a token kept in the clear to tell tokens apart (`sy_` and six more).
const SHOWN_PREFIX: usize = 9;
/// How often a token's `last_used_at` is written.
const LAST_USED_EVERY: Duration = Duration::from_secs(60);
/// Longest lifetime a token may be given.
pub const MAX_TOKEN_LIFETIME: Duration = Duration::from_secs(5 * 366 * 24 * 3600);

/// Why a principal or token operation failed.
#[derive(Debug, thiserror::Error)]
pub enum AuthError {
    /// The database said no.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// The system random number generator failed.
    #[error("the system random number generator failed")]
    Random,
    /// The request is malformed; the message says where.
    #[error("{0}")]
    Invalid(String),
    /// No such principal, token or workspace (in the caller's workspace).
    #[error("{0} not found")]
    NotFound(String),
    /// A principal with this name exists.
    #[error("principal `{0}` already exists in this workspace")]
    Exists(String),
}

impl From<AuthError> for ApiError {
    fn from(e: AuthError) -> Self {
        match e {
            AuthError::Invalid(m) => ApiError::new(ApiErrorCode::InvalidInput, m),
            AuthError::NotFound(what) => ApiError::not_found(what),
            AuthError::Exists(_) => ApiError::new(ApiErrorCode::Conflict, e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

/// The authenticated caller of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    /// The principal.
    pub principal_id: Uuid,
    /// Its name, for audit records and provenance.
    pub name: String,
    /// User, service account or agent.
    pub kind: PrincipalKind,
    /// Its role in [`Caller::workspace_id`].
    pub role: Role,
    /// The one workspace every query of this request is scoped to.
    pub workspace_id: Uuid,
    /// The token that authenticated the request.
    pub token_id: Uuid,
}

/// The least role a route needs, as a type: [`Viewer`], [`Operator`], [`Author`], [`Admin`].
pub trait Need: Send + Sync + 'static {
    /// The role.
    const ROLE: Role;
}

/// Reads workflows, runs, connections.
#[derive(Debug)]
pub struct Viewer;
/// Starts and cancels runs, publishes events.
#[derive(Debug)]
pub struct Operator;
/// Writes workflows.
#[derive(Debug)]
pub struct Author;
/// Connections, secrets, principals, tokens.
#[derive(Debug)]
pub struct Admin;

impl Need for Viewer {
    const ROLE: Role = Role::Viewer;
}
impl Need for Operator {
    const ROLE: Role = Role::Operator;
}
impl Need for Author {
    const ROLE: Role = Role::Author;
}
impl Need for Admin {
    const ROLE: Role = Role::Admin;
}

/// An authenticated caller holding at least `R`'s role: `401` without a valid token, `403`
/// with a lesser role.
#[derive(Debug)]
pub struct Auth<R: Need>(pub Caller, pub PhantomData<R>);

impl<R: Need> FromRequestParts<Shared> for Auth<R> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Shared) -> Result<Self, ApiError> {
        let header = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .ok_or_else(|| unauthorized("this route needs an `Authorization: Bearer sy_…` header"))?
            .to_str()
            .map_err(|_| unauthorized("the `Authorization` header is not readable text"))?;
        let token = header
            .strip_prefix("Bearer ")
            .or_else(|| header.strip_prefix("bearer "))
            .ok_or_else(|| unauthorized("the `Authorization` header must be `Bearer sy_…`"))?
            .trim();
        let caller = authenticate_cached(&s.db, &s.token_cache, token, Utc::now())
            .await
            .map_err(|e| match e {
                Refused::Token(why) => unauthorized(why),
                Refused::Db(e) => ApiError::internal(e),
            })?;
        if s.token_use.due(caller.token_id) {
            let db = s.db.clone();
            let id = caller.token_id;
            tokio::spawn(async move {
                let _ = api_token::Entity::update_many()
                    .col_expr(api_token::Column::LastUsedAt, Expr::value(Some(Utc::now())))
                    .filter(api_token::Column::Id.eq(id))
                    .exec(&db)
                    .await;
            });
        }
        if caller.role < R::ROLE {
            return Err(ApiError::new(
                ApiErrorCode::Forbidden,
                format!(
                    "this needs the `{}` role; `{}` is `{}` in this workspace",
                    role_word(R::ROLE),
                    caller.name,
                    role_word(caller.role)
                ),
            ));
        }
        Ok(Auth(caller, PhantomData))
    }
}

fn unauthorized(message: impl Into<String>) -> ApiError {
    ApiError::new(ApiErrorCode::Unauthorized, message)
}

/// The word a role is written as (`admin`).
pub fn role_word(role: Role) -> &'static str {
    match role {
        Role::Viewer => "viewer",
        Role::Operator => "operator",
        Role::Author => "author",
        Role::Admin => "admin",
    }
}

/// Why a token did not authenticate.
#[derive(Debug)]
pub enum Refused {
    /// Unknown, malformed, revoked or expired; the text says which, never the token.
    Token(&'static str),
    /// The database did not answer.
    Db(sea_orm::DbErr),
}

/// Looks a token up: its principal, role and workspace, if the token is valid at `now`.
pub async fn authenticate<C: ConnectionTrait>(
    db: &C,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Caller, Refused> {
    lookup(db, token, now).await.map(|(caller, _)| caller)
}

/// [`authenticate`], answered from `cache` when this engine checked the same token less than
/// [`CACHE_FOR`] ago (expiry is still checked against `now`).
pub async fn authenticate_cached<C: ConnectionTrait>(
    db: &C,
    cache: &TokenCache,
    token: &str,
    now: DateTime<Utc>,
) -> Result<Caller, Refused> {
    let key = digest(token);
    if let Some(caller) = cache.get(&key, now) {
        return Ok(caller);
    }
    let (caller, expires_at) = lookup(db, token, now).await?;
    cache.put(key, caller.clone(), expires_at);
    Ok(caller)
}

async fn lookup<C: ConnectionTrait>(
    db: &C,
    token: &str,
    now: DateTime<Utc>,
) -> Result<(Caller, Option<DateTime<Utc>>), Refused> {
    if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
        return Err(Refused::Token(
            "the bearer token is not a Switchyard token (`sy_…`)",
        ));
    }
    let row = api_token::Entity::find()
        .filter(api_token::Column::Digest.eq(digest(token)))
        .one(db)
        .await
        .map_err(Refused::Db)?
        .ok_or(Refused::Token("the bearer token is not valid"))?;
    if row.revoked_at.is_some() {
        return Err(Refused::Token("the bearer token was revoked"));
    }
    if row.expires_at.is_some_and(|at| at <= now) {
        return Err(Refused::Token("the bearer token has expired"));
    }
    let principal = principal::Entity::find_by_id(row.principal_id)
        .filter(principal::Column::WorkspaceId.eq(row.workspace_id))
        .one(db)
        .await
        .map_err(Refused::Db)?
        .ok_or(Refused::Token("the bearer token's principal was deleted"))?;
    Ok((
        Caller {
            principal_id: principal.id,
            name: principal.name,
            kind: principal.kind,
            role: principal.role,
            workspace_id: principal.workspace_id,
            token_id: row.id,
        },
        row.expires_at,
    ))
}

/// How long an engine trusts a token it checked without asking the database again. Revoking
/// a token or deleting a principal through an engine takes effect on that engine at once; on
/// the other engines, within this long.
pub const CACHE_FOR: Duration = Duration::from_secs(2);

/// Tokens this engine authenticated recently, by digest (never by the token itself).
#[derive(Debug, Default)]
pub struct TokenCache(Mutex<HashMap<String, Cached>>);

#[derive(Debug, Clone)]
struct Cached {
    caller: Caller,
    expires_at: Option<DateTime<Utc>>,
    at: Instant,
}

impl TokenCache {
    fn get(&self, key: &str, now: DateTime<Utc>) -> Option<Caller> {
        let entries = self.0.lock().ok()?;
        let hit = entries.get(key)?;
        let fresh = hit.at.elapsed() < CACHE_FOR && hit.expires_at.is_none_or(|at| at > now);
        fresh.then(|| hit.caller.clone())
    }

    fn put(&self, key: String, caller: Caller, expires_at: Option<DateTime<Utc>>) {
        if let Ok(mut entries) = self.0.lock() {
            // Bounded: entries past CACHE_FOR are useless, so a full map is simply emptied.
            if entries.len() >= 10_000 {
                entries.clear();
            }
            entries.insert(
                key,
                Cached {
                    caller,
                    expires_at,
                    at: Instant::now(),
                },
            );
        }
    }

    /// Drops a revoked token.
    pub fn forget_token(&self, token_id: Uuid) {
        if let Ok(mut entries) = self.0.lock() {
            entries.retain(|_, c| c.caller.token_id != token_id);
        }
    }

    /// Drops every token of a deleted principal.
    pub fn forget_principal(&self, principal_id: Uuid) {
        if let Ok(mut entries) = self.0.lock() {
            entries.retain(|_, c| c.caller.principal_id != principal_id);
        }
    }
}

/// Hex SHA-256 of a token: what is stored and looked up.
fn digest(token: &str) -> String {
    hex::encode(sha2::Sha256::digest(token.as_bytes()))
}

/// A fresh token: `sy_` and 256 random bits in base64url.
fn new_token() -> Result<Zeroizing<String>, AuthError> {
    let mut bytes = Zeroizing::new([0u8; 32]);
    SystemRandom::new()
        .fill(bytes.as_mut_slice())
        .map_err(|_| AuthError::Random)?;
    Ok(Zeroizing::new(format!(
        "{TOKEN_PREFIX}{}",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes.as_slice())
    )))
}

/// Records token use at most once a minute per token, so authenticating stays one read.
#[derive(Debug, Default)]
pub struct TokenUse(Mutex<HashMap<Uuid, Instant>>);

impl TokenUse {
    /// Whether `id`'s use should be written now.
    pub fn due(&self, id: Uuid) -> bool {
        let now = Instant::now();
        let Ok(mut seen) = self.0.lock() else {
            return false;
        };
        if seen
            .get(&id)
            .is_some_and(|at| now.saturating_duration_since(*at) < LAST_USED_EVERY)
        {
            return false;
        }
        if seen.len() > 10_000 {
            seen.clear();
        }
        seen.insert(id, now);
        true
    }
}

/// A request to create a principal. Role and kind are given; id, workspace and creator are not
/// settable (unknown fields are refused).
#[derive(Debug, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewPrincipal {
    /// Name, unique in the workspace.
    pub name: String,
    /// `user` (default), `service` or `agent`.
    #[serde(default = "default_kind")]
    pub kind: PrincipalKind,
    /// `viewer`, `operator`, `author` or `admin`.
    pub role: Role,
}

fn default_kind() -> PrincipalKind {
    PrincipalKind::User
}

/// A request to create a token.
#[derive(Debug, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewToken {
    /// A label (`laptop`, `ci`); default `token`.
    #[serde(default)]
    pub name: Option<String>,
    /// Lifetime, e.g. `30d` or `12h`; default: no expiry.
    #[serde(default)]
    pub expires_in: Option<schemas::duration::Duration>,
}

/// A token just created: the only time its text exists outside the caller.
#[derive(Debug)]
pub struct IssuedToken {
    /// The stored row (digest and prefix only).
    pub row: api_token::Model,
    /// The token.
    pub token: Zeroizing<String>,
}

/// Checks a principal or token name: 1 to 64 lowercase letters, digits, `-`, `_` and `.`.
fn check_name(field: &str, name: &str) -> Result<(), AuthError> {
    let ok = !name.is_empty()
        && name.len() <= 64
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"-_.".contains(&b));
    if ok {
        Ok(())
    } else {
        Err(AuthError::Invalid(format!(
            "`{field}`: `{}` must be 1 to 64 lowercase letters, digits, `-`, `_` and `.`",
            name.escape_debug()
        )))
    }
}

/// Creates a principal in `workspace_id`.
pub async fn create_principal<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    created_by: Option<Uuid>,
    new: NewPrincipal,
) -> Result<principal::Model, AuthError> {
    check_name("name", &new.name)?;
    let row = principal::ActiveModel {
        id: Set(Uuid::now_v7()),
        workspace_id: Set(workspace_id),
        name: Set(new.name.clone()),
        kind: Set(new.kind),
        role: Set(new.role),
        created_by: Set(created_by),
        created_at: Set(Utc::now()),
    };
    row.insert(db).await.map_err(|e| match e.sql_err() {
        Some(sea_orm::SqlErr::UniqueConstraintViolation(_)) => AuthError::Exists(new.name),
        _ => AuthError::Db(e),
    })
}

/// A principal of the workspace by name.
pub async fn find_principal<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    name: &str,
) -> Result<principal::Model, AuthError> {
    principal::Entity::find()
        .filter(principal::Column::WorkspaceId.eq(workspace_id))
        .filter(principal::Column::Name.eq(name))
        .one(db)
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("principal `{name}`")))
}

/// Every principal of a workspace, by name.
pub async fn list_principals(
    db: &DatabaseConnection,
    workspace_id: Uuid,
) -> Result<Vec<principal::Model>, AuthError> {
    Ok(principal::Entity::find()
        .filter(principal::Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(principal::Column::Name)
        .all(db)
        .await?)
}

/// Deletes a principal and revokes its tokens.
pub async fn delete_principal<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    name: &str,
) -> Result<principal::Model, AuthError> {
    let row = find_principal(db, workspace_id, name).await?;
    revoke_tokens_of(db, workspace_id, row.id).await?;
    principal::Entity::delete_by_id(row.id).exec(db).await?;
    Ok(row)
}

async fn revoke_tokens_of<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    principal_id: Uuid,
) -> Result<(), AuthError> {
    api_token::Entity::update_many()
        .col_expr(api_token::Column::RevokedAt, Expr::value(Some(Utc::now())))
        .filter(api_token::Column::WorkspaceId.eq(workspace_id))
        .filter(api_token::Column::PrincipalId.eq(principal_id))
        .filter(api_token::Column::RevokedAt.is_null())
        .exec(db)
        .await?;
    Ok(())
}

/// Issues a token for a principal.
pub async fn issue_token<C: ConnectionTrait>(
    db: &C,
    principal: &principal::Model,
    new: NewToken,
) -> Result<IssuedToken, AuthError> {
    let name = new.name.unwrap_or_else(|| "token".to_owned());
    check_name("name", &name)?;
    let now = Utc::now();
    let expires_at = match new.expires_in {
        None => None,
        Some(d) if d.get() > MAX_TOKEN_LIFETIME || d.get().is_zero() => {
            return Err(AuthError::Invalid(
                "`expires_in` must be more than 0 and at most 5 years".into(),
            ));
        }
        Some(d) => Some(
            now + chrono::TimeDelta::from_std(d.get())
                .map_err(|_| AuthError::Invalid("`expires_in` is too long".into()))?,
        ),
    };
    let token = new_token()?;
    let row = api_token::ActiveModel {
        id: Set(Uuid::now_v7()),
        workspace_id: Set(principal.workspace_id),
        principal_id: Set(principal.id),
        name: Set(name),
        digest: Set(digest(&token)),
        prefix: Set(token[..SHOWN_PREFIX].to_owned()),
        expires_at: Set(expires_at),
        revoked_at: Set(None),
        created_at: Set(now),
        last_used_at: Set(None),
    }
    .insert(db)
    .await?;
    Ok(IssuedToken { row, token })
}

/// The tokens of a workspace (or of one principal in it), newest first; never a token's text.
pub async fn list_tokens(
    db: &DatabaseConnection,
    workspace_id: Uuid,
    principal_id: Option<Uuid>,
) -> Result<Vec<api_token::Model>, AuthError> {
    let mut q = api_token::Entity::find().filter(api_token::Column::WorkspaceId.eq(workspace_id));
    if let Some(p) = principal_id {
        q = q.filter(api_token::Column::PrincipalId.eq(p));
    }
    Ok(q.order_by_desc(api_token::Column::CreatedAt)
        .all(db)
        .await?)
}

/// A token of the workspace by id.
pub async fn find_token<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    id: Uuid,
) -> Result<api_token::Model, AuthError> {
    api_token::Entity::find_by_id(id)
        .filter(api_token::Column::WorkspaceId.eq(workspace_id))
        .one(db)
        .await?
        .ok_or_else(|| AuthError::NotFound(format!("token {id}")))
}

/// Revokes a token of the workspace; revoking twice is harmless.
pub async fn revoke_token<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    id: Uuid,
) -> Result<api_token::Model, AuthError> {
    let row = find_token(db, workspace_id, id).await?;
    if row.revoked_at.is_some() {
        return Ok(row);
    }
    let mut active: api_token::ActiveModel = row.into();
    active.revoked_at = Set(Some(Utc::now()));
    Ok(active.update(db).await?)
}

/// The first admin of a workspace, for `switchyard admin bootstrap` and `switchyard dev`:
/// creates the workspace (by name) and the principal if they are missing, and issues a token.
/// Running it again issues another token for the same principal (a way back in for an
/// operator with database access who lost every admin token).
pub async fn bootstrap<C: ConnectionTrait>(
    db: &C,
    workspace: &str,
    admin: &str,
) -> Result<(workspace::Model, IssuedToken), AuthError> {
    check_name("workspace", workspace)?;
    check_name("name", admin)?;
    let ws = match workspace::Entity::find()
        .filter(workspace::Column::Name.eq(workspace))
        .one(db)
        .await?
    {
        Some(ws) => ws,
        None => {
            workspace::ActiveModel {
                id: Set(Uuid::now_v7()),
                name: Set(workspace.to_owned()),
                created_at: Set(Utc::now()),
            }
            .insert(db)
            .await?
        }
    };
    let principal = match find_principal(db, ws.id, admin).await {
        Ok(p) if p.role == Role::Admin => p,
        Ok(_) => {
            return Err(AuthError::Invalid(format!(
                "`{admin}` exists in workspace `{workspace}` and is not an admin; bootstrap another name"
            )));
        }
        Err(AuthError::NotFound(_)) => {
            create_principal(
                db,
                ws.id,
                None,
                NewPrincipal {
                    name: admin.to_owned(),
                    kind: PrincipalKind::User,
                    role: Role::Admin,
                },
            )
            .await?
        }
        Err(e) => return Err(e),
    };
    let token = issue_token(
        db,
        &principal,
        NewToken {
            name: Some("bootstrap".into()),
            expires_in: None,
        },
    )
    .await?;
    Ok((ws, token))
}

/// The API view of a principal.
pub fn principal_view(row: &principal::Model) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "kind": row.kind,
        "role": row.role,
        "created_at": row.created_at,
    })
}

/// The API view of a token: never its text or digest.
pub fn token_view(row: &api_token::Model, principal: Option<&str>) -> Value {
    json!({
        "id": row.id,
        "name": row.name,
        "principal": principal,
        "prefix": row.prefix,
        "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
        "created_at": row.created_at,
        "last_used_at": row.last_used_at,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_are_prefixed_random_and_stored_only_as_digests() {
        let a = new_token().unwrap();
        let b = new_token().unwrap();
        assert!(a.starts_with(TOKEN_PREFIX));
        assert_eq!(a.len(), TOKEN_PREFIX.len() + 43);
        assert_ne!(*a, *b);
        let d = digest(&a);
        assert_eq!(d.len(), 64);
        assert!(!d.contains(&a[TOKEN_PREFIX.len()..]));
    }

    #[test]
    fn roles_are_ordered_from_viewer_to_admin() {
        assert!(Role::Viewer < Role::Operator);
        assert!(Role::Operator < Role::Author);
        assert!(Role::Author < Role::Admin);
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("name", "ci-deployer.2").is_ok());
        for bad in ["", "Ada", "a b", &"x".repeat(65)] {
            assert!(check_name("name", bad).is_err(), "{bad}");
        }
    }
}
