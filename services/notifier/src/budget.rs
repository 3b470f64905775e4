//! The in-memory budget: events read but not yet settled, bounded per app and in all. An event
//! that finds no room stays in Postgres (its app is parked in its partition, see
//! [`crate::cursors`]) and is read again once the app has room: an app whose receiver is dead or
//! slow holds at most its share of memory and never stops the reading of the other apps.

use std::{collections::HashMap, sync::Arc};

use parking_lot::Mutex;

use crate::{app_labels::AppLabels, metric_names};

pub struct Budget {
    per_app: usize,
    total: usize,
    labels: Arc<AppLabels>,
    state: Mutex<Counts>,
}

#[derive(Default)]
struct Counts {
    total: usize,
    /// Apps with events in memory (an app is forgotten when it has none).
    apps: HashMap<String, usize>,
}

/// One event's share of the budget, given back when dropped (the event settled or was dropped).
pub struct Ticket {
    budget: Arc<Budget>,
    app_id: String,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.budget.give_back(&self.app_id);
    }
}

impl Budget {
    pub fn new(per_app: usize, total: usize, labels: Arc<AppLabels>) -> Arc<Self> {
        Arc::new(Self { per_app: per_app.max(1), total: total.max(1), labels, state: Mutex::default() })
    }

    /// Room for one more event of `app_id`, if it is under its share and the total is not full.
    pub fn take(self: &Arc<Self>, app_id: &str) -> Option<Ticket> {
        {
            let mut counts = self.state.lock();
            if counts.total >= self.total {
                return None;
            }
            let held = counts.apps.entry(app_id.to_owned()).or_default();
            if *held >= self.per_app {
                return None;
            }
            *held += 1;
            counts.total += 1;
        }
        metrics::gauge!(metric_names::APP_PENDING, "app" => self.labels.label(app_id)).increment(1.0);
        Some(Ticket { budget: self.clone(), app_id: app_id.to_owned() })
    }

    /// How many of `app_id`'s events parked in Postgres to read again now: none until the app
    /// is down to half its share (so that a backlog is read in large pages, not one by one),
    /// then up to its share, within the total's room.
    pub fn room_to_read_again(&self, app_id: &str) -> usize {
        let counts = self.state.lock();
        let held = counts.apps.get(app_id).copied().unwrap_or(0);
        if held > self.per_app / 2 {
            return 0;
        }
        (self.per_app - held).min(self.total.saturating_sub(counts.total))
    }

    fn give_back(&self, app_id: &str) {
        {
            let mut counts = self.state.lock();
            counts.total = counts.total.saturating_sub(1);
            if let Some(held) = counts.apps.get_mut(app_id) {
                *held = held.saturating_sub(1);
                if *held == 0 {
                    counts.apps.remove(app_id);
                }
            }
        }
        metrics::gauge!(metric_names::APP_PENDING, "app" => self.labels.label(app_id)).decrement(1.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn budget(per_app: usize, total: usize) -> Arc<Budget> {
        Budget::new(per_app, total, Arc::new(AppLabels::new("", 10)))
    }

    #[test]
    fn an_app_at_its_share_leaves_room_for_the_others() {
        let b = budget(2, 5);
        let a: Vec<Ticket> = (0..2).filter_map(|_| b.take("a")).collect();
        assert_eq!(a.len(), 2);
        assert!(b.take("a").is_none(), "a is at its share");
        let others: Vec<Ticket> = ["b", "b", "c"].iter().filter_map(|app| b.take(app)).collect();
        assert_eq!(others.len(), 3);
        assert!(b.take("d").is_none(), "the total is full");
        drop(others);
        assert!(b.take("d").is_some());
        drop(a);
        assert!(b.take("a").is_some(), "settled events give their room back");
    }

    #[test]
    fn parked_events_are_read_again_once_the_app_is_down_to_half_its_share() {
        let b = budget(4, 100);
        let mut held: Vec<Ticket> = (0..4).filter_map(|_| b.take("a")).collect();
        assert_eq!(b.room_to_read_again("a"), 0);
        held.pop();
        assert_eq!(b.room_to_read_again("a"), 0, "3 of 4: not yet");
        held.pop();
        assert_eq!(b.room_to_read_again("a"), 2);
        held.clear();
        assert_eq!(b.room_to_read_again("a"), 4);
        let small_total = budget(4, 3);
        let _t = small_total.take("b");
        assert_eq!(small_total.room_to_read_again("a"), 2, "within the total's room");
    }
}
