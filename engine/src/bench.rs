//! `switchyard bench`: measures the engine on this machine, everything local.
//!
//! It starts a nats-server child, an engine and workers in this process, and a no-op HTTP
//! endpoint, then runs three scenarios and prints a table:
//! 1. **per-step overhead**: 10-step chains, one run in flight; for each step, the time from the
//!    previous step's finish to its own finish (dispatch, queueing, execution of a no-op call,
//!    result recording, planning). p50 and p99.
//! 2. **sustained throughput**: many single-step and chain runs in flight; steps finished per
//!    second of wall time.
//! 3. **fan-out**: one `for_each` over 1,000 items, from start to joined.
//! 4. **webhook to first step**: GitHub-signed deliveries one at a time; the time until the
//!    engine answers 202, and until the run's first step calls the endpoint (signature check
//!    with a stored, encrypted secret, commit, relay, worker).
//! 5. **accepted webhooks**: signed deliveries from 32 clients at once; deliveries answered
//!    202 per second, while their runs execute on the same machine.
//!
//! The no-op call itself is measured alone first, so its cost can be told apart.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use sea_orm::DatabaseConnection;
use serde_json::json;
use uuid::Uuid;

pub mod remote;
pub mod soak;

pub use remote::RemoteOptions;
pub use soak::{SoakOptions, Watch};

use crate::dev::NatsChild;
use crate::service::{self, EngineConfig};
use crate::store;

/// Options of `switchyard bench`.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Database to use; a temporary SQLite file when absent.
    pub database_url: Option<String>,
    /// Chains run one at a time for the overhead scenario.
    pub chains: usize,
    /// Runs in flight for the throughput scenario.
    pub runs: usize,
    /// Items of the fan-out scenario.
    pub items: usize,
    /// In-process workers.
    pub workers: usize,
    /// Signed webhook deliveries for the accepted-per-second scenario.
    pub webhooks: usize,
    /// Measure a running deployment instead of a stack started here.
    pub remote: Option<RemoteOptions>,
    /// Soak instead of the scenarios.
    pub soak: Option<SoakOptions>,
}

/// Why the benchmark could not run.
#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    /// Setting up the stack failed.
    #[error("{0}")]
    Setup(String),
    /// A run did not finish or failed.
    #[error("{0}")]
    Run(String),
}

fn setup<E: std::fmt::Display>(e: E) -> BenchError {
    BenchError::Setup(e.to_string())
}

/// One result row.
#[derive(Debug, Clone)]
pub struct Row {
    /// What was measured.
    pub name: String,
    /// The number.
    pub value: String,
    /// The target it is held to, if any.
    pub target: String,
}

/// Runs what `options` asks for and returns the table's rows: the scenarios or a soak, on a
/// stack started here or against a running deployment.
pub async fn run(options: BenchOptions) -> Result<Vec<Row>, BenchError> {
    match (&options.remote, &options.soak) {
        (Some(remote), None) => remote::scenarios(remote, &options).await,
        (Some(remote), Some(soak)) => {
            let target = remote::Target::connect(remote).await?;
            soak::run(&target, soak, &soak.watch).await
        }
        (None, soak) => {
            let local = Local::start(&options).await?;
            let rows = match soak {
                None => scenarios(&local, &options).await,
                Some(soak) => {
                    // This process holds the engine and the workers; nats-server is a child.
                    let mut watch = vec![soak::Watch {
                        name: "switchyard (engine and workers)".into(),
                        pid: std::process::id(),
                    }];
                    if let Some(pid) = local.nats.pid() {
                        watch.push(soak::Watch {
                            name: "nats-server".into(),
                            pid,
                        });
                    }
                    watch.extend(soak.watch.iter().cloned());
                    let target = remote::Target {
                        api: local.api.clone(),
                        noop_url: format!("http://{}/noop", local.noop),
                    };
                    soak::run(&target, soak, &watch).await
                }
            };
            local.stop().await;
            rows
        }
    }
}

