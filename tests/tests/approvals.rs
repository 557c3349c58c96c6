//! Approval gates through a real engine, a real worker, a real nats-server and a real
//! database: a gated step is not dispatched until someone allowed approves it; exactly one of
//! two concurrent decisions wins; a rejection or a timeout fails the step with no call made;
//! a run that ended cannot be decided; decisions are in the audit ledger.

mod common;

use std::sync::atomic::Ordering;

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use common::{Stack, WAIT, authed_client, start_fake, step};
use reqwest::Client;
use serde_json::{Value, json};
use switchyard_tests::{Backend, wait_until};

async fn post(http: &Client, url: String, body: Value) -> Result<(StatusCode, Value)> {
    let r = http.post(url).json(&body).send().await?;
    let status = r.status();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// A principal with `role` and a client that acts as it.
async fn member(stack: &Stack, name: &str, role: &str) -> Result<Client> {
    let (status, body) = post(
        &stack.http,
        format!("{}/v1/principals", stack.api),
        json!({ "name": name, "role": role }),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status}: {body}");
    let (status, token) = post(
        &stack.http,
        format!("{}/v1/principals/{name}/tokens", stack.api),
        json!({}),
    )
    .await?;
    ensure!(status == StatusCode::CREATED, "{status}: {token}");
    authed_client(token["token"].as_str().context("token")?)
}

/// A gate any operator (or author, or admin) may decide.
const OPERATORS: &str = "{ approvers: [\"role:operator\"] }";

fn gated(name: &str, fake: std::net::SocketAddr, gate: &str) -> String {
    format!(
        "name: {name}\nsteps:\n  - {{ id: first, action: http.request, with: {{ url: \"http://{fake}/ok\" }} }}\n  - {{ id: deploy, needs: [first], action: http.request, approval: {gate}, with: {{ url: \"http://{fake}/ok?target=prod\" }} }}\n"
    )
}

/// Starts a run and waits until its `deploy` step is held at the gate.
async fn run_to_gate(stack: &Stack, workflow: &str) -> Result<String> {
    let (_, id) = stack.start_run(workflow, json!({}), None).await?;
    wait_until(
        || async {
            let run = stack.run(&id).await?;
            Ok::<bool, anyhow::Error>(step(&run, "deploy")["status"] == "waiting_approval")
        },
        WAIT,
    )
    .await
    .context("the step reached its gate")?;
    Ok(id)
}

fn decide_url(stack: &Stack, run: &str, verb: &str) -> String {
    format!("{}/v1/runs/{run}/steps/deploy/{verb}", stack.api)
}

#[tokio::test]
async fn a_gated_step_waits_for_an_approver_then_runs() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let stack = Stack::start(Backend::Postgres).await?;
    stack
        .apply(&gated(
            "release",
            fake_addr,
            "{ approvers: [\"role:operator\"] }",
        ))
        .await?;
    let operator = member(&stack, "olivia", "operator").await?;
    let viewer = member(&stack, "victor", "viewer").await?;
    let id = run_to_gate(&stack, "release").await?;
    assert_eq!(fake.hits.load(Ordering::SeqCst), 1, "only `first` ran");
    let run = stack.run(&id).await?;
    assert_eq!(run["status"], "running");

    // The operator sees the gate with what the step will do; the viewer does not.
    let listed: Value = operator
        .get(format!("{}/v1/approvals", stack.api))
        .send()
        .await?
        .json()
        .await?;
    let gates = listed["approvals"].as_array().cloned().unwrap_or_default();
    assert_eq!(gates.len(), 1, "{listed}");
    assert_eq!(gates[0]["step_id"], "deploy");
    assert_eq!(gates[0]["action"], "http.request");
    assert!(
        gates[0]["input"]["url"]
            .as_str()
            .is_some_and(|u| u.ends_with("target=prod")),
        "{listed}"
    );
    let listed: Value = viewer
        .get(format!("{}/v1/approvals", stack.api))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(listed["approvals"], json!([]));
    let (status, _) = post(&viewer, decide_url(&stack, &id, "approve"), json!({})).await?;
    assert_eq!(status, StatusCode::FORBIDDEN);

    let (status, decided) = post(
        &operator,
        decide_url(&stack, &id, "approve"),
        json!({ "comment": "change window open" }),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{decided}");
    assert_eq!(decided["status"], "approved");
    assert_eq!(decided["decided_by"], "olivia");
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(fake.hits.load(Ordering::SeqCst), 2);

    // Decided once: a second decision is a conflict.
    let (status, again) = post(&operator, decide_url(&stack, &id, "reject"), json!({})).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    // The decision is in the ledger, with who made it.
    let audit: Value = stack
        .http
        .get(format!("{}/v1/audit?run={id}&principal=olivia", stack.api))
        .send()
        .await?
        .json()
        .await?;
    let records = audit["records"].as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 1, "{audit}");
    assert_eq!(records[0]["kind"], "approval.approved");
    assert_eq!(records[0]["details"]["comment"], "change window open");
    Ok(())
}

