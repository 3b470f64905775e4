//! connection-gateway: see the library docs.

use connection_gateway::{GatewayConfig, Shutdown};

fn main() -> anyhow::Result<()> {
    // Read first: the runtime's size is part of the configuration.
    let config: GatewayConfig = presence_common::config::from_env()?;
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(threads) = config.worker_threads {
        runtime.worker_threads(threads.max(1));
    }
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
