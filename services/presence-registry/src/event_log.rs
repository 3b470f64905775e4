//! The durable log of presence events, with group commit.
//!
//! Every state change of a user is a [`Mutation`]: its events plus the device and user rows that
//! change with them. One writer task takes whatever mutations are waiting, writes them in a single
//! transaction and only then answers each caller, so a login is acknowledged only once its event
//! is durable, while many users' changes share one fsync. The writer also numbers events in commit
//! order: `seq` from the app's counter row (locked in the commit, so the app's feed stays gap-free
//! whichever registry writes it), `position` from the partition's own counter, and `feed_id` from
//! a database sequence. Each commit first checks that every partition it writes is still ours (its
//! epoch), so a registry that lost a partition can never commit to it.

use std::{
    collections::{HashMap, VecDeque},
    sync::Arc,
    time::Instant,
};

use parking_lot::Mutex;
use presence_proto::v1::{
    EventAction, EventDevice, EventReason, KickedDevice, PresenceEvent, PresenceStatus,
};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot, watch};

use crate::{metric_names as m, store, user_state::Device};

#[derive(Debug, thiserror::Error)]
pub enum LogError {
    #[error("event store unavailable: {0}")]
    Database(#[from] sqlx::Error),
    #[error("event commit failed: {0}")]
    Commit(String),
    #[error("event writer stopped")]
    WriterStopped,
    #[error("partition {0} has another owner now")]
    Fenced(u32),
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
    pub user_status: PresenceStatus,
    pub custom_status: String,
    /// W3C trace context of the change (a login's), for the notifier's callback span.
    pub traceparent: Option<String>,
}

/// The user row as it is after a mutation.
#[derive(Debug, Clone)]
pub struct UserRow {
    pub version: u64,
    pub last_seen_ms: Option<u64>,
    pub last_reason: Option<EventReason>,
    pub custom_status: String,
}

/// One user's change: written atomically with every other mutation of the same batch.
#[derive(Debug, Clone)]
pub struct Mutation {
    /// The user's partition, and the epoch under which this process owns it.
    pub partition: u32,
    pub epoch: i64,
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
    counters: Arc<Counters>,
}

/// What the writer numbers from, shared with the registry.
#[derive(Default)]
struct Counters {
    /// Each app's latest `seq` this process knows to be committed (its own commits, and reads of
    /// the app's counter row).
    app_seqs: Mutex<HashMap<String, u64>>,
    /// The latest `position` of each partition this process holds.
    positions: Mutex<HashMap<u32, u64>>,
}

impl EventLog {
    /// Reads where the feeds stand and starts the writer. The writer stops when every handle is gone.
    pub async fn open(pool: PgPool, batch_max: usize) -> Result<Self, LogError> {
        let last_feed_id = store::last_feed_id(&pool).await?;
        let counters =
            Arc::new(Counters { app_seqs: Mutex::new(store::app_seqs(&pool).await?), ..Default::default() });
        let (committed_tx, committed) = watch::channel(last_feed_id);
        let (tx, rx) = mpsc::channel(batch_max.max(1) * 4);
        let writer = Writer { pool: pool.clone(), rx, batch_max: batch_max.max(1), committed: committed_tx };
        tokio::spawn(writer.run(counters.clone()));
        Ok(Self { pool, tx, committed, counters })
    }

    /// A partition was taken: its events go on after `last_position`.
    pub fn hold_partition(&self, partition: u32, last_position: u64) {
        self.counters.positions.lock().insert(partition, last_position);
    }

    pub fn release_partition(&self, partition: u32) {
        self.counters.positions.lock().remove(&partition);
    }

    /// Re-reads every app's committed `seq` (other registries commit too).
    pub async fn refresh_seqs(&self) -> Result<(), LogError> {
        let seqs = store::app_seqs(&self.pool).await?;
        let mut known = self.counters.app_seqs.lock();
        for (app, seq) in seqs {
            let entry = known.entry(app).or_insert(0);
            *entry = (*entry).max(seq);
        }
        Ok(())
    }

