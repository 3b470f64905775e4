//! Callback signatures and `presence-cli receive` over real HTTP.

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use std::{sync::Arc, time::Duration};

use presence_client::{callback_signature, cli::receive};
use tokio::sync::mpsc;

const SECRET: &str = "dev-callback-secret";
const EVENT: &str = r#"{"event_id":"e1","seq":42,"user_version":1,"app_id":"default","event_time_ms":1700000000000,"action":"login","reason":"register","user_id":"alice","device":{"device_id":"d2","platform":"android","client_version":"1"},"kicked_devices":[{"device_id":"d1","platform":"ios"}],"user_status":"online"}"#;

#[test]
fn signatures_roundtrip_and_reject_tampering() {
    let sig = callback_signature::sign(SECRET, "1700000000000", EVENT.as_bytes());
    assert!(callback_signature::verify(SECRET, "1700000000000", EVENT.as_bytes(), &sig));
    let tampered = EVENT.replace("\"online\"", "\"offline\"");
    assert!(!callback_signature::verify(SECRET, "1700000000000", tampered.as_bytes(), &sig), "tampered body");
    assert!(!callback_signature::verify("wrong", "1700000000000", EVENT.as_bytes(), &sig), "wrong secret");
    assert!(!callback_signature::verify(SECRET, "1700000000001", EVENT.as_bytes(), &sig), "other timestamp");
    assert!(!callback_signature::verify(SECRET, "1700000000000", EVENT.as_bytes(), "sha256=00"));
}

/// A receiver on 127.0.0.1:0; returns its URL and the lines it prints.
async fn start_receiver() -> (String, mpsc::UnboundedReceiver<String>, tokio::sync::oneshot::Sender<()>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/callbacks", listener.local_addr().unwrap());
    let (tx, lines) = mpsc::unbounded_channel();
    let router = receive::router("/callbacks", SECRET, Arc::new(move |line| drop(tx.send(line))));
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(receive::serve(listener, router, async move { drop(stopped.await) }));
    (url, lines, stop)
}

async fn post(url: &str, timestamp: &str, signature: Option<&str>, body: &str) -> u16 {
    presence_client::cli::install_crypto_provider();
    let mut request = reqwest::Client::new()
        .post(url)
        .header("content-type", "application/json")
        .header("x-presence-timestamp", timestamp)
        .body(body.to_owned());
    if let Some(signature) = signature {
        request = request.header("x-presence-signature", signature);
    }
    request.send().await.unwrap().status().as_u16()
}

#[tokio::test]
async fn the_receiver_accepts_signed_callbacks_and_rejects_bad_ones() {
    let (url, mut lines, _stop) = start_receiver().await;
    let mut next_line =
        async || tokio::time::timeout(Duration::from_secs(5), lines.recv()).await.unwrap().unwrap();

    let ts = "1700000000000";
    let good = callback_signature::sign(SECRET, ts, EVENT.as_bytes());
    assert_eq!(post(&url, ts, Some(&good), EVENT).await, 204);
    let line = next_line().await;
    for part in [
        "seq=42",
        "user=alice",
        "action=login",
        "reason=register",
        "device=android:d2",
        "kicked=[ios:d1]",
        "user_status=online",
        "signature ok",
    ] {
        assert!(line.contains(part), "{part} missing in {line}");
    }

    let tampered = EVENT.replace("alice", "mallory");
    assert_eq!(post(&url, ts, Some(&good), &tampered).await, 401);
    assert!(next_line().await.contains("BAD SIGNATURE"));

    let other_secret = callback_signature::sign("not-the-secret", ts, EVENT.as_bytes());
    assert_eq!(post(&url, ts, Some(&other_secret), EVENT).await, 401);
    assert!(next_line().await.contains("BAD SIGNATURE"));

    assert_eq!(post(&url, ts, None, EVENT).await, 401);
    assert!(next_line().await.contains("BAD SIGNATURE (no X-Presence-Signature header)"));

    let not_json = callback_signature::sign(SECRET, ts, b"hello");
    assert_eq!(post(&url, ts, Some(&not_json), "hello").await, 400);
    assert!(next_line().await.contains("not JSON"));
}
