//! Fleet-wide request budgets: a connection's rate limit enforced across every worker.
//!
//! Each connection with a budget (its own `rate_limit`, else its connector's default) has one
//! key in the [`transport::BUDGETS_BUCKET`] key-value bucket holding its *theoretical arrival
//! time* in the generic cell rate algorithm (GCRA): the instant at which the budget is spent
//! if requests keep coming at the steady rate. Before each request an action sends, the
//! worker reads the key and writes the next arrival time with compare-and-set (retrying when
//! another worker got there first), which reserves a slot; it then waits for its slot if the
//! slot is a little in the future. So the whole fleet — 1 worker or 20 — sends at most
//! `requests` per `per_seconds` (after an initial `burst`), without a coordinator.
//!
//! A slot further away than [`MAX_SLOT_WAIT`] is not reserved: waiting that long would hold a
//! worker slot idle. When no request of the step has gone out yet, the step goes back to
//! JetStream with a delay (no attempt used, see `step.rs`); once the action has sent some
//! requests (paging), it fails `rate_limited` with the wait, and the engine retries it.
//!
//! Responses teach the fleet the provider's own limit: `X-RateLimit-Remaining: 0` (or
//! `RateLimit-Remaining: 0`) with a reset time becomes a fleet-wide hold (see `holds.rs`).
//!
//! Clocks: arrival times are wall-clock microseconds, so workers' clocks must agree to well
//! under one request interval (NTP does; skew only shifts which worker gets a slot, and a
//! worker whose clock runs ahead sends slightly early).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use async_nats::jetstream::{self, kv};
use connectors::{ActionError, RateLimit};
use reqwest::StatusCode;
use reqwest::header::HeaderMap;
use schemas::envelope::ErrorCode;
use schemas::transport;
use tokio::sync::OnceCell;
use uuid::Uuid;

/// The longest a request waits for its slot inside a step.
pub const MAX_SLOT_WAIT: Duration = Duration::from_secs(1);
/// Compare-and-set attempts before giving up (each lost race means another worker got a slot).
const CAS_ATTEMPTS: usize = 64;

/// The fleet's budgets, through the bucket (opened on first use).
#[derive(Debug)]
pub(crate) struct Budgets {
    js: jetstream::Context,
    store: OnceCell<Option<kv::Store>>,
    warned: AtomicBool,
}

impl Budgets {
    pub(crate) fn new(js: jetstream::Context) -> Self {
        Budgets {
            js,
            store: OnceCell::new(),
            warned: AtomicBool::new(false),
        }
    }

    /// The bucket; `None` when it does not exist (an engine of an older release created the
    /// topology), in which case budgets are not enforced and a warning says so once.
    async fn store(&self) -> Option<&kv::Store> {
        self.store
            .get_or_init(|| async {
                match self.js.get_key_value(transport::BUDGETS_BUCKET).await {
                    Ok(store) => Some(store),
                    Err(error) => {
                        if !self.warned.swap(true, Ordering::Relaxed) {
                            tracing::warn!(%error, bucket = transport::BUDGETS_BUCKET, "request budgets are not enforced: the bucket is missing");
                        }
                        None
                    }
                }
            })
            .await
            .as_ref()
    }
}

/// One step's admission to its connection's budget; handed to the action as its
/// [`connectors::sdk::RequestGate`].
#[derive(Debug)]
pub(crate) struct Gate {
    budgets: Arc<Budgets>,
    key: String,
    limit: RateLimit,
    holds: crate::holds::Holds,
    hold_subject: Option<String>,
    admitted: AtomicU32,
    /// Set when the first request was refused: nothing was sent, so the step may be handed
    /// back instead of failing.
    refused_before_sending: AtomicBool,
}

impl Gate {
    pub(crate) fn new(
        budgets: Arc<Budgets>,
        connection: Uuid,
        limit: RateLimit,
        holds: crate::holds::Holds,
        hold_subject: Option<String>,
    ) -> Self {
        Gate {
            budgets,
            key: format!("c_{}", connection.simple()),
            limit,
            holds,
            hold_subject,
            admitted: AtomicU32::new(0),
            refused_before_sending: AtomicBool::new(false),
        }
    }

    /// Whether the step was refused before it sent anything.
    pub(crate) fn refused_before_sending(&self) -> bool {
        self.refused_before_sending.load(Ordering::Relaxed)
    }

