//! A transition's working set: the runs it changes, loaded once under their locks, changed in
//! memory, and written back in a handful of statements.
//!
//! Recording a batch of results used to cost several statements per result. Here a batch of
//! any size costs: one `SELECT … FOR UPDATE` of its runs, one `SELECT` of their steps, then one
//! multi-row statement each for the step rows (an upsert on the primary key, so new and changed
//! rows go together), the attempts, the events and the outbox, plus one `UPDATE` per run that
//! finished. Planning ([`advance`]) is pure: it reads and changes the rows in memory.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use schemas::db::entities::approval::{self, ApprovalStatus};
use schemas::db::entities::step_instance::NO_ITEM;
use schemas::db::entities::{RunStatus, StepStatus};
use schemas::db::entities::{
    attempt, connection, event, outbox, run, step_instance, workflow_version,
};
use schemas::definition::{Step, Workflow};
use schemas::envelope::{
    ENVELOPE_VERSION, ErrorCode, EventEnvelope, Provenance, StepError, StepMessage,
};
use schemas::expr::Scope;
use schemas::transport;
use sea_orm::sea_query::{Expr, OnConflict};
use sea_orm::{
    ColumnTrait, ConnectionTrait, DatabaseBackend, DatabaseTransaction, EntityTrait, QueryFilter,
    QueryOrder, QuerySelect, Set,
};
use serde_json::{Value, json};
use uuid::Uuid;

use super::{DEFAULT_STEP_TIMEOUT, LOST_ATTEMPT_GRACE, StoreError, chrono_duration};
use crate::planner::{self, Decision, Item, RunOutcome, RunState, StepState};

/// Rows per multi-row statement: the widest table has 16 columns, and SQLite accepts 32,766
/// bound values per statement.
const ROWS_PER_STATEMENT: usize = 1_000;

/// A workspace's policy-gated actions and when they were read.
type GatesRead = (std::time::Instant, Arc<Vec<String>>);

/// Most parsed definitions an engine keeps.
const DEFINITIONS_KEPT: usize = 1_024;

/// Parsed workflow definitions, by workspace, name and version. Versions are immutable, so an
/// entry never goes stale. One per engine: engines sharing a process may not share a database.
#[derive(Debug, Default)]
pub struct Definitions {
    parsed: Mutex<HashMap<(Uuid, String, i32), Arc<Workflow>>>,
    /// Each workspace's policy-gated actions, and when they were read.
    gates: Mutex<HashMap<Uuid, GatesRead>>,
}

impl Definitions {
    fn cached_gates(&self, workspace_id: Uuid) -> Option<Arc<Vec<String>>> {
        let gates = self.gates.lock().ok()?;
        let (at, found) = gates.get(&workspace_id)?;
        (at.elapsed() < GATES_FOR).then(|| found.clone())
    }

    fn keep_gates(&self, workspace_id: Uuid, gated: Arc<Vec<String>>) {
        if let Ok(mut gates) = self.gates.lock() {
            if gates.len() >= DEFINITIONS_KEPT {
                gates.clear();
            }
            gates.insert(workspace_id, (std::time::Instant::now(), gated));
        }
    }

    /// Forgets a workspace's approval rules, after its policy changed.
    pub fn forget_policy(&self, workspace_id: Uuid) {
        if let Ok(mut gates) = self.gates.lock() {
            gates.remove(&workspace_id);
        }
    }

    /// The definition a run is pinned to.
    pub(crate) async fn of_run<C: ConnectionTrait>(
        &self,
        db: &C,
        run: &run::Model,
    ) -> Result<Arc<Workflow>, StoreError> {
        let key = (
            run.workspace_id,
            run.workflow_name.clone(),
            run.workflow_version,
        );
        if let Some(found) = self.lookup(&key) {
            return Ok(found);
        }
        let row = super::get_workflow(
            db,
            run.workspace_id,
            &run.workflow_name,
            Some(run.workflow_version),
        )
        .await?
        .ok_or_else(|| StoreError::WorkflowNotFound(run.workflow_name.clone()))?;
        self.parse(&row)
    }

