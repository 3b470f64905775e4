//! What operators rely on: health, reflection, metrics, and a clean stop.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use presence_proto::v1::Platform;
use testkit::inprocess::*;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};
use tonic_reflection::pb::v1::{
    ServerReflectionRequest, server_reflection_client::ServerReflectionClient,
    server_reflection_request::MessageRequest, server_reflection_response::MessageResponse,
};

async fn channel(registry: &TestRegistry) -> tonic::transport::Channel {
    tonic::transport::Channel::from_shared(registry.url()).unwrap().connect().await.unwrap()
}

#[tokio::test]
async fn health_reflection_and_metrics_are_served() {
    let registry = TestRegistry::start().await;
    let mut health = HealthClient::new(channel(&registry).await);
    for service in ["", "presence.v1.PresenceRegistry", "presence.v1.GatewayLink", "presence.v1.EventFeed"] {
        let reply = health.check(HealthCheckRequest { service: service.into() }).await.unwrap().into_inner();
        assert_eq!(reply.status(), ServingStatus::Serving, "{service:?}");
    }

    let mut reflection = ServerReflectionClient::new(channel(&registry).await);
    let request = ServerReflectionRequest {
        host: String::new(),
        message_request: Some(MessageRequest::ListServices(String::new())),
    };
    let mut replies =
        reflection.server_reflection_info(tokio_stream::iter([request])).await.unwrap().into_inner();
    let Some(MessageResponse::ListServicesResponse(list)) =
        replies.message().await.unwrap().unwrap().message_response
    else {
        panic!("expected a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    for expected in ["presence.v1.PresenceRegistry", "presence.v1.GatewayLink", "presence.v1.EventFeed"] {
        assert!(names.iter().any(|n| n == expected), "{expected} missing from {names:?}");
    }

    let mut gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;
    gw.login(&session("mia", "d", Platform::Web)).await;
    let metrics_addr = registry.metrics_addr();
    presence_common::tls::install_crypto_provider();
    let body = reqwest::get(format!("http://{metrics_addr}/metrics")).await.unwrap().text().await.unwrap();
    // One login: one event, one commit.
    assert_eq!(metric(&body, r#"registry_events_total{action="login"}"#), 1.0, "{body}");
    assert_eq!(metric(&body, "registry_commit_seconds_count"), 1.0, "{body}");
}

#[tokio::test]
async fn shutdown_reports_not_serving_then_stops() {
    let mut registry = TestRegistry::start().await;
    let mut health = HealthClient::new(channel(&registry).await);
    // An open gateway stream must not hold the server forever.
    let _gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;
    registry.stop().await;
    assert!(health.check(HealthCheckRequest { service: String::new() }).await.is_err(), "server gone");
}