    /// Reserves the next slot, returning how long to wait for it; `Err(wait)` when the slot is
    /// further than [`MAX_SLOT_WAIT`] (nothing reserved).
    async fn reserve(&self, store: &kv::Store) -> Result<Result<Duration, Duration>, ActionError> {
        let interval = self.limit.interval_micros();
        let tolerance = interval.saturating_mul(u64::from(self.limit.burst.saturating_sub(1)));
        let max_wait = u64::try_from(MAX_SLOT_WAIT.as_micros()).unwrap_or(u64::MAX);
        for _ in 0..CAS_ATTEMPTS {
            let entry = store.entry(self.key.as_str()).await.map_err(unavailable)?;
            let (tat, revision) = match &entry {
                Some(e) if e.operation == kv::Operation::Put => (
                    std::str::from_utf8(&e.value)
                        .ok()
                        .and_then(|v| v.parse::<u64>().ok())
                        .unwrap_or(0),
                    Some(e.revision),
                ),
                // Deleted or purged: as good as absent, but its revision must be matched.
                Some(e) => (0, Some(e.revision)),
                None => (0, None),
            };
            let now = now_micros();
            let wait = tat.saturating_sub(tolerance).saturating_sub(now);
            if wait > max_wait {
                return Ok(Err(Duration::from_micros(wait)));
            }
            let next = tat.max(now).saturating_add(interval);
            let value = next.to_string().into_bytes().into();
            let written = match revision {
                Some(revision) => store
                    .update(self.key.as_str(), value, revision)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::UpdateErrorKind::WrongLastRevision => None,
                        _ => Some(unavailable(e)),
                    }),
                None => store
                    .create(self.key.as_str(), value)
                    .await
                    .map_err(|e| match e.kind() {
                        kv::CreateErrorKind::AlreadyExists => None,
                        _ => Some(unavailable(e)),
                    }),
            };
            match written {
                Ok(_) => return Ok(Ok(Duration::from_micros(wait))),
                // Another worker took this slot: read again.
                Err(None) => continue,
                Err(Some(e)) => return Err(e),
            }
        }
        Err(ActionError::new(
            ErrorCode::UpstreamUnavailable,
            "the connection's request budget is contended; try again",
        ))
    }
}

#[async_trait::async_trait]
impl connectors::sdk::RequestGate for Gate {
    async fn admit(&self) -> Result<(), ActionError> {
        let Some(store) = self.budgets.store().await else {
            return Ok(());
        };
        match self.reserve(store).await? {
            Ok(wait) => {
                if !wait.is_zero() {
                    tokio::time::sleep(wait).await;
                }
                self.admitted.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
            Err(wait) => {
                if self.admitted.load(Ordering::Relaxed) == 0 {
                    self.refused_before_sending.store(true, Ordering::Relaxed);
                }
                Err(ActionError {
                    code: ErrorCode::RateLimited,
                    message: format!(
                        "the connection's budget of {} requests per {} s is spent for the next {} ms",
                        self.limit.requests,
                        self.limit.per_seconds,
                        wait.as_millis()
                    ),
                    retry_after: Some(wait),
                    status: None,
                })
            }
        }
    }

    fn observe(&self, status: StatusCode, headers: &HeaderMap) {
        let Some(subject) = &self.hold_subject else {
            return;
        };
        if status == StatusCode::TOO_MANY_REQUESTS {
            // The step's failure sets the hold (with the response's wait).
            return;
        }
        let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
        let spent = ["x-ratelimit-remaining", "ratelimit-remaining"]
            .into_iter()
            .any(|name| header(name).is_some_and(|v| v.trim() == "0"));
        if !spent {
            return;
        }
        let reset = ["x-ratelimit-reset", "ratelimit-reset"]
            .into_iter()
            .find_map(|name| {
                header(name)
                    .and_then(|v| connectors::http::ratelimit::parse_reset(v, SystemTime::now()))
            });
        if let Some(wait) = reset.filter(|w| !w.is_zero()) {
            let holds = self.holds.clone();
            let subject = subject.clone();
            tokio::spawn(async move { holds.hold(&subject, wait).await });
        }
    }
}

fn unavailable(e: impl std::fmt::Display) -> ActionError {
    ActionError::new(
        ErrorCode::UpstreamUnavailable,
        format!("the request budget could not be read: {e}"),
    )
}

fn now_micros() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_micros()).unwrap_or(u64::MAX))
}
