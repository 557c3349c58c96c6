//! Webhooks and events start runs through a real engine, a real nats-server and a real
//! database (SQLite and PostgreSQL): signed deliveries are verified against secrets stored
//! encrypted, every rejection answers with its status and is counted, redeliveries and
//! duplicate events never start a second run, and chains of event-triggered runs stop at the
//! depth limit.

mod common;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use common::{Stack, WAIT};
use futures::StreamExt;
use hmac::{KeyInit, Mac};
use schemas::db::entities::{RunStatus, run, secret};
use sea_orm::{ColumnTrait, EntityTrait, PaginatorTrait, QueryFilter};
use serde_json::{Value, json};
use switchyard_tests::{Backend, wait_until};

const SECRET: &str = "It's a Secret to Everybody";

fn github_signature(secret: &str, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn stripe_signature(secret: &str, t: u64, body: &[u8]) -> String {
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key");
    mac.update(format!("{t}.").as_bytes());
    mac.update(body);
    format!("t={t},v1={}", hex::encode(mac.finalize().into_bytes()))
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// A workflow that finishes inside the engine (its only step is skipped), so these tests
/// need no workers.
fn hooked(name: &str, trigger: &str) -> String {
    format!(
        "name: {name}\ntriggers:\n  - webhook: {trigger}\nsteps:\n  - {{ id: noop, if: \"{{{{ false }}}}\", action: http.request, with: {{ url: \"http://127.0.0.1:9/\" }} }}\noutputs: {{ user: \"{{{{ trigger.body.user }}}}\" }}\n"
    )
}

async fn put_secret(stack: &Stack, name: &str, value: &str) -> Result<(StatusCode, Value)> {
    let r = stack
        .client()
        .http
        .put(format!("{}/v1/secrets/{name}", stack.client().url))
        .json(&json!({ "value": value }))
        .send()
        .await?;
    Ok((r.status(), r.json().await?))
}

struct Delivery {
    status: StatusCode,
    retry_after: Option<String>,
    body: Value,
}

async fn deliver(
    stack: &Stack,
    path: &str,
    headers: &[(&str, &str)],
    body: impl Into<reqwest::Body>,
) -> Result<Delivery> {
    let mut req = stack
        .client()
        .http
        .post(format!("{}/v1/hooks/{path}", stack.client().url))
        .body(body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let r = req.send().await?;
    let status = r.status();
    let retry_after = r
        .headers()
        .get("retry-after")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    let body = r.json().await.unwrap_or(Value::Null);
    Ok(Delivery {
        status,
        retry_after,
        body,
    })
}

async fn runs_of(stack: &Stack, workflow: &str) -> Result<u64> {
    let conn = stack.db.connect().await?;
    Ok(run::Entity::find()
        .filter(run::Column::WorkflowName.eq(workflow))
        .count(&conn)
        .await?)
}

async fn signed_github_delivery_starts_one_run(backend: Backend) -> Result<()> {
    let stack = Stack::start_with_workers(backend, 0).await?;
    let (status, stored) = put_secret(&stack, "gh-secret", SECRET).await?;
    assert_eq!(status, StatusCode::CREATED, "{stored}");
    assert!(
        !stored.to_string().contains(SECRET),
        "the secret is never returned: {stored}"
    );
    stack
        .apply(&hooked(
            "hooked",
            "{ id: gh, signature: { scheme: github, secret: gh-secret } }",
        ))
        .await?;

    let body = br#"{"user":"ada","action":"opened"}"#;
    let sig = github_signature(SECRET, body);
    let headers = [
        ("x-hub-signature-256", sig.as_str()),
        ("x-github-delivery", "72d3162e-cc78-11e3-81ab-4c9367dc0958"),
        ("x-github-event", "issues"),
        ("content-type", "application/json"),
    ];
    let first = deliver(&stack, "hooked/gh?source=test", &headers, body.to_vec()).await?;
    assert_eq!(first.status, StatusCode::ACCEPTED, "{}", first.body);
    let run_id = first.body["run_id"].as_str().context("run_id")?.to_owned();

    let run = stack.finished(&run_id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(run["outputs"]["user"], "ada");
    let trigger = &run["trigger"];
    assert_eq!(trigger["kind"], "webhook");
    assert_eq!(trigger["id"], "gh");
    assert_eq!(trigger["body"]["action"], "opened");
    assert_eq!(trigger["query"]["source"], "test");
    assert_eq!(trigger["headers"]["x-github-event"], "issues");
    assert!(
        trigger["headers"].get("x-hub-signature-256").is_none(),
        "signature headers never reach the run: {trigger:#}"
    );

    // The provider redelivers: the same run answers, with 200.
    let again = deliver(&stack, "hooked/gh", &headers, body.to_vec()).await?;
    assert_eq!(again.status, StatusCode::OK, "{}", again.body);
    assert_eq!(again.body["run_id"], run_id.as_str());
    assert_eq!(again.body["duplicate"], true);
    assert_eq!(runs_of(&stack, "hooked").await?, 1);

    // Stored encrypted: the row does not hold the plaintext, and listing shows no value.
    let conn = stack.db.connect().await?;
    let row = secret::Entity::find()
        .one(&conn)
        .await?
        .context("secret row")?;
    ensure!(
        !row.ciphertext
            .windows(SECRET.len())
            .any(|w| w == SECRET.as_bytes()),
        "the stored secret is not plaintext"
    );
    let list: Value = stack
        .client()
        .http
        .get(format!("{}/v1/secrets", stack.client().url))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(list["secrets"][0]["name"], "gh-secret");
    assert!(!list.to_string().contains(SECRET), "{list}");
    Ok(())
}

#[tokio::test]
async fn signed_github_delivery_starts_one_run_on_sqlite() -> Result<()> {
    signed_github_delivery_starts_one_run(Backend::Sqlite).await
}

#[tokio::test]
async fn signed_github_delivery_starts_one_run_on_postgres() -> Result<()> {
    signed_github_delivery_starts_one_run(Backend::Postgres).await
}

#[tokio::test]
async fn every_rejection_has_its_status_and_its_counter() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Sqlite, 0).await?;
    put_secret(&stack, "gh-secret", SECRET).await?;
    put_secret(&stack, "stripe-secret", "whsec_test").await?;
    stack
        .apply(&hooked(
            "guarded",
            "{ id: gh, signature: { scheme: github, secret: gh-secret }, max_body_bytes: 1024 }",
        ))
        .await?;
    stack
        .apply(&hooked(
            "paid",
            "{ id: stripe, signature: { scheme: stripe, secret: stripe-secret } }",
        ))
        .await?;
    stack
        .apply(&hooked(
            "off",
            "{ id: h, signature: { scheme: none }, enabled: false }",
        ))
        .await?;
    stack
        .apply(&hooked(
            "limited",
            "{ id: h, signature: { scheme: none }, rate_limit: { requests: 2, per: 1m } }",
        ))
        .await?;
    stack
        .apply(&hooked(
            "unsigned-secret",
            "{ id: h, signature: { scheme: github, secret: never-stored } }",
        ))
        .await?;

    let body = br#"{"user":"ada"}"#.to_vec();
    let good = github_signature(SECRET, &body);
    let wrong = github_signature("not the secret", &body);

    // Missing, malformed, wrong secret, tampered body.
    let r = deliver(&stack, "guarded/gh", &[], body.clone()).await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert_eq!(r.body["error"]["code"], "unauthorized");
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("x-hub-signature-256"),
        "{}",
        r.body
    );
    let r = deliver(
        &stack,
        "guarded/gh",
        &[("x-hub-signature-256", "md5=abc")],
        body.clone(),
    )
    .await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = deliver(
        &stack,
        "guarded/gh",
        &[("x-hub-signature-256", &wrong)],
        body.clone(),
    )
    .await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = deliver(
        &stack,
        "guarded/gh",
        &[("x-hub-signature-256", &good)],
        br#"{"user":"eve"}"#.to_vec(),
    )
    .await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "tampered body");

    // A stale Stripe delivery, correctly signed.
    let t = unix_now() - 600;
    let stale = stripe_signature("whsec_test", t, &body);
    let r = deliver(
        &stack,
        "paid/stripe",
        &[("stripe-signature", &stale)],
        body.clone(),
    )
    .await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("tolerance"),
        "{}",
        r.body
    );
    // A fresh one is accepted, and its event id makes it idempotent.
    let stripe_body = br#"{"id":"evt_1","type":"charge.succeeded"}"#.to_vec();
    let fresh = stripe_signature("whsec_test", unix_now(), &stripe_body);
    let r = deliver(
        &stack,
        "paid/stripe",
        &[("stripe-signature", &fresh)],
        stripe_body.clone(),
    )
    .await?;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    let r = deliver(
        &stack,
        "paid/stripe",
        &[("stripe-signature", &fresh)],
        stripe_body,
    )
    .await?;
    assert_eq!(r.status, StatusCode::OK, "Stripe's event id deduplicates");

    // Unknown workflow, unknown trigger, disabled trigger.
    assert_eq!(
        deliver(&stack, "nope/gh", &[], body.clone()).await?.status,
        StatusCode::NOT_FOUND
    );
    assert_eq!(
        deliver(&stack, "guarded/nope", &[], body.clone())
            .await?
            .status,
        StatusCode::NOT_FOUND
    );
    let r = deliver(&stack, "off/h", &[], body.clone()).await?;
    assert_eq!(r.status, StatusCode::CONFLICT, "{}", r.body);

    // A secret the trigger names that was never stored.
    let r = deliver(
        &stack,
        "unsigned-secret/h",
        &[("x-hub-signature-256", &good)],
        body.clone(),
    )
    .await?;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Over the trigger's limit: declared, and streamed without a length.
    let big = vec![b'x'; 2048];
    let r = deliver(
        &stack,
        "guarded/gh",
        &[("x-hub-signature-256", &github_signature(SECRET, &big))],
        big.clone(),
    )
    .await?;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(r.body["error"]["details"]["limit_bytes"], 1024);
    let chunks =
        futures::stream::iter((0..8).map(|_| Ok::<_, std::io::Error>(bytes_of(vec![b'y'; 512]))));
    let r = deliver(
        &stack,
        "guarded/gh",
        &[("x-hub-signature-256", &good)],
        reqwest::Body::wrap_stream(chunks),
    )
    .await?;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE, "streamed body");

    // Rate limited: two a minute.
    for _ in 0..2 {
        let r = deliver(&stack, "limited/h", &[], body.clone()).await?;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    }
    let r = deliver(&stack, "limited/h", &[], body.clone()).await?;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    let wait: u64 = r.retry_after.as_deref().context("Retry-After")?.parse()?;
    assert!((1..=30).contains(&wait), "Retry-After {wait}");

    // Each rejection was counted by reason; no run was started by any of them.
    let metrics = stack
        .client()
        .http
        .get(format!("{}/metrics", stack.client().url))
        .send()
        .await?
        .text()
        .await?;
    for (reason, n) in [
        ("bad_signature", 4),
        ("stale", 1),
        ("not_found", 2),
        ("disabled", 1),
        ("secret_unavailable", 1),
        ("too_large", 2),
        ("rate_limited", 1),
    ] {
        let line = format!("switchyard_webhook_rejections_total{{reason=\"{reason}\"}} {n}");
        assert!(metrics.contains(&line), "{line} in\n{metrics}");
    }
    assert!(metrics.contains("switchyard_webhook_deliveries_total{outcome=\"accepted\"} 3"));
    assert_eq!(runs_of(&stack, "guarded").await?, 0);
    assert_eq!(runs_of(&stack, "paid").await?, 1);
    Ok(())
}

