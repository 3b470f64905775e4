//! Finding the registry that owns a user: the partition map, followed live, and one channel per
//! registry process.
//!
//! Gateways, the REST facade and registries themselves (forwarding queries) route each user's
//! calls to the owner of the user's partition. The map comes from Postgres and is re-read on every
//! `NOTIFY presence_partitions` (ownership or membership changed) and once a second besides. A
//! call answered with `unavailable` (not the owner, or the owner is gone) refreshes the map; the
//! caller retries within its deadline. With no map yet (no registry has joined), calls go to
//! `REGISTRY_URL`.

use std::{
    collections::HashMap,
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::{Mutex, RwLock};
use presence_proto::{
    partition::partition_of,
    query_request::UserIds,
    v1::{QueryReply, QueryRequest, UserPresence, presence_registry_client::PresenceRegistryClient},
};
use sqlx::PgPool;
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

/// Whether a call refused this way may go to another registry: the one asked does not serve the
/// user (any more), or could not be reached at all. A registry that answers that it cannot commit
/// (Postgres is away) is not asked again.
pub fn may_reroute(status: &tonic::Status) -> bool {
    is_reroute(status) || std::error::Error::source(status).is_some()
}

/// Metadata of a query one registry forwards to another: answer from your own partitions only
/// (so that a stale map can never bounce a query around).
pub const FORWARDED_HEADER: &str = "presence-forwarded";

/// Whether a query came from another registry.
pub fn is_forwarded<T>(request: &tonic::Request<T>) -> bool {
    request.metadata().contains_key(FORWARDED_HEADER)
}

/// Pause before asking again while a partition has no live owner.
const NO_OWNER_RETRY: Duration = Duration::from_millis(50);

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
    /// no registry is known. Callers that must reach the seed check its TLS settings first
    /// ([`ClientTls::endpoint`]); a bad address only fails the calls to it.
    pub async fn start(
        pool: PgPool,
        tls: ClientTls,
        token: CallerToken,
        seed_url: String,
        shutdown: Shutdown,
    ) -> Self {
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
        router
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
        self.owner_in(&self.map(), app_id, user_id).map(str::to_owned)
    }

    /// [`RegistryRouter::owner_of`] in `map`.
    fn owner_in<'a>(&'a self, map: &'a PartitionMap, app_id: &str, user_id: &str) -> Option<&'a str> {
        if map.owners.is_empty() {
            return Some(&self.inner.seed_url);
        }
        map.owner(partition_of(app_id, user_id, map.partitions()))
    }

    /// True when partitions exist but no registry is alive: callers answer `unavailable` at once
    /// rather than wait out their deadline for an owner.
    pub fn none_alive(&self) -> bool {
        let map = self.map();
        !map.owners.is_empty() && map.members.is_empty()
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

    /// Status of `user_ids` of one app, from whichever registries own them: one call per owner,
    /// concurrently, merged in request order. Parts refused as not the owner's (the map moved)
    /// are re-routed until `deadline`. `as_of_seq` is the smallest of the parts': every event up
    /// to it is reflected (later ones may be too). Results come without `user_id` (the registries
    /// are asked to leave it out): the caller holds the ids, in the same order.
    pub async fn query(
        &self,
        app_id: &str,
        user_ids: &UserIds,
        detail: bool,
        deadline: Instant,
    ) -> Result<QueryReply, tonic::Status> {
        // One registry serves every partition (the usual deployment): it gets the query as it
        // came, without hashing each id to find owners.
        if let Some(addr) = self.sole_owner() {
            let request = QueryRequest {
                app_id: app_id.to_owned(),
                user_ids: user_ids.clone(),
                detail,
                without_user_ids: true,
            };
            match self.query_one(&addr, request, deadline).await {
                Ok(reply) if reply.results.len() == user_ids.len() => return Ok(reply),
                Ok(_) => return Err(tonic::Status::internal("a registry answered a query partly")),
                Err(status) if may_reroute(&status) => {}
                Err(status) => return Err(status),
            }
        }
        let mut results: Vec<Option<UserPresence>> = vec![None; user_ids.len()];
        let mut as_of_seq = u64::MAX;
        let mut todo: Vec<usize> = (0..user_ids.len()).collect();
        while !todo.is_empty() {
            let map = self.map();
            let mut by_owner: HashMap<&str, Vec<usize>> = HashMap::new();
            let mut ownerless = Vec::new();
            for i in todo.drain(..) {
                match self.owner_in(&map, app_id, user_ids.get(i).unwrap_or_default()) {
                    Some(addr) => by_owner.entry(addr).or_default().push(i),
                    None => ownerless.push(i),
                }
            }
            let calls = by_owner.into_iter().map(|(addr, indexes)| {
                let request = QueryRequest {
                    app_id: app_id.to_owned(),
                    user_ids: user_ids.select(&indexes),
                    detail,
                    without_user_ids: true,
                };
                async move { (self.query_one(addr, request, deadline).await, indexes) }
            });
            let mut retry = ownerless;
            for (answer, indexes) in futures::future::join_all(calls).await {
                match answer {
                    Ok(reply) if reply.results.len() == indexes.len() => {
                        as_of_seq = as_of_seq.min(reply.as_of_seq);
                        for (i, presence) in indexes.into_iter().zip(reply.results) {
                            results[i] = Some(presence);
                        }
                    }
                    Ok(_) => return Err(tonic::Status::internal("a registry answered a query partly")),
                    Err(status) if may_reroute(&status) => {
                        retry.extend(indexes);
                    }
                    Err(status) => return Err(status),
                }
            }
            if retry.is_empty() {
                break;
            }
            if self.none_alive() || Instant::now() + NO_OWNER_RETRY >= deadline {
                return Err(tonic::Status::unavailable("no registry serves some of these users now"));
            }
            tokio::time::sleep(NO_OWNER_RETRY).await;
            self.refresh().await;
            todo = retry;
        }
        Ok(QueryReply {
            results: results.into_iter().map(Option::unwrap_or_default).collect(),
            as_of_seq: if as_of_seq == u64::MAX { 0 } else { as_of_seq },
        })
    }

    /// The one registry that owns every partition (`REGISTRY_URL` with no map yet), if there is one.
    fn sole_owner(&self) -> Option<String> {
        let map = self.map();
        let Some(first) = map.owners.first() else { return Some(self.inner.seed_url.clone()) };
        let first = first.as_deref()?;
        map.owners.iter().all(|owner| owner.as_deref() == Some(first)).then(|| first.to_owned())
    }

    async fn query_one(
        &self,
        addr: &str,
        query: QueryRequest,
        deadline: Instant,
    ) -> Result<QueryReply, tonic::Status> {
        let channel = self.channel(addr).map_err(|err| tonic::Status::unavailable(err.to_string()))?;
        let mut request = tonic::Request::new(query);
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        request.metadata_mut().insert(FORWARDED_HEADER, tonic::metadata::MetadataValue::from_static("1"));
        // The grpc-timeout header bounds the server's work; the client must bound its own wait.
        match tokio::time::timeout_at(deadline.into(), PresenceRegistryClient::new(channel).query(request))
            .await
        {
            Ok(reply) => Ok(reply?.into_inner()),
            Err(_) => Err(tonic::Status::deadline_exceeded("the registry did not answer in time")),
        }
    }

    /// Re-reads the map on every notification, and every second besides (a notification is lost
    /// while the listener reconnects).
    async fn follow(self, shutdown: Shutdown) {
        let mut listener = crate::db::listen(&self.inner.pool, PARTITIONS_CHANNEL).await.ok();
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
