//! The apps and their login policies, as admins write them with SQL, kept live in memory.
//!
//! A trigger on `apps` and `login_policy_groups` sends `NOTIFY presence_config`; every service
//! listens and reloads the whole (small) table, so a change applies within milliseconds and
//! without restart. A periodic reload covers a lost notification; the listener reconnects after
//! a database restart and reloads at once.

use std::{collections::HashMap, sync::Arc, time::Duration};

use arc_swap::ArcSwap;
use presence_proto::v1::Platform;
use secrecy::SecretString;
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use subtle::ConstantTimeEq;

use crate::{Shutdown, backoff::Backoff};

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

/// The SHA-256 of a REST API key, as `apps.api_key_sha256` stores it (in hex).
pub type ApiKeyHash = [u8; 32];

/// One row of `apps`, with its policy.
#[derive(Clone)]
pub struct AppConfig {
    pub app_id: String,
    pub token_secret: SecretString,
    /// `None` when the app has no REST key (or the stored hash is not 64 hex digits).
    pub api_key_sha256: Option<ApiKeyHash>,
    pub callback_url: Option<String>,
    pub callback_secret: Option<SecretString>,
    pub policy: PolicyMode,
    pub push_online_ttl: Duration,
    /// `apps.max_token_lifetime_s`: the longest a login token may be valid for.
    pub max_token_lifetime: Duration,
    /// `apps.callback_format`: the shape of the app's callbacks.
    pub callback_format: CallbackFormat,
    /// `apps.disconnect_grace_ms`: how long a lost link is held before it is reported (zero:
    /// at once).
    pub disconnect_grace: Duration,
}

/// How an app's callbacks are shaped (`apps.callback_format`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CallbackFormat {
    /// The presence event JSON (docs/http-api.md, "Presence events").
    #[default]
    Presence,
    /// Tencent IM's `State.StateChange` callback, for apps that migrate from it.
    TencentIm,
}

impl std::fmt::Debug for AppConfig {
    // Secrets print as `[REDACTED]`; the key hash not at all (a weak key could be guessed from it).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AppConfig")
            .field("app_id", &self.app_id)
            .field("token_secret", &self.token_secret)
            .field("has_api_key", &self.api_key_sha256.is_some())
            .field("callback_url", &self.callback_url)
            .field("callback_secret", &self.callback_secret)
            .field("policy", &self.policy)
            .field("push_online_ttl", &self.push_online_ttl)
            .field("disconnect_grace", &self.disconnect_grace)
            .finish()
    }
}

/// The hash a presented API key is looked up by.
pub fn hash_api_key(api_key: &str) -> ApiKeyHash {
    Sha256::digest(api_key.as_bytes()).into()
}

/// A stored `api_key_sha256` (hex, any case).
fn parse_key_hash(hex_hash: &str) -> Option<ApiKeyHash> {
    let mut hash = [0; 32];
    hex::decode_to_slice(hex_hash, &mut hash).ok()?;
    Some(hash)
}

impl AppConfig {
    /// Whether `key_hash` is the hash of this app's REST key (compared in constant time).
    pub fn api_key_matches(&self, key_hash: &ApiKeyHash) -> bool {
        self.api_key_sha256.is_some_and(|expected| expected.as_slice().ct_eq(key_hash.as_slice()).into())
    }
}

#[derive(Debug, thiserror::Error)]
pub enum DirectoryError {
    #[error("reading apps: {0}")]
    Database(#[from] sqlx::Error),
}

/// Every app as of one reload, by id and by API-key hash.
#[derive(Default)]
struct Apps {
    by_id: HashMap<String, Arc<AppConfig>>,
    by_key_hash: HashMap<ApiKeyHash, Arc<AppConfig>>,
}

impl Apps {
    fn new(apps: impl IntoIterator<Item = AppConfig>) -> Self {
        let mut by_id = HashMap::new();
        let mut by_key_hash: HashMap<ApiKeyHash, Arc<AppConfig>> = HashMap::new();
        for app in apps {
            let app = Arc::new(app);
            if let Some(hash) = app.api_key_sha256 {
                match by_key_hash.get(&hash) {
                    // Two apps with one key: the key authenticates the first by id, as a
                    // deterministic choice; an admin should give each app its own key.
                    Some(other) if other.app_id < app.app_id => {
                        tracing::warn!(app_id = %app.app_id, other = %other.app_id, "two apps share an API key");
                    }
                    _ => {
                        by_key_hash.insert(hash, app.clone());
                    }
                }
            }
            by_id.insert(app.app_id.clone(), app);
        }
        Self { by_id, by_key_hash }
    }
}

/// Live view of `apps`. Cheap to clone; reads take no lock.
#[derive(Clone)]
pub struct AppDirectory {
    pool: PgPool,
    apps: Arc<ArcSwap<Apps>>,
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
    max_token_lifetime_s: i64,
    callback_format: String,
    disconnect_grace_ms: i32,
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
        let directory = Self { pool, apps: Arc::new(ArcSwap::from_pointee(Apps::default())) };
        directory.reload().await?;
        tokio::spawn(directory.clone().refresh_loop(shutdown));
        Ok(directory)
    }

    pub fn get(&self, app_id: &str) -> Option<Arc<AppConfig>> {
        self.apps.load().by_id.get(app_id).cloned()
    }

    /// The app whose REST API key this is: the key is hashed once, then looked up by its hash.
    /// The map lookup compares digests of the caller's own input, which tells it nothing about
    /// any stored hash's preimage; the final check is constant-time all the same.
    pub fn find_by_api_key(&self, api_key: &str) -> Option<Arc<AppConfig>> {
        let hash = hash_api_key(api_key);
        self.apps.load().by_key_hash.get(&hash).filter(|app| app.api_key_matches(&hash)).cloned()
    }

