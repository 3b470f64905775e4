//! Every way a user's state changes, as pure functions: the next state, its events and rows, and
//! the kicks to send once it is durable. The registry runs them under the user's lock.

use presence_common::PolicyMode;
use presence_proto::{
    codes::KickReason,
    v1::{DeviceStatus, EventAction, EventDevice, EventReason, Platform, PresenceStatus},
};

use crate::{
    event_log::{Mutation, NewEvent, UserRow},
    login_policy,
    user_state::{Device, LostLink, UserState, status_of},
};

/// A session to close on its gateway once the change is durable.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Kick {
    pub device: Device,
    pub reason: KickReason,
    pub by_platform: Platform,
    pub by_device_id: String,
}

/// The outcome of one transition.
#[derive(Debug, Clone)]
pub struct Change {
    pub next: UserState,
    pub events: Vec<NewEvent>,
    pub upserts: Vec<Device>,
    pub deletes: Vec<String>,
    pub kicks: Vec<Kick>,
    /// Devices forced offline by a login, for the LoginReply.
    pub forced_offline: Vec<Device>,
}

impl Change {
    fn new(state: &UserState) -> Self {
        Self {
            next: state.clone(),
            events: Vec::new(),
            upserts: Vec::new(),
            deletes: Vec::new(),
            kicks: Vec::new(),
            forced_offline: Vec::new(),
        }
    }

    /// Appends an event about `device`, numbered after the previous one, as of `self.next`.
    fn record(
        &mut self,
        action: EventAction,
        reason: EventReason,
        device: &Device,
        kicked: &[Device],
        now: u64,
    ) {
        self.record_event(action, reason, device.event_device(), kicked, now);
    }

    /// [`Change::record`] with the event's device as given (none when the app backend acts).
    fn record_event(
        &mut self,
        action: EventAction,
        reason: EventReason,
        device: EventDevice,
        kicked: &[Device],
        now: u64,
    ) {
        self.next.version += 1;
        self.next.last_seen_ms = Some(now);
        if matches!(action, EventAction::Logout | EventAction::Disconnect) {
            self.next.last_reason = Some(reason);
        }
        let user_status = status_of(&self.next.devices);
        if user_status == PresenceStatus::Offline {
            // A custom status lasts while the user is online or push_online.
            self.next.custom_status.clear();
        }
        self.events.push(NewEvent {
            user_version: self.next.version,
            event_time_ms: now,
            action,
            reason,
            device,
            kicked_devices: kicked.iter().map(Device::kicked).collect(),
            user_status,
            custom_status: self.next.custom_status.clone(),
            traceparent: None,
        });
    }

    /// Takes `device_id` out of the next state.
    fn remove(&mut self, device_id: &str) -> Option<Device> {
        let index = self.next.devices.iter().position(|d| d.device_id == device_id)?;
        self.deletes.push(device_id.to_owned());
        Some(self.next.devices.remove(index))
    }

    /// Reports `device_id`'s lost link as of `at`: a push device stays push_online, any other
    /// goes offline.
    fn lose_link(&mut self, device_id: &str, reason: EventReason, at: u64) {
        let Some(index) = self.next.devices.iter().position(|d| d.device_id == device_id) else { return };
        let device = &mut self.next.devices[index];
        device.lost = None;
        let current = device.clone();
        if current.push_enabled {
            device.status = DeviceStatus::PushOnline;
            device.disconnected_at_ms = Some(at);
            self.upserts.push(device.clone());
        } else {
            self.remove(device_id);
        }
        self.record(EventAction::Disconnect, reason, &current, &[], at);
    }

    /// Ends the grace of the held devices `which` selects: each disconnect is reported first,
    /// dated when its link was lost (oldest first).
    fn end_graces(&mut self, which: impl Fn(&Device) -> bool) {
        let mut held: Vec<(String, LostLink)> = self
            .next
            .devices
            .iter()
            .filter(|d| which(d))
            .filter_map(|d| Some((d.device_id.clone(), d.lost?)))
            .collect();
        held.sort_by_key(|(_, lost)| lost.at_ms);
        for (device_id, lost) in held {
            self.lose_link(&device_id, lost.reason, lost.at_ms);
        }
    }

