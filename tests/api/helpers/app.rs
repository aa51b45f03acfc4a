//! A running latchkey for a test, on its own database and key prefix.

use latchkey::app::Application;
use latchkey::config::Config;
use latchkey::store::db::Db;
use latchkey::store::{Fast, Keys};
use secrecy::SecretString;

use super::{CacheKind, DbKind, TestDb, redis_url, unique_prefix};

/// Iterations for test keyrings: PBKDF2 at production strength costs a
/// second per keyring in a debug build; the production floor is tested in
/// the config tests.
pub const TEST_PBKDF2_ITERATIONS: u32 = 1_000;
pub const TEST_MASTER_PASSWORD: &str = "test master password, not a secret";

/// Configuration for a test app on a free port.
pub fn test_config(database_url: &str, cache: CacheKind, data_dir: &std::path::Path) -> Config {
    let mut config = Config {
        bind: "127.0.0.1:0".parse().expect("addr"),
        data_dir: data_dir.to_path_buf(),
        database_url: Some(SecretString::from(database_url.to_owned())),
        redis_url: (cache == CacheKind::Redis).then(|| SecretString::from(redis_url())),
        redis_prefix: unique_prefix(),
        master_password: Some(SecretString::from(TEST_MASTER_PASSWORD)),
        ..Config::default()
    };
    config.keyring.pbkdf2_iterations = TEST_PBKDF2_ITERATIONS;
    // Tests log in many times from one address: the abuse tests set their
    // own limits; everything else runs under generous ones.
    let r = &mut config.ratelimit;
    r.prefilter_per_second = 10_000;
    r.prefilter_burst = 10_000;
    for limits in [&mut r.registration, &mut r.login_start, &mut r.login_finish, &mut r.totp, &mut r.refresh] {
        for rule in [&mut limits.per_ip, &mut limits.per_username, &mut limits.per_ip_username].into_iter().flatten() {
            rule.limit *= 1000;
        }
    }
    r.bad_tokens.limit *= 1000;
    config
}

/// A running latchkey on its own database and key prefix.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub keys: Keys,
    pub core: std::sync::Arc<latchkey::domain::core::Core>,
    /// The database as its owner (on Postgres the superuser, which row-level
    /// security does not hold): what tests inspect and tamper with.
    pub app_db: Db,
    /// The service's own handle (on Postgres the app login role).
    pub service_db: Db,
    pub fast: Fast,
    _db: Option<TestDb>,
    _data_dir: tempfile::TempDir,
}

impl TestApp {
    pub async fn spawn(db_kind: DbKind, cache: CacheKind) -> Self {
        Self::spawn_with(db_kind, cache, |_| {}).await
    }

    pub async fn spawn_with(db_kind: DbKind, cache: CacheKind, tweak: impl FnOnce(&mut Config)) -> Self {
        let db = TestDb::new(db_kind).await;
        match db.app_url().await {
            // Migrated by the owner; the service runs as the app role.
            Some(url) => {
                let owner = db.url.clone();
                Self::spawn_inner(Some(db), &url, Some(&owner), cache, |c| {
                    c.migrate_on_start = Some(false);
                    tweak(c);
                })
                .await
            }
            None => {
                let url = db.url.clone();
                Self::spawn_inner(Some(db), &url, None, cache, tweak).await
            }
        }
    }

    /// An app on a test database another app or command shares: on
    /// Postgres as the app role (row-level security in force), the
    /// database migrated by its owner, as [`Self::spawn_with`] does.
    pub async fn spawn_on(db: &TestDb, cache: CacheKind, tweak: impl FnOnce(&mut Config)) -> Self {
        match db.app_url().await {
            Some(url) => {
                Self::spawn_inner(None, &url, Some(&db.url), cache, |c| {
                    c.migrate_on_start = Some(false);
                    tweak(c);
                })
                .await
            }
            None => Self::spawn_inner(None, &db.url, None, cache, tweak).await,
        }
    }

    /// An app on an existing database (another role, a shared database).
    pub async fn spawn_on_url(url: &str, cache: CacheKind, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_inner(None, url, None, cache, tweak).await
    }

    async fn spawn_inner(
        db: Option<TestDb>,
        url: &str,
        owner_url: Option<&str>,
        cache: CacheKind,
        tweak: impl FnOnce(&mut Config),
    ) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(url, cache, data_dir.path());
        tweak(&mut config);
        let keys = Keys::new(config.redis_prefix.clone());
        let app = Application::build(config, false).await.expect("the app starts");
        let (service_db, fast) = app.stores();
        let app_db = match owner_url {
            Some(owner) => {
                service_db.connect_alongside(owner, &super::db_options()).await.expect("connect as the owner")
            }
            None => service_db.clone(),
        };
        let address = format!("http://127.0.0.1:{}", app.port());
        let core = app.state().core.clone();
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Self { address, client, keys, core, app_db, service_db, fast, _db: db, _data_dir: data_dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }
}
