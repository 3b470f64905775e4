use std::{
    collections::{HashMap, VecDeque, hash_map::Entry},
    sync::Arc,
    time::{Duration, Instant, SystemTime},
};

use parking_lot::Mutex;
use presence_common::backoff::Backoff;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::{
    Shutdown,
    callback::{Callback, Origin},
    cursors::{AttemptGuard, Cursors},
    dead_letters::{Burial, DeadLetters},
    delivery::{Attempt, CallbackDelivery},
    metric_names,
    retry::RetryPolicy,
};

/// Retry delays of bookkeeping writes (dead letters) while Postgres is away.
const DB_RETRY_MIN: Duration = Duration::from_secs(1);
const DB_RETRY_MAX: Duration = Duration::from_secs(5);

type UserKey = (String, String);

/// A queued callback and its share of the in-memory budget.
struct Queued {
    callback: Callback,
    _budget: Option<OwnedSemaphorePermit>,
}

/// Per-user queues, each drained by one task: a user's events go out one after another, in feed
/// order, while different users' go out concurrently (bounded per app). A user's queue and task
/// exist only while it has something to deliver. A callback whose partition is no longer held
/// under the epoch it was read in is dropped unsent: the partition's next owner sends it.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    queues: Mutex<HashMap<UserKey, VecDeque<Queued>>>,
    app_slots: Mutex<HashMap<String, Arc<Semaphore>>>,
    concurrency_per_app: usize,
    delivery: CallbackDelivery,
    retry: RetryPolicy,
    dead_letters: DeadLetters,
    cursors: Arc<Cursors>,
    shutdown: Shutdown,
}

/// How a callback left its queue.
enum Outcome {
    /// Delivered, skipped or dead-lettered.
    Settled,
    /// Its partition's hold ended; not this process's to deliver any more.
    Abandoned,
    /// The notifier is shutting down.
    Stopped,
}

pub struct DispatcherParts {
    pub delivery: CallbackDelivery,
    pub retry: RetryPolicy,
    pub dead_letters: DeadLetters,
    pub cursors: Arc<Cursors>,
    pub concurrency_per_app: usize,
    pub shutdown: Shutdown,
}

impl Dispatcher {
    pub fn new(parts: DispatcherParts) -> Self {
        Self {
            inner: Arc::new(Inner {
                queues: Mutex::default(),
                app_slots: Mutex::default(),
                concurrency_per_app: parts.concurrency_per_app.max(1),
                delivery: parts.delivery,
                retry: parts.retry,
                dead_letters: parts.dead_letters,
                cursors: parts.cursors,
                shutdown: parts.shutdown,
            }),
        }
    }

    /// Queues `callback` behind its user's earlier ones. `budget` is released once it is settled.
    pub fn enqueue(&self, callback: Callback, budget: Option<OwnedSemaphorePermit>) {
        let key = (callback.app_id.clone(), callback.user_id.clone());
        let queued = Queued { callback, _budget: budget };
        let start_worker = match self.inner.queues.lock().entry(key.clone()) {
            Entry::Occupied(mut queue) => {
                queue.get_mut().push_back(queued);
                false
            }
            Entry::Vacant(slot) => {
                slot.insert(VecDeque::from([queued]));
                true
            }
        };
        if start_worker {
            tokio::spawn(self.clone().drain(key));
        }
    }

    /// Delivers `key`'s queue until it is empty (then forgets it) or the notifier shuts down.
    async fn drain(self, key: UserKey) {
        loop {
            let Some(callback) =
                self.inner.queues.lock().get(&key).and_then(|q| q.front()).map(|q| q.callback.clone())
            else {
                return;
            };
            match self.settle(&callback).await {
                // The cursor stays below this event; the partition's next reader resends it.
                Outcome::Stopped => return,
                Outcome::Settled => {}
                Outcome::Abandoned => metrics::counter!(metric_names::ABANDONED).increment(1),
            }
            if let Origin::Replay { .. } = callback.origin {
                self.inner.dead_letters.replay_done(&callback.event_id);
            }
            let mut queues = self.inner.queues.lock();
            let Some(queue) = queues.get_mut(&key) else { return };
            queue.pop_front();
            if queue.is_empty() {
                queues.remove(&key);
                return;
            }
        }
    }

