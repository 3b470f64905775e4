use sqlx::PgPool;

/// The durable cursor: every event up to `feed_id` is settled.
#[derive(Clone)]
pub struct CursorStore {
    pool: PgPool,
    consumer: String,
}

impl CursorStore {
    pub fn new(pool: PgPool, consumer: String) -> Self {
        Self { pool, consumer }
    }

    pub async fn load(&self) -> Result<u64, sqlx::Error> {
        let feed_id: Option<i64> =
            sqlx::query_scalar("SELECT feed_id FROM notifier_cursor WHERE consumer = $1")
                .bind(&self.consumer)
                .fetch_optional(&self.pool)
                .await?;
        Ok(feed_id.and_then(|id| u64::try_from(id).ok()).unwrap_or(0))
    }

    pub async fn save(&self, feed_id: u64) -> Result<(), sqlx::Error> {
        sqlx::query(
            "INSERT INTO notifier_cursor (consumer, feed_id) VALUES ($1, $2) \
             ON CONFLICT (consumer) DO UPDATE SET feed_id = GREATEST(notifier_cursor.feed_id, $2), \
                 updated_at = now()",
        )
        .bind(&self.consumer)
        .bind(i64::try_from(feed_id).unwrap_or(i64::MAX))
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
