//! Connections through a real engine, real workers, a real nats-server and real databases,
//! against a fake provider over real HTTP that accepts one bearer token at a time: the
//! credential reaches the provider and nothing else (API responses, NATS messages, step
//! outputs, the database), revoking stops the next step before any request, and rotating
//! takes effect from the next step without touching the workflow.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::{Context, Result};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::get;
use axum::{Json, Router};
use common::{Stack, WAIT, step};
use futures::StreamExt;
use schemas::db::entities::connection;
use sea_orm::EntityTrait;
use serde_json::{Value, json};
use switchyard_tests::{Backend, wait_until};
use tokio::sync::Notify;

const CANARY: &str = "canary-7f3d9c2e-token-do-not-leak";
const ROTATED: &str = "rotated-51ab-token-do-not-leak";

/// A provider that accepts the bearer tokens in `valid`, logging which token each call had.
#[derive(Default)]
struct Provider {
    valid: Mutex<Vec<String>>,
    calls: Mutex<Vec<(String, String)>>,
    gate: Notify,
    gated: Mutex<usize>,
}

impl Provider {
    fn token(headers: &HeaderMap) -> String {
        headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default()
            .to_owned()
    }

    fn record(&self, path: &str, headers: &HeaderMap) -> bool {
        let token = Self::token(headers);
        let ok = self
            .valid
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(&token);
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((path.to_owned(), token));
        ok
    }

    fn calls_to(&self, path: &str) -> Vec<String> {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(p, _)| p == path)
            .map(|(_, t)| t.clone())
            .collect()
    }
}

fn unauthorized() -> (StatusCode, Json<Value>) {
    // Slack-style: 401 with a reason, and the token echoed back, as some providers do.
    (
        StatusCode::UNAUTHORIZED,
        Json(json!({ "ok": false, "error": "invalid_auth" })),
    )
}

async fn start_provider() -> Result<(SocketAddr, Arc<Provider>)> {
    let provider = Arc::new(Provider::default());
    provider
        .valid
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(CANARY.to_owned());
    let app = Router::new()
        .route(
            "/me",
            get(|State(p): State<Arc<Provider>>, headers: HeaderMap| async move {
                if p.record("/me", &headers) {
                    (StatusCode::OK, Json(json!({ "ok": true, "user": "ada" })))
                } else {
                    unauthorized()
                }
            }),
        )
        .route(
            "/echo",
            get(|State(p): State<Arc<Provider>>, headers: HeaderMap| async move {
                p.record("/echo", &headers);
                // Echoes every request header back, credentials included.
                let echoed: HashMap<String, String> = headers
                    .iter()
                    .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_owned()))
                    .collect();
                let token = Provider::token(&headers);
                (
                    StatusCode::BAD_REQUEST,
                    Json(json!({ "error": format!("bad request for token {token}"), "headers": echoed })),
                )
            }),
        )
        .route(
            "/gate",
            get(|State(p): State<Arc<Provider>>, headers: HeaderMap| async move {
                let ok = p.record("/gate", &headers);
                *p.gated.lock().unwrap_or_else(|e| e.into_inner()) += 1;
                p.gate.notified().await;
                if ok {
                    (StatusCode::OK, Json(json!({ "ok": true })))
                } else {
                    unauthorized()
                }
            }),
        )
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, provider))
}

