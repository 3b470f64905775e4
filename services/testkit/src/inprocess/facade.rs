//! The rest-facade in-process, and [`Stack`]: registry, gateway and facade together, as the REST
//! API's tests need them; requests go over real HTTP.

use presence_common::internal_auth::Role;
use std::net::SocketAddr;

use presence_client::{Client, LoginParams};
use presence_proto::v1::{Platform, PresenceEvent};
use rest_facade::RunningFacade;
use serde_json::Value;

use super::{Instance, SECRET, TestGateway, TestRegistry, config, token_for};
use crate::{TestDatabase, WAIT, eventually_ok, fresh_database};

/// API key of the app `default` (`TestDatabase::add_app` makes `key-<app_id>`).
pub const KEY: &str = "key-default";
/// Token secret of the app `other` of a [`Stack`].
pub const OTHER_SECRET: &str = "secret-other";

/// An HTTP client that gives up after [`WAIT`].
pub fn http_client() -> reqwest::Client {
    presence_common::tls::install_crypto_provider();
    reqwest::Client::builder().timeout(WAIT).build().expect("reqwest client")
}

pub struct TestFacade {
    pub addr: SocketAddr,
    instance: Instance<RunningFacade>,
}

impl TestFacade {
    /// A facade on `db` whose registry is `registry_url` (which need not be up).
    pub async fn start(db: &TestDatabase, registry_url: &str, overrides: &[(&str, &str)]) -> Self {
        let vars = [
            ("DATABASE_URL", db.url.clone()),
            ("REGISTRY_URL", registry_url.to_owned()),
            ("FACADE_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("FACADE_METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("INTERNAL_TOKEN", crate::internal_token(Role::Facade, "test-facade")),
        ];
        let config: rest_facade::FacadeConfig = config(&vars, overrides);
        let instance = Instance::start("facade", |shutdown| rest_facade::start(config, shutdown))
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        Self { addr: instance.running().http_addr, instance }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// A URL on the operator's listener (`/metrics`).
    pub fn metrics_url(&self, path: &str) -> String {
        format!("http://{}{path}", self.instance.running().metrics_addr)
    }

    /// Stops it; cleanly and in time, else panics.
    pub async fn stop(&mut self) {
        self.instance.stop().await;
    }
}

pub struct Stack {
    pub registry: TestRegistry,
    pub gateway: TestGateway,
    pub facade: TestFacade,
    pub http: reqwest::Client,
}

impl Stack {
    /// Apps `default` (token secret [`SECRET`]) and `other` ([`OTHER_SECRET`]), each with API key
    /// `key-<app_id>` and policy one_per_platform (so one user can be online on several platforms).
    pub async fn start() -> Self {
        let db = fresh_database().await;
        db.add_app("default", SECRET).await;
        db.add_app("other", OTHER_SECRET).await;
        sqlx::query("UPDATE apps SET login_policy = 'one_per_platform'")
            .execute(&db.pool)
            .await
            .expect("policy");
        let registry = TestRegistry::start_on(db, &[]).await;
        let gateway = TestGateway::start(&registry, "gw-test", &[]).await;
        let facade = TestFacade::start(&registry.db, &registry.url(), &[]).await;
        Self { registry, gateway, facade, http: http_client() }
    }

    pub fn url(&self, path: &str) -> String {
        self.facade.url(path)
    }

    /// GET with the `default` app's key; (status, JSON body).
    pub async fn get(&self, path: &str) -> (u16, Value) {
        self.get_as(KEY, path).await
    }

    pub async fn get_as(&self, key: &str, path: &str) -> (u16, Value) {
        into_json(self.http.get(self.url(path)).bearer_auth(key).send().await).await
    }

    /// GETs `path` until it answers 200 with a body for which `done` holds; returns that body.
    /// (Presence changes apply asynchronously after a device's socket closes.)
    pub async fn get_until(&self, path: &str, done: impl Fn(&Value) -> bool) -> Value {
        eventually_ok(path, async || {
            let (status, body) = self.get(path).await;
            if status == 200 && done(&body) { Ok(body) } else { Err((status, body)) }
        })
        .await
    }

    /// POST a JSON body with the `default` app's key.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        self.post_as(KEY, path, body).await
    }

    pub async fn post_as(&self, key: &str, path: &str, body: &Value) -> (u16, Value) {
        into_json(self.http.post(self.url(path)).bearer_auth(key).json(body).send().await).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> (u16, Value) {
        into_json(self.http.put(self.url(path)).bearer_auth(KEY).json(body).send().await).await
    }

    /// A device of the app `default` logged in through the gateway.
    pub async fn login(&self, user: &str, device: &str, platform: Platform) -> Client {
        self.login_to("default", SECRET, user, device, platform).await
    }

    /// A device of `app` (token secret `secret`) logged in through the gateway.
    pub async fn login_to(
        &self,
        app: &str,
        secret: &str,
        user: &str,
        device: &str,
        platform: Platform,
    ) -> Client {
        let params = LoginParams {
            app_id: app.to_owned(),
            client_version: "1.0.0".to_owned(),
            ..LoginParams::new(user, device, platform, token_for(secret, user, Some(app)))
        };
        self.gateway.login_with(params).await.0
    }

    /// Every event of `app` straight from the registry's feed (the facade's source).
    pub async fn registry_events(&self, app: &str) -> Vec<PresenceEvent> {
        self.registry.events_of(app).await
    }

    /// Stops facade, gateway, registry in turn (a gateway reports its devices' disconnects to a
    /// registry that is still up); each must stop cleanly and in time.
    pub async fn stop(mut self) {
        self.facade.stop().await;
        self.gateway.stop().await;
        self.registry.stop().await;
    }
}

/// (status, JSON body) of a facade answer; panics if the body is not JSON.
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
