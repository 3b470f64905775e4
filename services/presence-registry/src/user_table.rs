//! Every known user's state, keyed by (app_id, user_id), each behind its own lock.
//!
//! One user's changes are serialised by that user's lock, held from the policy decision through
//! the durable commit to the in-memory update; different users never wait for each other. No
//! global lock: the table can later be partitioned by a hash of the key.

use std::{collections::HashMap, sync::Arc};

use compact_str::CompactString;
use dashmap::DashMap;
use parking_lot::RwLock;
use tokio::sync::Mutex;

use crate::user_state::UserState;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct UserKey {
    pub app_id: String,
    pub user_id: String,
}

impl UserKey {
    pub fn new(app_id: &str, user_id: &str) -> Self {
        Self { app_id: app_id.to_owned(), user_id: user_id.to_owned() }
    }
}

pub type UserCell = Arc<Mutex<UserState>>;

/// One app's users, keyed by user id alone. Ids up to 24 bytes are stored inline in the table,
/// so a lookup compares keys without chasing a pointer (a cache miss per user of a batch query).
pub type AppUsers = DashMap<CompactString, UserCell>;

/// Two levels (app, then user) so that a batch query finds its app once and then looks users up
/// by `&str` without building a key; the outer map is tiny and read-mostly.
#[derive(Default)]
pub struct UserTable {
    apps: RwLock<HashMap<Box<str>, Arc<AppUsers>>>,
}

impl UserTable {
    /// The app's users, if any of them is known.
    pub fn app_users(&self, app_id: &str) -> Option<Arc<AppUsers>> {
        self.apps.read().get(app_id).cloned()
    }

    fn app_users_or_insert(&self, app_id: &str) -> Arc<AppUsers> {
        if let Some(users) = self.app_users(app_id) {
            return users;
        }
        self.apps.write().entry(app_id.into()).or_default().clone()
    }

    /// The user's cell, created empty on first use (a login).
    pub fn entry(&self, key: UserKey) -> UserCell {
        self.app_users_or_insert(&key.app_id).entry(CompactString::from(key.user_id)).or_default().clone()
    }

    /// The user's cell if the registry knows the user.
    pub fn get(&self, key: &UserKey) -> Option<UserCell> {
        self.get_user(&key.app_id, &key.user_id)
    }

    pub fn get_user(&self, app_id: &str, user_id: &str) -> Option<UserCell> {
        self.app_users(app_id)?.get(user_id).map(|cell| cell.clone())
    }

    /// Forgets a user whose entry holds nothing, e.g. one that was only watched and never logged
    /// in: a device could otherwise grow the table with every id it subscribes to. Only when no
    /// one else holds the cell (the map's shard lock keeps anyone from taking it meanwhile).
    pub fn remove_if_unused(&self, app_id: &str, user_id: &str) -> bool {
        let Some(users) = self.app_users(app_id) else { return false };
        users
            .remove_if(user_id, |_, cell| {
                Arc::strong_count(cell) == 1
                    && cell.try_lock().is_ok_and(|state| *state == UserState::default())
            })
            .is_some()
    }

    /// Installs state read at start-up.
    pub fn restore(&self, key: UserKey, state: UserState) {
        self.app_users_or_insert(&key.app_id)
            .insert(CompactString::from(key.user_id), Arc::new(Mutex::new(state)));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_unused_entry_is_forgotten_and_a_used_one_is_not() {
        let table = UserTable::default();
        drop(table.entry(UserKey::new("app", "ghost")));
        assert!(table.remove_if_unused("app", "ghost"));
        assert!(table.get_user("app", "ghost").is_none());

        let held = table.entry(UserKey::new("app", "held"));
        assert!(!table.remove_if_unused("app", "held"), "someone holds the cell");
        drop(held);
        let known = table.entry(UserKey::new("app", "known"));
        known.lock().await.version = 3;
        drop(known);
        assert!(!table.remove_if_unused("app", "known"), "a user with history stays");
        assert!(!table.remove_if_unused("other", "ghost"));
    }
}
