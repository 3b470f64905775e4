//! A circuit breaker per app: while an app's receiver fails, its events wait instead of each
//! user's event backing off on its own, and a single probe at a time finds out when the receiver
//! is back; then every user's event goes at once, with no per-user backoff left over.
//!
//! [`Circuit`] is the pure state machine (time passed in); [`AppCircuit`] shares one per app
//! between the users' delivery tasks and wakes them when it changes.

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use parking_lot::Mutex;
use tokio::sync::{Notify, futures::Notified};

/// When a circuit opens and how often it probes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CircuitPolicy {
    /// Consecutive receiver failures (no success in between) that open the circuit.
    pub failures_to_open: u32,
    /// Wait before the first probe; doubles per failed probe.
    pub probe_initial: Duration,
    /// Longest wait between probes.
    pub probe_max: Duration,
}

impl CircuitPolicy {
    /// The wait after `failed_probes` failed probes (0: the circuit just opened).
    fn probe_delay(&self, failed_probes: u32) -> Duration {
        let factor = 1u32.checked_shl(failed_probes.min(31)).unwrap_or(u32::MAX);
        self.probe_initial.saturating_mul(factor).min(self.probe_max)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    /// Everything goes; `failures` consecutive receiver failures so far.
    Closed { failures: u32 },
    /// Nothing goes until `next_probe`; then one probe.
    Open { next_probe: Instant, failed_probes: u32 },
    /// One probe is in flight; everything else waits for its outcome.
    HalfOpen { failed_probes: u32 },
}

/// What a delivery may do now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Admit {
    /// The circuit is closed: send.
    Send,
    /// Send: this request is the probe (report its outcome, or [`Circuit::probe_abandoned`]).
    Probe,
    /// Wait until then (the next probe is due), or until the circuit changes.
    WaitUntil(Instant),
    /// A probe is in flight: wait until the circuit changes.
    WaitForProbe,
}

/// Gauge values of [`Circuit::phase`] (`notifier_circuit_state`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Closed,
    Open,
    HalfOpen,
}

#[derive(Debug, Clone)]
pub struct Circuit {
    policy: CircuitPolicy,
    state: State,
}

impl Circuit {
    pub fn new(policy: CircuitPolicy) -> Self {
        Self {
            policy: CircuitPolicy { failures_to_open: policy.failures_to_open.max(1), ..policy },
            state: State::Closed { failures: 0 },
        }
    }

    pub fn phase(&self) -> Phase {
        match self.state {
            State::Closed { .. } => Phase::Closed,
            State::Open { .. } => Phase::Open,
            State::HalfOpen { .. } => Phase::HalfOpen,
        }
    }

    pub fn admit(&mut self, now: Instant) -> Admit {
        match self.state {
            State::Closed { .. } => Admit::Send,
            State::Open { next_probe, failed_probes } if now >= next_probe => {
                self.state = State::HalfOpen { failed_probes };
                Admit::Probe
            }
            State::Open { next_probe, .. } => Admit::WaitUntil(next_probe),
            State::HalfOpen { .. } => Admit::WaitForProbe,
        }
    }

    /// The receiver answered (2xx, or an error about the event itself): it is up. True when
    /// this closed the circuit.
    pub fn succeeded(&mut self) -> bool {
        let was_closed = matches!(self.state, State::Closed { .. });
        self.state = State::Closed { failures: 0 };
        !was_closed
    }

    /// The receiver failed (no answer, 5xx, 408, 429). `probe`: this request was the probe.
    /// True when this opened the circuit (from closed or half-open).
    pub fn failed(&mut self, now: Instant, probe: bool) -> bool {
        match self.state {
            State::Closed { failures } => {
                let failures = failures + 1;
                if failures >= self.policy.failures_to_open {
                    self.open(now, 0);
                    true
                } else {
                    self.state = State::Closed { failures };
                    false
                }
            }
            State::HalfOpen { failed_probes } if probe => {
                self.open(now, failed_probes.saturating_add(1));
                true
            }
            // A request sent before the circuit opened: it tells nothing new.
            State::HalfOpen { .. } | State::Open { .. } => false,
        }
    }

    /// The probe ended without an answer to judge by (its partition went elsewhere, or the
    /// notifier stops): another may probe at once.
    pub fn probe_abandoned(&mut self, now: Instant) {
        if let State::HalfOpen { failed_probes } = self.state {
            self.state = State::Open { next_probe: now, failed_probes };
        }
    }

    fn open(&mut self, now: Instant, failed_probes: u32) {
        let next_probe = now + self.policy.probe_delay(failed_probes);
        self.state = State::Open { next_probe, failed_probes };
    }
}

/// One app's circuit, shared by its users' delivery tasks; `changed` wakes those waiting.
pub struct AppCircuit {
    circuit: Mutex<Circuit>,
    changed: Notify,
}

