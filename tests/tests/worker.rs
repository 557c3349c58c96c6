//! The worker runtime end to end: `workers::run` against a real nats-server and a fake external
//! API over real HTTP, with the streams created as the engine creates them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use async_nats::HeaderMap;
use async_nats::jetstream::{self, consumer, stream};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{StatusCode, Uri};
use axum::response::IntoResponse;
use axum::routing::get;
use chrono::Utc;
use futures::StreamExt;
use schemas::envelope::{ENVELOPE_VERSION, ErrorCode, Outcome, StepMessage, StepResult};
use schemas::transport;
use serde_json::{Value, json};
use switchyard_tests::{NatsServer, wait_until};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use uuid::Uuid;
use workers::{WorkerConfig, WorkerError};

/// How long any one expectation may take before the test fails.
const WITHIN: Duration = Duration::from_secs(20);
const TRACEPARENT: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

// ---------------------------------------------------------------------------------------------
// The fake external API.

/// Records every request's path and answers what each route is for.
#[derive(Debug)]
struct Fake {
    requests: Mutex<Vec<String>>,
    in_flight: AtomicUsize,
    max_in_flight: AtomicUsize,
    release: watch::Sender<bool>,
}

impl Fake {
    fn hits(&self, path: &str) -> usize {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|p| *p == path)
            .count()
    }

    fn total_hits(&self) -> usize {
        self.requests
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len()
    }

    fn in_flight(&self) -> usize {
        self.in_flight.load(Ordering::SeqCst)
    }

    /// Lets every request to `/block/...`, now and later, finish.
    fn release(&self) {
        self.release.send_replace(true);
    }
}

/// Counts a request as in flight for as long as the handler lives, even when the client hangs
/// up and the handler is dropped.
struct InFlight(Arc<Fake>);

impl InFlight {
    fn enter(fake: Arc<Fake>) -> Self {
        let now = fake.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        fake.max_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(fake)
    }
}

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
    }
}

fn note(fake: &Fake, uri: &Uri) {
    fake.requests
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .push(uri.path().to_owned());
}

async fn unknown(State(fake): State<Arc<Fake>>, uri: Uri) -> StatusCode {
    note(&fake, &uri);
    StatusCode::NOT_FOUND
}

async fn start_fake() -> Result<(String, Arc<Fake>)> {
    let fake = Arc::new(Fake {
        requests: Mutex::new(Vec::new()),
        in_flight: AtomicUsize::new(0),
        max_in_flight: AtomicUsize::new(0),
        release: watch::channel(false).0,
    });
    let app = Router::new()
        .route(
            "/ok/{tag}",
            get(
                |State(f): State<Arc<Fake>>, uri: Uri, Path(tag): Path<String>| async move {
                    note(&f, &uri);
                    axum::Json(json!({ "hello": "world", "tag": tag }))
                },
            ),
        )
        .route(
            "/status/{code}",
            get(
                |State(f): State<Arc<Fake>>, uri: Uri, Path(code): Path<u16>| async move {
                    note(&f, &uri);
                    let status = StatusCode::from_u16(code).unwrap_or(StatusCode::IM_A_TEAPOT);
                    if status == StatusCode::TOO_MANY_REQUESTS {
                        (status, [("retry-after", "2")], "slow down").into_response()
                    } else {
                        (status, "no").into_response()
                    }
                },
            ),
        )
        .route(
            "/slow/{ms}",
            get(
                |State(f): State<Arc<Fake>>, uri: Uri, Path(ms): Path<u64>| async move {
                    note(&f, &uri);
                    let _in_flight = InFlight::enter(f.clone());
                    // The provider's own slowness, not a wait in the test.
                    tokio::time::sleep(Duration::from_millis(ms)).await;
                    axum::Json(json!({ "slept_ms": ms }))
                },
            ),
        )
        .route(
            "/block/{tag}",
            get(|State(f): State<Arc<Fake>>, uri: Uri| async move {
                note(&f, &uri);
                let _in_flight = InFlight::enter(f.clone());
                let mut released = f.release.subscribe();
                let _ = released.wait_for(|r| *r).await;
                axum::Json(json!({ "released": true }))
            }),
        )
        .route(
            "/big",
            get(|State(f): State<Arc<Fake>>, uri: Uri| async move {
                note(&f, &uri);
                "x".repeat(2 * 1024 * 1024)
            }),
        )
        .fallback(unknown)
        .with_state(fake.clone());
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], 0))).await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((format!("http://{addr}"), fake))
}

