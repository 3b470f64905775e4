//! Partitions owned under leases in Postgres, fenced by an epoch (registries and notifiers).
//!
//! Each process registers as a member with one lease (`presence_members.alive_until`, renewed
//! every third of its length) and takes free partitions, or those of members that are gone, up to
//! its share (P split evenly over the live members). Taking a partition raises its epoch; every write of its
//! owner checks that epoch in its own transaction, so a paused or cut-off owner can never write
//! after a survivor took over. The owner also stops serving once its lease could have run out (a
//! local monotonic deadline). A member holds a session advisory lock too: when it dies the lock
//! frees at once and the others take its partitions without waiting out the lease. Renewals touch
//! only the member row, never the partition rows that commits lock.

use std::{
    collections::{BTreeMap, HashMap},
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::RwLock;
use sqlx::{Connection, PgConnection, PgPool, postgres::PgListener};

use crate::Shutdown;

/// First key of the members' advisory locks (the second is the member's `lock_key`).
const MEMBER_LOCK_CLASS: i32 = 7201;
/// The channel the partition tables' triggers notify on.
pub const PARTITIONS_CHANNEL: &str = "presence_partitions";

/// Which kind of process shares which partition table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Group {
    Registry,
    Notifier,
}

impl Group {
    fn kind(self) -> &'static str {
        match self {
            Group::Registry => "registry",
            Group::Notifier => "notifier",
        }
    }

    /// The partition table: a fixed name, never user input.
    pub fn table(self) -> &'static str {
        match self {
            Group::Registry => "registry_partitions",
            Group::Notifier => "notifier_partitions",
        }
    }
}

/// Lease timing.
#[derive(Debug, Clone, Copy)]
pub struct LeaseTiming {
    /// How long a taken or renewed lease lasts.
    pub ttl: Duration,
    /// How often members are checked for death and partitions balanced.
    pub balance_every: Duration,
}

impl LeaseTiming {
    fn renew_every(&self) -> Duration {
        self.ttl / 3
    }

    /// Serving stops this long before the lease could have run out: clocks drift, and a
    /// renewal's answer may come late.
    fn margin(&self) -> Duration {
        self.ttl / 5
    }
}

/// A partition this process owns, as of its last successful take or renewal.
#[derive(Debug, Clone, Copy)]
struct Held {
    epoch: i64,
    /// Local monotonic deadline: past it, the lease may belong to someone else.
    valid_until: Instant,
    /// False while the holder restores it, or drains it before a release.
    serving: bool,
}

/// The partitions this process owns; read on every request.
#[derive(Clone, Default)]
pub struct Ownership {
    held: Arc<RwLock<BTreeMap<u32, Held>>>,
}

impl Ownership {
    /// The epoch to write `partition` under, if this process serves it right now.
    pub fn serving_epoch(&self, partition: u32) -> Option<i64> {
        let held = self.held.read();
        let h = held.get(&partition)?;
        (h.serving && Instant::now() < h.valid_until).then_some(h.epoch)
    }

    /// Partitions currently served.
    pub fn serving(&self) -> Vec<u32> {
        let now = Instant::now();
        self.held.read().iter().filter(|(_, h)| h.serving && now < h.valid_until).map(|(p, _)| *p).collect()
    }

    /// Partitions held (served or not), with their epochs.
    fn epochs(&self) -> Vec<(u32, i64)> {
        self.held.read().iter().map(|(p, h)| (*p, h.epoch)).collect()
    }

    pub fn count(&self) -> usize {
        self.held.read().len()
    }

    fn expire_all(&self) {
        let now = Instant::now();
        for h in self.held.write().values_mut() {
            h.valid_until = now;
        }
    }
}

