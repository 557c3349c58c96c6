//! The HTTP API (JSON; the OpenAPI document is served at `/openapi.json`).
//!
//! Every query is scoped to the caller's workspace. Until principals and tokens exist every
//! caller is in the `default` workspace.

mod approvals;
mod audit;
pub(crate) mod catalog;
pub mod error;
mod principals;

use axum::body::Bytes;
use axum::extract::rejection::{BytesRejection, QueryRejection};
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post, put};
use axum::{Json, Router};
use connectors::Registry;
use schemas::db::entities::{RunStatus, attempt, run, step_instance};
use schemas::transport;
use sea_orm::TransactionTrait as _;
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

pub use error::{ApiError, ApiErrorCode};

use crate::auth::{Admin, Auth, Author, Operator, Viewer};
use crate::connections::ConnectionError;
use crate::secrets::{self, SecretError, SecretInfo};
use crate::service::Shared;
use crate::store::{self, StoreError};

/// Largest accepted request body (definitions and run inputs).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;
/// Largest page of runs.
pub const MAX_PAGE: u64 = 500;

/// The API's routes.
pub fn router(shared: Shared) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/openapi.json", get(openapi))
        .route("/v1/workflows", get(list_workflows))
        .route("/v1/workflows/{name}", put(put_workflow).get(get_workflow))
        .route("/v1/workflows/{name}/runs", post(start_run))
        .route("/v1/runs", get(list_runs))
        .route("/v1/runs/{id}", get(get_run))
        .route("/v1/runs/{id}/cancel", post(cancel_run))
        .route(
            "/v1/hooks/{workflow}/{trigger_id}",
            post(crate::triggers::webhook::receive),
        )
        .route("/v1/events/{name}", post(publish_event))
        .route(
            "/v1/connections",
            post(create_connection).get(list_connections),
        )
        .route(
            "/v1/connections/{name}",
            get(get_connection).delete(revoke_connection),
        )
        .route("/v1/connections/{name}/credentials", put(rotate_connection))
        .route("/v1/connections/{name}/scopes", put(set_connection_scopes))
        .route(
            "/v1/connections/{name}/settings",
            put(set_connection_settings),
        )
        .route("/v1/connections/{name}/test", post(test_connection))
        .route("/v1/connectors", get(catalog::list))
        .route("/v1/connectors/{name}", get(catalog::show))
        .route("/v1/policy", get(get_policy).put(put_policy))
        .route("/v1/approvals", get(approvals::list))
        .route(
            "/v1/runs/{id}/steps/{step}/approve",
            post(approvals::approve),
        )
        .route("/v1/runs/{id}/steps/{step}/reject", post(approvals::reject))
        .route("/v1/oauth/callback", get(oauth_callback))
        .route("/v1/oauth/{connection}/start", get(oauth_start))
        .route("/v1/audit", get(audit::list))
        .route("/v1/audit/export", get(audit::export))
        .route("/v1/audit/verify", get(audit::verify))
        .route("/v1/whoami", get(principals::whoami))
        .route(
            "/v1/principals",
            post(principals::create).get(principals::list),
        )
        .route(
            "/v1/principals/{name}",
            get(principals::get).delete(principals::delete),
        )
        .route(
            "/v1/principals/{name}/tokens",
            post(principals::issue_token).get(principals::list_tokens_of),
        )
        .route("/v1/tokens", get(principals::list_tokens))
        .route(
            "/v1/tokens/{id}",
            axum::routing::delete(principals::revoke_token),
        )
        .route("/v1/secrets", get(list_secrets))
        .route("/v1/secrets/{name}", put(put_secret).delete(delete_secret))
        .route("/metrics", get(metrics))
        .fallback(|| async { ApiError::new(ApiErrorCode::NotFound, "no such route") })
        .layer(DefaultBodyLimit::max(MAX_BODY_BYTES))
        .with_state(shared)
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        match e {
            StoreError::WorkflowNotFound(name) => ApiError::not_found(format!("workflow `{name}`")),
            StoreError::RunNotFound(id) => ApiError::not_found(format!("run {id}")),
            StoreError::InvalidInput(m) => ApiError::new(ApiErrorCode::InvalidInput, m),
            StoreError::RunFinished(id) => ApiError::new(
                ApiErrorCode::Conflict,
                format!("run {id} has already finished"),
            ),
            other => ApiError::internal(other),
        }
    }
}

