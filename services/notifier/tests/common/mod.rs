//! A real registry, gateway and notifier in-process, and a callback receiver on loopback.
#![allow(dead_code)]

use std::{
    collections::{HashMap, HashSet},
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{Router, body::Bytes, extract::State, http::HeaderMap, http::StatusCode, routing::post};
use notifier::{NotifierConfig, RunningNotifier, Shutdown};
use presence_client::Client;
use presence_proto::v1::{Platform, PresenceEvent};

#[path = "../../../connection-gateway/tests/support/mod.rs"]
pub mod system;

pub use system::{TestGateway, TestRegistry, WAIT};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub event_id_header: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Bytes,
    pub json: serde_json::Value,
}

impl Received {
    pub fn event_id(&self) -> String {
        self.json["event_id"].as_str().unwrap_or_default().to_owned()
    }
    pub fn user(&self) -> String {
        self.json["user_id"].as_str().unwrap_or_default().to_owned()
    }
    pub fn user_version(&self) -> u64 {
        self.json["user_version"].as_u64().unwrap_or_default()
    }
}

/// An HTTP callback receiver that can fail or be slow on demand.
#[derive(Clone, Default)]
pub struct Receiver {
    pub accepted: Arc<Mutex<Vec<Received>>>,
    pub attempts: Arc<AtomicUsize>,
    pub failing: Arc<AtomicBool>,
    pub delay_ms: Arc<AtomicU64>,
    in_flight: Arc<AtomicUsize>,
    pub max_in_flight: Arc<AtomicUsize>,
}

async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    rx.attempts.fetch_add(1, Ordering::SeqCst);
    let now = rx.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    rx.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = rx.delay_ms.load(Ordering::SeqCst);
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    rx.in_flight.fetch_sub(1, Ordering::SeqCst);
    if rx.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let json = serde_json::from_slice(&body).expect("callback body is JSON");
    rx.accepted.lock().unwrap().push(Received {
        event_id_header: header("x-presence-event-id"),
        timestamp: header("x-presence-timestamp"),
        signature: header("x-presence-signature"),
        body,
        json,
    });
    StatusCode::NO_CONTENT
}

impl Receiver {
    /// Starts on 127.0.0.1 and returns its callback URL.
    pub async fn start(&self) -> String {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let app = Router::new().route("/callbacks", post(receive)).with_state(self.clone());
        tokio::spawn(async move { axum::serve(listener, app).await });
        format!("http://{addr}/callbacks")
    }

    pub fn accepted(&self) -> Vec<Received> {
        self.accepted.lock().unwrap().clone()
    }

    pub fn distinct_event_ids(&self) -> HashSet<String> {
        self.accepted().iter().map(Received::event_id).collect()
    }

    /// Waits until every one of `events` has been accepted at least once.
    pub async fn wait_for_all(&self, events: &[PresenceEvent]) {
        let expected: HashSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let got = self.distinct_event_ids();
            if expected.is_subset(&got) {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "{} of {} events delivered",
                expected.intersection(&got).count(),
                expected.len()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// user -> user_versions in arrival order, duplicates removed (receivers dedupe by event_id).
    pub fn versions_by_user(&self) -> HashMap<String, Vec<u64>> {
        let mut seen = HashSet::new();
        let mut by_user: HashMap<String, Vec<u64>> = HashMap::new();
        for r in self.accepted() {
            if seen.insert(r.event_id()) {
                by_user.entry(r.user()).or_default().push(r.user_version());
            }
        }
        by_user
    }
}

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

/// Polls `check` until it holds.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
