//! Run state in SQL: every transition of a run happens here, inside one transaction, together
//! with the outbox rows of the messages it causes.
//!
//! The database is the source of truth; JetStream only carries work. Each function that
//! changes a run (starting it, recording results, scheduling retries, cancelling, timing out)
//! loads its runs and their steps once, applies the change and asks the
//! [`planner`](crate::planner) what follows, in memory, then writes the changed steps and their
//! step messages into the outbox with a few multi-row statements and commits (see `work`). The
//! relay publishes the outbox afterwards; a crash in between only delays the messages.
//!
//! Several engine copies may work on the same run: on PostgreSQL the run row is locked
//! (`SELECT … FOR UPDATE`) for the length of the transaction, and every write is fenced by the
//! step's attempt number, so a duplicate or stale result changes nothing.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemas::db::DEFAULT_WORKSPACE_ID;
use schemas::db::entities::step_instance::NO_ITEM;
use schemas::db::entities::{AttemptStatus, RunStatus, StepStatus};
use schemas::db::entities::{attempt, outbox, run, step_instance, workflow_version};
use schemas::definition::Workflow;
use schemas::envelope::{ErrorCode, Outcome, StepError, StepResult};
use sea_orm::sea_query::OnConflict;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, EntityTrait,
    PaginatorTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::retry::{self, Verdict};

pub(crate) mod work;

pub use work::Definitions;
use work::{RunWork, Writes};

/// Grace added to a step's timeout before the reconciler treats a dispatched attempt as lost.
pub const LOST_ATTEMPT_GRACE: Duration = Duration::from_secs(30);
/// Timeout of an attempt whose step declares none.
pub const DEFAULT_STEP_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database said no.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// A stored definition no longer deserializes (it was written by an incompatible build).
    #[error("stored definition of {workflow} v{version} is unreadable: {source}")]
    Definition {
        /// Workflow name.
        workflow: String,
        /// Version.
        version: i32,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// No such workflow (in this workspace).
    #[error("workflow `{0}` not found")]
    WorkflowNotFound(String),
    /// No such run (in this workspace).
    #[error("run {0} not found")]
    RunNotFound(Uuid),
    /// The run's inputs do not match the workflow's declared inputs.
    #[error("{0}")]
    InvalidInput(String),
    /// The run has already finished.
    #[error("run {0} has already finished")]
    RunFinished(Uuid),
}

/// A run started (or found again by its idempotency key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Started {
    /// The run.
    pub run_id: Uuid,
    /// False when an earlier request with the same idempotency key created it.
    pub created: bool,
}

/// Stores a new version of a workflow unless the latest version is identical.
/// Returns the version and whether it was created.
pub async fn put_workflow(
    db: &DatabaseConnection,
    workspace_id: Uuid,
    workflow: &Workflow,
    source: &str,
) -> Result<(i32, bool), StoreError> {
    let definition = serde_json::to_value(workflow).map_err(|source| StoreError::Definition {
        workflow: workflow.name.clone(),
        version: 0,
        source,
    })?;
    let tx = db.begin().await?;
    let latest = workflow_version::Entity::find()
        .filter(workflow_version::Column::WorkspaceId.eq(workspace_id))
        .filter(workflow_version::Column::Name.eq(&workflow.name))
        .order_by_desc(workflow_version::Column::Version)
        .one(&tx)
        .await?;
    if let Some(latest) = &latest
        && latest.definition == definition
    {
        return Ok((latest.version, false));
    }
    let version = latest.map_or(1, |l| l.version + 1);
    workflow_version::ActiveModel {
        id: Set(Uuid::now_v7()),
        workspace_id: Set(workspace_id),
        name: Set(workflow.name.clone()),
        version: Set(version),
        definition: Set(definition),
        source: Set(source.to_owned()),
        created_at: Set(Utc::now()),
    }
    .insert(&tx)
    .await?;
    tx.commit().await?;
    Ok((version, true))
}

/// The given version of a workflow, or its latest.
pub async fn get_workflow<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    name: &str,
    version: Option<i32>,
) -> Result<Option<workflow_version::Model>, StoreError> {
    let mut q = workflow_version::Entity::find()
        .filter(workflow_version::Column::WorkspaceId.eq(workspace_id))
        .filter(workflow_version::Column::Name.eq(name));
    if let Some(v) = version {
        q = q.filter(workflow_version::Column::Version.eq(v));
    }
    Ok(q.order_by_desc(workflow_version::Column::Version)
        .one(db)
        .await?)
}

