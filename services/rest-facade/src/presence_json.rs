//! The presence shapes of http-api.md, serialized straight from the registry's `UserPresence`
//! (borrowed: a 500-user answer copies no string on its way to JSON).

use axum::{
    http::{HeaderValue, header},
    response::{IntoResponse, Response},
};
use presence_proto::v1::{DevicePresence, EventReason, Platform, UserPresence};
use serde::Serialize;
use utoipa::ToSchema;

/// One user's presence.
#[derive(Debug, Serialize, ToSchema)]
pub struct UserPresenceJson<'a> {
    pub user_id: &'a str,
    /// `online` (some device connected), `push_online` (none connected, but a push-enabled device
    /// disconnected without logging out) or `offline`.
    #[schema(example = "online")]
    pub status: &'static str,
    /// The user's devices; only when `detail` was asked for (always for a single user).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub devices: Option<Vec<DevicePresenceJson<'a>>>,
    /// When the user was last seen going offline (unix ms), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_seen_ms: Option<u64>,
    /// Reason of the user's last disconnect or logout (`link_close`, `timeout`, `unregister`,
    /// `admin_kick`, `push_expired`), when known.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_reason: Option<&'static str>,
    /// The user's custom status (set by a device or by `PUT /v1/users/{user_id}/status`); absent
    /// when none. Cleared when the user goes offline.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub custom_status: &'a str,
    /// The user's event counter (as `user_version` in events); 0 for a user never seen.
    pub user_version: u64,
}

/// One device of a user.
#[derive(Debug, Serialize, ToSchema)]
pub struct DevicePresenceJson<'a> {
    pub device_id: &'a str,
    /// `ios`, `android`, `windows`, `mac`, `linux`, `web`, `ipad`, `android_pad` or `mini_program`.
    #[schema(example = "ios")]
    pub platform: &'static str,
    /// `online` or `push_online`.
    pub status: &'static str,
    /// Since when the device is in this status (unix ms).
    pub since_ms: u64,
    pub client_version: &'a str,
    /// Whether the device registered for push (it stays `push_online` after a disconnect).
    pub push_enabled: bool,
}

impl<'a> From<&'a DevicePresence> for DevicePresenceJson<'a> {
    fn from(d: &'a DevicePresence) -> Self {
        Self {
            device_id: &d.device_id,
            platform: Platform::try_from(d.platform).ok().and_then(Platform::name).unwrap_or("unknown"),
            status: d.status().name().unwrap_or("online"),
            since_ms: d.since_ms,
            client_version: &d.client_version,
            push_enabled: d.push_enabled,
        }
    }
}

impl<'a> UserPresenceJson<'a> {
    /// `devices` is listed only when `detail` (the registry sends none otherwise anyway).
    pub fn new(p: &'a UserPresence, detail: bool) -> Self {
        let last_reason = match p.last_reason() {
            EventReason::Unspecified => None,
            reason => reason.name(),
        };
        Self {
            user_id: &p.user_id,
            status: p.status().name().unwrap_or("offline"),
            devices: detail.then(|| p.devices.iter().map(DevicePresenceJson::from).collect()),
            last_seen_ms: p.last_seen_ms,
            last_reason,
            custom_status: &p.custom_status,
            user_version: p.user_version,
        }
    }

    /// Appends this result's JSON to `out`: the bytes serde writes (a test holds the two
    /// equal), without escaping field names and fixed values on every one of 500 results.
    pub fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"user_id\":");
        write_json_str(out, self.user_id);
        out.extend_from_slice(b",\"status\":\"");
        out.extend_from_slice(self.status.as_bytes());
        out.push(b'"');
        if let Some(devices) = &self.devices {
            out.extend_from_slice(b",\"devices\":[");
            for (i, device) in devices.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                device.write_json(out);
            }
            out.push(b']');
        }
        if let Some(last_seen_ms) = self.last_seen_ms {
            out.extend_from_slice(b",\"last_seen_ms\":");
            out.extend_from_slice(itoa::Buffer::new().format(last_seen_ms).as_bytes());
        }
        if let Some(last_reason) = self.last_reason {
            out.extend_from_slice(b",\"last_reason\":\"");
            out.extend_from_slice(last_reason.as_bytes());
            out.push(b'"');
        }
        if !self.custom_status.is_empty() {
            out.extend_from_slice(b",\"custom_status\":");
            write_json_str(out, self.custom_status);
        }
        out.extend_from_slice(b",\"user_version\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.user_version).as_bytes());
        out.push(b'}');
    }
}

impl DevicePresenceJson<'_> {
    fn write_json(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(b"{\"device_id\":");
        write_json_str(out, self.device_id);
        out.extend_from_slice(b",\"platform\":\"");
        out.extend_from_slice(self.platform.as_bytes());
        out.extend_from_slice(b"\",\"status\":\"");
        out.extend_from_slice(self.status.as_bytes());
        out.extend_from_slice(b"\",\"since_ms\":");
        out.extend_from_slice(itoa::Buffer::new().format(self.since_ms).as_bytes());
        out.extend_from_slice(b",\"client_version\":");
        write_json_str(out, self.client_version);
        out.extend_from_slice(if self.push_enabled {
            b",\"push_enabled\":true}"
        } else {
            b",\"push_enabled\":false}"
        });
    }
}

/// `value` as a JSON string, escaped as serde_json escapes it.
fn write_json_str(out: &mut Vec<u8>, value: &str) {
    out.push(b'"');
    let mut plain = 0;
    for (i, byte) in value.bytes().enumerate() {
        let escape: &[u8] = match byte {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0x08 => b"\\b",
            0x0c => b"\\f",
            0..0x20 => &[b'\\', b'u', b'0', b'0', HEX[usize::from(byte >> 4)], HEX[usize::from(byte & 0xf)]],
            _ => continue,
        };
        out.extend_from_slice(&value.as_bytes()[plain..i]);
        out.extend_from_slice(escape);
        plain = i + 1;
    }
    out.extend_from_slice(&value.as_bytes()[plain..]);
    out.push(b'"');
}

const HEX: [u8; 16] = *b"0123456789abcdef";

/// Bytes of JSON a result takes without devices, about: sizes the output buffer once.
pub const RESULT_JSON_BYTES: usize = 128;

/// A `200` with `value` as JSON, written into a buffer of about `size_hint` bytes (axum's `Json`
/// starts at 128 bytes and grows by copying: a dozen copies for a 500-user answer).
pub fn json_response<T: Serialize>(value: &T, size_hint: usize) -> Response {
    let mut body = Vec::with_capacity(size_hint);
    match serde_json::to_writer(&mut body, value) {
        Ok(()) => json_bytes_response(body),
        Err(err) => {
            tracing::error!(%err, "serializing a response failed");
            crate::error::ApiError::Internal.into_response()
        }
    }
}

/// A `200` with `body`, which is JSON.
pub fn json_bytes_response(body: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response()
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
