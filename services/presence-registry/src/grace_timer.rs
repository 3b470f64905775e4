//! Flap damping's clock: a disconnect held for its app's grace is reported when the grace ends,
//! unless the device logged in again meanwhile (the report then finds nothing to do).
//!
//! Holds live in this process only: after a restart or a hand-over, the partition's new owner
//! learns from the gateways which sessions are gone and reports them at once.

use std::time::Duration;

use futures::StreamExt;
use presence_proto::v1::SessionRef;
use tokio::sync::mpsc;
use tokio_util::time::DelayQueue;

use crate::{Shutdown, registry::RegistryError, registry::SharedRegistry};

/// When a report fails for a reason that passes (the database), it is tried again this much later.
const RETRY: Duration = Duration::from_secs(1);

/// The registry's handle: schedules the end of a grace.
pub struct GraceTimer {
    holds: mpsc::UnboundedSender<(SessionRef, Duration)>,
}

/// The timer's side of the handle, for [`run`].
pub struct Holds(mpsc::UnboundedReceiver<(SessionRef, Duration)>);

impl GraceTimer {
    pub fn new() -> (Self, Holds) {
        let (holds, rx) = mpsc::unbounded_channel();
        (Self { holds }, Holds(rx))
    }

    /// Reports `session`'s held disconnect after `grace`. One entry per held disconnect, so the
    /// queue is bounded by the devices online.
    pub fn hold(&self, session: SessionRef, grace: Duration) {
        // Fails only once `run` has stopped (shutdown): holds end with the process anyway.
        let _ = self.holds.send((session, grace));
    }
}

pub async fn run(registry: SharedRegistry, Holds(mut holds): Holds, shutdown: Shutdown) {
    let mut due = DelayQueue::new();
    loop {
        tokio::select! {
            () = shutdown.cancelled() => return,
            Some((session, grace)) = holds.recv() => {
                due.insert(session, grace);
            }
            Some(expired) = due.next(), if !due.is_empty() => {
                let session = expired.into_inner();
                let registry = registry.clone();
                // Concurrently, so that many ends share group commits.
                tokio::spawn(async move {
                    match registry.end_grace(&session).await {
                        Ok(_) => {}
                        // Served elsewhere now: its owner reconciles with the gateways.
                        Err(RegistryError::NotOwner(_)) => {}
                        Err(err) => {
                            tracing::warn!(%err, user_id = %session.user_id, "reporting a held disconnect failed; will retry");
                            registry.graces.hold(session, RETRY);
                        }
                    }
                });
            }
        }
    }
}
