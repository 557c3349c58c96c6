//! The audit ledger over HTTP: `GET /v1/audit` (filtered pages, oldest first),
//! `GET /v1/audit/export` (every matching record as JSON lines, streamed a page at a time) and
//! `GET /v1/audit/verify` (walks the workspace's hash chain). Admins only.

use axum::Json;
use axum::body::Body;
use axum::extract::rejection::QueryRejection;
use axum::extract::{Query, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{ApiError, ApiErrorCode, MAX_PAGE};
use crate::audit::{self, Verdict};
use crate::auth::{Admin, Auth};
use crate::service::Shared;

/// Records per page of an export.
const EXPORT_PAGE: u64 = 500;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct AuditParams {
    run: Option<String>,
    step: Option<String>,
    connection: Option<String>,
    principal: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    cursor: Option<i64>,
    limit: Option<u64>,
}

fn time(field: &str, text: Option<&str>) -> Result<Option<DateTime<Utc>>, ApiError> {
    text.map(|t| {
        DateTime::parse_from_rfc3339(t)
            .map(|d| d.with_timezone(&Utc))
            .map_err(|_| {
                ApiError::new(
                    ApiErrorCode::InvalidInput,
                    format!("`{field}` must be an RFC 3339 time such as 2026-12-01T09:00:00Z"),
                )
            })
    })
    .transpose()
}

/// The filters, checked; a connection is named, and resolved in the caller's workspace.
async fn query(s: &Shared, workspace_id: Uuid, p: &AuditParams) -> Result<audit::Query, ApiError> {
    let run_id = match p.run.as_deref() {
        None => None,
        Some(r) => Some(
            Uuid::parse_str(r)
                .map_err(|_| ApiError::new(ApiErrorCode::InvalidInput, "`run` must be a run id"))?,
        ),
    };
    if let Some(o) = p.outcome.as_deref()
        && o != "success"
        && o != "error"
    {
        return Err(ApiError::new(
            ApiErrorCode::InvalidInput,
            "`outcome` must be `success` or `error`",
        ));
    }
    let connection_id = match p.connection.as_deref() {
        None => None,
        // An unknown name matches nothing rather than everything.
        Some(name) => Some(
            crate::connections::find(&s.db, workspace_id, name)
                .await?
                .map_or(Uuid::nil(), |c| c.id),
        ),
    };
    Ok(audit::Query {
        run_id,
        step_id: p.step.clone(),
        connection_id,
        principal: p.principal.clone(),
        outcome: p.outcome.clone(),
        since: time("since", p.since.as_deref())?,
        until: time("until", p.until.as_deref())?,
        after_seq: p.cursor,
    })
}

pub(super) async fn list(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Json<Value>, ApiError> {
    let Query(p) = params?;
    let q = query(&s, caller.workspace_id, &p).await?;
    let limit = p.limit.unwrap_or(100).clamp(1, MAX_PAGE);
    let rows = audit::list(&s.db, caller.workspace_id, &q, limit).await?;
    let next = if rows.len() as u64 == limit {
        rows.last().map(|r| r.seq)
    } else {
        None
    };
    let records: Vec<Value> = rows.iter().map(audit::view).collect();
    Ok(Json(json!({ "records": records, "next_cursor": next })))
}

pub(super) async fn export(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
    params: Result<Query<AuditParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(p) = params?;
    let q = query(&s, caller.workspace_id, &p).await?;
    let db = s.db.clone();
    let workspace_id = caller.workspace_id;
    // One page in memory at a time, however long the ledger: each page starts after the last
    // `seq` of the one before, and a short page is the last. A database failure ends the
    // response early, so the client sees an incomplete body rather than a clean end.
    let pages = futures::stream::unfold(Some(q), move |state| {
        let db = db.clone();
        async move {
            let mut q = state?;
            match audit::list(&db, workspace_id, &q, EXPORT_PAGE).await {
                Ok(rows) if rows.is_empty() => None,
                Ok(rows) => {
                    let mut lines = String::new();
                    for r in &rows {
                        lines.push_str(&audit::view(r).to_string());
                        lines.push('\n');
                    }
                    let more = rows.len() as u64 == EXPORT_PAGE;
                    q.after_seq = rows.last().map(|r| r.seq);
                    Some((Ok::<_, std::io::Error>(lines), more.then_some(q)))
                }
                Err(e) => {
                    tracing::error!(error = %e, "audit export failed");
                    Some((Err(std::io::Error::other("audit export failed")), None))
                }
            }
        }
    });
    Ok((
        [(header::CONTENT_TYPE, "application/x-ndjson")],
        Body::from_stream(pages),
    )
        .into_response())
}

pub(super) async fn verify(
    State(s): State<Shared>,
    Auth(caller, ..): Auth<Admin>,
) -> Result<Json<Value>, ApiError> {
    Ok(Json(
        match audit::verify(&s.db, caller.workspace_id).await? {
            Verdict::Intact { records } => json!({ "intact": true, "records": records }),
            Verdict::Broken { seq, why } => {
                json!({ "intact": false, "broken_at": seq, "why": why })
            }
        },
    ))
}
