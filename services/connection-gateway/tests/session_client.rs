//! The Rust client's session layer against real gateways: it re-logs in and re-subscribes by
//! itself when its gateway goes away and another takes the address.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::time::Duration;

use presence_client::session::{Backoff, Session, SessionConfig, SessionEvent};
use presence_proto::v1::Platform;
use testkit::{WAIT, free_port, inprocess::*};

async fn next(session: &mut Session) -> SessionEvent {
    tokio::time::timeout(WAIT, session.next_event())
        .await
        .expect("an event in time")
        .expect("the session runs")
}

/// The next status event, skipping connection events.
async fn next_status(session: &mut Session) -> presence_proto::v1::UserStatus {
    loop {
        if let SessionEvent::Status(status) = next(session).await {
            return status;
        }
    }
}

#[tokio::test]
async fn a_session_reconnects_resubscribes_and_sees_only_newer_statuses() {
    let registry = TestRegistry::start().await;
    let addr = free_port().to_string();
    let mut first = TestGateway::start(&registry, "gw-1", &[("GATEWAY_LISTEN_ADDR", &addr)]).await;

    let mut config = SessionConfig::new(&addr, params("alice", "laptop", Platform::Mac));
    config.backoff = Backoff { initial: Duration::from_millis(50), max: Duration::from_millis(200) };
    let mut session = Session::start(config);
    assert!(matches!(next(&mut session).await, SessionEvent::LoggedIn(_)));
    let statuses = session.subscribe(vec!["bob".into()]).await.unwrap();
    assert_eq!((statuses[0].status.as_str(), statuses[0].user_version), ("offline", 0));
    assert_eq!(next_status(&mut session).await.user_version, 0, "the first status of a user is passed on");

    let (bob, _) = first.login("bob", "phone", Platform::Ios).await;
    let online = next_status(&mut session).await;
    assert_eq!((online.status.as_str(), online.user_version), ("online", 1));

    // The gateway goes away (Bob with it); another one takes its address.
    first.stop().await;
    drop(bob);
    loop {
        if let SessionEvent::Disconnected { retry_in, .. } = next(&mut session).await {
            assert!(retry_in <= Duration::from_millis(200), "{retry_in:?}");
            break;
        }
    }
    let _second = TestGateway::start(&registry, "gw-2", &[("GATEWAY_LISTEN_ADDR", &addr)]).await;
    let offline = next_status(&mut session).await;
    assert_eq!(offline.status, "offline", "re-subscribed after the reconnect: {offline:?}");
    assert!(offline.user_version > online.user_version);

    session.set_status("away").await.unwrap();
    let presence = registry.query(&["alice"]).await;
    assert_eq!(presence[0].custom_status, "away");
    session.close().await;
    registry.wait_online("alice", &[]).await;
}

#[tokio::test]
async fn presence_cli_watch_prints_changes_and_logs_out_when_stopped() {
    use clap::Parser;
    use presence_client::cli::{Cli, Command, connect::Ended, watch};

    let registry = TestRegistry::start().await;
    let gateway = TestGateway::start(&registry, "gw-1", &[]).await;
    let Command::Watch(args) = Cli::parse_from([
        "presence-cli",
        "watch",
        "--user",
        "carl",
        "--platform",
        "linux",
        "--gateway",
        &gateway.addr.to_string(),
        "--secret",
        SECRET,
        "--users",
        "dana,erik",
        "--status",
        "watching",
    ])
    .command
    else {
        panic!("not a watch command")
    };
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel();
    let (stop_tx, stop) = tokio::sync::oneshot::channel::<()>();
    let watching = tokio::spawn(async move {
        watch::run(&args, async { stop.await.unwrap_or(()) }, move |line| lines_tx.send(line).unwrap()).await
    });
    let mut wait_for = async |needle: &str| {
        tokio::time::timeout(WAIT, async {
            while let Some(line) = lines.recv().await {
                if line.contains(needle) {
                    return line;
                }
            }
            panic!("the watch ended before printing {needle:?}")
        })
        .await
        .unwrap_or_else(|_| panic!("no line with {needle:?}"))
    };
    wait_for("custom status set").await;
    let (_dana, _) = gateway.login("dana", "phone", Platform::Android).await;
    let line = wait_for("dana online").await;
    assert!(line.contains("android"), "{line}");
    assert_eq!(registry.query(&["carl"]).await[0].custom_status, "watching");

    stop_tx.send(()).unwrap();
    let ended = tokio::time::timeout(WAIT, watching).await.unwrap().unwrap().unwrap();
    assert!(matches!(ended, Ended::LoggedOut), "{ended:?}");
    registry.wait_online("carl", &[]).await;
}
