//! The registry's operations. Each runs a [`transition`] under the user's lock, makes it durable,
//! applies it in memory, then sends the kicks it implies.

use std::{
    collections::HashSet,
    sync::Arc,
    time::{Duration, Instant},
};

use futures::StreamExt;

use presence_common::{AppDirectory, ErrorCode, time::now_ms};
use presence_proto::codes::KickReason;
use presence_proto::limits::{
    MAX_CUSTOM_STATUS_LEN, MAX_ID_LEN, MAX_IDS_PER_QUERY, is_valid_id, is_valid_text,
};
use presence_proto::v1::{
    DeviceSession, DeviceStatus, EventReason, KickSession, KickedDevice, LiveSession, Platform,
    PresenceEvent, SessionRef, StatusPush, UserStatus, WatchedApp, WatchedUser,
};
use sqlx::PgPool;
use tracing::Instrument as _;

use crate::{
    counts::Counts,
    event_log::{EventLog, LogError},
    gateways::{Gateways, Pushed},
    grace_timer::GraceTimer,
    metric_names as m,
    partitions::{Partition, Partitions},
    store,
    transition::{self, Change},
    user_state::{Device, UserState, Visible},
    user_table::{UserCell, UserKey},
    watchers::Watcher,
};
use presence_common::{partition_lease::Ownership, registry_router::RegistryRouter};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("{0}")]
    BadRequest(String),
    #[error("unknown app `{0}`")]
    UnknownApp(String),
    #[error("gateway `{0}` is not attached")]
    GatewayNotAttached(String),
    #[error("the session is held by another gateway")]
    NotYourSession,
    /// The user's partition is not served here (another registry owns it, or it is moving).
    #[error("partition {0} is not served by this registry")]
    NotOwner(u32),
    #[error(transparent)]
    Log(#[from] LogError),
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("another registry: {0}")]
    Peer(String),
    /// A custom status needs an online or push_online user (and a device's, a current session).
    #[error("the user is offline")]
    UserOffline,
}

/// How long a query waits for the other registries' parts.
pub(crate) const FORWARD_DEADLINE: std::time::Duration = std::time::Duration::from_secs(5);

impl From<RegistryError> for tonic::Status {
    fn from(err: RegistryError) -> Self {
        if matches!(err, RegistryError::NotOwner(_) | RegistryError::GatewayNotAttached(_)) {
            return presence_common::registry_router::reroute_status(err.to_string());
        }
        let code = match &err {
            RegistryError::BadRequest(_) => ErrorCode::BadRequest,
            RegistryError::UnknownApp(_) => ErrorCode::NotFound,
            RegistryError::NotYourSession => ErrorCode::PermissionDenied,
            RegistryError::UserOffline => ErrorCode::UserOffline,
            // A gateway is between links (e.g. the registry just restarted): retry shortly.
            // Callers re-read the partition map and retry with the owner.
            RegistryError::NotOwner(_)
            | RegistryError::GatewayNotAttached(_)
            | RegistryError::Log(_)
            | RegistryError::Database(_)
            | RegistryError::Peer(_) => ErrorCode::Unavailable,
        };
        code.status(err.to_string())
    }
}

/// A change as committed (with its events), or `None` when the plan changed nothing.
type ChangeResult = Result<Option<(Change, Vec<PresenceEvent>)>, RegistryError>;

/// A login as it was committed.
pub struct LoginOutcome {
    pub kicked: Vec<KickedDevice>,
    /// The login event's `seq`; 0 when the login had been committed by an earlier call (a retry).
    pub seq: u64,
    pub user_version: u64,
}

pub struct Registry {
    pub(crate) partitions: Partitions,
    /// The other registries, for queries of users whose partitions are served there.
    pub(crate) peers: RegistryRouter,
    pub(crate) ownership: Ownership,
    pub(crate) log: EventLog,
    pub(crate) gateways: Arc<Gateways>,
    pub(crate) apps: AppDirectory,
    pub(crate) pool: PgPool,
    pub(crate) graces: GraceTimer,
}

