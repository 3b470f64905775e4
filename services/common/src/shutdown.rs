//! Graceful shutdown: one token per process, cancelled by SIGTERM or SIGINT.
//!
//! Long-lived loops select on the token; servers stop accepting, drain for a grace period, then
//! give up on what is still open (a gRPC stream can otherwise hold a server forever).

use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// Cancelled once the process should stop. Cheap to clone; children stop with their parent.
pub type Shutdown = CancellationToken;

/// Default time servers get to finish in-flight work after shutdown starts.
pub const DEFAULT_GRACE: Duration = Duration::from_secs(10);

/// Cancels `shutdown` on the first SIGTERM or SIGINT.
pub fn cancel_on_signal(shutdown: Shutdown) {
    tokio::spawn(async move {
        wait_for_signal().await;
        tracing::info!("shutdown signal received, draining");
        shutdown.cancel();
    });
}

#[cfg(unix)]
async fn wait_for_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    match (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) {
        (Ok(mut term), Ok(mut int)) => {
            tokio::select! {
                _ = term.recv() => {}
                _ = int.recv() => {}
            }
        }
        _ => {
            tracing::error!("cannot install signal handlers; falling back to ctrl-c");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

#[cfg(not(unix))]
async fn wait_for_signal() {
    let _ = tokio::signal::ctrl_c().await;
}
