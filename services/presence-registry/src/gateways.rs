//! The gateways the registry knows: their downlink for kicks and status pushes, and their lease.
//!
//! A gateway is alive while it renews its lease. Its stream ending does not end the lease: a
//! gateway that re-attaches in time (after a registry or network hiccup) keeps every device. One
//! whose lease runs out is presumed dead, and its devices are disconnected with `link_close`.

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use parking_lot::Mutex;

use presence_proto::v1::{GatewayDownlink, KickSession, Resync, StatusPush, gateway_downlink::Kind};
use tokio::sync::mpsc::UnboundedSender;

use crate::metric_names as m;

pub type Downlink = UnboundedSender<Result<GatewayDownlink, tonic::Status>>;

struct Gateway {
    downlink: Option<(u64, Downlink)>,
    deadline: Instant,
}

pub struct Gateways {
    lease: Duration,
    inner: Mutex<HashMap<String, Gateway>>,
    next_generation: std::sync::atomic::AtomicU64,
    /// Gateway ids by number: users' watchers name their gateway in 4 bytes.
    numbers: Mutex<Numbers>,
}

#[derive(Default)]
struct Numbers {
    of: HashMap<String, u32>,
    ids: Vec<String>,
}

/// What became of a status push.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pushed {
    Sent,
    /// The gateway is between links: its next attach re-asserts its interest and gets the
    /// current status then.
    Detached,
    /// The gateway is gone (its lease ran out): its interest can be dropped.
    Gone,
}

impl Gateways {
    pub fn new(lease: Duration) -> Self {
        Self { lease, inner: Mutex::default(), next_generation: 1.into(), numbers: Mutex::default() }
    }

    /// The gateway's number (given on first use, never reused while this process runs).
    pub fn number(&self, gateway_id: &str) -> u32 {
        let mut numbers = self.numbers.lock();
        if let Some(number) = numbers.of.get(gateway_id) {
            return *number;
        }
        let number = u32::try_from(numbers.ids.len()).unwrap_or(u32::MAX);
        numbers.ids.push(gateway_id.to_owned());
        numbers.of.insert(gateway_id.to_owned(), number);
        number
    }

    /// Sends a watched user's status down the link of gateway `number`.
    pub fn push(&self, number: u32, push: StatusPush) -> Pushed {
        let Some(gateway_id) = self.numbers.lock().ids.get(number as usize).cloned() else {
            return Pushed::Gone;
        };
        let inner = self.inner.lock();
        let Some(gateway) = inner.get(&gateway_id) else { return Pushed::Gone };
        let sent = gateway
            .downlink
            .as_ref()
            .is_some_and(|(_, tx)| tx.send(Ok(GatewayDownlink { kind: Some(Kind::Status(push)) })).is_ok());
        metrics::counter!(m::STATUS_PUSHES, "delivered" => if sent { "yes" } else { "no" }).increment(1);
        if sent { Pushed::Sent } else { Pushed::Detached }
    }

    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// A gateway that held devices before this registry restarted gets one lease to re-attach,
    /// else its devices are disconnected. A gateway already known is left as it is.
    pub fn grant_restart_lease(&self, gateway_id: &str) {
        let deadline = Instant::now() + self.lease;
        self.inner.lock().entry(gateway_id.to_owned()).or_insert(Gateway { downlink: None, deadline });
    }

    /// Attaches a (new) stream; returns its generation for [`Gateways::detach`].
    pub fn attach(&self, gateway_id: &str, downlink: Downlink) -> u64 {
        let generation = self.next_generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let deadline = Instant::now() + self.lease;
        self.inner
            .lock()
            .insert(gateway_id.to_owned(), Gateway { downlink: Some((generation, downlink)), deadline });
        metrics::gauge!(m::GATEWAYS_ATTACHED).increment(1.0);
        generation
    }

    /// The stream of `generation` ended; a newer stream of the same gateway is left alone.
    pub fn detach(&self, gateway_id: &str, generation: u64) {
        if let Some(gw) = self.inner.lock().get_mut(gateway_id)
            && gw.downlink.as_ref().is_some_and(|(g, _)| *g == generation)
        {
            gw.downlink = None;
            metrics::gauge!(m::GATEWAYS_ATTACHED).decrement(1.0);
        }
    }

    pub fn renew(&self, gateway_id: &str) {
        if let Some(gw) = self.inner.lock().get_mut(gateway_id) {
            gw.deadline = Instant::now() + self.lease;
        }
    }

    pub fn is_attached(&self, gateway_id: &str) -> bool {
        self.inner.lock().get(gateway_id).is_some_and(|gw| gw.downlink.is_some())
    }

    /// Sends a kick down the gateway's stream; false if it is not attached (its next snapshot
    /// then shows the stale session, and the kick is sent at re-attach).
    pub fn kick(&self, gateway_id: &str, kick: KickSession) -> bool {
        let sent = self
            .inner
            .lock()
            .get(gateway_id)
            .and_then(|gw| gw.downlink.as_ref())
            .is_some_and(|(_, tx)| tx.send(Ok(GatewayDownlink { kind: Some(Kind::Kick(kick)) })).is_ok());
        metrics::counter!(m::KICKS_SENT, "delivered" => if sent { "yes" } else { "no" }).increment(1);
        sent
    }

    /// Asks every attached gateway to re-attach with a fresh snapshot (after a take-over).
    pub fn resync_all(&self) {
        let inner = self.inner.lock();
        for (_, tx) in inner.values().filter_map(|gw| gw.downlink.as_ref()) {
            let _ = tx.send(Ok(GatewayDownlink { kind: Some(Kind::Resync(Resync {})) }));
        }
    }

    /// Gateways whose lease has run out.
    pub fn expired(&self, now: Instant) -> Vec<String> {
        self.inner.lock().iter().filter(|(_, gw)| gw.deadline <= now).map(|(id, _)| id.clone()).collect()
    }

    /// Drops a gateway once its devices are disconnected, unless it came back meanwhile.
    pub fn forget_if_expired(&self, gateway_id: &str, now: Instant) {
        let mut inner = self.inner.lock();
        if inner.get(gateway_id).is_some_and(|gw| gw.deadline <= now)
            && let Some(Gateway { downlink: Some(_), .. }) = inner.remove(gateway_id)
        {
            metrics::gauge!(m::GATEWAYS_ATTACHED).decrement(1.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stale_stream_does_not_detach_a_newer_one() {
        let gateways = Gateways::new(Duration::from_secs(30));
        let (tx1, _rx1) = tokio::sync::mpsc::unbounded_channel();
        let (tx2, mut rx2) = tokio::sync::mpsc::unbounded_channel();
        let first = gateways.attach("gw", tx1);
        let _second = gateways.attach("gw", tx2);
        gateways.detach("gw", first);
        assert!(gateways.is_attached("gw"));
        assert!(gateways.kick("gw", KickSession::default()));
        assert!(rx2.try_recv().is_ok());
    }

    #[test]
    fn leases_expire_unless_renewed() {
        let gateways = Gateways::new(Duration::from_millis(0));
        gateways.grant_restart_lease("gw");
        let later = Instant::now() + Duration::from_millis(1);
        assert_eq!(gateways.expired(later), ["gw"]);
        gateways.forget_if_expired("gw", later);
        assert!(gateways.expired(later).is_empty());
    }
}
