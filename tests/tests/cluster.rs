//! The production topology on one machine: a three-node JetStream cluster started from
//! `deploy/nats/nats.conf`, an engine process with `--stream-replicas 3`, PostgreSQL, and
//! worker processes connected to different nodes. The engine's streams get three replicas, and
//! when the node leading the steps stream is killed mid-batch every run still completes, each
//! step recorded once.

mod common;

use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use common::{Api, spawn_engine_process_with, spawn_worker_process, start_fake};
use schemas::transport;
use serde_json::json;
use switchyard_tests::{NatsCluster, TestDatabase, wait_until};

const RUNS: usize = 30;
const STEPS: usize = 3;
/// Generous: a killed leader is replaced after JetStream's election timeout (a few seconds),
/// and clients reconnect to another node.
const WITHIN: Duration = Duration::from_secs(90);

#[tokio::test]
async fn runs_complete_when_the_steps_stream_s_leader_is_lost() -> Result<()> {
    let mut cluster = NatsCluster::start().await?;
    let db = TestDatabase::postgres().await?;
    let (fake_addr, fake) = start_fake().await?;
    let urls = cluster.urls();
    let (_engine, api_url, engine_log) =
        spawn_engine_process_with(&urls, db.url(), &[("SWITCHYARD_STREAM_REPLICAS", "3")]).await?;
    // Each worker is given one node only: the servers tell it the others.
    let mut workers = Vec::new();
    for (i, node) in cluster.nodes.iter().enumerate() {
        workers.push(spawn_worker_process(&node.url(), &format!("w{i}"))?);
    }
    let api = Api::new(api_url, db.url()).await?;

    let js = async_nats::jetstream::new(async_nats::connect(workers::nats_servers(&urls)).await?);
    for name in [
        transport::STEPS_STREAM,
        transport::RESULTS_STREAM,
        transport::EVENTS_STREAM,
        transport::HOLDS_STREAM,
        transport::BUDGETS_STREAM,
    ] {
        let info = js.get_stream(name).await?.info().await?.clone();
        assert_eq!(info.config.num_replicas, 3, "{name}");
        let replicas = info.cluster.map(|c| c.replicas.len()).unwrap_or_default();
        assert_eq!(replicas, 2, "{name}: a leader and two followers");
    }

    let steps: Vec<String> = (0..STEPS)
        .map(|i| {
            let needs = if i == 0 {
                String::new()
            } else {
                format!(", needs: [s{}]", i - 1)
            };
            format!(
                "  - {{ id: s{i}{needs}, action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n"
            )
        })
        .collect();
    api.apply(&format!("name: replicated\nsteps:\n{}", steps.concat()))
        .await?;
    let mut runs = Vec::new();
    for i in 0..RUNS {
        let (_, id) = api.start_run("replicated", json!({ "i": i }), None).await?;
        runs.push(id);
    }

    // Part of the batch done, then the machine holding the steps stream's leader goes away.
    wait_until(
        || async { fake.hits.load(Ordering::SeqCst) >= RUNS },
        WITHIN,
    )
    .await
    .context("the first steps ran")?;
    let leader = js
        .get_stream(transport::STEPS_STREAM)
        .await?
        .info()
        .await?
        .cluster
        .clone()
        .and_then(|c| c.leader)
        .context("the steps stream has a leader")?;
    cluster.node(&leader)?.kill();
    let before = fake.hits.load(Ordering::SeqCst);
    ensure!(
        before < RUNS * STEPS,
        "every step ran before the node was lost ({before}); the test proves nothing"
    );

    for id in &runs {
        let run = api.finished(id, WITHIN).await.with_context(|| {
            format!(
                "after {leader} was killed; engine log:\n{}",
                engine_log.lock().unwrap_or_else(|e| e.into_inner())
            )
        })?;
        assert_eq!(run["status"], "succeeded", "{run:#}");
        let steps = run["steps"].as_array().context("steps")?;
        assert_eq!(steps.len(), STEPS, "{run:#}");
        for step in steps {
            assert_eq!(step["status"], "succeeded", "{run:#}");
        }
    }
    // Every step reached the provider; a step whose result was in flight when the node died
    // may have been sent twice (at least once), never lost.
    let hits = fake.hits.load(Ordering::SeqCst);
    assert!(
        hits >= RUNS * STEPS,
        "{hits} requests for {} steps",
        RUNS * STEPS
    );

    // The two nodes left still hold three-replica streams with a new leader.
    let info = js
        .get_stream(transport::STEPS_STREAM)
        .await?
        .info()
        .await?
        .clone();
    let now_led_by = info.cluster.and_then(|c| c.leader).unwrap_or_default();
    assert!(
        !now_led_by.is_empty() && now_led_by != leader,
        "led by {now_led_by:?} after {leader} was lost"
    );
    for mut worker in workers {
        let _ = worker.kill().await;
    }
    Ok(())
}
