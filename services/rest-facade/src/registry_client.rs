//! The facade's only way to the registries: each call goes to the registry that owns the user (a
//! batch query to each owner of its users, merged), with a deadline on every call. Channels
//! connect lazily, so the facade starts, and answers 503, while no registry is up.

use std::time::{Duration, Instant};

use presence_common::{
    internal_auth::RegistryChannel,
    registry_router::{RegistryRouter, may_reroute},
};
use presence_proto::query_request::UserIds;
use presence_proto::v1::{
    KickRequest, KickedDevice, Platform, PresenceEvent, QueryReply, ReadEventsRequest,
    SetCustomStatusRequest, StatsReply, StatsRequest, event_feed_client::EventFeedClient,
    presence_registry_client::PresenceRegistryClient,
};

use crate::error::ApiError;

/// Pause before a call refused as not the owner's is sent to the new owner.
const REROUTE_PAUSE: Duration = Duration::from_millis(50);

#[derive(Clone)]
pub struct RegistryClient {
    router: RegistryRouter,
    timeout: Duration,
}

impl RegistryClient {
    pub fn new(router: RegistryRouter, timeout: Duration) -> Self {
        Self { router, timeout }
    }

    /// A request carrying our deadline, so the registry can give up too.
    fn request<T>(&self, message: T, deadline: Instant) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        request
    }

    /// Runs one call under the deadline; a timeout is "unavailable", like a refused connection.
    async fn call<T>(
        &self,
        deadline: Instant,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, tonic::Status> {
        match tokio::time::timeout_at(deadline.into(), call).await {
            Ok(result) => Ok(result?.into_inner()),
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "registry call timed out");
                Err(tonic::Status::deadline_exceeded("registry call timed out"))
            }
        }
    }

    /// Presence of `user_ids`, each result named with its id (moved in, not copied).
    pub async fn query(
        &self,
        app_id: &str,
        user_ids: Vec<String>,
        detail: bool,
    ) -> Result<QueryReply, ApiError> {
        let mut reply = self.query_unnamed(app_id, &user_ids.iter().collect(), detail).await?;
        for (result, user_id) in reply.results.iter_mut().zip(user_ids) {
            result.user_id = user_id;
        }
        Ok(reply)
    }

    /// Presence of `user_ids`, in order, without `user_id` in the results: the caller holds them.
    pub async fn query_unnamed(
        &self,
        app_id: &str,
        user_ids: &UserIds,
        detail: bool,
    ) -> Result<QueryReply, ApiError> {
        let deadline = Instant::now() + self.timeout;
        self.router
            .query(app_id, user_ids, detail, deadline)
            .await
            .map_err(|status| ApiError::from_status(&status))
    }

    /// Kicks the user's devices on `platforms` (empty: all of them), at the user's registry.
    pub async fn kick(
        &self,
        app_id: &str,
        user_id: &str,
        platforms: &[Platform],
    ) -> Result<Vec<KickedDevice>, ApiError> {
        let kick = KickRequest {
            app_id: app_id.to_owned(),
            user_id: user_id.to_owned(),
            platforms: platforms.iter().map(|p| *p as i32).collect(),
        };
        let reply = self
            .on_owner(app_id, user_id, |mut registry, deadline| {
                let request = self.request(kick.clone(), deadline);
                async move { registry.kick(request).await }
            })
            .await?;
        Ok(reply.kicked_devices)
    }

    /// Sets (or, with `""`, clears) the user's custom status; returns the user's version.
    pub async fn set_custom_status(&self, app_id: &str, user_id: &str, text: &str) -> Result<u64, ApiError> {
        let set = SetCustomStatusRequest {
            app_id: app_id.to_owned(),
            user_id: user_id.to_owned(),
            custom_status: text.to_owned(),
            session: None,
        };
        let reply = self
            .on_owner(app_id, user_id, |mut registry, deadline| {
                let request = self.request(set.clone(), deadline);
                async move { registry.set_custom_status(request).await }
            })
            .await?;
        Ok(reply.user_version)
    }

    /// Runs `call` on the registry that owns the user; a call refused as not the owner's (the
    /// partition map moved) goes to the new owner, until the deadline.
    async fn on_owner<T, F, Fut>(&self, app_id: &str, user_id: &str, mut call: F) -> Result<T, ApiError>
    where
        F: FnMut(PresenceRegistryClient<RegistryChannel>, Instant) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let deadline = Instant::now() + self.timeout;
        loop {
            let attempt = match self.router.owner_of(app_id, user_id) {
                Some(addr) => {
                    let channel = self.router.channel(&addr).map_err(|_| ApiError::Unavailable)?;
                    self.call(deadline, call(PresenceRegistryClient::new(channel), deadline)).await
                }
                None if self.router.none_alive() => return Err(ApiError::Unavailable),
                None => Err(presence_common::registry_router::reroute_status("no owner yet".into())),
            };
            match attempt {
                Ok(reply) => return Ok(reply),
                Err(status) if may_reroute(&status) && Instant::now() + REROUTE_PAUSE < deadline => {
                    tokio::time::sleep(REROUTE_PAUSE).await;
                    self.router.refresh().await;
                }
                Err(status) => return Err(ApiError::from_status(&status)),
            }
        }
    }

    /// The app's online counts: every registry counts the partitions it serves; the parts are
    /// added up, and `as_of_seq` is the smallest part's.
    pub async fn stats(&self, app_id: &str) -> Result<StatsReply, ApiError> {
        let deadline = Instant::now() + self.timeout;
        let members = self.router.members();
        if members.is_empty() {
            return Err(ApiError::Unavailable);
        }
        let mut total = StatsReply { as_of_seq: u64::MAX, ..StatsReply::default() };
        for addr in &members {
            let channel = self.router.channel(addr).map_err(|_| ApiError::Unavailable)?;
            let request = self.request(StatsRequest { app_id: app_id.to_owned() }, deadline);
            let part = self
                .call(deadline, PresenceRegistryClient::new(channel).stats(request))
                .await
                .map_err(|status| ApiError::from_status(&status))?;
            total.online_users += part.online_users;
            total.push_online_users += part.push_online_users;
            for (platform, devices) in part.online_devices {
                *total.online_devices.entry(platform).or_default() += devices;
            }
            total.as_of_seq = total.as_of_seq.min(part.as_of_seq);
        }
        Ok(total)
    }

    /// A page of the app's feed; every registry reads it from Postgres.
    pub async fn read_events(
        &self,
        app_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<PresenceEvent>, ApiError> {
        let deadline = Instant::now() + self.timeout;
        let channel = self.router.channel(&self.router.any_member()).map_err(|_| ApiError::Unavailable)?;
        let request =
            self.request(ReadEventsRequest { app_id: app_id.to_owned(), after_seq, limit }, deadline);
        let reply = self.call(deadline, EventFeedClient::new(channel).read_events(request)).await;
        Ok(reply.map_err(|status| ApiError::from_status(&status))?.events)
    }
}
