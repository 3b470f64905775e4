//! The registry's gRPC port against an attacker on the same network, with the real processes:
//! no call without a caller token, each caller only in its role, and a gateway only as itself.

use presence_common::internal_auth::{CallerToken, InternalSecret, Role};
use presence_proto::v1::{
    DisconnectRequest, EventReason, GatewayUplink, Hello, KickRequest, LoginRequest, LogoutRequest, Platform,
    QueryRequest, ReadEventsRequest, SessionRef, SessionSnapshot, SetCustomStatusRequest, StatsRequest,
    SubscribeRequest, UnwatchRequest, WatchRequest, WatchedUser, event_feed_client::EventFeedClient,
    gateway_link_client::GatewayLinkClient, gateway_uplink, presence_registry_client::PresenceRegistryClient,
};
use testkit::{
    System,
    inprocess::session,
    internal::{api_as, feed_as, link_as},
};
use tonic::{Code, transport::Channel};

fn custom_status(session: Option<SessionRef>) -> SetCustomStatusRequest {
    SetCustomStatusRequest {
        app_id: "default".into(),
        user_id: "mallory".into(),
        custom_status: "owned".into(),
        session,
    }
}

fn watched() -> Vec<WatchedUser> {
    vec![WatchedUser { user_id: "alice".into(), generation: 1 }]
}

