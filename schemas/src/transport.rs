//! Names on the NATS side: streams, subjects, consumers and headers.
//!
//! Engines and workers are separate processes, often of different builds during a rollout,
//! so every name they share is defined once, here.

/// Work-queue stream of step messages; one subject per queue.
pub const STEPS_STREAM: &str = "SY_STEPS";
/// Subjects of [`STEPS_STREAM`].
pub const STEPS_SUBJECTS: &str = "sy.steps.>";
/// Work-queue stream of step results, consumed by every engine copy through one consumer.
pub const RESULTS_STREAM: &str = "SY_RESULTS";
/// Subject results are published to.
pub const RESULTS_SUBJECT: &str = "sy.results";
/// Stream of events (`emit` steps and the events API).
pub const EVENTS_STREAM: &str = "SY_EVENTS";
/// Subjects of [`EVENTS_STREAM`].
pub const EVENTS_SUBJECTS: &str = "sy.events.>";
/// Key-value bucket of fleet-wide request budgets: one key per connection holding its
/// theoretical arrival time (GCRA), updated with compare-and-set by every worker.
pub const BUDGETS_BUCKET: &str = "SY_BUDGETS";
/// The stream behind [`BUDGETS_BUCKET`] (`KV_` and the bucket's name, as key-value stores
/// name theirs).
pub const BUDGETS_STREAM: &str = "KV_SY_BUDGETS";

/// Stream of fleet-wide rate-limit holds, one message per connection or host, newest wins.
pub const HOLDS_STREAM: &str = "SY_HOLDS";
/// Subject prefix of [`HOLDS_STREAM`].
pub const HOLDS_PREFIX: &str = "sy.holds";
/// Subjects of [`HOLDS_STREAM`].
pub const HOLDS_SUBJECTS: &str = "sy.holds.>";
/// Core NATS subject on which the engine announces cancelled runs to every worker.
pub const CANCEL_SUBJECT: &str = "sy.control.cancel";
/// The durable consumer every engine copy shares on [`RESULTS_STREAM`].
pub const ENGINE_RESULTS_CONSUMER: &str = "engine-results";
/// The durable consumer every engine copy shares on [`EVENTS_STREAM`], to start the runs of
/// event triggers.
pub const ENGINE_EVENTS_CONSUMER: &str = "engine-events";
/// The queue a step goes to unless its definition names one.
pub const DEFAULT_QUEUE: &str = "default";

/// JetStream's deduplication header.
pub const MSG_ID_HEADER: &str = "Nats-Msg-Id";
/// W3C trace context header, carried from the trigger through every step.
pub const TRACEPARENT_HEADER: &str = "traceparent";
/// The name of the workflow a step message belongs to, for the worker's span and logs. A
/// header, not an envelope field, so that workers that do not know it still read the message.
pub const WORKFLOW_HEADER: &str = "Switchyard-Workflow";

/// Subject of step messages for `queue`.
pub fn step_subject(queue: &str) -> String {
    format!("sy.steps.{queue}")
}

/// Subject of events named `name`.
pub fn event_subject(name: &str) -> String {
    format!("sy.events.{name}")
}

/// The durable consumer the workers of `queue` share.
pub fn worker_consumer(queue: &str) -> String {
    format!("workers-{queue}")
}
