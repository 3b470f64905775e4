//! connection-gateway: see the library docs.

use connection_gateway::{GatewayConfig, Shutdown};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = presence_common::telemetry::init("connection-gateway");
    let config: GatewayConfig = presence_common::config::from_env()?;
    let shutdown = Shutdown::new();
    presence_common::shutdown::cancel_on_signal(shutdown.clone());
    let running = connection_gateway::start(config, shutdown).await?;
    running.wait().await?;
    Ok(())
}
