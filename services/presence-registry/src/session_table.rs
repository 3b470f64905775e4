//! Every known user's state, keyed by (app_id, user_id), each behind its own lock.
//!
//! One user's changes are serialised by that user's lock, held from the policy decision through
//! the durable commit to the in-memory update; different users never wait for each other. No
//! global lock: the table can later be partitioned by a hash of the key.

use std::sync::Arc;

use dashmap::DashMap;
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

#[derive(Default)]
pub struct SessionTable {
    users: DashMap<UserKey, UserCell>,
}

impl SessionTable {
    /// The user's cell, created empty on first use (a login).
    pub fn entry(&self, key: UserKey) -> UserCell {
        self.users.entry(key).or_default().clone()
    }

    /// The user's cell if the registry knows the user.
    pub fn get(&self, key: &UserKey) -> Option<UserCell> {
        self.users.get(key).map(|cell| cell.clone())
    }

    /// Installs state read at start-up.
    pub fn restore(&self, key: UserKey, state: UserState) {
        self.users.insert(key, Arc::new(Mutex::new(state)));
    }
}
