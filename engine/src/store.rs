//! Run state in SQL: every transition of a run happens here, inside one transaction, together
//! with the outbox rows of the messages it causes.
//!
//! The database is the source of truth; JetStream only carries work. Each function that
//! changes a run (starting it, recording results, scheduling retries, cancelling, timing out)
//! loads the run's steps, asks the [`planner`](crate::planner) what follows, writes the steps
//! it decided on and their step messages into the outbox, and commits. The relay publishes the
//! outbox afterwards; a crash in between only delays the messages.
//!
//! Several engine copies may work on the same run: on PostgreSQL the run row is locked
//! (`SELECT … FOR UPDATE`) for the length of the transaction, and every write is fenced by the
//! step's attempt number, so a duplicate or stale result changes nothing.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use schemas::db::DEFAULT_WORKSPACE_ID;
use schemas::db::entities::step_instance::NO_ITEM;
use schemas::db::entities::{AttemptStatus, RunStatus, StepStatus};
use schemas::db::entities::{attempt, event, outbox, run, step_instance, workflow_version};
use schemas::definition::Workflow;
use schemas::envelope::{
    ENVELOPE_VERSION, ErrorCode, EventEnvelope, Outcome, Provenance, StepError, StepMessage,
    StepResult,
};
use schemas::expr::Scope;
use schemas::transport;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseConnection,
    DatabaseTransaction, EntityTrait, QueryFilter, QueryOrder, QuerySelect, Set, TransactionTrait,
};
use serde_json::{Value, json};
use uuid::Uuid;

use crate::planner::{self, Decision, Item, RunOutcome, RunState, StepState};
use crate::retry::{self, Verdict};

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

