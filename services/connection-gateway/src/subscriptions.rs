//! Which of this gateway's sessions subscribe to which users, and the gateway's interest in those
//! users at their registries.
//!
//! A registry pushes a user's changes only to gateways that watch the user (`Watch`), and each
//! gateway fans a push out to its own subscribers. The gateway watches a user while at least one
//! of its sessions subscribes to it. Each interest has a generation, so that an `Unwatch` that
//! overtakes the `Watch` of a newer interest in the same user removes nothing at the registry.
//! Every attach re-asserts the whole set (the snapshot's `watching`), and the registry answers
//! with current statuses: subscribers converge after a registry restart or a take-over.

use std::{
    collections::HashMap,
    sync::{
        Arc,
        atomic::{AtomicU32, Ordering},
    },
    time::Duration,
};

use compact_str::CompactString;
use dashmap::DashMap;
use presence_proto::v1::{StatusPush, UnwatchRequest, UserStatus, WatchRequest, WatchedApp, WatchedUser};
use tokio::{sync::mpsc, time::Instant};
use uuid::Uuid;

use crate::{Shutdown, metric_names as m, registries::Registries, sessions::SessionTable};

/// How long a `Watch` may take before the device hears `unavailable`.
const WATCH_TIMEOUT: Duration = Duration::from_secs(5);
/// Users per `Unwatch` call.
const UNWATCH_BATCH: usize = 500;

/// (app, user) of a watched user.
type WatchKey = (CompactString, CompactString);

/// This gateway's interest in one user.
struct Interest {
    generation: u32,
    /// The sessions that subscribe to the user.
    sessions: Vec<Uuid>,
}

#[derive(Clone)]
pub struct Subscriptions {
    inner: Arc<Inner>,
}

struct Inner {
    watched: DashMap<WatchKey, Interest>,
    next_generation: AtomicU32,
    /// Interests that ended, for the task that tells their registries.
    unwatch: mpsc::UnboundedSender<(CompactString, WatchedUser)>,
}

impl Subscriptions {
    /// The table, and the interests that end, for [`spawn_unwatcher`].
    pub fn new() -> (Self, Ended) {
        let (unwatch, ended) = mpsc::unbounded_channel();
        let inner = Inner { watched: DashMap::new(), next_generation: AtomicU32::new(1), unwatch };
        (Self { inner: Arc::new(inner) }, Ended(ended))
    }

    /// `session` subscribes to `users` (of `app_id`): returns each one's interest, to `Watch`.
    pub fn add(&self, app_id: &str, session: Uuid, users: &[CompactString]) -> Vec<WatchedUser> {
        users
            .iter()
            .map(|user| {
                let key = (CompactString::from(app_id), user.clone());
                let mut interest = self.inner.watched.entry(key).or_insert_with(|| Interest {
                    generation: self.inner.next_generation.fetch_add(1, Ordering::Relaxed),
                    sessions: Vec::new(),
                });
                if !interest.sessions.contains(&session) {
                    interest.sessions.push(session);
                }
                WatchedUser { user_id: user.to_string(), generation: interest.generation }
            })
            .collect()
    }

    /// `session` no longer subscribes to `users`; interests that end are unwatched.
    pub fn remove<'a>(
        &self,
        app_id: &str,
        session: Uuid,
        users: impl IntoIterator<Item = &'a CompactString>,
    ) {
        let app = CompactString::from(app_id);
        for user in users {
            let key = (app.clone(), user.clone());
            let ended = self.inner.watched.remove_if_mut(&key, |_, interest| {
                interest.sessions.retain(|s| *s != session);
                interest.sessions.is_empty()
            });
            if let Some(((app, user), interest)) = ended {
                let watched = WatchedUser { user_id: user.to_string(), generation: interest.generation };
                let _ = self.inner.unwatch.send((app, watched));
            }
        }
    }

    /// Delivers a registry's push to the sessions that subscribe to the user. A push for a user
    /// nobody here subscribes to any more (an `Unwatch` that did not arrive) is unwatched again.
    pub fn publish(&self, sessions: &SessionTable, push: StatusPush) {
        let Some(status) = push.status else { return };
        let key = (CompactString::from(push.app_id.as_str()), CompactString::from(status.user_id.as_str()));
        let subscribers = self.inner.watched.get(&key).map(|interest| interest.sessions.clone());
        let Some(subscribers) = subscribers else {
            let watched = WatchedUser { user_id: status.user_id, generation: push.generation };
            let _ = self.inner.unwatch.send((key.0, watched));
            return;
        };
        let status = Arc::new(status);
        for session in subscribers {
            if sessions.post_status(&session, status.clone()) {
                metrics::counter!(m::STATUS_CHANGES_DELIVERED).increment(1);
            }
        }
    }

    /// Every watched user, for the attach snapshot.
    pub fn watching(&self) -> Vec<WatchedApp> {
        let mut apps: HashMap<CompactString, Vec<WatchedUser>> = HashMap::new();
        for entry in self.inner.watched.iter() {
            let ((app, user), interest) = (entry.key(), entry.value());
            apps.entry(app.clone())
                .or_default()
                .push(WatchedUser { user_id: user.to_string(), generation: interest.generation });
        }
        apps.into_iter().map(|(app_id, users)| WatchedApp { app_id: app_id.to_string(), users }).collect()
    }

    /// Users watched now (a gauge).
    pub fn len(&self) -> usize {
        self.inner.watched.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.watched.is_empty()
    }
}