async fn healthz() -> impl IntoResponse {
    Json(json!({ "status": "ok" }))
}

async fn readyz(State(s): State<Shared>) -> Result<Json<Value>, ApiError> {
    let db_ok = s.db.ping().await.is_ok();
    let nats_ok = s.nats.connection_state() == async_nats::connection::State::Connected;
    if db_ok && nats_ok {
        Ok(Json(json!({ "status": "ready" })))
    } else {
        Err(ApiError::new(ApiErrorCode::Unavailable, "not ready")
            .with_details(json!({ "database": db_ok, "nats": nats_ok })))
    }
}

async fn openapi() -> impl IntoResponse {
    (
        [(axum::http::header::CONTENT_TYPE, "application/json")],
        include_str!("openapi.json"),
    )
}

async fn put_workflow(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Author>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body?;
    let text = std::str::from_utf8(&body).map_err(|_| {
        ApiError::new(
            ApiErrorCode::InvalidInput,
            "the definition is not UTF-8 text",
        )
    })?;
    let problems_json = |problems: Vec<schemas::validate::Problem>| {
        let list: Vec<Value> = problems
            .iter()
            .map(|p| json!({ "path": p.path, "line": p.pos.line, "column": p.pos.column, "message": p.message }))
            .collect();
        ApiError::new(
            ApiErrorCode::InvalidDefinition,
            format!("the definition has {} problem(s)", list.len()),
        )
        .with_details(json!({ "problems": list }))
    };
    let workflow =
        schemas::validate::validate(text, &Registry::builtin()).map_err(|p| problems_json(p.0))?;
    if workflow.name != name {
        let doc = schemas::source::parse(text).ok();
        let pos = doc
            .map(|d| d.pos("name"))
            .unwrap_or(schemas::source::Pos::START);
        return Err(problems_json(vec![schemas::validate::Problem {
            path: "name".into(),
            pos,
            message: format!(
                "the definition is named `{}` but was sent to `{name}`",
                workflow.name
            ),
        }]));
    }
    let forbidden = crate::policy::get(&s.db, caller.workspace_id)
        .await?
        .forbidden(&workflow);
    if !forbidden.is_empty() {
        let doc = schemas::source::parse(text).ok();
        let list: Vec<Value> = forbidden
            .iter()
            .map(|(path, message)| {
                let pos = doc
                    .as_ref()
                    .map_or(schemas::source::Pos::START, |d| d.pos(path));
                json!({ "path": path, "line": pos.line, "column": pos.column, "message": message })
            })
            .collect();
        return Err(ApiError::new(
            ApiErrorCode::Forbidden,
            format!(
                "the workspace's policy forbids {} step(s) of this workflow",
                list.len()
            ),
        )
        .with_details(json!({ "problems": list })));
    }
    let governed = crate::connections::check_workflow(
        &s.db,
        &Registry::builtin(),
        caller.workspace_id,
        &workflow,
    )
    .await?;
    if !governed.is_empty() {
        let doc = schemas::source::parse(text).ok();
        return Err(problems_json(
            governed
                .into_iter()
                .map(|(path, message)| schemas::validate::Problem {
                    pos: doc
                        .as_ref()
                        .map_or(schemas::source::Pos::START, |d| d.pos(&path)),
                    path,
                    message,
                })
                .collect(),
        ));
    }
    let (version, created) =
        store::put_workflow(&s.db, caller.workspace_id, &workflow, text).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "name": name, "version": version }))))
}

