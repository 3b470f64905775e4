//! Per-source-IP abuse limits: concurrent connections and login attempts (token bucket).
//!
//! One map entry per source IP that has a connection open (or a login bucket still refilling),
//! none per connection and no timers per connection: an entry is dropped when its last
//! connection closes with a full bucket, and a sweep every [`SWEEP_EVERY`] drops the rest. With
//! both limits off (the default) nothing is tracked at all.

use std::{
    net::IpAddr,
    sync::Arc,
    time::{Duration, Instant},
};

use dashmap::DashMap;

/// How often entries of IPs with no connection and a full bucket are dropped.
pub const SWEEP_EVERY: Duration = Duration::from_secs(10);

/// The limits, as configured; 0 turns a limit off.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct LimitSettings {
    /// Most concurrent connections from one IP.
    pub max_connections_per_ip: u32,
    /// Login attempts per second from one IP (refill rate of the bucket).
    pub login_rate_per_ip: f64,
    /// Bucket size: login attempts one IP may make at once after being quiet.
    pub login_burst_per_ip: u32,
}

#[derive(Debug)]
struct IpEntry {
    connections: u32,
    tokens: f64,
    refilled: Instant,
}

/// Shared by the accept loop (connections) and every connection (logins).
#[derive(Debug, Clone)]
pub struct IpLimits {
    inner: Option<Arc<Inner>>,
}

#[derive(Debug)]
struct Inner {
    settings: LimitSettings,
    ips: DashMap<IpAddr, IpEntry>,
}

/// One counted connection; releases its slot when dropped.
#[derive(Debug)]
pub struct IpSlot {
    inner: Option<(Arc<Inner>, IpAddr)>,
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        if let Some((inner, ip)) = self.inner.take() {
            inner.release(ip);
        }
    }
}

/// `::ffff:a.b.c.d` and `a.b.c.d` are one source.
fn canonical(ip: IpAddr) -> IpAddr {
    ip.to_canonical()
}

impl IpLimits {
    pub fn new(settings: LimitSettings) -> Self {
        let on = settings.max_connections_per_ip > 0 || settings.login_rate_per_ip > 0.0;
        Self { inner: on.then(|| Arc::new(Inner { settings, ips: DashMap::new() })) }
    }

    /// A slot for a new connection from `ip`, or `None` when that IP is at its limit.
    pub fn try_connect(&self, ip: IpAddr) -> Option<IpSlot> {
        let Some(inner) = &self.inner else { return Some(IpSlot { inner: None }) };
        let ip = canonical(ip);
        let max = inner.settings.max_connections_per_ip;
        let mut entry = inner.ips.entry(ip).or_insert_with(|| IpEntry {
            connections: 0,
            tokens: f64::from(inner.settings.burst()),
            refilled: Instant::now(),
        });
        if max > 0 && entry.connections >= max {
            return None;
        }
        entry.connections += 1;
        Some(IpSlot { inner: Some((inner.clone(), ip)) })
    }

    /// Takes one login token of `ip`; false when the IP is over its login rate.
    pub fn allow_login(&self, ip: IpAddr) -> bool {
        let Some(inner) = &self.inner else { return true };
        let rate = inner.settings.login_rate_per_ip;
        if rate <= 0.0 {
            return true;
        }
        let now = Instant::now();
        let burst = f64::from(inner.settings.burst());
        // The connection holds a slot, so the entry normally exists; recreate it if not.
        let mut entry = inner.ips.entry(canonical(ip)).or_insert_with(|| IpEntry {
            connections: 0,
            tokens: burst,
            refilled: now,
        });
        entry.refill(now, rate, burst);
        if entry.tokens >= 1.0 {
            entry.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    /// Drops entries with no connection and a full bucket (those forgotten by [`IpSlot`]'s drop).
    pub fn sweep(&self) {
        if let Some(inner) = &self.inner {
            let now = Instant::now();
            inner.ips.retain(|_, e| !inner.idle(e, now));
        }
    }

    /// Source IPs currently tracked.
    pub fn tracked_ips(&self) -> usize {
        self.inner.as_ref().map_or(0, |inner| inner.ips.len())
    }

    /// Whether any limit is on.
    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }
}

impl LimitSettings {
    /// The bucket size: the configured burst, else twice the rate (at least 1).
    fn burst(&self) -> u32 {
        if self.login_burst_per_ip > 0 {
            return self.login_burst_per_ip;
        }
        // Saturating float-to-int cast; the rate is small and non-negative in practice.
        ((self.login_rate_per_ip * 2.0).ceil() as u32).max(1)
    }
}

impl IpEntry {
    fn refill(&mut self, now: Instant, rate: f64, burst: f64) {
        let elapsed = now.saturating_duration_since(self.refilled).as_secs_f64();
        self.tokens = (self.tokens + elapsed * rate).min(burst);
        self.refilled = now;
    }
}

impl Inner {
    /// No connection, and the bucket would be full by now: the entry carries no state.
    fn idle(&self, e: &IpEntry, now: Instant) -> bool {
        if e.connections > 0 {
            return false;
        }
        let rate = self.settings.login_rate_per_ip;
        if rate <= 0.0 {
            return true;
        }
        let elapsed = now.saturating_duration_since(e.refilled).as_secs_f64();
        e.tokens + elapsed * rate >= f64::from(self.settings.burst())
    }

