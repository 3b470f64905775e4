//! What the integration and system tests of presence share: a callback receiver standing in for
//! an app backend, and the built service binaries run as real processes on loopback ports.
//!
//! The tests in `tests/` are the system tests: all four services as processes, driven through the
//! client library (devices) and HTTP (the app backend). They need the binaries built first
//! (`cargo build --workspace --bins`; `scripts/test.sh` does it).

pub mod postgres;
pub mod process;
pub mod receiver;
pub mod system;

use std::time::Duration;

pub use postgres::ThrowawayPostgres;
pub use process::{ServiceProcess, free_port};
pub use receiver::{Received, Receiver};
pub use system::System;

/// Bound on every wait in tests: a hang fails instead of blocking.
pub const WAIT: Duration = Duration::from_secs(15);

/// Polls `check` until it holds; panics after [`WAIT`] naming `what`.
pub async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + WAIT;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
