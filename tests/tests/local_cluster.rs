//! The production topology as plain processes, started by `deploy/local/cluster.sh` exactly as
//! an operator would: three nats-server nodes from `deploy/nats/nats.conf`, PostgreSQL, two
//! engines with `--stream-replicas 3` and three workers. Runs complete while a NATS node and
//! an engine are killed, and a thousand runs complete while workers are added and removed
//! under load, none lost and no step recorded or executed twice.

mod common;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use axum::Json;
use axum::extract::{Path as UrlPath, State};
use axum::routing::get;
use common::{ALLOW_OUTBOUND, Api, authed_client, switchyard_bin};
use futures::{StreamExt, TryStreamExt};
use serde_json::{Value, json};
use switchyard_tests::{TestDatabase, wait_until};

/// A cluster started by `deploy/local/cluster.sh up` in a temp dir, stopped by `down` on drop.
struct LocalCluster {
    state: PathBuf,
    settings: HashMap<String, String>,
    _dir: tempfile::TempDir,
}

impl LocalCluster {
    async fn up(database_url: &str) -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("sy-local-cluster-")
            .tempdir()?;
        let state = dir.path().join("state");
        let mut cluster = LocalCluster {
            state,
            settings: HashMap::new(),
            _dir: dir,
        };
        cluster
            .script(&["up"], &[("DATABASE_URL", database_url)])
            .await?;
        let env = std::fs::read_to_string(cluster.state.join("cluster.env"))?;
        cluster.settings = env
            .lines()
            .filter_map(|l| l.split_once('='))
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect();
        Ok(cluster)
    }

    fn script_path() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../deploy/local/cluster.sh")
    }

    /// Runs `cluster.sh ARGS`, failing with its output when it fails; returns its stdout.
    async fn script(&self, args: &[&str], env: &[(&str, &str)]) -> Result<String> {
        let bin = switchyard_bin()?;
        let output = tokio::process::Command::new("bash")
            .arg(Self::script_path())
            .args(args)
            .env("SWITCHYARD_CLUSTER_DIR", &self.state)
            .env("SWITCHYARD_BIN", bin)
            .env("SWITCHYARD_ALLOW_OUTBOUND", ALLOW_OUTBOUND)
            // Whatever happens to this test process, the cluster does not outlive it.
            .env(
                "SWITCHYARD_CLUSTER_WATCH_PID",
                std::process::id().to_string(),
            )
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .await
            .context("running deploy/local/cluster.sh")?;
        if !output.status.success() {
            bail!(
                "cluster.sh {} failed ({}):\n{}{}{}",
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr),
                self.logs_tail()
            );
        }
        Ok(String::from_utf8(output.stdout)?.trim().to_owned())
    }

    fn setting(&self, key: &str) -> Result<&str> {
        self.settings
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("cluster.env has no {key}"))
    }

    /// A client of engine `n` (1 or 2) acting as the cluster's first admin.
    fn api(&self, n: usize) -> Result<Api> {
        let token = std::fs::read_to_string(self.setting("ADMIN_TOKEN_FILE")?)?;
        Ok(Api {
            url: self.setting(&format!("ENGINE_{n}_URL"))?.to_owned(),
            http: authed_client(token.trim())?,
        })
    }

    /// The end of every process's log, for a failure's message (the state is removed when
    /// the cluster is dropped).
    fn logs_tail(&self) -> String {
        let mut out = String::new();
        let Ok(entries) = std::fs::read_dir(self.state.join("logs")) else {
            return out;
        };
        let mut names: Vec<String> = entries
            .filter_map(|e| e.ok())
            .filter_map(|e| {
                e.file_name()
                    .to_str()?
                    .strip_suffix(".log")
                    .map(str::to_owned)
            })
            .collect();
        names.sort();
        for name in names {
            let log = self.log(&name);
            let lines: Vec<&str> = log.lines().collect();
            out.push_str(&format!("\n--- {name} (last 15 lines)\n"));
            for line in &lines[lines.len().saturating_sub(15)..] {
                out.push_str(line);
                out.push('\n');
            }
        }
        out
    }

    fn log(&self, name: &str) -> String {
        std::fs::read_to_string(self.state.join("logs").join(format!("{name}.log")))
            .unwrap_or_default()
    }
}

impl Drop for LocalCluster {
    fn drop(&mut self) {
        let _ = std::process::Command::new("bash")
            .arg(Self::script_path())
            .arg("down")
            .env("SWITCHYARD_CLUSTER_DIR", &self.state)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
    }
}

/// A provider that answers every `/hit/{run}/{step}` after `delay`, counting calls per key.
#[derive(Debug, Default)]
struct Provider {
    calls: Mutex<HashMap<String, u32>>,
    delay: Duration,
}

impl Provider {
    fn total(&self) -> usize {
        let calls = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        calls.values().map(|n| *n as usize).sum()
    }

