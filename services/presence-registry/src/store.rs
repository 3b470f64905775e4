//! Every SQL statement of the registry, one function per query. The rest of the registry speaks
//! in its own types; column names, casts and the text encodings of enums live only here.

use std::collections::HashMap;

use presence_common::event_rows::{EVENT_COLUMNS, EventRow, kicked_to_json};
use presence_proto::v1::{DeviceStatus, EventReason, Platform, PresenceEvent, SessionRef};
use sqlx::PgPool;

use crate::{
    event_log::Mutation,
    user_state::{Device, UserState},
    user_table::UserKey,
};

/// The events of `presence_events`, then a filter.
fn select_events(filter: &str) -> String {
    format!("SELECT {EVENT_COLUMNS} FROM presence_events {filter}")
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

// Events.

/// The latest `feed_id` written (0 before the first event).
pub async fn last_feed_id(pool: &PgPool) -> Result<u64, sqlx::Error> {
    let last: Option<i64> =
        sqlx::query_scalar("SELECT max(feed_id) FROM presence_events").fetch_one(pool).await?;
    Ok(last.map_or(0, to_u64))
}

/// Each app's latest committed `seq`.
pub async fn app_seqs(pool: &PgPool) -> Result<HashMap<String, u64>, sqlx::Error> {
    let seqs: Vec<(String, i64)> =
        sqlx::query_as("SELECT app_id, last_seq FROM app_feed").fetch_all(pool).await?;
    Ok(seqs.into_iter().map(|(app, seq)| (app, to_u64(seq))).collect())
}

/// The latest `position` of each of these partitions (0 before its first event).
pub async fn last_positions(pool: &PgPool, partitions: &[u32]) -> Result<HashMap<u32, u64>, sqlx::Error> {
    let rows: Vec<(i32, Option<i64>)> = sqlx::query_as(
        "SELECT p, (SELECT max(position) FROM presence_events WHERE partition = p) FROM UNNEST($1::int4[]) AS p",
    )
    .bind(to_i32s(partitions))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .filter_map(|(p, last)| u32::try_from(p).ok().map(|p| (p, last.map_or(0, to_u64))))
        .collect())
}

fn to_i32s(partitions: &[u32]) -> Vec<i32> {
    partitions.iter().map(|p| i32::try_from(*p).unwrap_or(i32::MAX)).collect()
}

/// Events of every app after `after_feed_id`, in order.
pub async fn read_feed(
    pool: &PgPool,
    after_feed_id: u64,
    limit: u32,
) -> Result<Vec<PresenceEvent>, sqlx::Error> {
    let rows: Vec<EventRow> = sqlx::query_as(&select_events("WHERE feed_id > $1 ORDER BY feed_id LIMIT $2"))
        .bind(to_i64(after_feed_id))
        .bind(i64::from(limit))
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(EventRow::into_event).collect())
}

/// One app's events after `after_seq`, in order.
pub async fn read_app(
    pool: &PgPool,
    app_id: &str,
    after_seq: u64,
    limit: u32,
) -> Result<Vec<PresenceEvent>, sqlx::Error> {
    let rows: Vec<EventRow> =
        sqlx::query_as(&select_events("WHERE app_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"))
            .bind(app_id)
            .bind(to_i64(after_seq))
            .bind(i64::from(limit))
            .fetch_all(pool)
            .await?;
    Ok(rows.into_iter().map(EventRow::into_event).collect())
}

/// Why a group commit did not happen.
#[derive(Debug)]
pub enum BatchError {
    /// These partitions' epochs moved on: another registry owns them now. Nothing was written.
    Fenced(Vec<u32>),
    Database(sqlx::Error),
}

impl From<sqlx::Error> for BatchError {
    fn from(err: sqlx::Error) -> Self {
        BatchError::Database(err)
    }
}

/// What a commit reserved for numbering its events.
pub struct Reserved {
    /// Each app's first `seq` of this batch.
    pub first_seqs: HashMap<String, u64>,
    /// One `feed_id` per event, ascending.
    pub feed_ids: Vec<u64>,
}

