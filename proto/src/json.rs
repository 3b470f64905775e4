//! JSON shapes of the app-backend contract (`docs/http-api.md`): the presence event
//! that callbacks POST and `GET /v1/events` returns. Shared so the notifier and the REST facade
//! cannot drift apart.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use crate::v1;

/// A device as events name it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct EventDeviceJson {
    pub device_id: String,
    pub platform: String,
    pub client_version: String,
}

/// A device forced offline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KickedDeviceJson {
    pub device_id: String,
    pub platform: String,
}

/// One presence event, exactly as http-api.md specifies it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PresenceEventJson {
    pub event_id: String,
    pub seq: u64,
    pub user_version: u64,
    pub app_id: String,
    pub event_time_ms: u64,
    /// `login`, `logout`, `disconnect` or `status` (a custom status change).
    pub action: String,
    /// `register`, `unregister`, `link_close`, `timeout`, `admin_kick`, `push_expired` or
    /// `custom_status`.
    pub reason: String,
    pub user_id: String,
    pub device: EventDeviceJson,
    pub kicked_devices: Vec<KickedDeviceJson>,
    /// `online`, `push_online` or `offline`.
    pub user_status: String,
    /// The user's custom status after the event; absent when none.
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub custom_status: String,
}

fn platform_name(raw: i32) -> String {
    v1::Platform::try_from(raw).ok().and_then(v1::Platform::name).unwrap_or("unknown").to_owned()
}

impl From<&v1::KickedDevice> for KickedDeviceJson {
    fn from(k: &v1::KickedDevice) -> Self {
        Self { device_id: k.device_id.clone(), platform: platform_name(k.platform) }
    }
}

impl From<&v1::PresenceEvent> for PresenceEventJson {
    fn from(e: &v1::PresenceEvent) -> Self {
        let device = e.device.clone().unwrap_or_default();
        Self {
            event_id: e.event_id.clone(),
            seq: e.seq,
            user_version: e.user_version,
            app_id: e.app_id.clone(),
            event_time_ms: e.event_time_ms,
            action: e.action().name().unwrap_or("unknown").to_owned(),
            reason: e.reason().name().unwrap_or("unknown").to_owned(),
            user_id: e.user_id.clone(),
            device: EventDeviceJson {
                device_id: device.device_id,
                platform: platform_name(device.platform),
                client_version: device.client_version,
            },
            kicked_devices: e.kicked_devices.iter().map(KickedDeviceJson::from).collect(),
            user_status: e.user_status().name().unwrap_or("offline").to_owned(),
            custom_status: e.custom_status.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn event_serialises_with_contract_names() {
        let event = v1::PresenceEvent {
            feed_id: 9,
            partition: 3,
            position: 11,
            event_id: "e1".into(),
            seq: 42,
            user_version: 7,
            app_id: "default".into(),
            event_time_ms: 1_700_000_000_000,
            action: v1::EventAction::Login as i32,
            reason: v1::EventReason::Register as i32,
            user_id: "u1".into(),
            device: Some(v1::EventDevice {
                device_id: "d1".into(),
                platform: v1::Platform::Ios as i32,
                client_version: "1.0".into(),
            }),
            kicked_devices: vec![v1::KickedDevice {
                platform: v1::Platform::AndroidPad as i32,
                device_id: "d0".into(),
            }],
            user_status: v1::PresenceStatus::Online as i32,
            custom_status: String::new(),
            // Internal: never in the JSON (the callback carries it as a header).
            traceparent: "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01".into(),
        };
        let json = serde_json::to_value(PresenceEventJson::from(&event)).expect("serialisable");
        assert_eq!(
            json,
            serde_json::json!({
                "event_id": "e1", "seq": 42, "user_version": 7, "app_id": "default",
                "event_time_ms": 1_700_000_000_000u64, "action": "login", "reason": "register",
                "user_id": "u1",
                "device": {"device_id": "d1", "platform": "ios", "client_version": "1.0"},
                "kicked_devices": [{"device_id": "d0", "platform": "android_pad"}],
                "user_status": "online"
            })
        );

        // A custom status change, with the status it set.
        let status = v1::PresenceEvent {
            action: v1::EventAction::Status as i32,
            reason: v1::EventReason::CustomStatus as i32,
            custom_status: "in a meeting".into(),
            ..event
        };
        let json = serde_json::to_value(PresenceEventJson::from(&status)).expect("serialisable");
        assert_eq!(
            (&json["action"], &json["reason"], &json["custom_status"]),
            (&"status".into(), &"custom_status".into(), &"in a meeting".into())
        );
    }
}
