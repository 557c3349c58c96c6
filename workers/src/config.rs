//! [`WorkerConfig`]: what a worker process is told, with production defaults, and its checks.

use std::time::Duration;

use schemas::transport;
use serde::{Deserialize, Serialize};

/// What a worker process is told.
///
/// Every field has a production default, so a configuration file names only what differs.
/// Durations are written with units, like `"30s"` or `"500ms"`.
///
/// ```
/// let config: workers::WorkerConfig = serde_json::from_value(serde_json::json!({
///     "nats_url": "nats://nats.internal:4222",
///     "queues": ["default", "bulk"],
///     "heartbeat": "5s",
/// }))?;
/// assert_eq!(config.concurrency, 16);
/// assert_eq!(config.heartbeat, std::time::Duration::from_secs(5));
/// config.validate()?;
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WorkerConfig {
    /// NATS server URL, e.g. `nats://127.0.0.1:4222`, or several separated by commas (the
    /// nodes of a cluster: [`nats_servers`]). The worker keeps retrying until a server is
    /// reachable, so it may start before NATS does.
    pub nats_url: String,
    /// Queues this worker serves. Each queue has one durable pull consumer shared by every
    /// worker of the fleet that serves it. Names follow the definition format's rule for
    /// `queue`: lowercase letters, digits, `-` and `_`.
    pub queues: Vec<String>,
    /// Most steps this process runs at once, over all its queues. The worker never pulls more
    /// messages than it has free slots, so a busy worker leaves work to idle ones.
    pub concurrency: usize,
    /// Name of this worker in step results, logs and the NATS connection. Defaults to
    /// `<hostname>-<pid>`; give each worker of one process its own.
    pub worker_id: String,
    /// Interval of in-progress acks sent while a step runs, so JetStream does not hand the step
    /// to another worker. At most half of `ack_wait`, so one late heartbeat costs nothing.
    #[serde(with = "duration")]
    pub heartbeat: Duration,
    /// How long JetStream waits for an ack (or an in-progress ack) before redelivering a step.
    /// Applied when this worker creates a queue's consumer; an existing consumer keeps its own.
    #[serde(with = "duration")]
    pub ack_wait: Duration,
    /// On shutdown, how long steps already running may take to finish. Steps still running
    /// then are abandoned un-acked, and JetStream redelivers them after `ack_wait`.
    #[serde(with = "duration")]
    pub drain_timeout: Duration,
    /// Cap on one response body read by an action, in bytes. A step result must also fit in
    /// one NATS message (the server's `max_payload`, 1 MiB by default); a larger one is
    /// reported as an `invalid_input` failure.
    pub max_response_bytes: usize,
    /// Internal destinations actions and OAuth token refreshes may reach, as a
    /// comma-separated list of IP addresses, CIDR ranges and host names
    /// (`--allow-outbound`, `SWITCHYARD_ALLOW_OUTBOUND`), e.g.
    /// `"10.0.0.0/8,wiki.corp.example.com"`. Public addresses are always reachable;
    /// loopback, private, link-local and other internal addresses and cloud metadata names
    /// are refused unless listed here. Empty by default.
    pub allow_outbound: connectors::http::OutboundPolicy,
    /// Address of the worker's own HTTP listener (`--metrics-addr`,
    /// `SWITCHYARD_METRICS_ADDR`), e.g. `"0.0.0.0:9090"`: `/metrics` in the Prometheus text
    /// format, `/healthz` (the process is alive) and `/readyz` (connected to NATS with every
    /// queue's consumer bound). `None` (the default): no listener.
    pub metrics_addr: Option<std::net::SocketAddr>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            nats_url: "nats://127.0.0.1:4222".into(),
            queues: vec![transport::DEFAULT_QUEUE.into()],
            concurrency: 16,
            worker_id: default_worker_id(),
            heartbeat: Duration::from_secs(10),
            ack_wait: Duration::from_secs(30),
            drain_timeout: Duration::from_secs(30),
            max_response_bytes: connectors::http::DEFAULT_MAX_RESPONSE_BYTES,
            allow_outbound: connectors::http::OutboundPolicy::default(),
            metrics_addr: None,
        }
    }
}