// ---------------------------------------------------------------------------------------------
// NATS: the streams as the engine makes them, publishing steps, reading results.

/// Creates a work-queue stream exactly as the engine's topology does at start-up (work-queue
/// retention, file storage, a 20-minute duplicate window). To be replaced by the engine's
/// topology module once the tests can depend on it for this.
async fn create_stream(js: &jetstream::Context, name: &str, subject: &str) -> Result<()> {
    js.get_or_create_stream(stream::Config {
        name: name.to_owned(),
        subjects: vec![subject.to_owned()],
        retention: stream::RetentionPolicy::WorkQueue,
        storage: stream::StorageType::File,
        duplicate_window: Duration::from_secs(20 * 60),
        ..Default::default()
    })
    .await
    .with_context(|| format!("creating stream {name}"))?;
    Ok(())
}

/// One nats-server, the fake API, and a results consumer standing in for the engine's.
struct Rig {
    nats: NatsServer,
    client: async_nats::Client,
    js: jetstream::Context,
    api: String,
    fake: Arc<Fake>,
}

impl Rig {
    /// Everything, with both streams created.
    async fn start() -> Result<Self> {
        let rig = Self::without_streams().await?;
        create_stream(&rig.js, transport::STEPS_STREAM, transport::STEPS_SUBJECTS).await?;
        create_stream(
            &rig.js,
            transport::RESULTS_STREAM,
            transport::RESULTS_SUBJECT,
        )
        .await?;
        Ok(rig)
    }

    async fn without_streams() -> Result<Self> {
        switchyard_tests::init();
        let nats = NatsServer::start().await?;
        let client = nats.client().await?;
        let js = jetstream::new(client.clone());
        let (api, fake) = start_fake().await?;
        Ok(Rig {
            nats,
            client,
            js,
            api,
            fake,
        })
    }

    fn config(&self, concurrency: usize) -> WorkerConfig {
        WorkerConfig {
            nats_url: self.nats.url(),
            concurrency,
            worker_id: "test-worker".into(),
            // The fake API listens on 127.0.0.1.
            allow_outbound: "127.0.0.1".parse().expect("an allowlist"),
            ..Default::default()
        }
    }

    /// An `http.request` step calling `path` on the fake API.
    fn step(&self, path: &str) -> StepMessage {
        let run = Uuid::now_v7();
        StepMessage {
            v: ENVELOPE_VERSION,
            workspace_id: Uuid::nil(),
            run_id: run,
            step_id: "call".into(),
            item_index: None,
            attempt: 1,
            action: "http.request".into(),
            connection_id: None,
            input: json!({ "url": format!("{}{path}", self.api) }),
            timeout_ms: 15_000,
            idempotency_key: format!("{run}.call"),
            dispatched_at: Utc::now(),
            tool: None,
        }
    }

    /// Announces a run's cancellation as the engine does, and waits until NATS has it.
    async fn cancel(&self, run_id: Uuid) -> Result<()> {
        self.client
            .publish(transport::CANCEL_SUBJECT, run_id.to_string().into())
            .await?;
        self.client.flush().await?;
        Ok(())
    }

    /// Publishes a step as the engine does: `Nats-Msg-Id` and the trace context in headers.
    async fn publish(&self, step: &StepMessage) -> Result<()> {
        let mut headers = HeaderMap::new();
        headers.insert(transport::MSG_ID_HEADER, step.msg_id().as_str());
        headers.insert(transport::TRACEPARENT_HEADER, TRACEPARENT);
        self.publish_raw(headers, serde_json::to_vec(step)?).await
    }

    async fn publish_raw(&self, headers: HeaderMap, payload: Vec<u8>) -> Result<()> {
        self.publish_to(transport::DEFAULT_QUEUE, headers, payload)
            .await
    }

