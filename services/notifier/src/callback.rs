use bytes::Bytes;
use presence_proto::{json::PresenceEventJson, v1::PresenceEvent};

/// One event on its way to an app's callback URL: the JSON body is built once, signed per attempt.
#[derive(Debug, Clone)]
pub struct Callback {
    pub event_id: String,
    /// Position in the registry's global feed (what the cursor counts).
    pub feed_id: u64,
    pub app_id: String,
    pub user_id: String,
    pub body: Bytes,
    pub origin: Origin,
}

/// Where a callback came from; replays of dead letters do not move the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    Feed,
    Replay,
}

impl Callback {
    /// The callback of a feed event, with the JSON of http-api.md.
    pub fn from_event(event: &PresenceEvent) -> Result<Self, serde_json::Error> {
        let body = serde_json::to_vec(&PresenceEventJson::from(event))?;
        Ok(Self {
            event_id: event.event_id.clone(),
            feed_id: event.feed_id,
            app_id: event.app_id.clone(),
            user_id: event.user_id.clone(),
            body: Bytes::from(body),
            origin: Origin::Feed,
        })
    }
}
