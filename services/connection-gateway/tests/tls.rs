//! Devices can connect with TLS when a certificate is configured (same frames inside).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use rustls::pki_types::pem::PemObject;
use std::{process::Command, sync::Arc};

use futures::{SinkExt, StreamExt};
use presence_proto::{
    framing::ClientCodec,
    v1::{Platform, server_frame},
};
use testkit::{WAIT, inprocess::*};
use tokio_util::codec::Framed;

#[tokio::test]
async fn login_over_tls() {
    // A throwaway self-signed certificate for 127.0.0.1 (openssl is part of the dev image).
    let dir = std::env::temp_dir().join(format!("gw-tls-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let status = Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
            "-nodes",
            "-days",
            "1",
        ])
        .args(["-subj", "/CN=localhost", "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"])
        .args(["-addext", "basicConstraints=critical,CA:FALSE"])
        .arg("-keyout")
        .arg(&key)
        .arg("-out")
        .arg(&cert)
        .output()
        .expect("openssl runs");
    assert!(status.status.success(), "{}", String::from_utf8_lossy(&status.stderr));

    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(
        &registry,
        "gw-tls",
        &[("GATEWAY_TLS_CERT", cert.to_str().unwrap()), ("GATEWAY_TLS_KEY", key.to_str().unwrap())],
    )
    .await;

    let pem = std::fs::read(&cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls::pki_types::CertificateDer::pem_slice_iter(&pem) {
        roots.add(c.unwrap()).unwrap();
    }
    let config =
        rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
    let tcp = tokio::net::TcpStream::connect(gateway.addr).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("127.0.0.1").unwrap();
    let tls =
        tokio_rustls::TlsConnector::from(Arc::new(config)).connect(name, tcp).await.expect("TLS handshake");
    let mut framed = Framed::new(tls, ClientCodec::new());
    framed.send(params("tina", "phone", Platform::Ios).into_frame()).await.unwrap();
    let reply = tokio::time::timeout(WAIT, framed.next()).await.unwrap().unwrap().unwrap();
    assert!(matches!(reply.kind, Some(server_frame::Kind::LoginOk(_))), "{reply:?}");
    registry.wait_online("tina", &["phone"]).await;

    // Plain TCP to a TLS port gets nowhere.
    let mut plain = gateway.client().await;
    let refused =
        tokio::time::timeout(WAIT, plain.login(params("tom", "phone", Platform::Ios))).await.unwrap();
    assert!(refused.is_err());
    let _ = std::fs::remove_dir_all(dir);
}
