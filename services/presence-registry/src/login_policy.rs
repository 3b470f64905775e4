//! Which devices a new login forces offline, under an app's policy.
//!
//! Every policy is a set of platform groups, each with a maximum of devices:
//! `single_device` is one group of all platforms with max 1, `one_per_platform` one group per
//! platform with max 1, and `groups` what the admin wrote, with every platform left out being a
//! group of its own with max 1. A login that would over-fill its group forces the oldest devices
//! of that group offline (online and push_online alike: both are reachable).

use presence_common::{GroupSpec, PolicyMode};
use presence_proto::v1::Platform;

use crate::user_state::Device;

/// The platforms of one group.
enum Members<'a> {
    All,
    Only(Platform),
    Listed(&'a [Platform]),
}

impl Members<'_> {
    fn contains(&self, platform: Platform) -> bool {
        match self {
            Members::All => true,
            Members::Only(p) => *p == platform,
            Members::Listed(list) => list.contains(&platform),
        }
    }
}

/// The group `platform` belongs to, and its maximum of devices.
fn group_of(mode: &PolicyMode, platform: Platform) -> (Members<'_>, usize) {
    match mode {
        PolicyMode::SingleDevice => (Members::All, 1),
        PolicyMode::OnePerPlatform => (Members::Only(platform), 1),
        PolicyMode::Groups(groups) => groups
            .iter()
            .find(|g: &&GroupSpec| g.platforms.contains(&platform))
            .map_or((Members::Only(platform), 1), |g| (Members::Listed(&g.platforms), g.max_devices)),
    }
}

/// Indices into `others` (the user's devices other than the one logging in) to force offline.
pub fn devices_to_kick(mode: &PolicyMode, others: &[Device], platform: Platform) -> Vec<usize> {
    let (members, max) = group_of(mode, platform);
    let mut in_group: Vec<usize> =
        others.iter().enumerate().filter(|(_, d)| members.contains(d.platform)).map(|(i, _)| i).collect();
    // The new device takes one place; the oldest give theirs up.
    let excess = (in_group.len() + 1).saturating_sub(max);
    in_group.sort_by(|&a, &b| {
        (others[a].since_ms, &others[a].device_id).cmp(&(others[b].since_ms, &others[b].device_id))
    });
    in_group.truncate(excess);
    in_group
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user_state::tests::device;
    use presence_proto::v1::DeviceStatus::{Online, PushOnline};

    fn kicked(mode: &PolicyMode, others: &[Device], platform: Platform) -> Vec<String> {
        let mut ids: Vec<String> = devices_to_kick(mode, others, platform)
            .into_iter()
            .map(|i| others[i].device_id.clone())
            .collect();
        ids.sort();
        ids
    }

    #[test]
    fn single_device_forces_every_other_device_offline() {
        let others = [device("a", Platform::Ios, Online, 1), device("b", Platform::Mac, PushOnline, 2)];
        assert_eq!(kicked(&PolicyMode::SingleDevice, &others, Platform::Web), ["a", "b"]);
        assert!(kicked(&PolicyMode::SingleDevice, &[], Platform::Web).is_empty());
    }

    #[test]
    fn one_per_platform_forces_only_the_same_platform_offline() {
        let others = [device("a", Platform::Ios, Online, 1), device("b", Platform::Mac, Online, 2)];
        assert_eq!(kicked(&PolicyMode::OnePerPlatform, &others, Platform::Ios), ["a"]);
        assert!(kicked(&PolicyMode::OnePerPlatform, &others, Platform::Android).is_empty());
    }

    fn pc_and_mobile() -> PolicyMode {
        PolicyMode::Groups(vec![
            GroupSpec {
                name: "pc".into(),
                platforms: vec![Platform::Windows, Platform::Mac, Platform::Linux],
                max_devices: 1,
            },
            GroupSpec {
                name: "mobile".into(),
                platforms: vec![Platform::Ios, Platform::Android, Platform::Ipad],
                max_devices: 2,
            },
        ])
    }

    #[test]
    fn groups_force_the_oldest_of_an_over_full_group_offline() {
        let mode = pc_and_mobile();
        let others = [
            device("win", Platform::Windows, Online, 1),
            device("phone", Platform::Ios, Online, 5),
            device("tablet", Platform::Ipad, Online, 3),
        ];
        assert_eq!(kicked(&mode, &others, Platform::Linux), ["win"]);
        // Mobile holds 2: a third mobile device evicts the oldest, the tablet.
        assert_eq!(kicked(&mode, &others, Platform::Android), ["tablet"]);
    }

    #[test]
    fn platforms_outside_every_group_are_one_per_platform() {
        let mode = pc_and_mobile();
        let others = [device("w1", Platform::Web, Online, 1), device("win", Platform::Windows, Online, 2)];
        assert_eq!(kicked(&mode, &others, Platform::Web), ["w1"]);
        assert!(kicked(&mode, &others, Platform::MiniProgram).is_empty());
    }
}
