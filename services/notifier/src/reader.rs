//! Reads the held partitions' feeds from Postgres and hands each event to the dispatcher.
//!
//! One query per round covers every partition read (each from its own cursor); a round that
//! finds nothing waits for the poll interval, or for a newly taken partition. Each event takes a
//! permit of the in-memory budget first: when every permit is held by an undelivered event,
//! reading pauses until deliveries catch up.

use std::{sync::Arc, time::Duration};

use presence_common::{AppDirectory, backoff::Backoff, partition_lease::Ownership};
use presence_proto::v1::PresenceEvent;
use sqlx::PgPool;
use tokio::sync::{Notify, Semaphore};

use crate::{Shutdown, callback::Callback, cursors::Cursors, dispatcher::Dispatcher, feed, metric_names};

/// Events read per query, shared out over the partitions read.
pub const PAGE: u32 = 500;

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct Reader {
    pub pool: PgPool,
    pub apps: AppDirectory,
    pub dispatcher: Dispatcher,
    pub cursors: Arc<Cursors>,
    pub ownership: Ownership,
    pub budget: Arc<Semaphore>,
    pub poll_interval: Duration,
    /// Signalled when partitions start being served.
    pub wake: Arc<Notify>,
    pub shutdown: Shutdown,
}

impl Reader {
    pub async fn run(self) {
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        while !self.shutdown.is_cancelled() {
            let wanted = self.cursors.to_read(&self.ownership);
            let cursors: Vec<(u32, u64)> = wanted.iter().map(|(p, _, read)| (*p, *read)).collect();
            let delay = match feed::read(&self.pool, &cursors, PAGE).await {
                Ok(events) if events.is_empty() => self.poll_interval,
                Ok(events) => {
                    backoff.reset();
                    for event in events {
                        let Some((_, epoch, _)) = wanted.iter().find(|(p, _, _)| *p == event.partition)
                        else {
                            continue;
                        };
                        if !self.hand_over(event, *epoch).await {
                            return;
                        }
                    }
                    continue;
                }
                Err(err) => {
                    tracing::warn!(%err, "reading the event feed failed; retrying");
                    backoff.next_delay()
                }
            };
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = self.wake.notified() => {}
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// Gives one event to the dispatcher (or settles it at once when its app wants no
    /// callbacks). False on shutdown.
    async fn hand_over(&self, event: PresenceEvent, epoch: i64) -> bool {
        let (partition, position, time) = (event.partition, event.position, event.event_time_ms);
        if self.apps.get(&event.app_id).is_none_or(|app| app.callback_url.is_none()) {
            metrics::counter!(metric_names::SKIPPED).increment(1);
            self.cursors.skipped(partition, epoch, position, time);
            return true;
        }
        let callback = match Callback::from_event(&event, epoch) {
            Ok(callback) => callback,
            Err(err) => {
                tracing::error!(%err, event_id = event.event_id, "event cannot be encoded; skipped");
                self.cursors.skipped(partition, epoch, position, time);
                return true;
            }
        };
        let permit = tokio::select! {
            () = self.shutdown.cancelled() => return false,
            permit = self.budget.clone().acquire_owned() => permit.ok(),
        };
        // Not if the partition began a hand-over (or was lost) while this waited for a permit.
        if self.cursors.received(partition, epoch, position, time) {
            self.dispatcher.enqueue(callback, permit);
        }
        true
    }
}
