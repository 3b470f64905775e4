//! One place that sets up tracing and metrics for a process.
//!
//! - `RUST_LOG` filters (default `info`); `LOG_FORMAT=json` switches to JSON lines.
//! - `OTEL_EXPORTER_OTLP_ENDPOINT` set: spans at `info` and above are also exported over
//!   OTLP/gRPC, whatever `RUST_LOG` says (the usual `OTEL_*` variables apply, e.g.
//!   `OTEL_BSP_SCHEDULE_DELAY`); a login is one trace (see [`crate::trace_context`]).
//! - Metrics go to one process-wide Prometheus recorder, rendered by [`render_metrics`]; a thread
//!   that has entered a [`MetricsRegistry`] records into that instead (tests that run several
//!   services in one process give each its own, so each `/metrics` shows its own service only).

use std::{
    cell::RefCell,
    sync::{Arc, OnceLock},
};

use metrics::{Counter, Gauge, Histogram, Key, KeyName, Metadata, Recorder, SharedString, Unit};
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle, PrometheusRecorder};
use opentelemetry::trace::TracerProvider as _;
use tracing_subscriber::{
    EnvFilter, Layer, filter::LevelFilter, layer::SubscriberExt, util::SubscriberInitExt,
};

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

    let provider = std::env::var_os("OTEL_EXPORTER_OTLP_ENDPOINT")
        .filter(|endpoint| !endpoint.is_empty())
        .and_then(|_| otlp_provider(service));
    // Spans are exported at `info` whatever `RUST_LOG` says: quieter logs keep their traces.
    let otel = provider.as_ref().map(|p| {
        tracing_opentelemetry::layer().with_tracer(p.tracer(service)).with_filter(LevelFilter::INFO)
    });

    let _ = tracing_subscriber::registry().with(fmt.with_filter(filter)).with(otel).try_init();
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
        let process_wide = PrometheusBuilder::new().build_recorder();
        let handle = process_wide.handle();
        // Fails only if another recorder is installed; then ours renders nothing, which is visible.
        if metrics::set_global_recorder(ThreadRoutedRecorder { process_wide }).is_err() {
            tracing::warn!("a metrics recorder was already installed");
        }
        spawn_upkeep(handle.clone());
        handle
    })
}

/// How often histogram samples are drained into their summaries.
const UPKEEP_EVERY: std::time::Duration = std::time::Duration::from_secs(5);

/// A recorder built by hand (not `install`) gets no upkeep task: each histogram keeps every
/// sample until the next scrape, so without Prometheus a process grew by ~8 bytes per sample
/// (the soak run found it: +100 MiB in 25 minutes). This drains them whether or not anyone scrapes.
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new().name("metrics-upkeep".into()).spawn(move || {
        loop {
            std::thread::sleep(UPKEEP_EVERY);
            handle.run_upkeep();
        }
    });
    if let Err(err) = spawned {
        tracing::warn!(%err, "no metrics upkeep thread: histograms grow until scraped");
    }
}

/// The Prometheus text exposition of every metric of this process, or of the [`MetricsRegistry`]
/// this thread has entered.
pub fn render_metrics() -> String {
    if let Some(registry) = MetricsRegistry::current() {
        return registry.render();
    }
    let handle = metrics_handle();
    handle.run_upkeep();
    handle.render()
}

thread_local! {
    static THREAD_REGISTRY: RefCell<Option<MetricsRegistry>> = const { RefCell::new(None) };
}

/// A Prometheus registry of one service instance, for tests that run several services in one
/// process: each runs on a runtime whose threads [`enter`](MetricsRegistry::enter) its registry
/// (e.g. in `on_thread_start`), so what it records and its `/metrics` page are its own.
#[derive(Clone)]
pub struct MetricsRegistry {
    recorder: Arc<PrometheusRecorder>,
}

impl Default for MetricsRegistry {
    fn default() -> Self {
        // Entered registries take effect through the global recorder: make sure it is ours.
        metrics_handle();
        Self { recorder: Arc::new(PrometheusBuilder::new().build_recorder()) }
    }
}

impl MetricsRegistry {
    /// From now on, metrics recorded on this thread go to this registry.
    pub fn enter(&self) {
        THREAD_REGISTRY.with(|current| *current.borrow_mut() = Some(self.clone()));
    }

    /// The registry this thread has entered, if any.
    pub fn current() -> Option<Self> {
        THREAD_REGISTRY.try_with(|current| current.borrow().clone()).ok().flatten()
    }

    /// This registry's Prometheus text exposition.
    pub fn render(&self) -> String {
        let handle = self.recorder.handle();
        handle.run_upkeep();
        handle.render()
    }
}

/// The global recorder: the thread's [`MetricsRegistry`] if it entered one, else the process-wide
/// recorder (always, in a service process).
struct ThreadRoutedRecorder {
    process_wide: PrometheusRecorder,
}

impl ThreadRoutedRecorder {
    fn target<T>(&self, record: impl FnOnce(&PrometheusRecorder) -> T) -> T {
        match MetricsRegistry::current() {
            Some(registry) => record(&registry.recorder),
            None => record(&self.process_wide),
        }
    }
}

impl Recorder for ThreadRoutedRecorder {
    fn describe_counter(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.target(|r| r.describe_counter(key, unit, description));
    }

    fn describe_gauge(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.target(|r| r.describe_gauge(key, unit, description));
    }

    fn describe_histogram(&self, key: KeyName, unit: Option<Unit>, description: SharedString) {
        self.target(|r| r.describe_histogram(key, unit, description));
    }

    fn register_counter(&self, key: &Key, metadata: &Metadata<'_>) -> Counter {
        self.target(|r| r.register_counter(key, metadata))
    }

    fn register_gauge(&self, key: &Key, metadata: &Metadata<'_>) -> Gauge {
        self.target(|r| r.register_gauge(key, metadata))
    }

    fn register_histogram(&self, key: &Key, metadata: &Metadata<'_>) -> Histogram {
        self.target(|r| r.register_histogram(key, metadata))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_thread_records_into_the_registry_it_entered_only() {
        let record = |registry: MetricsRegistry, things: u64| {
            std::thread::spawn(move || {
                registry.enter();
                metrics::counter!("telemetry_test_things_total").increment(things);
                render_metrics()
            })
            .join()
            .expect("recording thread")
        };
        let (one, two) = (MetricsRegistry::default(), MetricsRegistry::default());
        let page_one = record(one.clone(), 1);
        record(two.clone(), 2);
        assert!(one.render().contains("telemetry_test_things_total 1"), "{}", one.render());
        assert!(two.render().contains("telemetry_test_things_total 2"), "{}", two.render());
        assert_eq!(page_one, one.render(), "/metrics on a thread renders the registry it entered");
        assert!(
            !render_metrics().contains("telemetry_test_things_total"),
            "the process-wide one saw nothing"
        );
    }
}
