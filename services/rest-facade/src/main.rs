//! rest-facade: see the library docs.

use rest_facade::{FacadeConfig, Shutdown};

// Every request parses and writes JSON of up to 500 users: many short-lived allocations, which
// mimalloc serves with 0.83x to 0.88x the CPU of glibc's malloc (docs/benchmarks.md, batch query).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = presence_common::telemetry::init("rest-facade");
    let config: FacadeConfig = presence_common::config::from_env()?;
    let shutdown = Shutdown::new();
    presence_common::shutdown::cancel_on_signal(shutdown.clone());
    let running = rest_facade::start(config, shutdown).await?;
    running.wait().await?;
    Ok(())
}
