//! Several registry processes, several gateways, a notifier and a callback receiver on loopback,
//! around one fresh database: what the scale-out tests (`tests/scale_out.rs`) drive, and the
//! bounded login load they run while registries die, pause, leave and join.

use std::{
    collections::HashMap,
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use presence_client::{Client, ClientError, LoginParams};
use presence_common::{config::default_database_url, internal_auth::Role};
use presence_proto::v1::Platform;
use tokio::{task::JoinHandle, time::Instant};

use crate::{
    INTERNAL_SECRET, Receiver,
    database::TestDatabase,
    eventually, free_port,
    inprocess::token,
    internal_token,
    system::{Deployment, Service},
};

/// Short leases, so that failure tests finish quickly: a paused registry loses its partitions
/// after this, a silent gateway its devices after [`GATEWAY_LEASE_S`].
pub const PARTITION_LEASE_MS: u64 = 3000;
pub const GATEWAY_LEASE_S: u64 = 3;
/// The gateway's bound on a login: no device waits longer for an answer.
pub const LOGIN_BOUND: Duration = Duration::from_secs(10);

/// A registry process of the cluster.
pub struct ClusterRegistry {
    pub service: Service,
    pub url: String,
    pub name: String,
}

pub struct Cluster {
    pub db: TestDatabase,
    pub receiver: Receiver,
    pub registries: Vec<ClusterRegistry>,
    pub gateways: Vec<(Service, SocketAddr)>,
    pub notifier: Option<Service>,
    runtime_url: String,
}

impl Cluster {
    /// `registries` registry processes (all partitions owned before it returns), `gateways`
    /// gateways attached to every registry, a notifier.
    pub async fn start(registries: usize, gateways: usize) -> Self {
        let server = std::env::var("DATABASE_URL").unwrap_or_else(|_| default_database_url());
        let Deployment { db, runtime_url, receiver } = Deployment::prepare(&server).await;
        let mut cluster =
            Self { db, receiver, registries: Vec::new(), gateways: Vec::new(), notifier: None, runtime_url };
        for _ in 0..registries {
            cluster.add_registry().await;
        }
        cluster.wait_balanced(registries).await;
        let notifier_admin = free_port();
        let mut notifier = Service::spawn(
            "notifier",
            "notifier",
            notifier_admin,
            &[
                ("DATABASE_URL", cluster.runtime_url.clone()),
                ("NOTIFIER_METRICS_ADDR", notifier_admin.to_string()),
                ("NOTIFIER_POLL_INTERVAL_MS", "10".into()),
                ("NOTIFIER_FLUSH_INTERVAL_MS", "100".into()),
                ("NOTIFIER_BACKOFF_INITIAL_MS", "50".into()),
                ("NOTIFIER_BACKOFF_MAX_MS", "500".into()),
            ],
        );
        notifier.wait_healthy().await;
        cluster.notifier = Some(notifier);
        for i in 0..gateways {
            cluster.add_gateway(&format!("gw-{}", i + 1)).await;
        }
        cluster
    }

    /// Starts one more registry process (it joins and takes its share).
    pub async fn add_registry(&mut self) {
        let name = format!("registry-{}", self.registries.len() + 1);
        let (grpc, admin) = (free_port(), free_port());
        let mut service = Service::spawn(
            "presence-registry",
            &name,
            admin,
            &[
                ("DATABASE_URL", self.runtime_url.clone()),
                ("REGISTRY_ID", name.clone()),
                ("REGISTRY_LISTEN_ADDR", grpc.to_string()),
                ("REGISTRY_METRICS_ADDR", admin.to_string()),
                ("REGISTRY_GATEWAY_LEASE_S", GATEWAY_LEASE_S.to_string()),
                ("REGISTRY_SWEEP_INTERVAL_MS", "200".into()),
                ("REGISTRY_PARTITION_LEASE_MS", PARTITION_LEASE_MS.to_string()),
                ("REGISTRY_BALANCE_INTERVAL_MS", "100".into()),
                // Several registries share one test server's connection slots.
                ("REGISTRY_DB_MAX_CONNECTIONS", "4".into()),
                ("REGISTRY_INTERNAL_SECRET", INTERNAL_SECRET.into()),
            ],
        );
        service.wait_healthy().await;
        self.registries.push(ClusterRegistry { service, url: format!("http://{grpc}"), name });
    }

    pub async fn add_gateway(&mut self, id: &str) {
        let (listen, admin) = (free_port(), free_port());
        let mut gateway = Service::spawn(
            "connection-gateway",
            id,
            admin,
            &[
                ("DATABASE_URL", self.runtime_url.clone()),
                ("REGISTRY_URL", self.registries[0].url.clone()),
                ("GATEWAY_ID", id.to_owned()),
                ("INTERNAL_TOKEN", internal_token(Role::Gateway, id)),
                ("GATEWAY_LISTEN_ADDR", listen.to_string()),
                ("GATEWAY_WS_LISTEN_ADDR", "off".to_owned()),
                ("GATEWAY_METRICS_ADDR", admin.to_string()),
                // One thread, as several gateways on a small box run (the single-threaded scheduler).
                ("GATEWAY_WORKER_THREADS", "1".to_owned()),
            ],
        );
        gateway.wait_healthy().await;
        self.gateways.push((gateway, listen));
        // Logins need the gateway's link to the user's registry: wait until one goes through.
        let (client, _) = self.login_retrying(listen, &format!("warm-up-{id}"), "d").await;
        drop(client);
    }

    /// Partitions per live owner (member id prefix, e.g. `registry-2`), and how many have none.
    pub async fn owners(&self) -> (HashMap<String, usize>, usize) {
        let rows: Vec<(Option<String>,)> = sqlx::query_as(
            "SELECT m.member FROM registry_partitions t LEFT JOIN presence_members m \
             ON m.member = t.owner AND m.alive_until > now()",
        )
        .fetch_all(&self.db.pool)
        .await
        .expect("read the partition map");
        let mut owners: HashMap<String, usize> = HashMap::new();
        let mut free = 0;
        for (member,) in rows {
            match member {
                // `registry-2-8f3a01c2` is a start of `registry-2`.
                Some(member) => {
                    let name = member.rsplit_once('-').map_or(member.clone(), |(name, _)| name.to_owned());
                    *owners.entry(name).or_default() += 1;
                }
                None => free += 1,
            }
        }
        (owners, free)
    }

    /// Waits until every partition has a live owner and `live` registries share them evenly
    /// (each within one of the others).
    pub async fn wait_balanced(&self, live: usize) {
        eventually(&format!("{live} registries to share the partitions"), async || {
            let (owners, free) = self.owners().await;
            let (min, max) = (owners.values().min().copied(), owners.values().max().copied());
            free == 0 && owners.len() == live && max.zip(min).is_some_and(|(max, min)| max - min <= 1)
        })
        .await;
    }

    /// Waits until every partition has a live owner other than `gone` (a registry name);
    /// returns how long that took since `since`.
    pub async fn wait_owned_without(&self, gone: &str, since: Instant) -> Duration {
        loop {
            let (owners, free) = self.owners().await;
            if free == 0 && !owners.is_empty() && !owners.contains_key(gone) {
                return since.elapsed();
            }
            assert!(since.elapsed() < Duration::from_secs(30), "partitions still without an owner: {free}");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// A login at `gateway`, retried until it succeeds (a warm-up, not a measurement).
    pub async fn login_retrying(&self, gateway: SocketAddr, user: &str, device: &str) -> (Client, Instant) {
        crate::eventually_ok(&format!("login of {user}"), async || {
            let mut client = Client::connect(gateway).await.map_err(|err| err.to_string())?;
            let params = LoginParams::new(user, device, Platform::Ios, token(user));
            client.login(params).await.map_err(|err| err.to_string())?;
            Ok::<_, String>((client, Instant::now()))
        })
        .await
    }
}

/// One login of the load: what the device was told, and how long it waited.
#[derive(Debug, Clone)]
pub struct LoginRecord {
    pub user: String,
    pub device: String,
    pub started: Instant,
    pub elapsed: Duration,
    /// `Ok`, the LoginError code, `kicked:<reason>`, or another failure described.
    pub result: Result<(), String>,
}

/// A steady login load on the gateways until stopped: `per_second` logins, users drawn from
/// `users`, each on one of three devices (so the default policy kicks), each connection closed
/// a moment after its LoginOk (so disconnects happen too).
pub struct LoginLoad {
    running: Arc<AtomicBool>,
    records: Arc<Mutex<Vec<LoginRecord>>>,
    task: JoinHandle<()>,
}

impl LoginLoad {
    pub fn start(gateways: Vec<SocketAddr>, users: usize, per_second: u32) -> Self {
        let running = Arc::new(AtomicBool::new(true));
        let records: Arc<Mutex<Vec<LoginRecord>>> = Arc::default();
        let task = {
            let (running, records) = (running.clone(), records.clone());
            tokio::spawn(async move {
                let every = Duration::from_secs(1) / per_second.max(1);
                let mut tick = tokio::time::interval(every);
                let mut n: usize = 0;
                let mut in_flight = tokio::task::JoinSet::new();
                while running.load(Ordering::SeqCst) {
                    tick.tick().await;
                    let gateway = gateways[n % gateways.len()];
                    let user = format!("u{}", (n * 7919) % users.max(1));
                    let device = format!("d{}", n % 3);
                    let records = records.clone();
                    in_flight.spawn(async move {
                        let record = login_once(gateway, user, device).await;
                        records.lock().expect("records").push(record);
                    });
                    n += 1;
                    while in_flight.try_join_next().is_some() {}
                }
                while in_flight.join_next().await.is_some() {}
            })
        };
        Self { running, records, task }
    }

    /// Stops sending and waits for the logins in flight; returns every record.
    pub async fn stop(self) -> Vec<LoginRecord> {
        self.running.store(false, Ordering::SeqCst);
        self.task.await.expect("load task");
        std::mem::take(&mut *self.records.lock().expect("records"))
    }
}

async fn login_once(gateway: SocketAddr, user: String, device: String) -> LoginRecord {
    let started = Instant::now();
    let attempt = async {
        let mut client = Client::connect(gateway).await?;
        let platform = if device == "d0" { Platform::Ios } else { Platform::Android };
        client.login(LoginParams::new(&user, &device, platform, token(&user))).await?;
        Ok::<_, ClientError>(client)
    };
    // A little over the gateway's bound: an answer later than that is a hang.
    let result = match tokio::time::timeout(LOGIN_BOUND + Duration::from_secs(2), attempt).await {
        Ok(Ok(client)) => {
            let elapsed = started.elapsed();
            // Stay a moment, then leave: the disconnect is an event too.
            tokio::time::sleep(Duration::from_millis(200)).await;
            drop(client);
            return LoginRecord { user, device, started, elapsed, result: Ok(()) };
        }
        Ok(Err(ClientError::Login { code, .. })) => Err(code),
        // A newer login of the same device replaced this one before its LoginOk: a clean answer.
        Ok(Err(ClientError::Kicked(kicked))) => Err(format!("kicked:{}", kicked.reason)),
        Ok(Err(other)) => Err(format!("not a LoginError: {other}")),
        Err(_) => Err("hang".to_owned()),
    };
    LoginRecord { user, device, started, elapsed: started.elapsed(), result }
}
