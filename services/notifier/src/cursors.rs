//! The partitions this notifier holds, each with its own cursor: what was read, what is settled
//! (its [`Watermark`]) and what is saved.
//!
//! An app with no room in memory (see [`crate::budget`]) is *parked* in a partition: from its
//! first event that found no room, its events there are passed over by the main read and stay
//! in Postgres; the partition's cursor stays below that event. Once the app has room, its events
//! are read again from there (`feed::read_parked`) until they reach the main read: then it is
//! no longer parked. So a dead app costs a number per partition in memory, not its backlog, and
//! the other apps of the partition are read on.
//!
//! A hold is identified by the partition's epoch: callbacks carry the epoch they were read under,
//! so work of a hold that ended (the partition was lost, or handed over and taken again) never
//! touches the hold that replaced it. Every delivery attempt holds an [`AttemptGuard`]: a
//! hand-over stops new attempts and waits for those under way, so that the partition's next owner
//! never sends a user's callback while this process still is.

use std::{collections::HashMap, time::Duration};

use parking_lot::Mutex;
use presence_common::partition_lease::Ownership;
use tokio::sync::Notify;

use crate::{callback::Origin, watermark::Watermark};

struct Held {
    epoch: i64,
    watermark: Watermark,
    /// The last position read (handed to the dispatcher or skipped).
    read: u64,
    /// The cursor as last saved (`notifier_partitions.delivered`).
    saved: u64,
    /// False once a hand-over began: nothing more is read or attempted.
    reading: bool,
    /// Delivery attempts under way (see [`AttemptGuard`]).
    attempts: usize,
    /// Parked apps: the position of each one's first event not read into memory, and the event
    /// time of the oldest such event known (for the lag).
    parked: HashMap<String, Parked>,
}

#[derive(Debug, Clone, Copy)]
struct Parked {
    from: u64,
    event_time_ms: u64,
}

impl Held {
    /// Every event up to this is settled: below the oldest in flight and below every parked
    /// app's first event left in Postgres.
    fn durable(&self) -> u64 {
        let parked = self.parked.values().map(|p| p.from.saturating_sub(1)).min();
        parked.map_or(self.watermark.durable(), |p| p.min(self.watermark.durable()))
    }
}

/// A parked app's events of one partition to read again: `from..=upto` (`upto` is the main read).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParkedRead {
    pub partition: u32,
    pub epoch: i64,
    pub app_id: String,
    pub from: u64,
    pub upto: u64,
}

/// A partition's cursor that moved past its saved value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Unsaved {
    pub partition: u32,
    pub epoch: i64,
    pub durable: u64,
}

#[derive(Default)]
pub struct Cursors {
    held: Mutex<HashMap<u32, Held>>,
    /// Signalled whenever an attempt ends (hand-overs wait for their partition's).
    settled: Notify,
}

/// One delivery attempt under way (and the write that settles its outcome).
pub struct AttemptGuard<'a> {
    cursors: &'a Cursors,
    partition: u32,
    epoch: i64,
}

impl Drop for AttemptGuard<'_> {
    fn drop(&mut self) {
        if let Some(h) = self.cursors.held.lock().get_mut(&self.partition).filter(|h| h.epoch == self.epoch) {
            h.attempts = h.attempts.saturating_sub(1);
        }
        self.cursors.settled.notify_waiters();
    }
}

impl Cursors {
    /// `partition` is ours under `epoch`; every event up to `delivered` is settled.
    pub fn hold(&self, partition: u32, epoch: i64, delivered: u64) {
        let held = Held {
            epoch,
            watermark: Watermark::starting_at(delivered),
            read: delivered,
            saved: delivered,
            reading: true,
            attempts: 0,
            parked: HashMap::new(),
        };
        self.held.lock().insert(partition, held);
    }

    /// Forgets `partition`: its queued callbacks are no longer current.
    pub fn release(&self, partition: u32) {
        self.held.lock().remove(&partition);
        self.settled.notify_waiters();
    }

    /// Stops reading `partition` and starting attempts of its callbacks (a hand-over began).
    pub fn stop_reading(&self, partition: u32) {
        if let Some(h) = self.held.lock().get_mut(&partition) {
            h.reading = false;
        }
    }

    /// Partitions to read now, with their epochs and read cursors: held, still read, and served
    /// under the same epoch (a lease that may have run out is not read).
    pub fn to_read(&self, ownership: &Ownership) -> Vec<(u32, i64, u64)> {
        let mut parts: Vec<(u32, i64, u64)> = self
            .held
            .lock()
            .iter()
            .filter(|(p, h)| h.reading && ownership.serving_epoch(**p) == Some(h.epoch))
            .map(|(p, h)| (*p, h.epoch, h.read))
            .collect();
        parts.sort_unstable();
        parts
    }