    /// Makes `mutation` durable and returns its events as committed.
    pub async fn commit(&self, mutation: Mutation) -> Result<Vec<PresenceEvent>, LogError> {
        let (reply, answer) = oneshot::channel();
        self.tx.send(Pending { mutation, reply }).await.map_err(|_| LogError::WriterStopped)?;
        answer.await.map_err(|_| LogError::WriterStopped)?
    }

    /// The app's latest committed `seq` (0 before its first event).
    pub fn last_seq(&self, app_id: &str) -> u64 {
        self.counters.app_seqs.lock().get(app_id).copied().unwrap_or(0)
    }

    /// Follows the latest committed `feed_id`.
    pub fn watch_committed_feed_id(&self) -> watch::Receiver<u64> {
        self.committed.clone()
    }

    /// Events of every app after `after_feed_id`, in order.
    pub async fn read_feed(&self, after_feed_id: u64, limit: u32) -> Result<Vec<PresenceEvent>, LogError> {
        Ok(store::read_feed(&self.pool, after_feed_id, limit).await?)
    }

    /// One app's events after `after_seq`, in order.
    pub async fn read_app(
        &self,
        app_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<PresenceEvent>, LogError> {
        Ok(store::read_app(&self.pool, app_id, after_seq, limit).await?)
    }
}

struct Writer {
    pool: PgPool,
    rx: mpsc::Receiver<Pending>,
    batch_max: usize,
    committed: watch::Sender<u64>,
}

impl Writer {
    async fn run(mut self, counters: Arc<Counters>) {
        let mut batch = Vec::with_capacity(self.batch_max);
        while self.rx.recv_many(&mut batch, self.batch_max).await > 0 {
            metrics::histogram!(m::COMMIT_BATCH_SIZE).record(batch.len() as f64);
            // One change whose data the database refuses fails its whole transaction. Split the
            // batch and commit the halves, down to that one change, so no input of one user can
            // fail another's change (at most about 2n transactions for a batch of n). Changes of
            // a partition that changed owner fail alone too.
            let mut parts = VecDeque::from([std::mem::take(&mut batch)]);
            while let Some(mut part) = parts.pop_front() {
                match self.commit(&mut part, &counters).await {
                    Ok(()) => {}
                    Err(store::BatchError::Fenced(lost)) => {
                        metrics::counter!(m::COMMITS_FENCED).increment(part.len() as u64);
                        let (fenced, rest): (Vec<_>, Vec<_>) =
                            part.into_iter().partition(|p| lost.contains(&p.mutation.partition));
                        for pending in fenced {
                            let _ = pending.reply.send(Err(LogError::Fenced(pending.mutation.partition)));
                        }
                        if !rest.is_empty() {
                            parts.push_front(rest);
                        }
                    }
                    Err(store::BatchError::Database(err))
                        if matches!(err, sqlx::Error::Database(_)) && part.len() > 1 =>
                    {
                        let second = part.split_off(part.len() / 2);
                        parts.push_front(second);
                        parts.push_front(part);
                    }
                    Err(store::BatchError::Database(err)) => self.fail(part, &err),
                }
            }
        }
    }

