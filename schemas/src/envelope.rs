//! Versioned messages exchanged over NATS: a step to run, its result, and events.
//!
//! Every envelope carries `v`, the envelope version, so engines and workers of adjacent
//! releases can tell what they are reading. Secrets never travel here: a step names its
//! connection by id and the worker resolves the credential itself. Trace context travels in
//! message headers, not in these bodies.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

/// Current version of every envelope in this module.
pub const ENVELOPE_VERSION: u16 = 1;

/// Deepest chain of event-triggered runs: a run started by an event at depth `d` emits events
/// at depth `d + 1`, and an `emit` that would exceed this fails with
/// [`ErrorCode::EventDepthExceeded`] instead of publishing.
pub const MAX_EVENT_DEPTH: u32 = 8;

/// The stable vocabulary of error codes in step results, API errors and audit records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The provider (or our fleet-wide budget) said slow down.
    RateLimited,
    /// Credentials were missing or rejected.
    Unauthorized,
    /// Credentials were valid but lacked a scope or permission.
    Forbidden,
    /// The connection was deleted or revoked.
    ConnectionRevoked,
    /// The connection's OAuth grant needs a person to sign in again.
    NeedsReauth,
    /// The connection no longer holds a scope the action needs (it was reduced after the
    /// workflow was applied).
    InsufficientScope,
    /// A person rejected the step at its approval gate.
    ApprovalRejected,
    /// Nobody decided the step's approval gate within its timeout.
    ApprovalTimeout,
    /// Inputs were rejected, by us or by the provider.
    InvalidInput,
    /// The thing acted on does not exist.
    NotFound,
    /// The action conflicts with the current state.
    Conflict,
    /// The provider is down or answered 5xx.
    UpstreamUnavailable,
    /// The attempt ran past its timeout.
    Timeout,
    /// The run was cancelled.
    Cancelled,
    /// An `emit` would start a chain of event-triggered runs deeper than
    /// [`MAX_EVENT_DEPTH`]: most likely workflows that trigger each other in a loop.
    EventDepthExceeded,
    /// A bug or an unexpected condition on our side.
    Internal,
}

impl ErrorCode {
    /// Whether a failure with this code is worth another attempt.
    pub fn is_retryable(self) -> bool {
        match self {
            ErrorCode::RateLimited | ErrorCode::UpstreamUnavailable | ErrorCode::Timeout => true,
            ErrorCode::Unauthorized
            | ErrorCode::Forbidden
            | ErrorCode::ConnectionRevoked
            | ErrorCode::NeedsReauth
            | ErrorCode::InsufficientScope
            | ErrorCode::ApprovalRejected
            | ErrorCode::ApprovalTimeout
            | ErrorCode::InvalidInput
            | ErrorCode::NotFound
            | ErrorCode::Conflict
            | ErrorCode::Cancelled
            | ErrorCode::EventDepthExceeded
            | ErrorCode::Internal => false,
        }
    }
}

/// A step instance for a worker to execute.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepMessage {
    /// Envelope version.
    pub v: u16,
    /// Workspace the run belongs to.
    pub workspace_id: Uuid,
    /// The run.
    pub run_id: Uuid,
    /// Step id from the definition.
    pub step_id: String,
    /// Index of the `for_each` item, when fanned out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_index: Option<u32>,
    /// 1-based attempt number; results are fenced by it.
    pub attempt: u32,
    /// `connector.action`.
    pub action: String,
    /// Connection id to resolve credentials from; never the credential itself.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection_id: Option<Uuid>,
    /// Rendered inputs.
    pub input: Value,
    /// Upper bound on this attempt, in milliseconds.
    pub timeout_ms: u64,
    /// Key for providers that deduplicate writes, derived from `{run}.{step}`.
    pub idempotency_key: String,
    /// When the engine dispatched it.
    pub dispatched_at: DateTime<Utc>,
    /// The definition of the custom tool `action` belongs to, when it is not a built-in
    /// connector: workers build the connector from it and never read tool definitions from
    /// the database. A definition holds no secrets.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tool: Option<Box<crate::tool::CustomTool>>,
}

