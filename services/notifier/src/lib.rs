//! notifier: delivers the registry's presence events to each app's callback URL.
//!
//! It follows the registry's event feed from a durable cursor, queues events per user (one
//! user's events in order, different users concurrently, bounded per app), signs and POSTs them
//! as http-api.md specifies, retries with backoff, and dead-letters what fails for too long.
//! The cursor only passes events that are delivered or dead-lettered, so a restart loses
//! nothing; receivers dedupe by `event_id`. See `docs/architecture.md`.

mod callback;
mod config;
mod cursor_store;
mod dead_letters;
mod delivery;
mod dispatcher;
mod feed;
mod metric_names;
mod retry;
mod watermark;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use parking_lot::Mutex;
use presence_common::{AppDirectory, db};
use tokio::{sync::Semaphore, task::JoinHandle};

pub use config::NotifierConfig;
pub use presence_common::Shutdown;

use crate::{
    cursor_store::CursorStore,
    dead_letters::DeadLetters,
    delivery::CallbackDelivery,
    dispatcher::{Dispatcher, DispatcherParts},
    feed::FeedReader,
    retry::RetryPolicy,
    watermark::Watermark,
};

/// Dead letters claimed for replay per round.
const REPLAY_BATCH: i64 = 100;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Directory(#[from] presence_common::app_directory::DirectoryError),
    #[error("reading the cursor: {0}")]
    Cursor(#[from] sqlx::Error),
    #[error(transparent)]
    Registry(#[from] presence_common::grpc_tls::GrpcTlsError),
    #[error(transparent)]
    InternalAuth(#[from] presence_common::internal_auth::AuthConfigError),
    #[error("HTTP client: {0}")]
    Client(#[from] reqwest::Error),
    #[error(transparent)]
    Bind(#[from] presence_common::net::BindError),
    #[error("metrics server: {0}")]
    Metrics(std::io::Error),
    #[error("task: {0}")]
    Join(#[from] tokio::task::JoinError),
}

/// A started notifier.
pub struct RunningNotifier {
    pub metrics_addr: SocketAddr,
    http: JoinHandle<std::io::Result<()>>,
    bookkeeping: JoinHandle<()>,
}

impl RunningNotifier {
    /// Until `shutdown` stopped everything and the cursor is saved.
    pub async fn wait(self) -> Result<(), StartError> {
        self.bookkeeping.await?;
        self.http.await?.map_err(StartError::Metrics)?;
        Ok(())
    }
}

/// Connects to Postgres, reads the cursor, and delivers until `shutdown`.
pub async fn start(config: NotifierConfig, shutdown: Shutdown) -> Result<RunningNotifier, StartError> {
    metric_names::describe();
    let pool = db::connect(&config.database_url, config.db_max_connections, &shutdown).await?;
    let apps = AppDirectory::start(pool.clone(), shutdown.clone()).await?;
    let cursor = CursorStore::new(pool.clone(), config.consumer.clone());
    let after = cursor.load().await?;
    let endpoint = config
        .registry_tls
        .endpoint(&config.registry_url)?
        .connect_timeout(Duration::from_secs(2))
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(5));
    let (metrics_listener, metrics_addr) = presence_common::net::bind(config.metrics_addr).await?;

    let watermark = Arc::new(Mutex::new(Watermark::starting_at(after)));
    let dead_letters = DeadLetters::new(pool.clone());
    let dispatcher = Dispatcher::new(DispatcherParts {
        delivery: CallbackDelivery::new(
            apps.clone(),
            Duration::from_millis(config.request_timeout_ms.max(1)),
        )?,
        retry: RetryPolicy {
            initial: Duration::from_millis(config.backoff_initial_ms.max(1)),
            max: Duration::from_millis(config.backoff_max_ms.max(config.backoff_initial_ms).max(1)),
            max_attempts: config.max_attempts,
            max_age: (config.max_age_s > 0).then(|| Duration::from_secs(config.max_age_s)),
        },
        dead_letters: dead_letters.clone(),
        watermark: watermark.clone(),
        concurrency_per_app: config.concurrency_per_app,
        shutdown: shutdown.clone(),
    });
    tokio::spawn(
        FeedReader {
            endpoint,
            token: config.internal_auth.caller_token()?,
            apps,
            dispatcher: dispatcher.clone(),
            watermark: watermark.clone(),
            budget: Arc::new(Semaphore::new(config.max_pending.max(1))),
            shutdown: shutdown.clone(),
        }
        .run(after),
    );
    let bookkeeping = tokio::spawn(bookkeeping(Bookkeeping {
        cursor,
        saved: after,
        watermark,
        dead_letters,
        dispatcher,
        interval: Duration::from_millis(config.flush_interval_ms.max(10)),
        shutdown: shutdown.clone(),
    }));
    let http = tokio::spawn(presence_common::http::serve(
        metrics_listener,
        presence_common::http::admin_routes(),
        shutdown,
    ));
    tracing::info!(%metrics_addr, after, registry = config.registry_url, "notifier running");
    Ok(RunningNotifier { metrics_addr, http, bookkeeping })
}

struct Bookkeeping {
    cursor: CursorStore,
    saved: u64,
    watermark: Arc<Mutex<Watermark>>,
    dead_letters: DeadLetters,
    dispatcher: Dispatcher,
    interval: Duration,
    shutdown: Shutdown,
}

/// Periodically: saves the cursor, publishes lag, and picks up dead letters an admin asked to
/// replay. On shutdown, saves the cursor a last time.
async fn bookkeeping(mut state: Bookkeeping) {
    let mut tick = tokio::time::interval(state.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            () = state.shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        let (durable, pending, oldest) = {
            let w = state.watermark.lock();
            (w.durable(), w.in_flight(), w.oldest_event_time_ms())
        };
        metrics::gauge!(metric_names::PENDING).set(pending as f64);
        let lag_ms = oldest.map_or(0, |t| presence_common::time::now_ms().saturating_sub(t));
        metrics::gauge!(metric_names::LAG).set(lag_ms as f64 / 1000.0);
        if durable > state.saved {
            match state.cursor.save(durable).await {
                Ok(()) => {
                    state.saved = durable;
                    metrics::gauge!(metric_names::CURSOR).set(durable as f64);
                }
                Err(err) => tracing::warn!(%err, durable, "saving the cursor failed; will retry"),
            }
        }
        if stopping {
            tracing::info!(cursor = state.saved, pending, "notifier stopped");
            return;
        }
        match state.dead_letters.claim_replays(REPLAY_BATCH).await {
            Ok(replays) => {
                if !replays.is_empty() {
                    tracing::info!(count = replays.len(), "replaying dead letters");
                }
                for callback in replays {
                    state.dispatcher.enqueue(callback, None);
                }
            }
            Err(err) => tracing::warn!(%err, "checking dead letters for replay failed"),
        }
    }
}
