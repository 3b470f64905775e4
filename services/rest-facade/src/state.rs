use presence_common::AppDirectory;

use crate::registry_client::RegistryClient;

/// What every handler shares. Cheap to clone.
#[derive(Clone)]
pub struct AppState {
    pub apps: AppDirectory,
    pub registry: RegistryClient,
}
