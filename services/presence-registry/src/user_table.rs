//! Every known user's state, keyed by (app_id, user_id), each behind its own lock.
//!
//! One user's changes are serialised by that user's lock, held from the policy decision through
//! the durable commit to the in-memory update; different users never wait for each other, but for
//! a moment when a user is first seen (it is added to its partition's map of the app's users).
//! Each user's presence is also published in a view (`user_view.rs`) that queries read without
//! the lock.

use std::{collections::HashMap, sync::Arc};

use compact_str::CompactString;
use dashmap::DashMap;
use parking_lot::{RwLock, RwLockReadGuard};
use presence_proto::v1::UserPresence;
use tokio::sync::Mutex;

use crate::{
    cell_map::{CellMap, Hashed},
    user_state::UserState,
    user_view::UserView,
    watchers::{Watcher, Watchers},
};

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

/// A known user: its state behind its lock, and the view of it that queries read without the lock.
struct UserEntry {
    view: UserView,
    cell: UserCell,
}

impl UserEntry {
    fn new(state: UserState) -> Self {
        Self { view: UserView::of(&state), cell: Arc::new(Mutex::new(state)) }
    }
}

/// One app's users of a partition, keyed by user id alone. Ids up to 24 bytes are stored inline
/// in the maps, so a lookup compares keys without chasing a pointer (a cache miss per user of a
/// batch query).
#[derive(Default)]
pub struct AppUsers {
    /// Written only when a user is first seen; every change, watch and query reads. A query reads
    /// the map once for all its users of the partition ([`AppUsers::reader`]), so its look-ups
    /// take no atomic operation, which would keep the CPU from overlapping one user's cache misses
    /// with the next's.
    cells: RwLock<Cells>,
    /// Watched users the registry holds no state for (never seen): only their watchers, without a
    /// cell and its lock (about 50 bytes against 270), until a first change moves them into one.
    /// Devices can subscribe to any id, so most of these may never log in.
    watched_only: DashMap<CompactString, Watchers>,
}

type Cells = CellMap<UserEntry>;

impl AppUsers {
    /// The user's cell if the registry knows the user.
    pub fn cell(&self, user_id: &str) -> Option<UserCell> {
        self.cells.read().get(user_id).map(|entry| entry.cell.clone())
    }

    /// Reads users for a query until dropped (not across an await: a first login waits for it).
    pub fn reader(&self) -> UsersReader<'_> {
        UsersReader(self.cells.read())
    }

    /// Marks the user's view as changing (see [`UserView::begin_change`]); under the user's lock.
    pub fn begin_change(&self, user_id: &str) {
        if let Some(entry) = self.cells.read().get(user_id) {
            entry.view.begin_change();
        }
    }

    /// Publishes the user's state to its view; under the user's lock.
    pub fn publish(&self, user_id: &str, state: &UserState) {
        if let Some(entry) = self.cells.read().get(user_id) {
            entry.view.publish(state);
        }
    }
}

/// [`AppUsers`] read for a batch query.
pub struct UsersReader<'a>(RwLockReadGuard<'a, Cells>);

