//! [`WorkerError`]: why [`run`](crate::run) gave up.
//!
//! Only start-up can fail. Once the worker runs, trouble with one step (an unreadable message,
//! a failing action, a result that could not be published) is logged and handed back to
//! JetStream, and trouble with NATS itself is waited out, because a worker that exits on a
//! blip would take its whole fleet down with it.

use crate::config::ConfigError;

/// Why a worker could not start.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The configuration was refused.
    #[error("invalid worker configuration: {0}")]
    Config(#[from] ConfigError),
    /// The NATS URL or connect options were refused. (An unreachable server is not an error:
    /// the worker keeps trying.) The URL is not repeated here because it may hold a password.
    #[error("connecting to NATS: {0}")]
    Connect(#[source] async_nats::ConnectError),
    /// The subscription to run cancellations could not be made.
    #[error("subscribing to run cancellations: {0}")]
    Subscribe(#[source] async_nats::SubscribeError),
    /// The `--metrics-addr` listener could not bind.
    #[error(transparent)]
    Metrics(#[from] crate::metrics::ListenError),
}
