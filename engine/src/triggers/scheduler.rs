//! The scheduler: every engine copy looks for schedule triggers whose next fire time has
//! passed and starts their runs.
//!
//! Each fire time starts exactly one run however many engines look at once: the run's
//! idempotency key is `schedule:{trigger}:{fire time}`, unique per workflow in the database,
//! so an engine that loses the race finds the winner's run. Each trigger's state
//! (`schedule_states`: the last fire time settled, and the next) is written after its runs;
//! a crash in between only means the next pass recomputes the same fire times, finds their
//! runs, and moves on. Missed fire times (the engines were down) follow the trigger's
//! `catch_up` policy ([`Schedule::due`]); a trigger seen for the first time starts from now,
//! with nothing missed.

use std::time::Duration;

use chrono::{DateTime, Utc};
use schemas::db::entities::{schedule_state, workspace};
use schemas::definition::{ScheduleTrigger, Trigger};
use sea_orm::sea_query::OnConflict;
use sea_orm::{ColumnTrait, EntityTrait, QueryFilter, Set};
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use super::schedule::Schedule;
use crate::service::Shared;
use crate::store::{self, Pinned, StoreError};

/// How late a fire time may be seen and still count as on time for `catch_up: none`.
pub const ON_TIME_GRACE: Duration = Duration::from_secs(60);
/// Most runs one trigger starts in one pass with `catch_up: all`; the rest follow in the
/// next passes.
pub const MAX_FIRES_PER_PASS: usize = 100;

/// The key a schedule trigger's state and runs are stored under: its cron and time zone, so
/// reordering triggers keeps their state and changing a schedule starts afresh.
pub fn trigger_key(trigger: &ScheduleTrigger) -> String {
    format!(
        "{}@{}",
        trigger.cron,
        trigger.timezone.as_deref().unwrap_or("UTC")
    )
}

/// What one pass did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Pass {
    /// Runs created.
    pub started: usize,
    /// Fire times dropped by their trigger's catch-up policy.
    pub skipped: u64,
}

/// Fires every due schedule trigger of every workspace, as of `now`.
pub async fn pass(shared: &Shared, now: DateTime<Utc>) -> Result<Pass, StoreError> {
    let mut done = Pass::default();
    let workspaces: Vec<Uuid> = workspace::Entity::find()
        .all(&shared.db)
        .await?
        .into_iter()
        .map(|w| w.id)
        .collect();
    for workspace_id in workspaces {
        let workflows = shared
            .definitions
            .all_latest(&shared.db, workspace_id)
            .await?;
        let states = schedule_state::Entity::find()
            .filter(schedule_state::Column::WorkspaceId.eq(workspace_id))
            .all(&shared.db)
            .await?;
        forget_removed(shared, &workflows, &states).await?;
        for (name, version, workflow) in &workflows {
            for trigger in &workflow.triggers {
                let Trigger::Schedule(t) = trigger else {
                    continue;
                };
                let key = trigger_key(t);
                let state = states
                    .iter()
                    .find(|s| s.workflow_name == *name && s.trigger_key == key);
                let pinned = Pinned {
                    workspace_id,
                    name: name.clone(),
                    version: *version,
                    workflow: workflow.clone(),
                };
                let fired = fire(shared, &pinned, t, &key, state, now).await?;
                done.started += fired.started;
                done.skipped += fired.skipped;
            }
        }
    }
    Ok(done)
}

/// Deletes the state of schedule triggers the latest versions no longer have, so a trigger
/// added back later starts afresh instead of catching up on the time it was gone.
async fn forget_removed(
    shared: &Shared,
    workflows: &[(String, i32, std::sync::Arc<schemas::definition::Workflow>)],
    states: &[schedule_state::Model],
) -> Result<(), StoreError> {
    for state in states {
        let current = workflows.iter().any(|(name, _, w)| {
            *name == state.workflow_name
                && w.triggers.iter().any(
                    |t| matches!(t, Trigger::Schedule(s) if trigger_key(s) == state.trigger_key),
                )
        });
        if !current {
            schedule_state::Entity::delete_by_id((
                state.workspace_id,
                state.workflow_name.clone(),
                state.trigger_key.clone(),
            ))
            .exec(&shared.db)
            .await?;
        }
    }
    Ok(())
}

fn has_schedule(triggers: &[Trigger]) -> bool {
    triggers.iter().any(|t| matches!(t, Trigger::Schedule(_)))
}