fn parse_definition(row: &workflow_version::Model) -> Result<Workflow, StoreError> {
    serde_json::from_value(row.definition.clone()).map_err(|source| StoreError::Definition {
        workflow: row.name.clone(),
        version: row.version,
        source,
    })
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
    workspace_id: Uuid,
    name: &str,
    input: Value,
    idempotency_key: Option<&str>,
    trigger: Value,
) -> Result<Started, StoreError> {
    let tx = db.begin().await?;
    if let Some(key) = idempotency_key
        && let Some(existing) = find_by_key(&tx, workspace_id, name, key).await?
    {
        return Ok(Started {
            run_id: existing,
            created: false,
        });
    }
    let row = get_workflow(&tx, workspace_id, name, None)
        .await?
        .ok_or_else(|| StoreError::WorkflowNotFound(name.to_owned()))?;
    let workflow = parse_definition(&row)?;
    let inputs = resolve_inputs(&workflow, input)?;
    let now = Utc::now();
    let run_id = Uuid::now_v7();
    let deadline = workflow.timeout.map(|t| now + chrono_duration(t.get()));
    let inserted = run::ActiveModel {
        id: Set(run_id),
        workspace_id: Set(workspace_id),
        workflow_name: Set(name.to_owned()),
        workflow_version: Set(row.version),
        status: Set(RunStatus::Running),
        input: Set(inputs),
        outputs: Set(None),
        error: Set(None),
        idempotency_key: Set(idempotency_key.map(str::to_owned)),
        trigger: Set(trigger),
        created_at: Set(now),
        started_at: Set(Some(now)),
        finished_at: Set(None),
        deadline_at: Set(deadline),
        updated_at: Set(now),
    }
    .insert(&tx)
    .await;
    if let Err(e) = inserted {
        // Two requests with one key raced: the loser answers with the winner's run.
        if let Some(key) = idempotency_key {
            drop(tx);
            if let Some(existing) = find_by_key(db, workspace_id, name, key).await? {
                return Ok(Started {
                    run_id: existing,
                    created: false,
                });
            }
        }
        return Err(e.into());
    }
    let run_row = run::Entity::find_by_id(run_id)
        .one(&tx)
        .await?
        .ok_or(StoreError::RunNotFound(run_id))?;
    advance(&tx, &run_row, &workflow).await?;
    tx.commit().await?;
    Ok(Started {
        run_id,
        created: true,
    })
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

/// Locks the run row for this transaction where the database can (PostgreSQL), so engine
/// copies handling results of one run take turns. SQLite serializes writers anyway.
async fn lock_run(
    tx: &DatabaseTransaction,
    run_id: Uuid,
) -> Result<Option<run::Model>, StoreError> {
    let mut q = run::Entity::find_by_id(run_id);
    if tx.get_database_backend() == DatabaseBackend::Postgres {
        q = q.lock_exclusive();
    }
    Ok(q.one(tx).await?)
}

/// Loads the run's workflow version.
async fn run_workflow(
    tx: &DatabaseTransaction,
    run: &run::Model,
) -> Result<Arc<Workflow>, StoreError> {
    // Not cached across transactions: a process-wide cache keyed by (workspace, name,
    // version) would mix up engines that share a process but not a database.
    let row = get_workflow(
        tx,
        run.workspace_id,
        &run.workflow_name,
        Some(run.workflow_version),
    )
    .await?
    .ok_or_else(|| StoreError::WorkflowNotFound(run.workflow_name.clone()))?;
    Ok(Arc::new(parse_definition(&row)?))
}

fn step_state(row: &step_instance::Model) -> StepState {
    match row.status {
        StepStatus::Pending => StepState::Pending,
        StepStatus::Dispatched | StepStatus::Running | StepStatus::RetryWait => StepState::InFlight,
        StepStatus::Succeeded => StepState::Succeeded(row.output.clone().unwrap_or(Value::Null)),
        StepStatus::Failed => StepState::Failed(
            row.error
                .clone()
                .and_then(|e| serde_json::from_value(e).ok())
                .unwrap_or_else(|| StepError {
                    code: ErrorCode::Internal,
                    message: "failed".into(),
                    retry_after_ms: None,
                }),
        ),
        StepStatus::Skipped => StepState::Skipped,
        StepStatus::Cancelled => StepState::Cancelled,
    }
}

/// The planner's view of a run: its scope and the state of every step.
async fn load_state<'a>(
    tx: &DatabaseTransaction,
    run: &run::Model,
    workflow: &'a Workflow,
) -> Result<(RunState<'a>, HashMap<(String, i32), step_instance::Model>), StoreError> {
    let rows = step_instance::Entity::find()
        .filter(step_instance::Column::RunId.eq(run.id))
        .order_by_asc(step_instance::Column::ItemIndex)
        .all(tx)
        .await?;
    let mut steps: HashMap<String, StepState> = HashMap::new();
    let mut by_key = HashMap::new();
    for row in &rows {
        by_key.insert((row.step_id.clone(), row.item_index), row.clone());
    }
    for row in rows.iter().filter(|r| r.item_index == NO_ITEM) {
        let state = if row.items_total.is_some() && !row.status.is_terminal() {
            let values = row
                .input
                .clone()
                .and_then(|v| v.as_array().cloned())
                .unwrap_or_default();
            let items = values
                .into_iter()
                .enumerate()
                .map(|(i, value)| Item {
                    value,
                    state: by_key
                        .get(&(row.step_id.clone(), i32::try_from(i).unwrap_or(i32::MAX)))
                        .map_or(StepState::Pending, step_state),
                })
                .collect();
            StepState::FannedOut(items)
        } else {
            step_state(row)
        };
        steps.insert(row.step_id.clone(), state);
    }
    let scope = Scope::new()
        .with_trigger(run.trigger.clone())
        .with_inputs(run.input.clone())
        .with_run(
            json!({ "id": run.id, "workflow": run.workflow_name, "version": run.workflow_version }),
        );
    let scope = match run.trigger.get("event") {
        Some(event) => scope.with_event(event.clone()),
        None => scope,
    };
    Ok((
        RunState {
            workflow,
            scope,
            steps,
        },
        by_key,
    ))
}

