//! presence-loadgen: drives N devices against a gateway (or a baseline peer) and prints a JSON
//! summary. Loopback targets only; every phase is bounded in time.
//!
//! Devices are spread over many 127.0.0.x source addresses and, past one process's
//! file-descriptor limit, over several processes (this binary re-executes itself per shard and
//! merges what the shards report).

mod modes;
mod report;

use std::{
    net::SocketAddr,
    sync::{
        Arc, OnceLock,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use presence_bench::{
    connect::{connect_from, source_addr},
    device::{Transport, ws_upgrade},
};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::{
    modes::{Conn, Device, Mode},
    report::{ShardReport, Summary},
};

/// Devices one process handles at most (the hard file-descriptor limit here is 20,000).
const DEVICES_PER_PROCESS: usize = 18_000;

#[derive(Parser, Debug, Clone)]
#[command(about = "Load generator for presence (and its baselines): loopback only, bounded in time")]
pub struct Args {
    /// presence (the gateway's protocol), raw (the raw-ceiling server) or mqtt (Mosquitto).
    #[arg(long, value_enum, default_value_t = Mode::Presence)]
    mode: Mode,
    /// Where to connect; must be a loopback address.
    #[arg(long, default_value = "127.0.0.1:7100")]
    target: SocketAddr,
    /// tcp, or ws: presence over WebSocket (`ws://TARGET/v1/connect`, one frame per binary
    /// message; the gateway's WebSocket port is 7101). Presence mode only.
    #[arg(long, value_enum, default_value_t = Transport::Tcp)]
    transport: Transport,
    /// Devices in the first wave (one per user).
    #[arg(long, default_value_t = 1000)]
    devices: usize,
    /// Connects started per second over all processes (0: as fast as possible).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    /// Handshakes in flight per process.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Processes (0: one per 18,000 devices).
    #[arg(long, default_value_t = 0)]
    processes: usize,
    /// Loopback source addresses to spread over (127.0.0.2 and up).
    #[arg(long, default_value_t = 50)]
    source_ips: usize,
    /// Second wave: another device per user, which the policy (or MQTT takeover) makes kick the
    /// first; measures new-login-to-old-socket-closed.
    #[arg(long)]
    kick: bool,
    /// Seconds to hold the connections after the waves (heartbeating).
    #[arg(long, default_value_t = 0)]
    hold_s: u64,
    /// Heartbeat interval while holding (0: none).
    #[arg(long, default_value_t = 0)]
    heartbeat_s: u64,
    /// Share of devices that go silent (no heartbeats) while keeping their sockets open.
    #[arg(long, default_value_t = 0.0)]
    silent_share: f64,
    /// The peer's silence timeout: when set, the report gives, for silent devices, how late the
    /// peer closed them (close - (last frame sent + this)), and counts "false offlines":
    /// heartbeating devices the peer closed during the hold.
    #[arg(long, default_value_t = 0.0)]
    expect_timeout_s: f64,
    /// MQTT keep-alive announced in CONNECT (mqtt mode); Mosquitto closes a silent client after
    /// 1.5 times this.
    #[arg(long, default_value_t = 120)]
    mqtt_keepalive_s: u16,
    /// End the hold early once this file exists (checked every 200 ms), so a script can hold
    /// devices exactly as long as it measures and still get the report.
    #[arg(long)]
    stop_file: Option<std::path::PathBuf>,
    /// App and its token secret (presence mode).
    #[arg(long, default_value = "default")]
    app: String,
    #[arg(long, default_value = "dev-token-secret")]
    secret: String,
    /// Prefix of user ids, so runs do not collide.
    #[arg(long, default_value = "lg")]
    user_prefix: String,
    /// Hard bound on the whole run.
    #[arg(long, default_value_t = 300)]
    timeout_s: u64,
    /// Internal: run shard I of N and print its raw report.
    #[arg(long, hide = true)]
    shard: Option<String>,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.target.ip().is_loopback() {
        bail!("refusing a non-loopback target {}: load goes to 127.0.0.0/8 only", args.target);
    }
    if args.transport == Transport::Ws && args.mode != Mode::Presence {
        bail!("--transport ws needs --mode presence");
    }
    let runtime = tokio::runtime::Runtime::new()?;
    if let Some(shard) = &args.shard {
        let (index, count) = parse_shard(shard)?;
        let report = runtime.block_on(run_shard(&args, index, count));
        println!("{}", serde_json::to_string(&report)?);
        return Ok(());
    }
    let processes =
        if args.processes == 0 { args.devices.div_ceil(DEVICES_PER_PROCESS).max(1) } else { args.processes };
    let reports = if processes == 1 {
        vec![runtime.block_on(run_shard(&args, 0, 1))]
    } else {
        presence_bench::shards::run_shards::<ShardReport>(processes)?
    };
    let mut summary = Summary::merge(&args.mode.to_string(), args.transport, args.devices, reports);
    if args.expect_timeout_s <= 0.0 {
        summary.timeouts = None;
    }
    eprintln!("{}", summary.table());
    println!("{}", serde_json::to_string_pretty(&summary)?);
    Ok(())
}

fn parse_shard(shard: &str) -> anyhow::Result<(usize, usize)> {
    let (i, n) = shard.split_once('/').context("--shard I/N")?;
    Ok((i.parse()?, n.parse()?))
}

/// A connection kept open after its handshake.
struct Held {
    /// When its login (CONNECT, first frame) was sent, right after the TCP connect.
    login_sent: Instant,
    /// Set when the peer closes the connection.
    closed_at: Arc<OnceLock<Instant>>,
    /// When the device last sent a frame, in microseconds after `login_sent`.
    last_sent_us: Arc<AtomicU64>,
    /// Whether the device stopped heartbeating (--silent-share).
    silent: bool,
}

impl Held {
    fn last_sent(&self) -> Instant {
        self.login_sent + Duration::from_micros(self.last_sent_us.load(Ordering::Relaxed))
    }
}

async fn run_shard(args: &Args, index: usize, count: usize) -> ShardReport {
    let bound = Duration::from_secs(args.timeout_s);
    let mut report = ShardReport::default();
    let stop = CancellationToken::new();
    let started = Instant::now();
    let run = async {
        let mine: Vec<usize> = (index..args.devices).step_by(count).collect();
        let rate = if args.rate > 0.0 { args.rate / count as f64 } else { 0.0 };

        let first = wave(args, &mine, "a", rate, &stop, &mut report).await;
        report.wave_s = started.elapsed().as_secs_f64();

        let mut holding = first;
        if args.kick {
            let first = std::mem::take(&mut holding);
            let second = wave(args, &mine, "b", rate, &stop, &mut report).await;
            // Each old socket should close shortly after its replacement logged in.
            let deadline = Instant::now() + Duration::from_secs(10);
            let pending =
                |first: &[Option<Held>]| first.iter().flatten().any(|h| h.closed_at.get().is_none());
            while Instant::now() < deadline && pending(&first) {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            for (old, new) in first.iter().zip(&second) {
                let (Some(old), Some(new)) = (old, new) else { continue };
                match old.closed_at.get() {
                    Some(closed) => report
                        .kick_us
                        .push(closed.saturating_duration_since(new.login_sent).as_micros() as u64),
                    None => report.count_error("old socket not closed after the kick"),
                }
            }
            holding = second;
        }
        if args.hold_s > 0 {
            hold_for(Duration::from_secs(args.hold_s), args.stop_file.as_deref()).await;
        }
        if args.expect_timeout_s > 0.0 {
            timeouts(&holding, Duration::from_secs_f64(args.expect_timeout_s), &mut report);
        }
    };
    if tokio::time::timeout(bound, run).await.is_err() {
        report.count_error("run timed out");
    }
    stop.cancel();
    report
}

/// Sleeps `hold`, or less if `stop_file` appears.
async fn hold_for(hold: Duration, stop_file: Option<&std::path::Path>) {
    let deadline = Instant::now() + hold;
    while Instant::now() < deadline {
        if stop_file.is_some_and(|f| f.exists()) {
            return;
        }
        let left = deadline.saturating_duration_since(Instant::now());
        tokio::time::sleep(left.min(Duration::from_millis(200))).await;
    }
}

/// Timeout accuracy over the devices held: how late each silent device was closed after
/// `timeout` of silence, and which heartbeating devices were closed (false offlines).
fn timeouts(held: &[Option<Held>], timeout: Duration, report: &mut ShardReport) {
    for h in held.iter().flatten() {
        let closed = h.closed_at.get();
        if !h.silent {
            report.false_offlines += usize::from(closed.is_some());
            continue;
        }
        report.silent += 1;
        let Some(&closed) = closed else {
            report.silent_not_closed += 1;
            continue;
        };
        let due = h.last_sent() + timeout;
        match closed.checked_duration_since(due) {
            Some(late) => report.timeout_late_us.push(late.as_micros() as u64),
            None => report.timeout_early += 1,
        }
    }
}

/// Connects and handshakes `devices` (by index; `suffix` names the wave); keeps them open.
async fn wave(
    args: &Args,
    devices: &[usize],
    suffix: &str,
    rate: f64,
    stop: &CancellationToken,
    report: &mut ShardReport,
) -> Vec<Option<Held>> {
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(devices.len());
    for (k, &n) in devices.iter().enumerate() {
        if rate > 0.0 {
            let due = started + Duration::from_secs_f64(k as f64 / rate);
            tokio::time::sleep_until(due.into()).await;
        }
        let Ok(permit) = permits.clone().acquire_owned().await else { break };
        let device = Device::new(args, n, suffix);
        let (args, stop) = (args.clone(), stop.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let result = handshake(&args, &device).await;
            drop(permit);
            result.map(|(stream, login_sent)| (t.elapsed(), hold(&args, device, stream, login_sent, stop)))
        }));
    }
    let mut held = Vec::with_capacity(tasks.len());
    for task in tasks {
        match task.await {
            Ok(Ok((latency, h))) => {
                report.connected += 1;
                // The first wave's latencies are the login figures; a kick wave is measured by kick_us.
                if suffix == "a" {
                    report.connect_us.push(latency.as_micros() as u64);
                }
                held.push(Some(h));
            }
            Ok(Err(err)) => {
                report.count_error(&err);
                held.push(None);
            }
            Err(_) => {
                report.count_error("task panicked");
                held.push(None);
            }
        }
    }
    held
}

/// TCP connect from the device's source address (and the WebSocket upgrade), then the mode's
/// handshake.
async fn handshake(args: &Args, device: &Device) -> Result<(Conn, Instant), String> {
    let source = source_addr(device.index, args.source_ips);
    let stream = connect_from(source, args.target).await.map_err(|e| format!("connect: {}", e.kind()))?;
    let mut conn = match args.transport {
        Transport::Tcp => Conn::Tcp(stream),
        Transport::Ws => Conn::Ws(Box::new(ws_upgrade(stream, args.target).await?)),
    };
    let login_sent = Instant::now();
    args.mode.handshake(&mut conn, device).await?;
    Ok((conn, login_sent))
}

/// Keeps `stream` open: heartbeats while asked to, notes when the peer closes it.
fn hold(args: &Args, device: Device, conn: Conn, login_sent: Instant, stop: CancellationToken) -> Held {
    let closed_at = Arc::new(OnceLock::new());
    let last_sent_us = Arc::new(AtomicU64::new(0));
    let (closed, sent) = (closed_at.clone(), last_sent_us.clone());
    let mode = args.mode;
    let silent = device.silent(args.silent_share);
    let interval = (args.heartbeat_s > 0 && !silent).then(|| Duration::from_secs(args.heartbeat_s));
    tokio::spawn(async move {
        let on_sent = || sent.store(login_sent.elapsed().as_micros() as u64, Ordering::Relaxed);
        if mode.hold(conn, interval, stop, on_sent).await {
            let _ = closed.set(Instant::now());
        }
    });
    Held { login_sent, closed_at, last_sent_us, silent }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(silent: bool, last_sent_ms: u64, closed_after_ms: Option<u64>) -> Option<Held> {
        let login_sent = Instant::now();
        let closed_at = Arc::new(OnceLock::new());
        if let Some(ms) = closed_after_ms {
            closed_at.set(login_sent + Duration::from_millis(ms)).unwrap();
        }
        let last_sent_us = Arc::new(AtomicU64::new(last_sent_ms * 1000));
        Some(Held { login_sent, closed_at, last_sent_us, silent })
    }

    #[test]
    fn timeouts_measure_lateness_from_the_last_frame_sent() {
        let devices = vec![
            held(true, 0, Some(20_250)),       // 250 ms late
            held(true, 0, Some(19_000)),       // early
            held(true, 0, None),               // never closed
            held(false, 15_000, None),         // fine
            held(false, 15_000, Some(21_000)), // false offline
            None,                              // never connected
        ];
        let mut report = ShardReport::default();
        timeouts(&devices, Duration::from_secs(20), &mut report);
        assert_eq!(report.timeout_late_us, vec![250_000]);
        assert_eq!(
            (report.silent, report.timeout_early, report.silent_not_closed, report.false_offlines),
            (3, 1, 1, 1)
        );
    }
}