    async fn publish_to(&self, queue: &str, headers: HeaderMap, payload: Vec<u8>) -> Result<()> {
        self.js
            .publish_with_headers(transport::step_subject(queue), headers, payload.into())
            .await?
            .await?;
        Ok(())
    }

    /// The next result on `SY_RESULTS`, acked, with its headers.
    async fn next_result(&self) -> Result<(StepResult, HeaderMap)> {
        let stream = self.js.get_stream(transport::RESULTS_STREAM).await?;
        let results = stream
            .get_or_create_consumer(
                transport::ENGINE_RESULTS_CONSUMER,
                consumer::pull::Config {
                    durable_name: Some(transport::ENGINE_RESULTS_CONSUMER.to_owned()),
                    ack_policy: consumer::AckPolicy::Explicit,
                    ..Default::default()
                },
            )
            .await?;
        let deadline = tokio::time::Instant::now() + WITHIN;
        while tokio::time::Instant::now() < deadline {
            let mut batch = results
                .fetch()
                .max_messages(1)
                .expires(Duration::from_secs(1))
                .messages()
                .await?;
            if let Some(message) = batch.next().await {
                let message = message.map_err(anyhow::Error::from_boxed)?;
                message
                    .double_ack()
                    .await
                    .map_err(anyhow::Error::from_boxed)?;
                let result = serde_json::from_slice(&message.payload)?;
                return Ok((result, message.headers.clone().unwrap_or_default()));
            }
        }
        bail!("no step result within {WITHIN:?}")
    }

    /// The next `n` results, keyed by run.
    async fn results(&self, n: usize) -> Result<HashMap<Uuid, StepResult>> {
        let mut out = HashMap::new();
        while out.len() < n {
            let (result, _) = self.next_result().await?;
            out.insert(result.run_id, result);
        }
        Ok(out)
    }

    /// How many messages a stream holds.
    async fn stream_messages(&self, name: &str) -> Result<u64> {
        Ok(self.js.get_stream(name).await?.info().await?.state.messages)
    }

    /// The workers' consumer on the default queue, as the server sees it now.
    async fn worker_consumer(&self) -> Result<consumer::Info> {
        let mut consumer: consumer::PullConsumer = self
            .js
            .get_stream(transport::STEPS_STREAM)
            .await?
            .get_consumer(&transport::worker_consumer(transport::DEFAULT_QUEUE))
            .await
            .map_err(anyhow::Error::from_boxed)?;
        Ok(consumer.info().await?.clone())
    }

    /// Waits until the steps stream holds no message: every step was acked or terminated.
    async fn wait_steps_drained(&self) -> Result<()> {
        wait_until(
            || async { anyhow::Ok(self.stream_messages(transport::STEPS_STREAM).await? == 0) },
            WITHIN,
        )
        .await
        .context("steps left in the stream")
    }
}

/// `workers::run` in a task, stopped through a oneshot as a binary's signal handler would.
struct Worker {
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), WorkerError>>,
}

impl Worker {
    fn start(config: WorkerConfig) -> Self {
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(workers::run(config, async move {
            let _ = stopped.await;
        }));
        Worker { stop, task }
    }

    /// Signals shutdown and waits for `run` to return.
    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        Self::join(self.task).await
    }

    async fn join(task: JoinHandle<Result<(), WorkerError>>) -> Result<()> {
        tokio::time::timeout(WITHIN, task)
            .await
            .context("the worker did not stop")??
            .context("the worker failed")
    }
}

fn failure(result: &StepResult) -> Result<&schemas::envelope::StepError> {
    match &result.outcome {
        Outcome::Failed { error } => Ok(error),
        Outcome::Succeeded { output } => bail!("expected a failure, got success: {output}"),
    }
}

fn output(result: &StepResult) -> Result<&Value> {
    match &result.outcome {
        Outcome::Succeeded { output } => Ok(output),
        Outcome::Failed { error } => bail!("expected success, got {error:?}"),
    }
}

// ---------------------------------------------------------------------------------------------
// One test per behaviour.

