//! The whole system as it runs in production: the four built binaries as processes on loopback,
//! devices through the client library, the app backend through REST and callbacks.

use std::{collections::HashSet, net::SocketAddr, time::Duration};

use presence_client::{Client, LoginParams, mint_token};
use presence_common::testing::{TestDatabase, fresh_database};
use presence_proto::{
    callback_signature,
    v1::{LoginOk, Platform, server_frame::Kind},
};
use serde_json::{Value, json};
use testkit::{Receiver, ServiceProcess, WAIT, eventually, free_port};

const SECRET: &str = "secret";

struct System {
    db: TestDatabase,
    receiver: Receiver,
    registry: ServiceProcess,
    gateway: ServiceProcess,
    notifier: ServiceProcess,
    facade: ServiceProcess,
    gateway_addr: SocketAddr,
    facade_url: String,
}

impl System {
    async fn start() -> Self {
        let db = fresh_database().await;
        db.add_app("default", SECRET).await;
        let receiver = Receiver::default();
        let callback_url = receiver.start().await;
        sqlx::query("UPDATE apps SET callback_url = $1")
            .bind(&callback_url)
            .execute(&db.pool)
            .await
            .expect("set callback URL");

        let (registry_grpc, registry_admin) = (free_port(), free_port());
        let (gateway_addr, gateway_admin) = (free_port(), free_port());
        let (notifier_admin, facade_addr) = (free_port(), free_port());
        let common = |extra: &[(&'static str, String)]| {
            let mut env = vec![
                ("DATABASE_URL", db.url.clone()),
                ("REGISTRY_URL", format!("http://{registry_grpc}")),
            ];
            env.extend_from_slice(extra);
            env
        };
        let mut registry = ServiceProcess::spawn(
            "presence-registry",
            "registry",
            &common(&[
                ("REGISTRY_LISTEN_ADDR", registry_grpc.to_string()),
                ("REGISTRY_METRICS_ADDR", registry_admin.to_string()),
                ("REGISTRY_GATEWAY_LEASE_S", "3".into()),
                ("REGISTRY_SWEEP_INTERVAL_MS", "200".into()),
            ]),
        );
        registry.wait_healthy(registry_admin).await;
        let mut gateway = ServiceProcess::spawn(
            "connection-gateway",
            "gateway",
            &common(&[
                ("GATEWAY_ID", "gw-system".into()),
                ("GATEWAY_LISTEN_ADDR", gateway_addr.to_string()),
                ("GATEWAY_METRICS_ADDR", gateway_admin.to_string()),
            ]),
        );
        let mut notifier = ServiceProcess::spawn(
            "notifier",
            "notifier",
            &common(&[
                ("NOTIFIER_METRICS_ADDR", notifier_admin.to_string()),
                ("NOTIFIER_FLUSH_INTERVAL_MS", "100".into()),
                ("NOTIFIER_BACKOFF_INITIAL_MS", "50".into()),
                ("NOTIFIER_BACKOFF_MAX_MS", "500".into()),
            ]),
        );
        let mut facade = ServiceProcess::spawn(
            "rest-facade",
            "facade",
            &common(&[("FACADE_LISTEN_ADDR", facade_addr.to_string())]),
        );
        gateway.wait_healthy(gateway_admin).await;
        notifier.wait_healthy(notifier_admin).await;
        facade.wait_healthy(facade_addr).await;
        Self {
            db,
            receiver,
            registry,
            gateway,
            notifier,
            facade,
            gateway_addr,
            facade_url: format!("http://{facade_addr}"),
        }
    }

    /// Logs a device in, retrying while the gateway is still attaching to the registry.
    async fn login(&self, user: &str, device: &str, platform: Platform, push: bool) -> (Client, LoginOk) {
        let token = mint_token(SECRET, user, None, Duration::from_secs(3600)).expect("token");
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let mut client = Client::connect(self.gateway_addr).await.expect("gateway reachable");
            let params = LoginParams {
                push_enabled: push,
                client_version: "2.1.0".into(),
                ..LoginParams::new(user, device, platform, token.clone())
            };
            match client.login(params).await {
                Ok(ok) => return (client, ok),
                Err(err) => {
                    assert!(tokio::time::Instant::now() < deadline, "login of {user}: {err}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
    }

    async fn rest(&self, method: reqwest::Method, path: &str, body: Option<Value>) -> (u16, Value) {
        let mut request = reqwest::Client::new()
            .request(method, format!("{}{path}", self.facade_url))
            .bearer_auth("key-default");
        if let Some(body) = body {
            request = request.json(&body);
        }
        let response = request.send().await.expect("facade answers");
        let status = response.status().as_u16();
        (status, response.json().await.expect("JSON answer"))
    }

    async fn statuses(&self, users: &[&str]) -> Vec<String> {
        let (status, body) =
            self.rest(reqwest::Method::POST, "/v1/presence/query", Some(json!({"user_ids": users}))).await;
        assert_eq!(status, 200, "{body}");
        body["results"]
            .as_array()
            .expect("results")
            .iter()
            .map(|r| r["status"].as_str().unwrap_or_default().to_owned())
            .collect()
    }

    async fn events(&self) -> Vec<Value> {
        let (status, body) = self.rest(reqwest::Method::GET, "/v1/events?after_seq=0&limit=1000", None).await;
        assert_eq!(status, 200, "{body}");
        body["events"].as_array().expect("events").clone()
    }
}

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

    // SIGTERM stops every service cleanly.
    for process in [&mut system.facade, &mut system.notifier, &mut system.gateway, &mut system.registry] {
        let status = process.terminate();
        assert!(status.success(), "{} exited with {status}:\n{}", process.name, process.log_tail());
    }
    drop(system.db);
}