fn check_id(what: &str, value: &str) -> Result<(), RegistryError> {
    if !is_valid_id(value) {
        return Err(RegistryError::BadRequest(format!(
            "{what} must be 1 to {MAX_ID_LEN} bytes without control characters"
        )));
    }
    Ok(())
}

fn check_session(s: &SessionRef) -> Result<(), RegistryError> {
    check_id("app_id", &s.app_id)?;
    check_id("user_id", &s.user_id)?;
    check_id("device_id", &s.device_id)?;
    check_id("session_id", &s.session_id)
}

impl Registry {
    /// The partition of `key` with the epoch to write it under, if this process serves it now.
    fn served(&self, key: &UserKey) -> Result<(u32, i64, Arc<Partition>), RegistryError> {
        let p = self.partitions.of(&key.app_id, &key.user_id);
        let epoch = self.ownership.serving_epoch(p).ok_or(RegistryError::NotOwner(p))?;
        let partition = self.partitions.get(p).ok_or(RegistryError::NotOwner(p))?;
        Ok((p, epoch, partition))
    }

    /// [`Registry::change`] of a user the registry knows; `None` for an unknown user.
    async fn change_known_user<F>(&self, key: UserKey, plan: F) -> ChangeResult
    where
        F: FnOnce(&UserState) -> Result<Option<Change>, RegistryError>,
    {
        self.change(key, false, plan).await
    }

    /// [`Registry::change`] of a user, who is added (with no devices) if unknown.
    async fn change_or_add_user<F>(&self, key: UserKey, plan: F) -> ChangeResult
    where
        F: FnOnce(&UserState) -> Result<Option<Change>, RegistryError>,
    {
        self.change(key, true, plan).await
    }

    /// Runs `plan` under the user's lock; commits and applies its change, then kicks.
    async fn change<F>(&self, key: UserKey, add: bool, plan: F) -> ChangeResult
    where
        F: FnOnce(&UserState) -> Result<Option<Change>, RegistryError>,
    {
        let (p, _, partition) = self.served(&key)?;
        // Held until the change is applied: a hand-over of the partition waits for it.
        let gate = partition.gate.clone().read_owned().await;
        // The hand-over may have begun while we waited; its epoch is the one to write under.
        let epoch = self.ownership.serving_epoch(p).ok_or(RegistryError::NotOwner(p))?;
        let cell: UserCell = if add {
            partition.users.entry(key.clone())
        } else {
            match partition.users.get(&key) {
                Some(cell) => cell,
                None => return Ok(None),
            }
        };
        let mut state = cell.lock_owned().await;
        let Some(change) = plan(&state)? else { return Ok(None) };
        let mutation = change.mutation(&key.app_id, &key.user_id, p, epoch);
        let (log, next, memory_only) = (self.log.clone(), change.next.clone(), change.writes_nothing());
        // What subscribers saw before, if there are any; what the app's counts gain or lose.
        let seen = (!state.watchers.is_empty()).then(|| state.visible());
        let counted = Counts::change(&state, &change.next);
        let (gateways, user, held) = (self.gateways.clone(), key.clone(), partition.clone());
        // Queries read the user under its lock from here until the change is published.
        partition.users.begin_change(&key.app_id, &key.user_id);
        // Commit and apply in a task of its own: if our caller goes away (a cancelled RPC), the
        // change still reaches memory exactly when it reaches Postgres, and only then is the user
        // unlocked. Dropped midway, the next change of this user would be planned from stale
        // state and collide with this one. Pushes go out before the unlock: in version order.
        let events = tokio::spawn(
            async move {
                let committed = if memory_only { Ok(Vec::new()) } else { log.commit(mutation).await };
                if let Ok(events) = &committed {
                    let applied_seq = events.last().map_or(state.applied_seq, |event| event.seq);
                    *state = UserState { applied_seq, ..next };
                    held.counts.add(&user.app_id, &counted);
                    if let Some(seen) = seen {
                        push_if_changed(&gateways, &user, &mut state, &seen);
                    }
                }
                // Committed or not: queries may read the view again.
                held.users.publish(&user.app_id, &user.user_id, &state);
                drop(gate);
                committed
            }
            .instrument(tracing::info_span!("registry.commit")),
        )
        .await
        .map_err(|err| LogError::Commit(format!("commit task: {err}")))?
        .map_err(|err| match err {
            LogError::Fenced(p) => RegistryError::NotOwner(p),
            other => RegistryError::Log(other),
        })?;
        for event in &events {
            metrics::counter!(m::EVENTS, "action" => event.action().name().unwrap_or("unknown")).increment(1);
        }
        for kick in &change.kicks {
            self.gateways.kick(
                &kick.device.gateway_id,
                KickSession {
                    app_id: key.app_id.clone(),
                    user_id: key.user_id.clone(),
                    device_id: kick.device.device_id.clone(),
                    session_id: kick.device.session_id.clone(),
                    reason: kick.reason.as_str().to_owned(),
                    by_platform: kick.by_platform as i32,
                    by_device_id: kick.by_device_id.clone(),
                },
            );
        }
        Ok(Some((change, events)))
    }

