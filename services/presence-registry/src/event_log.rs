//! The durable log of presence events, with group commit.
//!
//! Every state change of a user is a [`Mutation`]: its events plus the device and user rows that
//! change with them. One writer task takes whatever mutations are waiting, writes them in a single
//! transaction and only then answers each caller, so a login is acknowledged only once its event
//! is durable, while many users' changes share one fsync. The writer also numbers events: `feed_id`
//! (global) and `seq` (per app) are assigned in commit order, so a reader that has seen feed_id N
//! has seen everything before it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Instant,
};

use presence_proto::v1::{
    EventAction, EventDevice, EventReason, KickedDevice, Platform, PresenceEvent, UserStatus,
};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, watch};

use crate::user_state::Device;

/// The event columns, then a filter: one place that knows how events are read.
macro_rules! select_events {
    ($filter:literal) => {
        concat!(
            "SELECT feed_id, app_id, seq, event_id::text AS event_id, user_id, user_version, event_time_ms, \
             action, reason, device_id, platform, client_version, kicked_devices::text AS kicked_devices, \
             user_status FROM presence_events ",
            $filter
        )
    };
}

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event store unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event commit failed: {0}")]
    Commit(String),
    #[error("event writer stopped")]
    WriterStopped,
}

/// An event before the writer numbers it.
#[derive(Debug, Clone)]
pub struct NewEvent {
    pub user_version: u64,
    pub event_time_ms: u64,
    pub action: EventAction,
    pub reason: EventReason,
    pub device: EventDevice,
    pub kicked_devices: Vec<KickedDevice>,
    pub user_status: UserStatus,
}

/// The user row as it is after a mutation.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub version: u64,
    pub last_seen_ms: Option<u64>,
    pub last_reason: Option<EventReason>,
}

/// One user's change: written atomically with every other mutation of the same batch.
#[derive(Debug, Clone)]
pub struct Mutation {
    pub app_id: String,
    pub user_id: String,
    pub events: Vec<NewEvent>,
    pub upserts: Vec<Device>,
    pub deletes: Vec<String>,
    pub user: UserRow,
}

struct Pending {
    mutation: Mutation,
    reply: oneshot::Sender<Result<Vec<PresenceEvent>, LogError>>,
}

/// Handle to the log; cheap to clone.
#[derive(Clone)]
pub struct EventLog {
    pool: PgPool,
    tx: mpsc::Sender<Pending>,
    committed: watch::Receiver<u64>,
    app_seqs: Arc<Mutex<HashMap<String, u64>>>,
}

impl EventLog {
    /// Reads where the feeds stand and starts the writer. The writer stops when every handle is gone.
    pub async fn open(pool: PgPool, batch_max: usize) -> Result<Self, LogError> {
        let last_feed_id: Option<i64> =
            sqlx::query_scalar("SELECT max(feed_id) FROM presence_events").fetch_one(&pool).await?;
        let seqs: Vec<(String, i64)> =
            sqlx::query_as("SELECT app_id, max(seq) FROM presence_events GROUP BY app_id")
                .fetch_all(&pool)
                .await?;
        let app_seqs: HashMap<String, u64> = seqs.into_iter().map(|(app, seq)| (app, to_u64(seq))).collect();
        let app_seqs = Arc::new(Mutex::new(app_seqs));
        let (committed_tx, committed) = watch::channel(last_feed_id.map_or(0, to_u64));
        let (tx, rx) = mpsc::channel(batch_max.max(1) * 4);
        let writer = Writer { pool: pool.clone(), rx, batch_max: batch_max.max(1), committed: committed_tx };
        tokio::spawn(writer.run(app_seqs.clone()));
        Ok(Self { pool, tx, committed, app_seqs })
    }

