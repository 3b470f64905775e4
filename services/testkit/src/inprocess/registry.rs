//! The registry in-process, and a stub gateway that speaks the real gRPC link to it.

use std::net::SocketAddr;

use presence_common::internal_auth::{RegistryChannel, Role};
use presence_proto::v1::{
    DeviceSession, DeviceStatus, EventReason, GatewayUplink, Hello, KickSession, LiveSession, LoginReply,
    LoginRequest, Platform, PresenceEvent, QueryRequest, ReadEventsRequest, SessionRef, SessionSnapshot,
    UserPresence, event_feed_client::EventFeedClient, gateway_downlink::Kind, gateway_uplink,
    presence_registry_client::PresenceRegistryClient,
};
use presence_registry::RunningRegistry;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::{Instance, SECRET, config};
use crate::{
    INTERNAL_SECRET, TestDatabase, WAIT, eventually, eventually_ok, fresh_database,
    internal::{api_as, feed_as, link_as},
};

/// A registry on its own database; stoppable and restartable on the same port.
pub struct TestRegistry {
    pub db: TestDatabase,
    pub addr: SocketAddr,
    overrides: Vec<(String, String)>,
    instance: Option<Instance<RunningRegistry>>,
}

impl TestRegistry {
    /// A registry on a fresh database with the app `default` (token secret [`SECRET`]).
    pub async fn start() -> Self {
        Self::start_with(&[]).await
    }

    /// [`TestRegistry::start`] with settings overridden (e.g. a short lease).
    pub async fn start_with(overrides: &[(&str, &str)]) -> Self {
        let db = fresh_database().await;
        db.add_app("default", SECRET).await;
        Self::start_on(db, overrides).await
    }

    /// A registry on `db`, which the caller has filled with apps.
    pub async fn start_on(db: TestDatabase, overrides: &[(&str, &str)]) -> Self {
        let overrides = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut registry = Self { db, addr: ([127, 0, 0, 1], 0).into(), overrides, instance: None };
        registry.start_again().await;
        registry
    }