    /// `traceparent`: the login's trace context, kept with its event for the notifier.
    pub async fn login(
        &self,
        gateway_id: &str,
        session: DeviceSession,
        traceparent: Option<String>,
    ) -> Result<LoginOutcome, RegistryError> {
        check_id("gateway_id", gateway_id)?;
        check_id("app_id", &session.app_id)?;
        check_id("user_id", &session.user_id)?;
        check_id("device_id", &session.device_id)?;
        check_id("session_id", &session.session_id)?;
        if !is_valid_text(&session.client_version, MAX_ID_LEN)
            || !is_valid_text(&session.peer_addr, MAX_ID_LEN)
        {
            return Err(RegistryError::BadRequest(
                "client_version and peer_addr must be at most 256 bytes without control characters".into(),
            ));
        }
        let platform = Platform::try_from(session.platform)
            .ok()
            .filter(|p| *p != Platform::Unspecified)
            .ok_or_else(|| RegistryError::BadRequest("platform is required".into()))?;
        let app = self
            .apps
            .get(&session.app_id)
            .ok_or_else(|| RegistryError::UnknownApp(session.app_id.clone()))?;
        if !self.gateways.is_attached(gateway_id) {
            return Err(RegistryError::GatewayNotAttached(gateway_id.to_owned()));
        }
        let now = now_ms();
        let device = Device {
            device_id: session.device_id.clone(),
            platform,
            status: DeviceStatus::Online,
            session_id: session.session_id.clone(),
            gateway_id: gateway_id.to_owned(),
            since_ms: now,
            client_version: session.client_version.clone(),
            push_enabled: session.push_enabled,
            peer_addr: session.peer_addr.clone(),
            disconnected_at_ms: None,
            lost: None,
        };
        let key = UserKey::new(&session.app_id, &session.user_id);
        // A gateway retries a login whose answer it lost (its registry died, or handed the user's
        // partition over, after the commit): the session is then already online, and is not
        // logged in twice.
        let mut retried = None;
        let outcome = self
            .change_or_add_user(key, |state| {
                if state
                    .online_session(&session.device_id, &session.session_id)
                    .is_some_and(|d| d.gateway_id == gateway_id)
                {
                    retried = Some(state.version);
                    return Ok(None);
                }
                let mut change = transition::login(state, &app.policy, device, now);
                if let Some(login) = change.events.last_mut() {
                    login.traceparent = traceparent;
                }
                Ok(Some(change))
            })
            .await?;
        if let Some(user_version) = retried {
            return Ok(LoginOutcome { kicked: Vec::new(), seq: 0, user_version });
        }
        let (change, mut events) =
            outcome.ok_or_else(|| RegistryError::BadRequest("login had no effect".into()))?;
        let Some(event) = events.pop() else {
            // The device came back within its grace: no event (flap damping).
            metrics::counter!(m::FLAP_DAMPING, "outcome" => "came_back").increment(1);
            return Ok(LoginOutcome { kicked: Vec::new(), seq: 0, user_version: change.next.version });
        };
        Ok(LoginOutcome {
            kicked: change.forced_offline.iter().map(Device::kicked).collect(),
            seq: event.seq,
            user_version: event.user_version,
        })
    }