    /// Parses a stored version, or returns the copy parsed before.
    pub fn parse(&self, row: &workflow_version::Model) -> Result<Arc<Workflow>, StoreError> {
        let key = (row.workspace_id, row.name.clone(), row.version);
        if let Some(found) = self.lookup(&key) {
            return Ok(found);
        }
        let workflow: Workflow =
            serde_json::from_value(row.definition.clone()).map_err(|source| {
                StoreError::Definition {
                    workflow: row.name.clone(),
                    version: row.version,
                    source,
                }
            })?;
        let workflow = Arc::new(workflow);
        if let Ok(mut parsed) = self.parsed.lock() {
            // Crude but bounded: when full, start over. Definitions in use come back at once.
            if parsed.len() >= DEFINITIONS_KEPT {
                parsed.clear();
            }
            parsed.insert(key, workflow.clone());
        }
        Ok(workflow)
    }

    /// The latest version of a workflow and its definition: one query for the version
    /// number, and the stored definition only when this engine has not parsed it yet.
    pub async fn latest<C: ConnectionTrait>(
        &self,
        db: &C,
        workspace_id: Uuid,
        name: &str,
    ) -> Result<Option<(i32, Arc<Workflow>)>, StoreError> {
        let version: Option<i32> = workflow_version::Entity::find()
            .select_only()
            .column(workflow_version::Column::Version)
            .filter(workflow_version::Column::WorkspaceId.eq(workspace_id))
            .filter(workflow_version::Column::Name.eq(name))
            .order_by_desc(workflow_version::Column::Version)
            .into_tuple()
            .one(db)
            .await?;
        let Some(version) = version else {
            return Ok(None);
        };
        if let Some(found) = self.lookup(&(workspace_id, name.to_owned(), version)) {
            return Ok(Some((version, found)));
        }
        let row = super::get_workflow(db, workspace_id, name, Some(version))
            .await?
            .ok_or_else(|| StoreError::WorkflowNotFound(name.to_owned()))?;
        Ok(Some((version, self.parse(&row)?)))
    }

    /// The latest version of every workflow of a workspace, parsed: one query for the
    /// version numbers, then stored definitions only for versions not parsed yet.
    pub async fn all_latest<C: ConnectionTrait>(
        &self,
        db: &C,
        workspace_id: Uuid,
    ) -> Result<Vec<(String, i32, Arc<Workflow>)>, StoreError> {
        let latest: Vec<(String, Option<i32>)> = workflow_version::Entity::find()
            .select_only()
            .column(workflow_version::Column::Name)
            .column_as(workflow_version::Column::Version.max(), "version")
            .filter(workflow_version::Column::WorkspaceId.eq(workspace_id))
            .group_by(workflow_version::Column::Name)
            .into_tuple()
            .all(db)
            .await?;
        let mut out = Vec::with_capacity(latest.len());
        for (name, version) in latest {
            let Some(version) = version else { continue };
            let workflow = match self.lookup(&(workspace_id, name.clone(), version)) {
                Some(found) => found,
                None => {
                    let row = super::get_workflow(db, workspace_id, &name, Some(version))
                        .await?
                        .ok_or_else(|| StoreError::WorkflowNotFound(name.clone()))?;
                    self.parse(&row)?
                }
            };
            out.push((name, version, workflow));
        }
        Ok(out)
    }

    fn lookup(&self, key: &(Uuid, String, i32)) -> Option<Arc<Workflow>> {
        self.parsed.lock().ok()?.get(key).cloned()
    }
}

/// How a run ended, to be written with the run row.
#[derive(Debug)]
struct Finish {
    status: RunStatus,
    outputs: Option<Value>,
    error: Option<Value>,
    at: DateTime<Utc>,
}

/// One run in a transition: its row (locked), its definition and every step row.
#[derive(Debug)]
pub(crate) struct RunWork {
    pub run: run::Model,
    pub workflow: Arc<Workflow>,
    /// Ids of the connections the definition names, by name (see [`resolve_connections`]).
    pub connections: HashMap<String, Uuid>,
    rows: HashMap<(String, i32), step_instance::Model>,
    dirty: BTreeSet<(String, i32)>,
    finish: Option<Finish>,
    /// Actions the workspace's policy sends to approval (see [`resolve_gates`]).
    pub gated: Arc<Vec<String>>,
    /// A status to write when the run does not finish in this transaction: `waiting` while a
    /// step is parked on a connection that needs a person, `running` when it resumes.
    pub status_change: Option<RunStatus>,
}