#[tokio::test]
async fn a_step_runs_and_its_result_is_published_before_the_step_is_acked() -> Result<()> {
    let rig = Rig::start().await?;
    let worker = Worker::start(rig.config(4));
    let step = rig.step("/ok/first");
    rig.publish(&step).await?;

    let (result, headers) = rig.next_result().await?;
    let output = output(&result)?;
    assert_eq!(output["status"], 200);
    assert_eq!(output["body"], json!({ "hello": "world", "tag": "first" }));
    assert_eq!(
        (
            result.run_id,
            result.step_id.as_str(),
            result.attempt,
            result.item_index
        ),
        (step.run_id, "call", 1, None)
    );
    assert_eq!(result.worker_id, "test-worker");
    assert!(result.started_at <= result.finished_at);
    // Deduplicated per attempt, and on the run's trace.
    assert_eq!(
        headers.get(transport::MSG_ID_HEADER).map(|v| v.as_str()),
        Some(format!("result.{}", step.msg_id()).as_str())
    );
    assert_eq!(
        headers
            .get(transport::TRACEPARENT_HEADER)
            .map(|v| v.as_str()),
        Some(TRACEPARENT)
    );
    rig.wait_steps_drained().await?;
    assert_eq!(rig.fake.hits("/ok/first"), 1);
    worker.stop().await
}

#[tokio::test]
async fn failed_steps_are_reported_with_their_code_and_free_the_worker_at_once() -> Result<()> {
    let rig = Rig::start().await?;
    // The 429 comes from another host name than the others, so the hold it causes (on that
    // host) does not hold them back.
    let mut limited = rig.step("/status/429");
    limited.input =
        json!({ "url": format!("{}/status/429", rig.api.replace("127.0.0.1", "localhost")) });
    let (down, next) = (rig.step("/status/500"), rig.step("/ok/next"));
    for step in [&limited, &down, &next] {
        rig.publish(step).await?;
    }
    // One slot: each step can start only once the one before it has let go of the worker.
    let worker = Worker::start(rig.config(1));
    let results = rig.results(3).await?;

    let rate_limited = failure(&results[&limited.run_id])?;
    assert_eq!(rate_limited.code, ErrorCode::RateLimited);
    assert_eq!(rate_limited.retry_after_ms, Some(2000));
    let unavailable = failure(&results[&down.run_id])?;
    assert_eq!(unavailable.code, ErrorCode::UpstreamUnavailable);
    assert_eq!(output(&results[&next.run_id])?["status"], 200);
    // The worker did not wait out the provider's Retry-After: the engine schedules the retry.
    let all_three = (results[&next.run_id].finished_at - results[&limited.run_id].started_at)
        .to_std()
        .unwrap_or_default();
    assert!(
        all_three < Duration::from_secs(2),
        "the three steps took {all_three:?}, as long as the Retry-After"
    );
    rig.wait_steps_drained().await?;
    assert_eq!(
        rig.fake.total_hits(),
        3,
        "a failed step was retried by the worker"
    );
    worker.stop().await
}

#[tokio::test]
async fn a_step_past_its_timeout_fails_with_timeout_and_frees_its_slot() -> Result<()> {
    let rig = Rig::start().await?;
    let mut slow = rig.step("/slow/30000");
    slow.timeout_ms = 300;
    let next = rig.step("/ok/after-timeout");
    rig.publish(&slow).await?;
    rig.publish(&next).await?;
    let worker = Worker::start(rig.config(1));

    let results = rig.results(2).await?;
    let timed_out = &results[&slow.run_id];
    assert_eq!(failure(timed_out)?.code, ErrorCode::Timeout);
    let took = (timed_out.finished_at - timed_out.started_at)
        .to_std()
        .unwrap_or_default();
    assert!(took < Duration::from_secs(10), "the timeout took {took:?}");
    assert_eq!(output(&results[&next.run_id])?["status"], 200);
    rig.wait_steps_drained().await?;
    worker.stop().await
}