/// The most steps one process may be told to run at once. Far above what one process should
/// run; it exists so that a typo (an extra few zeros) is an error rather than a surprise.
pub const MAX_CONCURRENCY: usize = 100_000;

/// Why a [`WorkerConfig`] was refused. Each variant names the field at fault.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `queues` is empty: the worker would do nothing.
    #[error("queues: name at least one queue to serve")]
    NoQueues,
    /// A queue name that cannot be part of a NATS subject and consumer name.
    #[error(
        "queues: `{0}` is not a valid queue name: use lowercase letters, digits, `-` and `_` (at most 64)"
    )]
    InvalidQueue(String),
    /// The same queue twice.
    #[error("queues: `{0}` is listed twice")]
    DuplicateQueue(String),
    /// `concurrency` outside `1..=MAX_CONCURRENCY`.
    #[error("concurrency: {0} is out of range; use 1 to {MAX_CONCURRENCY}")]
    Concurrency(usize),
    /// `worker_id` is empty.
    #[error("worker_id: must not be empty")]
    EmptyWorkerId,
    /// A duration that must be positive is zero.
    #[error("{0}: must be longer than zero")]
    ZeroDuration(&'static str),
    /// Heartbeats would come too late to stop redelivery.
    #[error(
        "heartbeat: {heartbeat:?} must be at most half of ack_wait ({ack_wait:?}), or a step may be redelivered while it runs"
    )]
    HeartbeatTooSlow {
        /// The configured heartbeat.
        heartbeat: Duration,
        /// The configured ack wait.
        ack_wait: Duration,
    },
    /// `max_response_bytes` is zero.
    #[error("max_response_bytes: must be more than zero")]
    ZeroMaxResponseBytes,
}

impl WorkerConfig {
    /// The longest a worker takes to stop once told to: [`drain_timeout`](Self::drain_timeout)
    /// for the steps in flight, then a few seconds for abandoned steps to let go and for
    /// what is buffered to reach NATS. A supervisor (Kubernetes'
    /// `terminationGracePeriodSeconds`, compose's `stop_grace_period`) should wait longer
    /// than this before killing the process, or steps that were about to finish are
    /// redelivered.
    ///
    /// ```
    /// let config = workers::WorkerConfig::default();
    /// assert!(config.longest_shutdown() > config.drain_timeout);
    /// ```
    pub fn longest_shutdown(&self) -> Duration {
        self.drain_timeout + crate::runtime::ABANDON_GRACE + crate::runtime::FLUSH_TIMEOUT
    }

    /// Checks the configuration as a whole; [`run`](crate::run) calls this first.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.queues.is_empty() {
            return Err(ConfigError::NoQueues);
        }
        for (i, queue) in self.queues.iter().enumerate() {
            if !is_queue_name(queue) {
                return Err(ConfigError::InvalidQueue(queue.clone()));
            }
            if self.queues[..i].contains(queue) {
                return Err(ConfigError::DuplicateQueue(queue.clone()));
            }
        }
        if !(1..=MAX_CONCURRENCY).contains(&self.concurrency) {
            return Err(ConfigError::Concurrency(self.concurrency));
        }
        if self.worker_id.trim().is_empty() {
            return Err(ConfigError::EmptyWorkerId);
        }
        for (field, value) in [
            ("heartbeat", self.heartbeat),
            ("ack_wait", self.ack_wait),
            ("drain_timeout", self.drain_timeout),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration(field));
            }
        }
        if self.heartbeat.saturating_mul(2) > self.ack_wait {
            return Err(ConfigError::HeartbeatTooSlow {
                heartbeat: self.heartbeat,
                ack_wait: self.ack_wait,
            });
        }
        if self.max_response_bytes == 0 {
            return Err(ConfigError::ZeroMaxResponseBytes);
        }
        Ok(())
    }
}

/// The same rule the definition validator applies to `queue`, so every queue a definition can
/// name can be served, and every name is a valid NATS subject token and consumer name.
fn is_queue_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