impl RunWork {
    /// The id of the connection `step` names. A name with no connection (deleted since the
    /// definition was applied) gets the nil id, which no connection has: the worker fails the
    /// step with `connection_revoked` before any request.
    pub(crate) fn connection_of(&self, step: &Step) -> Option<Uuid> {
        step.connection
            .as_ref()
            .map(|name| self.connections.get(name).copied().unwrap_or(Uuid::nil()))
    }

    /// The step rows held until `connection_id` is authorized again (see
    /// [`crate::store::resume_after_reauth`]).
    pub(crate) fn parked_on(
        &self,
        connection_id: Uuid,
    ) -> impl Iterator<Item = &step_instance::Model> {
        self.rows.values().filter(move |r| {
            r.status == StepStatus::RetryWait
                && r.due_at.is_none()
                && r.error
                    .as_ref()
                    .and_then(|e| e.get("code"))
                    .and_then(Value::as_str)
                    == Some("needs_reauth")
                && self
                    .workflow
                    .steps
                    .iter()
                    .find(|s| s.id == r.step_id)
                    .and_then(|s| self.connection_of(s))
                    == Some(connection_id)
        })
    }

    /// A run just inserted: it has no steps yet.
    pub(crate) fn new_run(run: run::Model, workflow: Arc<Workflow>) -> Self {
        RunWork {
            run,
            workflow,
            connections: HashMap::new(),
            rows: HashMap::new(),
            dirty: BTreeSet::new(),
            finish: None,
            gated: Arc::default(),
            status_change: None,
        }
    }

    /// The row of a step (or of one `for_each` item).
    pub(crate) fn row(&self, step_id: &str, item_index: i32) -> Option<&step_instance::Model> {
        self.rows.get(&(step_id.to_owned(), item_index))
    }

    /// Whether the run has ended in this transaction or before it.
    pub(crate) fn is_finished(&self) -> bool {
        self.finish.is_some() || self.run.status.is_terminal()
    }

    /// Changes the row of a step, creating it (pending, attempt 0) if it does not exist, and
    /// returns it as changed.
    pub(crate) fn upsert_step(
        &mut self,
        step_id: &str,
        item_index: i32,
        now: DateTime<Utc>,
        change: impl FnOnce(&mut step_instance::Model),
    ) -> &step_instance::Model {
        let key = (step_id.to_owned(), item_index);
        let run = &self.run;
        let row = self
            .rows
            .entry(key.clone())
            .or_insert_with(|| step_instance::Model {
                id: Uuid::now_v7(),
                workspace_id: run.workspace_id,
                run_id: run.id,
                step_id: step_id.to_owned(),
                item_index,
                status: StepStatus::Pending,
                attempt: 0,
                input: None,
                output: None,
                error: None,
                items_total: None,
                dispatched_at: None,
                started_at: None,
                finished_at: None,
                due_at: None,
                updated_at: now,
            });
        change(row);
        row.updated_at = now;
        self.dirty.insert(key);
        row
    }

    /// Ends the run and cancels every step that has not finished.
    pub(crate) fn finish(
        &mut self,
        status: RunStatus,
        outputs: Option<Value>,
        error: Option<Value>,
        now: DateTime<Utc>,
    ) {
        self.finish = Some(Finish {
            status,
            outputs,
            error,
            at: now,
        });
        for (key, row) in &mut self.rows {
            if matches!(
                row.status,
                StepStatus::Pending
                    | StepStatus::Dispatched
                    | StepStatus::Running
                    | StepStatus::RetryWait
                    | StepStatus::WaitingApproval
                    | StepStatus::Approved
            ) {
                row.status = StepStatus::Cancelled;
                row.finished_at = Some(now);
                row.updated_at = now;
                self.dirty.insert(key.clone());
            }
        }
    }

