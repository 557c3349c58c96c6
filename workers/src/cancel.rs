//! Runs the engine has cancelled, as announced on [`transport::CANCEL_SUBJECT`].
//!
//! Announcements are core NATS, so a worker knows only of cancellations made while it was
//! connected; the engine fences results of cancelled runs anyway, and this is what spares the
//! external system calls that nobody wants any more. The memory is bounded both in size and in
//! age: a long-lived worker in a busy fleet must not grow without end.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::StreamExt;
use schemas::transport;
use tokio::sync::broadcast;
use uuid::Uuid;

/// How many cancelled runs a worker remembers at most.
pub(crate) const REMEMBERED_RUNS: usize = 10_000;
/// How long a cancelled run is remembered. Steps of a cancelled run that were already queued
/// arrive within minutes; the engine dispatches nothing new for it.
pub(crate) const REMEMBERED_FOR: Duration = Duration::from_secs(60 * 60);

/// The cancelled runs this process knows of, and a way to hear of new ones while a step runs.
#[derive(Debug)]
pub(crate) struct Cancellations {
    recent: Mutex<RecentlyCancelled>,
    announced: broadcast::Sender<Uuid>,
}

impl Cancellations {
    pub(crate) fn new() -> Arc<Self> {
        Arc::new(Cancellations {
            recent: Mutex::new(RecentlyCancelled::new(REMEMBERED_RUNS, REMEMBERED_FOR)),
            announced: broadcast::channel(256).0,
        })
    }

    /// Records that `run` was cancelled and tells every step of it that is running.
    pub(crate) fn record(&self, run: Uuid) {
        self.lock().insert(run, Instant::now());
        // No receivers just means no step is running.
        let _ = self.announced.send(run);
    }

    /// Starts watching `run`. Subscribing before looking at what is remembered means a
    /// cancellation is seen whether it came before or after this call.
    pub(crate) fn watch(self: &Arc<Self>, run: Uuid) -> CancelWatch {
        CancelWatch {
            run,
            announced: self.announced.subscribe(),
            cancellations: self.clone(),
        }
    }

    fn is_cancelled(&self, run: &Uuid) -> bool {
        self.lock().contains(run, Instant::now())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, RecentlyCancelled> {
        // The set stays consistent even if a holder panicked: every method leaves it whole.
        self.recent.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Whether one run has been cancelled.
#[derive(Debug)]
pub(crate) struct CancelWatch {
    run: Uuid,
    announced: broadcast::Receiver<Uuid>,
    cancellations: Arc<Cancellations>,
}

impl CancelWatch {
    /// Whether the run is known to be cancelled now.
    pub(crate) fn is_cancelled(&self) -> bool {
        self.cancellations.is_cancelled(&self.run)
    }

    /// Resolves when the run is cancelled; never, if it is not.
    pub(crate) async fn cancelled(&mut self) {
        loop {
            match self.announced.recv().await {
                Ok(run) if run == self.run => return,
                Ok(_) => {}
                // Missed some announcements: the remembered set has them all.
                Err(broadcast::error::RecvError::Lagged(_)) => {
                    if self.is_cancelled() {
                        return;
                    }
                }
                Err(broadcast::error::RecvError::Closed) => {
                    std::future::pending::<()>().await;
                }
            }
        }
    }
}

/// Records every run id announced on `subscriber` until the subscription ends.
pub(crate) async fn listen(
    mut subscriber: async_nats::Subscriber,
    cancellations: Arc<Cancellations>,
) {
    while let Some(message) = subscriber.next().await {
        let run = std::str::from_utf8(&message.payload)
            .ok()
            .and_then(|text| Uuid::parse_str(text.trim()).ok());
        match run {
            Some(run) => {
                tracing::info!(run_id = %run, "run cancelled");
                cancellations.record(run);
            }
            None => tracing::warn!(
                subject = transport::CANCEL_SUBJECT,
                bytes = message.payload.len(),
                "ignoring a cancellation that is not a run id"
            ),
        }
    }
}

/// A set of run ids bounded in size and in age; the oldest go first.
#[derive(Debug)]
struct RecentlyCancelled {
    at: HashMap<Uuid, Instant>,
    order: VecDeque<(Uuid, Instant)>,
    cap: usize,
    ttl: Duration,
}

impl RecentlyCancelled {
    fn new(cap: usize, ttl: Duration) -> Self {
        RecentlyCancelled {
            at: HashMap::new(),
            order: VecDeque::new(),
            cap,
            ttl,
        }
    }

    fn insert(&mut self, run: Uuid, now: Instant) {
        // A repeated announcement keeps the first time: the run was cancelled then.
        if let std::collections::hash_map::Entry::Vacant(entry) = self.at.entry(run) {
            entry.insert(now);
            self.order.push_back((run, now));
        }
        self.prune(now);
    }

    fn contains(&self, run: &Uuid, now: Instant) -> bool {
        self.at
            .get(run)
            .is_some_and(|at| now.saturating_duration_since(*at) < self.ttl)
    }

    fn prune(&mut self, now: Instant) {
        while let Some(&(run, at)) = self.order.front() {
            let expired = now.saturating_duration_since(at) >= self.ttl;
            if !expired && self.order.len() <= self.cap {
                break;
            }
            self.order.pop_front();
            self.at.remove(&run);
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.at.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn remembers_runs_up_to_its_cap_dropping_the_oldest() {
        let mut set = RecentlyCancelled::new(3, Duration::from_secs(60));
        let now = Instant::now();
        let runs: Vec<Uuid> = (0..5).map(|_| Uuid::now_v7()).collect();
        for run in &runs {
            set.insert(*run, now);
        }
        assert_eq!(set.len(), 3);
        assert!(!set.contains(&runs[0], now));
        assert!(!set.contains(&runs[1], now));
        assert!(runs[2..].iter().all(|run| set.contains(run, now)));
    }

    #[test]
    fn forgets_runs_older_than_its_age_limit() {
        let mut set = RecentlyCancelled::new(100, Duration::from_secs(60));
        let start = Instant::now();
        let (old, new) = (Uuid::now_v7(), Uuid::now_v7());
        set.insert(old, start);
        assert!(set.contains(&old, start + Duration::from_secs(59)));
        assert!(!set.contains(&old, start + Duration::from_secs(60)));
        // The next insertion frees the memory of what expired.
        set.insert(new, start + Duration::from_secs(61));
        assert_eq!(set.len(), 1);
        assert!(set.contains(&new, start + Duration::from_secs(61)));
    }

    #[test]
    fn a_repeated_announcement_is_remembered_once() {
        let mut set = RecentlyCancelled::new(2, Duration::from_secs(60));
        let now = Instant::now();
        let run = Uuid::now_v7();
        set.insert(run, now);
        set.insert(run, now + Duration::from_secs(1));
        assert_eq!((set.len(), set.order.len()), (1, 1));
    }

    #[tokio::test]
    async fn a_watch_hears_of_a_cancellation_made_before_or_after_it_started() {
        let cancellations = Cancellations::new();
        let (before, after, other) = (Uuid::now_v7(), Uuid::now_v7(), Uuid::now_v7());
        cancellations.record(before);
        assert!(cancellations.watch(before).is_cancelled());

        let mut watch = cancellations.watch(after);
        assert!(!watch.is_cancelled());
        cancellations.record(other);
        cancellations.record(after);
        tokio::time::timeout(Duration::from_secs(5), watch.cancelled())
            .await
            .expect("the cancellation was not heard");
    }
}