async fn fire(
    shared: &Shared,
    pinned: &Pinned,
    trigger: &ScheduleTrigger,
    key: &str,
    state: Option<&schedule_state::Model>,
    now: DateTime<Utc>,
) -> Result<Pass, StoreError> {
    let schedule = match Schedule::new(trigger) {
        Ok(s) => s,
        Err(e) => {
            // Validation refuses such a trigger; only a definition from an older build gets here.
            tracing::warn!(workflow = %pinned.name, error = %e, "schedule trigger unusable");
            return Ok(Pass::default());
        }
    };
    let Some(state) = state else {
        // First sight: nothing before now was missed. Another engine may have seen it first;
        // its state stands.
        schedule_state::Entity::insert(schedule_state::ActiveModel {
            workspace_id: Set(pinned.workspace_id),
            workflow_name: Set(pinned.name.to_owned()),
            trigger_key: Set(key.to_owned()),
            settled_until: Set(now),
            last_fire_at: Set(None),
            next_fire_at: Set(schedule.next_after(now)),
            updated_at: Set(now),
        })
        .on_conflict(state_key().do_nothing().to_owned())
        .exec_without_returning(&shared.db)
        .await?;
        return Ok(Pass::default());
    };
    if state.next_fire_at.is_some_and(|next| next > now) {
        return Ok(Pass::default());
    }
    let due = schedule.due(state.settled_until, now, ON_TIME_GRACE, MAX_FIRES_PER_PASS);
    let mut done = Pass {
        started: 0,
        skipped: due.skipped,
    };
    for at in &due.fire {
        let run_key = format!("schedule:{key}:{}", at.to_rfc3339());
        let trigger_value = json!({
            "kind": "schedule",
            "cron": trigger.cron,
            "timezone": schedule.timezone_name(),
            "fire_time": at,
        });
        let started = store::start_pinned(
            &shared.db,
            &shared.definitions,
            pinned,
            Value::Null,
            Some(&run_key),
            trigger_value,
        )
        .await;
        match started {
            Ok(s) if s.created => {
                done.started += 1;
                tracing::info!(workflow = %pinned.name, fire_time = %at, run_id = %s.run_id, "schedule started a run");
            }
            Ok(_) => {}
            Err(StoreError::InvalidInput(why)) => {
                tracing::warn!(workflow = %pinned.name, fire_time = %at, error = %why, "scheduled run refused");
            }
            Err(e) => return Err(e),
        }
    }
    if due.skipped > 0 {
        tracing::info!(workflow = %pinned.name, skipped = due.skipped, "missed fire times skipped by the catch-up policy");
    }
    let last_fire = due.fire.last().copied().or(state.last_fire_at);
    save(
        shared,
        pinned,
        key,
        (due.advance_to, last_fire),
        schedule.next_after(due.advance_to),
        now,
    )
    .await?;
    Ok(done)
}

async fn save(
    shared: &Shared,
    pinned: &Pinned,
    key: &str,
    (settled_until, last_fire): (DateTime<Utc>, Option<DateTime<Utc>>),
    next: Option<DateTime<Utc>>,
    now: DateTime<Utc>,
) -> Result<(), StoreError> {
    schedule_state::Entity::insert(schedule_state::ActiveModel {
        workspace_id: Set(pinned.workspace_id),
        workflow_name: Set(pinned.name.to_owned()),
        trigger_key: Set(key.to_owned()),
        settled_until: Set(settled_until),
        last_fire_at: Set(last_fire),
        next_fire_at: Set(next),
        updated_at: Set(now),
    })
    .on_conflict(
        state_key()
            .update_columns([
                schedule_state::Column::SettledUntil,
                schedule_state::Column::LastFireAt,
                schedule_state::Column::NextFireAt,
                schedule_state::Column::UpdatedAt,
            ])
            .to_owned(),
    )
    .exec_without_returning(&shared.db)
    .await?;
    Ok(())
}

fn state_key() -> OnConflict {
    OnConflict::columns([
        schedule_state::Column::WorkspaceId,
        schedule_state::Column::WorkflowName,
        schedule_state::Column::TriggerKey,
    ])
}

/// Each schedule trigger of a workflow with its next and last fire time, for the API.
pub async fn describe(
    shared: &Shared,
    workspace_id: Uuid,
    name: &str,
    triggers: &[Trigger],
    now: DateTime<Utc>,
) -> Result<Vec<Value>, StoreError> {
    let states = if has_schedule(triggers) {
        schedule_state::Entity::find()
            .filter(schedule_state::Column::WorkspaceId.eq(workspace_id))
            .filter(schedule_state::Column::WorkflowName.eq(name))
            .all(&shared.db)
            .await?
    } else {
        Vec::new()
    };
    Ok(triggers
        .iter()
        .map(|t| match t {
            Trigger::Webhook(w) => json!({
                "kind": "webhook",
                "id": w.id,
                "enabled": w.enabled,
                "path": format!("/v1/hooks/{name}/{}", w.id),
            }),
            Trigger::Event(e) => json!({ "kind": "event", "name": e.name }),
            Trigger::Schedule(s) => {
                let key = trigger_key(s);
                let state = states.iter().find(|st| st.trigger_key == key);
                let next = state.and_then(|st| st.next_fire_at).or_else(|| {
                    Schedule::new(s)
                        .ok()
                        .and_then(|sched| sched.next_after(now))
                });
                let last_run = state.and_then(|st| st.last_fire_at);
                json!({
                    "kind": "schedule",
                    "cron": s.cron,
                    "timezone": s.timezone.as_deref().unwrap_or("UTC"),
                    "catch_up": s.catch_up.unwrap_or(super::schedule::DEFAULT_CATCH_UP),
                    "next_fire_at": next,
                    "last_fire_at": last_run,
                })
            }
        })
        .collect())
}

/// Runs [`pass`] every `every` until `stop`.
pub async fn run(shared: Shared, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        match pass(&shared, Utc::now()).await {
            Ok(done) if done.started > 0 => shared.outbox.notify_one(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "schedule pass"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
