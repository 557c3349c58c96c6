//! Custom tools: `POST/GET /v1/tools/custom`, `GET/PUT/DELETE /v1/tools/custom/{name}` and
//! `POST /v1/tools/import-openapi`.
//!
//! Writes need the admin role and are audited in their transaction (`tool.created`,
//! `tool.replaced`, `tool.deleted`); reads need viewer. A definition with problems is answered
//! `400 invalid_input` with `details.problems`, each `{path, message}`.

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::IntoResponse;
use connectors::openapi::{self, ImportError, ImportOptions};
use schemas::db::entities::custom_tool;
use schemas::tool::{CustomTool, ToolProblem};
use sea_orm::TransactionTrait as _;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiErrorCode, record};
use crate::auth::{Admin, Auth, Viewer};
use crate::service::Shared;
use crate::tools::{self, ToolError};

/// Largest `POST /v1/tools/import-openapi` body: the largest document, JSON-quoted, with room.
pub(super) const MAX_IMPORT_BYTES: usize = openapi::MAX_DOCUMENT_BYTES + 1024 * 1024;

impl From<ToolError> for ApiError {
    fn from(e: ToolError) -> Self {
        match e {
            ToolError::Invalid(problems) => invalid(&problems),
            ToolError::Exists(_) => ApiError::new(ApiErrorCode::Conflict, e.to_string()),
            ToolError::NotFound(name) => ApiError::not_found(format!("custom tool `{name}`")),
            ToolError::Db(e) => ApiError::internal(e),
        }
    }
}

fn invalid(problems: &[ToolProblem]) -> ApiError {
    ApiError::new(
        ApiErrorCode::InvalidInput,
        format!("the tool definition has {} problem(s)", problems.len()),
    )
    .with_details(json!({ "problems": problems }))
}

/// The body as a tool definition, or `400` naming where it does not fit the format.
fn parse_tool(body: &[u8]) -> Result<CustomTool, ApiError> {
    if body.len() > schemas::tool::MAX_DEFINITION_BYTES {
        return Err(ApiError::new(
            ApiErrorCode::PayloadTooLarge,
            format!(
                "a tool definition is at most {} bytes",
                schemas::tool::MAX_DEFINITION_BYTES
            ),
        ));
    }
    let mut de = serde_json::Deserializer::from_slice(body);
    serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let path = if path == "." { String::new() } else { path };
        invalid(&[ToolProblem {
            path,
            message: if inner.is_data() {
                inner.to_string()
            } else {
                format!("the body is not a JSON tool definition: {inner}")
            },
        }])
    })
}

/// The API view of a stored tool.
fn view(row: &custom_tool::Model) -> Value {
    json!({
        "name": row.name,
        "definition": row.definition,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
        "updated_by": row.updated_by,
    })
}

/// What the ledger records of a tool: no secrets exist in one, so its shape in brief.
fn details(tool: &CustomTool, source: &str) -> Value {
    json!({
        "tool": tool.name,
        "source": source,
        "base_url": tool.base_url,
        "auth": tool.auth.iter().map(|a| a.type_name()).collect::<Vec<_>>(),
        "actions": tool.actions.iter().map(|a| &a.name).collect::<Vec<_>>(),
    })
}

pub(super) async fn list(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
) -> Result<Json<Value>, ApiError> {
    let rows = tools::list(&s.db, caller.workspace_id).await?;
    let list: Vec<Value> = rows.iter().map(view).collect();
    Ok(Json(json!({ "tools": list })))
}

pub(super) async fn show(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = tools::get(&s.db, caller.workspace_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("custom tool `{name}`")))?;
    Ok(Json(view(&row)))
}

pub(super) async fn create(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body?;
    let tool = parse_tool(&body)?;
    let tx = s.db.begin().await?;
    let row = tools::create(&tx, caller.workspace_id, &tool, &caller.name).await?;
    record(&tx, &caller, "tool.created", details(&tool, "definition")).await?;
    tx.commit().await?;
    s.definitions.tools.forget(caller.workspace_id);
    Ok((StatusCode::CREATED, Json(view(&row))))
}

