//! Approval gates: a step that needs a person's approval is held (`waiting_approval`, nothing
//! dispatched) until someone allowed to decide approves or rejects it, or its timeout passes.
//!
//! Who may decide is the gate's `approvers` list: `role:<r>` admits any principal of the
//! workspace whose role is `r` or above, `user:<name>` that principal; an empty list admits any
//! operator. Every decision is one transaction that locks the run, changes the gate only while
//! it is `pending` (so of two concurrent decisions exactly one wins and the other is a
//! conflict), moves the step on (approved → started as any ready step; rejected or timed out
//! → failed, which fails the run), and appends the decision to the audit ledger.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use schemas::db::entities::approval::{self, ApprovalStatus};
use schemas::db::entities::principal::Role;
use schemas::db::entities::step_instance::NO_ITEM;
use schemas::db::entities::{RunStatus, StepStatus, run};
use schemas::envelope::{ErrorCode, StepError};
use sea_orm::sea_query::Expr;
use sea_orm::{
    ColumnTrait, DatabaseConnection, DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder,
    TransactionTrait,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::auth::Caller;
use crate::store::StoreError;
use crate::store::work::{self, Definitions, RunWork, Writes};

/// Longest comment kept with a decision.
pub const MAX_COMMENT: usize = 2_000;

/// Why a decision was refused.
#[derive(Debug, thiserror::Error)]
pub enum ApprovalError {
    /// The store failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// No such run, or no gate at that step (in the caller's workspace).
    #[error("{0} not found")]
    NotFound(String),
    /// The gate was already decided, or the run has ended.
    #[error("{0}")]
    Conflict(String),
    /// The caller is not among the gate's approvers.
    #[error("{0}")]
    NotAnApprover(String),
    /// The comment is too long.
    #[error("{0}")]
    Invalid(String),
}

impl From<sea_orm::DbErr> for ApprovalError {
    fn from(e: sea_orm::DbErr) -> Self {
        ApprovalError::Store(StoreError::Db(e))
    }
}

/// Whether `caller` may decide a gate with these approvers.
pub fn may_decide(caller: &Caller, approvers: &Value) -> bool {
    let list: Vec<&str> = approvers
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if list.is_empty() {
        return caller.role >= Role::Operator;
    }
    list.iter().any(|entry| match entry.split_once(':') {
        Some(("user", name)) => caller.name == name,
        Some(("role", role)) => serde_json::from_value::<Role>(Value::String(role.to_owned()))
            .is_ok_and(|needed| caller.role >= needed),
        _ => false,
    })
}

/// A decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    /// Let the step run.
    Approve,
    /// Fail the step.
    Reject,
}

/// Decides the gate of `step_id` in `run_id`. Returns the decided gate.
pub async fn decide(
    db: &DatabaseConnection,
    definitions: &Definitions,
    caller: &Caller,
    run_id: Uuid,
    step_id: &str,
    decision: Decision,
    comment: Option<String>,
) -> Result<approval::Model, ApprovalError> {
    if comment.as_ref().is_some_and(|c| c.len() > MAX_COMMENT) {
        return Err(ApprovalError::Invalid(format!(
            "`comment` is longer than {MAX_COMMENT} bytes"
        )));
    }
    let tx = db.begin().await?;
    let gate = approval::Entity::find()
        .filter(approval::Column::WorkspaceId.eq(caller.workspace_id))
        .filter(approval::Column::RunId.eq(run_id))
        .filter(approval::Column::StepId.eq(step_id))
        .one(&tx)
        .await?
        .ok_or_else(|| {
            ApprovalError::NotFound(format!("approval gate of step `{step_id}` in run {run_id}"))
        })?;
    // Locks the run (PostgreSQL) for the rest of the transaction, like result recording.
    let mut works = work::load_live_runs(&tx, definitions, &BTreeSet::from([run_id])).await?;
    let Some(work) = works.get_mut(&run_id) else {
        return Err(ApprovalError::Conflict(format!(
            "run {run_id} has ended; its gates can no longer be decided"
        )));
    };
    if gate.status != ApprovalStatus::Pending {
        return Err(already(&gate));
    }
    if !may_decide(caller, &gate.approvers) {
        return Err(ApprovalError::NotAnApprover(format!(
            "`{}` is not among this gate's approvers ({})",
            caller.name,
            approvers_text(&gate.approvers)
        )));
    }
    let now = Utc::now();
    let status = match decision {
        Decision::Approve => ApprovalStatus::Approved,
        Decision::Reject => ApprovalStatus::Rejected,
    };
    let updated = approval::Entity::update_many()
        .col_expr(approval::Column::Status, Expr::value(status))
        .col_expr(approval::Column::DecidedAt, Expr::value(Some(now)))
        .col_expr(
            approval::Column::DecidedBy,
            Expr::value(Some(caller.name.clone())),
        )
        .col_expr(approval::Column::Comment, Expr::value(comment.clone()))
        .filter(approval::Column::Id.eq(gate.id))
        .filter(approval::Column::Status.eq(ApprovalStatus::Pending))
        .exec(&tx)
        .await?;
    if updated.rows_affected != 1 {
        // Another decision committed first (SQLite serializes writers; this is the fence).
        return Err(ApprovalError::Conflict(
            "this gate was decided by someone else a moment ago".into(),
        ));
    }
    let mut writes = Writes::default();
    match decision {
        Decision::Approve => {
            work.upsert_step(step_id, NO_ITEM, now, |m| {
                m.status = StepStatus::Approved;
                m.due_at = None;
            });
        }
        Decision::Reject => fail_step(
            work,
            step_id,
            ErrorCode::ApprovalRejected,
            format!(
                "`{}` rejected the step at its approval gate{}",
                caller.name,
                comment
                    .as_deref()
                    .map(|c| format!(": {c}"))
                    .unwrap_or_default()
            ),
            now,
        ),
    }
    work::advance(work, &mut writes, now);
    writes.audit.push((
        caller.workspace_id,
        crate::audit::Entry {
            run_id: Some(run_id),
            step_id: Some(step_id.to_owned()),
            action: Some(gate.action.clone()),
            ..crate::audit::Entry::admin(
                match decision {
                    Decision::Approve => "approval.approved",
                    Decision::Reject => "approval.rejected",
                },
                &caller.name,
                json!({ "comment": comment }),
            )
        },
    ));
    let finished = work::flush(&tx, works.values(), writes).await?;
    tx.commit().await?;
    finished.count();
    let decided = approval::Entity::find_by_id(gate.id)
        .one(db)
        .await?
        .ok_or_else(|| ApprovalError::NotFound("approval gate".into()))?;
    Ok(decided)
}