/// Asks the owners of `users` to push their changes here; returns their current statuses (in
/// no particular order).
pub async fn watch(
    registries: &Registries,
    gateway_id: &str,
    app_id: &str,
    users: Vec<WatchedUser>,
) -> Result<Vec<UserStatus>, tonic::Status> {
    let deadline = Instant::now() + WATCH_TIMEOUT;
    registries
        .per_owner(app_id, users, deadline, |mut registry, users| {
            let request =
                WatchRequest { gateway_id: gateway_id.to_owned(), app_id: app_id.to_owned(), users };
            async move { Ok(registry.watch(request).await?.into_inner().statuses) }
        })
        .await
}

/// Interests that ended, not yet told to their registries.
pub struct Ended(mpsc::UnboundedReceiver<(CompactString, WatchedUser)>);

/// Tells registries about interests that end, in batches, until `shutdown`.
pub fn spawn_unwatcher(ended: Ended, gateway_id: String, registries: Registries, shutdown: Shutdown) {
    tokio::spawn(unwatch_ended(ended.0, gateway_id, registries, shutdown));
}

/// A lost `Unwatch` costs little: the next push for that user finds no subscriber here and is
/// unwatched again.
async fn unwatch_ended(
    mut ended: mpsc::UnboundedReceiver<(CompactString, WatchedUser)>,
    gateway_id: String,
    registries: Registries,
    shutdown: Shutdown,
) {
    let mut batch: HashMap<CompactString, Vec<WatchedUser>> = HashMap::new();
    loop {
        let first = tokio::select! {
            () = shutdown.cancelled() => return,
            next = ended.recv() => match next {
                Some(first) => first,
                None => return,
            },
        };
        batch.entry(first.0).or_default().push(first.1);
        let mut taken = 1;
        while taken < UNWATCH_BATCH
            && let Ok((app, user)) = ended.try_recv()
        {
            batch.entry(app).or_default().push(user);
            taken += 1;
        }
        for (app_id, users) in batch.drain() {
            for chunk in users.chunks(UNWATCH_BATCH) {
                let deadline = Instant::now() + WATCH_TIMEOUT;
                let sent = registries
                    .per_owner(&app_id, chunk.to_vec(), deadline, |mut registry, users| {
                        let request = UnwatchRequest {
                            gateway_id: gateway_id.clone(),
                            app_id: app_id.to_string(),
                            users,
                        };
                        async move { registry.unwatch(request).await.map(|_| Vec::<()>::new()) }
                    })
                    .await;
                if let Err(status) = sent {
                    tracing::debug!(%status, "unwatch not sent; the next push re-sends it");
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> (Subscriptions, mpsc::UnboundedReceiver<(CompactString, WatchedUser)>) {
        let (subscriptions, ended) = Subscriptions::new();
        (subscriptions, ended.0)
    }

    fn users(ids: &[&str]) -> Vec<CompactString> {
        ids.iter().map(|id| CompactString::from(*id)).collect()
    }

    #[test]
    fn an_interest_lives_while_a_session_subscribes_and_ends_once() {
        let (subscriptions, mut ended) = table();
        let (a, b) = (Uuid::now_v7(), Uuid::now_v7());
        let first = subscriptions.add("app", a, &users(&["bob", "carol"]));
        let again = subscriptions.add("app", b, &users(&["bob"]));
        assert_eq!(first[0].generation, again[0].generation, "one interest per user");
        assert_eq!(subscriptions.len(), 2);

        subscriptions.remove("app", a, &users(&["bob"]));
        assert!(ended.try_recv().is_err(), "b still subscribes to bob");
        subscriptions.remove("app", b, &users(&["bob"]));
        let (app, bob) = ended.try_recv().expect("bob unwatched");
        assert_eq!((app.as_str(), bob.user_id.as_str(), bob.generation), ("app", "bob", first[0].generation));
        assert_eq!(subscriptions.len(), 1);

        let later = subscriptions.add("app", a, &users(&["bob"]));
        assert_ne!(later[0].generation, first[0].generation, "a new interest, a new generation");
    }

    #[test]
    fn a_push_reaches_only_subscribers_and_an_orphan_push_is_unwatched() {
        let (subscriptions, mut ended) = table();
        let sessions = SessionTable::default();
        let (watching, other) = (Uuid::now_v7(), Uuid::now_v7());
        for id in [watching, other] {
            sessions.insert(id, Arc::new(crate::sessions::SessionHandle::new("app", "u", "d", 8)));
        }
        subscriptions.add("app", watching, &users(&["bob"]));
        let push = |user: &str, generation| StatusPush {
            app_id: "app".into(),
            status: Some(UserStatus { user_id: user.into(), user_version: 3, ..Default::default() }),
            generation,
        };
        subscriptions.publish(&sessions, push("bob", 1));
        assert_eq!(sessions.queued(&watching), 1);
        assert_eq!(sessions.queued(&other), 0);

        subscriptions.publish(&sessions, push("dave", 9));
        let (_, dave) = ended.try_recv().expect("dave unwatched");
        assert_eq!((dave.user_id.as_str(), dave.generation), ("dave", 9));
    }

    #[test]
    fn the_snapshot_lists_every_watched_user_by_app() {
        let (subscriptions, _ended) = table();
        subscriptions.add("a1", Uuid::now_v7(), &users(&["x", "y"]));
        subscriptions.add("a2", Uuid::now_v7(), &users(&["x"]));
        let mut listed: Vec<(String, usize)> =
            subscriptions.watching().into_iter().map(|app| (app.app_id, app.users.len())).collect();
        listed.sort();
        assert_eq!(listed, [("a1".to_owned(), 2), ("a2".to_owned(), 1)]);
    }
}