/// The stack the local scenarios run on: a nats-server child, an engine and workers in this
/// process, and a no-op HTTP endpoint.
struct Local {
    dir: PathBuf,
    nats: NatsChild,
    engine: tokio::task::JoinHandle<()>,
    stop_tx: tokio::sync::watch::Sender<bool>,
    api_addr: SocketAddr,
    /// The engine's API with an admin's token.
    api: crate::client::Client,
    db: DatabaseConnection,
    keyring: Arc<crate::vault::Keyring>,
    noop: SocketAddr,
    arrivals: Arrivals,
}

impl Local {
    async fn start(options: &BenchOptions) -> Result<Local, BenchError> {
        let dir = tempdir()?;
        let nats = NatsChild::start(&dir).await.map_err(setup)?;
        let database_url = options
            .database_url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", dir.join("bench.db").display()));
        let arrivals: Arrivals = Arc::default();
        let noop = start_noop(arrivals.clone()).await.map_err(setup)?;
        let keyring = Arc::new(bench_keyring()?);
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let (bound_tx, bound_rx) = tokio::sync::oneshot::channel();
        let mut rx = stop_rx.clone();
        let config = EngineConfig {
            nats_url: nats.url.clone(),
            database_url: database_url.clone(),
            listen: SocketAddr::from(([127, 0, 0, 1], 0)),
            tick: Duration::from_millis(50),
            keyring: Some(keyring.clone()),
            webhook_workspace_rate: None,
            ..Default::default()
        };
        let engine = tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            if let Err(e) = service::run(config, stopped, Some(bound_tx)).await {
                tracing::error!(error = %e, "the benchmark's engine stopped");
            }
        });
        let api_addr = bound_rx
            .await
            .map_err(|_| BenchError::Setup("engine did not start".into()))?;
        for i in 0..options.workers {
            let mut rx = stop_rx.clone();
            let config = workers::WorkerConfig {
                nats_url: nats.url.clone(),
                worker_id: format!("bench-{i}"),
                concurrency: 64,
                // The no-op endpoint listens on loopback.
                allow_outbound: connectors::http::OutboundPolicy::loopback(),
                ..Default::default()
            };
            tokio::spawn(async move {
                let _ = workers::run(config, async move {
                    let _ = rx.wait_for(|s| *s).await;
                })
                .await;
            });
        }
        let db = service::connect_db(&database_url).await.map_err(setup)?;
        // Runs are started through the API as a client would (so the relay is woken the same
        // way), with an admin's token.
        let (_, issued) = crate::auth::bootstrap(&db, "default", "bench")
            .await
            .map_err(setup)?;
        let api = crate::client::Client::new(&format!("http://{api_addr}"))
            .with_token(Some(issued.token.to_string()));
        Ok(Local {
            dir,
            nats,
            engine,
            stop_tx,
            api_addr,
            api,
            db,
            keyring,
            noop,
            arrivals,
        })
    }

    async fn stop(self) {
        let _ = self.stop_tx.send(true);
        let _ = self.engine.await;
        self.nats.stop().await;
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The scenarios on the local stack.
async fn scenarios(local: &Local, options: &BenchOptions) -> Result<Vec<Row>, BenchError> {
    let Local {
        db,
        api,
        api_addr,
        keyring,
        noop,
        arrivals,
        ..
    } = local;
    let (db, api, noop) = (db, api, *noop);
    let ws = store::default_workspace();
    let url = format!("http://{noop}/noop");

    let mut rows = Vec::new();

    // Baseline: the no-op call alone.
    rows.push(noop_baseline(&url, "no-op HTTP call alone (p50)").await?);

    // 1. Per-step overhead.
    let chain = chain_definition("bench-chain", 10, &url);
    apply(db, &chain).await?;
    let hooks = Hooks {
        api: format!("http://{api_addr}"),
        http: reqwest::Client::new(),
        noop,
        arrivals: arrivals.clone(),
    };
    prepare_webhooks(db, keyring, &hooks).await?;
    let mut gaps = Vec::new();
    // Warm up connections and caches.
    let warm = start(api, "bench-chain", json!({})).await?;
    wait_done(db, &[warm]).await?;
    for _ in 0..options.chains {
        let run = start(api, "bench-chain", json!({})).await?;
        wait_done(db, &[run]).await?;
        let (r, steps, _) = store::get_run(db, ws, run)
            .await
            .map_err(setup)?
            .ok_or_else(|| BenchError::Run("run vanished".into()))?;
        let finished = steps.iter().filter_map(|s| s.finished_at).collect();
        push_gaps(&mut gaps, r.created_at, finished);
    }
    rows.extend(overhead_rows(&mut gaps));

    // 2. Sustained throughput: many chains in flight, started by several clients at once.
    let started = Instant::now();
    let ids: Vec<Uuid> = futures::stream::iter(0..options.runs)
        .map(|_| start(api, "bench-chain", json!({})))
        .buffer_unordered(8)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    wait_done(db, &ids).await?;
    let elapsed = started.elapsed();
    rows.extend(throughput_rows(
        options.runs,
        elapsed,
        steady_rate(db, &ids).await?,
    ));

    // 3. Fan-out and join.
    apply(db, &fan_definition("bench-fan", &url)).await?;
    let items: Vec<usize> = (0..options.items).collect();
    let started = Instant::now();
    let run = start(api, "bench-fan", json!({ "items": items })).await?;
    wait_done(db, &[run]).await?;
    rows.push(fan_row(options.items, started.elapsed()));

    // 4 and 5. Webhooks.
    rows.extend(webhooks(db, api, &hooks, options).await?);
    Ok(rows)
}

/// The no-op call alone, 200 times from this process: the baseline the overhead is on top of.
async fn noop_baseline(url: &str, name: &str) -> Result<Row, BenchError> {
    let client = reqwest::Client::new();
    let mut call = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        client.get(url).send().await.map_err(setup)?;
        call.push(t.elapsed());
    }
    Ok(Row {
        name: name.into(),
        value: ms(percentile(&mut call, 50.0)),
        target: "baseline".into(),
    })
}

