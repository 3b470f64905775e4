//! The whole system as it runs in production: the four built binaries as processes on loopback,
//! devices through the client library, the app backend through REST and callbacks.

use std::collections::HashSet;

use presence_client::Client;
use presence_proto::{
    callback_signature,
    v1::{Platform, server_frame::Kind},
};
use serde_json::json;
use sqlx::Connection;
use testkit::database::{RUNTIME_ROLE, empty_database_on};
use testkit::{ServiceProcess, System, WAIT, eventually, free_port};

/// Waits for the next frame that is not a heartbeat answer.
async fn kicked_reason(client: &mut Client) -> String {
    let frame = tokio::time::timeout(WAIT, client.next_frame()).await.expect("a frame in time");
    match frame.expect("readable").and_then(|f| f.kind) {
        Some(Kind::Kicked(kicked)) => kicked.reason,
        other => panic!("expected Kicked, got {other:?}"),
    }
}

#[tokio::test]
async fn devices_backend_and_callbacks_agree_across_real_processes() {
    presence_common::tls::install_crypto_provider();
    let mut system = System::start().await;

    // Two devices of alice under the default single_device policy: the second kicks the first.
    let (mut phone, _) = system.login("alice", "phone", Platform::Ios, false).await;
    let (mut desktop, ok) = system.login("alice", "desktop", Platform::Mac, false).await;
    assert_eq!(ok.kicked_devices.len(), 1);
    assert_eq!(ok.kicked_devices[0].device_id, "phone");
    assert_eq!(kicked_reason(&mut phone).await, "replaced_by_login");
    assert_eq!(system.statuses(&["alice", "bob"]).await, ["online", "offline"]);

    let (status, one) = system.rest(reqwest::Method::GET, "/v1/users/alice/presence", None).await;
    assert_eq!(status, 200, "{one}");
    let devices = one["devices"].as_array().expect("devices");
    assert_eq!(devices.len(), 1, "{one}");
    assert_eq!(devices[0]["device_id"], "desktop");
    assert_eq!(devices[0]["platform"], "mac");
    assert_eq!(devices[0]["client_version"], "2.1.0");

    // The app backend kicks alice; her desktop hears it.
    let (status, kicked) = system.rest(reqwest::Method::POST, "/v1/users/alice/kick", Some(json!({}))).await;
    assert_eq!(status, 200, "{kicked}");
    assert_eq!(kicked["kicked_devices"][0]["device_id"], "desktop");
    assert_eq!(kicked_reason(&mut desktop).await, "admin");

    // Bob's push-enabled phone loses its connection without logging out: push_online.
    let (bob, _) = system.login("bob", "phone", Platform::Android, true).await;
    drop(bob);
    eventually("bob push_online", async || system.statuses(&["bob"]).await == ["push_online"]).await;
    assert_eq!(system.statuses(&["alice", "bob"]).await, ["offline", "push_online"]);

    // Every event reached the callback receiver, signed, and equals what the feed serves.
    let events = system.events().await;
    let actions: Vec<(&str, &str, &str)> = events
        .iter()
        .map(|e| {
            (e["user_id"].as_str().unwrap(), e["action"].as_str().unwrap(), e["reason"].as_str().unwrap())
        })
        .collect();
    assert_eq!(
        actions,
        [
            ("alice", "login", "register"),
            ("alice", "login", "register"),
            ("alice", "logout", "admin_kick"),
            ("bob", "login", "register"),
            ("bob", "disconnect", "link_close"),
        ]
    );
    let ids: HashSet<String> = events.iter().map(|e| e["event_id"].as_str().unwrap().to_owned()).collect();
    system.receiver.wait_for_ids(ids).await;
    for got in system.receiver.accepted() {
        assert!(callback_signature::verify("cb-default", &got.timestamp, &got.body, &got.signature));
        let pulled = events.iter().find(|e| e["event_id"] == got.json["event_id"]).expect("same event");
        assert_eq!(&got.json, pulled);
    }

    // Every service ran as the runtime role: rows only, no DDL.
    let roles: Vec<(String,)> = sqlx::query_as(
        "SELECT DISTINCT usename::text FROM pg_stat_activity \
         WHERE datname = current_database() AND pid <> pg_backend_pid()",
    )
    .fetch_all(&system.db.pool)
    .await
    .expect("pg_stat_activity");
    let roles: Vec<&str> = roles.iter().map(|(role,)| role.as_str()).collect();
    assert!(roles.contains(&RUNTIME_ROLE), "{roles:?}");
    let owner: (String,) =
        sqlx::query_as("SELECT current_user::text").fetch_one(&system.db.pool).await.unwrap();
    assert!(roles.iter().all(|role| *role == RUNTIME_ROLE || *role == owner.0), "{roles:?}");
    let mut runtime = sqlx::PgConnection::connect(system.runtime_url()).await.expect("runtime role connects");
    let ddl = sqlx::query("CREATE TABLE runtime_may_not (x int)").execute(&mut runtime).await;
    assert!(ddl.is_err(), "the runtime role must not be able to change the schema");

    // SIGTERM stops every service cleanly.
    for process in [&mut system.facade, &mut system.notifier, &mut system.gateway, &mut system.registry] {
        let status = process.process.terminate();
        assert!(
            status.success(),
            "{} exited with {status}:\n{}",
            process.process.name,
            process.process.log_tail()
        );
    }
    drop(system.db);
}

#[tokio::test]
async fn a_service_refuses_a_database_that_was_not_migrated() {
    let server =
        std::env::var("DATABASE_URL").unwrap_or_else(|_| presence_common::config::default_database_url());
    let db = empty_database_on(&server).await;
    let admin = free_port();
    let mut registry = ServiceProcess::spawn(
        "presence-registry",
        "registry-unmigrated",
        &[
            ("DATABASE_URL", db.url.clone()),
            ("REGISTRY_LISTEN_ADDR", free_port().to_string()),
            ("REGISTRY_METRICS_ADDR", admin.to_string()),
            ("REGISTRY_INTERNAL_SECRET", testkit::INTERNAL_SECRET.to_owned()),
        ],
    );
    let status = registry.wait_exit().await;
    let log = std::fs::read_to_string(&registry.log).unwrap_or_default();
    assert!(!status.success(), "{log}");
    assert!(log.contains("schema is behind") && log.contains("presence-migrate"), "{log}");

    // After the migrate step, the same database is accepted.
    testkit::process::run_to_end("presence-migrate", &[("DATABASE_URL", db.url.clone())]);
    registry.restart();
    registry.wait_healthy(admin).await;
}
