//! The four services as processes on loopback ports around a fresh database, with a callback
//! receiver as the app backend: what the system tests drive.

use std::net::SocketAddr;

use presence_client::{Client, LoginParams};
use presence_common::config::default_database_url;
use presence_proto::v1::{LoginOk, Platform};
use serde_json::{Value, json};

pub use crate::inprocess::SECRET;
use presence_common::internal_auth::Role;

use crate::{
    INTERNAL_SECRET, Receiver, ServiceProcess,
    database::{RUNTIME_ROLE, TestDatabase, empty_database_on},
    eventually_ok, free_port,
    inprocess::token,
    internal_token,
};

/// What the service processes of a test run against: a fresh database migrated by
/// `presence-migrate`, the app `default` with its callbacks going to a [`Receiver`].
pub struct Deployment {
    pub db: TestDatabase,
    /// The database as the services connect: as [`RUNTIME_ROLE`].
    pub runtime_url: String,
    pub receiver: Receiver,
}

impl Deployment {
    /// On the Postgres server of `server` (any `.../<database>` URL of it).
    pub async fn prepare(server: &str) -> Self {
        // As in a deployment: the schema's owner migrates and grants; the services connect as
        // the runtime role, which can read and write rows but change no schema.
        let db = empty_database_on(server).await;
        let runtime_url = db.runtime_url().await;
        crate::process::run_to_end(
            "presence-migrate",
            &[("DATABASE_URL", db.url.clone()), ("PRESENCE_RUNTIME_ROLE", RUNTIME_ROLE.to_owned())],
        );
        db.add_app("default", SECRET).await;
        let receiver = Receiver::default();
        let callback_url = receiver.start().await;
        sqlx::query("UPDATE apps SET callback_url = $1")
            .bind(&callback_url)
            .execute(&db.pool)
            .await
            .expect("set callback URL");
        Self { db, runtime_url, receiver }
    }
}

/// A running service process and its `/healthz` address.
pub struct Service {
    pub process: ServiceProcess,
    pub admin_addr: SocketAddr,
}

impl Service {
    pub fn spawn(binary: &str, name: &str, admin_addr: SocketAddr, env: &[(&str, String)]) -> Self {
        Self { process: ServiceProcess::spawn(binary, name, env), admin_addr }
    }

    pub async fn wait_healthy(&mut self) {
        self.process.wait_healthy(self.admin_addr).await;
    }

    /// SIGKILL, then the same binary again, healthy.
    pub async fn kill9_and_restart(&mut self) {
        self.process.kill9();
        self.process.restart();
        self.wait_healthy().await;
    }
}

