//! Every kind of bad input ends that one connection (with a best-effort Error frame) and leaves
//! the gateway serving everyone else.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::time::Duration;

use bytes::BufMut;
use presence_client::{Client, ClientError};
use presence_proto::v1::{ClientFrame, Heartbeat, Platform, ServerFrame, client_frame, server_frame};
use testkit::{WAIT, inprocess::*};
use tokio::{io::AsyncWriteExt, net::TcpStream};

/// Sends `bytes` on a raw socket; returns the frames the gateway answered before closing.
async fn raw(gateway: &TestGateway, bytes: &[u8]) -> Vec<ServerFrame> {
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(bytes).await.unwrap();
    frames_until_closed(&mut stream).await
}

fn error_code(frames: &[ServerFrame]) -> Option<String> {
    match frames.last()?.kind.as_ref()? {
        server_frame::Kind::Error(e) => Some(e.code.clone()),
        _ => None,
    }
}

fn framed(frame: &ClientFrame) -> Vec<u8> {
    let mut buf = bytes::BytesMut::new();
    presence_proto::framing::encode_frame(frame, &mut buf).unwrap();
    buf.to_vec()
}

#[tokio::test]
async fn bad_frames_close_only_their_connection() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[("GATEWAY_LOGIN_TIMEOUT_S", "1")]).await;
    let (mut bystander, _) = gateway.login("bystander", "phone", Platform::Ios).await;

    assert_eq!(error_code(&raw(&gateway, &[0, 0, 0, 0]).await).as_deref(), Some("zero_length"));
    assert_eq!(error_code(&raw(&gateway, &[0, 1, 0, 1]).await).as_deref(), Some("too_long"));
    assert_eq!(error_code(&raw(&gateway, &[0xff; 8]).await).as_deref(), Some("too_long"));
    assert_eq!(
        error_code(&raw(&gateway, &[0, 0, 0, 3, 0xff, 0xff, 0xff]).await).as_deref(),
        Some("malformed")
    );
    let heartbeat =
        ClientFrame { kind: Some(client_frame::Kind::Heartbeat(Heartbeat { client_time_ms: 1 })) };
    assert_eq!(error_code(&raw(&gateway, &framed(&heartbeat)).await).as_deref(), Some("login_required"));

    // No login in time (slowloris): closed after GATEWAY_LOGIN_TIMEOUT_S.
    let started = tokio::time::Instant::now();
    let mut idle = TcpStream::connect(gateway.addr).await.unwrap();
    idle.write_all(&[0, 0]).await.unwrap();
    assert_eq!(error_code(&frames_until_closed(&mut idle).await).as_deref(), Some("login_timeout"));
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());

    // A second Login on a logged-in connection.
    let (mut twice, _) = gateway.login("twice", "phone", Platform::Ios).await;
    twice.send(params("twice", "phone", Platform::Ios).into_frame()).await.unwrap();
    let frames = frames_until_eof(&mut twice).await;
    assert_eq!(error_code(&frames).as_deref(), Some("duplicate_login"));
    registry.wait_online("twice", &[]).await;

    // The gateway still serves everyone else.
    bystander.heartbeat().await.unwrap();
    let (mut late, _) = gateway.login("late", "phone", Platform::Ios).await;
    late.heartbeat().await.unwrap();
    let metrics = gateway.metrics().await;
    for (reason, count) in [
        ("zero_length", 1.0),
        ("too_long", 2.0),
        ("malformed", 1.0),
        ("login_required", 1.0),
        ("login_timeout", 1.0),
        ("duplicate_login", 1.0),
    ] {
        let series = format!("gateway_protocol_errors_total{{reason=\"{reason}\"}}");
        assert_eq!(metric(&metrics, &series), count, "{metrics}");
    }
}

#[tokio::test]
async fn bad_login_fields_are_bad_requests() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[]).await;
    let cases = [
        params("", "phone", Platform::Ios),
        params("u", "", Platform::Ios),
        params("u", "phone", Platform::Unspecified),
        params("u", &"d".repeat(300), Platform::Ios),
    ];
    for login in cases {
        let mut client = gateway.client().await;
        match tokio::time::timeout(WAIT, client.login(login.clone())).await.unwrap() {
            Err(ClientError::Login { code, .. }) => assert_eq!(code, "bad_request", "{login:?}"),
            other => panic!("{login:?}: {other:?}"),
        }
        assert!(frames_until_eof(&mut client).await.is_empty());
    }
}

#[tokio::test]
async fn a_device_that_never_reads_is_dropped() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[("GATEWAY_OUTBOUND_QUEUE", "4")]).await;
    let (client, _) = gateway.login("deaf", "phone", Platform::Ios).await;
    drop(client);
    // A raw socket that logs in, then floods heartbeats and never reads a byte.
    let mut stream = TcpStream::connect(gateway.addr).await.unwrap();
    stream.write_all(&framed(&params("deaf", "phone", Platform::Ios).into_frame())).await.unwrap();
    let heartbeat =
        framed(&ClientFrame { kind: Some(client_frame::Kind::Heartbeat(Heartbeat { client_time_ms: 1 })) });
    let mut burst = Vec::new();
    for _ in 0..2000 {
        burst.put_slice(&heartbeat);
    }
    let flood = tokio::time::timeout(WAIT, async {
        loop {
            if stream.write_all(&burst).await.is_err() {
                return;
            }
        }
    })
    .await;
    assert!(flood.is_ok(), "the gateway never dropped the deaf device");
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric(&metrics, r#"gateway_protocol_errors_total{reason="slow_consumer"}"#),
        1.0,
        "{metrics}"
    );
    // Others still get served.
    let (mut other, _) = gateway.login("other", "phone", Platform::Ios).await;
    other.heartbeat().await.unwrap();
    let _ = Client::connect(gateway.addr).await.unwrap();
}
