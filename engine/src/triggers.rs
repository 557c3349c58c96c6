//! Triggers: how external systems start runs.
//!
//! So far: [`signature`], the verification of webhook deliveries for every scheme a webhook
//! trigger may name. The webhook route, stored secrets, event and schedule triggers build on it.

pub mod signature;
