//! The Switchyard engine and the `switchyard` command line.
//!
//! # Layout
//! - [`cli`]: the `switchyard` verbs. `main.rs` only parses arguments and calls [`cli::run`].
//! - [`planner`]: the DAG semantics as a pure function from a run's state to decisions
//!   (dispatch, fan out, skip, emit, finish). The orchestration that applies them inside one
//!   database transaction per batch of results is being built on top of it.
//!
//! The service itself (HTTP API, triggers, orchestration) arrives with the durable
//! orchestration work; today the binary validates definitions and prints the JSON Schema.

pub mod cli;
pub mod planner;
pub mod retry;
pub mod topology;
