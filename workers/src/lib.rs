//! Switchyard's worker runtime: pulls step messages, runs connector actions, publishes results.
//!
//! # Layout
//! - [`config`]: [`WorkerConfig`], what a worker process is told, and its checks.
//! - `runtime`: [`run`]. Connects, waits for the engine's steps stream, and runs one pull loop
//!   per queue over the durable consumer the fleet shares, never holding more messages than it
//!   has free slots (`concurrency`). Shutdown stops the pulling and drains what runs.
//! - `step`: one message from delivery to ack: parse (an unreadable one is terminated, never
//!   retried), refuse it if its run was cancelled, run the action under the step's timeout while
//!   sending in-progress acks, publish the result, wait for JetStream to store it, then ack.
//! - `cancel`: the runs the engine announced as cancelled, remembered within a size and age
//!   bound; a step of such a run is not started, and one already running is abandoned.
//! - `holds`: fleet-wide rate-limit holds: a 429 with a reset time seen by one worker holds
//!   that connection (or host) for every worker, via the `SY_HOLDS` stream.
//! - `events`: everything the worker logs, one struct per event, never inputs or outputs.
//! - [`error`]: [`WorkerError`], why a worker could not start.
//! - [`metrics`]: [`WorkerMetrics`] and the `--metrics-addr` listener (`/metrics`, `/healthz`,
//!   `/readyz`); the events count into them.
//! - [`telemetry`]: trace context across processes (`traceparent` in NATS headers), so a run
//!   is one trace from the engine through the worker to the provider and back.
//! - [`audit`]: the hash-chained ledger (engine and workers append to it; the engine serves it).
//! - [`vault`]: envelope encryption of stored secrets (shared with the engine, which seals
//!   what workers open).
//! - `credentials`: a step's connection, read from the database and opened in memory for one
//!   call; a revoked or missing connection fails the step before any external call.
//!
//! ```text
//!  SY_STEPS ──pull (≤ free slots)──▶ step task ──connectors::execute──▶ external API
//!  (sy.steps.<queue>)                    │ in-progress acks while it runs
//!                                        ▼
//!  SY_RESULTS ◀── StepResult (Nats-Msg-Id = result.<step msg id>), stored ──▶ then ack the step
//! ```
//!
//! A failed attempt is reported, not retried here: the engine decides from the error code and
//! `retry_after_ms` whether and when to dispatch the next attempt, and the worker's slot is free
//! at once. Nothing is acked before the result it produced is stored, so a crash anywhere means
//! a redelivery, whose result JetStream deduplicates.

pub mod audit;
pub mod config;
pub mod error;
pub mod metrics;
pub mod telemetry;
pub mod vault;

mod budget;
mod cancel;
mod credentials;
mod events;
mod holds;
mod runtime;
mod step;

pub use config::{ConfigError, WorkerConfig, nats_servers};
pub use credentials::{ConnectionAccess, KIND as CONNECTION_KIND, aad as connection_aad};
pub use error::WorkerError;
pub use metrics::WorkerMetrics;
pub use runtime::{run, run_with};
