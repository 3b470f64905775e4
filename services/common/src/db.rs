//! Postgres: the one migrate step, and the services' connection with a schema check.
//!
//! Migrations run in one place, [`migrate`] (the `presence-migrate` binary), as the role that owns
//! the schema. The services connect as a runtime role that only reads and writes rows; at start
//! they refuse to run against a schema older than the one they were built for.

use std::{str::FromStr, time::Duration};

use sqlx::{PgPool, postgres::PgPoolOptions};

use crate::{Shutdown, backoff::Backoff};

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("database unreachable: {0}")]
    Connect(#[source] sqlx::Error),
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error(
        "the database schema is behind this build: migration {version} ({description}) is not applied; \
         run `presence-migrate` against this database first"
    )]
    SchemaBehind { version: i64, description: String },
    #[error(
        "migration {version} ({description}) in the database differs from this build's; \
         the schema was changed by hand or by another build"
    )]
    SchemaMismatch { version: i64, description: String },
    #[error("reading the schema version: {0}")]
    SchemaUnreadable(#[source] sqlx::Error),
    #[error("granting the runtime role {role}: {source}")]
    Grant { role: String, source: sqlx::Error },
    #[error("shut down while waiting for the database")]
    ShutDown,
    #[error(
        "this deployment has {existing} partitions; PRESENCE_PARTITIONS={requested} cannot change it \
         (the partition count is fixed once chosen)"
    )]
    PartitionsFixed { existing: u32, requested: u32 },
    #[error("PRESENCE_PARTITIONS must be 1 to {max}, not {requested}")]
    PartitionsOutOfRange { requested: u32, max: u32 },
    #[error("the database has no partitions yet; run `presence-migrate` against it first")]
    NoPartitions,
    #[error("setting up partitions: {0}")]
    Partitions(#[source] sqlx::Error),
}

/// The most partitions a deployment may have: a partition is cheap, but each one is a lease to
/// renew and a slice to restore.
pub const MAX_PARTITIONS: u32 = 4096;

/// The migrations of `migrations/`, compiled in.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// Connects, retrying with backoff until `shutdown` (the database may come up after us), and
/// checks that every migration this build knows is applied.
pub async fn connect(url: &str, max_connections: u32, shutdown: &Shutdown) -> Result<PgPool, DbError> {
    connect_with(url, max_connections, &[], shutdown).await
}

/// [`connect`] with session settings (`SET name = value` on every connection of the pool).
pub async fn connect_with(
    url: &str,
    max_connections: u32,
    settings: &[(&str, &str)],
    shutdown: &Shutdown,
) -> Result<PgPool, DbError> {
    let options = sqlx::postgres::PgConnectOptions::from_str(url)
        .map_err(DbError::Connect)?
        .options(settings.iter().copied());
    let pool = connect_with_retry(options, max_connections, shutdown).await?;
    check_schema(&pool).await?;
    Ok(pool)
}

/// Applies pending migrations (under sqlx's advisory lock, so concurrent runs are safe) and
/// [`ensure_partitions`]; then, when `runtime_role` is given, grants it exactly what the services
/// need: row access to every table and use of every sequence, now and for tables later migrations
/// create. Returns the partition count.
pub async fn migrate(
    pool: &PgPool,
    runtime_role: Option<&str>,
    partitions: Option<u32>,
) -> Result<u32, DbError> {
    MIGRATOR.run(pool).await?;
    let partitions = ensure_partitions(pool, partitions).await?;
    if let Some(role) = runtime_role {
        grant_runtime_role(pool, role).await?;
    }
    Ok(partitions)
}

/// A LISTEN connection of its own, outside `pool`: a listener holds its connection for good, and
/// the services' pools are small (two connections for a gateway).
pub async fn listen(pool: &PgPool, channel: &str) -> Result<sqlx::postgres::PgListener, sqlx::Error> {
    let own = PgPoolOptions::new().max_connections(1).connect_lazy_with((*pool.connect_options()).clone());
    let mut listener = sqlx::postgres::PgListener::connect_with(&own).await?;
    listener.listen(channel).await?;
    Ok(listener)
}

