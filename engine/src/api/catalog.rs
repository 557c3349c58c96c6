//! The connector catalog: `GET /v1/connectors` and `GET /v1/connectors/{name}`.
//!
//! The list answers a summary per connector (what it is, the auth it accepts, its default
//! base URL and request budget, each action's side effect and scopes); one connector's page
//! adds every action's input and output JSON Schema, idempotency, secret fields and paging.
//! Both are the same manifests the validator checks definitions against.

use axum::Json;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Path, Query};
use connectors::Registry;
use connectors::manifest::{Category, Manifest};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiErrorCode};
use crate::auth::{Auth, Viewer};

/// `GET /v1/connectors` filters.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct CatalogQuery {
    /// Only this category (`communication`, `files`, `crm`, `data`, `dev_tools`, `generic`).
    category: Option<String>,
}

/// A connector without its schemas.
pub(crate) fn summary(m: &Manifest) -> Value {
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
    Auth(..): Auth<Viewer>,
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
    let connectors: Vec<Value> = Registry::builtin()
        .manifests()
        .filter(|m| category.is_none_or(|c| m.category == c))
        .map(summary)
        .collect();
    Ok(Json(json!({ "connectors": connectors })))
}

pub(super) async fn show(
    Auth(..): Auth<Viewer>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let registry = Registry::builtin();
    let manifest = registry
        .get(&name)
        .ok_or_else(|| ApiError::not_found(format!("connector `{name}`")))?;
    Ok(Json(serde_json::to_value(manifest).unwrap_or(Value::Null)))
}
