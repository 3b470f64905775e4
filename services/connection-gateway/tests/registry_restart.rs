//! The registry can go away and come back: devices stay connected, and the re-attach snapshot
//! restores their state without new events.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use presence_client::ClientError;
use presence_proto::v1::{Platform, PresenceStatus};
use testkit::{WAIT, eventually, inprocess::*};

#[tokio::test]
async fn devices_survive_a_registry_restart() {
    let mut registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[]).await;
    let (mut alice, _) = gateway.login("alice", "phone", Platform::Ios).await;
    let (mut bob, _) = gateway.login("bob", "pc", Platform::Windows).await;
    let (leaver, _) = gateway.login("leaver", "phone", Platform::Android).await;
    let events_of = |events: Vec<presence_proto::v1::PresenceEvent>| {
        events.into_iter().filter(|e| e.user_id == "alice" || e.user_id == "bob").count()
    };
    let events_before = events_of(registry.events().await);

    registry.stop().await;
    // A device that leaves while the registry is down is still reported (retried, or reconciled
    // by the next attach snapshot).
    drop(leaver);
    // Link down: heartbeats still acked, new logins told to come back later.
    eventually("the gateway to see its link down", async || !gateway.is_attached()).await;
    alice.heartbeat().await.unwrap();
    let mut newcomer = gateway.client().await;
    match tokio::time::timeout(WAIT, newcomer.login(params("carol", "phone", Platform::Ios))).await.unwrap() {
        Err(ClientError::Login { code, .. }) => assert_eq!(code, "unavailable"),
        other => panic!("login while the registry is down: {other:?}"),
    }

    registry.start_again().await;
    gateway.wait_attached().await;
    alice.heartbeat().await.unwrap();
    bob.heartbeat().await.unwrap();
    let users = registry.query(&["alice", "bob"]).await;
    assert!(users.iter().all(|u| u.status == PresenceStatus::Online as i32), "{users:?}");
    assert_eq!(events_of(registry.events().await), events_before, "no new events for restored devices");
    registry.wait_online("leaver", &[]).await;

    // And the restored link works: a new login kicks Alice through it.
    let (_, ok) = gateway.login("alice", "tablet", Platform::Ipad).await;
    assert_eq!(ok.kicked_devices.len(), 1);
    let frames = frames_until_eof(&mut alice).await;
    assert!(matches!(
        frames.last().and_then(|f| f.kind.clone()),
        Some(presence_proto::v1::server_frame::Kind::Kicked(_))
    ));
}

#[tokio::test]
async fn graceful_shutdown_closes_connections() {
    let registry = TestRegistry::start().await;
    let mut gateway = TestGateway::start(&registry, "gw-1", &[]).await;
    let (mut alice, _) = gateway.login("alice", "phone", Platform::Ios).await;
    gateway.stop().await;
    assert!(frames_until_eof(&mut alice).await.is_empty());
    registry.wait_online("alice", &[]).await;
}
