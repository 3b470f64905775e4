//! What one shard measured, and the merged summary of all shards.

use std::collections::BTreeMap;

use presence_bench::{
    device::Transport,
    stats::{Percentiles, percentiles},
};
use serde::{Deserialize, Serialize};

/// Raw measurements of one process.
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ShardReport {
    pub connected: usize,
    pub errors: BTreeMap<String, usize>,
    /// Connect + handshake latency of each device, in microseconds.
    pub connect_us: Vec<u64>,
    /// New login sent -> old socket closed, in microseconds.
    pub kick_us: Vec<u64>,
    /// Seconds the first wave took.
    pub wave_s: f64,
    /// With --expect-timeout-s: silent devices held, how late the peer closed each (us), those
    /// closed before the timeout, those still open at the end, and heartbeating devices closed.
    #[serde(default)]
    pub silent: usize,
    #[serde(default)]
    pub timeout_late_us: Vec<u64>,
    #[serde(default)]
    pub timeout_early: usize,
    #[serde(default)]
    pub silent_not_closed: usize,
    #[serde(default)]
    pub false_offlines: usize,
}

impl ShardReport {
    pub fn count_error(&mut self, what: &str) {
        *self.errors.entry(what.to_owned()).or_default() += 1;
    }
}

/// The run's figures.
#[derive(Debug, Serialize)]
pub struct Summary {
    pub mode: String,
    /// tcp or ws (presence over WebSocket).
    pub transport: Transport,
    pub devices: usize,
    pub processes: usize,
    pub connected: usize,
    pub errors: BTreeMap<String, usize>,
    pub wave_s: f64,
    /// Handshakes completed per second in the first wave(s).
    pub rate_per_s: f64,
    pub connect: Percentiles,
    pub kick: Percentiles,
    /// Timeout accuracy (with --expect-timeout-s).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeouts: Option<Timeouts>,
}

/// How the peer's silence timeout behaved.
#[derive(Debug, Default, Serialize)]
pub struct Timeouts {
    /// Silent devices held.
    pub silent: usize,
    /// Silent devices the peer closed at or after the timeout.
    pub closed: usize,
    /// close - (last frame sent + timeout) of those.
    pub late: Percentiles,
    /// Silent devices the peer closed before the timeout was due.
    pub early: usize,
    /// Silent devices still open when the hold ended.
    pub not_closed: usize,
    /// Heartbeating devices the peer closed during the hold.
    pub false_offlines: usize,
}

impl Summary {
    pub fn merge(mode: &str, transport: Transport, devices: usize, reports: Vec<ShardReport>) -> Self {
        let processes = reports.len();
        let mut errors = BTreeMap::new();
        let (mut connect_us, mut kick_us) = (Vec::new(), Vec::new());
        let (mut connected, mut wave_s) = (0, 0.0f64);
        let mut timeouts = Timeouts::default();
        let mut late_us = Vec::new();
        for r in reports {
            timeouts.silent += r.silent;
            timeouts.early += r.timeout_early;
            timeouts.not_closed += r.silent_not_closed;
            timeouts.false_offlines += r.false_offlines;
            late_us.extend(r.timeout_late_us);
            connected += r.connected;
            wave_s = wave_s.max(r.wave_s);
            connect_us.extend(r.connect_us);
            kick_us.extend(r.kick_us);
            for (k, v) in r.errors {
                *errors.entry(k).or_default() += v;
            }
        }
        let first_wave = connect_us.len().min(devices);
        timeouts.closed = late_us.len();
        timeouts.late = percentiles(&mut late_us);
        Self {
            mode: mode.to_owned(),
            transport,
            devices,
            processes,
            connected,
            errors,
            wave_s,
            rate_per_s: if wave_s > 0.0 { first_wave as f64 / wave_s } else { 0.0 },
            connect: percentiles(&mut connect_us),
            kick: percentiles(&mut kick_us),
            timeouts: Some(timeouts),
        }
    }

    /// One human-readable block for stderr.
    pub fn table(&self) -> String {
        let row = |name: &str, p: &Percentiles| {
            format!(
                "{name:<8} n={:<7} p50={:>8.2}ms p90={:>8.2}ms p99={:>8.2}ms max={:>8.2}ms",
                p.count, p.p50_ms, p.p90_ms, p.p99_ms, p.max_ms
            )
        };
        let timeouts = self.timeouts.as_ref().map_or_else(String::new, |t| {
            format!(
                "\n{}\nsilent {}: closed {} early {} not closed {}; false offlines {}",
                row("late", &t.late),
                t.silent,
                t.closed,
                t.early,
                t.not_closed,
                t.false_offlines
            )
        });
        format!(
            "{} over {} x{} in {} process(es): {} connected, {:.0}/s over {:.2}s, errors {:?}\n{}\n{}{timeouts}",
            self.mode,
            self.transport,
            self.devices,
            self.processes,
            self.connected,
            self.rate_per_s,
            self.wave_s,
            self.errors,
            row("connect", &self.connect),
            row("kick", &self.kick)
        )
    }
}
