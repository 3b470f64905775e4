use std::{collections::HashSet, sync::Arc, time::SystemTime};

use bytes::Bytes;
use parking_lot::Mutex;
use sqlx::PgPool;

use crate::callback::{Callback, Origin};

/// Replays queued at once, at most: beyond it, further requests wait for a later round.
const MAX_REPLAYING: usize = 1000;

/// `callback_dead_letters`: events given up on, kept for an admin to inspect and replay by SQL.
///
/// A dead letter is replayed only by the owner of its user's partition, so two notifiers never
/// replay it at once and a replay queues behind the user's other callbacks. Its
/// `replay_requested` stays set until the replay settles (delivered: the row is deleted; failed
/// again: buried anew, which clears it): a replay cut short by a lost partition or a crash is
/// picked up by the partition's next owner.
#[derive(Clone)]
pub struct DeadLetters {
    pool: PgPool,
    /// Event ids of the replays queued here, so that no round claims one twice.
    replaying: Arc<Mutex<HashSet<String>>>,
}

/// A callback that failed for too long.
pub struct Burial<'a> {
    pub callback: &'a Callback,
    pub attempts: u32,
    pub last_error: &'a str,
    pub first_attempt_at: SystemTime,
}

#[derive(sqlx::FromRow)]
struct Row {
    partition: i32,
    event_id: String,
    feed_id: i64,
    app_id: String,
    user_id: String,
    body: String,
}