    /// True if the session was current and is now logged out. `gateway`, when known (a verified
    /// caller), must be the gateway that holds the session.
    pub async fn logout(&self, session: &SessionRef, gateway: Option<&str>) -> Result<bool, RegistryError> {
        check_session(session)?;
        let key = UserKey::new(&session.app_id, &session.user_id);
        let now = now_ms();
        let done = self
            .change_known_user(key, |state| {
                held_by(state, session, gateway)?;
                Ok(transition::logout(state, &session.device_id, &session.session_id, now))
            })
            .await?;
        Ok(done.is_some())
    }

    /// A gateway lost the session's link. True if the session was current and is now
    /// disconnected: reported, or held for the app's `disconnect_grace_ms` (flap damping).
    pub async fn disconnect(
        &self,
        session: &SessionRef,
        reason: EventReason,
        gateway: Option<&str>,
    ) -> Result<bool, RegistryError> {
        let grace = self.apps.get(&session.app_id).map_or(Duration::ZERO, |app| app.disconnect_grace);
        self.lose_link(session, reason, gateway, grace).await
    }

    /// [`Registry::disconnect`] with the grace given: zero for what the registry finds itself (a
    /// re-attached gateway's snapshot, an expired lease), which comes after the fact, e.g. after a
    /// restart that dropped the holds.
    async fn lose_link(
        &self,
        session: &SessionRef,
        reason: EventReason,
        gateway: Option<&str>,
        grace: Duration,
    ) -> Result<bool, RegistryError> {
        check_session(session)?;
        if !matches!(reason, EventReason::LinkClose | EventReason::Timeout) {
            return Err(RegistryError::BadRequest("disconnect reason must be link_close or timeout".into()));
        }
        let grace_ms = u64::try_from(grace.as_millis()).unwrap_or(u64::MAX);
        let key = UserKey::new(&session.app_id, &session.user_id);
        let now = now_ms();
        let done = self
            .change_known_user(key, |state| {
                held_by(state, session, gateway)?;
                Ok(transition::disconnect(
                    state,
                    &session.device_id,
                    &session.session_id,
                    reason,
                    now,
                    grace_ms,
                ))
            })
            .await?;
        if done.is_some() && grace_ms > 0 {
            metrics::counter!(m::FLAP_DAMPING, "outcome" => "held").increment(1);
            self.graces.hold(session.clone(), grace);
        }
        Ok(done.is_some())
    }

    /// The grace of a held disconnect ended: reported now unless the device came back. True if
    /// it was reported.
    pub async fn end_grace(&self, session: &SessionRef) -> Result<bool, RegistryError> {
        let key = UserKey::new(&session.app_id, &session.user_id);
        let done = self
            .change_known_user(key, |state| {
                Ok(transition::end_grace(state, &session.device_id, &session.session_id))
            })
            .await?;
        if done.is_some() {
            metrics::counter!(m::FLAP_DAMPING, "outcome" => "reported").increment(1);
        }
        Ok(done.is_some())
    }

    /// Admin kick; returns the devices forced offline.
    pub async fn kick(
        &self,
        app_id: &str,
        user_id: &str,
        platforms: &[Platform],
    ) -> Result<Vec<KickedDevice>, RegistryError> {
        check_id("user_id", user_id)?;
        if self.apps.get(app_id).is_none() {
            return Err(RegistryError::UnknownApp(app_id.to_owned()));
        }
        let now = now_ms();
        let done = self
            .change_known_user(UserKey::new(app_id, user_id), |state| {
                Ok(transition::admin_kick(state, platforms, now))
            })
            .await?;
        Ok(done
            .map(|(change, _)| change.forced_offline.iter().map(Device::kicked).collect())
            .unwrap_or_default())
    }

