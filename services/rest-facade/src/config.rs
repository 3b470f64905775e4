use std::net::SocketAddr;

use serde::Deserialize;

/// Facade settings, from environment variables (names in `rename`).
#[derive(Debug, Clone, Deserialize)]
pub struct FacadeConfig {
    /// REST API, `/openapi.json`, `/healthz`. Default `0.0.0.0:8080`: app backends reach it.
    #[serde(rename = "facade_listen_addr", default = "default_listen")]
    pub listen_addr: SocketAddr,
    /// `/metrics` and `/healthz`, for operators. Default `127.0.0.1:9400`.
    #[serde(rename = "facade_metrics_addr", default = "default_metrics")]
    pub metrics_addr: SocketAddr,
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
    /// Where the apps (API key hashes) live. Default `postgres://postgres@127.0.0.1:5432/presence`.
    #[serde(default = "presence_common::config::default_database_url")]
    pub database_url: String,
    /// Pool size; the facade only reads `apps`. Default 2.
    #[serde(rename = "facade_db_max_connections", default = "default_db_connections")]
    pub db_max_connections: u32,
    /// Longest a registry call may take before the request fails with 503. Default 5000.
    #[serde(rename = "facade_request_timeout_ms", default = "default_request_timeout")]
    pub request_timeout_ms: u64,
    /// Largest request body accepted; larger ones get 413. Default 1048576 (1 MiB): the largest
    /// query (500 ids of 256 bytes) fits even with every byte of every id written as a `\u`
    /// escape (about 770 kB).
    #[serde(rename = "facade_max_body_bytes", default = "default_max_body")]
    pub max_body_bytes: usize,
    /// A request's head must arrive within this; also how long an idle keep-alive connection
    /// stays open. Default 10000.
    #[serde(rename = "facade_header_read_timeout_ms", default = "default_header_timeout")]
    pub header_read_timeout_ms: u64,
    /// A request's body must arrive within this. Default 30000.
    #[serde(rename = "facade_body_read_timeout_ms", default = "default_body_timeout")]
    pub body_read_timeout_ms: u64,
    /// Largest request head; larger gets 431. Default 16384.
    #[serde(rename = "facade_max_header_bytes", default = "default_max_header")]
    pub max_header_bytes: usize,
    /// Connections served at once; more wait in the listen backlog. Default 4096.
    #[serde(rename = "facade_max_connections", default = "default_max_connections")]
    pub max_connections: usize,
}

impl FacadeConfig {
    /// The bounds on every connection to the REST port.
    pub fn http_limits(&self) -> presence_common::http::HttpLimits {
        presence_common::http::HttpLimits {
            header_read_timeout: std::time::Duration::from_millis(self.header_read_timeout_ms.max(1)),
            body_read_timeout: std::time::Duration::from_millis(self.body_read_timeout_ms.max(1)),
            max_header_bytes: self.max_header_bytes,
            max_connections: self.max_connections.max(1),
        }
    }
}

fn default_listen() -> SocketAddr {
    SocketAddr::from(([0, 0, 0, 0], 8080))
}
fn default_metrics() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9400))
}
fn default_db_connections() -> u32 {
    2
}
fn default_request_timeout() -> u64 {
    5000
}
fn default_max_body() -> usize {
    1024 * 1024
}
fn default_header_timeout() -> u64 {
    10_000
}
fn default_body_timeout() -> u64 {
    30_000
}
fn default_max_header() -> usize {
    16 * 1024
}
fn default_max_connections() -> usize {
    4096
}

impl Default for FacadeConfig {
    fn default() -> Self {
        presence_common::config::defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documentation() {
        let c = FacadeConfig::default();
        assert_eq!(c.listen_addr, "0.0.0.0:8080".parse().unwrap());
        assert_eq!(c.registry_url, "http://127.0.0.1:7200");
        assert_eq!(c.database_url, presence_common::config::default_database_url());
        assert_eq!((c.db_max_connections, c.request_timeout_ms, c.max_body_bytes), (2, 5000, 1_048_576));
    }

    #[test]
    fn variables_override_defaults() {
        let c: FacadeConfig = presence_common::config::from_vars([
            ("FACADE_LISTEN_ADDR", "127.0.0.1:0"),
            ("FACADE_MAX_BODY_BYTES", "10"),
            ("REGISTRY_URL", "http://10.0.0.1:7200"),
        ])
        .unwrap();
        assert_eq!(c.listen_addr.port(), 0);
        assert_eq!(c.max_body_bytes, 10);
        assert_eq!(c.registry_url, "http://10.0.0.1:7200");
    }
}
