//! The notifier against a real registry, gateway and HTTP receiver on loopback.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::{collections::HashSet, sync::atomic::Ordering, time::Duration};

use presence_client::{Client, LoginParams};
use presence_proto::{callback_signature, json::PresenceEventJson, v1::Platform};
use testkit::{
    Receiver, eventually,
    inprocess::{TestGateway, TestNotifier, TestRegistry, metric, token_for},
};

/// A registry and a gateway, with app `default` calling back `url`.
async fn system(url: &str) -> (TestRegistry, TestGateway) {
    let registry = TestRegistry::start().await;
    registry.sql(&format!("UPDATE apps SET callback_url = '{url}' WHERE app_id = 'default'")).await;
    let gateway = TestGateway::start(&registry, "gw-1", &[]).await;
    (registry, gateway)
}

/// `rounds` logins of each of `users` users (devices alternate, so each login after the first
/// kicks the previous device): one `login` event each. Returns the clients, kept open.
async fn logins(gateway: &TestGateway, prefix: &str, users: usize, rounds: usize) -> Vec<Client> {
    let mut clients = Vec::new();
    for round in 0..rounds {
        for user in 0..users {
            let (client, _) =
                gateway.login(&format!("{prefix}{user}"), &format!("d{}", round % 2), Platform::Ios).await;
            clients.push(client);
        }
    }
    clients
}

#[tokio::test]
async fn callbacks_carry_the_contract_json_and_a_verifiable_signature() {
    let receiver = Receiver::default();
    let (registry, gateway) = system(&receiver.start().await).await;
    let _notifier = TestNotifier::start(&registry, &[]).await;

    let (_phone, _) = gateway.login("alice", "phone", Platform::Ios).await;
    let (_tablet, _) = gateway.login("alice", "tablet", Platform::Android).await;
    let events = registry.events().await;
    assert_eq!(events.len(), 2);
    receiver.wait_for_all(&events).await;

    for (event, got) in events.iter().zip(receiver.accepted()) {
        assert_eq!(got.event_id_header, event.event_id);
        assert!(
            callback_signature::verify("cb-default", &got.timestamp, &got.body, &got.signature),
            "signature {} does not verify",
            got.signature
        );
        assert!(!callback_signature::verify("wrong", &got.timestamp, &got.body, &got.signature));
        let sent_at: u64 = got.timestamp.parse().expect("timestamp is unix ms");
        assert!(sent_at >= event.event_time_ms);
        let expected = serde_json::to_value(PresenceEventJson::from(event)).unwrap();
        assert_eq!(got.json, expected);
    }
    // The second login forced the phone offline: one event naming it, with the contract's fields.
    let second = &receiver.accepted()[1].json;
    let mut keys: Vec<&str> = second.as_object().unwrap().keys().map(String::as_str).collect();
    keys.sort_unstable();
    assert_eq!(
        keys,
        [
            "action",
            "app_id",
            "device",
            "event_id",
            "event_time_ms",
            "kicked_devices",
            "reason",
            "seq",
            "user_id",
            "user_status",
            "user_version"
        ]
    );
    assert_eq!(second["action"], "login");
    assert_eq!(second["reason"], "register");
    assert_eq!(second["user_id"], "alice");
    assert_eq!(second["seq"], 2);
    assert_eq!(second["user_version"], 2);
    assert_eq!(second["user_status"], "online");
    assert_eq!(second["device"]["device_id"], "tablet");
    assert_eq!(second["device"]["platform"], "android");
    assert_eq!(second["kicked_devices"], serde_json::json!([{"device_id": "phone", "platform": "ios"}]));
}

