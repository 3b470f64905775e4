//! Internal authentication as the tests run it: on, with one secret for every test, and a token
//! per service as a deployment would mint them (`presence-cli internal-token`).

use presence_common::internal_auth::{CallerToken, InternalSecret, RegistryChannel, Role};
use presence_proto::v1::{
    event_feed_client::EventFeedClient, gateway_link_client::GatewayLinkClient,
    presence_registry_client::PresenceRegistryClient,
};
use tonic::{service::interceptor::InterceptedService, transport::Channel};

/// `REGISTRY_INTERNAL_SECRET` of every registry the tests start.
pub const INTERNAL_SECRET: &str = "testkit-internal-secret-not-for-production";

/// The `INTERNAL_TOKEN` of `id` acting as `role`.
pub fn internal_token(role: Role, id: &str) -> String {
    let secret = InternalSecret::new(INTERNAL_SECRET).expect("the test secret is long enough");
    secret.mint(role, id).expect("a valid caller id")
}

/// A channel to the registry at `url` that calls as `id` in `role`.
pub async fn channel_as(url: &str, role: Role, id: &str) -> RegistryChannel {
    let channel =
        Channel::from_shared(url.to_owned()).expect("a URL").connect().await.expect("registry reachable");
    let token = CallerToken::new(Some(&internal_token(role, id))).expect("a token fits a header");
    InterceptedService::new(channel, token)
}

/// The registry API as `id` in `role`.
pub async fn api_as(url: &str, role: Role, id: &str) -> PresenceRegistryClient<RegistryChannel> {
    PresenceRegistryClient::new(channel_as(url, role, id).await)
}

/// The event feed as `id` in `role` (facade: ReadEvents; notifier: Subscribe).
pub async fn feed_as(url: &str, role: Role, id: &str) -> EventFeedClient<RegistryChannel> {
    EventFeedClient::new(channel_as(url, role, id).await)
}

/// The gateway link as gateway `id`.
pub async fn link_as(url: &str, id: &str) -> GatewayLinkClient<RegistryChannel> {
    GatewayLinkClient::new(channel_as(url, Role::Gateway, id).await)
}
