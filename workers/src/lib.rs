//! Switchyard's worker runtime: pulls step messages, runs connector actions, publishes results.
//!
//! Not built yet: the durable orchestration work (engine and worker fleet over JetStream) adds
//! it. The crate exists now so the dependency direction `engine → workers → connectors →
//! schemas` is fixed from the start.