/// What the owner of partitions does as ownership changes.
pub trait PartitionHolder: Send + Sync + 'static {
    /// Loads the partitions' state; they are served once this returns `Ok`.
    fn acquired(&self, partitions: &[(u32, i64)]) -> impl Future<Output = Result<(), String>> + Send;
    /// Finishes in-flight work of `partition`, which is no longer served (before a release).
    fn drain(&self, partition: u32) -> impl Future<Output = ()> + Send;
    /// `partition` is no longer this process's (lost or released): drop its state.
    fn dropped(&self, partition: u32);
    /// The partitions are served from now on.
    fn serving(&self, partitions: &[u32]);
}

/// Figures for `/metrics`, given to the caller's recorder.
pub trait LeaseMetrics: Send + Sync + 'static {
    fn owned(&self, count: usize);
    fn renewed(&self, ok: bool);
    fn taken(&self, count: usize, from_dead: bool);
    fn lost(&self, count: usize);
    fn handed_over(&self, seconds: f64);
}

/// The lease metrics of a service, named after it: `<service>_partitions_owned` (gauge),
/// `_lease_renewals_total{outcome}`, `_partitions_taken_total{cause="failover"|"balance"}`,
/// `_partitions_lost_total` (counters) and `_handover_seconds` (histogram).
#[macro_export]
macro_rules! lease_metric_names {
    ($service:literal) => {
        $crate::partition_lease::LeaseMetricNames {
            owned: concat!($service, "_partitions_owned"),
            renewals: concat!($service, "_lease_renewals_total"),
            taken: concat!($service, "_partitions_taken_total"),
            lost: concat!($service, "_partitions_lost_total"),
            handover: concat!($service, "_handover_seconds"),
        }
    };
}

/// A service's names for the lease figures (see [`lease_metric_names!`]), recorded as a gauge,
/// counters (`outcome`, `cause` labels) and a histogram.
#[derive(Debug, Clone, Copy)]
pub struct LeaseMetricNames {
    pub owned: &'static str,
    pub renewals: &'static str,
    pub taken: &'static str,
    pub lost: &'static str,
    pub handover: &'static str,
}

impl LeaseMetricNames {
    /// Registers the HELP texts; `kind` names the processes (`registry`), `handover` says what one
    /// hand-over does in this service.
    pub fn describe(&self, kind: &str, handover: &'static str) {
        use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
        describe_gauge!(self.owned, Unit::Count, format!("Partitions this {kind} owns."));
        describe_counter!(self.renewals, Unit::Count, "Partition lease renewals, by outcome (ok, failed).");
        describe_counter!(
            self.taken,
            Unit::Count,
            "Partitions taken, by cause (failover: their owner died; balance: free or handed over)."
        );
        describe_counter!(self.lost, Unit::Count, format!("Partitions whose lease another {kind} took."));
        describe_histogram!(self.handover, Unit::Seconds, handover);
    }
}

impl LeaseMetrics for LeaseMetricNames {
    fn owned(&self, count: usize) {
        metrics::gauge!(self.owned).set(count as f64);
    }
    fn renewed(&self, ok: bool) {
        metrics::counter!(self.renewals, "outcome" => if ok { "ok" } else { "failed" }).increment(1);
    }
    fn taken(&self, count: usize, from_dead: bool) {
        metrics::counter!(self.taken, "cause" => if from_dead { "failover" } else { "balance" })
            .increment(count as u64);
    }
    fn lost(&self, count: usize) {
        metrics::counter!(self.lost).increment(count as u64);
    }
    fn handed_over(&self, seconds: f64) {
        metrics::histogram!(self.handover).record(seconds);
    }
}

/// A member of a group: its identity and the connection that holds its advisory lock.
pub struct Member {
    pub id: String,
    pub addr: String,
    pub group: Group,
}

impl Member {
    /// A fresh member id for one process start: `<name>-<8 hex>`, so a restarted process is
    /// never mistaken for its dead predecessor.
    pub fn new_id(name: &str) -> String {
        format!("{name}-{:08x}", rand::random::<u32>())
    }
}

