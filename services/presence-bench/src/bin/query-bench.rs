//! Batch status queries of 500 users: saturation throughput (closed loop, C in flight) and
//! latency at a fixed rate (open loop, paced), over gRPC (the registry) or REST (the facade).
//! Loopback only; bounded by --seconds.
//!
//! Usage: query-bench --via grpc|rest --users 1000000 --batch 500 --seconds 10 [--rate 1000]

use std::{
    sync::Arc,
    time::{Duration, Instant},
};

use clap::Parser;
use presence_bench::{
    query_wire::{EncodedQuery, LightQueryCodec, QUERY_PATH},
    stats::percentiles,
};
use presence_common::internal_auth::CallerToken;
use presence_proto::v1::QueryRequest;
use tokio::sync::Mutex;
use tonic::{codegen::http::uri::PathAndQuery, service::interceptor::InterceptedService};

#[derive(Parser, Clone)]
struct Args {
    #[arg(long, default_value = "grpc")]
    via: String,
    #[arg(long, default_value = "http://127.0.0.1:7200")]
    registry: String,
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    facade: String,
    #[arg(long, default_value = "bench-key")]
    api_key: String,
    /// The registry caller token (facade role) for --via grpc.
    #[arg(long, env = "INTERNAL_TOKEN", hide_env_values = true)]
    internal_token: Option<String>,
    #[arg(long, default_value = "bench")]
    app: String,
    /// User ids are `<prefix><n>` for n in 0..users.
    #[arg(long, default_value = "q")]
    prefix: String,
    #[arg(long, default_value_t = 1_000_000)]
    users: usize,
    #[arg(long, default_value_t = presence_proto::limits::MAX_IDS_PER_QUERY)]
    batch: usize,
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Queries per second (0: saturation with --concurrency in flight).
    #[arg(long, default_value_t = 0.0)]
    rate: f64,
    #[arg(long, default_value_t = 16)]
    concurrency: usize,
    /// The load generator's threads; by default one over gRPC and one per core over REST. One, as
    /// redis-benchmark, spends no CPU handing tasks and wake-ups between threads (the cores are
    /// shared with the server); over REST, more keep the parsing of one reply's JSON from
    /// delaying another reply's clock.
    #[arg(long)]
    client_threads: Option<usize>,
}

enum Target {
    /// The registry's Query over tonic, with requests encoded beforehand and replies counted
    /// (see `query_wire`).
    Grpc(tonic::client::Grpc<InterceptedService<tonic::transport::Channel, CallerToken>>),
    Rest(reqwest::Client),
}

/// A REST answer as the load generator checks it: every result is there (each is parsed as JSON,
/// not built into a value: the client's CPU is the services' CPU on this machine).
#[derive(serde::Deserialize)]
struct RestReply {
    results: Vec<serde::de::IgnoredAny>,
    #[allow(dead_code)]
    as_of_seq: u64,
}

/// One query, prepared before the clock starts, in the form each target sends.
struct Prepared {
    grpc: EncodedQuery,
    json: bytes::Bytes,
}

impl Target {
    async fn query(&mut self, args: &Args, query: &Prepared) -> Result<usize, String> {
        match self {
            Target::Grpc(client) => {
                client.ready().await.map_err(|e| e.to_string())?;
                let path = PathAndQuery::from_static(QUERY_PATH);
                client
                    .unary(tonic::Request::new(query.grpc.clone()), path, LightQueryCodec)
                    .await
                    .map(|reply| reply.into_inner().results)
                    .map_err(|e| e.code().to_string())
            }
            Target::Rest(client) => {
                let response = client
                    .post(format!("{}/v1/presence/query", args.facade))
                    .bearer_auth(&args.api_key)
                    .header(reqwest::header::CONTENT_TYPE, "application/json")
                    .body(query.json.clone())
                    .send()
                    .await
                    .map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(response.status().to_string());
                }
                let body = response.bytes().await.map_err(|e| e.to_string())?;
                let reply: RestReply = serde_json::from_slice(&body).map_err(|e| e.to_string())?;
                Ok(reply.results.len())
            }
        }
    }
}

/// Distinct queries the workers cycle through: 4,096 x 500 ids cover a 1M id space about twice,
/// so the registry's reads stay spread over its whole table as with fresh random ids.
const PREPARED: u64 = 4096;

