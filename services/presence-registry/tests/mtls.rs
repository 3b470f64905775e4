//! mTLS on the internal gRPC links: a registry configured with REGISTRY_TLS_CERT/KEY/CLIENT_CA
//! serves only clients that trust its CA and present a certificate signed by the client CA.
//! Certificates are generated at test time (rcgen); nothing is checked in.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::{path::PathBuf, time::Duration};

use presence_common::{
    grpc_tls::ClientTls,
    internal_auth::{CallerToken, Role},
};
use presence_proto::v1::{
    DeviceStatus, Platform, QueryReply, QueryRequest, presence_registry_client::PresenceRegistryClient,
};
use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
    KeyUsagePurpose,
};
use testkit::{
    WAIT, eventually_ok,
    inprocess::{TestGateway, TestRegistry},
};
use tonic::transport::Endpoint;

/// Bound on one attempt that is expected to fail: a refusal must not look like a hang.
const REFUSAL: Duration = Duration::from_secs(5);

/// A throwaway directory of PEM files: a CA, the registry's certificate (localhost, 127.0.0.1),
/// a client certificate signed by the CA, and a second, unrelated CA with its own client.
struct Pki {
    dir: PathBuf,
}

impl Pki {
    fn new() -> Self {
        let dir = std::env::temp_dir().join(format!("presence-mtls-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let pki = Self { dir };
        let ca = pki.ca("ca", "presence test CA");
        pki.leaf(&ca, "registry", &["localhost", "127.0.0.1"], ExtendedKeyUsagePurpose::ServerAuth);
        pki.leaf(&ca, "client", &[], ExtendedKeyUsagePurpose::ClientAuth);
        let other = pki.ca("other-ca", "some other CA");
        pki.leaf(&other, "stranger", &[], ExtendedKeyUsagePurpose::ClientAuth);
        pki
    }

    fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    fn path_str(&self, name: &str) -> String {
        self.path(name).display().to_string()
    }

    fn write(&self, name: &str, pem: &str) {
        std::fs::write(self.path(name), pem).expect("write PEM");
    }

    fn ca(&self, name: &str, common_name: &str) -> Issuer<'static, KeyPair> {
        let key = KeyPair::generate().expect("CA key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("CA params");
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, common_name);
        params.key_usages =
            vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign, KeyUsagePurpose::DigitalSignature];
        let cert = params.self_signed(&key).expect("CA certificate");
        self.write(&format!("{name}.pem"), &cert.pem());
        Issuer::new(params, key)
    }

    fn leaf(&self, issuer: &Issuer<'_, KeyPair>, name: &str, sans: &[&str], usage: ExtendedKeyUsagePurpose) {
        let key = KeyPair::generate().expect("leaf key");
        let mut params =
            CertificateParams::new(sans.iter().map(|s| s.to_string()).collect::<Vec<_>>()).expect("params");
        params.distinguished_name.push(DnType::CommonName, name);
        params.extended_key_usages = vec![usage];
        let cert = params.signed_by(&key, issuer).expect("signed certificate");
        self.write(&format!("{name}.pem"), &cert.pem());
        self.write(&format!("{name}.key"), &key.serialize_pem());
    }

    /// Registry variables for mTLS.
    fn registry_vars(&self) -> Vec<(String, String)> {
        vec![
            ("REGISTRY_TLS_CERT".into(), self.path_str("registry.pem")),
            ("REGISTRY_TLS_KEY".into(), self.path_str("registry.key")),
            ("REGISTRY_TLS_CLIENT_CA".into(), self.path_str("ca.pem")),
        ]
    }

    /// Client settings: trusting `ca`, presenting `client` (if any).
    fn client(&self, ca: &str, client: Option<&str>) -> ClientTls {
        ClientTls {
            ca: Some(self.path(&format!("{ca}.pem"))),
            domain: None,
            cert: client.map(|c| self.path(&format!("{c}.pem"))),
            key: client.map(|c| self.path(&format!("{c}.key"))),
        }
    }
}

