//! The schema migrates on SQLite and PostgreSQL alike, matches the entities column for column,
//! and its keys hold: what the engine relies on for exactly-once recording is enforced by the
//! database, not by hope.

use std::collections::BTreeSet;
use std::fmt::Debug;

use anyhow::{Context, Result, bail, ensure};
use chrono::{DateTime, SubsecRound, TimeDelta, Utc};
use schemas::db::DEFAULT_WORKSPACE_ID;
use schemas::db::entities::step_instance::NO_ITEM;
use schemas::db::entities::{
    AttemptStatus, RunStatus, StepStatus, api_token, approval, attempt, audit_head, audit_record,
    connection, event, oauth_state, outbox, policy, principal, run, schedule_state, secret,
    step_instance, workflow_version, workspace,
};
use schemas::db::migration::Migrator;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, ConnectionTrait, DatabaseConnection, DbBackend, DbErr,
    EntityTrait, IdenStatic, IntoActiveModel, Iterable, NotSet, PaginatorTrait, QueryFilter, Set,
    SqlErr, Statement,
};
use sea_orm_migration::{MigratorTrait, SchemaManager};
use serde_json::json;
use switchyard_tests::{TestDatabase, for_each_backend};
use uuid::Uuid;

/// Every index the migrations name, by table.
const INDEXES: [(&str, &str); 19] = [
    ("workflow_versions", "ux_workflow_versions_name_version"),
    ("runs", "ux_runs_idempotency"),
    ("runs", "ix_runs_status"),
    ("runs", "ix_runs_workflow"),
    ("runs", "ix_runs_deadline"),
    ("step_instances", "ux_step_instances_key"),
    ("step_instances", "ix_step_instances_due"),
    ("attempts", "ux_attempts_step_attempt"),
    ("attempts", "ix_attempts_run"),
    ("outbox", "ix_outbox_unsent"),
    ("secrets", "ux_secrets_name"),
    ("connections", "ux_connections_name"),
    ("principals", "ux_principals_name"),
    ("api_tokens", "ux_api_tokens_digest"),
    ("api_tokens", "ix_api_tokens_principal"),
    ("audit_records", "ix_audit_records_run"),
    ("approvals", "ux_approvals_step"),
    ("approvals", "ix_approvals_pending"),
    ("oauth_states", "ix_oauth_states_expires"),
];

/// Every migration, in order.
const MIGRATIONS: [&str; 9] = [
    "m20261125_000001_initial",
    "m20261125_000002_triggers",
    "m20261125_000003_connections",
    "m20261201_000004_principals",
    "m20261201_000005_audit",
    "m20261201_000006_oauth",
    "m20261201_000007_approvals",
    "m20261202_000008_connection_settings",
    "m20261202_000010_trace_context",
];

/// Now, to the microsecond: PostgreSQL keeps no finer, so a value with nanoseconds would not
/// read back equal.
fn now() -> DateTime<Utc> {
    Utc::now().trunc_subsecs(6)
}

async fn migrated(db: &TestDatabase) -> Result<DatabaseConnection> {
    let conn = db.connect().await?;
    Migrator::up(&conn, None).await.context("migrating up")?;
    Ok(conn)
}

fn a_version(name: &str, version: i32) -> workflow_version::Model {
    workflow_version::Model {
        id: Uuid::now_v7(),
        workspace_id: DEFAULT_WORKSPACE_ID,
        name: name.into(),
        version,
        definition: json!({ "name": name, "steps": [{ "id": "a", "uses": "http.request" }] }),
        source: format!("name: {name}\nsteps:\n  - id: a\n    uses: http.request\n"),
        created_at: now(),
    }
}

