//! The partitions' event feeds as the notifier reads them straight from `presence_events`: the
//! one query (rows decoded by `presence_common::event_rows`, as the registry's pages are).

use presence_common::event_rows::{EVENT_COLUMNS, EventRow};
use presence_proto::v1::PresenceEvent;
use sqlx::PgPool;

use crate::cursors::ParkedRead;

/// Each partition's share of a page is at least this, so that a partition with a backlog is not
/// read a handful of events per query when many partitions are held.
const MIN_PER_PARTITION: u32 = 16;

/// Events of one partition a read may return: the page shared out over the partitions read.
pub fn per_partition_limit(page: u32, partitions: usize) -> u32 {
    let n = u32::try_from(partitions.max(1)).unwrap_or(u32::MAX);
    page.div_ceil(n).max(MIN_PER_PARTITION).min(page.max(1))
}

/// For each `(partition, after)`, its next events (`position > after`, in position order, at most
/// [`per_partition_limit`] of them), in one query; sorted by partition, then position.
pub async fn read(
    pool: &PgPool,
    cursors: &[(u32, u64)],
    page: u32,
) -> Result<Vec<PresenceEvent>, sqlx::Error> {
    if cursors.is_empty() {
        return Ok(Vec::new());
    }
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM UNNEST($1::int4[], $2::int8[]) AS c(part, after) \
         CROSS JOIN LATERAL (SELECT * FROM presence_events p \
             WHERE p.partition = c.part AND p.position > c.after ORDER BY p.position LIMIT $3) e \
         ORDER BY e.partition, e.position"
    ))
    .bind(cursors.iter().map(|(p, _)| i32::try_from(*p).unwrap_or(i32::MAX)).collect::<Vec<_>>())
    .bind(cursors.iter().map(|(_, after)| i64::try_from(*after).unwrap_or(i64::MAX)).collect::<Vec<_>>())
    .bind(i64::from(per_partition_limit(page, cursors.len())))
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(EventRow::into_event).collect())
}

