//! A loopback callback receiver for benchmarks: counts deliveries and unique event ids, and can
//! play a slow or flaky app backend.
//!
//! Usage: callback-sink [--addr 127.0.0.1:9000] [--delay-ms 0] [--fail-pct 0]
//! `GET /stats` -> {"requests", "unique", "duplicates", "failed", "first_ms", "last_ms", "logins",
//! "login_first_ms", "login_last_ms", "login_p50_ms", "login_p99_ms"} (first/last successful
//! delivery, Unix ms; the login figures are of first deliveries of `login` events only, latency =
//! receive time - `event_time_ms`: a paced load's logins, not the burst of disconnects when a load
//! generator exits); `POST /reset` clears them between phases.

use std::{
    collections::HashSet,
    net::SocketAddr,
    sync::Arc,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::State,
    http::HeaderMap,
    http::StatusCode,
    routing::{get, post},
};
use clap::Parser;
use parking_lot::Mutex;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:9000")]
    addr: SocketAddr,
    /// Delay before answering each request.
    #[arg(long, default_value_t = 0)]
    delay_ms: u64,
    /// Share of requests answered 500, in percent.
    #[arg(long, default_value_t = 0.0)]
    fail_pct: f64,
}

#[derive(Default)]
struct Stats {
    requests: u64,
    failed: u64,
    ids: HashSet<String>,
    first_ms: u64,
    last_ms: u64,
    /// Delivery latencies of login events, ms.
    login_latency_ms: Vec<u64>,
    login_first_ms: u64,
    login_last_ms: u64,
}

/// The fields of a callback's body this sink reads (the presence JSON of docs/http-api.md).
#[derive(serde::Deserialize)]
struct Event {
    #[serde(default)]
    action: String,
    #[serde(default)]
    event_time_ms: u64,
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let rank = ((p / 100.0) * sorted.len() as f64).ceil() as usize;
    sorted[rank.clamp(1, sorted.len()) - 1]
}

struct Sink {
    delay: Duration,
    fail_pct: f64,
    stats: Mutex<Stats>,
}

fn now_ms() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as u64).unwrap_or(0)
}

async fn receive(State(sink): State<Arc<Sink>>, headers: HeaderMap, body: Bytes) -> StatusCode {
    if !sink.delay.is_zero() {
        tokio::time::sleep(sink.delay).await;
    }
    if sink.fail_pct > 0.0 && rand::random::<f64>() * 100.0 < sink.fail_pct {
        sink.stats.lock().failed += 1;
        return StatusCode::INTERNAL_SERVER_ERROR;
    }
    let id = headers.get("x-presence-event-id").and_then(|v| v.to_str().ok()).unwrap_or_default().to_owned();
    let mut stats = sink.stats.lock();
    let now = now_ms();
    if stats.requests == 0 {
        stats.first_ms = now;
    }
    stats.requests += 1;
    stats.last_ms = now;
    if !stats.ids.insert(id) {
        return StatusCode::NO_CONTENT;
    }
    if let Ok(event) = serde_json::from_slice::<Event>(&body)
        && event.action == "login"
    {
        if stats.login_latency_ms.is_empty() {
            stats.login_first_ms = now;
        }
        stats.login_last_ms = now;
        stats.login_latency_ms.push(now.saturating_sub(event.event_time_ms));
    }
    StatusCode::NO_CONTENT
}

async fn stats(State(sink): State<Arc<Sink>>) -> Json<serde_json::Value> {
    let s = sink.stats.lock();
    let unique = s.ids.len() as u64;
    let mut latency = s.login_latency_ms.clone();
    latency.sort_unstable();
    Json(serde_json::json!({
        "requests": s.requests, "unique": unique, "duplicates": s.requests - unique,
        "failed": s.failed, "first_ms": s.first_ms, "last_ms": s.last_ms,
        "logins": latency.len(), "login_first_ms": s.login_first_ms, "login_last_ms": s.login_last_ms,
        "login_p50_ms": percentile(&latency, 50.0), "login_p99_ms": percentile(&latency, 99.0),
    }))
}

async fn reset(State(sink): State<Arc<Sink>>) -> StatusCode {
    *sink.stats.lock() = Stats::default();
    StatusCode::NO_CONTENT
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let sink = Arc::new(Sink {
        delay: Duration::from_millis(args.delay_ms),
        fail_pct: args.fail_pct,
        stats: Mutex::default(),
    });
    let app = Router::new()
        .route("/stats", get(stats))
        .route("/reset", post(reset))
        .fallback(receive)
        .with_state(sink);
    let listener = tokio::net::TcpListener::bind(args.addr).await?;
    eprintln!("callback-sink on {}", listener.local_addr()?);
    axum::serve(listener, app).await?;
    Ok(())
}
