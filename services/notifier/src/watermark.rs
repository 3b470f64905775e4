use std::collections::BTreeMap;

/// The highest position of one partition's feed up to which every event is settled (delivered,
/// skipped or dead-lettered). Events of different users settle out of order; the partition's
/// cursor written to Postgres is this watermark, so whoever reads the partition next re-delivers
/// only what was in flight (at least once).
#[derive(Debug, Default)]
pub struct Watermark {
    /// In-flight positions and their event times (for the lag metric).
    in_flight: BTreeMap<u64, u64>,
    /// Last position read.
    received: u64,
}

impl Watermark {
    pub fn starting_at(position: u64) -> Self {
        Self { in_flight: BTreeMap::new(), received: position }
    }

    /// An event entered the notifier (in increasing order, except events of a parked app read
    /// again, which are above the durable cursor all the same).
    pub fn received(&mut self, position: u64, event_time_ms: u64) {
        self.in_flight.insert(position, event_time_ms);
        self.received = self.received.max(position);
    }

    /// An event read but kept out of memory (its app is parked, see `crate::cursors`): the
    /// caller keeps the cursor below it.
    pub fn passed(&mut self, position: u64) {
        self.received = self.received.max(position);
    }

    /// An event received earlier needs nothing more.
    pub fn settled(&mut self, position: u64) {
        self.in_flight.remove(&position);
    }

    /// Every event up to and including this position is settled.
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