/// One group commit, in one transaction: the fence (every partition written is still ours, locked
/// FOR SHARE so that no take overtakes this commit), the apps' `seq` ranges, then the events
/// `number` makes, and the device and user rows of every mutation. Column vectors make one
/// `INSERT ... SELECT FROM UNNEST(...)` per table. Returns the events and each app's last `seq`.
pub async fn write_batch<F>(
    pool: &PgPool,
    mutations: &[&Mutation],
    number: F,
) -> Result<(Vec<Vec<PresenceEvent>>, HashMap<String, u64>), BatchError>
where
    F: FnOnce(&Reserved) -> Vec<Vec<PresenceEvent>>,
{
    let mut tx = pool.begin().await?;

    // Locks in a fixed order (partitions, then apps, each sorted) so that commits never deadlock.
    let mut fences: Vec<(u32, i64)> = mutations.iter().map(|m| (m.partition, m.epoch)).collect();
    fences.sort_unstable();
    fences.dedup();
    let ours: Vec<i32> = sqlx::query_scalar(
        "SELECT partition FROM registry_partitions WHERE (partition, epoch) IN \
         (SELECT * FROM UNNEST($1::int4[], $2::int8[])) ORDER BY partition FOR SHARE",
    )
    .bind(to_i32s(&fences.iter().map(|(p, _)| *p).collect::<Vec<_>>()))
    .bind(fences.iter().map(|(_, e)| *e).collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    if ours.len() < fences.len() {
        let lost = fences
            .iter()
            .map(|(p, _)| *p)
            .filter(|p| !ours.contains(&i32::try_from(*p).unwrap_or(-1)))
            .collect();
        return Err(BatchError::Fenced(lost));
    }

    let mut per_app: std::collections::BTreeMap<&str, i64> = std::collections::BTreeMap::new();
    for m in mutations {
        *per_app.entry(m.app_id.as_str()).or_insert(0) += i64::try_from(m.events.len()).unwrap_or(0);
    }
    per_app.retain(|_, n| *n > 0);
    let last_seqs: Vec<(String, i64)> = sqlx::query_as(
        "INSERT INTO app_feed (app_id, last_seq) SELECT * FROM UNNEST($1::text[], $2::int8[]) ORDER BY 1 \
         ON CONFLICT (app_id) DO UPDATE SET last_seq = app_feed.last_seq + EXCLUDED.last_seq \
         RETURNING app_id, last_seq",
    )
    .bind(per_app.keys().map(|a| (*a).to_owned()).collect::<Vec<_>>())
    .bind(per_app.values().copied().collect::<Vec<_>>())
    .fetch_all(&mut *tx)
    .await?;
    let event_count: i64 = per_app.values().sum();
    let feed_ids: Vec<i64> =
        sqlx::query_scalar("SELECT nextval('presence_feed_ids') FROM generate_series(1, $1)")
            .bind(event_count)
            .fetch_all(&mut *tx)
            .await?;
    let first_seqs = last_seqs
        .iter()
        .map(|(app, last)| {
            let count = per_app.get(app.as_str()).copied().unwrap_or(0);
            (app.clone(), to_u64(last - count + 1))
        })
        .collect();
    let numbered = number(&Reserved { first_seqs, feed_ids: feed_ids.into_iter().map(to_u64).collect() });
    let events: Vec<&PresenceEvent> = numbered.iter().flatten().collect();

    sqlx::query(
        "INSERT INTO presence_events (feed_id, app_id, seq, event_id, user_id, user_version, event_time_ms, \
         action, reason, device_id, platform, client_version, kicked_devices, user_status, partition, position, \
         custom_status, traceparent) \
         SELECT f, a, s, e::uuid, u, v, t, ac, r, d, p, cv, k::jsonb, us, pa, po, cs, tp FROM UNNEST($1::int8[], $2::text[], \
         $3::int8[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::text[], $9::text[], $10::text[], \
         $11::text[], $12::text[], $13::text[], $14::text[], $15::int4[], $16::int8[], $17::text[], $18::text[]) \
         AS x(f, a, s, e, u, v, t, ac, r, d, p, cv, k, us, pa, po, cs, tp)",
    )
    .bind(events.iter().map(|e| to_i64(e.feed_id)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.app_id.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| to_i64(e.seq)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.event_id.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.user_id.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| to_i64(e.user_version)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| to_i64(e.event_time_ms)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.action().name().unwrap_or("unknown")).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.reason().name().unwrap_or("unknown")).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.device.as_ref().map(|d| d.device_id.clone()).unwrap_or_default()).collect::<Vec<_>>())
    .bind(
        events
            .iter()
            .map(|e| e.device.as_ref().and_then(|d| d.platform().name()).unwrap_or("unknown"))
            .collect::<Vec<_>>(),
    )
    .bind(
        events.iter().map(|e| e.device.as_ref().map(|d| d.client_version.clone()).unwrap_or_default()).collect::<Vec<_>>(),
    )
    .bind(events.iter().map(|e| kicked_to_json(&e.kicked_devices)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.user_status().name().unwrap_or("offline")).collect::<Vec<_>>())
    .bind(to_i32s(&events.iter().map(|e| e.partition).collect::<Vec<_>>()))
    .bind(events.iter().map(|e| to_i64(e.position)).collect::<Vec<_>>())
    .bind(events.iter().map(|e| e.custom_status.clone()).collect::<Vec<_>>())
    .bind(events.iter().map(|e| Some(e.traceparent.clone()).filter(|t| !t.is_empty())).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;

    let deletes: Vec<(&Mutation, &String)> =
        mutations.iter().flat_map(|m| m.deletes.iter().map(move |d| (*m, d))).collect();
    if !deletes.is_empty() {
        sqlx::query(
            "DELETE FROM devices d USING UNNEST($1::text[], $2::text[], $3::text[]) AS x(a, u, dv) \
             WHERE d.app_id = x.a AND d.user_id = x.u AND d.device_id = x.dv",
        )
        .bind(deletes.iter().map(|(m, _)| m.app_id.clone()).collect::<Vec<_>>())
        .bind(deletes.iter().map(|(m, _)| m.user_id.clone()).collect::<Vec<_>>())
        .bind(deletes.iter().map(|(_, d)| (*d).clone()).collect::<Vec<_>>())
        .execute(&mut *tx)
        .await?;
    }

    let upserts: Vec<(&Mutation, &Device)> =
        mutations.iter().flat_map(|m| m.upserts.iter().map(move |d| (*m, d))).collect();
    if !upserts.is_empty() {
        sqlx::query(
            "INSERT INTO devices (app_id, user_id, device_id, platform, status, session_id, gateway_id, \
             since_ms, client_version, push_enabled, peer_addr, disconnected_at_ms, partition) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::int8[], $9::text[], $10::bool[], $11::text[], $12::int8[], $13::int4[]) \
             ON CONFLICT (app_id, user_id, device_id) DO UPDATE SET platform = EXCLUDED.platform, \
             status = EXCLUDED.status, session_id = EXCLUDED.session_id, gateway_id = EXCLUDED.gateway_id, \
             since_ms = EXCLUDED.since_ms, client_version = EXCLUDED.client_version, \
             push_enabled = EXCLUDED.push_enabled, peer_addr = EXCLUDED.peer_addr, \
             disconnected_at_ms = EXCLUDED.disconnected_at_ms",
        )
        .bind(upserts.iter().map(|(m, _)| m.app_id.clone()).collect::<Vec<_>>())
        .bind(upserts.iter().map(|(m, _)| m.user_id.clone()).collect::<Vec<_>>())
        .bind(upserts.iter().map(|(_, d)| d.device_id.clone()).collect::<Vec<_>>())
        .bind(upserts.iter().map(|(_, d)| d.platform.name().unwrap_or("unknown")).collect::<Vec<_>>())
        .bind(upserts.iter().map(|(_, d)| d.status.name().unwrap_or("online")).collect::<Vec<_>>())
        .bind(upserts.iter().map(|(_, d)| d.session_id.clone()).collect::<Vec<_>>())
        .bind(upserts.iter().map(|(_, d)| d.gateway_id.clone()).collect::<Vec<_>>())
        .bind(upserts.iter().map(|(_, d)| to_i64(d.since_ms)).collect::<Vec<_>>())
        .bind(upserts.iter().map(|(_, d)| d.client_version.clone()).collect::<Vec<_>>())
        .bind(upserts.iter().map(|(_, d)| d.push_enabled).collect::<Vec<_>>())
        .bind(upserts.iter().map(|(_, d)| d.peer_addr.clone()).collect::<Vec<_>>())
        .bind(upserts.iter().map(|(_, d)| d.disconnected_at_ms.map(to_i64)).collect::<Vec<_>>())
        .bind(to_i32s(&upserts.iter().map(|(m, _)| m.partition).collect::<Vec<_>>()))
        .execute(&mut *tx)
        .await?;
    }

    sqlx::query(
        "INSERT INTO users (app_id, user_id, version, last_seen_ms, last_reason, partition, custom_status) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::int4[], $7::text[]) \
         ON CONFLICT (app_id, user_id) DO UPDATE SET version = EXCLUDED.version, \
         last_seen_ms = EXCLUDED.last_seen_ms, last_reason = EXCLUDED.last_reason, partition = EXCLUDED.partition, \
         custom_status = EXCLUDED.custom_status",
    )
    .bind(mutations.iter().map(|m| m.app_id.clone()).collect::<Vec<_>>())
    .bind(mutations.iter().map(|m| m.user_id.clone()).collect::<Vec<_>>())
    .bind(mutations.iter().map(|m| to_i64(m.user.version)).collect::<Vec<_>>())
    .bind(mutations.iter().map(|m| m.user.last_seen_ms.map(to_i64)).collect::<Vec<_>>())
    .bind(mutations.iter().map(|m| m.user.last_reason.and_then(EventReason::name)).collect::<Vec<_>>())
    .bind(to_i32s(&mutations.iter().map(|m| m.partition).collect::<Vec<_>>()))
    .bind(mutations.iter().map(|m| m.user.custom_status.clone()).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;

    tx.commit().await?;
    let last = last_seqs.into_iter().map(|(app, seq)| (app, to_u64(seq))).collect();
    Ok((numbered, last))
}

// Users and devices.

#[derive(sqlx::FromRow)]
struct UserRow {
    app_id: String,
    user_id: String,
    version: i64,
    last_seen_ms: Option<i64>,
    last_reason: Option<String>,
    custom_status: String,
}

/// Every user row of these partitions, as a state without devices.
pub async fn users_in(pool: &PgPool, partitions: &[u32]) -> Result<Vec<(UserKey, UserState)>, sqlx::Error> {
    let rows: Vec<UserRow> = sqlx::query_as(
        "SELECT app_id, user_id, version, last_seen_ms, last_reason, custom_status FROM users \
         WHERE partition = ANY($1)",
    )
    .bind(to_i32s(partitions))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let state = UserState {
                devices: Vec::new(),
                version: to_u64(row.version),
                last_seen_ms: row.last_seen_ms.map(to_u64),
                last_reason: row.last_reason.and_then(|r| EventReason::from_name(&r).ok()),
                custom_status: row.custom_status,
                watchers: Default::default(),
                applied_seq: 0,
            };
            (UserKey { app_id: row.app_id, user_id: row.user_id }, state)
        })
        .collect())
}