#[tokio::test]
async fn heartbeats_keep_a_long_step_from_being_redelivered_to_another_worker() -> Result<()> {
    let rig = Rig::start().await?;
    let config = WorkerConfig {
        ack_wait: Duration::from_secs(2),
        heartbeat: Duration::from_millis(500),
        ..rig.config(1)
    };
    let first = Worker::start(WorkerConfig {
        worker_id: "first".into(),
        ..config.clone()
    });
    let second = Worker::start(WorkerConfig {
        worker_id: "second".into(),
        ..config
    });
    // The provider takes 5 s, more than twice the consumer's ack wait.
    let long = rig.step("/slow/5000");
    rig.publish(&long).await?;

    let (result, _) = rig.next_result().await?;
    assert_eq!(output(&result)?["status"], 200);
    assert_eq!(rig.fake.hits("/slow/5000"), 1, "the step ran twice");
    let consumer = rig.worker_consumer().await?;
    assert_eq!(
        consumer.delivered.consumer_sequence, 1,
        "the step was redelivered"
    );
    rig.wait_steps_drained().await?;
    first.stop().await?;
    second.stop().await
}

#[tokio::test]
async fn malformed_step_messages_are_terminated_and_the_worker_goes_on() -> Result<()> {
    let rig = Rig::start().await?;
    let worker = Worker::start(rig.config(2));
    let mut headers = HeaderMap::new();
    headers.insert(transport::MSG_ID_HEADER, "garbage.1");
    rig.publish_raw(headers, b"{ this is not a step".to_vec())
        .await?;
    let mut newer = serde_json::to_value(rig.step("/ok/from-the-future"))?;
    newer["v"] = json!(ENVELOPE_VERSION + 1);
    rig.publish_raw(HeaderMap::new(), serde_json::to_vec(&newer)?)
        .await?;
    let good = rig.step("/ok/good");
    rig.publish(&good).await?;

    let (result, _) = rig.next_result().await?;
    assert_eq!(result.run_id, good.run_id);
    assert_eq!(output(&result)?["status"], 200);
    rig.wait_steps_drained().await?;
    let consumer = rig.worker_consumer().await?;
    // Each delivered once: terminated messages are not redelivered.
    assert_eq!(consumer.delivered.consumer_sequence, 3);
    assert_eq!(consumer.num_ack_pending, 0);
    assert_eq!(rig.fake.hits("/ok/from-the-future"), 0);
    worker.stop().await
}

#[tokio::test]
async fn a_step_of_a_cancelled_run_is_not_executed() -> Result<()> {
    let rig = Rig::start().await?;
    let worker = Worker::start(rig.config(1));
    // Occupy the only slot, so the cancelled step is pulled only after the announcement
    // has reached the worker.
    let blocker = rig.step("/block/blocker");
    rig.publish(&blocker).await?;
    wait_until(|| async { rig.fake.in_flight() == 1 }, WITHIN).await?;

    let cancelled = rig.step("/ok/cancelled");
    rig.cancel(cancelled.run_id).await?;
    rig.publish(&cancelled).await?;
    rig.fake.release();

    let results = rig.results(2).await?;
    assert_eq!(output(&results[&blocker.run_id])?["status"], 200);
    let error = failure(&results[&cancelled.run_id])?;
    assert_eq!(error.code, ErrorCode::Cancelled);
    assert_eq!(rig.fake.hits("/ok/cancelled"), 0, "the cancelled step ran");
    rig.wait_steps_drained().await?;
    worker.stop().await
}

#[tokio::test]
async fn a_running_step_of_a_cancelled_run_is_abandoned() -> Result<()> {
    let rig = Rig::start().await?;
    let worker = Worker::start(rig.config(1));
    let running = rig.step("/block/running");
    rig.publish(&running).await?;
    wait_until(|| async { rig.fake.in_flight() == 1 }, WITHIN).await?;

    rig.cancel(running.run_id).await?;
    let (result, _) = rig.next_result().await?;
    assert_eq!(result.run_id, running.run_id);
    assert_eq!(failure(&result)?.code, ErrorCode::Cancelled);
    rig.wait_steps_drained().await?;
    // The abandoned call was hung up on.
    wait_until(|| async { rig.fake.in_flight() == 0 }, WITHIN).await?;
    worker.stop().await
}

