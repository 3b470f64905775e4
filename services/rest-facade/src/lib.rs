//! rest-facade: the REST API app backends call (`docs/http-api.md`).
//!
//! It holds no state: API keys are checked against the live [`AppDirectory`], and every request
//! becomes calls to the registries that own the users concerned (Query, Kick, ReadEvents),
//! scoped to the caller's app. Channels connect lazily, so the facade starts, and answers 503,
//! while no registry is up. See `docs/architecture.md`.

mod auth;
mod config;
mod error;
mod extract;
pub mod http_metrics;
mod openapi;
mod presence_json;
mod registry_client;
mod routes;
mod state;

use std::{net::SocketAddr, time::Duration};

use presence_common::registry_router::RegistryRouter;
use presence_common::{AppDirectory, db};
use tokio::task::JoinHandle;

pub use config::FacadeConfig;
pub use presence_common::Shutdown;
pub use presence_proto::limits::{MAX_EVENTS_PAGE as MAX_EVENTS_LIMIT, MAX_IDS_PER_QUERY as MAX_QUERY_USERS};

use crate::{registry_client::RegistryClient, state::AppState};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Directory(#[from] presence_common::app_directory::DirectoryError),
    #[error(transparent)]
    Registry(#[from] presence_common::grpc_tls::GrpcTlsError),
    #[error(transparent)]
    InternalAuth(#[from] presence_common::internal_auth::AuthConfigError),
    #[error(transparent)]
    Bind(#[from] presence_common::net::BindError),
    #[error("HTTP server: {0}")]
    Serve(std::io::Error),
    #[error("server task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A started facade.
pub struct RunningFacade {
    pub http_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    http: JoinHandle<std::io::Result<()>>,
    metrics: JoinHandle<std::io::Result<()>>,
}

impl RunningFacade {
    /// Until the server stops (after `shutdown`, once in-flight requests are answered).
    pub async fn wait(self) -> Result<(), StartError> {
        self.http.await?.map_err(StartError::Serve)?;
        self.metrics.await?.map_err(StartError::Serve)
    }
}

/// Loads the apps, binds the listener and serves until `shutdown`.
pub async fn start(config: FacadeConfig, shutdown: Shutdown) -> Result<RunningFacade, StartError> {
    let timeout = Duration::from_millis(config.request_timeout_ms.max(1));
    let token = config.internal_auth.caller_token()?;
    http_metrics::describe();
    let pool = db::connect(&config.database_url, config.db_max_connections, &shutdown).await?;
    let apps = AppDirectory::start(pool.clone(), shutdown.clone()).await?;
    // Fail now on bad TLS settings rather than at the first call.
    config.registry_tls.endpoint(&config.registry_url)?;
    let router = RegistryRouter::start(
        pool.clone(),
        config.registry_tls.clone(),
        token,
        config.registry_url.clone(),
        shutdown.clone(),
    )
    .await;
    let registry = RegistryClient::new(router, timeout);

    let (listener, http_addr) = presence_common::net::bind(config.listen_addr).await?;
    let (metrics_listener, metrics_addr) = presence_common::net::bind(config.metrics_addr).await?;
    let router = routes::router(AppState { apps, registry, pool }, config.max_body_bytes);
    let http = tokio::spawn(presence_common::http::serve_with(
        listener,
        router,
        config.http_limits(),
        shutdown.clone(),
    ));
    let metrics = tokio::spawn(presence_common::http::serve(
        metrics_listener,
        presence_common::http::admin_routes(),
        shutdown,
    ));
    tracing::info!(%http_addr, %metrics_addr, registry = %config.registry_url, "rest-facade serving");
    Ok(RunningFacade { http_addr, metrics_addr, http, metrics })
}
