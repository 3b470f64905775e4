//! The presence shapes of http-api.md, built from the registry's `UserPresence`.

use presence_proto::v1::{DevicePresence, EventReason, Platform, UserPresence};
use serde::Serialize;
use utoipa::ToSchema;

/// One user's presence.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPresenceJson {
    pub user_id: String,
    /// `online` (some device connected), `push_online` (none connected, but a push-enabled device
    /// disconnected without logging out) or `offline`.
    #[schema(example = "online")]
    pub status: String,
    /// The user's devices; only when `detail` was asked for (always for a single user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DevicePresenceJson>>,
    /// When the user was last seen going offline (unix ms), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    /// Reason of the user's last disconnect or logout (`link_close`, `timeout`, `unregister`,
    /// `admin_kick`, `push_expired`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<String>,
    /// The user's custom status (set by a device or by `PUT /v1/users/{user_id}/status`); absent
    /// when none. Cleared when the user goes offline.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub custom_status: String,
    /// The user's event counter (as `user_version` in events); 0 for a user never seen.
    pub user_version: u64,
}

/// One device of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct DevicePresenceJson {
    pub device_id: String,
    /// `ios`, `android`, `windows`, `mac`, `linux`, `web`, `ipad`, `android_pad` or `mini_program`.
    #[schema(example = "ios")]
    pub platform: String,
    /// `online` or `push_online`.
    pub status: String,
    /// Since when the device is in this status (unix ms).
    pub since_ms: u64,
    pub client_version: String,
    /// Whether the device registered for push (it stays `push_online` after a disconnect).
    pub push_enabled: bool,
}

impl From<&DevicePresence> for DevicePresenceJson {
    fn from(d: &DevicePresence) -> Self {
        Self {
            device_id: d.device_id.clone(),
            platform: Platform::try_from(d.platform)
                .ok()
                .and_then(Platform::name)
                .unwrap_or("unknown")
                .to_owned(),
            status: d.status().name().unwrap_or("online").to_owned(),
            since_ms: d.since_ms,
            client_version: d.client_version.clone(),
            push_enabled: d.push_enabled,
        }
    }
}

impl UserPresenceJson {
    /// `devices` is listed only when `detail` (the registry sends none otherwise anyway).
    pub fn new(p: &UserPresence, detail: bool) -> Self {
        let last_reason = match p.last_reason() {
            EventReason::Unspecified => None,
            reason => reason.name().map(str::to_owned),
        };
        Self {
            user_id: p.user_id.clone(),
            status: p.status().name().unwrap_or("offline").to_owned(),
            devices: detail.then(|| p.devices.iter().map(DevicePresenceJson::from).collect()),
            last_seen_ms: p.last_seen_ms,
            last_reason,
            custom_status: p.custom_status.clone(),
            user_version: p.user_version,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use presence_proto::v1::{DeviceStatus, PresenceStatus};

    #[test]
    fn presence_uses_contract_names() {
        let p = UserPresence {
            user_id: "u1".into(),
            status: PresenceStatus::PushOnline as i32,
            devices: vec![DevicePresence {
                device_id: "d1".into(),
                platform: Platform::AndroidPad as i32,
                status: DeviceStatus::PushOnline as i32,
                since_ms: 5,
                client_version: "1.0".into(),
                push_enabled: true,
            }],
            last_seen_ms: Some(5),
            last_reason: EventReason::LinkClose as i32,
            custom_status: "away".into(),
            user_version: 9,
        };
        let json = serde_json::to_value(UserPresenceJson::new(&p, true)).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"user_id": "u1", "status": "push_online", "last_seen_ms": 5,
                "last_reason": "link_close", "custom_status": "away", "user_version": 9, "devices": [{"device_id": "d1", "platform": "android_pad",
                "status": "push_online", "since_ms": 5, "client_version": "1.0", "push_enabled": true}]})
        );
        let unknown = UserPresence { user_id: "u2".into(), ..Default::default() };
        assert_eq!(
            serde_json::to_value(UserPresenceJson::new(&unknown, false)).unwrap(),
            serde_json::json!({"user_id": "u2", "status": "offline", "user_version": 0})
        );
    }
}
