//! The audit ledger through a real engine, real workers, a real nats-server and a real
//! database: one record per call attempt (counted at the fake API), redacted inputs, admin
//! changes recorded with their principal, one unbroken chain even with two engines recording
//! at once, and an edited or removed record found by verification.

mod common;

use std::sync::atomic::Ordering;

use anyhow::{Context, Result, ensure};
use axum::http::StatusCode;
use common::{Api, Stack, WAIT, spawn_engine_process, start_fake};
use schemas::db::DEFAULT_WORKSPACE_ID;
use schemas::db::entities::audit_record;
use sea_orm::{
    ActiveModelTrait, ColumnTrait, EntityTrait, IntoActiveModel, QueryFilter, QueryOrder, Set,
};
use serde_json::{Value, json};
use switchyard_tests::Backend;

async fn get(stack: &Stack, path: &str) -> Result<Value> {
    let r = stack
        .http
        .get(format!("{}{path}", stack.api))
        .send()
        .await?;
    let status = r.status();
    let body: Value = r.json().await?;
    ensure!(status == StatusCode::OK, "{path}: {status}: {body}");
    Ok(body)
}

async fn calls_of(stack: &Stack, run: &str) -> Result<Vec<Value>> {
    let page = get(stack, &format!("/v1/audit?run={run}&limit=500")).await?;
    Ok(page["records"].as_array().cloned().unwrap_or_default())
}

#[tokio::test]
async fn every_call_attempt_is_one_redacted_record_in_an_intact_chain() -> Result<()> {
    let (addr, fake) = start_fake().await?;
    let stack = Stack::start(Backend::Postgres).await?;
    let (status, body) = {
        let r = stack
            .http
            .post(format!("{}/v1/connections", stack.api))
            .json(&json!({ "name": "crm", "connector": "http", "auth": { "type": "bearer", "token": "tok-3c1f-secret" } }))
            .send()
            .await?;
        (r.status(), r.json::<Value>().await?)
    };
    ensure!(status == StatusCode::CREATED, "{status}: {body}");
    stack
        .apply(&format!(
            "name: audited\nsteps:\n  - {{ id: first, action: http.request, connection: crm, with: {{ url: \"http://{addr}/ok?api_key=k-9d2e-secret&page=1\", headers: {{ x-note: \"Bearer abc-secret-value\" }} }} }}\n  - {{ id: flaky, needs: [first], action: http.request, with: {{ url: \"http://{addr}/flaky/audit\" }}, retry: {{ max_attempts: 3, initial: 10ms }} }}\n  - {{ id: each, needs: [flaky], for_each: [1, 2, 3], action: http.request, with: {{ url: \"http://{addr}/ok\" }} }}\n"
        ))
        .await?;
    let before = fake.hits.load(Ordering::SeqCst);
    let (_, run) = stack.start_run("audited", json!({}), None).await?;
    let finished = stack.finished(&run, WAIT).await?;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    let hits = fake.hits.load(Ordering::SeqCst) - before;

    // One record per request the fake API saw.
    let calls = calls_of(&stack, &run).await?;
    assert_eq!(calls.len(), hits, "{calls:#?}");
    assert_eq!(hits, 6, "first, flaky twice, three items");
    for c in &calls {
        assert_eq!(c["kind"], "integration.call");
        assert_eq!(c["principal"], "admin", "the run was started by the admin");
        assert_eq!(c["via"], "run");
        assert_eq!(c["connector"], "http");
        assert_eq!(c["action"], "request");
    }
    let flaky: Vec<&Value> = calls.iter().filter(|c| c["step_id"] == "flaky").collect();
    assert_eq!(flaky.len(), 2);
    assert_eq!(flaky[0]["outcome"], "error");
    assert_eq!(flaky[0]["error_code"], "upstream_unavailable");
    assert_eq!(flaky[0]["http_status"], 500);
    assert!(
        flaky[0]["retry_delay_ms"].as_i64().is_some(),
        "{:#}",
        flaky[0]
    );
    assert_eq!(flaky[1]["outcome"], "success");
    assert_eq!(flaky[1]["attempt"], 2);
    assert_eq!(flaky[1]["http_status"], 200);
    let first = calls
        .iter()
        .find(|c| c["step_id"] == "first")
        .context("first")?;
    assert!(first["connection_id"].is_string(), "{first:#}");
    let all = serde_json::to_string(&calls)?;
    for secret in ["k-9d2e-secret", "abc-secret-value", "tok-3c1f-secret"] {
        assert!(!all.contains(secret), "{secret} is in the ledger");
    }
    assert!(
        first["input"]["url"]
            .as_str()
            .is_some_and(|u| u.contains("page=1")),
        "{first:#}"
    );

    // Filters.
    let errors = get(&stack, &format!("/v1/audit?run={run}&outcome=error")).await?;
    assert_eq!(errors["records"].as_array().map(Vec::len), Some(1));
    let by_connection = get(&stack, "/v1/audit?connection=crm").await?;
    assert_eq!(by_connection["records"].as_array().map(Vec::len), Some(1));
    let bad = stack
        .http
        .get(format!("{}/v1/audit?since=yesterday", stack.api))
        .send()
        .await?;
    assert_eq!(bad.status(), StatusCode::BAD_REQUEST);

    // The admin change is in the same chain, with who made it and no secret.
    let admin = get(&stack, "/v1/audit?principal=admin&limit=500").await?;
    let created = admin["records"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["kind"] == "connection.created"))
        .context("connection.created")?;
    assert_eq!(created["via"], "api");
    assert_eq!(created["details"]["connection"], "crm");
    assert!(!created.to_string().contains("tok-3c1f"), "{created}");

    // Export: every record, one JSON object a line.
    let export = stack
        .http
        .get(format!("{}/v1/audit/export", stack.api))
        .send()
        .await?
        .text()
        .await?;
    let lines: Vec<Value> = export
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    assert_eq!(lines.len(), calls.len() + 1, "six calls and the connection");
    let seqs: Vec<i64> = lines.iter().filter_map(|l| l["seq"].as_i64()).collect();
    assert_eq!(seqs, (1..=7).collect::<Vec<_>>());

    let verdict = get(&stack, "/v1/audit/verify").await?;
    assert_eq!(verdict, json!({ "intact": true, "records": 7 }));
    Ok(())
}

