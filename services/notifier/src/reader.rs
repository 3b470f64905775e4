//! Reads the held partitions' feeds from Postgres and hands each event to the dispatcher.
//!
//! One query per round covers every partition read (each from its own cursor); a round that
//! finds nothing waits for the poll interval, or for a newly taken partition. Each event takes
//! room in its app's share of the in-memory budget first ([`Budget`]). An event that finds none
//! is left in Postgres and its app parked in the partition ([`Cursors::park`]): reading never
//! waits for one app, so a dead or slow app cannot hold the others back. A second query per round
//! reads parked apps' events again once they have room.

use std::{sync::Arc, time::Duration};

use presence_common::{AppDirectory, backoff::Backoff, partition_lease::Ownership};
use presence_proto::v1::PresenceEvent;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{
    Shutdown,
    budget::Budget,
    callback::{Callback, Origin},
    cursors::{Cursors, ParkedRead},
    dispatcher::Dispatcher,
    feed, metric_names,
};

/// Events read per query, shared out over the partitions read.
pub const PAGE: u32 = 500;
/// Fewest events of one parked app and partition read again per query.
const MIN_PARKED_READ: u32 = 16;

const RETRY_MIN: Duration = Duration::from_millis(100);
const RETRY_MAX: Duration = Duration::from_secs(5);

pub struct Reader {
    pub pool: PgPool,
    pub apps: AppDirectory,
    pub dispatcher: Dispatcher,
    pub cursors: Arc<Cursors>,
    pub ownership: Ownership,
    pub budget: Arc<Budget>,
    pub poll_interval: Duration,
    /// Signalled when partitions start being served.
    pub wake: Arc<Notify>,
    pub shutdown: Shutdown,
}

/// How many events to read again for each parked read: an app's room shared out over its
/// parked partitions (at least [`MIN_PARKED_READ`] each; what finds no room then stays parked).
/// `room` is asked once per app.
pub fn parked_limits(reads: &[ParkedRead], mut room: impl FnMut(&str) -> usize) -> Vec<u32> {
    let mut per_app: std::collections::HashMap<&str, (usize, usize)> = std::collections::HashMap::new();
    for read in reads {
        per_app.entry(read.app_id.as_str()).or_insert((0, 0)).1 += 1;
    }
    for (app, (app_room, _)) in &mut per_app {
        *app_room = room(app);
    }
    reads
        .iter()
        .map(|read| {
            let (app_room, partitions) = per_app[read.app_id.as_str()];
            if app_room == 0 {
                return 0;
            }
            let share = app_room.div_ceil(partitions.max(1)).max(MIN_PARKED_READ as usize).min(PAGE as usize);
            u32::try_from(share).unwrap_or(PAGE)
        })
        .collect()
}

