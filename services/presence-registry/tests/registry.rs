//! The registry against real Postgres over real gRPC: policies, concurrency, push_online,
//! queries, event durability and order, live policy changes, restart and lease expiry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::{collections::HashSet, time::Duration};

use presence_proto::v1::{
    EventAction, EventReason, KickRequest, Platform, PresenceStatus, QueryReply, QueryRequest,
    SubscribeRequest,
};
use testkit::{WAIT, eventually, inprocess::*};

#[tokio::test]
async fn single_device_is_the_default_and_kicks_through_the_holding_gateway() {
    let registry = TestRegistry::start().await;
    let mut gw_a = StubGateway::attach(&registry.url(), "gw-a", vec![]).await;
    let mut gw_b = StubGateway::attach(&registry.url(), "gw-b", vec![]).await;

    let phone = session("alice", "phone", Platform::Ios);
    let reply = gw_a.login(&phone).await;
    assert!(reply.kicked_devices.is_empty());
    assert_eq!((reply.seq, reply.user_version), (1, 1));

    let laptop = session("alice", "laptop", Platform::Mac);
    let reply = gw_b.login(&laptop).await;
    assert_eq!(reply.kicked_devices.len(), 1);
    assert_eq!(reply.kicked_devices[0].device_id, "phone");

    let kick = gw_a.next_kick().await;
    assert_eq!(kick.session_id, phone.session_id);
    assert_eq!(kick.reason, "replaced_by_login");
    assert_eq!(kick.by_platform(), Platform::Mac);
    assert_eq!(kick.by_device_id, "laptop");
    assert!(gw_b.kicks.try_recv().is_err(), "the winner's gateway is not told to kick");

    let alice = &registry.query(&["alice"]).await[0];
    assert_eq!(devices(alice), [("laptop".to_string(), "online")]);

    // The kicked session's late disconnect is stale: no event, no change.
    assert!(!gw_a.disconnect(&phone, EventReason::LinkClose).await);
    let events = registry.events().await;
    assert_eq!(events.len(), 2);
    assert_eq!(events[1].kicked_devices[0].device_id, "phone");
}

#[tokio::test]
async fn one_per_platform_keeps_different_platforms_together() {
    let registry = TestRegistry::start().await;
    registry.sql("UPDATE apps SET login_policy = 'one_per_platform' WHERE app_id = 'default'").await;
    let mut gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;
    // Applied live: new users' second device stops kicking the first within a second.
    let started = tokio::time::Instant::now();
    let mut attempt = 0;
    eventually("the policy change to apply", async || {
        attempt += 1;
        let user = format!("probe{attempt}");
        gw.login(&session(&user, "p", Platform::Ios)).await;
        gw.login(&session(&user, "m", Platform::Mac)).await.kicked_devices.is_empty()
    })
    .await;
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "policy change applied after {:?}",
        started.elapsed()
    );
    while gw.kicks.try_recv().is_ok() {}

    let ios1 = session("bob", "ios1", Platform::Ios);
    let mac = session("bob", "mac", Platform::Mac);
    let ios2 = session("bob", "ios2", Platform::Ios);
    gw.login(&ios1).await;
    assert!(gw.login(&mac).await.kicked_devices.is_empty());
    let reply = gw.login(&ios2).await;
    assert_eq!(reply.kicked_devices.iter().map(|k| k.device_id.as_str()).collect::<Vec<_>>(), ["ios1"]);
    assert_eq!(gw.next_kick().await.session_id, ios1.session_id);
    let bob = &registry.query(&["bob"]).await[0];
    assert_eq!(devices(bob), [("ios2".to_string(), "online"), ("mac".to_string(), "online")]);
}