    /// True for a change of memory only (a disconnect put on hold): nothing to commit.
    pub fn writes_nothing(&self) -> bool {
        self.events.is_empty() && self.upserts.is_empty() && self.deletes.is_empty()
    }

    /// The rows to write, in `partition` owned under `epoch`.
    pub fn mutation(&self, app_id: &str, user_id: &str, partition: u32, epoch: i64) -> Mutation {
        Mutation {
            partition,
            epoch,
            app_id: app_id.to_owned(),
            user_id: user_id.to_owned(),
            events: self.events.clone(),
            upserts: self.upserts.clone(),
            deletes: self.deletes.clone(),
            user: UserRow {
                version: self.next.version,
                last_seen_ms: self.next.last_seen_ms,
                last_reason: self.next.last_reason,
                custom_status: self.next.custom_status.clone(),
            },
        }
    }
}

/// `new` logs in: the policy forces devices offline, and an older session of the same device is
/// replaced (closed, but not listed as kicked: the device stays online).
///
/// Flap damping: the same device back while its disconnect is held takes its place without an
/// event (for the app, it never left); a held device that this login replaces or that the
/// policy would force offline has its disconnect reported first.
pub fn login(state: &UserState, policy: &PolicyMode, new: Device, now: u64) -> Change {
    let mut change = Change::new(state);
    if let Some(held) = change
        .next
        .devices
        .iter_mut()
        .find(|d| d.device_id == new.device_id && d.lost.is_some() && d.platform == new.platform)
    {
        *held = Device { since_ms: held.since_ms, ..new };
        change.upserts.push(held.clone());
        return change;
    }
    let others: Vec<Device> =
        state.devices.iter().filter(|d| d.device_id != new.device_id).cloned().collect();
    let forced: Vec<&str> = login_policy::devices_to_kick(policy, &others, new.platform)
        .into_iter()
        .map(|i| others[i].device_id.as_str())
        .collect();
    change.end_graces(|d| d.device_id == new.device_id || forced.contains(&d.device_id.as_str()));
    if let Some(old) = change.next.devices.iter().position(|d| d.device_id == new.device_id) {
        let old = change.next.devices.remove(old);
        if old.is_connected() && old.session_id != new.session_id {
            change.kicks.push(Kick {
                device: old,
                reason: KickReason::ReplacedByLogin,
                by_platform: new.platform,
                by_device_id: new.device_id.clone(),
            });
        }
    }
    let mut forced = login_policy::devices_to_kick(policy, &change.next.devices, new.platform);
    forced.sort_unstable_by(|a, b| b.cmp(a));
    for index in forced {
        let device = change.next.devices.remove(index);
        change.deletes.push(device.device_id.clone());
        if device.is_connected() {
            change.kicks.push(Kick {
                device: device.clone(),
                reason: KickReason::ReplacedByLogin,
                by_platform: new.platform,
                by_device_id: new.device_id.clone(),
            });
        }
        change.forced_offline.push(device);
    }
    change.forced_offline.reverse();
    change.next.devices.push(new.clone());
    change.upserts.push(new.clone());
    let kicked = change.forced_offline.clone();
    change.record(EventAction::Login, EventReason::Register, &new, &kicked, now);
    change
}

/// Why a custom status was not set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UserOffline;