/// Plans the run and writes what the planner decided.
async fn advance(
    tx: &DatabaseTransaction,
    run: &run::Model,
    workflow: &Workflow,
) -> Result<(), StoreError> {
    let (state, mut rows) = load_state(tx, run, workflow).await?;
    let decisions = planner::plan(&state);
    let now = Utc::now();
    for decision in decisions {
        match decision {
            Decision::Dispatch {
                step_id,
                item_index,
                input,
            } => {
                let index = item_index.map_or(NO_ITEM, |i| i32::try_from(i).unwrap_or(i32::MAX));
                let step = workflow.steps.iter().find(|s| s.id == step_id);
                let attempt = rows.get(&(step_id.clone(), index)).map_or(0, |r| r.attempt) + 1;
                let row = upsert_step(tx, run, &mut rows, &step_id, index, |m| {
                    m.status = Set(StepStatus::Dispatched);
                    m.attempt = Set(attempt);
                    m.input = Set(Some(input.clone()));
                    m.dispatched_at = Set(Some(now));
                    m.due_at = Set(Some(lost_after(step, now)));
                })
                .await?;
                if let Some(step) = step {
                    dispatch(tx, run, workflow, step, &row, now).await?;
                }
            }
            Decision::FanOut { step_id, items } => {
                let total = i32::try_from(items.len()).unwrap_or(i32::MAX);
                upsert_step(tx, run, &mut rows, &step_id, NO_ITEM, |m| {
                    m.status = Set(StepStatus::Running);
                    m.items_total = Set(Some(total));
                    m.input = Set(Some(Value::Array(items.clone())));
                    m.started_at = Set(Some(now));
                })
                .await?;
                for i in 0..total {
                    let row = upsert_step(tx, run, &mut rows, &step_id, i, |_| {}).await?;
                    rows.insert((step_id.clone(), i), row);
                }
            }
            Decision::Complete { step_id, output } => {
                upsert_step(tx, run, &mut rows, &step_id, NO_ITEM, |m| {
                    m.status = Set(StepStatus::Succeeded);
                    m.output = Set(Some(output.clone()));
                    m.finished_at = Set(Some(now));
                })
                .await?;
            }
            Decision::Emit {
                step_id,
                event: name,
                data,
            } => {
                let event_id = format!("{}.{}", run.id, step_id);
                let envelope = EventEnvelope {
                    v: ENVELOPE_VERSION,
                    id: event_id.clone(),
                    workspace_id: run.workspace_id,
                    name: name.clone(),
                    data: data.clone(),
                    source: Provenance::Step {
                        run_id: run.id,
                        step_id: step_id.clone(),
                    },
                    depth: run
                        .trigger
                        .get("depth")
                        .and_then(Value::as_u64)
                        .map_or(0, |d| d as u32 + 1),
                    time: now,
                };
                event::Entity::insert(event::ActiveModel {
                    id: Set(event_id.clone()),
                    workspace_id: Set(run.workspace_id),
                    name: Set(name.clone()),
                    data: Set(data),
                    source: Set(serde_json::to_value(&envelope.source).unwrap_or(Value::Null)),
                    depth: Set(i32::try_from(envelope.depth).unwrap_or(i32::MAX)),
                    created_at: Set(now),
                })
                .on_conflict(
                    OnConflict::column(event::Column::Id)
                        .do_nothing()
                        .to_owned(),
                )
                .exec_without_returning(tx)
                .await?;
                enqueue(
                    tx,
                    &transport::event_subject(&name),
                    &event_id,
                    &envelope,
                    now,
                )
                .await?;
                upsert_step(tx, run, &mut rows, &step_id, NO_ITEM, |m| {
                    m.status = Set(StepStatus::Succeeded);
                    m.output = Set(Some(json!({ "event": name, "id": event_id })));
                    m.finished_at = Set(Some(now));
                })
                .await?;
            }
            Decision::Skip { step_id } => {
                upsert_step(tx, run, &mut rows, &step_id, NO_ITEM, |m| {
                    m.status = Set(StepStatus::Skipped);
                    m.finished_at = Set(Some(now));
                })
                .await?;
            }
            Decision::Fail {
                step_id,
                item_index,
                error,
            } => {
                let index = item_index.map_or(NO_ITEM, |i| i32::try_from(i).unwrap_or(i32::MAX));
                upsert_step(tx, run, &mut rows, &step_id, index, |m| {
                    m.status = Set(StepStatus::Failed);
                    m.error = Set(Some(serde_json::to_value(&error).unwrap_or(Value::Null)));
                    m.finished_at = Set(Some(now));
                })
                .await?;
            }
            Decision::FinishRun(outcome) => {
                let (status, outputs, error) = match outcome {
                    RunOutcome::Succeeded { outputs } => {
                        (RunStatus::Succeeded, Some(outputs), None)
                    }
                    RunOutcome::Failed { step_id, error } => {
                        let mut e = serde_json::to_value(&error).unwrap_or(Value::Null);
                        if let (Some(id), Some(obj)) = (step_id, e.as_object_mut()) {
                            obj.insert("step".into(), Value::String(id));
                        }
                        (RunStatus::Failed, None, Some(e))
                    }
                };
                finish_run(tx, run, status, outputs, error, now).await?;
            }
        }
    }
    Ok(())
}

