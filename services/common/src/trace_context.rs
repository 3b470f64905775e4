//! W3C trace context (`traceparent`) across our hops, so that a login is one trace from the
//! gateway's socket through the registry's commit to the app's callback: in gRPC metadata between
//! services, in `presence_events.traceparent` between the registry and the notifier, and in the
//! callback's HTTP header for the app backend.
//!
//! Spans carry a trace id only when span export is on (`OTEL_EXPORTER_OTLP_ENDPOINT`, see
//! [`crate::telemetry`]); otherwise there is nothing to propagate and these do nothing.

use std::collections::HashMap;

use opentelemetry::{propagation::TextMapPropagator, trace::TraceContextExt};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The header and metadata key.
pub const TRACEPARENT: &str = "traceparent";

/// `span`'s `traceparent`, if it belongs to an exported trace.
pub fn traceparent(span: &tracing::Span) -> Option<String> {
    let context = span.context();
    if !context.span().span_context().is_valid() {
        return None;
    }
    let mut carrier = HashMap::new();
    TraceContextPropagator::new().inject_context(&context, &mut carrier);
    carrier.remove(TRACEPARENT)
}

/// Makes `span` a child of the span `traceparent` names; a malformed value is ignored (it comes
/// from another process, and a trace is worth less than the work it describes).
pub fn set_parent(span: &tracing::Span, traceparent: &str) {
    // Most events carry none (tracing off): no parsing on the callback path for them.
    if traceparent.is_empty() {
        return;
    }
    let carrier = HashMap::from([(TRACEPARENT.to_owned(), traceparent.to_owned())]);
    let parent = TraceContextPropagator::new().extract(&carrier);
    if parent.span().span_context().is_valid() {
        let _ = span.set_parent(parent);
    }
}

/// `request` carrying `span`'s trace context.
pub fn with_trace<T>(message: T, span: &tracing::Span) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    if let Some(value) = traceparent(span).and_then(|v| v.parse().ok()) {
        request.metadata_mut().insert(TRACEPARENT, value);
    }
    request
}

/// The caller's `traceparent`, if its request carries one.
pub fn of_request<T>(request: &tonic::Request<T>) -> Option<&str> {
    request.metadata().get(TRACEPARENT).and_then(|v| v.to_str().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_export_there_is_nothing_to_propagate_and_bad_values_are_ignored() {
        let span = tracing::info_span!("login");
        assert_eq!(traceparent(&span), None);
        set_parent(&span, "not a traceparent");
        let request = with_trace((), &span);
        assert!(of_request(&request).is_none());
    }

    #[test]
    fn a_span_made_a_child_continues_the_callers_trace() {
        use opentelemetry::trace::TracerProvider as _;
        use tracing_subscriber::layer::SubscriberExt as _;
        let provider = opentelemetry_sdk::trace::SdkTracerProvider::builder().build();
        let subscriber = tracing_subscriber::registry()
            .with(tracing_opentelemetry::layer().with_tracer(provider.tracer("test")));
        tracing::subscriber::with_default(subscriber, || {
            let caller = tracing::info_span!("gateway.login");
            let theirs = traceparent(&caller).expect("an exported span has a traceparent");
            let callee = tracing::info_span!("registry.login");
            set_parent(&callee, &theirs);
            let ours = traceparent(&callee).expect("and so has its child");
            // 00-<trace id>-<span id>-<flags>
            let parts = |tp: &str| tp.split('-').map(str::to_owned).collect::<Vec<_>>();
            let (theirs, ours) = (parts(&theirs), parts(&ours));
            assert_eq!((ours.len(), &ours[1]), (4, &theirs[1]), "one trace");
            assert_ne!(ours[2], theirs[2], "another span");
            let request = with_trace((), &callee);
            assert_eq!(of_request(&request).map(|tp| tp.split('-').nth(1)), Some(Some(theirs[1].as_str())));
        });
    }
}
