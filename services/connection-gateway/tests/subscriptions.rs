//! Custom status and subscriptions end to end: devices on real gateways, a real registry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use presence_client::Client;
use presence_proto::v1::{
    ClientFrame, EventAction, EventReason, Platform, SetStatus, Subscribe, Unsubscribe, UserStatus,
    client_frame, server_frame,
};
use testkit::{WAIT, eventually, inprocess::*};

async fn send(client: &mut Client, kind: client_frame::Kind) {
    client.send(ClientFrame { kind: Some(kind) }).await.unwrap();
}

/// The next frame, whatever it is.
async fn next(client: &mut Client) -> server_frame::Kind {
    let frame = tokio::time::timeout(WAIT, client.next_frame()).await.expect("a frame in time").unwrap();
    frame.expect("the connection is open").kind.expect("a message")
}

async fn subscribe(client: &mut Client, request_id: u32, users: &[&str]) -> server_frame::Kind {
    let user_ids = users.iter().map(|u| (*u).to_owned()).collect();
    send(client, client_frame::Kind::Subscribe(Subscribe { request_id, user_ids })).await;
    next(client).await
}

async fn subscribed(client: &mut Client, request_id: u32, users: &[&str]) -> Vec<UserStatus> {
    match subscribe(client, request_id, users).await {
        server_frame::Kind::SubscribeOk(ok) => {
            assert_eq!(ok.request_id, request_id);
            ok.statuses
        }
        other => panic!("{other:?}"),
    }
}

async fn set_status(client: &mut Client, request_id: u32, text: &str) -> server_frame::Kind {
    let request = SetStatus { request_id, custom_status: text.to_owned() };
    send(client, client_frame::Kind::SetStatus(request)).await;
    next(client).await
}

/// The next pushed status (nothing else may come first).
async fn changed(client: &mut Client) -> UserStatus {
    match next(client).await {
        server_frame::Kind::StatusChanged(changed) => changed.status.expect("a status"),
        other => panic!("expected StatusChanged, got {other:?}"),
    }
}

/// Proves nothing was pushed: a heartbeat's ack is the next frame.
async fn nothing_pushed(client: &mut Client) {
    let ack = tokio::time::timeout(WAIT, client.heartbeat()).await.expect("an ack in time");
    assert!(ack.is_ok(), "something came before the ack: {ack:?}");
}

fn request_error(kind: &server_frame::Kind) -> (u32, &str) {
    match kind {
        server_frame::Kind::RequestError(e) => (e.request_id, e.code.as_str()),
        other => panic!("expected RequestError, got {other:?}"),
    }
}

#[tokio::test]
async fn a_subscriber_sees_status_platforms_and_custom_status_change_in_order() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[]).await;
    let (mut alice, _) = gateway.login("alice", "browser", Platform::Web).await;

    let statuses = subscribed(&mut alice, 1, &["bob", "carol", "bob"]).await;
    let summary: Vec<(&str, &str, u64)> =
        statuses.iter().map(|s| (s.user_id.as_str(), s.status.as_str(), s.user_version)).collect();
    assert_eq!(summary, [("bob", "offline", 0), ("carol", "offline", 0), ("bob", "offline", 0)]);

    let (mut bob, _) = gateway.login("bob", "phone", Platform::Ios).await;
    let online = changed(&mut alice).await;
    assert_eq!(
        (online.status.as_str(), online.platforms.as_slice()),
        ("online", &[Platform::Ios as i32][..])
    );
    assert_eq!(online.user_version, 1);

    assert!(
        matches!(set_status(&mut bob, 7, "in a meeting").await, server_frame::Kind::SetStatusOk(ok) if ok.request_id == 7)
    );
    let custom = changed(&mut alice).await;
    assert_eq!((custom.custom_status.as_str(), custom.user_version), ("in a meeting", 2));
    // The same status again is no change: no event, no push.
    assert!(matches!(set_status(&mut bob, 8, "in a meeting").await, server_frame::Kind::SetStatusOk(_)));
    nothing_pushed(&mut alice).await;

    // A second device: the platforms change, the custom status stays (it is the user's).
    registry.set_login_policy("one_per_platform").await;
    let (_tablet, _) = gateway.login("bob", "tablet", Platform::Ipad).await;
    let both = changed(&mut alice).await;
    assert_eq!(both.platforms, [Platform::Ios as i32, Platform::Ipad as i32]);
    assert_eq!(both.custom_status, "in a meeting");
    let presence = registry.query(&["bob"]).await;
    assert_eq!((presence[0].custom_status.as_str(), presence[0].user_version), ("in a meeting", 3));

    // Offline clears it.
    registry
        .api()
        .await
        .kick(presence_proto::v1::KickRequest {
            app_id: "default".into(),
            user_id: "bob".into(),
            platforms: vec![],
        })
        .await
        .unwrap();
    let mut last = changed(&mut alice).await;
    while last.status != "offline" {
        last = changed(&mut alice).await;
    }
    assert_eq!(last.custom_status, "", "a custom status ends when its user goes offline");
    assert!(last.platforms.is_empty());
    drop(bob);

    let events = registry.events().await;
    let status_events: Vec<_> = events
        .iter()
        .filter(|e| e.action() == EventAction::Status)
        .map(|e| (e.reason(), e.custom_status.as_str()))
        .collect();
    assert_eq!(status_events, [(EventReason::CustomStatus, "in a meeting")]);
    assert!(events.last().is_some_and(|e| e.custom_status.is_empty()));
}

