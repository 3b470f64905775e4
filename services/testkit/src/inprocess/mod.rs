//! The services in-process, each on port 0 against a fresh database: one way to start each
//! ([`TestRegistry`], [`TestGateway`], [`TestNotifier`], [`TestFacade`], and [`Stack`], the three
//! the REST API needs), one way to mint tokens and log devices in ([`token`], [`params`]), one way
//! to read a connection until the gateway closes it ([`frames_until_eof`], [`frames_until_closed`]).
//!
//! Every instance runs on a runtime of its own whose threads record metrics into a registry of
//! its own (see `presence_common::telemetry::MetricsRegistry`): its `/metrics` shows its metrics
//! only, as a separate process would, so tests can assert exact values.

mod facade;
mod gateway;
mod notifier;
mod registry;

use std::{future::Future, net::SocketAddr, time::Duration};

use presence_client::{Client, LoginParams, mint_token};
use presence_common::{Shutdown, telemetry::MetricsRegistry};
use presence_proto::v1::{Platform, ServerFrame};
use serde::de::DeserializeOwned;

pub use facade::{KEY, OTHER_SECRET, Stack, TestFacade, assert_error, http_client, into_json};
pub use gateway::TestGateway;
pub use notifier::TestNotifier;
pub use registry::{StubGateway, TestRegistry, devices, live, session, session_ref, status};

use crate::WAIT;

/// Token secret of the app `default` that every harness creates.
pub const SECRET: &str = "secret";

/// A login token of `user` for the app `default`, valid for an hour.
pub fn token(user: &str) -> String {
    token_for(SECRET, user, None)
}

/// A login token signed with `secret`, with an `app` claim if given, valid for an hour.
pub fn token_for(secret: &str, user: &str, app: Option<&str>) -> String {
    mint_token(secret, user, app, Duration::from_secs(3600)).expect("token")
}

/// Login parameters of `user` on `device` for the app `default`.
pub fn params(user: &str, device: &str, platform: Platform) -> LoginParams {
    LoginParams { client_version: "1.0.0".into(), ..LoginParams::new(user, device, platform, token(user)) }
}

/// Reads frames until EOF; returns them (fails if the connection stays open).
pub async fn frames_until_eof(client: &mut Client) -> Vec<ServerFrame> {
    tokio::time::timeout(WAIT, async {
        let mut frames = Vec::new();
        while let Ok(Some(frame)) = client.next_frame().await {
            frames.push(frame);
        }
        frames
    })
    .await
    .expect("the gateway closes the connection")
}

/// Reads a raw connection until the gateway closes it; returns the frames it sent.
pub async fn frames_until_closed(stream: &mut tokio::net::TcpStream) -> Vec<ServerFrame> {
    use tokio::io::AsyncReadExt;
    use tokio_util::codec::Decoder;
    let mut buf = bytes::BytesMut::new();
    tokio::time::timeout(WAIT, async {
        while let Ok(n) = stream.read_buf(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    })
    .await
    .expect("the gateway closes the connection");
    let mut codec = presence_proto::framing::ClientCodec::new();
    let mut frames = Vec::new();
    while let Ok(Some(frame)) = codec.decode(&mut buf) {
        frames.push(frame);
    }
    frames
}

/// A service config from `defaults` with `overrides` on top (a key in both takes the override:
/// the config parser refuses duplicates).
pub(crate) fn config<T: DeserializeOwned>(defaults: &[(&str, String)], overrides: &[(&str, &str)]) -> T {
    let mut vars: Vec<(String, String)> = defaults
        .iter()
        .filter(|(key, _)| !overrides.iter().any(|(k, _)| k == key))
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    vars.extend(overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())));
    presence_common::config::from_vars(vars).expect("test config parses")
}

/// What a service's `start` returns: something to wait on until it has stopped.
pub(crate) trait Running: Send + 'static {
    fn stopped(self) -> impl Future<Output = Result<(), String>> + Send;
}

impl Running for presence_registry::RunningRegistry {
    async fn stopped(self) -> Result<(), String> {
        self.wait().await.map_err(|e| e.to_string())
    }
}

impl Running for connection_gateway::RunningGateway {
    async fn stopped(self) -> Result<(), String> {
        self.wait().await.map_err(|e| e.to_string())
    }
}

impl Running for ::notifier::RunningNotifier {
    async fn stopped(self) -> Result<(), String> {
        self.wait().await.map_err(|e| e.to_string())
    }
}

impl Running for rest_facade::RunningFacade {
    async fn stopped(self) -> Result<(), String> {
        self.wait().await.map_err(|e| e.to_string())
    }
}

/// One started service: its runtime, its shutdown token and what `start` returned. Dropping it
/// cancels the token and ends the runtime, as a killed process would end.
pub(crate) struct Instance<R: Running> {
    name: String,
    running: Option<R>,
    shutdown: Shutdown,
    runtime: Option<tokio::runtime::Runtime>,
}

impl<R: Running> Instance<R> {
    /// Runs `start` on a new runtime named `name`.
    pub async fn start<F, E>(name: &str, start: impl FnOnce(Shutdown) -> F) -> Result<Self, String>
    where
        F: Future<Output = Result<R, E>> + Send + 'static,
        E: std::fmt::Display + Send + 'static,
    {
        let shutdown = Shutdown::new();
        // Every thread of the runtime (workers and blocking pool) records into this instance's
        // registry, and its `/metrics`, served from one of them, renders that registry.
        let metrics = MetricsRegistry::default();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .thread_name(name)
            .enable_all()
            .on_thread_start(move || metrics.enter())
            .build()
            .expect("a runtime for the service");
        let started = runtime.spawn(start(shutdown.clone())).await.expect("start does not panic");
        match started {
            Ok(running) => {
                Ok(Self { name: name.to_owned(), running: Some(running), shutdown, runtime: Some(runtime) })
            }
            Err(err) => {
                runtime.shutdown_background();
                Err(format!("{name} did not start: {err}"))
            }
        }
    }

    pub fn running(&self) -> &R {
        self.running.as_ref().expect("not stopped")
    }

    /// Cancels the token; the service drains and stops, cleanly and in time, else this panics.
    pub async fn stop(&mut self) {
        self.shutdown.cancel();
        if let (Some(running), Some(runtime)) = (self.running.take(), &self.runtime) {
            let stopped = runtime.spawn(running.stopped());
            let result = tokio::time::timeout(WAIT, stopped)
                .await
                .unwrap_or_else(|_| panic!("{} stops in time", self.name))
                .expect("stopping does not panic");
            result.unwrap_or_else(|err| panic!("{} stops cleanly: {err}", self.name));
        }
        // What is left (pool connections, idle tasks) ends with the runtime, as with a process.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl<R: Running> Drop for Instance<R> {
    fn drop(&mut self) {
        self.shutdown.cancel();
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

/// The value of one series of a Prometheus text exposition, e.g.
/// `metric(&text, r#"gateway_logins_total{result="ok"}"#)`; 0 when absent (counters not yet
/// incremented are not rendered).
pub fn metric(exposition: &str, series: &str) -> f64 {
    exposition.lines().find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')).map_or(0.0, |value| {
        value.trim().parse().unwrap_or_else(|_| panic!("{series}: not a number: {value}"))
    })
}

/// The body of `GET http://addr{path}`.
pub(crate) async fn get_text(addr: SocketAddr, path: &str) -> String {
    let response = http_client().get(format!("http://{addr}{path}")).send().await.expect("answered");
    response.text().await.expect("a text body")
}
