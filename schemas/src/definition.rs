//! The workflow definition format, as typed values.
//!
//! These types are the single source of truth for the format: the JSON Schema checked in at
//! `schemas/json/workflow.schema.json` is generated from them, and [`crate::validate`] turns
//! source text into them. Every struct denies unknown keys, so a typo such as `nedds:` is an
//! error rather than a silently ignored field.
//!
//! ```
//! use schemas::definition::Workflow;
//!
//! let wf: Workflow = serde_json::from_value(serde_json::json!({
//!     "name": "hello",
//!     "steps": [{ "id": "greet", "action": "http.request",
//!                 "with": { "method": "GET", "url": "https://example.com" } }]
//! })).unwrap();
//! assert_eq!(wf.steps[0].id, "greet");
//! ```

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::duration::Duration;

/// A workflow: triggers that start it, steps that run, outputs that summarize a run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Workflow {
    /// Unique per workspace: lowercase letters, digits and `-`, starting with a letter or digit.
    pub name: String,
    /// What the workflow is for, for people browsing the catalogue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// What starts a run. A workflow with no triggers can still be started through the API.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub triggers: Vec<Trigger>,
    /// Inputs accepted when a run is started through the API, by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub inputs: BTreeMap<String, InputSpec>,
    /// Steps, in any order: `needs` decides what runs when.
    pub steps: Vec<Step>,
    /// Values computed when the run succeeds; each may use expressions over `steps`.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub outputs: Map<String, Value>,
    /// Queue that steps are sent to unless a step names its own (default `default`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// Upper bound on a whole run; when it passes, the run ends `timed_out`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}

/// Declaration of one API input.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct InputSpec {
    /// JSON type of the input.
    #[serde(rename = "type")]
    pub kind: InputType,
    /// Whether a run must supply it (default false).
    #[serde(default)]
    pub required: bool,
    /// Value used when a run does not supply it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default: Option<Value>,
    /// For people filling the input in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
}

/// JSON types an input may declare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum InputType {
    /// A JSON string.
    String,
    /// Any JSON number.
    Number,
    /// A whole number.
    Integer,
    /// `true` or `false`.
    Boolean,
    /// A JSON object.
    Object,
    /// A JSON array.
    Array,
}

/// Something that starts a run. Written as a one-key mapping: `- webhook: {...}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum Trigger {
    /// An HTTP delivery to `POST /v1/hooks/{workflow}/{id}`.
    Webhook(WebhookTrigger),
    /// An event published by a step's `emit` or through the events API.
    Event(EventTrigger),
    /// A cron schedule in a time zone.
    Schedule(ScheduleTrigger),
}

/// Largest request body a webhook trigger accepts unless it says otherwise (1 MiB).
pub const DEFAULT_WEBHOOK_BODY_BYTES: u64 = 1024 * 1024;
/// Largest `max_body_bytes` a webhook trigger may set (16 MiB).
pub const MAX_WEBHOOK_BODY_BYTES: u64 = 16 * 1024 * 1024;

/// A webhook trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct WebhookTrigger {
    /// Identifies the trigger in the hook URL; unique within the workflow.
    pub id: String,
    /// How deliveries are authenticated. Required: unsigned hooks must say `scheme: none`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signature: Option<Signature>,
    /// Largest accepted request body, in bytes (default 1 MiB).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_body_bytes: Option<u64>,
    /// Most deliveries accepted per period; more are answered 429 with `Retry-After`
    /// (default: only the engine's per-workspace limit applies).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate_limit: Option<RateLimit>,
    /// A disabled trigger answers 409 instead of starting runs (default true).
    #[serde(default = "default_true")]
    pub enabled: bool,
}

/// At most `requests` per `per`, refilled evenly (a token bucket holding `requests`).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RateLimit {
    /// Requests allowed per period, and the largest burst.
    pub requests: u32,
    /// The period, e.g. `1s` or `1m`.
    pub per: Duration,
}

fn default_true() -> bool {
    true
}

/// Signature verification for a webhook trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The provider's signing scheme.
    pub scheme: SignatureScheme,
    /// Name of the stored secret used to verify deliveries.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Several secret names, all accepted, so a secret can be rotated without downtime.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub secrets: Vec<String>,
    /// For `hmac-sha256`: the header carrying the signature.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header: Option<String>,
    /// For `hmac-sha256`: how the digest is encoded (default hex).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub encoding: Option<SignatureEncoding>,
    /// For `hmac-sha256`: text before the digest in the header, e.g. `sha256=`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// For timestamped schemes: how old a delivery may be (default 5m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tolerance: Option<Duration>,
}

impl Signature {
    /// Every secret name this signature accepts, in order.
    pub fn secret_names(&self) -> impl Iterator<Item = &str> {
        self.secret
            .iter()
            .chain(self.secrets.iter())
            .map(String::as_str)
    }
}

/// Webhook signing schemes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum SignatureScheme {
    /// `X-Hub-Signature-256: sha256=<hex>`.
    Github,
    /// `Stripe-Signature: t=…,v1=…`.
    Stripe,
    /// `X-Slack-Signature: v0=…` with `X-Slack-Request-Timestamp`.
    Slack,
    /// Standard Webhooks: `webhook-id`, `webhook-timestamp`, `webhook-signature`.
    Standard,
    /// HMAC-SHA256 of the body in a header you name.
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
    /// No verification; must be chosen explicitly.
    None,
}