#[tokio::test]
async fn groups_evict_the_oldest_of_an_over_full_group() {
    let registry = TestRegistry::start().await;
    registry
        .sql(
            "INSERT INTO login_policy_groups (app_id, group_name, platforms, max_devices) VALUES \
             ('default', 'pc', ARRAY['windows','mac','linux'], 1), \
             ('default', 'mobile', ARRAY['ios','android','ipad'], 2)",
        )
        .await;
    registry.set_login_policy("groups").await;
    let mut gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;

    for (device, platform) in
        [("win", Platform::Windows), ("ipad", Platform::Ipad), ("iphone", Platform::Ios)]
    {
        assert!(gw.login(&session("carol", device, platform)).await.kicked_devices.is_empty(), "{device}");
    }
    let kicked = |r: presence_proto::v1::LoginReply| {
        r.kicked_devices.into_iter().map(|k| k.device_id).collect::<Vec<_>>()
    };
    assert_eq!(kicked(gw.login(&session("carol", "linux", Platform::Linux)).await), ["win"]);
    assert_eq!(kicked(gw.login(&session("carol", "android", Platform::Android)).await), ["ipad"]);
    // Web is in no group: a group of its own, max 1.
    assert!(gw.login(&session("carol", "web", Platform::Web)).await.kicked_devices.is_empty());
    assert_eq!(kicked(gw.login(&session("carol", "web2", Platform::Web)).await), ["web"]);

    let carol = &registry.query(&["carol"]).await[0];
    let online: Vec<String> = devices(carol).into_iter().map(|(d, _)| d).collect();
    assert_eq!(online, ["android", "iphone", "linux", "web2"]);
}

#[tokio::test]
async fn fifty_concurrent_logins_of_one_user_leave_exactly_one_device_online() {
    let registry = TestRegistry::start().await;
    let gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;
    let sessions: Vec<_> = (0..50).map(|i| session("dave", &format!("phone{i}"), Platform::Ios)).collect();
    let logins = sessions.iter().map(|s| {
        let mut api = gw.api.clone();
        let request =
            presence_proto::v1::LoginRequest { gateway_id: gw.id.clone(), session: Some(s.clone()) };
        async move { api.login(request).await }
    });
    let replies = futures::future::join_all(logins).await;
    assert!(replies.iter().all(Result::is_ok), "every login accepted");

    let dave = &registry.query(&["dave"]).await[0];
    assert_eq!(dave.devices.len(), 1, "exactly one device online");
    let winner = &dave.devices[0].device_id;

    let mut gw = gw;
    let mut kicked = HashSet::new();
    for _ in 0..49 {
        kicked.insert(gw.next_kick().await.device_id);
    }
    assert_eq!(kicked.len(), 49);
    assert!(!kicked.contains(winner), "the device online was not kicked");

    let events = registry.events().await;
    assert_eq!(events.len(), 50);
    let versions: Vec<u64> = events.iter().map(|e| e.user_version).collect();
    assert_eq!(versions, (1..=50).collect::<Vec<_>>(), "user_version +1 per event, in seq order");
    let total_kicked: usize = events.iter().map(|e| e.kicked_devices.len()).sum();
    assert_eq!(total_kicked, 49);
}

#[tokio::test]
async fn push_devices_stay_push_online_until_they_expire() {
    let registry = TestRegistry::start().await;
    registry.sql("UPDATE apps SET push_online_ttl_s = 1 WHERE app_id = 'default'").await;
    let mut gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;
    registry.set_login_policy("one_per_platform").await;

    let mut phone = session("erin", "phone", Platform::Ios);
    phone.push_enabled = true;
    let web = session("erin", "web", Platform::Web);
    gw.login(&phone).await;
    gw.login(&web).await;
    assert!(gw.disconnect(&phone, EventReason::LinkClose).await);
    let erin = &registry.query(&["erin"]).await[0];
    assert_eq!(status(erin), "online");
    assert!(gw.disconnect(&web, EventReason::Timeout).await);
    let erin = &registry.query(&["erin"]).await[0];
    assert_eq!(status(erin), "push_online");
    assert_eq!(devices(erin), [("phone".to_string(), "push_online")]);
    assert_eq!(erin.last_reason(), EventReason::Timeout);
    assert!(erin.last_seen_ms.is_some());

    eventually("push_online to expire", async || status(&registry.query(&["erin"]).await[0]) == "offline")
        .await;
    let last = registry.events().await.pop().expect("events");
    assert_eq!((last.action(), last.reason()), (EventAction::Logout, EventReason::PushExpired));
    assert_eq!(last.user_status(), PresenceStatus::Offline);
}

