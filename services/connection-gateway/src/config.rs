use std::{net::SocketAddr, path::PathBuf};

use serde::Deserialize;

use crate::limits::LimitSettings;

/// Gateway settings, from environment variables (names in `rename`).
#[derive(Debug, Clone, Deserialize)]
pub struct GatewayConfig {
    /// Device connections (client protocol). Default `0.0.0.0:7100`; bound with SO_REUSEPORT so
    /// several gateway processes can share it.
    #[serde(rename = "gateway_listen_addr", default = "default_listen")]
    pub listen_addr: SocketAddr,
    /// WebSocket device connections (browsers, mini-programs), upgraded at `/v1/connect`. Default
    /// `0.0.0.0:7101`; `off` turns the listener off. Shares TLS, limits and the connection cap
    /// with the TCP listener.
    #[serde(
        rename = "gateway_ws_listen_addr",
        default = "default_ws_listen",
        deserialize_with = "optional_addr"
    )]
    pub ws_listen_addr: Option<SocketAddr>,
    /// Comma-separated `Origin` values a WebSocket upgrade may come from (e.g.
    /// `https://chat.example.com`). Default empty: any origin, since the login token is the
    /// authentication.
    #[serde(rename = "gateway_ws_allowed_origins", default)]
    pub ws_allowed_origins: String,
    /// `/metrics` and `/healthz`. Default `127.0.0.1:9100` (operators only).
    #[serde(rename = "gateway_metrics_addr", default = "default_metrics")]
    pub metrics_addr: SocketAddr,
    /// This gateway's name at the registry. Default `gw-<hostname>-<pid>`.
    #[serde(default)]
    pub gateway_id: Option<String>,
    /// The registry's gRPC endpoint. Default `http://127.0.0.1:7200`.
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
    /// Where the apps (token secrets) live. Default `postgres://postgres@127.0.0.1:5432/presence`.
    #[serde(default = "presence_common::config::default_database_url")]
    pub database_url: String,
    /// Pool size; the gateway only reads `apps`. Default 2.
    #[serde(rename = "gateway_db_max_connections", default = "default_db_connections")]
    pub db_max_connections: u32,
    /// A connection must log in within this many seconds. Default 10.
    #[serde(rename = "gateway_login_timeout_s", default = "default_login_timeout")]
    pub login_timeout_s: u64,
    /// Heartbeat interval told to devices in `LoginOk`. Default 120.
    #[serde(rename = "gateway_heartbeat_interval_s", default = "default_heartbeat_interval")]
    pub heartbeat_interval_s: u32,
    /// Silence after which a device is disconnected with reason timeout. Default 400.
    #[serde(rename = "gateway_heartbeat_timeout_s", default = "default_heartbeat_timeout")]
    pub heartbeat_timeout_s: u32,
    /// Most open device connections. Default: the file-descriptor limit minus 256.
    #[serde(rename = "gateway_max_connections", default)]
    pub max_connections: Option<usize>,
    /// Runtime worker threads. Default: one per core; 1 (or 0) runs the single-threaded
    /// scheduler. Several gateway processes on one port (SO_REUSEPORT) with one thread each spend
    /// less CPU per heartbeat than threads that wake each other (docs/benchmarks.md, section 2).
    #[serde(rename = "gateway_worker_threads", default)]
    pub worker_threads: Option<usize>,
    /// Seconds between returns of freed heap memory to the system (`malloc_trim`, glibc only);
    /// 0 turns it off. Default 10.
    #[serde(rename = "gateway_memory_trim_interval_s", default = "default_memory_trim_interval")]
    pub memory_trim_interval_s: u64,
    /// Frames waiting for one device (not yet taken by its socket, or posted to it and not yet
    /// written) before it counts as not reading and is dropped. Default 32.
    #[serde(rename = "gateway_outbound_queue", default = "default_outbound_queue")]
    pub outbound_queue: usize,
    /// Users one device may subscribe to at once; a `Subscribe` beyond it is refused whole
    /// (`too_many_subscriptions`). Default 1000.
    #[serde(rename = "gateway_max_subscriptions_per_device", default = "default_max_subscriptions")]
    pub max_subscriptions_per_device: usize,
    /// PEM certificate chain; with `GATEWAY_TLS_KEY`, devices connect with TLS. Default: plain TCP.
    #[serde(rename = "gateway_tls_cert", default)]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for `GATEWAY_TLS_CERT`.
    #[serde(rename = "gateway_tls_key", default)]
    pub tls_key: Option<PathBuf>,
    /// Most concurrent connections from one source IP; more are answered with an `Error` frame
    /// (`too_many_connections`) and closed. Default 0 = off: NATs put many devices behind one IP,
    /// and the load generator spreads over a few 127.0.0.x sources.
    #[serde(rename = "gateway_max_connections_per_ip", default)]
    pub max_connections_per_ip: u32,
    /// Login attempts per second from one source IP (token bucket refill); beyond it a login is
    /// refused with `LoginError{code: "rate_limited"}` and the connection closed. Checked before
    /// the token, so a flood costs no JWT verification. Default 0 = off, for the same reasons.
    #[serde(rename = "gateway_login_rate_per_ip", default)]
    pub login_rate_per_ip: f64,
    /// Login attempts one source IP may make at once after being quiet (bucket size).
    /// Default 0 = twice `GATEWAY_LOGIN_RATE_PER_IP` (at least 1).
    #[serde(rename = "gateway_login_burst_per_ip", default)]
    pub login_burst_per_ip: u32,
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 7100))
}
fn default_ws_listen() -> Option<SocketAddr> {
    Some(SocketAddr::from(([0, 0, 0, 0], 7101)))
}
/// An address, or `off` (or empty) for none.
fn optional_addr<'de, D: serde::Deserializer<'de>>(deserializer: D) -> Result<Option<SocketAddr>, D::Error> {
    let text = String::deserialize(deserializer)?;
    match text.trim() {
        "" | "off" => Ok(None),
        addr => addr.parse().map(Some).map_err(serde::de::Error::custom),
    }
}
fn default_metrics() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9100))
}
fn default_db_connections() -> u32 {
    2
}
fn default_login_timeout() -> u64 {
    10
}
fn default_heartbeat_interval() -> u32 {
    120
}
fn default_heartbeat_timeout() -> u32 {
    400
}
fn default_memory_trim_interval() -> u64 {
    10
}
fn default_outbound_queue() -> usize {
    32
}
fn default_max_subscriptions() -> usize {
    1000
}