fn a_run(workflow: &str, key: Option<&str>) -> run::Model {
    let at = now();
    run::Model {
        id: Uuid::now_v7(),
        workspace_id: DEFAULT_WORKSPACE_ID,
        workflow_name: workflow.into(),
        workflow_version: 1,
        status: RunStatus::Running,
        input: json!({ "user": "ada", "count": 3 }),
        outputs: None,
        error: None,
        idempotency_key: key.map(str::to_owned),
        trigger: json!({ "kind": "api" }),
        created_at: at,
        started_at: Some(at),
        finished_at: None,
        deadline_at: Some(at + TimeDelta::minutes(5)),
        updated_at: at,
        traceparent: Some("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into()),
    }
}

fn a_step(run: &run::Model, step_id: &str, item_index: i32) -> step_instance::Model {
    step_instance::Model {
        id: Uuid::now_v7(),
        workspace_id: run.workspace_id,
        run_id: run.id,
        step_id: step_id.into(),
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
        updated_at: now(),
    }
}

fn an_attempt(step: &step_instance::Model, number: i32) -> attempt::Model {
    let at = now();
    attempt::Model {
        id: Uuid::now_v7(),
        workspace_id: step.workspace_id,
        run_id: step.run_id,
        step_instance_id: step.id,
        attempt: number,
        worker_id: "worker-1".into(),
        status: AttemptStatus::Failed,
        error: Some(json!({ "code": "rate_limited", "message": "slow down" })),
        started_at: at,
        finished_at: at + TimeDelta::milliseconds(250),
    }
}

/// An outbox row without an id: the database numbers them.
fn an_outbox_row(msg_id: &str) -> outbox::ActiveModel {
    outbox::ActiveModel {
        id: NotSet,
        subject: Set("sy.steps.default.http".into()),
        msg_id: Set(msg_id.into()),
        payload: Set(json!({ "run": "r", "step": "a" }).to_string()),
        headers: Set(json!({ "traceparent": "00-abc-def-01" })),
        created_at: Set(now()),
        sent_at: Set(None),
    }
}

fn an_event(id: &str) -> event::Model {
    event::Model {
        id: id.into(),
        workspace_id: DEFAULT_WORKSPACE_ID,
        name: "order.created".into(),
        data: json!({ "order": 42 }),
        source: json!({ "run": Uuid::nil(), "step": "emit" }),
        depth: 1,
        created_at: now(),
    }
}

/// Inserts `model` with every field set, as the engine does.
fn a_secret(name: &str) -> secret::Model {
    secret::Model {
        id: Uuid::now_v7(),
        workspace_id: DEFAULT_WORKSPACE_ID,
        name: name.into(),
        key_version: 1,
        wrapped_key: vec![0, 1, 2, 255],
        ciphertext: vec![9; 48],
        created_at: now(),
        updated_at: now(),
    }
}

fn a_schedule_state(workflow: &str) -> schedule_state::Model {
    schedule_state::Model {
        workspace_id: DEFAULT_WORKSPACE_ID,
        workflow_name: workflow.into(),
        trigger_key: "0 3 * * *@Europe/Berlin".into(),
        settled_until: now(),
        last_fire_at: Some(now() - TimeDelta::hours(24)),
        next_fire_at: Some(now() + TimeDelta::hours(24)),
        updated_at: now(),
    }
}

async fn insert<M, A>(
    conn: &DatabaseConnection,
    model: M,
) -> Result<<A::Entity as EntityTrait>::Model, DbErr>
where
    M: IntoActiveModel<A>,
    A: ActiveModelTrait + sea_orm::ActiveModelBehavior + Send,
    <A::Entity as EntityTrait>::Model: IntoActiveModel<A>,
{
    model.into_active_model().reset_all().insert(conn).await
}

/// Fails unless `result` is the database refusing a duplicate key.
fn refused_as_duplicate<T: Debug>(result: Result<T, DbErr>, what: &str) -> Result<()> {
    match result {
        Ok(row) => bail!("{what}: a duplicate was stored: {row:?}"),
        Err(error) => match error.sql_err() {
            Some(SqlErr::UniqueConstraintViolation(_)) => Ok(()),
            _ => bail!("{what}: expected a unique-key violation, got {error}"),
        },
    }
}

/// The columns the database has for `table`.
async fn columns_of(conn: &DatabaseConnection, table: &str) -> Result<BTreeSet<String>> {
    let backend = conn.get_database_backend();
    let sql = match backend {
        DbBackend::Sqlite => "SELECT name FROM pragma_table_info($1)",
        DbBackend::Postgres => {
            "SELECT column_name::text AS name FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = $1"
        }
        other => bail!("no column query for {other:?}"),
    };
    let rows = conn
        .query_all_raw(Statement::from_sql_and_values(backend, sql, [table.into()]))
        .await?;
    rows.iter()
        .map(|row| Ok(row.try_get::<String>("", "name")?))
        .collect()
}

/// Fails unless the database has a table for `E` with exactly `E`'s columns.
async fn assert_matches_entity<E: EntityTrait + Default>(conn: &DatabaseConnection) -> Result<()> {
    let table = E::default().table_name();
    let manager = SchemaManager::new(conn);
    ensure!(manager.has_table(table).await?, "table {table} is missing");
    let expected: BTreeSet<String> = E::Column::iter().map(|c| c.as_str().to_owned()).collect();
    let found = columns_of(conn, table).await?;
    ensure!(
        found == expected,
        "{table}: the database has columns {found:?}, the entity {expected:?}"
    );
    Ok(())
}

async fn count_runs(conn: &DatabaseConnection) -> Result<u64> {
    Ok(run::Entity::find().count(conn).await?)
}

#[tokio::test]
async fn migrating_twice_applies_each_migration_once() -> Result<()> {
    for_each_backend(|db| async move {
        let conn = migrated(&db).await?;
        Migrator::up(&conn, None).await.context("second up")?;

        let applied = Migrator::get_applied_migrations(&conn).await?;
        let names: Vec<_> = applied.iter().map(|m| m.name().to_owned()).collect();
        assert_eq!(names, MIGRATIONS);
        assert!(Migrator::get_pending_migrations(&conn).await?.is_empty());

        let workspaces = workspace::Entity::find().all(&conn).await?;
        assert_eq!(workspaces.len(), 1, "one default workspace: {workspaces:?}");
        assert_eq!(workspaces[0].id, DEFAULT_WORKSPACE_ID);
        assert_eq!(workspaces[0].name, "default");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn every_entity_has_a_table_with_exactly_its_columns_and_indexes() -> Result<()> {
    for_each_backend(|db| async move {
        let conn = migrated(&db).await?;
        assert_matches_entity::<workspace::Entity>(&conn).await?;
        assert_matches_entity::<workflow_version::Entity>(&conn).await?;
        assert_matches_entity::<run::Entity>(&conn).await?;
        assert_matches_entity::<step_instance::Entity>(&conn).await?;
        assert_matches_entity::<attempt::Entity>(&conn).await?;
        assert_matches_entity::<outbox::Entity>(&conn).await?;
        assert_matches_entity::<event::Entity>(&conn).await?;
        assert_matches_entity::<secret::Entity>(&conn).await?;
        assert_matches_entity::<schedule_state::Entity>(&conn).await?;
        assert_matches_entity::<connection::Entity>(&conn).await?;
        assert_matches_entity::<principal::Entity>(&conn).await?;
        assert_matches_entity::<api_token::Entity>(&conn).await?;
        assert_matches_entity::<audit_record::Entity>(&conn).await?;
        assert_matches_entity::<audit_head::Entity>(&conn).await?;
        assert_matches_entity::<approval::Entity>(&conn).await?;
        assert_matches_entity::<policy::Entity>(&conn).await?;
        assert_matches_entity::<oauth_state::Entity>(&conn).await?;

        let manager = SchemaManager::new(&conn);
        for (table, index) in INDEXES {
            ensure!(
                manager.has_index(table, index).await?,
                "index {index} on {table} is missing"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn rows_of_every_table_read_back_as_written() -> Result<()> {
    for_each_backend(|db| async move {
        let conn = migrated(&db).await?;

        let version = a_version("greet", 1);
        insert(&conn, version.clone()).await?;
        let read = workflow_version::Entity::find_by_id(version.id)
            .one(&conn)
            .await?;
        assert_eq!(read.as_ref(), Some(&version));

        let mut run = a_run("greet", Some("order-42"));
        run.status = RunStatus::Failed;
        run.outputs = Some(json!({ "greeting": "hello" }));
        run.error = Some(json!({ "code": "timeout", "message": "step a timed out" }));
        run.finished_at = Some(now());
        insert(&conn, run.clone()).await?;
        let read = run::Entity::find_by_id(run.id).one(&conn).await?;
        assert_eq!(read.as_ref(), Some(&run));

        // A fanned-out step: the parent row plus one row per item.
        let mut parent = a_step(&run, "each", NO_ITEM);
        parent.status = StepStatus::Running;
        parent.input = Some(json!(["x", "y"]));
        parent.items_total = Some(2);
        let mut item = a_step(&run, "each", 0);
        item.status = StepStatus::RetryWait;
        item.attempt = 1;
        item.input = Some(json!({ "item": "x" }));
        item.error =
            Some(json!({ "code": "rate_limited", "message": "429", "retry_after_ms": 1500 }));
        item.dispatched_at = Some(now());
        item.started_at = Some(now());
        item.due_at = Some(now() + TimeDelta::seconds(2));
        for step in [&parent, &item] {
            insert(&conn, step.clone()).await?;
            let read = step_instance::Entity::find_by_id(step.id)
                .one(&conn)
                .await?;
            assert_eq!(read.as_ref(), Some(step));
        }

        let attempt = an_attempt(&item, 1);
        insert(&conn, attempt.clone()).await?;
        let read = attempt::Entity::find_by_id(attempt.id).one(&conn).await?;
        assert_eq!(read.as_ref(), Some(&attempt));

        // The relay publishes in id order, so ids must be assigned increasing.
        let first = an_outbox_row("r.a.1").insert(&conn).await?;
        let second = an_outbox_row("r.a.2").insert(&conn).await?;
        assert!(second.id > first.id, "{} then {}", first.id, second.id);
        let unsent = outbox::Entity::find()
            .filter(outbox::Column::SentAt.is_null())
            .all(&conn)
            .await?;
        assert_eq!(unsent, [first, second]);

        let event = an_event("evt-1");
        insert(&conn, event.clone()).await?;
        let read = event::Entity::find_by_id("evt-1").one(&conn).await?;
        assert_eq!(read.as_ref(), Some(&event));

        let secret = a_secret("hook-key");
        insert(&conn, secret.clone()).await?;
        let read = secret::Entity::find_by_id(secret.id).one(&conn).await?;
        assert_eq!(read.as_ref(), Some(&secret));

        let state = a_schedule_state("nightly");
        insert(&conn, state.clone()).await?;
        let read = schedule_state::Entity::find_by_id((
            state.workspace_id,
            state.workflow_name.clone(),
            state.trigger_key.clone(),
        ))
        .one(&conn)
        .await?;
        assert_eq!(read.as_ref(), Some(&state));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn unique_keys_refuse_duplicates() -> Result<()> {
    for_each_backend(|db| async move {
        let conn = migrated(&db).await?;

        let duplicate_name = workspace::Model {
            id: Uuid::now_v7(),
            name: "default".into(),
            created_at: now(),
        };
        refused_as_duplicate(insert(&conn, duplicate_name).await, "workspace name")?;

        insert(&conn, a_version("greet", 1)).await?;
        insert(&conn, a_version("greet", 2)).await?;
        insert(&conn, a_version("other", 1)).await?;
        refused_as_duplicate(
            insert(&conn, a_version("greet", 1)).await,
            "workflow version",
        )?;

        let run = insert(&conn, a_run("greet", Some("k1"))).await?;
        refused_as_duplicate(
            insert(&conn, a_run("greet", Some("k1"))).await,
            "idempotency key",
        )?;
        insert(&conn, a_run("other", Some("k1")))
            .await
            .context("the same key on another workflow")?;
        insert(&conn, a_run("greet", None)).await?;
        insert(&conn, a_run("greet", None))
            .await
            .context("a second run without a key")?;

        let step = insert(&conn, a_step(&run, "a", NO_ITEM)).await?;
        refused_as_duplicate(
            insert(&conn, a_step(&run, "a", NO_ITEM)).await,
            "(run, step, item)",
        )?;
        insert(&conn, a_step(&run, "a", 0))
            .await
            .context("an item of the same step")?;
        insert(&conn, a_step(&run, "b", NO_ITEM)).await?;

        insert(&conn, an_attempt(&step, 1)).await?;
        refused_as_duplicate(insert(&conn, an_attempt(&step, 1)).await, "attempt")?;
        insert(&conn, an_attempt(&step, 2)).await?;

        an_outbox_row("r.a.1").insert(&conn).await?;
        refused_as_duplicate(an_outbox_row("r.a.1").insert(&conn).await, "outbox msg_id")?;

        insert(&conn, an_event("evt-1")).await?;
        refused_as_duplicate(insert(&conn, an_event("evt-1")).await, "event id")?;

        insert(&conn, a_secret("hook-key")).await?;
        refused_as_duplicate(insert(&conn, a_secret("hook-key")).await, "secret name")?;
        insert(&conn, a_schedule_state("nightly")).await?;
        refused_as_duplicate(
            insert(&conn, a_schedule_state("nightly")).await,
            "schedule state",
        )?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn deleting_a_run_deletes_its_steps_and_their_attempts() -> Result<()> {
    for_each_backend(|db| async move {
        let conn = migrated(&db).await?;
        let doomed = insert(&conn, a_run("greet", None)).await?;
        let kept = insert(&conn, a_run("greet", None)).await?;
        for run in [&doomed, &kept] {
            let step = insert(&conn, a_step(run, "a", NO_ITEM)).await?;
            insert(&conn, a_step(run, "b", NO_ITEM)).await?;
            insert(&conn, an_attempt(&step, 1)).await?;
        }

        run::Entity::delete_by_id(doomed.id).exec(&conn).await?;

        let steps = step_instance::Entity::find().all(&conn).await?;
        assert_eq!(steps.len(), 2);
        assert!(steps.iter().all(|s| s.run_id == kept.id), "{steps:?}");
        let attempts = attempt::Entity::find().all(&conn).await?;
        assert_eq!(attempts.len(), 1);
        assert_eq!(attempts[0].run_id, kept.id);
        Ok(())
    })
    .await
}

#[tokio::test]
async fn a_step_of_a_missing_run_is_refused() -> Result<()> {
    for_each_backend(|db| async move {
        let conn = migrated(&db).await?;
        let never_stored = a_run("greet", None);
        match insert(&conn, a_step(&never_stored, "a", NO_ITEM)).await {
            Ok(step) => bail!("a step without a run was stored: {step:?}"),
            Err(error) => ensure!(
                matches!(
                    error.sql_err(),
                    Some(SqlErr::ForeignKeyConstraintViolation(_))
                ),
                "expected a foreign-key violation, got {error}"
            ),
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn rolling_back_then_migrating_again_gives_an_empty_schema() -> Result<()> {
    for_each_backend(|db| async move {
        let conn = migrated(&db).await?;
        let run = insert(&conn, a_run("greet", None)).await?;
        insert(&conn, a_step(&run, "a", NO_ITEM)).await?;

        Migrator::down(&conn, None)
            .await
            .context("migrating down")?;
        let manager = SchemaManager::new(&conn);
        for table in [
            "workspaces",
            "workflow_versions",
            "runs",
            "step_instances",
            "attempts",
            "outbox",
            "events",
            "secrets",
            "schedule_states",
            "connections",
            "principals",
            "api_tokens",
            "audit_records",
            "audit_heads",
            "approvals",
            "policies",
            "oauth_states",
        ] {
            ensure!(
                !manager.has_table(table).await?,
                "{table} survived migrating down"
            );
        }

        Migrator::up(&conn, None)
            .await
            .context("migrating up again")?;
        assert_eq!(count_runs(&conn).await?, 0);
        assert_eq!(step_instance::Entity::find().count(&conn).await?, 0);
        let default = workspace::Entity::find_by_id(DEFAULT_WORKSPACE_ID)
            .one(&conn)
            .await?;
        assert_eq!(default.map(|w| w.name).as_deref(), Some("default"));
        Ok(())
    })
    .await
}

#[tokio::test]
async fn engines_starting_together_all_migrate() -> Result<()> {
    for_each_backend(|db| async move {
        // One pool per engine copy, as separate processes would have.
        let mut pools = Vec::new();
        for _ in 0..4 {
            pools.push(db.connect().await?);
        }
        let results =
            futures::future::join_all(pools.iter().map(|pool| Migrator::up(pool, None))).await;
        for (copy, result) in results.into_iter().enumerate() {
            result.with_context(|| format!("engine copy {copy}"))?;
        }

        let conn = &pools[0];
        assert_eq!(
            Migrator::get_applied_migrations(conn).await?.len(),
            MIGRATIONS.len()
        );
        assert_eq!(workspace::Entity::find().count(conn).await?, 1);
        Ok(())
    })
    .await
}