/// Ends a run and cancels every step that has not finished.
async fn finish_run(
    tx: &DatabaseTransaction,
    run: &run::Model,
    status: RunStatus,
    outputs: Option<Value>,
    error: Option<Value>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    run::Entity::update_many()
        .col_expr(run::Column::Status, Expr::value(status))
        .col_expr(run::Column::Outputs, Expr::value(outputs))
        .col_expr(run::Column::Error, Expr::value(error))
        .col_expr(run::Column::FinishedAt, Expr::value(Some(now)))
        .col_expr(run::Column::UpdatedAt, Expr::value(now))
        .filter(run::Column::Id.eq(run.id))
        .exec(tx)
        .await?;
    step_instance::Entity::update_many()
        .col_expr(
            step_instance::Column::Status,
            Expr::value(StepStatus::Cancelled),
        )
        .col_expr(step_instance::Column::FinishedAt, Expr::value(Some(now)))
        .col_expr(step_instance::Column::UpdatedAt, Expr::value(now))
        .filter(step_instance::Column::RunId.eq(run.id))
        .filter(step_instance::Column::Status.is_in([
            StepStatus::Pending,
            StepStatus::Dispatched,
            StepStatus::Running,
            StepStatus::RetryWait,
        ]))
        .exec(tx)
        .await?;
    Ok(())
}

/// Inserts or updates one step instance row, returning it. `rows` holds every row of the run
/// (loaded once per transaction) and is kept current, so no row is looked up twice.
async fn upsert_step(
    tx: &DatabaseTransaction,
    run: &run::Model,
    rows: &mut HashMap<(String, i32), step_instance::Model>,
    step_id: &str,
    item_index: i32,
    change: impl FnOnce(&mut step_instance::ActiveModel),
) -> Result<step_instance::Model, StoreError> {
    let now = Utc::now();
    let key = (step_id.to_owned(), item_index);
    let row = match rows.get(&key) {
        Some(row) => {
            let mut m: step_instance::ActiveModel = row.clone().into();
            change(&mut m);
            m.updated_at = Set(now);
            m.update(tx).await?
        }
        None => {
            let mut m = step_instance::ActiveModel {
                id: Set(Uuid::now_v7()),
                workspace_id: Set(run.workspace_id),
                run_id: Set(run.id),
                step_id: Set(step_id.to_owned()),
                item_index: Set(item_index),
                status: Set(StepStatus::Pending),
                attempt: Set(0),
                input: Set(None),
                output: Set(None),
                error: Set(None),
                items_total: Set(None),
                dispatched_at: Set(None),
                started_at: Set(None),
                finished_at: Set(None),
                due_at: Set(None),
                updated_at: Set(now),
            };
            change(&mut m);
            m.insert(tx).await?
        }
    };
    rows.insert(key, row.clone());
    Ok(row)
}