#[tokio::test]
async fn requests_are_checked_and_limited_and_the_connection_stays_open() {
    let registry = TestRegistry::start().await;
    let gateway =
        TestGateway::start(&registry, "gw-1", &[("GATEWAY_MAX_SUBSCRIPTIONS_PER_DEVICE", "3")]).await;
    let (mut dora, _) = gateway.login("dora", "browser", Platform::Web).await;

    assert_eq!(subscribed(&mut dora, 1, &["a", "b"]).await.len(), 2);
    assert_eq!(request_error(&subscribe(&mut dora, 2, &["c", "d"]).await), (2, "too_many_subscriptions"));
    // Refused whole: c was not added, so b (held) and c make three.
    assert_eq!(subscribed(&mut dora, 3, &["b", "c"]).await.len(), 2);
    assert_eq!(request_error(&subscribe(&mut dora, 4, &[]).await), (4, "bad_request"));
    let many: Vec<String> = (0..501).map(|i| format!("u{i}")).collect();
    let many: Vec<&str> = many.iter().map(String::as_str).collect();
    assert_eq!(request_error(&subscribe(&mut dora, 5, &many).await), (5, "bad_request"));
    assert_eq!(request_error(&subscribe(&mut dora, 6, &["bad\nid"]).await), (6, "bad_request"));
    assert_eq!(request_error(&set_status(&mut dora, 7, &"x".repeat(257)).await), (7, "bad_request"));

    send(
        &mut dora,
        client_frame::Kind::Unsubscribe(Unsubscribe { request_id: 8, user_ids: vec!["a".into()] }),
    )
    .await;
    assert!(matches!(next(&mut dora).await, server_frame::Kind::UnsubscribeOk(ok) if ok.request_id == 8));
    assert_eq!(subscribed(&mut dora, 9, &["d"]).await.len(), 1);
    nothing_pushed(&mut dora).await;

    // Before login, any of these is a protocol error, like every other frame.
    let mut early = gateway.client().await;
    send(&mut early, client_frame::Kind::Subscribe(Subscribe { request_id: 1, user_ids: vec!["a".into()] }))
        .await;
    match next(&mut early).await {
        server_frame::Kind::Error(e) => assert_eq!(e.code, "login_required"),
        other => panic!("{other:?}"),
    }
    assert!(frames_until_eof(&mut early).await.is_empty());
}

#[tokio::test]
async fn unsubscribed_and_gone_subscribers_get_nothing_and_the_interest_ends() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[]).await;
    let (mut erin, _) = gateway.login("erin", "browser", Platform::Web).await;
    let (mut fred, _) = gateway.login("fred", "browser", Platform::Web).await;
    subscribed(&mut erin, 1, &["gus"]).await;
    subscribed(&mut fred, 1, &["gus"]).await;

    // Erin unsubscribes, Fred disconnects: Gus's login reaches nobody.
    send(&mut erin, client_frame::Kind::Unsubscribe(Unsubscribe { request_id: 2, user_ids: vec![] })).await;
    assert!(matches!(next(&mut erin).await, server_frame::Kind::UnsubscribeOk(_)));
    drop(fred);
    registry.wait_online("fred", &[]).await;
    let pushes = |metrics: &str| metric(metrics, r#"registry_status_pushes_total{delivered="yes"}"#);
    let (_gus, _) = gateway.login("gus", "phone", Platform::Android).await;
    nothing_pushed(&mut erin).await;
    // Once the gateway's Unwatch has arrived, a change of Gus is pushed to no gateway at all (a
    // push is counted before the login is answered).
    let mut devices = Vec::new();
    eventually("no push for a user nobody watches", async || {
        let before = pushes(&registry.metrics().await);
        devices.push(gateway.login("gus", &format!("d{}", devices.len()), Platform::Web).await);
        pushes(&registry.metrics().await) == before
    })
    .await;
    nothing_pushed(&mut erin).await;
}

#[tokio::test]
async fn subscribers_converge_after_a_registry_restart() {
    let mut registry = TestRegistry::start().await;
    let (a, b) =
        (TestGateway::start(&registry, "gw-a", &[]).await, TestGateway::start(&registry, "gw-b", &[]).await);
    let (mut hana, _) = a.login("hana", "browser", Platform::Web).await;
    let (ivan, _) = b.login("ivan", "phone", Platform::Ios).await;
    let before = subscribed(&mut hana, 1, &["ivan"]).await;
    assert_eq!(before[0].status, "online");

    // Ivan leaves while the registry is down: no push can be sent then.
    registry.stop().await;
    drop(ivan);
    registry.start_again().await;

    let mut seen = changed(&mut hana).await;
    while seen.status != "offline" {
        seen = changed(&mut hana).await;
    }
    assert!(seen.user_version > before[0].user_version, "{seen:?}");
    // And the interest is back: Ivan's next login is pushed.
    let (_ivan, _) = b.login("ivan", "laptop", Platform::Mac).await;
    let mut again = changed(&mut hana).await;
    while again.status != "online" {
        again = changed(&mut hana).await;
    }
    assert_eq!(again.platforms, [Platform::Mac as i32]);
}