/// `<hostname>-<pid>`, which an operator can trace back to a machine and a process; a random id
/// when the host name cannot be read.
fn default_worker_id() -> String {
    let hostname = ["/proc/sys/kernel/hostname", "/etc/hostname"]
        .iter()
        .find_map(|path| std::fs::read_to_string(path).ok())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty());
    match hostname {
        Some(host) => format!("{host}-{}", std::process::id()),
        None => format!("worker-{}", uuid::Uuid::now_v7().simple()),
    }
}

/// Durations as `"30s"`, through the one parser definitions use.
mod duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(value: &Duration, s: S) -> Result<S::Ok, S::Error> {
        schemas::duration::Duration(*value).serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        schemas::duration::Duration::deserialize(d).map(schemas::duration::Duration::get)
    }
}

/// The servers a NATS URL option names: one URL, or several separated by commas
/// (`nats://nats-0:4222,nats://nats-1:4222,nats://nats-2:4222`). The client connects to one
/// of them and moves to another when it is lost; the servers also tell it the rest of their
/// cluster.
pub fn nats_servers(url: &str) -> Vec<&str> {
    url.split(',')
        .map(str::trim)
        .filter(|u| !u.is_empty())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn defaults_are_valid_and_serve_the_default_queue() {
        let config = WorkerConfig::default();
        config.validate().unwrap();
        assert_eq!(config.queues, ["default"]);
        assert_eq!(config.concurrency, 16);
        assert_eq!(config.heartbeat, Duration::from_secs(10));
        assert_eq!(config.ack_wait, Duration::from_secs(30));
        assert_eq!(config.drain_timeout, Duration::from_secs(30));
        assert!(!config.worker_id.is_empty());
    }

    #[test]
    fn durations_are_written_with_units_and_round_trip() {
        let config: WorkerConfig = serde_json::from_value(json!({
            "heartbeat": "500ms",
            "ack_wait": "1m",
            "drain_timeout": "2m30s",
        }))
        .unwrap();
        assert_eq!(config.heartbeat, Duration::from_millis(500));
        assert_eq!(config.ack_wait, Duration::from_secs(60));
        assert_eq!(config.drain_timeout, Duration::from_secs(150));
        let text = serde_json::to_value(&config).unwrap();
        assert_eq!(text["drain_timeout"], "2m30s");
        assert_eq!(
            serde_json::from_value::<WorkerConfig>(text).unwrap(),
            config
        );
    }

    #[test]
    fn unknown_fields_and_bare_numbers_are_refused() {
        let unknown = serde_json::from_value::<WorkerConfig>(json!({ "concurency": 4 }));
        assert!(unknown.unwrap_err().to_string().contains("concurency"));
        let bare = serde_json::from_value::<WorkerConfig>(json!({ "heartbeat": 10 }));
        assert!(bare.unwrap_err().to_string().contains("no unit"));
    }

    #[test]
    fn validation_names_the_field_at_fault() {
        let check = |edit: fn(&mut WorkerConfig)| {
            let mut config = WorkerConfig::default();
            edit(&mut config);
            config.validate().unwrap_err()
        };
        assert_eq!(check(|c| c.queues.clear()), ConfigError::NoQueues);
        assert_eq!(
            check(|c| c.queues = vec!["sy.steps.>".into()]),
            ConfigError::InvalidQueue("sy.steps.>".into())
        );
        assert_eq!(
            check(|c| c.queues = vec!["a".into(), "a".into()]),
            ConfigError::DuplicateQueue("a".into())
        );
        assert_eq!(check(|c| c.concurrency = 0), ConfigError::Concurrency(0));
        assert_eq!(
            check(|c| c.worker_id = " ".into()),
            ConfigError::EmptyWorkerId
        );
        assert_eq!(
            check(|c| c.drain_timeout = Duration::ZERO),
            ConfigError::ZeroDuration("drain_timeout")
        );
        assert!(matches!(
            check(|c| c.heartbeat = c.ack_wait / 2 + Duration::from_millis(1)),
            ConfigError::HeartbeatTooSlow { .. }
        ));
        assert_eq!(
            check(|c| c.max_response_bytes = 0),
            ConfigError::ZeroMaxResponseBytes
        );
    }
}