    /// The planner's view of the run: its scope and the state of every step.
    fn state(&self) -> RunState<'_> {
        let mut steps: HashMap<String, StepState> = HashMap::new();
        for row in self.rows.values().filter(|r| r.item_index == NO_ITEM) {
            let state = if row.items_total.is_some() && !row.status.is_terminal() {
                let values = row
                    .input
                    .as_ref()
                    .and_then(Value::as_array)
                    .cloned()
                    .unwrap_or_default();
                let items = values
                    .into_iter()
                    .enumerate()
                    .map(|(i, value)| Item {
                        value,
                        state: self
                            .row(&row.step_id, i32::try_from(i).unwrap_or(i32::MAX))
                            .map_or(StepState::Pending, step_state),
                    })
                    .collect();
                StepState::FannedOut(items)
            } else {
                step_state(row)
            };
            steps.insert(row.step_id.clone(), state);
        }
        let run = &self.run;
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
        RunState {
            workflow: &self.workflow,
            scope,
            steps,
            gated_actions: &self.gated,
        }
    }
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
                    http_status: None,
                    code: ErrorCode::Internal,
                    message: "failed".into(),
                    retry_after_ms: None,
                }),
        ),
        StepStatus::Skipped => StepState::Skipped,
        StepStatus::Cancelled => StepState::Cancelled,
        StepStatus::WaitingApproval => StepState::AwaitingApproval,
        StepStatus::Approved => StepState::Approved,
    }
}

/// Rows a transition adds besides step rows.
#[derive(Debug, Default)]
pub(crate) struct Writes {
    pub attempts: Vec<attempt::ActiveModel>,
    /// Ledger records of the attempts, appended in the same transaction.
    pub audit: Vec<(Uuid, crate::audit::Entry)>,
    /// Approval gates that opened.
    pub approvals: Vec<approval::ActiveModel>,
    outbox: Vec<outbox::ActiveModel>,
    events: Vec<event::ActiveModel>,
}

impl Writes {
    /// Adds a message to the outbox, with extra NATS `headers` (a JSON object of strings); a
    /// message id already there is left alone when written.
    fn enqueue<T: serde::Serialize>(
        &mut self,
        subject: String,
        msg_id: String,
        body: &T,
        headers: Value,
        now: DateTime<Utc>,
    ) {
        self.outbox.push(outbox::ActiveModel {
            subject: Set(subject),
            msg_id: Set(msg_id),
            payload: Set(serde_json::to_string(body).unwrap_or_default()),
            headers: Set(headers),
            created_at: Set(now),
            sent_at: Set(None),
            ..Default::default()
        });
    }

    /// Whether the transition wrote outbox rows the relay should send.
    pub(crate) fn has_messages(&self) -> bool {
        !self.outbox.is_empty()
    }
}

/// Locks the given runs (in id order, so engines with overlapping sets cannot deadlock) and
/// loads those still live with their definitions and steps. Finished runs are left out.
pub(crate) async fn load_live_runs(
    tx: &DatabaseTransaction,
    definitions: &Definitions,
    ids: &BTreeSet<Uuid>,
) -> Result<BTreeMap<Uuid, RunWork>, StoreError> {
    let mut works = BTreeMap::new();
    if ids.is_empty() {
        return Ok(works);
    }
    let mut q = run::Entity::find()
        .filter(run::Column::Id.is_in(ids.iter().copied()))
        .order_by_asc(run::Column::Id);
    // SQLite has one writer at a time, so there the transaction itself is the lock.
    if tx.get_database_backend() == DatabaseBackend::Postgres {
        q = q.lock_exclusive();
    }
    let runs: Vec<run::Model> = q
        .all(tx)
        .await?
        .into_iter()
        .filter(|r| !r.status.is_terminal())
        .collect();
    if runs.is_empty() {
        return Ok(works);
    }
    let rows = step_instance::Entity::find()
        .filter(step_instance::Column::RunId.is_in(runs.iter().map(|r| r.id)))
        .all(tx)
        .await?;
    let mut by_run: HashMap<Uuid, HashMap<(String, i32), step_instance::Model>> = HashMap::new();
    for row in rows {
        by_run
            .entry(row.run_id)
            .or_default()
            .insert((row.step_id.clone(), row.item_index), row);
    }
    for run in runs {
        let workflow = definitions.of_run(tx, &run).await?;
        let rows = by_run.remove(&run.id).unwrap_or_default();
        works.insert(
            run.id,
            RunWork {
                run,
                workflow,
                connections: HashMap::new(),
                rows,
                dirty: BTreeSet::new(),
                finish: None,
                gated: Arc::default(),
                status_change: None,
            },
        );
    }
    resolve_connections(tx, works.values_mut()).await?;
    resolve_gates(tx, Some(definitions), works.values_mut()).await?;
    Ok(works)
}

