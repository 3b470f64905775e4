//! The real stack in-process on loopback: a registry on a fresh database, a connection-gateway
//! that devices log in to with the real client, and the facade; requests go over real HTTP.
#![allow(dead_code)]

use std::{net::SocketAddr, time::Duration};

use connection_gateway::RunningGateway;
use presence_client::{Client, LoginParams, mint_token};
use presence_common::testing::{TestDatabase, fresh_database};
use presence_proto::v1::{Platform, ReadEventsRequest, event_feed_client::EventFeedClient};
use presence_registry::RunningRegistry;
use rest_facade::{FacadeConfig, RunningFacade, Shutdown};
use serde_json::Value;

/// Bound on every wait: a hang fails instead of blocking.
pub const WAIT: Duration = Duration::from_secs(15);
/// API key of the app `default` (`TestDatabase::add_app` makes `key-<app_id>`).
pub const KEY: &str = "key-default";

pub struct Stack {
    pub db: TestDatabase,
    pub registry_addr: SocketAddr,
    pub facade_addr: SocketAddr,
    pub gateway_addr: SocketAddr,
    pub http: reqwest::Client,
    /// One token per part, so `stop` can stop them in order (a gateway reports its devices'
    /// disconnects to a registry that is still up).
    shutdown: [Shutdown; 3],
    registry: Option<RunningRegistry>,
    gateway: Option<RunningGateway>,
    facade: Option<RunningFacade>,
}