/// The latest version of every workflow in a workspace, by name.
pub async fn list_workflows(
    db: &DatabaseConnection,
    workspace_id: Uuid,
) -> Result<Vec<workflow_version::Model>, StoreError> {
    let all = workflow_version::Entity::find()
        .filter(workflow_version::Column::WorkspaceId.eq(workspace_id))
        .order_by_asc(workflow_version::Column::Name)
        .order_by_desc(workflow_version::Column::Version)
        .all(db)
        .await?;
    let mut seen = BTreeSet::new();
    Ok(all
        .into_iter()
        .filter(|w| seen.insert(w.name.clone()))
        .collect())
}

/// Applies declared defaults and checks required inputs and their JSON types.
fn resolve_inputs(workflow: &Workflow, input: Value) -> Result<Value, StoreError> {
    let mut given = match input {
        Value::Null => serde_json::Map::new(),
        Value::Object(m) => m,
        other => {
            return Err(StoreError::InvalidInput(format!(
                "run input must be a JSON object, got {other}"
            )));
        }
    };
    for (name, spec) in &workflow.inputs {
        match given.get(name) {
            None => {
                if let Some(default) = &spec.default {
                    given.insert(name.clone(), default.clone());
                } else if spec.required {
                    return Err(StoreError::InvalidInput(format!(
                        "input `{name}` is required"
                    )));
                }
            }
            Some(v) => {
                use schemas::definition::InputType as T;
                let ok = match spec.kind {
                    T::String => v.is_string(),
                    T::Number => v.is_number(),
                    T::Integer => v.is_i64() || v.is_u64(),
                    T::Boolean => v.is_boolean(),
                    T::Object => v.is_object(),
                    T::Array => v.is_array(),
                };
                if !ok {
                    return Err(StoreError::InvalidInput(
                        format!("input `{name}` must be of type {:?}", spec.kind).to_lowercase(),
                    ));
                }
            }
        }
    }
    Ok(Value::Object(given))
}

/// Starts a run of the latest version of `name`, unless `idempotency_key` names an earlier one.
pub async fn start_run(
    db: &DatabaseConnection,
    definitions: &Definitions,
    workspace_id: Uuid,
    name: &str,
    input: Value,
    idempotency_key: Option<&str>,
    trigger: Value,
) -> Result<Started, StoreError> {
    if let Some(key) = idempotency_key
        && let Some(existing) = find_by_key(db, workspace_id, name, key).await?
    {
        return Ok(Started {
            run_id: existing,
            created: false,
        });
    }
    let (version, workflow) = definitions
        .latest(db, workspace_id, name)
        .await?
        .ok_or_else(|| StoreError::WorkflowNotFound(name.to_owned()))?;
    let pinned = Pinned {
        workspace_id,
        name: name.to_owned(),
        version,
        workflow,
    };
    start_pinned(db, definitions, &pinned, input, idempotency_key, trigger).await
}

/// A workflow version a trigger resolved, to start runs of.
#[derive(Debug, Clone)]
pub struct Pinned {
    /// Workspace.
    pub workspace_id: Uuid,
    /// Workflow name.
    pub name: String,
    /// The version runs are pinned to.
    pub version: i32,
    /// Its definition.
    pub workflow: Arc<Workflow>,
}

/// A run to start: the version, the inputs as given, the idempotency key and what started it.
#[derive(Debug, Clone)]
pub struct NewRun {
    /// The version to run.
    pub pinned: Pinned,
    /// Inputs as given; defaults are applied and types checked.
    pub input: Value,
    /// Unique per workspace and workflow: a second start with the key finds the first run.
    pub idempotency_key: Option<String>,
    /// What started the run (`trigger` in expressions).
    pub trigger: Value,
    /// The caller's W3C `traceparent` (an API request's, say): the run's trace continues it.
    /// `None` starts a trace of its own (when tracing is on).
    pub traceparent: Option<String>,
}

