//! The REST contract (http-api.md) against the real registry, gateway and devices.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use presence_proto::{
    json::PresenceEventJson,
    v1::{Platform, server_frame},
};
use serde_json::{Value, json};
use testkit::{
    WAIT, eventually_ok,
    inprocess::{KEY, OTHER_SECRET, Stack, assert_error, into_json},
};

fn ids(body: &Value) -> Vec<String> {
    body["results"]
        .as_array()
        .expect("results")
        .iter()
        .map(|r| r["user_id"].as_str().unwrap().to_owned())
        .collect()
}

#[tokio::test]
async fn query_of_500_users_keeps_order_and_501_is_refused() {
    let stack = Stack::start().await;
    let _alice = stack.login("alice", "a-ios", Platform::Ios).await;
    let _bob = stack.login("bob", "b-android", Platform::Android).await;

    let mut users: Vec<String> = (0..500).map(|i| format!("user-{i:03}")).collect();
    users[7] = "alice".into();
    users[499] = "bob".into();
    users.reverse(); // not sorted: order must be the request's
    let (status, body) = stack.post("/v1/presence/query", &json!({ "user_ids": users })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(ids(&body), users);
    for result in body["results"].as_array().unwrap() {
        let expected = if ["alice", "bob"].contains(&result["user_id"].as_str().unwrap()) {
            "online"
        } else {
            "offline"
        };
        assert_eq!(result["status"], expected, "{result}");
        assert!(result.get("devices").is_none(), "no devices without detail: {result}");
    }
    assert!(body["as_of_seq"].as_u64().unwrap() >= 2, "{body}");

    let mut too_many = users.clone();
    too_many.push("one-more".into());
    let refused = stack.post("/v1/presence/query", &json!({ "user_ids": too_many })).await;
    assert!(assert_error(&refused, 400, "too_many_user_ids").contains("500"));
    assert_error(&stack.post("/v1/presence/query", &json!({ "user_ids": [] })).await, 400, "no_user_ids");
    let long = "x".repeat(257);
    assert_error(
        &stack.post("/v1/presence/query", &json!({ "user_ids": [long] })).await,
        400,
        "invalid_user_id",
    );
    assert_error(
        &stack.post("/v1/presence/query", &json!({ "user_ids": [""] })).await,
        400,
        "invalid_user_id",
    );
    stack.stop().await;
}

#[tokio::test]
async fn detail_lists_devices_and_unknown_users_are_offline() {
    let stack = Stack::start().await;
    let _ios = stack.login("alice", "a-ios", Platform::Ios).await;
    let _pc = stack.login("alice", "a-pc", Platform::Windows).await;

    let (status, body) =
        stack.post("/v1/presence/query", &json!({ "user_ids": ["nobody", "alice"], "detail": true })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["results"][0],
        json!({ "user_id": "nobody", "status": "offline", "devices": [], "user_version": 0 })
    );
    let alice = &body["results"][1];
    assert_eq!(alice["status"], "online");
    let mut devices: Vec<Value> = alice["devices"].as_array().unwrap().clone();
    devices.sort_by_key(|d| d["device_id"].as_str().unwrap().to_owned());
    assert_eq!(devices.len(), 2, "{alice}");
    for (device, (id, platform)) in devices.iter().zip([("a-ios", "ios"), ("a-pc", "windows")]) {
        assert_eq!(device["device_id"], id);
        assert_eq!(device["platform"], platform);
        assert_eq!(device["status"], "online");
        assert_eq!(device["client_version"], "1.0.0");
        assert!(device["since_ms"].as_u64().unwrap() > 1_600_000_000_000, "{device}");
    }

    let (_, plain) =
        stack.post("/v1/presence/query", &json!({ "user_ids": ["alice"], "detail": false })).await;
    assert_eq!(plain["results"][0]["status"], "online");
    assert!(plain["results"][0].get("devices").is_none(), "{plain}");
    stack.stop().await;
}

#[tokio::test]
async fn single_user_presence_has_devices_and_last_reason() {
    let stack = Stack::start().await;
    let mut phone = stack.login("carol", "c-ios", Platform::Ios).await;

    let (status, body) = stack.get("/v1/users/carol/presence").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "carol");
    assert_eq!(body["status"], "online");
    assert_eq!(body["devices"][0]["device_id"], "c-ios");
    assert!(body["as_of_seq"].as_u64().unwrap() >= 1);

    phone.logout().await.expect("logout");
    let body = stack.get_until("/v1/users/carol/presence", |b| b["status"] == "offline").await;
    assert_eq!(body["last_reason"], "unregister", "{body}");
    assert!(body["last_seen_ms"].as_u64().unwrap() > 1_600_000_000_000, "{body}");
    assert_eq!(body["devices"], json!([]));

    let (status, body) = stack.get("/v1/users/never%20seen/presence").await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["user_id"], "never seen");
    assert_eq!(body["status"], "offline");
    stack.stop().await;
}

