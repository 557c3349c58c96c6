//! [`run`]: connect, set up one consumer per queue, pull only as much as there are free slots,
//! and on shutdown drain.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use async_nats::jetstream::{self, AckKind, consumer};
use futures::StreamExt;
use schemas::transport;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, watch};

use crate::cancel::{self, Cancellations};
use crate::config::WorkerConfig;
use crate::credentials::ConnectionAccess;
use crate::error::WorkerError;
use crate::{events, step};

/// How long one pull request waits for a message. The server answers as soon as it has any, so
/// this only bounds how long an idle worker takes to notice shutdown, at the price of one
/// request per queue per interval.
const PULL_EXPIRES: Duration = Duration::from_secs(1);
/// Most steps of a queue's consumer delivered and not yet acked, over the whole fleet.
const MAX_ACK_PENDING: i64 = 10_000;
/// First pause after a failure to reach the stream or to pull; doubled up to [`BACKOFF_MAX`].
const BACKOFF_MIN: Duration = Duration::from_millis(100);
/// Longest pause between tries to reach the stream or to pull.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// After the drain timeout, how long abandoned steps get to let go of their slots.
pub(crate) const ABANDON_GRACE: Duration = Duration::from_secs(5);
/// How long shutdown waits to send what is still buffered (negative acks, terminations).
pub(crate) const FLUSH_TIMEOUT: Duration = Duration::from_secs(5);

/// What every step task of a worker shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub client: async_nats::Client,
    /// One HTTP client for every action this worker runs, created on its runtime and held to
    /// the configured outbound policy.
    pub http: connectors::http::Client,
    /// Fleet-wide rate-limit holds.
    pub holds: crate::holds::Holds,
    /// Fleet-wide request budgets of connections.
    pub budgets: Arc<crate::budget::Budgets>,
    pub js: jetstream::Context,
    pub config: WorkerConfig,
    pub cancellations: Arc<Cancellations>,
    /// Steps' connections, read and opened per step.
    pub connections: crate::credentials::Resolver,
    /// How many steps are running; shutdown waits for zero.
    running: watch::Sender<usize>,
    /// What this worker counts.
    pub metrics: Arc<crate::metrics::WorkerMetrics>,
    /// Whether every queue's consumer is bound, for `/readyz`.
    readiness: Arc<crate::metrics::Readiness>,
}

/// Counts one step as running for as long as it lives, however its task ends.
struct Running(Arc<Shared>);

