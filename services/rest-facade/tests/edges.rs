//! What the facade does with bad input, a missing registry, and its own admin endpoints.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::time::Duration;

use serde_json::{Value, json};
use testkit::{
    TestDatabase, eventually_ok, fresh_database,
    inprocess::{KEY, SECRET, Stack, TestFacade, TestRegistry, assert_error, http_client, into_json},
};

#[tokio::test]
async fn bad_input_gets_a_json_4xx() {
    let stack = Stack::start().await;
    let query = stack.url("/v1/presence/query");
    let post_raw = |body: &str| {
        let request = stack.http.post(&query).bearer_auth(KEY).header("content-type", "application/json");
        request.body(body.to_owned()).send()
    };
    let post = |body: &'static str| post_raw(body);
    assert_error(&into_json(post("{\"user_ids\": [").await).await, 400, "invalid_json");
    assert_error(&into_json(post("not json").await).await, 400, "invalid_json");
    assert_error(&into_json(post("").await).await, 400, "invalid_json");
    let unknown = into_json(post(r#"{"user_ids": ["a"], "details": true}"#).await).await;
    assert!(assert_error(&unknown, 400, "invalid_body").contains("details"));
    assert_error(&into_json(post(r#"{"user_ids": "a"}"#).await).await, 400, "invalid_body");
    assert_error(&into_json(post(r#"{"user_ids": [1, 2]}"#).await).await, 400, "invalid_body");
    assert_error(
        &into_json(post(r#"{"user_ids": ["a"], "detail": "yes"}"#).await).await,
        400,
        "invalid_body",
    );
    assert_error(&into_json(post(r#"{"detail": true}"#).await).await, 400, "invalid_body");
    assert_error(&into_json(post(r#"["a"]"#).await).await, 400, "invalid_body");

    let kick = stack.url("/v1/users/u1/kick");
    let kicked = stack.http.post(&kick).bearer_auth(KEY).json(&json!({ "platform": ["ios"] })).send().await;
    assert_error(&into_json(kicked).await, 400, "invalid_body");
    let kicked = stack.http.post(&kick).bearer_auth(KEY).json(&json!({ "platforms": "ios" })).send().await;
    assert_error(&into_json(kicked).await, 400, "invalid_body");
    let too_long = stack.url(&format!("/v1/users/{}/presence", "u".repeat(300)));
    assert_error(&stack.get(&too_long[too_long.find("/v1").unwrap()..]).await, 400, "invalid_user_id");

    assert_error(&stack.get("/v1/users/%FF%FE/presence").await, 400, "invalid_path");
    let (status, slash) = stack.get("/v1/users/a%2Fb/presence").await;
    assert_eq!((status, &slash["user_id"]), (200, &json!("a/b")), "{slash}");

    let form = stack.http.post(&query).bearer_auth(KEY).body(r#"{"user_ids": ["a"]}"#).send().await;
    assert_error(&into_json(form).await, 415, "unsupported_media_type");

    // 1 MiB by default: a bigger body is refused whole, well-formed or not.
    let huge: Vec<String> = (0..5000).map(|i| format!("{i:0>250}")).collect();
    let (status, body) = stack.post("/v1/presence/query", &json!({ "user_ids": huge })).await;
    assert!(assert_error(&(status, body), 413, "payload_too_large").contains("1048576"));

    // The largest query fits: 500 ids of 256 bytes, even with every character \u-escaped.
    let widest: Vec<String> = (0..500).map(|i| format!("{i:0>3}{}", "\u{e9}".repeat(253 / 2))).collect();
    assert!(widest.iter().all(|id| id.len() >= 255 && id.len() <= 256));
    let (status, body) = stack.post("/v1/presence/query", &json!({ "user_ids": widest })).await;
    assert_eq!((status, body["results"].as_array().map(Vec::len)), (200, Some(500)), "{body}");
    let escaped = format!(r#"{{"user_ids": ["{}"]}}"#, vec!["\\u00e9".repeat(128); 500].join(r#"", ""#));
    assert!(escaped.len() > 380_000, "{}", escaped.len());
    let response = post_raw(&escaped).await;
    assert_eq!(into_json(response).await.0, 200);

    // The document allows every one of these; so does the facade.
    for body in ["", "null", "{}", r#"{"platforms": null}"#] {
        let kicked = stack.http.post(&kick).bearer_auth(KEY).header("content-type", "application/json");
        let (status, body) = into_json(kicked.body(body).send().await).await;
        assert_eq!((status, &body["kicked_devices"]), (200, &json!([])), "{body}");
    }
    // ... and refuses these.
    let (status, body) = stack.get("/v1/events?after_seq=9223372036854775808").await;
    assert!(assert_error(&(status, body), 400, "invalid_query").contains("after_seq"));
    let (status, _) = stack.get("/v1/events?after_seq=9223372036854775807").await;
    assert_eq!(status, 200);
    assert_error(&stack.get("/v1/users//presence").await, 400, "invalid_user_id");
    // Bytes, not characters (which is all the document's maxLength can count): 129 × "é" is over.
    let (status, body) =
        stack.post("/v1/presence/query", &json!({ "user_ids": ["\u{e9}".repeat(129)] })).await;
    assert!(assert_error(&(status, body), 400, "invalid_user_id").contains("258"));

    let wrong_method = stack.http.get(&query).bearer_auth(KEY).send().await.unwrap();
    assert_eq!(wrong_method.headers()["allow"], "POST");
    assert_error(&into_json(Ok(wrong_method)).await, 405, "method_not_allowed");
    let wrong_method = stack.http.delete(stack.url("/v1/events")).bearer_auth(KEY).send().await;
    assert_error(&into_json(wrong_method).await, 405, "method_not_allowed");
    let nowhere = stack.http.get(stack.url("/v2/presence")).bearer_auth(KEY).send().await;
    assert_error(&into_json(nowhere).await, 404, "not_found");
    assert_error(&into_json(stack.http.get(stack.url("/")).send().await).await, 404, "not_found");

    // None of it hurt: a good request still works.
    let (status, ok) = stack.post("/v1/presence/query", &json!({ "user_ids": ["a"] })).await;
    assert_eq!((status, &ok["results"][0]["status"]), (200, &json!("offline")), "{ok}");
    stack.stop().await;
}

/// A facade whose registry is `registry_url`, on a fresh database with the app `default`.
async fn lone_facade(registry_url: &str, overrides: &[(&str, &str)]) -> (TestFacade, TestDatabase) {
    let db = fresh_database().await;
    db.add_app("default", SECRET).await;
    (TestFacade::start(&db, registry_url, overrides).await, db)
}

async fn assert_all_unavailable(base: &str) {
    let http = http_client();
    let requests = [
        http.post(format!("{base}/v1/presence/query")).json(&json!({ "user_ids": ["a"] })),
        http.get(format!("{base}/v1/users/a/presence")),
        http.post(format!("{base}/v1/users/a/kick")),
        http.get(format!("{base}/v1/events?after_seq=0")),
    ];
    for request in requests {
        let got = into_json(request.bearer_auth(KEY).send().await).await;
        assert_error(&got, 503, "unavailable");
    }
}

#[tokio::test]
async fn a_missing_registry_is_a_503_until_it_comes_up() {
    // A port nobody listens on yet.
    let free = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let (mut facade, db) = lone_facade(&format!("http://{free}"), &[]).await;
    let base = format!("http://{}", facade.addr);
    assert_all_unavailable(&base).await;
    // Still healthy, still answering.
    let health = http_client().get(format!("{base}/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_all_unavailable(&base).await;

    // The registry starts on that port: the facade's lazy channel reconnects by itself.
    let mut registry = TestRegistry::start_on(db, &[("REGISTRY_LISTEN_ADDR", &free.to_string())]).await;
    let http = http_client();
    let body = eventually_ok("the facade to reach the registry", async || {
        let request = http.post(format!("{base}/v1/presence/query")).bearer_auth(KEY);
        let (status, body) = into_json(request.json(&json!({ "user_ids": ["a"] })).send().await).await;
        if status == 200 {
            return Ok(body);
        }
        assert_error(&(status, body.clone()), 503, "unavailable");
        Err(body)
    })
    .await;
    assert_eq!(body["results"][0]["status"], "offline");

    facade.stop().await;
    registry.stop().await;
}

#[tokio::test]
async fn a_registry_that_never_answers_times_out_as_503() {
    // Accepts connections and says nothing.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let (mut facade, _db) =
        lone_facade(&format!("http://{addr}"), &[("FACADE_REQUEST_TIMEOUT_MS", "300")]).await;
    let started = std::time::Instant::now();
    assert_all_unavailable(&format!("http://{}", facade.addr)).await;
    assert!(started.elapsed() < Duration::from_secs(10), "{:?}", started.elapsed());
    facade.stop().await;
}

#[tokio::test]
async fn openapi_health_and_metrics() {
    let stack = Stack::start().await;
    let (status, doc) = into_json(stack.http.get(stack.url("/openapi.json")).send().await).await;
    assert_eq!(status, 200);
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."), "{doc}");
    let paths = doc["paths"].as_object().expect("paths");
    for (path, method) in [
        ("/v1/presence/query", "post"),
        ("/v1/users/{user_id}/presence", "get"),
        ("/v1/users/{user_id}/kick", "post"),
        ("/v1/users/{user_id}/status", "put"),
        ("/v1/stats", "get"),
        ("/v1/callbacks/dead-letters", "get"),
        ("/v1/callbacks/dead-letters/replay", "post"),
        ("/v4/openim/query_online_status", "post"),
        ("/v1/events", "get"),
        ("/openapi.json", "get"),
        ("/healthz", "get"),
    ] {
        assert!(paths.get(path).and_then(|p| p.get(method)).is_some(), "{method} {path} missing");
    }
    assert_eq!(paths.len(), 11, "{:?}", paths.keys().collect::<Vec<_>>());
    // Every user id in the document carries the one id rule (no control characters).
    for path in ["/v1/users/{user_id}/presence", "/v1/users/{user_id}/kick", "/v1/users/{user_id}/status"] {
        let method = paths[path].as_object().and_then(|m| m.values().next()).expect("an operation");
        assert_eq!(
            method["parameters"][0]["schema"]["pattern"],
            presence_proto::limits::ID_PATTERN,
            "{path}"
        );
    }
    assert_eq!(doc["components"]["securitySchemes"]["api_key"]["scheme"], "bearer");
    let schemas = doc["components"]["schemas"].as_object().unwrap();
    for schema in [
        "QueryBody",
        "QueryResponse",
        "UserPresenceJson",
        "KickResponse",
        "PresenceEventJson",
        "ErrorResponse",
    ] {
        assert!(
            schemas.contains_key(schema),
            "schema {schema} missing: {:?}",
            schemas.keys().collect::<Vec<_>>()
        );
    }
    let params: Vec<&Value> =
        doc["paths"]["/v1/events"]["get"]["parameters"].as_array().unwrap().iter().collect();
    let names: Vec<&str> = params.iter().map(|p| p["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["after_seq", "limit"]);
    assert_eq!(params[0]["schema"]["maximum"], json!(i64::MAX));
    let user_id = &doc["paths"]["/v1/users/{user_id}/kick"]["post"]["parameters"][0]["schema"];
    assert_eq!((&user_id["minLength"], &user_id["maxLength"]), (&json!(1), &json!(256)), "{user_id}");

    // Every status a /v1 operation can answer is listed, each error with the error schema.
    for (path, method, has_body) in [
        ("/v1/presence/query", "post", true),
        ("/v1/users/{user_id}/presence", "get", false),
        ("/v1/users/{user_id}/kick", "post", true),
        ("/v1/events", "get", false),
    ] {
        let responses = doc["paths"][path][method]["responses"].as_object().expect("responses");
        let mut expected = vec!["200", "400", "401", "404", "429", "500", "503"];
        if has_body {
            expected.extend(["413", "415"]);
        }
        let mut listed: Vec<&str> = responses.keys().map(String::as_str).collect();
        listed.sort_unstable();
        expected.sort_unstable();
        assert_eq!(listed, expected, "{method} {path}");
        for (status, response) in responses.iter().filter(|(status, _)| *status != "200") {
            let schema = &response["content"]["application/json"]["schema"]["$ref"];
            assert_eq!(schema, "#/components/schemas/ErrorResponse", "{method} {path} {status}");
        }
        assert!(responses["401"]["headers"].get("WWW-Authenticate").is_some(), "{method} {path}");
    }

    let health = stack.http.get(stack.url("/healthz")).send().await.unwrap();
    assert_eq!(health.status(), 200);
    assert_eq!(health.text().await.unwrap(), "ok");

    let _ = stack.post("/v1/presence/query", &json!({ "user_ids": ["a"] })).await;
    let _ = stack.get("/v1/users/some-user/presence").await;
    let _ = stack.http.get(stack.url("/nowhere")).send().await;
    let metrics =
        stack.http.get(stack.facade.metrics_url("/metrics")).send().await.unwrap().text().await.unwrap();
    // Requests of this route and status: the facade's own only, so exactly those made above.
    let requests = |route: &str, status: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| {
                l.starts_with(&format!("{}{{", rest_facade::http_metrics::REQUESTS))
                    && l.contains(&format!("route=\"{route}\""))
                    && l.contains(&format!("status=\"{status}\""))
            })
            .map(|l| l.rsplit_once(' ').and_then(|(_, v)| v.parse::<f64>().ok()).expect("a value"))
            .sum()
    };
    assert_eq!(requests("/v1/presence/query", "200"), 1.0, "{metrics}");
    assert_eq!(
        requests("/v1/users/{user_id}/presence", "200"),
        1.0,
        "route template, not user ids: {metrics}"
    );
    assert_eq!(requests("unmatched", "404"), 1.0, "{metrics}");
    assert!(metrics.contains(rest_facade::http_metrics::DURATION), "{metrics}");
    assert!(!metrics.contains("some-user"), "{metrics}");
    // Metrics are on the operator's listener only, not on the public REST port.
    assert_eq!(stack.http.get(stack.url("/metrics")).send().await.unwrap().status(), 404);
    stack.stop().await;
}