fn bytes_of(v: Vec<u8>) -> axum::body::Bytes {
    axum::body::Bytes::from(v)
}

#[tokio::test]
async fn a_body_over_the_api_limit_is_accepted_when_the_trigger_allows_it() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Sqlite, 0).await?;
    stack
        .apply(&hooked(
            "bulk",
            "{ id: h, signature: { scheme: none }, max_body_bytes: 4194304 }",
        ))
        .await?;
    let body = format!("{{\"user\":\"ada\",\"pad\":\"{}\"}}", "z".repeat(2 << 20));
    let r = deliver(&stack, "bulk/h", &[], body).await?;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    Ok(())
}

async fn concurrent_redeliveries_start_one_run(backend: Backend) -> Result<()> {
    let stack = Stack::start_with_workers(backend, 0).await?;
    put_secret(&stack, "gh-secret", SECRET).await?;
    stack
        .apply(&hooked(
            "once",
            "{ id: gh, signature: { scheme: github, secret: gh-secret } }",
        ))
        .await?;
    let body = br#"{"user":"ada"}"#.to_vec();
    let sig = github_signature(SECRET, &body);
    let headers = [
        ("x-hub-signature-256", sig.as_str()),
        ("x-github-delivery", "delivery-1"),
    ];
    let replies: Vec<Result<Delivery>> = futures::stream::iter(0..100)
        .map(|_| deliver(&stack, "once/gh", &headers, body.clone()))
        .buffer_unordered(100)
        .collect()
        .await;
    let mut created = 0;
    let mut ids = std::collections::BTreeSet::new();
    for r in replies {
        let r = r?;
        match r.status {
            StatusCode::ACCEPTED => created += 1,
            StatusCode::OK => {}
            other => anyhow::bail!("unexpected {other}: {}", r.body),
        }
        ids.insert(r.body["run_id"].as_str().unwrap_or_default().to_owned());
    }
    assert_eq!(created, 1, "exactly one delivery created the run");
    assert_eq!(ids.len(), 1, "every reply names the same run: {ids:?}");
    assert_eq!(runs_of(&stack, "once").await?, 1);
    Ok(())
}

