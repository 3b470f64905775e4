//! Integration-test helpers: every test gets its own database on the Postgres server that
//! `DATABASE_URL` names (default: the local one), migrated, so tests run in parallel and a
//! service can be restarted against the same database.

// Test support (the `testing` feature): a failed setup should stop the test at once.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use sqlx::{Connection, PgConnection, PgPool};

use presence_common::config::default_database_url;

/// Prefix of the databases tests create; `scripts/test.sh` drops leftovers.
pub const TEST_DB_PREFIX: &str = "presence_test_";

/// A fresh, migrated database.
pub struct TestDatabase {
    pub url: String,
    pub pool: PgPool,
}

/// Creates and migrates a new database; panics (tests only) when Postgres is unreachable.
pub async fn fresh_database() -> TestDatabase {
    let server_url = std::env::var("DATABASE_URL").unwrap_or_else(|_| default_database_url());
    fresh_database_on(&server_url).await
}

/// Creates and migrates a new database on the server of `server_url` (any `.../<database>` URL
/// of it): for tests that run their own server, e.g. one they stop and restart.
pub async fn fresh_database_on(server_url: &str) -> TestDatabase {
    let db = empty_database_on(server_url).await;
    presence_common::db::migrate(&db.pool, None, None).await.expect("migrations apply");
    db
}

/// Creates a new database with no schema, on the server of `server_url`: for tests of the
/// migrate step itself.
pub async fn empty_database_on(server_url: &str) -> TestDatabase {
    let (base, _db) = server_url.rsplit_once('/').expect("the server URL ends in /<database>");
    let name = format!("{TEST_DB_PREFIX}{}", uuid::Uuid::new_v4().simple());
    let mut admin = PgConnection::connect(&format!("{base}/postgres"))
        .await
        .expect("Postgres reachable at DATABASE_URL (scripts/test.sh starts it)");
    sqlx::query(&format!("CREATE DATABASE {name}")).execute(&mut admin).await.expect("create test database");
    let url = format!("{base}/{name}");
    let pool = PgPool::connect(&url).await.expect("connect test database");
    TestDatabase { url, pool }
}

/// The role the services run as in the system tests: rows only, no DDL (docs/configuration.md).
pub const RUNTIME_ROLE: &str = "presence_runtime";
const RUNTIME_PASSWORD: &str = "presence-runtime-test";

impl TestDatabase {
    /// This database's URL for [`RUNTIME_ROLE`], which is created on the server if missing (it
    /// has no rights until `presence-migrate` grants them with `PRESENCE_RUNTIME_ROLE`).
    pub async fn runtime_url(&self) -> String {
        // Roles are cluster-wide and tests run in parallel: create it at most once, quietly.
        sqlx::query(&format!(
            "DO $$ BEGIN CREATE ROLE {RUNTIME_ROLE} LOGIN PASSWORD '{RUNTIME_PASSWORD}'; \
             EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$"
        ))
        .execute(&self.pool)
        .await
        .expect("create the runtime role");
        let (scheme, rest) = self.url.split_once("://").expect("a postgres:// URL");
        let host = rest.rsplit_once('@').map_or(rest, |(_, host)| host);
        format!("{scheme}://{RUNTIME_ROLE}:{RUNTIME_PASSWORD}@{host}")
    }

    /// Inserts an app with the given secrets; API key `key-<app_id>`.
    pub async fn add_app(&self, app_id: &str, token_secret: &str) {
        sqlx::query(
            "INSERT INTO apps (app_id, token_secret, api_key_sha256, callback_secret) \
             VALUES ($1, $2, encode(sha256(('key-' || $1)::bytea), 'hex'), 'cb-' || $1)",
        )
        .bind(app_id)
        .bind(token_secret)
        .execute(&self.pool)
        .await
        .expect("insert app");
    }
}
