//! The HTTP layer every connector uses: one client, failure classification in one place,
//! rate-limit header parsing, bounded response reading.

pub mod classify;
pub mod request;

use std::time::Duration;

/// Connect timeout of every outbound request.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Default cap on a response body.
pub const DEFAULT_MAX_RESPONSE_BYTES: usize = 10 * 1024 * 1024;

/// A client for one process's actions: connection pooling across every action it runs.
///
/// Callers create it once per runtime and pass it in [`crate::ActionContext`]: pooled
/// connections are driven by tasks on the runtime that opened them, so a client must not
/// outlive or cross runtimes.
pub fn new_client() -> reqwest::Client {
    reqwest::Client::builder()
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::limited(5))
        .user_agent(concat!("switchyard/", env!("CARGO_PKG_VERSION")))
        .build()
        .unwrap_or_else(|_| reqwest::Client::new())
}