pub(super) async fn replace(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let tool = parse_tool(&body)?;
    if tool.name != name {
        return Err(invalid(&[ToolProblem {
            path: "name".into(),
            message: format!(
                "the definition is named `{}` but was sent to `{name}`",
                tool.name
            ),
        }]));
    }
    let tx = s.db.begin().await?;
    let row = tools::replace(&tx, caller.workspace_id, &tool, &caller.name).await?;
    record(&tx, &caller, "tool.replaced", details(&tool, "definition")).await?;
    tx.commit().await?;
    s.definitions.tools.forget(caller.workspace_id);
    Ok(Json(view(&row)))
}

pub(super) async fn delete(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let tx = s.db.begin().await?;
    let row = tools::delete(&tx, caller.workspace_id, &name).await?;
    record(
        &tx,
        &caller,
        "tool.deleted",
        json!({ "tool": row.name, "tool_id": row.id }),
    )
    .await?;
    tx.commit().await?;
    s.definitions.tools.forget(caller.workspace_id);
    Ok(StatusCode::NO_CONTENT)
}

/// `POST /v1/tools/import-openapi` body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct ImportBody {
    /// The OpenAPI document: its text (JSON or YAML), or the JSON document itself.
    document: Value,
    /// The tool's name; else made from `info.title`.
    name: Option<String>,
    /// The base URL, replacing the document's `servers`.
    base_url: Option<String>,
    /// What a relative `servers[0].url` is resolved against.
    server_base: Option<String>,
}

/// `POST /v1/tools/import-openapi` query.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct ImportQuery {
    /// Answer with the tool and warnings without storing it.
    #[serde(default)]
    dry_run: bool,
    /// Replace a tool of the same name instead of answering `409`.
    #[serde(default)]
    replace: bool,
}

pub(super) async fn import(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    q: Result<Query<ImportQuery>, QueryRejection>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let Query(q) = q?;
    let body = body?;
    let request: ImportBody = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            ApiErrorCode::InvalidInput,
            format!(
                "the body must be a JSON object `{{\"document\", \"name\"?, \"base_url\"?, \"server_base\"?}}`: {e}"
            ),
        )
    })?;
    let options = ImportOptions {
        name: request.name,
        base_url: request.base_url,
        server_base: request.server_base,
        reserved: tools::reserved_names(),
    };
    let imported = match &request.document {
        Value::String(text) => openapi::import(text, &options),
        doc @ Value::Object(_) => openapi::import_value(doc, &options),
        _ => {
            return Err(ApiError::new(
                ApiErrorCode::InvalidInput,
                "`document` must be the OpenAPI document's text (JSON or YAML) or a JSON object",
            ));
        }
    }
    .map_err(import_error)?;
    let warnings = json!(imported.warnings);
    let tool = imported.tool;
    let definition = serde_json::to_value(&tool).unwrap_or(Value::Null);
    if q.dry_run {
        let problems = tools::check(&tool);
        if !problems.is_empty() {
            return Err(invalid(&problems));
        }
        return Ok((
            StatusCode::OK,
            Json(json!({ "stored": false, "definition": definition, "warnings": warnings })),
        ));
    }
    let tx = s.db.begin().await?;
    let exists = tools::get(&tx, caller.workspace_id, &tool.name)
        .await?
        .is_some();
    let (row, kind, status) = if exists && q.replace {
        let row = tools::replace(&tx, caller.workspace_id, &tool, &caller.name).await?;
        (row, "tool.replaced", StatusCode::OK)
    } else {
        let row = tools::create(&tx, caller.workspace_id, &tool, &caller.name).await?;
        (row, "tool.created", StatusCode::CREATED)
    };
    record(&tx, &caller, kind, details(&tool, "openapi")).await?;
    tx.commit().await?;
    s.definitions.tools.forget(caller.workspace_id);
    let mut answer = view(&row);
    if let Some(obj) = answer.as_object_mut() {
        obj.insert("stored".into(), Value::Bool(true));
        obj.insert("warnings".into(), warnings);
    }
    Ok((status, Json(answer)))
}

fn import_error(e: ImportError) -> ApiError {
    match e {
        ImportError::Invalid(problems) => invalid(&problems),
        ImportError::TooLarge(_) => ApiError::new(ApiErrorCode::PayloadTooLarge, e.to_string()),
        other => ApiError::new(ApiErrorCode::InvalidInput, other.to_string()),
    }
}
