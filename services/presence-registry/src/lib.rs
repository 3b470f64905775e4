//! presence-registry: the authoritative presence of every (app, user, device).
//!
//! Gateways report logins, logouts and disconnects; the registry applies each app's login
//! policy under a per-user lock, makes the resulting event durable (group commit), and kicks the
//! devices the policy forces offline through the gateway that holds them. The notifier and the
//! REST facade read the event feed and query state. See `docs/architecture.md`.

mod cell_map;
mod config;
mod counts;
mod event_log;
mod gateways;
mod grace_timer;
mod grpc;
mod login_policy;
pub mod metric_names;
mod partitions;
mod query;
mod registry;
mod restore;
mod store;
mod sweeper;
mod transition;
mod user_state;
mod user_table;
mod user_view;
mod watchers;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use presence_common::{AppDirectory, db, shutdown::DEFAULT_GRACE};
use presence_proto::v1::{
    event_feed_server::EventFeedServer, gateway_link_server::GatewayLinkServer,
    presence_registry_server::PresenceRegistryServer,
};
use tokio::task::JoinHandle;

pub use config::RegistryConfig;
pub use presence_common::Shutdown;
pub use registry::RegistryError;

use presence_common::{
    internal_auth::Role,
    partition_lease::{Group, LeaseTiming, Member, Ownership, PartitionLeases},
    registry_router::RegistryRouter,
};

use crate::{event_log::EventLog, gateways::Gateways, partitions::Partitions, registry::Registry};