impl AppCircuit {
    pub fn new(policy: CircuitPolicy) -> Arc<Self> {
        Arc::new(Self { circuit: Mutex::new(Circuit::new(policy)), changed: Notify::new() })
    }

    pub fn phase(&self) -> Phase {
        self.circuit.lock().phase()
    }

    pub fn admit(&self) -> Admit {
        self.circuit.lock().admit(Instant::now())
    }

    /// Resolves once the circuit changes after this call (enable it before [`Self::admit`] so
    /// that a change in between is not missed).
    pub fn changed(&self) -> Notified<'_> {
        self.changed.notified()
    }

    /// Records an outcome; returns the phase before and after when it changed.
    pub fn record(&self, outcome: impl FnOnce(&mut Circuit, Instant) -> bool) -> Option<(Phase, Phase)> {
        let (before, after, changed) = {
            let mut circuit = self.circuit.lock();
            let before = circuit.phase();
            let changed = outcome(&mut circuit, Instant::now());
            (before, circuit.phase(), changed || before != circuit.phase())
        };
        if changed {
            self.changed.notify_waiters();
            return Some((before, after));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS: Duration = Duration::from_millis(1);

    fn policy() -> CircuitPolicy {
        CircuitPolicy { failures_to_open: 3, probe_initial: 100 * MS, probe_max: 1000 * MS }
    }

    #[test]
    fn opens_after_consecutive_failures_only() {
        let t = Instant::now();
        let mut c = Circuit::new(policy());
        assert!(!c.failed(t, false));
        assert!(!c.failed(t, false));
        assert!(!c.succeeded(), "closed already");
        assert!(!c.failed(t, false));
        assert!(!c.failed(t, false), "a success in between reset the count");
        assert_eq!(c.admit(t), Admit::Send);
        assert!(c.failed(t, false), "the third in a row opens it");
        assert_eq!(c.phase(), Phase::Open);
        assert_eq!(c.admit(t + 50 * MS), Admit::WaitUntil(t + 100 * MS));
    }

    #[test]
    fn one_probe_at_a_time_with_a_growing_capped_wait_between_probes() {
        let t = Instant::now();
        let mut c = Circuit::new(CircuitPolicy { failures_to_open: 1, ..policy() });
        assert!(c.failed(t, false));
        let mut now = t + 100 * MS;
        for expected_wait in [200, 400, 800, 1000, 1000] {
            assert_eq!(c.admit(now), Admit::Probe);
            assert_eq!(c.phase(), Phase::HalfOpen);
            assert_eq!(c.admit(now), Admit::WaitForProbe, "a second request waits for the probe");
            assert!(!c.failed(now, false), "a late failure of an earlier request changes nothing");
            assert!(c.failed(now, true), "the failed probe opens it again");
            assert_eq!(c.admit(now), Admit::WaitUntil(now + expected_wait * MS));
            now += expected_wait * MS;
        }
        assert_eq!(c.admit(now), Admit::Probe);
        assert!(c.succeeded(), "the probe's success closes it");
        assert_eq!(c.admit(now), Admit::Send);
        assert!(c.failed(now, false), "closed, then open again at the next failure");
        assert_eq!(c.admit(now), Admit::WaitUntil(now + 100 * MS), "the probe wait starts over");
    }

    #[test]
    fn an_abandoned_probe_lets_another_probe_at_once() {
        let t = Instant::now();
        let mut c = Circuit::new(CircuitPolicy { failures_to_open: 1, ..policy() });
        c.failed(t, false);
        assert_eq!(c.admit(t + 100 * MS), Admit::Probe);
        c.probe_abandoned(t + 150 * MS);
        assert_eq!(c.admit(t + 150 * MS), Admit::Probe);
        c.probe_abandoned(t + 150 * MS);
        c.succeeded();
        c.probe_abandoned(t + 200 * MS);
        assert_eq!(c.phase(), Phase::Closed, "abandoning means nothing once closed");
    }

    #[test]
    fn any_answer_closes_an_open_circuit() {
        let t = Instant::now();
        let mut c = Circuit::new(CircuitPolicy { failures_to_open: 1, ..policy() });
        c.failed(t, false);
        assert!(c.succeeded(), "a request in flight before it opened got through");
        assert_eq!(c.admit(t), Admit::Send);
    }

    #[test]
    fn probe_delays_saturate() {
        let p = CircuitPolicy {
            failures_to_open: 1,
            probe_initial: Duration::from_secs(1),
            probe_max: Duration::MAX,
        };
        assert_eq!(p.probe_delay(0), Duration::from_secs(1));
        assert_eq!(p.probe_delay(3), Duration::from_secs(8));
        assert!(p.probe_delay(u32::MAX) >= Duration::from_secs(1 << 31));
    }
}
