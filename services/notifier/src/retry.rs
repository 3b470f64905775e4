use std::time::Duration;

/// When to try a failed callback again, and when to give up on it.
#[derive(Debug, Clone)]
pub struct RetryPolicy {
    pub initial: Duration,
    pub max: Duration,
    /// 0: no limit.
    pub max_attempts: u32,
    /// `None`: no limit.
    pub max_age: Option<Duration>,
}

impl RetryPolicy {
    /// Delay after the `failures`-th failure: exponential, capped, with jitter so that receivers
    /// recovering from an outage are not hit by every user at once.
    pub fn delay(&self, failures: u32) -> Duration {
        presence_common::backoff::delay_after(self.initial, self.max, failures)
    }

    /// Whether to dead-letter after `failures` failures, the first of them `failing_for` ago.
    pub fn gives_up(&self, failures: u32, failing_for: Duration) -> bool {
        (self.max_attempts > 0 && failures >= self.max_attempts)
            || self.max_age.is_some_and(|max_age| failing_for >= max_age)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> RetryPolicy {
        RetryPolicy {
            initial: Duration::from_millis(200),
            max: Duration::from_secs(30),
            max_attempts: 5,
            max_age: Some(Duration::from_secs(60)),
        }
    }

    #[test]
    fn delays_double_within_jitter_and_stop_at_the_cap() {
        let p = policy();
        for (failures, ceiling_ms) in [(1, 200), (2, 400), (3, 800), (8, 25_600), (9, 30_000), (40, 30_000)] {
            for _ in 0..50 {
                let d = p.delay(failures).as_millis() as u64;
                assert!((ceiling_ms / 2..=ceiling_ms).contains(&d), "failure {failures}: {d} ms");
            }
        }
    }

    #[test]
    fn gives_up_after_attempts_or_age_whichever_first() {
        let p = policy();
        assert!(!p.gives_up(4, Duration::from_secs(59)));
        assert!(p.gives_up(5, Duration::from_secs(1)));
        assert!(p.gives_up(1, Duration::from_secs(60)));
        let unlimited = RetryPolicy { max_attempts: 0, max_age: None, ..p };
        assert!(!unlimited.gives_up(1_000_000, Duration::from_secs(1_000_000)));
    }
}