/// Fills each run's [`RunWork::gated`] from its workspace's policy, through `cache` when
/// given (read at most every [`GATES_FOR`] per workspace), else from the database.
pub(crate) async fn resolve_gates<'a, C: ConnectionTrait>(
    db: &C,
    cache: Option<&Definitions>,
    works: impl IntoIterator<Item = &'a mut RunWork>,
) -> Result<(), StoreError> {
    let works: Vec<&mut RunWork> = works.into_iter().collect();
    let mut gates: HashMap<Uuid, Arc<Vec<String>>> = HashMap::new();
    for work in works {
        let ws = work.run.workspace_id;
        let found = match gates.get(&ws) {
            Some(g) => g.clone(),
            None => {
                let g = match cache.and_then(|c| c.cached_gates(ws)) {
                    Some(g) => g,
                    None => {
                        let read = Arc::new(read_gates(db, ws).await?);
                        if let Some(c) = cache {
                            c.keep_gates(ws, read.clone());
                        }
                        read
                    }
                };
                gates.insert(ws, g.clone());
                g
            }
        };
        work.gated = found;
    }
    Ok(())
}

async fn read_gates<C: ConnectionTrait>(
    db: &C,
    workspace_id: Uuid,
) -> Result<Vec<String>, StoreError> {
    let row = schemas::db::entities::policy::Entity::find_by_id(workspace_id)
        .one(db)
        .await?;
    Ok(row
        .and_then(|r| {
            r.document
                .get("approvals")?
                .get("actions")?
                .as_array()
                .cloned()
        })
        .unwrap_or_default()
        .into_iter()
        .filter_map(|v| v.as_str().map(str::to_owned))
        .collect())
}

/// How long an engine trusts a workspace's approval rules without reading its policy again.
/// A policy changed through an engine takes effect there at once.
pub const GATES_FOR: std::time::Duration = std::time::Duration::from_secs(2);

/// Fills each run's [`RunWork::connections`] with one query for all of them, and none when
/// no definition names a connection.
pub(crate) async fn resolve_connections<'a, C: ConnectionTrait>(
    db: &C,
    works: impl IntoIterator<Item = &'a mut RunWork>,
) -> Result<(), StoreError> {
    let works: Vec<&mut RunWork> = works
        .into_iter()
        .filter(|w| w.workflow.steps.iter().any(|s| s.connection.is_some()))
        .collect();
    if works.is_empty() {
        return Ok(());
    }
    let workspaces: BTreeSet<Uuid> = works.iter().map(|w| w.run.workspace_id).collect();
    let names: BTreeSet<&str> = works
        .iter()
        .flat_map(|w| {
            w.workflow
                .steps
                .iter()
                .filter_map(|s| s.connection.as_deref())
        })
        .collect();
    let rows: Vec<(Uuid, Uuid, String)> = connection::Entity::find()
        .select_only()
        .column(connection::Column::Id)
        .column(connection::Column::WorkspaceId)
        .column(connection::Column::Name)
        .filter(connection::Column::WorkspaceId.is_in(workspaces))
        .filter(connection::Column::Name.is_in(names))
        .into_tuple()
        .all(db)
        .await?;
    for work in works {
        work.connections = rows
            .iter()
            .filter(|(_, ws, _)| *ws == work.run.workspace_id)
            .map(|(id, _, name)| (name.clone(), *id))
            .collect();
    }
    Ok(())
}