pub struct System {
    pub db: TestDatabase,
    pub receiver: Receiver,
    pub registry: Service,
    pub gateway: Service,
    pub notifier: Service,
    pub facade: Service,
    pub gateway_addr: SocketAddr,
    /// The gateway's WebSocket listener (`ws://{gateway_ws_addr}/v1/connect`).
    pub gateway_ws_addr: SocketAddr,
    pub facade_url: String,
    registry_url: String,
    service_env: Vec<(&'static str, String)>,
    /// What the services connect with: the test database as [`RUNTIME_ROLE`].
    runtime_url: String,
}

/// Short lease and sweep so that fault tests finish quickly.
pub const LEASE_S: u64 = 3;

/// How [`System::start_with`] differs from [`System::start`].
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// A URL of the Postgres server to create the test database on (any `.../<database>`);
    /// `None`: the shared server of `DATABASE_URL`.
    pub database_server: Option<String>,
    /// Extra variables for the facade process (e.g. shorter HTTP timeouts).
    pub facade_env: Vec<(&'static str, String)>,
    /// Extra variables for every service process (e.g. [`crate::traces::TraceReceiver::env`]).
    pub service_env: Vec<(&'static str, String)>,
}

impl System {
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(options: Options) -> Self {
        let server = match options.database_server {
            Some(server) => server,
            None => std::env::var("DATABASE_URL").unwrap_or_else(|_| default_database_url()),
        };
        let Deployment { db, runtime_url, receiver } = Deployment::prepare(&server).await;

        let (registry_grpc, registry_admin) = (free_port(), free_port());
        let registry_url = format!("http://{registry_grpc}");
        let common = [
            vec![("DATABASE_URL", runtime_url.clone()), ("REGISTRY_URL", registry_url.clone())],
            options.service_env.clone(),
        ]
        .concat();
        let env = |extra: &[(&'static str, String)]| [&common[..], extra].concat();
        let mut registry = Service::spawn(
            "presence-registry",
            "registry",
            registry_admin,
            &env(&[
                ("REGISTRY_LISTEN_ADDR", registry_grpc.to_string()),
                ("REGISTRY_METRICS_ADDR", registry_admin.to_string()),
                ("REGISTRY_GATEWAY_LEASE_S", LEASE_S.to_string()),
                ("REGISTRY_SWEEP_INTERVAL_MS", "200".into()),
                ("REGISTRY_INTERNAL_SECRET", INTERNAL_SECRET.into()),
                // Tests run side by side on one server with 100 connection slots.
                ("REGISTRY_DB_MAX_CONNECTIONS", "4".into()),
            ]),
        );
        registry.wait_healthy().await;
        let notifier_admin = free_port();
        let mut notifier = Service::spawn(
            "notifier",
            "notifier",
            notifier_admin,
            &env(&[
                ("NOTIFIER_METRICS_ADDR", notifier_admin.to_string()),
                ("NOTIFIER_FLUSH_INTERVAL_MS", "100".into()),
                ("NOTIFIER_BACKOFF_INITIAL_MS", "50".into()),
                ("NOTIFIER_BACKOFF_MAX_MS", "500".into()),
            ]),
        );
        let facade_addr = free_port();
        let mut facade = Service::spawn(
            "rest-facade",
            "facade",
            facade_addr,
            &env(&[
                &[
                    ("FACADE_LISTEN_ADDR", facade_addr.to_string()),
                    ("FACADE_METRICS_ADDR", free_port().to_string()),
                    ("INTERNAL_TOKEN", internal_token(Role::Facade, "facade-1")),
                ][..],
                &options.facade_env,
            ]
            .concat()),
        );
        notifier.wait_healthy().await;
        facade.wait_healthy().await;
        let (gateway, gateway_addr, gateway_ws_addr) =
            spawn_gateway(&runtime_url, &registry_url, "gw-1", &options.service_env).await;
        Self {
            db,
            receiver,
            registry,
            gateway,
            notifier,
            facade,
            gateway_addr,
            gateway_ws_addr,
            facade_url: format!("http://{facade_addr}"),
            registry_url,
            service_env: options.service_env,
            runtime_url,
        }
    }

    /// The test database as the services see it: connected as the runtime role.
    pub fn runtime_url(&self) -> &str {
        &self.runtime_url
    }

    /// The registry's gRPC URL (e.g. for a health check).
    pub fn registry_url(&self) -> &str {
        &self.registry_url
    }

    /// Panics if any of the four processes has exited (naming it, with its log), else waits until
    /// each answers `/healthz`.
    pub async fn assert_all_running(&mut self) {
        for service in [&mut self.registry, &mut self.gateway, &mut self.notifier, &mut self.facade] {
            service.wait_healthy().await;
        }
    }

    /// Another gateway process on the same registry; returns it and its device address.
    pub async fn spawn_gateway(&self, id: &str) -> (Service, SocketAddr) {
        let (gateway, addr, _) =
            spawn_gateway(&self.runtime_url, &self.registry_url, id, &self.service_env).await;
        (gateway, addr)
    }

    /// Logs a device in at the first gateway.
    pub async fn login(&self, user: &str, device: &str, platform: Platform, push: bool) -> (Client, LoginOk) {
        self.login_at(self.gateway_addr, user, device, platform, push).await
    }

    /// Logs a device in at `gateway`, retrying while it is still attaching to the registry.
    pub async fn login_at(
        &self,
        gateway: SocketAddr,
        user: &str,
        device: &str,
        platform: Platform,
        push: bool,
    ) -> (Client, LoginOk) {
        let token = token(user);
        eventually_ok(&format!("login of {user}"), async || {
            let mut client = Client::connect(gateway).await.expect("gateway reachable");
            let params = LoginParams {
                push_enabled: push,
                client_version: "2.1.0".into(),
                ..LoginParams::new(user, device, platform, token.clone())
            };
            client.login(params).await.map(|ok| (client, ok))
        })
        .await
    }

    pub async fn rest(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.facade_url))
            .bearer_auth("key-default");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("facade answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON answer"))
    }

    /// Statuses of `users` by REST; panics unless the facade answers 200.
    pub async fn statuses(&self, users: &[&str]) -> Vec<String> {
        match self.try_statuses(users).await {
            Ok(statuses) => statuses,
            Err(body) => panic!("query failed: {body}"),
        }
    }

    /// Statuses of `users` by REST, or the error answer (e.g. 503 while the registry restarts).
    pub async fn try_statuses(&self, users: &[&str]) -> Result<Vec<String>, Value> {
        let (status, body) =
            self.rest(reqwest::Method::POST, "/v1/presence/query", Some(json!({"user_ids": users}))).await;
        if status != 200 {
            return Err(body);
        }
        Ok(body["results"]
            .as_array()
            .map(|results| {
                results.iter().map(|r| r["status"].as_str().unwrap_or_default().to_owned()).collect()
            })
            .unwrap_or_default())
    }

    pub async fn events(&self) -> Vec<Value> {
        let (status, body) = self.rest(reqwest::Method::GET, "/v1/events?after_seq=0&limit=1000", None).await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().expect("events").clone()
    }
}

/// A gateway process; returns it, its device address and its WebSocket address.
async fn spawn_gateway(
    database_url: &str,
    registry_url: &str,
    id: &str,
    extra: &[(&'static str, String)],
) -> (Service, SocketAddr, SocketAddr) {
    let (listen, web, admin) = (free_port(), free_port(), free_port());
    let mut gateway = Service::spawn(
        "connection-gateway",
        id,
        admin,
        &[
            extra,
            &[
                ("DATABASE_URL", database_url.to_owned()),
                ("REGISTRY_URL", registry_url.to_owned()),
                ("GATEWAY_ID", id.to_owned()),
                ("INTERNAL_TOKEN", internal_token(Role::Gateway, id)),
                ("GATEWAY_LISTEN_ADDR", listen.to_string()),
                ("GATEWAY_WS_LISTEN_ADDR", web.to_string()),
                ("GATEWAY_METRICS_ADDR", admin.to_string()),
            ][..],
        ]
        .concat(),
    );
    gateway.wait_healthy().await;
    (gateway, listen, web)
}
