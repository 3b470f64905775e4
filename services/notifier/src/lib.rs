//! notifier: delivers the presence events to each app's callback URL.
//!
//! Notifier processes share the feed's partitions as the registries do (leases in Postgres, see
//! [`presence_common::partition_lease`]). Each reads its partitions' events straight from
//! Postgres, each partition from its own durable cursor, queues them per user (one user's events
//! in order, different users concurrently, bounded per app), signs and POSTs them as http-api.md
//! specifies, retries with backoff, and dead-letters what fails for too long. Apps are isolated:
//! each has a bounded share of memory (its further events wait in Postgres) and a circuit breaker
//! that holds its callbacks while its receiver fails. A cursor only
//! passes events that are delivered or dead-lettered, so a restart or a failover loses nothing;
//! receivers dedupe by `event_id`. See `docs/architecture.md`.

mod app_labels;
mod budget;
mod callback;
mod circuit;
mod config;
mod cursors;
mod dead_letters;
mod delivery;
mod dispatcher;
mod feed;
mod holder;
mod metric_names;
mod partition_store;
mod reader;
mod retry;
mod tencent_im;
mod watermark;

use std::{net::SocketAddr, sync::Arc, time::Duration};

use presence_common::{
    AppDirectory, db,
    partition_lease::{Group, LeaseTiming, Member, Ownership, PartitionLeases},
};
use sqlx::PgPool;
use tokio::{sync::Notify, task::JoinHandle};

pub use config::NotifierConfig;
pub use presence_common::Shutdown;

use crate::{
    app_labels::AppLabels,
    budget::Budget,
    circuit::CircuitPolicy,
    cursors::Cursors,
    dead_letters::DeadLetters,
    delivery::CallbackDelivery,
    dispatcher::{Dispatcher, DispatcherParts},
    holder::Holder,
    reader::Reader,
    retry::RetryPolicy,
};

