//! Switchyard connectors: what each integration offers, described by a manifest.
//!
//! # Layout
//! - [`manifest`]: the [`manifest::Manifest`] of a connector (auth types it accepts, its
//!   default base URL, its actions and their side effects and scopes).
//! - [`registry`]: the built-in manifests, served to the validator through
//!   [`schemas::catalog::ActionCatalog`].
//!
//! - [`sdk`]: the [`sdk::Connector`] trait every integration implements, and the
//!   [`sdk::Call`] its actions send requests through (base URL, credential, fleet-wide
//!   budget, trace header, caps, classification).
//! - [`catalog`]: the built-in connectors, one module each.
//! - [`custom`]: custom tools, a connector built from a `schemas::tool::CustomTool`
//!   definition (a REST API registered without code); [`openapi`] imports OpenAPI 3.0 and
//!   3.1 documents into that definition.
//! - [`action`]: the [`ActionContext`] an action runs in, and [`execute`].
//! - [`http`]: the shared HTTP client, failure classification and rate-limit headers.
//! - [`error`]: [`ActionError`], with a stable code from `schemas::envelope::ErrorCode`.
//! - [`credential`]: a connection's `auth` split into clear config and a sealed secret, and
//!   applied to a request; scrubbing of secrets from outputs.
//! - [`oauth`]: the OAuth 2.0 token endpoint client (authorization code with PKCE, client
//!   credentials, refresh, JWT bearer), its failures classified by status and `error` code.
//! - [`service_account`]: service-account keys (PKCS#8 PEM, RSA) and the RS256 JWT assertions
//!   they sign for the JWT bearer grant (RFC 7523).
//! - [`redact`]: secret-looking keys and values taken out of what the audit ledger stores.
//!
//! This crate knows nothing of NATS or the engine.

pub mod action;
pub mod catalog;
pub mod credential;
pub mod custom;
pub mod error;
pub mod http;
pub mod manifest;
pub mod oauth;
pub mod openapi;
pub mod redact;
pub mod registry;
pub mod sdk;
pub mod service_account;

pub use action::{ActionContext, execute};
pub use credential::Credential;
pub use error::ActionError;
pub use manifest::{ActionManifest, AuthType, Category, Manifest, RateLimit};
pub use registry::Registry;
pub use sdk::{Call, Connector};
