//! `notifier_partitions.delivered`: each partition's durable cursor. Every event of the partition
//! up to it is delivered or dead-lettered.
//!
//! (`notifier_cursor`, the one global cursor of the time before partitions, is legacy:
//! presence-migrate turned it into these cursors and nothing reads it any more.)

use std::collections::HashMap;

use sqlx::PgPool;

use crate::cursors::Unsaved;

fn to_i32s(partitions: impl Iterator<Item = u32>) -> Vec<i32> {
    partitions.map(|p| i32::try_from(p).unwrap_or(i32::MAX)).collect()
}

/// The saved cursors of `partitions`.
pub async fn load(pool: &PgPool, partitions: &[u32]) -> Result<HashMap<u32, u64>, sqlx::Error> {
    let rows: Vec<(i32, i64)> =
        sqlx::query_as("SELECT partition, delivered FROM notifier_partitions WHERE partition = ANY($1)")
            .bind(to_i32s(partitions.iter().copied()))
            .fetch_all(pool)
            .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(p, delivered)| Some((u32::try_from(p).ok()?, u64::try_from(delivered).unwrap_or(0))))
        .collect())
}

/// Saves cursors, each only while `member` still owns its partition under the same epoch (a
/// notifier that lost a partition can never move its cursor), and never backwards. Returns those
/// saved.
pub async fn save(pool: &PgPool, member: &str, cursors: &[Unsaved]) -> Result<Vec<Unsaved>, sqlx::Error> {
    if cursors.is_empty() {
        return Ok(Vec::new());
    }
    let saved: Vec<i32> = sqlx::query_scalar(
        "UPDATE notifier_partitions n SET delivered = GREATEST(n.delivered, x.delivered) \
         FROM UNNEST($1::int4[], $2::int8[], $3::int8[]) AS x(partition, epoch, delivered) \
         WHERE n.partition = x.partition AND n.epoch = x.epoch AND n.owner = $4 \
         RETURNING n.partition",
    )
    .bind(to_i32s(cursors.iter().map(|c| c.partition)))
    .bind(cursors.iter().map(|c| c.epoch).collect::<Vec<_>>())
    .bind(cursors.iter().map(|c| i64::try_from(c.durable).unwrap_or(i64::MAX)).collect::<Vec<_>>())
    .bind(member)
    .fetch_all(pool)
    .await?;
    Ok(cursors
        .iter()
        .filter(|c| saved.contains(&i32::try_from(c.partition).unwrap_or(-1)))
        .copied()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn only_the_owner_under_its_epoch_moves_a_cursor_and_never_back() {
        let db = testkit::fresh_database().await;
        sqlx::query("UPDATE notifier_partitions SET owner = 'n-1', epoch = 5 WHERE partition IN (0, 1)")
            .execute(&db.pool)
            .await
            .unwrap();
        let at = |partition, epoch, durable| Unsaved { partition, epoch, durable };

        let saved = save(&db.pool, "n-1", &[at(0, 5, 10), at(1, 4, 10), at(2, 0, 10)]).await.unwrap();
        assert_eq!(saved, [at(0, 5, 10)], "partition 1: an older epoch; 2: not the owner");
        assert!(save(&db.pool, "n-2", &[at(0, 5, 20)]).await.unwrap().is_empty(), "another member");
        save(&db.pool, "n-1", &[at(0, 5, 3)]).await.unwrap();

        let loaded = load(&db.pool, &[0, 1, 2]).await.unwrap();
        assert_eq!(loaded, HashMap::from([(0, 10), (1, 0), (2, 0)]));
    }
}
