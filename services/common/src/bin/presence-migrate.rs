//! `presence-migrate`: brings the database schema up to date, then exits. Run it as the schema's
//! owner before starting (or upgrading) the services; see docs/configuration.md, "Database roles".

use presence_common::{Shutdown, db};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let _telemetry = presence_common::telemetry::init("presence-migrate");
    let config: db::MigrateConfig = presence_common::config::from_env()?;
    let shutdown = Shutdown::new();
    presence_common::shutdown::cancel_on_signal(shutdown.clone());
    db::run_migrate(&config, &shutdown).await?;
    Ok(())
}