/// When a dispatched attempt of `step` is presumed lost if no result has arrived.
fn lost_after(step: Option<&schemas::definition::Step>, now: DateTime<Utc>) -> DateTime<Utc> {
    let timeout = step
        .and_then(|s| s.timeout)
        .map_or(DEFAULT_STEP_TIMEOUT, |t| t.get());
    now + chrono_duration(timeout + LOST_ATTEMPT_GRACE)
}

/// Writes the step message for the row's current attempt into the outbox and sets the
/// deadline after which the reconciler treats the attempt as lost.
async fn dispatch(
    tx: &DatabaseTransaction,
    run: &run::Model,
    workflow: &Workflow,
    step: &schemas::definition::Step,
    row: &step_instance::Model,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let timeout = step.timeout.map_or(DEFAULT_STEP_TIMEOUT, |t| t.get());
    let item_index = u32::try_from(row.item_index).ok();
    let message = StepMessage {
        v: ENVELOPE_VERSION,
        workspace_id: run.workspace_id,
        run_id: run.id,
        step_id: step.id.clone(),
        item_index,
        attempt: u32::try_from(row.attempt).unwrap_or(1),
        action: step.action.clone().unwrap_or_default(),
        connection_id: None,
        input: row.input.clone().unwrap_or(Value::Null),
        timeout_ms: u64::try_from(timeout.as_millis()).unwrap_or(u64::MAX),
        idempotency_key: match item_index {
            Some(i) => format!("{}.{}[{}]", run.id, step.id, i),
            None => format!("{}.{}", run.id, step.id),
        },
        dispatched_at: now,
    };
    let queue = step
        .queue
        .as_deref()
        .or(workflow.queue.as_deref())
        .unwrap_or(transport::DEFAULT_QUEUE);
    enqueue(
        tx,
        &transport::step_subject(queue),
        &message.msg_id(),
        &message,
        now,
    )
    .await?;
    Ok(())
}

