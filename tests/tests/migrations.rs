//! The schema migrates on both databases, twice, and its constraints hold.

use anyhow::Result;
use chrono::Utc;
use schemas::db::DEFAULT_WORKSPACE_ID;
use schemas::db::entities::step_instance::NO_ITEM;
use schemas::db::entities::{
    AttemptStatus, RunStatus, StepStatus, attempt, run, step_instance, workspace,
};
use schemas::db::migration::Migrator;
use sea_orm::{ActiveModelTrait, EntityTrait, PaginatorTrait, Set};
use sea_orm_migration::MigratorTrait;
use serde_json::json;
use switchyard_tests::for_each_backend;
use uuid::Uuid;

fn new_run(key: Option<&str>) -> run::ActiveModel {
    let now = Utc::now();
    run::ActiveModel {
        id: Set(Uuid::now_v7()),
        workspace_id: Set(DEFAULT_WORKSPACE_ID),
        workflow_name: Set("w".into()),
        workflow_version: Set(1),
        status: Set(RunStatus::Running),
        input: Set(json!({})),
        outputs: Set(None),
        error: Set(None),
        idempotency_key: Set(key.map(str::to_owned)),
        trigger: Set(json!({ "kind": "api" })),
        created_at: Set(now),
        started_at: Set(Some(now)),
        finished_at: Set(None),
        deadline_at: Set(None),
        updated_at: Set(now),
    }
}

fn new_step(run_id: Uuid, step_id: &str, item: i32) -> step_instance::ActiveModel {
    step_instance::ActiveModel {
        id: Set(Uuid::now_v7()),
        workspace_id: Set(DEFAULT_WORKSPACE_ID),
        run_id: Set(run_id),
        step_id: Set(step_id.into()),
        item_index: Set(item),
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
        updated_at: Set(Utc::now()),
    }
}

#[tokio::test]
async fn migrations_are_idempotent_and_constraints_hold_on_both_databases() -> Result<()> {
    for_each_backend(|db| async move {
        let conn = db.connect().await?;
        Migrator::up(&conn, None).await?;
        Migrator::up(&conn, None).await?;
        let default = workspace::Entity::find_by_id(DEFAULT_WORKSPACE_ID)
            .one(&conn)
            .await?;
        assert_eq!(default.map(|w| w.name).as_deref(), Some("default"));

        let r = new_run(Some("k1")).insert(&conn).await?;
        assert!(
            new_run(Some("k1")).insert(&conn).await.is_err(),
            "idempotency key is unique"
        );
        new_run(None).insert(&conn).await?;
        new_run(None).insert(&conn).await?;

        let s = new_step(r.id, "a", NO_ITEM).insert(&conn).await?;
        assert!(
            new_step(r.id, "a", NO_ITEM).insert(&conn).await.is_err(),
            "(run, step, item) is unique"
        );
        new_step(r.id, "a", 0).insert(&conn).await?;

        let now = Utc::now();
        let attempt = |n: i32| attempt::ActiveModel {
            id: Set(Uuid::now_v7()),
            workspace_id: Set(DEFAULT_WORKSPACE_ID),
            run_id: Set(r.id),
            step_instance_id: Set(s.id),
            attempt: Set(n),
            worker_id: Set("w1".into()),
            status: Set(AttemptStatus::Succeeded),
            error: Set(None),
            started_at: Set(now),
            finished_at: Set(now),
        };
        attempt(1).insert(&conn).await?;
        assert!(
            attempt(1).insert(&conn).await.is_err(),
            "an attempt is recorded once"
        );

        let read = step_instance::Entity::find_by_id(s.id)
            .one(&conn)
            .await?
            .expect("step");
        assert_eq!(read.status, StepStatus::Pending);
        assert_eq!(step_instance::Entity::find().count(&conn).await?, 2);

        Migrator::down(&conn, None).await?;
        Migrator::up(&conn, None).await?;
        assert_eq!(run::Entity::find().count(&conn).await?, 0);
        Ok(())
    })
    .await
}
