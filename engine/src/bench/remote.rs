//! `switchyard bench --engine-url`: the scenarios against a deployment that is already running
//! (the local cluster of `deploy/local/cluster.sh`, or any engine the caller can reach).
//!
//! Everything goes through the engine's HTTP API with the caller's token: definitions are
//! applied with `PUT /v1/workflows/{name}`, runs started with `POST …/runs`, and their end
//! is watched with `GET /v1/runs?workflow=…&status=…`, a few small queries per poll whatever
//! the number of runs, so that watching costs the deployment little next to what is measured.
//! Step finish times are read from `GET /v1/runs/{id}` once the load is over.
//!
//! The steps call a no-op HTTP endpoint this process serves: the deployment's workers must be
//! able to reach it (`--noop-url`, and an outbound allowlist that opens it when it is on a
//! private or loopback address). Workflow names carry a random suffix, so that runs of an
//! earlier benchmark against the same deployment are not counted.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use futures::StreamExt;
use serde_json::{Value, json};
use uuid::Uuid;

use super::{
    BenchError, BenchOptions, Row, chain_definition, fan_definition, fan_row, noop_baseline,
    overhead_rows, push_gaps, setup, start, throughput_rows,
};
use crate::client::Client;

/// Where the deployment is and how its workers reach this process.
#[derive(Debug, Clone)]
pub struct RemoteOptions {
    /// The engine's base URL (e.g. `http://127.0.0.1:8080`).
    pub engine_url: String,
    /// A token of an author or admin of the workspace the runs go to.
    pub token: Option<String>,
    /// Where this process serves the no-op endpoint the steps call.
    pub noop_listen: SocketAddr,
    /// The URL the deployment's workers use to reach that endpoint; `http://{noop_listen}`
    /// with the port actually bound when absent.
    pub noop_url: Option<String>,
}

/// A deployment to measure: its API and the endpoint its steps call.
#[derive(Debug)]
pub struct Target {
    /// The engine's API, authenticated.
    pub api: Client,
    /// The no-op endpoint's URL as the workers reach it, ending in `/noop`.
    pub noop_url: String,
}

impl Target {
    /// Serves the no-op endpoint and checks the engine answers.
    pub async fn connect(remote: &RemoteOptions) -> Result<Target, BenchError> {
        let bound = super::start_noop_on(remote.noop_listen, super::Arrivals::default())
            .await
            .map_err(setup)?;
        let base = remote
            .noop_url
            .clone()
            .unwrap_or_else(|| format!("http://{bound}"));
        let api = Client::new(&remote.engine_url).with_token(remote.token.clone());
        api.get("/readyz")
            .await
            .map_err(|e| BenchError::Setup(format!("{}: {e}", remote.engine_url)))?;
        Ok(Target {
            api,
            noop_url: format!("{}/noop", base.trim_end_matches('/')),
        })
    }
}

/// A workflow name unique to this benchmark.
pub fn unique(name: &str) -> String {
    format!("{name}-{}", &Uuid::now_v7().simple().to_string()[20..])
}

/// Stores a definition through the API.
pub async fn apply(api: &Client, name: &str, yaml: String) -> Result<(), BenchError> {
    api.put_text(&format!("/v1/workflows/{name}"), yaml)
        .await
        .map_err(|e| BenchError::Setup(format!("applying {name}: {e}")))?;
    Ok(())
}

const OPEN: [&str; 3] = ["queued", "running", "waiting"];
const ENDED_BADLY: [&str; 3] = ["failed", "cancelled", "timed_out"];

async fn any_with_status(api: &Client, workflow: &str, status: &str) -> Result<bool, BenchError> {
    let page = api
        .get(&format!(
            "/v1/runs?workflow={workflow}&status={status}&limit=1"
        ))
        .await
        .map_err(setup)?;
    Ok(page["runs"].as_array().is_some_and(|r| !r.is_empty()))
}

/// Waits until no run of `workflow` is queued, running or waiting, for at most `within`.
pub async fn wait_workflow(
    api: &Client,
    workflow: &str,
    within: Duration,
) -> Result<(), BenchError> {
    let deadline = Instant::now() + within;
    'poll: loop {
        for status in OPEN {
            if any_with_status(api, workflow, status).await? {
                if Instant::now() > deadline {
                    return Err(BenchError::Run(format!(
                        "runs of {workflow} still {status} after {}s",
                        within.as_secs()
                    )));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue 'poll;
            }
        }
        return Ok(());
    }
}

/// How many runs of `workflow` ended other than succeeded.
pub async fn count_not_succeeded(api: &Client, workflow: &str) -> Result<usize, BenchError> {
    let mut total = 0;
    for status in ENDED_BADLY {
        let mut cursor: Option<String> = None;
        loop {
            let mut path = format!("/v1/runs?workflow={workflow}&status={status}&limit=500");
            if let Some(c) = &cursor {
                path.push_str(&format!("&cursor={c}"));
            }
            let page = api.get(&path).await.map_err(setup)?;
            total += page["runs"].as_array().map_or(0, Vec::len);
            match page["next_cursor"].as_str() {
                Some(c) => cursor = Some(c.to_owned()),
                None => break,
            }
        }
    }
    Ok(total)
}

