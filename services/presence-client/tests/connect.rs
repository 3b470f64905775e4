//! `presence-cli connect` against a scripted gateway (the real one is tested end to end in
//! services/connection-gateway/tests).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::time::Duration;

use futures::{SinkExt, StreamExt};
use presence_client::{
    ClientError,
    cli::connect::{ConnectArgs, Ended, run},
};
use presence_proto::{
    framing::ServerCodec,
    v1::{
        HeartbeatAck, Kicked, KickedDevice, LoginError, LoginOk, LogoutOk, Platform, ServerFrame,
        client_frame, server_frame,
    },
};
use tokio::net::TcpListener;
use tokio_util::codec::Framed;

/// What the scripted gateway does after a login.
#[derive(Clone, Copy)]
enum Script {
    /// Acks heartbeats; after the first, kicks the device.
    KickAfterHeartbeat,
    /// Acks heartbeats and answers Logout.
    Serve,
    /// Refuses the login.
    Refuse,
}

async fn gateway(script: Script) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut framed = Framed::new(tcp, ServerCodec::new());
        let send = |kind| ServerFrame { kind: Some(kind) };
        while let Some(Ok(frame)) = framed.next().await {
            let reply = match (frame.kind, script) {
                (Some(client_frame::Kind::Login(_)), Script::Refuse) => {
                    server_frame::Kind::LoginError(LoginError {
                        code: "bad_token".into(),
                        message: "nope".into(),
                    })
                }
                (Some(client_frame::Kind::Login(login)), _) => {
                    assert_eq!((login.user_id.as_str(), login.device_id.as_str()), ("alice", "d1"));
                    assert!(login.push_enabled);
                    server_frame::Kind::LoginOk(LoginOk {
                        session_id: "s1".into(),
                        heartbeat_interval_s: 1,
                        heartbeat_timeout_s: 3,
                        kicked_devices: vec![KickedDevice {
                            platform: Platform::Android as i32,
                            device_id: "old".into(),
                        }],
                    })
                }
                (Some(client_frame::Kind::Heartbeat(_)), script) => {
                    framed
                        .send(send(server_frame::Kind::HeartbeatAck(HeartbeatAck { server_time_ms: 5 })))
                        .await
                        .unwrap();
                    if let Script::KickAfterHeartbeat = script {
                        let kicked = Kicked {
                            reason: "replaced_by_login".into(),
                            by_platform: Platform::Ios as i32,
                            by_device_id: "new".into(),
                        };
                        framed.send(send(server_frame::Kind::Kicked(kicked))).await.unwrap();
                        return;
                    }
                    continue;
                }
                (Some(client_frame::Kind::Logout(_)), _) => server_frame::Kind::LogoutOk(LogoutOk {}),
                // `presence-cli connect` sends no requests of these kinds.
                (
                    Some(
                        client_frame::Kind::SetStatus(_)
                        | client_frame::Kind::Subscribe(_)
                        | client_frame::Kind::Unsubscribe(_),
                    ),
                    _,
                )
                | (None, _) => continue,
            };
            let logout = matches!(reply, server_frame::Kind::LogoutOk(_));
            framed.send(send(reply)).await.unwrap();
            if logout {
                return;
            }
        }
    });
    addr
}

fn args(gateway: String) -> ConnectArgs {
    ConnectArgs {
        user: "alice".into(),
        platform: Platform::Ios,
        device: Some("d1".into()),
        gateway,
        app: "default".into(),
        token: None,
        secret: "s".into(),
        push: true,
        client_version: "test".into(),
        heartbeat_s: None,
    }
}

#[tokio::test]
async fn prints_frames_and_ends_when_kicked() {
    let addr = gateway(Script::KickAfterHeartbeat).await;
    let mut lines = Vec::new();
    let ended = tokio::time::timeout(
        Duration::from_secs(10),
        run(&args(addr), std::future::pending(), |line| lines.push(line)),
    )
    .await
    .expect("ends in time")
    .expect("no error");
    assert!(matches!(&ended, Ended::Kicked(k) if k.reason == "replaced_by_login"), "{ended:?}");
    let text = lines.join("\n");
    assert!(text.contains("login ok: session s1"), "{text}");
    assert!(text.contains("devices forced offline: android:old"), "{text}");
    assert!(text.contains("heartbeat ack"), "{text}");
    assert!(text.contains("kicked: replaced_by_login (by ios device new)"), "{text}");
}

#[tokio::test]
async fn stopping_logs_out() {
    let addr = gateway(Script::Serve).await;
    let mut lines = Vec::new();
    // Stop once the first heartbeat is acknowledged, which the server's 1 s interval brings soon.
    let (acked, first_ack) = tokio::sync::oneshot::channel::<()>();
    let mut acked = Some(acked);
    let print = |line: String| {
        if line.contains("heartbeat ack") {
            acked.take().map(|acked| acked.send(()));
        }
        lines.push(line);
    };
    let started = tokio::time::Instant::now();
    let stop = async {
        let _ = first_ack.await;
    };
    let ended = tokio::time::timeout(Duration::from_secs(10), run(&args(addr), stop, print))
        .await
        .expect("ends in time")
        .expect("no error");
    assert!(matches!(ended, Ended::LoggedOut), "{ended:?}");
    let text = lines.join("\n");
    assert!(text.contains("heartbeat ack"), "{text}");
    let elapsed = started.elapsed();
    assert!(elapsed < Duration::from_millis(1500), "the server's 1 s interval is used: {elapsed:?}");
    assert!(text.ends_with("logout ok"), "{text}");
}

#[tokio::test]
async fn a_refused_login_is_an_error() {
    let addr = gateway(Script::Refuse).await;
    let result = run(&args(addr), std::future::pending(), |_| {}).await;
    assert!(matches!(&result, Err(ClientError::Login { code, .. }) if code == "bad_token"), "{result:?}");
    let err = result.expect_err("refused");
    assert_eq!(err.login_code(), Some(presence_proto::codes::LoginErrorCode::BadToken));
    assert!(!err.retry_later(), "a bad token must not be retried blindly");
}
