//! Waiting without sleeping for a fixed time.

use std::future::Future;
use std::time::Duration;

use anyhow::{Result, anyhow};

/// How often [`wait_until`] re-checks: short enough to keep tests fast, long enough not to
/// hammer a server that is still starting.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Polls `check` until it reports success, failing once `within` has elapsed.
///
/// `check` may return `bool`, or `Result<bool, E>` when asking can itself fail (a query against a
/// server that is restarting, say): an error counts as "not yet" and the last one is reported if
/// the deadline passes.
///
/// ```no_run
/// # async fn example(nats: &switchyard_tests::NatsServer) -> anyhow::Result<()> {
/// use std::time::Duration;
/// let client = nats.client().await?;
/// switchyard_tests::wait_until(
///     || async { client.connection_state() == async_nats::connection::State::Connected },
///     Duration::from_secs(10),
/// )
/// .await?;
/// # Ok(()) }
/// ```
pub async fn wait_until<F, Fut>(mut check: F, within: Duration) -> Result<()>
where
    F: FnMut() -> Fut,
    Fut: Future,
    Fut::Output: Check,
{
    let deadline = tokio::time::Instant::now() + within;
    let mut last_error = None;
    loop {
        // Bounded too: a check stuck on a request to a server that went away would otherwise
        // hold the test far past its deadline.
        match tokio::time::timeout_at(deadline, check()).await {
            Ok(outcome) => match outcome.passed() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(error) => last_error = Some(error),
            },
            Err(_elapsed) => {
                last_error.get_or_insert_with(|| anyhow!("the last check was still running"));
            }
        }
        if tokio::time::Instant::now() >= deadline {
            return Err(match last_error {
                Some(error) => error.context(format!("condition not met within {within:?}")),
                None => anyhow!("condition not met within {within:?}"),
            });
        }
        tokio::time::sleep(POLL_INTERVAL).await;
    }
}

/// What a [`wait_until`] check may return.
pub trait Check {
    /// `Ok(true)` when the condition holds.
    fn passed(self) -> Result<bool>;
}

impl Check for bool {
    fn passed(self) -> Result<bool> {
        Ok(self)
    }
}

impl<E: Into<anyhow::Error>> Check for Result<bool, E> {
    fn passed(self) -> Result<bool> {
        self.map_err(Into::into)
    }
}

/// A TCP port on 127.0.0.1 that was free a moment ago.
///
/// Another process can take it before it is used, so prefer letting a server bind port 0 and
/// report what it got; use this only for programs that cannot do that, and retry on a clash.
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}
