//! connection-gateway: holds device connections and reports them to the registry.
//!
//! Devices speak the client protocol (`docs/protocol.md`) over TCP or TLS, or over WebSocket
//! ([`websocket`]) from browsers and mini-programs; both share one connection core.
//! The gateway verifies their tokens, reports logins, logouts and disconnects to the registry,
//! and delivers the registry's kicks over one long-lived link ([`link`]). The registry is the
//! authority; the gateway only knows the sessions it holds ([`sessions`]).

pub mod auth;
mod config;
mod connection;
mod limits;
pub mod link;
mod listener;
pub mod login_request;
mod memory;
pub mod metric_names;
mod outbox;
mod registries;
pub mod sessions;
mod subscriptions;
mod tls;
mod transport;
pub mod websocket;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use presence_common::registry_router::RegistryRouter;
use presence_common::{AppDirectory, backoff::Backoff, db, shutdown::DEFAULT_GRACE};
use tokio::{
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    task::JoinHandle,
};
use tokio_rustls::TlsAcceptor;
use tokio_util::task::TaskTracker;

pub use config::GatewayConfig;
pub use presence_common::Shutdown;

use presence_common::net::BindError;

use crate::{
    connection::Context, limits::IpLimits, metric_names as m, registries::Registries, sessions::SessionTable,
    transport::StreamTransport, websocket::WebSocketFraming,
};

#[derive(Debug, thiserror::Error)]
pub enum GatewayError {
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
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("GATEWAY_TLS_CERT and GATEWAY_TLS_KEY go together")]
    TlsHalfConfigured,
    #[error("metrics server: {0}")]
    Metrics(std::io::Error),
    #[error("gateway task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A started gateway.
pub struct RunningGateway {
    pub listen_addr: SocketAddr,
    /// The WebSocket listener, unless turned off.
    pub ws_addr: Option<SocketAddr>,
    pub metrics_addr: SocketAddr,
    pub gateway_id: String,
    /// Live sessions, for tests and diagnostics.
    pub sessions: SessionTable,
    registries: Registries,
    accept: JoinHandle<()>,
    links: JoinHandle<()>,
    http: JoinHandle<std::io::Result<()>>,
}

impl RunningGateway {
    /// Whether a registry link is attached (logins of its partitions are accepted).
    pub fn is_attached(&self) -> bool {
        self.registries.any_attached()
    }

    /// Until every connection is closed and the link detached (after `shutdown`).
    pub async fn wait(self) -> Result<(), GatewayError> {
        self.accept.await?;
        self.links.await?;
        self.http.await?.map_err(GatewayError::Metrics)?;
        Ok(())
    }
}

