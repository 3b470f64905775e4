//! subscribe-bench: subscriptions and pushed status changes (scripts/bench-subscriptions.sh).
//! Loopback only; every phase is bounded in time.
//!
//! `--devices` devices log in (user `<prefix><i>`), each subscribes to `--per-device` users drawn
//! at random from a population of watched users, then a wave of `--changes` status changes of
//! watched users is paced at `--rate` changes/s. Every subscriber checks each `StatusChanged`
//! against what it subscribed to and what changes, so the report counts the deliveries expected,
//! received, duplicated and unexpected, and their latency: from the actor's send (for a custom
//! status, whose text carries the send time) and from the status's `changed_at_ms` (set by the
//! registry when it plans the change, before its commit). Times are unix clock readings on
//! this one machine, so shards (processes) compare them directly.
//!
//! `--watch` picks the watched users:
//! - `online`: the subscribers themselves (`--watched` = `--devices`; nobody subscribes to
//!   itself). A change is a `SetStatus` sent by the watched user's own device.
//! - `unseen`: `--watched` users `<prefix>w<j>` nobody logged in as, so the registry holds an
//!   empty entry per user only for its watchers. A change is the first login of one of them, on
//!   a new connection (offline -> online).
//!
//! The changed users are the first `--changes` of the population (the draws are uniform, so any
//! set is as good); each changes once, so no two changes of one user can merge at a subscriber.
//!
//! The script drives the phases with files in `--sync-dir`: each shard writes `logged-in.<I>`
//! and waits for `subscribe`; writes `subscribed.<I>` (and, with `--dump-subscriptions`,
//! `subs.<I>`: each device's local address and subscribed users) and waits for `wave`; writes
//! `done.<I>` after its wave and drain, and disconnects once every shard is done and `end`
//! exists (or after another drain), so no device leaves (an offline change, pushed) while
//! another shard still counts or the script reads the services' counters.

