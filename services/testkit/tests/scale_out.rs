//! Several registry processes share the users and take over from each other: three registries,
//! two gateways, a notifier and a callback receiver as real processes on loopback, under a steady
//! login load, while a registry is killed, paused past its lease, stopped, or joined by another.
//! After each run the whole history is checked: every LoginOk has its event, each app's feed is
//! gap-free, every user's `user_version` rises by one per event, no user ever had two devices
//! online (the default policy), no login waited past the gateway's bound, and every event reached
//! the app backend. A query through any one registry answers for all of them.

use std::{
    collections::{HashMap, HashSet},
    time::Duration,
};

use testkit::cluster::{Cluster, GATEWAY_LEASE_S, LOGIN_BOUND, LoginLoad, LoginRecord, PARTITION_LEASE_MS};
use tokio::time::Instant;

/// The bound on a failover after a kill -9: every partition owned again.
const FAILOVER_BOUND: Duration = Duration::from_secs(3);

fn gateways(cluster: &Cluster) -> Vec<std::net::SocketAddr> {
    cluster.gateways.iter().map(|(_, addr)| *addr).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_killed_under_load_is_replaced_within_seconds_and_nothing_is_lost() {
    let cluster = Cluster::start(3, 2).await;
    let load = LoginLoad::start(gateways(&cluster), 400, 300);
    tokio::time::sleep(Duration::from_secs(2)).await;

    let killed_at = Instant::now();
    let mut cluster = cluster;
    cluster.registries[1].service.process.kill9();
    let failover = cluster.wait_owned_without("registry-2", killed_at).await;
    println!("partitions owned again {failover:?} after the kill");
    assert!(failover <= FAILOVER_BOUND, "failover took {failover:?}");
    cluster.wait_balanced(2).await;

    tokio::time::sleep(Duration::from_secs(3)).await;
    let records = load.stop().await;
    check_history(&cluster, &records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_paused_registry_loses_its_partitions_commits_nothing_after_and_rejoins() {
    let cluster = Cluster::start(3, 2).await;
    let load = LoginLoad::start(gateways(&cluster), 300, 100);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let paused = &cluster.registries[1];
    let paused_at = Instant::now();
    paused.service.process.pause();
    // Its member lease runs out; the others take its partitions.
    let taken = cluster.wait_owned_without("registry-2", paused_at).await;
    println!("partitions of the paused registry taken after {taken:?}");
    assert!(
        taken >= Duration::from_millis(PARTITION_LEASE_MS / 2),
        "taken after {taken:?}: before its lease could have run out"
    );
    // Past the lease, then it wakes up: with logins it had accepted before the pause still in
    // its hands, and its old partitions in memory.
    tokio::time::sleep(Duration::from_millis(1000)).await;
    paused.service.process.resume();
    cluster.wait_balanced(3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;
    let records = load.stop().await;

    let metrics = reqwest::get(format!("http://{}/metrics", paused.service.admin_addr))
        .await
        .expect("metrics of the resumed registry")
        .text()
        .await
        .expect("metrics text");
    let lost = metric(&metrics, "registry_partitions_lost_total");
    assert!(lost >= 1.0, "the resumed registry never noticed it lost its partitions:\n{metrics}");
    // Anything it committed after losing them would show as a repeated or skipped user_version.
    check_history(&cluster, &records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_registry_stopping_and_another_joining_fail_no_login() {
    let mut cluster = Cluster::start(3, 2).await;
    let load = LoginLoad::start(gateways(&cluster), 300, 150);
    tokio::time::sleep(Duration::from_secs(1)).await;

    let status = cluster.registries[2].service.process.terminate();
    assert!(status.success(), "SIGTERM: {status:?}");
    cluster.wait_balanced(2).await;
    cluster.add_registry().await;
    cluster.wait_balanced(3).await;
    tokio::time::sleep(Duration::from_secs(1)).await;

    let records = load.stop().await;
    let failed: Vec<_> = records
        .iter()
        .filter(|r| r.result.as_ref().is_err_and(|code| !code.starts_with("kicked:")))
        .collect();
    assert!(
        failed.is_empty(),
        "{} of {} logins failed during hand-overs: {failed:?}",
        failed.len(),
        records.len()
    );
    check_history(&cluster, &records).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_gateway_killed_during_a_registry_failover_still_loses_its_devices() {
    let mut cluster = Cluster::start(3, 2).await;
    let gw2 = cluster.gateways[1].1;
    let mut held = Vec::new();
    for i in 0..30 {
        held.push(cluster.login_retrying(gw2, &format!("held{i}"), "phone").await.0);
    }
    assert_eq!(online_on(&cluster, "gw-2").await, 30);

    let killed_at = Instant::now();
    cluster.registries[0].service.process.kill9();
    cluster.gateways[1].0.process.kill9();
    let failover = cluster.wait_owned_without("registry-1", killed_at).await;
    let bound = failover + Duration::from_secs(GATEWAY_LEASE_S) + Duration::from_secs(2);
    loop {
        let online = online_on(&cluster, "gw-2").await;
        if online == 0 {
            break;
        }
        assert!(
            killed_at.elapsed() < bound,
            "{online} devices of the dead gateway still online after {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!(
        "devices of the dead gateway offline {:?} after the kills (failover {failover:?})",
        killed_at.elapsed()
    );
    drop(held);
    check_history(&cluster, &[]).await;
}

/// Devices stored as online on `gateway`.
async fn online_on(cluster: &Cluster, gateway: &str) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM devices WHERE gateway_id = $1 AND status = 'online'")
        .bind(gateway)
        .fetch_one(&cluster.db.pool)
        .await
        .expect("count devices")
}

fn metric(text: &str, name: &str) -> f64 {
    text.lines()
        .filter(|line| line.starts_with(name))
        .filter_map(|line| line.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()))
        .sum()
}

#[derive(sqlx::FromRow)]
struct EventRow {
    seq: i64,
    event_id: String,
    user_id: String,
    device_id: String,
    action: String,
    user_version: i64,
    kicked: String,
}

/// The invariants of the whole run, from the database and the callback receiver.
async fn check_history(cluster: &Cluster, records: &[LoginRecord]) {
    // No hang, and refusals only with the one clean code (or a kick: a newer login of the same
    // device came first).
    for r in records {
        assert!(r.elapsed <= LOGIN_BOUND + Duration::from_millis(500), "login waited {:?}: {r:?}", r.elapsed);
        if let Err(code) = &r.result {
            assert!(code == "unavailable" || code == "kicked:replaced_by_login", "{r:?}");
        }
    }
    let ok = records.iter().filter(|r| r.result.is_ok()).count();
    println!("{} logins: {ok} ok, {} refused", records.len(), records.len() - ok);

    let events: Vec<EventRow> = sqlx::query_as(
        "SELECT seq, event_id::text AS event_id, user_id, device_id, action, user_version, \
         kicked_devices::text AS kicked FROM presence_events WHERE app_id = 'default' ORDER BY seq",
    )
    .fetch_all(&cluster.db.pool)
    .await
    .expect("read the feed");
    // The app's feed is gap-free.
    for (i, e) in events.iter().enumerate() {
        assert_eq!(e.seq, i as i64 + 1, "the feed has a gap or a repeat at {i}");
    }
    // Each user's versions rise by one per event, and replaying them never shows two devices
    // online at once (single_device policy).
    let mut users: HashMap<&str, (i64, HashSet<String>)> = HashMap::new();
    for e in &events {
        let (version, online) = users.entry(&e.user_id).or_default();
        assert_eq!(
            e.user_version,
            *version + 1,
            "user {} jumped from version {version} at seq {}",
            e.user_id,
            e.seq
        );
        *version = e.user_version;
        match e.action.as_str() {
            "login" => {
                let kicked: Vec<serde_json::Value> = serde_json::from_str(&e.kicked).expect("kicked devices");
                for k in kicked {
                    online.remove(k["device_id"].as_str().unwrap_or_default());
                }
                online.insert(e.device_id.clone());
            }
            _ => {
                online.remove(&e.device_id);
            }
        }
        assert!(online.len() <= 1, "user {} had {online:?} online at seq {}", e.user_id, e.seq);
    }
    // Every LoginOk has its login event; an event without a LoginOk only for a refused login
    // whose commit happened anyway (never acknowledged).
    let mut logins: HashMap<(&str, &str), i64> = HashMap::new();
    for e in events.iter().filter(|e| e.action == "login") {
        *logins.entry((&e.user_id, &e.device_id)).or_default() += 1;
    }
    let mut told: HashMap<(&str, &str), (i64, i64)> = HashMap::new();
    for r in records {
        let entry = told.entry((&r.user, &r.device)).or_default();
        if r.result.is_ok() { entry.0 += 1 } else { entry.1 += 1 }
    }
    for ((user, device), (oks, refused)) in &told {
        let events = logins.get(&(*user, *device)).copied().unwrap_or(0);
        assert!(
            events >= *oks && events <= oks + refused,
            "{user}/{device}: {oks} LoginOk, {refused} refused, {events} login events"
        );
    }
    // Every event reached the app backend (at least once; it dedupes by event_id).
    cluster.receiver.wait_for_ids(events.iter().map(|e| e.event_id.clone()).collect()).await;
}

/// A subscriber on one gateway follows 24 users spread over every registry's partitions. A
/// registry is killed while the users leave: pushes of its partitions are lost with it, and the
/// survivors' take-over (resync, re-attach, re-watch) must bring the subscriber to every user's
/// current status anyway.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn subscribers_converge_after_a_registry_failover() {
    use presence_client::session::{Session, SessionConfig, SessionEvent};
    use presence_proto::v1::Platform;

    let mut cluster = Cluster::start(3, 2).await;
    let users: Vec<String> = (0..24).map(|i| format!("watched-{i}")).collect();
    let mut devices = Vec::new();
    for user in &users {
        devices.push(cluster.login_retrying(cluster.gateways[1].1, user, "phone").await.0);
    }
    let login = testkit::inprocess::params("subscriber", "browser", Platform::Web);
    let mut session = Session::start(SessionConfig::new(&cluster.gateways[0].1.to_string(), login));
    let statuses =
        testkit::eventually_ok("the subscription", async || session.subscribe(users.clone()).await).await;
    assert!(statuses.iter().all(|s| s.status == "online"), "{statuses:?}");

    // Kill a registry, and let every watched user leave meanwhile.
    cluster.registries[1].service.process.kill9();
    drop(devices);

    let mut seen: HashMap<String, String> = statuses.into_iter().map(|s| (s.user_id, s.status)).collect();
    let converged = tokio::time::timeout(Duration::from_secs(30), async {
        while seen.values().any(|status| status != "offline") {
            match session.next_event().await {
                Some(SessionEvent::Status(status)) => {
                    seen.insert(status.user_id, status.status);
                }
                Some(_) => {}
                None => panic!("the session ended"),
            }
        }
    })
    .await;
    let still: Vec<_> = seen.iter().filter(|(_, status)| *status != "offline").collect();
    assert!(converged.is_ok(), "the subscriber did not converge; still online: {still:?}");
}

/// A query through any one registry answers for users of every registry's partitions, in the
/// order asked: the asked registry forwards the others' parts and puts their ids back when it
/// asked for results without them.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_query_through_any_registry_answers_for_every_partition_in_order() {
    use presence_common::internal_auth::Role;
    use presence_proto::v1::{PresenceStatus, QueryRequest};

    let cluster = Cluster::start(3, 1).await;
    let gateway = cluster.gateways[0].1;
    // 60 users over the 64 partitions of 3 registries; every third one online.
    let users: Vec<String> = (0..60).map(|i| format!("q{i}")).collect();
    let mut online = Vec::new();
    for user in users.iter().step_by(3) {
        online.push(cluster.login_retrying(gateway, user, "d").await.0);
    }
    let asked: Vec<String> = users.iter().rev().cloned().collect();
    for registry in &cluster.registries {
        let mut api = testkit::internal::api_as(&registry.url, Role::Facade, "scale-out-query").await;
        for without_user_ids in [false, true] {
            let request = QueryRequest {
                app_id: "default".into(),
                user_ids: asked.iter().collect(),
                without_user_ids,
                ..Default::default()
            };
            let reply = api.query(request).await.expect("query").into_inner();
            assert_eq!(reply.results.len(), asked.len(), "via {}", registry.name);
            for (result, id) in reply.results.iter().zip(&asked) {
                let expected_id = if without_user_ids { "" } else { id.as_str() };
                assert_eq!(result.user_id, expected_id, "via {}", registry.name);
                let n: usize = id[1..].parse().expect("q<n>");
                let expected =
                    if n.is_multiple_of(3) { PresenceStatus::Online } else { PresenceStatus::Offline };
                assert_eq!(result.status(), expected, "{id} via {}", registry.name);
            }
        }
    }
    drop(online);
}