/// Dead letters claimed for replay per round.
const REPLAY_BATCH: usize = 100;

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Db(#[from] db::DbError),
    #[error(transparent)]
    Directory(#[from] presence_common::app_directory::DirectoryError),
    #[error(transparent)]
    Lease(#[from] presence_common::partition_lease::LeaseError),
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
    /// This process's member id among the notifiers.
    pub member: String,
    http: JoinHandle<std::io::Result<()>>,
    leases: JoinHandle<()>,
    bookkeeping: JoinHandle<()>,
}

impl RunningNotifier {
    /// Until `shutdown` stopped everything: every partition handed over, its cursor saved.
    pub async fn wait(self) -> Result<(), StartError> {
        self.leases.await?;
        self.bookkeeping.await?;
        self.http.await?.map_err(StartError::Metrics)?;
        Ok(())
    }
}

/// Connects to Postgres, joins the notifiers, takes its share of the partitions, and delivers
/// until `shutdown`; then hands its partitions over.
pub async fn start(config: NotifierConfig, shutdown: Shutdown) -> Result<RunningNotifier, StartError> {
    metric_names::describe();
    let pool = db::connect(&config.database_url, config.db_max_connections, &shutdown).await?;
    let apps = AppDirectory::start(pool.clone(), shutdown.clone()).await?;
    let partition_count = db::partition_count(&pool).await?;
    let (metrics_listener, metrics_addr) = presence_common::net::bind(config.metrics_addr).await?;

    let member = Member::new_id(&config.notifier_id);
    let cursors = Arc::new(Cursors::default());
    let ownership = Ownership::default();
    let wake = Arc::new(Notify::new());
    let dead_letters = DeadLetters::new(pool.clone());
    // Delivery stops only once the partitions are handed over (their callbacks settle then);
    // the lease loop itself stops on `shutdown`.
    let delivering = Shutdown::new();
    let labels = Arc::new(AppLabels::new(&config.metric_apps, config.metric_apps_max));
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
        circuit: CircuitPolicy {
            failures_to_open: config.circuit_failures.max(1),
            probe_initial: Duration::from_millis(config.circuit_probe_initial_ms.max(1)),
            probe_max: Duration::from_millis(
                config.circuit_probe_max_ms.max(config.circuit_probe_initial_ms).max(1),
            ),
        },
        labels: labels.clone(),
        dead_letters: dead_letters.clone(),
        cursors: cursors.clone(),
        concurrency_per_app: config.concurrency_per_app,
        shutdown: delivering.clone(),
    });

    let lease = Duration::from_millis(config.partition_lease_ms.max(300));
    let mut leases = PartitionLeases {
        pool: pool.clone(),
        database_url: config.database_url.clone(),
        member: Member { id: member.clone(), addr: String::new(), group: Group::Notifier },
        timing: LeaseTiming {
            ttl: lease,
            balance_every: Duration::from_millis(config.balance_interval_ms.max(10)),
        },
        partitions: partition_count,
        ownership: ownership.clone(),
        holder: Arc::new(Holder::new(pool.clone(), member.clone(), cursors.clone(), wake.clone(), lease)),
        metrics: metric_names::LEASE_METRICS,
        shutdown: shutdown.clone(),
        lease_start: None,
    };
    let lock = leases.join().await?;
    let leases = tokio::spawn({
        let delivering = delivering.clone();
        async move {
            leases.run(lock).await;
            delivering.cancel();
        }
    });

    tokio::spawn(
        Reader {
            pool: pool.clone(),
            apps,
            dispatcher: dispatcher.clone(),
            cursors: cursors.clone(),
            ownership,
            budget: Budget::new(config.max_pending_per_app, config.max_pending, labels),
            poll_interval: Duration::from_millis(config.poll_interval_ms.max(1)),
            wake,
            shutdown: shutdown.clone(),
        }
        .run(),
    );
    let bookkeeping = tokio::spawn(bookkeeping(Bookkeeping {
        pool,
        member: member.clone(),
        partition_count,
        cursors,
        dead_letters,
        dispatcher,
        interval: Duration::from_millis(config.flush_interval_ms.max(10)),
        shutdown: delivering,
    }));
    let http = tokio::spawn(presence_common::http::serve(
        metrics_listener,
        presence_common::http::admin_routes(),
        shutdown,
    ));
    tracing::info!(%metrics_addr, member, partitions = partition_count, "notifier running");
    Ok(RunningNotifier { metrics_addr, member, http, leases, bookkeeping })
}

struct Bookkeeping {
    pool: PgPool,
    member: String,
    partition_count: u32,
    cursors: Arc<Cursors>,
    dead_letters: DeadLetters,
    dispatcher: Dispatcher,
    interval: Duration,
    shutdown: Shutdown,
}

/// Periodically: saves the partitions' cursors, publishes lag, and picks up dead letters an
/// admin asked to replay. On shutdown (after the hand-overs), saves what is left.
async fn bookkeeping(state: Bookkeeping) {
    let mut tick = tokio::time::interval(state.interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let stopping = tokio::select! {
            () = state.shutdown.cancelled() => true,
            _ = tick.tick() => false,
        };
        let (pending, oldest) = state.cursors.pending();
        metrics::gauge!(metric_names::PENDING).set(pending as f64);
        let lag_ms = oldest.map_or(0, |t| presence_common::time::now_ms().saturating_sub(t));
        metrics::gauge!(metric_names::LAG).set(lag_ms as f64 / 1000.0);
        let unsaved = state.cursors.unsaved();
        match partition_store::save(&state.pool, &state.member, &unsaved).await {
            Ok(saved) => {
                if saved.len() < unsaved.len() {
                    tracing::debug!(
                        fenced = unsaved.len() - saved.len(),
                        "cursors of partitions no longer ours were not saved"
                    );
                }
                saved.into_iter().for_each(|s| state.cursors.saved(s));
            }
            Err(err) => tracing::warn!(%err, "saving the cursors failed; will retry"),
        }
        if stopping {
            tracing::info!(pending, "notifier stopped");
            return;
        }
        let serving = state.cursors.reading();
        match state.dead_letters.claim_replays(&serving, state.partition_count, REPLAY_BATCH).await {
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
