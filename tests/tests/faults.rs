//! Faults across process boundaries: a worker process killed mid-step, an engine process killed
//! between its commit and its publish, NATS restarted mid-run, results delivered twice, rate
//! limits honoured.

mod common;

use std::process::Stdio;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use common::{
    Api, Stack, WAIT, spawn_engine_process, spawn_worker_process, start_fake, step, switchyard_bin,
};
use schemas::envelope::{ENVELOPE_VERSION, Outcome, StepResult};
use serde_json::json;
use switchyard_tests::{Backend, wait_until};

#[tokio::test]
async fn a_worker_killed_mid_step_is_replaced_and_the_run_completes() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let stack = Stack::start_with_workers(Backend::Sqlite, 0).await?;
    stack
        .apply(&format!(
            "name: crash\nsteps:\n  - {{ id: call, action: http.request, timeout: 1m, with: {{ url: \"http://{fake_addr}/hang-once/{{{{ run.id }}}}\" }} }}\n"
        ))
        .await?;
    // A real worker process with a short ack wait, so redelivery after the crash is quick.
    let mut worker = tokio::process::Command::new(switchyard_bin()?)
        .args([
            "worker",
            "--nats-url",
            &stack.nats.url(),
            "--ack-wait",
            "2s",
            "--heartbeat",
            "500ms",
            "--worker-id",
            "doomed",
            "--allow-outbound",
            common::ALLOW_OUTBOUND,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawn worker")?;
    let (_, id) = stack.start_run("crash", json!({}), None).await?;
    wait_until(|| async { fake.hits.load(Ordering::SeqCst) == 1 }, WAIT).await?;
    worker.start_kill()?; // SIGKILL: no drain, no result, no ack
    worker.wait().await?;
    stack.spawn_worker(workers::WorkerConfig {
        nats_url: stack.nats.url(),
        worker_id: "survivor".into(),
        allow_outbound: common::allow_outbound(),
        ..Default::default()
    });
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let call = step(&run, "call");
    assert_eq!(
        call["output"]["body"]["call"], 2,
        "the redelivered step ran again"
    );
    assert_eq!(
        call["history"].as_array().map(Vec::len),
        Some(1),
        "one outcome recorded"
    );
    assert_eq!(call["history"][0]["worker"], "survivor");
    Ok(())
}

#[tokio::test]
async fn an_engine_killed_between_commit_and_publish_leaves_its_steps_to_the_next_engine()
-> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let nats = switchyard_tests::NatsServer::start().await?;
    let db = switchyard_tests::TestDatabase::new(Backend::Postgres).await?;
    let (mut first, api) = spawn_engine_process(&nats.url(), db.url()).await?;
    let api = Api::new(api, db.url()).await?;
    api.apply(&format!(
        "name: orphan\nsteps:\n  - {{ id: call, action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n"
    ))
    .await?;
    // Take the steps stream away: the engine's commits still go through, its publishes cannot,
    // so the run below stays committed and unpublished for as long as this engine lives.
    nats.jetstream()
        .await?
        .delete_stream(schemas::transport::STEPS_STREAM)
        .await?;
    let (_, run_id) = api.start_run("orphan", json!({}), None).await?;
    let conn = engine::service::connect_db(db.url()).await?;
    assert_eq!(engine::store::unsent(&conn, 10).await?.len(), 1);
    first.start_kill()?; // SIGKILL: the relay never gets another chance
    first.wait().await?;

    // A worker process, then a second engine process: it recreates the stream at start-up and
    // its relay sends what the first engine left in the outbox.
    let _worker = spawn_worker_process(&nats.url(), "replacement")?;
    let (_second, api) = spawn_engine_process(&nats.url(), db.url()).await?;
    let run = Api::new(api, db.url())
        .await?
        .finished(&run_id, WAIT)
        .await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(fake.hits.load(Ordering::SeqCst), 1);
    assert!(engine::store::unsent(&conn, 10).await?.is_empty());
    Ok(())
}