/// Events of parked apps to read again: for each [`ParkedRead`], its app's events of its
/// partition in `from..=upto`, in position order, at most `limits[i]` of them; in one query, sorted
/// by partition, app, then position.
pub async fn read_parked(
    pool: &PgPool,
    reads: &[ParkedRead],
    limits: &[u32],
) -> Result<Vec<PresenceEvent>, sqlx::Error> {
    if reads.is_empty() {
        return Ok(Vec::new());
    }
    let to_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX);
    let rows: Vec<EventRow> = sqlx::query_as(&format!(
        "SELECT {EVENT_COLUMNS} FROM UNNEST($1::int4[], $2::text[], $3::int8[], $4::int8[], $5::int8[]) \
             AS c(part, app, first, upto, lim) \
         CROSS JOIN LATERAL (SELECT * FROM presence_events p \
             WHERE p.partition = c.part AND p.position >= c.first AND p.position <= c.upto \
                 AND p.app_id = c.app ORDER BY p.position LIMIT c.lim) e \
         ORDER BY e.partition, e.app_id, e.position"
    ))
    .bind(reads.iter().map(|r| i32::try_from(r.partition).unwrap_or(i32::MAX)).collect::<Vec<_>>())
    .bind(reads.iter().map(|r| r.app_id.clone()).collect::<Vec<_>>())
    .bind(reads.iter().map(|r| to_i64(r.from)).collect::<Vec<_>>())
    .bind(reads.iter().map(|r| to_i64(r.upto)).collect::<Vec<_>>())
    .bind(limits.iter().map(|l| i64::from(*l)).collect::<Vec<_>>())
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().map(EventRow::into_event).collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_proto::v1::{EventAction, EventReason, Platform, PresenceStatus};

    #[test]
    fn a_page_is_shared_out_over_the_partitions() {
        assert_eq!(per_partition_limit(300, 1), 300);
        assert_eq!(per_partition_limit(300, 3), 100);
        assert_eq!(per_partition_limit(300, 64), MIN_PER_PARTITION);
        assert_eq!(per_partition_limit(300, 0), 300);
        assert_eq!(per_partition_limit(8, 2), 8, "never more than the page");
    }

    /// `count` login events of user `user` in `partition`, positions 1..=count, feed ids from
    /// `first_feed_id`.
    async fn insert(pool: &PgPool, partition: i32, user: &str, count: i64, first_feed_id: i64) {
        sqlx::query(
            "INSERT INTO presence_events (feed_id, app_id, seq, event_id, user_id, user_version, \
             event_time_ms, action, reason, device_id, platform, client_version, kicked_devices, \
             user_status, partition, position) \
             SELECT $3 + n, 'default', $3 + n, gen_random_uuid(), $2, n, 1000 + n, 'login', 'register', \
             'phone', 'ios', '1.0', '[{\"device_id\": \"tablet\", \"platform\": \"android\"}]', \
             'online', $1, n FROM generate_series(1, $4) AS n",
        )
        .bind(partition)
        .bind(user)
        .bind(first_feed_id)
        .bind(count)
        .execute(pool)
        .await
        .unwrap();
    }

    fn positions(events: &[PresenceEvent], partition: u32) -> Vec<u64> {
        events.iter().filter(|e| e.partition == partition).map(|e| e.position).collect()
    }

    #[tokio::test]
    async fn reads_each_partition_after_its_own_cursor_in_position_order() {
        let db = testkit::fresh_database().await;
        // Inserted out of feed_id order: feed_id is no order across processes, position is.
        insert(&db.pool, 3, "carol", 10, 1000).await;
        insert(&db.pool, 1, "alice", 5, 0).await;
        insert(&db.pool, 2, "bob", 5, 100).await;

        let events = read(&db.pool, &[(1, 2), (3, 0)], 300).await.unwrap();
        assert_eq!(positions(&events, 1), [3, 4, 5], "after the cursor");
        assert_eq!(positions(&events, 3), (1..=10).collect::<Vec<_>>());
        assert!(positions(&events, 2).is_empty(), "only the partitions asked for");
        assert!(events.iter().take(3).all(|e| e.partition == 1), "sorted by partition");

        let first = events.iter().find(|e| e.partition == 1).unwrap();
        assert_eq!((first.user_id.as_str(), first.user_version, first.seq), ("alice", 3, 3));
        assert_eq!(first.feed_id, 3);
        assert_eq!(first.action(), EventAction::Login);
        assert_eq!(first.reason(), EventReason::Register);
        assert_eq!(first.user_status(), PresenceStatus::Online);
        assert_eq!(first.device.as_ref().unwrap().platform(), Platform::Ios);
        assert_eq!(first.kicked_devices.len(), 1);
        assert_eq!(first.kicked_devices[0].platform(), Platform::Android);
        assert_eq!(first.event_time_ms, 1003);

        assert!(read(&db.pool, &[(1, 5), (2, 5)], 300).await.unwrap().is_empty(), "all read");
        assert!(read(&db.pool, &[], 300).await.unwrap().is_empty());
    }

    #[tokio::test]
    async fn a_page_limits_each_partition() {
        let db = testkit::fresh_database().await;
        insert(&db.pool, 0, "alice", 50, 0).await;
        insert(&db.pool, 1, "bob", 50, 100).await;

        let events = read(&db.pool, &[(0, 0), (1, 10)], 40).await.unwrap();
        assert_eq!(positions(&events, 0), (1..=20).collect::<Vec<_>>(), "half the page each");
        assert_eq!(positions(&events, 1), (11..=30).collect::<Vec<_>>());
        let alone = read(&db.pool, &[(0, 45)], 40).await.unwrap();
        assert_eq!(positions(&alone, 0), [46, 47, 48, 49, 50]);
    }

    #[tokio::test]
    async fn reads_a_parked_apps_events_between_its_first_and_the_main_read() {
        let db = testkit::fresh_database().await;
        insert(&db.pool, 0, "alice", 20, 0).await;
        sqlx::query("UPDATE presence_events SET app_id = 'other' WHERE position % 2 = 0")
            .execute(&db.pool)
            .await
            .unwrap();
        let parked =
            |app: &str, from, upto| ParkedRead { partition: 0, epoch: 1, app_id: app.into(), from, upto };

        let events = read_parked(&db.pool, &[parked("default", 5, 15), parked("other", 3, 9)], &[100, 2])
            .await
            .unwrap();
        let of = |app: &str| -> Vec<u64> {
            events.iter().filter(|e| e.app_id == app).map(|e| e.position).collect()
        };
        assert_eq!(of("default"), [5, 7, 9, 11, 13, 15], "its own events, from..=upto");
        assert_eq!(of("other"), [4, 6], "at most its limit");
        assert!(read_parked(&db.pool, &[], &[]).await.unwrap().is_empty());
    }
}
