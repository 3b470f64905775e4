//! An HTTP callback receiver on loopback that records what it accepts and can fail or be slow
//! on demand: the app backend of the notifier's and the system's tests.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::Duration,
};

use axum::{
    Router,
    body::Bytes,
    extract::{RawQuery, State},
    http::HeaderMap,
    http::StatusCode,
    routing::post,
};
use presence_proto::v1::PresenceEvent;

use crate::eventually_ok;

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub event_id_header: String,
    pub timestamp: String,
    pub signature: String,
    pub body: Bytes,
    pub json: serde_json::Value,
    /// The callback URL's query string (empty when none).
    pub query: String,
    /// The W3C `traceparent` header (empty when none).
    pub traceparent: String,
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

async fn receive(
    State(rx): State<Receiver>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    rx.attempts.fetch_add(1, Ordering::SeqCst);
    let now = rx.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
    rx.max_in_flight.fetch_max(now, Ordering::SeqCst);
    let delay = rx.delay_ms.load(Ordering::SeqCst);
    // A slow app backend, on demand: the wait is the point.
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    rx.in_flight.fetch_sub(1, Ordering::SeqCst);
    if rx.failing.load(Ordering::SeqCst) {
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let header = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let Ok(json) = serde_json::from_slice(&body) else { return StatusCode::BAD_REQUEST };
    lock(&rx.accepted).push(Received {
        event_id_header: header("x-presence-event-id"),
        timestamp: header("x-presence-timestamp"),
        signature: header("x-presence-signature"),
        body,
        json,
        query: query.unwrap_or_default(),
        traceparent: header("traceparent"),
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
        lock(&self.accepted).clone()
    }

    pub fn distinct_event_ids(&self) -> HashSet<String> {
        self.accepted().iter().map(Received::event_id).collect()
    }

    /// Waits until every one of `events` has been accepted at least once.
    pub async fn wait_for_all(&self, events: &[PresenceEvent]) {
        self.wait_for_ids(events.iter().map(|e| e.event_id.clone()).collect()).await;
    }

    /// Waits until every event id of `expected` has been accepted at least once.
    pub async fn wait_for_ids(&self, expected: HashSet<String>) {
        eventually_ok("every event delivered", async || {
            let got = self.distinct_event_ids();
            let delivered = expected.intersection(&got).count();
            if delivered == expected.len() {
                Ok(())
            } else {
                Err(format!("{delivered} of {}", expected.len()))
            }
        })
        .await;
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

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}