/// The user's custom status becomes `text` (set by `device`, or by the app backend when `None`).
/// Only an online or push_online user has one; setting the one it has changes nothing.
pub fn set_custom_status(
    state: &UserState,
    text: &str,
    device: Option<&Device>,
    now: u64,
) -> Result<Option<Change>, UserOffline> {
    if state.status() == PresenceStatus::Offline {
        return Err(UserOffline);
    }
    if state.custom_status == text {
        return Ok(None);
    }
    let mut change = Change::new(state);
    change.next.custom_status = text.to_owned();
    let device = device.map(Device::event_device).unwrap_or_default();
    change.record_event(EventAction::Status, EventReason::CustomStatus, device, &[], now);
    Ok(Some(change))
}

/// The session logs out: the device is gone, push or not. None if the session is not current.
/// The user's held disconnects are reported first.
pub fn logout(state: &UserState, device_id: &str, session_id: &str, now: u64) -> Option<Change> {
    state.online_session(device_id, session_id)?;
    let mut change = Change::new(state);
    change.end_graces(|_| true);
    let device = change.remove(device_id)?;
    change.record(EventAction::Logout, EventReason::Unregister, &device, &[], now);
    Some(change)
}

/// The session's link is lost (`link_close` or `timeout`). With a grace (flap damping, a
/// non-zero `grace_ms`) the disconnect is only held: the device still shows online and nothing is
/// written until [`end_grace`]. Otherwise it is reported: a push device stays push_online, any other goes.
pub fn disconnect(
    state: &UserState,
    device_id: &str,
    session_id: &str,
    reason: EventReason,
    now: u64,
    grace_ms: u64,
) -> Option<Change> {
    state.online_session(device_id, session_id)?;
    let mut change = Change::new(state);
    if grace_ms > 0 {
        let device = change.next.devices.iter_mut().find(|d| d.device_id == device_id)?;
        device.lost = Some(LostLink { at_ms: now, reason });
    } else {
        change.lose_link(device_id, reason, now);
    }
    Some(change)
}

/// The grace of a held disconnect ended without the device coming back: the disconnect is
/// reported, dated when the link was lost. None if `session_id` is no longer the held session.
pub fn end_grace(state: &UserState, device_id: &str, session_id: &str) -> Option<Change> {
    state.device(device_id).filter(|d| d.session_id == session_id && d.lost.is_some())?;
    let mut change = Change::new(state);
    change.end_graces(|d| d.device_id == device_id);
    Some(change)
}

/// An admin forces devices offline: those of `platforms`, or all when empty. One logout event
/// per device. None if no device matches.
/// Held disconnects of those devices are reported first.
pub fn admin_kick(state: &UserState, platforms: &[Platform], now: u64) -> Option<Change> {
    let targeted = |d: &Device| platforms.is_empty() || platforms.contains(&d.platform);
    let mut change = Change::new(state);
    change.end_graces(targeted);
    let targets: Vec<Device> = change.next.devices.iter().filter(|d| targeted(d)).cloned().collect();
    if targets.is_empty() && change.events.is_empty() {
        return None;
    }
    for device in targets {
        change.remove(&device.device_id);
        change.record(EventAction::Logout, EventReason::AdminKick, &device, &[], now);
        if device.is_connected() {
            change.kicks.push(Kick {
                device: device.clone(),
                reason: KickReason::Admin,
                by_platform: Platform::Unspecified,
                by_device_id: String::new(),
            });
        }
        change.forced_offline.push(device);
    }
    Some(change)
}

