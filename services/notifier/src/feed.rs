use std::{sync::Arc, time::Duration};

use parking_lot::Mutex;
use presence_common::internal_auth::CallerToken;
use presence_common::{AppDirectory, backoff::Backoff};
use presence_proto::v1::{SubscribeRequest, event_feed_client::EventFeedClient};
use tokio::sync::Semaphore;
use tonic::transport::Endpoint;

use crate::{Shutdown, callback::Callback, dispatcher::Dispatcher, metric_names, watermark::Watermark};

/// Reads the registry's event feed from `after` on and hands each event to the dispatcher,
/// reconnecting (from the last event received) whenever the registry goes away.
pub struct FeedReader {
    pub endpoint: Endpoint,
    /// Adds this notifier's caller token to the subscription.
    pub token: CallerToken,
    pub apps: AppDirectory,
    pub dispatcher: Dispatcher,
    pub watermark: Arc<Mutex<Watermark>>,
    /// In-memory budget: when every permit is held by an undelivered event, reading pauses and
    /// gRPC flow control holds the registry back.
    pub budget: Arc<Semaphore>,
    pub shutdown: Shutdown,
}

const RECONNECT_MIN: Duration = Duration::from_millis(100);
const RECONNECT_MAX: Duration = Duration::from_secs(5);

impl FeedReader {
    pub async fn run(self, mut after: u64) {
        let mut backoff = Backoff::new(RECONNECT_MIN, RECONNECT_MAX);
        while !self.shutdown.is_cancelled() {
            match self.follow(&mut after, &mut backoff).await {
                Ok(()) => tracing::info!(after, "event feed ended; resubscribing"),
                Err(status) => tracing::warn!(after, %status, "event feed unavailable; retrying"),
            }
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(backoff.next_delay()) => {}
            }
        }
    }

    /// One subscription, until it ends, fails, or shutdown.
    async fn follow(&self, after: &mut u64, backoff: &mut Backoff) -> Result<(), tonic::Status> {
        let channel =
            self.endpoint.connect().await.map_err(|err| tonic::Status::unavailable(err.to_string()))?;
        let mut stream = EventFeedClient::with_interceptor(channel, self.token.clone())
            .subscribe(SubscribeRequest { after_feed_id: *after })
            .await?
            .into_inner();
        tracing::info!(after = *after, "following the event feed");
        loop {
            let message = tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                message = stream.message() => message?,
            };
            let Some(event) = message else { return Ok(()) };
            backoff.reset();
            *after = event.feed_id;
            if self.apps.get(&event.app_id).is_none_or(|app| app.callback_url.is_none()) {
                metrics::counter!(metric_names::SKIPPED).increment(1);
                let mut watermark = self.watermark.lock();
                watermark.received(event.feed_id, event.event_time_ms);
                watermark.settled(event.feed_id);
                continue;
            }
            let callback = match Callback::from_event(&event) {
                Ok(callback) => callback,
                Err(err) => {
                    tracing::error!(%err, event_id = event.event_id, "event cannot be encoded; skipped");
                    continue;
                }
            };
            let permit = tokio::select! {
                () = self.shutdown.cancelled() => return Ok(()),
                permit = self.budget.clone().acquire_owned() => permit.ok(),
            };
            self.watermark.lock().received(event.feed_id, event.event_time_ms);
            self.dispatcher.enqueue(callback, permit);
        }
    }
}
