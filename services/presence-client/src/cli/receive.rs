//! `presence-cli receive`: a callback receiver that checks every signature, as an app backend
//! should (http-api.md, "Status-change callbacks").

use std::{future::Future, net::SocketAddr, sync::Arc};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    routing::post,
};
use clap::Args;
use presence_proto::callback_signature::{self, SIGNATURE_HEADER, TIMESTAMP_HEADER};

use super::{DEV_CALLBACK_SECRET, clock};

#[derive(Debug, Clone, Args)]
pub struct ReceiveArgs {
    /// Address to listen on (the app's `callback_url` must point here).
    #[arg(long, default_value = "127.0.0.1:9000")]
    pub listen: SocketAddr,
    /// Path callbacks are POSTed to.
    #[arg(long, default_value = "/callbacks")]
    pub path: String,
    /// The app's callback secret.
    #[arg(long, env = "PRESENCE_CALLBACK_SECRET", default_value = DEV_CALLBACK_SECRET, hide_env_values = true)]
    pub secret: String,
}

/// Why a request's signature does not check out.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("no X-Presence-Timestamp header")]
    NoTimestamp,
    #[error("no X-Presence-Signature header")]
    NoSignature,
    #[error("signature mismatch")]
    Mismatch,
}

/// Checks a callback request's `X-Presence-Signature` against its timestamp and body.
pub fn verify_request(secret: &str, headers: &HeaderMap, body: &[u8]) -> Result<(), SignatureError> {
    let header = |name| headers.get(name).and_then(|v| v.to_str().ok());
    let timestamp = header(TIMESTAMP_HEADER).ok_or(SignatureError::NoTimestamp)?;
    let signature = header(SIGNATURE_HEADER).ok_or(SignatureError::NoSignature)?;
    if callback_signature::verify(secret, timestamp, body, signature) {
        Ok(())
    } else {
        Err(SignatureError::Mismatch)
    }
}

/// Where received events go (stdout in the binary, a channel in tests).
pub type Printer = Arc<dyn Fn(String) + Send + Sync>;

#[derive(Clone)]
struct Receiver {
    secret: Arc<str>,
    print: Printer,
}

/// The receiver's routes: POST `path` only.
pub fn router(path: &str, secret: &str, print: Printer) -> Router {
    let path = if path.starts_with('/') { path.to_owned() } else { format!("/{path}") };
    Router::new().route(&path, post(receive)).with_state(Receiver { secret: Arc::from(secret), print })
}

/// Serves `router` on `listener` until `stop` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    stop: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    axum::serve(listener, router).with_graceful_shutdown(stop).await
}

/// 204 for a valid signature, 401 otherwise (the notifier then retries), 400 for a signed body
/// that is not JSON.
async fn receive(State(rx): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let verdict = verify_request(&rx.secret, &headers, &body);
    let event = serde_json::from_slice::<serde_json::Value>(&body).ok();
    let check = match &verdict {
        Ok(()) => "signature ok".to_owned(),
        Err(err) => format!("BAD SIGNATURE ({err})"),
    };
    let line = match &event {
        Some(event) => format!("{} {}  {check}", clock(), describe_event(event)),
        None => format!("{} (body is not JSON: {} bytes)  {check}", clock(), body.len()),
    };
    (rx.print)(line);
    match (verdict, event) {
        (Err(_), _) => StatusCode::UNAUTHORIZED,
        (Ok(()), None) => StatusCode::BAD_REQUEST,
        (Ok(()), Some(_)) => StatusCode::NO_CONTENT,
    }
}

/// One line for an event: seq, user, action, reason, device, kicked devices, user status.
/// Reads fields leniently, so a newer notifier's extra or missing fields never break it.
pub fn describe_event(event: &serde_json::Value) -> String {
    let text =
        |v: &serde_json::Value, key: &str| v.get(key).and_then(|x| x.as_str()).unwrap_or("?").to_owned();
    let device = |d: &serde_json::Value| format!("{}:{}", text(d, "platform"), text(d, "device_id"));
    let seq = event.get("seq").and_then(serde_json::Value::as_u64).map_or("?".to_owned(), |s| s.to_string());
    let kicked = event
        .get("kicked_devices")
        .and_then(serde_json::Value::as_array)
        .filter(|k| !k.is_empty())
        .map(|k| format!(" kicked=[{}]", k.iter().map(device).collect::<Vec<_>>().join(", ")))
        .unwrap_or_default();
    let on = event.get("device").map(|d| format!(" device={}", device(d))).unwrap_or_default();
    format!(
        "seq={seq} user={} action={} reason={}{on}{kicked} user_status={}",
        text(event, "user_id"),
        text(event, "action"),
        text(event, "reason"),
        text(event, "user_status"),
    )
}