/// Seeds the partition tables with `requested` partitions (default
/// [`presence_proto::partition::DEFAULT_PARTITIONS`]) the first time, and numbers the rows written
/// before partitions existed. Later runs check that the count is unchanged. Returns P.
pub async fn ensure_partitions(pool: &PgPool, requested: Option<u32>) -> Result<u32, DbError> {
    use presence_proto::partition::DEFAULT_PARTITIONS;
    let err = DbError::Partitions;
    let p = requested.unwrap_or(DEFAULT_PARTITIONS);
    if p == 0 || p > MAX_PARTITIONS {
        return Err(DbError::PartitionsOutOfRange { requested: p, max: MAX_PARTITIONS });
    }
    let mut tx = pool.begin().await.map_err(err)?;
    // Concurrent runs of presence-migrate seed once.
    sqlx::query("LOCK TABLE registry_partitions IN EXCLUSIVE MODE").execute(&mut *tx).await.map_err(err)?;
    let existing = u32::try_from(
        sqlx::query_scalar::<_, i64>("SELECT count(*) FROM registry_partitions")
            .fetch_one(&mut *tx)
            .await
            .map_err(err)?,
    )
    .unwrap_or(0);
    if existing > 0 {
        return match requested {
            Some(requested) if requested != existing => Err(DbError::PartitionsFixed { existing, requested }),
            _ => Ok(existing),
        };
    }
    let statements = [
        "INSERT INTO registry_partitions (partition) SELECT generate_series(0, $1 - 1)",
        "UPDATE devices SET partition = presence_user_hash(app_id, user_id) % $1",
        "UPDATE users SET partition = presence_user_hash(app_id, user_id) % $1",
        "UPDATE presence_events e SET partition = n.partition, position = n.position FROM ( \
             SELECT feed_id, presence_user_hash(app_id, user_id) % $1 AS partition, \
                    row_number() OVER (PARTITION BY presence_user_hash(app_id, user_id) % $1 ORDER BY feed_id) \
                        AS position \
             FROM presence_events) n WHERE e.feed_id = n.feed_id",
        // The notifier resumes each partition after the events its old global cursor covered.
        "INSERT INTO notifier_partitions (partition, delivered) \
         SELECT p, coalesce((SELECT max(position) FROM presence_events e WHERE e.partition = p \
                             AND e.feed_id <= (SELECT coalesce(max(feed_id), 0) FROM notifier_cursor)), 0) \
         FROM generate_series(0, $1 - 1) AS p",
    ];
    for statement in statements {
        sqlx::query(statement).bind(i64::from(p)).execute(&mut *tx).await.map_err(err)?;
    }
    tx.commit().await.map_err(err)?;
    tracing::info!(partitions = p, "partitions created");
    Ok(p)
}

/// The deployment's partition count, as `presence-migrate` set it.
pub async fn partition_count(pool: &PgPool) -> Result<u32, DbError> {
    let count: i64 = sqlx::query_scalar("SELECT count(*) FROM registry_partitions")
        .fetch_one(pool)
        .await
        .map_err(DbError::Partitions)?;
    match u32::try_from(count) {
        Ok(0) | Err(_) => Err(DbError::NoPartitions),
        Ok(p) => Ok(p),
    }
}

/// Checks the applied migrations against this build's: every one applied, with the same checksum.
/// Migrations newer than this build are fine (a rolling upgrade migrates before it restarts).
pub async fn check_schema(pool: &PgPool) -> Result<(), DbError> {
    let applied: Vec<(i64, Vec<u8>)> =
        sqlx::query_as("SELECT version, checksum FROM _sqlx_migrations WHERE success")
            .fetch_all(pool)
            .await
            .map_err(|err| match &err {
                // No migration table at all: nothing was ever applied.
                sqlx::Error::Database(db) if db.code().as_deref() == Some("42P01") => {
                    match MIGRATOR.iter().next() {
                        Some(first) => DbError::SchemaBehind {
                            version: first.version,
                            description: first.description.to_string(),
                        },
                        None => DbError::SchemaUnreadable(err),
                    }
                }
                _ => DbError::SchemaUnreadable(err),
            })?;
    for migration in MIGRATOR.iter() {
        match applied.iter().find(|(version, _)| *version == migration.version) {
            None => {
                return Err(DbError::SchemaBehind {
                    version: migration.version,
                    description: migration.description.to_string(),
                });
            }
            Some((_, checksum)) if checksum.as_slice() != &*migration.checksum => {
                return Err(DbError::SchemaMismatch {
                    version: migration.version,
                    description: migration.description.to_string(),
                });
            }
            Some(_) => {}
        }
    }
    Ok(())
}