/// The next frame a device receives must be `Kicked{reason: "admin"}`, then the socket closes.
async fn expect_kicked(client: &mut presence_client::Client) {
    let frame = tokio::time::timeout(WAIT, client.next_frame()).await.expect("frame in time").expect("frame");
    match frame.and_then(|f| f.kind) {
        Some(server_frame::Kind::Kicked(kicked)) => assert_eq!(kicked.reason, "admin"),
        other => panic!("expected Kicked, got {other:?}"),
    }
    let end = tokio::time::timeout(WAIT, client.next_frame()).await.expect("closed in time");
    assert!(matches!(end, Ok(None)), "connection closes after Kicked: {end:?}");
}

#[tokio::test]
async fn kick_by_platform_then_all_reaches_the_devices() {
    let stack = Stack::start().await;
    let mut ios = stack.login("dave", "d-ios", Platform::Ios).await;
    let mut android = stack.login("dave", "d-android", Platform::Android).await;
    let mut web = stack.login("dave", "d-web", Platform::Web).await;

    let (status, body) = stack.post("/v1/users/dave/kick", &json!({ "platforms": ["ios"] })).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, json!({ "kicked_devices": [{ "device_id": "d-ios", "platform": "ios" }] }));
    expect_kicked(&mut ios).await;
    let (_, dave) = stack.get("/v1/users/dave/presence").await;
    let mut left: Vec<&str> =
        dave["devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    left.sort();
    assert_eq!(left, ["d-android", "d-web"]);

    // No body at all: every device.
    let response = stack.http.post(stack.url("/v1/users/dave/kick")).bearer_auth(KEY).send().await;
    let (status, body) = into_json(response).await;
    assert_eq!(status, 200, "{body}");
    let mut kicked: Vec<&str> =
        body["kicked_devices"].as_array().unwrap().iter().map(|d| d["device_id"].as_str().unwrap()).collect();
    kicked.sort();
    assert_eq!(kicked, ["d-android", "d-web"]);
    expect_kicked(&mut android).await;
    expect_kicked(&mut web).await;

    let (_, dave) = stack.get("/v1/users/dave/presence").await;
    assert_eq!(dave["status"], "offline");
    assert_eq!(dave["last_reason"], "admin_kick");
    let (_, events) = stack.get("/v1/events?after_seq=0&limit=1000").await;
    let kicks = events["events"].as_array().unwrap().iter().filter(|e| e["reason"] == "admin_kick").count();
    assert_eq!(kicks, 3, "one logout event per kicked device: {events}");

    // Nothing left to kick: an empty list, not an error.
    let (status, body) = stack.post("/v1/users/dave/kick", &json!({})).await;
    assert_eq!((status, body), (200, json!({ "kicked_devices": [] })));
    let refused = stack.post("/v1/users/dave/kick", &json!({ "platforms": ["ios", "blackberry"] })).await;
    assert!(assert_error(&refused, 400, "unknown_platform").contains("blackberry"));
    assert_error(&stack.post("/v1/users/dave/kick", &json!({ "platforms": [] })).await, 400, "no_platforms");
    stack.stop().await;
}