async fn list_workflows(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
) -> Result<Json<Value>, ApiError> {
    let rows = store::list_workflows(&s.db, caller.workspace_id).await?;
    let list: Vec<Value> = rows
        .into_iter()
        .map(|w| {
            json!({
                "name": w.name,
                "version": w.version,
                "description": w.definition.get("description"),
                "updated_at": w.created_at,
            })
        })
        .collect();
    Ok(Json(json!({ "workflows": list })))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct VersionQuery {
    version: Option<i32>,
}

async fn get_workflow(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
    Path(name): Path<String>,
    q: Result<Query<VersionQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let row = store::get_workflow(&s.db, caller.workspace_id, &name, q.version)
        .await?
        .ok_or_else(|| match q.version {
            Some(v) => ApiError::not_found(format!("workflow `{name}` version {v}")),
            None => ApiError::not_found(format!("workflow `{name}`")),
        })?;
    let workflow = s.definitions.parse(&row)?;
    let triggers = crate::triggers::scheduler::describe(
        &s,
        caller.workspace_id,
        &name,
        &workflow.triggers,
        chrono::Utc::now(),
    )
    .await?;
    Ok(Json(json!({
        "name": row.name,
        "version": row.version,
        "definition": row.definition,
        "source": row.source,
        "created_at": row.created_at,
        "triggers": triggers,
    })))
}

/// Starts a run of the latest version (or answers with the run an `Idempotency-Key` names),
/// committed with whatever other starts arrived at the same moment.
async fn start_run(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Operator>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body?;
    let input: Value = if body.iter().all(u8::is_ascii_whitespace) {
        Value::Null
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ApiErrorCode::InvalidInput,
                format!("the body is not JSON: {e}"),
            )
        })?
    };
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => {
            let v = v
                .to_str()
                .ok()
                .filter(|v| !v.is_empty() && v.len() <= 255)
                .ok_or_else(|| {
                    ApiError::new(
                        ApiErrorCode::InvalidInput,
                        "Idempotency-Key must be 1 to 255 visible ASCII characters",
                    )
                })?;
            Some(v.to_owned())
        }
    };
    let trigger = json!({ "kind": "api", "principal": caller.name, "body": input.clone() });
    let workspace_id = caller.workspace_id;
    let (version, workflow) = s
        .definitions
        .latest(&s.db, workspace_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("workflow `{name}`")))?;
    let started = s
        .starter
        .start(store::NewRun {
            pinned: store::Pinned {
                workspace_id,
                name,
                version,
                workflow,
            },
            input,
            // Namespaced, so a caller's key can never take the slot of a trigger's key
            // (`webhook:…`, `event:…`, `schedule:…`).
            idempotency_key: key.map(|k| format!("api:{k}")),
            trigger,
            // An authenticated caller's trace continues into the run.
            traceparent: headers
                .get(transport::TRACEPARENT_HEADER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned),
        })
        .await?;
    let status = if started.created {
        StatusCode::ACCEPTED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(json!({ "run_id": started.run_id }))))
}

fn parse_run_id(id: &str) -> Result<Uuid, ApiError> {
    // A malformed id cannot name a run in any workspace, so it is simply not found.
    Uuid::parse_str(id).map_err(|_| ApiError::not_found(format!("run {id}")))
}

/// The API view of a run and its steps.
pub fn run_json(
    run: &run::Model,
    steps: &[step_instance::Model],
    attempts: &[attempt::Model],
) -> Value {
    let mut by_step: std::collections::HashMap<Uuid, Vec<&attempt::Model>> =
        std::collections::HashMap::new();
    for a in attempts {
        by_step.entry(a.step_instance_id).or_default().push(a);
    }
    let steps: Vec<Value> = steps
        .iter()
        .map(|s| {
            let tries: Vec<Value> = by_step
                .get(&s.id)
                .map(Vec::as_slice)
                .unwrap_or_default()
                .iter()
                .map(|a| {
                    json!({
                        "attempt": a.attempt,
                        "status": a.status,
                        "worker": a.worker_id,
                        "error": a.error,
                        "started_at": a.started_at,
                        "finished_at": a.finished_at,
                    })
                })
                .collect();
            let mut v = json!({
                "id": s.step_id,
                "status": s.status,
                "attempts": s.attempt,
                "output": s.output,
                "error": s.error,
                "started_at": s.started_at.or(s.dispatched_at),
                "finished_at": s.finished_at,
                "history": tries,
            });
            if s.item_index >= 0
                && let Some(obj) = v.as_object_mut()
            {
                obj.insert("item".into(), json!(s.item_index));
            }
            if let (Some(total), Some(obj)) = (s.items_total, v.as_object_mut()) {
                obj.insert("items".into(), json!(total));
            }
            v
        })
        .collect();
    json!({
        "id": run.id,
        "workflow": run.workflow_name,
        "version": run.workflow_version,
        "status": run.status,
        "input": run.input,
        "trigger": run.trigger,
        "outputs": run.outputs,
        "error": run.error,
        "created_at": run.created_at,
        "started_at": run.started_at,
        "finished_at": run.finished_at,
        "steps": steps,
    })
}