#[tokio::test]
async fn concurrent_redeliveries_start_one_run_on_sqlite() -> Result<()> {
    concurrent_redeliveries_start_one_run(Backend::Sqlite).await
}

#[tokio::test]
async fn concurrent_redeliveries_start_one_run_on_postgres() -> Result<()> {
    concurrent_redeliveries_start_one_run(Backend::Postgres).await
}

async fn a_burst_of_5000_webhooks_starts_5000_runs(backend: Backend) -> Result<()> {
    {
        let stack = Stack::start_with_workers(backend, 0).await?;
        stack
            .apply(&hooked("burst", "{ id: h, signature: { scheme: none } }"))
            .await?;
        const N: usize = 5_000;
        let replies: Vec<Result<Delivery>> = futures::stream::iter(0..N)
            .map(|i| {
                let key = format!("delivery-{i}");
                let stack = &stack;
                async move {
                    deliver(
                        stack,
                        "burst/h",
                        &[("idempotency-key", key.as_str())],
                        format!("{{\"user\":\"u{i}\"}}"),
                    )
                    .await
                }
            })
            .buffer_unordered(64)
            .collect()
            .await;
        let mut ids = std::collections::BTreeSet::new();
        for r in replies {
            let r = r?;
            ensure!(r.status == StatusCode::ACCEPTED, "{}: {}", r.status, r.body);
            ids.insert(r.body["run_id"].as_str().unwrap_or_default().to_owned());
        }
        assert_eq!(ids.len(), N, "every delivery got its own run");
        let conn = stack.db.connect().await?;
        assert_eq!(runs_of(&stack, "burst").await?, N as u64);
        wait_until(
            || {
                let conn = conn.clone();
                async move {
                    let done = run::Entity::find()
                        .filter(run::Column::WorkflowName.eq("burst"))
                        .filter(run::Column::Status.eq(RunStatus::Succeeded))
                        .count(&conn)
                        .await?;
                    Ok::<bool, anyhow::Error>(done == N as u64)
                }
            },
            Duration::from_secs(120),
        )
        .await
        .context("every accepted delivery's run finished")?;
        Ok(())
    }
}

