//! Connecting to Postgres: retried at start (the database may come up after us) and migrated.

use std::time::Duration;

use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::Shutdown;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unreachable: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("shut down while waiting for the database")]
    ShutDown,
}

/// The migrations of `migrations/`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Connects, retrying with backoff until `shutdown`, then applies pending migrations (they take
/// an advisory lock, so services starting together are safe).
pub async fn connect(url: &str, max_connections: u32, shutdown: &Shutdown) -> Result<PgPool, DbError> {
    let mut delay = Duration::from_millis(100);
    let pool = loop {
        let attempt = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect(url)
            .await;
        match attempt {
            Ok(pool) => break pool,
            Err(err @ sqlx::Error::Configuration(_)) => return Err(DbError::Connect(err)),
            Err(err) => {
                tracing::warn!(%err, ?delay, "database not reachable yet, retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Err(DbError::ShutDown),
                }
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    MIGRATOR.run(&pool).await?;
    Ok(pool)
}
