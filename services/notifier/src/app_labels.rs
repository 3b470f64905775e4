//! The `app` label of the notifier's metrics, with bounded cardinality: a Prometheus series per
//! app is fine for tens of apps, not for a tenant per customer. Apps on the allow-list
//! (`NOTIFIER_METRIC_APPS`), or else the first `NOTIFIER_METRIC_APPS_MAX` apps seen since the
//! start, are labelled by their id; every other app is counted under [`OTHER`].

use std::collections::HashSet;

use parking_lot::Mutex;

/// The label of the apps beyond the limit (app ids cannot collide with it: `_` leads no id the
/// admin SQL in docs/policy.md creates, and if one did it would only share a series).
pub const OTHER: &str = "_other";

pub struct AppLabels {
    /// `Some`: only these apps get their own label.
    allowed: Option<HashSet<String>>,
    max: usize,
    named: Mutex<HashSet<String>>,
}

impl AppLabels {
    /// `allow_list`: comma-separated app ids (empty: none, the first `max` apps seen instead).
    pub fn new(allow_list: &str, max: usize) -> Self {
        let allowed: HashSet<String> =
            allow_list.split(',').map(str::trim).filter(|id| !id.is_empty()).map(str::to_owned).collect();
        Self { allowed: (!allowed.is_empty()).then_some(allowed), max, named: Mutex::default() }
    }

    /// The `app` label value for `app_id`.
    pub fn label(&self, app_id: &str) -> String {
        if let Some(allowed) = &self.allowed {
            return if allowed.contains(app_id) { app_id.to_owned() } else { OTHER.to_owned() };
        }
        let mut named = self.named.lock();
        if named.contains(app_id) || (named.len() < self.max && named.insert(app_id.to_owned())) {
            app_id.to_owned()
        } else {
            OTHER.to_owned()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_first_apps_seen_are_named_and_the_rest_share_one_label() {
        let labels = AppLabels::new("", 2);
        assert_eq!(labels.label("a"), "a");
        assert_eq!(labels.label("b"), "b");
        assert_eq!(labels.label("c"), OTHER);
        assert_eq!(labels.label("a"), "a", "still named");
        assert_eq!(AppLabels::new("", 0).label("a"), OTHER);
    }

    #[test]
    fn an_allow_list_names_only_its_apps() {
        let labels = AppLabels::new(" vip, big ,", 1);
        assert_eq!(labels.label("big"), "big");
        assert_eq!(labels.label("vip"), "vip", "the allow-list is not limited by the count");
        assert_eq!(labels.label("small"), OTHER);
    }
}