/// Writes everything the transition changed. Step rows go first: attempts refer to them.
/// Runs a transition ended, to be counted once its transaction has committed.
#[derive(Debug, Default)]
#[must_use = "count the finished runs after the commit"]
pub(crate) struct Finished(Vec<RunStatus>);

impl Finished {
    /// Counts the runs in `switchyard_runs_finished_total`.
    pub(crate) fn count(self) {
        let metrics = crate::metrics::engine();
        for status in self.0 {
            metrics.run_finished(&status_word(&status));
        }
    }
}

/// The word a status serializes to (`succeeded`, `timed_out`, …), for metric labels.
pub(crate) fn status_word<T: serde::Serialize + std::fmt::Debug>(status: &T) -> String {
    match serde_json::to_value(status) {
        Ok(Value::String(word)) => word,
        _ => format!("{status:?}"),
    }
}

pub(crate) async fn flush<'a>(
    tx: &DatabaseTransaction,
    works: impl IntoIterator<Item = &'a RunWork>,
    writes: Writes,
) -> Result<Finished, StoreError> {
    let works: Vec<&RunWork> = works.into_iter().collect();
    let changed: Vec<step_instance::Model> = works
        .iter()
        .flat_map(|w| w.dirty.iter().filter_map(|key| w.rows.get(key)).cloned())
        .collect();
    for chunk in changed.chunks(ROWS_PER_STATEMENT) {
        step_instance::Entity::insert_many(
            chunk.iter().cloned().map(step_instance::ActiveModel::from),
        )
        .on_conflict(
            OnConflict::column(step_instance::Column::Id)
                .update_columns([
                    step_instance::Column::Status,
                    step_instance::Column::Attempt,
                    step_instance::Column::Input,
                    step_instance::Column::Output,
                    step_instance::Column::Error,
                    step_instance::Column::ItemsTotal,
                    step_instance::Column::DispatchedAt,
                    step_instance::Column::StartedAt,
                    step_instance::Column::FinishedAt,
                    step_instance::Column::DueAt,
                    step_instance::Column::UpdatedAt,
                ])
                .to_owned(),
        )
        .exec_without_returning(tx)
        .await?;
    }
    let Writes {
        attempts,
        audit,
        approvals,
        outbox: messages,
        events,
    } = writes;
    // The run lock already fences attempts; the unique key is the last line of defence.
    insert_new(
        tx,
        &attempts,
        OnConflict::columns([attempt::Column::StepInstanceId, attempt::Column::Attempt]),
    )
    .await?;
    insert_new(
        tx,
        &approvals,
        OnConflict::columns([approval::Column::RunId, approval::Column::StepId]),
    )
    .await?;
    // After the run rows: the ledger's head locks are always taken last.
    crate::audit::append(tx, audit).await?;
    insert_new(tx, &events, OnConflict::column(event::Column::Id)).await?;
    insert_new(tx, &messages, OnConflict::column(outbox::Column::MsgId)).await?;
    let mut finished = Finished::default();
    for work in works {
        if let Some(finish) = &work.finish {
            finished.0.push(finish.status);
            run::Entity::update_many()
                .col_expr(run::Column::Status, Expr::value(finish.status))
                .col_expr(run::Column::Outputs, Expr::value(finish.outputs.clone()))
                .col_expr(run::Column::Error, Expr::value(finish.error.clone()))
                .col_expr(run::Column::FinishedAt, Expr::value(Some(finish.at)))
                .col_expr(run::Column::UpdatedAt, Expr::value(finish.at))
                .filter(run::Column::Id.eq(work.run.id))
                .exec(tx)
                .await?;
        } else if let Some(status) = work.status_change {
            run::Entity::update_many()
                .col_expr(run::Column::Status, Expr::value(status))
                .col_expr(run::Column::UpdatedAt, Expr::value(Utc::now()))
                .filter(run::Column::Id.eq(work.run.id))
                .exec(tx)
                .await?;
        }
    }
    Ok(finished)
}

