//! The notifier in-process, on a [`TestRegistry`]'s database; restartable.

use std::net::SocketAddr;

use ::notifier::RunningNotifier;

use super::{Instance, TestRegistry, config};

pub struct TestNotifier {
    pub metrics_addr: SocketAddr,
    /// Its member id among the notifiers (`notifier_partitions.owner`) since its last start.
    member: String,
    vars: Vec<(&'static str, String)>,
    overrides: Vec<(String, String)>,
    instance: Option<Instance<RunningNotifier>>,
}

impl TestNotifier {
    /// A notifier with short flush, poll and backoff intervals; `overrides` change settings.
    pub async fn start(registry: &TestRegistry, overrides: &[(&str, &str)]) -> Self {
        let vars = vec![
            ("DATABASE_URL", registry.db.url.clone()),
            ("NOTIFIER_METRICS_ADDR", "127.0.0.1:0".to_owned()),
            ("NOTIFIER_FLUSH_INTERVAL_MS", "50".to_owned()),
            ("NOTIFIER_POLL_INTERVAL_MS", "10".to_owned()),
            ("NOTIFIER_BACKOFF_INITIAL_MS", "20".to_owned()),
            ("NOTIFIER_BACKOFF_MAX_MS", "200".to_owned()),
        ];
        let overrides = overrides.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let mut notifier = Self {
            metrics_addr: ([127, 0, 0, 1], 0).into(),
            member: String::new(),
            vars,
            overrides,
            instance: None,
        };
        notifier.start_again().await;
        notifier
    }

    /// Starts it again after [`TestNotifier::stop`] (a new metrics port, a fresh metrics registry).
    pub async fn start_again(&mut self) {
        let overrides: Vec<(&str, &str)> =
            self.overrides.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
        let config: ::notifier::NotifierConfig = config(&self.vars, &overrides);
        let instance = Instance::start("notifier", |shutdown| ::notifier::start(config, shutdown))
            .await
            .unwrap_or_else(|err| panic!("{err}"));
        self.metrics_addr = instance.running().metrics_addr;
        self.member = instance.running().member.clone();
        self.instance = Some(instance);
    }

    /// Stops it (it hands its partitions over, their cursors saved); cleanly and in time, else
    /// panics.
    pub async fn stop(&mut self) {
        if let Some(mut instance) = self.instance.take() {
            instance.stop().await;
        }
    }

    /// Its member id (`notifier_partitions.owner`) since its last start.
    pub fn member(&self) -> &str {
        &self.member
    }

    /// Its `/metrics` page.
    pub async fn metrics(&self) -> String {
        super::get_text(self.metrics_addr, "/metrics").await
    }
}
