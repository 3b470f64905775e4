//! `presence-cli query` and `kick` against a stand-in facade that checks what http-api.md asks.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use axum::{
    Json, Router,
    extract::Path,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use presence_client::cli::rest::{RestArgs, RestClient, RestError, kick_summary, query_table};
use presence_proto::v1::Platform;
use serde_json::{Value, json};

fn authorized(headers: &HeaderMap) -> bool {
    headers.get("authorization").and_then(|v| v.to_str().ok()) == Some("Bearer key-1")
}

async fn facade() -> String {
    let router = Router::new()
        .route(
            "/v1/presence/query",
            post(|headers: HeaderMap, Json(body): Json<Value>| async move {
                if !authorized(&headers) {
                    let error = json!({"error": {"code": "unauthorized", "message": "bad API key"}});
                    return (StatusCode::UNAUTHORIZED, Json(error));
                }
                assert_eq!(body, json!({"user_ids": ["alice", "bob"], "detail": true}));
                (
                    StatusCode::OK,
                    Json(json!({"as_of_seq": 3, "results": [
                        {"user_id": "alice", "status": "online", "devices": [
                            {"device_id": "d1", "platform": "ios", "status": "online", "since_ms": 1, "client_version": ""}]},
                        {"user_id": "bob", "status": "offline", "devices": []}
                    ]})),
                )
            }),
        )
        .route(
            "/v1/users/{user}/kick",
            post(|Path(user): Path<String>, Json(body): Json<Value>| async move {
                assert_eq!(user, "a/b");
                assert_eq!(body, json!({"platforms": ["ios", "android_pad"]}));
                Json(json!({"kicked_devices": [{"device_id": "d1", "platform": "ios"}]}))
            }),
        );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, router).await });
    url
}

#[tokio::test]
async fn query_and_kick_speak_the_contract() {
    let facade = facade().await;
    let client = RestClient::new(&RestArgs { facade: facade.clone(), api_key: "key-1".into() }).unwrap();
    let users = vec!["alice".to_owned(), "bob".to_owned()];
    let response = client.query(&users, true).await.unwrap();
    let table = query_table(&response, 0);
    assert!(table.contains("alice  online   -          ios:d1 online"), "{table}");
    assert!(table.contains("(as of event seq 3)"), "{table}");

    let kicked = client.kick("a/b", &[Platform::Ios, Platform::AndroidPad]).await.unwrap();
    assert_eq!(kick_summary("a/b", &kicked), "a/b: forced offline ios:d1");

    let wrong_key = RestClient::new(&RestArgs { facade, api_key: "nope".into() }).unwrap();
    match wrong_key.query(&users, true).await {
        Err(RestError::Api { status: 401, code, .. }) => assert_eq!(code, "unauthorized"),
        other => panic!("{other:?}"),
    }
}
