//! The apps and their login policies, as admins write them with SQL, kept live in memory.
//!
//! A trigger on `apps` and `login_policy_groups` sends `NOTIFY presence_config`; every service
//! listens and reloads the whole (small) table, so a change applies within milliseconds and
//! without restart. A periodic reload covers a lost notification; the listener reconnects after
//! a database restart and reloads at once.

use std::{
    collections::HashMap,
    sync::{Arc, RwLock},
    time::Duration,
};

use presence_proto::v1::Platform;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, postgres::PgListener};
use subtle::ConstantTimeEq;

use crate::Shutdown;

/// Channel the config trigger notifies.
pub const CONFIG_CHANNEL: &str = "presence_config";

/// How an app lets a user's devices be online together (`apps.login_policy`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyMode {
    /// Only the newest device stays online.
    SingleDevice,
    /// One device per platform.
    OnePerPlatform,
    /// Admin-defined groups of platforms, each with a maximum of devices.
    Groups(Vec<GroupSpec>),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GroupSpec {
    pub name: String,
    pub platforms: Vec<Platform>,
    pub max_devices: usize,
}

/// One row of `apps`, with its policy.
#[derive(Clone, PartialEq, Eq)]
pub struct AppConfig {
    pub app_id: String,
    pub token_secret: String,
    pub api_key_sha256: Option<String>,
    pub callback_url: Option<String>,
    pub callback_secret: Option<String>,
    pub policy: PolicyMode,
    pub push_online_ttl: Duration,
}

impl std::fmt::Debug for AppConfig {
    // Secrets stay out of logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("app_id", &self.app_id)
            .field("callback_url", &self.callback_url)
            .field("policy", &self.policy)
            .field("push_online_ttl", &self.push_online_ttl)
            .finish_non_exhaustive()
    }
}

impl AppConfig {
    /// Whether `api_key` is this app's REST key (compared as hashes, in constant time).
    pub fn api_key_matches(&self, api_key: &str) -> bool {
        let Some(expected) = &self.api_key_sha256 else { return false };
        let actual = hex::encode(Sha256::digest(api_key.as_bytes()));
        actual.as_bytes().ct_eq(expected.to_ascii_lowercase().as_bytes()).into()
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("reading apps: {0}")]
    Database(#[from] sqlx::Error),
}

type Apps = Arc<HashMap<String, Arc<AppConfig>>>;

/// Live view of `apps`. Cheap to clone.
#[derive(Clone)]
pub struct AppDirectory {
    pool: PgPool,
    apps: Arc<RwLock<Apps>>,
}

#[derive(sqlx::FromRow)]
struct AppRow {
    app_id: String,
    token_secret: String,
    api_key_sha256: Option<String>,
    callback_url: Option<String>,
    callback_secret: Option<String>,
    login_policy: String,
    push_online_ttl_s: i64,
}

#[derive(sqlx::FromRow)]
struct GroupRow {
    app_id: String,
    group_name: String,
    platforms: Vec<String>,
    max_devices: i32,
}

impl AppDirectory {
    /// Loads every app now and keeps the view fresh until `shutdown`.
    pub async fn start(pool: PgPool, shutdown: Shutdown) -> Result<Self, DirectoryError> {
        let directory = Self { pool, apps: Arc::default() };
        directory.reload().await?;
        tokio::spawn(directory.clone().refresh_loop(shutdown));
        Ok(directory)
    }

    pub fn get(&self, app_id: &str) -> Option<Arc<AppConfig>> {
        self.snapshot().get(app_id).cloned()
    }

