use std::net::SocketAddr;

use serde::Deserialize;

/// Notifier settings, from environment variables (names in `rename`).
#[derive(Debug, Clone, Deserialize)]
pub struct NotifierConfig {
    /// `/metrics` and `/healthz`. Default `127.0.0.1:9300` (operators only).
    #[serde(rename = "notifier_metrics_addr", default = "default_metrics")]
    pub metrics_addr: SocketAddr,
    /// The registry's event feed. Default `http://127.0.0.1:7200`.
    #[serde(default = "presence_common::config::default_registry_url")]
    pub registry_url: String,
    /// `REGISTRY_TLS_CA`, `REGISTRY_TLS_DOMAIN`, `INTERNAL_TLS_CERT`, `INTERNAL_TLS_KEY`: TLS, then
    /// mTLS, to the registry. Default: all unset, plaintext.
    #[serde(flatten)]
    pub registry_tls: presence_common::grpc_tls::ClientTls,
    /// `INTERNAL_TOKEN` (or `INTERNAL_TOKEN_FILE`): this service's caller token for the registry
    /// (`presence-cli internal-token`).
    #[serde(flatten)]
    pub internal_auth: presence_common::internal_auth::ClientAuthConfig,
    /// Default `postgres://postgres@127.0.0.1:5432/presence`.
    #[serde(default = "presence_common::config::default_database_url")]
    pub database_url: String,
    /// Pool size. Default 4.
    #[serde(rename = "notifier_db_max_connections", default = "default_db_connections")]
    pub db_max_connections: u32,
    /// Name of this notifier's cursor row; two notifiers with different names each deliver
    /// everything. Default `notifier`.
    #[serde(rename = "notifier_consumer", default = "default_consumer")]
    pub consumer: String,
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
    /// Events held in memory (received, not yet delivered); beyond it the feed is paused.
    /// Default 200000.
    #[serde(rename = "notifier_max_pending", default = "default_max_pending")]
    pub max_pending: usize,
    /// How often the cursor is written and dead letters are checked for replay. Default 500 ms.
    #[serde(rename = "notifier_flush_interval_ms", default = "default_flush_interval")]
    pub flush_interval_ms: u64,
}

fn default_metrics() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9300))
}
fn default_db_connections() -> u32 {
    4
}
fn default_consumer() -> String {
    "notifier".to_owned()
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
fn default_flush_interval() -> u64 {
    500
}

impl Default for NotifierConfig {
    fn default() -> Self {
        presence_common::config::defaults()
    }
}