async fn get_run(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
    Path(id): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let run_id = parse_run_id(&id)?;
    let (run, steps, attempts) = store::get_run(&s.db, caller.workspace_id, run_id)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("run {run_id}")))?;
    Ok(Json(run_json(&run, &steps, &attempts)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RunsQuery {
    workflow: Option<String>,
    status: Option<String>,
    limit: Option<u64>,
    cursor: Option<String>,
}

async fn list_runs(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
    q: Result<Query<RunsQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let status = match q.status.as_deref() {
        None => None,
        Some(text) => Some(
            serde_json::from_value::<RunStatus>(Value::String(text.to_owned())).map_err(|_| {
                ApiError::new(
                    ApiErrorCode::InvalidInput,
                    format!("status `{text}` is not one of queued, running, waiting, succeeded, failed, cancelled, timed_out"),
                )
            })?,
        ),
    };
    let cursor = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(Uuid::parse_str(c).map_err(|_| {
            ApiError::new(
                ApiErrorCode::InvalidInput,
                "cursor is not one this API handed out",
            )
        })?),
    };
    let limit = q.limit.unwrap_or(50).clamp(1, MAX_PAGE);
    let runs = store::list_runs(
        &s.db,
        caller.workspace_id,
        q.workflow.as_deref(),
        status,
        cursor,
        limit,
    )
    .await?;
    let next = if runs.len() as u64 == limit {
        runs.last().map(|r| r.id)
    } else {
        None
    };
    let list: Vec<Value> = runs
        .iter()
        .map(|r| {
            json!({
                "id": r.id,
                "workflow": r.workflow_name,
                "version": r.workflow_version,
                "status": r.status,
                "created_at": r.created_at,
                "finished_at": r.finished_at,
            })
        })
        .collect();
    Ok(Json(json!({ "runs": list, "next_cursor": next })))
}

async fn cancel_run(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Operator>,
    Path(id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let run_id = parse_run_id(&id)?;
    store::cancel_run(&s.db, &s.definitions, caller.workspace_id, run_id).await?;
    // Workers that have not started the run's steps refuse them; results that still arrive
    // are fenced out by the run's terminal status. Best effort: the database already decided.
    if let Err(e) = s
        .nats
        .publish(transport::CANCEL_SUBJECT, run_id.to_string().into())
        .await
    {
        tracing::warn!(error = %e, %run_id, "cancel announcement not sent");
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(json!({ "run_id": run_id, "status": "cancelled" })),
    ))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct EventBody {
    /// Deduplication id; a second event with the same id is ignored.
    id: Option<String>,
    /// Payload.
    #[serde(default)]
    data: Value,
}

async fn publish_event(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Operator>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    if !schemas::validate::is_event_name(&name) {
        return Err(ApiError::new(
            ApiErrorCode::InvalidInput,
            format!(
                "event name `{}` is not valid: use 1 to 128 lowercase letters, digits, `.`, `-` and `_`",
                name.escape_debug()
            ),
        ));
    }
    let body = body?;
    let event: EventBody = if body.iter().all(u8::is_ascii_whitespace) {
        EventBody {
            id: None,
            data: Value::Null,
        }
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ApiError::new(
                ApiErrorCode::InvalidInput,
                format!(
                    "the body must be a JSON object `{{\"id\"?: string, \"data\"?: any}}`: {e}"
                ),
            )
        })?
    };
    if let Some(id) = &event.id
        && (id.is_empty() || id.len() > crate::triggers::events::MAX_EVENT_ID)
    {
        return Err(ApiError::new(
            ApiErrorCode::InvalidInput,
            format!(
                "`id` must be 1 to {} characters",
                crate::triggers::events::MAX_EVENT_ID
            ),
        ));
    }
    let published = crate::triggers::events::publish(
        &s.db,
        caller.workspace_id,
        &name,
        event.id,
        event.data,
        schemas::envelope::Provenance::Api {
            principal: caller.name.clone(),
        },
    )
    .await?;
    if published.created {
        s.outbox.notify_one();
        Ok((
            StatusCode::ACCEPTED,
            Json(json!({ "id": published.id, "name": name })),
        ))
    } else {
        Ok((
            StatusCode::OK,
            Json(json!({ "id": published.id, "name": name, "duplicate": true })),
        ))
    }
}

