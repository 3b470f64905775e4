//! Sessions end to end: a real registry, real gateways, real TCP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::time::Duration;

use presence_client::ClientError;
use presence_proto::v1::{EventReason, Platform, PresenceStatus, server_frame};
use testkit::{WAIT, eventually, eventually_ok, inprocess::*};

#[tokio::test]
async fn login_heartbeat_logout() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[("GATEWAY_HEARTBEAT_INTERVAL_S", "30")]).await;

    let (mut client, ok) = gateway.login("alice", "phone", Platform::Ios).await;
    assert!(!ok.session_id.is_empty());
    assert_eq!((ok.heartbeat_interval_s, ok.heartbeat_timeout_s), (30, 400));
    assert!(ok.kicked_devices.is_empty());

    let users = registry.query(&["alice"]).await;
    assert_eq!(users[0].status, PresenceStatus::Online as i32);
    assert_eq!(users[0].devices[0].client_version, "1.0.0");

    let ack = tokio::time::timeout(WAIT, client.heartbeat()).await.unwrap().unwrap();
    assert!(ack.server_time_ms > 0);

    tokio::time::timeout(WAIT, client.logout()).await.unwrap().unwrap();
    assert!(frames_until_eof(&mut client).await.is_empty());
    registry.wait_online("alice", &[]).await;
    assert_eq!(registry.last_reason("alice").await, Some(EventReason::Unregister));

    let metrics = gateway.metrics().await;
    assert_eq!(metric(&metrics, r#"gateway_logins_total{result="ok"}"#), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "gateway_heartbeats_total"), 1.0, "{metrics}");
}

#[tokio::test]
async fn a_silent_device_times_out() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[("GATEWAY_HEARTBEAT_TIMEOUT_S", "2")]).await;

    let (mut quiet, _) = gateway.login("bob", "phone", Platform::Android).await;
    let (mut chatty, _) = gateway.login("carol", "phone", Platform::Android).await;
    let started = tokio::time::Instant::now();
    // Carol keeps talking past Bob's deadline; any frame counts as activity.
    for _ in 0..6 {
        // Time passing is the point: Bob's deadline comes while Carol keeps talking.
        tokio::time::sleep(Duration::from_millis(600)).await;
        chatty.heartbeat().await.unwrap();
    }
    assert!(frames_until_eof(&mut quiet).await.is_empty());
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_secs(5), "timed out late: {elapsed:?}");
    registry.wait_online("bob", &[]).await;
    assert_eq!(registry.last_reason("bob").await, Some(EventReason::Timeout));
    assert_eq!(registry.online_devices("carol").await, vec!["phone".to_owned()]);
}

#[tokio::test]
async fn a_closed_socket_is_a_link_close() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[]).await;
    let (client, _) = gateway.login("dave", "laptop", Platform::Linux).await;
    registry.wait_online("dave", &["laptop"]).await;
    drop(client);
    registry.wait_online("dave", &[]).await;
    assert_eq!(registry.last_reason("dave").await, Some(EventReason::LinkClose));
}

/// Logs `user` in on `first` (gateway A), then `second` (gateway B), and waits until `online` are
/// the user's devices online (while both clients are still open); returns whether `first` was
/// kicked (Kicked then EOF).
async fn second_login(
    registry: &TestRegistry,
    (a, b): (&TestGateway, &TestGateway),
    user: &str,
    first: (&str, Platform),
    second: (&str, Platform),
    online: &[&str],
) -> bool {
    let (mut old, _) = a.login(user, first.0, first.1).await;
    let (_new, ok) = b.login(user, second.0, second.1).await;
    let kicked_listed = ok.kicked_devices.iter().any(|d| d.device_id == first.0);
    if !kicked_listed {
        // Still connected: a heartbeat is answered.
        tokio::time::timeout(WAIT, old.heartbeat()).await.unwrap().unwrap();
        registry.wait_online(user, online).await;
        return false;
    }
    let frames = frames_until_eof(&mut old).await;
    let Some(server_frame::Kind::Kicked(kicked)) = frames.last().and_then(|f| f.kind.clone()) else {
        panic!("{user}: expected Kicked then EOF, got {frames:?}");
    };
    assert_eq!(kicked.reason, "replaced_by_login");
    assert_eq!(kicked.by_device_id, second.0);
    assert_eq!(kicked.by_platform, second.1 as i32);
    registry.wait_online(user, online).await;
    true
}

