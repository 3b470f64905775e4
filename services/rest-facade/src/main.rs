//! rest-facade: see the library docs.

use rest_facade::{FacadeConfig, Shutdown};

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