pub struct PartitionLeases<H, M> {
    pub pool: PgPool,
    pub database_url: String,
    pub member: Member,
    pub timing: LeaseTiming,
    pub partitions: u32,
    pub ownership: Ownership,
    pub holder: Arc<H>,
    pub metrics: M,
    pub shutdown: Shutdown,
    /// When the member's lease was last extended (sent): every held partition is valid until
    /// this plus the lease, less the margin.
    pub lease_start: Option<Instant>,
}

#[derive(Debug, thiserror::Error)]
pub enum LeaseError {
    #[error("partition leases: {0}")]
    Database(#[from] sqlx::Error),
}

impl<H: PartitionHolder, M: LeaseMetrics> PartitionLeases<H, M> {
    /// Registers the member and takes a first share, so that a lone process serves everything as
    /// soon as it starts. Then [`PartitionLeases::run`] keeps it up.
    pub async fn join(&mut self) -> Result<LockConnection, LeaseError> {
        let lock = LockConnection::open(&self.database_url).await?;
        self.register(&lock).await?;
        self.balance().await?;
        Ok(lock)
    }

    /// Renews, balances and follows other members until shutdown; then drains and releases
    /// every partition and leaves.
    pub async fn run(mut self, mut lock: LockConnection) {
        let mut listener = match crate::db::listen(&self.pool, PARTITIONS_CHANNEL).await {
            Ok(l) => Some(l),
            Err(err) => {
                tracing::warn!(%err, "cannot listen for partition changes; balancing on the timer only");
                None
            }
        };
        let mut balance = tokio::time::interval(self.timing.balance_every);
        balance.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut last_renewal = Instant::now();
        loop {
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                _ = balance.tick() => {}
                notified = next_notification(&mut listener) => {
                    if !notified {
                        listener = None;
                    }
                }
            }
            if !lock.is_alive().await {
                // Lost the lock connection: others may already see us as dead and take over. Stop
                // serving at once; a new lock and the next renewal tell what is still ours.
                self.ownership.expire_all();
                match LockConnection::open(&self.database_url).await {
                    Ok(new_lock) => {
                        lock = new_lock;
                        if let Err(err) = self.register(&lock).await {
                            tracing::warn!(%err, "re-registering failed");
                        }
                    }
                    Err(err) => tracing::warn!(%err, "member lock connection lost; retrying"),
                }
            }
            if last_renewal.elapsed() >= self.timing.renew_every() {
                match self.renew(&lock).await {
                    Ok(()) => last_renewal = Instant::now(),
                    Err(err) => {
                        self.metrics.renewed(false);
                        tracing::warn!(%err, "lease renewal failed; will retry");
                    }
                }
            }
            if let Err(err) = self.balance().await {
                tracing::warn!(%err, "balancing partitions failed; will retry");
            }
        }
        self.leave(lock).await;
    }

    async fn register(&mut self, lock: &LockConnection) -> Result<(), sqlx::Error> {
        let started = Instant::now();
        sqlx::query(
            "INSERT INTO presence_members (member, kind, addr, lock_key, alive_until) \
             VALUES ($1, $2, $3, $4, now() + $5 * interval '1 millisecond') \
             ON CONFLICT (member) DO UPDATE SET lock_key = EXCLUDED.lock_key, alive_until = EXCLUDED.alive_until",
        )
        .bind(&self.member.id)
        .bind(self.member.group.kind())
        .bind(&self.member.addr)
        .bind(lock.key)
        .bind(millis(self.timing.ttl))
        .execute(&self.pool)
        .await?;
        self.lease_start = Some(started);
        Ok(())
    }

    fn valid_until(&self) -> Instant {
        self.lease_start.map_or_else(Instant::now, |start| start + self.timing.ttl - self.timing.margin())
    }