    /// Sets or clears the user's custom status: by a device (`session`, held by `gateway`), or by
    /// the app backend. Returns the user's version after it, and whether it changed.
    pub async fn set_custom_status(
        &self,
        app_id: &str,
        user_id: &str,
        text: &str,
        session: Option<&SessionRef>,
        gateway: Option<&str>,
    ) -> Result<(u64, bool), RegistryError> {
        check_id("app_id", app_id)?;
        check_id("user_id", user_id)?;
        if !is_valid_text(text, MAX_CUSTOM_STATUS_LEN) {
            return Err(RegistryError::BadRequest(format!(
                "custom_status must be at most {MAX_CUSTOM_STATUS_LEN} bytes without control characters"
            )));
        }
        if let Some(session) = session {
            check_session(session)?;
            if session.app_id != app_id || session.user_id != user_id {
                return Err(RegistryError::BadRequest("the session is another user's".into()));
            }
        }
        if self.apps.get(app_id).is_none() {
            return Err(RegistryError::UnknownApp(app_id.to_owned()));
        }
        let now = now_ms();
        // Set when the plan ran and changed nothing: the version it found.
        let mut unchanged = None;
        let done = self
            .change_known_user(UserKey::new(app_id, user_id), |state| {
                let device = match session {
                    Some(session) => {
                        held_by(state, session, gateway)?;
                        let current = state.online_session(&session.device_id, &session.session_id);
                        Some(current.ok_or(RegistryError::UserOffline)?)
                    }
                    None => None,
                };
                let change = transition::set_custom_status(state, text, device, now)
                    .map_err(|transition::UserOffline| RegistryError::UserOffline)?;
                if change.is_none() {
                    unchanged = Some(state.version);
                }
                Ok(change)
            })
            .await?;
        match (done, unchanged) {
            (Some((change, _)), _) => Ok((change.next.version, true)),
            (None, Some(version)) => Ok((version, false)),
            // A user the registry never saw is offline.
            (None, None) => Err(RegistryError::UserOffline),
        }
    }

    /// Gateway `gateway_id` holds subscribers of these users: their changes are pushed to it from
    /// now on. Returns their current status, in request order.
    pub async fn watch(
        &self,
        gateway_id: &str,
        app_id: &str,
        users: &[WatchedUser],
    ) -> Result<Vec<UserStatus>, RegistryError> {
        self.check_watch(gateway_id, app_id, users)?;
        if !self.gateways.is_attached(gateway_id) {
            // Pushes need its link; a gateway re-asserts its interest whenever it attaches.
            return Err(RegistryError::GatewayNotAttached(gateway_id.to_owned()));
        }
        let number = self.gateways.number(gateway_id);
        let mut statuses = Vec::with_capacity(users.len());
        for watched in users {
            let (_, _, partition) = self.served(&UserKey::new(app_id, &watched.user_id))?;
            statuses.push(watch_in(&partition, app_id, watched, number).await);
        }
        Ok(statuses)
    }

    /// Gateway `gateway_id` holds no subscriber of these users any more (under the generations
    /// given: a newer Watch of the same user stays).
    pub async fn unwatch(
        &self,
        gateway_id: &str,
        app_id: &str,
        users: &[WatchedUser],
    ) -> Result<(), RegistryError> {
        self.check_watch(gateway_id, app_id, users)?;
        let number = self.gateways.number(gateway_id);
        for watched in users {
            // A partition served elsewhere now: its owner learnt the gateway's interest afresh.
            let Ok((_, _, partition)) = self.served(&UserKey::new(app_id, &watched.user_id)) else {
                continue;
            };
            let watcher = Watcher { gateway: number, generation: watched.generation };
            if let Some(cell) = partition.users.unwatch(app_id, &watched.user_id, watcher) {
                cell.lock().await.watchers.unwatch(watcher);
            }
        }
        Ok(())
    }

