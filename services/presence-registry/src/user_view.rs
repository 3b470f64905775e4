//! A user's presence as a batch query reads it, published beside the user's lock so that the
//! query reads it with plain loads: no lock, no reference count, no store to shared memory.
//!
//! A sequence lock: the writer (who holds the user's lock) makes the word's counter odd before
//! it commits a change and even again once the change is applied and published. A reader that
//! sees an odd counter, or a counter that moved while it read, takes the user's lock instead; so
//! an odd counter left behind (a commit task that died) only costs the readers the lock, and
//! never gives them a stale answer.

use std::sync::atomic::{AtomicU64, Ordering, fence};

use presence_proto::v1::UserPresence;

use crate::user_state::UserState;

/// The bits of `word` above the counter.
const STATUS_SHIFT: u32 = 32;
const REASON_SHIFT: u32 = 40;
/// The user has a custom status or devices to list: only the full state answers for it.
const HAS_CUSTOM_STATUS: u64 = 1 << 48;
const COUNTER_MASK: u64 = u32::MAX as u64;
const NO_LAST_SEEN: u64 = u64::MAX;

#[derive(Debug, Default)]
pub struct UserView {
    /// The counter (low 32 bits, odd while a change is in flight), status and last reason.
    word: AtomicU64,
    version: AtomicU64,
    applied_seq: AtomicU64,
    last_seen_ms: AtomicU64,
}

/// What a query without `detail` answers for a user with no custom status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Summary {
    pub status: i32,
    pub last_reason: i32,
    pub version: u64,
    pub applied_seq: u64,
    pub last_seen_ms: Option<u64>,
}

impl Summary {
    /// The result for the query (the caller moves `user_id` in).
    pub fn presence(&self) -> UserPresence {
        UserPresence {
            status: self.status,
            last_seen_ms: self.last_seen_ms,
            last_reason: self.last_reason,
            user_version: self.version,
            ..UserPresence::default()
        }
    }
}

impl UserView {
    pub fn of(state: &UserState) -> Self {
        let view = Self::default();
        view.publish(state);
        view
    }

    /// The user's summary, unless a change is in flight, one happened while reading, or the
    /// user has a custom status (`None`: read the state under the user's lock).
    pub fn read(&self) -> Option<Summary> {
        let word = self.word.load(Ordering::Acquire);
        if word & 1 == 1 || word & HAS_CUSTOM_STATUS != 0 {
            return None;
        }
        let version = self.version.load(Ordering::Relaxed);
        let applied_seq = self.applied_seq.load(Ordering::Relaxed);
        let last_seen_ms = self.last_seen_ms.load(Ordering::Relaxed);
        // The loads above happen before the check below (pairs with `publish`'s release).
        fence(Ordering::Acquire);
        if self.word.load(Ordering::Relaxed) != word {
            return None;
        }
        Some(Summary {
            status: ((word >> STATUS_SHIFT) & 0xff) as i32,
            last_reason: ((word >> REASON_SHIFT) & 0xff) as i32,
            version,
            applied_seq,
            last_seen_ms: (last_seen_ms != NO_LAST_SEEN).then_some(last_seen_ms),
        })
    }

    /// A change of the user is about to be committed: readers take the lock until [`Self::publish`].
    /// Only under the user's lock.
    pub fn begin_change(&self) {
        let word = self.word.load(Ordering::Relaxed);
        if word & 1 == 0 {
            self.word.store(bump(word), Ordering::Relaxed);
            // The odd counter is seen before any of the change's effects.
            fence(Ordering::Release);
        }
    }