/// Every RPC of the registry, called once (gateway calls under `gateway_id`); the status of each.
async fn call_every_rpc<T>(
    gateway_id: &str,
    presence: &mut PresenceRegistryClient<T>,
    feed: &mut EventFeedClient<T>,
    link: &mut GatewayLinkClient<T>,
) -> Vec<(&'static str, Code)>
where
    T: tonic::client::GrpcService<tonic::body::Body>,
    T::Error: Into<tonic::codegen::StdError>,
    T::ResponseBody: tonic::codegen::Body<Data = tonic::codegen::Bytes> + Send + 'static,
    <T::ResponseBody as tonic::codegen::Body>::Error: Into<tonic::codegen::StdError> + Send,
{
    let code = |result: Result<(), tonic::Status>| result.err().map_or(Code::Ok, |status| status.code());
    let session_ref = SessionRef {
        app_id: "default".into(),
        user_id: "mallory".into(),
        device_id: "d".into(),
        session_id: "s".into(),
    };
    let hello =
        GatewayUplink { kind: Some(gateway_uplink::Kind::Hello(Hello { gateway_id: gateway_id.into() })) };
    let snapshot = GatewayUplink {
        kind: Some(gateway_uplink::Kind::Snapshot(SessionSnapshot {
            sessions: vec![],
            last: true,
            watching: vec![],
        })),
    };
    vec![
        (
            "Login",
            code(
                presence
                    .login(LoginRequest {
                        gateway_id: gateway_id.into(),
                        session: Some(session("mallory", "d", Platform::Ios)),
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "Logout",
            code(presence.logout(LogoutRequest { session: Some(session_ref.clone()) }).await.map(drop)),
        ),
        (
            "Disconnect",
            code(
                presence
                    .disconnect(DisconnectRequest {
                        session: Some(session_ref.clone()),
                        reason: EventReason::LinkClose as i32,
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "Query",
            code(
                presence
                    .query(QueryRequest {
                        app_id: "default".into(),
                        user_ids: ["alice"].into_iter().collect(),
                        detail: true,
                        ..Default::default()
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "Kick",
            code(
                presence
                    .kick(KickRequest {
                        app_id: "default".into(),
                        user_id: "alice".into(),
                        platforms: vec![],
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "ReadEvents",
            code(
                feed.read_events(ReadEventsRequest { app_id: "default".into(), after_seq: 0, limit: 10 })
                    .await
                    .map(drop),
            ),
        ),
        ("Subscribe", code(feed.subscribe(SubscribeRequest { after_feed_id: 0 }).await.map(drop))),
        (
            "SetCustomStatus(device)",
            code(presence.set_custom_status(custom_status(Some(session_ref.clone()))).await.map(drop)),
        ),
        ("SetCustomStatus(backend)", code(presence.set_custom_status(custom_status(None)).await.map(drop))),
        ("Stats", code(presence.stats(StatsRequest { app_id: "default".into() }).await.map(drop))),
        (
            "Watch",
            code(
                presence
                    .watch(WatchRequest {
                        gateway_id: gateway_id.into(),
                        app_id: "default".into(),
                        users: watched(),
                    })
                    .await
                    .map(drop),
            ),
        ),
        (
            "Unwatch",
            code(
                presence
                    .unwatch(UnwatchRequest {
                        gateway_id: gateway_id.into(),
                        app_id: "default".into(),
                        users: watched(),
                    })
                    .await
                    .map(drop),
            ),
        ),
        ("Attach", code(link.attach(tokio_stream::iter([hello, snapshot])).await.map(drop))),
    ]
}

#[tokio::test]
async fn no_rpc_answers_without_a_valid_caller_token() {
    let system = System::start().await;
    let url = system.registry_url().to_owned();
    let (_alice, _) = system.login("alice", "phone", Platform::Ios, false).await;

    let channel = Channel::from_shared(url.clone()).unwrap().connect().await.unwrap();
    let mut presence = PresenceRegistryClient::new(channel.clone());
    let mut feed = EventFeedClient::new(channel.clone());
    let mut link = GatewayLinkClient::new(channel.clone());
    for (rpc, code) in call_every_rpc("gw-1", &mut presence, &mut feed, &mut link).await {
        assert_eq!(code, Code::Unauthenticated, "{rpc} without a token");
    }

    // A well-formed token signed with another secret is no better.
    let forged = InternalSecret::new([9u8; 32]).unwrap().mint(Role::Facade, "facade-1").unwrap();
    let token = CallerToken::new(Some(&forged)).unwrap();
    let mut presence = PresenceRegistryClient::with_interceptor(channel.clone(), token.clone());
    let mut feed = EventFeedClient::with_interceptor(channel.clone(), token.clone());
    let mut link = GatewayLinkClient::with_interceptor(channel, token);
    for (rpc, code) in call_every_rpc("gw-1", &mut presence, &mut feed, &mut link).await {
        assert_eq!(code, Code::Unauthenticated, "{rpc} with a forged token");
    }

    // Nothing of that reached the state: alice is still online, mallory never was.
    assert_eq!(system.statuses(&["alice", "mallory"]).await, ["online", "offline"]);
}

#[tokio::test]
async fn each_caller_may_use_only_its_own_rpcs() {
    let system = System::start().await;
    let url = system.registry_url().to_owned();
    let (_alice, _) = system.login("alice", "phone", Platform::Ios, false).await;

    // What each role may call; everything else is PERMISSION_DENIED.
    let allowed: [(Role, &str, &[&str]); 3] = [
        (
            Role::Gateway,
            "intruder",
            &["Login", "Logout", "Disconnect", "Attach", "SetCustomStatus(device)", "Watch", "Unwatch"],
        ),
        (Role::Facade, "facade-2", &["Query", "Kick", "ReadEvents", "SetCustomStatus(backend)", "Stats"]),
        (Role::Notifier, "notifier-2", &["Subscribe"]),
    ];
    for (role, id, may) in allowed {
        let mut presence = api_as(&url, role, id).await;
        let mut feed = feed_as(&url, role, id).await;
        let mut link = link_as(&url, id).await;
        // The link always calls as a gateway: only check it for that role.
        for (rpc, code) in call_every_rpc(id, &mut presence, &mut feed, &mut link).await {
            if rpc == "Attach" && role != Role::Gateway {
                continue;
            }
            if may.contains(&rpc) {
                assert_ne!(code, Code::PermissionDenied, "{role} may call {rpc}");
                assert_ne!(code, Code::Unauthenticated, "{role} may call {rpc}");
            } else {
                assert_eq!(code, Code::PermissionDenied, "{role} must not call {rpc}");
            }
        }
    }
}

#[tokio::test]
async fn a_gateway_cannot_act_as_another() {
    let system = System::start().await;
    let url = system.registry_url().to_owned();
    let (_alice, ok) = system.login("alice", "phone", Platform::Ios, false).await;

    // The "intruder" gateway's own token, used under the real gateway's id "gw-1".
    let mut link = link_as(&url, "intruder").await;
    let hello =
        GatewayUplink { kind: Some(gateway_uplink::Kind::Hello(Hello { gateway_id: "gw-1".into() })) };
    let empty = GatewayUplink {
        kind: Some(gateway_uplink::Kind::Snapshot(SessionSnapshot {
            sessions: vec![],
            last: true,
            watching: vec![],
        })),
    };
    let attached = link.attach(tokio_stream::iter([hello, empty])).await;
    assert_eq!(attached.err().map(|s| s.code()), Some(Code::PermissionDenied), "attach as gw-1");

    let mut api = api_as(&url, Role::Gateway, "intruder").await;
    let login =
        LoginRequest { gateway_id: "gw-1".into(), session: Some(session("alice", "laptop", Platform::Mac)) };
    assert_eq!(api.login(login).await.unwrap_err().code(), Code::PermissionDenied, "login as gw-1");

    // Alice's session lives on gw-1: another gateway cannot end it.
    let alice = SessionRef {
        app_id: "default".into(),
        user_id: "alice".into(),
        device_id: "phone".into(),
        session_id: ok.session_id,
    };
    let logout = api.logout(LogoutRequest { session: Some(alice.clone()) }).await;
    assert_eq!(logout.unwrap_err().code(), Code::PermissionDenied, "logout of gw-1's session");
    let disconnect = DisconnectRequest { session: Some(alice), reason: EventReason::LinkClose as i32 };
    assert_eq!(api.disconnect(disconnect).await.unwrap_err().code(), Code::PermissionDenied);

    // The empty snapshot would have disconnected alice; she is still online, with one event.
    assert_eq!(system.statuses(&["alice"]).await, ["online"]);
    assert_eq!(system.events().await.len(), 1);
}