/// Adds the time from a run's creation to its first step's finish, and between each step's
/// finish and the next's.
fn push_gaps(
    gaps: &mut Vec<Duration>,
    created: chrono::DateTime<chrono::Utc>,
    mut finished: Vec<chrono::DateTime<chrono::Utc>>,
) {
    finished.sort();
    let mut prev = created;
    for f in finished {
        gaps.push((f - prev).to_std().unwrap_or_default());
        prev = f;
    }
}

/// Scenario 1's rows from the gaps between consecutive step finishes.
fn overhead_rows(gaps: &mut [Duration]) -> [Row; 2] {
    [
        Row {
            name: "per-step overhead, 10-step chain, 1 run in flight (p50)".into(),
            value: ms(percentile(gaps, 50.0)),
            target: "≤ 5 ms".into(),
        },
        Row {
            name: "per-step overhead, 10-step chain, 1 run in flight (p99)".into(),
            value: ms(percentile(gaps, 99.0)),
            target: "≤ 20 ms".into(),
        },
    ]
}

/// Scenario 2's rows: `runs` 10-step chains done in `elapsed`, and the middle-80% rate.
fn throughput_rows(runs: usize, elapsed: Duration, steady: f64) -> [Row; 2] {
    [
        Row {
            name: format!("throughput: {runs} runs × 10 steps, first start to last finish"),
            value: format!("{:.0} steps/s", (runs * 10) as f64 / elapsed.as_secs_f64()),
            target: "".into(),
        },
        Row {
            name: format!("sustained: {runs} runs × 10 steps, middle 80% of steps"),
            value: format!("{steady:.0} steps/s"),
            target: "≥ 1,500 steps/s".into(),
        },
    ]
}

/// Scenario 3's workflow: one `for_each` over `inputs.items` calling `url`.
fn fan_definition(name: &str, url: &str) -> String {
    format!(
        "name: {name}\nsteps:\n  - {{ id: each, for_each: \"{{{{ inputs.items }}}}\", max_parallel: 1000, action: http.request, with: {{ url: \"{url}\" }} }}\n"
    )
}