    fn calls(&self) -> HashMap<String, u32> {
        self.calls.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

async fn start_provider(delay: Duration) -> Result<(SocketAddr, Arc<Provider>)> {
    let provider = Arc::new(Provider {
        delay,
        ..Default::default()
    });
    let app = axum::Router::new()
        .route(
            "/hit/{run}/{step}",
            get(
                |State(p): State<Arc<Provider>>,
                 UrlPath((run, step)): UrlPath<(String, String)>| async move {
                    tokio::time::sleep(p.delay).await;
                    let key = format!("{run}/{step}");
                    let mut calls = p.calls.lock().unwrap_or_else(|e| e.into_inner());
                    *calls.entry(key).or_insert(0) += 1;
                    Json(json!({ "ok": true }))
                },
            ),
        )
        .with_state(provider.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((addr, provider))
}

/// A chain of `steps` calls to the provider, each keyed by the run's `i` and the step.
fn chain(name: &str, steps: usize, provider: SocketAddr) -> String {
    let mut yaml = format!("name: {name}\nsteps:\n");
    for s in 0..steps {
        let needs = if s == 0 {
            String::new()
        } else {
            format!(", needs: [s{}]", s - 1)
        };
        yaml.push_str(&format!(
            "  - {{ id: s{s}{needs}, action: http.request, with: {{ url: \"http://{provider}/hit/{{{{ inputs.i }}}}/s{s}\" }} }}\n"
        ));
    }
    yaml
}

/// Each step of a finished run succeeded once: one attempt, one entry in its history.
fn check_recorded_once(run: &Value, steps: usize) -> Result<()> {
    ensure!(run["status"] == "succeeded", "{run:#}");
    let recorded = run["steps"].as_array().context("steps")?;
    ensure!(recorded.len() == steps, "{run:#}");
    for step in recorded {
        ensure!(step["status"] == "succeeded", "{run:#}");
        ensure!(step["attempts"] == 1, "one attempt: {step:#}");
        let history = step["history"].as_array().context("history")?;
        ensure!(
            history.len() == 1 && history[0]["status"] == "succeeded",
            "one recorded outcome: {step:#}"
        );
    }
    Ok(())
}

/// The NATS node leading the steps stream.
async fn steps_leader(nats_url: &str) -> Result<String> {
    let client = async_nats::connect(workers::nats_servers(nats_url)).await?;
    let js = async_nats::jetstream::new(client);
    let info = js
        .get_stream(schemas::transport::STEPS_STREAM)
        .await?
        .info()
        .await?
        .clone();
    info.cluster
        .and_then(|c| c.leader)
        .context("the steps stream has a leader")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn runs_complete_while_a_nats_node_and_an_engine_are_killed() -> Result<()> {
    const RUNS: usize = 10;
    const STEPS: usize = 5;
    let db = TestDatabase::postgres().await?;
    let (provider_addr, provider) = start_provider(Duration::from_millis(300)).await?;
    let cluster = LocalCluster::up(db.url()).await?;
    let (first, second) = (cluster.api(1)?, cluster.api(2)?);
    first.apply(&chain("long", STEPS, provider_addr)).await?;
    let mut runs = Vec::new();
    for i in 0..RUNS {
        runs.push(first.start_run("long", json!({ "i": i }), None).await?.1);
    }

    // Some first steps done, then the node leading the steps stream and the engine the runs
    // were started through go, as their machines would (SIGKILL).
    wait_until(
        || async { provider.total() >= RUNS / 2 },
        Duration::from_secs(60),
    )
    .await
    .context("the first steps ran")?;
    let leader = steps_leader(cluster.setting("NATS_URL")?).await?;
    cluster.script(&["kill", &leader], &[]).await?;
    cluster.script(&["kill", "engine-1"], &[]).await?;
    let before = provider.total();
    ensure!(
        before < RUNS * STEPS,
        "every step ran before the kills ({before}); the test proves nothing"
    );

    // Through the surviving engine: its copy takes over the results and the outbox.
    for id in &runs {
        let run = second
            .finished(id, Duration::from_secs(120))
            .await
            .with_context(|| {
                format!(
                    "after {leader} and engine-1 were killed; engine-2 log:\n{}",
                    cluster.log("engine-2")
                )
            })?;
        check_recorded_once(&run, STEPS)?;
    }
    // At least once: every step reached the provider; a step whose result was in flight when
    // the node died may have been sent again, and is still recorded once (above).
    let calls = provider.calls();
    for i in 0..RUNS {
        for s in 0..STEPS {
            ensure!(
                calls.get(&format!("{i}/s{s}")).is_some_and(|n| *n >= 1),
                "run {i} step s{s} never reached the provider"
            );
        }
    }
    let status = cluster.script(&["status"], &[]).await?;
    ensure!(
        status
            .lines()
            .any(|l| l.starts_with("engine-2") && l.ends_with(" running")),
        "{status}"
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_runs_complete_while_workers_are_added_and_removed() -> Result<()> {
    const RUNS: usize = 1_000;
    const STEPS: usize = 2;
    const TOTAL: usize = RUNS * STEPS;
    let db = TestDatabase::postgres().await?;
    // Long enough that three workers need several seconds for the batch, so the fleet
    // changes while steps are in flight.
    let (provider_addr, provider) = start_provider(Duration::from_millis(150)).await?;
    let cluster = LocalCluster::up(db.url()).await?;
    let apis = [cluster.api(1)?, cluster.api(2)?];
    apis[0].apply(&chain("small", STEPS, provider_addr)).await?;

    let started = Instant::now();
    // Started through both engines, 32 at a time, while the fleet changes below. A start that
    // fails is kept to end the waits below at once with its error.
    let start_failed = Arc::new(Mutex::new(None::<String>));
    let starts = {
        let apis = apis.clone();
        let start_failed = start_failed.clone();
        tokio::spawn(async move {
            let started = futures::stream::iter(0..RUNS)
                .map(|i| {
                    let api = apis[i % 2].clone();
                    async move {
                        let (_, id) = api.start_run("small", json!({ "i": i }), None).await?;
                        anyhow::Ok((i, id))
                    }
                })
                .buffer_unordered(32)
                .try_collect::<Vec<_>>()
                .await;
            if let Err(e) = &started {
                *start_failed.lock().unwrap_or_else(|e| e.into_inner()) = Some(format!("{e:#}"));
            }
            started
        })
    };
    let failed_start = || {
        start_failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    };

    // Scale out by two at 10% and 25% of the steps, then in by two of the first workers
    // (SIGTERM: each stops pulling and finishes what it holds) at 40% and 55%.
    let mut changes = Vec::new();
    for (share, args) in [
        (10, ["worker", "add", ""]),
        (25, ["worker", "add", ""]),
        (40, ["worker", "remove", "worker-1"]),
        (55, ["worker", "remove", "worker-2"]),
    ] {
        let progressed = wait_until(
            || async { failed_start().is_some() || provider.total() * 100 >= TOTAL * share },
            Duration::from_secs(120),
        )
        .await;
        if let Some(error) = failed_start() {
            bail!("starting a run failed: {error}");
        }
        progressed.with_context(|| {
            format!(
                "{share}% of the steps ran (so far {}){}",
                provider.total(),
                cluster.logs_tail()
            )
        })?;
        let args: Vec<&str> = args.into_iter().filter(|a| !a.is_empty()).collect();
        changes.push(cluster.script(&args, &[]).await?);
    }
    let at_last_change = provider.total();
    ensure!(
        at_last_change < TOTAL,
        "every step ran before the fleet finished changing ({at_last_change}); the test proves nothing"
    );
    assert_eq!(
        changes,
        ["worker-4", "worker-5", "worker-1", "worker-2"],
        "what cluster.sh said it did"
    );

    let runs = starts.await??;
    ensure!(runs.len() == RUNS);

    // Every run succeeded, each step once, read back through both engines.
    let workers_seen = Arc::new(Mutex::new(HashMap::<String, usize>::new()));
    futures::stream::iter(runs)
        .map(|(i, id)| {
            let api = apis[(i + 1) % 2].clone();
            let seen = workers_seen.clone();
            async move {
                let run = api.finished(&id, Duration::from_secs(120)).await?;
                check_recorded_once(&run, STEPS).with_context(|| format!("run {i}"))?;
                for step in run["steps"].as_array().into_iter().flatten() {
                    let worker = step["history"][0]["worker"].as_str().unwrap_or_default();
                    *seen
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .entry(worker.to_owned())
                        .or_insert(0) += 1;
                }
                anyhow::Ok(())
            }
        })
        .buffer_unordered(16)
        .try_collect::<Vec<()>>()
        .await
        .with_context(|| {
            format!(
                "{} of {TOTAL} steps reached the provider{}",
                provider.total(),
                cluster.logs_tail()
            )
        })?;
    let elapsed = started.elapsed();

    // No step executed twice: removed workers drained, none was killed mid-step.
    let calls = provider.calls();
    assert_eq!(provider.total(), TOTAL, "calls to the provider");
    assert_eq!(calls.len(), TOTAL, "every step reached the provider");
    assert!(calls.values().all(|n| *n == 1), "no step called twice");
    let seen = workers_seen
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    for added in ["worker-4", "worker-5"] {
        assert!(
            seen.get(added).is_some_and(|n| *n > 0),
            "{added} ran steps: {seen:?}"
        );
    }
    for removed in ["worker-1", "worker-2"] {
        let log = cluster.log(removed);
        assert!(
            !log.contains("drain timeout passed"),
            "{removed} drained without abandoning a step:\n{log}"
        );
    }
    let status = cluster.script(&["status"], &[]).await?;
    for name in ["worker-3", "worker-4", "worker-5"] {
        ensure!(
            status
                .lines()
                .any(|l| l.starts_with(name) && l.ends_with(" running")),
            "{status}"
        );
    }
    ensure!(
        !status.contains("worker-1") && !status.contains("worker-2"),
        "removed workers are gone: {status}"
    );
    eprintln!(
        "{RUNS} runs ({TOTAL} steps) in {:.1}s with the fleet changing: {:.0} steps/s; steps per worker {seen:?}",
        elapsed.as_secs_f64(),
        TOTAL as f64 / elapsed.as_secs_f64()
    );
    Ok(())
}