/// Starts a run of a version the caller already resolved, unless `idempotency_key` names an
/// earlier run of the workflow (see [`start_runs`]).
pub async fn start_pinned(
    db: &DatabaseConnection,
    definitions: &Definitions,
    pinned: &Pinned,
    input: Value,
    idempotency_key: Option<&str>,
    trigger: Value,
) -> Result<Started, StoreError> {
    let new = NewRun {
        pinned: pinned.clone(),
        input,
        idempotency_key: idempotency_key.map(str::to_owned),
        trigger,
        traceparent: None,
    };
    start_runs(db, definitions, vec![new])
        .await?
        .pop()
        .unwrap_or(Err(StoreError::Db(sea_orm::DbErr::RecordNotInserted)))
}

/// Starts several runs in one transaction: one multi-row insert of the runs, then their
/// steps and step messages, as a batch of results is recorded.
///
/// Each run's answer is in the same position: an input error is that run's alone. An
/// idempotency key is unique per workspace and workflow in the database and written in the
/// run's own insert, so of concurrent starts with one key (in this batch, in another, on
/// another engine) exactly one creates the run and the others answer with it. The outer error
/// is the transaction's, and means none of the runs started.
pub async fn start_runs(
    db: &DatabaseConnection,
    definitions: &Definitions,
    runs: Vec<NewRun>,
) -> Result<Vec<Result<Started, StoreError>>, StoreError> {
    let now = Utc::now();
    let mut answers: Vec<Result<Started, StoreError>> = Vec::with_capacity(runs.len());
    let mut rows: Vec<(usize, run::Model, Arc<Workflow>)> = Vec::new();
    for (i, new) in runs.into_iter().enumerate() {
        let NewRun {
            pinned,
            input,
            idempotency_key,
            trigger,
            traceparent,
        } = new;
        match resolve_inputs(&pinned.workflow, input) {
            Err(e) => answers.push(Err(e)),
            Ok(inputs) => {
                let id = Uuid::now_v7();
                let kind = trigger
                    .get("kind")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("unknown");
                // The root of the run's trace (or a child of the caller's): its context is
                // stored with the run and parents every step's dispatch.
                let span = tracing::info_span!(
                    "run.start",
                    run_id = %id,
                    workflow = %pinned.name,
                    trigger = kind,
                    trace_id = tracing::field::Empty,
                );
                workers::telemetry::set_parent(&span, traceparent.as_deref());
                workers::telemetry::record_trace_id(&span);
                let row = run::Model {
                    id,
                    traceparent: workers::telemetry::traceparent_of(&span),
                    workspace_id: pinned.workspace_id,
                    workflow_name: pinned.name,
                    workflow_version: pinned.version,
                    status: RunStatus::Running,
                    input: inputs,
                    outputs: None,
                    error: None,
                    idempotency_key,
                    trigger,
                    created_at: now,
                    started_at: Some(now),
                    finished_at: None,
                    deadline_at: pinned
                        .workflow
                        .timeout
                        .map(|t| now + chrono_duration(t.get())),
                    updated_at: now,
                };
                answers.push(Ok(Started {
                    run_id: row.id,
                    created: true,
                }));
                rows.push((i, row, pinned.workflow));
            }
        }
    }
    if rows.is_empty() {
        return Ok(answers);
    }
    let tx = db.begin().await?;
    // Insert-or-nothing: a duplicate key neither fails the batch nor aborts the transaction
    // (PostgreSQL would abort it on a failed insert); which rows went in is read back.
    run::Entity::insert_many(
        rows.iter()
            .map(|(_, row, _)| run::ActiveModel::from(row.clone())),
    )
    .on_conflict(
        OnConflict::columns([
            run::Column::WorkspaceId,
            run::Column::WorkflowName,
            run::Column::IdempotencyKey,
        ])
        .do_nothing()
        .to_owned(),
    )
    .exec_without_returning(&tx)
    .await?;
    let inserted: BTreeSet<Uuid> = if rows.iter().any(|(_, r, _)| r.idempotency_key.is_some()) {
        run::Entity::find()
            .select_only()
            .column(run::Column::Id)
            .filter(run::Column::Id.is_in(rows.iter().map(|(_, r, _)| r.id)))
            .into_tuple::<Uuid>()
            .all(&tx)
            .await?
            .into_iter()
            .collect()
    } else {
        rows.iter().map(|(_, r, _)| r.id).collect()
    };
    let mut works = Vec::with_capacity(inserted.len());
    let mut writes = Writes::default();
    let mut duplicates = Vec::new();
    for (i, row, workflow) in rows {
        if inserted.contains(&row.id) {
            works.push(RunWork::new_run(row, workflow));
        } else {
            duplicates.push((i, row));
        }
    }
    work::resolve_connections(&tx, works.iter_mut()).await?;
    work::resolve_gates(&tx, Some(definitions), works.iter_mut()).await?;
    for work in &mut works {
        work::advance(work, &mut writes, now);
    }
    let finished = work::flush(&tx, works.iter(), writes).await?;
    tx.commit().await?;
    finished.count();
    let metrics = crate::metrics::engine();
    for work in &works {
        metrics.run_started(&work.run.workflow_name, &work.run.trigger);
    }
    // A key that lost: to an earlier run, or to another start in this very batch.
    for (i, row) in duplicates {
        let key = row.idempotency_key.as_deref().unwrap_or_default();
        let existing = find_by_key(db, row.workspace_id, &row.workflow_name, key).await?;
        answers[i] = match existing {
            Some(run_id) => Ok(Started {
                run_id,
                created: false,
            }),
            None => Err(StoreError::Db(sea_orm::DbErr::RecordNotInserted)),
        };
    }
    Ok(answers)
}

