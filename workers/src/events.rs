//! What the worker reports about itself: one struct per notable event, each logged, and
//! counted in [`crate::metrics::WorkerMetrics`] where it has a metric, in one place.
//!
//! Events carry ids, names, codes and durations only. Step inputs, outputs, action error
//! messages and message headers may hold personal data or secrets and are never logged. Events
//! about one step are emitted inside its `step.execute` span, which carries `run_id`,
//! `step_id`, `item_index`, `attempt`, `workflow`, `connector`, `action` and `trace_id`.

use std::time::Duration;

use schemas::envelope::{ErrorCode, Outcome};

use crate::metrics::{ConnectorLabel, StepLabels, WorkerMetrics};

/// A step message that cannot be run was terminated, so it is never delivered again.
pub(crate) struct StepRejected<'a> {
    pub subject: &'a str,
    /// Its `Nats-Msg-Id`, when it has one.
    pub msg_id: Option<&'a str>,
    pub stream_sequence: Option<u64>,
    pub reason: &'a crate::step::Rejection,
    /// Whether JetStream confirmed the termination.
    pub terminated: bool,
}

impl StepRejected<'_> {
    pub fn emit(&self) {
        tracing::error!(
            subject = self.subject,
            msg_id = self.msg_id,
            stream_sequence = self.stream_sequence,
            terminated = self.terminated,
            reason = %self.reason,
            "step message rejected"
        );
    }
}

/// A step ended, its result is stored, and the step message is acked.
pub(crate) struct StepFinished<'a> {
    pub outcome: &'a Outcome,
    pub elapsed: Duration,
    pub connector: &'a str,
    pub action: &'a str,
    pub metrics: &'a WorkerMetrics,
}

impl StepFinished<'_> {
    pub fn emit(&self) {
        let elapsed_ms = u64::try_from(self.elapsed.as_millis()).unwrap_or(u64::MAX);
        let outcome = match self.outcome {
            Outcome::Succeeded { .. } => "succeeded".to_owned(),
            Outcome::Failed { error } => code_name(error.code),
        };
        self.metrics
            .step_duration
            .get_or_create(&StepLabels {
                connector: self.connector.to_owned(),
                action: self.action.to_owned(),
                outcome,
            })
            .observe(crate::metrics::seconds(self.elapsed));
        match self.outcome {
            Outcome::Succeeded { .. } => {
                tracing::info!(status = "succeeded", elapsed_ms, "step finished");
            }
            Outcome::Failed { error } => tracing::info!(
                status = "failed",
                code = code_name(error.code),
                retry_after_ms = error.retry_after_ms,
                elapsed_ms,
                "step finished"
            ),
        }
    }
}

/// A step started on this worker: how long it waited since the engine dispatched it, and
/// whether it is a retry.
pub(crate) struct StepStarted<'a> {
    pub queued: Duration,
    pub attempt: u32,
    pub connector: &'a str,
    pub metrics: &'a WorkerMetrics,
}

impl StepStarted<'_> {
    pub fn emit(&self) {
        self.metrics
            .schedule_delay
            .observe(crate::metrics::seconds(self.queued));
        if self.attempt > 1 {
            self.metrics
                .retries
                .get_or_create(&ConnectorLabel {
                    connector: self.connector.to_owned(),
                })
                .inc();
        }
        tracing::debug!(
            queued_ms = u64::try_from(self.queued.as_millis()).unwrap_or(u64::MAX),
            "step started"
        );
    }
}

/// A fleet-wide rate-limit hold on the step's connection (or host): either the step was
/// given back to JetStream for the rest of one (`set: false`), or a `429` it got set one.
pub(crate) struct RateLimitHold<'a> {
    pub connection: Option<uuid::Uuid>,
    pub wait: Duration,
    pub set: bool,
    pub metrics: &'a WorkerMetrics,
}

impl RateLimitHold<'_> {
    pub fn emit(&self) {
        self.metrics.rate_limit_hold(self.connection);
        let wait_ms = u64::try_from(self.wait.as_millis()).unwrap_or(u64::MAX);
        if self.set {
            tracing::info!(wait_ms, "rate limited: holding the connection fleet-wide");
        } else {
            tracing::info!(wait_ms, "held by a fleet-wide rate limit");
        }
    }
}

/// The result could not be stored, so the step was given back to JetStream (not acked).
pub(crate) struct ResultNotPublished<'a> {
    pub error: &'a dyn std::fmt::Display,
    /// Whether the negative ack reached JetStream; if not, redelivery waits for `ack_wait`.
    pub nak_sent: bool,
}