impl Running {
    fn start(shared: &Arc<Shared>) -> Self {
        shared.running.send_modify(|n| *n += 1);
        shared.metrics.in_flight.inc();
        Running(shared.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.send_modify(|n| *n -= 1);
        self.0.metrics.in_flight.dec();
    }
}

/// Runs a worker until `shutdown` resolves, then drains the steps in flight.
///
/// The worker connects (retrying until NATS is reachable), listens for run cancellations,
/// waits for the engine to have created the steps stream, and pulls from each queue's
/// durable consumer, running at most `concurrency` steps at once. When `shutdown` resolves it
/// stops pulling, gives `drain_timeout` to the steps in flight, abandons the rest un-acked (so
/// JetStream redelivers them after `ack_wait`), and returns.
///
/// It returns an error only when it cannot start; once running, it rides out NATS outages.
///
/// ```no_run
/// # async fn example() -> Result<(), workers::WorkerError> {
/// let config = workers::WorkerConfig {
///     nats_url: "nats://127.0.0.1:4222".into(),
///     ..Default::default()
/// };
/// let shutdown = async {
///     let _ = tokio::signal::ctrl_c().await;
/// };
/// workers::run(config, shutdown).await
/// # }
/// ```
pub async fn run(
    config: WorkerConfig,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    run_with(config, None, shutdown).await
}

/// [`run`], able to run steps that name a connection: `access` reads connections from the
/// database and opens their credentials. Without it such steps fail with `internal`, saying so.
pub async fn run_with(
    config: WorkerConfig,
    access: Option<ConnectionAccess>,
    shutdown: impl Future<Output = ()> + Send,
) -> Result<(), WorkerError> {
    config.validate()?;
    // Retrying the first connection lets workers start before NATS does (as pods do); only a
    // URL or option that can never work is an error.
    let client = async_nats::ConnectOptions::new()
        .name(config.worker_id.as_str())
        .retry_on_initial_connect()
        .connect(crate::config::nats_servers(&config.nats_url))
        .await
        .map_err(WorkerError::Connect)?;
    let cancellations = Cancellations::new();
    // Subscribed before the first pull, so no step starts without cancellations being heard.
    let subscriber = client
        .subscribe(transport::CANCEL_SUBJECT)
        .await
        .map_err(WorkerError::Subscribe)?;
    let listener = tokio::spawn(cancel::listen(subscriber, cancellations.clone()));

    let concurrency = config.concurrency;
    let drain_timeout = config.drain_timeout;
    // Each queue reserves slots for its pull requests only up to its share, so an idle queue
    // waiting for messages does not hold slots another queue could use.
    let share = concurrency.div_ceil(config.queues.len()).max(1);
    let queues = config.queues.clone();
    let outbound = config.allow_outbound.clone();
    let metrics = Arc::new(crate::metrics::WorkerMetrics::new());
    let readiness = Arc::new(crate::metrics::Readiness::new(
        config.queues.len(),
        client.clone(),
    ));
    let (stop_tx, stop) = watch::channel(false);
    let metrics_listener = match config.metrics_addr {
        Some(addr) => Some(
            crate::metrics::serve(addr, metrics.clone(), readiness.clone(), stop.clone()).await?,
        ),
        None => None,
    };
    let shared = Arc::new(Shared {
        http: connectors::http::new_client(outbound.clone()),
        holds: crate::holds::Holds::new(jetstream::new(client.clone())),
        budgets: Arc::new(crate::budget::Budgets::new(jetstream::new(client.clone()))),
        js: jetstream::new(client.clone()),
        client: client.clone(),
        config,
        cancellations,
        connections: crate::credentials::Resolver::new(access, outbound, metrics.clone()),
        running: watch::channel(0).0,
        metrics,
        readiness,
    });
    let holds_follower = tokio::spawn(shared.holds.follower());
    let slots = Arc::new(Semaphore::new(concurrency));
    let (abandon_tx, abandon) = watch::channel(false);
    events::Started {
        worker_id: &shared.config.worker_id,
        queues: &shared.config.queues,
        concurrency,
    }
    .emit();
    let mut loops = Vec::new();
    for (index, queue) in queues.into_iter().enumerate() {
        loops.push(tokio::spawn(
            Puller {
                shared: shared.clone(),
                index,
                queue,
                slots: slots.clone(),
                share,
                stop: stop.clone(),
                abandon: abandon.clone(),
            }
            .run(),
        ));
    }

    shutdown.await;
    events::Draining {
        running: *shared.running.borrow(),
        drain_timeout,
    }
    .emit();
    let _ = stop_tx.send(true);
    let mut idle = shared.running.subscribe();
    let drained = tokio::time::timeout(drain_timeout, async {
        // The pull loops first: until they have ended, a step may still start.
        for pull in &mut loops {
            let _ = pull.await;
        }
        let _ = idle.wait_for(|running| *running == 0).await;
    })
    .await;
    if drained.is_err() {
        for pull in &loops {
            pull.abort();
        }
        let abandoned = *shared.running.borrow();
        if abandoned > 0 {
            events::DrainTimedOut { abandoned }.emit();
        }
        // Dropped where they stand: no ack, so JetStream redelivers them after `ack_wait`.
        let _ = abandon_tx.send(true);
        // They let go at their next await; waiting for that means nothing of theirs (an ack,
        // a result) is sent after this function has returned.
        let _ = tokio::time::timeout(ABANDON_GRACE, idle.wait_for(|running| *running == 0)).await;
    }
    listener.abort();
    holds_follower.abort();
    if let Some(metrics_listener) = metrics_listener {
        let _ = metrics_listener.await;
    }
    let _ = tokio::time::timeout(FLUSH_TIMEOUT, client.flush()).await;
    events::Stopped {
        worker_id: &shared.config.worker_id,
    }
    .emit();
    Ok(())
}

/// The pull loop of one queue.
struct Puller {
    shared: Arc<Shared>,
    /// The queue's place in the configuration, for readiness.
    index: usize,
    queue: String,
    slots: Arc<Semaphore>,
    share: usize,
    stop: watch::Receiver<bool>,
    abandon: watch::Receiver<bool>,
}

impl Puller {
    async fn run(mut self) {
        let mut backoff = Backoff::new();
        // Set up (again, after a failed pull: the consumer or the stream may have been
        // recreated) and pull until the next failure.
        while let Some((consumer, heartbeat)) = self.consumer().await {
            self.shared.readiness.set_bound(self.index, true);
            match self.pull(&consumer, heartbeat, &mut backoff).await {
                Pulled::Stopped => return,
                Pulled::Failed => {
                    self.shared.readiness.set_bound(self.index, false);
                    if backoff.wait(&mut self.stop).await {
                        return;
                    }
                }
            }
        }
    }