    fn app_slots(&self, app_id: &str) -> Arc<Semaphore> {
        self.inner
            .app_slots
            .lock()
            .entry(app_id.to_owned())
            .or_insert_with(|| Arc::new(Semaphore::new(self.inner.concurrency_per_app)))
            .clone()
    }

    /// Delivers, retrying with backoff, until delivered, skipped or dead-lettered, until its
    /// partition's hold ends, or until shutdown.
    async fn settle(&self, callback: &Callback) -> Outcome {
        let app = callback.app_id.clone();
        let slots = self.app_slots(&app);
        let shutdown = &self.inner.shutdown;
        let mut failures = 0u32;
        let mut first_failure: Option<(Instant, SystemTime)> = None;
        loop {
            let (attempt, guard) = {
                let Ok(_slot) = slots.acquire().await else { return Outcome::Stopped };
                // Asked once a slot is ours (waiting for it may take a while). The guard is held
                // until the outcome is recorded: a hand-over of the partition waits for it.
                let Some(guard) = self.inner.cursors.begin_attempt(callback.origin) else {
                    return Outcome::Abandoned;
                };
                tokio::select! {
                    () = shutdown.cancelled() => return Outcome::Stopped,
                    attempt = self.inner.delivery.attempt(callback) => (attempt, guard),
                }
            };
            let error = match attempt {
                Attempt::Delivered => {
                    metrics::counter!(metric_names::DELIVERED, "app" => app).increment(1);
                    let outcome = match callback.origin {
                        Origin::Replay { .. } => {
                            self.persist(|| self.inner.dead_letters.forget(&callback.event_id)).await
                        }
                        Origin::Feed { .. } => Outcome::Settled,
                    };
                    return self.record(callback, outcome, guard);
                }
                Attempt::NoReceiver => {
                    metrics::counter!(metric_names::SKIPPED).increment(1);
                    return self.record(callback, Outcome::Settled, guard);
                }
                Attempt::Failed(error) => error,
            };
            failures += 1;
            let (since, first_attempt_at) =
                *first_failure.get_or_insert_with(|| (Instant::now(), SystemTime::now()));
            if self.inner.retry.gives_up(failures, since.elapsed()) {
                tracing::warn!(
                    app,
                    user = callback.user_id,
                    event_id = callback.event_id,
                    failures,
                    error,
                    "callback dead-lettered"
                );
                metrics::counter!(metric_names::DEAD_LETTERED, "app" => app).increment(1);
                let burial = || {
                    self.inner.dead_letters.bury(Burial {
                        callback,
                        attempts: failures,
                        last_error: &error,
                        first_attempt_at,
                    })
                };
                let outcome = self.persist(burial).await;
                return self.record(callback, outcome, guard);
            }
            drop(guard);
            if failures == 1 {
                tracing::info!(app, event_id = callback.event_id, error, "callback failed; retrying");
            }
            metrics::counter!(metric_names::RETRIED, "app" => app.clone()).increment(1);
            tokio::select! {
                () = shutdown.cancelled() => return Outcome::Stopped,
                () = tokio::time::sleep(self.inner.retry.delay(failures)) => {}
            }
        }
    }

    /// A settled feed event may move its partition's cursor; recorded before the attempt's guard
    /// goes, so that a hand-over saves the cursor with it.
    fn record(&self, callback: &Callback, outcome: Outcome, _attempt: AttemptGuard<'_>) -> Outcome {
        if let Outcome::Settled = outcome {
            self.inner.cursors.settled(callback.origin);
        }
        outcome
    }

    /// Runs a bookkeeping write until it succeeds or the notifier shuts down: an event is settled
    /// only once what settles it is durable.
    async fn persist<F, Fut>(&self, write: F) -> Outcome
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Result<(), sqlx::Error>>,
    {
        let mut backoff = Backoff::new(DB_RETRY_MIN, DB_RETRY_MAX);
        loop {
            match write().await {
                Ok(()) => return Outcome::Settled,
                Err(err) => tracing::warn!(%err, "writing dead letter state failed; retrying"),
            }
            tokio::select! {
                () = self.inner.shutdown.cancelled() => return Outcome::Stopped,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }
}
