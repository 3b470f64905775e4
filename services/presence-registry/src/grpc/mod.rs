//! The registry's gRPC services, thin over [`crate::registry::Registry`].

mod event_feed;
mod gateway_link;
mod presence_api;

pub use event_feed::EventFeedService;
pub use gateway_link::GatewayLinkService;
pub use presence_api::PresenceApi;