    fn release(&self, ip: IpAddr) {
        let now_empty = match self.ips.get_mut(&ip) {
            Some(mut entry) => {
                entry.connections = entry.connections.saturating_sub(1);
                entry.connections == 0
            }
            None => false,
        };
        // The guard above is dropped: `remove_if` locks the same shard.
        if now_empty {
            let now = Instant::now();
            self.ips.remove_if(&ip, |_, e| self.idle(e, now));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    #[test]
    fn off_tracks_nothing() {
        let limits = IpLimits::new(LimitSettings::default());
        assert!(!limits.is_enabled());
        let slots: Vec<_> = (0..100).map(|_| limits.try_connect(ip(2))).collect();
        assert!(slots.iter().all(Option::is_some));
        assert!((0..100).all(|_| limits.allow_login(ip(2))));
        assert_eq!(limits.tracked_ips(), 0);
    }

    #[test]
    fn connections_are_capped_per_ip_and_released() {
        let limits = IpLimits::new(LimitSettings { max_connections_per_ip: 2, ..Default::default() });
        let a = limits.try_connect(ip(2)).expect("first");
        let b = limits.try_connect(ip(2)).expect("second");
        assert!(limits.try_connect(ip(2)).is_none());
        let other = limits.try_connect(ip(3)).expect("another IP is not affected");
        // IPv4-mapped IPv6 is the same source.
        assert!(limits.try_connect("::ffff:127.0.0.2".parse().unwrap()).is_none());
        drop(a);
        let c = limits.try_connect(ip(2)).expect("a slot came free");
        drop((b, c, other));
        assert_eq!(limits.tracked_ips(), 0, "entries go with their last connection");
    }

    #[test]
    fn logins_follow_a_token_bucket() {
        let limits = IpLimits::new(LimitSettings {
            login_rate_per_ip: 1000.0,
            login_burst_per_ip: 3,
            ..Default::default()
        });
        let slot = limits.try_connect(ip(2));
        // The burst, then refusals (1000/s refills one token per ms; the loop is faster).
        let allowed = (0..50).filter(|_| limits.allow_login(ip(2))).count();
        assert!((3..10).contains(&allowed), "{allowed}");
        assert!(limits.allow_login(ip(3)), "another IP has its own bucket");
        std::thread::sleep(Duration::from_millis(5));
        assert!(limits.allow_login(ip(2)), "refilled");
        drop(slot);
        std::thread::sleep(Duration::from_millis(10));
        limits.sweep();
        assert_eq!(limits.tracked_ips(), 0, "full buckets without connections are swept");
    }

    #[test]
    fn a_drained_bucket_outlives_its_connection() {
        let limits = IpLimits::new(LimitSettings { login_rate_per_ip: 0.001, ..Default::default() });
        let slot = limits.try_connect(ip(2));
        assert!(limits.allow_login(ip(2)));
        assert!(!limits.allow_login(ip(2)));
        drop(slot);
        limits.sweep();
        // Reconnecting does not buy a fresh bucket.
        let _slot = limits.try_connect(ip(2));
        assert!(!limits.allow_login(ip(2)));
    }

    #[test]
    fn default_burst_is_twice_the_rate() {
        let s = |rate, burst| LimitSettings {
            login_rate_per_ip: rate,
            login_burst_per_ip: burst,
            ..Default::default()
        };
        assert_eq!(s(5.0, 0).burst(), 10);
        assert_eq!(s(0.2, 0).burst(), 1);
        assert_eq!(s(5.0, 3).burst(), 3);
    }
}
