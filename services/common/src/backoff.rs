//! Exponential backoff with jitter, for every retry loop of the services.
//!
//! Each delay doubles up to a cap; "equal jitter" waits between half and all of it, so that
//! many clients that failed together (a registry or database restart) do not retry together.

use std::time::Duration;

use rand::Rng;

/// The delays of one retry loop. [`Backoff::reset`] after a success starts again from `initial`.
#[derive(Debug, Clone)]
pub struct Backoff {
    initial: Duration,
    max: Duration,
    failures: u32,
}

impl Backoff {
    pub const fn new(initial: Duration, max: Duration) -> Self {
        Self { initial, max, failures: 0 }
    }

    /// The delay to wait after one more failure.
    pub fn next_delay(&mut self) -> Duration {
        self.failures = self.failures.saturating_add(1);
        delay_after(self.initial, self.max, self.failures)
    }

    /// After a success: the next failure waits about `initial` again.
    pub fn reset(&mut self) {
        self.failures = 0;
    }
}

/// The delay after the `failures`-th failure in a row (1 for the first): between half and all
/// of `initial · 2^(failures - 1)`, capped at `max`.
pub fn delay_after(initial: Duration, max: Duration, failures: u32) -> Duration {
    let ceiling = ceiling(initial, max, failures);
    let half = ceiling / 2;
    half + rand::rng().random_range(Duration::ZERO..=half)
}

/// The delay without jitter.
fn ceiling(initial: Duration, max: Duration, failures: u32) -> Duration {
    let exponent = failures.saturating_sub(1).min(30);
    initial.saturating_mul(1u32 << exponent).min(max)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    #[test]
    fn delays_double_within_jitter_up_to_the_cap() {
        for (failures, ceiling_ms) in [(1, 200), (2, 400), (3, 800), (8, 25_600), (9, 30_000), (40, 30_000)] {
            for _ in 0..50 {
                let d = delay_after(200 * MS, 30_000 * MS, failures);
                assert!((ceiling_ms / 2 * MS..=ceiling_ms * MS).contains(&d), "failure {failures}: {d:?}");
            }
        }
    }

    #[test]
    fn a_reset_starts_again_from_the_initial_delay() {
        let mut backoff = Backoff::new(100 * MS, 5_000 * MS);
        let delays: Vec<_> = (0..10).map(|_| backoff.next_delay()).collect();
        assert!(delays[0] <= 100 * MS && delays[9] >= 2_500 * MS, "{delays:?}");
        backoff.reset();
        assert!(backoff.next_delay() <= 100 * MS);
    }

    #[test]
    fn huge_failure_counts_do_not_overflow() {
        assert_eq!(ceiling(Duration::MAX, Duration::MAX, u32::MAX), Duration::MAX);
        assert_eq!(ceiling(MS, 7 * MS, u32::MAX), 7 * MS);
    }
}