use std::{
    collections::BTreeMap,
    io::Write as _,
    net::SocketAddr,
    path::{Path, PathBuf},
    sync::{
        Arc,
        atomic::{AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant, SystemTime, UNIX_EPOCH},
};

use anyhow::{Context, bail};
use clap::Parser;
use parking_lot::Mutex;
use presence_bench::{
    connect::{connect_from, source_addr},
    device::{FrameConn, Transport, frame_name, login_frame},
    stats::{Percentiles, percentiles},
};
use presence_proto::v1::{
    ClientFrame, ServerFrame, SetStatus, Subscribe, UserStatus, client_frame, server_frame,
};
use rand::SeedableRng;
use serde::{Deserialize, Serialize};
use tokio::sync::{Semaphore, watch};

/// Connections one process holds at most (the hard file-descriptor limit here is 20,000).
const CONNECTIONS_PER_PROCESS: usize = 15_000;
/// How long a login, a subscribe or a status change may take before it counts as failed.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(15);
/// The prefix of the custom status a change sets; the rest is its send time (unix us).
const WAVE_TAG: &str = "w:";

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
enum Watch {
    Online,
    Unseen,
}

#[derive(Parser, Debug, Clone)]
#[command(about = "Subscriptions and pushed status changes: loopback only, bounded in time")]
struct Args {
    /// The gateway's address (its WebSocket port with --transport ws); loopback only.
    #[arg(long, default_value = "127.0.0.1:7101")]
    target: SocketAddr,
    #[arg(long, value_enum, default_value_t = Transport::Ws)]
    transport: Transport,
    /// Subscribing devices, one per user.
    #[arg(long, default_value_t = 20_000)]
    devices: usize,
    /// Users each device subscribes to (one Subscribe).
    #[arg(long, default_value_t = 50)]
    per_device: usize,
    #[arg(long, value_enum, default_value_t = Watch::Online)]
    watch: Watch,
    /// Watched users (`--watch unseen`; with `online` the population is the devices).
    #[arg(long, default_value_t = 100_000)]
    watched: usize,
    /// Status changes in the wave (the first CHANGES watched users, once each).
    #[arg(long, default_value_t = 5_000)]
    changes: usize,
    /// Changes per second over all processes.
    #[arg(long, default_value_t = 200.0)]
    rate: f64,
    /// Seconds to wait after the last change for deliveries still on their way.
    #[arg(long, default_value_t = 10)]
    drain_s: u64,
    /// Logins or subscribes in flight per process.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Processes (0: one per 15,000 connections).
    #[arg(long, default_value_t = 0)]
    processes: usize,
    /// Loopback source addresses to spread over (127.0.0.2 and up).
    #[arg(long, default_value_t = 50)]
    source_ips: usize,
    #[arg(long, default_value = "bench")]
    app: String,
    #[arg(long, default_value = "bench-secret")]
    secret: String,
    /// Prefix of user ids, so runs do not collide.
    #[arg(long, default_value = "sb")]
    prefix: String,
    /// Seed of the subscription draws.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// Where the phase files are (see the module docs).
    #[arg(long)]
    sync_dir: PathBuf,
    /// Write `subs.<I>` in the sync dir: "<local addr> <user index>..." per device.
    #[arg(long)]
    dump_subscriptions: bool,
    /// Hard bound on the whole run.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Internal: run shard I of N and print its raw report.
    #[arg(long, hide = true)]
    shard: Option<String>,
}

impl Args {
    fn population(&self) -> usize {
        match self.watch {
            Watch::Online => self.devices,
            Watch::Unseen => self.watched,
        }
    }

    fn watched_prefix(&self) -> String {
        match self.watch {
            Watch::Online => self.prefix.clone(),
            Watch::Unseen => format!("{}w", self.prefix),
        }
    }

    /// Connections of the whole run: the devices, and the actors' own in `unseen`.
    fn connections(&self) -> usize {
        self.devices + if self.watch == Watch::Unseen { self.changes } else { 0 }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.target.ip().is_loopback() {
        bail!("refusing a non-loopback target {}: load goes to 127.0.0.0/8 only", args.target);
    }
    if args.per_device == 0 || args.per_device > 64 || args.per_device >= args.population() {
        bail!("--per-device must be 1..=64 and below the watched population");
    }
    if args.changes > args.population() || args.rate <= 0.0 {
        bail!("--changes must not exceed the watched population, and --rate must be positive");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(shard) = &args.shard {
        let (index, count) = shard.split_once('/').context("--shard I/N")?;
        let (index, count) = (index.parse()?, count.parse()?);
        let report = runtime.block_on(run_shard(&args, index, count));
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let processes = if args.processes == 0 {
        args.connections().div_ceil(CONNECTIONS_PER_PROCESS).max(1)
    } else {
        args.processes
    };
    let reports = presence_bench::shards::run_shards::<ShardReport>(processes)?;
    let summary = Summary::merge(&args, reports);
    eprintln!("{}", summary.line());
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn unix_us() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map_or(0, |d| d.as_micros() as u64)
}

/// Users device `device` subscribes to: `per_device` distinct indices of the population (never
/// its own user when the population is the devices), sorted.
fn draw_subscriptions(args: &Args, device: usize) -> Vec<u32> {
    let seed = args.seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) ^ device as u64;
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let population = args.population();
    let amount = (args.per_device + 1).min(population);
    let own = (args.watch == Watch::Online).then_some(device);
    let mut subs: Vec<u32> = rand::seq::index::sample(&mut rng, population, amount)
        .into_iter()
        .filter(|&j| Some(j) != own)
        .take(args.per_device)
        .map(|j| j as u32)
        .collect();
    subs.sort_unstable();
    subs
}

/// The shard's phase, as its devices see it.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Phase {
    Login,
    Subscribe,
    /// The wave started at this instant.
    Wave(Instant),
    Stop,
}

/// What one process measured.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ShardReport {
    devices: usize,
    logged_in: usize,
    subscribed_devices: usize,
    /// Subscriptions answered by SubscribeOk.
    subscriptions: usize,
    /// Statuses in SubscribeOk by status (online, offline, ...).
    subscribe_statuses: BTreeMap<String, usize>,
    login_us: Vec<u64>,
    subscribe_us: Vec<u64>,
    /// Changes made by this shard's actors, and how long each took to be acknowledged
    /// (SetStatus -> SetStatusOk, or connect + Login -> LoginOk).
    actors: usize,
    actors_ok: usize,
    actor_us: Vec<u64>,
    /// Deliveries this shard's devices should get, and what they got.
    expected: u64,
    received: u64,
    duplicates: u64,
    /// A StatusChanged of the wave for a user the device did not subscribe to, or that should
    /// not change.
    unexpected: u64,
    /// Other StatusChanged frames (e.g. before the wave).
    other_status: u64,
    from_send_us: Vec<u64>,
    from_changed_us: Vec<u64>,
    /// Unix us: first change sent, last change sent, last delivery received.
    first_send_us: u64,
    last_send_us: u64,
    last_recv_us: u64,
    errors: BTreeMap<String, usize>,
}

impl ShardReport {
    fn count_error(&mut self, what: &str) {
        *self.errors.entry(what.to_owned()).or_default() += 1;
    }
}

/// State shared by a shard's device tasks.
struct Shard {
    args: Args,
    index: usize,
    count: usize,
    watched_prefix: String,
    phase: watch::Receiver<Phase>,
    permits: Arc<Semaphore>,
    report: Mutex<ShardReport>,
    /// Devices that finished logging in / subscribing, successfully or not.
    logins_done: AtomicUsize,
    subscribes_done: AtomicUsize,
    actors_done: AtomicUsize,
    received: AtomicU64,
    dump: Mutex<Vec<String>>,
}

impl Shard {
    fn error(&self, what: &str) {
        self.report.lock().count_error(what);
    }

    /// When the `k`-th change of this shard is due after the wave's start.
    fn due(&self, start: Instant, change: usize) -> Instant {
        let k = change / self.count;
        start + Duration::from_secs_f64(k as f64 * self.count as f64 / self.args.rate)
    }

    fn token(&self, user_id: &str) -> String {
        presence_client::mint_token(
            &self.args.secret,
            user_id,
            Some(&self.args.app),
            Duration::from_secs(3600),
        )
        .unwrap_or_default()
    }

    /// Connects from `source_of`'s loopback source and logs `user_id` in.
    async fn connect(
        &self,
        source_of: usize,
        user_id: &str,
        device_id: &str,
    ) -> Result<(FrameConn, String), String> {
        let source = source_addr(source_of, self.args.source_ips);
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, connect_from(source, self.args.target))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {}", e.kind()))?;
        let local = stream.local_addr().map(|a| a.to_string()).unwrap_or_default();
        let mut conn = tokio::time::timeout(
            REQUEST_TIMEOUT,
            FrameConn::open(stream, self.args.target, self.args.transport),
        )
        .await
        .map_err(|_| "upgrade timed out".to_owned())??;
        let login = login_frame(&self.args.app, user_id, device_id, &self.token(user_id));
        conn.login(&login, REQUEST_TIMEOUT).await?;
        Ok((conn, local))
    }

    /// Waits until the phase is at least `wanted` (by order); the phase reached.
    async fn reach(&self, rx: &mut watch::Receiver<Phase>, wanted: fn(&Phase) -> bool) -> Phase {
        let reached = rx.wait_for(|p| wanted(p) || *p == Phase::Stop).await.map(|p| *p);
        reached.unwrap_or(Phase::Stop)
    }
}