#[derive(sqlx::FromRow)]
struct DeviceRow {
    app_id: String,
    user_id: String,
    device_id: String,
    platform: String,
    status: String,
    session_id: String,
    gateway_id: String,
    since_ms: i64,
    client_version: String,
    push_enabled: bool,
    peer_addr: String,
    disconnected_at_ms: Option<i64>,
}

/// Every device row (online or push_online) of these partitions, oldest `since_ms` first.
pub async fn devices_in(pool: &PgPool, partitions: &[u32]) -> Result<Vec<(UserKey, Device)>, sqlx::Error> {
    let rows: Vec<DeviceRow> = sqlx::query_as(
        "SELECT app_id, user_id, device_id, platform, status, session_id, gateway_id, since_ms, client_version, \
         push_enabled, peer_addr, disconnected_at_ms FROM devices WHERE partition = ANY($1) ORDER BY since_ms",
    )
    .bind(to_i32s(partitions))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|row| {
            let device = Device {
                device_id: row.device_id,
                platform: Platform::from_name(&row.platform).unwrap_or(Platform::Unspecified),
                status: DeviceStatus::from_name(&row.status).unwrap_or(DeviceStatus::Online),
                session_id: row.session_id,
                gateway_id: row.gateway_id,
                since_ms: to_u64(row.since_ms),
                client_version: row.client_version,
                push_enabled: row.push_enabled,
                peer_addr: row.peer_addr,
                disconnected_at_ms: row.disconnected_at_ms.map(to_u64),
                lost: None,
            };
            (UserKey { app_id: row.app_id, user_id: row.user_id }, device)
        })
        .collect())
}

