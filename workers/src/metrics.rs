//! The worker's Prometheus metrics, and the listener that serves them with health and
//! readiness (`--metrics-addr`).
//!
//! Every metric is an atomic; label values come from bounded sets (connector and action
//! names of the catalog, outcome codes, connection ids), never from run or step ids.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{Histogram, exponential_buckets};
use prometheus_client::registry::Registry;

/// Labels of a step's duration.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StepLabels {
    /// Connector name (`http`, `slack`, …).
    pub connector: String,
    /// Action name within the connector.
    pub action: String,
    /// `succeeded`, or the failure's error code (`rate_limited`, `timeout`, …).
    pub outcome: String,
}

/// A connector name.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectorLabel {
    /// Connector name.
    pub connector: String,
}

/// A connection: its id, or `none` for calls without one (plain `http.request`).
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ConnectionLabel {
    /// Connection id, or `none`.
    pub connection: String,
}

/// How a token refresh ended.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RefreshLabel {
    /// `refreshed`, `reused` (another worker had refreshed it) or `failed`.
    pub outcome: String,
}

fn duration_histogram() -> Histogram {
    // 5 ms to about 80 s.
    Histogram::new(exponential_buckets(0.005, 2.0, 15))
}

/// The worker's metrics. One per worker runtime; cheap to share.
#[derive(Debug)]
pub struct WorkerMetrics {
    registry: Registry,
    /// `switchyard_step_duration_seconds{connector,action,outcome}`.
    pub step_duration: Family<StepLabels, Histogram, fn() -> Histogram>,
    /// `switchyard_step_schedule_delay_seconds`: from the engine's dispatch to the start here.
    pub schedule_delay: Histogram,
    /// `switchyard_step_retries_total{connector}`: attempts after the first.
    pub retries: Family<ConnectorLabel, Counter>,
    /// `switchyard_rate_limit_holds_total{connection}`: steps given back for a fleet-wide
    /// rate-limit hold, and holds set after a `429`.
    pub rate_limit_holds: Family<ConnectionLabel, Counter>,
    /// `switchyard_steps_in_flight`.
    pub in_flight: Gauge,
    /// `switchyard_oauth_refreshes_total{outcome}`.
    pub oauth_refreshes: Family<RefreshLabel, Counter>,
}

impl Default for WorkerMetrics {
    fn default() -> Self {
        Self::new()
    }
}

impl WorkerMetrics {
    /// Fresh metrics, all zero.
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let step_duration =
            Family::<StepLabels, Histogram, fn() -> Histogram>::new_with_constructor(
                duration_histogram,
            );
        registry.register(
            "switchyard_step_duration_seconds",
            "Time a step's action took on this worker, by connector, action and outcome",
            step_duration.clone(),
        );
        let schedule_delay = duration_histogram();
        registry.register(
            "switchyard_step_schedule_delay_seconds",
            "Time from the engine's dispatch of a step to its start on this worker",
            schedule_delay.clone(),
        );
        let retries = Family::<ConnectorLabel, Counter>::default();
        registry.register(
            "switchyard_step_retries",
            "Step attempts after the first, by connector",
            retries.clone(),
        );
        let rate_limit_holds = Family::<ConnectionLabel, Counter>::default();
        registry.register(
            "switchyard_rate_limit_holds",
            "Fleet-wide rate-limit holds set or waited out, by connection",
            rate_limit_holds.clone(),
        );
        let in_flight = Gauge::default();
        registry.register(
            "switchyard_steps_in_flight",
            "Steps running on this worker",
            in_flight.clone(),
        );
        let oauth_refreshes = Family::<RefreshLabel, Counter>::default();
        registry.register(
            "switchyard_oauth_refreshes",
            "OAuth access token refreshes, by outcome",
            oauth_refreshes.clone(),
        );
        WorkerMetrics {
            registry,
            step_duration,
            schedule_delay,
            retries,
            rate_limit_holds,
            in_flight,
            oauth_refreshes,
        }
    }

    /// The metrics in the Prometheus (OpenMetrics) text format.
    pub fn encode(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }

    /// Counts a token refresh.
    pub fn oauth_refresh(&self, outcome: &str) {
        self.oauth_refreshes
            .get_or_create(&RefreshLabel {
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// Counts a rate-limit hold on `connection` (`None`: a call without a connection).
    pub fn rate_limit_hold(&self, connection: Option<uuid::Uuid>) {
        self.rate_limit_holds
            .get_or_create(&ConnectionLabel {
                connection: connection.map_or_else(|| "none".to_owned(), |id| id.to_string()),
            })
            .inc();
    }
}

/// The content type of [`WorkerMetrics::encode`].
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Whether the worker can take work: connected to NATS, with every queue's consumer bound.
#[derive(Debug)]
pub(crate) struct Readiness {
    bound: Vec<AtomicBool>,
    client: async_nats::Client,
}

impl Readiness {
    pub(crate) fn new(queues: usize, client: async_nats::Client) -> Self {
        Readiness {
            bound: (0..queues).map(|_| AtomicBool::new(false)).collect(),
            client,
        }
    }

    /// Marks queue number `i` bound (or not, after a failed pull).
    pub(crate) fn set_bound(&self, i: usize, bound: bool) {
        if let Some(flag) = self.bound.get(i) {
            flag.store(bound, Ordering::Relaxed);
        }
    }

    fn ready(&self) -> bool {
        self.client.connection_state() == async_nats::connection::State::Connected
            && self.bound.iter().all(|b| b.load(Ordering::Relaxed))
    }
}

/// Why the metrics listener could not start.
#[derive(Debug, thiserror::Error)]
#[error("metrics listener on {addr}: {source}")]
pub struct ListenError {
    /// The address.
    pub addr: SocketAddr,
    /// Why.
    #[source]
    pub source: std::io::Error,
}

/// Binds `addr` and serves `/metrics`, `/healthz` and `/readyz` until `stop` turns true.
pub(crate) async fn serve(
    addr: SocketAddr,
    metrics: Arc<WorkerMetrics>,
    readiness: Arc<Readiness>,
    mut stop: tokio::sync::watch::Receiver<bool>,
) -> Result<tokio::task::JoinHandle<()>, ListenError> {
    use axum::routing::get;
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|source| ListenError { addr, source })?;
    let bound = listener.local_addr().unwrap_or(addr);
    let app = axum::Router::new()
        .route(
            "/metrics",
            get(move || {
                let body = metrics.encode();
                async move { ([(axum::http::header::CONTENT_TYPE, CONTENT_TYPE)], body) }
            }),
        )
        .route("/healthz", get(|| async { "ok" }))
        .route(
            "/readyz",
            get(move || {
                let ready = readiness.ready();
                async move {
                    if ready {
                        (axum::http::StatusCode::OK, "ready")
                    } else {
                        (axum::http::StatusCode::SERVICE_UNAVAILABLE, "not ready")
                    }
                }
            }),
        );
    tracing::info!(addr = %bound, "worker metrics listening");
    Ok(tokio::spawn(async move {
        let shutdown = async move {
            let _ = stop.wait_for(|stopped| *stopped).await;
        };
        if let Err(error) = axum::serve(listener, app)
            .with_graceful_shutdown(shutdown)
            .await
        {
            tracing::warn!(%error, "worker metrics listener stopped");
        }
    }))
}

/// Seconds of `d`, for histograms.
pub(crate) fn seconds(d: Duration) -> f64 {
    d.as_secs_f64()
}