impl From<SecretError> for ApiError {
    fn from(e: SecretError) -> Self {
        match e {
            SecretError::BadName(m) | SecretError::BadValue(m) => {
                ApiError::new(ApiErrorCode::InvalidInput, m)
            }
            SecretError::NotFound(name) => ApiError::not_found(format!("secret `{name}`")),
            SecretError::NoKeyring => ApiError::new(ApiErrorCode::Unavailable, e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

fn secret_json(info: &SecretInfo) -> Value {
    json!({
        "name": info.name,
        "key_version": info.key_version,
        "created_at": info.created_at,
        "updated_at": info.updated_at,
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SecretBody {
    value: String,
}

// No Debug: the value must not end up in a log line by accident.
impl std::fmt::Debug for SecretBody {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretBody { value: <redacted> }")
    }
}

async fn put_secret(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    secrets::check_name(&name)?;
    let body = body?;
    // serde_json's error would not quote the value, but keep even its position out of replies.
    let parsed: SecretBody = serde_json::from_slice(&body).map_err(|_| {
        ApiError::new(
            ApiErrorCode::InvalidInput,
            "the body must be a JSON object `{\"value\": \"<the secret>\"}`",
        )
    })?;
    let value = zeroize::Zeroizing::new(parsed.value.into_bytes());
    let (info, created) = secrets::put(
        &s.db,
        s.keyring.as_deref(),
        caller.workspace_id,
        &name,
        &value,
        &caller.name,
    )
    .await?;
    s.secrets.forget(caller.workspace_id, &name);
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(secret_json(&info))))
}

async fn list_secrets(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
) -> Result<Json<Value>, ApiError> {
    let list = secrets::list(&s.db, caller.workspace_id).await?;
    Ok(Json(
        json!({ "secrets": list.iter().map(secret_json).collect::<Vec<_>>() }),
    ))
}

async fn delete_secret(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    let tx = s.db.begin().await?;
    let deleted = secrets::delete(&tx, caller.workspace_id, &name).await?;
    if deleted {
        record(&tx, &caller, "secret.deleted", json!({ "secret": name })).await?;
    }
    tx.commit().await?;
    s.secrets.forget(caller.workspace_id, &name);
    if deleted {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(ApiError::not_found(format!("secret `{name}`")))
    }
}

/// The engine's metrics (see [`crate::metrics`]), with the gauges sampled now.
async fn metrics(State(s): State<Shared>) -> impl IntoResponse {
    sample_gauges(&s).await;
    (
        [(
            axum::http::header::CONTENT_TYPE,
            crate::metrics::CONTENT_TYPE,
        )],
        crate::metrics::engine().encode(&s.hooks),
    )
}

/// How long a scrape waits for the database and JetStream before serving the last samples.
const SAMPLE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Samples the outbox backlog and every consumer's pending counts. A part that cannot be
/// read in time keeps its previous value: a scrape never fails for it.
async fn sample_gauges(s: &Shared) {
    use futures::StreamExt as _;
    let metrics = crate::metrics::engine();
    if let Ok(Ok(n)) = tokio::time::timeout(SAMPLE_TIMEOUT, store::outbox_backlog(&s.db)).await {
        metrics
            .outbox_backlog
            .set(i64::try_from(n).unwrap_or(i64::MAX));
    }
    let js = async_nats::jetstream::new(s.nats.clone());
    let consumers = async {
        for name in [
            transport::STEPS_STREAM,
            transport::RESULTS_STREAM,
            transport::EVENTS_STREAM,
        ] {
            let Ok(stream) = js.get_stream(name).await else {
                continue;
            };
            let mut infos = stream.consumers();
            while let Some(Ok(info)) = infos.next().await {
                let label = crate::metrics::ConsumerLabel {
                    consumer: info.name.clone(),
                };
                metrics
                    .consumer_pending
                    .get_or_create(&label)
                    .set(i64::try_from(info.num_pending).unwrap_or(i64::MAX));
                metrics
                    .consumer_ack_pending
                    .get_or_create(&label)
                    .set(i64::try_from(info.num_ack_pending).unwrap_or(i64::MAX));
            }
        }
    };
    let _ = tokio::time::timeout(SAMPLE_TIMEOUT, consumers).await;
}

impl From<ConnectionError> for ApiError {
    fn from(e: ConnectionError) -> Self {
        match e {
            ConnectionError::Invalid(m) => ApiError::new(ApiErrorCode::InvalidInput, m),
            ConnectionError::NotFound(name) => ApiError::not_found(format!("connection `{name}`")),
            ConnectionError::Exists(_) => ApiError::new(ApiErrorCode::Conflict, e.to_string()),
            ConnectionError::NoKeyring => ApiError::new(ApiErrorCode::Unavailable, e.to_string()),
            other => ApiError::internal(other),
        }
    }
}

/// [`parse_secret_body`] for a body that may also be empty, meaning `T::default()`.
pub(crate) fn parse_optional_body<T: serde::de::DeserializeOwned + Default>(
    body: &[u8],
    shape: &str,
) -> Result<T, ApiError> {
    if body.iter().all(u8::is_ascii_whitespace) {
        Ok(T::default())
    } else {
        parse_secret_body(body, shape)
    }
}

/// The request body of a connection call. `auth` is read as any JSON value, so serde's
/// messages (a field name, a line and column, a type) never quote a secret from it.
pub(crate) fn parse_secret_body<T: serde::de::DeserializeOwned>(
    body: &[u8],
    shape: &str,
) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ApiErrorCode::InvalidInput,
            format!("the body must be {shape}: {e}"),
        )
    })
}