/// Digest encodings for `hmac-sha256`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SignatureEncoding {
    /// Lowercase hexadecimal.
    Hex,
    /// Standard base64.
    Base64,
}

/// An event trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct EventTrigger {
    /// Event name to match, e.g. `lead.created`.
    pub name: String,
    /// Expression over `event`; a run starts only when it is true.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
}

/// A schedule trigger.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct ScheduleTrigger {
    /// Cron expression with 5 fields (minute precision) or 6 (leading seconds field).
    pub cron: String,
    /// IANA time zone the expression is read in (default `UTC`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    /// What to do with fire times missed while nothing was running (default `latest`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub catch_up: Option<CatchUp>,
}

impl ScheduleTrigger {
    /// Parses `cron`: 5 fields (minute precision) or 6 (leading seconds), years refused. The
    /// validator and the engine's scheduler both parse through here, so they accept the same
    /// strings.
    pub fn parse_cron(&self) -> Result<croner::Cron, CronError> {
        let fields = self.cron.split_whitespace().count();
        if !(5..=6).contains(&fields) {
            return Err(CronError::FieldCount {
                cron: self.cron.clone(),
                fields,
            });
        }
        croner::parser::CronParser::builder()
            .year(croner::parser::Year::Disallowed)
            .build()
            .parse(&self.cron)
            .map_err(|e| CronError::Invalid {
                cron: self.cron.clone(),
                reason: e.to_string(),
            })
    }
}

/// Why a schedule trigger's cron expression is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// Not 5 or 6 whitespace-separated fields.
    #[error(
        "cron `{cron}` has {fields} fields; write 5 (minute hour day month weekday) or 6 (with leading seconds)"
    )]
    FieldCount {
        /// The expression as written.
        cron: String,
        /// How many fields it has.
        fields: usize,
    },
    /// 5 or 6 fields, but not a valid expression.
    #[error("cron `{cron}` is not valid: {reason}")]
    Invalid {
        /// The expression as written.
        cron: String,
        /// The parser's explanation.
        reason: String,
    },
}

/// Policy for missed schedule fire times.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum CatchUp {
    /// Skip them.
    None,
    /// Run once for the most recent missed time.
    Latest,
    /// Run once for every missed time.
    All,
}

/// One step: an action on an external system, or an event to emit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Step {
    /// Unique within the workflow; used in expressions as `steps.<id>`, so only lowercase
    /// letters, digits and `_`, starting with a letter.
    pub id: String,
    /// Steps that must finish before this one starts.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub needs: Vec<String>,
    /// Expression; when false the step is skipped.
    #[serde(rename = "if", default, skip_serializing_if = "Option::is_none")]
    pub condition: Option<String>,
    /// Run even when some of `needs` were skipped (by default a skipped need skips this step).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub allow_skipped_needs: bool,
    /// `connector.action` to run, e.g. `slack.post_message`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub action: Option<String>,
    /// Name of the connection (credentials and scopes) the action runs with.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub connection: Option<String>,
    /// Inputs of the action; strings may contain expressions.
    #[serde(default, skip_serializing_if = "Map::is_empty")]
    pub with: Map<String, Value>,
    /// Instead of an action: publish an event.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub emit: Option<Emit>,
    /// Fan-out: an expression yielding an array (or a literal array); one step instance runs
    /// per item, with `item` in scope.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<ForEachSchema>")]
    pub for_each: Option<Value>,
    /// With `for_each`: how many instances may run at once (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_parallel: Option<u32>,
    /// How failures are retried (default: 3 attempts, 1s doubling to 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry: Option<RetryPolicy>,
    /// Upper bound on one attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
    /// Queue the step is sent to, so a dedicated worker pool can serve it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue: Option<String>,
    /// A person must approve before the step runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub approval: Option<Approval>,
}

/// JSON Schema shape of `for_each`: an expression string or a literal array.
#[derive(JsonSchema)]
#[serde(untagged)]
#[allow(dead_code)]
enum ForEachSchema {
    Expression(String),
    Items(Vec<Value>),
}

/// Publish an event from a step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Emit {
    /// Event name, e.g. `lead.processed`.
    pub event: String,
    /// Event payload; strings may contain expressions.
    #[serde(default, skip_serializing_if = "Value::is_null")]
    pub data: Value,
}

/// Exponential retry with jitter.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RetryPolicy {
    /// Total attempts including the first (1 = never retry).
    pub max_attempts: u32,
    /// Delay before the second attempt (default 1s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub initial: Option<Duration>,
    /// Largest delay between attempts (default 1m).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max: Option<Duration>,
    /// Growth factor between delays (default 2.0).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub multiplier: Option<f64>,
}

impl RetryPolicy {
    /// Default delay before the second attempt.
    pub const DEFAULT_INITIAL: Duration = Duration::from_secs(1);
    /// Default cap on the delay between attempts.
    pub const DEFAULT_MAX: Duration = Duration::from_secs(60);
    /// Default growth factor.
    pub const DEFAULT_MULTIPLIER: f64 = 2.0;
}

/// A human approval gate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Whether approval is required (default true).
    #[serde(default = "default_true")]
    pub required: bool,
    /// Who may approve: `role:<name>` or `user:<name>`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub approvers: Vec<String>,
    /// How long to wait before the step fails as unapproved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<Duration>,
}
