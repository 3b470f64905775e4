//! Faults with real processes on loopback: services killed with SIGKILL and restarted, and a
//! callback receiver that fails for a while. Each test is bounded by `WAIT` per step.

use std::{
    collections::HashSet,
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use presence_client::Client;
use presence_proto::v1::Platform;
use serde_json::Value;
use testkit::{System, WAIT, eventually, system::LEASE_S};

fn event_ids(events: &[Value]) -> HashSet<String> {
    events.iter().filter_map(|e| e["event_id"].as_str().map(str::to_owned)).collect()
}

/// Logs in `count` users named `prefix0..`, one iOS device each; returns the open clients.
async fn log_in_users(system: &System, prefix: &str, count: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for i in 0..count {
        clients.push(system.login(&format!("{prefix}{i}"), "phone", Platform::Ios, false).await.0);
    }
    clients
}

#[tokio::test]
async fn a_killed_gateway_loses_its_devices_within_the_lease_and_they_log_in_elsewhere() {
    let mut system = System::start().await;
    let (_second, second_addr) = system.spawn_gateway("gw-2").await;
    let users = ["u0", "u1", "u2", "u3"];
    let mut clients = log_in_users(&system, "u", users.len()).await;
    assert_eq!(system.statuses(&users).await, ["online"; 4]);

    let killed_at = Instant::now();
    system.gateway.process.kill9();
    for client in &mut clients {
        let end = tokio::time::timeout(WAIT, client.next_frame()).await.expect("the socket closes");
        assert!(matches!(end, Ok(None) | Err(_)), "connection ended: {end:?}");
    }
    eventually("the dead gateway's devices go offline", async || {
        system.try_statuses(&users).await.is_ok_and(|s| s == ["offline"; 4])
    })
    .await;
    // Functional bound, not a benchmark: the registry must notice within its lease (plus sweep).
    let noticed = killed_at.elapsed();
    assert!(noticed < Duration::from_secs(LEASE_S + 3), "offline after {noticed:?}");

    let events = system.events().await;
    let link_closes = events.iter().filter(|e| e["action"] == "disconnect" && e["reason"] == "link_close");
    assert_eq!(link_closes.count(), 4, "{events:?}");
    system.receiver.wait_for_ids(event_ids(&events)).await;

    // The devices reconnect to the surviving gateway.
    let mut again = Vec::new();
    for user in users {
        again.push(system.login_at(second_addr, user, "phone", Platform::Ios, false).await.0);
    }
    assert_eq!(system.statuses(&users).await, ["online"; 4]);
}

#[tokio::test]
async fn a_killed_registry_restarts_with_its_state_and_no_spurious_events() {
    let mut system = System::start().await;
    let (mut alice, _) = system.login("alice", "phone", Platform::Ios, false).await;
    let (mut bob, _) = system.login("bob", "tablet", Platform::Android, true).await;
    let (carol, _) = system.login("carol", "phone", Platform::Android, true).await;
    drop(carol); // push-enabled, gone without logout: push_online
    let users = ["alice", "bob", "carol"];
    eventually("carol push_online", async || {
        system.statuses(&users).await == ["online", "online", "push_online"]
    })
    .await;
    let before = system.events().await;
    system.receiver.wait_for_ids(event_ids(&before)).await;

    system.registry.kill9_and_restart().await;
    // Devices stay connected through it: the gateway keeps answering them.
    alice.heartbeat().await.expect("alice still connected");
    bob.heartbeat().await.expect("bob still connected");
    eventually("state restored", async || {
        system.try_statuses(&users).await.is_ok_and(|s| s == ["online", "online", "push_online"])
    })
    .await;
    // Nothing happens later either: waiting out a whole lease (in which a gateway that had not
    // re-attached would lose its devices) is the point.
    tokio::time::sleep(Duration::from_secs(LEASE_S + 1)).await;
    assert_eq!(system.statuses(&users).await, ["online", "online", "push_online"]);
    let after = system.events().await;
    assert_eq!(event_ids(&after), event_ids(&before), "no spurious events after the restart");

    // And the system goes on: a new login is an event and a callback.
    let (_dave, _) = system.login("dave", "phone", Platform::Ios, false).await;
    let events = system.events().await;
    assert_eq!(events.len(), before.len() + 1);
    system.receiver.wait_for_ids(event_ids(&events)).await;
    assert_eq!(system.receiver.distinct_event_ids(), event_ids(&events));
}

#[tokio::test]
async fn a_killed_notifier_loses_no_callback() {
    let mut system = System::start().await;
    // Answers slower than the notifier's 2 s callback timeout, so that the kill lands while
    // callbacks are in flight however loaded the machine is (none is settled before it).
    system.receiver.delay_ms.store(3000, Ordering::SeqCst);
    let mut clients = log_in_users(&system, "u", 40).await;
    eventually("callbacks in flight", async || system.receiver.attempts.load(Ordering::SeqCst) >= 20).await;

    system.notifier.kill9_and_restart().await;
    clients.extend(log_in_users(&system, "v", 10).await);
    let events = system.events().await;
    assert_eq!(events.len(), 50);
    system.receiver.delay_ms.store(0, Ordering::SeqCst);
    system.receiver.wait_for_ids(event_ids(&events)).await;
    // At least once: duplicates are possible (what was in flight), but only of feed events.
    assert_eq!(system.receiver.distinct_event_ids(), event_ids(&events));
    // The kill cut at least 20 requests short (the receiver never answered them); all were resent.
    let attempts = system.receiver.attempts.load(Ordering::SeqCst);
    assert!(attempts >= events.len() + 20, "{attempts} attempts for {} events", events.len());
}

#[tokio::test]
async fn a_receiver_failing_under_load_gets_every_event_after_it_recovers() {
    let system = System::start().await;
    system.receiver.failing.store(true, Ordering::SeqCst);
    let _clients = log_in_users(&system, "u", 100).await;
    // The app's circuit opens after 10 failures in a row: then one probe at a time.
    eventually("failed attempts", async || system.receiver.attempts.load(Ordering::SeqCst) > 10).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    // Proving that nothing gets through takes a while of nothing getting through.
    let before = system.receiver.attempts.load(Ordering::SeqCst);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(system.receiver.accepted().is_empty());
    let probes = system.receiver.attempts.load(Ordering::SeqCst) - before;
    // Without the circuit, 100 users would each retry every 50 to 500 ms: hundreds of attempts.
    assert!(probes <= 20, "{probes} attempts in 2 s while the circuit is open: it should only probe");

    system.receiver.failing.store(false, Ordering::SeqCst);
    let events = system.events().await;
    assert_eq!(events.len(), 100);
    system.receiver.wait_for_ids(event_ids(&events)).await;
    for (user, versions) in system.receiver.versions_by_user() {
        assert_eq!(versions, [1], "{user}");
    }
}