/// Adds a message to the outbox; a message id already there is left alone.
async fn enqueue<T: serde::Serialize>(
    tx: &DatabaseTransaction,
    subject: &str,
    msg_id: &str,
    body: &T,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    let payload = serde_json::to_string(body).unwrap_or_default();
    outbox::Entity::insert(outbox::ActiveModel {
        subject: Set(subject.to_owned()),
        msg_id: Set(msg_id.to_owned()),
        payload: Set(payload),
        headers: Set(json!({})),
        created_at: Set(now),
        sent_at: Set(None),
        ..Default::default()
    })
    .on_conflict(
        OnConflict::column(outbox::Column::MsgId)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(tx)
    .await?;
    Ok(())
}

/// Records a batch of results in one transaction. Returns how many changed anything;
/// duplicates and results of superseded attempts are counted out and change nothing.
pub async fn record_results(
    db: &DatabaseConnection,
    results: &[StepResult],
) -> Result<usize, StoreError> {
    let tx = db.begin().await?;
    let mut changed = 0;
    let mut touched: BTreeSet<Uuid> = BTreeSet::new();
    let now = Utc::now();
    // Lock runs in a stable order so two engines with overlapping batches cannot deadlock.
    let run_ids: BTreeSet<Uuid> = results.iter().map(|r| r.run_id).collect();
    let mut runs = HashMap::new();
    for id in run_ids {
        if let Some(run) = lock_run(&tx, id).await? {
            runs.insert(id, run);
        }
    }
    let mut workflows: HashMap<Uuid, Arc<Workflow>> = HashMap::new();
    for result in results {
        let Some(run) = runs.get(&result.run_id) else {
            continue;
        };
        if run.status.is_terminal() {
            continue;
        }
        let index = result
            .item_index
            .map_or(NO_ITEM, |i| i32::try_from(i).unwrap_or(i32::MAX));
        let Some(row) = step_instance::Entity::find()
            .filter(step_instance::Column::RunId.eq(run.id))
            .filter(step_instance::Column::StepId.eq(&result.step_id))
            .filter(step_instance::Column::ItemIndex.eq(index))
            .one(&tx)
            .await?
        else {
            continue;
        };
        // Fencing: only the current attempt of a step still in flight may record an outcome.
        let attempt = i32::try_from(result.attempt).unwrap_or(i32::MAX);
        if row.attempt != attempt
            || !matches!(row.status, StepStatus::Dispatched | StepStatus::Running)
        {
            continue;
        }
        if let std::collections::hash_map::Entry::Vacant(slot) = workflows.entry(run.id) {
            slot.insert(run_workflow(&tx, run).await?);
        }
        let workflow = &workflows[&run.id];
        let (attempt_status, error) = match &result.outcome {
            Outcome::Succeeded { .. } => (AttemptStatus::Succeeded, None),
            Outcome::Failed { error } => (AttemptStatus::Failed, Some(error.clone())),
        };
        let inserted = attempt::Entity::insert(attempt::ActiveModel {
            id: Set(Uuid::now_v7()),
            workspace_id: Set(run.workspace_id),
            run_id: Set(run.id),
            step_instance_id: Set(row.id),
            attempt: Set(attempt),
            worker_id: Set(result.worker_id.clone()),
            status: Set(attempt_status),
            error: Set(error
                .as_ref()
                .map(|e| serde_json::to_value(e).unwrap_or(Value::Null))),
            started_at: Set(result.started_at),
            finished_at: Set(result.finished_at),
        })
        .on_conflict(
            OnConflict::columns([attempt::Column::StepInstanceId, attempt::Column::Attempt])
                .do_nothing()
                .to_owned(),
        )
        .exec_without_returning(&tx)
        .await?;
        if inserted == 0 {
            continue;
        }
        let mut m: step_instance::ActiveModel = row.clone().into();
        match &result.outcome {
            Outcome::Succeeded { output } => {
                m.status = Set(StepStatus::Succeeded);
                m.output = Set(Some(output.clone()));
                m.error = Set(None);
                m.started_at = Set(Some(result.started_at));
                m.finished_at = Set(Some(result.finished_at));
                m.due_at = Set(None);
            }
            Outcome::Failed { error } => {
                let step = workflow.steps.iter().find(|s| s.id == row.step_id);
                let verdict = step.map_or(Verdict::GiveUp, |s| {
                    retry::decide(&retry::policy(s), result.attempt, error)
                });
                m.error = Set(Some(serde_json::to_value(error).unwrap_or(Value::Null)));
                match verdict {
                    Verdict::RetryAfter(delay) => {
                        m.status = Set(StepStatus::RetryWait);
                        m.due_at = Set(Some(now + chrono_duration(delay)));
                    }
                    Verdict::GiveUp => {
                        m.status = Set(StepStatus::Failed);
                        m.finished_at = Set(Some(result.finished_at));
                        m.due_at = Set(None);
                    }
                }
            }
        }
        m.updated_at = Set(now);
        m.update(&tx).await?;
        changed += 1;
        touched.insert(run.id);
    }
    for id in touched {
        // Only steps changed above, so the run row read under the lock is still current.
        if let (Some(run), Some(workflow)) = (runs.get(&id), workflows.get(&id)) {
            advance(&tx, run, workflow).await?;
        }
    }
    tx.commit().await?;
    Ok(changed)
}

/// Sends out retries that are due, treats attempts that outlived their deadline as lost, and
/// times out runs past their deadline. Returns how many runs it changed.
pub async fn tick(db: &DatabaseConnection, limit: u64) -> Result<usize, StoreError> {
    let now = Utc::now();
    let due = step_instance::Entity::find()
        .filter(
            step_instance::Column::Status.is_in([StepStatus::RetryWait, StepStatus::Dispatched]),
        )
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
        return Ok(0);
    }
    let tx = db.begin().await?;
    let mut changed = 0;
    for r in expired {
        if let Some(run) = lock_run(&tx, r.id).await?
            && !run.status.is_terminal()
        {
            let error =
                json!({ "code": ErrorCode::Timeout, "message": "the run exceeded its timeout" });
            finish_run(&tx, &run, RunStatus::TimedOut, None, Some(error), now).await?;
            changed += 1;
        }
    }
    let mut by_run: HashMap<Uuid, Vec<step_instance::Model>> = HashMap::new();
    for row in due {
        by_run.entry(row.run_id).or_default().push(row);
    }
    for (run_id, rows) in by_run {
        let Some(run) = lock_run(&tx, run_id).await? else {
            continue;
        };
        if run.status.is_terminal() {
            continue;
        }
        let workflow = run_workflow(&tx, &run).await?;
        for stale in rows {
            // Re-read under the lock: another engine may have handled it meanwhile.
            let Some(row) = step_instance::Entity::find_by_id(stale.id).one(&tx).await? else {
                continue;
            };
            if row.status != stale.status || row.attempt != stale.attempt {
                continue;
            }
            let Some(step) = workflow.steps.iter().find(|s| s.id == row.step_id) else {
                continue;
            };
            let retry_now = match row.status {
                StepStatus::RetryWait => true,
                _ => {
                    // The attempt never reported back: count it as a timeout.
                    let error = StepError {
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
                            let mut m: step_instance::ActiveModel = row.clone().into();
                            m.status = Set(StepStatus::Failed);
                            m.error =
                                Set(Some(serde_json::to_value(&error).unwrap_or(Value::Null)));
                            m.finished_at = Set(Some(now));
                            m.updated_at = Set(now);
                            m.update(&tx).await?;
                            false
                        }
                    }
                }
            };
            if retry_now {
                let mut m: step_instance::ActiveModel = row.clone().into();
                m.status = Set(StepStatus::Dispatched);
                m.attempt = Set(row.attempt + 1);
                m.dispatched_at = Set(Some(now));
                m.due_at = Set(Some(lost_after(Some(step), now)));
                m.updated_at = Set(now);
                let row = m.update(&tx).await?;
                dispatch(&tx, &run, &workflow, step, &row, now).await?;
            }
        }
        advance(&tx, &run, &workflow).await?;
        changed += 1;
    }
    tx.commit().await?;
    Ok(changed)
}