#[tokio::test]
async fn of_two_concurrent_decisions_exactly_one_wins() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let stack = Stack::start(Backend::Postgres).await?;
    stack.apply(&gated("race", fake_addr, OPERATORS)).await?;
    let id = run_to_gate(&stack, "race").await?;
    let (a, b) = tokio::join!(
        post(&stack.http, decide_url(&stack, &id, "approve"), json!({})),
        post(&stack.http, decide_url(&stack, &id, "reject"), json!({})),
    );
    let mut statuses = [a?.0, b?.0];
    statuses.sort();
    assert_eq!(statuses, [StatusCode::OK, StatusCode::CONFLICT]);
    let run = stack.finished(&id, WAIT).await?;
    let deploy = step(&run, "deploy");
    match deploy["status"].as_str() {
        Some("succeeded") => assert_eq!(fake.hits.load(Ordering::SeqCst), 2),
        Some("failed") => {
            assert_eq!(deploy["error"]["code"], "approval_rejected");
            assert_eq!(
                fake.hits.load(Ordering::SeqCst),
                1,
                "no call after a rejection"
            );
        }
        other => panic!("deploy ended {other:?}: {run:#}"),
    }
    Ok(())
}

#[tokio::test]
async fn rejection_timeout_and_cancel_each_end_the_gate() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let stack = Stack::start(Backend::Sqlite).await?;

    // Rejected: the step fails and so does the run, with no call.
    stack
        .apply(&gated("rejected", fake_addr, OPERATORS))
        .await?;
    let id = run_to_gate(&stack, "rejected").await?;
    let (status, _) = post(
        &stack.http,
        decide_url(&stack, &id, "reject"),
        json!({ "comment": "not today" }),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "failed");
    assert_eq!(step(&run, "deploy")["error"]["code"], "approval_rejected");
    assert!(
        step(&run, "deploy")["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("not today")),
        "{run:#}"
    );
    assert_eq!(fake.hits.load(Ordering::SeqCst), 1);

    // Nobody decides within the timeout.
    stack
        .apply(&gated(
            "unattended",
            fake_addr,
            "{ approvers: [\"role:operator\"], timeout: 1s }",
        ))
        .await?;
    let id = run_to_gate(&stack, "unattended").await?;
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "failed");
    assert_eq!(step(&run, "deploy")["error"]["code"], "approval_timeout");
    assert_eq!(fake.hits.load(Ordering::SeqCst), 2, "only `first` again");
    let (status, _) = post(&stack.http, decide_url(&stack, &id, "approve"), json!({})).await?;
    assert_eq!(status, StatusCode::CONFLICT, "a timed-out gate is closed");
    let audit: Value = stack
        .http
        .get(format!("{}/v1/audit?run={id}&principal=system", stack.api))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(
        audit["records"][0]["kind"], "approval.expired",
        "the timeout is in the ledger: {audit}"
    );

    // Cancelled while waiting: the gate can no longer be decided.
    stack
        .apply(&gated("cancelled", fake_addr, OPERATORS))
        .await?;
    let id = run_to_gate(&stack, "cancelled").await?;
    let r = stack
        .http
        .post(format!("{}/v1/runs/{id}/cancel", stack.api))
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::ACCEPTED);
    let (status, body) = post(&stack.http, decide_url(&stack, &id, "approve"), json!({})).await?;
    assert_eq!(status, StatusCode::CONFLICT, "{body}");
    let run = stack.run(&id).await?;
    assert_eq!(step(&run, "deploy")["status"], "cancelled");
    assert_eq!(fake.hits.load(Ordering::SeqCst), 3);

    // A gate naming one user admits only that user.
    stack
        .apply(&gated(
            "named",
            fake_addr,
            "{ approvers: [\"user:grace\"] }",
        ))
        .await?;
    let ada = member(&stack, "ada", "admin").await?;
    let grace = member(&stack, "grace", "operator").await?;
    let id = run_to_gate(&stack, "named").await?;
    let (status, body) = post(&ada, decide_url(&stack, &id, "approve"), json!({})).await?;
    assert_eq!(status, StatusCode::FORBIDDEN, "{body}");
    let (status, _) = post(&grace, decide_url(&stack, &id, "approve"), json!({})).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stack.finished(&id, WAIT).await?["status"], "succeeded");
    Ok(())
}

#[tokio::test]
async fn the_workspace_policy_can_send_any_action_to_approval() -> Result<()> {
    let (fake_addr, fake) = start_fake().await?;
    let stack = Stack::start(Backend::Sqlite).await?;
    let put_policy = |body: Value| {
        let stack = &stack;
        async move {
            let r = stack
                .http
                .put(format!("{}/v1/policy", stack.api))
                .json(&body)
                .send()
                .await?;
            Ok::<StatusCode, anyhow::Error>(r.status())
        }
    };
    assert_eq!(
        put_policy(json!({ "approvals": { "actions": ["http.request"] } })).await?,
        StatusCode::OK
    );
    stack
        .apply(&format!(
            "name: plain\nsteps:\n  - {{ id: deploy, action: http.request, with: {{ url: \"http://{fake_addr}/ok\" }} }}\n"
        ))
        .await?;
    // The step asks for no approval; the policy gates it anyway.
    let id = run_to_gate(&stack, "plain").await?;
    assert_eq!(fake.hits.load(Ordering::SeqCst), 0);
    let (status, _) = post(&stack.http, decide_url(&stack, &id, "approve"), json!({})).await?;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(stack.finished(&id, WAIT).await?["status"], "succeeded");
    assert_eq!(fake.hits.load(Ordering::SeqCst), 1);
    // Lifted: the next run goes straight through.
    assert_eq!(put_policy(json!({})).await?, StatusCode::OK);
    let (_, id) = stack.start_run("plain", json!({}), None).await?;
    assert_eq!(stack.finished(&id, WAIT).await?["status"], "succeeded");
    assert_eq!(fake.hits.load(Ordering::SeqCst), 2);
    Ok(())
}