async fn call(
    stack: &Stack,
    method: reqwest::Method,
    path: &str,
    body: Option<Value>,
) -> Result<(StatusCode, Value)> {
    let mut req = stack.http.request(method, format!("{}{path}", stack.api));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let r = req.send().await?;
    let status = r.status();
    let text = r.text().await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

async fn create_crm(stack: &Stack) -> Result<Value> {
    let (status, body) = call(
        stack,
        reqwest::Method::POST,
        "/v1/connections",
        Some(json!({
            "name": "crm",
            "connector": "http",
            "auth": { "type": "bearer", "token": CANARY },
            "scopes": ["contacts.read"],
        })),
    )
    .await?;
    anyhow::ensure!(status == StatusCode::CREATED, "{status}: {body}");
    Ok(body)
}

async fn a_connection_s_credential_reaches_the_provider_and_nothing_else(
    backend: Backend,
) -> Result<()> {
    let (addr, provider) = start_provider().await?;
    let stack = Stack::start(backend).await?;
    // Every message on the engine's and workers' subjects, for the whole test.
    let nats = async_nats::connect(stack.nats.url()).await?;
    let mut sub = nats.subscribe(">").await?;
    let seen = Arc::new(Mutex::new(Vec::<u8>::new()));
    let sink = seen.clone();
    tokio::spawn(async move {
        while let Some(msg) = sub.next().await {
            let mut s = sink.lock().unwrap_or_else(|e| e.into_inner());
            s.extend_from_slice(msg.subject.as_bytes());
            s.extend_from_slice(&msg.payload);
            if let Some(h) = &msg.headers {
                s.extend_from_slice(format!("{h:?}").as_bytes());
            }
        }
    });

    let created = create_crm(&stack).await?;
    assert_eq!(created["auth_type"], "bearer");
    assert_eq!(created["status"], "active");
    stack
        .apply(&format!(
            "name: crm-sync\nsteps:\n  - {{ id: me, action: http.request, connection: crm, with: {{ url: \"http://{addr}/me\" }} }}\n  - {{ id: echo, needs: [me], action: http.request, connection: crm, with: {{ url: \"http://{addr}/echo\", expect: [400] }} }}\n  - {{ id: refused, needs: [echo], action: http.request, connection: crm, with: {{ url: \"http://{addr}/me\", headers: {{ authorization: \"Bearer mine\" }} }} }}\n"
        ))
        .await?;
    let (_, id) = stack.start_run("crm-sync", json!({}), None).await?;
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(step(&run, "me")["status"], "succeeded", "{run:#}");
    assert_eq!(step(&run, "me")["output"]["body"]["user"], "ada");
    // The provider echoed the token back; the output has it scrubbed.
    let echo = &step(&run, "echo")["output"]["body"];
    assert_eq!(
        echo["headers"]["authorization"], "Bearer [redacted]",
        "{echo:#}"
    );
    assert_eq!(echo["error"], "bad request for token [redacted]");
    // A step cannot replace the connection's header with its own.
    assert_eq!(step(&run, "refused")["status"], "failed");
    assert_eq!(step(&run, "refused")["error"]["code"], "invalid_input");
    assert_eq!(
        provider.calls_to("/me"),
        [CANARY],
        "only the first step called /me"
    );

    // Nowhere else: not the API, not NATS, not the stored row.
    let mut everything = run.to_string();
    for path in [
        "/v1/connections",
        "/v1/connections/crm",
        "/v1/workflows/crm-sync",
    ] {
        everything.push_str(
            &call(&stack, reqwest::Method::GET, path, None)
                .await?
                .1
                .to_string(),
        );
    }
    assert!(
        !everything.contains(CANARY),
        "the API never shows the token"
    );
    let listed = call(&stack, reqwest::Method::GET, "/v1/connections/crm", None)
        .await?
        .1;
    assert_eq!(listed["used_by"], json!(["crm-sync"]));
    assert!(listed["last_used_at"].is_string() || listed["last_used_at"].is_null());
    let seen = seen.lock().unwrap_or_else(|e| e.into_inner()).clone();
    assert!(!seen.is_empty(), "the subscriber saw the run's messages");
    assert!(
        !seen.windows(CANARY.len()).any(|w| w == CANARY.as_bytes()),
        "no NATS message carries the token"
    );
    let conn = stack.db.connect().await?;
    let row = connection::Entity::find()
        .one(&conn)
        .await?
        .context("connection row")?;
    let stored = format!("{row:?}");
    assert!(!stored.contains(CANARY));
    let ciphertext = row.ciphertext.context("sealed")?;
    assert!(
        !ciphertext
            .windows(CANARY.len())
            .any(|w| w == CANARY.as_bytes())
    );
    Ok(())
}

#[tokio::test]
async fn a_connection_s_credential_reaches_the_provider_and_nothing_else_on_sqlite() -> Result<()> {
    a_connection_s_credential_reaches_the_provider_and_nothing_else(Backend::Sqlite).await
}

#[tokio::test]
async fn a_connection_s_credential_reaches_the_provider_and_nothing_else_on_postgres() -> Result<()>
{
    a_connection_s_credential_reaches_the_provider_and_nothing_else(Backend::Postgres).await
}

/// Starts a run whose first step waits at the provider's gate; returns once it is there.
async fn run_to_the_gate(
    stack: &Stack,
    provider: &Provider,
    addr: SocketAddr,
    name: &str,
) -> Result<String> {
    stack
        .apply(&format!(
            "name: {name}\nsteps:\n  - {{ id: first, action: http.request, connection: crm, with: {{ url: \"http://{addr}/gate\" }} }}\n  - {{ id: second, needs: [first], action: http.request, connection: crm, with: {{ url: \"http://{addr}/me\" }} }}\n"
        ))
        .await?;
    let before = *provider.gated.lock().unwrap_or_else(|e| e.into_inner());
    let (_, id) = stack.start_run(name, json!({}), None).await?;
    wait_until(
        || async {
            Ok::<bool, anyhow::Error>(
                *provider.gated.lock().unwrap_or_else(|e| e.into_inner()) > before,
            )
        },
        WAIT,
    )
    .await
    .context("the first step reached the gate")?;
    Ok(id)
}

#[tokio::test]
async fn revoking_stops_the_next_step_and_rotating_takes_effect_at_once() -> Result<()> {
    let (addr, provider) = start_provider().await?;
    let stack = Stack::start(Backend::Postgres).await?;
    create_crm(&stack).await?;

    // Revoked while the first step runs: the second fails before any request.
    let id = run_to_the_gate(&stack, &provider, addr, "revoked-mid-run").await?;
    let (status, revoked) =
        call(&stack, reqwest::Method::DELETE, "/v1/connections/crm", None).await?;
    assert_eq!(status, StatusCode::OK, "{revoked}");
    assert_eq!(revoked["status"], "revoked");
    provider.gate.notify_one();
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(step(&run, "first")["status"], "succeeded", "{run:#}");
    assert_eq!(step(&run, "second")["error"]["code"], "connection_revoked");
    assert_eq!(run["status"], "failed");
    assert!(
        provider.calls_to("/me").is_empty(),
        "no request after the revocation"
    );

    // New credentials, no workflow change: the connection is active again with them.
    provider
        .valid
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(ROTATED.to_owned());
    let (status, rotated) = call(
        &stack,
        reqwest::Method::PUT,
        "/v1/connections/crm/credentials",
        Some(json!({ "auth": { "type": "bearer", "token": ROTATED } })),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{rotated}");
    assert_eq!(rotated["status"], "active");
    assert!(!rotated.to_string().contains(ROTATED));

    // Rotated while the first step runs: the second uses the new token.
    provider
        .valid
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(CANARY.to_owned());
    let id = run_to_the_gate(&stack, &provider, addr, "rotated-mid-run").await?;
    let newest = "newest-9c1e-token";
    provider
        .valid
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(newest.to_owned());
    let (status, _) = call(
        &stack,
        reqwest::Method::PUT,
        "/v1/connections/crm/credentials",
        Some(json!({ "auth": { "type": "bearer", "token": newest } })),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    provider.gate.notify_one();
    let run = stack.finished(&id, WAIT).await?;
    assert_eq!(run["status"], "succeeded", "{run:#}");
    assert_eq!(
        provider.calls_to("/gate").last().map(String::as_str),
        Some(ROTATED)
    );
    assert_eq!(provider.calls_to("/me"), [newest]);
    Ok(())
}

#[tokio::test]
async fn connections_are_checked_when_created_and_when_a_workflow_is_applied() -> Result<()> {
    let stack = Stack::start_with_workers(Backend::Sqlite, 0).await?;
    for (body, expect) in [
        (
            json!({ "name": "Bad Name", "connector": "http", "auth": { "type": "bearer", "token": "t" } }),
            "`name`",
        ),
        (
            json!({ "name": "x", "connector": "nope", "auth": { "type": "bearer", "token": "t" } }),
            "no connector `nope`",
        ),
        (
            json!({ "name": "x", "connector": "http", "auth": { "type": "bearer" } }),
            "`token` is required",
        ),
        (
            json!({ "name": "x", "connector": "http", "auth": { "type": "oauth" } }),
            "not one of",
        ),
        (
            json!({ "name": "x", "connector": "slack", "auth": { "type": "basic", "username": "u", "password": "p" } }),
            "does not take `basic`",
        ),
        (
            json!({ "name": "x", "connector": "http", "auth": { "type": "bearer", "token": "t" }, "workspace_id": "00000000-0000-0000-0000-000000000000" }),
            "unknown field `workspace_id`",
        ),
    ] {
        let (status, answer) = call(
            &stack,
            reqwest::Method::POST,
            "/v1/connections",
            Some(body.clone()),
        )
        .await?;
        assert_eq!(status, StatusCode::BAD_REQUEST, "{body}: {answer}");
        let message = answer["error"]["message"].as_str().unwrap_or_default();
        assert!(message.contains(expect), "{body}: {message}");
    }
    create_crm(&stack).await?;
    let (status, again) = call(
        &stack,
        reqwest::Method::POST,
        "/v1/connections",
        Some(json!({ "name": "crm", "connector": "http", "auth": { "type": "bearer", "token": "t" } })),
    )
    .await?;
    assert_eq!(status, StatusCode::CONFLICT, "{again}");

    // A workflow naming a connection that does not exist is refused, at the step.
    let r = stack
        .http
        .put(format!("{}/v1/workflows/orphan", stack.api))
        .body("name: orphan\nsteps:\n  - id: call\n    action: http.request\n    connection: missing\n    with: { url: \"http://127.0.0.1:9/\" }\n")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await?;
    let problem = &body["error"]["details"]["problems"][0];
    assert_eq!(problem["path"], "steps[0].connection", "{body}");
    assert_eq!(problem["line"], 5, "{body}");
    assert!(
        problem["message"]
            .as_str()
            .unwrap_or_default()
            .contains("does not exist")
    );
    let (status, _) = call(
        &stack,
        reqwest::Method::GET,
        "/v1/connections/missing",
        None,
    )
    .await?;
    assert_eq!(status, StatusCode::NOT_FOUND);
    Ok(())
}

#[tokio::test]
async fn a_step_whose_connection_lost_a_scope_fails_before_any_request() -> Result<()> {
    let stack = Stack::start(Backend::Sqlite).await?;
    let (status, body) = call(
        &stack,
        reqwest::Method::POST,
        "/v1/connections",
        Some(json!({
            "name": "gh",
            "connector": "github",
            "auth": { "type": "bearer", "token": CANARY },
            "scopes": ["repo"],
        })),
    )
    .await?;
    anyhow::ensure!(status == StatusCode::CREATED, "{status}: {body}");
    stack
        .apply("name: triage\nsteps:\n  - { id: open, action: github.create_issue, connection: gh, with: { title: t } }\n")
        .await?;
    // Scopes reduced after the workflow was applied (and checked).
    let (status, body) = call(
        &stack,
        reqwest::Method::PUT,
        "/v1/connections/gh/scopes",
        Some(json!({ "scopes": [] })),
    )
    .await?;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["scopes"], json!([]));
    let (_, id) = stack.start_run("triage", json!({}), None).await?;
    let run = stack.finished(&id, WAIT).await?;
    let open = step(&run, "open");
    assert_eq!(open["error"]["code"], "insufficient_scope", "{run:#}");
    assert!(
        open["error"]["message"]
            .as_str()
            .is_some_and(|m| m.contains("repo")),
        "{open:#}"
    );
    // And a workflow applied now is refused at the step, naming the scope.
    let r = stack
        .http
        .put(format!("{}/v1/workflows/triage", stack.api))
        .body("name: triage\nsteps:\n  - { id: open, action: github.create_issue, connection: gh, with: { title: t2 } }\n")
        .send()
        .await?;
    assert_eq!(r.status(), StatusCode::UNPROCESSABLE_ENTITY);
    let body: Value = r.json().await?;
    assert!(body.to_string().contains("repo"), "{body}");
    Ok(())
}

#[tokio::test]
async fn testing_a_connection_opens_its_credentials_and_probes_the_provider() -> Result<()> {
    let (addr, _provider) = start_provider().await?;
    let stack = Stack::start_with_workers(Backend::Sqlite, 0).await?;
    create_crm(&stack).await?;
    let test = |body: Value| {
        let stack = &stack;
        async move {
            call(
                stack,
                reqwest::Method::POST,
                "/v1/connections/crm/test",
                Some(body),
            )
            .await
        }
    };
    let (status, plain) = test(json!({})).await?;
    assert_eq!(status, StatusCode::OK, "{plain}");
    assert_eq!(plain["ok"], true, "{plain:#}");
    let (_, probed) = test(json!({ "probe": format!("http://{addr}/me") })).await?;
    assert_eq!(probed["ok"], true, "{probed:#}");
    assert_eq!(probed["checks"][2]["check"], "probe");
    assert!(
        probed["checks"][2]["detail"]
            .as_str()
            .is_some_and(|d| d.contains("answered 200")),
        "{probed:#}"
    );
    // Credentials the provider does not accept: the probe says so.
    call(
        &stack,
        reqwest::Method::PUT,
        "/v1/connections/crm/credentials",
        Some(json!({ "auth": { "type": "bearer", "token": ROTATED } })),
    )
    .await?;
    let (_, refused) = test(json!({ "probe": format!("http://{addr}/me") })).await?;
    assert_eq!(refused["ok"], false, "{refused:#}");
    assert!(refused.to_string().contains("answered 401"), "{refused:#}");
    for answer in [&plain, &probed, &refused] {
        let text = answer.to_string();
        assert!(!text.contains(CANARY) && !text.contains(ROTATED), "{text}");
    }
    let (status, _) = test(json!({ "probe": "ftp://example.com/" })).await?;
    assert_eq!(status, StatusCode::BAD_REQUEST);

    // A damaged row: the test says so and marks the connection `error`.
    let conn = stack.db.connect().await?;
    let row = connection::Entity::find()
        .one(&conn)
        .await?
        .context("connection row")?;
    let mut damaged: connection::ActiveModel = row.into();
    damaged.ciphertext = sea_orm::Set(Some(vec![0u8; 48]));
    sea_orm::ActiveModelTrait::update(damaged, &conn).await?;
    let (_, broken) = test(json!({})).await?;
    assert_eq!(broken["ok"], false, "{broken:#}");
    assert_eq!(broken["connection"]["status"], "error", "{broken:#}");

    // The agents the policy lets use it are shown with it.
    let (status, _) = call(
        &stack,
        reqwest::Method::PUT,
        "/v1/policy",
        Some(json!({ "agents": { "triage-agent": ["crm"], "other-agent": ["billing"] } })),
    )
    .await?;
    assert_eq!(status, StatusCode::OK);
    let (_, shown) = call(&stack, reqwest::Method::GET, "/v1/connections/crm", None).await?;
    assert_eq!(shown["agents"], json!(["triage-agent"]));
    Ok(())
}
