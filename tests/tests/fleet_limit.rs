//! The fleet-wide request budget across real processes: four `switchyard worker` processes
//! share one connection limited to 10 requests a second, and 200 runs each call a provider
//! that answers `429` to anything above that rate. The provider must see the fleet stay under
//! the limit (within 10%), and every run must succeed.
//!
//! Without the shared budget the same fleet sends as fast as its 64 concurrent slots allow
//! and each worker discovers the limit on its own; `docs/performance.md` has that comparison.

mod common;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::IntoResponse;
use axum::routing::get;
use common::{Api, spawn_engine_process_with, spawn_worker_process_with};
use serde_json::json;
use switchyard_tests::{Backend, NatsServer, TestDatabase};

/// The provider's limit, and the connection's budget.
const RATE: usize = 10;
const RUNS: usize = 200;
const WORKERS: usize = 4;

/// A provider allowing [`RATE`] requests a second: a token bucket refilled at that rate
/// holding at most two (so a request a few milliseconds early is not refused), answering
/// `429` with `Retry-After: 1` when it is empty. Every arrival is kept, refused or not.
#[derive(Default)]
struct Metered {
    arrivals: Mutex<Vec<(Instant, bool)>>,
    bucket: Mutex<Option<(f64, Instant)>>,
}

async fn metered(State(m): State<Arc<Metered>>) -> impl IntoResponse {
    const CAPACITY: f64 = 2.0;
    let now = Instant::now();
    let ok = {
        let mut bucket = m.bucket.lock().unwrap_or_else(|e| e.into_inner());
        let (tokens, since) = bucket.unwrap_or((CAPACITY, now));
        let tokens = (tokens + (now - since).as_secs_f64() * RATE as f64).min(CAPACITY);
        let ok = tokens >= 1.0;
        *bucket = Some((if ok { tokens - 1.0 } else { tokens }, now));
        ok
    };
    m.arrivals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push((now, ok));
    if ok {
        (StatusCode::OK, "{\"ok\":true}").into_response()
    } else {
        (
            StatusCode::TOO_MANY_REQUESTS,
            [("retry-after", "1")],
            "{\"error\":\"rate limit exceeded\"}",
        )
            .into_response()
    }
}

/// The most arrivals in any window of `width` (each arrival starting one).
fn busiest(arrivals: &[Instant], width: Duration) -> usize {
    let mut sorted = arrivals.to_vec();
    sorted.sort();
    let mut most = 0;
    let mut end = 0;
    for start in 0..sorted.len() {
        while end < sorted.len() && sorted[end] - sorted[start] < width {
            end += 1;
        }
        most = most.max(end - start);
    }
    most
}

/// What the provider saw while the fleet ran [`RUNS`] runs.
struct Measured {
    requests: usize,
    refused: usize,
    /// Seconds from the first request to the last.
    span: f64,
    busiest_1s: usize,
    busiest_2s: usize,
    /// Runs that did not succeed.
    failed: Vec<serde_json::Value>,
}

