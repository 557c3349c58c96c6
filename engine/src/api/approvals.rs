//! `GET /v1/approvals` (the open gates the caller may decide) and
//! `POST /v1/runs/{id}/steps/{step}/approve|reject` (`{"comment"?: string}`).

use axum::Json;
use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use serde::Deserialize;
use serde_json::{Value, json};

use super::{ApiError, ApiErrorCode, parse_optional_body};
use crate::approvals::{self, ApprovalError, Decision};
use crate::auth::{Auth, Operator, Viewer};
use crate::service::Shared;

impl From<ApprovalError> for ApiError {
    fn from(e: ApprovalError) -> Self {
        match e {
            ApprovalError::Store(e) => e.into(),
            ApprovalError::NotFound(what) => ApiError::not_found(what),
            ApprovalError::Conflict(m) => ApiError::new(ApiErrorCode::Conflict, m),
            ApprovalError::NotAnApprover(m) => ApiError::new(ApiErrorCode::Forbidden, m),
            ApprovalError::Invalid(m) => ApiError::new(ApiErrorCode::InvalidInput, m),
        }
    }
}

pub(super) async fn list(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Viewer>,
) -> Result<Json<Value>, ApiError> {
    let gates = approvals::pending_for(&s.db, &caller).await?;
    let list: Vec<Value> = gates.iter().map(approvals::view).collect();
    Ok(Json(json!({ "approvals": list })))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct DecisionBody {
    comment: Option<String>,
}

async fn decide(
    s: Shared,
    caller: crate::auth::Caller,
    (run, step): (String, String),
    body: Result<Bytes, BytesRejection>,
    decision: Decision,
) -> Result<Json<Value>, ApiError> {
    // A malformed id names no run in any workspace.
    let run_id =
        uuid::Uuid::parse_str(&run).map_err(|_| ApiError::not_found(format!("run {run}")))?;
    let body = body?;
    let parsed: DecisionBody =
        parse_optional_body(&body, "a JSON object `{\"comment\"?: string}`")?;
    let gate = approvals::decide(
        &s.db,
        &s.definitions,
        &caller,
        run_id,
        &step,
        decision,
        parsed.comment,
    )
    .await?;
    s.outbox.notify_one();
    Ok(Json(approvals::view(&gate)))
}

pub(super) async fn approve(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Operator>,
    Path(ids): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(s, caller, ids, body, Decision::Approve).await
}

pub(super) async fn reject(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Operator>,
    Path(ids): Path<(String, String)>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Json<Value>, ApiError> {
    decide(s, caller, ids, body, Decision::Reject).await
}