/// The sessions stored as online on `gateway_id`, in these partitions.
pub async fn online_sessions_on(
    pool: &PgPool,
    gateway_id: &str,
    partitions: &[u32],
) -> Result<Vec<SessionRef>, sqlx::Error> {
    let rows: Vec<(String, String, String, String)> = sqlx::query_as(
        "SELECT app_id, user_id, device_id, session_id FROM devices \
         WHERE gateway_id = $1 AND status = 'online' AND partition = ANY($2)",
    )
    .bind(gateway_id)
    .bind(to_i32s(partitions))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(app_id, user_id, device_id, session_id)| SessionRef { app_id, user_id, device_id, session_id })
        .collect())
}

/// A push_online device whose app's TTL has passed.
pub struct ExpiredPush {
    pub key: UserKey,
    pub device_id: String,
    pub ttl_ms: u64,
}

/// Up to 1000 push_online devices of these partitions past their app's TTL at `now_ms`, longest
/// disconnected first.
pub async fn expired_push_devices(
    pool: &PgPool,
    now_ms: u64,
    partitions: &[u32],
) -> Result<Vec<ExpiredPush>, sqlx::Error> {
    let rows: Vec<(String, String, String, i64)> = sqlx::query_as(
        "SELECT d.app_id, d.user_id, d.device_id, a.push_online_ttl_s FROM devices d JOIN apps a USING (app_id) \
         WHERE d.status = 'push_online' AND d.disconnected_at_ms + a.push_online_ttl_s * 1000 <= $1 \
         AND d.partition = ANY($2) ORDER BY d.disconnected_at_ms LIMIT 1000",
    )
    .bind(to_i64(now_ms))
    .bind(to_i32s(partitions))
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(app_id, user_id, device_id, ttl_s)| ExpiredPush {
            key: UserKey { app_id, user_id },
            device_id,
            ttl_ms: to_u64(ttl_s).saturating_mul(1000),
        })
        .collect())
}