/// Scenario 3's row.
fn fan_row(items: usize, elapsed: Duration) -> Row {
    Row {
        name: format!("{items}-item for_each, start to join"),
        value: ms(elapsed),
        target: "≤ 2 s".into(),
    }
}

async fn start(
    api: &crate::client::Client,
    workflow: &str,
    input: serde_json::Value,
) -> Result<Uuid, BenchError> {
    let answer = api
        .post_json(&format!("/v1/workflows/{workflow}/runs"), &input, None)
        .await
        .map_err(setup)?;
    answer["run_id"]
        .as_str()
        .and_then(|s| Uuid::parse_str(s).ok())
        .ok_or_else(|| BenchError::Run(format!("no run id in {answer}")))
}

async fn apply(db: &DatabaseConnection, yaml: &str) -> Result<(), BenchError> {
    let wf = schemas::validate::validate(yaml, &connectors::Registry::builtin())
        .map_err(|p| BenchError::Setup(p.to_string()))?;
    store::put_workflow(db, store::default_workspace(), &wf, yaml)
        .await
        .map_err(setup)?;
    Ok(())
}

/// Steps finished per second between the 10th and the 90th percentile of finish times: the
/// rate once the load has ramped up and before the last runs drain, when fewer are in flight.
async fn steady_rate(db: &DatabaseConnection, ids: &[Uuid]) -> Result<f64, BenchError> {
    use schemas::db::entities::step_instance;
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

    let mut finished = Vec::new();
    for chunk in ids.chunks(1_000) {
        let rows = step_instance::Entity::find()
            .filter(step_instance::Column::RunId.is_in(chunk.iter().copied()))
            .all(db)
            .await
            .map_err(setup)?;
        finished.extend(rows.into_iter().filter_map(|r| r.finished_at));
    }
    remote::middle_rate(finished)
}

/// A workflow of `steps` `http.request` calls to `url`, each needing the one before it.
pub fn chain_definition(name: &str, steps: usize, url: &str) -> String {
    let mut yaml = format!("name: {name}\nsteps:\n");
    for i in 0..steps {
        let needs = match i {
            0 => String::new(),
            _ => format!(", needs: [s{}]", i - 1),
        };
        yaml.push_str(&format!(
            "  - {{ id: s{i}{needs}, action: http.request, with: {{ url: \"{url}\" }} }}\n"
        ));
    }
    yaml
}