fn already(gate: &approval::Model) -> ApprovalError {
    ApprovalError::Conflict(format!(
        "this gate was already {} by `{}`",
        serde_json::to_value(gate.status)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default(),
        gate.decided_by.as_deref().unwrap_or("nobody")
    ))
}

fn approvers_text(approvers: &Value) -> String {
    let list: Vec<&str> = approvers
        .as_array()
        .map(|a| a.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    if list.is_empty() {
        "any operator".into()
    } else {
        list.join(", ")
    }
}

fn fail_step(
    work: &mut RunWork,
    step_id: &str,
    code: ErrorCode,
    message: String,
    now: DateTime<Utc>,
) {
    let error = StepError {
        http_status: None,
        code,
        message,
        retry_after_ms: None,
    };
    work.upsert_step(step_id, NO_ITEM, now, |m| {
        m.status = StepStatus::Failed;
        m.error = Some(serde_json::to_value(&error).unwrap_or(Value::Null));
        m.finished_at = Some(now);
        m.due_at = None;
    });
}

/// Times out a gate whose step is due (called by the scheduler's tick, inside its
/// transaction, with the run locked). A gate decided meanwhile is left as it is.
pub(crate) async fn expire(
    tx: &DatabaseTransaction,
    work: &mut RunWork,
    step_id: &str,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let updated = approval::Entity::update_many()
        .col_expr(
            approval::Column::Status,
            Expr::value(ApprovalStatus::Expired),
        )
        .col_expr(approval::Column::DecidedAt, Expr::value(Some(now)))
        .filter(approval::Column::RunId.eq(work.run.id))
        .filter(approval::Column::StepId.eq(step_id))
        .filter(approval::Column::Status.eq(ApprovalStatus::Pending))
        .exec(tx)
        .await?;
    if updated.rows_affected == 1 {
        fail_step(
            work,
            step_id,
            ErrorCode::ApprovalTimeout,
            "nobody decided the step's approval gate before its timeout".into(),
            now,
        );
        // Appended after the run rows this transaction locked, as every append is.
        crate::audit::append(
            tx,
            vec![(
                work.run.workspace_id,
                crate::audit::Entry {
                    run_id: Some(work.run.id),
                    step_id: Some(step_id.to_owned()),
                    ..crate::audit::Entry::admin(
                        "approval.expired",
                        "system",
                        json!({ "reason": "timeout" }),
                    )
                },
            )],
        )
        .await?;
    }
    Ok(())
}

/// The gates of live runs in the workspace that `caller` may decide, oldest first.
pub async fn pending_for(
    db: &DatabaseConnection,
    caller: &Caller,
) -> Result<Vec<approval::Model>, sea_orm::DbErr> {
    let gates = approval::Entity::find()
        .filter(approval::Column::WorkspaceId.eq(caller.workspace_id))
        .filter(approval::Column::Status.eq(ApprovalStatus::Pending))
        .order_by_asc(approval::Column::RequestedAt)
        .all(db)
        .await?;
    let runs: BTreeSet<Uuid> = gates.iter().map(|g| g.run_id).collect();
    let live: BTreeSet<Uuid> = run::Entity::find()
        .filter(run::Column::Id.is_in(runs))
        .filter(run::Column::Status.is_not_in([
            RunStatus::Succeeded,
            RunStatus::Failed,
            RunStatus::Cancelled,
            RunStatus::TimedOut,
        ]))
        .all(db)
        .await?
        .into_iter()
        .map(|r| r.id)
        .collect();
    Ok(gates
        .into_iter()
        .filter(|g| live.contains(&g.run_id) && may_decide(caller, &g.approvers))
        .collect())
}

/// The API view of a gate.
pub fn view(g: &approval::Model) -> Value {
    json!({
        "id": g.id,
        "run_id": g.run_id,
        "step_id": g.step_id,
        "action": g.action,
        "status": g.status,
        "approvers": g.approvers,
        "input": g.input,
        "requested_at": g.requested_at,
        "due_at": g.due_at,
        "decided_at": g.decided_at,
        "decided_by": g.decided_by,
        "comment": g.comment,
    })
}
