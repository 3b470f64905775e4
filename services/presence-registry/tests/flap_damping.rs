//! Flap damping (`apps.disconnect_grace_ms`) against real Postgres over real gRPC: every rule of
//! docs/policy.md's "Flap damping", and a restart.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use presence_proto::v1::{EventAction, EventReason, KickRequest, Platform, PresenceEvent};
use testkit::{eventually, inprocess::*};

const GRACE_MS: u64 = 1_500;

fn now_ms() -> u64 {
    u64::try_from(SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_millis()).unwrap()
}

/// A registry whose app `default` holds lost links for [`GRACE_MS`] under `policy`.
async fn damped_registry(policy: &str) -> TestRegistry {
    let mut registry = TestRegistry::start().await;
    registry.set_login_policy(policy).await;
    registry.sql(&format!("UPDATE apps SET disconnect_grace_ms = {GRACE_MS} WHERE app_id = 'default'")).await;
    // The app directory is read whole at start: after this, the grace is in force.
    registry.restart().await;
    registry
}

/// The user's events as (action, reason, event_time_ms).
async fn events_of(registry: &TestRegistry, user: &str) -> Vec<(EventAction, EventReason, u64)> {
    registry
        .events()
        .await
        .iter()
        .filter(|e| e.user_id == user)
        .map(|e: &PresenceEvent| (e.action(), e.reason(), e.event_time_ms))
        .collect()
}

#[tokio::test]
async fn a_relogin_within_the_grace_makes_no_event_and_an_expired_grace_one_dated_disconnect() {
    let registry = damped_registry("one_per_platform").await;
    let mut gw_a = StubGateway::attach(&registry.url(), "gw-a", vec![]).await;
    let mut gw_b = StubGateway::attach(&registry.url(), "gw-b", vec![]).await;

    // Ann's phone flaps: lost on gw-a, back on gw-b within the grace. No event at all.
    let phone = session("ann", "phone", Platform::Ios);
    gw_a.login(&phone).await;
    assert!(gw_a.disconnect(&phone, EventReason::LinkClose).await);
    assert_eq!(status(&registry.query(&["ann"]).await[0]), "online", "held: still online");
    let mut back = session("ann", "phone", Platform::Ios);
    back.session_id = "ann-phone-2".into();
    let reply = gw_b.login(&back).await;
    assert_eq!((reply.seq, reply.user_version), (0, 1), "the login made no event");
    assert!(!gw_a.disconnect(&phone, EventReason::LinkClose).await, "the old session is gone");

    // Ben's laptop goes away for good: one disconnect once the grace ends, dated at the loss.
    let laptop = session("ben", "laptop", Platform::Mac);
    gw_a.login(&laptop).await;
    let before = now_ms();
    assert!(gw_a.disconnect(&laptop, EventReason::Timeout).await);
    let after = now_ms();
    assert_eq!(events_of(&registry, "ben").await.len(), 1, "held: only the login so far");
    eventually("ben's disconnect at the end of the grace", async || {
        events_of(&registry, "ben").await.len() == 2
    })
    .await;
    assert!(now_ms() >= before + GRACE_MS, "not before the grace ended");
    let (action, reason, at) = events_of(&registry, "ben").await[1];
    assert_eq!((action, reason), (EventAction::Disconnect, EventReason::Timeout));
    assert!((before..=after).contains(&at), "dated when the link was lost: {at} not in {before}..={after}");
    assert_eq!(status(&registry.query(&["ben"]).await[0]), "offline");

    // By then Ann's first grace has ended too, and found her back: still only her login.
    let ann = events_of(&registry, "ann").await;
    assert_eq!(ann.iter().map(|e| e.0).collect::<Vec<_>>(), [EventAction::Login]);
    assert!(!gw_b.disconnect(&phone, EventReason::LinkClose).await);
    assert!(gw_b.logout(&back).await);
    let ann = events_of(&registry, "ann").await;
    assert_eq!(ann.iter().map(|e| e.0).collect::<Vec<_>>(), [EventAction::Login, EventAction::Logout]);
}