impl From<crate::policy::PolicyError> for ApiError {
    fn from(e: crate::policy::PolicyError) -> Self {
        match e {
            crate::policy::PolicyError::Invalid(m) => ApiError::new(ApiErrorCode::InvalidInput, m),
            other => ApiError::internal(other),
        }
    }
}

async fn get_policy(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
) -> Result<Json<Value>, ApiError> {
    let policy = crate::policy::get(&s.db, caller.workspace_id).await?;
    Ok(Json(serde_json::to_value(policy).unwrap_or(Value::Null)))
}

async fn put_policy(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let policy: crate::policy::Policy = parse_secret_body(
        &body,
        "a policy object `{\"connectors\"?: {\"allow\": [..]}, \"actions\"?: {\"deny\": [..]}, \"agents\"?: {name: [connection, ..]}}`",
    )?;
    let tx = s.db.begin().await?;
    crate::policy::put(&tx, caller.workspace_id, &policy, &caller.name).await?;
    let document = serde_json::to_value(&policy).unwrap_or(Value::Null);
    record(&tx, &caller, "policy.changed", document.clone()).await?;
    tx.commit().await?;
    s.definitions.forget_policy(caller.workspace_id);
    Ok(Json(document))
}

/// Runs paused because this connection needed a person resume now that it has credentials
/// again. Best effort: a failure is logged, and the runs stay `waiting` until the next
/// authorization or their timeout.
async fn resume_parked(s: &Shared, row: &schemas::db::entities::connection::Model) {
    if row.status != schemas::db::entities::connection::ConnectionStatus::Active {
        return;
    }
    match store::resume_after_reauth(&s.db, &s.definitions, row.workspace_id, row.id).await {
        Ok(0) => {}
        Ok(n) => {
            tracing::info!(connection = %row.name, steps = n, "steps waiting on re-authorization resumed");
        }
        Err(e) => {
            tracing::error!(connection = %row.name, error = %e, "resuming steps waiting on re-authorization failed");
        }
    }
}

/// What a connection's ledger records name: never its credentials.
fn connection_details(row: &schemas::db::entities::connection::Model) -> Value {
    json!({
        "connection": row.name,
        "connection_id": row.id,
        "connector": row.connector,
        "auth_type": row.auth_type,
        "scopes": row.scopes,
        "base_url": row.base_url,
        "rate_limit": row.rate_limit,
    })
}

/// Appends the ledger record of an administrative change, in the change's transaction.
pub(crate) async fn record(
    tx: &sea_orm::DatabaseTransaction,
    caller: &crate::auth::Caller,
    kind: &'static str,
    details: Value,
) -> Result<(), ApiError> {
    crate::audit::append(
        tx,
        vec![(
            caller.workspace_id,
            crate::audit::Entry::admin(kind, &caller.name, details),
        )],
    )
    .await?;
    Ok(())
}

async fn connection_json(
    s: &Shared,
    row: &schemas::db::entities::connection::Model,
) -> Result<Value, ApiError> {
    let workflows = s.definitions.all_latest(&s.db, row.workspace_id).await?;
    let used_by = crate::connections::used_by(&workflows, &row.name);
    let policy = crate::policy::get(&s.db, row.workspace_id).await?;
    Ok(crate::connections::view(
        row,
        &used_by,
        &policy.agents_of(&row.name),
    ))
}

