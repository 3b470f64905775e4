//! connection-gateway: see the library docs.

use connection_gateway::{GatewayConfig, Shutdown};

fn main() -> anyhow::Result<()> {
    // Read first: the runtime's size is part of the configuration.
    let config: GatewayConfig = presence_common::config::from_env()?;
    let mut runtime = match config.worker_threads {
        // One thread: the scheduler without work stealing, which costs less per wake-up.
        Some(threads) if threads <= 1 => tokio::runtime::Builder::new_current_thread(),
        Some(threads) => {
            let mut runtime = tokio::runtime::Builder::new_multi_thread();
            runtime.worker_threads(threads);
            runtime
        }
        None => tokio::runtime::Builder::new_multi_thread(),
    };
    runtime.enable_all().build()?.block_on(run(config))
}

async fn run(config: GatewayConfig) -> anyhow::Result<()> {
    let _telemetry = presence_common::telemetry::init("connection-gateway");
    let shutdown = Shutdown::new();
    presence_common::shutdown::cancel_on_signal(shutdown.clone());
    let running = connection_gateway::start(config, shutdown).await?;
    running.wait().await?;
    Ok(())
}