#[tokio::test]
async fn a_worker_runs_at_most_its_concurrency_and_pulls_no_more() -> Result<()> {
    let rig = Rig::start().await?;
    let steps: Vec<StepMessage> = (0..10).map(|i| rig.step(&format!("/block/{i}"))).collect();
    for step in &steps {
        rig.publish(step).await?;
    }
    let worker = Worker::start(rig.config(4));
    wait_until(|| async { rig.fake.in_flight() == 4 }, WITHIN).await?;
    // Four delivered and not acked, six left for other workers: nothing was prefetched.
    let consumer = rig.worker_consumer().await?;
    assert_eq!(
        (consumer.num_ack_pending, consumer.num_pending),
        (4, 6),
        "{consumer:?}"
    );

    rig.fake.release();
    let results = rig.results(10).await?;
    assert!(results.values().all(|r| output(r).is_ok()));
    assert_eq!(rig.fake.max_in_flight.load(Ordering::SeqCst), 4);
    rig.wait_steps_drained().await?;
    worker.stop().await
}

#[tokio::test]
async fn shutdown_lets_a_step_in_flight_finish_and_publish_before_run_returns() -> Result<()> {
    let rig = Rig::start().await?;
    let worker = Worker::start(rig.config(2));
    let in_flight = rig.step("/block/in-flight");
    rig.publish(&in_flight).await?;
    wait_until(|| async { rig.fake.in_flight() == 1 }, WITHIN).await?;

    let _ = worker.stop.send(());
    // Published after shutdown began: the worker must leave it for others.
    let late = rig.step("/ok/late");
    rig.publish(&late).await?;
    // Once the worker has stopped pulling (no pull request left open), run would return now
    // if it did not wait for the step in flight.
    wait_until(
        || async { anyhow::Ok(rig.worker_consumer().await?.num_waiting == 0) },
        WITHIN,
    )
    .await?;
    rig.client.flush().await?;
    ensure!(
        !worker.task.is_finished(),
        "run returned with a step in flight"
    );
    rig.fake.release();
    Worker::join(worker.task).await?;

    // run has returned: the result is already stored, and the step acked.
    assert_eq!(rig.stream_messages(transport::RESULTS_STREAM).await?, 1);
    let (result, _) = rig.next_result().await?;
    assert_eq!(result.run_id, in_flight.run_id);
    assert_eq!(output(&result)?["status"], 200);
    assert_eq!(
        rig.fake.hits("/ok/late"),
        0,
        "a step was started after shutdown"
    );
    // Only the late step is left, for the next worker.
    assert_eq!(rig.stream_messages(transport::STEPS_STREAM).await?, 1);
    Ok(())
}

#[tokio::test]
async fn steps_unfinished_at_the_drain_timeout_are_left_for_redelivery() -> Result<()> {
    let rig = Rig::start().await?;
    let config = WorkerConfig {
        ack_wait: Duration::from_secs(2),
        heartbeat: Duration::from_millis(500),
        drain_timeout: Duration::from_millis(300),
        ..rig.config(1)
    };
    let worker = Worker::start(config.clone());
    let stuck = rig.step("/block/stuck");
    rig.publish(&stuck).await?;
    wait_until(|| async { rig.fake.in_flight() == 1 }, WITHIN).await?;
    worker.stop().await?;

    // Abandoned: no result, not acked.
    assert_eq!(rig.stream_messages(transport::RESULTS_STREAM).await?, 0);
    assert_eq!(rig.stream_messages(transport::STEPS_STREAM).await?, 1);
    // Another worker gets it once the ack wait has passed.
    rig.fake.release();
    let successor = Worker::start(config);
    let (result, _) = rig.next_result().await?;
    assert_eq!(result.run_id, stuck.run_id);
    assert_eq!(output(&result)?["status"], 200);
    rig.wait_steps_drained().await?;
    successor.stop().await
}

#[tokio::test]
async fn a_result_that_cannot_be_stored_leaves_the_step_unacked() -> Result<()> {
    let rig = Rig::without_streams().await?;
    // The results stream is missing, so no result can be stored.
    create_stream(&rig.js, transport::STEPS_STREAM, transport::STEPS_SUBJECTS).await?;
    let worker = Worker::start(rig.config(1));
    let step = rig.step("/ok/unstored");
    rig.publish(&step).await?;

    // Given back and run again, rather than acked with its outcome lost.
    wait_until(|| async { rig.fake.hits("/ok/unstored") >= 2 }, WITHIN).await?;
    assert_eq!(rig.stream_messages(transport::STEPS_STREAM).await?, 1);

    create_stream(
        &rig.js,
        transport::RESULTS_STREAM,
        transport::RESULTS_SUBJECT,
    )
    .await?;
    let (result, _) = rig.next_result().await?;
    assert_eq!(result.run_id, step.run_id);
    assert_eq!(output(&result)?["status"], 200);
    rig.wait_steps_drained().await?;
    worker.stop().await
}