async fn create_connection(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    body: Result<Bytes, BytesRejection>,
) -> Result<impl IntoResponse, ApiError> {
    let body = body?;
    let new: crate::connections::NewConnection = parse_secret_body(
        &body,
        "a JSON object `{\"name\", \"connector\", \"auth\": {\"type\", …}, \"scopes\"?}`",
    )?;
    let tx = s.db.begin().await?;
    let row = crate::connections::create(
        &tx,
        s.keyring.as_deref(),
        &Registry::builtin(),
        caller.workspace_id,
        new,
    )
    .await?;
    record(&tx, &caller, "connection.created", connection_details(&row)).await?;
    tx.commit().await?;
    Ok((StatusCode::CREATED, Json(connection_json(&s, &row).await?)))
}

async fn list_connections(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
) -> Result<Json<Value>, ApiError> {
    let rows = crate::connections::list(&s.db, caller.workspace_id).await?;
    let workflows = s.definitions.all_latest(&s.db, caller.workspace_id).await?;
    let policy = crate::policy::get(&s.db, caller.workspace_id).await?;
    let list: Vec<Value> = rows
        .iter()
        .map(|r| {
            crate::connections::view(
                r,
                &crate::connections::used_by(&workflows, &r.name),
                &policy.agents_of(&r.name),
            )
        })
        .collect();
    Ok(Json(json!({ "connections": list })))
}

