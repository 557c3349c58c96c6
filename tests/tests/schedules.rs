//! Schedule triggers through real engines (in-process and separate processes), a real
//! nats-server and real databases: each fire time starts exactly one run with several engines
//! running, missed fire times follow the
//! trigger's catch-up policy after the engines were stopped, and the API shows each
//! trigger's next and last fire time. (Cron and DST arithmetic is unit-tested beside it, in
//! `engine::triggers::schedule`.)

mod common;

use std::collections::BTreeSet;

use anyhow::{Context, Result, ensure};
use chrono::{DateTime, TimeDelta, Timelike, Utc};
use common::{Api, Stack, WAIT, spawn_engine_process};
use schemas::db::entities::{run, schedule_state};
use sea_orm::{ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, Set};
use serde_json::Value;
use switchyard_tests::{Backend, wait_until};

fn scheduled(name: &str, cron: &str, catch_up: &str) -> String {
    format!(
        "name: {name}\ntriggers:\n  - schedule: {{ cron: \"{cron}\", timezone: Europe/Berlin, catch_up: {catch_up} }}\nsteps:\n  - {{ id: noop, if: \"{{{{ false }}}}\", action: http.request, with: {{ url: \"http://127.0.0.1:9/\" }} }}\noutputs: {{ at: \"{{{{ trigger.fire_time }}}}\" }}\n"
    )
}

async fn fire_times(stack: &Stack, workflow: &str) -> Result<Vec<DateTime<Utc>>> {
    let conn = stack.db.connect().await?;
    let mut times: Vec<DateTime<Utc>> = run::Entity::find()
        .filter(run::Column::WorkflowName.eq(workflow))
        .all(&conn)
        .await?
        .iter()
        .map(|r| {
            r.trigger["fire_time"]
                .as_str()
                .context("fire_time")
                .and_then(|t| Ok(t.parse::<DateTime<Utc>>()?))
        })
        .collect::<Result<_>>()?;
    times.sort();
    Ok(times)
}

async fn two_engines_start_one_run_per_fire_time(backend: Backend) -> Result<()> {
    let stack = Stack::start_with_workers(backend, 0).await?;
    // A second engine, as a separate process.
    let (_second, _) = spawn_engine_process(&stack.nats.url(), stack.db.url()).await?;
    stack
        .apply(&scheduled("every-second", "* * * * * *", "all"))
        .await?;
    wait_until(
        || async {
            Ok::<bool, anyhow::Error>(fire_times(&stack, "every-second").await?.len() >= 6)
        },
        WAIT,
    )
    .await?;
    let times = fire_times(&stack, "every-second").await?;
    let distinct: BTreeSet<_> = times.iter().collect();
    assert_eq!(
        distinct.len(),
        times.len(),
        "one run per fire time: {times:?}"
    );
    for pair in times.windows(2) {
        assert_eq!(
            pair[1] - pair[0],
            TimeDelta::seconds(1),
            "no fire time lost between {} and {}",
            pair[0],
            pair[1]
        );
    }
    for t in &times {
        assert_eq!(
            t.timestamp_subsec_nanos(),
            0,
            "fire times are whole seconds: {t}"
        );
    }
    Ok(())
}

#[tokio::test]
async fn two_engines_start_one_run_per_fire_time_on_sqlite() -> Result<()> {
    two_engines_start_one_run_per_fire_time(Backend::Sqlite).await
}

#[tokio::test]
async fn two_engines_start_one_run_per_fire_time_on_postgres() -> Result<()> {
    two_engines_start_one_run_per_fire_time(Backend::Postgres).await
}