    /// Held partitions that are still read, with their epochs.
    pub fn reading(&self) -> Vec<(u32, i64)> {
        self.held.lock().iter().filter(|(_, h)| h.reading).map(|(p, h)| (*p, h.epoch)).collect()
    }

    /// An event read under `epoch` enters the notifier. False when it must not be delivered: the
    /// hold ended or is being handed over, or the event was read already.
    pub fn received(&self, partition: u32, epoch: i64, position: u64, event_time_ms: u64) -> bool {
        let mut held = self.held.lock();
        let Some(h) = held.get_mut(&partition) else { return false };
        if h.epoch != epoch || !h.reading || position <= h.read {
            return false;
        }
        h.read = position;
        h.watermark.received(position, event_time_ms);
        true
    }

    /// An event read that needs no delivery (its app has no callback URL, or it cannot be
    /// encoded): settled at once.
    pub fn skipped(&self, partition: u32, epoch: i64, position: u64, event_time_ms: u64) {
        if self.received(partition, epoch, position, event_time_ms) {
            self.settled(Origin::Feed { partition, epoch, position });
        }
    }

    /// A callback needs nothing more: a feed event's position may move its cursor.
    pub fn settled(&self, origin: Origin) {
        if let Origin::Feed { partition, epoch, position } = origin
            && let Some(h) = self.held.lock().get_mut(&partition).filter(|h| h.epoch == epoch)
        {
            h.watermark.settled(position);
        }
    }

