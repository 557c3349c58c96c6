//! Principals and their tokens: `/v1/whoami`, `/v1/principals[/{name}[/tokens]]`,
//! `/v1/tokens[/{id}]`.
//!
//! Admins manage every principal and token of their workspace; anyone may list, create and
//! revoke their own tokens. A token's text is in the answer that creates it and nowhere else.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use schemas::db::entities::principal::Role;
use serde_json::{Value, json};
use uuid::Uuid;

use sea_orm::TransactionTrait as _;

use super::{ApiError, ApiErrorCode, parse_optional_body, parse_secret_body, record};
use crate::auth::{self, Admin, Auth, Caller, NewPrincipal, NewToken, Viewer};
use crate::service::Shared;

pub(super) async fn whoami(Auth(caller, ..): Auth<Viewer>) -> Json<Value> {
    Json(json!({
        "principal": caller.name,
        "kind": caller.kind,
        "role": caller.role,
        "workspace_id": caller.workspace_id,
        "token_id": caller.token_id,
    }))
}

pub(super) async fn create(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body?;
    let new: NewPrincipal = parse_secret_body(
        &body,
        "a JSON object `{\"name\", \"role\": \"viewer|operator|author|admin\", \"kind\"?: \"user|service|agent\"}`",
    )?;
    let tx = s.db.begin().await?;
    let row =
        auth::create_principal(&tx, caller.workspace_id, Some(caller.principal_id), new).await?;
    record(&tx, &caller, "principal.created", principal_details(&row)).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(auth::principal_view(&row))))
}

pub(super) async fn list(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
) -> Result<Json<Value>, ApiError> {
    let rows = auth::list_principals(&s.db, caller.workspace_id).await?;
    let list: Vec<Value> = rows.iter().map(auth::principal_view).collect();
    Ok(Json(json!({ "principals": list })))
}

pub(super) async fn get(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = auth::find_principal(&s.db, caller.workspace_id, &name).await?;
    Ok(Json(auth::principal_view(&row)))
}

pub(super) async fn delete(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    if name == caller.name {
        return Err(ApiError::new(
            ApiErrorCode::Conflict,
            "a principal cannot delete itself; ask another admin",
        ));
    }
    let tx = s.db.begin().await?;
    let row = auth::delete_principal(&tx, caller.workspace_id, &name).await?;
    record(&tx, &caller, "principal.deleted", principal_details(&row)).await?;
    tx.commit().await?;
    s.token_cache.forget_principal(row.id);
    Ok(Json(auth::principal_view(&row)))
}

fn principal_details(row: &schemas::db::entities::principal::Model) -> Value {
    json!({ "principal": row.name, "kind": row.kind, "role": row.role })
}

/// Admins act on anyone's tokens; others on their own only.
fn may_manage(caller: &Caller, principal: &str) -> Result<(), ApiError> {
    if caller.role == Role::Admin || caller.name == principal {
        Ok(())
    } else {
        Err(ApiError::new(
            ApiErrorCode::Forbidden,
            "only admins manage other principals' tokens",
        ))
    }
}

pub(super) async fn issue_token(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    may_manage(&caller, &name)?;
    let body = body?;
    let new: NewToken = parse_optional_body(
        &body,
        "a JSON object `{\"name\"?: string, \"expires_in\"?: \"30d\"}`",
    )?;
    let tx = s.db.begin().await?;
    let principal = auth::find_principal(&tx, caller.workspace_id, &name).await?;
    let issued = auth::issue_token(&tx, &principal, new).await?;
    record(
        &tx,
        &caller,
        "token.issued",
        json!({ "principal": principal.name, "token_id": issued.row.id, "prefix": issued.row.prefix, "expires_at": issued.row.expires_at }),
    )
    .await?;
    tx.commit().await?;
    let mut view = auth::token_view(&issued.row, Some(&principal.name));
    if let Some(obj) = view.as_object_mut() {
        obj.insert("token".into(), Value::String(issued.token.to_string()));
    }
    Ok((StatusCode::CREATED, Json(view)))
}

pub(super) async fn list_tokens_of(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    may_manage(&caller, &name)?;
    let principal = auth::find_principal(&s.db, caller.workspace_id, &name).await?;
    let rows = auth::list_tokens(&s.db, caller.workspace_id, Some(principal.id)).await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| auth::token_view(r, Some(&principal.name)))
        .collect();
    Ok(Json(json!({ "tokens": list })))
}

pub(super) async fn list_tokens(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
) -> Result<Json<Value>, ApiError> {
    let rows = auth::list_tokens(&s.db, caller.workspace_id, None).await?;
    let names: std::collections::HashMap<Uuid, String> =
        auth::list_principals(&s.db, caller.workspace_id)
            .await?
            .into_iter()
            .map(|p| (p.id, p.name))
            .collect();
    let list: Vec<Value> = rows
        .iter()
        .map(|r| auth::token_view(r, names.get(&r.principal_id).map(String::as_str)))
        .collect();
    Ok(Json(json!({ "tokens": list })))
}

pub(super) async fn revoke_token(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    // A malformed id names no token in any workspace.
    let id = Uuid::parse_str(&id).map_err(|_| ApiError::not_found(format!("token {id}")))?;
    let row = auth::find_token(&s.db, caller.workspace_id, id).await?;
    if caller.role != Role::Admin && row.principal_id != caller.principal_id {
        return Err(ApiError::new(
            ApiErrorCode::Forbidden,
            "only admins revoke other principals' tokens",
        ));
    }
    let tx = s.db.begin().await?;
    let row = auth::revoke_token(&tx, caller.workspace_id, id).await?;
    record(
        &tx,
        &caller,
        "token.revoked",
        json!({ "token_id": row.id, "prefix": row.prefix }),
    )
    .await?;
    tx.commit().await?;
    s.token_cache.forget_token(row.id);
    Ok(Json(auth::token_view(&row, None)))
}
