//! Pieces shared by the end-to-end tests: a fake external API and an engine-plus-workers stack.
#![allow(dead_code)]

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;
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

/// What the engines and workers of these tests may call besides public addresses: the fakes,
/// which listen on 127.0.0.1 (the default outbound policy refuses loopback).
pub const ALLOW_OUTBOUND: &str = "127.0.0.1";

/// [`ALLOW_OUTBOUND`] as the policy in-process engines and workers are configured with.
pub fn allow_outbound() -> connectors::http::OutboundPolicy {
    ALLOW_OUTBOUND
        .parse()
        .unwrap_or_else(|e| panic!("{ALLOW_OUTBOUND}: {e}"))
}

/// The `switchyard` binary built next to this test binary.
pub fn switchyard_bin() -> Result<std::path::PathBuf> {
    let exe = std::env::current_exe()?;
    let dir = exe
        .parent()
        .and_then(|d| d.parent())
        .context("test binary location")?;
    let bin = dir.join("switchyard");
    if !bin.is_file() {
        bail!(
            "{} is missing; build it with `cargo build -p engine --bin switchyard`",
            bin.display()
        );
    }
    Ok(bin)
}

/// The fake external API: counts requests and answers what each route is for.
#[derive(Debug, Default)]
pub struct Fake {
    pub hits: AtomicUsize,
    pub in_flight: AtomicUsize,
    pub max_in_flight: AtomicUsize,
    pub flaky: Mutex<HashMap<String, u32>>,
    /// When each request to `/limited/{key}` arrived.
    pub limited_at: Mutex<Vec<std::time::Instant>>,
    /// When each request to `/stamp` arrived.
    pub stamped_at: Mutex<Vec<std::time::Instant>>,
    /// The `traceparent` header of each request to `/traced` (empty when it had none).
    pub traceparents: Mutex<Vec<String>>,
}

impl Fake {
    /// Counts a request to a keyed route and returns which call this is for that key (1-based).
    fn call(&self, key: String) -> u32 {
        self.hits.fetch_add(1, Ordering::SeqCst);
        self.nth_call(key)
    }

    /// Which call this is for `key`, without counting a hit.
    fn nth_call(&self, key: String) -> u32 {
        let mut map = self.flaky.lock().unwrap_or_else(|e| e.into_inner());
        let n = map.entry(key).or_insert(0);
        *n += 1;
        *n
    }
}

pub async fn start_fake() -> Result<(SocketAddr, Arc<Fake>)> {
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
                    let seen = f.call(key);
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
            "/hang-once/{key}",
            get(
                |State(f): State<Arc<Fake>>, Path(key): Path<String>| async move {
                    let seen = f.call(key);
                    if seen == 1 {
                        // The first caller is about to be killed; it never gets an answer.
                        tokio::time::sleep(Duration::from_secs(120)).await;
                    }
                    Json(json!({ "call": seen }))
                },
            ),
        )
        .route(
            "/limited/{key}",
            get(
                |State(f): State<Arc<Fake>>, Path(key): Path<String>| async move {
                    f.hits.fetch_add(1, Ordering::SeqCst);
                    f.limited_at
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(std::time::Instant::now());
                    let seen = f.nth_call(key);
                    if seen == 1 {
                        (
                            StatusCode::TOO_MANY_REQUESTS,
                            [("retry-after", "2")],
                            Json(json!({ "error": "slow down" })),
                        )
                    } else {
                        (
                            StatusCode::OK,
                            [("retry-after", "0")],
                            Json(json!({ "call": seen })),
                        )
                    }
                },
            ),
        )
        .route(
            "/stamp",
            get(|State(f): State<Arc<Fake>>| async move {
                f.hits.fetch_add(1, Ordering::SeqCst);
                f.stamped_at
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(std::time::Instant::now());
                Json(json!({ "ok": true }))
            }),
        )
        .route(
            "/traced",
            get(
                |State(f): State<Arc<Fake>>, headers: axum::http::HeaderMap| async move {
                    f.hits.fetch_add(1, Ordering::SeqCst);
                    let traceparent = headers
                        .get("traceparent")
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    f.traceparents
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push(traceparent);
                    Json(json!({ "ok": true }))
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

/// Starts a `switchyard engine` process on port 0 and returns it with its API's URL, read from
/// the line it logs once listening. Its later output is drained so it never blocks on a pipe.
pub async fn spawn_engine_process(
    nats_url: &str,
    database_url: &str,
) -> Result<(tokio::process::Child, String)> {
    let (child, url, _) = spawn_engine_process_with(nats_url, database_url, &[]).await?;
    Ok((child, url))
}

/// Everything a process wrote to standard error, kept by [`spawn_engine_process_with`] and
/// [`spawn_worker_process_with`].
pub type Logs = Arc<Mutex<String>>;

/// Runs `switchyard` with `args` (logging at `info` unless `env` says otherwise), killed on
/// drop, keeping its standard error.
fn spawn_logged(args: &[&str], env: &[(&str, &str)]) -> Result<(tokio::process::Child, Logs)> {
    let mut child = tokio::process::Command::new(switchyard_bin()?)
        .args(args)
        .env("RUST_LOG", "info")
        .env("SWITCHYARD_ALLOW_OUTBOUND", ALLOW_OUTBOUND)
        .envs(env.iter().copied())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("spawn switchyard {}", args.first().unwrap_or(&"")))?;
    let logs = Logs::default();
    keep_lines(child.stderr.take().context("stderr")?, logs.clone());
    Ok((child, logs))
}

/// Keeps every line of `stderr` in `logs` until the stream ends.
fn keep_lines(stderr: tokio::process::ChildStderr, logs: Logs) {
    use tokio::io::{AsyncBufReadExt, BufReader};
    tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        while let Ok(Some(line)) = lines.next_line().await {
            let mut all = logs.lock().unwrap_or_else(|e| e.into_inner());
            all.push_str(&line);
            all.push('\n');
        }
    });
}