#[tokio::test]
async fn login_policies_force_devices_offline_across_gateways() {
    let registry = TestRegistry::start().await;
    let a = TestGateway::start(&registry, "gw-a", &[]).await;
    let b = TestGateway::start(&registry, "gw-b", &[]).await;

    // single_device (the default): any second device replaces the first.
    assert!(
        second_login(&registry, (&a, &b), "u1", ("phone", Platform::Ios), ("pc", Platform::Windows), &["pc"])
            .await
    );

    // one_per_platform: another platform coexists, the same platform replaces.
    registry.set_login_policy("one_per_platform").await;
    assert!(
        !second_login(
            &registry,
            (&a, &b),
            "u2",
            ("phone", Platform::Ios),
            ("pc", Platform::Windows),
            &["pc", "phone"]
        )
        .await
    );
    assert!(
        second_login(
            &registry,
            (&a, &b),
            "u3",
            ("phone-1", Platform::Ios),
            ("phone-2", Platform::Ios),
            &["phone-2"]
        )
        .await
    );

    // groups: mobile (ios, android) holds one device, desktop (windows, mac) two.
    registry
        .sql(
            "INSERT INTO login_policy_groups (app_id, group_name, platforms, max_devices) VALUES \
             ('default', 'mobile', ARRAY['ios', 'android'], 1), ('default', 'desktop', ARRAY['windows', 'mac'], 2)",
        )
        .await;
    registry.set_login_policy("groups").await;
    assert!(
        second_login(
            &registry,
            (&a, &b),
            "u4",
            ("ios-1", Platform::Ios),
            ("android-1", Platform::Android),
            &["android-1"]
        )
        .await
    );
    assert!(
        !second_login(
            &registry,
            (&a, &b),
            "u5",
            ("win-1", Platform::Windows),
            ("mac-1", Platform::Mac),
            &["mac-1", "win-1"]
        )
        .await
    );

    // Each gateway counts its own logins: u1..u5 first on A, then on B.
    for gateway in [&a, &b] {
        let metrics = gateway.metrics().await;
        assert_eq!(metric(&metrics, r#"gateway_logins_total{result="ok"}"#), 5.0, "{metrics}");
    }
}

#[tokio::test]
async fn concurrent_logins_of_one_user_leave_exactly_one_device() {
    let registry = TestRegistry::start().await;
    let a = TestGateway::start(&registry, "gw-a", &[]).await;
    let b = TestGateway::start(&registry, "gw-b", &[]).await;
    let mut tasks = Vec::new();
    for i in 0..50 {
        let addr = if i % 2 == 0 { a.addr } else { b.addr };
        tasks.push(tokio::spawn(async move {
            let mut client = presence_client::Client::connect(addr).await.unwrap();
            let result = client.login(params("many", &format!("d{i}"), Platform::Ios)).await;
            match result {
                // Survivors stay connected; the kicked ones see Kicked then EOF.
                Ok(_) => (client, true),
                Err(ClientError::Kicked(_)) => (client, false),
                Err(err) => panic!("login {i}: {err}"),
            }
        }));
    }
    let mut clients = Vec::new();
    for task in tasks {
        clients.push(tokio::time::timeout(WAIT, task).await.unwrap().unwrap());
    }
    // Exactly one connection survives: the others are kicked (possibly while pending), each once
    // its gateway has the registry's kick, which may come a moment after its LoginOk.
    let mut open: Vec<_> = clients.into_iter().map(|(client, _)| client).collect();
    eventually("all devices but one kicked", async || {
        let mut still_open = Vec::new();
        for mut client in open.drain(..) {
            let answer = tokio::time::timeout(Duration::from_millis(500), client.heartbeat()).await;
            if let Ok(Ok(_)) = answer {
                still_open.push(client);
            }
        }
        open = still_open;
        open.len() <= 1
    })
    .await;
    assert_eq!(open.len(), 1, "exactly one device survives");
    let online = registry.online_devices("many").await;
    assert_eq!(online.len(), 1, "{online:?}");
}

#[tokio::test]
async fn an_admin_kick_reaches_the_device() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[]).await;
    let (mut client, _) = gateway.login("erin", "phone", Platform::Ios).await;
    registry
        .api()
        .await
        .kick(presence_proto::v1::KickRequest {
            app_id: "default".into(),
            user_id: "erin".into(),
            platforms: vec![],
        })
        .await
        .unwrap();
    let frames = frames_until_eof(&mut client).await;
    let Some(server_frame::Kind::Kicked(kicked)) = frames.last().and_then(|f| f.kind.clone()) else {
        panic!("expected Kicked then EOF, got {frames:?}");
    };
    assert_eq!(kicked.reason, "admin");
    registry.wait_online("erin", &[]).await;
    let metrics = gateway.metrics().await;
    assert_eq!(metric(&metrics, "gateway_kicks_delivered_total"), 1.0, "{metrics}");
}

#[tokio::test]
async fn connections_beyond_the_limit_are_refused() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[("GATEWAY_MAX_CONNECTIONS", "2")]).await;
    let (mut first, _) = gateway.login("f1", "phone", Platform::Ios).await;
    let (_second, _) = gateway.login("f2", "phone", Platform::Ios).await;
    let mut third = gateway.client().await;
    assert!(frames_until_eof(&mut third).await.is_empty(), "the third connection is closed at once");
    first.heartbeat().await.unwrap();
    drop(first);
    // A slot frees up once a connection ends.
    eventually_ok("a freed slot to be reused", async || {
        gateway.client().await.login(params("f3", "phone", Platform::Ios)).await
    })
    .await;
}
