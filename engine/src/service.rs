//! The engine service: migrations, topology, the outbox relay, the results loop, the events
//! consumer, the timers (retries, lost attempts, deadlines), the schedule triggers, and the
//! HTTP API, all stopped by one shutdown signal.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind};
use futures::{FutureExt, StreamExt};
use schemas::db::migration::Migrator;
use schemas::envelope::StepResult;
use schemas::transport;
use sea_orm::{Database, DatabaseConnection};
use sea_orm_migration::MigratorTrait;
use serde::Deserialize;
use serde_json::Value;
use tokio::net::TcpListener;
use tokio::sync::{Notify, watch};

use crate::starter::Starter;
use crate::triggers::limit::{Limiter, Rate};
use crate::triggers::webhook::Rejections;
use crate::vault::Keyring;
use crate::{api, store, topology};

/// Engine configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EngineConfig {
    /// NATS server URL (`NATS_URL`).
    pub nats_url: String,
    /// Database URL (`DATABASE_URL`): `sqlite://path?mode=rwc` or `postgres://…`.
    pub database_url: String,
    /// Address the HTTP API listens on.
    pub listen: SocketAddr,
    /// Most results recorded in one database transaction.
    pub result_batch: usize,
    /// Result batches recorded at once (PostgreSQL only; SQLite has one writer). One keeps
    /// batches largest and measured fastest with the database on the same two cores; more
    /// can help when the database has cores to spare.
    pub result_recorders: usize,
    /// How often the scheduler looks for due retries, lost attempts and expired runs.
    #[serde(with = "humanish")]
    pub tick: Duration,
    /// How often the scheduler looks for schedule triggers whose fire time has passed.
    #[serde(with = "humanish")]
    pub schedule_tick: Duration,
    /// Master keys that seal stored secrets (`SWITCHYARD_MASTER_KEY`). Without them secrets
    /// can be neither stored nor used, so signed webhooks are refused.
    #[serde(skip)]
    pub keyring: Option<Arc<Keyring>>,
    /// Webhook deliveries admitted per workspace by this engine process (`None`: no limit).
    #[serde(skip)]
    pub webhook_workspace_rate: Option<Rate>,
    /// The engine's base URL as browsers and OAuth providers reach it
    /// (`SWITCHYARD_PUBLIC_URL`), e.g. `https://switchyard.example.com`; the OAuth
    /// `redirect_uri` is this plus `/v1/oauth/callback`. `None`: `http://{listen}` (the
    /// bound address).
    pub public_url: Option<String>,
    /// Internal destinations the engine's own outbound calls (OAuth code exchanges,
    /// connection tests: health calls and probes) may reach (`--allow-outbound`,
    /// `SWITCHYARD_ALLOW_OUTBOUND`): a comma-separated list of IP addresses, CIDR ranges and
    /// host names. Loopback, private, link-local and other internal addresses and cloud
    /// metadata names are refused unless listed. Empty by default.
    pub allow_outbound: connectors::http::OutboundPolicy,
    /// Copies JetStream keeps of each stream (`--stream-replicas`,
    /// `SWITCHYARD_STREAM_REPLICAS`): 1 on a single nats-server, 3 on the three-node cluster
    /// of `deploy/nats/`, so the loss of one node loses no message and stops no run. Streams
    /// that exist with another number are scaled at start-up.
    pub stream_replicas: usize,
}

mod humanish {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer};

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let s = String::deserialize(d)?;
        s.parse::<schemas::duration::Duration>()
            .map(|d| d.get())
            .map_err(serde::de::Error::custom)
    }
}

/// Webhook deliveries per second admitted per workspace by one engine process, by default.
pub const DEFAULT_WORKSPACE_WEBHOOK_RATE: Rate = Rate {
    requests: 5_000,
    per: Duration::from_secs(1),
};

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            nats_url: "nats://127.0.0.1:4222".into(),
            database_url: "sqlite://switchyard.db?mode=rwc".into(),
            listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
            result_batch: 256,
            result_recorders: 1,
            tick: Duration::from_millis(200),
            schedule_tick: Duration::from_secs(1),
            keyring: None,
            webhook_workspace_rate: Some(DEFAULT_WORKSPACE_WEBHOOK_RATE),
            public_url: None,
            allow_outbound: connectors::http::OutboundPolicy::default(),
            stream_replicas: 1,
        }
    }
}

