//! A canary credential planted in a connection, followed through a full run across a real
//! engine process and a real worker process (both logging at `debug`), a real nats-server and
//! PostgreSQL, against a provider that echoes every request header back, on success and on
//! failure: the provider receives it, and it appears in no API response, no log line of either
//! process, no NATS message, no audit record and no stored row.

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result, ensure};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use common::{Api, WAIT, spawn_engine_process_with, spawn_worker_process_with};
use futures::StreamExt;
use serde_json::{Value, json};
use switchyard_tests::{Backend, NatsServer, TestDatabase};

const CANARY: &str = "canary-5e1b77d0-bearer-do-not-leak";

/// Echoes every request header back, with the status the path names.
async fn start_echo() -> Result<(std::net::SocketAddr, Arc<Mutex<Vec<String>>>)> {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let record = seen.clone();
    let echo = move |status: StatusCode| {
        let record = record.clone();
        move |headers: HeaderMap| async move {
            let map: HashMap<String, String> = headers
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                .collect();
            if let Some(auth) = map.get("authorization") {
                record
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(auth.clone());
            }
            (
                status,
                Json(
                    json!({ "headers": map, "note": format!("you sent {:?}", map.get("authorization")) }),
                ),
            )
        }
    };
    let app = Router::new()
        .route("/ok", get(echo(StatusCode::OK)))
        .route("/fail", get(echo(StatusCode::BAD_REQUEST)));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, seen))
}

#[tokio::test]
async fn a_connection_s_credential_appears_nowhere_but_at_the_provider() -> Result<()> {
    let (provider, received) = start_echo().await?;
    let nats = NatsServer::start().await?;
    let db = TestDatabase::new(Backend::Postgres).await?;
    let (_, key) = engine::vault::Keyring::generate()?;
    let env = [
        ("SWITCHYARD_MASTER_KEY", key.as_str()),
        ("RUST_LOG", "debug"),
    ];
    let (_engine, url, engine_logs) =
        spawn_engine_process_with(&nats.url(), db.url(), &env).await?;
    let (_worker, worker_logs) = spawn_worker_process_with(
        &nats.url(),
        "canary-worker",
        &["--database-url", db.url()],
        &env,
    )?;

    // Every message on every subject, for the whole run.
    let client = async_nats::connect(nats.url()).await?;
    let mut sub = client.subscribe(">").await?;
    let wire = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = wire.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let mut all = sink.lock().unwrap_or_else(|e| e.into_inner());
            all.extend_from_slice(msg.subject.as_bytes());
            all.extend_from_slice(&msg.payload);
            if let Some(h) = &msg.headers {
                all.extend_from_slice(format!("{h:?}").as_bytes());
            }
        }
    });

    let api = Api::new(url.clone(), db.url()).await?;
    let created = api
        .http
        .post(format!("{url}/v1/connections"))
        .json(&json!({ "name": "crm", "connector": "http", "auth": { "type": "bearer", "token": CANARY } }))
        .send()
        .await?;
    ensure!(
        created.status() == StatusCode::CREATED,
        "{}",
        created.text().await?
    );
    api.apply(&format!(
        "name: leaky\nsteps:\n  - {{ id: ok, action: http.request, connection: crm, with: {{ url: \"http://{provider}/ok\" }} }}\n  - {{ id: fail, needs: [ok], action: http.request, connection: crm, with: {{ url: \"http://{provider}/fail\" }} }}\n"
    ))
    .await?;
    let (_, run_id) = api.start_run("leaky", json!({}), None).await?;
    let run = api.finished(&run_id, WAIT).await?;
    assert_eq!(
        run["status"], "failed",
        "the second call answers 400: {run:#}"
    );
    assert_eq!(
        *received.lock().unwrap_or_else(|e| e.into_inner()),
        [format!("Bearer {CANARY}"), format!("Bearer {CANARY}")],
        "the provider got the credential on both calls"
    );

    // Everything a person or another system can read.
    let mut readable = run.to_string();
    for path in [
        "/v1/connections",
        "/v1/connections/crm",
        "/v1/workflows/leaky",
        "/v1/runs",
        "/v1/audit?limit=500",
        "/v1/audit/export",
    ] {
        let text = api
            .http
            .get(format!("{url}{path}"))
            .send()
            .await?
            .text()
            .await?;
        readable.push_str(&text);
    }
    let audit: Value = api
        .http
        .get(format!("{url}/v1/audit?run={run_id}"))
        .send()
        .await?
        .json()
        .await?;
    let records = audit["records"].as_array().context("records")?;
    assert_eq!(records.len(), 2, "one record per call: {audit:#}");
    assert!(
        records
            .iter()
            .any(|r| r["output"].to_string().contains("[redacted]")),
        "the echoed header is in the ledger, redacted: {audit:#}"
    );
    assert!(
        !readable.contains(CANARY),
        "an API response holds the credential"
    );
    let engine_log = engine_logs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let worker_log = worker_logs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    assert!(
        worker_log.contains("step finished"),
        "the worker's log was captured"
    );
    assert!(!engine_log.is_empty(), "the engine's log was captured");
    assert!(
        !engine_log.contains(CANARY),
        "the engine logged the credential"
    );
    assert!(
        !worker_log.contains(CANARY),
        "the worker logged the credential"
    );
    let wire = wire.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(!wire.is_empty(), "the run's messages were seen");
    assert!(
        !wire.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
        "a NATS message holds the credential"
    );
    // Every stored row, as text: no table holds it in the clear.
    let conn = db.connect().await?;
    use sea_orm::{ConnectionTrait, Statement};
    let rows = conn
        .query_all_raw(Statement::from_string(
            sea_orm::DbBackend::Postgres,
            "SELECT string_agg(t::text, '') AS all FROM (
               SELECT row_to_json(r)::text AS t FROM runs r UNION ALL
               SELECT row_to_json(s)::text FROM step_instances s UNION ALL
               SELECT row_to_json(a)::text FROM attempts a UNION ALL
               SELECT row_to_json(o)::text FROM outbox o UNION ALL
               SELECT row_to_json(c)::text FROM connections c UNION ALL
               SELECT row_to_json(l)::text FROM audit_records l) x",
        ))
        .await?;
    let stored: String = rows
        .first()
        .and_then(|r| r.try_get::<Option<String>>("", "all").ok().flatten())
        .unwrap_or_default();
    assert!(!stored.is_empty());
    assert!(
        !stored.contains(CANARY),
        "a stored row holds the credential"
    );
    Ok(())
}
