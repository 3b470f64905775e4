//! Postgres restarted under load: devices keep logging in while a private cluster (never the
//! shared server) is stopped with `pg_ctl stop -m fast` and started again. The services must
//! ride it out without a restart of their own: nothing acknowledged is lost, every event reaches
//! the app backend, the registry's gRPC health is NOT_SERVING meanwhile, and logins succeed again
//! after it. A short outage (3 s) is absorbed: the services' pools wait up to 5 s for a
//! connection, so logins are only slow. A longer one outlasts the gateway's 10 s login deadline
//! (the registry stops serving once its partition lease could have expired, and the gateway keeps
//! re-routing until the deadline): logins then fail cleanly with
//! `LoginError { code: "unavailable" }`, never hang.

use std::{
    collections::{HashMap, HashSet},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
    time::Duration,
};

use presence_client::{Client, ClientError, LoginParams, mint_token};
use presence_proto::v1::Platform;
use testkit::{
    System, ThrowawayPostgres, eventually,
    system::{Options, SECRET},
};
use tokio::time::Instant;
use tonic_health::pb::{
    HealthCheckRequest, health_check_response::ServingStatus, health_client::HealthClient,
};

const LOGINS: usize = 200;
const WORKERS: usize = 4;
/// Logins completed before the database goes down.
const STOP_AFTER: usize = 60;
/// A login that takes longer than this hangs: the gateway must answer well before.
const LOGIN_BOUND: Duration = Duration::from_secs(12);
/// After the database is back, the pools need a moment to notice; after this every login passes.
const RECOVERY: Duration = Duration::from_secs(3);

struct Outcome {
    user: String,
    started: Instant,
    elapsed: Duration,
    /// `Ok`, or the LoginError code, or a description of any other failure.
    result: Result<(), String>,
}