    /// Makes `mutation` durable and returns its events as committed.
    pub async fn commit(&self, mutation: Mutation) -> Result<Vec<PresenceEvent>, LogError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Pending { mutation, reply }).await.map_err(|_| LogError::WriterStopped)?;
        answer.await.map_err(|_| LogError::WriterStopped)?
    }

    /// The app's latest committed `seq` (0 before its first event).
    pub fn last_seq(&self, app_id: &str) -> u64 {
        lock(&self.app_seqs).get(app_id).copied().unwrap_or(0)
    }

    /// Follows the latest committed `feed_id`.
    pub fn committed(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Events of every app after `after_feed_id`, in order.
    pub async fn read_feed(&self, after_feed_id: u64, limit: u32) -> Result<Vec<PresenceEvent>, LogError> {
        let rows: Vec<EventRow> =
            sqlx::query_as(select_events!("WHERE feed_id > $1 ORDER BY feed_id LIMIT $2"))
                .bind(to_i64(after_feed_id))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(EventRow::into_event).collect())
    }

    /// One app's events after `after_seq`, in order.
    pub async fn read_app(
        &self,
        app_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<PresenceEvent>, LogError> {
        let rows: Vec<EventRow> =
            sqlx::query_as(select_events!("WHERE app_id = $1 AND seq > $2 ORDER BY seq LIMIT $3"))
                .bind(app_id)
                .bind(to_i64(after_seq))
                .bind(i64::from(limit))
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.into_iter().map(EventRow::into_event).collect())
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

#[derive(sqlx::FromRow)]
struct EventRow {
    feed_id: i64,
    app_id: String,
    seq: i64,
    event_id: String,
    user_id: String,
    user_version: i64,
    event_time_ms: i64,
    action: String,
    reason: String,
    device_id: String,
    platform: String,
    client_version: String,
    kicked_devices: String,
    user_status: String,
}

/// Kicked devices as stored (`[{"device_id": "...", "platform": "ios"}]`).
fn kicked_to_json(kicked: &[KickedDevice]) -> String {
    let list: Vec<presence_proto::json::KickedDeviceJson> = kicked.iter().map(Into::into).collect();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".to_owned())
}

fn kicked_from_json(json: &str) -> Vec<KickedDevice> {
    let list: Vec<presence_proto::json::KickedDeviceJson> = serde_json::from_str(json).unwrap_or_default();
    list.into_iter()
        .map(|k| KickedDevice {
            platform: Platform::from_name(&k.platform).unwrap_or(Platform::Unspecified) as i32,
            device_id: k.device_id,
        })
        .collect()
}

impl EventRow {
    fn into_event(self) -> PresenceEvent {
        PresenceEvent {
            feed_id: to_u64(self.feed_id),
            event_id: self.event_id,
            seq: to_u64(self.seq),
            user_version: to_u64(self.user_version),
            app_id: self.app_id,
            event_time_ms: to_u64(self.event_time_ms),
            action: EventAction::from_name(&self.action).unwrap_or(EventAction::Unspecified) as i32,
            reason: EventReason::from_name(&self.reason).unwrap_or(EventReason::Unspecified) as i32,
            user_id: self.user_id,
            device: Some(EventDevice {
                device_id: self.device_id,
                platform: Platform::from_name(&self.platform).unwrap_or(Platform::Unspecified) as i32,
                client_version: self.client_version,
            }),
            kicked_devices: kicked_from_json(&self.kicked_devices),
            user_status: UserStatus::from_name(&self.user_status).unwrap_or(UserStatus::Unspecified) as i32,
        }
    }
}

struct Writer {
    pool: PgPool,
    rx: mpsc::Receiver<Pending>,
    batch_max: usize,
    committed: watch::Sender<u64>,
}

impl Writer {
    async fn run(mut self, app_seqs: Arc<Mutex<HashMap<String, u64>>>) {
        let mut batch = Vec::with_capacity(self.batch_max);
        while self.rx.recv_many(&mut batch, self.batch_max).await > 0 {
            let started = Instant::now();
            let first_feed_id = *self.committed.borrow() + 1;
            let mut next_seqs = lock(&app_seqs).clone();
            let numbered = number(&batch, first_feed_id, &mut next_seqs);
            let result = write(&self.pool, &batch, &numbered).await;
            metrics::histogram!("registry_commit_seconds").record(started.elapsed().as_secs_f64());
            tracing::debug!(mutations = batch.len(), elapsed = ?started.elapsed(), "group commit");
            metrics::histogram!("registry_commit_batch_size").record(batch.len() as f64);
            match result {
                Ok(()) => {
                    *lock(&app_seqs) = next_seqs;
                    if let Some(last) = numbered.iter().flatten().last() {
                        self.committed.send_replace(last.feed_id);
                    }
                    for (pending, events) in batch.drain(..).zip(numbered) {
                        let _ = pending.reply.send(Ok(events));
                    }
                }
                Err(err) => {
                    metrics::counter!("registry_commit_failures_total").increment(1);
                    tracing::warn!(%err, mutations = batch.len(), "event commit failed");
                    let message = err.to_string();
                    for pending in batch.drain(..) {
                        let _ = pending.reply.send(Err(LogError::Commit(message.clone())));
                    }
                    if matches!(err, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_))
                    {
                        // The database is away. What queued up meanwhile would wait out the same
                        // timeout again; fail it now, so a caller waits at most one timeout.
                        while let Ok(pending) = self.rx.try_recv() {
                            let _ = pending.reply.send(Err(LogError::Commit(message.clone())));
                        }
                    }
                }
            }
        }
    }
}

