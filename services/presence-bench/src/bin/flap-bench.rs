//! flap-bench: devices whose links flap, for the flap-damping benchmark (scripts/bench-flaps.sh).
//! Loopback only, bounded in time.
//!
//! N devices (one per user, TCP) log in and stay; then, every `cycle_s`, a `share` of them (a
//! different pseudo-random set each cycle) drop their connection at a random moment of the cycle's
//! first half and connect and log in again as the same device after 0.2 s to `reconnect_max_ms`.
//! Files mark the phases for the script: `<files>.ready` once every device is logged in (the
//! cycles start `settle_s` later), `<files>.done` once the last cycle's reconnects are over plus
//! `tail_s`; the devices are then held until `<files>.stop` exists (or `timeout_s`). Prints a JSON
//! report: devices, flaps done, reconnects that failed, errors by kind.

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use anyhow::bail;
use clap::Parser;
use parking_lot::Mutex;
use presence_bench::{
    connect::{connect_from, source_addr},
    device::{FrameConn, Transport, login_frame},
};
use tokio::sync::Semaphore;

const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Parser, Debug)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:7100")]
    target: SocketAddr,
    #[arg(long, default_value_t = 5000)]
    devices: usize,
    #[arg(long, default_value = "default")]
    app: String,
    #[arg(long, default_value = "dev-token-secret")]
    secret: String,
    #[arg(long, default_value = "flap")]
    user_prefix: String,
    /// Share of the devices that flap in each cycle.
    #[arg(long, default_value_t = 0.2)]
    share: f64,
    #[arg(long, default_value_t = 30)]
    cycle_s: u64,
    #[arg(long, default_value_t = 3)]
    cycles: u64,
    /// A flapping device is back after 200 ms to this long.
    #[arg(long, default_value_t = 2000)]
    reconnect_max_ms: u64,
    #[arg(long, default_value_t = 5)]
    settle_s: u64,
    #[arg(long, default_value_t = 8)]
    tail_s: u64,
    /// Logins in flight at the start.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    #[arg(long, default_value_t = 50)]
    source_ips: usize,
    /// Prefix of the phase files (`.ready`, `.done`, `.stop`).
    #[arg(long)]
    files: PathBuf,
    #[arg(long, default_value_t = 400)]
    timeout_s: u64,
}

#[derive(Default, serde::Serialize)]
struct Report {
    devices: usize,
    logged_in: usize,
    flaps: u64,
    failed_reconnects: u64,
    errors: BTreeMap<String, u64>,
}

/// A number in [0, 1) from (device, cycle): which devices flap when, the same in every run.
fn unit(device: usize, cycle: u64, salt: u64) -> f64 {
    let mut x = (device as u64)
        ^ cycle.wrapping_mul(0x9E37_79B9_7F4A_7C15)
        ^ salt.wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^= x >> 31;
    (x >> 11) as f64 / (1u64 << 53) as f64
}

struct Fleet {
    args: Args,
    report: Mutex<Report>,
}

impl Fleet {
    fn error(&self, what: &str) {
        *self.report.lock().errors.entry(what.to_owned()).or_default() += 1;
    }

    async fn login(&self, device: usize) -> Result<FrameConn, String> {
        let user_id = format!("{}{device}", self.args.user_prefix);
        let token = presence_client::mint_token(
            &self.args.secret,
            &user_id,
            Some(&self.args.app),
            Duration::from_secs(3600),
        )
        .map_err(|e| format!("token: {e}"))?;
        let source = source_addr(device, self.args.source_ips);
        let stream = tokio::time::timeout(REQUEST_TIMEOUT, connect_from(source, self.args.target))
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| format!("connect: {}", e.kind()))?;
        let mut conn = FrameConn::open(stream, self.args.target, Transport::Tcp).await?;
        conn.login(&login_frame(&self.args.app, &user_id, "phone", &token), REQUEST_TIMEOUT).await?;
        Ok(conn)
    }

    /// One device's life: its flaps, each at its moment of its cycle.
    async fn flap(&self, device: usize, mut conn: FrameConn, cycles_start: Instant) {
        let cycle = Duration::from_secs(self.args.cycle_s);
        for k in 0..self.args.cycles {
            if unit(device, k, 1) >= self.args.share {
                continue;
            }
            let at = cycles_start
                + cycle * u32::try_from(k).unwrap_or(u32::MAX)
                + cycle.mul_f64(0.5 * unit(device, k, 2));
            tokio::time::sleep_until(at.into()).await;
            drop(conn);
            let away =
                200 + (unit(device, k, 3) * self.args.reconnect_max_ms.saturating_sub(200) as f64) as u64;
            tokio::time::sleep(Duration::from_millis(away)).await;
            self.report.lock().flaps += 1;
            conn = match self.login(device).await {
                Ok(conn) => conn,
                Err(err) => {
                    self.report.lock().failed_reconnects += 1;
                    self.error(&err);
                    return;
                }
            };
        }
        // Held until the process ends.
        std::future::pending::<()>().await;
        drop(conn);
    }
}

async fn wait_for(path: &std::path::Path, deadline: Instant) {
    while !path.exists() && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn touch(path: &std::path::Path) {
    if let Err(err) = std::fs::write(path, b"") {
        eprintln!("flap-bench: writing {}: {err}", path.display());
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if !args.target.ip().is_loopback() {
        bail!("refusing a non-loopback target {}: load goes to 127.0.0.0/8 only", args.target);
    }
    let deadline = Instant::now() + Duration::from_secs(args.timeout_s);
    let with = |suffix: &str| {
        let mut name = args.files.clone().into_os_string();
        name.push(suffix);
        PathBuf::from(name)
    };
    let (ready, done, stop) = (with(".ready"), with(".done"), with(".stop"));
    let fleet =
        Arc::new(Fleet { report: Mutex::new(Report { devices: args.devices, ..Report::default() }), args });

    let gate = Arc::new(Semaphore::new(fleet.args.concurrency.max(1)));
    let mut logins = tokio::task::JoinSet::new();
    for device in 0..fleet.args.devices {
        let (fleet, gate) = (fleet.clone(), gate.clone());
        logins.spawn(async move {
            let _permit = gate.acquire_owned().await.ok()?;
            match fleet.login(device).await {
                Ok(conn) => Some((device, conn)),
                Err(err) => {
                    fleet.error(&err);
                    None
                }
            }
        });
    }
    let mut held = Vec::with_capacity(fleet.args.devices);
    while let Some(joined) = logins.join_next().await {
        if let Ok(Some(conn)) = joined {
            held.push(conn);
        }
    }
    fleet.report.lock().logged_in = held.len();
    touch(&ready);

    let cycles_start = Instant::now() + Duration::from_secs(fleet.args.settle_s);
    let mut devices = tokio::task::JoinSet::new();
    for (device, conn) in held {
        let fleet = fleet.clone();
        devices.spawn(async move { fleet.flap(device, conn, cycles_start).await });
    }
    let cycles = u32::try_from(fleet.args.cycles).unwrap_or(u32::MAX);
    let over = cycles_start
        + Duration::from_secs(fleet.args.cycle_s) * cycles
        + Duration::from_millis(fleet.args.reconnect_max_ms)
        + Duration::from_secs(fleet.args.tail_s);
    tokio::time::sleep_until(over.min(deadline).into()).await;
    touch(&done);
    wait_for(&stop, deadline).await;
    devices.abort_all();
    println!("{}", serde_json::to_string_pretty(&*fleet.report.lock())?);
    Ok(())
}
