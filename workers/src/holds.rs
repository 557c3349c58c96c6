//! Fleet-wide rate-limit holds.
//!
//! When a provider answers 429 (or otherwise says when to come back), the worker that saw it
//! records a hold for that connection — or, for the generic HTTP action, that host — on the
//! `SY_HOLDS` stream, one message per key, the newest winning. Every worker follows the stream
//! (an ordered consumer starting from the last message of each key) into an in-memory table,
//! and before running a step for a held key it hands the step back to JetStream with a delay
//! for the rest of the hold instead of calling: the fleet slows down together instead of each
//! worker discovering the limit on its own. The step's attempt number is unchanged, since no
//! call was made. Checking a hold costs no round trip; a hold reaches the other workers as
//! fast as NATS delivers one message.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, consumer};
use futures::StreamExt;
use schemas::envelope::StepMessage;
use schemas::transport;
use serde::{Deserialize, Serialize};

/// Longest hold honoured, whatever a provider asks for.
pub const MAX_HOLD: Duration = Duration::from_secs(3_600);
/// Keys tracked before expired holds are swept out.
const SWEEP_ABOVE: usize = 1_024;
/// Pause before following the stream again after it failed (or does not exist yet).
const REFOLLOW_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, Serialize, Deserialize)]
struct Hold {
    /// Milliseconds since the Unix epoch until which calls wait.
    until_ms: u64,
}

/// The holds in force, by subject, in milliseconds since the Unix epoch.
type Table = Arc<RwLock<HashMap<String, u64>>>;

/// Reads and writes holds. A missing holds stream (an engine of an older release) means
/// nothing is held.
#[derive(Debug, Clone)]
pub(crate) struct Holds {
    js: jetstream::Context,
    table: Table,
}

impl Holds {
    pub(crate) fn new(js: jetstream::Context) -> Self {
        Holds {
            js,
            table: Table::default(),
        }
    }

    /// The task that keeps the table current by following the holds stream; it runs until
    /// aborted.
    pub(crate) fn follower(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        follow(self.js.clone(), self.table.clone())
    }

    /// How long calls under this hold subject must still wait, if a hold is in force.
    pub(crate) fn remaining(&self, subject: &str) -> Option<Duration> {
        let until_ms = *self.table.read().ok()?.get(subject)?;
        let now = now_ms();
        (until_ms > now).then(|| Duration::from_millis(until_ms - now).min(MAX_HOLD))
    }

    /// Holds calls under this subject (a connection or a host) for `wait`, here at once and
    /// in the rest of the fleet as soon as the stream delivers it.
    pub(crate) async fn hold(&self, subject: &str, wait: Duration) {
        let until_ms = now_ms()
            .saturating_add(u64::try_from(wait.min(MAX_HOLD).as_millis()).unwrap_or(u64::MAX));
        record(&self.table, subject, until_ms);
        let Ok(payload) = serde_json::to_vec(&Hold { until_ms }) else {
            return;
        };
        if let Ok(ack) = self.js.publish(subject.to_owned(), payload.into()).await {
            let _ = ack.await;
        }
    }
}

/// Keeps a hold, unless a later one is already known; sweeps expired holds when many are kept.
fn record(table: &Table, subject: &str, until_ms: u64) {
    let Ok(mut table) = table.write() else {
        return;
    };
    if table.len() >= SWEEP_ABOVE {
        let now = now_ms();
        table.retain(|_, until| *until > now);
    }
    let entry = table.entry(subject.to_owned()).or_insert(0);
    *entry = (*entry).max(until_ms);
}

/// Follows the holds stream into the table, from the newest hold of every key onwards.
async fn follow(js: jetstream::Context, table: Table) {
    loop {
        let messages = async {
            let stream = js.get_stream(transport::HOLDS_STREAM).await.ok()?;
            let consumer = stream
                .create_consumer(consumer::pull::OrderedConfig {
                    filter_subject: transport::HOLDS_SUBJECTS.to_owned(),
                    deliver_policy: consumer::DeliverPolicy::LastPerSubject,
                    ..Default::default()
                })
                .await
                .ok()?;
            consumer.messages().await.ok()
        };
        if let Some(mut messages) = messages.await {
            while let Some(next) = messages.next().await {
                match next {
                    Ok(message) => {
                        if let Ok(hold) = serde_json::from_slice::<Hold>(&message.payload) {
                            record(&table, message.subject.as_str(), hold.until_ms);
                        }
                    }
                    Err(error) => {
                        tracing::debug!(%error, "following rate-limit holds");
                        break;
                    }
                }
            }
        }
        tokio::time::sleep(REFOLLOW_AFTER).await;
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
            tool: None,
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
        assert_eq!(subject(&step("slack.post_message", json!({}))), None);
    }
}
