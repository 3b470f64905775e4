//! The one test harness of presence, used by every crate's tests:
//!
//! - [`database`]: a fresh, migrated database per test on the shared Postgres server;
//! - [`inprocess`]: each service started in-process on port 0 against such a database, on its
//!   own runtime with its own metrics registry;
//! - [`System`], [`ServiceProcess`]: the built binaries as real processes (the system tests in
//!   `tests/`; they need `cargo build --workspace --bins` first, `scripts/test.sh` does it);
//! - [`cluster::Cluster`]: several registries, gateways and a notifier as processes, with a
//!   steady login load ([`cluster::LoginLoad`]) for the scale-out tests;
//! - [`Receiver`]: a callback receiver standing in for an app backend;
//! - [`traces::TraceReceiver`]: an OTLP receiver the services export their spans to;
//! - [`eventually`] / [`eventually_ok`]: the one way tests wait for a condition.

pub mod cluster;
pub mod database;
pub mod inprocess;
pub mod internal;
pub mod postgres;
pub mod process;
pub mod receiver;
pub mod system;
pub mod traces;

use std::{fmt::Debug, time::Duration};

pub use database::{TestDatabase, fresh_database};
pub use internal::{INTERNAL_SECRET, internal_token};
pub use postgres::ThrowawayPostgres;
pub use process::{ServiceProcess, free_port};
pub use receiver::{Received, Receiver};
pub use system::System;

/// Bound on every wait in tests: a hang fails instead of blocking.
pub const WAIT: Duration = Duration::from_secs(15);

/// How often [`eventually`] and [`eventually_ok`] look again.
const POLL: Duration = Duration::from_millis(20);

/// Polls `check` until it holds; panics after [`WAIT`] naming `what`.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    eventually_ok(what, async || if check().await { Ok(()) } else { Err("not yet") }).await;
}

/// Retries `attempt` until it succeeds and returns its value; panics after [`WAIT`] naming `what`
/// and the last error.
pub async fn eventually_ok<T, E: Debug>(what: &str, mut attempt: impl AsyncFnMut() -> Result<T, E>) -> T {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        match attempt().await {
            Ok(value) => return value,
            Err(err) => {
                assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}: {err:?}");
                tokio::time::sleep(POLL).await;
            }
        }
    }
}
