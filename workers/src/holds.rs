//! Fleet-wide rate-limit holds.
//!
//! When a provider answers 429 (or otherwise says when to come back), the worker that saw it
//! records a hold for that connection — or, for the generic HTTP action, that host — on the
//! `SY_HOLDS` stream, one message per key, the newest winning. Every worker checks the hold
//! before running a step for the same key and, while it lasts, hands the step back to
//! JetStream with a delay instead of calling: the fleet slows down together instead of each
//! worker discovering the limit on its own. The step's attempt number is unchanged, since no
//! call was made.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream;
use schemas::envelope::StepMessage;
use schemas::transport;
use serde::{Deserialize, Serialize};
use tokio::sync::OnceCell;

/// Longest hold honoured, whatever a provider asks for.
pub const MAX_HOLD: Duration = Duration::from_secs(3_600);

#[derive(Debug, Serialize, Deserialize)]
struct Hold {
    /// Milliseconds since the Unix epoch until which calls wait.
    until_ms: u64,
}

/// Reads and writes holds; tolerates a missing holds stream (an engine of an older release),
/// in which case nothing is held.
#[derive(Debug)]
pub(crate) struct Holds {
    js: jetstream::Context,
    stream: OnceCell<jetstream::stream::Stream>,
}

impl Holds {
    pub(crate) fn new(js: jetstream::Context) -> Self {
        Holds {
            js,
            stream: OnceCell::new(),
        }
    }

    async fn stream(&self) -> Option<&jetstream::stream::Stream> {
        self.stream
            .get_or_try_init(|| async { self.js.get_stream(transport::HOLDS_STREAM).await })
            .await
            .ok()
    }

    /// How long calls under this hold subject must still wait, if a hold is in force.
    pub(crate) async fn remaining(&self, subject: &str) -> Option<Duration> {
        let message = self
            .stream()
            .await?
            .get_last_raw_message_by_subject(subject)
            .await
            .ok()?;
        let hold: Hold = serde_json::from_slice(&message.payload).ok()?;
        let now = now_ms();
        (hold.until_ms > now).then(|| Duration::from_millis(hold.until_ms - now).min(MAX_HOLD))
    }

    /// Holds calls under this subject (a connection or a host) for `wait`.
    pub(crate) async fn hold(&self, subject: &str, wait: Duration) {
        let until_ms = now_ms()
            .saturating_add(u64::try_from(wait.min(MAX_HOLD).as_millis()).unwrap_or(u64::MAX));
        let Ok(payload) = serde_json::to_vec(&Hold { until_ms }) else {
            return;
        };
        if let Ok(ack) = self.js.publish(subject.to_owned(), payload.into()).await {
            let _ = ack.await;
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The hold key of a step: its connection, or for `http.request` without one, the URL's host.
/// Hex keeps any host name a single subject token.
pub(crate) fn subject(step: &StepMessage) -> Option<String> {
    if let Some(id) = step.connection_id {
        return Some(format!("{}.conn.{}", transport::HOLDS_PREFIX, id.simple()));
    }
    if step.action != "http.request" {
        return None;
    }
    let url = step.input.get("url")?.as_str()?;
    let rest = url.split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host = authority.rsplit('@').next()?.to_ascii_lowercase();
    if host.is_empty() {
        return None;
    }
    let hex: String = host.bytes().map(|b| format!("{b:02x}")).collect();
    Some(format!("{}.host.{hex}", transport::HOLDS_PREFIX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(action: &str, input: serde_json::Value) -> StepMessage {
        StepMessage {
            v: 1,
            workspace_id: uuid::Uuid::nil(),
            run_id: uuid::Uuid::nil(),
            step_id: "s".into(),
            item_index: None,
            attempt: 1,
            action: action.into(),
            connection_id: None,
            input,
            timeout_ms: 1_000,
            idempotency_key: "k".into(),
            dispatched_at: chrono::Utc::now(),
        }
    }

    #[test]
    fn http_steps_are_held_per_host_and_credentials_do_not_leak_into_the_key() {
        let a = subject(&step(
            "http.request",
            json!({ "url": "https://user:pw@API.example.com:8443/x?y=1" }),
        ));
        let b = subject(&step(
            "http.request",
            json!({ "url": "https://api.example.com:8443/other" }),
        ));
        assert_eq!(a, b);
        let a = a.unwrap_or_default();
        assert!(!a.contains("pw") && !a.contains("user"), "{a}");
        assert!(a.starts_with("sy.holds.host."));
        assert_eq!(subject(&step("slack.chat_post_message", json!({}))), None);
    }
}