#[tokio::test]
async fn query_of_500_users_keeps_order_and_rejects_501() {
    let registry = TestRegistry::start().await;
    let mut gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;
    for i in (0..500).step_by(5) {
        gw.login(&session(&format!("u{i}"), "d", Platform::Android)).await;
    }
    let ids: Vec<String> = (0..500).rev().map(|i| format!("u{i}")).collect();
    let mut api = registry.api().await;
    let reply = api
        .query(QueryRequest {
            app_id: "default".into(),
            user_ids: ids.iter().collect(),
            ..Default::default()
        })
        .await
        .expect("query")
        .into_inner();
    assert_eq!(reply.results.len(), 500);
    assert_eq!(reply.as_of_seq, 100);
    for (result, id) in reply.results.iter().zip(&ids) {
        assert_eq!(&result.user_id, id);
        let n: usize = id[1..].parse().unwrap();
        let expected = if n.is_multiple_of(5) { PresenceStatus::Online } else { PresenceStatus::Offline };
        assert_eq!(result.status(), expected, "{id}");
        assert!(result.devices.is_empty(), "no detail asked");
    }
    // The caller that holds the ids (the facade) gets the same answer without them.
    let without = api
        .query(QueryRequest {
            app_id: "default".into(),
            user_ids: ids.iter().collect(),
            without_user_ids: true,
            ..Default::default()
        })
        .await
        .expect("query without ids")
        .into_inner();
    assert!(without.results.iter().all(|r| r.user_id.is_empty()), "ids left out");
    let statuses =
        |reply: &QueryReply| reply.results.iter().map(|r| (r.status(), r.user_version)).collect::<Vec<_>>();
    assert_eq!(statuses(&without), statuses(&reply));

    let too_many: Vec<String> = (0..501).map(|i| format!("u{i}")).collect();
    let err = api
        .query(QueryRequest {
            app_id: "default".into(),
            user_ids: too_many.iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = api
        .query(QueryRequest {
            app_id: "nope".into(),
            user_ids: ["u1"].into_iter().collect(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn events_are_durable_ordered_and_streamed_live() {
    let registry = TestRegistry::start().await;
    let mut feed = registry.subscription().await;
    let mut stream =
        feed.subscribe(SubscribeRequest { after_feed_id: 0 }).await.expect("subscribe").into_inner();
    let mut gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;

    let users = ["f1", "f2", "f3"];
    let mut produced = 0;
    for round in 0..4 {
        for user in users {
            let s = session(user, &format!("d{round}"), Platform::Web);
            gw.login(&s).await;
            produced += 1;
            if round % 2 == 1 {
                assert!(gw.logout(&s).await);
                produced += 1;
            }
        }
    }

    let mut streamed = Vec::new();
    while streamed.len() < produced {
        let event = tokio::time::timeout(WAIT, stream.message())
            .await
            .expect("live event")
            .expect("ok")
            .expect("open");
        streamed.push(event);
    }
    let feed_ids: Vec<u64> = streamed.iter().map(|e| e.feed_id).collect();
    assert_eq!(feed_ids, (1..=produced as u64).collect::<Vec<_>>(), "no gap, no reorder");

    // Durable: a fresh read from Postgres sees the same events, seq strictly increasing.
    let stored = registry.events().await;
    assert_eq!(stored.len(), produced);
    assert!(stored.windows(2).all(|w| w[0].seq < w[1].seq));
    for user in users {
        let versions: Vec<u64> =
            stored.iter().filter(|e| e.user_id == user).map(|e| e.user_version).collect();
        assert_eq!(versions, (1..=versions.len() as u64).collect::<Vec<_>>(), "{user}");
    }
    let ids: HashSet<&str> = stored.iter().map(|e| e.event_id.as_str()).collect();
    assert_eq!(ids.len(), produced, "event ids unique");

    // Resume from a cursor: only what came after.
    let mut resumed =
        feed.subscribe(SubscribeRequest { after_feed_id: 10 }).await.expect("subscribe").into_inner();
    let first = tokio::time::timeout(WAIT, resumed.message()).await.unwrap().unwrap().unwrap();
    assert_eq!(first.feed_id, 11);
}

#[tokio::test]
async fn a_restarted_registry_restores_state_without_spurious_events() {
    let mut registry = TestRegistry::start().await;
    registry.set_login_policy("one_per_platform").await;
    let mut gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;
    let web = session("gina", "web", Platform::Web);
    let mac = session("gina", "mac", Platform::Mac);
    let mut phone = session("gina", "phone", Platform::Android);
    phone.push_enabled = true;
    let gone = session("hank", "web", Platform::Web);
    for s in [&web, &mac, &phone, &gone] {
        gw.login(s).await;
    }
    assert!(gw.disconnect(&phone, EventReason::LinkClose).await);
    let before = registry.events().await.len();

    registry.restart().await;
    // The gateway re-asserts what it still holds: gina's web and mac, and a session the registry
    // never had. hank's web closed while the registry was down.
    let mut unknown = session("ivy", "web", Platform::Web);
    unknown.session_id = "never-logged-in".into();
    let mut gw =
        StubGateway::attach(&registry.url(), "gw", vec![live(&web), live(&mac), live(&unknown)]).await;
    assert_eq!(gw.stale_sessions, 1);
    assert_eq!(gw.next_kick().await.session_id, "never-logged-in");

    let result = registry.query(&["gina", "hank"]).await;
    assert_eq!(
        devices(&result[0]),
        [("mac".to_string(), "online"), ("phone".to_string(), "push_online"), ("web".to_string(), "online")]
    );
    assert_eq!(status(&result[1]), "offline");

    let events = registry.events().await;
    assert_eq!(events.len(), before + 1, "only hank's disconnect is new");
    let last = events.last().unwrap();
    assert_eq!((last.user_id.as_str(), last.reason()), ("hank", EventReason::LinkClose));
    assert_eq!(last.user_version, 2);
    assert!(last.seq > events[before - 1].seq, "seq keeps increasing across the restart");

    // And it keeps working: a new login continues gina's versions.
    let reply = gw.login(&session("gina", "web2", Platform::Web)).await;
    assert_eq!(reply.user_version, 5);
}

#[tokio::test]
async fn a_silent_gateway_loses_its_devices_when_its_lease_expires() {
    let registry = TestRegistry::start_with(&[("REGISTRY_GATEWAY_LEASE_S", "1")]).await;
    let mut gw = StubGateway::attach(&registry.url(), "gw-dead", vec![]).await;
    let s = session("jack", "laptop", Platform::Linux);
    gw.login(&s).await;
    gw.vanish();

    eventually("the lease to expire", async || status(&registry.query(&["jack"]).await[0]) == "offline")
        .await;
    let last = registry.events().await.pop().unwrap();
    assert_eq!((last.action(), last.reason()), (EventAction::Disconnect, EventReason::LinkClose));
}

#[tokio::test]
async fn admin_kick_reaches_the_gateway_and_is_a_logout_event() {
    let registry = TestRegistry::start().await;
    registry.set_login_policy("one_per_platform").await;
    let mut gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;
    let ios = session("kim", "ios", Platform::Ios);
    let mac = session("kim", "mac", Platform::Mac);
    gw.login(&ios).await;
    gw.login(&mac).await;

    let mut api = registry.api().await;
    let kick = |platforms: Vec<Platform>| KickRequest {
        app_id: "default".into(),
        user_id: "kim".into(),
        platforms: platforms.into_iter().map(|p| p as i32).collect(),
    };
    let reply = api.kick(kick(vec![Platform::Ios])).await.expect("kick").into_inner();
    assert_eq!(reply.kicked_devices.len(), 1);
    let pushed = gw.next_kick().await;
    assert_eq!((pushed.session_id.as_str(), pushed.reason.as_str()), (ios.session_id.as_str(), "admin"));
    let last = registry.events().await.pop().unwrap();
    assert_eq!((last.action(), last.reason()), (EventAction::Logout, EventReason::AdminKick));

    let reply = api.kick(kick(vec![])).await.expect("kick all").into_inner();
    assert_eq!(reply.kicked_devices[0].device_id, "mac");
    assert_eq!(status(&registry.query(&["kim"]).await[0]), "offline");
    assert!(api.kick(kick(vec![])).await.expect("kick nobody").into_inner().kicked_devices.is_empty());
}

#[tokio::test]
async fn bad_requests_get_clear_errors() {
    let registry = TestRegistry::start().await;
    let mut api = registry.api_as(presence_common::internal_auth::Role::Gateway, "gw").await;
    let login = |gateway: &str, s: presence_proto::v1::DeviceSession| presence_proto::v1::LoginRequest {
        gateway_id: gateway.into(),
        session: Some(s),
    };
    let err = api.login(login("gw", session("u", "d", Platform::Ios))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "gateway not attached: {err:?}");

    let _gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;
    let err = api.login(login("gw", session("u", "d", Platform::Unspecified))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let err = api.login(login("gw", session("", "d", Platform::Ios))).await.unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    let mut other_app = session("u", "d", Platform::Ios);
    other_app.app_id = "unknown".into();
    assert_eq!(api.login(login("gw", other_app)).await.unwrap_err().code(), tonic::Code::NotFound);
    let err = api.login(presence_proto::v1::LoginRequest { gateway_id: "gw".into(), session: None }).await;
    assert_eq!(err.unwrap_err().code(), tonic::Code::InvalidArgument);
    assert!(registry.events().await.is_empty(), "nothing was recorded");
}

#[tokio::test]
async fn a_cancelled_login_lands_whole_before_the_next_change_of_its_user() {
    let registry = TestRegistry::start().await;
    let gw = StubGateway::attach(&registry.url(), "gw", vec![]).await;
    // Commits wait while this transaction holds the event table.
    let mut blocker = registry.db.pool.begin().await.expect("begin");
    sqlx::query("LOCK TABLE presence_events IN EXCLUSIVE MODE").execute(&mut *blocker).await.expect("lock");

    // The caller gives up on the first login while its commit waits: the server drops the call.
    let phone = session("cora", "phone", Platform::Ios);
    let mut request = tonic::Request::new(presence_proto::v1::LoginRequest {
        gateway_id: "gw".into(),
        session: Some(phone.clone()),
    });
    request.set_timeout(Duration::from_millis(300));
    let mut api = gw.api.clone();
    assert!(api.login(request).await.is_err(), "the deadline passes first");

    // Another device of the same user logs in meanwhile; then the database moves again.
    let laptop = session("cora", "laptop", Platform::Mac);
    let mut api = gw.api.clone();
    let request = presence_proto::v1::LoginRequest { gateway_id: "gw".into(), session: Some(laptop) };
    let second = tokio::spawn(async move { api.login(request).await });
    // Time for the second login to queue behind the first: the race is the point, and nothing
    // outside the registry shows it queued. Either order must give the result below.
    tokio::time::sleep(Duration::from_millis(200)).await;
    blocker.rollback().await.expect("release");
    let reply = tokio::time::timeout(WAIT, second).await.expect("answered").expect("joined").expect("ok");

    // The second login was planned on top of the first, not beside it.
    let reply = reply.into_inner();
    assert_eq!(reply.user_version, 2);
    assert_eq!(reply.kicked_devices.len(), 1);
    assert_eq!(reply.kicked_devices[0].device_id, "phone");
    let versions: Vec<u64> = registry.events().await.iter().map(|e| e.user_version).collect();
    assert_eq!(versions, [1, 2]);
    // Memory and Postgres agree: only the laptop is online.
    let devices: Vec<String> =
        registry.query(&["cora"]).await[0].devices.iter().map(|d| d.device_id.clone()).collect();
    assert_eq!(devices, ["laptop"]);
    let rows: Vec<String> = sqlx::query_scalar("SELECT device_id FROM devices WHERE user_id = 'cora'")
        .fetch_all(&registry.db.pool)
        .await
        .expect("devices");
    assert_eq!(rows, ["laptop"]);
}
