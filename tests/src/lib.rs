//! Harness for end-to-end tests against real processes.
//!
//! # Layout
//! - [`nats`]: [`NatsServer`], a private `nats-server -js` on an ephemeral port, killed on drop;
//!   it can be stopped, killed and restarted on the same port and store directory.
//! - [`db`]: [`TestDatabase`], a fresh database per test on either [`Backend`]: a SQLite file in
//!   a temp dir, or a new database on a PostgreSQL server (see [`db`] for where that comes from).
//! - [`cluster`]: [`NatsCluster`], three `nats-server` nodes started from
//!   `deploy/nats/nats.conf` on loopback, each of which can be killed.
//! - [`wait`]: [`wait_until`], polling under a deadline, which is how tests wait for anything.
//!
//! A test needs about three lines of setup:
//!
//! ```no_run
//! # async fn example() -> anyhow::Result<()> {
//! let nats = switchyard_tests::NatsServer::start().await?;
//! let db = switchyard_tests::TestDatabase::postgres().await?;
//! let (client, conn) = (nats.client().await?, db.connect().await?);
//! # Ok(()) }
//! ```

use std::sync::Once;

pub mod cluster;
pub mod db;
pub mod nats;
mod postgres;
pub mod wait;

pub use cluster::NatsCluster;
pub use db::{Backend, TestDatabase, for_each_backend};
pub use nats::NatsServer;
pub use wait::{Check, free_port, wait_until};

/// Process-wide setup every test needs; idempotent and cheap, so call it freely.
///
/// Installs the ring crypto provider for rustls, because several of our dependencies link
/// rustls and it refuses to pick a provider on its own when more than one could be meant. Also
/// installs a `tracing` subscriber writing through the test harness (so output is captured per
/// test), filtered by `RUST_LOG`. The harness's own constructors call this, so tests only need to
/// call it when they use neither a server nor a database.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Another part of the binary may have installed it first; either way ring is in place.
        let _ = rustls::crypto::ring::default_provider().install_default();
        let filter = tracing_subscriber::EnvFilter::try_from_default_env()
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn"));
        let _ = tracing_subscriber::fmt()
            .with_env_filter(filter)
            .with_test_writer()
            .try_init();
    });
}
