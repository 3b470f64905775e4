//! HTTP serving for every service: the REST facade and each service's `/metrics` and `/healthz`.
//!
//! Served with hyper directly rather than `axum::serve`, which sets no timer: without one a client
//! that sends its headers one byte a second, or never sends the next request on a keep-alive
//! connection, holds a connection (and its buffers) forever. Here every connection is bounded in
//! time and size, and the number of connections is capped.

use std::{sync::Arc, time::Duration};

use axum::{Router, body::Body, extract::Request, routing::get};
use hyper::server::conn::http1;
use hyper_util::{
    rt::{TokioIo, TokioTimer},
    server::graceful::GracefulShutdown,
    service::TowerToHyperService,
};
use tokio::{net::TcpListener, sync::Semaphore};
use tower::ServiceExt;
use tower_http::timeout::RequestBodyTimeoutLayer;

use crate::{Shutdown, telemetry};

/// `/metrics` (Prometheus text) and `/healthz` (`ok`): what an operator's listener serves.
pub fn admin_routes() -> Router {
    // Installs the recorder if telemetry::init did not (services started in-process by tests).
    telemetry::metrics_handle();
    health_route().route("/metrics", get(|| async { telemetry::render_metrics() }))
}

/// `/healthz` (`ok`) alone, for a public listener (metrics stay on the operator's).
pub fn health_route() -> Router {
    Router::new().route("/healthz", get(|| async { "ok" }))
}

/// Bounds on every HTTP connection.
#[derive(Debug, Clone)]
pub struct HttpLimits {
    /// A request's headers must arrive whole within this; it also closes a keep-alive connection
    /// that sends no next request for this long.
    pub header_read_timeout: Duration,
    /// A request's body must arrive whole within this.
    pub body_read_timeout: Duration,
    /// Largest request head (request line and headers); larger gets 431 and a close.
    pub max_header_bytes: usize,
    /// Connections served at once; further ones wait in the listen backlog.
    pub max_connections: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(30),
            max_header_bytes: 16 * 1024,
            max_connections: 4096,
        }
    }
}

/// Time in-flight requests get to finish after `shutdown`.
const DRAIN_GRACE: Duration = Duration::from_secs(10);

/// Serves `router` on `listener` with the default [`HttpLimits`] until `shutdown`.
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown) -> std::io::Result<()> {
    serve_with(listener, router, HttpLimits::default(), shutdown).await
}

/// Serves `router` on `listener` until `shutdown`, then lets in-flight requests finish.
pub async fn serve_with(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    shutdown: Shutdown,
) -> std::io::Result<()> {
    let router = router.layer(RequestBodyTimeoutLayer::new(limits.body_read_timeout));
    let mut builder = http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        .max_header_size(limits.max_header_bytes);
    let builder = Arc::new(builder);
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let graceful = GracefulShutdown::new();

    loop {
        // Waiting for a free slot must not hold up shutdown either.
        let slot = tokio::select! {
            slot = slots.clone().acquire_owned() => match slot {
                Ok(slot) => slot,
                Err(_) => break,
            },
            () = shutdown.cancelled() => break,
        };
        let (tcp, _peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(err) => {
                    // Out of file descriptors or a connection reset before accept: keep serving.
                    tracing::warn!(%err, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            () = shutdown.cancelled() => break,
        };
        // Without TCP_NODELAY, Nagle and delayed ACKs hold the tail of larger answers back ~40 ms.
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY not set");
        }
        let service =
            router.clone().map_request(|request: Request<hyper::body::Incoming>| request.map(Body::new));
        let connection = builder.serve_connection(TokioIo::new(tcp), TowerToHyperService::new(service));
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            if let Err(err) = connection.await {
                tracing::debug!(err = %err, "HTTP connection ended with an error");
            }
            drop(slot);
        });
    }
    drop(listener);
    if tokio::time::timeout(DRAIN_GRACE, graceful.shutdown()).await.is_err() {
        tracing::warn!("HTTP connections still open after the drain grace");
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::net::SocketAddr;

    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    use super::*;

    async fn start(limits: HttpLimits) -> (SocketAddr, Shutdown) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let shutdown = Shutdown::new();
        let router = Router::new().route("/", get(|| async { "hi" }));
        tokio::spawn(serve_with(listener, router, limits, shutdown.clone()));
        (addr, shutdown)
    }

    /// Reads until the peer closes; `None` if it is still open after `within`.
    async fn closed_within(tcp: &mut tokio::net::TcpStream, within: Duration) -> Option<Vec<u8>> {
        let mut got = Vec::new();
        tokio::time::timeout(within, tcp.read_to_end(&mut got)).await.ok().map(|_| got)
    }

    #[tokio::test]
    async fn a_slow_header_is_cut_off() {
        let limits = HttpLimits { header_read_timeout: Duration::from_millis(300), ..HttpLimits::default() };
        let (addr, shutdown) = start(limits).await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n").await.expect("write");
        assert!(closed_within(&mut tcp, Duration::from_secs(5)).await.is_some(), "still open");
        // Meanwhile and after, a normal request is served.
        let mut ok = tokio::net::TcpStream::connect(addr).await.expect("connect");
        ok.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
        let answer = closed_within(&mut ok, Duration::from_secs(5)).await.expect("answered and closed");
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_idle_keep_alive_connection_is_closed() {
        let limits = HttpLimits { header_read_timeout: Duration::from_millis(300), ..HttpLimits::default() };
        let (addr, shutdown) = start(limits).await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n").await.expect("write");
        let answer = closed_within(&mut tcp, Duration::from_secs(5)).await.expect("closed when idle");
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn an_oversized_head_is_refused() {
        let (addr, shutdown) = start(HttpLimits::default()).await;
        let mut tcp = tokio::net::TcpStream::connect(addr).await.expect("connect");
        let big = format!("GET / HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n", "a".repeat(64 * 1024));
        // The server may close before it has read everything: a failed write is fine.
        let _ = tcp.write_all(big.as_bytes()).await;
        let answer = closed_within(&mut tcp, Duration::from_secs(5)).await.unwrap_or_default();
        assert!(!answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        shutdown.cancel();
    }

    #[tokio::test]
    async fn connections_over_the_cap_wait() {
        let limits = HttpLimits {
            max_connections: 1,
            header_read_timeout: Duration::from_millis(500),
            ..HttpLimits::default()
        };
        let (addr, shutdown) = start(limits).await;
        let _holder = tokio::net::TcpStream::connect(addr).await.expect("connect");
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut second = tokio::net::TcpStream::connect(addr).await.expect("connect (backlog)");
        second.write_all(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await.expect("write");
        // Served only once the first connection times out and frees its slot.
        let started = tokio::time::Instant::now();
        let answer = closed_within(&mut second, Duration::from_secs(5)).await.expect("answered");
        assert!(answer.starts_with(b"HTTP/1.1 200"), "{}", String::from_utf8_lossy(&answer));
        assert!(started.elapsed() >= Duration::from_millis(300), "served before the slot was free");
        shutdown.cancel();
    }
}