#[tokio::test]
async fn missed_fire_times_follow_the_catch_up_policy_after_downtime() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Postgres, 0).await?;
    // Hourly, at a minute at least 29 minutes away from now, so no fire time is due while
    // the test runs and the latest missed one is never on time.
    let minute = (Utc::now().minute() + 30) % 60;
    let cron = format!("{minute} * * * *");
    for policy in ["all", "latest", "none"] {
        stack
            .apply(&scheduled(&format!("catch-{policy}"), &cron, policy))
            .await?;
    }
    // The engine sees each trigger once and starts from now.
    let conn = stack.db.connect().await?;
    wait_until(
        || {
            let conn = conn.clone();
            async move {
                let n = schedule_state::Entity::find().all(&conn).await?.len();
                Ok::<bool, anyhow::Error>(n == 3)
            }
        },
        WAIT,
    )
    .await?;
    let before = stack
        .client()
        .http
        .get(format!("{}/v1/workflows/catch-all", stack.api))
        .send()
        .await?
        .json::<Value>()
        .await?;
    let trigger = &before["triggers"][0];
    assert_eq!(trigger["kind"], "schedule");
    assert!(trigger["last_fire_at"].is_null(), "{trigger}");
    let next: DateTime<Utc> = trigger["next_fire_at"]
        .as_str()
        .context("next_fire_at")?
        .parse()?;
    ensure!(next > Utc::now() && next.minute() == minute, "{next}");

    // Stop every engine, and make it as if they stopped three hours and a bit ago.
    stack.stop.send(true)?;
    let now = Utc::now();
    let latest = {
        let mut t = now
            .with_second(0)
            .and_then(|t| t.with_nanosecond(0))
            .context("time")?;
        while t.minute() != minute || t > now {
            t -= TimeDelta::minutes(1);
        }
        t
    };
    for state in schedule_state::Entity::find().all(&conn).await? {
        let mut row = state.into_active_model();
        row.settled_until = Set(latest - TimeDelta::hours(3) - TimeDelta::minutes(1));
        row.next_fire_at = Set(Some(latest - TimeDelta::hours(3)));
        row.update(&conn).await?;
    }

    // Start again: an engine process, on the same database.
    let (_engine, url) = spawn_engine_process(&stack.nats.url(), stack.db.url()).await?;
    let api = Api::new(url, stack.db.url()).await?;
    wait_until(
        || async {
            Ok::<bool, anyhow::Error>(
                fire_times(&stack, "catch-all").await?.len() == 4
                    && fire_times(&stack, "catch-latest").await?.len() == 1,
            )
        },
        WAIT,
    )
    .await
    .context("missed fire times started")?;
    let expected: Vec<_> = (0..4).rev().map(|h| latest - TimeDelta::hours(h)).collect();
    assert_eq!(fire_times(&stack, "catch-all").await?, expected);
    assert_eq!(fire_times(&stack, "catch-latest").await?, vec![latest]);
    // `none` settled the same window without a run: its state moved past it.
    wait_until(
        || {
            let conn = conn.clone();
            async move {
                let state = schedule_state::Entity::find()
                    .filter(schedule_state::Column::WorkflowName.eq("catch-none"))
                    .one(&conn)
                    .await?
                    .context("state")?;
                Ok::<bool, anyhow::Error>(state.settled_until >= latest)
            }
        },
        WAIT,
    )
    .await?;
    assert!(fire_times(&stack, "catch-none").await?.is_empty());

    let after: Value = api
        .http
        .get(format!("{}/v1/workflows/catch-latest", api.url))
        .send()
        .await?
        .json()
        .await?;
    let trigger = &after["triggers"][0];
    let last: DateTime<Utc> = trigger["last_fire_at"]
        .as_str()
        .context("last_fire_at")?
        .parse()?;
    assert_eq!(last, latest);
    let next: DateTime<Utc> = trigger["next_fire_at"]
        .as_str()
        .context("next_fire_at")?
        .parse()?;
    assert_eq!(next, latest + TimeDelta::hours(1));

    // A trigger removed from the latest version loses its state, so adding it back later
    // does not catch up on the time it was gone.
    api.apply("name: catch-all\nsteps:\n  - { id: noop, if: \"{{ false }}\", action: http.request, with: { url: \"http://127.0.0.1:9/\" } }\n")
        .await?;
    wait_until(
        || {
            let conn = conn.clone();
            async move {
                let left = schedule_state::Entity::find()
                    .filter(schedule_state::Column::WorkflowName.eq("catch-all"))
                    .all(&conn)
                    .await?;
                Ok::<bool, anyhow::Error>(left.is_empty())
            }
        },
        WAIT,
    )
    .await
    .context("the removed trigger's state is deleted")?;
    Ok(())
}