/// gRPC service names, for health.
const SERVICES: &[&str] =
    &["presence.v1.PresenceRegistry", "presence.v1.GatewayLink", "presence.v1.EventFeed"];

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Directory(#[from] presence_common::app_directory::DirectoryError),
    #[error(transparent)]
    Log(#[from] event_log::LogError),
    #[error(transparent)]
    Lease(#[from] presence_common::partition_lease::LeaseError),
    #[error(transparent)]
    Bind(#[from] presence_common::net::BindError),
    #[error("reflection: {0}")]
    Reflection(#[from] tonic_reflection::server::Error),
    #[error(transparent)]
    Tls(#[from] presence_common::grpc_tls::GrpcTlsError),
    #[error(transparent)]
    InternalAuth(#[from] presence_common::internal_auth::AuthConfigError),
    #[error("minting this registry's own token: {0}")]
    OwnToken(#[from] presence_proto::internal_token::AuthError),
    #[error("gRPC server: {0}")]
    Serve(#[from] tonic::transport::Error),
    #[error("metrics server: {0}")]
    Metrics(std::io::Error),
    #[error("server task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A started registry.
pub struct RunningRegistry {
    pub grpc_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    grpc: JoinHandle<Result<(), tonic::transport::Error>>,
    http: JoinHandle<std::io::Result<()>>,
    leases: JoinHandle<()>,
}

impl RunningRegistry {
    /// Until the servers stop and every partition is handed over (after `shutdown`).
    pub async fn wait(self) -> Result<(), StartError> {
        self.leases.await?;
        self.grpc.await??;
        self.http.await?.map_err(StartError::Metrics)?;
        Ok(())
    }
}

/// Connects to Postgres, joins the registries, takes its share of the partitions, and serves
/// until `shutdown`; then hands its partitions over.
pub async fn start(config: RegistryConfig, shutdown: Shutdown) -> Result<RunningRegistry, StartError> {
    // Read before anything else: a bad certificate stops the start before any state is touched.
    // Gateways may cancel many calls at once (thousands of devices dropping together); h2's
    // default of 20 pending reset streams would close their whole connection as an attack.
    let mut server = config.tls.server_builder()?.http2_max_pending_accept_reset_streams(Some(4096));
    let auth = config.internal_auth.interceptor()?;
    metric_names::describe();
    // A commit holds its partitions' rows (FOR SHARE) until it ends: a registry paused mid-commit
    // would block their take-over for as long as it stays paused. Postgres ends such a session.
    let pool = db::connect_with(
        &config.database_url,
        config.db_max_connections,
        &[("idle_in_transaction_session_timeout", "2000")],
        &shutdown,
    )
    .await?;
    let apps = AppDirectory::start(pool.clone(), shutdown.clone()).await?;
    let partition_count = db::partition_count(&pool).await?;
    let log = EventLog::open(pool.clone(), config.commit_batch_max).await?;
    let gateways = Gateways::new(Duration::from_secs(config.gateway_lease_s.max(1)));
    let ownership = Ownership::default();
    let (grpc_listener, grpc_addr) = presence_common::net::bind(config.listen_addr).await?;
    let (metrics_listener, metrics_addr) = presence_common::net::bind(config.metrics_addr).await?;
    let member = Member::new_id(&config.registry_id);
    let advertised = config.advertised_url(grpc_addr).await;
    // Forwarded queries carry a token this registry signs for itself, in the facade's role.
    let peers = RegistryRouter::start(
        pool.clone(),
        config.peer_tls.clone(),
        auth.own_token(Role::Facade, &member)?,
        advertised.clone(),
        shutdown.clone(),
    )
    .await;
    if config.peer_tls.endpoint(&advertised).is_err() {
        tracing::warn!(
            advertised,
            "this registry serves TLS but REGISTRY_TLS_CA is not set: queries of users that other \
             registries serve will fail (set it to the CA of the registries' certificates)"
        );
    }
    let (graces, holds) = grace_timer::GraceTimer::new();
    let registry = Arc::new(Registry {
        partitions: Partitions::new(partition_count),
        peers,
        ownership: ownership.clone(),
        log,
        gateways: Arc::new(gateways),
        apps,
        pool: pool.clone(),
        graces,
    });
    tokio::spawn(grace_timer::run(registry.clone(), holds, shutdown.clone()));

    let mut leases = PartitionLeases {
        pool,
        database_url: config.database_url.clone(),
        member: Member { id: member, addr: advertised, group: Group::Registry },
        timing: LeaseTiming {
            ttl: Duration::from_millis(config.partition_lease_ms.max(300)),
            balance_every: Duration::from_millis(config.balance_interval_ms.max(10)),
        },
        partitions: partition_count,
        ownership,
        holder: registry.clone(),
        metrics: metric_names::LEASE_METRICS,
        shutdown: shutdown.clone(),
        lease_start: None,
    };
    let member = leases.member.id.clone();
    let lock = leases.join().await?;
    let leases = tokio::spawn(leases.run(lock));

    tokio::spawn(sweeper::run(
        registry.clone(),
        Duration::from_millis(config.sweep_interval_ms.max(10)),
        shutdown.clone(),
    ));

    let tls_mode = config.tls.mode();
    let (health_reporter, health) = presence_common::grpc::health(SERVICES).await;
    tokio::spawn(presence_common::grpc::track_database(
        registry.pool.clone(),
        health_reporter.clone(),
        SERVICES,
        shutdown.clone(),
    ));
    let router = server
        .add_service(health)
        .add_service(presence_common::grpc::reflection()?)
        // Every presence service checks the caller's token first; each RPC then checks its role.
        .add_service(PresenceRegistryServer::with_interceptor(
            grpc::PresenceApi { registry: registry.clone() },
            auth.clone(),
        ))
        .add_service(GatewayLinkServer::with_interceptor(
            grpc::GatewayLinkService { registry: registry.clone(), shutdown: shutdown.clone() },
            auth.clone(),
        ))
        .add_service(EventFeedServer::with_interceptor(
            grpc::EventFeedService { registry, shutdown: shutdown.clone() },
            auth,
        ));
    let grpc = tokio::spawn(presence_common::grpc::serve(
        router,
        grpc_listener,
        shutdown.clone(),
        health_reporter,
        SERVICES,
        DEFAULT_GRACE,
    ));
    let http = tokio::spawn(presence_common::http::serve(
        metrics_listener,
        presence_common::http::admin_routes(),
        shutdown,
    ));
    tracing::info!(%grpc_addr, %metrics_addr, grpc_tls = tls_mode, member, partitions = partition_count, "presence-registry serving");
    Ok(RunningRegistry { grpc_addr, metrics_addr, grpc, http, leases })
}