impl ResultNotPublished<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            error = %self.error,
            nak_sent = self.nak_sent,
            "result not published; the step will be redelivered"
        );
    }
}

/// The result is stored but the ack of the step was not confirmed. A redelivery re-runs the
/// attempt; its result carries the same `Nats-Msg-Id` and is deduplicated.
pub(crate) struct AckFailed<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl AckFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(error = %self.error, "step ack not confirmed after its result was stored");
    }
}

/// An in-progress ack could not be sent.
pub(crate) struct HeartbeatFailed<'a> {
    pub error: &'a dyn std::fmt::Display,
}

impl HeartbeatFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(error = %self.error, "in-progress ack not sent");
    }
}

/// A queue's consumer is ready and the worker pulls from it.
pub(crate) struct QueueReady<'a> {
    pub queue: &'a str,
    pub consumer: &'a str,
    pub ack_wait: Duration,
    pub heartbeat: Duration,
}

impl QueueReady<'_> {
    pub fn emit(&self) {
        tracing::info!(
            queue = self.queue,
            consumer = self.consumer,
            ack_wait_ms = u64::try_from(self.ack_wait.as_millis()).unwrap_or(u64::MAX),
            heartbeat_ms = u64::try_from(self.heartbeat.as_millis()).unwrap_or(u64::MAX),
            "pulling steps"
        );
    }
}

/// The consumer found has a shorter `ack_wait` than the configured heartbeat allows, so the
/// heartbeat was shortened to match.
pub(crate) struct HeartbeatShortened<'a> {
    pub queue: &'a str,
    pub configured: Duration,
    pub ack_wait: Duration,
    pub used: Duration,
}

impl HeartbeatShortened<'_> {
    pub fn emit(&self) {
        tracing::warn!(
            queue = self.queue,
            configured_ms = u64::try_from(self.configured.as_millis()).unwrap_or(u64::MAX),
            consumer_ack_wait_ms = u64::try_from(self.ack_wait.as_millis()).unwrap_or(u64::MAX),
            heartbeat_ms = u64::try_from(self.used.as_millis()).unwrap_or(u64::MAX),
            "the queue's consumer has a shorter ack_wait than this worker's configuration; heartbeating faster"
        );
    }
}

/// The steps stream or the queue's consumer is not there (yet); the worker waits for it.
pub(crate) struct WaitingForQueue<'a> {
    pub queue: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl WaitingForQueue<'_> {
    pub fn emit(&self) {
        tracing::info!(queue = self.queue, error = %self.error, "waiting for the steps stream");
    }
}

/// Pulling from a queue failed; the worker backs off and sets the consumer up again.
pub(crate) struct PullFailed<'a> {
    pub queue: &'a str,
    pub error: &'a dyn std::fmt::Display,
}

impl PullFailed<'_> {
    pub fn emit(&self) {
        tracing::warn!(queue = self.queue, error = %self.error, "pulling steps failed");
    }
}

/// The worker is connecting and about to pull.
pub(crate) struct Started<'a> {
    pub worker_id: &'a str,
    pub queues: &'a [String],
    pub concurrency: usize,
}

impl Started<'_> {
    pub fn emit(&self) {
        tracing::info!(
            worker_id = self.worker_id,
            queues = ?self.queues,
            concurrency = self.concurrency,
            "worker started"
        );
    }
}

/// `run` is about to return.
pub(crate) struct Stopped<'a> {
    pub worker_id: &'a str,
}

impl Stopped<'_> {
    pub fn emit(&self) {
        tracing::info!(worker_id = self.worker_id, "worker stopped");
    }
}

/// Shutdown began: no more pulling, steps in flight may finish.
pub(crate) struct Draining {
    pub running: usize,
    pub drain_timeout: Duration,
}

impl Draining {
    pub fn emit(&self) {
        tracing::info!(
            running = self.running,
            drain_timeout_ms = u64::try_from(self.drain_timeout.as_millis()).unwrap_or(u64::MAX),
            "worker draining"
        );
    }
}

/// Steps still running when the drain timeout passed were abandoned un-acked.
pub(crate) struct DrainTimedOut {
    pub abandoned: usize,
}

impl DrainTimedOut {
    pub fn emit(&self) {
        tracing::warn!(
            abandoned = self.abandoned,
            "drain timeout passed; abandoned steps are redelivered after ack_wait"
        );
    }
}

/// The stable name of an error code, as it appears in results and API responses.
pub(crate) fn code_name(code: ErrorCode) -> String {
    match serde_json::to_value(code) {
        Ok(serde_json::Value::String(name)) => name,
        _ => format!("{code:?}"),
    }
}
