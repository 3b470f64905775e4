use std::{
    collections::{HashMap, VecDeque, hash_map::Entry},
    sync::Arc,
    time::{Duration, SystemTime},
};

use parking_lot::Mutex;
use presence_common::backoff::Backoff;
use tokio::sync::Semaphore;

use crate::{
    Shutdown,
    app_labels::AppLabels,
    budget::Ticket,
    callback::{Callback, Origin},
    circuit::{Admit, AppCircuit, CircuitPolicy, Phase},
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
    _budget: Option<Ticket>,
}

/// Per-user queues, each drained by one task: a user's events go out one after another, in feed
/// order, while different users' go out concurrently (bounded per app), each app behind its own
/// circuit breaker (see [`crate::circuit`]). A user's queue and task
/// exist only while it has something to deliver. A callback whose partition is no longer held
/// under the epoch it was read in is dropped unsent: the partition's next owner sends it.
#[derive(Clone)]
pub struct Dispatcher {
    inner: Arc<Inner>,
}

struct Inner {
    queues: Mutex<HashMap<UserKey, VecDeque<Queued>>>,
    apps: Mutex<HashMap<String, Arc<AppState>>>,
    concurrency_per_app: usize,
    circuit: CircuitPolicy,
    labels: Arc<AppLabels>,
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

/// What the dispatcher keeps per app.
struct AppState {
    /// Requests in flight (different users only: one user is sequential).
    slots: Semaphore,
    circuit: Arc<AppCircuit>,
    /// Its `app` metric label.
    label: String,
}

impl AppState {
    /// Records an outcome in the app's circuit, and its opening or closing in the metrics.
    fn record(&self, outcome: impl FnOnce(&mut crate::circuit::Circuit, std::time::Instant) -> bool) {
        let Some((before, after)) = self.circuit.record(outcome) else { return };
        let open = metrics::gauge!(metric_names::CIRCUIT_OPEN, "app" => self.label.clone());
        match (before, after) {
            (Phase::Closed, _) => {
                open.increment(1.0);
                metrics::counter!(metric_names::CIRCUIT_OPENED, "app" => self.label.clone()).increment(1);
                tracing::warn!(
                    app = self.label,
                    "the app's receiver is failing: its callbacks are held, one probe at a time"
                );
            }
            (_, Phase::Closed) => {
                open.decrement(1.0);
                tracing::info!(app = self.label, "the app's receiver answers again: its held callbacks go");
            }
            _ => {}
        }
    }
}

/// The probe's outcome is recorded, or else (its partition went elsewhere, shutdown) the probe
/// is given up when this drops, so that another can go.
struct ProbeGuard<'a> {
    app: &'a AppState,
    armed: bool,
}

impl Drop for ProbeGuard<'_> {
    fn drop(&mut self) {
        if self.armed {
            self.app.record(|c, now| {
                c.probe_abandoned(now);
                false
            });
        }
    }
}

fn disarm(probe: &mut Option<ProbeGuard<'_>>) {
    if let Some(p) = probe {
        p.armed = false;
    }
}

/// The last error of an event dead-lettered without an attempt of its own.
const HELD_TOO_LONG: &str = "held while the app's receiver was failing, for longer than NOTIFIER_MAX_AGE_S";