/// Inserts rows in multi-row statements, leaving alone any that conflicts on `key`.
async fn insert_new<A>(
    tx: &DatabaseTransaction,
    rows: &[A],
    mut key: OnConflict,
) -> Result<(), StoreError>
where
    A: sea_orm::ActiveModelTrait + Clone + Send,
{
    key.do_nothing();
    for chunk in rows.chunks(ROWS_PER_STATEMENT) {
        A::Entity::insert_many(chunk.iter().cloned())
            .on_conflict(key.clone())
            .exec_without_returning(tx)
            .await?;
    }
    Ok(())
}

/// When a dispatched attempt of `step` is presumed lost if no result has arrived.
pub(crate) fn lost_after(step: Option<&Step>, now: DateTime<Utc>) -> DateTime<Utc> {
    let timeout = step
        .and_then(|s| s.timeout)
        .map_or(DEFAULT_STEP_TIMEOUT, |t| t.get());
    now + chrono_duration(timeout + LOST_ATTEMPT_GRACE)
}

/// Plans the run and applies what the planner decided, in memory.
pub(crate) fn advance(work: &mut RunWork, writes: &mut Writes, now: DateTime<Utc>) {
    if work.is_finished() {
        return;
    }
    let decisions = planner::plan(&work.state());
    let workflow = work.workflow.clone();
    for decision in decisions {
        match decision {
            Decision::Dispatch {
                step_id,
                item_index,
                input,
            } => {
                let index = item_index.map_or(NO_ITEM, |i| i32::try_from(i).unwrap_or(i32::MAX));
                let step = workflow.steps.iter().find(|s| s.id == step_id);
                work.upsert_step(&step_id, index, now, |m| {
                    m.status = StepStatus::Dispatched;
                    m.attempt += 1;
                    m.input = Some(input);
                    m.dispatched_at = Some(now);
                    m.due_at = Some(lost_after(step, now));
                });
                if let (Some(step), Some(row)) = (step, work.row(&step_id, index)) {
                    let connection = work.connection_of(step);
                    dispatch(writes, &work.run, &workflow, step, row, connection, now);
                }
            }
            Decision::FanOut { step_id, items } => {
                let total = i32::try_from(items.len()).unwrap_or(i32::MAX);
                work.upsert_step(&step_id, NO_ITEM, now, |m| {
                    m.status = StepStatus::Running;
                    m.items_total = Some(total);
                    m.input = Some(Value::Array(items));
                    m.started_at = Some(now);
                });
                for i in 0..total {
                    work.upsert_step(&step_id, i, now, |_| {});
                }
            }
            Decision::Complete { step_id, output } => {
                work.upsert_step(&step_id, NO_ITEM, now, |m| {
                    m.status = StepStatus::Succeeded;
                    m.output = Some(output);
                    m.finished_at = Some(now);
                });
            }
            Decision::Emit {
                step_id,
                event: name,
                data,
            } => {
                emit(work, writes, step_id, name, data, now);
            }
            Decision::Skip { step_id } => {
                work.upsert_step(&step_id, NO_ITEM, now, |m| {
                    m.status = StepStatus::Skipped;
                    m.finished_at = Some(now);
                });
            }
            Decision::AwaitApproval { step_id, input } => {
                let step = workflow.steps.iter().find(|s| s.id == step_id);
                let gate = step.and_then(|s| s.approval.as_ref());
                let due_at = gate
                    .and_then(|g| g.timeout)
                    .map(|t| now + chrono_duration(t.get()));
                work.upsert_step(&step_id, NO_ITEM, now, |m| {
                    m.status = StepStatus::WaitingApproval;
                    m.due_at = due_at;
                });
                writes.approvals.push(approval::ActiveModel {
                    id: Set(Uuid::now_v7()),
                    workspace_id: Set(work.run.workspace_id),
                    run_id: Set(work.run.id),
                    step_id: Set(step_id),
                    status: Set(ApprovalStatus::Pending),
                    approvers: Set(json!(gate.map(|g| g.approvers.clone()).unwrap_or_default())),
                    input: Set(Some(crate::audit::recorded(&super::without_secret_fields(
                        step.and_then(|s| s.action.as_deref()).unwrap_or_default(),
                        &input,
                    )))),
                    action: Set(step.and_then(|s| s.action.clone()).unwrap_or_default()),
                    requested_at: Set(now),
                    due_at: Set(due_at),
                    decided_at: Set(None),
                    decided_by: Set(None),
                    comment: Set(None),
                });
            }
            Decision::Fail {
                step_id,
                item_index,
                error,
            } => {
                let index = item_index.map_or(NO_ITEM, |i| i32::try_from(i).unwrap_or(i32::MAX));
                work.upsert_step(&step_id, index, now, |m| {
                    m.status = StepStatus::Failed;
                    m.error = Some(serde_json::to_value(&error).unwrap_or(Value::Null));
                    m.finished_at = Some(now);
                });
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
                work.finish(status, outputs, error, now);
            }
        }
    }
}