#[tokio::test]
async fn a_burst_of_5000_webhooks_starts_5000_runs_on_sqlite() -> Result<()> {
    a_burst_of_5000_webhooks_starts_5000_runs(Backend::Sqlite).await
}

#[tokio::test]
async fn a_burst_of_5000_webhooks_starts_5000_runs_on_postgres() -> Result<()> {
    a_burst_of_5000_webhooks_starts_5000_runs(Backend::Postgres).await
}

async fn post_event(stack: &Stack, name: &str, body: Value) -> Result<(StatusCode, Value)> {
    let r = stack
        .client()
        .http
        .post(format!("{}/v1/events/{name}", stack.client().url))
        .json(&body)
        .send()
        .await?;
    Ok((r.status(), r.json().await?))
}

/// Runs of `workflow`, once there are `n` of them.
async fn wait_for_runs(stack: &Stack, workflow: &str, n: u64) -> Result<Vec<run::Model>> {
    let conn = stack.db.connect().await?;
    wait_until(
        || async { Ok::<bool, anyhow::Error>(runs_of(stack, workflow).await? >= n) },
        WAIT,
    )
    .await
    .with_context(|| format!("{n} run(s) of {workflow}"))?;
    Ok(run::Entity::find()
        .filter(run::Column::WorkflowName.eq(workflow))
        .all(&conn)
        .await?)
}