#[tokio::test]
async fn events_page_by_seq_in_the_callback_json() {
    let stack = Stack::start().await;
    let mut e1 = stack.login("erin", "e-ios", Platform::Ios).await;
    let _e2 = stack.login("erin", "e-mac", Platform::Mac).await;
    let _f1 = stack.login("frank", "f-web", Platform::Web).await;
    e1.logout().await.expect("logout");
    let expected: Vec<Value> = eventually_ok("four events", async || {
        let events = stack.registry_events("default").await;
        if events.len() == 4 { Ok(events) } else { Err(events.len()) }
    })
    .await
    .iter()
    .map(|e| serde_json::to_value(PresenceEventJson::from(e)).unwrap())
    .collect();

    let mut pulled = Vec::new();
    let mut after = 0;
    loop {
        let (status, page) = stack.get(&format!("/v1/events?after_seq={after}&limit=3")).await;
        assert_eq!(status, 200, "{page}");
        let events = page["events"].as_array().unwrap();
        assert!(events.len() <= 3);
        if events.is_empty() {
            assert_eq!(page["next_after_seq"], after, "an empty page keeps the cursor");
            break;
        }
        after = page["next_after_seq"].as_u64().unwrap();
        assert_eq!(after, events.last().unwrap()["seq"].as_u64().unwrap());
        pulled.extend(events.iter().cloned());
    }
    assert_eq!(pulled, expected, "the same JSON as the callbacks (PresenceEventJson)");
    let seqs: Vec<u64> = pulled.iter().map(|e| e["seq"].as_u64().unwrap()).collect();
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(pulled[3]["action"], "logout");
    assert_eq!(pulled[3]["reason"], "unregister");

    // Defaults: from the start, up to 100.
    let (_, all) = stack.get("/v1/events").await;
    assert_eq!(all["events"].as_array().unwrap().len(), 4);
    let (_, one) = stack.get(&format!("/v1/events?after_seq={}&limit=1", seqs[1])).await;
    assert_eq!(one["events"].as_array().unwrap()[0], expected[2]);

    for bad in ["limit=0", "limit=1001"] {
        assert_error(&stack.get(&format!("/v1/events?{bad}")).await, 400, "invalid_limit");
    }
    for bad in ["limit=ten", "after_seq=-1", "after=3", "limit=1&limit=2"] {
        assert_error(&stack.get(&format!("/v1/events?{bad}")).await, 400, "invalid_query");
    }
    stack.stop().await;
}

#[tokio::test]
async fn requests_without_a_valid_key_are_refused() {
    let stack = Stack::start().await;
    let requests = [
        stack.http.post(stack.url("/v1/presence/query")).json(&json!({ "user_ids": ["a"] })),
        stack.http.get(stack.url("/v1/users/a/presence")),
        stack.http.post(stack.url("/v1/users/a/kick")),
        stack.http.get(stack.url("/v1/events")),
    ];
    for request in requests {
        let (plain, wrong, basic, empty) = (
            request.try_clone().unwrap(),
            request.try_clone().unwrap().bearer_auth("key-nope"),
            request.try_clone().unwrap().basic_auth("default", Some(KEY)),
            request.bearer_auth(""),
        );
        for request in [plain, wrong, basic, empty] {
            let response = request.send().await.expect("answers");
            assert_eq!(response.headers()["www-authenticate"], "Bearer");
            let got = into_json(Ok(response)).await;
            assert_error(&got, 401, "unauthenticated");
        }
    }
    // An unauthenticated request with a bad body is still a 401: no input is read before auth.
    let response = stack.http.post(stack.url("/v1/presence/query")).body("{").send().await;
    assert_error(&into_json(response).await, 401, "unauthenticated");
    stack.stop().await;
}