#[tokio::test]
async fn a_result_delivered_twice_changes_nothing_the_second_time() -> Result<()> {
    let (fake_addr, _fake) = start_fake().await?;
    let stack = Stack::start(Backend::Sqlite).await?;
    stack
        .apply(&format!(
            "name: twice\nsteps:\n  - {{ id: a, action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n  - {{ id: b, needs: [a], action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n"
        ))
        .await?;
    let (_, id) = stack.start_run("twice", json!({}), None).await?;
    let before = stack.finished(&id, WAIT).await?;
    assert_eq!(before["status"], "succeeded");

    // Replay step `a`'s result under a new message id, so JetStream does not drop it: only the
    // engine's own fencing stands between it and a second transition.
    let a = step(&before, "a");
    let replay = StepResult {
        v: ENVELOPE_VERSION,
        run_id: id.parse()?,
        step_id: "a".into(),
        item_index: None,
        attempt: 1,
        worker_id: "replayer".into(),
        outcome: Outcome::Succeeded {
            output: json!({ "status": 200, "body": { "n": 999 } }),
        },
        started_at: chrono::Utc::now(),
        finished_at: chrono::Utc::now(),
    };
    let js = stack.nats.jetstream().await?;
    let mut headers = async_nats::HeaderMap::new();
    headers.insert("Nats-Msg-Id", "replayed-result");
    js.publish_with_headers(
        schemas::transport::RESULTS_SUBJECT,
        headers,
        serde_json::to_vec(&replay)?.into(),
    )
    .await?
    .await?;
    // Wait until an engine has taken and acknowledged it (the work queue is then empty).
    wait_until(
        || async {
            let mut stream = js.get_stream(schemas::transport::RESULTS_STREAM).await?;
            Ok::<bool, anyhow::Error>(stream.info().await?.state.messages == 0)
        },
        WAIT,
    )
    .await?;
    let after = stack.run(&id).await?;
    assert_eq!(step(&after, "a")["output"], a["output"]);
    assert_eq!(
        step(&after, "a")["history"].as_array().map(Vec::len),
        Some(1)
    );
    assert_eq!(after["status"], "succeeded");
    assert_eq!(after["finished_at"], before["finished_at"]);
    Ok(())
}

#[tokio::test]
async fn runs_complete_across_a_nats_restart() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let mut stack = Stack::start(Backend::Sqlite).await?;
    let yaml = engine::bench::chain_definition("across", 6, &format!("http://{fake_addr}/ok"));
    stack.apply(&yaml).await?;
    let (_, id) = stack.start_run("across", json!({}), None).await?;
    wait_until(|| async { fake.hits.load(Ordering::SeqCst) >= 2 }, WAIT).await?;
    stack.nats.stop().await?;
    stack.nats.restart().await?;
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    for i in 0..6 {
        assert_eq!(step(&run, &format!("s{i}"))["status"], "succeeded");
    }
    Ok(())
}

#[tokio::test]
async fn a_429_with_retry_after_is_honoured_while_other_steps_keep_flowing() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let stack = Stack::start(Backend::Sqlite).await?;
    stack
        .apply(&format!(
            "name: limited\nsteps:\n  - {{ id: call, action: http.request, retry: {{ max_attempts: 3, initial: 100ms, max: 500ms }}, with: {{ url: \"http://{fake_addr}/limited/{{{{ run.id }}}}\" }} }}\n"
        ))
        .await?;
    stack
        // Another host as far as holds go (the same fake, reached by name): not held.
        .apply(&format!(
            "name: quick\nsteps:\n  - {{ id: a, action: http.request, with: {{ url: \"http://localhost:{}/ok\" }} }}\n",
            fake_addr.port()
        ))
        .await?;
    let (_, limited) = stack.start_run("limited", json!({}), None).await?;
    wait_until(
        || async { fake.limited_at.lock().map(|v| v.len()).unwrap_or(0) == 1 },
        WAIT,
    )
    .await?;
    // While `limited` waits out its Retry-After, other runs go through.
    let started = Instant::now();
    let (_, quick) = stack.start_run("quick", json!({}), None).await?;
    let run = stack.finished(&quick, WAIT).await?;
    assert_eq!(run["status"], "succeeded");
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "another run was held up: {:?}",
        started.elapsed()
    );

    let run = stack.finished(&limited, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    let times = fake
        .limited_at
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    assert_eq!(times.len(), 2);
    let gap = times[1] - times[0];
    assert!(
        gap >= Duration::from_secs(2),
        "retried after {gap:?}, before the provider's Retry-After of 2s"
    );
    assert_eq!(
        step(&run, "call")["history"][0]["error"]["code"],
        "rate_limited"
    );
    Ok(())
}

