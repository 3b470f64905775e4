//! A connection-gateway in-process, attached to a [`TestRegistry`].

use presence_common::internal_auth::Role;
use std::net::SocketAddr;

use connection_gateway::RunningGateway;
use presence_client::{Client, LoginParams};
use presence_proto::v1::{LoginOk, Platform};

use super::{Instance, TestRegistry, config, params};
use crate::{WAIT, eventually};

pub struct TestGateway {
    /// Where devices connect.
    pub addr: SocketAddr,
    /// Where web devices connect (WebSocket, path `/v1/connect`).
    pub ws_addr: SocketAddr,
    pub metrics_addr: SocketAddr,
    instance: Instance<RunningGateway>,
}

impl TestGateway {
    /// A gateway with id `id` attached to `registry`; `overrides` change settings (e.g. short
    /// timeouts, or TLS to the registry).
    pub async fn start(registry: &TestRegistry, id: &str, overrides: &[(&str, &str)]) -> Self {
        let vars = [
            ("DATABASE_URL", registry.db.url.clone()),
            ("REGISTRY_URL", registry.url()),
            ("GATEWAY_ID", id.to_owned()),
            ("INTERNAL_TOKEN", crate::internal_token(Role::Gateway, id)),
            ("GATEWAY_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("GATEWAY_WS_LISTEN_ADDR", "127.0.0.1:0".to_owned()),
            ("GATEWAY_METRICS_ADDR", "127.0.0.1:0".to_owned()),
        ];
        let config: connection_gateway::GatewayConfig = config(&vars, overrides);
        let instance = Instance::start(id, |shutdown| connection_gateway::start(config, shutdown))
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        let running = instance.running();
        let ws_addr = running.ws_addr.expect("a WebSocket listener");
        let gateway =
            Self { addr: running.listen_addr, ws_addr, metrics_addr: running.metrics_addr, instance };
        gateway.wait_attached().await;
        gateway
    }

    /// Whether its registry link is attached (logins are accepted).
    pub fn is_attached(&self) -> bool {
        self.instance.running().is_attached()
    }

    /// Waits until its registry link is attached.
    pub async fn wait_attached(&self) {
        eventually("the gateway to attach to the registry", async || self.instance.running().is_attached())
            .await;
    }

    pub async fn client(&self) -> Client {
        Client::connect(self.addr).await.expect("gateway reachable")
    }

    /// A client logged in as `user` on `device` in the app `default`.
    pub async fn login(&self, user: &str, device: &str, platform: Platform) -> (Client, LoginOk) {
        self.login_with(params(user, device, platform)).await
    }

    /// A client logged in with `params`; panics unless the login is accepted in time.
    pub async fn login_with(&self, params: LoginParams) -> (Client, LoginOk) {
        let mut client = self.client().await;
        let ok = tokio::time::timeout(WAIT, client.login(params))
            .await
            .expect("login answered in time")
            .expect("login accepted");
        (client, ok)
    }

    /// The URL web devices connect to.
    pub fn ws_url(&self) -> String {
        format!("ws://{}/v1/connect", self.ws_addr)
    }

    /// Its `/metrics` page.
    pub async fn metrics(&self) -> String {
        super::get_text(self.metrics_addr, "/metrics").await
    }

    /// Stops it: devices are disconnected and reported; cleanly and in time, else panics.
    pub async fn stop(&mut self) {
        self.instance.stop().await;
    }
}