async fn sleep_until_if(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

pub struct DispatcherParts {
    pub delivery: CallbackDelivery,
    pub retry: RetryPolicy,
    pub circuit: CircuitPolicy,
    pub labels: Arc<AppLabels>,
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
                apps: Mutex::default(),
                concurrency_per_app: parts.concurrency_per_app.max(1),
                circuit: parts.circuit,
                labels: parts.labels,
                delivery: parts.delivery,
                retry: parts.retry,
                dead_letters: parts.dead_letters,
                cursors: parts.cursors,
                shutdown: parts.shutdown,
            }),
        }
    }

    /// Queues `callback` behind its user's earlier ones. `budget` is released once it is settled.
    pub fn enqueue(&self, callback: Callback, budget: Option<Ticket>) {
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

    /// `app_id`'s delivery slots, circuit and metric label, made on first use.
    fn app(&self, app_id: &str) -> Arc<AppState> {
        self.inner
            .apps
            .lock()
            .entry(app_id.to_owned())
            .or_insert_with(|| {
                Arc::new(AppState {
                    slots: Semaphore::new(self.inner.concurrency_per_app),
                    circuit: AppCircuit::new(self.inner.circuit),
                    label: self.inner.labels.label(app_id),
                })
            })
            .clone()
    }

    /// Delivers, retrying, until delivered, skipped or dead-lettered, until its partition's hold
    /// ends, or until shutdown. While the app's circuit is open it waits, attempting nothing
    /// (unless it is the probe), with no per-user backoff; a failure about this event alone is
    /// retried with the user's own backoff.
    ///
    /// Dead-lettering: failed attempts count toward `max_attempts` except those that blamed the
    /// receiver once its circuit opens (failed probes, and the failures that opened it: they say
    /// the receiver is down, not that this event is bad), so an outage alone never dead-letters
    /// when `max_attempts >= failures_to_open`; `max_age` counts from the first failure or the
    /// first wait at an open circuit, whichever came first, and bounds both.
    async fn settle(&self, callback: &Callback) -> Outcome {
        let app = self.app(&callback.app_id);
        let label = app.label.as_str();
        let shutdown = &self.inner.shutdown;
        let retry = &self.inner.retry;
        // Failed attempts, and those that count toward `max_attempts`: of these, the ones that
        // blamed the receiver since the circuit was last open.
        let mut attempts = 0u32;
        let mut failures = 0u32;
        let mut receiver_failures = 0u32;
        // Drives the user's own backoff; starts over after a wait at the circuit.
        let mut backoff_failures = 0u32;
        let mut trouble: Option<(tokio::time::Instant, SystemTime)> = None;
        let mut last_error = String::new();
        loop {
            let expires = trouble.and_then(|(since, _)| retry.max_age.map(|age| since + age));
            if expires.is_some_and(|at| at <= tokio::time::Instant::now()) {
                let Some(guard) = self.inner.cursors.begin_attempt(callback.origin) else {
                    return Outcome::Abandoned;
                };
                let first_at = trouble.map_or_else(SystemTime::now, |(_, at)| at);
                let error = if last_error.is_empty() { HELD_TOO_LONG } else { last_error.as_str() };
                return self.bury(callback, label, attempts, error, first_at, guard).await;
            }
            let Ok(slot) = app.slots.acquire().await else { return Outcome::Stopped };
            let changed = app.circuit.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let probe = match app.circuit.admit() {
                Admit::Send => false,
                Admit::Probe => true,
                wait => {
                    drop(slot);
                    let now = tokio::time::Instant::now();
                    let since = trouble.get_or_insert_with(|| (now, SystemTime::now())).0;
                    backoff_failures = 0;
                    let probe_at = match wait {
                        Admit::WaitUntil(at) => Some(tokio::time::Instant::from_std(at)),
                        _ => None,
                    };
                    let expires = retry.max_age.map(|age| since + age);
                    let until = match (probe_at, expires) {
                        (Some(a), Some(b)) => Some(a.min(b)),
                        (a, b) => a.or(b),
                    };
                    let held = metrics::gauge!(metric_names::HELD, "app" => app.label.clone());
                    held.increment(1.0);
                    let stopped = tokio::select! {
                        () = shutdown.cancelled() => true,
                        () = changed => false,
                        () = sleep_until_if(until) => false,
                    };
                    held.decrement(1.0);
                    if stopped {
                        return Outcome::Stopped;
                    }
                    continue;
                }
            };
            // Released (another may probe at once) unless the probe's outcome is recorded.
            let mut probing = probe.then(|| ProbeGuard { app: &app, armed: true });
            let (attempt, guard) = {
                let _slot = slot;
                // Asked once a slot is ours (waiting for it may take a while). The guard is held
                // until the outcome is recorded: a hand-over of the partition waits for it.
                let Some(guard) = self.inner.cursors.begin_attempt(callback.origin) else {
                    return Outcome::Abandoned;
                };
                tokio::select! {
                    () = shutdown.cancelled() => return Outcome::Stopped,
                    attempt = self.inner.delivery.attempt(callback, label) => (attempt, guard),
                }
            };
            let failure = match attempt {
                Attempt::Delivered => {
                    app.record(|c, _| c.succeeded());
                    disarm(&mut probing);
                    metrics::counter!(metric_names::DELIVERED, "app" => app.label.clone()).increment(1);
                    let outcome = match callback.origin {
                        Origin::Replay { .. } => {
                            self.persist(|| self.inner.dead_letters.forget(&callback.event_id)).await
                        }
                        Origin::Feed { .. } => Outcome::Settled,
                    };
                    return self.record(callback, outcome, guard);
                }
                Attempt::NoReceiver => {
                    if probe {
                        // Nothing to send to any more: let everything through (to be skipped).
                        app.record(|c, _| c.succeeded());
                        disarm(&mut probing);
                    }
                    metrics::counter!(metric_names::SKIPPED).increment(1);
                    return self.record(callback, Outcome::Settled, guard);
                }
                Attempt::Failed(failure) => failure,
            };
            if failure.blames_receiver {
                app.record(|c, now| c.failed(now, probe));
            } else {
                app.record(|c, _| c.succeeded());
            }
            disarm(&mut probing);
            attempts += 1;
            if !failure.blames_receiver {
                failures += 1;
            } else if app.circuit.phase() == Phase::Closed {
                failures += 1;
                receiver_failures += 1;
            } else {
                // The receiver is down (this failure opened the circuit, or it was a probe, or
                // it was sent before the circuit opened): the failures that told us so are the
                // outage's, not this event's. Else a lone user dead-letters on its way to
                // opening the circuit whenever `max_attempts <= failures_to_open`.
                failures -= receiver_failures;
                receiver_failures = 0;
            }
            backoff_failures += 1;
            last_error = failure.error;
            let (since, first_at) =
                *trouble.get_or_insert_with(|| (tokio::time::Instant::now(), SystemTime::now()));
            if retry.gives_up(failures, since.elapsed()) {
                return self.bury(callback, label, attempts, &last_error, first_at, guard).await;
            }
            drop(guard);
            if attempts == 1 && !probe {
                tracing::info!(
                    app = callback.app_id,
                    event_id = callback.event_id,
                    error = last_error,
                    "callback failed; retrying"
                );
            }
            metrics::counter!(metric_names::RETRIED, "app" => app.label.clone()).increment(1);
            let changed = app.circuit.changed();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if app.circuit.phase() != Phase::Closed {
                // Waits at the circuit (next round), not on a backoff of its own.
                continue;
            }
            // A change of the circuit (it opened, or an outage ended) ends this user's backoff.
            tokio::select! {
                () = shutdown.cancelled() => return Outcome::Stopped,
                () = changed => {}
                () = tokio::time::sleep(retry.delay(backoff_failures)) => {}
            }
        }
    }

    /// Dead-letters `callback` and settles it once that is durable.
    async fn bury(
        &self,
        callback: &Callback,
        label: &str,
        attempts: u32,
        error: &str,
        first_attempt_at: SystemTime,
        guard: AttemptGuard<'_>,
    ) -> Outcome {
        tracing::warn!(
            app = callback.app_id,
            user = callback.user_id,
            event_id = callback.event_id,
            attempts,
            error,
            "callback dead-lettered"
        );
        metrics::counter!(metric_names::DEAD_LETTERED, "app" => label.to_owned()).increment(1);
        let burial = || {
            self.inner.dead_letters.bury(Burial { callback, attempts, last_error: error, first_attempt_at })
        };
        let outcome = self.persist(burial).await;
        self.record(callback, outcome, guard)
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
