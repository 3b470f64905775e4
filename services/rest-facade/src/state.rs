use presence_common::AppDirectory;
use sqlx::PgPool;

use crate::registry_client::RegistryClient;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub apps: AppDirectory,
    pub registry: RegistryClient,
    /// The facade reads the apps and the notifiers' dead letters.
    pub pool: PgPool,
}
