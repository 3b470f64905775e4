//! One place that sets up tracing and metrics for a process.
//!
//! - `RUST_LOG` filters (default `info`); `LOG_FORMAT=json` switches to JSON lines.
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` set: spans are also exported over OTLP/gRPC.
//! - Metrics go to one process-wide Prometheus recorder, rendered by [`render_metrics`].

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::{EnvFilter, Layer, layer::SubscriberExt, util::SubscriberInitExt};

/// Flushes exported spans when dropped; keep it alive in `main`.
#[must_use = "dropping the guard stops span export"]
pub struct TelemetryGuard {
    provider: Option<opentelemetry_sdk::trace::SdkTracerProvider>,
}

impl Drop for TelemetryGuard {
    fn drop(&mut self) {
        if let Some(provider) = self.provider.take()
            && let Err(err) = provider.shutdown()
        {
            eprintln!("span export shutdown: {err}");
        }
    }
}

/// Installs the global subscriber for `service`. Calling it twice (tests) is harmless.
pub fn init(service: &'static str) -> TelemetryGuard {
    crate::tls::install_crypto_provider();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let json = std::env::var("LOG_FORMAT").is_ok_and(|v| v.eq_ignore_ascii_case("json"));
    let fmt = if json {
        tracing_subscriber::fmt::layer().json().boxed()
    } else {
        tracing_subscriber::fmt::layer().boxed()
    };

    let provider = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT").and_then(|_| otlp_provider(service));
    let otel = provider.as_ref().map(|p| tracing_opentelemetry::layer().with_tracer(p.tracer(service)));

    let _ = tracing_subscriber::registry().with(filter).with(fmt).with(otel).try_init();
    let _ = metrics_handle();
    TelemetryGuard { provider }
}

fn otlp_provider(service: &'static str) -> Option<opentelemetry_sdk::trace::SdkTracerProvider> {
    let exporter = match opentelemetry_otlp::SpanExporter::builder().with_tonic().build() {
        Ok(exporter) => exporter,
        Err(err) => {
            eprintln!("OTLP exporter disabled: {err}");
            return None;
        }
    };
    let resource = opentelemetry_sdk::Resource::builder().with_service_name(service).build();
    Some(
        opentelemetry_sdk::trace::SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build(),
    )
}

/// The process-wide Prometheus recorder, installed on first use.
pub fn metrics_handle() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        // Fails only if another recorder is installed; then ours renders nothing, which is visible.
        if metrics::set_global_recorder(recorder).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        handle
    })
}

/// The Prometheus text exposition of every metric of this process.
pub fn render_metrics() -> String {
    let handle = metrics_handle();
    handle.run_upkeep();
    handle.render()
}
