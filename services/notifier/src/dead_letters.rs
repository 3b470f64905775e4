use std::time::SystemTime;

use bytes::Bytes;
use sqlx::PgPool;

use crate::callback::{Callback, Origin};

/// `callback_dead_letters`: events given up on, kept for an admin to inspect and replay by SQL.
#[derive(Clone)]
pub struct DeadLetters {
    pool: PgPool,
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
        Self { pool }
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

    /// Claims up to `limit` dead letters an admin asked to replay (clearing the request, so each
    /// is claimed once).
    pub async fn claim_replays(&self, limit: i64) -> Result<Vec<Callback>, sqlx::Error> {
        let rows: Vec<Row> = sqlx::query_as(
            "UPDATE callback_dead_letters SET replay_requested = false \
             WHERE event_id IN (SELECT event_id FROM callback_dead_letters WHERE replay_requested \
                                ORDER BY dead_at LIMIT $1 FOR UPDATE SKIP LOCKED) \
             RETURNING event_id::text AS event_id, feed_id, app_id, user_id, body",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .into_iter()
            .map(|row| Callback {
                event_id: row.event_id,
                feed_id: u64::try_from(row.feed_id).unwrap_or(0),
                app_id: row.app_id,
                user_id: row.user_id,
                body: Bytes::from(row.body),
                origin: Origin::Replay,
            })
            .collect())
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