    /// Extends the member's lease, then reads which partitions it still owns: any other is lost.
    async fn renew(&mut self, lock: &LockConnection) -> Result<(), sqlx::Error> {
        let started = Instant::now();
        let alive = sqlx::query(
            "UPDATE presence_members SET alive_until = now() + $2 * interval '1 millisecond' WHERE member = $1",
        )
        .bind(&self.member.id)
        .bind(millis(self.timing.ttl))
        .execute(&self.pool)
        .await?;
        if alive.rows_affected() == 0 {
            // Others saw us as dead and removed us: our partitions are theirs by now (the read
            // below shows which). Join again; the next balance takes a share.
            tracing::warn!(member = self.member.id, "removed from the members; rejoining");
            self.register(lock).await?;
        }
        let owned: Vec<(i32, i64)> = sqlx::query_as(&format!(
            "SELECT partition, epoch FROM {} WHERE owner = $1",
            self.member.group.table()
        ))
        .bind(&self.member.id)
        .fetch_all(&self.pool)
        .await?;
        if alive.rows_affected() > 0 {
            self.lease_start = Some(started);
        }
        let valid_until = self.valid_until();
        let mut lost = Vec::new();
        {
            let mut held = self.ownership.held.write();
            held.retain(|p, h| {
                let still = owned.iter().any(|(op, oe)| *op == to_i32(*p) && *oe == h.epoch);
                if still {
                    h.valid_until = valid_until;
                } else {
                    lost.push(*p);
                }
                still
            });
        }
        self.metrics.renewed(true);
        if !lost.is_empty() {
            tracing::warn!(partitions = ?lost, "partitions lost to another owner");
            self.metrics.lost(lost.len());
            for p in lost {
                self.holder.dropped(p);
            }
        }
        self.metrics.owned(self.ownership.count());
        Ok(())
    }

    /// Removes dead members, then takes partitions up to our share or releases the surplus.
    async fn balance(&mut self) -> Result<(), sqlx::Error> {
        let kind = self.member.group.kind();
        // Dead: the lease ran out, or the process's lock is gone (its connection closed).
        let dead: Vec<String> = sqlx::query_scalar(
            "DELETE FROM presence_members m WHERE kind = $1 AND member <> $2 AND (alive_until < now() \
             OR NOT EXISTS (SELECT 1 FROM pg_locks l WHERE l.locktype = 'advisory' AND l.granted \
                 AND l.classid = $3::oid AND l.objid = m.lock_key::oid AND l.objsubid = 2)) \
             RETURNING member",
        )
        .bind(kind)
        .bind(&self.member.id)
        .bind(MEMBER_LOCK_CLASS)
        .fetch_all(&self.pool)
        .await?;
        if !dead.is_empty() {
            tracing::warn!(members = ?dead, "members gone; taking over their partitions");
        }
        let live: Vec<String> =
            sqlx::query_scalar("SELECT member FROM presence_members WHERE kind = $1 ORDER BY member")
                .bind(kind)
                .fetch_all(&self.pool)
                .await?;
        // Removed by the others (they saw us as dead): the next renewal rejoins first.
        let Some(place) = live.iter().position(|m| *m == self.member.id) else { return Ok(()) };
        let target = share(self.partitions, u32::try_from(live.len()).unwrap_or(u32::MAX), place);
        let owned = u32::try_from(self.ownership.count()).unwrap_or(u32::MAX);
        if owned < target {
            self.take(target - owned, !dead.is_empty()).await?;
        } else if owned > target {
            self.release_surplus(owned - target).await?;
        }
        self.metrics.owned(self.ownership.count());
        Ok(())
    }