#[tokio::test]
async fn an_output_too_large_for_one_nats_message_is_reported_as_a_failure() -> Result<()> {
    let rig = Rig::start().await?;
    let worker = Worker::start(rig.config(1));
    let big = rig.step("/big");
    rig.publish(&big).await?;

    let (result, _) = rig.next_result().await?;
    let error = failure(&result)?;
    assert_eq!(error.code, ErrorCode::InvalidInput);
    assert!(error.message.contains("NATS message"), "{}", error.message);
    rig.wait_steps_drained().await?;
    assert_eq!(rig.fake.hits("/big"), 1);
    worker.stop().await
}

#[tokio::test]
async fn a_worker_started_before_the_streams_waits_for_them() -> Result<()> {
    let rig = Rig::without_streams().await?;
    // Overhears the worker asking JetStream for the steps stream.
    let mut asks = rig
        .client
        .subscribe(format!("$JS.API.STREAM.INFO.{}", transport::STEPS_STREAM))
        .await?;
    rig.client.flush().await?;
    let worker = Worker::start(rig.config(1));
    for _ in 0..2 {
        tokio::time::timeout(WITHIN, asks.next())
            .await
            .context("the worker never asked for the steps stream")?;
    }
    // It asked twice and is still waiting; now the engine comes up and creates the streams.
    ensure!(!worker.task.is_finished(), "the worker gave up");
    create_stream(&rig.js, transport::STEPS_STREAM, transport::STEPS_SUBJECTS).await?;
    create_stream(
        &rig.js,
        transport::RESULTS_STREAM,
        transport::RESULTS_SUBJECT,
    )
    .await?;
    let step = rig.step("/ok/late-engine");
    rig.publish(&step).await?;

    let (result, _) = rig.next_result().await?;
    assert_eq!(output(&result)?["status"], 200);
    worker.stop().await
}

#[tokio::test]
async fn a_worker_serves_every_queue_it_is_given() -> Result<()> {
    let rig = Rig::start().await?;
    let worker = Worker::start(WorkerConfig {
        queues: vec!["default".into(), "bulk".into()],
        ..rig.config(2)
    });
    let (default, bulk) = (rig.step("/ok/default"), rig.step("/ok/bulk"));
    rig.publish(&default).await?;
    let mut headers = HeaderMap::new();
    headers.insert(transport::MSG_ID_HEADER, bulk.msg_id().as_str());
    rig.publish_to("bulk", headers, serde_json::to_vec(&bulk)?)
        .await?;

    let results = rig.results(2).await?;
    assert_eq!(output(&results[&default.run_id])?["body"]["tag"], "default");
    assert_eq!(output(&results[&bulk.run_id])?["body"]["tag"], "bulk");
    rig.wait_steps_drained().await?;
    worker.stop().await
}

#[tokio::test]
async fn a_worker_without_an_allowlist_refuses_a_loopback_address_before_any_request() -> Result<()>
{
    let rig = Rig::start().await?;
    let step = rig.step("/ok/internal");
    rig.publish(&step).await?;
    // The default policy: public addresses only. The fake listens on 127.0.0.1.
    let worker = Worker::start(WorkerConfig {
        allow_outbound: connectors::http::OutboundPolicy::default(),
        ..rig.config(1)
    });
    let results = rig.results(1).await?;

    let refused = failure(&results[&step.run_id])?;
    assert_eq!(refused.code, ErrorCode::Forbidden, "{}", refused.message);
    assert!(
        refused.message.contains("127.0.0.1") && refused.message.contains("--allow-outbound"),
        "the refusal names the address and how to open it: {}",
        refused.message
    );
    rig.wait_steps_drained().await?;
    assert_eq!(rig.fake.total_hits(), 0, "the fake was reached");
    worker.stop().await
}
