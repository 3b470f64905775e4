//! What the registry knows of one user: devices that are online or push_online, and the
//! bookkeeping that outlives them.

use presence_proto::v1::{
    DevicePresence, DeviceStatus, EventDevice, EventReason, KickedDevice, Platform, PresenceStatus,
    UserPresence, UserStatus,
};

use crate::watchers::Watchers;

/// A device that is online or push_online. Offline devices are forgotten.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Device {
    pub device_id: String,
    pub platform: Platform,
    pub status: DeviceStatus,
    pub session_id: String,
    /// The gateway that holds (or last held) the device's connection.
    pub gateway_id: String,
    pub since_ms: u64,
    pub client_version: String,
    pub push_enabled: bool,
    pub peer_addr: String,
    pub disconnected_at_ms: Option<u64>,
    /// Set while the device's disconnect is held (flap damping): it still shows online, but its
    /// session is gone. In memory only: nothing is held across a restart.
    pub lost: Option<LostLink>,
}

/// When and why a held device's link was lost: its disconnect is reported with these when the
/// app's grace ends, unless the device logs in again first.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LostLink {
    pub at_ms: u64,
    pub reason: EventReason,
}

impl Device {
    /// Shows online: connected, or its lost link is held.
    pub fn is_online(&self) -> bool {
        self.status == DeviceStatus::Online
    }

    /// Online with a live session on its gateway.
    pub fn is_connected(&self) -> bool {
        self.is_online() && self.lost.is_none()
    }

    pub fn kicked(&self) -> KickedDevice {
        KickedDevice { platform: self.platform as i32, device_id: self.device_id.clone() }
    }

    pub fn event_device(&self) -> EventDevice {
        EventDevice {
            device_id: self.device_id.clone(),
            platform: self.platform as i32,
            client_version: self.client_version.clone(),
        }
    }

    fn presence(&self) -> DevicePresence {
        DevicePresence {
            device_id: self.device_id.clone(),
            platform: self.platform as i32,
            status: self.status as i32,
            since_ms: self.since_ms,
            client_version: self.client_version.clone(),
            push_enabled: self.push_enabled,
        }
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserState {
    pub devices: Vec<Device>,
    /// `user_version` of the user's latest event; the next event gets `version + 1`.
    pub version: u64,
    pub last_seen_ms: Option<u64>,
    pub last_reason: Option<EventReason>,
    /// Shared by the user's devices; kept while the user is online or push_online.
    pub custom_status: String,
    /// Gateways that hold subscribers of this user. In memory only: gateways re-assert them when
    /// they attach.
    pub watchers: Watchers,
    /// The app feed `seq` of the latest event applied here (0: none since this process loaded the
    /// user), so that a query can tell whether it reads a change newer than its `as_of_seq`.
    pub applied_seq: u64,
}

/// What subscribers see of a user: a change of any of it is pushed to them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Visible {
    pub status: PresenceStatus,
    /// Platforms with an online device, sorted, each once.
    pub platforms: Vec<i32>,
    pub custom_status: String,
}

impl UserState {
    /// online if any device is connected, else push_online if a push device is reachable, else offline.
    pub fn status(&self) -> PresenceStatus {
        status_of(&self.devices)
    }

    pub fn device(&self, device_id: &str) -> Option<&Device> {
        self.devices.iter().find(|d| d.device_id == device_id)
    }

    /// The device if `session_id` is its current, connected session.
    pub fn online_session(&self, device_id: &str, session_id: &str) -> Option<&Device> {
        self.device(device_id).filter(|d| d.session_id == session_id && d.is_connected())
    }

    pub fn presence(&self, user_id: &str, detail: bool) -> UserPresence {
        UserPresence {
            user_id: user_id.to_owned(),
            status: self.status() as i32,
            devices: if detail { self.devices.iter().map(Device::presence).collect() } else { Vec::new() },
            last_seen_ms: self.last_seen_ms,
            last_reason: self.last_reason.unwrap_or(EventReason::Unspecified) as i32,
            custom_status: self.custom_status.clone(),
            user_version: self.version,
        }
    }

    pub fn visible(&self) -> Visible {
        let mut platforms: Vec<i32> =
            self.devices.iter().filter(|d| d.is_online()).map(|d| d.platform as i32).collect();
        platforms.sort_unstable();
        platforms.dedup();
        Visible { status: self.status(), platforms, custom_status: self.custom_status.clone() }
    }

    /// The user as subscribers see it (`StatusChanged`, `SubscribeOk`).
    pub fn user_status(&self, user_id: &str) -> UserStatus {
        let Visible { status, platforms, custom_status } = self.visible();
        UserStatus {
            user_id: user_id.to_owned(),
            status: status.name().unwrap_or("offline").to_owned(),
            platforms,
            custom_status,
            user_version: self.version,
            changed_at_ms: self.last_seen_ms.unwrap_or(0),
        }
    }
}

/// The user status a set of devices amounts to.
pub fn status_of(devices: &[Device]) -> PresenceStatus {
    if devices.iter().any(Device::is_online) {
        PresenceStatus::Online
    } else if devices.iter().any(|d| d.status == DeviceStatus::PushOnline) {
        PresenceStatus::PushOnline
    } else {
        PresenceStatus::Offline
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub fn device(id: &str, platform: Platform, status: DeviceStatus, since_ms: u64) -> Device {
        Device {
            device_id: id.into(),
            platform,
            status,
            session_id: format!("s-{id}"),
            gateway_id: "gw".into(),
            since_ms,
            client_version: "1.0".into(),
            push_enabled: status == DeviceStatus::PushOnline,
            peer_addr: "127.0.0.1:1".into(),
            disconnected_at_ms: None,
            lost: None,
        }
    }

    #[test]
    fn status_prefers_online_over_push_online() {
        let mut user = UserState::default();
        assert_eq!(user.status(), PresenceStatus::Offline);
        user.devices.push(device("a", Platform::Ios, DeviceStatus::PushOnline, 1));
        assert_eq!(user.status(), PresenceStatus::PushOnline);
        user.devices.push(device("b", Platform::Mac, DeviceStatus::Online, 2));
        assert_eq!(user.status(), PresenceStatus::Online);
    }

    #[test]
    fn presence_lists_devices_only_with_detail() {
        let mut user = UserState::default();
        user.devices.push(device("a", Platform::Ios, DeviceStatus::Online, 1));
        assert!(user.presence("u", false).devices.is_empty());
        assert_eq!(user.presence("u", true).devices.len(), 1);
    }

    #[test]
    fn subscribers_see_online_platforms_sorted_once() {
        let mut user = UserState::default();
        user.devices.push(device("a", Platform::Mac, DeviceStatus::Online, 1));
        user.devices.push(device("b", Platform::Ios, DeviceStatus::Online, 2));
        user.devices.push(device("c", Platform::Mac, DeviceStatus::Online, 3));
        user.devices.push(device("d", Platform::Android, DeviceStatus::PushOnline, 4));
        user.version = 4;
        let status = user.user_status("u");
        assert_eq!(status.platforms, [Platform::Ios as i32, Platform::Mac as i32]);
        assert_eq!((status.status.as_str(), status.user_version), ("online", 4));
    }
}