    /// Lets one delivery attempt of a callback start, unless its hold ended or is being handed
    /// over (then it is not this process's to send any more).
    pub fn begin_attempt(&self, origin: Origin) -> Option<AttemptGuard<'_>> {
        let (partition, epoch) = origin.partition();
        let mut held = self.held.lock();
        let h = held.get_mut(&partition).filter(|h| h.epoch == epoch && h.reading)?;
        h.attempts += 1;
        Some(AttemptGuard { cursors: self, partition, epoch })
    }

    /// Waits until no attempt of `partition`'s callbacks is under way, for at most `limit`. True
    /// when none is.
    pub async fn wait_attempts(&self, partition: u32, limit: Duration) -> bool {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // Registered before the check, so an attempt ending in between still wakes this.
            let ended = self.settled.notified();
            if self.held.lock().get(&partition).is_none_or(|h| h.attempts == 0) {
                return true;
            }
            if tokio::time::timeout_at(deadline, ended).await.is_err() {
                return false;
            }
        }
    }

    /// The cursors that moved past what was saved.
    pub fn unsaved(&self) -> Vec<Unsaved> {
        let mut unsaved: Vec<Unsaved> = self
            .held
            .lock()
            .iter()
            .filter(|(_, h)| h.durable() > h.saved)
            .map(|(p, h)| Unsaved { partition: *p, epoch: h.epoch, durable: h.durable() })
            .collect();
        unsaved.sort_unstable_by_key(|u| u.partition);
        unsaved
    }

    /// `partition`'s cursor, if it moved past what was saved.
    pub fn unsaved_of(&self, partition: u32) -> Option<Unsaved> {
        let held = self.held.lock();
        let h = held.get(&partition)?;
        (h.durable() > h.saved).then(|| Unsaved { partition, epoch: h.epoch, durable: h.durable() })
    }

    /// A cursor was saved under its hold's epoch.
    pub fn saved(&self, saved: Unsaved) {
        if let Some(h) = self.held.lock().get_mut(&saved.partition).filter(|h| h.epoch == saved.epoch) {
            h.saved = h.saved.max(saved.durable);
        }
    }

    /// Events in flight over every partition (in memory; parked ones are not counted), and the
    /// event time of the oldest unsettled one (parked ones included).
    pub fn pending(&self) -> (usize, Option<u64>) {
        let held = self.held.lock();
        let count = held.values().map(|h| h.watermark.in_flight()).sum();
        let oldest = held
            .values()
            .flat_map(|h| {
                h.watermark
                    .oldest_event_time_ms()
                    .into_iter()
                    .chain(h.parked.values().map(|p| p.event_time_ms))
            })
            .min();
        (count, oldest)
    }

    /// Whether `app_id`'s events of `partition` are left in Postgres for now.
    pub fn is_parked(&self, partition: u32, app_id: &str) -> bool {
        self.held.lock().get(&partition).is_some_and(|h| h.parked.contains_key(app_id))
    }

    /// An event read under `epoch` is left in Postgres: its app has no room. Parks the app in
    /// the partition from this event on (if not parked already); the main read goes on past it.
    pub fn park(&self, partition: u32, epoch: i64, app_id: &str, position: u64, event_time_ms: u64) {
        let mut held = self.held.lock();
        let Some(h) = held.get_mut(&partition) else { return };
        if h.epoch != epoch || !h.reading || position <= h.read {
            return;
        }
        h.read = position;
        h.watermark.passed(position);
        h.parked.entry(app_id.to_owned()).or_insert(Parked { from: position, event_time_ms });
    }

    /// The parked apps' events to read again, for the partitions read now (as [`Self::to_read`]).
    pub fn parked_to_read(&self, ownership: &Ownership) -> Vec<ParkedRead> {
        let mut reads: Vec<ParkedRead> = self
            .held
            .lock()
            .iter()
            .filter(|(p, h)| h.reading && ownership.serving_epoch(**p) == Some(h.epoch))
            .flat_map(|(p, h)| {
                h.parked.iter().map(|(app_id, parked)| ParkedRead {
                    partition: *p,
                    epoch: h.epoch,
                    app_id: app_id.clone(),
                    from: parked.from,
                    upto: h.read,
                })
            })
            .collect();
        reads.sort_unstable_by(|a, b| (a.partition, &a.app_id).cmp(&(b.partition, &b.app_id)));
        reads
    }

    /// A parked app's event, read again, enters the notifier (in position order). False when it
    /// must not be delivered (as [`Self::received`]).
    pub fn received_again(
        &self,
        partition: u32,
        epoch: i64,
        app_id: &str,
        position: u64,
        event_time_ms: u64,
    ) -> bool {
        let mut held = self.held.lock();
        let Some(h) = held.get_mut(&partition) else { return false };
        if h.epoch != epoch || !h.reading || position > h.read {
            return false;
        }
        let Some(parked) = h.parked.get_mut(app_id).filter(|p| p.from <= position) else { return false };
        // The watermark's in-flight entry now keeps the cursor below this one.
        *parked = Parked { from: position + 1, event_time_ms };
        h.watermark.received(position, event_time_ms);
        true
    }

    /// Every event of a parked app up to the main read is in memory (or settled): it is read with
    /// the others again.
    pub fn unpark(&self, partition: u32, epoch: i64, app_id: &str, upto: u64) {
        if let Some(h) = self.held.lock().get_mut(&partition).filter(|h| h.epoch == epoch && h.read == upto) {
            h.parked.remove(app_id);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn feed(partition: u32, epoch: i64, position: u64) -> Origin {
        Origin::Feed { partition, epoch, position }
    }

    #[test]
    fn each_partition_has_its_own_watermark() {
        let cursors = Cursors::default();
        cursors.hold(1, 7, 10);
        cursors.hold(2, 3, 0);
        for position in 11..=13 {
            assert!(cursors.received(1, 7, position, 100 + position));
        }
        assert!(cursors.received(2, 3, 1, 50));
        assert!(cursors.unsaved().is_empty(), "nothing settled yet");
        assert_eq!(cursors.pending(), (4, Some(50)));

        cursors.settled(feed(1, 7, 12));
        assert!(cursors.unsaved().is_empty(), "11 is still in flight");
        cursors.settled(feed(1, 7, 11));
        cursors.settled(feed(2, 3, 1));
        assert_eq!(
            cursors.unsaved(),
            [Unsaved { partition: 1, epoch: 7, durable: 12 }, Unsaved { partition: 2, epoch: 3, durable: 1 }]
        );
        cursors.saved(Unsaved { partition: 1, epoch: 7, durable: 12 });
        assert_eq!(cursors.unsaved_of(1), None);
        assert_eq!(cursors.unsaved_of(2), Some(Unsaved { partition: 2, epoch: 3, durable: 1 }));
        assert_eq!(cursors.pending(), (1, Some(113)));
    }

    #[test]
    fn a_position_is_read_once_and_skipped_events_settle_at_once() {
        let cursors = Cursors::default();
        cursors.hold(0, 1, 5);
        assert!(!cursors.received(0, 1, 5, 0), "at or below the saved cursor");
        cursors.skipped(0, 1, 6, 0);
        assert!(cursors.received(0, 1, 7, 0));
        assert!(!cursors.received(0, 1, 7, 0), "read twice");
        assert_eq!(cursors.unsaved_of(0).map(|u| u.durable), Some(6));
    }

    #[test]
    fn work_of_an_ended_hold_touches_nothing() {
        let cursors = Cursors::default();
        cursors.hold(4, 1, 0);
        assert!(cursors.received(4, 1, 1, 0));
        assert!(cursors.begin_attempt(feed(4, 1, 1)).is_some());
        assert!(!cursors.received(4, 0, 2, 0), "read under an older epoch");

        cursors.release(4);
        assert!(cursors.begin_attempt(feed(4, 1, 1)).is_none(), "lost: not ours to send");
        cursors.hold(4, 2, 0);
        cursors.settled(feed(4, 1, 1));
        assert!(cursors.begin_attempt(feed(4, 1, 1)).is_none(), "taken again: a new hold");
        assert!(cursors.received(4, 2, 1, 0), "the new hold reads the event again");
        assert_eq!(cursors.unsaved_of(4), None, "the old hold's settle did not count");

        cursors.stop_reading(4);
        assert!(!cursors.received(4, 2, 2, 0), "handing over: nothing more is read");
        assert!(cursors.begin_attempt(feed(4, 2, 1)).is_none(), "nor attempted");
        assert!(cursors.reading().is_empty());
    }

    #[tokio::test]
    async fn a_hand_over_waits_for_the_attempts_under_way() {
        let cursors = std::sync::Arc::new(Cursors::default());
        cursors.hold(0, 1, 0);
        cursors.hold(1, 1, 0);
        assert!(cursors.received(0, 1, 1, 0));
        assert!(cursors.received(0, 1, 2, 0));
        assert!(cursors.received(1, 1, 1, 0));
        let other = cursors.begin_attempt(feed(1, 1, 1)).unwrap();
        assert!(cursors.wait_attempts(0, Duration::ZERO).await, "queued is not under way");

        let attempt = {
            let cursors = cursors.clone();
            let (started, start) = tokio::sync::oneshot::channel();
            let task = tokio::spawn(async move {
                let _attempt = cursors.begin_attempt(feed(0, 1, 1)).unwrap();
                started.send(()).unwrap();
                tokio::time::sleep(Duration::from_millis(50)).await;
                cursors.settled(feed(0, 1, 1));
            });
            start.await.unwrap();
            task
        };
        cursors.stop_reading(0);
        assert!(!cursors.wait_attempts(0, Duration::from_millis(10)).await, "still under way");
        assert!(cursors.wait_attempts(0, Duration::from_secs(5)).await);
        attempt.await.unwrap();
        assert_eq!(cursors.unsaved_of(0).map(|u| u.durable), Some(1), "2 was never attempted");
        drop(other);
    }

    #[test]
    fn a_parked_app_keeps_the_cursor_below_its_first_event_left_in_postgres() {
        let cursors = Cursors::default();
        cursors.hold(0, 1, 0);
        let ownership = Ownership::default();
        assert!(cursors.received(0, 1, 1, 10));
        cursors.park(0, 1, "b", 2, 20);
        assert!(cursors.is_parked(0, "b"));
        assert!(cursors.received(0, 1, 3, 30), "other apps are read on");
        cursors.park(0, 1, "b", 4, 40);
        cursors.settled(feed(0, 1, 1));
        cursors.settled(feed(0, 1, 3));
        assert_eq!(cursors.unsaved_of(0).map(|u| u.durable), Some(1), "below b's first parked event");
        assert_eq!(cursors.pending(), (0, Some(20)), "its age counts in the lag");

        assert!(!cursors.received_again(0, 1, "c", 2, 20), "c is not parked");
        assert!(!cursors.received_again(0, 1, "b", 5, 50), "beyond the main read");
        assert!(cursors.received_again(0, 1, "b", 2, 20));
        assert!(!cursors.received_again(0, 1, "b", 2, 20), "read again twice");
        cursors.settled(feed(0, 1, 2));
        assert_eq!(cursors.unsaved_of(0).map(|u| u.durable), Some(2), "b's next may be 3 for all it knows");
        cursors.unpark(0, 1, "b", 3);
        assert!(cursors.is_parked(0, "b"), "not caught up with the main read (4)");
        assert!(cursors.received_again(0, 1, "b", 4, 40));
        cursors.unpark(0, 1, "b", 4);
        assert!(!cursors.is_parked(0, "b"));
        assert!(cursors.parked_to_read(&ownership).is_empty());
        cursors.settled(feed(0, 1, 4));
        assert_eq!(cursors.unsaved_of(0).map(|u| u.durable), Some(4));
    }
}