#[tokio::test]
async fn an_app_never_sees_another_apps_users_or_events() {
    let stack = Stack::start().await;
    let mut theirs = stack.login_to("other", OTHER_SECRET, "alice", "o-ios", Platform::Ios).await;
    let _ours = stack.login("bob", "b-ios", Platform::Ios).await;

    let (_, ours) =
        stack.post("/v1/presence/query", &json!({ "user_ids": ["alice", "bob"], "detail": true })).await;
    assert_eq!(
        ours["results"][0],
        json!({ "user_id": "alice", "status": "offline", "devices": [], "user_version": 0 })
    );
    assert_eq!(ours["results"][1]["status"], "online");
    let (_, alice) = stack.get("/v1/users/alice/presence").await;
    assert_eq!(alice["status"], "offline");
    let (_, seen_by_other) = stack.get_as("key-other", "/v1/users/alice/presence").await;
    assert_eq!(seen_by_other["status"], "online");
    assert_eq!(seen_by_other["devices"][0]["device_id"], "o-ios");

    let (_, events) = stack.get("/v1/events").await;
    let events = events["events"].as_array().unwrap();
    assert_eq!(events.len(), 1);
    assert!(events.iter().all(|e| e["app_id"] == "default" && e["user_id"] == "bob"), "{events:?}");
    let (_, theirs_events) = stack.get_as("key-other", "/v1/events").await;
    assert_eq!(theirs_events["events"].as_array().unwrap().len(), 1);
    assert_eq!(theirs_events["events"][0]["app_id"], "other");

    // Our kick of "alice" is a kick of our (offline) alice: theirs stays online.
    let (status, kicked) = stack.post("/v1/users/alice/kick", &json!({})).await;
    assert_eq!((status, kicked), (200, json!({ "kicked_devices": [] })));
    let (_, seen_by_other) = stack.get_as("key-other", "/v1/users/alice/presence").await;
    assert_eq!(seen_by_other["status"], "online");
    theirs.heartbeat().await.expect("their device is untouched");
    stack.stop().await;
}

#[tokio::test]
async fn a_custom_status_set_by_the_backend_shows_in_queries_and_the_feed_until_offline() {
    let stack = Stack::start().await;
    let offline = stack.put("/v1/users/kate/status", &json!({"custom_status": "busy"})).await;
    assert_error(&offline, 409, "user_offline");

    let kate = stack.login("kate", "phone", Platform::Ios).await;
    let (status, body) = stack.put("/v1/users/kate/status", &json!({"custom_status": "busy"})).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["custom_status"].as_str(), body["user_version"].as_u64()), (Some("busy"), Some(2)));
    let (_, body) = stack.post("/v1/presence/query", &json!({"user_ids": ["kate", "nobody"]})).await;
    assert_eq!(body["results"][0]["custom_status"], "busy", "{body}");
    assert_eq!(body["results"][0]["user_version"], 2, "{body}");
    assert!(body["results"][1].get("custom_status").is_none(), "{body}");
    assert_eq!(body["results"][1]["user_version"], 0, "{body}");

    let long = "x".repeat(257);
    assert_error(
        &stack.put("/v1/users/kate/status", &json!({"custom_status": long})).await,
        400,
        "invalid_custom_status",
    );
    assert_error(&stack.put("/v1/users/kate/status", &json!({"status": "busy"})).await, 400, "invalid_body");

    drop(kate);
    let gone = stack.get_until("/v1/users/kate/presence", |b| b["status"] == "offline").await;
    assert!(gone.get("custom_status").is_none(), "cleared when offline: {gone}");
    let (_, feed) = stack.get("/v1/events?after_seq=0").await;
    let actions: Vec<(&str, &str, &str)> = feed["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["action"].as_str().unwrap(),
                e["reason"].as_str().unwrap(),
                e["custom_status"].as_str().unwrap_or(""),
            )
        })
        .collect();
    assert_eq!(
        actions,
        [("login", "register", ""), ("status", "custom_status", "busy"), ("disconnect", "link_close", "")]
    );
}

