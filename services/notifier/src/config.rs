use std::net::SocketAddr;

use serde::Deserialize;

/// Notifier settings, from environment variables (names in `rename`).
#[derive(Debug, Clone, Deserialize)]
pub struct NotifierConfig {
    /// `/metrics` and `/healthz`. Default `127.0.0.1:9300` (operators only).
    #[serde(rename = "notifier_metrics_addr", default = "default_metrics")]
    pub metrics_addr: SocketAddr,
    /// Default `postgres://postgres@127.0.0.1:5432/presence`.
    #[serde(default = "presence_common::config::default_database_url")]
    pub database_url: String,
    /// Pool size. Default 4.
    #[serde(rename = "notifier_db_max_connections", default = "default_db_connections")]
    pub db_max_connections: u32,
    /// Names this process among the notifiers sharing the partitions (a random suffix is added
    /// at each start). Default `notifier`.
    #[serde(rename = "notifier_id", default = "default_id")]
    pub notifier_id: String,
    /// How long a partition lease lasts; renewed every third of it. A paused or cut-off notifier
    /// stops reading its partitions after at most this (less a fifth). Default 6000 ms.
    #[serde(rename = "notifier_partition_lease_ms", default = "default_partition_lease")]
    pub partition_lease_ms: u64,
    /// How often dead notifiers are looked for and partitions balanced. Default 250 ms.
    #[serde(rename = "notifier_balance_interval_ms", default = "default_balance_interval")]
    pub balance_interval_ms: u64,
    /// How often the notifier looks for new events when it has read everything. Default 50 ms.
    #[serde(rename = "notifier_poll_interval_ms", default = "default_poll_interval")]
    pub poll_interval_ms: u64,
    /// Timeout of one callback request. Default 2000 ms.
    #[serde(rename = "notifier_request_timeout_ms", default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// Callback requests in flight per app (different users only: one user is sequential).
    /// Default 64.
    #[serde(rename = "notifier_concurrency_per_app", default = "default_concurrency")]
    pub concurrency_per_app: usize,
    /// First retry delay; doubles per attempt, with jitter. Default 200 ms.
    #[serde(rename = "notifier_backoff_initial_ms", default = "default_backoff_initial")]
    pub backoff_initial_ms: u64,
    /// Longest retry delay. Default 30000 ms.
    #[serde(rename = "notifier_backoff_max_ms", default = "default_backoff_max")]
    pub backoff_max_ms: u64,
    /// Attempts before an event is dead-lettered (0: no limit). Default 100 (about 45 minutes).
    #[serde(rename = "notifier_max_attempts", default = "default_max_attempts")]
    pub max_attempts: u32,
    /// Age of the first failed attempt after which an event is dead-lettered (0: no limit).
    /// Default 3600 s.
    #[serde(rename = "notifier_max_age_s", default = "default_max_age")]
    pub max_age_s: u64,
    /// Events held in memory (received, not yet delivered), all apps together; beyond it new
    /// events stay in Postgres until there is room. Default 200000.
    #[serde(rename = "notifier_max_pending", default = "default_max_pending")]
    pub max_pending: usize,
    /// Events of one app held in memory; beyond it the app's further events stay in Postgres
    /// (read again once it is down to half), so a dead or slow receiver holds at most this.
    /// Default 10000.
    #[serde(rename = "notifier_max_pending_per_app", default = "default_max_pending_per_app")]
    pub max_pending_per_app: usize,
    /// Consecutive receiver failures (no answer, 5xx, 408, 429) that open an app's circuit:
    /// its callbacks are then held, and one probe at a time tests the receiver. Default 10.
    #[serde(rename = "notifier_circuit_failures", default = "default_circuit_failures")]
    pub circuit_failures: u32,
    /// First wait of an open circuit before its probe; doubles per failed probe. Default 100 ms.
    #[serde(rename = "notifier_circuit_probe_initial_ms", default = "default_probe_initial")]
    pub circuit_probe_initial_ms: u64,
    /// Longest wait between probes: held callbacks go at most this long after the receiver is
    /// back. Default 2000 ms.
    #[serde(rename = "notifier_circuit_probe_max_ms", default = "default_probe_max")]
    pub circuit_probe_max_ms: u64,
    /// Comma-separated app ids that get their own `app` label in the metrics (empty: the first
    /// `NOTIFIER_METRIC_APPS_MAX` apps seen). Other apps share `app="_other"`. Default empty.
    #[serde(rename = "notifier_metric_apps", default)]
    pub metric_apps: String,
    /// Apps labelled by id when `NOTIFIER_METRIC_APPS` is empty. Default 50.
    #[serde(rename = "notifier_metric_apps_max", default = "default_metric_apps_max")]
    pub metric_apps_max: usize,
    /// How often the partitions' cursors are written and dead letters are checked for replay. Default 500 ms.
    #[serde(rename = "notifier_flush_interval_ms", default = "default_flush_interval")]
    pub flush_interval_ms: u64,
}

fn default_metrics() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9300))
}
fn default_db_connections() -> u32 {
    4
}
fn default_id() -> String {
    "notifier".to_owned()
}
fn default_partition_lease() -> u64 {
    6000
}
fn default_balance_interval() -> u64 {
    250
}
fn default_poll_interval() -> u64 {
    50
}
fn default_request_timeout() -> u64 {
    2000
}
fn default_concurrency() -> usize {
    64
}
fn default_backoff_initial() -> u64 {
    200
}
fn default_backoff_max() -> u64 {
    30_000
}
fn default_max_attempts() -> u32 {
    100
}
fn default_max_age() -> u64 {
    3600
}
fn default_max_pending() -> usize {
    200_000
}
fn default_max_pending_per_app() -> usize {
    10_000
}
fn default_circuit_failures() -> u32 {
    10
}
fn default_probe_initial() -> u64 {
    100
}
fn default_probe_max() -> u64 {
    2000
}
fn default_metric_apps_max() -> usize {
    50
}
fn default_flush_interval() -> u64 {
    500
}

impl Default for NotifierConfig {
    fn default() -> Self {
        presence_common::config::defaults()
    }
}