impl GatewayConfig {
    /// The per-IP limits of this configuration.
    pub fn limit_settings(&self) -> LimitSettings {
        LimitSettings {
            max_connections_per_ip: self.max_connections_per_ip,
            login_rate_per_ip: if self.login_rate_per_ip.is_finite() {
                self.login_rate_per_ip.max(0.0)
            } else {
                0.0
            },
            login_burst_per_ip: self.login_burst_per_ip,
        }
    }

    /// The WebSocket `Origin` allow-list.
    pub fn ws_origins(&self) -> crate::websocket::OriginPolicy {
        crate::websocket::OriginPolicy::new(
            self.ws_allowed_origins.split(',').filter(|o| !o.trim().is_empty()).map(str::to_owned),
        )
    }

    /// The configured id, or `gw-<hostname>-<pid>`.
    pub fn resolved_gateway_id(&self) -> String {
        if let Some(id) = self.gateway_id.as_ref().filter(|id| !id.is_empty()) {
            return id.clone();
        }
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .or_else(|_| std::fs::read_to_string("/etc/hostname"))
            .map(|h| h.trim().to_owned())
            .ok()
            .filter(|h| !h.is_empty())
            .unwrap_or_else(|| "localhost".to_owned());
        format!("gw-{host}-{}", std::process::id())
    }
}

impl Default for GatewayConfig {
    fn default() -> Self {
        presence_common::config::defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let c = GatewayConfig::default();
        assert_eq!(c.listen_addr.port(), 7100);
        assert_eq!(c.ws_listen_addr.map(|a| a.port()), Some(7101));
        assert!(c.ws_origins().allows(Some("https://any.example")));
        assert_eq!(c.metrics_addr.port(), 9100);
        assert_eq!(c.registry_url, "http://127.0.0.1:7200");
        assert_eq!((c.login_timeout_s, c.heartbeat_interval_s, c.heartbeat_timeout_s), (10, 120, 400));
        assert_eq!(c.outbound_queue, 32);
        assert_eq!(c.max_subscriptions_per_device, 1000);
        assert_eq!(c.limit_settings(), LimitSettings::default(), "per-IP limits are off by default");
        assert!(c.resolved_gateway_id().starts_with("gw-"));
    }

    #[test]
    fn variables_override() {
        let c: GatewayConfig = presence_common::config::from_vars([
            ("GATEWAY_ID", "gw-a"),
            ("GATEWAY_HEARTBEAT_TIMEOUT_S", "2"),
            ("GATEWAY_MAX_CONNECTIONS_PER_IP", "100"),
            ("GATEWAY_LOGIN_RATE_PER_IP", "0.5"),
            ("GATEWAY_LOGIN_BURST_PER_IP", "4"),
            ("REGISTRY_TLS_CA", "/etc/presence/ca.pem"),
            ("INTERNAL_TLS_CERT", "/etc/presence/gw.pem"),
            ("GATEWAY_WS_LISTEN_ADDR", "off"),
            ("GATEWAY_WS_ALLOWED_ORIGINS", "https://a.example, https://b.example"),
        ])
        .unwrap();
        assert_eq!(c.ws_listen_addr, None);
        assert!(c.ws_origins().allows(Some("https://b.example")));
        assert!(!c.ws_origins().allows(Some("https://c.example")));
        assert_eq!(c.resolved_gateway_id(), "gw-a");
        assert_eq!(c.registry_tls.ca.as_deref(), Some(std::path::Path::new("/etc/presence/ca.pem")));
        assert!(c.registry_tls.cert.is_some() && c.registry_tls.key.is_none());
        assert_eq!(c.heartbeat_timeout_s, 2);
        let limits = c.limit_settings();
        assert_eq!(
            (limits.max_connections_per_ip, limits.login_rate_per_ip, limits.login_burst_per_ip),
            (100, 0.5, 4)
        );
    }
}