    /// Publishes `state` and ends the change begun, if any. Only under the user's lock.
    pub fn publish(&self, state: &UserState) {
        let word = self.word.load(Ordering::Relaxed);
        let odd = if word & 1 == 0 { bump(word) } else { word };
        self.word.store(odd, Ordering::Relaxed);
        fence(Ordering::Release);
        self.version.store(state.version, Ordering::Relaxed);
        self.applied_seq.store(state.applied_seq, Ordering::Relaxed);
        self.last_seen_ms.store(state.last_seen_ms.unwrap_or(NO_LAST_SEEN), Ordering::Relaxed);
        let status = state.status() as i32;
        let reason = state.last_reason.map_or(0, |reason| reason as i32);
        // Values that do not fit (none today) send readers to the lock, as a custom status does.
        let fits = |value: i32| u8::try_from(value).map(u64::from).ok();
        let bits = match (fits(status), fits(reason)) {
            (Some(status), Some(reason)) if state.custom_status.is_empty() => {
                (status << STATUS_SHIFT) | (reason << REASON_SHIFT)
            }
            _ => HAS_CUSTOM_STATUS,
        };
        self.word.store((bump(odd) & COUNTER_MASK) | bits, Ordering::Release);
    }
}

/// The word with its counter one up (wrapping within its 32 bits, other bits kept).
fn bump(word: u64) -> u64 {
    (word & !COUNTER_MASK) | ((word & COUNTER_MASK).wrapping_add(1) & COUNTER_MASK)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use presence_proto::v1::{DeviceStatus, EventReason, Platform, PresenceStatus};

    use super::*;
    use crate::user_state::tests::device;

    fn online(version: u64) -> UserState {
        UserState {
            devices: vec![device("a", Platform::Ios, DeviceStatus::Online, 1)],
            version,
            applied_seq: version * 10,
            last_seen_ms: Some(version * 100),
            last_reason: Some(EventReason::Register),
            ..UserState::default()
        }
    }

    #[test]
    fn reads_what_was_published() {
        let state = online(3);
        let summary = UserView::of(&state).read().expect("nothing in flight");
        assert_eq!(summary.presence(), state.presence("", false));
        assert_eq!(summary.applied_seq, 30);
        let never_seen = UserView::of(&UserState::default()).read().expect("readable");
        assert_eq!(never_seen.presence(), UserState::default().presence("", false));
        assert_eq!(never_seen.status, PresenceStatus::Offline as i32);
    }

    #[test]
    fn a_change_in_flight_or_a_custom_status_sends_readers_to_the_lock() {
        let view = UserView::of(&online(1));
        view.begin_change();
        view.begin_change();
        assert_eq!(view.read(), None, "in flight");
        view.publish(&online(2));
        assert_eq!(view.read().map(|s| s.version), Some(2));
        view.publish(&UserState { custom_status: "busy".into(), ..online(3) });
        assert_eq!(view.read(), None, "the summary has no room for a custom status");
        view.publish(&online(4));
        assert_eq!(view.read().map(|s| s.version), Some(4));
    }

    #[test]
    fn the_counter_wraps_without_touching_the_status() {
        let view = UserView::of(&online(1));
        view.word.store(view.word.load(Ordering::Relaxed) | (COUNTER_MASK - 1), Ordering::Relaxed);
        view.begin_change();
        view.publish(&online(2));
        let summary = view.read().expect("even again");
        assert_eq!((summary.status, summary.version), (PresenceStatus::Online as i32, 2));
    }

    #[test]
    fn a_reader_racing_writers_never_sees_a_torn_summary() {
        // Every published state has applied_seq = 10 × version and last_seen = 100 × version:
        // a summary mixing two states breaks that.
        let view = Arc::new(UserView::of(&online(1)));
        let writer = {
            let view = view.clone();
            std::thread::spawn(move || {
                for version in 2..200_000 {
                    view.begin_change();
                    view.publish(&online(version));
                }
            })
        };
        let mut read = 0u64;
        while !writer.is_finished() {
            if let Some(s) = view.read() {
                assert_eq!(s.applied_seq, s.version * 10, "{s:?}");
                assert_eq!(s.last_seen_ms, Some(s.version * 100), "{s:?}");
                read += 1;
            }
        }
        writer.join().expect("writer");
        assert!(read > 0, "the reader read something");
    }
}