async fn find_by_key<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
    name: &str,
    key: &str,
) -> Result<Option<Uuid>, StoreError> {
    Ok(run::Entity::find()
        .filter(run::Column::WorkspaceId.eq(workspace_id))
        .filter(run::Column::WorkflowName.eq(name))
        .filter(run::Column::IdempotencyKey.eq(key))
        .one(db)
        .await?
        .map(|r| r.id))
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// What a committed transition did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Recorded {
    /// Results that changed a step; duplicates and results of superseded attempts are not.
    pub changed: usize,
    /// Whether step or event messages were written to the outbox.
    pub messages: bool,
}

/// Records a batch of results in one transaction. Duplicates and results of superseded
/// attempts change nothing.
pub async fn record_results(
    db: &DatabaseConnection,
    definitions: &Definitions,
    results: &[StepResult],
) -> Result<Recorded, StoreError> {
    let tx = db.begin().await?;
    let now = Utc::now();
    let ids: BTreeSet<Uuid> = results.iter().map(|r| r.run_id).collect();
    let mut works = work::load_live_runs(&tx, definitions, &ids).await?;
    let mut writes = Writes::default();
    let mut changed = 0;
    let mut touched: BTreeSet<Uuid> = BTreeSet::new();
    let mut steps = Vec::new();
    for result in results {
        let Some(work) = works.get_mut(&result.run_id) else {
            continue;
        };
        if apply_result(work, &mut writes, result, now) {
            changed += 1;
            touched.insert(result.run_id);
            let action = work
                .workflow
                .steps
                .iter()
                .find(|s| s.id == result.step_id)
                .and_then(|s| s.action.clone())
                .unwrap_or_default();
            let status = match result.outcome {
                Outcome::Succeeded { .. } => "succeeded",
                Outcome::Failed { .. } => "failed",
            };
            steps.push((status, action));
        }
    }
    for id in &touched {
        if let Some(work) = works.get_mut(id) {
            work::advance(work, &mut writes, now);
        }
    }
    let messages = writes.has_messages();
    let finished = work::flush(&tx, works.values(), writes).await?;
    tx.commit().await?;
    finished.count();
    let metrics = crate::metrics::engine();
    for (status, action) in steps {
        metrics.step_finished(status, &action);
    }
    Ok(Recorded { changed, messages })
}