    /// Writes `part` in one transaction and answers its callers; on an error, `part` is intact.
    async fn commit(
        &mut self,
        part: &mut Vec<Pending>,
        counters: &Counters,
    ) -> Result<(), store::BatchError> {
        let started = Instant::now();
        let mut positions = counters.positions.lock().clone();
        let mutations: Vec<&Mutation> = part.iter().map(|p| &p.mutation).collect();
        let result =
            store::write_batch(&self.pool, &mutations, |numbers| number(&mutations, numbers, &mut positions))
                .await;
        metrics::histogram!(m::COMMIT_SECONDS).record(started.elapsed().as_secs_f64());
        tracing::debug!(mutations = part.len(), elapsed = ?started.elapsed(), "group commit");
        let (numbered, app_seqs) = match result {
            Ok(done) => done,
            Err(err) => {
                if let store::BatchError::Database(db) = &err {
                    metrics::counter!(m::COMMIT_FAILURES).increment(1);
                    tracing::warn!(err = %db, mutations = part.len(), "event commit failed");
                }
                return Err(err);
            }
        };
        {
            let mut held = counters.positions.lock();
            for (p, last) in positions {
                // A partition released meanwhile stays released.
                if let Some(slot) = held.get_mut(&p) {
                    *slot = (*slot).max(last);
                }
            }
        }
        {
            let mut known = counters.app_seqs.lock();
            for (app, seq) in app_seqs {
                let entry = known.entry(app).or_insert(0);
                *entry = (*entry).max(seq);
            }
        }
        if let Some(last) = numbered.iter().flatten().map(|e| e.feed_id).max() {
            self.committed.send_if_modified(|c| {
                let newer = last > *c;
                *c = (*c).max(last);
                newer
            });
        }
        for (pending, events) in part.drain(..).zip(numbered) {
            let _ = pending.reply.send(Ok(events));
        }
        Ok(())
    }

