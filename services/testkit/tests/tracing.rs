//! One trace per login: the services as processes export their spans to an in-process OTLP
//! receiver; a login's spans in the gateway, the registry and the notifier share one trace id,
//! and the callback's `traceparent` header names it.
//!
//! Needs `cargo build --workspace --bins` first (scripts/test.sh does it).

#![allow(clippy::unwrap_used, clippy::expect_used)] // a test may panic on what it did not expect

use presence_proto::v1::Platform;
use testkit::{
    eventually, eventually_ok,
    system::{Options, System},
    traces::TraceReceiver,
};

#[tokio::test]
async fn a_login_is_one_trace_from_the_gateway_to_the_app_backend() {
    let traces = TraceReceiver::default();
    let endpoint = traces.start().await;
    let system =
        System::start_with(Options { service_env: TraceReceiver::env(&endpoint), ..Options::default() })
            .await;
    let (_client, _ok) = system.login("tia", "phone", Platform::Ios, false).await;

    let callback = eventually_ok("tia's login callback", async || {
        let accepted = system.receiver.accepted.lock().unwrap().clone();
        accepted.into_iter().find(|r| r.user() == "tia").ok_or("not yet")
    })
    .await;
    let parts: Vec<&str> = callback.traceparent.split('-').collect();
    assert_eq!(parts.len(), 4, "a W3C traceparent on the callback: {:?}", callback.traceparent);
    let trace_id = parts[1].to_owned();

    let wanted = [
        ("connection-gateway", "gateway.login"),
        ("presence-registry", "registry.login"),
        ("presence-registry", "registry.commit"),
        ("notifier", "notifier.callback"),
    ];
    eventually("the login's spans of every service in one trace", async || {
        let spans = traces.spans();
        wanted.iter().all(|(service, name)| {
            spans.iter().any(|s| s.trace_id == trace_id && s.service == *service && s.name == *name)
        })
    })
    .await;
    let spans = traces.spans();
    let of = |name: &str| spans.iter().find(|s| s.trace_id == trace_id && s.name == name).unwrap();
    assert!(of("gateway.login").parent_span_id.chars().all(|c| c == '0'), "the gateway's span is the root");
    assert_eq!(of("registry.login").parent_span_id, of("gateway.login").span_id);
    assert_eq!(of("notifier.callback").parent_span_id, of("registry.login").span_id);
    assert_eq!(parts[2], of("notifier.callback").span_id, "the app backend's parent is the callback span");
}