    fn check_watch(
        &self,
        gateway_id: &str,
        app_id: &str,
        users: &[WatchedUser],
    ) -> Result<(), RegistryError> {
        check_id("gateway_id", gateway_id)?;
        check_id("app_id", app_id)?;
        if users.is_empty() || users.len() > MAX_IDS_PER_QUERY {
            return Err(RegistryError::BadRequest(format!("users must hold 1 to {MAX_IDS_PER_QUERY} ids")));
        }
        for watched in users {
            check_id("user_id", &watched.user_id)?;
        }
        if self.apps.get(app_id).is_none() {
            return Err(RegistryError::UnknownApp(app_id.to_owned()));
        }
        Ok(())
    }

    /// A gateway (re-)attached with the users it watches: their interest is recorded for the
    /// partitions served here, and their current status is pushed, so that its subscribers
    /// converge whatever they missed (a registry restart, a take-over, a broken link).
    pub async fn rewatch(&self, gateway_id: &str, watching: &[WatchedApp]) {
        let number = self.gateways.number(gateway_id);
        for app in watching {
            for watched in &app.users {
                let Ok((_, _, partition)) = self.served(&UserKey::new(&app.app_id, &watched.user_id)) else {
                    continue;
                };
                let status = watch_in(&partition, &app.app_id, watched, number).await;
                let push = StatusPush {
                    app_id: app.app_id.clone(),
                    status: Some(status),
                    generation: watched.generation,
                };
                self.gateways.push(number, push);
            }
        }
    }

    /// The app's online counts in the partitions served here, and the feed position they reflect
    /// at least.
    pub fn stats(&self, app_id: &str) -> Result<(Counts, u64), RegistryError> {
        check_id("app_id", app_id)?;
        if self.apps.get(app_id).is_none() {
            return Err(RegistryError::UnknownApp(app_id.to_owned()));
        }
        let as_of_seq = self.log.last_seq(app_id);
        let mut total = Counts::default();
        for partition in self.partitions.held() {
            total.add(&partition.counts.of_app(app_id));
        }
        Ok((total, as_of_seq))
    }

    /// Every app's counts in the partitions held here, for the gauges.
    pub fn total_counts(&self) -> Counts {
        let mut total = Counts::default();
        for partition in self.partitions.held() {
            partition.counts.add_all_to(&mut total);
        }
        total
    }

    /// Devices stored as online on `gateway_id`, in the partitions served here.
    async fn online_sessions_on(&self, gateway_id: &str) -> Result<Vec<SessionRef>, RegistryError> {
        Ok(store::online_sessions_on(&self.pool, gateway_id, &self.ownership.serving()).await?)
    }

    /// Aligns the registry's partitions with a gateway's snapshot of live sessions: devices it no
    /// longer holds are disconnected (`link_close`); sessions the registry no longer knows as
    /// current are returned as kicks for the gateway. Unchanged devices produce no event. Sessions
    /// of partitions served elsewhere are left to their owner; pending logins (still in flight)
    /// are neither gone nor stale.
    pub async fn reconcile(
        &self,
        gateway_id: &str,
        live: &[LiveSession],
    ) -> Result<Vec<KickSession>, RegistryError> {
        let live_ids: HashSet<&str> = live.iter().map(|s| s.session_id.as_str()).collect();
        let gone = self
            .online_sessions_on(gateway_id)
            .await?
            .into_iter()
            .filter(|h| !live_ids.contains(h.session_id.as_str()));
        self.disconnect_all(gone.collect()).await?;
        let mut stale = Vec::new();
        for s in live.iter().filter(|s| !s.pending) {
            let Ok((_, _, partition)) = self.served(&UserKey::new(&s.app_id, &s.user_id)) else { continue };
            let current = match partition.users.get_user(&s.app_id, &s.user_id) {
                Some(cell) => cell
                    .lock()
                    .await
                    .online_session(&s.device_id, &s.session_id)
                    .is_some_and(|d| d.gateway_id == gateway_id),
                None => false,
            };
            if !current {
                stale.push(KickSession {
                    app_id: s.app_id.clone(),
                    user_id: s.user_id.clone(),
                    device_id: s.device_id.clone(),
                    session_id: s.session_id.clone(),
                    reason: KickReason::ReplacedByLogin.as_str().to_owned(),
                    by_platform: Platform::Unspecified as i32,
                    by_device_id: String::new(),
                });
            }
        }
        Ok(stale)
    }