impl Reader {
    pub async fn run(self) {
        let mut backoff = Backoff::new(RETRY_MIN, RETRY_MAX);
        while !self.shutdown.is_cancelled() {
            let delay = match self.round().await {
                Ok(0) => self.poll_interval,
                Ok(_) => {
                    backoff.reset();
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

    /// Reads the partitions' new events, then parked apps' events that have room again. Returns
    /// how many events were read.
    async fn round(&self) -> Result<usize, sqlx::Error> {
        let wanted = self.cursors.to_read(&self.ownership);
        let cursors: Vec<(u32, u64)> = wanted.iter().map(|(p, _, read)| (*p, *read)).collect();
        let events = feed::read(&self.pool, &cursors, PAGE).await?;
        let mut read = events.len();
        for event in events {
            if let Some((_, epoch, _)) = wanted.iter().find(|(p, _, _)| *p == event.partition) {
                self.hand_over(event, *epoch);
            }
        }

        let parked = self.cursors.parked_to_read(&self.ownership);
        let limits = parked_limits(&parked, |app| self.budget.room_to_read_again(app));
        let (reads, limits): (Vec<ParkedRead>, Vec<u32>) =
            parked.into_iter().zip(limits).filter(|(_, limit)| *limit > 0).unzip();
        let events = feed::read_parked(&self.pool, &reads, &limits).await?;
        read += events.len();
        let mut events = events.into_iter().peekable();
        for (parked, limit) in reads.iter().zip(limits) {
            let mut count = 0u32;
            let mut all_in = true;
            while let Some(event) =
                events.next_if(|e| e.partition == parked.partition && e.app_id == parked.app_id)
            {
                count += 1;
                // Once one found no room, the rest wait too: they must not pass it.
                all_in = all_in && self.hand_over_again(event, parked.epoch);
            }
            // Fewer than asked for: nothing of the app is left up to the main read.
            if count < limit && all_in {
                self.cursors.unpark(parked.partition, parked.epoch, &parked.app_id, parked.upto);
            }
        }
        Ok(read)
    }

    /// Gives one event to the dispatcher, or leaves it in Postgres when its app has no room (or
    /// is parked already), or settles it at once when its app wants no callbacks.
    fn hand_over(&self, event: PresenceEvent, epoch: i64) {
        let (partition, position, time) = (event.partition, event.position, event.event_time_ms);
        if self.apps.get(&event.app_id).is_none_or(|app| app.callback_url.is_none()) {
            metrics::counter!(metric_names::SKIPPED).increment(1);
            self.cursors.skipped(partition, epoch, position, time);
            return;
        }
        let ticket = if self.cursors.is_parked(partition, &event.app_id) {
            None
        } else {
            self.budget.take(&event.app_id)
        };
        let Some(ticket) = ticket else {
            self.cursors.park(partition, epoch, &event.app_id, position, time);
            return;
        };
        let Some(callback) = encode(&event, epoch) else {
            self.cursors.skipped(partition, epoch, position, time);
            return;
        };
        // Not if the partition began a hand-over (or was lost).
        if self.cursors.received(partition, epoch, position, time) {
            self.dispatcher.enqueue(callback, Some(ticket));
        }
    }

    /// Gives a parked app's event, read again, to the dispatcher. False when it found no room
    /// (it stays parked, to be read again later).
    fn hand_over_again(&self, event: PresenceEvent, epoch: i64) -> bool {
        let (partition, position, time) = (event.partition, event.position, event.event_time_ms);
        let Some(ticket) = self.budget.take(&event.app_id) else { return false };
        if !self.cursors.received_again(partition, epoch, &event.app_id, position, time) {
            return true;
        }
        let wanted = self.apps.get(&event.app_id).is_some_and(|app| app.callback_url.is_some());
        match encode(&event, epoch).filter(|_| wanted) {
            Some(callback) => self.dispatcher.enqueue(callback, Some(ticket)),
            None => self.cursors.settled(Origin::Feed { partition, epoch, position }),
        }
        true
    }
}

fn encode(event: &PresenceEvent, epoch: i64) -> Option<Callback> {
    Callback::from_event(event, epoch)
        .inspect_err(
            |err| tracing::error!(%err, event_id = event.event_id, "event cannot be encoded; skipped"),
        )
        .ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parked(partition: u32, app: &str) -> ParkedRead {
        ParkedRead { partition, epoch: 1, app_id: app.into(), from: 1, upto: 100 }
    }

    #[test]
    fn an_apps_room_is_shared_out_over_its_parked_partitions() {
        let reads = [parked(0, "a"), parked(1, "a"), parked(2, "a"), parked(0, "b"), parked(1, "c")];
        let mut asked = Vec::new();
        let limits = parked_limits(&reads, |app| {
            asked.push(app.to_owned());
            match app {
                "a" => 300,
                "b" => 5,
                _ => 0,
            }
        });
        assert_eq!(limits, [100, 100, 100, MIN_PARKED_READ, 0]);
        asked.sort();
        assert_eq!(asked, ["a", "b", "c"], "once per app");
        assert_eq!(parked_limits(&[parked(0, "a")], |_| 1_000_000), [PAGE]);
    }
}