    /// Gets or creates the queue's durable consumer, waiting (until stopped) for the engine to
    /// create the stream. Also returns the heartbeat to use with it.
    async fn consumer(&mut self) -> Option<(consumer::PullConsumer, Duration)> {
        let mut backoff = Backoff::new();
        let name = transport::worker_consumer(&self.queue);
        loop {
            let (js, queue, config) = (&self.shared.js, &self.queue, &self.shared.config);
            let attempt = async {
                let stream = js
                    .get_stream(transport::STEPS_STREAM)
                    .await
                    .map_err(SetupError::Stream)?;
                stream
                    .get_or_create_consumer(&name, consumer_config(queue, config))
                    .await
                    .map_err(SetupError::Consumer)
            };
            let outcome = tokio::select! {
                outcome = attempt => outcome,
                _ = self.stop.wait_for(|stopped| *stopped) => return None,
            };
            match outcome {
                Ok(consumer) => {
                    let ack_wait = consumer.cached_info().config.ack_wait;
                    let configured = self.shared.config.heartbeat;
                    let heartbeat = heartbeat_for(configured, ack_wait);
                    if heartbeat != configured {
                        events::HeartbeatShortened {
                            queue: &self.queue,
                            configured,
                            ack_wait,
                            used: heartbeat,
                        }
                        .emit();
                    }
                    events::QueueReady {
                        queue: &self.queue,
                        consumer: &name,
                        ack_wait,
                        heartbeat,
                    }
                    .emit();
                    return Some((consumer, heartbeat));
                }
                Err(error) => events::WaitingForQueue {
                    queue: &self.queue,
                    error: &error,
                }
                .emit(),
            }
            if backoff.wait(&mut self.stop).await {
                return None;
            }
        }
    }

    /// Pulls and starts steps until stopped or until a pull fails.
    async fn pull(
        &mut self,
        consumer: &consumer::PullConsumer,
        heartbeat: Duration,
        backoff: &mut Backoff,
    ) -> Pulled {
        loop {
            // Pull only as many messages as there are free slots: a message held by a worker
            // that cannot start it yet is a message an idle worker cannot have.
            let first = tokio::select! {
                biased;
                _ = self.stop.wait_for(|stopped| *stopped) => return Pulled::Stopped,
                slot = self.slots.clone().acquire_owned() => match slot {
                    Ok(slot) => slot,
                    Err(_closed) => return Pulled::Stopped,
                },
            };
            let mut slots = vec![first];
            while slots.len() < self.share {
                match self.slots.clone().try_acquire_owned() {
                    Ok(slot) => slots.push(slot),
                    Err(_) => break,
                }
            }
            let batch = consumer
                .fetch()
                .max_messages(slots.len())
                .expires(PULL_EXPIRES)
                .messages()
                .await;
            let mut batch = match batch {
                Ok(batch) => batch,
                Err(error) => {
                    events::PullFailed {
                        queue: &self.queue,
                        error: &error,
                    }
                    .emit();
                    return Pulled::Failed;
                }
            };
            // The pull request stays open on the server until it is answered or expires, so
            // read it to its end even when stopping, to give back what it still delivers.
            while let Some(next) = batch.next().await {
                match next {
                    Ok(msg) => self.start(msg, &mut slots, heartbeat).await,
                    Err(error) => {
                        events::PullFailed {
                            queue: &self.queue,
                            error: &error,
                        }
                        .emit();
                        return Pulled::Failed;
                    }
                }
            }
            backoff.reset();
        }
    }

