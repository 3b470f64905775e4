use std::collections::BTreeMap;

/// The highest feed position below which every event is settled (delivered, skipped or
/// dead-lettered). Events of different users settle out of order; the cursor written to Postgres
/// is this watermark, so a restart re-delivers only what was in flight (at least once).
#[derive(Debug, Default)]
pub struct Watermark {
    /// In-flight feed ids and their event times (for the lag metric).
    in_flight: BTreeMap<u64, u64>,
    /// Last feed id received from the registry.
    received: u64,
}

impl Watermark {
    pub fn starting_at(feed_id: u64) -> Self {
        Self { in_flight: BTreeMap::new(), received: feed_id }
    }

    /// An event entered the notifier (feed ids arrive in increasing order).
    pub fn received(&mut self, feed_id: u64, event_time_ms: u64) {
        self.in_flight.insert(feed_id, event_time_ms);
        self.received = self.received.max(feed_id);
    }

    /// An event received earlier needs nothing more.
    pub fn settled(&mut self, feed_id: u64) {
        self.in_flight.remove(&feed_id);
    }

    /// Every event up to and including this feed id is settled.
    pub fn durable(&self) -> u64 {
        self.in_flight.keys().next().map_or(self.received, |first| first.saturating_sub(1))
    }

    pub fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Event time of the oldest unsettled event.
    pub fn oldest_event_time_ms(&self) -> Option<u64> {
        self.in_flight.values().next().copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_watermark_stops_below_the_oldest_unsettled_event() {
        let mut w = Watermark::starting_at(10);
        assert_eq!(w.durable(), 10);
        for id in 11..=15 {
            w.received(id, id * 100);
        }
        assert_eq!(w.durable(), 10);
        w.settled(12);
        w.settled(13);
        assert_eq!(w.durable(), 10, "11 is still in flight");
        w.settled(11);
        assert_eq!(w.durable(), 13);
        assert_eq!(w.oldest_event_time_ms(), Some(1400));
        w.settled(15);
        w.settled(14);
        assert_eq!(w.durable(), 15);
        assert_eq!(w.in_flight(), 0);
    }
}