impl UsersReader<'_> {
    /// Where [`UsersReader::presence`] looks for the user.
    pub fn hashed(&self, user_id: &str) -> Hashed {
        self.0.hashed(user_id)
    }

    /// Starts loading what a look-up of the user reads first; see [`CellMap::prefetch_slot`].
    pub fn prefetch_slot(&self, hashed: Hashed) {
        self.0.prefetch_slot(hashed);
    }

    /// Then what it reads second; see [`CellMap::prefetch_entry`].
    pub fn prefetch_entry(&self, hashed: Hashed) {
        self.0.prefetch_entry(hashed);
    }

    /// The user's presence for a query (without `user_id`) and the feed `seq` of its last applied
    /// event, if the registry knows the user and no change of it is in flight; else (`Err`) the
    /// cell, to wait for. Most users are answered from their view, without touching the cell: a
    /// batch query reads each user once, and every touch of a cold cell is a cache miss.
    pub fn presence(
        &self,
        user_id: &str,
        hashed: Hashed,
        detail: bool,
    ) -> Option<Result<(u64, UserPresence), UserCell>> {
        let entry = self.0.get_hashed(user_id, hashed)?;
        if let Some(summary) = entry.view.read().filter(|_| !detail) {
            return Some(Ok((summary.applied_seq, summary.presence())));
        }
        Some(match entry.cell.try_lock() {
            Ok(state) => Ok((state.applied_seq, state.presence("", detail))),
            Err(_) => Err(entry.cell.clone()),
        })
    }
}

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

    /// The user's cell, created on first use (a login); a watched user's interests move into it.
    pub fn entry(&self, key: UserKey) -> UserCell {
        let users = self.app_users_or_insert(&key.app_id);
        if let Some(cell) = users.cell(&key.user_id) {
            return cell;
        }
        // Lock order: `cells`, then a `watched_only` shard (as in `watch` and `unwatch`).
        let mut cells = users.cells.write();
        let entry = cells.get_or_insert_with(&key.user_id, || {
            let watchers = users.watched_only.remove(key.user_id.as_str()).map(|(_, watchers)| watchers);
            UserEntry::new(UserState { watchers: watchers.unwrap_or_default(), ..UserState::default() })
        });
        entry.cell.clone()
    }

    /// See [`AppUsers::begin_change`].
    pub fn begin_change(&self, app_id: &str, user_id: &str) {
        if let Some(users) = self.app_users(app_id) {
            users.begin_change(user_id);
        }
    }

    /// See [`AppUsers::publish`].
    pub fn publish(&self, app_id: &str, user_id: &str, state: &UserState) {
        if let Some(users) = self.app_users(app_id) {
            users.publish(user_id, state);
        }
    }

    /// The user's cell if the registry knows the user.
    pub fn get(&self, key: &UserKey) -> Option<UserCell> {
        self.get_user(&key.app_id, &key.user_id)
    }

    pub fn get_user(&self, app_id: &str, user_id: &str) -> Option<UserCell> {
        self.app_users(app_id)?.cell(user_id)
    }

    /// Records `watcher` for a user without a cell, or returns the user's cell so that the caller
    /// records it under the user's lock. Reading `cells` meanwhile keeps a first login from making
    /// the cell between the look-up and the record.
    pub fn watch(&self, app_id: &str, user_id: &str, watcher: Watcher) -> Option<UserCell> {
        let users = self.app_users_or_insert(app_id);
        let cells = users.cells.read();
        if let Some(entry) = cells.get(user_id) {
            return Some(entry.cell.clone());
        }
        users.watched_only.entry(CompactString::from(user_id)).or_default().watch(watcher);
        None
    }

    /// Removes `watcher` from a user without a cell (forgetting the user with its last watcher),
    /// or returns the user's cell so that the caller removes it under the user's lock.
    pub fn unwatch(&self, app_id: &str, user_id: &str, watcher: Watcher) -> Option<UserCell> {
        let users = self.app_users(app_id)?;
        let cells = users.cells.read();
        if let Some(entry) = cells.get(user_id) {
            return Some(entry.cell.clone());
        }
        users.watched_only.remove_if_mut(user_id, |_, watchers| {
            watchers.unwatch(watcher);
            watchers.is_empty()
        });
        None
    }

    /// Installs state read at start-up.
    pub fn restore(&self, key: UserKey, state: UserState) {
        self.app_users_or_insert(&key.app_id).cells.write().insert(&key.user_id, UserEntry::new(state));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GW1: Watcher = Watcher { gateway: 1, generation: 7 };
    const GW2: Watcher = Watcher { gateway: 2, generation: 9 };

    #[tokio::test]
    async fn a_never_seen_user_is_watched_without_a_cell_until_its_first_login() {
        let table = UserTable::default();
        assert!(table.watch("app", "ghost", GW1).is_none(), "no cell for a user never seen");
        assert!(table.watch("app", "ghost", GW2).is_none());
        assert!(table.get_user("app", "ghost").is_none());

        let cell = table.entry(UserKey::new("app", "ghost"));
        let mut both = Watchers::default();
        both.watch(GW1);
        both.watch(GW2);
        assert_eq!(cell.lock().await.watchers, both, "the first login takes the interests along");
        let users = table.app_users("app").expect("app known");
        assert!(users.watched_only.is_empty(), "and nothing stays aside");

        let again = table.watch("app", "ghost", GW1).expect("a known user is watched in its cell");
        assert!(Arc::ptr_eq(&again, &cell));
        assert!(table.unwatch("app", "ghost", GW1).is_some_and(|c| Arc::ptr_eq(&c, &cell)));
    }

    #[test]
    fn the_last_unwatch_forgets_a_user_never_seen() {
        let table = UserTable::default();
        assert!(table.unwatch("app", "nobody", GW1).is_none(), "an unknown app or user is fine");
        table.watch("app", "ghost", GW1);
        table.watch("app", "ghost", GW2);
        let users = table.app_users("app").expect("app known");
        table.unwatch("app", "ghost", Watcher { generation: 6, ..GW1 });
        table.unwatch("app", "ghost", GW2);
        assert_eq!(users.watched_only.len(), 1, "an older generation's Unwatch removes nothing");
        table.unwatch("app", "ghost", GW1);
        assert!(users.watched_only.is_empty());
        assert!(users.cells.read().is_empty(), "watching never made a cell");
    }
}
