use presence_registry::{RegistryConfig, Shutdown};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = presence_common::telemetry::init("presence-registry");
    let config: RegistryConfig = presence_common::config::from_env()?;
    let shutdown = Shutdown::new();
    presence_common::shutdown::cancel_on_signal(shutdown.clone());
    let running = presence_registry::start(config, shutdown).await?;
    running.wait().await?;
    Ok(())
}