/// Records an event the engine itself raises about a run (not an `emit` step), and queues it
/// for the events stream; `key` makes it once-only.
pub(crate) fn system_event(
    work: &RunWork,
    writes: &mut Writes,
    key: String,
    name: &str,
    data: Value,
    now: DateTime<Utc>,
) {
    let run = &work.run;
    let envelope = EventEnvelope {
        v: ENVELOPE_VERSION,
        id: key.clone(),
        workspace_id: run.workspace_id,
        name: name.to_owned(),
        data: data.clone(),
        source: Provenance::Engine { run_id: run.id },
        depth: crate::planner::run_depth(&run.trigger),
        time: now,
    };
    writes.events.push(event::ActiveModel {
        id: Set(key.clone()),
        workspace_id: Set(run.workspace_id),
        name: Set(name.to_owned()),
        data: Set(data),
        source: Set(serde_json::to_value(&envelope.source).unwrap_or(Value::Null)),
        depth: Set(i32::try_from(envelope.depth).unwrap_or(i32::MAX)),
        created_at: Set(now),
    });
    writes.enqueue(
        transport::event_subject(name),
        key,
        &envelope,
        json!({}),
        now,
    );
}

/// Records an `emit` step's event, queues it for the events stream, and completes the step.
fn emit(
    work: &mut RunWork,
    writes: &mut Writes,
    step_id: String,
    name: String,
    data: Value,
    now: DateTime<Utc>,
) {
    let run = &work.run;
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
        depth: crate::planner::run_depth(&run.trigger),
        time: now,
    };
    writes.events.push(event::ActiveModel {
        id: Set(event_id.clone()),
        workspace_id: Set(run.workspace_id),
        name: Set(name.clone()),
        data: Set(data),
        source: Set(serde_json::to_value(&envelope.source).unwrap_or(Value::Null)),
        depth: Set(i32::try_from(envelope.depth).unwrap_or(i32::MAX)),
        created_at: Set(now),
    });
    writes.enqueue(
        transport::event_subject(&name),
        event_id.clone(),
        &envelope,
        json!({}),
        now,
    );
    work.upsert_step(&step_id, NO_ITEM, now, |m| {
        m.status = StepStatus::Succeeded;
        m.output = Some(json!({ "event": name, "id": event_id }));
        m.finished_at = Some(now);
    });
}

/// Queues the step message for the row's current attempt.
pub(crate) fn dispatch(
    writes: &mut Writes,
    run: &run::Model,
    workflow: &Workflow,
    step: &Step,
    row: &step_instance::Model,
    connection_id: Option<Uuid>,
    now: DateTime<Utc>,
) {
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
        connection_id,
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
    // The run's trace context, so the dispatch span joins the run's trace whichever engine
    // publishes the row; the workflow's name, for the worker's span.
    let mut headers = serde_json::Map::new();
    if let Some(traceparent) = &run.traceparent {
        headers.insert(
            transport::TRACEPARENT_HEADER.into(),
            traceparent.clone().into(),
        );
    }
    headers.insert(
        transport::WORKFLOW_HEADER.into(),
        run.workflow_name.clone().into(),
    );
    writes.enqueue(
        transport::step_subject(queue),
        message.msg_id(),
        &message,
        Value::Object(headers),
        now,
    );
}