/// A subscriber's view of the wave: which of its users it heard from.
struct Inbox {
    subs: Vec<u32>,
    /// Bit k: a wave delivery for `subs[k]` arrived.
    heard: u64,
}

impl Inbox {
    /// Checks and times one StatusChanged.
    fn on_status(&mut self, shard: &Shard, status: &UserStatus) {
        let now = unix_us();
        let mut report = shard.report.lock();
        let sent_us = status.custom_status.strip_prefix(WAVE_TAG).and_then(|t| t.parse::<u64>().ok());
        let of_wave = match shard.args.watch {
            Watch::Online => sent_us.is_some(),
            Watch::Unseen => status.status == "online",
        };
        let index = status.user_id.strip_prefix(&shard.watched_prefix).and_then(|i| i.parse::<u32>().ok());
        let Some(index) = index.filter(|_| of_wave) else {
            report.other_status += 1;
            return;
        };
        let position = self.subs.binary_search(&index).ok().filter(|_| (index as usize) < shard.args.changes);
        let Some(position) = position else {
            report.unexpected += 1;
            return;
        };
        if self.heard & (1 << position) != 0 {
            report.duplicates += 1;
            return;
        }
        self.heard |= 1 << position;
        report.received += 1;
        report.last_recv_us = report.last_recv_us.max(now);
        report.from_changed_us.push(now.saturating_sub(status.changed_at_ms.saturating_mul(1000)));
        if let Some(sent) = sent_us {
            report.from_send_us.push(now.saturating_sub(sent));
        }
        drop(report);
        shard.received.fetch_add(1, Ordering::Relaxed);
    }
}