/// Why the engine stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// The database could not be reached or migrated.
    #[error("database: {0}")]
    Db(#[from] sea_orm::DbErr),
    /// NATS could not be reached.
    #[error("nats: {0}")]
    Nats(#[from] async_nats::ConnectError),
    /// Streams or consumers could not be created.
    #[error(transparent)]
    Topology(#[from] topology::TopologyError),
    /// The API could not listen.
    #[error("listen on {addr}: {source}")]
    Listen {
        /// The address.
        addr: SocketAddr,
        /// Why.
        #[source]
        source: std::io::Error,
    },
}

/// What the API handlers share.
#[derive(Debug, Clone)]
pub struct Shared {
    /// The database.
    pub db: DatabaseConnection,
    /// NATS, for readiness and cancel announcements.
    pub nats: async_nats::Client,
    /// Wakes the relay after a commit that wrote outbox rows.
    pub outbox: Arc<Notify>,
    /// This engine's parsed definitions.
    pub definitions: Arc<store::Definitions>,
    /// Master keys for stored secrets, when configured.
    pub keyring: Option<Arc<Keyring>>,
    /// Webhook rate-limit buckets.
    pub limiter: Arc<Limiter>,
    /// The per-workspace webhook rate.
    pub webhook_workspace_rate: Option<Rate>,
    /// Webhook delivery counters.
    pub hooks: Arc<Rejections>,
    /// Starts runs in batches.
    pub starter: Starter,
    /// Sealed secrets read recently.
    pub secrets: Arc<crate::secrets::SealedCache>,
    /// When each token's use was last written.
    pub token_use: Arc<crate::auth::TokenUse>,
    /// Tokens checked recently.
    pub token_cache: Arc<crate::auth::TokenCache>,
    /// The engine's public base URL, without a trailing `/` (see [`EngineConfig::public_url`]).
    pub public_url: Arc<str>,
    /// HTTP client for OAuth token endpoints and connection tests (follows no redirects),
    /// held to [`EngineConfig::allow_outbound`].
    pub oauth_http: connectors::http::Client,
}

/// Connects to a database and brings its schema up to date.
pub async fn connect_db(url: &str) -> Result<DatabaseConnection, sea_orm::DbErr> {
    let mut options = sea_orm::ConnectOptions::new(url.to_owned());
    options.sqlx_logging(false);
    if url.starts_with("sqlite:") {
        // One writer at a time is all SQLite allows; more connections only contend.
        options.max_connections(1);
    } else {
        options.max_connections(20);
    }
    let db = Database::connect(options).await?;
    Migrator::up(&db, None).await?;
    Ok(db)
}

/// Runs the engine until `shutdown` resolves. The bound API address is sent on `bound` once
/// listening, so callers that asked for port 0 learn the real one.
pub async fn run(
    config: EngineConfig,
    shutdown: impl Future<Output = ()> + Send + 'static,
    bound: Option<tokio::sync::oneshot::Sender<SocketAddr>>,
) -> Result<(), EngineError> {
    let db = connect_db(&config.database_url).await?;
    let nats = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(workers::nats_servers(&config.nats_url))
        .await?;
    let js = jetstream::new(nats.clone());
    // A cluster still forming answers JetStream requests late; wait for it a minute.
    let topo =
        topology::ensure_patiently(&js, config.stream_replicas, Duration::from_secs(60)).await?;
    let listener =
        TcpListener::bind(config.listen)
            .await
            .map_err(|source| EngineError::Listen {
                addr: config.listen,
                source,
            })?;
    let addr = listener
        .local_addr()
        .map_err(|source| EngineError::Listen {
            addr: config.listen,
            source,
        })?;
    tracing::info!(%addr, "engine listening");
    if let Some(tx) = bound {
        let _ = tx.send(addr);
    }

    let (stop_tx, stop_rx) = watch::channel(false);
    let outbox = Arc::new(Notify::new());
    // One cache of definitions and approval rules for the whole engine, starts included, so a
    // policy change through this engine reaches every path at once.
    let definitions = Arc::new(store::Definitions::default());
    let (starter, starter_task) = Starter::spawn(db.clone(), definitions.clone(), outbox.clone());
    let shared = Shared {
        db: db.clone(),
        nats: nats.clone(),
        outbox,
        definitions,
        keyring: config.keyring.clone(),
        limiter: Arc::new(Limiter::default()),
        webhook_workspace_rate: config.webhook_workspace_rate,
        hooks: Arc::new(Rejections::default()),
        starter,
        secrets: Arc::default(),
        token_use: Arc::default(),
        token_cache: Arc::default(),
        public_url: config
            .public_url
            .as_deref()
            .map_or_else(
                || format!("http://{addr}"),
                |u| u.trim_end_matches('/').to_owned(),
            )
            .into(),
        oauth_http: {
            // A no-op when the process installed the crypto provider already (the CLI does).
            let _ = rustls::crypto::ring::default_provider().install_default();
            connectors::oauth::new_token_client(config.allow_outbound.clone())
        },
    };
    let relay = tokio::spawn(relay_loop(shared.clone(), js.clone(), stop_rx.clone()));
    let events = tokio::spawn(crate::triggers::events::consume(
        shared.clone(),
        topo.events.clone(),
        stop_rx.clone(),
    ));
    let results = tokio::spawn(results_loop(
        shared.clone(),
        topo,
        (config.result_batch, config.result_recorders),
        stop_rx.clone(),
    ));
    let ticker = tokio::spawn(tick_loop(shared.clone(), config.tick, stop_rx.clone()));
    let scheduler = tokio::spawn(crate::triggers::scheduler::run(
        shared.clone(),
        config.schedule_tick,
        stop_rx.clone(),
    ));
    let mut api_stop = stop_rx.clone();
    let server =
        axum::serve(listener, api::router(shared.clone())).with_graceful_shutdown(async move {
            let _ = api_stop.wait_for(|s| *s).await;
        });
    let server = tokio::spawn(async move {
        if let Err(e) = server.await {
            tracing::error!(error = %e, "api server stopped");
        }
    });

    shutdown.await;
    tracing::info!("engine shutting down");
    let _ = stop_tx.send(true);
    for task in [relay, results, events, ticker, scheduler, server] {
        let _ = task.await;
    }
    // Every handle is gone with the tasks; the starter commits what is queued, then ends.
    drop(shared);
    let _ = starter_task.await;
    db.close().await?;
    Ok(())
}

/// Publishes outbox rows and removes them once acknowledged. Runs after every commit that wrote rows
/// (notified) and on a timer, which also republishes what a crashed engine left unsent.
async fn relay_loop(shared: Shared, js: jetstream::Context, mut stop: watch::Receiver<bool>) {
    loop {
        match relay_once(&shared, &js).await {
            Ok(n) if n > 0 => continue,
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "outbox relay"),
        }
        tokio::select! {
            _ = shared.outbox.notified() => {}
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}

/// Publishes one batch; returns how many rows were sent.
pub async fn relay_once(shared: &Shared, js: &jetstream::Context) -> Result<usize, RelayError> {
    let rows = store::unsent(&shared.db, 512).await?;
    if rows.is_empty() {
        return Ok(0);
    }
    // Publish the whole batch, then wait for the acks together: one round trip per batch.
    let mut pending = Vec::with_capacity(rows.len());
    for row in &rows {
        let mut headers = HeaderMap::new();
        headers.insert(transport::MSG_ID_HEADER, row.msg_id.as_str());
        let stored = row.headers.as_object();
        let traceparent = stored
            .and_then(|h| h.get(transport::TRACEPARENT_HEADER))
            .and_then(Value::as_str);
        for (name, value) in stored.into_iter().flatten() {
            if let Some(value) = value.as_str()
                && name != transport::TRACEPARENT_HEADER
            {
                headers.insert(name.as_str(), value);
            }
        }
        // Only rows of a traced run get a span: with tracing off, relaying costs no more.
        let _dispatch = traceparent.map(|parent| {
            let span = dispatch_span(&row.msg_id);
            workers::telemetry::set_parent(&span, Some(parent));
            workers::telemetry::record_trace_id(&span);
            // The worker's span becomes a child of this one; an engine with tracing off
            // passes the run's context on unchanged.
            let context = workers::telemetry::traceparent_of(&span);
            headers.insert(
                transport::TRACEPARENT_HEADER,
                context.as_deref().unwrap_or(parent),
            );
            span
        });
        let ack = js
            .publish_with_headers(row.subject.clone(), headers, row.payload.clone().into())
            .await
            .map_err(|e| RelayError::Publish(e.to_string()))?;
        pending.push((row.id, ack));
    }
    let mut sent = Vec::with_capacity(pending.len());
    for (id, ack) in pending {
        match ack.await {
            Ok(_) => sent.push(id),
            Err(e) => {
                tracing::warn!(error = %e, outbox_id = id, "publish not acknowledged; will retry")
            }
        }
    }
    store::remove_sent(&shared.db, &sent).await?;
    Ok(sent.len())
}

/// The `step.dispatch` span of the step message `msg_id` (`{run}.{step}.{attempt}`, the step
/// id possibly with an `[item]` index).
fn dispatch_span(msg_id: &str) -> tracing::Span {
    let (run_id, rest) = msg_id.split_once('.').unwrap_or((msg_id, ""));
    let (step_id, attempt) = rest.rsplit_once('.').unwrap_or((rest, ""));
    tracing::info_span!(
        "step.dispatch",
        run_id,
        step_id,
        attempt,
        trace_id = tracing::field::Empty,
    )
}

/// Why a relay pass failed.
#[derive(Debug, thiserror::Error)]
pub enum RelayError {
    /// Reading or updating the outbox failed.
    #[error(transparent)]
    Store(#[from] store::StoreError),
    /// NATS refused the publish.
    #[error("publish: {0}")]
    Publish(String),
}

/// Pulls results in batches and records each batch in one transaction, acking only after
/// the commit.
async fn results_loop(
    shared: Shared,
    topo: topology::Topology,
    (batch, recorders): (usize, usize),
    mut stop: watch::Receiver<bool>,
) {
    // Batches of different runs can be recorded side by side: each transaction locks its runs
    // in id order, so overlapping batches wait for each other instead of deadlocking. SQLite
    // has one writer, so there it stays one batch at a time.
    let parallel = match shared.db.get_database_backend() {
        sea_orm::DatabaseBackend::Sqlite => 1,
        _ => recorders.max(1),
    };
    let recorders = Arc::new(tokio::sync::Semaphore::new(parallel));
    'reconnect: loop {
        let mut stream = match topo
            .results
            .stream()
            .max_messages_per_batch(batch)
            .heartbeat(Duration::from_secs(5))
            .expires(Duration::from_secs(30))
            .messages()
            .await
        {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!(error = %e, "pulling results");
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => continue 'reconnect,
                    _ = stop.wait_for(|s| *s) => break 'reconnect,
                }
            }
        };
        loop {
            // Wait for one result and for a free recorder, then take whatever else is already
            // here: under load a transaction records many results (those that arrived while
            // the recorders were busy), when idle one result costs no waiting.
            let first = tokio::select! {
                n = stream.next() => n,
                _ = stop.wait_for(|s| *s) => break 'reconnect,
            };
            let mut arrived = match first {
                Some(Ok(m)) => vec![m],
                Some(Err(e)) => {
                    tracing::debug!(error = %e, "results stream");
                    continue;
                }
                None => continue 'reconnect,
            };
            let permit = tokio::select! {
                p = recorders.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => break 'reconnect },
                _ = stop.wait_for(|s| *s) => break 'reconnect,
            };
            while arrived.len() < batch {
                match stream.next().now_or_never() {
                    Some(Some(Ok(m))) => arrived.push(m),
                    _ => break,
                }
            }
            let shared = shared.clone();
            tokio::spawn(async move {
                record_batch(&shared, arrived).await;
                drop(permit);
            });
        }
    }
    // Let batches being recorded finish before the database is closed.
    let _ = recorders
        .acquire_many(u32::try_from(parallel).unwrap_or(1))
        .await;
}

async fn record_batch(shared: &Shared, arrived: Vec<jetstream::Message>) {
    let mut batch_msgs = Vec::new();
    let mut results = Vec::new();
    // One span per traced result, open while its batch is recorded.
    let mut spans = Vec::new();
    for msg in arrived {
        match serde_json::from_slice::<StepResult>(&msg.payload) {
            Ok(r) => {
                if let Some(parent) = msg
                    .headers
                    .as_ref()
                    .and_then(|h| h.get(transport::TRACEPARENT_HEADER))
                {
                    let span = tracing::info_span!(
                        "step.result",
                        run_id = %r.run_id,
                        step_id = %r.step_id,
                        attempt = r.attempt,
                        status = match r.outcome {
                            schemas::envelope::Outcome::Succeeded { .. } => "succeeded",
                            schemas::envelope::Outcome::Failed { .. } => "failed",
                        },
                        trace_id = tracing::field::Empty,
                    );
                    workers::telemetry::set_parent(&span, Some(parent.as_str()));
                    workers::telemetry::record_trace_id(&span);
                    spans.push(span);
                }
                results.push(r);
                batch_msgs.push(msg);
            }
            Err(e) => {
                tracing::error!(error = %e, subject = %msg.subject, "unreadable result; dropping it");
                let _ = msg.ack_with(AckKind::Term).await;
            }
        }
    }
    if results.is_empty() {
        return;
    }
    match store::record_results(&shared.db, &shared.definitions, &results).await {
        Ok(recorded) => {
            if recorded.messages {
                shared.outbox.notify_one();
            }
            for msg in batch_msgs {
                if let Err(e) = msg.ack().await {
                    tracing::warn!(error = %e, "ack of a recorded result failed; it will be redelivered and ignored");
                }
            }
        }
        Err(e) => {
            // Not recorded: leave the results unacked so they come back.
            tracing::warn!(error = %e, count = results.len(), "recording results failed");
            for msg in batch_msgs {
                let _ = msg
                    .ack_with(AckKind::Nak(Some(Duration::from_millis(500))))
                    .await;
            }
        }
    }
}

async fn tick_loop(shared: Shared, every: Duration, mut stop: watch::Receiver<bool>) {
    loop {
        match store::tick(&shared.db, &shared.definitions, 500).await {
            Ok(done) if done.messages => shared.outbox.notify_one(),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "scheduler tick"),
        }
        tokio::select! {
            _ = tokio::time::sleep(every) => {}
            _ = stop.wait_for(|s| *s) => return,
        }
    }
}