    /// Starts it again after [`TestRegistry::stop`], on the same database and port.
    pub async fn start_again(&mut self) {
        let overrides: Vec<(&str, &str)> =
            self.overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let vars = [
            ("DATABASE_URL", self.db.url.clone()),
            ("REGISTRY_LISTEN_ADDR", self.addr.to_string()),
            ("REGISTRY_METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("REGISTRY_SWEEP_INTERVAL_MS", "100".to_owned()),
            ("REGISTRY_INTERNAL_SECRET", INTERNAL_SECRET.to_owned()),
        ];
        let first_start = self.addr.port() == 0;
        // The old listener's port can take a moment to be free again.
        let instance = eventually_ok("the registry to start", async || {
            let config: presence_registry::RegistryConfig = config(&vars, &overrides);
            match Instance::start("registry", |shutdown| presence_registry::start(config, shutdown)).await {
                Err(err) if first_start => panic!("the registry starts: {err}"),
                started => started,
            }
        })
        .await;
        self.addr = instance.running().grpc_addr;
        self.instance = Some(instance);
    }

    /// Stops it (cleanly and in time, else panics).
    pub async fn stop(&mut self) {
        if let Some(mut instance) = self.instance.take() {
            instance.stop().await;
        }
    }

    /// Stops it and starts a new one on the same database and port.
    pub async fn restart(&mut self) {
        self.stop().await;
        self.start_again().await;
    }

    /// Its `/metrics` page.
    pub async fn metrics(&self) -> String {
        super::get_text(self.metrics_addr(), "/metrics").await
    }

    pub fn metrics_addr(&self) -> SocketAddr {
        self.instance.as_ref().expect("running").running().metrics_addr
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The registry API as the facade would call it (Query, Kick).
    pub async fn api(&self) -> PresenceRegistryClient<RegistryChannel> {
        self.api_as(Role::Facade, "test-facade").await
    }

    /// The registry API as `id` in `role`.
    pub async fn api_as(&self, role: Role, id: &str) -> PresenceRegistryClient<RegistryChannel> {
        api_as(&self.url(), role, id).await
    }

    /// The event feed as the facade reads it (ReadEvents).
    pub async fn feed(&self) -> EventFeedClient<RegistryChannel> {
        feed_as(&self.url(), Role::Facade, "test-facade").await
    }

    /// The event feed as the notifier follows it (Subscribe).
    pub async fn subscription(&self) -> EventFeedClient<RegistryChannel> {
        feed_as(&self.url(), Role::Notifier, "test-notifier").await
    }

    /// Presence of `user_ids` in the app `default`, with devices.
    pub async fn query(&self, user_ids: &[&str]) -> Vec<UserPresence> {
        self.api()
            .await
            .query(QueryRequest {
                app_id: "default".into(),
                user_ids: user_ids.iter().collect(),
                detail: true,
                without_user_ids: false,
            })
            .await
            .expect("query")
            .into_inner()
            .results
    }

    /// Online device ids of `user`, sorted.
    pub async fn online_devices(&self, user: &str) -> Vec<String> {
        let mut devices: Vec<String> = self.query(&[user]).await[0]
            .devices
            .iter()
            .filter(|d| d.status == DeviceStatus::Online as i32)
            .map(|d| d.device_id.clone())
            .collect();
        devices.sort();
        devices
    }

    /// Waits until `user` has exactly these online devices.
    pub async fn wait_online(&self, user: &str, expected: &[&str]) {
        eventually_ok(&format!("{user} online on {expected:?}"), async || {
            let online = self.online_devices(user).await;
            if online == expected { Ok(()) } else { Err(online) }
        })
        .await;
    }

    /// Every event of app `default`, in feed order.
    pub async fn events(&self) -> Vec<PresenceEvent> {
        self.events_of("default").await
    }

    /// Every event of `app`, in feed order.
    pub async fn events_of(&self, app: &str) -> Vec<PresenceEvent> {
        let mut feed = self.feed().await;
        let mut all: Vec<PresenceEvent> = Vec::new();
        loop {
            let after_seq = all.last().map_or(0, |e| e.seq);
            let page = feed
                .read_events(ReadEventsRequest { app_id: app.into(), after_seq, limit: 1000 })
                .await
                .expect("read events")
                .into_inner()
                .events;
            if page.is_empty() {
                return all;
            }
            all.extend(page);
        }
    }

    /// The reason of the last event of `user`.
    pub async fn last_reason(&self, user: &str) -> Option<EventReason> {
        self.events()
            .await
            .iter()
            .rev()
            .find(|e| e.user_id == user)
            .and_then(|e| EventReason::try_from(e.reason).ok())
    }

    pub async fn sql(&self, statement: &str) {
        sqlx::query(statement).execute(&self.db.pool).await.expect("admin SQL");
    }

    /// Sets the login policy of the app `default` by SQL and waits until the registry applies it.
    ///
    /// Apps reload asynchronously (on a NOTIFY), and always as a whole table: the same statement
    /// changes a probe app, whose logins show when the new policy is in force. The probe's group
    /// (ios and mac, at most one) makes the three policies kick differently.
    pub async fn set_login_policy(&self, policy: &str) {
        let expected = match policy {
            "single_device" => ProbeKicks { other_platform: true, same_group: true },
            "one_per_platform" => ProbeKicks { other_platform: false, same_group: false },
            "groups" => ProbeKicks { other_platform: false, same_group: true },
            other => panic!("unknown login policy {other}"),
        };
        self.sql(&format!(
            "INSERT INTO apps (app_id, token_secret, api_key_sha256, callback_secret) \
             SELECT '{PROBE_APP}', 'probe', encode(sha256('key-{PROBE_APP}'::bytea), 'hex'), 'probe' \
             WHERE NOT EXISTS (SELECT 1 FROM apps WHERE app_id = '{PROBE_APP}')"
        ))
        .await;
        self.sql(&format!(
            "INSERT INTO login_policy_groups (app_id, group_name, platforms, max_devices) \
             SELECT '{PROBE_APP}', 'probe', ARRAY['ios', 'mac'], 1 \
             WHERE NOT EXISTS (SELECT 1 FROM login_policy_groups WHERE app_id = '{PROBE_APP}')"
        ))
        .await;
        self.sql(&format!(
            "UPDATE apps SET login_policy = '{policy}' WHERE app_id IN ('default', '{PROBE_APP}')"
        ))
        .await;
        let mut probe = StubGateway::attach(&self.url(), PROBE_APP, vec![]).await;
        let mut sessions = Vec::new();
        let mut attempt = 0;
        eventually(&format!("the registry to apply login policy {policy}"), async || {
            attempt += 1;
            let mut probe_pair = |first: Platform, second: Platform| {
                let user = format!("probe-{attempt}-{}", first.as_str_name());
                let [first, second] = [first, second].map(|platform| DeviceSession {
                    app_id: PROBE_APP.into(),
                    ..session(&user, &format!("{platform:?}"), platform)
                });
                sessions.extend([first.clone(), second.clone()]);
                (first, second)
            };
            let (ios, android) = probe_pair(Platform::Ios, Platform::Android);
            let (ios2, mac) = probe_pair(Platform::Ios, Platform::Mac);
            // Refused while the registry does not know the probe app yet.
            let mut second_kicks_first = async |first: &DeviceSession, second: &DeviceSession| {
                probe.try_login(first).await.ok()?;
                Some(!probe.try_login(second).await.ok()?.kicked_devices.is_empty())
            };
            let (Some(other_platform), Some(same_group)) =
                (second_kicks_first(&ios, &android).await, second_kicks_first(&ios2, &mac).await)
            else {
                return false;
            };
            ProbeKicks { other_platform, same_group } == expected
        })
        .await;
        // Leave no probe device behind (a later lease expiry would be an event).
        for session in &sessions {
            probe.logout(session).await;
        }
    }
}

/// The app [`TestRegistry::set_login_policy`] probes with.
const PROBE_APP: &str = "policy-probe";

/// Whether a probe's second login kicked its first: on another platform of no group, and on
/// another platform of the same group.
#[derive(PartialEq)]
struct ProbeKicks {
    other_platform: bool,
    same_group: bool,
}

/// A gateway attached over the real link: it logs devices in and collects the kicks it is sent.
pub struct StubGateway {
    pub id: String,
    pub api: PresenceRegistryClient<RegistryChannel>,
    pub kicks: mpsc::UnboundedReceiver<KickSession>,
    uplink: mpsc::Sender<GatewayUplink>,
    pub stale_sessions: u32,
}

/// A session of `user` on `device` in the app `default`, with a fresh session id.
pub fn session(user: &str, device: &str, platform: Platform) -> DeviceSession {
    DeviceSession {
        app_id: "default".into(),
        user_id: user.into(),
        device_id: device.into(),
        platform: platform as i32,
        session_id: format!("{device}-{}", uuid::Uuid::new_v4().simple()),
        client_version: "1.2.3".into(),
        push_enabled: false,
        peer_addr: "127.0.0.1:5555".into(),
    }
}

pub fn session_ref(s: &DeviceSession) -> SessionRef {
    SessionRef {
        app_id: s.app_id.clone(),
        user_id: s.user_id.clone(),
        device_id: s.device_id.clone(),
        session_id: s.session_id.clone(),
    }
}

pub fn live(s: &DeviceSession) -> LiveSession {
    LiveSession {
        app_id: s.app_id.clone(),
        user_id: s.user_id.clone(),
        device_id: s.device_id.clone(),
        session_id: s.session_id.clone(),
        pending: false,
    }
}

impl StubGateway {
    /// Attaches as gateway `id`, reporting `sessions` as still held.
    pub async fn attach(registry_url: &str, id: &str, sessions: Vec<LiveSession>) -> Self {
        let (uplink, rx) = mpsc::channel(16);
        let msg = |kind| GatewayUplink { kind: Some(kind) };
        uplink.send(msg(gateway_uplink::Kind::Hello(Hello { gateway_id: id.into() }))).await.unwrap();
        uplink
            .send(msg(gateway_uplink::Kind::Snapshot(SessionSnapshot {
                sessions,
                last: true,
                watching: Vec::new(),
            })))
            .await
            .unwrap();
        let mut link = link_as(registry_url, id).await;
        let mut downlink = link.attach(ReceiverStream::new(rx)).await.expect("attach").into_inner();
        let first = tokio::time::timeout(WAIT, downlink.message()).await.expect("attached in time");
        let Ok(Some(presence_proto::v1::GatewayDownlink { kind: Some(Kind::Attached(attached)) })) = first
        else {
            panic!("first downlink must be Attached, got {first:?}");
        };
        let (kick_tx, kicks) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(message)) = downlink.message().await {
                if let Some(Kind::Kick(kick)) = message.kind {
                    let _ = kick_tx.send(kick);
                }
            }
        });
        let api = api_as(registry_url, Role::Gateway, id).await;
        Self { id: id.into(), api, kicks, uplink, stale_sessions: attached.stale_sessions }
    }

    pub async fn login(&mut self, session: &DeviceSession) -> LoginReply {
        self.try_login(session).await.expect("login accepted")
    }

    pub async fn try_login(&mut self, session: &DeviceSession) -> Result<LoginReply, tonic::Status> {
        let request = LoginRequest { gateway_id: self.id.clone(), session: Some(session.clone()) };
        self.api.login(request).await.map(tonic::Response::into_inner)
    }

    pub async fn disconnect(&mut self, session: &DeviceSession, reason: EventReason) -> bool {
        self.api
            .disconnect(presence_proto::v1::DisconnectRequest {
                session: Some(session_ref(session)),
                reason: reason as i32,
            })
            .await
            .expect("disconnect accepted")
            .into_inner()
            .applied
    }

    pub async fn logout(&mut self, session: &DeviceSession) -> bool {
        self.api
            .logout(presence_proto::v1::LogoutRequest { session: Some(session_ref(session)) })
            .await
            .expect("logout accepted")
            .into_inner()
            .applied
    }

    pub async fn next_kick(&mut self) -> KickSession {
        tokio::time::timeout(WAIT, self.kicks.recv()).await.expect("kick in time").expect("link open")
    }

    /// Ends the link without a word, as a crashed gateway would.
    pub fn vanish(self) {
        drop(self.uplink);
    }
}

/// Devices of a presence, as (device_id, status name).
pub fn devices(p: &UserPresence) -> Vec<(String, &'static str)> {
    let mut list: Vec<_> =
        p.devices.iter().map(|d| (d.device_id.clone(), d.status().name().unwrap_or("?"))).collect();
    list.sort();
    list
}

pub fn status(p: &UserPresence) -> &'static str {
    p.status().name().unwrap_or("?")
}