/// Loads the apps, binds the listeners, attaches to the registry, and serves until `shutdown`.
pub async fn start(config: GatewayConfig, shutdown: Shutdown) -> Result<RunningGateway, GatewayError> {
    let nofile = listener::raise_nofile_limit();
    let max_connections = config.max_connections.unwrap_or_else(|| listener::default_max_connections(nofile));
    let tls = match (&config.tls_cert, &config.tls_key) {
        (Some(cert), Some(key)) => Some(tls::acceptor(cert, key)?),
        (None, None) => None,
        _ => return Err(GatewayError::TlsHalfConfigured),
    };
    let gateway_id = config.resolved_gateway_id();

    m::describe();
    // Precision loss is irrelevant for a gauge of this size.
    metrics::gauge!(m::CONNECTIONS_MAX).set(max_connections as f64);
    let pool = db::connect(&config.database_url, config.db_max_connections, &shutdown).await?;
    let apps = AppDirectory::start(pool.clone(), shutdown.clone()).await?;
    // Fail now on bad TLS settings rather than at the first call.
    config.registry_tls.endpoint(&config.registry_url)?;
    let router = RegistryRouter::start(
        pool,
        config.registry_tls.clone(),
        config.internal_auth.caller_token()?,
        config.registry_url.clone(),
        shutdown.clone(),
    )
    .await;

    let devices = listener::bind(config.listen_addr).map_err(BindError::at(config.listen_addr))?;
    let listen_addr = devices.local_addr().map_err(BindError::at(config.listen_addr))?;
    let web = match config.ws_listen_addr {
        Some(addr) => Some(listener::bind(addr).map_err(BindError::at(addr))?),
        None => None,
    };
    let ws_addr = match &web {
        Some(web) => Some(web.local_addr().map_err(BindError::at(listen_addr))?),
        None => None,
    };
    let (admin, metrics_addr) = presence_common::net::bind(config.metrics_addr).await?;

    let sessions = SessionTable::default();
    let (subscriptions, ended) = subscriptions::Subscriptions::new();
    let (registries, links) = Registries::start(
        router,
        gateway_id.clone(),
        sessions.clone(),
        subscriptions.clone(),
        shutdown.clone(),
    );
    subscriptions::spawn_unwatcher(ended, gateway_id.clone(), registries.clone(), shutdown.clone());
    let trim_every =
        (config.memory_trim_interval_s > 0).then(|| Duration::from_secs(config.memory_trim_interval_s));
    tokio::spawn(memory::trim_periodically(trim_every, shutdown.clone()));
    let limits = IpLimits::new(config.limit_settings());
    if limits.is_enabled() {
        tokio::spawn(sweep_limits(limits.clone(), shutdown.clone()));
    }
    let ctx = Arc::new(Context {
        gateway_id: gateway_id.clone(),
        apps,
        registries: registries.clone(),
        sessions: sessions.clone(),
        login_timeout: Duration::from_secs(config.login_timeout_s.max(1)),
        heartbeat_interval_s: config.heartbeat_interval_s,
        heartbeat_timeout_s: config.heartbeat_timeout_s.max(1),
        outbound_queue: config.outbound_queue,
        limits,
        report_slots: Arc::new(tokio::sync::Semaphore::new(connection::REPORT_CONCURRENCY)),
        heartbeats: metrics::counter!(m::HEARTBEATS),
        ws_origins: config.ws_origins(),
        subscriptions,
        max_subscriptions: config.max_subscriptions_per_device,
        shutdown: shutdown.clone(),
    });
    let accept = tokio::spawn(serve_devices(devices, web, ctx, tls, max_connections));
    let http =
        tokio::spawn(presence_common::http::serve(admin, presence_common::http::admin_routes(), shutdown));
    let per_ip = config.limit_settings();
    tracing::info!(
        %listen_addr, ?ws_addr, %metrics_addr, %gateway_id, max_connections,
        max_connections_per_ip = per_ip.max_connections_per_ip,
        login_rate_per_ip = per_ip.login_rate_per_ip,
        "connection-gateway serving"
    );
    Ok(RunningGateway {
        listen_addr,
        ws_addr,
        metrics_addr,
        gateway_id,
        sessions,
        registries,
        accept,
        links,
        http,
    })
}

/// What a listener speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// Length-prefixed frames (TCP, TLS).
    Framed,
    /// An HTTP upgrade, then one frame per binary message.
    WebSocket,
}

/// What both listeners share: the connection cap, the TLS settings and the connections' tasks.
struct Acceptor {
    ctx: Arc<Context>,
    tls: Option<TlsAcceptor>,
    limit: Arc<Semaphore>,
    tracker: TaskTracker,
}

/// Serves both listeners until shutdown, then closes every connection and waits (bounded) for
/// them to end.
async fn serve_devices(
    devices: TcpListener,
    web: Option<TcpListener>,
    ctx: Arc<Context>,
    tls: Option<TlsAcceptor>,
    max_connections: usize,
) {
    let acceptor = Arc::new(Acceptor {
        ctx: ctx.clone(),
        tls,
        limit: Arc::new(Semaphore::new(max_connections)),
        tracker: TaskTracker::new(),
    });
    let web_loop = async {
        if let Some(web) = web {
            accept_loop(web, Protocol::WebSocket, &acceptor).await;
        }
    };
    tokio::join!(accept_loop(devices, Protocol::Framed, &acceptor), web_loop);
    ctx.sessions.close_all();
    acceptor.tracker.close();
    if tokio::time::timeout(DEFAULT_GRACE, acceptor.tracker.wait()).await.is_err() {
        tracing::warn!("connections still open after the grace period");
    }
}

