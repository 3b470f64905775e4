//! The gateway's one long-lived link to the registry (`GatewayLink.Attach`): hello, a snapshot of
//! the live sessions and watched users, then lease renewals up, and kicks and watched users'
//! statuses down. Any failure re-attaches after a
//! capped backoff with a fresh snapshot; device connections stay up meanwhile.

use std::{
    sync::{
        Arc,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use presence_common::backoff::Backoff;
use presence_common::internal_auth::RegistryChannel;
use presence_proto::v1::{
    GatewayUplink, Hello, Kicked, LeaseRenewal, SessionSnapshot, WatchedApp, gateway_downlink,
    gateway_link_client::GatewayLinkClient, gateway_uplink,
};
use tokio::sync::mpsc;
use tokio_stream::{StreamExt, wrappers::ReceiverStream};

use crate::{Shutdown, metric_names as m, sessions::SessionTable, subscriptions::Subscriptions};

/// Sessions per snapshot chunk.
pub const SNAPSHOT_CHUNK: usize = 1000;
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);

/// Whether the link is attached (logins need it).
#[derive(Clone, Default)]
pub struct LinkState(Arc<AtomicBool>);

impl LinkState {
    pub fn is_attached(&self) -> bool {
        self.0.load(Ordering::Acquire)
    }

    fn set(&self, attached: bool) {
        // One gauge over every registry's link: count transitions.
        if self.0.swap(attached, Ordering::AcqRel) != attached {
            let gauge = metrics::gauge!(m::LINK_ATTACHED);
            if attached { gauge.increment(1.0) } else { gauge.decrement(1.0) }
        }
    }
}

/// Hello then the snapshot in chunks of at most [`SNAPSHOT_CHUNK`] sessions or watched users;
/// the last chunk has `last`.
pub fn attach_messages(
    gateway_id: &str,
    sessions: &SessionTable,
    watching: Vec<WatchedApp>,
) -> Vec<GatewayUplink> {
    let mut chunks: Vec<SessionSnapshot> = sessions
        .live()
        .chunks(SNAPSHOT_CHUNK)
        .map(|c| SessionSnapshot { sessions: c.to_vec(), ..Default::default() })
        .collect();
    for app in watching {
        for users in app.users.chunks(SNAPSHOT_CHUNK) {
            let watching = vec![WatchedApp { app_id: app.app_id.clone(), users: users.to_vec() }];
            chunks.push(SessionSnapshot { watching, ..Default::default() });
        }
    }
    let mut last = chunks.pop().unwrap_or_default();
    last.last = true;
    chunks.push(last);
    let hello = GatewayUplink {
        kind: Some(gateway_uplink::Kind::Hello(Hello { gateway_id: gateway_id.to_owned() })),
    };
    std::iter::once(hello)
        .chain(
            chunks
                .into_iter()
                .map(|chunk| GatewayUplink { kind: Some(gateway_uplink::Kind::Snapshot(chunk)) }),
        )
        .collect()
}

/// Keeps the link attached until `shutdown`, then closes the stream (a clean detach).
pub async fn run(
    channel: RegistryChannel,
    gateway_id: String,
    sessions: SessionTable,
    subscriptions: Subscriptions,
    state: LinkState,
    shutdown: Shutdown,
) {
    let mut backoff = Backoff::new(BACKOFF_MIN, BACKOFF_MAX);
    while !shutdown.is_cancelled() {
        let attached = attach_once(&channel, &gateway_id, &sessions, &subscriptions, &state, &shutdown).await;
        if attached.is_ok() {
            backoff.reset();
        }
        let delay = backoff.next_delay();
        if let Err(err) = attached {
            tracing::warn!(%err, ?delay, "registry link down; re-attaching");
        }
        state.set(false);
        if shutdown.is_cancelled() {
            break;
        }
        tokio::select! {
            () = shutdown.cancelled() => break,
            () = tokio::time::sleep(delay) => {}
        }
    }
    state.set(false);
}

/// One attach: returns `Ok` when the stream ended after having been attached (backoff resets).
async fn attach_once(
    channel: &RegistryChannel,
    gateway_id: &str,
    sessions: &SessionTable,
    subscriptions: &Subscriptions,
    state: &LinkState,
    shutdown: &Shutdown,
) -> Result<(), tonic::Status> {
    let (renew_tx, renew_rx) = mpsc::channel::<GatewayUplink>(4);
    let snapshot = attach_messages(gateway_id, sessions, subscriptions.watching());
    let uplink = tokio_stream::iter(snapshot).chain(ReceiverStream::new(renew_rx));
    let mut client = GatewayLinkClient::new(channel.clone());
    let mut downlink = tokio::select! {
        () = shutdown.cancelled() => return Ok(()),
        response = client.attach(uplink) => response?.into_inner(),
    };
    let lease_s = loop {
        let message = tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            message = downlink.message() => message?,
        };
        match message.and_then(|m| m.kind) {
            Some(gateway_downlink::Kind::Attached(attached)) => break attached.lease_s.max(1),
            Some(gateway_downlink::Kind::Kick(kick)) => deliver(sessions, kick),
            Some(gateway_downlink::Kind::Status(push)) => subscriptions.publish(sessions, push),
            // Not attached yet: the snapshot being reconciled is already fresh.
            Some(gateway_downlink::Kind::Resync(_)) => {}
            None => return Err(tonic::Status::unavailable("registry closed the link before Attached")),
        }
    };
    state.set(true);
    metrics::counter!(m::LINK_ATTACHES).increment(1);
    tracing::info!(gateway_id, lease_s, sessions = sessions.len(), "attached to the registry");

    let every = Duration::from_millis(u64::from(lease_s) * 1000 / 3).max(Duration::from_millis(100));
    let mut renew = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return Ok(()),
            _ = renew.tick() => {
                let renewal = GatewayUplink { kind: Some(gateway_uplink::Kind::Renew(LeaseRenewal {})) };
                if renew_tx.send(renewal).await.is_err() {
                    return Err(tonic::Status::unavailable("uplink closed"));
                }
            }
            message = downlink.message() => match message?.and_then(|m| m.kind) {
                Some(gateway_downlink::Kind::Kick(kick)) => deliver(sessions, kick),
                Some(gateway_downlink::Kind::Status(push)) => subscriptions.publish(sessions, push),
                Some(gateway_downlink::Kind::Attached(_)) => {}
                Some(gateway_downlink::Kind::Resync(_)) => {
                    // The registry took over partitions: re-attach with a fresh snapshot.
                    tracing::info!(gateway_id, "registry asked for a resync; re-attaching");
                    return Ok(());
                }
                None => return Err(tonic::Status::unavailable("registry closed the link")),
            },
        }
    }
}

