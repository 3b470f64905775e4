use std::pin::Pin;

use futures::Stream;
use presence_common::internal_auth::{Caller, Role};
use presence_proto::limits::{MAX_ID_LEN, is_valid_id};
use presence_proto::v1::{
    Attached, GatewayDownlink, GatewayUplink, LiveSession, WatchedApp, gateway_downlink,
    gateway_link_server::GatewayLink, gateway_uplink::Kind,
};
use tokio_stream::wrappers::UnboundedReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use crate::{Shutdown, registry::SharedRegistry};

/// Most sessions one gateway may re-assert (far above one process's file-descriptor limit).
const MAX_SNAPSHOT: usize = 2_000_000;

pub struct GatewayLinkService {
    pub registry: SharedRegistry,
    pub shutdown: Shutdown,
}

type Downstream = Pin<Box<dyn Stream<Item = Result<GatewayDownlink, Status>> + Send>>;

async fn next(uplink: &mut Streaming<GatewayUplink>) -> Result<Kind, Status> {
    match uplink.message().await? {
        Some(GatewayUplink { kind: Some(kind) }) => Ok(kind),
        Some(GatewayUplink { kind: None }) => Err(Status::invalid_argument("empty uplink message")),
        None => Err(Status::cancelled("gateway closed the stream")),
    }
}

#[tonic::async_trait]
impl GatewayLink for GatewayLinkService {
    type AttachStream = Downstream;

    async fn attach(
        &self,
        request: Request<Streaming<GatewayUplink>>,
    ) -> Result<Response<Downstream>, Status> {
        let caller = Caller::require(&request, Role::Gateway)?.clone();
        let mut uplink = request.into_inner();
        let Kind::Hello(hello) = next(&mut uplink).await? else {
            return Err(Status::invalid_argument("the first uplink message must be Hello"));
        };
        let gateway_id = hello.gateway_id;
        if !is_valid_id(&gateway_id) {
            return Err(Status::invalid_argument(format!("gateway_id must be 1 to {MAX_ID_LEN} bytes")));
        }
        // Attaching as another gateway would disconnect all of its devices.
        caller.acts_for(&gateway_id)?;

        let mut live: Vec<LiveSession> = Vec::new();
        let mut watching: Vec<WatchedApp> = Vec::new();
        let mut watched = 0;
        loop {
            match next(&mut uplink).await? {
                Kind::Snapshot(chunk) => {
                    live.extend(chunk.sessions);
                    watched += chunk.watching.iter().map(|app| app.users.len()).sum::<usize>();
                    watching.extend(chunk.watching);
                    if live.len() > MAX_SNAPSHOT || watched > MAX_SNAPSHOT {
                        return Err(Status::resource_exhausted("snapshot too large"));
                    }
                    if chunk.last {
                        break;
                    }
                }
                Kind::Renew(_) => {}
                Kind::Hello(_) => return Err(Status::invalid_argument("Hello sent twice")),
            }
        }

        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        let generation = self.registry.gateways.attach(&gateway_id, tx.clone());
        let stale = match self.registry.reconcile(&gateway_id, &live).await {
            Ok(stale) => stale,
            Err(err) => {
                self.registry.gateways.detach(&gateway_id, generation);
                return Err(err.into());
            }
        };
        tracing::info!(%gateway_id, sessions = live.len(), stale = stale.len(), "gateway attached");
        let lease_s = u32::try_from(self.registry.gateways.lease().as_secs()).unwrap_or(u32::MAX).max(1);
        let attached = Attached { lease_s, stale_sessions: u32::try_from(stale.len()).unwrap_or(u32::MAX) };
        let _ = tx.send(Ok(GatewayDownlink { kind: Some(gateway_downlink::Kind::Attached(attached)) }));
        for kick in stale {
            let _ = tx.send(Ok(GatewayDownlink { kind: Some(gateway_downlink::Kind::Kick(kick)) }));
        }
        drop(tx);
        if !watching.is_empty() {
            let registry = self.registry.clone();
            let gateway_id = gateway_id.clone();
            // Current statuses follow Attached down the link; the attach does not wait for them.
            tokio::spawn(async move { registry.rewatch(&gateway_id, &watching).await });
        }

        // Renewals until the stream ends; the lease itself outlives the stream.
        let registry = self.registry.clone();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    () = shutdown.cancelled() => break,
                    message = uplink.message() => match message {
                        Ok(Some(_)) => registry.gateways.renew(&gateway_id),
                        Ok(None) | Err(_) => break,
                    },
                }
            }
            registry.gateways.detach(&gateway_id, generation);
            tracing::info!(%gateway_id, "gateway stream ended");
        });

        Ok(Response::new(Box::pin(UnboundedReceiverStream::new(rx))))
    }
}