/// Accepts until shutdown; each connection gets a task of its own.
async fn accept_loop(listener: TcpListener, protocol: Protocol, acceptor: &Acceptor) {
    let ctx = &acceptor.ctx;
    let mut backoff = Backoff::new(Duration::from_millis(10), Duration::from_secs(1));
    loop {
        let accepted = tokio::select! {
            () = ctx.shutdown.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        let (tcp, peer) = match accepted {
            Ok(pair) => pair,
            Err(err) => {
                // EMFILE and friends: back off instead of spinning; connections will close.
                metrics::counter!(m::ACCEPT_ERRORS).increment(1);
                let delay = backoff.next_delay();
                tracing::warn!(%err, ?delay, "accept failed");
                tokio::select! {
                    () = ctx.shutdown.cancelled() => break,
                    () = tokio::time::sleep(delay) => {}
                }
                continue;
            }
        };
        backoff.reset();
        let Ok(permit) = acceptor.limit.clone().try_acquire_owned() else {
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "max_connections").increment(1);
            drop(tcp);
            continue;
        };
        let Some(ip_slot) = ctx.limits.try_connect(peer.ip()) else {
            metrics::counter!(m::CONNECTIONS_REFUSED, "reason" => "per_ip").increment(1);
            refuse_too_many(&tcp, protocol);
            drop(tcp);
            continue;
        };
        let _ = tcp.set_nodelay(true);
        let slots = ConnectionSlots::take(permit, ip_slot);
        let ctx = ctx.clone();
        // A task type per kind: a plain connection's task is not sized for a TLS session.
        match (protocol, &acceptor.tls) {
            (Protocol::Framed, None) => {
                acceptor.tracker.spawn(connection::serve(StreamTransport::new(tcp), peer, ctx, slots))
            }
            (Protocol::Framed, Some(tls)) => {
                acceptor.tracker.spawn(serve_tls(tls.clone(), tcp, peer, ctx, slots))
            }
            (Protocol::WebSocket, None) => {
                acceptor.tracker.spawn(serve_websocket(tcp, peer, ctx, slots, acceptor.tracker.clone()))
            }
            (Protocol::WebSocket, Some(tls)) => acceptor.tracker.spawn(serve_secure_websocket(
                tls.clone(),
                tcp,
                peer,
                ctx,
                slots,
                acceptor.tracker.clone(),
            )),
        };
    }
}

/// What an open connection holds: a place under the process cap and under its IP's cap. Dropped
/// as soon as the socket is closed, before the disconnect is reported: after a mass disconnect
/// the reports queue up, and the sockets' places must not wait with them.
struct ConnectionSlots {
    _permit: OwnedSemaphorePermit,
    _ip_slot: limits::IpSlot,
}

impl ConnectionSlots {
    fn take(permit: OwnedSemaphorePermit, ip_slot: limits::IpSlot) -> Self {
        metrics::gauge!(m::CONNECTIONS_OPEN).increment(1.0);
        Self { _permit: permit, _ip_slot: ip_slot }
    }
}

impl Drop for ConnectionSlots {
    fn drop(&mut self) {
        metrics::gauge!(m::CONNECTIONS_OPEN).decrement(1.0);
    }
}

/// A TLS connection's task: the handshake, then the same connection core.
async fn serve_tls(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    slots: ConnectionSlots,
) {
    if let Some(stream) = tls_handshake(&acceptor, tcp, peer, &ctx).await {
        connection::serve(StreamTransport::new(stream), peer, ctx, slots).await;
    }
}

async fn tls_handshake(
    acceptor: &TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: &Context,
) -> Option<tokio_rustls::server::TlsStream<TcpStream>> {
    match tokio::time::timeout(ctx.login_timeout, acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => Some(stream),
        Ok(Err(err)) => {
            tracing::debug!(%err, %peer, "TLS handshake failed");
            None
        }
        Err(_) => {
            tracing::debug!(%peer, "TLS handshake timed out");
            None
        }
    }
}