#[tokio::test]
async fn a_logout_or_an_admin_kick_reports_the_held_disconnect_first() {
    let registry = damped_registry("one_per_platform").await;
    let mut gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;

    let phone = session("cy", "phone", Platform::Android);
    let web = session("cy", "web", Platform::Web);
    gw.login(&phone).await;
    gw.login(&web).await;
    assert!(gw.disconnect(&phone, EventReason::LinkClose).await);
    assert!(gw.logout(&web).await);
    let cy = events_of(&registry, "cy").await;
    let actions: Vec<_> = cy.iter().map(|e| (e.0, e.1)).collect();
    assert_eq!(
        actions[2..],
        [(EventAction::Disconnect, EventReason::LinkClose), (EventAction::Logout, EventReason::Unregister)]
    );
    assert!(cy[2].2 <= cy[3].2, "the disconnect is dated first");
    assert_eq!(status(&registry.query(&["cy"]).await[0]), "offline");

    let tablet = session("dee", "tablet", Platform::Ipad);
    gw.login(&tablet).await;
    assert!(gw.disconnect(&tablet, EventReason::Timeout).await);
    let kicked = registry
        .api()
        .await
        .kick(KickRequest { app_id: "default".into(), user_id: "dee".into(), platforms: vec![] })
        .await
        .unwrap()
        .into_inner();
    assert!(kicked.kicked_devices.is_empty(), "its session was already gone");
    let dee = events_of(&registry, "dee").await;
    assert_eq!(
        dee.iter().map(|e| (e.0, e.1)).collect::<Vec<_>>()[1..],
        [(EventAction::Disconnect, EventReason::Timeout)]
    );
    assert_eq!(status(&registry.query(&["dee"]).await[0]), "offline");
}

#[tokio::test]
async fn a_login_the_policy_would_kick_the_held_device_for_ends_its_grace_at_once() {
    let registry = damped_registry("single_device").await;
    let mut gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;
    let phone = session("eve", "phone", Platform::Ios);
    gw.login(&phone).await;
    assert!(gw.disconnect(&phone, EventReason::LinkClose).await);
    let reply = gw.login(&session("eve", "laptop", Platform::Mac)).await;
    assert!(reply.kicked_devices.is_empty(), "the phone had left already");
    let eve = events_of(&registry, "eve").await;
    assert_eq!(
        eve.iter().map(|e| e.0).collect::<Vec<_>>(),
        [EventAction::Login, EventAction::Disconnect, EventAction::Login]
    );
    assert_eq!(reply.user_version, 3);
}

#[tokio::test]
async fn nothing_is_held_across_a_restart_the_gone_session_is_reported_when_its_gateway_attaches() {
    let mut registry = damped_registry("one_per_platform").await;
    let mut gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;
    let phone = session("fay", "phone", Platform::Android);
    let web = session("fay", "web", Platform::Web);
    gw.login(&phone).await;
    gw.login(&web).await;
    assert!(gw.disconnect(&phone, EventReason::LinkClose).await);

    registry.restart().await;
    let _gw = StubGateway::attach(&registry.url(), "gw", vec![live(&web)]).await;
    let fay = events_of(&registry, "fay").await;
    assert_eq!(fay.last().map(|e| (e.0, e.1)), Some((EventAction::Disconnect, EventReason::LinkClose)));
    assert_eq!(fay.len(), 3, "reported once, at the re-attach");
    let devices = devices(&registry.query(&["fay"]).await[0]);
    assert_eq!(devices, [("web".to_string(), "online")]);
    // Nothing more comes when the old grace would have ended.
    tokio::time::sleep(Duration::from_millis(GRACE_MS + 300)).await;
    assert_eq!(events_of(&registry, "fay").await.len(), 3);
}
