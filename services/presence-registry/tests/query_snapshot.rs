//! The batch query's snapshot is exact while users change: each result is the user as of the
//! answer's `as_of_seq` in the feed, reflecting every event up to it and none after it. Real
//! Postgres, real gRPC, logins and logouts racing the queries.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::collections::{HashMap, HashSet};

use presence_proto::v1::{Platform, PresenceStatus, QueryRequest, UserPresence};
use testkit::inprocess::*;

const GATEWAYS: usize = 4;
const USERS_PER_GATEWAY: usize = 8;
const ROUNDS: usize = 40;

#[tokio::test]
async fn every_query_answer_is_the_feed_as_of_its_seq() {
    let registry = TestRegistry::start().await;
    let users: Vec<String> = (0..GATEWAYS * USERS_PER_GATEWAY).map(|i| format!("snap{i}")).collect();

    // Each gateway logs its users in and out, over and over.
    let mut drivers = Vec::new();
    for g in 0..GATEWAYS {
        let mut gateway = StubGateway::attach(&registry.url(), &format!("gw{g}"), vec![]).await;
        let mine: Vec<String> = users[g * USERS_PER_GATEWAY..(g + 1) * USERS_PER_GATEWAY].to_vec();
        drivers.push(tokio::spawn(async move {
            for round in 0..ROUNDS {
                for user in &mine {
                    let phone = session(user, &format!("phone{round}"), Platform::Ios);
                    gateway.login(&phone).await;
                    if round % 2 == 0 {
                        assert!(gateway.logout(&phone).await);
                    }
                }
            }
        }));
    }

    // Meanwhile, query all of them again and again.
    let mut api = registry.api().await;
    let mut answers: Vec<(u64, Vec<UserPresence>)> = Vec::new();
    while drivers.iter().any(|d| !d.is_finished()) {
        let reply = api
            .query(QueryRequest {
                app_id: "default".into(),
                user_ids: users.iter().collect(),
                ..Default::default()
            })
            .await
            .expect("query")
            .into_inner();
        answers.push((reply.as_of_seq, reply.results));
    }
    for driver in drivers {
        driver.await.expect("driver");
    }

    // Each answer against the feed: per user, its last event at or before `as_of_seq`.
    let events = registry.events().await;
    assert_eq!(
        events.len(),
        GATEWAYS * USERS_PER_GATEWAY * (ROUNDS + ROUNDS / 2),
        "one event per login and logout"
    );
    let positions: HashSet<u64> = answers.iter().map(|(seq, _)| *seq).collect();
    assert!(positions.len() >= 20, "queries ran while the feed moved: {} positions seen", positions.len());
    let mut checked = 0;
    for (as_of_seq, results) in &answers {
        let mut expected: HashMap<&str, (u64, PresenceStatus)> = HashMap::new();
        for event in events.iter().take_while(|e| e.seq <= *as_of_seq) {
            expected.insert(&event.user_id, (event.user_version, event.user_status()));
        }
        for (user, result) in users.iter().zip(results) {
            assert_eq!(&result.user_id, user, "results come in request order");
            let (version, status) =
                expected.get(user.as_str()).copied().unwrap_or((0, PresenceStatus::Offline));
            assert_eq!(
                (result.user_version, result.status()),
                (version, status),
                "{user} in the answer as of seq {as_of_seq}"
            );
            checked += 1;
        }
    }
    assert!(checked > 0);
}