/// A WebSocket connection's first task: the upgrade. The connection core then runs in a task of
/// its own, sized like a plain connection's: the upgrade's state would otherwise stay in the
/// task of every idle web device.
async fn serve_websocket<S>(
    mut io: S,
    peer: SocketAddr,
    ctx: Arc<Context>,
    slots: ConnectionSlots,
    tracker: TaskTracker,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let upgraded =
        tokio::time::timeout(ctx.login_timeout, websocket::upgrade(&mut io, &ctx.ws_origins)).await;
    let result = match &upgraded {
        Ok(Ok(_)) => "ok",
        Ok(Err(err)) => err.label(),
        Err(_) => "timeout",
    };
    metrics::counter!(m::WEBSOCKET_UPGRADES, "result" => result).increment(1);
    match upgraded {
        Ok(Ok(read)) => {
            let transport = StreamTransport::framed(io, WebSocketFraming::default(), read);
            tracker.spawn(connection::serve(transport, peer, ctx, slots));
        }
        Ok(Err(err)) => tracing::debug!(%err, %peer, "WebSocket upgrade refused"),
        Err(_) => tracing::debug!(%peer, "WebSocket upgrade timed out"),
    }
}

/// `wss://`: TLS, then the upgrade, then the same connection core.
async fn serve_secure_websocket(
    acceptor: TlsAcceptor,
    tcp: TcpStream,
    peer: SocketAddr,
    ctx: Arc<Context>,
    slots: ConnectionSlots,
    tracker: TaskTracker,
) {
    if let Some(stream) = tls_handshake(&acceptor, tcp, peer, &ctx).await {
        serve_websocket(stream, peer, ctx, slots, tracker).await;
    }
}

/// Best effort, never blocking the accept loop: a fresh socket's send buffer is empty, so the
/// answer fits; then the caller closes. Devices get an `Error` frame, browsers an HTTP 429. (Over
/// TLS neither is readable: the close alone tells the device.)
fn refuse_too_many(tcp: &tokio::net::TcpStream, protocol: Protocol) {
    if protocol == Protocol::WebSocket {
        let _ = tcp
            .try_write(b"HTTP/1.1 429 Too Many Requests\r\nConnection: close\r\nContent-Length: 0\r\n\r\n");
        return;
    }
    let error = presence_proto::v1::Error {
        code: presence_proto::codes::ErrorFrameCode::TooManyConnections.as_str().to_owned(),
        message: "too many connections from this address".to_owned(),
    };
    let frame =
        presence_proto::v1::ServerFrame { kind: Some(presence_proto::v1::server_frame::Kind::Error(error)) };
    let mut buf = bytes::BytesMut::new();
    if presence_proto::framing::encode_frame(&frame, &mut buf).is_ok() {
        let _ = tcp.try_write(&buf);
    }
}

/// Forgets IPs with no connection and a full login bucket; one timer for the whole gateway.
async fn sweep_limits(limits: IpLimits, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(limits::SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        limits.sweep();
        // Precision loss is irrelevant for a gauge of this size.
        metrics::gauge!(m::LIMIT_TRACKED_IPS).set(limits.tracked_ips() as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn future_size<A, B, C, D, Fut: std::future::Future>(_: fn(A, B, C, D) -> Fut) -> usize {
        std::mem::size_of::<Fut>()
    }

    /// What every idle plain connection's task holds, as spawned (TLS connections are another
    /// task type). tokio's task cell is a 32-byte header, this future and ~70 bytes more, aligned
    /// to 128: under ~925 bytes it is 1024. It was 1536 before `Handled` and the sync `serve`,
    /// then 1152 until the transport's buffers moved into one box (`Spill`).
    #[test]
    fn an_idle_connection_task_is_small() {
        let size = future_size(connection::serve::<StreamTransport<TcpStream>, ConnectionSlots>);
        eprintln!("connection future: {size} bytes");
        // Debug builds lay the future out a little larger; release is what runs.
        let limit = if cfg!(debug_assertions) { 900 } else { 880 };
        assert!(size <= limit, "connection future is {size} bytes");
    }

    /// After the upgrade, a web device's task is the same core with the WebSocket framing: it
    /// must not cost much more than a plain one (at most 2x per device is the bound we promise).
    #[test]
    fn an_idle_websocket_task_is_about_as_small() {
        let plain = future_size(connection::serve::<StreamTransport<TcpStream>, ConnectionSlots>);
        let web =
            future_size(connection::serve::<StreamTransport<TcpStream, WebSocketFraming>, ConnectionSlots>);
        eprintln!("websocket connection future: {web} bytes (plain {plain})");
        assert!(web <= plain + 64, "websocket connection future is {web} bytes, plain {plain}");
    }
}