async fn login_once(gateway: std::net::SocketAddr, user: &str) -> (Result<(), String>, Option<Client>) {
    let token = mint_token(SECRET, user, None, Duration::from_secs(3600)).expect("token");
    let attempt = async {
        let mut client = Client::connect(gateway).await?;
        client.login(LoginParams::new(user, "phone", Platform::Ios, token)).await?;
        Ok::<_, ClientError>(client)
    };
    match tokio::time::timeout(LOGIN_BOUND, attempt).await {
        Ok(Ok(client)) => (Ok(()), Some(client)),
        Ok(Err(ClientError::Login { code, .. })) => (Err(code), None),
        Ok(Err(other)) => (Err(format!("not a LoginError: {other}")), None),
        Err(_) => (Err(format!("hang: no answer within {LOGIN_BOUND:?}")), None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_3s_postgres_restart_under_load_only_slows_logins_down() {
    let refused = restart_under_load(Duration::from_secs(3)).await;
    // Only the logins whose transaction the stop itself cut can fail; the others wait it out.
    assert_eq!(refused.while_down, 0, "logins refused: a 3 s outage should fit in the pools' 5 s wait");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_11s_postgres_restart_under_load_refuses_logins_cleanly_meanwhile() {
    let refused = restart_under_load(Duration::from_secs(11)).await;
    // The logins waiting when it went down give up at the gateway's 10 s deadline, cleanly.
    assert!(refused.total > 0, "no login was refused: the outage did not outlast the login deadline");
}

/// Logins refused (all with `unavailable`).
struct Refused {
    total: usize,
    /// Those started once the server was down (the others may have had their transaction cut
    /// by the stop).
    while_down: usize,
}

/// The scenario; returns the refusals. Fails (never skips) when no private cluster can be made.
async fn restart_under_load(outage: Duration) -> Refused {
    let pg = tokio::task::spawn_blocking(ThrowawayPostgres::start).await.expect("a private Postgres cluster");
    let pg = Arc::new(pg);
    let mut system =
        System::start_with(Options { database_server: Some(pg.url("postgres")), ..Options::default() }).await;
    let gateway = system.gateway_addr;
    // Until the gateway has attached to the registry, logins are refused: wait for that first.
    let _warm = system.login("warm-up", "phone", Platform::Ios, false).await;

    // Devices log in, each a different user, from a few workers at once; clients stay connected.
    let outcomes: Arc<Mutex<Vec<Outcome>>> = Arc::default();
    let clients: Arc<Mutex<Vec<Client>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for worker in 0..WORKERS {
        let (outcomes, clients, done) = (outcomes.clone(), clients.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            for i in (worker..LOGINS).step_by(WORKERS) {
                let user = format!("u{i}");
                let started = Instant::now();
                let (result, client) = login_once(gateway, &user).await;
                let elapsed = started.elapsed();
                clients.lock().expect("clients").extend(client);
                outcomes.lock().expect("outcomes").push(Outcome { user, started, elapsed, result });
                done.fetch_add(1, Ordering::SeqCst);
                // Paces the load, so that logins span the outage.
                tokio::time::sleep(Duration::from_millis(30)).await;
            }
        }));
    }

    // gRPC health of the registry, polled across the outage.
    let polling = Arc::new(AtomicBool::new(true));
    let health_seen: Arc<Mutex<Vec<(Instant, i32)>>> = Arc::default();
    let poller = {
        let (polling, seen) = (polling.clone(), health_seen.clone());
        let url = system.registry_url().to_owned();
        tokio::spawn(async move {
            let channel = tonic::transport::Endpoint::from_shared(url).expect("URL").connect_lazy();
            let mut health = HealthClient::new(channel);
            while polling.load(Ordering::SeqCst) {
                let request = HealthCheckRequest { service: String::new() };
                if let Ok(Ok(answer)) =
                    tokio::time::timeout(Duration::from_secs(1), health.check(request)).await
                {
                    seen.lock().expect("health").push((Instant::now(), answer.into_inner().status));
                }
                // The polling interval: the health seen over time is what is recorded.
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };

    eventually("the first logins", async || done.load(Ordering::SeqCst) >= STOP_AFTER).await;
    let stopped_at = Instant::now();
    let stopper = pg.clone();
    tokio::task::spawn_blocking(move || stopper.stop_fast()).await.expect("pg_ctl stop");
    let down_at = Instant::now();
    // The outage itself.
    tokio::time::sleep(outage).await;
    let starter = pg.clone();
    tokio::task::spawn_blocking(move || starter.start_again()).await.expect("pg_ctl start");
    let back_at = Instant::now();
    println!("pg_ctl stop took {:?}; database down for {:?}", down_at - stopped_at, back_at - stopped_at);

    for worker in workers {
        worker.await.expect("login worker");
    }
    eventually("health SERVING again", async || {
        health_seen.lock().expect("health").last().is_some_and(|(_, s)| *s == ServingStatus::Serving as i32)
    })
    .await;
    polling.store(false, Ordering::SeqCst);
    poller.await.expect("health poller");

    // No service exited: they rode it out.
    system.assert_all_running().await;

    let outcomes = std::mem::take(&mut *outcomes.lock().expect("outcomes"));
    // Seconds from the stop, negative before it.
    let at = |t: Instant| {
        if t >= stopped_at { (t - stopped_at).as_secs_f64() } else { -(stopped_at - t).as_secs_f64() }
    };
    let mut timeline: Vec<&Outcome> = outcomes.iter().collect();
    timeline.sort_by_key(|o| o.started);
    for o in &timeline {
        if o.result.is_err() || o.elapsed > Duration::from_secs(1) {
            println!("{} started {:+.2}s after stop, {:?}: {:?}", o.user, at(o.started), o.elapsed, o.result);
        }
    }
    let ok: HashSet<&str> = outcomes.iter().filter(|o| o.result.is_ok()).map(|o| o.user.as_str()).collect();
    let failed: Vec<&Outcome> = outcomes.iter().filter(|o| o.result.is_err()).collect();
    println!("{} logins: {} ok, {} refused", outcomes.len(), ok.len(), failed.len());
    let slowest = outcomes.iter().map(|o| o.elapsed).max().unwrap_or_default();
    println!("slowest login answer: {slowest:?}");
    assert_eq!(outcomes.len(), LOGINS);

    // Outage: a clean LoginError `unavailable`, never another error, never a hang.
    let unclean: Vec<_> = failed
        .iter()
        .filter(|o| o.result.as_ref().err().map(String::as_str) != Some("unavailable"))
        .map(|o| (&o.user, &o.result))
        .collect();
    assert!(unclean.is_empty(), "logins that did not fail cleanly: {unclean:?}");
    // Refusals only while the database was down (or the pools were still reconnecting).
    let late: Vec<_> =
        failed.iter().filter(|o| o.started > back_at + RECOVERY).map(|o| (&o.user, at(o.started))).collect();
    assert!(late.is_empty(), "refused more than {RECOVERY:?} after the database was back: {late:?}");
    let early: Vec<_> =
        failed.iter().filter(|o| o.started + o.elapsed < stopped_at).map(|o| &o.user).collect();
    assert!(early.is_empty(), "refused before the outage: {early:?}");

    // Logins go on without any service restarted: one more, no retry, once the recovery time
    // granted above has passed (the load may end within it).
    tokio::time::sleep_until(back_at + RECOVERY).await;
    let (fresh, _client) = login_once(gateway, "after-restart").await;
    assert_eq!(fresh, Ok(()), "a login after the restart");

    // Nothing acknowledged is lost: every LoginOk has its event, exactly once.
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT user_id, event_id::text FROM presence_events WHERE action = 'login'")
            .fetch_all(&system.db.pool)
            .await
            .expect("read events after the restart");
    let mut per_user: HashMap<&str, usize> = HashMap::new();
    for (user, _) in &rows {
        *per_user.entry(user.as_str()).or_default() += 1;
    }
    let lost: Vec<&&str> = ok.iter().filter(|u| !per_user.contains_key(**u)).collect();
    assert!(lost.is_empty(), "acknowledged logins without an event: {lost:?}");
    let twice: Vec<_> = per_user.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "logins recorded twice: {twice:?}");
    // A refused login whose commit reached the disk anyway (the connection died after COMMIT):
    // allowed (not acknowledged), but worth seeing.
    let ambiguous: Vec<&str> =
        failed.iter().map(|o| o.user.as_str()).filter(|u| per_user.contains_key(u)).collect();
    println!("refused logins with an event anyway: {ambiguous:?}");

    // The registry's memory agrees: acknowledged devices are online.
    let ok_users: Vec<&str> = ok.iter().copied().collect();
    for chunk in ok_users.chunks(50) {
        let statuses = system.statuses(chunk).await;
        let offline: Vec<_> = chunk.iter().zip(&statuses).filter(|(_, s)| *s != "online").collect();
        assert!(offline.is_empty(), "acknowledged but not online: {offline:?}");
    }

    // Every event reaches the app backend.
    let all: Vec<(String, String)> = sqlx::query_as("SELECT user_id, event_id::text FROM presence_events")
        .fetch_all(&system.db.pool)
        .await
        .expect("read events");
    system.receiver.wait_for_ids(all.iter().map(|(_, id)| id.clone()).collect()).await;

    // gRPC health followed the database: NOT_SERVING during the outage, SERVING after.
    let seen = health_seen.lock().expect("health").clone();
    let not_serving = seen
        .iter()
        .filter(|(t, s)| {
            *t >= stopped_at && *t <= back_at + RECOVERY && *s == ServingStatus::NotServing as i32
        })
        .count();
    println!("health checks: {} answered, {not_serving} NOT_SERVING in the outage", seen.len());
    assert!(not_serving > 0, "the registry stayed SERVING without its database");
    system.assert_all_running().await;
    drop(clients);
    if std::env::var_os("PRESENCE_PG_LOG").is_some() {
        println!("{}", pg.log());
    }
    let while_down = failed.iter().filter(|o| o.started >= down_at).count();
    Refused { total: failed.len(), while_down }
}
