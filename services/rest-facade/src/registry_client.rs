//! The facade's only way to the registry: a lazily connecting channel (the facade starts and
//! answers 503 while the registry is down) and a deadline on every call.

use std::time::Duration;

use presence_common::{
    grpc_tls::{ClientTls, GrpcTlsError},
    internal_auth::{CallerToken, RegistryChannel},
};
use presence_proto::v1::{
    KickRequest, KickedDevice, Platform, PresenceEvent, QueryReply, QueryRequest, ReadEventsRequest,
    event_feed_client::EventFeedClient, presence_registry_client::PresenceRegistryClient,
};
use tonic::service::interceptor::InterceptedService;

use crate::error::ApiError;

#[derive(Clone)]
pub struct RegistryClient {
    presence: PresenceRegistryClient<RegistryChannel>,
    feed: EventFeedClient<RegistryChannel>,
    timeout: Duration,
}

impl RegistryClient {
    /// Does not connect: the first call does, and a failed connection is retried on later calls.
    pub fn connect_lazy(
        url: &str,
        tls: &ClientTls,
        token: CallerToken,
        timeout: Duration,
    ) -> Result<Self, GrpcTlsError> {
        let channel = tls
            .endpoint(url)?
            .connect_timeout(timeout.min(Duration::from_secs(3)))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(10))
            .keep_alive_timeout(Duration::from_secs(5))
            .connect_lazy();
        let channel = InterceptedService::new(channel, token);
        Ok(Self {
            presence: PresenceRegistryClient::new(channel.clone()),
            feed: EventFeedClient::new(channel),
            timeout,
        })
    }

    /// A request carrying our deadline, so the registry can give up too.
    fn request<T>(&self, message: T) -> tonic::Request<T> {
        let mut request = tonic::Request::new(message);
        request.set_timeout(self.timeout);
        request
    }

    /// Runs one call under the deadline; a timeout is "unavailable", like a refused connection.
    async fn call<T>(
        &self,
        call: impl Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    ) -> Result<T, ApiError> {
        match tokio::time::timeout(self.timeout, call).await {
            Ok(Ok(response)) => Ok(response.into_inner()),
            Ok(Err(status)) => Err(ApiError::from_status(&status)),
            Err(_) => {
                tracing::warn!(timeout = ?self.timeout, "registry call timed out");
                Err(ApiError::Unavailable)
            }
        }
    }

    pub async fn query(
        &self,
        app_id: &str,
        user_ids: Vec<String>,
        detail: bool,
    ) -> Result<QueryReply, ApiError> {
        let request = self.request(QueryRequest { app_id: app_id.to_owned(), user_ids, detail });
        self.call(self.presence.clone().query(request)).await
    }

    /// Kicks the user's devices on `platforms` (empty: all of them).
    pub async fn kick(
        &self,
        app_id: &str,
        user_id: &str,
        platforms: &[Platform],
    ) -> Result<Vec<KickedDevice>, ApiError> {
        let request = self.request(KickRequest {
            app_id: app_id.to_owned(),
            user_id: user_id.to_owned(),
            platforms: platforms.iter().map(|p| *p as i32).collect(),
        });
        Ok(self.call(self.presence.clone().kick(request)).await?.kicked_devices)
    }

    pub async fn read_events(
        &self,
        app_id: &str,
        after_seq: u64,
        limit: u32,
    ) -> Result<Vec<PresenceEvent>, ApiError> {
        let request = self.request(ReadEventsRequest { app_id: app_id.to_owned(), after_seq, limit });
        Ok(self.call(self.feed.clone().read_events(request)).await?.events)
    }
}
