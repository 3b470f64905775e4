//! Serving gRPC the same way in every service: health and reflection included, health turned
//! NOT_SERVING before the drain, and a drain that cannot hang on an open stream.

use std::time::Duration;

use tokio::net::TcpListener;
use tonic::transport::server::{Router, TcpIncoming};
use tonic_health::{ServingStatus, server::HealthReporter};

use crate::Shutdown;

/// Health service plus its reporter; every named service starts SERVING.
pub async fn health(
    services: &[&str],
) -> (
    HealthReporter,
    tonic_health::pb::health_server::HealthServer<impl tonic_health::pb::health_server::Health>,
) {
    let (reporter, service) = tonic_health::server::health_reporter();
    for name in services.iter().copied().chain([""]) {
        reporter.set_service_status(name, ServingStatus::Serving).await;
    }
    (reporter, service)
}

/// Reflection over every presence service and grpc.health.v1.
pub fn reflection() -> Result<
    tonic_reflection::server::v1::ServerReflectionServer<impl tonic_reflection::server::v1::ServerReflection>,
    tonic_reflection::server::Error,
> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(presence_proto::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
        .build_v1()
}

/// Serves `router` until `shutdown`; then reports NOT_SERVING for `services` and drains for at
/// most `grace`.
pub async fn serve(
    router: Router,
    listener: TcpListener,
    shutdown: Shutdown,
    health: HealthReporter,
    services: &[&str],
    grace: Duration,
) -> Result<(), tonic::transport::Error> {
    let stop = shutdown.clone();
    // Nagle's algorithm with delayed ACKs holds the tail of a larger answer back ~40 ms.
    let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
    let server = router.serve_with_incoming_shutdown(incoming, async move {
        stop.cancelled().await;
    });
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = shutdown.cancelled() => {
            for name in services.iter().copied().chain([""]) {
                health.set_service_status(name, ServingStatus::NotServing).await;
            }
            match tokio::time::timeout(grace, &mut server).await {
                Ok(result) => result,
                Err(_) => {
                    tracing::warn!(?grace, "gRPC drain timed out; closing open streams");
                    Ok(())
                }
            }
        }
    }
}

/// Keeps gRPC health in step with the database: NOT_SERVING while Postgres does not answer, so
/// load balancers and callers route around this instance until it recovers on its own.
pub async fn track_database(
    pool: sqlx::PgPool,
    health: HealthReporter,
    services: &'static [&'static str],
    shutdown: Shutdown,
) {
    let mut serving = true;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let ok = tokio::time::timeout(Duration::from_secs(2), sqlx::query("SELECT 1").execute(&pool))
            .await
            .is_ok_and(|r| r.is_ok());
        if ok != serving {
            serving = ok;
            let status = if ok { ServingStatus::Serving } else { ServingStatus::NotServing };
            if ok {
                tracing::info!("database reachable again: SERVING");
            } else {
                tracing::warn!("database unreachable: NOT_SERVING");
            }
            for name in services.iter().copied().chain([""]) {
                health.set_service_status(name, status).await;
            }
        }
    }
}