    /// Disconnects (`link_close`) these sessions, many users at a time so that group commit
    /// batches them: a gateway's devices number in the tens of thousands, and one by one (a commit
    /// round trip each) a re-attach would take minutes. Returns how many were still online.
    async fn disconnect_all(&self, sessions: Vec<SessionRef>) -> Result<usize, RegistryError> {
        const IN_FLIGHT: usize = 256;
        let mut results =
            futures::stream::iter(sessions)
                .map(|held| async move {
                    self.lose_link(&held, EventReason::LinkClose, None, Duration::ZERO).await
                })
                .buffer_unordered(IN_FLIGHT);
        let mut disconnected = 0;
        while let Some(result) = results.next().await {
            if result? {
                disconnected += 1;
            }
        }
        Ok(disconnected)
    }

    /// Disconnects (`link_close`) every device of gateways whose lease ran out.
    pub async fn expire_gateways(&self) -> Result<usize, RegistryError> {
        let now = Instant::now();
        let mut disconnected = 0;
        for gateway_id in self.gateways.expired(now) {
            tracing::warn!(%gateway_id, "gateway lease expired; disconnecting its devices");
            disconnected += self.disconnect_all(self.online_sessions_on(&gateway_id).await?).await?;
            self.gateways.forget_if_expired(&gateway_id, now);
            metrics::counter!(m::GATEWAY_LEASES_EXPIRED).increment(1);
        }
        Ok(disconnected)
    }

    /// Logs out (`push_expired`) push_online devices past their app's TTL.
    pub async fn expire_push(&self) -> Result<usize, RegistryError> {
        let now = now_ms();
        let mut expired = 0;
        for candidate in store::expired_push_devices(&self.pool, now, &self.ownership.serving()).await? {
            let store::ExpiredPush { key, device_id, ttl_ms } = candidate;
            if self
                .change_known_user(key, |state| Ok(transition::expire_push(state, &device_id, ttl_ms, now)))
                .await?
                .is_some()
            {
                expired += 1;
            }
        }
        Ok(expired)
    }
}

/// Records gateway `number`'s interest in a user of `partition` (kept aside for a user never seen,
/// so that its first login is pushed) and returns the user's current status.
async fn watch_in(partition: &Partition, app_id: &str, watched: &WatchedUser, number: u32) -> UserStatus {
    let watcher = Watcher { gateway: number, generation: watched.generation };
    match partition.users.watch(app_id, &watched.user_id, watcher) {
        Some(cell) => {
            let mut state = cell.lock().await;
            state.watchers.watch(watcher);
            state.user_status(&watched.user_id)
        }
        None => UserState::default().user_status(&watched.user_id),
    }
}

/// Pushes the user's status to the gateways that watch it if what they see changed; forgets the
/// interest of gateways that are gone.
fn push_if_changed(gateways: &Gateways, user: &UserKey, state: &mut UserState, seen: &Visible) {
    if state.visible() == *seen {
        return;
    }
    let status = state.user_status(&user.user_id);
    state.watchers.retain(|watcher| {
        let push = StatusPush {
            app_id: user.app_id.clone(),
            status: Some(status.clone()),
            generation: watcher.generation,
        };
        gateways.push(watcher.gateway, push) != Pushed::Gone
    });
}

/// Shared handle used by the gRPC services and the sweeper.
pub type SharedRegistry = Arc<Registry>;

/// A gateway may end only the sessions it holds (`gateway` is `None` when callers are not
/// authenticated, or for the registry's own sweeps).
fn held_by(state: &UserState, session: &SessionRef, gateway: Option<&str>) -> Result<(), RegistryError> {
    match (gateway, state.online_session(&session.device_id, &session.session_id)) {
        (Some(gateway), Some(device)) if device.gateway_id != gateway => Err(RegistryError::NotYourSession),
        _ => Ok(()),
    }
}
