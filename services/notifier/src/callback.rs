use bytes::Bytes;
use presence_proto::{json::PresenceEventJson, v1::PresenceEvent};

/// One event on its way to an app's callback URL: the JSON body is built once, signed per attempt.
#[derive(Debug, Clone)]
pub struct Callback {
    pub event_id: String,
    /// The event's unique id in `presence_events` (kept with a dead letter).
    pub feed_id: u64,
    pub app_id: String,
    pub user_id: String,
    pub body: Bytes,
    pub origin: Origin,
    /// The trace context of the change that made the event (empty when none): each attempt is a
    /// span of that trace, and the receiver gets it as `traceparent`.
    pub traceparent: String,
}

/// Where a callback came from, and under which hold of its partition: a callback whose partition
/// was lost or re-taken since is no longer this hold's to deliver.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Origin {
    /// Read from the partition's feed; settling it moves the partition's cursor.
    Feed { partition: u32, epoch: i64, position: u64 },
    /// A dead letter an admin asked to replay; it does not move any cursor.
    Replay { partition: u32, epoch: i64 },
}

impl Origin {
    pub fn partition(self) -> (u32, i64) {
        match self {
            Origin::Feed { partition, epoch, .. } | Origin::Replay { partition, epoch } => (partition, epoch),
        }
    }
}

impl Callback {
    /// The callback of a feed event, with the JSON of http-api.md, read under `epoch`.
    pub fn from_event(event: &PresenceEvent, epoch: i64) -> Result<Self, serde_json::Error> {
        let body = serde_json::to_vec(&PresenceEventJson::from(event))?;
        Ok(Self {
            event_id: event.event_id.clone(),
            feed_id: event.feed_id,
            app_id: event.app_id.clone(),
            user_id: event.user_id.clone(),
            body: Bytes::from(body),
            origin: Origin::Feed { partition: event.partition, epoch, position: event.position },
            traceparent: event.traceparent.clone(),
        })
    }
}
