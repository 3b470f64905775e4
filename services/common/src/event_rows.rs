//! Presence events as `presence_events` stores them: the columns to select and their decoding,
//! for every reader of the feed (the registry's event pages, the notifiers).

use presence_proto::v1::{
    EventAction, EventDevice, EventReason, KickedDevice, Platform, PresenceEvent, PresenceStatus,
};

/// The select list of a [`EventRow`], unqualified: `SELECT {EVENT_COLUMNS} FROM presence_events ...`.
pub const EVENT_COLUMNS: &str = "feed_id, app_id, seq, event_id::text AS event_id, user_id, user_version, \
     event_time_ms, action, reason, device_id, platform, client_version, \
     kicked_devices::text AS kicked_devices, user_status, coalesce(partition, 0) AS partition, \
     coalesce(position, 0) AS position, custom_status, coalesce(traceparent, '') AS traceparent";

/// One row of `presence_events`, selected with [`EVENT_COLUMNS`].
#[derive(sqlx::FromRow)]
pub struct EventRow {
    feed_id: i64,
    app_id: String,
    seq: i64,
    event_id: String,
    user_id: String,
    user_version: i64,
    event_time_ms: i64,
    action: String,
    reason: String,
    device_id: String,
    platform: String,
    client_version: String,
    kicked_devices: String,
    user_status: String,
    partition: i32,
    position: i64,
    custom_status: String,
    traceparent: String,
}

fn to_u64(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

/// Kicked devices as stored (`[{"device_id": "...", "platform": "ios"}]`).
pub fn kicked_to_json(kicked: &[KickedDevice]) -> String {
    let list: Vec<presence_proto::json::KickedDeviceJson> = kicked.iter().map(Into::into).collect();
    serde_json::to_string(&list).unwrap_or_else(|_| "[]".to_owned())
}

fn kicked_from_json(json: &str) -> Vec<KickedDevice> {
    let list: Vec<presence_proto::json::KickedDeviceJson> = serde_json::from_str(json).unwrap_or_default();
    list.into_iter()
        .map(|k| KickedDevice {
            platform: Platform::from_name(&k.platform).unwrap_or(Platform::Unspecified) as i32,
            device_id: k.device_id,
        })
        .collect()
}

impl EventRow {
    pub fn into_event(self) -> PresenceEvent {
        PresenceEvent {
            feed_id: to_u64(self.feed_id),
            event_id: self.event_id,
            seq: to_u64(self.seq),
            user_version: to_u64(self.user_version),
            app_id: self.app_id,
            event_time_ms: to_u64(self.event_time_ms),
            action: EventAction::from_name(&self.action).unwrap_or(EventAction::Unspecified) as i32,
            reason: EventReason::from_name(&self.reason).unwrap_or(EventReason::Unspecified) as i32,
            user_id: self.user_id,
            device: Some(EventDevice {
                device_id: self.device_id,
                platform: Platform::from_name(&self.platform).unwrap_or(Platform::Unspecified) as i32,
                client_version: self.client_version,
            }),
            kicked_devices: kicked_from_json(&self.kicked_devices),
            user_status: PresenceStatus::from_name(&self.user_status).unwrap_or(PresenceStatus::Unspecified)
                as i32,
            partition: u32::try_from(self.partition).unwrap_or(0),
            position: to_u64(self.position),
            custom_status: self.custom_status,
            traceparent: self.traceparent,
        }
    }
}
