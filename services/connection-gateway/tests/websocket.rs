//! Web devices over WebSocket: the same session rules as TCP, checked with an independent
//! WebSocket client (tokio-tungstenite) against a real registry.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use presence_proto::v1::{
    ClientFrame, EventReason, Heartbeat, Logout, Platform, ServerFrame, client_frame, server_frame,
};
use prost::Message as _;
use testkit::{WAIT, eventually, inprocess::*};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::{
    MaybeTlsStream, WebSocketStream,
    tungstenite::{
        Message,
        client::IntoClientRequest,
        protocol::{CloseFrame, frame::coding::CloseCode},
    },
};

type Socket = WebSocketStream<MaybeTlsStream<tokio::net::TcpStream>>;

async fn connect(gateway: &TestGateway) -> Socket {
    let (socket, response) = tokio_tungstenite::connect_async(gateway.ws_url()).await.expect("upgrade");
    assert_eq!(response.status(), 101);
    socket
}

async fn send(socket: &mut Socket, kind: client_frame::Kind) {
    let frame = ClientFrame { kind: Some(kind) };
    socket.send(Message::Binary(frame.encode_to_vec().into())).await.unwrap();
}

/// What the gateway sent next: a server frame, or how it closed.
#[derive(Debug)]
enum Got {
    Frame(server_frame::Kind),
    Pong,
    Closed(Option<CloseCode>),
}

async fn next(socket: &mut Socket) -> Got {
    loop {
        let message = tokio::time::timeout(WAIT, socket.next()).await.expect("an answer in time");
        match message {
            Some(Ok(Message::Binary(bytes))) => {
                let frame = ServerFrame::decode(bytes).expect("a ServerFrame");
                return Got::Frame(frame.kind.expect("a message"));
            }
            Some(Ok(Message::Pong(_))) => return Got::Pong,
            Some(Ok(Message::Close(close))) => return Got::Closed(close.map(|c| c.code)),
            Some(Ok(Message::Ping(_) | Message::Frame(_))) => {}
            Some(Ok(Message::Text(text))) => panic!("the gateway sent text: {text}"),
            Some(Err(_)) | None => return Got::Closed(None),
        }
    }
}

async fn login(socket: &mut Socket, user: &str, device: &str) -> presence_proto::v1::LoginOk {
    let login = params(user, device, Platform::Web).into_frame();
    socket.send(Message::Binary(login.encode_to_vec().into())).await.unwrap();
    match next(socket).await {
        Got::Frame(server_frame::Kind::LoginOk(ok)) => ok,
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn a_web_device_logs_in_heartbeats_and_logs_out() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-ws", &[]).await;
    let mut socket = connect(&gateway).await;

    let ok = login(&mut socket, "wendy", "browser").await;
    assert!(!ok.session_id.is_empty());
    registry.wait_online("wendy", &["browser"]).await;

    send(&mut socket, client_frame::Kind::Heartbeat(Heartbeat { client_time_ms: 1 })).await;
    assert!(
        matches!(next(&mut socket).await, Got::Frame(server_frame::Kind::HeartbeatAck(a)) if a.server_time_ms > 0)
    );
    socket.send(Message::Ping(b"are you there".to_vec().into())).await.unwrap();
    assert!(matches!(next(&mut socket).await, Got::Pong));

    send(&mut socket, client_frame::Kind::Logout(Logout {})).await;
    assert!(matches!(next(&mut socket).await, Got::Frame(server_frame::Kind::LogoutOk(_))));
    assert!(matches!(next(&mut socket).await, Got::Closed(Some(CloseCode::Normal))));
    registry.wait_online("wendy", &[]).await;
    assert_eq!(registry.last_reason("wendy").await, Some(EventReason::Unregister));
    let metrics = gateway.metrics().await;
    assert_eq!(metric(&metrics, r#"gateway_websocket_upgrades_total{result="ok"}"#), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, "gateway_heartbeats_total"), 1.0, "{metrics}");
}

#[tokio::test]
async fn a_closed_websocket_is_a_link_close_and_a_tcp_login_kicks_the_browser() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-ws", &[]).await;

    let mut leaving = connect(&gateway).await;
    login(&mut leaving, "lena", "browser").await;
    registry.wait_online("lena", &["browser"]).await;
    leaving.close(Some(CloseFrame { code: CloseCode::Away, reason: "tab closed".into() })).await.unwrap();
    registry.wait_online("lena", &[]).await;
    assert_eq!(registry.last_reason("lena").await, Some(EventReason::LinkClose));

    // The default policy: the last device wins, whatever its transport.
    let mut browser = connect(&gateway).await;
    login(&mut browser, "kim", "browser").await;
    let (_phone, ok) = gateway.login("kim", "phone", Platform::Ios).await;
    assert_eq!(ok.kicked_devices.len(), 1, "{ok:?}");
    match next(&mut browser).await {
        Got::Frame(server_frame::Kind::Kicked(kicked)) => assert_eq!(kicked.reason, "replaced_by_login"),
        other => panic!("{other:?}"),
    }
    assert!(matches!(next(&mut browser).await, Got::Closed(Some(CloseCode::Normal))));
}

#[tokio::test]
async fn pings_keep_a_web_device_alive_and_silence_times_it_out() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-ws", &[("GATEWAY_HEARTBEAT_TIMEOUT_S", "2")]).await;
    let mut socket = connect(&gateway).await;
    login(&mut socket, "paula", "browser").await;
    for _ in 0..6 {
        // Time passing is the point: 3.6 s of pings past a 2 s timeout.
        tokio::time::sleep(Duration::from_millis(600)).await;
        socket.send(Message::Ping(Vec::new().into())).await.unwrap();
        assert!(matches!(next(&mut socket).await, Got::Pong));
    }
    assert_eq!(registry.online_devices("paula").await, vec!["browser".to_owned()]);
    assert!(matches!(next(&mut socket).await, Got::Closed(Some(CloseCode::Normal))));
    registry.wait_online("paula", &[]).await;
    assert_eq!(registry.last_reason("paula").await, Some(EventReason::Timeout));
}

#[tokio::test]
async fn protocol_errors_get_an_error_frame_then_close_1002() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-ws", &[]).await;
    let cases: [(&str, Message, &str); 4] = [
        ("text", Message::Text("{\"login\":{}}".into()), "malformed"),
        ("empty", Message::Binary(Vec::new().into()), "zero_length"),
        ("garbage", Message::Binary(vec![0xFF, 0xFF, 0xFF].into()), "malformed"),
        (
            "heartbeat first",
            Message::Binary(
                ClientFrame { kind: Some(client_frame::Kind::Heartbeat(Heartbeat::default())) }
                    .encode_to_vec()
                    .into(),
            ),
            "login_required",
        ),
    ];
    for (what, message, code) in cases {
        let mut socket = connect(&gateway).await;
        socket.send(message).await.unwrap();
        match next(&mut socket).await {
            Got::Frame(server_frame::Kind::Error(error)) => assert_eq!(error.code, code, "{what}: {error:?}"),
            other => panic!("{what}: {other:?}"),
        }
        assert!(matches!(next(&mut socket).await, Got::Closed(Some(CloseCode::Protocol))), "{what}");
    }
    // A logged-in device that breaks the rules is reported gone, like over TCP.
    let mut socket = connect(&gateway).await;
    login(&mut socket, "tess", "browser").await;
    socket.send(Message::Text("hello".into())).await.unwrap();
    assert!(matches!(next(&mut socket).await, Got::Frame(server_frame::Kind::Error(_))));
    registry.wait_online("tess", &[]).await;
    assert_eq!(registry.last_reason("tess").await, Some(EventReason::LinkClose));
}