#[tokio::test]
async fn two_engines_append_to_one_unbroken_chain_and_tampering_is_found() -> Result<()> {
    let (addr, fake) = start_fake().await?;
    let stack = Stack::start_with_workers(Backend::Postgres, 2).await?;
    // A second engine, as its own process, recording results from the same streams.
    let (_engine, url) = spawn_engine_process(&stack.nats.url(), stack.db.url()).await?;
    let second = Api::new(url, stack.db.url()).await?;
    stack
        .apply(&format!(
            "name: fan\nsteps:\n  - {{ id: each, for_each: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9], action: http.request, with: {{ url: \"http://{addr}/ok\" }} }}\n"
        ))
        .await?;
    let mut runs = Vec::new();
    for i in 0..10 {
        let api = if i % 2 == 0 {
            stack.client()
        } else {
            second.clone()
        };
        runs.push(api.start_run("fan", json!({}), None).await?.1);
    }
    for id in &runs {
        let run = stack.finished(id, WAIT).await?;
        assert_eq!(run["status"], "succeeded", "{run:#}");
    }
    let hits = fake.hits.load(Ordering::SeqCst);
    assert_eq!(hits, 100);
    let verdict = get(&stack, "/v1/audit/verify").await?;
    assert_eq!(verdict, json!({ "intact": true, "records": 100 }));

    // Change one record's output in the database: verification names it.
    let db = stack.db.connect().await?;
    let row = audit_record::Entity::find()
        .filter(audit_record::Column::WorkspaceId.eq(DEFAULT_WORKSPACE_ID))
        .filter(audit_record::Column::Seq.eq(42))
        .one(&db)
        .await?
        .context("record 42")?;
    let original = row.clone();
    let mut edited = row.into_active_model();
    edited.output = Set(Some(json!({ "status": 200, "body": "forged" })));
    edited.update(&db).await?;
    let verdict = get(&stack, "/v1/audit/verify").await?;
    assert_eq!(verdict["intact"], false);
    assert_eq!(verdict["broken_at"], 42, "{verdict}");

    // Put it back, then remove the last record: the head no longer matches.
    original.into_active_model().reset_all().update(&db).await?;
    assert_eq!(get(&stack, "/v1/audit/verify").await?["intact"], true);
    let last = audit_record::Entity::find()
        .filter(audit_record::Column::WorkspaceId.eq(DEFAULT_WORKSPACE_ID))
        .order_by_desc(audit_record::Column::Seq)
        .one(&db)
        .await?
        .context("last record")?;
    audit_record::Entity::delete_by_id((last.workspace_id, last.seq))
        .exec(&db)
        .await?;
    let verdict = get(&stack, "/v1/audit/verify").await?;
    assert_eq!(verdict["intact"], false, "{verdict}");
    assert_eq!(verdict["broken_at"], 100, "{verdict}");
    Ok(())
}

#[tokio::test]
async fn an_input_the_manifest_marks_secret_is_not_in_the_ledger() -> Result<()> {
    let (addr, fake) = start_fake().await?;
    let stack = Stack::start(Backend::Sqlite).await?;
    let r = stack
        .http
        .post(format!("{}/v1/connections", stack.api))
        .json(&json!({ "name": "chat", "connector": "teams", "auth": { "type": "bearer", "token": "graph-5e1a-token" } }))
        .send()
        .await?;
    ensure!(r.status() == StatusCode::CREATED, "{}", r.text().await?);
    // An incoming webhook's URL is its credential; Teams' manifest marks `webhook_url` secret.
    let hook = format!("http://{addr}/echo?hook=hook-77ab-secret");
    stack
        .apply(&format!(
            "name: announce\nsteps:\n  - {{ id: tell, action: teams.post_webhook, connection: chat, with: {{ webhook_url: \"{hook}\", title: Deployed, text: \"v2 is live\" }} }}\n"
        ))
        .await?;
    let (_, run) = stack.start_run("announce", json!({}), None).await?;
    let finished = stack.finished(&run, WAIT).await?;
    assert_eq!(finished["status"], "succeeded", "{finished:#}");
    assert_eq!(
        fake.hits.load(Ordering::SeqCst),
        1,
        "the webhook was called once"
    );

    let calls = calls_of(&stack, &run).await?;
    assert_eq!(calls.len(), 1, "{calls:#?}");
    let call = &calls[0];
    assert_eq!(call["connector"], "teams");
    assert_eq!(call["action"], "post_webhook");
    assert_eq!(call["outcome"], "success");
    assert_eq!(call["input"]["text"], "v2 is live", "{call:#}");
    let all = serde_json::to_string(&calls)?;
    for secret in ["hook-77ab-secret", "graph-5e1a-token"] {
        assert!(!all.contains(secret), "{secret} is in the ledger: {call:#}");
    }
    Ok(())
}