/// One subscribing device, from login to the end of the wave.
async fn subscriber(shard: Arc<Shard>, device: usize) {
    let mut phase = shard.phase.clone();
    let user_id = format!("{}{device}", shard.args.prefix);
    let subs = draw_subscriptions(&shard.args, device);
    let actor = shard.args.watch == Watch::Online && device < shard.args.changes;

    let started = Instant::now();
    let permit = shard.permits.clone().acquire_owned().await;
    let connected = shard.connect(device, &user_id, &format!("{user_id}-s")).await;
    drop(permit);
    shard.logins_done.fetch_add(1, Ordering::Relaxed);
    let (mut conn, local) = match connected {
        Ok(connected) => connected,
        Err(err) => return shard.error(&err),
    };
    {
        let mut report = shard.report.lock();
        report.logged_in += 1;
        report.login_us.push(started.elapsed().as_micros() as u64);
    }

    let mut inbox = Inbox { subs, heard: 0 };
    if shard.reach(&mut phase, |p| *p != Phase::Login).await == Phase::Stop {
        return;
    }
    let permit = shard.permits.clone().acquire_owned().await;
    let subscribed = subscribe(&shard, &mut conn, &mut inbox).await;
    drop(permit);
    shard.subscribes_done.fetch_add(1, Ordering::Relaxed);
    if let Err(err) = subscribed {
        return shard.error(&err);
    }
    if shard.args.dump_subscriptions {
        let ids: Vec<String> = inbox.subs.iter().map(u32::to_string).collect();
        shard.dump.lock().push(format!("{local} {}", ids.join(" ")));
    }

    let Phase::Wave(start) = shard.reach(&mut phase, |p| matches!(p, Phase::Wave(_))).await else { return };
    let mut pending_change = actor.then(|| shard.due(start, device));
    let mut sent_at: Option<Instant> = None;
    loop {
        let due = async {
            match pending_change {
                Some(at) => tokio::time::sleep_until(at.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            changed = phase.changed() => if changed.is_err() || *phase.borrow() == Phase::Stop {
                break;
            },
            frame = conn.recv() => match frame {
                Ok(Some(frame)) => {
                    if let Some(server_frame::Kind::SetStatusOk(_)) = frame.kind
                        && let Some(at) = sent_at.take()
                    {
                        let mut report = shard.report.lock();
                        report.actors_ok += 1;
                        report.actor_us.push(at.elapsed().as_micros() as u64);
                        drop(report);
                        shard.actors_done.fetch_add(1, Ordering::Relaxed);
                    } else {
                        on_frame(&shard, &mut inbox, frame);
                    }
                }
                Ok(None) => {
                    shard.error("closed by the gateway during the wave");
                    break;
                }
                Err(err) => {
                    shard.error(&err);
                    break;
                }
            },
            () = due => {
                pending_change = None;
                let sent = unix_us();
                let frame = ClientFrame {
                    kind: Some(client_frame::Kind::SetStatus(SetStatus {
                        request_id: 2,
                        custom_status: format!("{WAVE_TAG}{sent}"),
                    })),
                };
                sent_at = Some(Instant::now());
                {
                    let mut report = shard.report.lock();
                    report.actors += 1;
                    report.first_send_us = if report.first_send_us == 0 { sent } else { report.first_send_us.min(sent) };
                    report.last_send_us = report.last_send_us.max(sent);
                }
                if let Err(err) = conn.send(&frame).await {
                    shard.error(&err);
                    shard.actors_done.fetch_add(1, Ordering::Relaxed);
                    break;
                }
            }
        }
    }
    if sent_at.is_some() {
        shard.error("no SetStatusOk before the end");
        shard.actors_done.fetch_add(1, Ordering::Relaxed);
    }
}

/// Sends the device's one Subscribe and waits for SubscribeOk.
async fn subscribe(shard: &Shard, conn: &mut FrameConn, inbox: &mut Inbox) -> Result<(), String> {
    let user_ids = inbox.subs.iter().map(|j| format!("{}{j}", shard.watched_prefix)).collect();
    let request =
        ClientFrame { kind: Some(client_frame::Kind::Subscribe(Subscribe { request_id: 1, user_ids })) };
    let started = Instant::now();
    conn.send(&request).await?;
    let deadline = tokio::time::Instant::now() + REQUEST_TIMEOUT;
    loop {
        let frame = match tokio::time::timeout_at(deadline, conn.recv()).await {
            Err(_) => return Err("no SubscribeOk in time".into()),
            Ok(Ok(Some(frame))) => frame,
            Ok(Ok(None)) => return Err("closed before SubscribeOk".into()),
            Ok(Err(err)) => return Err(err),
        };
        match frame.kind {
            Some(server_frame::Kind::SubscribeOk(ok)) => {
                let mut report = shard.report.lock();
                report.subscribe_us.push(started.elapsed().as_micros() as u64);
                report.subscribed_devices += 1;
                report.subscriptions += ok.statuses.len();
                for status in ok.statuses {
                    *report.subscribe_statuses.entry(status.status).or_default() += 1;
                }
                return Ok(());
            }
            Some(server_frame::Kind::RequestError(e)) => return Err(format!("subscribe: {}", e.code)),
            _ => on_frame(shard, inbox, frame),
        }
    }
}

/// A frame outside a request: a StatusChanged is checked; anything else is counted.
fn on_frame(shard: &Shard, inbox: &mut Inbox, frame: ServerFrame) {
    match frame.kind {
        Some(server_frame::Kind::StatusChanged(changed)) => match changed.status {
            Some(status) => inbox.on_status(shard, &status),
            None => shard.error("status_changed without a status"),
        },
        Some(server_frame::Kind::HeartbeatAck(_)) => {}
        other => shard.error(&format!("unexpected frame: {}", frame_name(other.as_ref()))),
    }
}

/// One change of `--watch unseen`: watched user `j` logs in for the first time, at its time.
async fn unseen_actor(shard: Arc<Shard>, j: usize, at: Instant, hold: watch::Receiver<Phase>) {
    tokio::time::sleep_until(at.into()).await;
    let user_id = format!("{}{j}", shard.watched_prefix);
    let sent = unix_us();
    {
        let mut report = shard.report.lock();
        report.actors += 1;
        report.first_send_us = if report.first_send_us == 0 { sent } else { report.first_send_us.min(sent) };
        report.last_send_us = report.last_send_us.max(sent);
    }
    let started = Instant::now();
    let connected = shard.connect(shard.args.devices + j, &user_id, &format!("{user_id}-a")).await;
    shard.actors_done.fetch_add(1, Ordering::Relaxed);
    let mut conn = match connected {
        Ok((conn, _)) => conn,
        Err(err) => return shard.error(&format!("actor: {err}")),
    };
    {
        let mut report = shard.report.lock();
        report.actors_ok += 1;
        report.actor_us.push(started.elapsed().as_micros() as u64);
    }
    // Stay online until the end: leaving would be another change.
    let mut hold = hold;
    loop {
        tokio::select! {
            reached = hold.wait_for(|p| *p == Phase::Stop) => {
                let _ = reached;
                return;
            }
            frame = conn.recv() => match frame {
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => return shard.error("actor: closed by the gateway"),
            },
        }
    }
}

async fn wait_until(deadline: Instant, done: impl Fn() -> bool) -> bool {
    while !done() {
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    true
}

fn write_file(dir: &Path, name: &str, text: &str) {
    let written = std::fs::File::create(dir.join(name)).and_then(|mut f| f.write_all(text.as_bytes()));
    if let Err(err) = written {
        eprintln!("subscribe-bench: cannot write {name}: {err}");
    }
}

fn files_with_prefix(dir: &Path, prefix: &str) -> usize {
    std::fs::read_dir(dir).map_or(0, |entries| {
        entries.flatten().filter(|e| e.file_name().to_string_lossy().starts_with(prefix)).count()
    })
}

async fn run_shard(args: &Args, index: usize, count: usize) -> ShardReport {
    let bound = Instant::now() + Duration::from_secs(args.timeout_s);
    let (phase_tx, phase) = watch::channel(Phase::Login);
    let mine: Vec<usize> = (index..args.devices).step_by(count).collect();
    let expected: u64 = mine
        .iter()
        .map(|&d| draw_subscriptions(args, d).iter().filter(|&&j| (j as usize) < args.changes).count() as u64)
        .sum();
    let shard = Arc::new(Shard {
        args: args.clone(),
        index,
        count,
        watched_prefix: args.watched_prefix(),
        phase: phase.clone(),
        permits: Arc::new(Semaphore::new(args.concurrency.max(1))),
        report: Mutex::new(ShardReport { devices: mine.len(), expected, ..ShardReport::default() }),
        logins_done: AtomicUsize::new(0),
        subscribes_done: AtomicUsize::new(0),
        actors_done: AtomicUsize::new(0),
        received: AtomicU64::new(0),
        dump: Mutex::new(Vec::new()),
    });
    let mut tasks: Vec<_> = mine.iter().map(|&d| tokio::spawn(subscriber(shard.clone(), d))).collect();
    let dir = &args.sync_dir;

    let logged = wait_until(bound, || shard.logins_done.load(Ordering::Relaxed) == mine.len()).await;
    write_file(dir, &format!("logged-in.{}", shard.index), &shard.report.lock().logged_in.to_string());
    let go = logged && wait_until(bound, || dir.join("subscribe").exists()).await;
    if go {
        phase_tx.send_replace(Phase::Subscribe);
        let logged_in = shard.report.lock().logged_in;
        wait_until(bound, || shard.subscribes_done.load(Ordering::Relaxed) >= logged_in).await;
        if args.dump_subscriptions {
            write_file(dir, &format!("subs.{index}"), &(shard.dump.lock().join("\n") + "\n"));
        }
        write_file(dir, &format!("subscribed.{index}"), &shard.report.lock().subscriptions.to_string());
    }
    if go && wait_until(bound, || dir.join("wave").exists()).await {
        let start = Instant::now();
        phase_tx.send_replace(Phase::Wave(start));
        let my_changes: Vec<usize> = (index..args.changes).step_by(count).collect();
        if args.watch == Watch::Unseen {
            for &j in &my_changes {
                let at = shard.due(start, j);
                tasks.push(tokio::spawn(unseen_actor(shard.clone(), j, at, phase.clone())));
            }
        }
        let last_due = my_changes.last().map_or(start, |&j| shard.due(start, j));
        let drained = (last_due + Duration::from_secs(args.drain_s)).min(bound);
        wait_until(drained, || {
            shard.received.load(Ordering::Relaxed) >= expected
                && shard.actors_done.load(Ordering::Relaxed) >= my_changes.len()
        })
        .await;
        write_file(dir, &format!("done.{index}"), "");
        // Hold every connection until all shards have counted and the script has read what it
        // reads after the wave (it then writes `end`): leaving is a change too. Bounded.
        let others = (Instant::now() + Duration::from_secs(args.drain_s + 10)).min(bound);
        wait_until(others, || files_with_prefix(dir, "done.") >= count && dir.join("end").exists()).await;
    } else {
        shard.error("run timed out before the wave");
    }
    phase_tx.send_replace(Phase::Stop);
    let stopped = tokio::time::Instant::now() + Duration::from_secs(5);
    for task in tasks.drain(..) {
        let abort = task.abort_handle();
        if tokio::time::timeout_at(stopped, task).await.is_err() {
            abort.abort();
            shard.error("task did not stop");
        }
    }
    std::mem::take(&mut *shard.report.lock())
}

/// The run's figures.
#[derive(Debug, Serialize)]
struct Summary {
    watch: Watch,
    transport: Transport,
    devices: usize,
    per_device: usize,
    watched: usize,
    processes: usize,
    logged_in: usize,
    subscribed_devices: usize,
    subscriptions: usize,
    subscribe_statuses: BTreeMap<String, usize>,
    login: Percentiles,
    subscribe: Percentiles,
    changes: usize,
    /// Changes sent, and those acknowledged (SetStatusOk / LoginOk).
    changes_sent: usize,
    changes_ok: usize,
    /// Changes per second asked and achieved (first to last change sent).
    rate_asked: f64,
    change_rate: f64,
    /// Change acknowledged at the actor (SetStatus -> SetStatusOk, connect + Login -> LoginOk).
    actor: Percentiles,
    expected: u64,
    received: u64,
    lost: u64,
    duplicates: u64,
    unexpected: u64,
    other_status: u64,
    /// Deliveries per second from the first change sent to the last delivery received.
    deliveries_per_s: f64,
    /// Delivery latency from the actor's send (SetStatus only).
    from_send: Percentiles,
    /// Delivery latency from the status's changed_at_ms (ms resolution).
    from_changed: Percentiles,
    errors: BTreeMap<String, usize>,
}

impl Summary {
    fn merge(args: &Args, reports: Vec<ShardReport>) -> Self {
        let processes = reports.len();
        let mut all = ShardReport::default();
        for r in reports {
            all.devices += r.devices;
            all.logged_in += r.logged_in;
            all.subscribed_devices += r.subscribed_devices;
            all.subscriptions += r.subscriptions;
            for (k, v) in r.subscribe_statuses {
                *all.subscribe_statuses.entry(k).or_default() += v;
            }
            all.login_us.extend(r.login_us);
            all.subscribe_us.extend(r.subscribe_us);
            all.actors += r.actors;
            all.actors_ok += r.actors_ok;
            all.actor_us.extend(r.actor_us);
            all.expected += r.expected;
            all.received += r.received;
            all.duplicates += r.duplicates;
            all.unexpected += r.unexpected;
            all.other_status += r.other_status;
            all.from_send_us.extend(r.from_send_us);
            all.from_changed_us.extend(r.from_changed_us);
            if r.first_send_us > 0 {
                all.first_send_us = if all.first_send_us == 0 {
                    r.first_send_us
                } else {
                    all.first_send_us.min(r.first_send_us)
                };
            }
            all.last_send_us = all.last_send_us.max(r.last_send_us);
            all.last_recv_us = all.last_recv_us.max(r.last_recv_us);
            for (k, v) in r.errors {
                *all.errors.entry(k).or_default() += v;
            }
        }
        let per_s = |n: u64, from: u64, to: u64| {
            if to > from { n as f64 * 1e6 / (to - from) as f64 } else { 0.0 }
        };
        Self {
            watch: args.watch,
            transport: args.transport,
            devices: args.devices,
            per_device: args.per_device,
            watched: args.population(),
            processes,
            logged_in: all.logged_in,
            subscribed_devices: all.subscribed_devices,
            subscriptions: all.subscriptions,
            subscribe_statuses: all.subscribe_statuses,
            login: percentiles(&mut all.login_us),
            subscribe: percentiles(&mut all.subscribe_us),
            changes: args.changes,
            changes_sent: all.actors,
            changes_ok: all.actors_ok,
            rate_asked: args.rate,
            change_rate: per_s(all.actors.saturating_sub(1) as u64, all.first_send_us, all.last_send_us),
            actor: percentiles(&mut all.actor_us),
            expected: all.expected,
            received: all.received,
            lost: all.expected.saturating_sub(all.received),
            duplicates: all.duplicates,
            unexpected: all.unexpected,
            other_status: all.other_status,
            deliveries_per_s: per_s(all.received, all.first_send_us, all.last_recv_us),
            from_send: percentiles(&mut all.from_send_us),
            from_changed: percentiles(&mut all.from_changed_us),
            errors: all.errors,
        }
    }

    /// One human-readable line for stderr.
    fn line(&self) -> String {
        format!(
            "{:?} over {}: {} devices x {} subs ({} ok), {} changes at {:.0}/s: {}/{} delivered ({} lost, {} dup, {} unexpected), \
             {:.0}/s; from send p50 {:.1} p99 {:.1} ms; from changed_at p50 {:.1} p99 {:.1} ms; errors {:?}",
            self.watch,
            self.transport,
            self.devices,
            self.per_device,
            self.subscriptions,
            self.changes_sent,
            self.change_rate,
            self.received,
            self.expected,
            self.lost,
            self.duplicates,
            self.unexpected,
            self.deliveries_per_s,
            self.from_send.p50_ms,
            self.from_send.p99_ms,
            self.from_changed.p50_ms,
            self.from_changed.p99_ms,
            self.errors
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(watch: Watch) -> Args {
        Args::parse_from([
            "subscribe-bench",
            "--sync-dir",
            "/tmp",
            "--devices",
            "100",
            "--watched",
            "1000",
            "--watch",
            match watch {
                Watch::Online => "online",
                Watch::Unseen => "unseen",
            },
        ])
    }

    #[test]
    fn draws_are_distinct_sorted_repeatable_and_never_oneself() {
        let online = args(Watch::Online);
        for device in 0..100 {
            let subs = draw_subscriptions(&online, device);
            assert_eq!(subs.len(), 50);
            assert!(subs.windows(2).all(|w| w[0] < w[1]), "sorted, distinct");
            assert!(subs.iter().all(|&j| (j as usize) < 100 && j as usize != device));
            assert_eq!(subs, draw_subscriptions(&online, device));
        }
        let unseen = args(Watch::Unseen);
        assert!(draw_subscriptions(&unseen, 3).iter().any(|&j| j >= 100), "drawn from the watched users");
    }

    #[test]
    fn changes_are_paced_per_shard() {
        let (tx, rx) = watch::channel(Phase::Login);
        drop(tx);
        let mut a = args(Watch::Online);
        a.rate = 100.0;
        let shard = Shard {
            args: a.clone(),
            index: 1,
            count: 2,
            watched_prefix: a.watched_prefix(),
            phase: rx,
            permits: Arc::new(Semaphore::new(1)),
            report: Mutex::default(),
            logins_done: AtomicUsize::new(0),
            subscribes_done: AtomicUsize::new(0),
            actors_done: AtomicUsize::new(0),
            received: AtomicU64::new(0),
            dump: Mutex::default(),
        };
        let start = Instant::now();
        // Shard 1 of 2 makes changes 1, 3, 5...: one every 2 / 100 s.
        assert_eq!(shard.due(start, 1), start);
        assert_eq!(shard.due(start, 5) - start, Duration::from_millis(40));
        let mut inbox = Inbox { subs: vec![1, 3, 70], heard: 0 };
        let status = |user: &str, text: &str| UserStatus {
            user_id: user.into(),
            status: "online".into(),
            custom_status: text.into(),
            changed_at_ms: unix_us() / 1000,
            ..UserStatus::default()
        };
        let now = format!("{WAVE_TAG}{}", unix_us());
        inbox.on_status(&shard, &status("sb3", &now));
        inbox.on_status(&shard, &status("sb3", &now));
        inbox.on_status(&shard, &status("sb70", &now));
        inbox.on_status(&shard, &status("sb1", ""));
        let report = shard.report.lock();
        assert_eq!((report.received, report.duplicates, report.other_status), (2, 1, 1));
        assert_eq!(report.unexpected, 0, "sb70 is subscribed and within the 5,000 changes");
        assert_eq!(report.from_send_us.len(), 2);
    }
}
