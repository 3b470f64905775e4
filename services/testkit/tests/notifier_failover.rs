//! Two notifier processes share the partitions; one is killed with SIGKILL mid-stream. The
//! survivor takes its partitions over from their saved cursors: every event is delivered at least
//! once, and each user's callbacks still arrive in order.

use std::{
    collections::{HashMap, HashSet},
    sync::atomic::Ordering,
    time::{Duration, Instant},
};

use presence_client::Client;
use presence_proto::v1::Platform;
use testkit::{ServiceProcess, System, eventually, free_port, inprocess::metric};

const USERS: usize = 12;

/// `rounds` logins of each user, devices alternating (each login after the first kicks the
/// previous device: one event per login). Returns the clients, kept open.
async fn logins(system: &System, rounds: std::ops::Range<usize>) -> Vec<Client> {
    let mut clients = Vec::new();
    for round in rounds {
        for user in 0..USERS {
            let device = format!("d{}", round % 2);
            clients.push(system.login(&format!("u{user}"), &device, Platform::Ios, false).await.0);
        }
    }
    clients
}

/// Owner of each partition (`None`: free).
async fn owners(system: &System) -> Vec<Option<String>> {
    sqlx::query_scalar("SELECT owner FROM notifier_partitions ORDER BY partition")
        .fetch_all(&system.db.pool)
        .await
        .unwrap()
}

/// The live notifier members.
async fn notifiers(system: &System) -> Vec<String> {
    sqlx::query_scalar("SELECT member FROM presence_members WHERE kind = 'notifier' ORDER BY member")
        .fetch_all(&system.db.pool)
        .await
        .unwrap()
}

#[tokio::test]
async fn a_killed_notifiers_partitions_are_delivered_by_the_survivor_in_order() {
    let system = System::start().await;
    // A slow app backend, so that the kill finds callbacks queued and in flight.
    system.receiver.delay_ms.store(15, Ordering::SeqCst);
    let admin = free_port();
    let mut second = ServiceProcess::spawn(
        "notifier",
        "notifier-2",
        &[
            ("DATABASE_URL", system.runtime_url().to_owned()),
            ("NOTIFIER_ID", "notifier-2".to_owned()),
            ("NOTIFIER_METRICS_ADDR", admin.to_string()),
            ("NOTIFIER_FLUSH_INTERVAL_MS", "100".to_owned()),
        ],
    );
    second.wait_healthy(admin).await;
    let partitions = owners(&system).await.len();
    eventually("the two notifiers share the partitions", async || {
        let owners = owners(&system).await;
        let members = notifiers(&system).await;
        members.len() == 2
            && members.iter().all(|m| {
                let owned = owners.iter().filter(|o| o.as_ref() == Some(m)).count();
                owned == partitions / 2
            })
    })
    .await;
    let killed = notifiers(&system).await.into_iter().find(|m| m.starts_with("notifier-2-")).unwrap();
    let owned_before = owners(&system).await;
    let killed_partitions: Vec<i32> =
        (0..partitions as i32).filter(|p| owned_before[*p as usize].as_ref() == Some(&killed)).collect();

    // Logins go on while the second notifier is killed part-way through delivering them.
    let mut killed_at = None;
    let mut delivered_before = 0;
    let (mut clients, ()) = tokio::join!(logins(&system, 0..12), async {
        eventually("some deliveries", async || system.receiver.accepted().len() >= 40).await;
        second.kill9();
        killed_at = Some(Instant::now());
        delivered_before = system.receiver.accepted().len();
    });
    let killed_at = killed_at.unwrap();
    // Measured before the next logins, which take their own time on a loaded machine.
    eventually("the survivor owns every partition", async || {
        let owners = owners(&system).await;
        let members = notifiers(&system).await;
        members.len() == 1 && owners.iter().all(|o| o.as_ref() == Some(&members[0]))
    })
    .await;
    let took = killed_at.elapsed();
    assert!(took < Duration::from_secs(5), "taken over after {took:?}");
    clients.extend(logins(&system, 12..20).await);

    let versions: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT event_id::text, user_id, user_version FROM presence_events ORDER BY user_version",
    )
    .fetch_all(&system.db.pool)
    .await
    .unwrap();
    assert_eq!(versions.len(), USERS * 20);
    let all: HashSet<String> = versions.iter().map(|(id, _, _)| id.clone()).collect();
    system.receiver.wait_for_ids(all.clone()).await;
    assert_eq!(system.receiver.distinct_event_ids(), all, "nothing but the feed's events");

    // The survivor delivered the killed notifier's partitions: events of theirs first arrived
    // after the kill.
    let early: HashSet<String> =
        system.receiver.accepted()[..delivered_before].iter().map(|r| r.event_id()).collect();
    let theirs: Vec<String> =
        sqlx::query_scalar("SELECT event_id::text FROM presence_events WHERE partition = ANY($1)")
            .bind(&killed_partitions)
            .fetch_all(&system.db.pool)
            .await
            .unwrap();
    assert!(theirs.iter().any(|id| !early.contains(id)), "the kill came before the end of their events");

    let mut expected: HashMap<String, Vec<u64>> = HashMap::new();
    for (_, user, version) in versions {
        expected.entry(user).or_default().push(version as u64);
    }
    assert_eq!(system.receiver.versions_by_user(), expected, "per user, first deliveries in order");

    let survivor = reqwest::get(format!("http://{}/metrics", system.notifier.admin_addr))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metric(&survivor, r#"notifier_partitions_taken_total{cause="failover"}"#) >= 1.0,
        "the survivor took the dead notifier's partitions: {survivor}"
    );
    assert_eq!(metric(&survivor, "notifier_partitions_owned"), partitions as f64, "{survivor}");
    assert!(!notifiers(&system).await.contains(&killed));
    drop(clients);
}
