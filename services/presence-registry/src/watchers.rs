//! Gateways that hold subscribers of a user (their "interest"), as the registry records them.

use smallvec::SmallVec;

/// A gateway's interest in a user, under the gateway's generation of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Watcher {
    /// The gateway's number in [`crate::gateways::Gateways`].
    pub gateway: u32,
    pub generation: u32,
}

/// One interest per gateway. Two are stored inline: a user is watched from few gateways, and
/// every watched user pays for this (24 bytes, no allocation for up to two gateways).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Watchers(SmallVec<[Watcher; 2]>);

impl Watchers {
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Adds or renews a gateway's interest; the generation is the gateway's latest.
    pub fn watch(&mut self, watcher: Watcher) {
        match self.0.iter_mut().find(|w| w.gateway == watcher.gateway) {
            Some(known) => known.generation = watcher.generation,
            None => self.0.push(watcher),
        }
    }

    /// Removes a gateway's interest if it is still of this generation (a newer Watch wins).
    pub fn unwatch(&mut self, watcher: Watcher) {
        self.retain(|w| *w != watcher);
    }

    /// Keeps the interests `keep` approves; memory spilled beyond the inline two is freed once
    /// few enough are left.
    pub fn retain(&mut self, keep: impl FnMut(&mut Watcher) -> bool) {
        self.0.retain(keep);
        if self.0.spilled() && self.0.len() <= self.0.inline_size() {
            self.0.shrink_to_fit();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn w(gateway: u32, generation: u32) -> Watcher {
        Watcher { gateway, generation }
    }

    #[test]
    fn an_unwatch_removes_only_its_own_generation() {
        let mut watchers = Watchers::default();
        watchers.watch(w(1, 10));
        watchers.watch(w(2, 20));
        watchers.watch(w(1, 11));
        assert_eq!(watchers.0.len(), 2, "one interest per gateway");
        watchers.unwatch(w(1, 10));
        assert_eq!(watchers.0.len(), 2, "an older generation's Unwatch removes nothing");
        watchers.unwatch(w(1, 11));
        watchers.unwatch(w(2, 20));
        assert!(watchers.is_empty());
    }

    #[test]
    fn two_watchers_fit_inline_and_spilled_memory_is_given_back() {
        assert_eq!(std::mem::size_of::<Watchers>(), 24);
        let mut watchers = Watchers::default();
        for gateway in 0..3 {
            watchers.watch(w(gateway, 1));
        }
        assert!(watchers.0.spilled(), "a third gateway spills to the heap");
        watchers.unwatch(w(2, 1));
        assert!(!watchers.0.spilled(), "back to two: inline again");
        assert_eq!(watchers.0.iter().map(|w| w.gateway).collect::<Vec<_>>(), [0, 1]);
    }
}