    /// Answers every caller of `part` with `err`. The database's text stays in the log: callers
    /// pass the error on to gateways and REST clients.
    fn fail(&mut self, part: Vec<Pending>, err: &sqlx::Error) {
        let message = match err {
            sqlx::Error::Database(_) => "the database refused the change".to_owned(),
            _ => "the database is unavailable".to_owned(),
        };
        for pending in part {
            let _ = pending.reply.send(Err(LogError::Commit(message.clone())));
        }
        if matches!(err, sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)) {
            // The database is away. What queued up meanwhile would wait out the same timeout
            // again; fail it now, so a caller waits at most one timeout.
            while let Ok(pending) = self.rx.try_recv() {
                let _ = pending.reply.send(Err(LogError::Commit(message.clone())));
            }
        }
    }
}

/// Gives every event of the batch its `seq`, `position`, `feed_id` and `event_id`, in batch
/// order. `numbers` holds what the transaction reserved; `positions` is advanced.
fn number(
    batch: &[&Mutation],
    numbers: &store::Reserved,
    positions: &mut HashMap<u32, u64>,
) -> Vec<Vec<PresenceEvent>> {
    let mut seqs = numbers.first_seqs.clone();
    let mut feed_ids = numbers.feed_ids.iter().copied();
    batch
        .iter()
        .map(|m| {
            m.events
                .iter()
                .map(|e| {
                    let seq = seqs.entry(m.app_id.clone()).or_insert(1);
                    let position = positions.entry(m.partition).or_insert(0);
                    *position += 1;
                    let event = PresenceEvent {
                        feed_id: feed_ids.next().unwrap_or(0),
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
                        partition: m.partition,
                        position: *position,
                        custom_status: e.custom_status.clone(),
                        traceparent: e.traceparent.clone().unwrap_or_default(),
                    };
                    *seq += 1;
                    event
                })
                .collect()
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use sqlx::{Connection, PgConnection};

    use super::*;

    /// A fresh, migrated database on the server of `DATABASE_URL` (as scripts/test.sh runs it).
    async fn fresh_pool() -> PgPool {
        let server =
            std::env::var("DATABASE_URL").unwrap_or_else(|_| presence_common::config::default_database_url());
        let base = server.rsplit_once('/').map_or(server.as_str(), |(base, _)| base);
        let name = format!("presence_test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = PgConnection::connect(&format!("{base}/postgres")).await.expect("Postgres reachable");
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create database");
        let pool = PgPool::connect(&format!("{base}/{name}")).await.expect("connect");
        presence_common::db::migrate(&pool, None, None).await.expect("migrate");
        // Owned by this test, as a registry's take would leave it.
        sqlx::query("UPDATE registry_partitions SET owner = 'test', epoch = 1 WHERE partition = 0")
            .execute(&pool)
            .await
            .expect("own partition 0");
        sqlx::query("INSERT INTO apps (app_id, token_secret) VALUES ('a', 's')")
            .execute(&pool)
            .await
            .expect("app");
        pool
    }

    fn login_of(user_id: &str) -> Mutation {
        Mutation {
            partition: 0,
            epoch: 1,
            app_id: "a".into(),
            user_id: user_id.into(),
            events: vec![NewEvent {
                user_version: 1,
                event_time_ms: 1,
                action: EventAction::Login,
                reason: EventReason::Register,
                device: EventDevice::default(),
                kicked_devices: vec![],
                user_status: PresenceStatus::Online,
                custom_status: String::new(),
                traceparent: None,
            }],
            upserts: vec![],
            deletes: vec![],
            user: UserRow {
                version: 1,
                last_seen_ms: Some(1),
                last_reason: Some(EventReason::Register),
                custom_status: String::new(),
            },
        }
    }

    #[tokio::test]
    async fn a_change_the_database_refuses_fails_alone() {
        let log = EventLog::open(fresh_pool().await, 64).await.expect("open");
        log.hold_partition(0, 0);
        // Queued together, so that the writer takes them as one batch.
        let commits: Vec<_> = (0..40)
            .map(|i| {
                let log = log.clone();
                // Postgres refuses a NUL byte in text: this change cannot be written.
                let user = if i == 17 { "poison\0user".to_owned() } else { format!("user{i}") };
                tokio::spawn(async move { (i, log.commit(login_of(&user)).await) })
            })
            .collect();
        let mut failed = Vec::new();
        for commit in commits {
            let (i, result) = commit.await.expect("task");
            match result {
                Ok(events) => assert_eq!(events.len(), 1),
                Err(err) => {
                    assert!(!err.to_string().contains("0x00"), "database text leaked: {err}");
                    failed.push(i);
                }
            }
        }
        assert_eq!(failed, [17], "only the poisoned change fails");
        assert_eq!(log.last_seq("a"), 39, "every other change committed, numbered without gaps");
    }

    #[tokio::test]
    async fn a_change_under_a_stale_epoch_is_refused_and_writes_nothing() {
        let pool = fresh_pool().await;
        let log = EventLog::open(pool.clone(), 64).await.expect("open");
        log.hold_partition(0, 0);
        assert_eq!(log.commit(login_of("before")).await.expect("owner commits").len(), 1);
        // Another registry took the partition (its epoch rose): this one was paused, or cut off.
        sqlx::query("UPDATE registry_partitions SET owner = 'other', epoch = 2 WHERE partition = 0")
            .execute(&pool)
            .await
            .expect("take over");
        match log.commit(login_of("after")).await {
            Err(LogError::Fenced(0)) => {}
            other => panic!("expected a fenced commit, got {other:?}"),
        }
        let users: Vec<String> =
            sqlx::query_scalar("SELECT user_id FROM presence_events").fetch_all(&pool).await.expect("events");
        assert_eq!(users, ["before"], "nothing was written under the stale epoch");
        assert_eq!(log.last_seq("a"), 1);
    }

    #[tokio::test]
    async fn postgres_computes_the_same_partition_hash() {
        let pool = fresh_pool().await;
        let ids = ["alice", "bob", "", "ünïcødé", "a-very-long-user-id-0123456789-0123456789"];
        for user in ids {
            let sql: i64 = sqlx::query_scalar("SELECT presence_user_hash('chat', $1)")
                .bind(user)
                .fetch_one(&pool)
                .await
                .expect("hash in SQL");
            assert_eq!(sql, i64::from(presence_proto::partition::user_hash("chat", user)), "user {user:?}");
        }
    }
}