/// Applies one result to its step in memory; false when it is fenced out.
fn apply_result(
    work: &mut RunWork,
    writes: &mut Writes,
    result: &StepResult,
    now: DateTime<Utc>,
) -> bool {
    let index = result
        .item_index
        .map_or(NO_ITEM, |i| i32::try_from(i).unwrap_or(i32::MAX));
    let Some(row) = work.row(&result.step_id, index) else {
        return false;
    };
    // Fencing: only the current attempt of a step still in flight may record an outcome.
    // Earlier results of this batch are already applied, so a duplicate is fenced too.
    let attempt = i32::try_from(result.attempt).unwrap_or(i32::MAX);
    if row.attempt != attempt || !matches!(row.status, StepStatus::Dispatched | StepStatus::Running)
    {
        return false;
    }
    let (attempt_status, error) = match &result.outcome {
        Outcome::Succeeded { .. } => (AttemptStatus::Succeeded, None),
        Outcome::Failed { error } => (AttemptStatus::Failed, Some(error)),
    };
    writes.attempts.push(attempt::ActiveModel {
        id: Set(Uuid::now_v7()),
        workspace_id: Set(work.run.workspace_id),
        run_id: Set(work.run.id),
        step_instance_id: Set(row.id),
        attempt: Set(attempt),
        worker_id: Set(result.worker_id.clone()),
        status: Set(attempt_status),
        error: Set(error.map(|e| serde_json::to_value(e).unwrap_or(Value::Null))),
        started_at: Set(result.started_at),
        finished_at: Set(result.finished_at),
    });
    let verdict = match &result.outcome {
        Outcome::Succeeded { .. } => None,
        Outcome::Failed { error } => {
            let step = work.workflow.steps.iter().find(|s| s.id == result.step_id);
            Some(step.map_or(Verdict::GiveUp, |s| {
                retry::decide(&retry::policy(s), result.attempt, error)
            }))
        }
    };
    writes.audit.push((
        work.run.workspace_id,
        call_record(work, row, result, verdict.as_ref()),
    ));
    // A connection that needs a person to sign in again pauses the run instead of failing it:
    // the step waits, the run shows `waiting`, and `connection.needs_reauth` is raised once.
    let step = work.workflow.steps.iter().find(|s| s.id == result.step_id);
    let connection = step.and_then(|s| work.connection_of(s));
    let connection_name = step.and_then(|s| s.connection.clone());
    let parked = matches!(&result.outcome, Outcome::Failed { error } if error.code == ErrorCode::NeedsReauth)
        && connection.is_some();
    if parked {
        work.status_change = Some(RunStatus::Waiting);
        let key = format!(
            "{}.{}.{}.needs_reauth",
            work.run.id, result.step_id, attempt
        );
        let data = json!({
            "connection_id": connection,
            "connection": connection_name,
            "run_id": work.run.id,
            "step_id": result.step_id,
        });
        work::system_event(work, writes, key, "connection.needs_reauth", data, now);
    }
    work.upsert_step(&result.step_id, index, now, |m| {
        match (&result.outcome, verdict) {
            (Outcome::Succeeded { output }, _) => {
                m.status = StepStatus::Succeeded;
                m.output = Some(output.clone());
                m.error = None;
                m.started_at = Some(result.started_at);
                m.finished_at = Some(result.finished_at);
                m.due_at = None;
            }
            (Outcome::Failed { error }, _) if parked => {
                // Held, with no due time, until the connection is authorized again.
                m.error = Some(serde_json::to_value(error).unwrap_or(Value::Null));
                m.status = StepStatus::RetryWait;
                m.due_at = None;
            }
            (Outcome::Failed { error }, verdict) => {
                m.error = Some(serde_json::to_value(error).unwrap_or(Value::Null));
                match verdict {
                    Some(Verdict::RetryAfter(delay)) => {
                        m.status = StepStatus::RetryWait;
                        m.due_at = Some(now + chrono_duration(delay));
                    }
                    Some(Verdict::GiveUp) | None => {
                        m.status = StepStatus::Failed;
                        m.finished_at = Some(result.finished_at);
                        m.due_at = None;
                    }
                }
            }
        }
    });
    true
}

/// `input` of a step running `action` (`connector.action`) with the inputs its manifest
/// marks secret redacted, for the ledger and approval requests.
pub(crate) fn without_secret_fields(action: &str, input: &Value) -> Value {
    match action.split_once('.') {
        Some((connector, action)) => connectors::redact::redact_paths(
            input,
            connectors::Registry::builtin().secret_fields(connector, action),
        ),
        None => input.clone(),
    }
}

