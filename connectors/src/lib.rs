//! Switchyard connectors: what each integration offers, described by a manifest.
//!
//! # Layout
//! - [`manifest`]: the [`manifest::Manifest`] of a connector (auth types it accepts, its
//!   default base URL, its actions and their side effects and scopes).
//! - [`registry`]: the built-in manifests, served to the validator through
//!   [`schemas::catalog::ActionCatalog`].
//!
//! This crate knows nothing of NATS or the engine. Action execution (the `Connector` trait and
//! the shared HTTP layer) is not built yet: today the manifests tell the validator which
//! `connector.action` names exist.

pub mod manifest;
pub mod registry;

pub use manifest::{ActionManifest, AuthType, Manifest};
pub use registry::Registry;
