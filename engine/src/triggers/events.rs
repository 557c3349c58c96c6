//! Events start workflows: `POST /v1/events/{name}` and `emit` steps publish to the events
//! stream, and every engine copy shares one durable consumer of it that starts a run of each
//! workflow whose `event` trigger names the event and whose `if` holds.
//!
//! Nothing is lost and nothing doubles: an event is recorded (unique by id) with its outbox row
//! in one transaction, the relay publishes it, and the consumer acks it only after every run
//! it causes is committed. Each such run's idempotency key is `event:{id}`, unique per
//! workflow in the database, so a redelivered event starts nothing new.
//!
//! Every event records its provenance (the emitting run and step, or the API caller) and a
//! depth: a run started by an event at depth `d` is at depth `d + 1`, and its own `emit`
//! steps fail with `event_depth_exceeded` past [`MAX_EVENT_DEPTH`], which stops workflows
//! that trigger each other in a loop.

use std::time::Duration;

use async_nats::jetstream::{self, AckKind};
use chrono::Utc;
use futures::StreamExt;
use schemas::db::entities::{event, outbox};
use schemas::definition::Trigger;
use schemas::envelope::{ENVELOPE_VERSION, EventEnvelope, MAX_EVENT_DEPTH, Provenance};
use schemas::expr::{self, Scope};
use schemas::transport;
use sea_orm::sea_query::OnConflict;
use sea_orm::{ActiveModelTrait, DatabaseConnection, EntityTrait, Set, TransactionTrait};
use serde_json::{Value, json};
use tokio::sync::watch;
use uuid::Uuid;

use crate::service::Shared;
use crate::store::{self, Pinned, StoreError};

/// Longest event id accepted from the API.
pub const MAX_EVENT_ID: usize = 200;

/// An event recorded (or found again by its id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Published {
    /// Its id.
    pub id: String,
    /// False when an event with this id was published before.
    pub created: bool,
}

/// Records an event and queues it for the events stream, in one transaction. An id that was
/// published before changes nothing.
pub async fn publish(
    db: &DatabaseConnection,
    workspace_id: Uuid,
    name: &str,
    id: Option<String>,
    data: Value,
    source: Provenance,
) -> Result<Published, StoreError> {
    // A caller's id is the caller's workspace's: stored under the workspace, so two
    // workspaces may use the same id and neither can learn whether the other has.
    // The envelope (what `event.id` shows) keeps the caller's id; the stored row and the
    // stream's deduplication use the workspace-qualified key.
    let (key, shown) = match id {
        Some(given) => (format!("{workspace_id}:{given}"), given),
        None => {
            let fresh = Uuid::now_v7().to_string();
            (fresh.clone(), fresh)
        }
    };
    let now = Utc::now();
    let envelope = EventEnvelope {
        v: ENVELOPE_VERSION,
        id: shown.clone(),
        workspace_id,
        name: name.to_owned(),
        data,
        source,
        depth: 0,
        time: now,
    };
    let tx = db.begin().await?;
    let inserted = event::Entity::insert(event::ActiveModel {
        id: Set(key.clone()),
        workspace_id: Set(workspace_id),
        name: Set(name.to_owned()),
        data: Set(envelope.data.clone()),
        source: Set(serde_json::to_value(&envelope.source).unwrap_or(Value::Null)),
        depth: Set(0),
        created_at: Set(now),
    })
    .on_conflict(
        OnConflict::column(event::Column::Id)
            .do_nothing()
            .to_owned(),
    )
    .exec_without_returning(&tx)
    .await?;
    if inserted == 0 {
        let earlier = event::Entity::find_by_id(key.clone()).one(&tx).await?;
        return match earlier {
            Some(e) if e.workspace_id == workspace_id && e.name == name => Ok(Published {
                id: shown,
                created: false,
            }),
            _ => Err(StoreError::InvalidInput(format!(
                "event id `{shown}` was already used for another event; ids are unique across event names"
            ))),
        };
    }
    outbox::ActiveModel {
        subject: Set(transport::event_subject(name)),
        msg_id: Set(key.clone()),
        payload: Set(serde_json::to_string(&envelope).unwrap_or_default()),
        headers: Set(json!({})),
        created_at: Set(now),
        sent_at: Set(None),
        ..Default::default()
    }
    .insert(&tx)
    .await?;
    tx.commit().await?;
    Ok(Published {
        id: shown,
        created: true,
    })
}

