//! A real registry, gateway and notifier in-process, and a callback receiver on loopback.
#![allow(dead_code)]

use std::net::SocketAddr;

use notifier::{NotifierConfig, RunningNotifier, Shutdown};
use presence_client::Client;
use presence_proto::v1::Platform;

#[path = "../../../connection-gateway/tests/support/mod.rs"]
pub mod system;

pub use system::{TestGateway, TestRegistry};
pub use testkit::{Receiver, WAIT, eventually};

/// A notifier in-process, restartable.
pub struct TestNotifier {
    pub running: Option<RunningNotifier>,
    pub shutdown: Shutdown,
    pub metrics_addr: SocketAddr,
    vars: Vec<(String, String)>,
}

impl TestNotifier {
    pub async fn start(registry: &TestRegistry, extra: &[(&str, &str)]) -> Self {
        let mut vars: Vec<(String, String)> = vec![
            ("DATABASE_URL".into(), registry.db.url.clone()),
            ("REGISTRY_URL".into(), registry.url()),
            ("NOTIFIER_METRICS_ADDR".into(), "127.0.0.1:0".into()),
            ("NOTIFIER_FLUSH_INTERVAL_MS".into(), "50".into()),
            ("NOTIFIER_BACKOFF_INITIAL_MS".into(), "20".into()),
            ("NOTIFIER_BACKOFF_MAX_MS".into(), "200".into()),
        ];
        vars.extend(extra.iter().map(|(k, v)| (k.to_string(), v.to_string())));
        let mut notifier =
            Self { running: None, shutdown: Shutdown::new(), metrics_addr: ([0, 0, 0, 0], 0).into(), vars };
        notifier.start_again().await;
        notifier
    }

    pub async fn start_again(&mut self) {
        let config: NotifierConfig = presence_common::config::from_vars(self.vars.clone()).expect("config");
        self.shutdown = Shutdown::new();
        let running = notifier::start(config, self.shutdown.clone()).await.expect("notifier starts");
        self.metrics_addr = running.metrics_addr;
        self.running = Some(running);
    }

    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let Some(running) = self.running.take() {
            tokio::time::timeout(WAIT, running.wait()).await.expect("stops in time").expect("stops cleanly");
        }
    }

    pub async fn metrics(&self) -> String {
        presence_common::tls::install_crypto_provider();
        reqwest::get(format!("http://{}/metrics", self.metrics_addr)).await.unwrap().text().await.unwrap()
    }
}

impl Drop for TestNotifier {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

/// A registry and a gateway, with app `default` calling back `url`.
pub async fn system(url: &str) -> (TestRegistry, TestGateway) {
    let registry = TestRegistry::start().await;
    registry.sql(&format!("UPDATE apps SET callback_url = '{url}' WHERE app_id = 'default'")).await;
    let gateway = TestGateway::start(&registry, "gw-1", &[]).await;
    (registry, gateway)
}

/// `rounds` logins of each of `users` users (devices alternate, so each login after the first
/// kicks the previous device): one `login` event each. Returns the clients, kept open.
pub async fn logins(gateway: &TestGateway, prefix: &str, users: usize, rounds: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for round in 0..rounds {
        for user in 0..users {
            let (client, _) =
                gateway.login(&format!("{prefix}{user}"), &format!("d{}", round % 2), Platform::Ios).await;
            clients.push(client);
        }
    }
    clients
}