async fn an_emitted_event_starts_the_matching_workflow(backend: Backend) -> Result<()> {
    let stack = Stack::start_with_workers(backend, 0).await?;
    stack
        .apply(
            "name: producer\nsteps:\n  - { id: announce, emit: { event: lead.created, data: { email: \"{{ inputs.email }}\", score: \"{{ inputs.score }}\" } } }\ninputs:\n  email: { type: string }\n  score: { type: integer }\n",
        )
        .await?;
    stack
        .apply(
            "name: consumer\ntriggers:\n  - event: { name: lead.created, if: \"{{ event.data.score > 5 }}\" }\nsteps:\n  - { id: noop, if: \"{{ false }}\", action: http.request, with: { url: \"http://127.0.0.1:9/\" } }\noutputs: { email: \"{{ event.data.email }}\" }\n",
        )
        .await?;
    stack
        .apply(
            "name: bystander\ntriggers:\n  - event: { name: lead.deleted }\nsteps:\n  - { id: noop, if: \"{{ false }}\", action: http.request, with: { url: \"http://127.0.0.1:9/\" } }\n",
        )
        .await?;

    let (_, cold) = stack
        .start_run(
            "producer",
            json!({ "email": "cold@example.com", "score": 1 }),
            None,
        )
        .await?;
    let (_, hot) = stack
        .start_run(
            "producer",
            json!({ "email": "hot@example.com", "score": 9 }),
            None,
        )
        .await?;
    for id in [&cold, &hot] {
        let run = stack.finished(id, WAIT).await?;
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    let runs = wait_for_runs(&stack, "consumer", 1).await?;
    assert_eq!(
        runs.len(),
        1,
        "only the event whose `if` holds starts a run"
    );
    let run = stack.finished(&runs[0].id.to_string(), WAIT).await?;
    assert_eq!(run["outputs"]["email"], "hot@example.com");
    let trigger = &run["trigger"];
    assert_eq!(trigger["kind"], "event");
    assert_eq!(trigger["depth"], 1);
    assert_eq!(trigger["event"]["name"], "lead.created");
    assert_eq!(
        trigger["event"]["source"],
        json!({ "kind": "step", "run_id": hot, "step_id": "announce" }),
        "provenance names the emitting run and step"
    );
    assert_eq!(runs_of(&stack, "bystander").await?, 0);

    // Through the API, with an id: the second publication of that id is a duplicate.
    let (status, body) = post_event(
        &stack,
        "lead.created",
        json!({ "id": "crm-42", "data": { "email": "api@example.com", "score": 7 } }),
    )
    .await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");
    let (status, body) = post_event(
        &stack,
        "lead.created",
        json!({ "id": "crm-42", "data": { "email": "api@example.com", "score": 7 } }),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["duplicate"], true);
    let runs = wait_for_runs(&stack, "consumer", 2).await?;
    let api_run = runs
        .iter()
        .find(|r| r.trigger["event"]["id"] == "crm-42")
        .context("the API event's run")?;
    assert_eq!(api_run.trigger["event"]["source"]["kind"], "api");
    // Give a wrongly started second run every chance to appear before counting.
    let (_, probe) = stack
        .start_run(
            "producer",
            json!({ "email": "late@example.com", "score": 8 }),
            None,
        )
        .await?;
    stack.finished(&probe, WAIT).await?;
    wait_for_runs(&stack, "consumer", 3).await?;
    assert_eq!(runs_of(&stack, "consumer").await?, 3);

    // Bad input is refused with the reason.
    let (status, body) = post_event(&stack, "Bad Name", json!({})).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    let (status, body) = post_event(&stack, "lead.created", json!({ "nope": 1 })).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    Ok(())
}

#[tokio::test]
async fn an_emitted_event_starts_the_matching_workflow_on_sqlite() -> Result<()> {
    an_emitted_event_starts_the_matching_workflow(Backend::Sqlite).await
}

#[tokio::test]
async fn an_emitted_event_starts_the_matching_workflow_on_postgres() -> Result<()> {
    an_emitted_event_starts_the_matching_workflow(Backend::Postgres).await
}

#[tokio::test]
async fn workflows_that_trigger_each_other_stop_at_the_depth_limit() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Postgres, 0).await?;
    stack
        .apply(
            "name: ping\ntriggers:\n  - event: { name: pong }\nsteps:\n  - { id: send, emit: { event: ping, data: {} } }\n",
        )
        .await?;
    stack
        .apply(
            "name: pong\ntriggers:\n  - event: { name: ping }\nsteps:\n  - { id: send, emit: { event: pong, data: {} } }\n",
        )
        .await?;
    let (status, body) = post_event(&stack, "ping", json!({ "data": {} })).await?;
    assert_eq!(status, StatusCode::ACCEPTED, "{body}");

    // Depths 1..=8: pong, ping, pong, … and the eighth run's emit is refused.
    let limit = u64::from(schemas::envelope::MAX_EVENT_DEPTH);
    let conn = stack.db.connect().await?;
    wait_until(
        || {
            let conn = conn.clone();
            async move {
                let failed = run::Entity::find()
                    .filter(run::Column::Status.eq(RunStatus::Failed))
                    .count(&conn)
                    .await?;
                Ok::<bool, anyhow::Error>(failed == 1)
            }
        },
        WAIT,
    )
    .await
    .context("the chain ends with a failed run")?;
    let all = run::Entity::find().all(&conn).await?;
    assert_eq!(all.len() as u64, limit, "one run per depth: {all:#?}");
    let failed = all
        .iter()
        .find(|r| r.status == RunStatus::Failed)
        .context("failed run")?;
    assert_eq!(failed.trigger["depth"], limit);
    let error = failed.error.clone().unwrap_or_default();
    assert_eq!(error["code"], "event_depth_exceeded", "{error}");
    assert!(
        error["message"]
            .as_str()
            .unwrap_or_default()
            .contains("loop"),
        "{error}"
    );
    let mut depths: Vec<u64> = all
        .iter()
        .filter_map(|r| r.trigger["depth"].as_u64())
        .collect();
    depths.sort_unstable();
    assert_eq!(depths, (1..=limit).collect::<Vec<_>>());
    Ok(())
}

