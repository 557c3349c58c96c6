//! Runs end to end through a real engine, real workers, a real nats-server and a real
//! database (SQLite and PostgreSQL), against a fake external API over real HTTP.

mod common;

use std::sync::atomic::Ordering;

use anyhow::Result;
use axum::http::StatusCode;
use common::{Stack, WAIT, start_fake, step};
use serde_json::{Value, json};
use switchyard_tests::{Backend, wait_until};

async fn ten_step_chain(backend: Backend) -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let stack = Stack::start(backend).await?;
    let mut yaml = format!(
        "name: chain\nsteps:\n  - {{ id: s0, action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n"
    );
    for i in 1..10 {
        yaml.push_str(&format!(
            "  - {{ id: s{i}, needs: [s{}], action: http.request, with: {{ url: \"http://{fake_addr}/ok?prev={{{{ steps.s{}.output.body.n }}}}\" }} }}\n",
            i - 1,
            i - 1
        ));
    }
    yaml.push_str("outputs: { last: \"{{ steps.s9.output.body.n }}\" }\n");
    stack.apply(&yaml).await?;
    let (status, id) = stack.start_run("chain", json!({}), None).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["outputs"]["last"], 10);
    assert_eq!(
        fake.hits.load(Ordering::SeqCst),
        10,
        "each step ran exactly once"
    );
    Ok(())
}

#[tokio::test]
async fn a_ten_step_chain_completes_on_sqlite() -> Result<()> {
    ten_step_chain(Backend::Sqlite).await
}

#[tokio::test]
async fn a_ten_step_chain_completes_on_postgres() -> Result<()> {
    ten_step_chain(Backend::Postgres).await
}

#[tokio::test]
async fn a_diamond_with_a_false_condition_skips_and_propagates() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let stack = Stack::start(Backend::Sqlite).await?;
    stack
        .apply(&format!(
            "name: diamond\nsteps:\n  - {{ id: a, action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n  - {{ id: b, needs: [a], if: \"{{{{ steps.a.output.body.n > 5 }}}}\", action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n  - {{ id: c, needs: [a], action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n  - {{ id: d, needs: [b, c], action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n  - {{ id: e, needs: [b, c], allow_skipped_needs: true, emit: {{ event: diamond.done, data: {{ c: \"{{{{ steps.c.output.body.n }}}}\" }} }} }}\n"
        ))
        .await?;
    let (_, id) = stack.start_run("diamond", json!({}), None).await?;
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(step(&run, "b")["status"], "skipped");
    assert_eq!(step(&run, "c")["status"], "succeeded");
    assert_eq!(
        step(&run, "d")["status"],
        "skipped",
        "a skipped need skips the step"
    );
    assert_eq!(step(&run, "e")["status"], "succeeded", "unless it opts in");
    assert_eq!(step(&run, "e")["output"]["event"], "diamond.done");
    assert_eq!(fake.hits.load(Ordering::SeqCst), 2);
    Ok(())
}

#[tokio::test]
async fn a_hundred_item_for_each_respects_max_parallel_and_joins_in_order() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let stack = Stack::start(Backend::Sqlite).await?;
    stack
        .apply(&format!(
            "name: fan\nsteps:\n  - id: each\n    for_each: \"{{{{ inputs.items }}}}\"\n    max_parallel: 5\n    action: http.request\n    with: {{ method: POST, url: \"http://{fake_addr}/echo\", json: {{ n: \"{{{{ item }}}}\" }} }}\noutputs: {{ count: \"{{{{ steps.each.output | length }}}}\", first: \"{{{{ steps.each.output[0].body.echo.n }}}}\", last: \"{{{{ steps.each.output[99].body.echo.n }}}}\" }}\n"
        ))
        .await?;
    let items: Vec<u32> = (0..100).collect();
    let (_, id) = stack
        .start_run("fan", json!({ "items": items }), None)
        .await?;
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        run["outputs"],
        json!({ "count": 100, "first": 0, "last": 99 })
    );
    assert_eq!(fake.hits.load(Ordering::SeqCst), 100);
    let max = fake.max_in_flight.load(Ordering::SeqCst);
    assert!(max <= 5, "at most max_parallel items in flight, saw {max}");
    Ok(())
}

#[tokio::test]
async fn a_failing_call_is_retried_and_a_permanent_one_fails_at_once() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let stack = Stack::start(Backend::Sqlite).await?;
    stack
        .apply(&format!(
            "name: flaky\nsteps:\n  - {{ id: call, action: http.request, retry: {{ max_attempts: 3, initial: 100ms, max: 1s }}, with: {{ url: \"http://{fake_addr}/flaky/{{{{ run.id }}}}\" }} }}\n"
        ))
        .await?;
    let (_, id) = stack.start_run("flaky", json!({}), None).await?;
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(step(&run, "call")["attempts"], 2);
    assert_eq!(
        step(&run, "call")["history"][0]["error"]["code"],
        "upstream_unavailable"
    );

    stack
        .apply(&format!(
            "name: bad\nsteps:\n  - {{ id: call, action: http.request, retry: {{ max_attempts: 5, initial: 100ms }}, with: {{ url: \"http://{fake_addr}/bad\" }} }}\n  - {{ id: never, needs: [call], action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n"
        ))
        .await?;
    let before = fake.hits.load(Ordering::SeqCst);
    let (_, id) = stack.start_run("bad", json!({}), None).await?;
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(run["error"]["code"], "invalid_input");
    assert_eq!(run["error"]["step"], "call");
    assert_eq!(step(&run, "call")["attempts"], 1, "a 400 is not retried");
    assert_eq!(fake.hits.load(Ordering::SeqCst) - before, 1);
    Ok(())
}