impl Drop for Pki {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

async fn mtls_registry(pki: &Pki) -> TestRegistry {
    let vars = pki.registry_vars();
    let extra: Vec<(&str, &str)> = vars.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    TestRegistry::start_with(&extra).await
}

fn https(registry: &TestRegistry) -> String {
    format!("https://{}", registry.addr)
}

/// One Query over `endpoint`, connection included, bounded in time.
async fn query_over(endpoint: Endpoint, limit: Duration) -> Result<QueryReply, String> {
    let attempt = async {
        let channel =
            endpoint.connect_timeout(limit).connect().await.map_err(|e| format!("connect: {e:?}"))?;
        let request = QueryRequest {
            app_id: "default".into(),
            user_ids: ["alice"].into_iter().collect(),
            detail: true,
            ..Default::default()
        };
        let token = CallerToken::new(Some(&testkit::internal_token(Role::Facade, "mtls-test"))).unwrap();
        PresenceRegistryClient::with_interceptor(channel, token)
            .query(request)
            .await
            .map(tonic::Response::into_inner)
            .map_err(|status| format!("query: {status:?}"))
    };
    tokio::time::timeout(limit, attempt).await.unwrap_or_else(|_| Err("timed out".into()))
}

/// Queries over `endpoint` until a refusal names `alert`; every attempt must be refused. (In TLS 1.3
/// the server checks the client's certificate after the client has finished its handshake, so
/// the client may see its request's write fail before it reads the server's alert.)
async fn assert_refused_with(endpoint: Endpoint, alert: &str) {
    eventually_ok(&format!("a refusal naming {alert}"), async || {
        match query_over(endpoint.clone(), REFUSAL).await {
            Ok(reply) => panic!("served despite {alert}: {reply:?}"),
            Err(err) if err.contains(alert) => Ok(()),
            Err(err) => Err(err),
        }
    })
    .await;
}

#[tokio::test]
async fn a_client_with_the_right_ca_and_certificate_can_query() {
    let pki = Pki::new();
    let registry = mtls_registry(&pki).await;
    let endpoint = pki.client("ca", Some("client")).endpoint(&https(&registry)).expect("client TLS settings");
    let reply = query_over(endpoint, WAIT).await.expect("query over mTLS");
    assert_eq!(reply.results.len(), 1);

    // The name to verify can be given instead of taken from the URL.
    let by_name = ClientTls { domain: Some("localhost".into()), ..pki.client("ca", Some("client")) };
    let endpoint = by_name.endpoint(&https(&registry)).expect("client TLS settings");
    query_over(endpoint, WAIT).await.expect("query over mTLS, server name localhost");
}

#[tokio::test]
async fn a_client_without_a_certificate_is_refused() {
    let pki = Pki::new();
    let registry = mtls_registry(&pki).await;
    let endpoint = pki.client("ca", None).endpoint(&https(&registry)).expect("client TLS settings");
    assert_refused_with(endpoint, "CertificateRequired").await;

    // A certificate from another CA is no better.
    let stranger = ClientTls {
        cert: Some(pki.path("stranger.pem")),
        key: Some(pki.path("stranger.key")),
        ..pki.client("ca", None)
    };
    assert_refused_with(stranger.endpoint(&https(&registry)).expect("settings"), "UnknownCA").await;
}

#[tokio::test]
async fn a_client_that_does_not_trust_the_ca_is_refused() {
    let pki = Pki::new();
    let registry = mtls_registry(&pki).await;
    let endpoint = pki.client("other-ca", Some("client")).endpoint(&https(&registry)).expect("settings");
    let refused = query_over(endpoint, REFUSAL).await;
    assert!(
        refused.as_ref().is_err_and(|e| e.contains("UnknownIssuer")),
        "trusted a registry certificate of an unknown CA: {refused:?}"
    );
}

#[tokio::test]
async fn plaintext_to_the_tls_port_fails() {
    let pki = Pki::new();
    let registry = mtls_registry(&pki).await;
    let endpoint = Endpoint::from_shared(registry.url()).expect("http URL");
    let refused = query_over(endpoint, REFUSAL).await;
    assert!(refused.is_err(), "plaintext served on the TLS port: {refused:?}");
}

#[tokio::test]
async fn half_configured_registry_tls_does_not_start() {
    let pki = Pki::new();
    let db_url =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| presence_common::config::default_database_url());
    for vars in [
        vec![("REGISTRY_TLS_CERT", pki.path_str("registry.pem"))],
        vec![("REGISTRY_TLS_CLIENT_CA", pki.path_str("ca.pem"))],
        vec![
            ("REGISTRY_TLS_CERT", pki.path_str("registry.pem")),
            ("REGISTRY_TLS_KEY", pki.path_str("client.key")),
        ],
    ] {
        let mut all = vars.clone();
        all.push(("DATABASE_URL", db_url.clone()));
        all.push(("REGISTRY_LISTEN_ADDR", "127.0.0.1:0".into()));
        all.push(("REGISTRY_METRICS_ADDR", "127.0.0.1:0".into()));
        let config = presence_common::config::from_vars(all).expect("parses");
        let started =
            tokio::time::timeout(WAIT, presence_registry::start(config, presence_registry::Shutdown::new()))
                .await
                .expect("start gives up in time");
        match started {
            Ok(_) => panic!("registry started with {vars:?}"),
            Err(err) => assert!(err.to_string().contains("TLS"), "{vars:?}: {err}"),
        }
    }
}

#[tokio::test]
async fn a_gateway_attaches_over_mtls_and_a_device_logs_in() {
    let pki = Pki::new();
    let registry = mtls_registry(&pki).await;
    let (url, ca, cert, key) =
        (https(&registry), pki.path_str("ca.pem"), pki.path_str("client.pem"), pki.path_str("client.key"));
    let mut gateway = TestGateway::start(
        &registry,
        "gw-mtls",
        &[
            ("REGISTRY_URL", &url),
            ("REGISTRY_TLS_CA", &ca),
            ("INTERNAL_TLS_CERT", &cert),
            ("INTERNAL_TLS_KEY", &key),
        ],
    )
    .await;
    // Accepted only if the gateway reached the registry over mTLS.
    let (_device, _) = gateway.login("alice", "phone", Platform::Ios).await;

    let endpoint = pki.client("ca", Some("client")).endpoint(&https(&registry)).expect("settings");
    let reply = query_over(endpoint, WAIT).await.expect("query over mTLS");
    let online: Vec<&str> = reply.results[0]
        .devices
        .iter()
        .filter(|d| d.status == DeviceStatus::Online as i32)
        .map(|d| d.device_id.as_str())
        .collect();
    assert_eq!(online, ["phone"]);

    gateway.stop().await;
}