/// What one event started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Handled {
    /// Runs created (workflow name, run id).
    pub started: Vec<(String, Uuid)>,
    /// Workflows whose trigger matched but whose run existed already (a redelivery).
    pub duplicates: usize,
}

/// Starts a run of every workflow of the event's workspace whose `event` trigger matches.
pub async fn handle(shared: &Shared, event: &EventEnvelope) -> Result<Handled, StoreError> {
    let mut handled = Handled::default();
    if event.depth >= MAX_EVENT_DEPTH {
        // `emit` refuses to go deeper, so only an event from an older build gets here.
        tracing::warn!(event = %event.id, name = %event.name, depth = event.depth, "event past the depth limit; no runs started");
        return Ok(handled);
    }
    let event_value = json!({
        "id": event.id,
        "name": event.name,
        "data": event.data,
        "source": event.source,
        "time": event.time,
    });
    let scope = Scope::new().with_event(event_value.clone());
    let workflows = shared
        .definitions
        .all_latest(&shared.db, event.workspace_id)
        .await?;
    for (name, version, workflow) in workflows {
        let matched = workflow.triggers.iter().any(|t| match t {
            Trigger::Event(e) if e.name == event.name => match &e.condition {
                None => true,
                Some(cond) => {
                    match expr::compile(cond).and_then(|t| t.evaluate_condition(&scope)) {
                        Ok(v) => v,
                        Err(err) => {
                            tracing::warn!(workflow = %name, event = %event.id, error = %err, "event trigger condition failed; no run");
                            false
                        }
                    }
                }
            },
            _ => false,
        });
        if !matched {
            continue;
        }
        let trigger = json!({
            "kind": "event",
            "event": event_value,
            "depth": event.depth.saturating_add(1),
        });
        let key = format!("event:{}", event.id);
        let pinned = Pinned {
            workspace_id: event.workspace_id,
            name: name.clone(),
            version,
            workflow,
        };
        match store::start_pinned(
            &shared.db,
            &shared.definitions,
            &pinned,
            Value::Null,
            Some(&key),
            trigger,
        )
        .await
        {
            Ok(started) if started.created => handled.started.push((name, started.run_id)),
            Ok(_) => handled.duplicates += 1,
            // The workflow cannot start without inputs the event does not give: say so, and
            // do not hold up the event for the other workflows.
            Err(StoreError::InvalidInput(why)) => {
                tracing::warn!(workflow = %name, event = %event.id, error = %why, "event-triggered run refused");
            }
            Err(e) => return Err(e),
        }
    }
    Ok(handled)
}

/// Consumes the events stream until `stop`: each event is acked once every run it starts is
/// committed, and redelivered (after a pause) when recording failed.
pub async fn consume(
    shared: Shared,
    consumer: jetstream::consumer::PullConsumer,
    mut stop: watch::Receiver<bool>,
) {
    'reconnect: loop {
        let mut messages = match consumer
            .stream()
            .max_messages_per_batch(64)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
        {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, "pulling events");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue 'reconnect,
                    _ = stop.wait_for(|s| *s) => return,
                }
            }
        };
        loop {
            let next = tokio::select! {
                n = messages.next() => n,
                _ = stop.wait_for(|s| *s) => return,
            };
            let msg = match next {
                Some(Ok(m)) => m,
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "events stream");
                    continue;
                }
                None => continue 'reconnect,
            };
            let event = match serde_json::from_slice::<EventEnvelope>(&msg.payload) {
                Ok(e) => e,
                Err(e) => {
                    tracing::error!(error = %e, subject = %msg.subject, "unreadable event; dropping it");
                    let _ = msg.ack_with(AckKind::Term).await;
                    continue;
                }
            };
            match handle(&shared, &event).await {
                Ok(handled) => {
                    if !handled.started.is_empty() {
                        shared.outbox.notify_one();
                    }
                    for (workflow, run_id) in &handled.started {
                        tracing::info!(event = %event.id, name = %event.name, %workflow, %run_id, "event started a run");
                    }
                    if let Err(e) = msg.ack().await {
                        tracing::warn!(error = %e, "ack of a handled event failed; it will be redelivered and change nothing");
                    }
                }
                Err(e) => {
                    tracing::warn!(error = %e, event = %event.id, "handling an event failed; it will be redelivered");
                    let _ = msg
                        .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                        .await;
                }
            }
        }
    }
}