fn prepare(args: &Args) -> anyhow::Result<Vec<Prepared>> {
    (0..PREPARED)
        .map(|seed| {
            let ids = batch(args, seed);
            let json = serde_json::to_vec(&serde_json::json!({ "user_ids": ids, "detail": false }))?;
            // As the facade asks (it holds the ids): results without them.
            let grpc = EncodedQuery::new(&QueryRequest {
                app_id: args.app.clone(),
                user_ids: ids.iter().collect(),
                detail: false,
                without_user_ids: true,
            });
            Ok(Prepared { grpc, json: json.into() })
        })
        .collect()
}

fn batch(args: &Args, seed: u64) -> Vec<String> {
    // A cheap deterministic spread over the id space.
    let mut x = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..args.batch)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{}{}", args.prefix, x as usize % args.users.max(1))
        })
        .collect()
}

fn main() -> anyhow::Result<()> {
    rustls::crypto::ring::default_provider().install_default().ok();
    let args = Args::parse();
    let cores = std::thread::available_parallelism().map_or(1, usize::from);
    let threads = args.client_threads.unwrap_or(if args.via == "grpc" { 1 } else { cores });
    let runtime = if threads <= 1 {
        tokio::runtime::Builder::new_current_thread().enable_all().build()?
    } else {
        tokio::runtime::Builder::new_multi_thread().worker_threads(threads).enable_all().build()?
    };
    runtime.block_on(run(args))
}

async fn run(args: Args) -> anyhow::Result<()> {
    for url in [&args.registry, &args.facade] {
        let host = url.split("://").nth(1).unwrap_or(url).split(':').next().unwrap_or("");
        anyhow::ensure!(host == "127.0.0.1" || host == "localhost", "loopback targets only: {url}");
    }
    let connect = || async {
        Ok::<_, anyhow::Error>(match args.via.as_str() {
            "grpc" => {
                let channel =
                    tonic::transport::Endpoint::from_shared(args.registry.clone())?.connect().await?;
                let token = CallerToken::new(args.internal_token.as_deref())?;
                Target::Grpc(tonic::client::Grpc::new(InterceptedService::new(channel, token)))
            }
            "rest" => Target::Rest(reqwest::Client::builder().build()?),
            other => anyhow::bail!("--via grpc|rest, not {other}"),
        })
    };
    let prepared = Arc::new(prepare(&args)?);
    let deadline = Instant::now() + Duration::from_secs(args.seconds);
    let samples = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let started = Instant::now();
    let mut tasks = Vec::new();
    let workers =
        if args.rate > 0.0 { (args.rate / 50.0).ceil().max(1.0) as usize } else { args.concurrency };
    for w in 0..workers {
        let mut target = connect().await?;
        let (args, samples, errors, prepared) =
            (args.clone(), samples.clone(), errors.clone(), prepared.clone());
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            let per_worker = args.rate / workers as f64;
            let mut n: u64 = 0;
            while Instant::now() < deadline {
                if per_worker > 0.0 {
                    // Workers interleave (worker w sends the w-th of every `workers` slots), so
                    // arrivals are evenly spaced instead of bursts of `workers` at once.
                    let slot = n as f64 * workers as f64 + w as f64;
                    let due = started + Duration::from_secs_f64(slot / args.rate);
                    tokio::time::sleep_until(due.into()).await;
                }
                let query = &prepared[((w as u64 * 7919 + n) % PREPARED) as usize];
                n += 1;
                let t = Instant::now();
                match target.query(&args, query).await {
                    Ok(len) if len == args.batch => mine.push(t.elapsed().as_micros() as u64),
                    _ => {
                        errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    }
                }
            }
            samples.lock().await.extend(mine);
        }));
    }
    for task in tasks {
        task.await?;
    }
    let elapsed = started.elapsed().as_secs_f64();
    let mut samples = samples.lock().await.clone();
    let count = samples.len();
    let p = percentiles(&mut samples);
    let summary = serde_json::json!({
        "via": args.via, "batch": args.batch, "rate_target": args.rate,
        "queries_per_s": count as f64 / elapsed, "queries": count, "errors": errors.load(std::sync::atomic::Ordering::Relaxed),
        "latency": p,
    });
    eprintln!(
        "{} {} qps (target {}), p50 {:.2} ms p99 {:.2} ms, errors {}",
        args.via,
        (count as f64 / elapsed).round(),
        args.rate,
        p.p50_ms,
        p.p99_ms,
        summary["errors"]
    );
    println!("{summary}");
    Ok(())
}