#[tokio::test]
async fn a_secret_rotates_without_a_rejected_delivery() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Sqlite, 0).await?;
    stack
        .apply(&hooked(
            "rotating",
            "{ id: gh, signature: { scheme: github, secrets: [gh-old, gh-new] } }",
        ))
        .await?;
    let body = br#"{"user":"ada"}"#.to_vec();
    let signed = |secret: &str, delivery: &str| {
        let sig = github_signature(secret, &body);
        let stack = &stack;
        let body = body.clone();
        let delivery = delivery.to_owned();
        async move {
            let headers = [
                ("x-hub-signature-256", sig.as_str()),
                ("x-github-delivery", delivery.as_str()),
            ];
            deliver(stack, "rotating/gh", &headers, body).await
        }
    };
    // Only the old secret exists yet.
    put_secret(&stack, "gh-old", "old secret").await?;
    assert_eq!(
        signed("old secret", "d1").await?.status,
        StatusCode::ACCEPTED
    );
    // The new one is added: both are accepted.
    put_secret(&stack, "gh-new", "new secret").await?;
    assert_eq!(
        signed("new secret", "d2").await?.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        signed("old secret", "d3").await?.status,
        StatusCode::ACCEPTED
    );
    // The old one is deleted before the definition stops naming it: the new one still works.
    let r = stack
        .client()
        .http
        .delete(format!("{}/v1/secrets/gh-old", stack.api))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::NO_CONTENT);
    assert_eq!(
        signed("new secret", "d4").await?.status,
        StatusCode::ACCEPTED
    );
    assert_eq!(
        signed("old secret", "d5").await?.status,
        StatusCode::UNAUTHORIZED
    );
    // Replacing a secret's value takes effect at once on this engine.
    put_secret(&stack, "gh-new", "newer secret").await?;
    assert_eq!(
        signed("new secret", "d6").await?.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        signed("newer secret", "d7").await?.status,
        StatusCode::ACCEPTED
    );
    // Names follow the definition's rules.
    let (status, body) = put_secret(&stack, "Not.Valid", "x").await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    Ok(())
}