/// Runs [`RUNS`] runs on [`WORKERS`] worker processes through one connection whose settings
/// include `rate_limit` (`null`: none), and reports what the provider saw.
async fn measure(label: &str, rate_limit: serde_json::Value) -> Result<Measured> {
    let provider = Arc::new(Metered::default());
    let app = Router::new()
        .route("/metered", get(metered))
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });

    let nats = NatsServer::start().await?;
    let db = TestDatabase::new(Backend::Postgres).await?;
    let (_, key) = engine::vault::Keyring::generate()?;
    let env = [("SWITCHYARD_MASTER_KEY", key.as_str())];
    let (_engine, url, _engine_logs) =
        spawn_engine_process_with(&nats.url(), db.url(), &env).await?;
    let mut workers = Vec::new();
    for i in 0..WORKERS {
        workers.push(spawn_worker_process_with(
            &nats.url(),
            &format!("fleet-{i}"),
            &["--database-url", db.url()],
            &env,
        )?);
    }

    let api = Api::new(url.clone(), db.url()).await?;
    let created = api
        .http
        .post(format!("{url}/v1/connections"))
        .json(&json!({
            "name": "metered",
            "connector": "http",
            "auth": { "type": "bearer", "token": "metered-token" },
            "rate_limit": rate_limit,
        }))
        .send()
        .await?;
    ensure!(
        created.status() == StatusCode::CREATED,
        "{}",
        created.text().await?
    );
    api.apply(&format!(
        "name: metered\nsteps:\n  - {{ id: call, action: http.request, connection: metered, retry: {{ max_attempts: 10, initial: 500ms, max: 5s }}, with: {{ url: \"http://{addr}/metered\" }} }}\n"
    ))
    .await?;

    let started = Instant::now();
    let mut runs = Vec::with_capacity(RUNS);
    for _ in 0..RUNS {
        let (_, id) = api.start_run("metered", json!({}), None).await?;
        runs.push(id);
    }
    // 200 requests at 10 a second take 20 s; allow for a slow machine.
    let deadline = started + Duration::from_secs(120);
    let mut failed = Vec::new();
    for id in &runs {
        let left = deadline.saturating_duration_since(Instant::now());
        let run = api.finished(id, left.max(Duration::from_secs(1))).await?;
        if run["status"] != "succeeded" {
            failed.push(run);
        }
    }
    let elapsed = started.elapsed();

    let arrivals: Vec<(Instant, bool)> = provider
        .arrivals
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let all: Vec<Instant> = arrivals.iter().map(|(at, _)| *at).collect();
    let refused = arrivals.iter().filter(|(_, ok)| !ok).count();
    let first = all.iter().min().copied().context("no arrivals")?;
    let last = all.iter().max().copied().context("no arrivals")?;
    let span = (last - first).as_secs_f64();
    let busiest_1s = busiest(&all, Duration::from_secs(1));
    let busiest_2s = busiest(&all, Duration::from_secs(2));
    // Read by the benchmark notes in docs/performance.md.
    println!(
        "{label}: {} requests ({refused} refused) from {WORKERS} workers over {span:.1} s \
         = {:.2}/s; busiest 1 s window {busiest_1s}, busiest 2 s window {busiest_2s}; \
         all runs done after {:.1} s, {} of {RUNS} not succeeded",
        all.len(),
        all.len() as f64 / span.max(0.001),
        elapsed.as_secs_f64(),
        failed.len()
    );
    drop(workers);
    Ok(Measured {
        requests: all.len(),
        refused,
        span,
        busiest_1s,
        busiest_2s,
        failed,
    })
}

#[tokio::test]
async fn four_workers_share_one_connection_s_budget() -> Result<()> {
    let m = measure(
        "fleet budget",
        json!({ "requests": RATE, "per_seconds": 1, "burst": 1 }),
    )
    .await?;
    assert!(
        m.failed.is_empty(),
        "{} runs did not succeed: {:#}",
        m.failed.len(),
        m.failed[0]
    );
    // The limit, within 10%: over the whole run, in every one-second window and in every
    // two-second window.
    let tolerance = 1.1;
    assert!(
        (m.requests as f64 - 1.0) / m.span <= RATE as f64 * tolerance,
        "{} requests in {:.1} s exceed {RATE}/s by more than 10%",
        m.requests,
        m.span
    );
    // A one-second window over requests paced exactly at RATE holds RATE + 1 of them (one at
    // each edge), and on a loaded machine one request sent late lands beside its successor: one
    // more than the 10% is that jitter, not the fleet going over its budget. The two-second
    // window and the whole run's rate above hold the budget to 10% without that allowance.
    assert!(
        m.busiest_1s as f64 <= RATE as f64 * tolerance + 1.0,
        "{} requests in one second",
        m.busiest_1s
    );
    assert!(
        m.busiest_2s as f64 <= 2.0 * RATE as f64 * tolerance,
        "{} requests in one two-second window",
        m.busiest_2s
    );
    assert!(
        m.refused * 10 <= RUNS,
        "{} of {} requests were refused: the fleet is discovering the limit instead of keeping it",
        m.refused,
        m.requests
    );
    Ok(())
}

/// The baseline for `docs/performance.md`: the same fleet and provider with no budget on the
/// connection, so each worker learns the limit from `429`s. Run with
/// `cargo nextest run -p switchyard-tests --test fleet_limit --run-ignored only --no-capture`.
#[tokio::test]
#[ignore = "a measurement for docs/performance.md, not a check"]
async fn baseline_without_a_budget() -> Result<()> {
    let m = measure("no budget", serde_json::Value::Null).await?;
    assert!(
        m.refused > 0,
        "without a budget the provider refuses some requests"
    );
    Ok(())
}