#[tokio::test]
async fn one_users_events_arrive_in_order_while_users_go_concurrently() {
    let receiver = Receiver::default();
    receiver.delay_ms.store(15, Ordering::SeqCst);
    let (registry, gateway) = system(&receiver.start().await).await;
    let _notifier = TestNotifier::start(&registry, &[("NOTIFIER_CONCURRENCY_PER_APP", "8")]).await;

    let _clients = logins(&gateway, "u", 12, 6).await;
    let events = registry.events().await;
    assert_eq!(events.len(), 72);
    receiver.wait_for_all(&events).await;

    for (user, versions) in receiver.versions_by_user() {
        assert_eq!(versions, (1..=6).collect::<Vec<u64>>(), "{user} got its events out of order");
    }
    let max = receiver.max_in_flight.load(Ordering::SeqCst);
    assert!((2..=8).contains(&max), "users delivered concurrently within the app's bound: {max} in flight");
}

async fn dead_letters(registry: &TestRegistry) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM callback_dead_letters")
        .fetch_one(&registry.db.pool)
        .await
        .unwrap()
}

/// The notifier's `series` on its `/metrics` page, once it equals `value`.
async fn wait_metric(notifier: &TestNotifier, series: &str, value: f64) {
    eventually(series, async || metric(&notifier.metrics().await, series) == value).await;
}

