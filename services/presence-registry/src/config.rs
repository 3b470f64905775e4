use std::net::SocketAddr;

use serde::Deserialize;

/// Registry settings, from environment variables (names in `rename`).
#[derive(Debug, Clone, Deserialize)]
pub struct RegistryConfig {
    /// gRPC (registry API, gateway link, event feed, health, reflection). Default `127.0.0.1:7200`:
    /// internal, so set it to reach other machines (with internal auth and TLS).
    #[serde(rename = "registry_listen_addr", default = "default_listen")]
    pub listen_addr: SocketAddr,
    /// `/metrics` and `/healthz`. Default `127.0.0.1:9200`.
    #[serde(rename = "registry_metrics_addr", default = "default_metrics")]
    pub metrics_addr: SocketAddr,
    /// Default `postgres://postgres@127.0.0.1:5432/presence`.
    #[serde(default = "presence_common::config::default_database_url")]
    pub database_url: String,
    /// Pool size. Default 8.
    #[serde(rename = "registry_db_max_connections", default = "default_db_connections")]
    pub db_max_connections: u32,
    /// A gateway silent this long is presumed dead; its devices go offline (link_close). Default 30.
    #[serde(rename = "registry_gateway_lease_s", default = "default_lease")]
    pub gateway_lease_s: u64,
    /// How often leases and push_online expiries are checked. Default 1000 ms.
    #[serde(rename = "registry_sweep_interval_ms", default = "default_sweep")]
    pub sweep_interval_ms: u64,
    /// Most mutations written in one transaction (group commit). Default 512.
    #[serde(rename = "registry_commit_batch_max", default = "default_batch")]
    pub commit_batch_max: usize,
    /// This process's name among the registries (its member id adds a random suffix per start).
    /// Default `registry`.
    #[serde(rename = "registry_id", default = "default_id")]
    pub registry_id: String,
    /// The gRPC URL other processes reach this one at (routing). Default `http://` plus the
    /// listen address; for a wildcard listen address (0.0.0.0, in containers), the address of
    /// the interface that reaches the database (a container's or pod's own IP). With TLS, set it
    /// to a name the certificate carries.
    #[serde(rename = "registry_advertise_url", default)]
    pub advertise_url: Option<String>,
    /// How long a partition lease lasts; renewed every third of it. A paused or cut-off process
    /// stops serving its partitions after at most this (less a fifth). Default 6000 ms.
    #[serde(rename = "registry_partition_lease_ms", default = "default_partition_lease")]
    pub partition_lease_ms: u64,
    /// How often dead registries are looked for and partitions balanced. Default 250 ms.
    #[serde(rename = "registry_balance_interval_ms", default = "default_balance")]
    pub balance_interval_ms: u64,
    /// `REGISTRY_TLS_CERT`, `REGISTRY_TLS_KEY`, `REGISTRY_TLS_CLIENT_CA`: TLS, then mTLS, on the
    /// gRPC port. Default: all unset, plaintext.
    #[serde(flatten)]
    pub tls: presence_common::grpc_tls::ServerTls,
    /// `REGISTRY_TLS_CA`, `REGISTRY_TLS_DOMAIN`, `INTERNAL_TLS_CERT`, `INTERNAL_TLS_KEY`: TLS, then
    /// mTLS, to the other registries (queries of users they serve). Default: plaintext.
    #[serde(flatten)]
    pub peer_tls: presence_common::grpc_tls::ClientTls,
    /// `REGISTRY_INTERNAL_SECRET` (or `_FILE`), `REGISTRY_INTERNAL_AUTH`: every internal call
    /// carries a caller token signed with the secret. Required unless explicitly disabled.
    #[serde(flatten)]
    pub internal_auth: presence_common::internal_auth::ServerAuthConfig,
}

fn default_id() -> String {
    "registry".to_owned()
}
fn default_partition_lease() -> u64 {
    6000
}
fn default_balance() -> u64 {
    250
}
fn default_listen() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 7200))
}
fn default_metrics() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 9200))
}
fn default_db_connections() -> u32 {
    8
}
fn default_lease() -> u64 {
    30
}
fn default_sweep() -> u64 {
    1000
}
fn default_batch() -> usize {
    512
}

impl RegistryConfig {
    /// The URL other processes route to, for a server bound at `bound`.
    pub async fn advertised_url(&self, bound: SocketAddr) -> String {
        if let Some(url) = self.advertise_url.as_ref().filter(|url| !url.is_empty()) {
            return url.clone();
        }
        let scheme = if self.tls.mode() == "plaintext" { "http" } else { "https" };
        let mut addr = bound;
        if bound.ip().is_unspecified()
            && let Some(ip) = self.ip_towards_database().await
        {
            addr.set_ip(ip);
        }
        format!("{scheme}://{addr}")
    }

    /// The local address of the route to the database host: no packet is sent (a UDP socket
    /// only picks its source address when it connects).
    async fn ip_towards_database(&self) -> Option<std::net::IpAddr> {
        let options: sqlx::postgres::PgConnectOptions = self.database_url.parse().ok()?;
        let target = tokio::net::lookup_host((options.get_host(), options.get_port())).await.ok()?.next()?;
        let local: SocketAddr =
            if target.is_ipv4() { ([0, 0, 0, 0], 0).into() } else { "[::]:0".parse().ok()? };
        let socket = tokio::net::UdpSocket::bind(local).await.ok()?;
        socket.connect(target).await.ok()?;
        socket.local_addr().ok().map(|a| a.ip())
    }
}

impl Default for RegistryConfig {
    fn default() -> Self {
        presence_common::config::defaults()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tls_is_off_by_default_and_read_from_its_variables() {
        let c = RegistryConfig::default();
        assert_eq!(c.listen_addr.port(), 7200);
        assert_eq!(c.tls.mode(), "plaintext");
        let c: RegistryConfig = presence_common::config::from_vars([
            ("REGISTRY_TLS_CERT", "/etc/presence/registry.pem"),
            ("REGISTRY_TLS_KEY", "/etc/presence/registry.key"),
            ("REGISTRY_TLS_CLIENT_CA", "/etc/presence/ca.pem"),
            ("REGISTRY_COMMIT_BATCH_MAX", "64"),
        ])
        .expect("parses");
        assert_eq!(c.tls.mode(), "mtls");
        assert_eq!(c.commit_batch_max, 64, "typed variables still parse next to the flattened ones");
    }

    #[tokio::test]
    async fn a_wildcard_listener_advertises_the_address_that_reaches_the_database() {
        let c: RegistryConfig = presence_common::config::from_vars([(
            "DATABASE_URL",
            "postgres://postgres@127.0.0.1:5432/presence",
        )])
        .expect("parses");
        assert_eq!(c.advertised_url(SocketAddr::from(([0, 0, 0, 0], 7200))).await, "http://127.0.0.1:7200");
        assert_eq!(c.advertised_url(SocketAddr::from(([127, 0, 0, 2], 7201))).await, "http://127.0.0.2:7201");
        let c: RegistryConfig =
            presence_common::config::from_vars([("REGISTRY_ADVERTISE_URL", "https://r1.internal:7200")])
                .expect("parses");
        assert_eq!(
            c.advertised_url(SocketAddr::from(([0, 0, 0, 0], 7200))).await,
            "https://r1.internal:7200"
        );
    }
}