    /// Takes up to `wanted` partitions that are free or owned by a member whose lease ran out.
    /// Rows locked by an in-flight commit are skipped (taken on a later round), so a take never
    /// overtakes a commit of the previous owner.
    async fn take(&mut self, wanted: u32, after_death: bool) -> Result<(), sqlx::Error> {
        let started = Instant::now();
        let taken: Vec<(i32, i64)> = sqlx::query_as(&format!(
            "UPDATE {table} SET owner = $1, epoch = epoch + 1 \
             WHERE partition IN (SELECT partition FROM {table} t WHERE t.owner IS NULL \
                 OR NOT EXISTS (SELECT 1 FROM presence_members m WHERE m.member = t.owner AND m.alive_until > now()) \
                 ORDER BY random() LIMIT $2 FOR UPDATE SKIP LOCKED) \
             RETURNING partition, epoch",
            table = self.member.group.table()
        ))
        .bind(&self.member.id)
        .bind(i64::from(wanted))
        .fetch_all(&self.pool)
        .await?;
        if taken.is_empty() {
            return Ok(());
        }
        let valid_until = self.valid_until();
        let taken: Vec<(u32, i64)> =
            taken.into_iter().filter_map(|(p, e)| u32::try_from(p).ok().map(|p| (p, e))).collect();
        {
            let mut held = self.ownership.held.write();
            for (p, epoch) in &taken {
                held.insert(*p, Held { epoch: *epoch, valid_until, serving: false });
            }
        }
        match self.holder.acquired(&taken).await {
            Ok(()) => {
                let mut held = self.ownership.held.write();
                for (p, _) in &taken {
                    if let Some(h) = held.get_mut(p) {
                        h.serving = true;
                    }
                }
                drop(held);
                self.holder.serving(&taken.iter().map(|(p, _)| *p).collect::<Vec<_>>());
                tracing::info!(
                    partitions = taken.len(),
                    elapsed_ms = started.elapsed().as_millis() as u64,
                    "partitions taken"
                );
                self.metrics.taken(taken.len(), after_death);
            }
            Err(err) => {
                tracing::warn!(%err, "loading taken partitions failed; releasing them");
                for (p, epoch) in taken {
                    self.ownership.held.write().remove(&p);
                    self.holder.dropped(p);
                    self.release_row(p, epoch).await?;
                }
            }
        }
        Ok(())
    }

    /// Hands `count` partitions over: stop serving, finish in-flight work, release the lease.
    async fn release_surplus(&mut self, count: u32) -> Result<(), sqlx::Error> {
        let surplus: Vec<(u32, i64)> =
            self.ownership.epochs().into_iter().rev().take(count as usize).collect();
        for (p, epoch) in surplus {
            self.hand_over(p, epoch).await?;
        }
        Ok(())
    }

    async fn hand_over(&mut self, partition: u32, epoch: i64) -> Result<(), sqlx::Error> {
        let started = Instant::now();
        if let Some(h) = self.ownership.held.write().get_mut(&partition) {
            h.serving = false;
        }
        self.holder.drain(partition).await;
        self.ownership.held.write().remove(&partition);
        self.holder.dropped(partition);
        self.release_row(partition, epoch).await?;
        self.metrics.handed_over(started.elapsed().as_secs_f64());
        Ok(())
    }

