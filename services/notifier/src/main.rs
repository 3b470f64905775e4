use notifier::{NotifierConfig, Shutdown};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = presence_common::telemetry::init("notifier");
    let config: NotifierConfig = presence_common::config::from_env()?;
    let shutdown = Shutdown::new();
    presence_common::shutdown::cancel_on_signal(shutdown.clone());
    let running = notifier::start(config, shutdown).await?;
    running.wait().await?;
    Ok(())
}
