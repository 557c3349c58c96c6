//! Switchyard's worker runtime: pulls step messages, runs connector actions, publishes results.
//!
//! # Layout
//! - [`WorkerConfig`]: what a worker process is told.
//! - [`run`]: the pull loop. Any number of worker processes share one durable pull consumer
//!   per queue; each runs at most `concurrency` steps at once.
//!
//! Per step: parse the message (an unreadable one is terminated, never retried forever), refuse
//! it if its run was cancelled, run the action under its timeout while sending in-progress acks,
//! publish the result and wait for JetStream to store it, and only then ack the step. A failed
//! attempt is reported, not retried here: the engine schedules the retry and this worker is
//! free at once.

use std::collections::{HashMap, VecDeque};
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_nats::HeaderMap;
use async_nats::jetstream::{self, AckKind, consumer};
use chrono::Utc;
use futures::StreamExt;
use schemas::envelope::{ENVELOPE_VERSION, ErrorCode, Outcome, StepError, StepMessage, StepResult};
use schemas::transport;
use serde::Deserialize;
use tokio::sync::{Semaphore, watch};
use uuid::Uuid;

/// What a worker process is told.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// NATS server URL.
    pub nats_url: String,
    /// Queues served; each has its own durable consumer shared by the fleet.
    pub queues: Vec<String>,
    /// Most steps this process runs at once.
    pub concurrency: usize,
    /// Name in results and logs.
    pub worker_id: String,
    /// Interval of in-progress acks while an action runs; must be shorter than `ack_wait`.
    #[serde(skip)]
    pub heartbeat: Duration,
    /// How long JetStream waits for an ack before redelivering (set when the consumer is created).
    #[serde(skip)]
    pub ack_wait: Duration,
    /// How long shutdown waits for steps in flight.
    #[serde(skip)]
    pub drain_timeout: Duration,
    /// Cap on one response body.
    pub max_response_bytes: usize,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            nats_url: "nats://127.0.0.1:4222".into(),
            queues: vec![transport::DEFAULT_QUEUE.into()],
            concurrency: 16,
            worker_id: format!("worker-{}", Uuid::now_v7().simple()),
            heartbeat: Duration::from_secs(10),
            ack_wait: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_response_bytes: connectors::http::DEFAULT_MAX_RESPONSE_BYTES,
        }
    }
}

/// Why a worker stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// NATS could not be reached.
    #[error("nats: {0}")]
    Connect(#[from] async_nats::ConnectError),
    /// The consumer could not be created.
    #[error("consumer for queue {queue}: {message}")]
    Consumer {
        /// The queue.
        queue: String,
        /// Why.
        message: String,
    },
    /// The cancel subscription failed.
    #[error("subscribe: {0}")]
    Subscribe(#[from] async_nats::SubscribeError),
}

/// Recently cancelled runs, bounded in size so a long-lived worker does not grow.
#[derive(Debug, Default)]
struct Cancelled {
    set: HashMap<Uuid, Instant>,
    order: VecDeque<Uuid>,
}

impl Cancelled {
    const CAP: usize = 10_000;

    fn insert(&mut self, id: Uuid) {
        if self.set.insert(id, Instant::now()).is_none() {
            self.order.push_back(id);
        }
        while self.order.len() > Self::CAP {
            if let Some(old) = self.order.pop_front() {
                self.set.remove(&old);
            }
        }
    }

    fn contains(&self, id: &Uuid) -> bool {
        self.set.contains_key(id)
    }
}

/// Runs a worker until `shutdown` resolves, then drains steps in flight.
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    let client = async_nats::ConnectOptions::new()
        .retry_on_initial_connect()
        .connect(&config.nats_url)
        .await?;
    let js = jetstream::new(client.clone());
    let (stop_tx, stop_rx) = watch::channel(false);
    let cancelled = Arc::new(Mutex::new(Cancelled::default()));
    let mut cancel_sub = client.subscribe(transport::CANCEL_SUBJECT).await?;
    {
        let cancelled = cancelled.clone();
        tokio::spawn(async move {
            while let Some(msg) = cancel_sub.next().await {
                let parsed = std::str::from_utf8(&msg.payload)
                    .ok()
                    .and_then(|text| Uuid::parse_str(text.trim()).ok());
                if let Some(id) = parsed {
                    cancelled
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .insert(id);
                }
            }
        });
    }
    let permits = Arc::new(Semaphore::new(config.concurrency.max(1)));
    let config = Arc::new(config);
    let mut loops = Vec::new();
    for queue in config.queues.clone() {
        loops.push(tokio::spawn(pull_loop(
            js.clone(),
            queue,
            config.clone(),
            permits.clone(),
            cancelled.clone(),
            stop_rx.clone(),
        )));
    }
    shutdown.await;
    tracing::info!(worker = %config.worker_id, "worker draining");
    let _ = stop_tx.send(true);
    for l in loops {
        let _ = l.await;
    }
    // Every permit back means every step in flight has finished.
    let all = u32::try_from(config.concurrency.max(1)).unwrap_or(u32::MAX);
    if tokio::time::timeout(config.drain_timeout, permits.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(worker = %config.worker_id, "drain timeout: steps still running are left to redelivery");
    }
    Ok(())
}