#[tokio::test]
async fn stats_count_the_apps_online_users_and_devices_as_they_change() {
    let stack = Stack::start().await;
    let (status, empty) = stack.get("/v1/stats").await;
    assert_eq!(status, 200, "{empty}");
    assert_eq!(
        empty,
        json!({"online_users": 0, "push_online_users": 0, "online_devices": {}, "as_of_seq": 0})
    );

    let _ios = stack.login("lia", "l-ios", Platform::Ios).await;
    let web = stack.login("lia", "l-web", Platform::Web).await;
    let _max = stack.login("max", "m-ios", Platform::Ios).await;
    // Another app's users are not ours.
    let _theirs = stack.login_to("other", OTHER_SECRET, "nia", "n-ios", Platform::Ios).await;
    let counts =
        stack.get_until("/v1/stats", |b| b["online_users"] == 2 && b["online_devices"]["ios"] == 2).await;
    assert_eq!(counts["online_devices"], json!({"ios": 2, "web": 1}), "{counts}");
    assert!(counts["as_of_seq"].as_u64().unwrap() >= 3, "{counts}");

    drop(web);
    let counts = stack.get_until("/v1/stats", |b| b["online_devices"].get("web").is_none()).await;
    assert_eq!(
        (counts["online_users"].as_u64(), counts["online_devices"]["ios"].as_u64()),
        (Some(2), Some(2))
    );
    let (_, theirs) = stack.get_as("key-other", "/v1/stats").await;
    assert_eq!(theirs["online_users"], 1, "{theirs}");
}

#[tokio::test]
async fn dead_letters_are_listed_and_replayed_per_app_only() {
    let stack = Stack::start().await;
    let event = |id: &str, app: &str, user: &str| {
        json!({"event_id": id, "seq": 1, "user_version": 1, "app_id": app, "event_time_ms": 1_700_000_000_000u64,
            "action": "login", "reason": "register", "user_id": user,
            "device": {"device_id": "d", "platform": "ios", "client_version": "1"},
            "kicked_devices": [], "user_status": "online"})
    };
    let ours = ["0190f3a2-7c41-7d2e-9b1a-3c5e8f2a4b01", "0190f3a2-7c41-7d2e-9b1a-3c5e8f2a4b02"];
    let theirs = "0190f3a2-7c41-7d2e-9b1a-3c5e8f2a4b03";
    for (i, (id, app)) in [(ours[0], "default"), (ours[1], "default"), (theirs, "other")].iter().enumerate() {
        let body = event(id, app, "ann").to_string().replace('\'', "''");
        stack
            .registry
            .sql(&format!(
                "INSERT INTO callback_dead_letters (event_id, feed_id, app_id, user_id, body, attempts, last_error, \
                 first_attempt_at, dead_at) VALUES ('{id}', {i}, '{app}', 'ann', '{body}', 8, 'HTTP 500', now(), \
                 now() + interval '{i} seconds')"
            ))
            .await;
    }
    let (status, listed) = stack.get("/v1/callbacks/dead-letters?limit=10").await;
    assert_eq!(status, 200, "{listed}");
    let letters = listed["dead_letters"].as_array().unwrap();
    let ids: Vec<&str> = letters.iter().map(|l| l["event_id"].as_str().unwrap()).collect();
    assert_eq!(ids, ours, "only ours, oldest first");
    assert_eq!(
        (letters[0]["attempts"].as_u64(), letters[0]["last_error"].as_str()),
        (Some(8), Some("HTTP 500"))
    );
    assert!(letters[0]["dead_at_ms"].as_u64().unwrap() > 1_700_000_000_000);
    assert_eq!(letters[0]["user_id"], "ann");

    // Another app's id replays nothing of it.
    let (_, replayed) =
        stack.post("/v1/callbacks/dead-letters/replay", &json!({"event_ids": [ours[1], theirs]})).await;
    assert_eq!(replayed["replay_requested"], 1, "{replayed}");
    let (_, listed) = stack.get("/v1/callbacks/dead-letters").await;
    let flags: Vec<bool> = listed["dead_letters"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["replay_requested"].as_bool().unwrap())
        .collect();
    assert_eq!(flags, [false, true]);
    let (_, all) = stack.post("/v1/callbacks/dead-letters/replay", &Value::Null).await;
    assert_eq!(all["replay_requested"], 2, "{all}");
    let (_, seen_by_other) = stack.get_as("key-other", "/v1/callbacks/dead-letters").await;
    assert_eq!(seen_by_other["dead_letters"][0]["replay_requested"], false, "{seen_by_other}");

    assert_error(
        &stack.post("/v1/callbacks/dead-letters/replay", &json!({"event_ids": []})).await,
        400,
        "no_event_ids",
    );
    assert_error(
        &stack.post("/v1/callbacks/dead-letters/replay", &json!({"event_ids": ["nope"]})).await,
        400,
        "invalid_event_id",
    );
    assert_error(&stack.get("/v1/callbacks/dead-letters?limit=0").await, 400, "invalid_limit");
}