fn unix_ms(at: SystemTime) -> i64 {
    at.duration_since(SystemTime::UNIX_EPOCH).map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

impl DeadLetters {
    pub fn new(pool: PgPool) -> Self {
        Self { pool, replaying: Arc::default() }
    }

    /// Records (or, for a replay that failed again, updates) a dead letter.
    pub async fn bury(&self, burial: Burial<'_>) -> Result<(), sqlx::Error> {
        let cb = burial.callback;
        sqlx::query(
            "INSERT INTO callback_dead_letters \
                 (event_id, feed_id, app_id, user_id, body, attempts, last_error, first_attempt_at) \
             VALUES ($1::uuid, $2, $3, $4, $5, $6, $7, to_timestamp($8::double precision / 1000)) \
             ON CONFLICT (event_id) DO UPDATE SET attempts = callback_dead_letters.attempts + $6, \
                 last_error = $7, dead_at = now(), replay_requested = false",
        )
        .bind(&cb.event_id)
        .bind(i64::try_from(cb.feed_id).unwrap_or(i64::MAX))
        .bind(&cb.app_id)
        .bind(&cb.user_id)
        .bind(String::from_utf8_lossy(&cb.body).as_ref())
        .bind(i32::try_from(burial.attempts).unwrap_or(i32::MAX))
        .bind(burial.last_error)
        .bind(unix_ms(burial.first_attempt_at))
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Claims up to `limit` dead letters an admin asked to replay, of the users in `partitions`
    /// (served under the epochs given) among `partition_count`, and not queued here already.
    pub async fn claim_replays(
        &self,
        partitions: &[(u32, i64)],
        partition_count: u32,
        limit: usize,
    ) -> Result<Vec<Callback>, sqlx::Error> {
        let queued: Vec<String> = self.replaying.lock().iter().cloned().collect();
        let limit = limit.min(MAX_REPLAYING.saturating_sub(queued.len()));
        if partitions.is_empty() || limit == 0 {
            return Ok(Vec::new());
        }
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT partition, event_id, feed_id, app_id, user_id, body FROM ( \
                 SELECT (presence_user_hash(app_id, user_id) % $1)::int4 AS partition, \
                        event_id::text AS event_id, feed_id, app_id, user_id, body, dead_at \
                 FROM callback_dead_letters WHERE replay_requested \
                     AND event_id <> ALL($3::text[]::uuid[])) d \
             WHERE partition = ANY($2) ORDER BY dead_at LIMIT $4",
        )
        .bind(i64::from(partition_count))
        .bind(partitions.iter().map(|(p, _)| i32::try_from(*p).unwrap_or(i32::MAX)).collect::<Vec<_>>())
        .bind(queued)
        .bind(i64::try_from(limit).unwrap_or(i64::MAX))
        .fetch_all(&self.pool)
        .await?;
        let mut replaying = self.replaying.lock();
        Ok(rows
            .into_iter()
            .filter_map(|row| {
                let partition = u32::try_from(row.partition).ok()?;
                let epoch = partitions.iter().find(|(p, _)| *p == partition)?.1;
                replaying.insert(row.event_id.clone()).then(|| Callback {
                    event_id: row.event_id,
                    feed_id: u64::try_from(row.feed_id).unwrap_or(0),
                    app_id: row.app_id,
                    user_id: row.user_id,
                    body: Bytes::from(row.body),
                    origin: Origin::Replay { partition, epoch },
                    // A replay is a new trace (if any): the original one ended long ago.
                    traceparent: String::new(),
                })
            })
            .collect())
    }

    /// A replay claimed here is settled or abandoned: it may be claimed again if still requested.
    pub fn replay_done(&self, event_id: &str) {
        self.replaying.lock().remove(event_id);
    }

    /// A replayed dead letter was delivered.
    pub async fn forget(&self, event_id: &str) -> Result<(), sqlx::Error> {
        sqlx::query("DELETE FROM callback_dead_letters WHERE event_id = $1::uuid")
            .bind(event_id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use presence_proto::partition::partition_of;

    use super::*;

    const P: u32 = 4;

    async fn bury_requested(pool: &PgPool, users: i64) {
        sqlx::query(
            "INSERT INTO callback_dead_letters (event_id, feed_id, app_id, user_id, body, attempts, \
             last_error, first_attempt_at, replay_requested) \
             SELECT gen_random_uuid(), n, 'default', 'u' || n, '{}', 3, 'HTTP 500', now(), true \
             FROM generate_series(1, $1) AS n",
        )
        .bind(users)
        .execute(pool)
        .await
        .unwrap();
    }

    fn ids(callbacks: &[Callback]) -> HashSet<String> {
        callbacks.iter().map(|c| c.event_id.clone()).collect()
    }

    #[tokio::test]
    async fn a_dead_letter_is_replayed_only_by_its_partitions_owner_and_once_at_a_time() {
        let db = testkit::fresh_database().await;
        bury_requested(&db.pool, 40).await;
        let (first, second) = (DeadLetters::new(db.pool.clone()), DeadLetters::new(db.pool.clone()));

        let a = first.claim_replays(&[(0, 7), (1, 7)], P, 100).await.unwrap();
        let b = second.claim_replays(&[(2, 9), (3, 9)], P, 100).await.unwrap();
        assert!(!a.is_empty() && !b.is_empty());
        assert_eq!(a.len() + b.len(), 40);
        assert!(ids(&a).is_disjoint(&ids(&b)));
        for (callbacks, epoch) in [(&a, 7), (&b, 9)] {
            for c in callbacks.iter() {
                let partition = partition_of(&c.app_id, &c.user_id, P);
                assert_eq!(c.origin, Origin::Replay { partition, epoch }, "{}", c.user_id);
            }
        }

        assert!(first.claim_replays(&[(0, 7), (1, 7)], P, 100).await.unwrap().is_empty(), "queued already");
        first.replay_done(&a[0].event_id);
        let again = first.claim_replays(&[(0, 7), (1, 7)], P, 100).await.unwrap();
        assert_eq!(ids(&again), HashSet::from([a[0].event_id.clone()]), "still requested: claimed again");

        // Replayed and delivered: gone for good.
        first.forget(&a[1].event_id).await.unwrap();
        first.replay_done(&a[1].event_id);
        assert!(first.claim_replays(&[(0, 7), (1, 7)], P, 100).await.unwrap().is_empty());
        let limited = DeadLetters::new(db.pool.clone()).claim_replays(&[(2, 9), (3, 9)], P, 3).await.unwrap();
        assert_eq!(limited.len(), 3);
    }
}
