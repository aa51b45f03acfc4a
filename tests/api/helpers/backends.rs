//! The shared Postgres and Redis, and what keeps tests apart on them: a
//! database per test and a Redis key prefix per test.

use std::time::Duration;

use latchkey::store::Fast;
use latchkey::store::db::{Db, DbOptions};
use latchkey::store::fast::{MemoryStore, RedisStore};
use sea_orm::{ConnectionTrait, Database};
use uuid::Uuid;

use super::leftovers::{dated_name, drop_leftovers_once};

pub fn postgres_admin_url() -> String {
    std::env::var("LATCHKEY_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

pub fn redis_url() -> String {
    std::env::var("LATCHKEY_TEST_REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into())
}

/// The relational backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DbKind {
    Postgres,
    Sqlite,
}

/// The fast-path backends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CacheKind {
    Redis,
    Memory,
}

/// The login role the tests run the service as on Postgres (cluster-wide,
/// shared by every test database; it owns nothing).
pub const APP_LOGIN: &str = "lk_test_service";

/// A fresh, empty database for one test.
pub struct TestDb {
    pub url: String,
    /// Keeps the SQLite file's directory alive.
    _dir: Option<tempfile::TempDir>,
}

impl TestDb {
    pub async fn new(kind: DbKind) -> Self {
        match kind {
            DbKind::Postgres => {
                let admin_url = postgres_admin_url();
                drop_leftovers_once(&admin_url);
                let name = dated_name("lk_test");
                let admin = Database::connect(&admin_url).await.expect("connect to the test Postgres");
                admin.execute_unprepared(&format!("CREATE DATABASE {name}")).await.expect("create test database");
                admin.close().await.expect("close admin connection");
                let base = admin_url.rsplit_once('/').map_or(admin_url.as_str(), |(base, _)| base);
                Self { url: format!("{base}/{name}"), _dir: None }
            }
            DbKind::Sqlite => {
                let dir = tempfile::tempdir().expect("tempdir");
                let url = format!("sqlite://{}?mode=rwc", dir.path().join("latchkey.db").display());
                Self { url, _dir: Some(dir) }
            }
        }
    }

    /// The URL the service uses on Postgres: the database migrated by its
    /// owner (the superuser the tests connect as), and a login role in
    /// `latchkey_app` that is neither superuser nor BYPASSRLS, so the
    /// service runs with row-level security in force. `None` on SQLite.
    pub async fn app_url(&self) -> Option<String> {
        if !self.url.starts_with("postgres") {
            return None;
        }
        self.connect().await.close().await;
        let admin = Database::connect(&self.url).await.expect("connect as the owner");
        admin
            .execute_unprepared(&format!(
                "DO $$ BEGIN
                   IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = '{APP_LOGIN}') THEN
                     CREATE ROLE {APP_LOGIN} LOGIN NOSUPERUSER NOBYPASSRLS IN ROLE latchkey_app;
                   END IF;
                 EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL;
                 END $$"
            ))
            .await
            .expect("create the app login role");
        admin.close().await.expect("close");
        let (scheme_user, rest) = self.url.split_once('@').expect("a user in the URL");
        let scheme = scheme_user.split_once("//").map_or("postgres:", |(s, _)| s);
        Some(format!("{scheme}//{APP_LOGIN}@{rest}"))
    }

    /// A connected, migrated handle.
    pub async fn connect(&self) -> Db {
        let db = Db::connect(&self.url, &db_options()).await.expect("connect to the test database");
        db.migrate_up().await.expect("migrate");
        db
    }
}

pub fn db_options() -> DbOptions {
    DbOptions {
        max_connections: 8,
        min_connections: 1,
        acquire_timeout: Duration::from_secs(10),
        log_statements: false,
        statement_timeout: Duration::from_secs(30),
    }
}

/// A unique key prefix, so tests share one Redis without seeing each other.
pub fn unique_prefix() -> String {
    format!("lkt{}", &Uuid::new_v4().simple().to_string()[..12])
}

pub fn fast_store(kind: CacheKind) -> Fast {
    match kind {
        CacheKind::Redis => {
            Fast::Redis(RedisStore::connect(&redis_url(), 16, Duration::from_secs(5)).expect("redis pool"))
        }
        CacheKind::Memory => Fast::Memory(MemoryStore::new()),
    }
}