async fn consumer_for(
    js: &jetstream::Context,
    queue: &str,
    config: &WorkerConfig,
    stop: &mut watch::Receiver<bool>,
) -> Option<consumer::Consumer<consumer::pull::Config>> {
    let mut delay = Duration::from_millis(100);
    loop {
        // The engine creates the stream; a worker that starts first waits for it.
        match js.get_stream(transport::STEPS_STREAM).await {
            Ok(stream) => {
                let name = transport::worker_consumer(queue);
                match stream
                    .get_or_create_consumer(
                        &name,
                        consumer::pull::Config {
                            durable_name: Some(name.clone()),
                            filter_subject: transport::step_subject(queue),
                            ack_policy: consumer::AckPolicy::Explicit,
                            ack_wait: config.ack_wait,
                            max_ack_pending: 100_000,
                            ..Default::default()
                        },
                    )
                    .await
                {
                    Ok(c) => return Some(c),
                    Err(e) => tracing::warn!(error = %e, queue, "creating consumer"),
                }
            }
            Err(e) => tracing::info!(error = %e, queue, "waiting for the steps stream"),
        }
        tokio::select! {
            _ = tokio::time::sleep(delay) => {}
            _ = stop.wait_for(|s| *s) => return None,
        }
        delay = (delay * 2).min(Duration::from_secs(5));
    }
}