/// Cancels a run: steps not finished are cancelled and late results are ignored.
pub async fn cancel_run(
    db: &DatabaseConnection,
    workspace_id: Uuid,
    run_id: Uuid,
) -> Result<(), StoreError> {
    let tx = db.begin().await?;
    let run = lock_run(&tx, run_id)
        .await?
        .filter(|r| r.workspace_id == workspace_id)
        .ok_or(StoreError::RunNotFound(run_id))?;
    if run.status.is_terminal() {
        return Err(StoreError::RunFinished(run_id));
    }
    let error = json!({ "code": ErrorCode::Cancelled, "message": "cancelled on request" });
    finish_run(
        &tx,
        &run,
        RunStatus::Cancelled,
        None,
        Some(error),
        Utc::now(),
    )
    .await?;
    tx.commit().await?;
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

/// Unsent outbox rows, oldest first.
pub async fn unsent(db: &DatabaseConnection, limit: u64) -> Result<Vec<outbox::Model>, StoreError> {
    Ok(outbox::Entity::find()
        .filter(outbox::Column::SentAt.is_null())
        .order_by_asc(outbox::Column::Id)
        .limit(limit)
        .all(db)
        .await?)
}

/// Marks outbox rows as published.
pub async fn mark_sent(db: &DatabaseConnection, ids: &[i64]) -> Result<(), StoreError> {
    if ids.is_empty() {
        return Ok(());
    }
    outbox::Entity::update_many()
        .col_expr(outbox::Column::SentAt, Expr::value(Some(Utc::now())))
        .filter(outbox::Column::Id.is_in(ids.iter().copied()))
        .exec(db)
        .await?;
    Ok(())
}

/// The workspace every request uses until workspaces and principals exist.
pub fn default_workspace() -> Uuid {
    DEFAULT_WORKSPACE_ID
}
