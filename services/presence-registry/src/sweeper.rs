//! Periodic expiry: gateway leases and push_online devices.

use std::time::Duration;

use crate::{Shutdown, registry::SharedRegistry};

pub async fn run(registry: SharedRegistry, every: Duration, shutdown: Shutdown) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // Other registries commit to the same apps: keep `as_of_seq` of queries current.
        if let Err(err) = registry.log.refresh_seqs().await {
            tracing::warn!(%err, "reading the apps' feed positions failed; will retry");
        }
        if let Err(err) = registry.expire_gateways().await {
            tracing::warn!(%err, "gateway lease sweep failed; will retry");
        }
        match registry.expire_push().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(devices = n, "push_online devices expired"),
            Err(err) => tracing::warn!(%err, "push expiry sweep failed; will retry"),
        }
    }
}
