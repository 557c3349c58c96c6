//! Switchyard's contracts: everything that crosses a process boundary, and no I/O.
//!
//! # Layout
//! - [`source`] parses YAML or JSON text into a tree that remembers where every node came
//!   from, so a problem found much later can still point at a line and column.
//! - [`definition`] is the workflow definition format as typed Rust values (the JSON Schema
//!   in `schemas/json/workflow.schema.json` is generated from these types).
//! - [`validate`] turns source text into a [`definition::Workflow`], or into *every* problem
//!   found, each with a path, a line, a column and a message a person can act on.
//! - [`expr`] is the `{{ … }}` expression language used inside definitions.
//! - [`catalog`] is how the validator learns which `connector.action` names exist, without
//!   depending on the connectors crate.
//! - [`duration`] parses the `30s` / `1m` / `24h` durations used throughout definitions.
//! - [`envelope`] holds the versioned messages exchanged over NATS (step, result, event).
//! - [`db`] holds the database entities and migrations (declarations; the engine runs them).
//! - [`tool`] is the custom tool format: a REST API registered as a connector without code,
//!   and its checks.
//! - [`transport`] names the NATS streams, subjects, consumers and headers.
//!
//! Data flows one way: text → [`source::Document`] → typed [`definition::Workflow`] →
//! semantic checks → [`validate::Validated`].

pub mod catalog;
pub mod db;
pub mod definition;
pub mod duration;
pub mod envelope;
pub mod expr;
pub mod json_schema;
pub mod source;
pub mod tool;
pub mod transport;
pub mod validate;