/// Sends a raw HTTP request to the WebSocket port; returns the answer's status line.
async fn raw_upgrade(gateway: &TestGateway, request: &str) -> String {
    let mut tcp = tokio::net::TcpStream::connect(gateway.ws_addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(WAIT, async {
        while !answer.windows(2).any(|w| w == b"\r\n") {
            if tcp.read_buf(&mut answer).await.unwrap() == 0 {
                break;
            }
        }
    })
    .await
    .expect("answered in time");
    String::from_utf8_lossy(&answer).lines().next().unwrap_or_default().to_owned()
}

#[tokio::test]
async fn upgrades_are_checked_path_origin_and_headers() {
    let registry = TestRegistry::start().await;
    let gateway =
        TestGateway::start(&registry, "gw-ws", &[("GATEWAY_WS_ALLOWED_ORIGINS", "https://chat.example")])
            .await;
    let upgrade = |path: &str, origin: &str| {
        format!(
            "GET {path} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nOrigin: {origin}\r\n\r\n"
        )
    };
    assert!(raw_upgrade(&gateway, &upgrade("/v1/connect", "https://chat.example")).await.contains(" 101 "));
    assert!(raw_upgrade(&gateway, &upgrade("/other", "https://chat.example")).await.contains(" 404 "));
    assert!(raw_upgrade(&gateway, &upgrade("/v1/connect", "https://evil.example")).await.contains(" 403 "));
    let plain = "GET /v1/connect HTTP/1.1\r\nHost: x\r\n\r\n";
    assert!(raw_upgrade(&gateway, plain).await.contains(" 400 "));
    assert!(raw_upgrade(&gateway, "\u{1}\u{2} not http at all\r\n\r\n").await.contains(" 400 "));

    let mut request = gateway.ws_url().into_client_request().unwrap();
    request.headers_mut().insert("origin", "https://chat.example".parse().unwrap());
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await.expect("an allowed origin");
    login(&mut socket, "oscar", "browser").await;
    let metrics = gateway.metrics().await;
    assert_eq!(
        metric(&metrics, r#"gateway_websocket_upgrades_total{result="forbidden_origin"}"#),
        1.0,
        "{metrics}"
    );
}

#[tokio::test]
async fn the_per_ip_connection_limit_holds_for_websocket_too() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-ws", &[("GATEWAY_MAX_CONNECTIONS_PER_IP", "1")]).await;
    let mut first = connect(&gateway).await;
    login(&mut first, "uma", "browser").await;
    // The limit counts both listeners' connections: a second one from 127.0.0.1 is refused.
    let refused = tokio_tungstenite::connect_async(gateway.ws_url()).await;
    match refused {
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => assert_eq!(response.status(), 429),
        other => panic!("a second connection was not refused with 429: {:?}", other.map(|(_, r)| r.status())),
    }
    // The TCP handshake completes before the gateway accepts and refuses: wait for its count.
    let tcp = gateway.client().await;
    eventually("the TCP connection refused too", async || {
        metric(&gateway.metrics().await, r#"gateway_connections_refused_total{reason="per_ip"}"#) >= 2.0
    })
    .await;
    drop(tcp);
}