#[tokio::test]
async fn the_same_idempotency_key_returns_the_same_run() -> Result<()> {
    let (fake_addr, _fake) = start_fake().await?;
    let stack = Stack::start(Backend::Sqlite).await?;
    stack
        .apply(&format!("name: once\nsteps:\n  - {{ id: a, action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n"))
        .await?;
    let (s1, first) = stack.start_run("once", json!({}), Some("order-42")).await?;
    let (s2, second) = stack.start_run("once", json!({}), Some("order-42")).await?;
    let (_, third) = stack.start_run("once", json!({}), Some("order-43")).await?;
    assert_eq!((s1, s2), (StatusCode::ACCEPTED, StatusCode::OK));
    assert_eq!(first, second);
    assert_ne!(first, third);
    Ok(())
}

#[tokio::test]
async fn cancelling_a_run_stops_it_and_late_results_change_nothing() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let stack = Stack::start(Backend::Sqlite).await?;
    stack
        .apply(&format!(
            "name: slow\nsteps:\n  - {{ id: wait, action: http.request, timeout: 1m, with: {{ url: \"http://{fake_addr}/slow\" }} }}\n  - {{ id: after, needs: [wait], action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n"
        ))
        .await?;
    let (_, id) = stack.start_run("slow", json!({}), None).await?;
    wait_until(
        || async {
            let run = stack.run(&id).await?;
            Ok::<bool, anyhow::Error>(step(&run, "wait")["status"] == "dispatched")
        },
        WAIT,
    )
    .await?;
    let r = stack
        .http
        .post(format!("{}/v1/runs/{id}/cancel", stack.api))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "cancelled");
    assert_eq!(step(&run, "wait")["status"], "cancelled");
    let again = stack
        .http
        .post(format!("{}/v1/runs/{id}/cancel", stack.api))
        .send()
        .await?;
    assert_eq!(again.status(), StatusCode::CONFLICT);
    assert_eq!(fake.hits.load(Ordering::SeqCst), 0, "`after` never ran");
    Ok(())
}

#[tokio::test]
async fn a_run_past_its_timeout_ends_timed_out() -> Result<()> {
    let (fake_addr, _fake) = start_fake().await?;
    let stack = Stack::start(Backend::Sqlite).await?;
    stack
        .apply(&format!(
            "name: late\ntimeout: 1s\nsteps:\n  - {{ id: wait, action: http.request, with: {{ url: \"http://{fake_addr}/slow\" }} }}\n"
        ))
        .await?;
    let (_, id) = stack.start_run("late", json!({}), None).await?;
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "timed_out", "{run:#}");
    assert_eq!(run["error"]["code"], "timeout");
    Ok(())
}

#[tokio::test]
async fn invalid_definitions_and_requests_get_clear_errors() -> Result<()> {
    let stack = Stack::start(Backend::Sqlite).await?;
    let r = stack
        .http
        .put(format!("{}/v1/workflows/broken", stack.api))
        .body("name: broken\nsteps:\n  - id: a\n    needs: [b]\n    action: http.request\n")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await?;
    assert_eq!(body["error"]["code"], "invalid_definition");
    assert_eq!(
        body["error"]["details"]["problems"][0],
        json!({ "path": "steps[0].needs[0]", "line": 4, "column": 13, "message": "refers to unknown step `b`" })
    );
    let r = stack
        .http
        .post(format!("{}/v1/workflows/missing/runs", stack.api))
        .json(&json!({}))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = stack
        .http
        .get(format!("{}/v1/runs/not-a-uuid", stack.api))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let r = stack
        .http
        .get(format!("{}/v1/runs?status=nope", stack.api))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let big = "x".repeat(2 * 1024 * 1024);
    let r = stack
        .http
        .put(format!("{}/v1/workflows/big", stack.api))
        .body(big)
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::PAYLOAD_TOO_LARGE);
    let body: Value = r.json().await?;
    assert_eq!(body["error"]["code"], "payload_too_large", "{body}");
    assert_eq!(body["error"]["details"]["limit_bytes"], 1024 * 1024);
    let r = stack
        .http
        .get(format!("{}/v1/runs?limit=lots", stack.api))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::BAD_REQUEST);
    let body: Value = r.json().await?;
    assert_eq!(body["error"]["code"], "invalid_input", "{body}");
    assert!(
        body["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("limit")),
        "{body}"
    );
    let r = stack
        .http
        .get(format!("{}/readyz", stack.api))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::OK);
    let r: Value = stack
        .http
        .get(format!("{}/openapi.json", stack.api))
        .send()
        .await?
        .json()
        .await?;
    assert!(r["paths"]["/v1/runs/{id}/cancel"].is_object());
    Ok(())
}

#[tokio::test]
async fn a_step_past_its_timeout_is_retried_then_fails_with_timeout() -> Result<()> {
    let (fake_addr, _fake) = start_fake().await?;
    let stack = Stack::start(Backend::Sqlite).await?;
    stack
        .apply(&format!(
            "name: stuck\nsteps:\n  - {{ id: wait, action: http.request, timeout: 500ms, retry: {{ max_attempts: 2, initial: 100ms }}, with: {{ url: \"http://{fake_addr}/slow\" }} }}\n"
        ))
        .await?;
    let (_, id) = stack.start_run("stuck", json!({}), None).await?;
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "failed", "{run:#}");
    assert_eq!(run["error"]["code"], "timeout");
    let wait = step(&run, "wait");
    assert_eq!(
        wait["attempts"], 2,
        "a timeout is retryable, up to max_attempts"
    );
    assert_eq!(wait["history"][1]["error"]["code"], "timeout");
    Ok(())
}
