//! What the notifier does as it gains and loses partitions (see
//! [`presence_common::partition_lease`]).
//!
//! Taken: its saved cursor is loaded and reading starts from it. Handed over (a graceful stop, or
//! another notifier's share): reading and new attempts stop, the attempts under way get a bounded
//! time to finish, and the cursor is saved before the lease is released. The next owner starts
//! from that cursor and sends what this process had queued but not sent, after everything this
//! process sent: a user's callbacks are neither lost nor reordered (some may come twice). Lost
//! (another notifier took it): its queued callbacks are dropped unsent; the new owner sends them
//! from the saved cursor.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use presence_common::partition_lease::PartitionHolder;
use sqlx::PgPool;
use tokio::sync::Notify;

use crate::{cursors::Cursors, partition_store};

/// Longest a hand-over waits for in-flight callbacks (a failing receiver may be retried for an
/// hour): past it, the next owner sends what is left again.
const DRAIN_LIMIT: Duration = Duration::from_secs(5);
/// Hand-overs that follow one another within this share one wait (see [`Holder::drain_limit`]).
const BATCH_GAP: Duration = Duration::from_secs(1);

pub struct Holder {
    pool: PgPool,
    /// This process's member id: cursors are saved only while it owns the partition.
    member: String,
    cursors: Arc<Cursors>,
    /// Wakes the reader when partitions start being served.
    wake: Arc<Notify>,
    drain_limit: Duration,
    /// The current batch of hand-overs: its deadline, and when its last hand-over ended.
    batch: Mutex<Option<(Instant, Instant)>>,
}

impl Holder {
    pub fn new(
        pool: PgPool,
        member: String,
        cursors: Arc<Cursors>,
        wake: Arc<Notify>,
        lease: Duration,
    ) -> Self {
        Self { pool, member, cursors, wake, drain_limit: Self::drain_limit(lease), batch: Mutex::new(None) }
    }

    /// The lease loop renews nothing while it hands partitions over, one after another: a batch
    /// of hand-overs (a graceful stop, a share given to a new notifier) waits at most this in
    /// all, a third of the lease, so that the lease is renewed in time.
    fn drain_limit(lease: Duration) -> Duration {
        DRAIN_LIMIT.min(lease / 3)
    }

    /// When the hand-over starting now must stop waiting.
    fn deadline(&self, now: Instant) -> Instant {
        let mut batch = self.batch.lock();
        let deadline = match *batch {
            Some((deadline, last_end)) if now <= last_end + BATCH_GAP => deadline,
            _ => now + self.drain_limit,
        };
        *batch = Some((deadline, now));
        deadline
    }

    /// A hand-over of the current batch ended at `at`.
    fn ended(&self, at: Instant) {
        if let Some((_, last_end)) = self.batch.lock().as_mut() {
            *last_end = at;
        }
    }
}

impl PartitionHolder for Holder {
    async fn acquired(&self, partitions: &[(u32, i64)]) -> Result<(), String> {
        let ids: Vec<u32> = partitions.iter().map(|(p, _)| *p).collect();
        let delivered = partition_store::load(&self.pool, &ids).await.map_err(|err| err.to_string())?;
        for (p, epoch) in partitions {
            self.cursors.hold(*p, *epoch, delivered.get(p).copied().unwrap_or(0));
        }
        tracing::debug!(partitions = ?ids, "partitions' cursors loaded");
        Ok(())
    }

    async fn drain(&self, partition: u32) {
        self.cursors.stop_reading(partition);
        let now = Instant::now();
        let deadline = self.deadline(now);
        if !self.cursors.wait_attempts(partition, deadline.saturating_duration_since(now)).await {
            tracing::warn!(
                partition,
                "callback attempts still under way at hand-over; the next owner sends them again"
            );
        }
        if let Some(cursor) = self.cursors.unsaved_of(partition) {
            match partition_store::save(&self.pool, &self.member, &[cursor]).await {
                Ok(saved) => saved.into_iter().for_each(|s| self.cursors.saved(s)),
                Err(err) => tracing::warn!(%err, partition, "saving the cursor at hand-over failed"),
            }
        }
        self.ended(Instant::now());
    }

    fn dropped(&self, partition: u32) {
        self.cursors.release(partition);
    }

    fn serving(&self, _partitions: &[u32]) {
        self.wake.notify_one();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_hand_over_waits_at_most_a_third_of_the_lease() {
        assert_eq!(Holder::drain_limit(Duration::from_secs(6)), Duration::from_secs(2));
        assert_eq!(Holder::drain_limit(Duration::from_secs(60)), DRAIN_LIMIT);
    }

    #[tokio::test]
    async fn hand_overs_in_a_row_share_a_deadline_and_a_later_one_gets_its_own() {
        let pool = sqlx::PgPool::connect_lazy("postgres://127.0.0.1/none").unwrap();
        let holder = Holder::new(pool, "n".into(), Arc::default(), Arc::default(), Duration::from_secs(6));
        let start = Instant::now();
        let ms = Duration::from_millis;
        let first = holder.deadline(start);
        assert_eq!(first, start + Duration::from_secs(2));
        holder.ended(start + ms(300));
        assert_eq!(holder.deadline(start + ms(500)), first, "the same batch");
        holder.ended(start + ms(2000));
        assert_eq!(holder.deadline(start + ms(2400)), first, "right after the last one: no wait left");
        holder.ended(start + ms(2400));
        let later = start + Duration::from_secs(10);
        assert_eq!(holder.deadline(later), later + Duration::from_secs(2), "a new batch");
    }
}