impl StepMessage {
    /// The JetStream `Nats-Msg-Id` for this message, so a republish is deduplicated.
    pub fn msg_id(&self) -> String {
        match self.item_index {
            Some(i) => format!("{}.{}[{}].{}", self.run_id, self.step_id, i, self.attempt),
            None => format!("{}.{}.{}", self.run_id, self.step_id, self.attempt),
        }
    }
}

/// A step error as recorded and reported: a stable code plus a message for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepError {
    /// Stable code to branch on.
    pub code: ErrorCode,
    /// For people; never contains secrets.
    pub message: String,
    /// When the provider said when to come back, in milliseconds from `finished_at`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_after_ms: Option<u64>,
    /// The external system's HTTP status, when it answered.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_status: Option<u16>,
}

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// The action succeeded with this output.
    Succeeded {
        /// The action's output.
        output: Value,
    },
    /// The action failed.
    Failed {
        /// Why.
        error: StepError,
    },
}

/// What a worker reports after an attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepResult {
    /// Envelope version.
    pub v: u16,
    /// The run.
    pub run_id: Uuid,
    /// Step id.
    pub step_id: String,
    /// `for_each` item index, when fanned out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub item_index: Option<u32>,
    /// The attempt this result is for; older attempts cannot overwrite newer ones.
    pub attempt: u32,
    /// Which worker ran it.
    pub worker_id: String,
    /// How it ended.
    pub outcome: Outcome,
    /// When execution began.
    pub started_at: DateTime<Utc>,
    /// When execution ended.
    pub finished_at: DateTime<Utc>,
}

/// Who or what emitted an event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum Provenance {
    /// A step's `emit`.
    Step {
        /// The emitting run.
        run_id: Uuid,
        /// The emitting step.
        step_id: String,
    },
    /// The events API.
    Api {
        /// The caller's principal id.
        principal: String,
    },
    /// The engine itself, about a run (e.g. `connection.needs_reauth`).
    Engine {
        /// The run concerned.
        run_id: Uuid,
    },
}

/// An event on the events stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventEnvelope {
    /// Envelope version.
    pub v: u16,
    /// Unique id; events are deduplicated by it.
    pub id: String,
    /// Workspace the event belongs to.
    pub workspace_id: Uuid,
    /// Event name, e.g. `lead.created`.
    pub name: String,
    /// Payload.
    pub data: Value,
    /// Who emitted it.
    pub source: Provenance,
    /// How many event-triggered runs led here; bounded to stop runaway loops.
    pub depth: u32,
    /// When it was emitted.
    pub time: DateTime<Utc>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn step_message_round_trips_and_names_its_dedup_id() {
        let run = Uuid::now_v7();
        let msg = StepMessage {
            v: ENVELOPE_VERSION,
            workspace_id: Uuid::nil(),
            run_id: run,
            step_id: "enrich".into(),
            item_index: None,
            attempt: 2,
            action: "http.request".into(),
            connection_id: None,
            input: serde_json::json!({"url": "https://example.com"}),
            timeout_ms: 30_000,
            idempotency_key: format!("{run}.enrich"),
            dispatched_at: Utc::now(),
            tool: None,
        };
        let text = serde_json::to_string(&msg).unwrap();
        assert_eq!(serde_json::from_str::<StepMessage>(&text).unwrap(), msg);
        assert_eq!(msg.msg_id(), format!("{run}.enrich.2"));
    }

    #[test]
    fn result_outcome_is_tagged_by_status() {
        let outcome = Outcome::Failed {
            error: StepError {
                http_status: None,
                code: ErrorCode::RateLimited,
                message: "slow down".into(),
                retry_after_ms: Some(1_000),
            },
        };
        let v = serde_json::to_value(&outcome).unwrap();
        assert_eq!(v["status"], "failed");
        assert_eq!(v["error"]["code"], "rate_limited");
        assert!(ErrorCode::RateLimited.is_retryable());
        assert!(!ErrorCode::ConnectionRevoked.is_retryable());
    }
}
