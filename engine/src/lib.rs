//! The Switchyard engine and the `switchyard` command line.
//!
//! # Layout
//! - [`cli`]: the `switchyard` verbs. `main.rs` only parses arguments and calls [`cli::run`].
//!
//! The service itself (HTTP API, triggers, orchestration) arrives with the durable
//! orchestration work; today the binary validates definitions and prints the JSON Schema.

pub mod cli;
