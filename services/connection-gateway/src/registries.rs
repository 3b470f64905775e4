//! The registry processes this gateway works with: one link to each (kicks come down the link of
//! the registry that owns the user), and each user's calls routed to the owner of its partition.

use std::{collections::HashMap, sync::Arc, time::Duration};

use parking_lot::Mutex;
use presence_common::{
    internal_auth::RegistryChannel,
    registry_router::{RegistryRouter, may_reroute},
};
use presence_proto::v1::{WatchedUser, presence_registry_client::PresenceRegistryClient};
use tokio::{task::JoinHandle, time::Instant};

use crate::{
    Shutdown,
    link::{self, LinkState},
    sessions::SessionTable,
    subscriptions::Subscriptions,
};

/// How long a call waits between tries while the user's partition has no attached owner.
const ROUTE_RETRY: Duration = Duration::from_millis(50);
/// Longest a call waits for a fresh partition map.
const REFRESH_WAIT: Duration = Duration::from_millis(500);

#[derive(Clone)]
pub struct Registries {
    router: RegistryRouter,
    links: Arc<Mutex<HashMap<String, Link>>>,
}

struct Link {
    state: LinkState,
    stop: Shutdown,
    task: JoinHandle<()>,
}

impl Registries {
    /// Attaches to every registry in the map, and follows the map until `shutdown`.
    pub fn start(
        router: RegistryRouter,
        gateway_id: String,
        sessions: SessionTable,
        subscriptions: Subscriptions,
        shutdown: Shutdown,
    ) -> (Self, JoinHandle<()>) {
        let registries = Self { router, links: Arc::default() };
        let task = tokio::spawn(registries.clone().supervise(gateway_id, sessions, subscriptions, shutdown));
        (registries, task)
    }

    /// Whether a link to some registry is attached.
    pub fn any_attached(&self) -> bool {
        self.links.lock().values().any(|l| l.state.is_attached())
    }

    fn attached(&self, addr: &str) -> bool {
        self.links.lock().get(addr).is_some_and(|l| l.state.is_attached())
    }

    /// A client for the registry that owns the user, once it is known (and, for a login, once
    /// this gateway is attached to it: kicks for the session must have a way down); `None` if
    /// that does not happen before `deadline`.
    pub async fn owner_of(
        &self,
        app_id: &str,
        user_id: &str,
        for_login: bool,
        deadline: Instant,
    ) -> Option<PresenceRegistryClient<RegistryChannel>> {
        loop {
            if let Some(addr) = self.router.owner_of(app_id, user_id)
                && (!for_login || self.attached(&addr))
                && let Ok(channel) = self.router.channel(&addr)
            {
                return Some(PresenceRegistryClient::new(channel));
            }
            // No registry at all: the device hears `unavailable` now, not in ten seconds.
            if self.router.none_alive() || Instant::now() + ROUTE_RETRY > deadline {
                return None;
            }
            tokio::time::sleep(ROUTE_RETRY).await;
        }
    }

    /// Calls `call` once per registry that owns some of `users`, with those users, and collects
    /// the answers. The users of a registry that answered "not the owner" (or could not be
    /// reached) are routed again on a fresh map until `deadline`.
    pub async fn per_owner<T, F, Fut>(
        &self,
        app_id: &str,
        users: Vec<WatchedUser>,
        deadline: Instant,
        mut call: F,
    ) -> Result<Vec<T>, tonic::Status>
    where
        F: FnMut(PresenceRegistryClient<RegistryChannel>, Vec<WatchedUser>) -> Fut,
        Fut: Future<Output = Result<Vec<T>, tonic::Status>>,
    {
        let mut answers = Vec::new();
        let mut todo = users;
        while !todo.is_empty() {
            let mut groups: HashMap<String, Vec<WatchedUser>> = HashMap::new();
            let mut unrouted = Vec::new();
            for user in todo {
                match self.router.owner_of(app_id, &user.user_id) {
                    Some(addr) => groups.entry(addr).or_default().push(user),
                    None => unrouted.push(user),
                }
            }
            todo = unrouted;
            for (addr, group) in groups {
                let Ok(channel) = self.router.channel(&addr) else {
                    todo.extend(group);
                    continue;
                };
                match tokio::time::timeout_at(
                    deadline,
                    call(PresenceRegistryClient::new(channel), group.clone()),
                )
                .await
                {
                    Ok(Ok(mut answer)) => answers.append(&mut answer),
                    Ok(Err(status)) if may_reroute(&status) => todo.extend(group),
                    Ok(Err(status)) => return Err(status),
                    Err(_) => {
                        return Err(tonic::Status::deadline_exceeded(
                            "the registries did not answer in time",
                        ));
                    }
                }
            }
            if !todo.is_empty() {
                if Instant::now() + ROUTE_RETRY > deadline {
                    return Err(tonic::Status::unavailable("no registry serves these users now"));
                }
                self.refresh().await;
                tokio::time::sleep(ROUTE_RETRY).await;
            }
        }
        Ok(answers)
    }

    /// Re-reads the partition map (a registry answered that it is not the owner), waiting at
    /// most a moment: with Postgres away, the map in hand is the best there is.
    pub async fn refresh(&self) {
        let _ = tokio::time::timeout(REFRESH_WAIT, self.router.refresh()).await;
    }

    /// Starts a link to each registry that joined, stops those to registries that left.
    async fn supervise(
        self,
        gateway_id: String,
        sessions: SessionTable,
        subscriptions: Subscriptions,
        shutdown: Shutdown,
    ) {
        let mut changes = self.router.watch();
        loop {
            let members = self.router.members();
            {
                let mut links = self.links.lock();
                links.retain(|addr, link| {
                    let keep = members.contains(addr);
                    if !keep {
                        tracing::info!(registry = addr, "registry left; detaching");
                        link.stop.cancel();
                    }
                    keep
                });
                for addr in members {
                    if links.contains_key(&addr) {
                        continue;
                    }
                    let channel = match self.router.channel(&addr) {
                        Ok(channel) => channel,
                        Err(err) => {
                            tracing::warn!(%err, registry = addr, "cannot reach this registry");
                            continue;
                        }
                    };
                    let state = LinkState::default();
                    let stop = shutdown.child_token();
                    let task = tokio::spawn(link::run(
                        channel,
                        gateway_id.clone(),
                        sessions.clone(),
                        subscriptions.clone(),
                        state.clone(),
                        stop.clone(),
                    ));
                    links.insert(addr, Link { state, stop, task });
                }
            }
            tokio::select! {
                () = shutdown.cancelled() => break,
                changed = changes.changed() => if changed.is_err() { break },
            }
        }
        let tasks: Vec<JoinHandle<()>> = self.links.lock().drain().map(|(_, link)| link.task).collect();
        for task in tasks {
            let _ = task.await;
        }
    }
}