pub fn facade_config(db_url: &str, registry_url: &str, extra: &[(&str, &str)]) -> FacadeConfig {
    let mut vars = vec![
        ("DATABASE_URL".to_owned(), db_url.to_owned()),
        ("REGISTRY_URL".to_owned(), registry_url.to_owned()),
        ("FACADE_LISTEN_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
    ];
    vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    presence_common::config::from_vars(vars).expect("facade config")
}

pub fn http_client() -> reqwest::Client {
    presence_common::tls::install_crypto_provider();
    reqwest::Client::builder().timeout(WAIT).build().expect("reqwest client")
}

impl Stack {
    /// Apps `default` (policy one_per_platform, so one user can be online on several platforms)
    /// and `other`, each with API key `key-<app_id>` and token secret `secret-<app_id>`.
    pub async fn start() -> Self {
        let db = fresh_database().await;
        db.add_app("default", "secret-default").await;
        db.add_app("other", "secret-other").await;
        sqlx::query("UPDATE apps SET login_policy = 'one_per_platform'")
            .execute(&db.pool)
            .await
            .expect("policy");
        let shutdown = [Shutdown::new(), Shutdown::new(), Shutdown::new()];

        let registry_config: presence_registry::RegistryConfig = presence_common::config::from_vars([
            ("DATABASE_URL", db.url.clone()),
            ("REGISTRY_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("REGISTRY_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ])
        .expect("registry config");
        let registry =
            presence_registry::start(registry_config, shutdown[2].clone()).await.expect("registry starts");
        let registry_url = format!("http://{}", registry.grpc_addr);

        let gateway_config: connection_gateway::GatewayConfig = presence_common::config::from_vars([
            ("DATABASE_URL", db.url.clone()),
            ("REGISTRY_URL", registry_url.clone()),
            ("GATEWAY_ID", "gw-test".to_owned()),
            ("GATEWAY_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("GATEWAY_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ])
        .expect("gateway config");
        let gateway =
            connection_gateway::start(gateway_config, shutdown[1].clone()).await.expect("gateway starts");
        tokio::time::timeout(WAIT, async {
            while !gateway.is_attached() {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        })
        .await
        .expect("gateway attaches");

        let facade = rest_facade::start(facade_config(&db.url, &registry_url, &[]), shutdown[0].clone())
            .await
            .expect("facade starts");
        Self {
            registry_addr: registry.grpc_addr,
            facade_addr: facade.http_addr,
            gateway_addr: gateway.listen_addr,
            db,
            http: http_client(),
            shutdown,
            registry: Some(registry),
            gateway: Some(gateway),
            facade: Some(facade),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.facade_addr)
    }

    /// GET with the `default` app's key; (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(KEY, path).await
    }

    pub async fn get_as(&self, key: &str, path: &str) -> (u16, Value) {
        into_json(self.http.get(self.url(path)).bearer_auth(key).send().await).await
    }

    /// POST a JSON body with the `default` app's key.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_as(KEY, path, body).await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        into_json(self.http.post(self.url(path)).bearer_auth(key).json(body).send().await).await
    }

    /// A device of app `app` logged in through the gateway.
    pub async fn login_to(&self, app: &str, user: &str, device: &str, platform: Platform) -> Client {
        let token =
            mint_token(&format!("secret-{app}"), user, Some(app), Duration::from_secs(3600)).expect("token");
        let params = LoginParams {
            app_id: app.to_owned(),
            client_version: "2.0.0".to_owned(),
            ..LoginParams::new(user, device, platform, token)
        };
        let mut client = Client::connect(self.gateway_addr).await.expect("gateway reachable");
        tokio::time::timeout(WAIT, client.login(params))
            .await
            .expect("login answered in time")
            .expect("login accepted");
        client
    }

    /// A device of app `default`.
    pub async fn login(&self, user: &str, device: &str, platform: Platform) -> Client {
        self.login_to("default", user, device, platform).await
    }

    /// Every event of `app` straight from the registry's feed (the facade's source).
    pub async fn registry_events(&self, app: &str) -> Vec<presence_proto::v1::PresenceEvent> {
        let mut feed =
            EventFeedClient::connect(format!("http://{}", self.registry_addr)).await.expect("registry");
        feed.read_events(ReadEventsRequest { app_id: app.to_owned(), after_seq: 0, limit: 1000 })
            .await
            .expect("read events")
            .into_inner()
            .events
    }

    /// Stops facade, gateway, registry in turn; each must stop cleanly and in time.
    pub async fn stop(mut self) {
        self.shutdown[0].cancel();
        if let Some(facade) = self.facade.take() {
            tokio::time::timeout(WAIT, facade.wait()).await.expect("facade stops in time").expect("cleanly");
        }
        self.shutdown[1].cancel();
        if let Some(gateway) = self.gateway.take() {
            tokio::time::timeout(WAIT, gateway.wait())
                .await
                .expect("gateway stops in time")
                .expect("cleanly");
        }
        self.shutdown[2].cancel();
        if let Some(registry) = self.registry.take() {
            tokio::time::timeout(WAIT, registry.wait())
                .await
                .expect("registry stops in time")
                .expect("cleanly");
        }
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        self.shutdown.iter().for_each(Shutdown::cancel);
    }
}

pub async fn into_json(response: reqwest::Result<reqwest::Response>) -> (u16, Value) {
    let response = response.expect("facade answers");
    let status = response.status().as_u16();
    let text = response.text().await.expect("body");
    let json = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{status}: body is not JSON: {text}"));
    (status, json)
}

/// Asserts a JSON error of this status and code; returns its message.
pub fn assert_error(got: &(u16, Value), status: u16, code: &str) -> String {
    assert_eq!(got.0, status, "{got:?}");
    assert_eq!(got.1["error"]["code"], code, "{got:?}");
    got.1["error"]["message"].as_str().expect("message is a string").to_owned()
}

/// Polls `path` until `done` holds for its JSON body (presence changes are applied asynchronously
/// after a device's socket closes).
pub async fn eventually(stack: &Stack, path: &str, done: impl Fn(&Value) -> bool) -> Value {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let (status, body) = stack.get(path).await;
        if status == 200 && done(&body) {
            return body;
        }
        assert!(tokio::time::Instant::now() < deadline, "{path}: still {status} {body}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
