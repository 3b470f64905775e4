//! Periodic work: gateway leases and push_online devices expire, and the online gauges.

use std::time::Duration;

use crate::{Shutdown, metric_names as m, registry::SharedRegistry};

/// The online counts of the partitions held here, every app together (the label is the
/// platform only: apps are many, platforms are nine).
fn set_gauges(registry: &SharedRegistry) {
    let counts = registry.total_counts();
    // Precision loss is irrelevant for gauges of this size.
    metrics::gauge!(m::ONLINE_USERS).set(counts.online_users as f64);
    metrics::gauge!(m::PUSH_ONLINE_USERS).set(counts.push_online_users as f64);
    for (number, devices) in counts.online_devices.iter().enumerate().skip(1) {
        let Some(platform) =
            i32::try_from(number).ok().and_then(|n| presence_proto::v1::Platform::try_from(n).ok())
        else {
            continue;
        };
        let name = platform.name().unwrap_or("unknown");
        metrics::gauge!(m::ONLINE_DEVICES, "platform" => name).set(*devices as f64);
    }
}

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
        set_gauges(&registry);
        match registry.expire_push().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(devices = n, "push_online devices expired"),
            Err(err) => tracing::warn!(%err, "push expiry sweep failed; will retry"),
        }
    }
}