/// Gives every event of the batch its `feed_id`, `seq` and `event_id`, in batch order.
fn number(batch: &[Pending], mut feed_id: u64, seqs: &mut HashMap<String, u64>) -> Vec<Vec<PresenceEvent>> {
    batch
        .iter()
        .map(|pending| {
            let m = &pending.mutation;
            m.events
                .iter()
                .map(|e| {
                    let seq = seqs.entry(m.app_id.clone()).or_insert(0);
                    *seq += 1;
                    let event = PresenceEvent {
                        feed_id,
                        event_id: uuid::Uuid::now_v7().to_string(),
                        seq: *seq,
                        user_version: e.user_version,
                        app_id: m.app_id.clone(),
                        event_time_ms: e.event_time_ms,
                        action: e.action as i32,
                        reason: e.reason as i32,
                        user_id: m.user_id.clone(),
                        device: Some(e.device.clone()),
                        kicked_devices: e.kicked_devices.clone(),
                        user_status: e.user_status as i32,
                    };
                    feed_id += 1;
                    event
                })
                .collect()
        })
        .collect()
}

/// Column vectors for one `INSERT ... SELECT FROM UNNEST(...)` per table.
async fn write(pool: &PgPool, batch: &[Pending], numbered: &[Vec<PresenceEvent>]) -> Result<(), sqlx::Error> {
    let events: Vec<&PresenceEvent> = numbered.iter().flatten().collect();
    let mut tx = pool.begin().await?;

    sqlx::query(
        "INSERT INTO presence_events (feed_id, app_id, seq, event_id, user_id, user_version, event_time_ms, \
         action, reason, device_id, platform, client_version, kicked_devices, user_status) \
         SELECT f, a, s, e::uuid, u, v, t, ac, r, d, p, cv, k::jsonb, us FROM UNNEST($1::int8[], $2::text[], \
         $3::int8[], $4::text[], $5::text[], $6::int8[], $7::int8[], $8::text[], $9::text[], $10::text[], \
         $11::text[], $12::text[], $13::text[], $14::text[]) AS x(f, a, s, e, u, v, t, ac, r, d, p, cv, k, us)",
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
    .execute(&mut *tx)
    .await?;

    let mutations: Vec<&Mutation> = batch.iter().map(|p| &p.mutation).collect();
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
             since_ms, client_version, push_enabled, peer_addr, disconnected_at_ms) \
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], \
             $7::text[], $8::int8[], $9::text[], $10::bool[], $11::text[], $12::int8[]) \
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
        .execute(&mut *tx)
        .await?;
    }

    sqlx::query(
        "INSERT INTO users (app_id, user_id, version, last_seen_ms, last_reason) \
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int8[], $5::text[]) \
         ON CONFLICT (app_id, user_id) DO UPDATE SET version = EXCLUDED.version, \
         last_seen_ms = EXCLUDED.last_seen_ms, last_reason = EXCLUDED.last_reason",
    )
    .bind(mutations.iter().map(|m| m.app_id.clone()).collect::<Vec<_>>())
    .bind(mutations.iter().map(|m| m.user_id.clone()).collect::<Vec<_>>())
    .bind(mutations.iter().map(|m| to_i64(m.user.version)).collect::<Vec<_>>())
    .bind(mutations.iter().map(|m| m.user.last_seen_ms.map(to_i64)).collect::<Vec<_>>())
    .bind(mutations.iter().map(|m| m.user.last_reason.and_then(EventReason::name)).collect::<Vec<_>>())
    .execute(&mut *tx)
    .await?;

    tx.commit().await
}