/// Waits until every run has finished, failing on the first that did not succeed. One query
/// per poll, for the runs that finished since the last one, so that watching costs the engine
/// and the database little next to what is measured.
async fn wait_done(db: &DatabaseConnection, ids: &[Uuid]) -> Result<(), BenchError> {
    use schemas::db::entities::{RunStatus, run};
    use sea_orm::{ColumnTrait, EntityTrait, QueryFilter};

    let deadline = Instant::now() + Duration::from_secs(300);
    let mut pending: std::collections::HashSet<Uuid> = ids.iter().copied().collect();
    while !pending.is_empty() {
        let finished = run::Entity::find()
            .filter(run::Column::Id.is_in(pending.iter().copied()))
            .filter(run::Column::Status.is_in([
                RunStatus::Succeeded,
                RunStatus::Failed,
                RunStatus::Cancelled,
                RunStatus::TimedOut,
            ]))
            .all(db)
            .await
            .map_err(setup)?;
        for r in finished {
            if r.status != RunStatus::Succeeded {
                return Err(BenchError::Run(format!(
                    "run {} ended {:?}: {:?}",
                    r.id, r.status, r.error
                )));
            }
            pending.remove(&r.id);
        }
        if Instant::now() > deadline {
            return Err(BenchError::Run(format!(
                "{} runs did not finish in 300s",
                pending.len()
            )));
        }
        if !pending.is_empty() {
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
    }
    Ok(())
}

/// When each webhook-started step's call arrived at the no-op endpoint, by delivery number.
type Arrivals = Arc<Mutex<HashMap<u64, Instant>>>;

async fn start_noop(arrivals: Arrivals) -> std::io::Result<SocketAddr> {
    start_noop_on(SocketAddr::from(([127, 0, 0, 1], 0)), arrivals).await
}

/// Serves the no-op endpoint (and the webhook scenarios' `/hook/{i}`) on `addr`.
async fn start_noop_on(addr: SocketAddr, arrivals: Arrivals) -> std::io::Result<SocketAddr> {
    let app = axum::Router::new()
        .route(
            "/noop",
            axum::routing::get(|| async { axum::Json(json!({})) }),
        )
        .route(
            "/hook/{i}",
            axum::routing::get(move |axum::extract::Path(i): axum::extract::Path<u64>| {
                let arrivals = arrivals.clone();
                async move {
                    if let Ok(mut a) = arrivals.lock() {
                        a.insert(i, Instant::now());
                    }
                    axum::Json(json!({}))
                }
            }),
        );
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok(addr)
}

fn tempdir() -> Result<PathBuf, BenchError> {
    let dir = std::env::temp_dir().join(format!("switchyard-bench-{}", Uuid::now_v7().simple()));
    std::fs::create_dir_all(&dir).map_err(setup)?;
    Ok(dir)
}

fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    if samples.is_empty() {
        return Duration::ZERO;
    }
    samples.sort();
    let rank = ((p / 100.0) * (samples.len() - 1) as f64).round() as usize;
    samples[rank.min(samples.len() - 1)]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Formats rows as a Markdown table.
pub fn table(rows: &[Row]) -> String {
    let mut out = String::from("| measure | result | target |\n| --- | --- | --- |\n");
    for r in rows {
        out.push_str(&format!("| {} | {} | {} |\n", r.name, r.value, r.target));
    }
    out
}

fn bench_keyring() -> Result<crate::vault::Keyring, BenchError> {
    crate::vault::Keyring::generate()
        .map(|(k, _)| k)
        .map_err(|e| BenchError::Setup(format!("master key: {e}")))
}

/// What the webhook scenarios need.
struct Hooks {
    api: String,
    http: reqwest::Client,
    noop: SocketAddr,
    arrivals: Arrivals,
}

const HOOK_SECRET: &str = "bench-webhook-secret";

impl Hooks {
    /// Sends delivery `i`, signed as GitHub signs it; returns when the engine answered.
    async fn deliver(&self, i: u64) -> Result<(), BenchError> {
        use hmac::{KeyInit, Mac};
        let body = format!("{{\"i\":{i},\"action\":\"opened\"}}");
        let mut mac =
            hmac::Hmac::<sha2::Sha256>::new_from_slice(HOOK_SECRET.as_bytes()).map_err(setup)?;
        mac.update(body.as_bytes());
        let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        let r = self
            .http
            .post(format!("{}/v1/hooks/bench-hook/gh", self.api))
            .header("content-type", "application/json")
            .header("x-hub-signature-256", signature)
            .header("x-github-delivery", format!("bench-{i}"))
            .body(body)
            .send()
            .await
            .map_err(setup)?;
        if r.status() != reqwest::StatusCode::ACCEPTED {
            return Err(BenchError::Run(format!(
                "webhook {i} answered {}",
                r.status()
            )));
        }
        Ok(())
    }

    fn arrived(&self, i: u64) -> Option<Instant> {
        self.arrivals.lock().ok()?.get(&i).copied()
    }
}

/// Stores the webhook scenarios' secret and workflows. Done before any load: on SQLite this
/// process's own connection and the engine's are two writers, and a write that meets the
/// engine's would fail as busy.
async fn prepare_webhooks(
    db: &DatabaseConnection,
    keyring: &crate::vault::Keyring,
    hooks: &Hooks,
) -> Result<(), BenchError> {
    crate::secrets::put(
        db,
        Some(keyring),
        store::default_workspace(),
        "bench-hook-secret",
        HOOK_SECRET.as_bytes(),
        "bench",
    )
    .await
    .map_err(setup)?;
    apply(
        db,
        &format!(
            "name: bench-hook\ntriggers:\n  - webhook: {{ id: gh, signature: {{ scheme: github, secret: bench-hook-secret }} }}\nsteps:\n  - {{ id: first, action: http.request, with: {{ url: \"http://{}/hook/{{{{ trigger.body.i }}}}\" }} }}\n",
            hooks.noop
        ),
    )
    .await?;
    apply(
        db,
        &format!(
            "name: bench-api-start\nsteps:\n  - {{ id: first, action: http.request, with: {{ url: \"http://{}/noop\" }} }}\n",
            hooks.noop
        ),
    )
    .await?;
    Ok(())
}

/// 4. Webhook to first step, one delivery at a time: from sending the signed request to the
///    first step's call arriving at the endpoint (signature check, commit, relay, worker).
/// 5. Accepted webhooks per second: many signed deliveries from 32 clients at once.
async fn webhooks(
    db: &DatabaseConnection,
    api: &crate::client::Client,
    hooks: &Hooks,
    options: &BenchOptions,
) -> Result<Vec<Row>, BenchError> {
    let mut rows = Vec::new();
    let (mut answered, mut first_step) = (Vec::new(), Vec::new());
    let sequential: u64 = 200;
    for i in 0..sequential + 10 {
        let sent = Instant::now();
        hooks.deliver(i).await?;
        let accepted = sent.elapsed();
        let deadline = Instant::now() + Duration::from_secs(30);
        let arrived = loop {
            if let Some(t) = hooks.arrived(i) {
                break t;
            }
            if Instant::now() > deadline {
                return Err(BenchError::Run(format!(
                    "webhook {i}'s first step did not start in 30s"
                )));
            }
            tokio::time::sleep(Duration::from_micros(200)).await;
        };
        // The first ten warm up connections and caches.
        if i >= 10 {
            answered.push(accepted);
            first_step.push(arrived.saturating_duration_since(sent));
        }
    }
    rows.push(Row {
        name: "signed webhook answered 202, 1 at a time (p50 / p99)".into(),
        value: format!(
            "{} / {}",
            ms(percentile(&mut answered, 50.0)),
            ms(percentile(&mut answered, 99.0))
        ),
        target: "".into(),
    });
    rows.push(Row {
        name: "webhook to first step, 1 at a time (p50 / p99)".into(),
        value: format!(
            "{} / {}",
            ms(percentile(&mut first_step, 50.0)),
            ms(percentile(&mut first_step, 99.0))
        ),
        target: "p50 ≤ 10 ms".into(),
    });

    let n = options.webhooks as u64;
    // Baseline for the next measure: the same number of one-step runs started through the
    // runs API (no signature, no secret), from as many clients.
    let started = Instant::now();
    let ids: Vec<Uuid> = futures::stream::iter(0..n)
        .map(|_| start(api, "bench-api-start", json!({})))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    let elapsed = started.elapsed();
    wait_done(db, &ids).await?;
    rows.push(Row {
        name: format!("baseline: {n} runs started through the runs API from 32 clients"),
        value: format!("{:.0} runs/s", n as f64 / elapsed.as_secs_f64()),
        target: "".into(),
    });

    let from = sequential + 10;
    let started = Instant::now();
    let results: Vec<Result<(), BenchError>> = futures::stream::iter(from..from + n)
        .map(|i| hooks.deliver(i))
        .buffer_unordered(32)
        .collect()
        .await;
    let elapsed = started.elapsed();
    results.into_iter().collect::<Result<Vec<()>, _>>()?;
    rows.push(Row {
        name: format!("{n} signed webhooks from 32 clients, accepted"),
        value: format!("{:.0} webhooks/s", n as f64 / elapsed.as_secs_f64()),
        target: "≥ 1,000/s".into(),
    });
    // Every accepted delivery's step runs: wait for them, so none is left behind.
    let deadline = Instant::now() + Duration::from_secs(300);
    while (from..from + n).any(|i| hooks.arrived(i).is_none()) {
        if Instant::now() > deadline {
            return Err(BenchError::Run(
                "not every accepted webhook's step ran within 300s".into(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(rows)
}
