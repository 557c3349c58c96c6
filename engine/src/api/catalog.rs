//! The connector catalog: `GET /v1/connectors` and `GET /v1/connectors/{name}`.
//!
//! The list answers a summary per connector (what it is, the auth it accepts, its default
//! base URL and request budget, each action's side effect and scopes); one connector's page
//! adds every action's input and output JSON Schema, idempotency, secret fields and paging.
//! Both are the same manifests the validator checks definitions against: the built-ins and
//! the workspace's custom tools, which are marked `"custom": true`.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query, State};
use connectors::manifest::{Category, Manifest};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiErrorCode};
use crate::auth::{Auth, Viewer};
use crate::service::Shared;

/// `GET /v1/connectors` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CatalogQuery {
    /// Only this category (`communication`, `files`, `crm`, `data`, `dev_tools`, `generic`).
    category: Option<String>,
}

/// A connector without its schemas.
pub(crate) fn summary(m: &Manifest) -> Value {
    let mut v = summary_of(m);
    if is_custom(m)
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert("custom".into(), Value::Bool(true));
    }
    v
}

/// Whether `m` is a workspace's custom tool rather than a built-in.
fn is_custom(m: &Manifest) -> bool {
    connectors::Registry::builtin().get(&m.name).is_none()
}

fn summary_of(m: &Manifest) -> Value {
    json!({
        "name": m.name,
        "title": m.title,
        "category": m.category,
        "docs_url": m.docs_url,
        "auth": m.auth,
        "requires_connection": m.requires_connection,
        "default_base_url": m.default_base_url,
        "rate_limit": m.rate_limit,
        "actions": m.actions.iter().map(|a| json!({
            "name": a.name,
            "summary": a.summary,
            "side_effect": a.side_effect,
            "scopes": a.scopes,
        })).collect::<Vec<_>>(),
    })
}

pub(super) async fn list(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
    q: Result<Query<CatalogQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let category = match q.category.as_deref() {
        None => None,
        Some(name) => Some(Category::parse(name).ok_or_else(|| {
            ApiError::new(
                ApiErrorCode::InvalidInput,
                format!(
                    "category `{name}` is not one of {}",
                    Category::ALL.map(Category::as_str).join(", ")
                ),
            )
        })?),
    };
    let registry = super::registry_of(&s, caller.workspace_id).await?;
    let connectors: Vec<Value> = registry
        .manifests()
        .filter(|m| category.is_none_or(|c| m.category == c))
        .map(summary)
        .collect();
    Ok(Json(json!({ "connectors": connectors })))
}

pub(super) async fn show(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let registry = super::registry_of(&s, caller.workspace_id).await?;
    let manifest = registry
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("connector `{name}`")))?;
    let mut v = serde_json::to_value(manifest).unwrap_or(Value::Null);
    if is_custom(manifest)
        && let Some(obj) = v.as_object_mut()
    {
        obj.insert("custom".into(), Value::Bool(true));
    }
    Ok(Json(v))
}
