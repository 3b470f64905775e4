//! How many users and devices are online, per app, kept as states change (never a scan): what
//! `GET /v1/stats` answers and the registry's gauges show.
//!
//! Each partition counts its own users, so a partition that moves to another registry takes its
//! counts along (they are rebuilt from the restored states there) and nothing is counted twice.

use std::collections::HashMap;

use parking_lot::Mutex;
use presence_proto::v1::{Platform, PresenceStatus};

use crate::user_state::UserState;

/// Platforms by their protobuf number (0 is unspecified, never counted).
const PLATFORMS: usize = Platform::MiniProgram as usize + 1;

/// One app's counts, or a difference of counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub online_users: i64,
    pub push_online_users: i64,
    /// Online devices by platform number.
    pub online_devices: [i64; PLATFORMS],
}

impl Counts {
    /// What one user adds to its app's counts.
    pub fn of(user: &UserState) -> Self {
        let mut counts = Self::default();
        match user.status() {
            PresenceStatus::Online => counts.online_users = 1,
            PresenceStatus::PushOnline => counts.push_online_users = 1,
            PresenceStatus::Offline | PresenceStatus::Unspecified => {}
        }
        for device in user.devices.iter().filter(|d| d.is_online()) {
            if let Some(slot) = counts.online_devices.get_mut(device.platform as usize) {
                *slot += 1;
            }
        }
        counts
    }

    /// `after - before`: what a change of one user does to its app's counts.
    pub fn change(before: &UserState, after: &UserState) -> Self {
        Self::of(after).minus(&Self::of(before))
    }

    pub fn is_zero(&self) -> bool {
        *self == Self::default()
    }

    pub fn add(&mut self, other: &Self) {
        self.online_users += other.online_users;
        self.push_online_users += other.push_online_users;
        for (mine, theirs) in self.online_devices.iter_mut().zip(other.online_devices) {
            *mine += theirs;
        }
    }

    fn minus(mut self, other: &Self) -> Self {
        self.online_users -= other.online_users;
        self.push_online_users -= other.push_online_users;
        for (mine, theirs) in self.online_devices.iter_mut().zip(other.online_devices) {
            *mine -= theirs;
        }
        self
    }

    /// Online devices by platform name, for platforms with any.
    pub fn devices_by_platform(&self) -> impl Iterator<Item = (&'static str, i64)> + '_ {
        self.online_devices.iter().enumerate().filter(|(_, n)| **n != 0).filter_map(|(number, n)| {
            let platform = Platform::try_from(i32::try_from(number).ok()?).ok()?;
            Some((platform.name()?, *n))
        })
    }
}

/// One partition's counts, per app.
#[derive(Default)]
pub struct PartitionCounts {
    apps: Mutex<HashMap<Box<str>, Counts>>,
}

impl PartitionCounts {
    pub fn add(&self, app_id: &str, counts: &Counts) {
        if counts.is_zero() {
            return;
        }
        let mut apps = self.apps.lock();
        match apps.get_mut(app_id) {
            Some(app) => app.add(counts),
            None => {
                apps.insert(app_id.into(), *counts);
            }
        }
    }

    pub fn of_app(&self, app_id: &str) -> Counts {
        self.apps.lock().get(app_id).copied().unwrap_or_default()
    }

    /// Every app's counts added into `total`.
    pub fn add_all_to(&self, total: &mut Counts) {
        for counts in self.apps.lock().values() {
            total.add(counts);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user_state::tests::device;
    use presence_proto::v1::DeviceStatus;

    #[test]
    fn a_change_moves_users_and_devices_between_counts() {
        let offline = UserState::default();
        let mut online = UserState::default();
        online.devices.push(device("a", Platform::Ios, DeviceStatus::Online, 1));
        online.devices.push(device("b", Platform::Ios, DeviceStatus::Online, 2));
        online.devices.push(device("c", Platform::Web, DeviceStatus::Online, 3));
        let mut push = UserState::default();
        push.devices.push(device("a", Platform::Ios, DeviceStatus::PushOnline, 1));

        let partition = PartitionCounts::default();
        partition.add("app", &Counts::change(&offline, &online));
        let counts = partition.of_app("app");
        assert_eq!((counts.online_users, counts.push_online_users), (1, 0));
        assert_eq!(counts.devices_by_platform().collect::<Vec<_>>(), [("ios", 2), ("web", 1)]);

        partition.add("app", &Counts::change(&online, &push));
        let counts = partition.of_app("app");
        assert_eq!((counts.online_users, counts.push_online_users), (0, 1));
        assert_eq!(counts.devices_by_platform().count(), 0, "a push_online device is not online");

        partition.add("app", &Counts::change(&push, &offline));
        assert!(partition.of_app("app").is_zero());
        assert!(partition.of_app("other").is_zero());
    }
}