/// [`spawn_engine_process`] with extra environment variables; also returns its log, kept
/// for the whole life of the process.
pub async fn spawn_engine_process_with(
    nats_url: &str,
    database_url: &str,
    env: &[(&str, &str)],
) -> Result<(tokio::process::Child, String, Logs)> {
    let (mut child, logs) = spawn_logged(
        &[
            "engine",
            "--nats-url",
            nats_url,
            "--database-url",
            database_url,
            "--listen",
            "127.0.0.1:0",
        ],
        env,
    )?;
    let mut addr = String::new();
    wait_until(
        || {
            let logs = logs.clone();
            let found = logs
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .lines()
                .find(|l| l.contains("engine listening"))
                .and_then(|l| l.split("addr=").nth(1))
                .and_then(|a| a.split_whitespace().next())
                .map(str::to_owned);
            if let Some(a) = &found {
                addr.clone_from(a);
            }
            async move { Ok::<bool, anyhow::Error>(found.is_some()) }
        },
        WAIT,
    )
    .await
    .context("the engine did not start listening in time")?;
    if let Some(status) = child.try_wait()? {
        bail!("the engine exited ({status}) before listening");
    }
    Ok((child, format!("http://{addr}"), logs))
}

/// A `switchyard worker` process with extra arguments and environment variables, and its log.
pub fn spawn_worker_process_with(
    nats_url: &str,
    worker_id: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Result<(tokio::process::Child, Logs)> {
    let mut all = vec!["worker", "--nats-url", nats_url, "--worker-id", worker_id];
    all.extend_from_slice(args);
    spawn_logged(&all, env)
}

/// Starts a `switchyard worker` process with the given id.
pub fn spawn_worker_process(nats_url: &str, worker_id: &str) -> Result<tokio::process::Child> {
    tokio::process::Command::new(switchyard_bin()?)
        .args(["worker", "--nats-url", nats_url, "--worker-id", worker_id])
        .args(["--allow-outbound", ALLOW_OUTBOUND])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .context("spawn worker")
}

/// A fresh admin token of the `default` workspace of the database at `url` (migrating it first
/// if no engine has yet).
pub async fn admin_token(database_url: &str) -> Result<String> {
    let db = engine::service::connect_db(database_url).await?;
    let (_, issued) = engine::auth::bootstrap(&db, "default", "admin").await?;
    let _ = db.close().await;
    Ok(issued.token.to_string())
}

/// An HTTP client that sends `Authorization: Bearer <token>` with every request.
pub fn authed_client(token: &str) -> Result<reqwest::Client> {
    let mut headers = reqwest::header::HeaderMap::new();
    let mut value = reqwest::header::HeaderValue::from_str(&format!("Bearer {token}"))?;
    value.set_sensitive(true);
    headers.insert(reqwest::header::AUTHORIZATION, value);
    Ok(reqwest::Client::builder()
        .default_headers(headers)
        .build()?)
}

/// Starts an in-process engine that runs until `stop` says so.
async fn start_engine(
    config: engine::service::EngineConfig,
    stop: watch::Receiver<bool>,
) -> Result<std::net::SocketAddr> {
    let (bound_tx, bound_rx) = oneshot::channel();
    let mut rx = stop;
    tokio::spawn(async move {
        let stopped = async move {
            let _ = rx.wait_for(|s| *s).await;
        };
        if let Err(e) = engine::service::run(config, stopped, Some(bound_tx)).await {
            eprintln!("engine: {e}");
        }
    });
    Ok(tokio::time::timeout(Duration::from_secs(30), bound_rx)
        .await
        .context("engine did not start")??)
}

/// An engine and one worker on a private nats-server and database, stopped on drop.
pub struct Stack {
    pub api: String,
    pub http: reqwest::Client,
    pub stop: watch::Sender<bool>,
    pub nats: NatsServer,
    pub db: TestDatabase,
    /// An admin token of the `default` workspace; `http` sends it.
    pub token: String,
    /// The master key of the stack's engine and workers.
    pub keyring: Arc<engine::vault::Keyring>,
}

impl Stack {
    pub async fn start(backend: Backend) -> Result<Stack> {
        Self::start_with_workers(backend, 1).await
    }

    /// An engine and `workers` in-process workers.
    pub async fn start_with_workers(backend: Backend, workers: usize) -> Result<Stack> {
        Self::start_configured(backend, workers, |_| {}).await
    }

    /// An engine configured by `configure` (after the test defaults: ephemeral port, a fresh
    /// master key, a fast schedule tick) and `workers` in-process workers. Workers use the
    /// keyring `configure` gave the engine, or the fresh key when it removed it.
    pub async fn start_configured(
        backend: Backend,
        workers: usize,
        configure: impl FnOnce(&mut engine::service::EngineConfig),
    ) -> Result<Stack> {
        let nats = NatsServer::start().await?;
        let db = TestDatabase::new(backend).await?;
        let (stop, stop_rx) = watch::channel(false);
        let keyring = Arc::new(engine::vault::Keyring::generate()?.0);
        let mut config = engine::service::EngineConfig {
            nats_url: nats.url(),
            database_url: db.url().to_owned(),
            listen: "127.0.0.1:0".parse()?,
            schedule_tick: Duration::from_millis(200),
            keyring: Some(keyring.clone()),
            allow_outbound: allow_outbound(),
            ..Default::default()
        };
        configure(&mut config);
        // Workers open connections with the engine's keys, including keys a test configured.
        let keyring = config.keyring.clone().unwrap_or(keyring);
        let addr = start_engine(config, stop_rx).await?;
        let token = admin_token(db.url()).await?;
        let stack = Stack {
            api: format!("http://{addr}"),
            http: authed_client(&token)?,
            token,
            stop,
            nats,
            db,
            keyring,
        };
        for _ in 0..workers {
            stack.spawn_worker(workers::WorkerConfig {
                nats_url: stack.nats.url(),
                concurrency: 32,
                allow_outbound: allow_outbound(),
                ..Default::default()
            });
        }
        Ok(stack)
    }

    /// Starts an in-process worker that stops with the stack; it reads connections from the
    /// stack's database and opens them with the stack's master key.
    pub fn spawn_worker(&self, config: workers::WorkerConfig) {
        let mut rx = self.stop.subscribe();
        let url = self.db.url().to_owned();
        let keyring = self.keyring.clone();
        tokio::spawn(async move {
            let stopped = async move {
                let _ = rx.wait_for(|s| *s).await;
            };
            let access = match workers::ConnectionAccess::connect(&url, keyring).await {
                Ok(a) => a,
                Err(e) => {
                    eprintln!("worker database: {e}");
                    return;
                }
            };
            if let Err(e) = workers::run_with(config, Some(access), stopped).await {
                eprintln!("worker: {e}");
            }
        });
    }

    pub async fn apply(&self, yaml: &str) -> Result<Value> {
        self.client().apply(yaml).await
    }

    pub async fn start_run(
        &self,
        workflow: &str,
        input: Value,
        key: Option<&str>,
    ) -> Result<(StatusCode, String)> {
        self.client().start_run(workflow, input, key).await
    }

    pub async fn run(&self, id: &str) -> Result<Value> {
        self.client().run(id).await
    }

    /// Polls the run until it ends, and returns it.
    pub async fn finished(&self, id: &str, within: Duration) -> Result<Value> {
        self.client().finished(id, within).await
    }

    /// The stack's engine API.
    pub fn client(&self) -> Api {
        Api {
            url: self.api.clone(),
            http: self.http.clone(),
        }
    }
}

/// An engine's API, as a client sees it.
#[derive(Clone)]
pub struct Api {
    pub url: String,
    pub http: reqwest::Client,
}

impl Api {
    /// A client of the engine at `url` acting as an admin of the database's `default`
    /// workspace.
    pub async fn new(url: String, database_url: &str) -> Result<Self> {
        Ok(Api {
            url,
            http: authed_client(&admin_token(database_url).await?)?,
        })
    }

    pub async fn apply(&self, yaml: &str) -> Result<Value> {
        let name = yaml
            .lines()
            .find_map(|l| l.strip_prefix("name: "))
            .context("definition has a name line")?;
        let r = self
            .http
            .put(format!("{}/v1/workflows/{name}", self.url))
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

    pub async fn start_run(
        &self,
        workflow: &str,
        input: Value,
        key: Option<&str>,
    ) -> Result<(StatusCode, String)> {
        let mut req = self
            .http
            .post(format!("{}/v1/workflows/{workflow}/runs", self.url))
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

    pub async fn run(&self, id: &str) -> Result<Value> {
        Ok(self
            .http
            .get(format!("{}/v1/runs/{id}", self.url))
            .send()
            .await?
            .json()
            .await?)
    }

    /// Polls the run until it ends, and returns it.
    pub async fn finished(&self, id: &str, within: Duration) -> Result<Value> {
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

pub fn step<'a>(run: &'a Value, id: &str) -> &'a Value {
    run["steps"]
        .as_array()
        .and_then(|s| s.iter().find(|s| s["id"] == id && s.get("item").is_none()))
        .unwrap_or(&Value::Null)
}

/// How long any one run may take in these tests.
pub const WAIT: Duration = Duration::from_secs(60);
