use std::{pin::Pin, time::Duration};

use futures::Stream;
use presence_common::backoff::Backoff;
use presence_common::internal_auth::{Caller, Role};
use presence_proto::limits::{DEFAULT_EVENTS_PAGE, MAX_EVENTS_PAGE};
use presence_proto::v1::{
    PresenceEvent, ReadEventsReply, ReadEventsRequest, SubscribeRequest, event_feed_server::EventFeed,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

use crate::{Shutdown, registry::SharedRegistry};

/// Events read from Postgres per round trip of a subscription.
const PAGE: u32 = 500;
/// Delays between reads of a subscription while Postgres is away.
const READ_RETRY_MIN: Duration = Duration::from_millis(500);
const READ_RETRY_MAX: Duration = Duration::from_secs(5);

pub struct EventFeedService {
    pub registry: SharedRegistry,
    pub shutdown: Shutdown,
}

type EventStream = Pin<Box<dyn Stream<Item = Result<PresenceEvent, Status>> + Send>>;

#[tonic::async_trait]
impl EventFeed for EventFeedService {
    async fn read_events(
        &self,
        request: Request<ReadEventsRequest>,
    ) -> Result<Response<ReadEventsReply>, Status> {
        Caller::require(&request, Role::Facade)?;
        let req = request.into_inner();
        let limit = match req.limit {
            0 => DEFAULT_EVENTS_PAGE,
            n if n <= MAX_EVENTS_PAGE => n,
            _ => return Err(Status::invalid_argument(format!("limit must be 1 to {MAX_EVENTS_PAGE}"))),
        };
        let events = self
            .registry
            .log
            .read_app(&req.app_id, req.after_seq, limit)
            .await
            .map_err(|err| Status::unavailable(err.to_string()))?;
        Ok(Response::new(ReadEventsReply { events }))
    }

    type SubscribeStream = EventStream;

    /// Catch-up from Postgres, then live: the stream waits on the writer's committed feed_id and
    /// reads what is new. A slow subscriber slows only its own reads (bounded channel).
    async fn subscribe(&self, request: Request<SubscribeRequest>) -> Result<Response<EventStream>, Status> {
        Caller::require(&request, Role::Notifier)?;
        let mut cursor = request.into_inner().after_feed_id;
        let (tx, rx) = tokio::sync::mpsc::channel(PAGE as usize * 2);
        let log = self.registry.log.clone();
        let mut committed = log.watch_committed_feed_id();
        let shutdown = self.shutdown.clone();
        tokio::spawn(async move {
            let mut retry = Backoff::new(READ_RETRY_MIN, READ_RETRY_MAX);
            loop {
                if *committed.borrow_and_update() > cursor {
                    match log.read_feed(cursor, PAGE).await {
                        Ok(events) => {
                            retry.reset();
                            for event in events {
                                cursor = event.feed_id;
                                if tx.send(Ok(event)).await.is_err() {
                                    return;
                                }
                            }
                            continue;
                        }
                        Err(err) => {
                            tracing::warn!(%err, "event feed read failed; retrying");
                            tokio::select! {
                                () = shutdown.cancelled() => return,
                                () = tokio::time::sleep(retry.next_delay()) => continue,
                            }
                        }
                    }
                }
                tokio::select! {
                    () = shutdown.cancelled() => return,
                    () = tx.closed() => return,
                    changed = committed.changed() => if changed.is_err() { return },
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
