//! Finding the registry that owns a user: the partition map, followed live, and one channel per
//! registry process.
//!
//! Gateways, the REST facade and registries themselves (forwarding queries) route each user's
//! calls to the owner of the user's partition. The map comes from Postgres and is re-read on every
//! `NOTIFY presence_partitions` (ownership or membership changed) and once a second besides. A
//! call answered with `unavailable` (not the owner, or the owner is gone) refreshes the map; the
//! caller retries within its deadline. With no map yet (no registry has joined), calls go to
//! `REGISTRY_URL`.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::{Mutex, RwLock};
use presence_proto::partition::partition_of;
use sqlx::{PgPool, postgres::PgListener};
use tokio::sync::watch;
use tonic::service::interceptor::InterceptedService;

use crate::{
    Shutdown,
    grpc_tls::{ClientTls, GrpcTlsError},
    internal_auth::{CallerToken, RegistryChannel},
    partition_lease::{Group, PARTITIONS_CHANNEL, PartitionMap},
};

/// Metadata a registry adds to `unavailable` when the user's partition is not served there: the
/// caller re-reads the map and retries with the owner.
pub const REROUTE_HEADER: &str = "presence-reroute";

/// `unavailable`, marked for re-routing.
pub fn reroute_status(message: String) -> tonic::Status {
    let mut status = tonic::Status::unavailable(message);
    status.metadata_mut().insert(REROUTE_HEADER, tonic::metadata::MetadataValue::from_static("1"));
    status
}

/// Whether a registry answered that another one serves the user.
pub fn is_reroute(status: &tonic::Status) -> bool {
    status.metadata().contains_key(REROUTE_HEADER)
}

/// How often the map is re-read even without a notification.
const REFRESH_EVERY: Duration = Duration::from_secs(1);

#[derive(Clone)]
pub struct RegistryRouter {
    inner: Arc<Inner>,
}

struct Inner {
    pool: PgPool,
    map: RwLock<Arc<PartitionMap>>,
    channels: Mutex<HashMap<String, RegistryChannel>>,
    tls: ClientTls,
    token: CallerToken,
    seed_url: String,
    /// Bumped at every change of the map.
    version: watch::Sender<u64>,
}

impl RegistryRouter {
    /// Reads the map and follows it until `shutdown`. `seed_url` (`REGISTRY_URL`) is used while
    /// no registry is known.
    pub async fn start(
        pool: PgPool,
        tls: ClientTls,
        token: CallerToken,
        seed_url: String,
        shutdown: Shutdown,
    ) -> Result<Self, GrpcTlsError> {
        // Fail now on bad TLS settings rather than at the first call.
        tls.endpoint(&seed_url)?;
        let map = PartitionMap::load(&pool, Group::Registry).await.unwrap_or_default();
        let router = Self {
            inner: Arc::new(Inner {
                pool,
                map: RwLock::new(Arc::new(map)),
                channels: Mutex::default(),
                tls,
                token,
                seed_url,
                version: watch::channel(0).0,
            }),
        };
        tokio::spawn(router.clone().follow(shutdown));
        Ok(router)
    }

    /// The current map.
    pub fn map(&self) -> Arc<PartitionMap> {
        self.inner.map.read().clone()
    }

    /// Changes whenever the map does.
    pub fn watch(&self) -> watch::Receiver<u64> {
        self.inner.version.subscribe()
    }

    /// Re-reads the map now (after a call was refused as not the owner's).
    pub async fn refresh(&self) {
        match PartitionMap::load(&self.inner.pool, Group::Registry).await {
            Ok(map) => self.install(map),
            Err(err) => tracing::debug!(%err, "reading the partition map failed"),
        }
    }

    fn install(&self, map: PartitionMap) {
        let changed = {
            let mut current = self.inner.map.write();
            let changed = **current != map;
            if changed {
                *current = Arc::new(map);
            }
            changed
        };
        if changed {
            self.inner.version.send_modify(|v| *v += 1);
        }
    }

    /// The owner's address of the user's partition; `None` while it has no live owner. With no
    /// map at all (no registry has joined yet), `REGISTRY_URL`.
    pub fn owner_of(&self, app_id: &str, user_id: &str) -> Option<String> {
        let map = self.map();
        if map.owners.is_empty() {
            return Some(self.inner.seed_url.clone());
        }
        map.owner(partition_of(app_id, user_id, map.partitions())).map(str::to_owned)
    }

    /// Every live registry's address (`REGISTRY_URL` when none is known).
    pub fn members(&self) -> Vec<String> {
        let map = self.map();
        if map.members.is_empty() { vec![self.inner.seed_url.clone()] } else { map.members.clone() }
    }

    /// Any live registry, for calls every registry answers (event pages, forwarded queries).
    pub fn any_member(&self) -> String {
        let members = self.members();
        members[rand::random_range(0..members.len())].clone()
    }

    /// The channel to `addr`, connected lazily and kept.
    pub fn channel(&self, addr: &str) -> Result<RegistryChannel, GrpcTlsError> {
        if let Some(channel) = self.inner.channels.lock().get(addr) {
            return Ok(channel.clone());
        }
        let channel = self
            .inner
            .tls
            .endpoint(addr)?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        let channel = InterceptedService::new(channel, self.inner.token.clone());
        self.inner.channels.lock().insert(addr.to_owned(), channel.clone());
        Ok(channel)
    }

    /// Re-reads the map on every notification, and every second besides (a notification is lost
    /// while the listener reconnects).
    async fn follow(self, shutdown: Shutdown) {
        let mut listener = match PgListener::connect_with(&self.inner.pool).await {
            Ok(mut listener) => listener.listen(PARTITIONS_CHANNEL).await.ok().map(|()| listener),
            Err(_) => None,
        };
        let mut tick = tokio::time::interval(REFRESH_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = tick.tick() => {}
                ok = async {
                    match listener.as_mut() {
                        Some(l) => l.recv().await.is_ok(),
                        None => std::future::pending().await,
                    }
                } => if !ok { listener = None },
            }
            self.refresh().await;
        }
    }
}