/// Waits for every run of `workflow` to end and fails unless all succeeded.
pub async fn wait_all_succeeded(
    api: &Client,
    workflow: &str,
    within: Duration,
) -> Result<(), BenchError> {
    wait_workflow(api, workflow, within).await?;
    match count_not_succeeded(api, workflow).await? {
        0 => Ok(()),
        n => Err(BenchError::Run(format!(
            "{n} runs of {workflow} did not succeed"
        ))),
    }
}

fn time(v: &Value) -> Option<DateTime<Utc>> {
    v.as_str()
        .and_then(|s| DateTime::parse_from_rfc3339(s).ok())
        .map(|t| t.with_timezone(&Utc))
}

/// A run's creation time and its steps' finish times.
async fn finish_times(
    api: &Client,
    id: Uuid,
) -> Result<(DateTime<Utc>, Vec<DateTime<Utc>>), BenchError> {
    let run = api.get(&format!("/v1/runs/{id}")).await.map_err(setup)?;
    let created = time(&run["created_at"])
        .ok_or_else(|| BenchError::Run(format!("run {id} has no created_at")))?;
    let finished = run["steps"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|s| time(&s["finished_at"]))
        .collect();
    Ok((created, finished))
}

/// Per-step overhead, throughput and fan-out against the deployment.
pub async fn scenarios(
    remote: &RemoteOptions,
    options: &BenchOptions,
) -> Result<Vec<Row>, BenchError> {
    let target = Target::connect(remote).await?;
    let api = &target.api;
    let mut rows = Vec::new();

    // Baseline: the no-op call alone, from this process.
    rows.push(
        noop_baseline(
            &target.noop_url,
            "no-op HTTP call alone, from the benchmark (p50)",
        )
        .await?,
    );

    // 1. Per-step overhead: one 10-step chain at a time.
    let chain = unique("bench-chain");
    apply(api, &chain, chain_definition(&chain, 10, &target.noop_url)).await?;
    let warm = start(api, &chain, json!({})).await?;
    wait_all_succeeded(api, &chain, Duration::from_secs(60)).await?;
    let _ = warm;
    let mut gaps = Vec::new();
    for _ in 0..options.chains {
        let run = start(api, &chain, json!({})).await?;
        wait_run(api, run).await?;
        let (created, finished) = finish_times(api, run).await?;
        push_gaps(&mut gaps, created, finished);
    }
    rows.extend(overhead_rows(&mut gaps));

    // 2. Throughput: many chains in flight.
    let many = unique("bench-many");
    apply(api, &many, chain_definition(&many, 10, &target.noop_url)).await?;
    let started = Instant::now();
    let ids: Vec<Uuid> = futures::stream::iter(0..options.runs)
        .map(|_| start(api, &many, json!({})))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    wait_all_succeeded(api, &many, Duration::from_secs(600)).await?;
    let elapsed = started.elapsed();
    let mut finished = Vec::new();
    let times: Vec<_> = futures::stream::iter(ids.iter().copied())
        .map(|id| finish_times(api, id))
        .buffer_unordered(8)
        .collect()
        .await;
    for t in times {
        finished.extend(t?.1);
    }
    rows.extend(throughput_rows(
        options.runs,
        elapsed,
        middle_rate(finished)?,
    ));

    // 3. Fan-out and join.
    let fan = unique("bench-fan");
    apply(api, &fan, fan_definition(&fan, &target.noop_url)).await?;
    let items: Vec<usize> = (0..options.items).collect();
    let started = Instant::now();
    let run = start(api, &fan, json!({ "items": items })).await?;
    wait_run(api, run).await?;
    rows.push(fan_row(options.items, started.elapsed()));
    Ok(rows)
}

/// Steps finished per second between the 10th and the 90th percentile of finish times.
pub fn middle_rate(mut finished: Vec<DateTime<Utc>>) -> Result<f64, BenchError> {
    finished.sort();
    if finished.len() < 10 {
        return Err(BenchError::Run("too few steps to measure a rate".into()));
    }
    let (lo, hi) = (finished.len() / 10, finished.len() * 9 / 10);
    let window = (finished[hi] - finished[lo]).to_std().unwrap_or_default();
    Ok((hi - lo) as f64 / window.as_secs_f64().max(1e-6))
}

/// Waits for one run to end, failing unless it succeeded.
async fn wait_run(api: &Client, id: Uuid) -> Result<(), BenchError> {
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let run = api.get(&format!("/v1/runs/{id}")).await.map_err(setup)?;
        match run["status"].as_str() {
            Some("succeeded") => return Ok(()),
            Some(s) if ENDED_BADLY.contains(&s) => {
                return Err(BenchError::Run(format!(
                    "run {id} ended {s}: {}",
                    run["error"]
                )));
            }
            _ if Instant::now() > deadline => {
                return Err(BenchError::Run(format!("run {id} did not end within 120s")));
            }
            _ => tokio::time::sleep(Duration::from_millis(2)).await,
        }
    }
}
