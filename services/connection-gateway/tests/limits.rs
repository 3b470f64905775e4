//! Per-source-IP limits over real TCP, with distinct 127.0.0.x sources standing for distinct
//! devices' addresses.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::{net::SocketAddr, time::Duration};

use presence_client::{Client, ClientError};
use presence_proto::v1::{Platform, ServerFrame, server_frame};
use testkit::{WAIT, eventually_ok, inprocess::*};
use tokio::net::{TcpSocket, TcpStream};

/// A TCP connection to `to` from the loopback address 127.0.0.`source`.
async fn connect_from(source: u8, to: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from(([127, 0, 0, source], 0))).unwrap();
    socket.connect(to).await.unwrap()
}

async fn client_from(source: u8, to: SocketAddr) -> Client {
    Client::from_stream(connect_from(source, to).await)
}

fn error_code(frames: &[ServerFrame]) -> Option<&str> {
    match frames.last()?.kind.as_ref()? {
        server_frame::Kind::Error(e) => Some(&e.code),
        _ => None,
    }
}

/// Logs in `user` on a connection from 127.0.0.`source`.
async fn login_from(source: u8, gateway: &TestGateway, user: &str) -> Result<Client, ClientError> {
    let mut client = client_from(source, gateway.addr).await;
    tokio::time::timeout(WAIT, client.login(params(user, "phone", Platform::Ios)))
        .await
        .expect("login answered in time")?;
    Ok(client)
}

/// Retries [`login_from`] until it succeeds (a slot frees up asynchronously); returns the client
/// and how many attempts were refused first.
async fn login_eventually(source: u8, gateway: &TestGateway, user: &str) -> (Client, u32) {
    let mut refused = 0;
    let client = eventually_ok("a slot to come free", async || {
        let attempt = login_from(source, gateway, user).await;
        refused += u32::from(attempt.is_err());
        attempt
    })
    .await;
    (client, refused)
}

#[tokio::test]
async fn connections_beyond_the_per_ip_limit_are_refused_and_slots_come_back() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[("GATEWAY_MAX_CONNECTIONS_PER_IP", "3")]).await;

    // Three connections from 127.0.0.2: two logged in, one that has not sent anything yet.
    let mut first = login_from(2, &gateway, "u1").await.expect("first login");
    let second = login_from(2, &gateway, "u2").await.expect("second login");
    let idle = connect_from(2, gateway.addr).await;

    // The fourth is refused: an Error frame, then the close.
    let mut fourth = connect_from(2, gateway.addr).await;
    let frames = frames_until_closed(&mut fourth).await;
    assert_eq!(error_code(&frames), Some("too_many_connections"), "{frames:?}");

    // Another source address is not affected, nor are the connections already open.
    let mut elsewhere = login_from(3, &gateway, "u3").await.expect("another IP logs in");
    elsewhere.heartbeat().await.expect("served");
    first.heartbeat().await.expect("still served");

    // Closing connections frees their slots (once the gateway has finished with them).
    drop((second, idle));
    let (_again, refused_again) = login_eventually(2, &gateway, "u2").await;
    let (_fourth_again, refused_fourth) = login_eventually(2, &gateway, "u4").await;
    let mut over = connect_from(2, gateway.addr).await;
    assert_eq!(error_code(&frames_until_closed(&mut over).await), Some("too_many_connections"));

    // The two refusals above and those of the retries while waiting for a slot, no more.
    let metrics = gateway.metrics().await;
    let refused = f64::from(2 + refused_again + refused_fourth);
    assert_eq!(
        metric(&metrics, r#"gateway_connections_refused_total{reason="per_ip"}"#),
        refused,
        "{metrics}"
    );
}

#[tokio::test]
async fn a_login_flood_from_one_ip_is_rate_limited() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(
        &registry,
        "gw-1",
        &[("GATEWAY_LOGIN_RATE_PER_IP", "1"), ("GATEWAY_LOGIN_BURST_PER_IP", "3")],
    )
    .await;

    // A flood from 127.0.0.4: the burst gets through, then `rate_limited` and the close.
    let mut kept = Vec::new();
    let mut limited = 0;
    for i in 0..10 {
        match login_from(4, &gateway, &format!("flood-{i}")).await {
            Ok(client) => kept.push(client),
            Err(ClientError::Login { code, message }) => {
                assert_eq!(code, "rate_limited", "{message}");
                limited += 1;
            }
            Err(other) => panic!("login {i}: {other}"),
        }
    }
    assert!((3..=5).contains(&kept.len()), "{} logins got through", kept.len());
    assert_eq!(kept.len() + limited, 10);

    // The refused connection is closed.
    let mut refused = client_from(4, gateway.addr).await;
    let err = refused.login(params("late", "phone", Platform::Ios)).await.expect_err("still limited");
    assert!(matches!(&err, ClientError::Login { code, .. } if code == "rate_limited"), "{err}");
    assert!(frames_until_eof(&mut refused).await.is_empty());

    // Another source address logs in; the flooding one recovers as its bucket refills.
    login_from(5, &gateway, "bystander").await.expect("another IP logs in");
    // The bucket refills at one login per second: the wait is what is tested.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    login_from(4, &gateway, "patient").await.expect("the bucket refilled");
    for client in &mut kept {
        client.heartbeat().await.expect("accepted logins stay served");
    }

    // The flood's refusals and `late`; the burst, the bystander and the patient one got in.
    let metrics = gateway.metrics().await;
    let rate_limited = (limited + 1) as f64;
    assert_eq!(metric(&metrics, r#"gateway_logins_total{result="rate_limited"}"#), rate_limited, "{metrics}");
    let ok = (kept.len() + 2) as f64;
    assert_eq!(metric(&metrics, r#"gateway_logins_total{result="ok"}"#), ok, "{metrics}");
}

#[tokio::test]
async fn a_logout_frees_its_slot_at_once() {
    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[("GATEWAY_MAX_CONNECTIONS_PER_IP", "1")]).await;
    let mut client = login_from(6, &gateway, "leaver").await.expect("login");
    let started = tokio::time::Instant::now();
    tokio::time::timeout(WAIT, client.logout()).await.expect("answered").expect("LogoutOk");
    assert!(frames_until_eof(&mut client).await.is_empty());
    // The socket closes right after LogoutOk (it used to linger for the 2 s flush grace).
    assert!(started.elapsed() < Duration::from_secs(1), "closed after {:?}", started.elapsed());
    let (_next, _) = login_eventually(6, &gateway, "leaver").await;
    assert!(started.elapsed() < Duration::from_secs(1), "slot free after {:?}", started.elapsed());
}