async fn grant_runtime_role(pool: &PgPool, role: &str) -> Result<(), DbError> {
    let grant_error = |source| DbError::Grant { role: role.to_owned(), source };
    // A role name is an identifier, which cannot be a bind parameter: quote it as Postgres does.
    let (quoted,): (String,) =
        sqlx::query_as("SELECT quote_ident($1)").bind(role).fetch_one(pool).await.map_err(grant_error)?;
    let statements = [
        format!("GRANT USAGE ON SCHEMA public TO {quoted}"),
        format!("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {quoted}"),
        format!("GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO {quoted}"),
        format!(
            "ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO {quoted}"
        ),
        format!("ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT USAGE, SELECT ON SEQUENCES TO {quoted}"),
    ];
    for statement in &statements {
        sqlx::query(statement).execute(pool).await.map_err(grant_error)?;
    }
    Ok(())
}

async fn connect_with_retry(
    options: sqlx::postgres::PgConnectOptions,
    max_connections: u32,
    shutdown: &Shutdown,
) -> Result<PgPool, DbError> {
    let mut backoff = Backoff::new(Duration::from_millis(100), Duration::from_secs(5));
    loop {
        let attempt = PgPoolOptions::new()
            .max_connections(max_connections)
            .acquire_timeout(Duration::from_secs(5))
            .connect_with(options.clone())
            .await;
        match attempt {
            Ok(pool) => return Ok(pool),
            Err(err @ sqlx::Error::Configuration(_)) => return Err(DbError::Connect(err)),
            Err(err) => {
                let delay = backoff.next_delay();
                tracing::warn!(%err, ?delay, "database not reachable yet, retrying");
                tokio::select! {
                    () = tokio::time::sleep(delay) => {}
                    () = shutdown.cancelled() => return Err(DbError::ShutDown),
                }
            }
        }
    }
}

/// What `presence-migrate` reads from the environment.
#[derive(Debug, serde::Deserialize)]
pub struct MigrateConfig {
    /// The database, connected as the role that owns the schema (DDL).
    #[serde(default = "crate::config::default_database_url")]
    pub database_url: String,
    /// `PRESENCE_RUNTIME_ROLE`: a role to grant row access (SELECT/INSERT/UPDATE/DELETE) and
    /// sequence use; unset = grant nothing.
    #[serde(default)]
    pub presence_runtime_role: Option<String>,
    /// `PRESENCE_PARTITIONS`: how many registry partitions a new deployment gets (default 64).
    /// Fixed once chosen: a later run with another number fails.
    #[serde(default)]
    pub presence_partitions: Option<u32>,
}

/// The `presence-migrate` binary: connect (retrying until `shutdown`), migrate, grant.
pub async fn run_migrate(config: &MigrateConfig, shutdown: &Shutdown) -> Result<(), DbError> {
    let options =
        sqlx::postgres::PgConnectOptions::from_str(&config.database_url).map_err(DbError::Connect)?;
    let pool = connect_with_retry(options, 2, shutdown).await?;
    let role = config.presence_runtime_role.as_deref().filter(|role| !role.is_empty());
    let partitions = migrate(&pool, role, config.presence_partitions).await?;
    tracing::info!(
        migrations = MIGRATOR.iter().count(),
        runtime_role = role,
        partitions,
        "schema up to date"
    );
    pool.close().await;
    Ok(())
}