#[tokio::test]
async fn tencent_im_query_online_status_answers_in_tencent_shapes() {
    let stack = Stack::start().await;
    let _ios = stack.login("user1", "u1-ios", Platform::Ios).await;
    let _web = stack.login("user1", "u1-web", Platform::Web).await;
    let url = |query: &str| stack.url(&format!("/v4/openim/query_online_status?{query}"));
    // Tencent IM's documented request, with our API key as the usersig.
    let sample = json!({"To_Account": ["user1", "user2"], "IsNeedDetail": 1});
    let query = "sdkappid=default&identifier=admin&usersig=key-default&random=99999999&contenttype=json";
    let (status, body) = into_json(stack.http.post(url(query)).json(&sample).send().await).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!((body["ActionStatus"].as_str(), body["ErrorCode"].as_i64()), (Some("OK"), Some(0)), "{body}");
    let results = body["QueryResult"].as_array().unwrap();
    assert_eq!(results[0]["To_Account"], "user1");
    assert_eq!(results[0]["State"], "Online");
    let mut platforms: Vec<&str> =
        results[0]["Detail"].as_array().unwrap().iter().map(|d| d["Platform"].as_str().unwrap()).collect();
    platforms.sort_unstable();
    assert_eq!(platforms, ["IPhone", "Web"]);
    assert_eq!(results[1], json!({"To_Account": "user2", "State": "Offline", "Detail": []}));
    assert_eq!(body["ErrorList"], json!([]));

    // Without detail, with the usual Bearer key.
    let plain = json!({"To_Account": ["user1"]});
    let (_, body) =
        into_json(stack.http.post(url("contenttype=json")).bearer_auth(KEY).json(&plain).send().await).await;
    assert_eq!(body["QueryResult"], json!([{"To_Account": "user1", "State": "Online"}]), "{body}");

    // Errors come in the same envelope.
    let (status, body) =
        into_json(stack.http.post(url("sdkappid=other&usersig=key-default")).json(&plain).send().await).await;
    assert_eq!(
        (status, body["ActionStatus"].as_str(), body["ErrorCode"].as_i64()),
        (401, Some("FAIL"), Some(70003))
    );
    let (status, body) =
        into_json(stack.http.post(url("usersig=key-default")).body("not json").send().await).await;
    assert_eq!((status, body["ErrorCode"].as_i64()), (400, Some(90001)), "{body}");
    let (status, body) =
        into_json(stack.http.post(url("usersig=key-default")).json(&json!({"To_Account": []})).send().await)
            .await;
    assert_eq!((status, body["ErrorCode"].as_i64()), (400, Some(90002)), "{body}");
    // An app sees only its own users: user1 is offline for the other app.
    let (_, theirs) =
        into_json(stack.http.post(url("sdkappid=other&usersig=key-other")).json(&plain).send().await).await;
    assert_eq!(theirs["QueryResult"][0]["State"], "Offline", "{theirs}");
}
