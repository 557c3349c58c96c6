//! Starting runs in batches: concurrent starts (API calls, webhook deliveries) queue here and
//! are committed together, one transaction for as many runs as arrived while the previous
//! transaction was committing. A start that finds the queue empty is committed at once, so
//! batching costs nothing when idle and saves a commit per run under load.

use std::sync::Arc;

use sea_orm::DatabaseConnection;
use tokio::sync::{Notify, mpsc, oneshot};

use crate::store::{self, NewRun, Started, StoreError};

/// Most runs committed in one transaction.
pub const MAX_BATCH: usize = 256;

type Waiter = oneshot::Sender<Result<Started, StoreError>>;

/// The handle requests start runs through; cheap to clone.
#[derive(Debug, Clone)]
pub struct Starter {
    queue: mpsc::Sender<(NewRun, Waiter)>,
}

impl Starter {
    /// Starts the batching task. It ends once every handle is dropped and the queue drained.
    pub fn spawn(
        db: DatabaseConnection,
        definitions: Arc<store::Definitions>,
        outbox: Arc<Notify>,
    ) -> (Starter, tokio::task::JoinHandle<()>) {
        let (queue, rx) = mpsc::channel(MAX_BATCH * 4);
        let task = tokio::spawn(commit_loop(db, definitions, outbox, rx));
        (Starter { queue }, task)
    }

    /// Starts one run (or finds the run its idempotency key names) and returns once it is
    /// committed.
    pub async fn start(&self, run: NewRun) -> Result<Started, StoreError> {
        let (tx, rx) = oneshot::channel();
        let stopped = || StoreError::Db(sea_orm::DbErr::Custom("the engine is stopping".into()));
        self.queue.send((run, tx)).await.map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }
}

async fn commit_loop(
    db: DatabaseConnection,
    definitions: Arc<store::Definitions>,
    outbox: Arc<Notify>,
    mut rx: mpsc::Receiver<(NewRun, Waiter)>,
) {
    let mut runs = Vec::with_capacity(MAX_BATCH);
    let mut waiters = Vec::with_capacity(MAX_BATCH);
    while let Some((run, waiter)) = rx.recv().await {
        runs.push(run);
        waiters.push(waiter);
        while runs.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok((run, waiter)) => {
                    runs.push(run);
                    waiters.push(waiter);
                }
                Err(_) => break,
            }
        }
        match store::start_runs(&db, &definitions, std::mem::take(&mut runs)).await {
            Ok(answers) => {
                if answers.iter().any(|a| matches!(a, Ok(s) if s.created)) {
                    outbox.notify_one();
                }
                for (answer, waiter) in answers.into_iter().zip(waiters.drain(..)) {
                    let _ = waiter.send(answer);
                }
            }
            Err(e) => {
                // Nothing of the batch was committed: every request hears so.
                tracing::warn!(error = %e, runs = waiters.len(), "starting a batch of runs failed");
                let message = e.to_string();
                for waiter in waiters.drain(..) {
                    let _ =
                        waiter.send(Err(StoreError::Db(sea_orm::DbErr::Custom(message.clone()))));
                }
            }
        }
    }
}