async fn pull_loop(
    js: jetstream::Context,
    queue: String,
    config: Arc<WorkerConfig>,
    permits: Arc<Semaphore>,
    cancelled: Arc<Mutex<Cancelled>>,
    mut stop: watch::Receiver<bool>,
) {
    let Some(consumer) = consumer_for(&js, &queue, &config, &mut stop).await else {
        return;
    };
    loop {
        // Pull only as many messages as there are free slots: never hold work that cannot start.
        let permit = tokio::select! {
            p = permits.clone().acquire_owned() => match p { Ok(p) => p, Err(_) => return },
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut extra = Vec::new();
        while let Ok(p) = permits.clone().try_acquire_owned() {
            extra.push(p);
            if extra.len() >= 63 {
                break;
            }
        }
        let want = 1 + extra.len();
        let fetched = tokio::select! {
            f = consumer.fetch().max_messages(want).expires(Duration::from_secs(1)).messages() => f,
            _ = stop.wait_for(|s| *s) => return,
        };
        let mut permits_left: Vec<_> = std::iter::once(permit).chain(extra).collect();
        let mut messages = match fetched {
            Ok(m) => m,
            Err(e) => {
                tracing::warn!(error = %e, queue, "fetch");
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        while let Some(next) = messages.next().await {
            let Ok(msg) = next else { break };
            let Some(permit) = permits_left.pop() else {
                break;
            };
            let js = js.clone();
            let config = config.clone();
            let cancelled = cancelled.clone();
            tokio::spawn(async move {
                handle(js, msg, &config, &cancelled).await;
                drop(permit);
            });
        }
    }
}

async fn handle(
    js: jetstream::Context,
    msg: jetstream::Message,
    config: &WorkerConfig,
    cancelled: &Mutex<Cancelled>,
) {
    let step: StepMessage = match serde_json::from_slice::<StepMessage>(&msg.payload) {
        Ok(s) if s.v == ENVELOPE_VERSION => s,
        Ok(s) => {
            tracing::error!(subject = %msg.subject, version = s.v, "step message of an unknown version; terminating it");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
        Err(e) => {
            tracing::error!(subject = %msg.subject, error = %e, "unreadable step message; terminating it");
            let _ = msg.ack_with(AckKind::Term).await;
            return;
        }
    };
    let started_at = Utc::now();
    let started = Instant::now();
    let traceparent = msg
        .headers
        .as_ref()
        .and_then(|h| h.get(transport::TRACEPARENT_HEADER))
        .map(|v| v.as_str().to_owned());
    let is_cancelled = cancelled
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .contains(&step.run_id);
    let outcome = if is_cancelled {
        failed(
            ErrorCode::Cancelled,
            "the run was cancelled before this step started".into(),
            None,
        )
    } else {
        execute(&step, &msg, config, traceparent.clone()).await
    };
    let result = StepResult {
        v: ENVELOPE_VERSION,
        run_id: step.run_id,
        step_id: step.step_id.clone(),
        item_index: step.item_index,
        attempt: step.attempt,
        worker_id: config.worker_id.clone(),
        outcome,
        started_at,
        finished_at: Utc::now(),
    };
    let status = match &result.outcome {
        Outcome::Succeeded { .. } => "succeeded",
        Outcome::Failed { .. } => "failed",
    };
    let mut headers = HeaderMap::new();
    headers.insert(
        transport::MSG_ID_HEADER,
        format!("result.{}", step.msg_id()).as_str(),
    );
    if let Some(tp) = &traceparent {
        headers.insert(transport::TRACEPARENT_HEADER, tp.as_str());
    }
    let payload = serde_json::to_vec(&result).unwrap_or_default();
    let published = match js
        .publish_with_headers(transport::RESULTS_SUBJECT, headers, payload.into())
        .await
    {
        Ok(ack) => ack.await.map(|_| ()).map_err(|e| e.to_string()),
        Err(e) => Err(e.to_string()),
    };
    match published {
        Ok(()) => {
            if let Err(e) = msg.double_ack().await {
                // The result is stored; a redelivery re-runs the attempt and its result is
                // deduplicated or fenced by the engine.
                tracing::warn!(error = %e, run_id = %step.run_id, step_id = %step.step_id, "ack failed");
            }
            tracing::info!(run_id = %step.run_id, step_id = %step.step_id, attempt = step.attempt, action = %step.action, status, elapsed_ms = started.elapsed().as_millis() as u64, "step done");
        }
        Err(e) => {
            // Not stored: leave the step to be redelivered rather than lose its outcome.
            tracing::warn!(error = %e, run_id = %step.run_id, step_id = %step.step_id, "result not published; step will be redelivered");
            let _ = msg
                .ack_with(AckKind::Nak(Some(Duration::from_secs(1))))
                .await;
        }
    }
}

fn failed(code: ErrorCode, message: String, retry_after: Option<Duration>) -> Outcome {
    Outcome::Failed {
        error: StepError {
            code,
            message,
            retry_after_ms: retry_after.map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX)),
        },
    }
}

async fn execute(
    step: &StepMessage,
    msg: &jetstream::Message,
    config: &WorkerConfig,
    traceparent: Option<String>,
) -> Outcome {
    let Some((connector, action)) = step.action.split_once('.') else {
        return failed(
            ErrorCode::InvalidInput,
            format!("`{}` is not `connector.action`", step.action),
            None,
        );
    };
    let timeout = Duration::from_millis(step.timeout_ms.max(1));
    let ctx = connectors::ActionContext {
        timeout,
        idempotency_key: Some(step.idempotency_key.clone()),
        traceparent,
        max_response_bytes: config.max_response_bytes,
    };
    let call = connectors::execute(&ctx, connector, action, step.input.clone());
    tokio::pin!(call);
    let deadline = tokio::time::sleep(timeout);
    tokio::pin!(deadline);
    let mut beat = tokio::time::interval(config.heartbeat);
    beat.tick().await;
    loop {
        tokio::select! {
            out = &mut call => {
                return match out {
                    Ok(output) => Outcome::Succeeded { output },
                    Err(e) => failed(e.code, e.message, e.retry_after),
                };
            }
            _ = &mut deadline => {
                return failed(ErrorCode::Timeout, format!("the action ran longer than its {}ms timeout", step.timeout_ms), None);
            }
            _ = beat.tick() => {
                // Tell JetStream the step is alive so it is not redelivered to another worker.
                let _ = msg.ack_with(AckKind::Progress).await;
            }
        }
    }
}