fn deliver(sessions: &SessionTable, kick: presence_proto::v1::KickSession) {
    let kicked =
        Kicked { reason: kick.reason, by_platform: kick.by_platform, by_device_id: kick.by_device_id };
    if sessions.kick(&kick.session_id, kicked) {
        metrics::counter!(m::KICKS_DELIVERED).increment(1);
    } else {
        tracing::debug!(session_id = %kick.session_id, "kick for a session no longer here");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_snapshot_is_one_last_chunk() {
        let messages = attach_messages("gw", &SessionTable::default(), Vec::new());
        assert_eq!(messages.len(), 2);
        assert!(matches!(&messages[0].kind, Some(gateway_uplink::Kind::Hello(h)) if h.gateway_id == "gw"));
        assert!(
            matches!(&messages[1].kind, Some(gateway_uplink::Kind::Snapshot(s)) if s.last && s.sessions.is_empty())
        );
    }

    #[test]
    fn sessions_go_out_in_chunks_of_a_thousand_with_pending_ones_marked() {
        use crate::sessions::SessionHandle;
        let table = SessionTable::default();
        let mut first = None;
        for i in 0..2_501 {
            let handle = SessionHandle::new("a", &format!("u{i}"), "d", 1);
            // One pending login: not asserted until the registry confirmed it.
            handle.confirmed.store(i != 0, Ordering::Release);
            let id = uuid::Uuid::now_v7();
            first.get_or_insert(id);
            table.insert(id, std::sync::Arc::new(handle));
        }
        let chunks: Vec<_> = attach_messages("gw", &table, Vec::new())
            .into_iter()
            .skip(1)
            .map(|m| match m.kind {
                Some(gateway_uplink::Kind::Snapshot(s)) => (s.sessions.len(), s.last),
                other => panic!("{other:?}"),
            })
            .collect();
        assert_eq!(chunks, vec![(1000, false), (1000, false), (501, true)]);
        let pending: Vec<_> = attach_messages("gw", &table, Vec::new())
            .into_iter()
            .filter_map(|m| match m.kind {
                Some(gateway_uplink::Kind::Snapshot(s)) => Some(s.sessions),
                _ => None,
            })
            .flatten()
            .filter(|s| s.pending)
            .map(|s| s.session_id)
            .collect();
        assert_eq!(pending, [first.unwrap().to_string()]);
    }
}