    /// Starts a delivered step in a slot of its own, or gives it straight back when stopping.
    async fn start(
        &self,
        msg: jetstream::Message,
        slots: &mut Vec<OwnedSemaphorePermit>,
        heartbeat: Duration,
    ) {
        let slot = match slots.pop() {
            Some(slot) if !*self.stop.borrow() => slot,
            // Stopping (or, never expected, more messages than requested): let another
            // worker have it now rather than after `ack_wait`.
            _ => {
                let _ = msg.ack_with(AckKind::Nak(None)).await;
                return;
            }
        };
        // Counted before it is spawned, so shutdown cannot see zero while it is about to start.
        let running = Running::start(&self.shared);
        let shared = self.shared.clone();
        let mut abandon = self.abandon.clone();
        tokio::spawn(async move {
            let (_slot, _running) = (slot, running);
            tokio::select! {
                () = step::handle(&shared, msg, heartbeat) => {}
                _ = abandon.wait_for(|abandoned| *abandoned) => {}
            }
        });
    }
}

/// How a pull loop ended.
enum Pulled {
    Stopped,
    Failed,
}

/// Why a queue's consumer could not be set up.
#[derive(Debug, thiserror::Error)]
enum SetupError {
    #[error("stream {name}: {0}", name = transport::STEPS_STREAM)]
    Stream(#[source] jetstream::context::GetStreamError),
    #[error("consumer: {0}")]
    Consumer(#[source] jetstream::stream::ConsumerError),
}

/// The durable consumer every worker of `queue` shares.
fn consumer_config(queue: &str, config: &WorkerConfig) -> consumer::pull::Config {
    let name = transport::worker_consumer(queue);
    consumer::pull::Config {
        durable_name: Some(name.clone()),
        name: Some(name),
        description: Some(format!("Switchyard workers of queue {queue}")),
        filter_subject: transport::step_subject(queue),
        ack_policy: consumer::AckPolicy::Explicit,
        ack_wait: config.ack_wait,
        // Unlimited: a step is never dropped for being delivered too often. Poison messages
        // are terminated by the worker; lost attempts are the engine reconciler's to settle.
        max_deliver: -1,
        max_ack_pending: MAX_ACK_PENDING,
        ..Default::default()
    }
}

/// The heartbeat to use with a consumer whose `ack_wait` is `ack_wait`: the configured one,
/// unless the consumer (created earlier, by another configuration) expects acks sooner.
fn heartbeat_for(configured: Duration, ack_wait: Duration) -> Duration {
    if ack_wait.is_zero() || configured.saturating_mul(2) <= ack_wait {
        configured
    } else {
        (ack_wait / 3).max(Duration::from_millis(10))
    }
}

/// Exponential back-off between [`BACKOFF_MIN`] and [`BACKOFF_MAX`], cut short by stopping.
#[derive(Debug)]
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn new() -> Self {
        Backoff { next: BACKOFF_MIN }
    }

    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    /// Waits the next pause; true if stopped meanwhile.
    async fn wait(&mut self, stop: &mut watch::Receiver<bool>) -> bool {
        let pause = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let stopped = tokio::select! {
            () = tokio::time::sleep(pause) => false,
            _ = stop.wait_for(|stopped| *stopped) => true,
        };
        stopped || *stop.borrow()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_worker_with_a_bad_configuration_does_not_start() {
        let never = std::future::pending::<()>();
        let config = WorkerConfig {
            concurrency: 0,
            ..Default::default()
        };
        let error = run(config, never).await.unwrap_err();
        assert!(matches!(error, WorkerError::Config(_)), "{error}");
        assert!(error.to_string().contains("concurrency"), "{error}");

        let config = WorkerConfig {
            nats_url: "nats://[not-an-address".into(),
            ..Default::default()
        };
        let error = run(config, std::future::pending::<()>()).await.unwrap_err();
        assert!(matches!(error, WorkerError::Connect(_)), "{error}");
    }

    #[test]
    fn the_configured_heartbeat_is_kept_when_the_consumer_allows_it() {
        let s = Duration::from_secs;
        assert_eq!(heartbeat_for(s(10), s(30)), s(10));
        assert_eq!(heartbeat_for(s(15), s(30)), s(15));
        // An older consumer with a shorter ack_wait wins: heartbeats must beat it.
        assert_eq!(heartbeat_for(s(10), s(6)), s(2));
    }

    #[test]
    fn the_consumer_is_durable_explicit_and_never_gives_up_on_a_step() {
        let config = WorkerConfig {
            ack_wait: Duration::from_secs(7),
            ..Default::default()
        };
        let c = consumer_config("bulk", &config);
        assert_eq!(c.durable_name.as_deref(), Some("workers-bulk"));
        assert_eq!(c.filter_subject, "sy.steps.bulk");
        assert_eq!(c.ack_policy, consumer::AckPolicy::Explicit);
        assert_eq!(c.ack_wait, Duration::from_secs(7));
        assert_eq!(c.max_deliver, -1);
    }
}