#[tokio::test]
async fn two_engine_processes_and_three_worker_processes_record_every_step_once() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let nats = switchyard_tests::NatsServer::start().await?;
    let db = switchyard_tests::TestDatabase::new(Backend::Postgres).await?;
    let (_one, first) = spawn_engine_process(&nats.url(), db.url()).await?;
    let (_two, second) = spawn_engine_process(&nats.url(), db.url()).await?;
    let _workers = ["w1", "w2", "w3"]
        .into_iter()
        .map(|id| spawn_worker_process(&nats.url(), id))
        .collect::<Result<Vec<_>>>()?;
    let (first, second) = (
        Api::new(first, db.url()).await?,
        Api::new(second, db.url()).await?,
    );
    first
        .apply(&format!(
            "name: shared\nsteps:\n  - {{ id: a, action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n  - {{ id: fan, needs: [a], for_each: [1, 2, 3, 4, 5], action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n  - {{ id: z, needs: [fan], action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n"
        ))
        .await?;
    // Runs started through both engines; both record results from the one results stream.
    let mut ids = Vec::new();
    for i in 0..20 {
        let api = if i % 2 == 0 { &first } else { &second };
        ids.push(api.start_run("shared", json!({}), None).await?.1);
    }
    let mut workers_seen = std::collections::BTreeSet::new();
    for id in &ids {
        let run = second.finished(id, WAIT).await?;
        assert_eq!(run["status"], "succeeded", "{run:#}");
        for s in run["steps"].as_array().into_iter().flatten() {
            if s.get("items").is_none() {
                assert_eq!(s["history"].as_array().map(Vec::len), Some(1), "{s:#}");
                workers_seen.insert(s["history"][0]["worker"].to_string());
            }
        }
    }
    assert_eq!(
        fake.hits.load(Ordering::SeqCst),
        20 * 7,
        "every action ran exactly once"
    );
    assert!(
        workers_seen.len() > 1,
        "one worker did everything: {workers_seen:?}"
    );
    Ok(())
}

#[tokio::test]
async fn a_429_seen_by_one_step_holds_the_whole_fleet_for_that_host() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let stack = Stack::start_with_workers(Backend::Sqlite, 2).await?;
    stack
        .apply(&format!(
            "name: limited\nsteps:\n  - {{ id: call, action: http.request, retry: {{ max_attempts: 3, initial: 100ms, max: 500ms }}, with: {{ url: \"http://{fake_addr}/limited/{{{{ run.id }}}}\" }} }}\n"
        ))
        .await?;
    stack
        .apply(&format!("name: same-host\nsteps:\n  - {{ id: call, action: http.request, with: {{ url: \"http://{fake_addr}/stamp\" }} }}\n"))
        .await?;
    let (_, limited) = stack.start_run("limited", json!({}), None).await?;
    wait_until(
        || async { fake.limited_at.lock().map(|v| v.len()).unwrap_or(0) == 1 },
        WAIT,
    )
    .await?;
    // The 429 has been answered; give its worker the moment it needs to record the hold.
    let first = fake
        .limited_at
        .lock()
        .map(|v| v[0])
        .unwrap_or_else(|_| Instant::now());
    wait_until(
        || async {
            let run = stack.run(&limited).await?;
            Ok::<bool, anyhow::Error>(step(&run, "call")["status"] == "retry_wait")
        },
        WAIT,
    )
    .await?;
    // Another workflow calling the same host, on whichever worker: held, not sent.
    let (_, other) = stack.start_run("same-host", json!({}), None).await?;
    let run = stack.finished(&other, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        step(&run, "call")["attempts"],
        1,
        "a hold does not use up attempts"
    );
    let stamped = fake
        .stamped_at
        .lock()
        .map(|v| v.clone())
        .unwrap_or_default();
    assert_eq!(stamped.len(), 1);
    let waited = stamped[0] - first;
    assert!(
        waited >= Duration::from_millis(1_900),
        "the same host was called {waited:?} after its 429 asked for 2s"
    );
    let run = stack.finished(&limited, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    Ok(())
}
