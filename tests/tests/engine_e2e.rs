//! Runs end to end through a real engine, real workers, a real nats-server and a real
//! database (SQLite and PostgreSQL), against a fake external API over real HTTP.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};
use switchyard_tests::{Backend, NatsServer, TestDatabase, wait_until};
use tokio::sync::{oneshot, watch};

/// The fake external API: counts requests and answers what each route is for.
#[derive(Debug, Default)]
struct Fake {
    hits: AtomicUsize,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    flaky: Mutex<HashMap<String, u32>>,
}

async fn start_fake() -> Result<(SocketAddr, Arc<Fake>)> {
    let fake = Arc::new(Fake::default());
    let app = Router::new()
        .route(
            "/ok",
            get(|State(f): State<Arc<Fake>>| async move {
                let n = f.hits.fetch_add(1, Ordering::SeqCst) + 1;
                Json(json!({ "n": n }))
            }),
        )
        .route(
            "/echo",
            post(
                |State(f): State<Arc<Fake>>, Json(body): Json<Value>| async move {
                    f.hits.fetch_add(1, Ordering::SeqCst);
                    let now = f.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
                    f.max_in_flight.fetch_max(now, Ordering::SeqCst);
                    tokio::time::sleep(Duration::from_millis(20)).await;
                    f.in_flight.fetch_sub(1, Ordering::SeqCst);
                    Json(json!({ "echo": body }))
                },
            ),
        )
        .route(
            "/flaky/{key}",
            get(
                |State(f): State<Arc<Fake>>, Path(key): Path<String>| async move {
                    f.hits.fetch_add(1, Ordering::SeqCst);
                    let seen = {
                        let mut map = f.flaky.lock().unwrap_or_else(|e| e.into_inner());
                        let n = map.entry(key).or_insert(0);
                        *n += 1;
                        *n
                    };
                    if seen == 1 {
                        (
                            StatusCode::INTERNAL_SERVER_ERROR,
                            Json(json!({ "error": "try again" })),
                        )
                    } else {
                        (StatusCode::OK, Json(json!({ "attempt": seen })))
                    }
                },
            ),
        )
        .route(
            "/bad",
            get(|State(f): State<Arc<Fake>>| async move {
                f.hits.fetch_add(1, Ordering::SeqCst);
                (StatusCode::BAD_REQUEST, Json(json!({ "error": "no" })))
            }),
        )
        .route(
            "/slow",
            get(|| async {
                tokio::time::sleep(Duration::from_secs(30)).await;
                Json(json!({}))
            }),
        )
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, fake))
}

/// An engine and one worker on a private nats-server and database, stopped on drop.
struct Stack {
    api: String,
    http: reqwest::Client,
    stop: watch::Sender<bool>,
    _nats: NatsServer,
    _db: TestDatabase,
}

impl Stack {
    async fn start(backend: Backend) -> Result<Stack> {
        let nats = NatsServer::start().await?;
        let db = TestDatabase::new(backend).await?;
        let (stop, stop_rx) = watch::channel(false);
        let (bound_tx, bound_rx) = oneshot::channel();
        let config = engine::service::EngineConfig {
            nats_url: nats.url(),
            database_url: db.url().to_owned(),
            listen: "127.0.0.1:0".parse()?,
            ..Default::default()
        };
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = engine::service::run(config, stopped, Some(bound_tx)).await {
                eprintln!("engine: {e}");
            }
        });
        let addr = tokio::time::timeout(Duration::from_secs(30), bound_rx)
            .await
            .context("engine did not start")??;
        let worker = workers::WorkerConfig {
            nats_url: nats.url(),
            concurrency: 32,
            ..Default::default()
        };
        let mut rx = stop_rx.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = workers::run(worker, stopped).await {
                eprintln!("worker: {e}");
            }
        });
        Ok(Stack {
            api: format!("http://{addr}"),
            http: reqwest::Client::new(),
            stop,
            _nats: nats,
            _db: db,
        })
    }

    async fn apply(&self, yaml: &str) -> Result<Value> {
        let name = yaml
            .lines()
            .find_map(|l| l.strip_prefix("name: "))
            .context("definition has a name line")?;
        let r = self
            .http
            .put(format!("{}/v1/workflows/{name}", self.api))
            .body(yaml.to_owned())
            .send()
            .await?;
        let status = r.status();
        let body: Value = r.json().await?;
        if !status.is_success() {
            bail!("apply failed: {status} {body}");
        }
        Ok(body)
    }

    async fn start_run(
        &self,
        workflow: &str,
        input: Value,
        key: Option<&str>,
    ) -> Result<(StatusCode, String)> {
        let mut req = self
            .http
            .post(format!("{}/v1/workflows/{workflow}/runs", self.api))
            .json(&input);
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        let r = req.send().await?;
        let status = r.status();
        let body: Value = r.json().await?;
        let id = body["run_id"]
            .as_str()
            .with_context(|| format!("{status}: {body}"))?;
        Ok((status, id.to_owned()))
    }

    async fn run(&self, id: &str) -> Result<Value> {
        Ok(self
            .http
            .get(format!("{}/v1/runs/{id}", self.api))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Polls the run until it ends, and returns it.
    async fn finished(&self, id: &str, within: Duration) -> Result<Value> {
        let last = Arc::new(Mutex::new(Value::Null));
        let result = wait_until(
            || {
                let last = last.clone();
                async move {
                    let run = self.run(id).await?;
                    let done = matches!(
                        run["status"].as_str(),
                        Some("succeeded" | "failed" | "cancelled" | "timed_out")
                    );
                    *last.lock().unwrap_or_else(|e| e.into_inner()) = run;
                    Ok::<bool, anyhow::Error>(done)
                }
            },
            within,
        )
        .await;
        let run = last.lock().unwrap_or_else(|e| e.into_inner()).clone();
        result.with_context(|| format!("run did not finish; last seen: {run:#}"))?;
        Ok(run)
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
    }
}

fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id && s.get("item").is_none()))
        .unwrap_or(&Value::Null)
}

const WAIT: Duration = Duration::from_secs(60);

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