    /// Every app, as of the last reload.
    pub fn snapshot(&self) -> Apps {
        match self.apps.read() {
            Ok(apps) => apps.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// The app whose REST API key this is.
    pub fn find_by_api_key(&self, api_key: &str) -> Option<Arc<AppConfig>> {
        self.snapshot().values().find(|app| app.api_key_matches(api_key)).cloned()
    }

    /// Reads `apps` and `login_policy_groups` again.
    pub async fn reload(&self) -> Result<(), DirectoryError> {
        let rows: Vec<AppRow> = sqlx::query_as(
            "SELECT app_id, token_secret, api_key_sha256, callback_url, callback_secret, \
             login_policy, push_online_ttl_s FROM apps",
        )
        .fetch_all(&self.pool)
        .await?;
        let groups: Vec<GroupRow> = sqlx::query_as(
            "SELECT app_id, group_name, platforms, max_devices FROM login_policy_groups \
             ORDER BY app_id, group_name",
        )
        .fetch_all(&self.pool)
        .await?;

        let mut groups_by_app: HashMap<String, Vec<GroupSpec>> = HashMap::new();
        for g in groups {
            let platforms = g.platforms.iter().filter_map(|p| Platform::from_name(p).ok()).collect();
            groups_by_app.entry(g.app_id).or_default().push(GroupSpec {
                name: g.group_name,
                platforms,
                max_devices: usize::try_from(g.max_devices).unwrap_or(1).max(1),
            });
        }

        let apps: HashMap<_, _> = rows
            .into_iter()
            .map(|row| {
                let policy = match row.login_policy.as_str() {
                    "one_per_platform" => PolicyMode::OnePerPlatform,
                    "groups" => PolicyMode::Groups(groups_by_app.remove(&row.app_id).unwrap_or_default()),
                    _ => PolicyMode::SingleDevice,
                };
                let app = AppConfig {
                    app_id: row.app_id.clone(),
                    token_secret: row.token_secret,
                    api_key_sha256: row.api_key_sha256,
                    callback_url: row.callback_url,
                    callback_secret: row.callback_secret,
                    policy,
                    push_online_ttl: Duration::from_secs(u64::try_from(row.push_online_ttl_s).unwrap_or(1)),
                };
                (row.app_id, Arc::new(app))
            })
            .collect();
        let count = apps.len();
        match self.apps.write() {
            Ok(mut guard) => *guard = Arc::new(apps),
            Err(poisoned) => *poisoned.into_inner() = Arc::new(apps),
        }
        tracing::debug!(apps = count, "app directory reloaded");
        Ok(())
    }

    async fn refresh_loop(self, shutdown: Shutdown) {
        const PERIODIC: Duration = Duration::from_secs(30);
        const RETRY_MIN: Duration = Duration::from_secs(1);
        // Without a listener, changes arrive only by polling: try to listen again soon (backing
        // off while the database stays away), not only at the next periodic reload.
        let mut retry = RETRY_MIN;
        loop {
            let mut listener = match PgListener::connect_with(&self.pool).await {
                Ok(mut l) => match l.listen(CONFIG_CHANNEL).await {
                    Ok(()) => {
                        retry = RETRY_MIN;
                        Some(l)
                    }
                    Err(err) => {
                        tracing::warn!(%err, "LISTEN failed; polling apps instead");
                        None
                    }
                },
                Err(err) => {
                    tracing::warn!(%err, "config listener cannot connect; polling apps instead");
                    None
                }
            };
            // Something may have changed while we were not listening.
            self.reload_logged().await;
            loop {
                let listening = listener.is_some();
                let wait = if listening { PERIODIC } else { retry };
                let notified = async {
                    match listener.as_mut() {
                        Some(l) => l.try_recv().await.map(|n| n.is_some()),
                        None => std::future::pending().await,
                    }
                };
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tokio::time::sleep(wait) => {
                        if !listening {
                            retry = (retry * 2).min(PERIODIC);
                            break; // reconnecting reloads
                        }
                        self.reload_logged().await;
                    }
                    result = notified => match result {
                        Ok(true) => self.reload_logged().await,
                        // The connection dropped (e.g. Postgres restarted): listen again.
                        Ok(false) | Err(_) => {
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                () = tokio::time::sleep(Duration::from_millis(500)) => {}
                            }
                            break;
                        }
                    },
                }
            }
        }
    }

    async fn reload_logged(&self) {
        if let Err(err) = self.reload().await {
            tracing::warn!(%err, "app directory reload failed; keeping the previous view");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn app(key_hash: Option<&str>) -> AppConfig {
        AppConfig {
            app_id: "a".into(),
            token_secret: "s".into(),
            api_key_sha256: key_hash.map(str::to_owned),
            callback_url: None,
            callback_secret: None,
            policy: PolicyMode::SingleDevice,
            push_online_ttl: Duration::from_secs(1),
        }
    }

    #[test]
    fn api_keys_match_by_hash_only() {
        let hash = hex::encode(Sha256::digest(b"key-123"));
        assert!(app(Some(&hash)).api_key_matches("key-123"));
        assert!(app(Some(&hash.to_uppercase())).api_key_matches("key-123"));
        assert!(!app(Some(&hash)).api_key_matches("key-124"));
        assert!(!app(None).api_key_matches(""));
    }

    #[test]
    fn debug_output_hides_secrets() {
        let shown = format!("{:?}", app(Some("abc")));
        assert!(!shown.contains("token_secret") && !shown.contains("abc"), "{shown}");
    }
}