    /// Reads `apps` and `login_policy_groups` again.
    pub async fn reload(&self) -> Result<(), DirectoryError> {
        let rows: Vec<AppRow> = sqlx::query_as(
            "SELECT app_id, token_secret, api_key_sha256, callback_url, callback_secret, \
             login_policy, push_online_ttl_s, max_token_lifetime_s, callback_format, disconnect_grace_ms FROM apps",
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

        let apps = rows
            .into_iter()
            .map(|row| {
                let policy = match row.login_policy.as_str() {
                    "one_per_platform" => PolicyMode::OnePerPlatform,
                    "groups" => PolicyMode::Groups(groups_by_app.remove(&row.app_id).unwrap_or_default()),
                    _ => PolicyMode::SingleDevice,
                };
                let api_key_sha256 = row.api_key_sha256.as_deref().and_then(|hex_hash| {
                    let hash = parse_key_hash(hex_hash);
                    if hash.is_none() {
                        tracing::warn!(app_id = %row.app_id, "api_key_sha256 is not 64 hex digits; no key matches");
                    }
                    hash
                });
                AppConfig {
                    app_id: row.app_id,
                    token_secret: row.token_secret.into(),
                    api_key_sha256,
                    callback_url: row.callback_url,
                    callback_secret: row.callback_secret.map(Into::into),
                    policy,
                    push_online_ttl: Duration::from_secs(u64::try_from(row.push_online_ttl_s).unwrap_or(1)),
                    max_token_lifetime: Duration::from_secs(
                        u64::try_from(row.max_token_lifetime_s).unwrap_or(1),
                    ),
                    // The column's CHECK admits these two only.
                    callback_format: if row.callback_format == "tencent_im" {
                        CallbackFormat::TencentIm
                    } else {
                        CallbackFormat::Presence
                    },
                    disconnect_grace: Duration::from_millis(
                        u64::try_from(row.disconnect_grace_ms).unwrap_or(0),
                    ),
                }
            })
            .collect::<Vec<_>>();
        let count = apps.len();
        self.apps.store(Arc::new(Apps::new(apps)));
        tracing::debug!(apps = count, "app directory reloaded");
        Ok(())
    }

    async fn refresh_loop(self, shutdown: Shutdown) {
        const PERIODIC: Duration = Duration::from_secs(30);
        const RETRY_MIN: Duration = Duration::from_secs(1);
        // Without a listener, changes arrive only by polling: try to listen again soon (backing
        // off while the database stays away), not only at the next periodic reload.
        let mut retry = Backoff::new(RETRY_MIN, PERIODIC);
        loop {
            let mut listener = match crate::db::listen(&self.pool, CONFIG_CHANNEL).await {
                Ok(l) => {
                    retry.reset();
                    Some(l)
                }
                Err(err) => {
                    tracing::warn!(%err, "config listener cannot connect; polling apps instead");
                    None
                }
            };
            // Something may have changed while we were not listening.
            self.reload_logged().await;
            loop {
                let listening = listener.is_some();
                let wait = if listening { PERIODIC } else { retry.next_delay() };
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
    use secrecy::ExposeSecret;

    use super::*;

    fn app(app_id: &str, key_hash: Option<&str>) -> AppConfig {
        AppConfig {
            app_id: app_id.into(),
            token_secret: "s3cret".into(),
            api_key_sha256: key_hash.and_then(parse_key_hash),
            callback_url: None,
            callback_secret: Some("cb-s3cret".into()),
            policy: PolicyMode::SingleDevice,
            push_online_ttl: Duration::from_secs(1),
            max_token_lifetime: Duration::from_secs(604_800),
            callback_format: CallbackFormat::Presence,
            disconnect_grace: Duration::ZERO,
        }
    }

    #[test]
    fn api_keys_match_by_hash_only() {
        let hash = hex::encode(Sha256::digest(b"key-123"));
        assert!(app("a", Some(&hash)).api_key_matches(&hash_api_key("key-123")));
        assert!(app("a", Some(&hash.to_uppercase())).api_key_matches(&hash_api_key("key-123")));
        assert!(!app("a", Some(&hash)).api_key_matches(&hash_api_key("key-124")));
        assert!(!app("a", None).api_key_matches(&hash_api_key("")));
        assert!(!app("a", Some("not hex")).api_key_matches(&hash_api_key("")));
    }

    #[test]
    fn apps_are_found_by_key_hash() {
        let key_a = hex::encode(Sha256::digest(b"key-a"));
        let apps = Apps::new([app("a", Some(&key_a)), app("b", None)]);
        assert_eq!(apps.by_key_hash.get(&hash_api_key("key-a")).map(|a| a.app_id.as_str()), Some("a"));
        assert!(!apps.by_key_hash.contains_key(&hash_api_key("key-b")));
        assert_eq!(apps.by_id.len(), 2);
    }

    #[test]
    fn a_shared_key_authenticates_the_first_app_by_id() {
        let key = hex::encode(Sha256::digest(b"shared"));
        for order in [["b", "a"], ["a", "b"]] {
            let apps = Apps::new(order.map(|id| app(id, Some(&key))));
            assert_eq!(apps.by_key_hash[&hash_api_key("shared")].app_id, "a");
        }
    }

    #[test]
    fn debug_output_hides_secrets() {
        let app = app("a", Some(&hex::encode(Sha256::digest(b"k"))));
        let shown = format!("{app:?}");
        assert!(!shown.contains("s3cret") && !shown.contains("api_key_sha256"), "{shown}");
        assert!(shown.contains("[REDACTED]") && shown.contains("has_api_key: true"), "{shown}");
        assert_eq!(app.token_secret.expose_secret(), "s3cret");
    }
}
