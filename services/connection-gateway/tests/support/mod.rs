//! A real registry on a fresh database and real gateways in-process, all on loopback.
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use connection_gateway::{GatewayConfig, RunningGateway, Shutdown};
use presence_client::{Client, LoginParams, mint_token};
use presence_common::testing::{TestDatabase, fresh_database};
use presence_proto::v1::{
    EventReason, LoginOk, Platform, PresenceEvent, QueryRequest, ReadEventsRequest, ServerFrame,
    UserPresence, event_feed_client::EventFeedClient, presence_registry_client::PresenceRegistryClient,
};
use presence_registry::RunningRegistry;
use tonic::transport::Channel;

/// Bound on every wait in these tests: a hang fails instead of blocking.
pub const WAIT: Duration = Duration::from_secs(15);
pub const SECRET: &str = "secret";

pub struct TestRegistry {
    pub db: TestDatabase,
    pub addr: SocketAddr,
    pub shutdown: Shutdown,
    pub running: Option<RunningRegistry>,
}

fn registry_config(db_url: &str, listen: SocketAddr) -> presence_registry::RegistryConfig {
    presence_common::config::from_vars([
        ("DATABASE_URL", db_url.to_owned()),
        ("REGISTRY_LISTEN_ADDR", listen.to_string()),
        ("REGISTRY_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ("REGISTRY_SWEEP_INTERVAL_MS", "100".to_owned()),
    ])
    .expect("registry config")
}

impl TestRegistry {
    /// A registry on a fresh database with the app `default` (token secret [`SECRET`]).
    pub async fn start() -> Self {
        let db = fresh_database().await;
        db.add_app("default", SECRET).await;
        let shutdown = Shutdown::new();
        let running = presence_registry::start(
            registry_config(&db.url, "127.0.0.1:0".parse().unwrap()),
            shutdown.clone(),
        )
        .await
        .expect("registry starts");
        Self { db, addr: running.grpc_addr, shutdown, running: Some(running) }
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(WAIT, running.wait())
                .await
                .expect("registry stops in time")
                .expect("stops cleanly");
        }
    }

    /// A new registry on the same database and port.
    pub async fn start_again(&mut self) {
        self.shutdown = Shutdown::new();
        let mut attempts = 0;
        let running = loop {
            match presence_registry::start(registry_config(&self.db.url, self.addr), self.shutdown.clone())
                .await
            {
                Ok(running) => break running,
                Err(err) if attempts < 50 => {
                    attempts += 1;
                    eprintln!("registry restart: {err}; retrying");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
                Err(err) => panic!("registry restarts: {err}"),
            }
        };
        self.running = Some(running);
    }

    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    pub async fn api(&self) -> PresenceRegistryClient<Channel> {
        PresenceRegistryClient::connect(self.url()).await.expect("registry reachable")
    }

    pub async fn query(&self, user_ids: &[&str]) -> Vec<UserPresence> {
        self.api()
            .await
            .query(QueryRequest {
                app_id: "default".into(),
                user_ids: user_ids.iter().map(|u| u.to_string()).collect(),
                detail: true,
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
            .filter(|d| d.status == presence_proto::v1::DeviceStatus::Online as i32)
            .map(|d| d.device_id.clone())
            .collect();
        devices.sort();
        devices
    }

    /// Polls until `user` has exactly these online devices.
    pub async fn wait_online(&self, user: &str, expected: &[&str]) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let online = self.online_devices(user).await;
            if online == expected {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{user}: online {online:?}, expected {expected:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Every event of app `default`, in feed order.
    pub async fn events(&self) -> Vec<PresenceEvent> {
        let mut feed = EventFeedClient::connect(self.url()).await.expect("registry reachable");
        let mut all: Vec<PresenceEvent> = Vec::new();
        loop {
            let after_seq = all.last().map_or(0, |e| e.seq);
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
}

impl Drop for TestRegistry {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub struct TestGateway {
    pub running: Option<RunningGateway>,
    pub addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    pub shutdown: Shutdown,
}

impl TestGateway {
    /// A gateway attached to `registry`; `extra` overrides settings (e.g. short timeouts).
    pub async fn start(registry: &TestRegistry, id: &str, extra: &[(&str, &str)]) -> Self {
        let mut vars: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), registry.db.url.clone()),
            ("REGISTRY_URL".into(), registry.url()),
            ("GATEWAY_ID".into(), id.into()),
            ("GATEWAY_LISTEN_ADDR".into(), "127.0.0.1:0".into()),
            ("GATEWAY_METRICS_ADDR".into(), "127.0.0.1:0".into()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let config: GatewayConfig = presence_common::config::from_vars(vars).expect("gateway config");
        let shutdown = Shutdown::new();
        let running = connection_gateway::start(config, shutdown.clone()).await.expect("gateway starts");
        let gateway = Self {
            addr: running.listen_addr,
            metrics_addr: running.metrics_addr,
            running: Some(running),
            shutdown,
        };
        gateway.wait_attached().await;
        gateway
    }

    pub async fn wait_attached(&self) {
        let running = self.running.as_ref().expect("running");
        tokio::time::timeout(WAIT, async {
            while !running.is_attached() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("gateway attaches to the registry");
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await.expect("gateway reachable")
    }

    /// A client logged in as `user` on `device`.
    pub async fn login(&self, user: &str, device: &str, platform: Platform) -> (Client, LoginOk) {
        let mut client = self.client().await;
        let ok = tokio::time::timeout(WAIT, client.login(params(user, device, platform)))
            .await
            .expect("login answered in time")
            .expect("login accepted");
        (client, ok)
    }

    pub async fn metrics(&self) -> String {
        presence_common::tls::install_crypto_provider();
        reqwest::get(format!("http://{}/metrics", self.metrics_addr)).await.unwrap().text().await.unwrap()
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(WAIT, running.wait())
                .await
                .expect("gateway stops in time")
                .expect("stops cleanly");
        }
    }
}

impl Drop for TestGateway {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

pub fn token(user: &str) -> String {
    mint_token(SECRET, user, None, Duration::from_secs(3600)).unwrap()
}

pub fn params(user: &str, device: &str, platform: Platform) -> LoginParams {
    LoginParams { client_version: "1.0.0".into(), ..LoginParams::new(user, device, platform, token(user)) }
}

/// Reads frames until EOF; returns them (fails if the connection stays open).
pub async fn frames_until_eof(client: &mut Client) -> Vec<ServerFrame> {
    tokio::time::timeout(WAIT, async {
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = client.next_frame().await {
            frames.push(frame);
        }
        frames
    })
    .await
    .expect("the gateway closes the connection")
}

/// Reads a raw connection until the gateway closes it; returns the frames it sent.
pub async fn frames_until_closed(stream: &mut tokio::net::TcpStream) -> Vec<ServerFrame> {
    use tokio::io::AsyncReadExt;
    use tokio_util::codec::Decoder;
    let mut buf = bytes::BytesMut::new();
    tokio::time::timeout(WAIT, async {
        while let Ok(n) = stream.read_buf(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .expect("the gateway closes the connection");
    let mut codec = presence_proto::framing::ClientCodec::new();
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        frames.push(frame);
    }
    frames
}
