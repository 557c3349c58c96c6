//! The engine's Prometheus metrics, served at `/metrics` on the API listener.
//!
//! The counters are process-wide atomics ([`engine`]), counted where the store commits what
//! they count, so a rolled-back transaction counts nothing. The gauges (outbox backlog,
//! consumer pending and ack-pending) are sampled when scraped. Label values come from
//! bounded sets: workflow names, trigger kinds, status words, connector names and consumer
//! names, never run or step ids.

use std::sync::LazyLock;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

/// Labels of a started run.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RunStartLabels {
    /// Workflow name.
    pub workflow: String,
    /// What started it: `api`, `webhook`, `event`, `schedule`, `tool`, …
    pub trigger: String,
}

/// A status word (`succeeded`, `failed`, `cancelled`, `timed_out`, …).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StatusLabel {
    /// The status.
    pub status: String,
}

/// Labels of a finished step attempt.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// `succeeded` or `failed`.
    pub status: String,
    /// Connector name (`http`, `slack`, …).
    pub connector: String,
}

/// A JetStream consumer.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConsumerLabel {
    /// Its durable name (`workers-default`, `engine-results`, …).
    pub consumer: String,
}

/// A webhook delivery outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabel {
    outcome: String,
}

/// A webhook rejection reason.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReasonLabel {
    reason: String,
}

/// The engine's counters and sampled gauges.
#[derive(Debug, Default)]
pub struct EngineMetrics {
    /// `switchyard_runs_started_total{workflow,trigger}`.
    pub runs_started: Family<RunStartLabels, Counter>,
    /// `switchyard_runs_finished_total{status}`.
    pub runs_finished: Family<StatusLabel, Counter>,
    /// `switchyard_steps_finished_total{status,connector}`: recorded step attempts.
    pub steps_finished: Family<StepLabels, Counter>,
    /// `switchyard_outbox_backlog`: outbox rows not yet published, when last scraped.
    pub outbox_backlog: Gauge,
    /// `switchyard_consumer_pending{consumer}`: messages not yet delivered.
    pub consumer_pending: Family<ConsumerLabel, Gauge>,
    /// `switchyard_consumer_ack_pending{consumer}`: delivered, not yet acknowledged.
    pub consumer_ack_pending: Family<ConsumerLabel, Gauge>,
}

/// The process's engine metrics.
pub fn engine() -> &'static EngineMetrics {
    static METRICS: LazyLock<EngineMetrics> = LazyLock::new(EngineMetrics::default);
    &METRICS
}

impl EngineMetrics {
    /// Counts a run that was created.
    pub fn run_started(&self, workflow: &str, trigger: &serde_json::Value) {
        let trigger = trigger
            .get("kind")
            .and_then(serde_json::Value::as_str)
            .unwrap_or("unknown");
        self.runs_started
            .get_or_create(&RunStartLabels {
                workflow: workflow.to_owned(),
                trigger: trigger.to_owned(),
            })
            .inc();
    }

    /// Counts a run that ended with `status`.
    pub fn run_finished(&self, status: &str) {
        self.runs_finished
            .get_or_create(&StatusLabel {
                status: status.to_owned(),
            })
            .inc();
    }

    /// Counts a recorded step attempt of `action` (`connector.action`).
    pub fn step_finished(&self, status: &str, action: &str) {
        let connector = action.split_once('.').map_or(action, |(c, _)| c);
        self.steps_finished
            .get_or_create(&StepLabels {
                status: status.to_owned(),
                connector: connector.to_owned(),
            })
            .inc();
    }

    /// The metrics, with the webhook counters of `hooks`, in the OpenMetrics text format.
    pub fn encode(&self, hooks: &crate::triggers::webhook::Rejections) -> String {
        use crate::triggers::webhook::Reason;
        let mut registry = Registry::default();
        registry.register(
            "switchyard_runs_started",
            "Runs created, by workflow and trigger kind",
            self.runs_started.clone(),
        );
        registry.register(
            "switchyard_runs_finished",
            "Runs ended, by status",
            self.runs_finished.clone(),
        );
        registry.register(
            "switchyard_steps_finished",
            "Step attempts recorded, by status and connector",
            self.steps_finished.clone(),
        );
        registry.register(
            "switchyard_outbox_backlog",
            "Outbox rows not yet published",
            self.outbox_backlog.clone(),
        );
        registry.register(
            "switchyard_consumer_pending",
            "JetStream messages not yet delivered to a consumer, by consumer",
            self.consumer_pending.clone(),
        );
        registry.register(
            "switchyard_consumer_ack_pending",
            "JetStream messages delivered and not yet acknowledged, by consumer",
            self.consumer_ack_pending.clone(),
        );
        // The webhook counters live with the API's state; copied into counters of this one
        // scrape, under the names they have always had.
        let deliveries = Family::<OutcomeLabel, Counter>::default();
        for (outcome, n) in [
            ("accepted", hooks.accepted()),
            ("duplicate", hooks.duplicates()),
        ] {
            deliveries
                .get_or_create(&OutcomeLabel {
                    outcome: outcome.into(),
                })
                .inc_by(n);
        }
        registry.register(
            "switchyard_webhook_deliveries",
            "Webhook deliveries by outcome",
            deliveries,
        );
        let rejections = Family::<ReasonLabel, Counter>::default();
        for reason in Reason::ALL {
            rejections
                .get_or_create(&ReasonLabel {
                    reason: reason.as_str().into(),
                })
                .inc_by(hooks.rejected(reason));
        }
        registry.register(
            "switchyard_webhook_rejections",
            "Webhook deliveries refused, by reason",
            rejections,
        );
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &registry);
        out
    }
}

/// The content type of [`EngineMetrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