/// A push_online device disconnected at least `ttl_ms` ago is no longer reachable: it logs out
/// with reason `push_expired`.
pub fn expire_push(state: &UserState, device_id: &str, ttl_ms: u64, now: u64) -> Option<Change> {
    let device = state.device(device_id)?;
    let expired = device.status == DeviceStatus::PushOnline
        && device.disconnected_at_ms.is_some_and(|at| at.saturating_add(ttl_ms) <= now);
    if !expired {
        return None;
    }
    let mut change = Change::new(state);
    let device = change.remove(device_id)?;
    change.record(EventAction::Logout, EventReason::PushExpired, &device, &[], now);
    Some(change)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::user_state::tests::device;
    use presence_proto::v1::{DeviceStatus::Online, PresenceStatus};

    fn online(id: &str, platform: Platform, since: u64) -> Device {
        device(id, platform, Online, since)
    }

    #[test]
    fn login_kicks_under_single_device_and_numbers_the_event() {
        let mut state = UserState::default();
        state.devices.push(online("old", Platform::Ios, 1));
        state.version = 4;
        let change = login(&state, &PolicyMode::SingleDevice, online("new", Platform::Android, 9), 10);
        assert_eq!(change.next.devices.len(), 1);
        assert_eq!(change.next.version, 5);
        assert_eq!(change.events.len(), 1);
        let event = &change.events[0];
        assert_eq!(event.user_version, 5);
        assert_eq!(event.kicked_devices.len(), 1);
        assert_eq!(event.kicked_devices[0].device_id, "old");
        assert_eq!(event.user_status, PresenceStatus::Online);
        assert_eq!(change.kicks.len(), 1);
        assert_eq!(change.kicks[0].reason, KickReason::ReplacedByLogin);
        assert_eq!(change.deletes, ["old"]);
    }

    #[test]
    fn relogin_of_the_same_device_replaces_its_session_without_listing_it() {
        let mut state = UserState::default();
        state.devices.push(online("d", Platform::Ios, 1));
        let mut again = online("d", Platform::Ios, 5);
        again.session_id = "s-new".into();
        let change = login(&state, &PolicyMode::OnePerPlatform, again, 5);
        assert!(change.events[0].kicked_devices.is_empty());
        assert_eq!(change.kicks.len(), 1, "the old socket must be closed");
        assert_eq!(change.next.devices[0].session_id, "s-new");
        assert!(change.deletes.is_empty());
    }

    #[test]
    fn disconnect_keeps_push_devices_push_online() {
        let mut state = UserState::default();
        let mut phone = online("p", Platform::Ios, 1);
        phone.push_enabled = true;
        state.devices.push(phone);
        let change = disconnect(&state, "p", "s-p", EventReason::LinkClose, 50, 0).expect("current session");
        assert_eq!(change.next.status(), PresenceStatus::PushOnline);
        assert_eq!(change.events[0].user_status, PresenceStatus::PushOnline);
        assert_eq!(change.next.last_reason, Some(EventReason::LinkClose));
        assert!(disconnect(&state, "p", "other-session", EventReason::Timeout, 50, 0).is_none());

        let expired = expire_push(&change.next, "p", 100, 149);
        assert!(expired.is_none(), "not yet expired");
        let expired = expire_push(&change.next, "p", 100, 150).expect("expired");
        assert_eq!(expired.events[0].reason, EventReason::PushExpired);
        assert_eq!(expired.next.status(), PresenceStatus::Offline);
    }

    #[test]
    fn disconnect_of_a_plain_device_forgets_it() {
        let mut state = UserState::default();
        state.devices.push(online("w", Platform::Web, 1));
        let change = disconnect(&state, "w", "s-w", EventReason::Timeout, 2, 0).expect("current session");
        assert!(change.next.devices.is_empty());
        assert_eq!(change.deletes, ["w"]);
    }

    #[test]
    fn logout_ignores_a_stale_session() {
        let mut state = UserState::default();
        state.devices.push(online("w", Platform::Web, 1));
        assert!(logout(&state, "w", "stale", 2).is_none());
        let change = logout(&state, "w", "s-w", 2).expect("current session");
        assert_eq!(change.events[0].action, EventAction::Logout);
        assert_eq!(change.events[0].reason, EventReason::Unregister);
    }

    #[test]
    fn admin_kick_emits_one_event_per_device() {
        let mut state = UserState::default();
        state.devices.push(online("a", Platform::Ios, 1));
        state.devices.push(online("b", Platform::Mac, 2));
        state.devices.push(online("c", Platform::Ios, 3));
        let change = admin_kick(&state, &[Platform::Ios], 10).expect("matches");
        assert_eq!(change.events.len(), 2);
        assert_eq!(change.events.iter().map(|e| e.user_version).collect::<Vec<_>>(), [1, 2]);
        assert_eq!(change.next.devices.len(), 1);
        assert!(change.kicks.iter().all(|k| k.reason == KickReason::Admin));
        assert!(admin_kick(&state, &[Platform::Web], 10).is_none());
    }

    #[test]
    fn a_custom_status_needs_an_online_user_is_an_event_and_ends_with_the_user() {
        let offline = UserState::default();
        assert_eq!(set_custom_status(&offline, "busy", None, 1).unwrap_err(), UserOffline);

        let mut state = UserState::default();
        state.devices.push(online("w", Platform::Web, 1));
        let device = state.devices[0].clone();
        let change = set_custom_status(&state, "busy", Some(&device), 5).unwrap().expect("a change");
        let event = &change.events[0];
        assert_eq!((event.action, event.reason), (EventAction::Status, EventReason::CustomStatus));
        assert_eq!((event.custom_status.as_str(), event.device.device_id.as_str()), ("busy", "w"));
        assert_eq!(change.next.custom_status, "busy");
        assert_eq!(change.next.last_reason, None, "a status change is no disconnect");
        assert!(set_custom_status(&change.next, "busy", None, 6).unwrap().is_none(), "unchanged");

        let gone = logout(&change.next, "w", "s-w", 7).expect("current session");
        assert_eq!(gone.next.custom_status, "", "cleared when the user goes offline");
        assert_eq!(gone.events[0].custom_status, "");
    }

    #[test]
    fn a_push_online_user_keeps_its_custom_status() {
        let mut state = UserState::default();
        let mut phone = online("p", Platform::Ios, 1);
        phone.push_enabled = true;
        state.devices.push(phone);
        state.custom_status = "driving".into();
        let change = disconnect(&state, "p", "s-p", EventReason::LinkClose, 2, 0).expect("current session");
        assert_eq!(change.next.status(), PresenceStatus::PushOnline);
        assert_eq!(change.events[0].custom_status, "driving");
    }

    /// `state` with `id` disconnected at 100 under a grace: held.
    fn held(mut state: UserState, id: &str, platform: Platform, push: bool) -> UserState {
        let mut device = online(id, platform, 1);
        device.push_enabled = push;
        state.devices.push(device);
        let hold = disconnect(&state, id, &format!("s-{id}"), EventReason::Timeout, 100, 5_000)
            .expect("current session");
        assert!(hold.writes_nothing(), "a hold is not written");
        assert_eq!(hold.next.status(), PresenceStatus::Online, "a held device still shows online");
        hold.next
    }

    #[test]
    fn a_relogin_within_the_grace_makes_no_event_and_takes_the_new_session() {
        let state = held(UserState::default(), "p", Platform::Ios, false);
        assert!(
            disconnect(&state, "p", "s-p", EventReason::LinkClose, 150, 5_000).is_none(),
            "a held session is gone: no second disconnect"
        );
        let mut back = online("p", Platform::Ios, 300);
        back.session_id = "s-back".into();
        back.gateway_id = "gw-2".into();
        let change = login(&state, &PolicyMode::SingleDevice, back, 300);
        assert!(change.events.is_empty() && change.kicks.is_empty(), "for the app the device never left");
        assert_eq!(change.upserts.len(), 1, "the new session is written");
        let device = &change.next.devices[0];
        assert_eq!((device.session_id.as_str(), device.gateway_id.as_str()), ("s-back", "gw-2"));
        assert_eq!((device.since_ms, device.lost), (1, None), "online since before the flap");
        assert!(
            end_grace(&change.next, "p", "s-p").is_none(),
            "the grace timer of the old session finds nothing"
        );
    }

    #[test]
    fn at_the_end_of_the_grace_the_disconnect_is_dated_when_the_link_was_lost() {
        let mut state = held(UserState::default(), "p", Platform::Ios, true);
        state.version = 3;
        let change = end_grace(&state, "p", "s-p").expect("still held");
        let event = &change.events[0];
        assert_eq!(
            (event.action, event.reason, event.event_time_ms),
            (EventAction::Disconnect, EventReason::Timeout, 100)
        );
        assert_eq!(event.user_version, 4);
        let phone = &change.next.devices[0];
        assert_eq!(
            (phone.status, phone.disconnected_at_ms, phone.lost),
            (DeviceStatus::PushOnline, Some(100), None)
        );
        assert!(end_grace(&change.next, "p", "s-p").is_none(), "reported once");
        assert!(end_grace(&state, "p", "another-session").is_none());
    }

    #[test]
    fn a_logout_a_kick_or_a_policy_kick_reports_held_disconnects_first() {
        // Logout of another device of the user.
        let mut state = held(UserState::default(), "p", Platform::Ios, false);
        state.devices.push(online("w", Platform::Web, 2));
        let change = logout(&state, "w", "s-w", 200).expect("current session");
        let order: Vec<_> = change.events.iter().map(|e| (e.action, e.event_time_ms)).collect();
        assert_eq!(order, [(EventAction::Disconnect, 100), (EventAction::Logout, 200)]);
        assert!(change.next.devices.is_empty());

        // An admin kick of the held device's platform: its disconnect, and no Kick (no session).
        let state = held(UserState::default(), "p", Platform::Ios, false);
        let change = admin_kick(&state, &[Platform::Ios], 200).expect("a change");
        assert_eq!(change.events.iter().map(|e| e.action).collect::<Vec<_>>(), [EventAction::Disconnect]);
        assert!(change.kicks.is_empty());
        assert!(admin_kick(&state, &[Platform::Web], 200).is_none(), "other platforms: still held");

        // Single device: another device's login would force the held one offline.
        let state = held(UserState::default(), "p", Platform::Ios, false);
        let change = login(&state, &PolicyMode::SingleDevice, online("a", Platform::Android, 200), 200);
        let order: Vec<_> = change.events.iter().map(|e| (e.action, e.event_time_ms)).collect();
        assert_eq!(order, [(EventAction::Disconnect, 100), (EventAction::Login, 200)]);
        assert!(change.kicks.is_empty() && change.events[1].kicked_devices.is_empty());

        // A held push device becomes push_online first, then the policy forces it off.
        let state = held(UserState::default(), "p", Platform::Ios, true);
        let change = login(&state, &PolicyMode::SingleDevice, online("a", Platform::Android, 200), 200);
        assert_eq!(change.events[0].action, EventAction::Disconnect);
        assert_eq!(change.forced_offline.iter().map(|d| d.device_id.as_str()).collect::<Vec<_>>(), ["p"]);
        assert!(change.kicks.is_empty());

        // One per platform: a login on another platform leaves the held device held.
        let state = held(UserState::default(), "p", Platform::Ios, false);
        let change = login(&state, &PolicyMode::OnePerPlatform, online("a", Platform::Android, 200), 200);
        assert_eq!(change.events.iter().map(|e| e.action).collect::<Vec<_>>(), [EventAction::Login]);
        assert!(change.next.device("p").is_some_and(|d| d.lost.is_some()));
    }

    #[test]
    fn the_same_device_back_on_another_platform_is_a_disconnect_and_a_login() {
        let state = held(UserState::default(), "p", Platform::Ios, false);
        let change = login(&state, &PolicyMode::SingleDevice, online("p", Platform::Ipad, 200), 200);
        let order: Vec<_> = change.events.iter().map(|e| (e.action, e.event_time_ms)).collect();
        assert_eq!(order, [(EventAction::Disconnect, 100), (EventAction::Login, 200)]);
        assert!(change.kicks.is_empty());
    }
}