async fn get_connection(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let row = crate::connections::find(&s.db, caller.workspace_id, &name)
        .await?
        .ok_or_else(|| ApiError::not_found(format!("connection `{name}`")))?;
    Ok(Json(connection_json(&s, &row).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RotateBody {
    auth: Value,
}

async fn rotate_connection(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let rotate: RotateBody = parse_secret_body(&body, "a JSON object `{\"auth\": {\"type\", …}}`")?;
    let tx = s.db.begin().await?;
    let row = crate::connections::rotate(
        &tx,
        s.keyring.as_deref(),
        &Registry::builtin(),
        caller.workspace_id,
        &name,
        &rotate.auth,
    )
    .await?;
    record(&tx, &caller, "connection.rotated", connection_details(&row)).await?;
    tx.commit().await?;
    resume_parked(&s, &row).await;
    Ok(Json(connection_json(&s, &row).await?))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ScopesBody {
    scopes: Vec<String>,
}

async fn set_connection_scopes(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let ScopesBody { scopes } =
        parse_secret_body(&body, "a JSON object `{\"scopes\": [string, …]}`")?;
    let tx = s.db.begin().await?;
    let row = crate::connections::set_scopes(&tx, caller.workspace_id, &name, scopes).await?;
    record(
        &tx,
        &caller,
        "connection.scopes_changed",
        connection_details(&row),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(connection_json(&s, &row).await?))
}

async fn set_connection_settings(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let settings: crate::connections::Settings = parse_secret_body(
        &body,
        "a JSON object `{\"base_url\"?: string | null, \"rate_limit\"?: {\"requests\", \"per_seconds\", \"burst\"?} | null}`",
    )?;
    let tx = s.db.begin().await?;
    let row = crate::connections::set_settings(&tx, caller.workspace_id, &name, settings).await?;
    record(
        &tx,
        &caller,
        "connection.settings_changed",
        connection_details(&row),
    )
    .await?;
    tx.commit().await?;
    Ok(Json(connection_json(&s, &row).await?))
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct TestBody {
    /// A URL of the provider to `GET` with the credential applied (an endpoint that answers
    /// 2xx for valid credentials, such as a "who am I" route).
    probe: Option<String>,
}

async fn test_connection(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    Path(name): Path<String>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    let body = body?;
    let parsed: TestBody =
        parse_optional_body(&body, "a JSON object `{\"probe\"?: \"https://…\"}`")?;
    let probe = match parsed.probe.as_deref() {
        None => None,
        Some(text) => {
            let url = reqwest::Url::parse(text)
                .map_err(|e| ApiError::new(ApiErrorCode::InvalidInput, format!("`probe`: {e}")))?;
            if url.scheme() != "http" && url.scheme() != "https" {
                return Err(ApiError::new(
                    ApiErrorCode::InvalidInput,
                    "`probe` must be an http or https URL",
                ));
            }
            Some(url)
        }
    };
    let tested = crate::connections::test(
        &s.db,
        s.keyring.as_deref(),
        &s.oauth_http,
        caller.workspace_id,
        &name,
        probe,
    )
    .await?;
    let tx = s.db.begin().await?;
    let mut details = connection_details(&tested.row);
    if let Some(obj) = details.as_object_mut() {
        obj.insert("ok".into(), json!(tested.ok));
        obj.insert("checks".into(), json!(tested.checks));
    }
    record(&tx, &caller, "connection.tested", details).await?;
    tx.commit().await?;
    Ok(Json(json!({
        "ok": tested.ok,
        "checks": tested.checks,
        "connection": connection_json(&s, &tested.row).await?,
    })))
}

async fn revoke_connection(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    Path(name): Path<String>,
) -> Result<Json<Value>, ApiError> {
    let tx = s.db.begin().await?;
    let row = crate::connections::revoke(&tx, caller.workspace_id, &name).await?;
    record(&tx, &caller, "connection.revoked", connection_details(&row)).await?;
    tx.commit().await?;
    Ok(Json(connection_json(&s, &row).await?))
}

impl From<crate::oauth::OAuthError> for ApiError {
    fn from(e: crate::oauth::OAuthError) -> Self {
        use crate::oauth::OAuthError;
        use connectors::oauth::TokenError;
        match e {
            OAuthError::NotFound(name) => ApiError::not_found(format!("connection `{name}`")),
            OAuthError::NotCodeFlow(_) | OAuthError::BadCallback(_) => {
                ApiError::new(ApiErrorCode::InvalidInput, e.to_string())
            }
            OAuthError::NoKeyring => ApiError::new(ApiErrorCode::Unavailable, e.to_string()),
            OAuthError::Token(ref t) => match t {
                TokenError::Unavailable(_) => {
                    ApiError::new(ApiErrorCode::Unavailable, e.to_string())
                }
                TokenError::InvalidGrant
                | TokenError::Rejected { .. }
                | TokenError::Malformed(_)
                | TokenError::BadUrl => ApiError::new(ApiErrorCode::InvalidInput, e.to_string()),
                TokenError::Refused(_) => ApiError::new(ApiErrorCode::Forbidden, e.to_string()),
            },
            OAuthError::Db(db) => ApiError::from(db),
            other => ApiError::internal(other),
        }
    }
}

/// `GET /v1/oauth/{connection}/start`: answers 302 to the provider's authorize URL. The
/// issue's `{connector}` is the connection's name here: the authorize URL, client and scopes
/// belong to a connection, and one connector may have several.
async fn oauth_start(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    Path(name): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let location = crate::oauth::start(
        &s.db,
        s.keyring.as_deref(),
        caller.workspace_id,
        &name,
        &caller.name,
        &s.public_url,
    )
    .await?;
    Ok((
        StatusCode::FOUND,
        [(axum::http::header::LOCATION, location)],
    ))
}

#[derive(Deserialize)]
struct CallbackQuery {
    code: Option<String>,
    state: Option<String>,
    error: Option<String>,
}

/// `GET /v1/oauth/callback?code&state`: no bearer token, the `state` authenticates it.
async fn oauth_callback(
    State(s): State<Shared>,
    q: Result<Query<CallbackQuery>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(q) = q?;
    let Some(state) = q.state.filter(|s| !s.is_empty()) else {
        return Err(ApiError::new(
            ApiErrorCode::InvalidInput,
            "the callback has no `state`",
        ));
    };
    if let Some(error) = q.error {
        // The provider refused (RFC 6749 §4.1.2.1). The state stays unused until it expires;
        // starting again makes a new one.
        return Err(ApiError::new(
            ApiErrorCode::InvalidInput,
            format!(
                "the provider did not authorize the connection: `{}`",
                error.chars().take(64).collect::<String>().escape_debug()
            ),
        ));
    }
    let Some(code) = q.code.filter(|c| !c.is_empty()) else {
        return Err(ApiError::new(
            ApiErrorCode::InvalidInput,
            "the callback has no `code`",
        ));
    };
    let row =
        crate::oauth::callback(&s.db, s.keyring.as_deref(), &s.oauth_http, &code, &state).await?;
    resume_parked(&s, &row).await;
    Ok(Json(json!({
        "connection": row.name,
        "status": row.status,
        "message": "the connection is authorized; you can close this window",
    })))
}
