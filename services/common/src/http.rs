//! The small HTTP side every gRPC service exposes: `/metrics` and `/healthz`.

use std::net::SocketAddr;

use axum::{Router, routing::get, serve::ListenerExt};
use tokio::net::TcpListener;

use crate::{Shutdown, telemetry};

/// `/metrics` (Prometheus text) and `/healthz` (`ok`), to merge into any axum router.
pub fn admin_routes() -> Router {
    // Installs the recorder if telemetry::init did not (services started in-process by tests).
    telemetry::metrics_handle();
    Router::new()
        .route("/metrics", get(|| async { telemetry::render_metrics() }))
        .route("/healthz", get(|| async { "ok" }))
}

/// Serves `router` on `listener` until `shutdown`, then lets in-flight requests finish.
pub async fn serve(listener: TcpListener, router: Router, shutdown: Shutdown) -> std::io::Result<()> {
    // Without TCP_NODELAY, Nagle and delayed ACKs hold the tail of larger answers back ~40 ms.
    let listener = listener.tap_io(|tcp| {
        if let Err(err) = tcp.set_nodelay(true) {
            tracing::debug!(%err, "TCP_NODELAY not set");
        }
    });
    axum::serve(listener, router.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await
}
