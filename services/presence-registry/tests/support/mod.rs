//! A real registry on a fresh database, and a gateway that speaks the real gRPC link.
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use presence_common::testing::{TestDatabase, fresh_database};
use presence_proto::v1::{
    DeviceSession, EventReason, GatewayUplink, Hello, KickSession, LiveSession, LoginReply, LoginRequest,
    Platform, PresenceEvent, ReadEventsRequest, SessionRef, SessionSnapshot, UserPresence,
    event_feed_client::EventFeedClient, gateway_downlink::Kind, gateway_link_client::GatewayLinkClient,
    gateway_uplink, presence_registry_client::PresenceRegistryClient,
};
use presence_registry::{RegistryConfig, RunningRegistry, Shutdown};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;

pub const WAIT: Duration = Duration::from_secs(10);

pub struct TestRegistry {
    pub db: TestDatabase,
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub running: Option<RunningRegistry>,
    extra: Vec<(String, String)>,
}

fn config(db_url: &str, listen: SocketAddr, extra: &[(String, String)]) -> RegistryConfig {
    let mut vars = vec![
        ("DATABASE_URL".to_owned(), db_url.to_owned()),
        ("REGISTRY_LISTEN_ADDR".to_owned(), listen.to_string()),
        ("REGISTRY_METRICS_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
        ("REGISTRY_SWEEP_INTERVAL_MS".to_owned(), "100".to_owned()),
    ];
    vars.extend(extra.iter().cloned());
    presence_common::config::from_vars(vars).expect("test config parses")
}

impl TestRegistry {
    /// A registry on a fresh database with the app `default` (token secret `secret`).
    pub async fn start(extra: &[(&str, &str)]) -> Self {
        let db = fresh_database().await;
        db.add_app("default", "secret").await;
        let extra: Vec<(String, String)> =
            extra.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let shutdown = Shutdown::new();
        let running = presence_registry::start(
            config(&db.url, "127.0.0.1:0".parse().unwrap(), &extra),
            shutdown.clone(),
        )
        .await
        .expect("registry starts");
        Self { db, addr: running.grpc_addr, shutdown, running: Some(running), extra }
    }

    /// Stops the registry and starts a new one on the same database and port.
    pub async fn restart(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(WAIT, running.wait()).await.expect("stops in time").expect("stops cleanly");
        }
        self.shutdown = Shutdown::new();
        let running =
            presence_registry::start(config(&self.db.url, self.addr, &self.extra), self.shutdown.clone())
                .await
                .expect("registry restarts");
        self.running = Some(running);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn api(&self) -> PresenceRegistryClient<Channel> {
        PresenceRegistryClient::connect(self.url()).await.expect("registry reachable")
    }

    pub async fn feed(&self) -> EventFeedClient<Channel> {
        EventFeedClient::connect(self.url()).await.expect("registry reachable")
    }

    pub async fn query(&self, user_ids: &[&str]) -> Vec<UserPresence> {
        let reply = self
            .api()
            .await
            .query(presence_proto::v1::QueryRequest {
                app_id: "default".into(),
                user_ids: user_ids.iter().map(|u| u.to_string()).collect(),
                detail: true,
            })
            .await
            .expect("query");
        reply.into_inner().results
    }

    /// Every event of app `default`, in feed order.
    pub async fn events(&self) -> Vec<PresenceEvent> {
        let mut feed = self.feed().await;
        let mut all = Vec::new();
        loop {
            let after_seq = all.last().map_or(0, |e: &PresenceEvent| e.seq);
            let page = feed
                .read_events(ReadEventsRequest { app_id: "default".into(), after_seq, limit: 1000 })
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

    pub async fn sql(&self, statement: &'static str) {
        sqlx::query(statement).execute(&self.db.pool).await.expect("admin SQL");
    }
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A gateway attached over the real link: it logs devices in and collects the kicks it is sent.
pub struct TestGateway {
    pub id: String,
    pub api: PresenceRegistryClient<Channel>,
    pub kicks: mpsc::UnboundedReceiver<KickSession>,
    uplink: mpsc::Sender<GatewayUplink>,
    pub stale_sessions: u32,
}

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
    }
}

impl TestGateway {
    pub async fn attach(registry_url: &str, id: &str, sessions: Vec<LiveSession>) -> Self {
        let (uplink, rx) = mpsc::channel(16);
        let msg = |kind| GatewayUplink { kind: Some(kind) };
        uplink.send(msg(gateway_uplink::Kind::Hello(Hello { gateway_id: id.into() }))).await.unwrap();
        uplink
            .send(msg(gateway_uplink::Kind::Snapshot(SessionSnapshot { sessions, last: true })))
            .await
            .unwrap();
        let mut link = GatewayLinkClient::connect(registry_url.to_owned()).await.expect("registry reachable");
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
        let api = PresenceRegistryClient::connect(registry_url.to_owned()).await.expect("registry reachable");
        Self { id: id.into(), api, kicks, uplink, stale_sessions: attached.stale_sessions }
    }

    pub async fn login(&mut self, session: &DeviceSession) -> LoginReply {
        self.api
            .login(LoginRequest { gateway_id: self.id.clone(), session: Some(session.clone()) })
            .await
            .expect("login accepted")
            .into_inner()
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