    async fn release_row(&self, partition: u32, epoch: i64) -> Result<(), sqlx::Error> {
        sqlx::query(&format!(
            "UPDATE {} SET owner = NULL WHERE partition = $1 AND epoch = $2 AND owner = $3",
            self.member.group.table()
        ))
        .bind(to_i32(partition))
        .bind(epoch)
        .bind(&self.member.id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    /// Graceful stop: every partition handed over, then the member row removed.
    async fn leave(mut self, lock: LockConnection) {
        let held = self.ownership.epochs();
        let count = held.len();
        for (p, epoch) in held {
            if let Err(err) = self.hand_over(p, epoch).await {
                tracing::warn!(%err, partition = p, "releasing a partition failed; it frees when its lease runs out");
            }
        }
        if let Err(err) = sqlx::query("DELETE FROM presence_members WHERE member = $1")
            .bind(&self.member.id)
            .execute(&self.pool)
            .await
        {
            tracing::warn!(%err, "leaving the members failed");
        }
        lock.close().await;
        self.metrics.owned(0);
        tracing::info!(partitions = count, "partitions handed over");
    }
}

/// The connection that holds a member's advisory lock for as long as the process lives.
pub struct LockConnection {
    conn: PgConnection,
    key: i32,
}

impl LockConnection {
    async fn open(url: &str) -> Result<Self, sqlx::Error> {
        let mut conn = PgConnection::connect(url).await?;
        let key = i32::try_from(rand::random::<u32>() >> 1).unwrap_or(1).max(1);
        sqlx::query("SELECT pg_advisory_lock($1, $2)")
            .bind(MEMBER_LOCK_CLASS)
            .bind(key)
            .execute(&mut conn)
            .await?;
        Ok(Self { conn, key })
    }

    async fn is_alive(&mut self) -> bool {
        self.conn.ping().await.is_ok()
    }

    async fn close(self) {
        let _ = self.conn.close().await;
    }
}

/// Waits for a notification; false when the listener failed (and should be dropped).
async fn next_notification(listener: &mut Option<PgListener>) -> bool {
    match listener {
        Some(l) => l.recv().await.is_ok(),
        None => std::future::pending().await,
    }
}

/// The share of the member at `place` (0-based, in member id order) among `live` members: P is
/// split as evenly as it goes, the first `P mod live` members taking one more, so that the
/// shares add up to P exactly.
pub fn share(partitions: u32, live: u32, place: usize) -> u32 {
    let live = live.max(1);
    let extra = u32::try_from(place).is_ok_and(|place| place < partitions % live);
    partitions / live + u32::from(extra)
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn to_i32(p: u32) -> i32 {
    i32::try_from(p).unwrap_or(i32::MAX)
}

/// The partition map as routers read it: owner member and its address, per partition.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PartitionMap {
    /// Owner address per partition (`None`: no live owner).
    pub owners: Vec<Option<String>>,
    /// Every live member's address.
    pub members: Vec<String>,
}

impl PartitionMap {
    /// Reads the current map of `group`.
    pub async fn load(pool: &PgPool, group: Group) -> Result<Self, sqlx::Error> {
        let rows: Vec<(i32, Option<String>)> = sqlx::query_as(&format!(
            "SELECT t.partition, m.addr FROM {} t LEFT JOIN presence_members m \
             ON m.member = t.owner AND m.alive_until > now() ORDER BY t.partition",
            group.table()
        ))
        .fetch_all(pool)
        .await?;
        let members: Vec<String> = sqlx::query_scalar(
            "SELECT addr FROM presence_members WHERE kind = $1 AND alive_until > now() ORDER BY member",
        )
        .bind(group.kind())
        .fetch_all(pool)
        .await?;
        let mut owners = vec![None; rows.len()];
        for (p, addr) in rows {
            if let Some(slot) = usize::try_from(p).ok().and_then(|p| owners.get_mut(p)) {
                *slot = addr.filter(|a| !a.is_empty());
            }
        }
        let mut unique: HashMap<String, ()> = HashMap::new();
        let members =
            members.into_iter().filter(|a| !a.is_empty() && unique.insert(a.clone(), ()).is_none()).collect();
        Ok(Self { owners, members })
    }

    pub fn partitions(&self) -> u32 {
        u32::try_from(self.owners.len()).unwrap_or(u32::MAX)
    }

    /// The owner's address of `partition`, if it has a live owner.
    pub fn owner(&self, partition: u32) -> Option<&str> {
        self.owners.get(partition as usize).and_then(|o| o.as_deref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shares_add_up_to_every_partition_and_differ_by_at_most_one() {
        assert_eq!(share(64, 1, 0), 64);
        assert_eq!((0..3).map(|place| share(64, 3, place)).collect::<Vec<_>>(), [22, 21, 21]);
        assert_eq!(share(64, 0, 0), 64);
        for live in 1..70u32 {
            let shares: Vec<u32> = (0..live as usize).map(|place| share(64, live, place)).collect();
            assert_eq!(shares.iter().sum::<u32>(), 64, "{live} members");
            assert!(shares.iter().max().unwrap_or(&0) - shares.iter().min().unwrap_or(&0) <= 1);
        }
    }
}