#[tokio::test]
async fn a_dead_receiver_opens_the_circuit_one_probe_at_a_time_then_everything_goes_in_order() {
    let receiver = Receiver::default();
    receiver.failing.store(true, Ordering::SeqCst);
    // Requests overlap at the receiver if more than one is sent at once.
    receiver.delay_ms.store(20, Ordering::SeqCst);
    let (registry, gateway) = system(&receiver.start().await).await;
    let notifier = TestNotifier::start(
        &registry,
        &[
            ("NOTIFIER_CONCURRENCY_PER_APP", "8"),
            ("NOTIFIER_CIRCUIT_FAILURES", "3"),
            ("NOTIFIER_CIRCUIT_PROBE_INITIAL_MS", "10"),
            ("NOTIFIER_CIRCUIT_PROBE_MAX_MS", "40"),
            // Failed probes do not count: the outage alone dead-letters nothing.
            ("NOTIFIER_MAX_ATTEMPTS", "3"),
        ],
    )
    .await;

    let _clients = logins(&gateway, "u", 10, 3).await;
    let events = registry.events().await;
    wait_metric(&notifier, r#"notifier_circuit_open{app="default"}"#, 1.0).await;
    // Every user's next callback waits at the circuit, but the probe's: nothing else is in flight.
    eventually("users held", async || {
        metric(&notifier.metrics().await, r#"notifier_callbacks_held{app="default"}"#) >= 9.0
    })
    .await;
    receiver.max_in_flight.store(0, Ordering::SeqCst);
    let before = receiver.attempts.load(Ordering::SeqCst);
    // 30 probes over 10 users: with probes counted, some user would pass 3 attempts.
    eventually("probes", async || receiver.attempts.load(Ordering::SeqCst) >= before + 30).await;
    assert_eq!(receiver.max_in_flight.load(Ordering::SeqCst), 1, "one probe at a time while down");
    assert!(receiver.accepted().is_empty());
    assert_eq!(dead_letters(&registry).await, 0, "an outage does not use up attempts");

    receiver.failing.store(false, Ordering::SeqCst);
    receiver.wait_for_all(&events).await;
    for (user, versions) in receiver.versions_by_user() {
        assert_eq!(versions, [1, 2, 3], "{user}: no gap, in order");
    }
    let metrics = notifier.metrics().await;
    assert_eq!(metric(&metrics, r#"notifier_circuit_open{app="default"}"#), 0.0, "{metrics}");
    assert!(metric(&metrics, r#"notifier_circuit_opened_total{app="default"}"#) >= 1.0, "{metrics}");
    assert_eq!(metric(&metrics, r#"notifier_callbacks_held{app="default"}"#), 0.0, "{metrics}");
    // One retry per failed attempt (none given up on), one delivery per event.
    let failed = (receiver.attempts.load(Ordering::SeqCst) - receiver.accepted().len()) as f64;
    assert_eq!(metric(&metrics, r#"notifier_callback_retries_total{app="default"}"#), failed, "{metrics}");
    assert_eq!(metric(&metrics, r#"notifier_callbacks_delivered_total{app="default"}"#), 30.0, "{metrics}");
}

#[tokio::test]
async fn a_lone_users_failures_that_open_the_circuit_are_the_outages_not_its_own() {
    let receiver = Receiver::default();
    receiver.failing.store(true, Ordering::SeqCst);
    let (registry, gateway) = system(&receiver.start().await).await;
    // One user fails alone: its own retries are what open the circuit, at the attempt that
    // would also be its last if they counted.
    let notifier = TestNotifier::start(
        &registry,
        &[
            ("NOTIFIER_CIRCUIT_FAILURES", "3"),
            ("NOTIFIER_CIRCUIT_PROBE_INITIAL_MS", "10"),
            ("NOTIFIER_CIRCUIT_PROBE_MAX_MS", "20"),
            ("NOTIFIER_MAX_ATTEMPTS", "3"),
        ],
    )
    .await;

    let (_client, _) = gateway.login("alone", "d0", Platform::Ios).await;
    let events = registry.events().await;
    wait_metric(&notifier, r#"notifier_circuit_open{app="default"}"#, 1.0).await;
    eventually("probes", async || receiver.attempts.load(Ordering::SeqCst) >= 6).await;
    assert_eq!(dead_letters(&registry).await, 0, "the outage used up the user's attempts");

    receiver.failing.store(false, Ordering::SeqCst);
    receiver.wait_for_all(&events).await;
    assert_eq!(receiver.accepted().len(), 1);
}

#[tokio::test]
async fn a_dead_apps_callbacks_wait_in_postgres_while_another_apps_are_all_delivered() {
    let live = Receiver::default();
    let dead = Receiver::default();
    dead.failing.store(true, Ordering::SeqCst);
    let registry = TestRegistry::start().await;
    registry.db.add_app("other", "other-secret").await;
    registry
        .sql(&format!("UPDATE apps SET callback_url = '{}' WHERE app_id = 'default'", dead.start().await))
        .await;
    registry
        .sql(&format!("UPDATE apps SET callback_url = '{}' WHERE app_id = 'other'", live.start().await))
        .await;
    let gateway = TestGateway::start(&registry, "gw-1", &[]).await;
    // Memory for 4 events of an app, 12 in all: before, the dead app's events filled the budget
    // and reading stopped for every app.
    let notifier = TestNotifier::start(
        &registry,
        &[
            ("NOTIFIER_MAX_PENDING_PER_APP", "4"),
            ("NOTIFIER_MAX_PENDING", "12"),
            ("NOTIFIER_CIRCUIT_FAILURES", "2"),
            ("NOTIFIER_CIRCUIT_PROBE_MAX_MS", "50"),
        ],
    )
    .await;

    // Interleaved in the feed: the dead app's events come first in each round.
    let mut clients = Vec::new();
    for round in 0..3 {
        for user in 0..10 {
            let device = format!("d{}", round % 2);
            clients.push(gateway.login(&format!("u{user}"), &device, Platform::Ios).await.0);
            let params = LoginParams {
                app_id: "other".into(),
                client_version: "1.0.0".into(),
                ..LoginParams::new(
                    &format!("o{user}"),
                    &device,
                    Platform::Android,
                    token_for("other-secret", &format!("o{user}"), Some("other")),
                )
            };
            clients.push(gateway.login_with(params).await.0);
        }
    }
    let live_events = registry.events_of("other").await;
    assert_eq!(live_events.len(), 30);
    live.wait_for_all(&live_events).await;
    for (user, versions) in live.versions_by_user() {
        assert_eq!(versions, [1, 2, 3], "{user}");
    }
    let metrics = notifier.metrics().await;
    assert_eq!(metric(&metrics, r#"notifier_circuit_open{app="default"}"#), 1.0, "{metrics}");
    assert_eq!(metric(&metrics, r#"notifier_circuit_open{app="other"}"#), 0.0, "{metrics}");
    let held = metric(&metrics, r#"notifier_app_pending_events{app="default"}"#);
    assert!((1.0..=4.0).contains(&held), "the dead app holds at most its share in memory: {held}");
    assert!(live.accepted().iter().all(|got| got.json["app_id"] == "other"));

    // Back: its backlog is read again from Postgres and delivered, in order, nothing lost.
    dead.failing.store(false, Ordering::SeqCst);
    let dead_events = registry.events().await;
    assert_eq!(dead_events.len(), 30);
    dead.wait_for_all(&dead_events).await;
    for (user, versions) in dead.versions_by_user() {
        assert_eq!(versions, [1, 2, 3], "{user}: no gap, in order");
    }
    eventually("every cursor at the end of its feed", async || events_past_cursors(&registry).await == 0)
        .await;
    drop(clients);
}

#[tokio::test]
async fn held_callbacks_are_dead_lettered_after_the_max_age_not_after_attempts() {
    let receiver = Receiver::default();
    receiver.failing.store(true, Ordering::SeqCst);
    let (registry, gateway) = system(&receiver.start().await).await;
    let _notifier = TestNotifier::start(
        &registry,
        &[("NOTIFIER_CIRCUIT_FAILURES", "1"), ("NOTIFIER_MAX_ATTEMPTS", "1000"), ("NOTIFIER_MAX_AGE_S", "1")],
    )
    .await;

    let _clients = logins(&gateway, "u", 3, 1).await;
    eventually("three dead letters", async || dead_letters(&registry).await == 3).await;
    let errors: Vec<String> = sqlx::query_scalar("SELECT last_error FROM callback_dead_letters")
        .fetch_all(&registry.db.pool)
        .await
        .unwrap();
    assert!(errors.iter().all(|e| e.contains("500") || e.contains("held")), "{errors:?}");
}

#[tokio::test]
async fn a_restarted_notifier_loses_nothing() {
    let receiver = Receiver::default();
    // Slow enough that the stop lands mid-stream even on a loaded machine: 60 events, two at a
    // time, take three seconds.
    receiver.delay_ms.store(100, Ordering::SeqCst);
    let (registry, gateway) = system(&receiver.start().await).await;
    let mut notifier = TestNotifier::start(&registry, &[("NOTIFIER_CONCURRENCY_PER_APP", "2")]).await;

    let mut clients = logins(&gateway, "u", 20, 3).await;
    eventually("some deliveries", async || receiver.accepted().len() >= 10).await;
    notifier.stop().await;
    let delivered_before = receiver.distinct_event_ids().len();
    assert!(delivered_before < 60, "stopped mid-stream ({delivered_before} delivered)");

    // Events keep happening while the notifier is down.
    clients.extend(logins(&gateway, "v", 10, 2).await);
    notifier.start_again().await;
    let events = registry.events().await;
    assert_eq!(events.len(), 80);
    receiver.wait_for_all(&events).await;

    let expected: HashSet<String> = events.iter().map(|e| e.event_id.clone()).collect();
    assert_eq!(receiver.distinct_event_ids(), expected, "nothing but the feed's events");
    for (user, versions) in receiver.versions_by_user() {
        let rounds = if user.starts_with('u') { 3 } else { 2 };
        assert_eq!(versions, (1..=rounds).collect::<Vec<u64>>(), "{user}: no gap, in order");
    }
    let duplicates = receiver.accepted().len() - expected.len();
    assert!(duplicates <= 4, "only what was in flight is sent again: {duplicates} duplicates");
}

#[tokio::test]
async fn failing_events_are_dead_lettered_and_replayed_by_sql() {
    let receiver = Receiver::default();
    receiver.failing.store(true, Ordering::SeqCst);
    let (registry, gateway) = system(&receiver.start().await).await;
    // Attempts count while the app's circuit is closed; kept closed here (a circuit opened by a
    // dead receiver is the test above).
    let _notifier = TestNotifier::start(
        &registry,
        &[("NOTIFIER_MAX_ATTEMPTS", "3"), ("NOTIFIER_CIRCUIT_FAILURES", "1000")],
    )
    .await;

    let _clients = logins(&gateway, "u", 2, 1).await;
    let events = registry.events().await;
    let dead = async || -> Vec<(String, i32, String)> {
        sqlx::query_as(
            "SELECT event_id::text, attempts, last_error FROM callback_dead_letters ORDER BY feed_id",
        )
        .fetch_all(&registry.db.pool)
        .await
        .unwrap()
    };
    eventually("two dead letters", async || dead().await.len() == 2).await;
    for ((event_id, attempts, last_error), event) in dead().await.into_iter().zip(&events) {
        assert_eq!(event_id, event.event_id);
        assert_eq!(attempts, 3);
        assert!(last_error.contains("500"), "{last_error}");
    }
    // Given up on means settled: each partition's cursor moves past its dead letters.
    eventually("the cursors pass dead letters", async || events_past_cursors(&registry).await == 0).await;

    receiver.failing.store(false, Ordering::SeqCst);
    // Proving that nothing happens takes a while of nothing happening.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(receiver.accepted().is_empty(), "dead letters wait for an admin");
    registry.sql("UPDATE callback_dead_letters SET replay_requested = true").await;
    receiver.wait_for_all(&events).await;
    eventually("replayed dead letters are removed", async || dead().await.is_empty()).await;
}

#[tokio::test]
async fn callback_url_changes_by_sql_apply_without_restart() {
    let first = Receiver::default();
    let second = Receiver::default();
    let (registry, gateway) = system(&first.start().await).await;
    let second_url = second.start().await;
    let _notifier = TestNotifier::start(&registry, &[]).await;

    let (_a, _) = gateway.login("alice", "phone", Platform::Ios).await;
    first.wait_for_all(&registry.events().await).await;

    registry
        .sql(&format!("UPDATE apps SET callback_url = '{second_url}', callback_secret = 'rotated'"))
        .await;
    // The notifier reloads apps asynchronously: log users in one at a time, each delivered before
    // the next, until one's callback goes to the new URL.
    let mut clients = Vec::new();
    let mut bobs = 0;
    eventually("a callback to the new URL", async || {
        bobs += 1;
        let (client, _) = gateway.login(&format!("bob{bobs}"), "phone", Platform::Ios).await;
        clients.push(client);
        let event = registry.events().await.pop().expect("the login's event");
        let delivered = async |receiver: &Receiver| receiver.distinct_event_ids().contains(&event.event_id);
        eventually("delivery", async || delivered(&first).await || delivered(&second).await).await;
        delivered(&second).await
    })
    .await;
    let got = second.accepted();
    assert_eq!(got.len(), 1, "the new URL got only the last login");
    assert_eq!(got[0].json["user_id"], format!("bob{bobs}"));
    assert!(callback_signature::verify("rotated", &got[0].timestamp, &got[0].body, &got[0].signature));
    assert_eq!(first.accepted().len(), bobs, "alice and the earlier bobs went to the old URL, once");
}

/// The owner of each notifier partition (`None`: free).
async fn partition_owners(registry: &TestRegistry) -> Vec<Option<String>> {
    sqlx::query_scalar("SELECT owner FROM notifier_partitions ORDER BY partition")
        .fetch_all(&registry.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn notifiers_joining_and_leaving_hand_partitions_over_without_loss_or_reordering() {
    let receiver = Receiver::default();
    receiver.delay_ms.store(5, Ordering::SeqCst);
    let (registry, gateway) = system(&receiver.start().await).await;
    let mut first = TestNotifier::start(&registry, &[("NOTIFIER_CONCURRENCY_PER_APP", "4")]).await;
    let partitions = partition_owners(&registry).await.len();
    assert!(partition_owners(&registry).await.iter().all(|o| o.as_deref() == Some(first.member())));

    let mut clients = logins(&gateway, "u", 10, 3).await;
    // A second notifier joins while the first is still delivering: the first hands half over.
    let second = TestNotifier::start(&registry, &[("NOTIFIER_CONCURRENCY_PER_APP", "4")]).await;
    clients.extend(logins(&gateway, "v", 10, 3).await);
    eventually("the partitions are shared", async || {
        let owners = partition_owners(&registry).await;
        let by = |m: &str| owners.iter().filter(|o| o.as_deref() == Some(m)).count();
        by(first.member()) == partitions / 2 && by(second.member()) == partitions / 2
    })
    .await;
    clients.extend(logins(&gateway, "w", 10, 3).await);
    // A graceful stop hands everything to the survivor.
    first.stop().await;
    assert!(partition_owners(&registry).await.iter().all(|o| o.as_deref() != Some(first.member())));
    clients.extend(logins(&gateway, "x", 10, 3).await);
    eventually("the survivor owns every partition", async || {
        partition_owners(&registry).await.iter().all(|o| o.as_deref() == Some(second.member()))
    })
    .await;

    let events = registry.events().await;
    assert_eq!(events.len(), 120);
    receiver.wait_for_all(&events).await;
    for (user, versions) in receiver.versions_by_user() {
        assert_eq!(versions, [1, 2, 3], "{user}: no gap, in order");
    }
    let duplicates = receiver.accepted().len() - events.len();
    assert!(duplicates <= 8, "only callbacks in flight at a hand-over come twice: {duplicates}");
    let metrics = second.metrics().await;
    assert!(
        metric(&metrics, r#"notifier_partitions_taken_total{cause="balance"}"#) >= partitions as f64,
        "{metrics}"
    );
    assert_eq!(metric(&metrics, "notifier_partitions_owned"), partitions as f64, "{metrics}");
    drop(clients);
}

#[tokio::test]
async fn an_app_in_tencent_im_format_gets_state_change_callbacks() {
    let receiver = Receiver::default();
    let (registry, gateway) = system(&receiver.start().await).await;
    registry.sql("UPDATE apps SET callback_format = 'tencent_im' WHERE app_id = 'default'").await;
    let _notifier = TestNotifier::start(&registry, &[]).await;

    let (_phone, _) = gateway.login("alice", "phone", Platform::Ios).await;
    // The default policy: the tablet's login forces the phone offline.
    let (tablet, _) = gateway.login("alice", "tablet", Platform::Android).await;
    drop(tablet);
    registry.wait_online("alice", &[]).await;
    let events = registry.events().await;
    eventually("three callbacks", async || receiver.accepted().len() >= events.len()).await;

    let got = receiver.accepted();
    let infos: Vec<(&str, &str)> = got
        .iter()
        .map(|g| (g.json["Info"]["Action"].as_str().unwrap(), g.json["Info"]["Reason"].as_str().unwrap()))
        .collect();
    assert_eq!(infos, [("Login", "Register"), ("Login", "Register"), ("Disconnect", "LinkClose")]);
    for (event, got) in events.iter().zip(&got) {
        assert_eq!(got.event_id_header, event.event_id, "our headers go along");
        assert!(callback_signature::verify("cb-default", &got.timestamp, &got.body, &got.signature));
        assert_eq!(got.json["CallbackCommand"], "State.StateChange");
        assert_eq!(got.json["Info"]["To_Account"], "alice");
        assert_eq!(got.json["EventTime"].as_u64(), Some(event.event_time_ms));
        assert!(
            got.query.starts_with("SdkAppid=default&CallbackCommand=State.StateChange&contenttype=json"),
            "{}",
            got.query
        );
    }
    assert!(got[0].query.ends_with("OptPlatform=iOS"), "{}", got[0].query);
    assert_eq!(got[1].json["KickedDevice"], serde_json::json!([{"Platform": "iOS"}]));
    assert!(got[2].query.ends_with("OptPlatform=Android"), "{}", got[2].query);
}

/// Events that some notifier cursor has not passed yet.
async fn events_past_cursors(registry: &TestRegistry) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM presence_events e JOIN notifier_partitions n USING (partition) \
         WHERE e.position > n.delivered",
    )
    .fetch_one(&registry.db.pool)
    .await
    .unwrap()
}
