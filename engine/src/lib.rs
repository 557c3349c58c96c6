//! The Switchyard engine and the `switchyard` command line.
//!
//! # Layout
//! - [`cli`]: the `switchyard` verbs. `main.rs` only parses arguments and calls [`cli::run`].
//! - [`planner`]: the DAG semantics as a pure function from a run's state to decisions
//!   (dispatch, fan out, skip, emit, finish).
//! - [`store`]: every run transition in one database transaction, with the outbox rows of the
//!   messages it causes; results are fenced by attempt and recorded in batches.
//! - [`retry`]: whether and when a failed attempt runs again (policy, `Retry-After`).
//! - [`topology`]: JetStream streams and the shared results consumer.
//! - [`triggers`]: what starts runs from outside: signed webhooks, events, schedules.
//! - [`policy`]: each workspace's allowed connectors and actions, and agents' connections.
//! - [`approvals`]: approval gates: who may decide, one decision per gate, timeouts.
//! - [`audit`]: the hash-chained ledger of every integration call and administrative change.
//! - [`auth`]: principals, bearer tokens and the role each API route needs.
//! - [`connections`]: accounts on external systems; credentials sealed, resolved by workers.
//! - [`oauth`]: the OAuth 2.0 authorization code flow with PKCE (`/v1/oauth/…`) that makes
//!   an `oauth2_code` connection active; workers refresh its tokens.
//! - [`vault`] and [`secrets`]: secrets sealed with envelope encryption, opened only in memory.
//! - [`keys`]: master key rotation, re-wrapping secrets and credentials under the current key
//!   in batches while engines and workers keep opening them (`switchyard admin rotate-key`).
//! - [`starter`]: concurrent run starts committed in batches.
//! - [`service`]: the engine process: relay, results loop, scheduler, HTTP API ([`api`]).
//! - [`dev`]: `switchyard dev`, the whole stack in one process tree.
//! - [`client`]: the engine API client behind the CLI's client verbs.
//! - [`progress`]: the live step table of `switchyard run --wait`.
//! - [`bench`]: `switchyard bench`, the local benchmark.
//! - [`telemetry`]: the log format and the OTLP trace exporter; [`metrics`]: the engine's
//!   Prometheus metrics, served at `/metrics`.
//!
//! A run flows: API or trigger → [`store::start_runs`] (runs + steps + outbox in one
//! transaction, batched by [`starter`]) → relay
//! publishes step messages → workers → results → [`store::record_results`] (batched, fenced)
//! → [`planner::plan`] → more outbox rows, until the run finishes.

pub mod api;
pub mod approvals;
pub mod auth;
pub mod bench;
pub mod cli;
pub mod client;
pub mod connections;
pub mod dev;
pub mod keys;
pub mod metrics;
pub mod oauth;
pub mod planner;
pub mod policy;
pub mod progress;
pub mod retry;
pub mod secrets;
pub mod service;
pub mod starter;
pub mod store;
pub mod telemetry;
pub mod topology;
pub mod triggers;

pub use workers::{audit, vault};