/// The ledger record of one attempt: who (the principal that started the run, or its trigger),
/// which connector, action and connection, how it ended, and its inputs and output (redacted
/// when appended).
fn call_record(
    work: &RunWork,
    row: &step_instance::Model,
    result: &StepResult,
    verdict: Option<&Verdict>,
) -> crate::audit::Entry {
    let step = work.workflow.steps.iter().find(|s| s.id == result.step_id);
    let action = step.and_then(|s| s.action.as_deref()).unwrap_or_default();
    let (connector, action) = action.split_once('.').unwrap_or((action, ""));
    let trigger = &work.run.trigger;
    let principal = match trigger["principal"].as_str() {
        Some(p) => p.to_owned(),
        None => format!("trigger:{}", trigger["kind"].as_str().unwrap_or("unknown")),
    };
    let (outcome, error_code, http_status, output) = match &result.outcome {
        Outcome::Succeeded { output } => (
            "success",
            None,
            output["status"]
                .as_i64()
                .and_then(|s| i32::try_from(s).ok()),
            output.clone(),
        ),
        Outcome::Failed { error } => (
            "error",
            serde_json::to_value(error.code)
                .ok()
                .and_then(|c| c.as_str().map(str::to_owned)),
            error.http_status.map(i32::from),
            serde_json::to_value(error).unwrap_or(Value::Null),
        ),
    };
    let bytes = serde_json::to_string(&output).map_or(0, |s| s.len());
    crate::audit::Entry {
        kind: "integration.call",
        principal,
        via: "run",
        at: result.finished_at,
        run_id: Some(work.run.id),
        step_id: Some(result.step_id.clone()),
        item_index: result.item_index.and_then(|i| i32::try_from(i).ok()),
        attempt: Some(row.attempt),
        connector: Some(connector.to_owned()),
        action: Some(action.to_owned()),
        connection_id: step.and_then(|s| work.connection_of(s)),
        outcome,
        error_code,
        http_status,
        duration_ms: Some(
            (result.finished_at - result.started_at)
                .num_milliseconds()
                .max(0),
        ),
        retry_delay_ms: match verdict {
            Some(Verdict::RetryAfter(d)) => Some(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
            _ => None,
        },
        bytes: Some(i64::try_from(bytes).unwrap_or(i64::MAX)),
        input: row
            .input
            .as_ref()
            .map(|input| without_secret_fields(&format!("{connector}.{action}"), input)),
        output: Some(output),
        details: None,
    }
}

/// Sends out retries that are due, treats attempts that outlived their deadline as lost, and
/// times out runs past their deadline. Returns how many runs it changed and whether it wrote
/// messages.
pub async fn tick(
    db: &DatabaseConnection,
    definitions: &Definitions,
    limit: u64,
) -> Result<Recorded, StoreError> {
    let now = Utc::now();
    let due = step_instance::Entity::find()
        .filter(step_instance::Column::Status.is_in([
            StepStatus::RetryWait,
            StepStatus::Dispatched,
            StepStatus::WaitingApproval,
        ]))
        .filter(step_instance::Column::DueAt.lte(now))
        .order_by_asc(step_instance::Column::DueAt)
        .limit(limit)
        .all(db)
        .await?;
    let expired = run::Entity::find()
        .filter(run::Column::Status.is_in([
            RunStatus::Queued,
            RunStatus::Running,
            RunStatus::Waiting,
        ]))
        .filter(run::Column::DeadlineAt.lte(now))
        .limit(limit)
        .all(db)
        .await?;
    if due.is_empty() && expired.is_empty() {
        return Ok(Recorded::default());
    }
    let tx = db.begin().await?;
    let ids: BTreeSet<Uuid> = due
        .iter()
        .map(|r| r.run_id)
        .chain(expired.iter().map(|r| r.id))
        .collect();
    let mut works = work::load_live_runs(&tx, definitions, &ids).await?;
    let mut writes = Writes::default();
    let mut changed = BTreeSet::new();
    for r in &expired {
        // Re-checked under the lock: another engine may have finished the run meanwhile.
        if let Some(work) = works.get_mut(&r.id)
            && work.run.deadline_at.is_some_and(|d| d <= now)
        {
            let error =
                json!({ "code": ErrorCode::Timeout, "message": "the run exceeded its timeout" });
            work.finish(RunStatus::TimedOut, None, Some(error), now);
            changed.insert(r.id);
        }
    }
    for stale in &due {
        let Some(work) = works.get_mut(&stale.run_id) else {
            continue;
        };
        if work.is_finished() {
            continue;
        }
        // Compared with the row read under the lock: another engine may have handled it.
        let Some(row) = work.row(&stale.step_id, stale.item_index) else {
            continue;
        };
        if row.status != stale.status || row.attempt != stale.attempt {
            continue;
        }
        let workflow = work.workflow.clone();
        let Some(step) = workflow.steps.iter().find(|s| s.id == row.step_id) else {
            continue;
        };
        if row.status == StepStatus::WaitingApproval {
            crate::approvals::expire(&tx, work, &stale.step_id, now).await?;
            changed.insert(stale.run_id);
            continue;
        }
        let retry_now = match row.status {
            StepStatus::RetryWait => true,
            _ => {
                // The attempt never reported back: count it as a timeout.
                let error = StepError {
                    http_status: None,
                    code: ErrorCode::Timeout,
                    message:
                        "no result before the attempt's deadline; the attempt is presumed lost"
                            .into(),
                    retry_after_ms: None,
                };
                let attempt = u32::try_from(row.attempt).unwrap_or(u32::MAX);
                match retry::decide(&retry::policy(step), attempt, &error) {
                    Verdict::RetryAfter(_) => true,
                    Verdict::GiveUp => {
                        work.upsert_step(&stale.step_id, stale.item_index, now, |m| {
                            m.status = StepStatus::Failed;
                            m.error = Some(serde_json::to_value(&error).unwrap_or(Value::Null));
                            m.finished_at = Some(now);
                        });
                        false
                    }
                }
            }
        };
        if retry_now {
            work.upsert_step(&stale.step_id, stale.item_index, now, |m| {
                m.status = StepStatus::Dispatched;
                m.attempt += 1;
                m.dispatched_at = Some(now);
                m.due_at = Some(work::lost_after(Some(step), now));
            });
            if let Some(row) = work.row(&stale.step_id, stale.item_index) {
                let connection = work.connection_of(step);
                work::dispatch(
                    &mut writes,
                    &work.run,
                    &workflow,
                    step,
                    row,
                    connection,
                    now,
                );
            }
        }
        changed.insert(stale.run_id);
    }
    for id in &changed {
        if let Some(work) = works.get_mut(id) {
            work::advance(work, &mut writes, now);
        }
    }
    let messages = writes.has_messages();
    let finished = work::flush(&tx, works.values(), writes).await?;
    tx.commit().await?;
    finished.count();
    Ok(Recorded {
        changed: changed.len(),
        messages,
    })
}

/// Resumes the runs of a workspace whose steps wait on `connection_id` being authorized again
/// (after the OAuth callback or new credentials): each such step is due at once, so the
/// scheduler dispatches it as its next attempt, and its run shows `running` again. Returns how
/// many steps were resumed.
pub async fn resume_after_reauth(
    db: &DatabaseConnection,
    definitions: &Definitions,
    workspace_id: Uuid,
    connection_id: Uuid,
) -> Result<usize, StoreError> {
    let waiting: BTreeSet<Uuid> = run::Entity::find()
        .select_only()
        .column(run::Column::Id)
        .filter(run::Column::WorkspaceId.eq(workspace_id))
        .filter(run::Column::Status.eq(RunStatus::Waiting))
        .limit(10_000)
        .into_tuple::<Uuid>()
        .all(db)
        .await?
        .into_iter()
        .collect();
    if waiting.is_empty() {
        return Ok(0);
    }
    let now = Utc::now();
    let tx = db.begin().await?;
    let mut works = work::load_live_runs(&tx, definitions, &waiting).await?;
    let mut resumed = 0;
    for work in works.values_mut() {
        let parked: Vec<(String, i32)> = work
            .parked_on(connection_id)
            .map(|r| (r.step_id.clone(), r.item_index))
            .collect();
        for (step_id, index) in &parked {
            work.upsert_step(step_id, *index, now, |m| m.due_at = Some(now));
        }
        if !parked.is_empty() {
            resumed += parked.len();
            work.status_change = Some(RunStatus::Running);
        }
    }
    let finished = work::flush(&tx, works.values(), Writes::default()).await?;
    tx.commit().await?;
    finished.count();
    Ok(resumed)
}

/// Cancels a run: steps not finished are cancelled and late results are ignored.
pub async fn cancel_run(
    db: &DatabaseConnection,
    definitions: &Definitions,
    workspace_id: Uuid,
    run_id: Uuid,
) -> Result<(), StoreError> {
    let tx = db.begin().await?;
    let mut works = work::load_live_runs(&tx, definitions, &BTreeSet::from([run_id])).await?;
    let Some(work) = works
        .get_mut(&run_id)
        .filter(|w| w.run.workspace_id == workspace_id)
    else {
        // Not live: either finished (in this workspace) or not there at all.
        let found = run::Entity::find_by_id(run_id)
            .filter(run::Column::WorkspaceId.eq(workspace_id))
            .one(&tx)
            .await?;
        return Err(match found {
            Some(_) => StoreError::RunFinished(run_id),
            None => StoreError::RunNotFound(run_id),
        });
    };
    let error = json!({ "code": ErrorCode::Cancelled, "message": "cancelled on request" });
    work.finish(RunStatus::Cancelled, None, Some(error), Utc::now());
    let finished = work::flush(&tx, works.values(), Writes::default()).await?;
    tx.commit().await?;
    finished.count();
    Ok(())
}

/// A run and its steps, as the API shows them.
pub async fn get_run(
    db: &DatabaseConnection,
    workspace_id: Uuid,
    run_id: Uuid,
) -> Result<Option<(run::Model, Vec<step_instance::Model>, Vec<attempt::Model>)>, StoreError> {
    let Some(run) = run::Entity::find_by_id(run_id)
        .filter(run::Column::WorkspaceId.eq(workspace_id))
        .one(db)
        .await?
    else {
        return Ok(None);
    };
    let steps = step_instance::Entity::find()
        .filter(step_instance::Column::RunId.eq(run_id))
        .order_by_asc(step_instance::Column::Id)
        .all(db)
        .await?;
    let attempts = attempt::Entity::find()
        .filter(attempt::Column::RunId.eq(run_id))
        .order_by_asc(attempt::Column::Id)
        .all(db)
        .await?;
    Ok(Some((run, steps, attempts)))
}

/// Runs, newest first, filtered; `before` is the cursor (the last id of the previous page).
pub async fn list_runs(
    db: &DatabaseConnection,
    workspace_id: Uuid,
    workflow: Option<&str>,
    status: Option<RunStatus>,
    before: Option<Uuid>,
    limit: u64,
) -> Result<Vec<run::Model>, StoreError> {
    let mut q = run::Entity::find().filter(run::Column::WorkspaceId.eq(workspace_id));
    if let Some(w) = workflow {
        q = q.filter(run::Column::WorkflowName.eq(w));
    }
    if let Some(s) = status {
        q = q.filter(run::Column::Status.eq(s));
    }
    if let Some(b) = before {
        q = q.filter(run::Column::Id.lt(b));
    }
    Ok(q.order_by_desc(run::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// How many outbox rows are waiting to be published.
pub async fn outbox_backlog(db: &DatabaseConnection) -> Result<u64, StoreError> {
    Ok(outbox::Entity::find().count(db).await?)
}

/// Unsent outbox rows, oldest first.
pub async fn unsent(db: &DatabaseConnection, limit: u64) -> Result<Vec<outbox::Model>, StoreError> {
    Ok(outbox::Entity::find()
        .filter(outbox::Column::SentAt.is_null())
        .order_by_asc(outbox::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// Removes published rows from the outbox: once JetStream has acknowledged a message, the
/// row has done its job, and keeping it would only grow the table.
pub async fn remove_sent(db: &DatabaseConnection, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    outbox::Entity::delete_many()
        .filter(outbox::Column::Id.is_in(ids.iter().copied()))
        .exec(db)
        .await?;
    Ok(())
}

/// The workspace every request uses until workspaces and principals exist.
pub fn default_workspace() -> Uuid {
    DEFAULT_WORKSPACE_ID
}