#[tokio::test]
async fn a_callers_idempotency_key_cannot_take_a_triggers_slot() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Sqlite, 0).await?;
    stack
        .apply(&hooked("shared", "{ id: h, signature: { scheme: none } }"))
        .await?;
    // A caller of the runs API picks the key a webhook delivery would get.
    let (status, api_run) = stack
        .start_run("shared", json!({}), Some("webhook:h:d-1"))
        .await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let r = deliver(&stack, "shared/h", &[("idempotency-key", "d-1")], "{}").await?;
    assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    assert_ne!(r.body["run_id"], api_run.as_str());
    // An event id belongs to one event name.
    let (status, _) = post_event(&stack, "a.b", json!({ "id": "e-1" })).await?;
    assert_eq!(status, StatusCode::ACCEPTED);
    let (status, body) = post_event(&stack, "c.d", json!({ "id": "e-1" })).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST, "{body}");
    Ok(())
}

#[tokio::test]
async fn the_workspace_limit_holds_across_its_triggers() -> Result<()> {
    let stack = Stack::start_configured(Backend::Sqlite, 0, |config| {
        config.webhook_workspace_rate = Some(engine::triggers::limit::Rate {
            requests: 3,
            per: Duration::from_secs(60),
        });
    })
    .await?;
    for name in ["first", "second"] {
        stack
            .apply(&hooked(name, "{ id: h, signature: { scheme: none } }"))
            .await?;
    }
    for path in ["first/h", "second/h", "first/h"] {
        let r = deliver(&stack, path, &[], "{}").await?;
        assert_eq!(r.status, StatusCode::ACCEPTED, "{}", r.body);
    }
    let r = deliver(&stack, "second/h", &[], "{}").await?;
    assert_eq!(r.status, StatusCode::TOO_MANY_REQUESTS, "{}", r.body);
    assert!(
        r.body["error"]["message"]
            .as_str()
            .unwrap_or_default()
            .contains("this workspace"),
        "{}",
        r.body
    );
    let wait: u64 = r.retry_after.as_deref().context("Retry-After")?.parse()?;
    assert!((1..=20).contains(&wait), "Retry-After {wait}");
    assert_eq!(runs_of(&stack, "second").await?, 1);
    Ok(())
}
