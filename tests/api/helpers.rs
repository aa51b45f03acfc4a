//! Test harness: every test gets its own database (a fresh Postgres database
//! or SQLite file) and its own Redis key prefix, so tests run in parallel
//! against the real servers.

use std::time::Duration;

use latchkey::app::Application;
use latchkey::config::Config;
use latchkey::store::db::{Db, DbOptions};
use latchkey::store::fast::{MemoryStore, RedisStore};
use latchkey::store::{Fast, Keys};
use sea_orm::{ConnectionTrait, Database};
use secrecy::SecretString;
use uuid::Uuid;

/// Iterations for test keyrings: PBKDF2 at production strength costs a
/// second per keyring in a debug build; the production floor is tested in
/// the config tests.
pub const TEST_PBKDF2_ITERATIONS: u32 = 1_000;
pub const TEST_MASTER_PASSWORD: &str = "test master password, not a secret";

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
                let name = format!("lk_test_{}", Uuid::new_v4().simple());
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

/// Configuration for a test app on a free port.
pub fn test_config(database_url: &str, cache: CacheKind, data_dir: &std::path::Path) -> Config {
    let mut config = Config::default();
    config.bind = "127.0.0.1:0".parse().expect("addr");
    config.data_dir = data_dir.to_path_buf();
    config.database_url = Some(SecretString::from(database_url.to_owned()));
    config.redis_url = (cache == CacheKind::Redis).then(|| SecretString::from(redis_url()));
    config.redis_prefix = unique_prefix();
    config.master_password = Some(SecretString::from(TEST_MASTER_PASSWORD));
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
    config
}

/// A running latchkey on its own database and key prefix.
pub struct TestApp {
    pub address: String,
    pub client: reqwest::Client,
    pub keys: Keys,
    pub core: std::sync::Arc<latchkey::domain::core::Core>,
    pub app_db: Db,
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
        let url = db.url.clone();
        Self::spawn_inner(Some(db), &url, cache, tweak).await
    }

    /// An app on an existing database (another role, a shared database).
    pub async fn spawn_on_url(url: &str, cache: CacheKind, tweak: impl FnOnce(&mut Config)) -> Self {
        Self::spawn_inner(None, url, cache, tweak).await
    }

    async fn spawn_inner(db: Option<TestDb>, url: &str, cache: CacheKind, tweak: impl FnOnce(&mut Config)) -> Self {
        let data_dir = tempfile::tempdir().expect("tempdir");
        let mut config = test_config(url, cache, data_dir.path());
        tweak(&mut config);
        let keys = Keys::new(config.redis_prefix.clone());
        let app = Application::build(config, false).await.expect("the app starts");
        let (app_db, fast) = app.stores();
        let address = format!("http://127.0.0.1:{}", app.port());
        let core = app.state().core.clone();
        tokio::spawn(app.run_until_stopped());
        let client = reqwest::Client::builder().redirect(reqwest::redirect::Policy::none()).build().expect("client");
        Self { address, client, keys, core, app_db, fast, _db: db, _data_dir: data_dir }
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{}", self.address, path)
    }

    pub async fn get(&self, path: &str) -> reqwest::Response {
        self.client.get(self.url(path)).send().await.expect("request")
    }
}

/// Runs an async test body once per relational backend.
#[macro_export]
macro_rules! each_db {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres() {
                super::$body($crate::helpers::DbKind::Postgres).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite() {
                super::$body($crate::helpers::DbKind::Sqlite).await
            }
        }
    };
}

/// Runs an async test body once per fast-path backend.
#[macro_export]
macro_rules! each_cache {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn redis() {
                super::$body($crate::helpers::CacheKind::Redis).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn memory() {
                super::$body($crate::helpers::CacheKind::Memory).await
            }
        }
    };
}

/// Runs an async test body on both deployments: Postgres + Redis, and the
/// embedded default (SQLite + in-process).
#[macro_export]
macro_rules! each_stack {
    ($name:ident, $body:ident) => {
        mod $name {
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn postgres_redis() {
                super::$body($crate::helpers::DbKind::Postgres, $crate::helpers::CacheKind::Redis).await
            }
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn sqlite_memory() {
                super::$body($crate::helpers::DbKind::Sqlite, $crate::helpers::CacheKind::Memory).await
            }
        }
    };
}

/// Every row of every table, as text (Debug of the models).
pub async fn dump_database(db: &Db) -> String {
    use entity::*;
    use sea_orm::EntityTrait as _;
    let c = db.conn();
    let mut out = String::new();
    macro_rules! dump {
        ($($m:ident),*) => {$(
            for row in $m::Entity::find().all(c).await.expect("rows") {
                out.push_str(&format!("{row:?}\n"));
            }
        )*};
    }
    dump!(
        users,
        user_roles,
        opaque_credentials,
        totp_credentials,
        recovery_codes,
        devices,
        sessions,
        refresh_tokens,
        audit_events,
        keyring,
        data_keys,
        server_setup
    );
    out
}

/// Every key and value under the prefix, as text.
pub async fn dump_cache(fast: &Fast, prefix: &str) -> String {
    let mut out = String::new();
    for (key, value) in match fast {
        Fast::Redis(redis) => redis.dump_prefix(prefix).await.expect("dump"),
        Fast::Memory(memory) => memory.snapshot(),
    } {
        out.push_str(&key);
        out.push(' ');
        out.push_str(&String::from_utf8_lossy(&value));
        out.push('\n');
    }
    out
}

/// A Redis server of the test's own on a free loopback port, for tests that
/// flush, stop or restart it without disturbing the shared one.
pub struct PrivateRedis {
    pub port: u16,
    child: std::process::Child,
}

impl PrivateRedis {
    pub async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("free port").local_addr().expect("addr").port();
        Self::start_on(port).await
    }

    pub async fn start_on(port: u16) -> Self {
        let child = std::process::Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(std::process::Stdio::null())
            .spawn()
            .expect("redis-server is installed");
        let redis = Self { port, child };
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
                return redis;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("private redis-server on port {port} did not start");
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Kills the server (as SIGKILL would).
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A real 3-master Redis Cluster on free loopback ports.
pub struct PrivateCluster {
    pub ports: Vec<u16>,
    nodes: Vec<std::process::Child>,
    _dir: tempfile::TempDir,
}

impl PrivateCluster {
    pub async fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let ports: Vec<u16> = (0..3)
            .map(|_| std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port())
            .collect();
        let mut nodes = Vec::new();
        for port in &ports {
            let child = std::process::Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
                .args(["--cluster-enabled", "yes", "--cluster-node-timeout", "5000"])
                .args(["--cluster-config-file", &format!("nodes-{port}.conf")])
                .arg("--dir")
                .arg(dir.path())
                .stdout(std::process::Stdio::null())
                .spawn()
                .expect("redis-server is installed");
            nodes.push(child);
        }
        for port in &ports {
            wait_for_port(*port).await;
        }
        let addrs: Vec<String> = ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        let out = std::process::Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addrs)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli is installed");
        assert!(out.status.success(), "cluster create: {}", String::from_utf8_lossy(&out.stdout));
        for _ in 0..100 {
            let ok = ports.iter().all(|p| {
                std::process::Command::new("redis-cli")
                    .args(["-p", &p.to_string(), "cluster", "info"])
                    .output()
                    .map(|o| String::from_utf8_lossy(&o.stdout).contains("cluster_state:ok"))
                    .unwrap_or(false)
            });
            if ok {
                return Self { ports, nodes, _dir: dir };
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!("the Redis Cluster did not become ready");
    }

    pub fn url(&self) -> String {
        let hosts: Vec<String> = self.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
        format!("redis+cluster://{}", hosts.join(","))
    }
}

impl Drop for PrivateCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
    }
}

async fn wait_for_port(port: u16) {
    for _ in 0..100 {
        if tokio::net::TcpStream::connect(("127.0.0.1", port)).await.is_ok() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("nothing listens on port {port}");
}

/// A Postgres server of the test's own (initdb + pg_ctl on a free port),
/// for tests that stop and start it. Run as the `postgres` user when the
/// tests run as root (initdb refuses root).
pub struct PrivatePostgres {
    pub port: u16,
    dir: tempfile::TempDir,
    extra_options: String,
}

impl PrivatePostgres {
    fn program(name: &str) -> String {
        let debian = std::fs::read_dir("/usr/lib/postgresql")
            .ok()
            .and_then(|mut versions| versions.find_map(|v| v.ok()))
            .map(|v| v.path().join("bin").join(name))
            .filter(|p| p.exists());
        debian.map_or_else(|| name.to_owned(), |p| p.display().to_string())
    }

    fn run(args: &[&str]) -> std::process::Output {
        let as_root = std::process::Command::new("id").arg("-u").output().is_ok_and(|o| o.stdout.starts_with(b"0"));
        let mut cmd = if as_root {
            let mut c = std::process::Command::new("runuser");
            c.args(["-u", "postgres", "--"]);
            c
        } else {
            std::process::Command::new(args[0])
        };
        if as_root {
            cmd.arg(args[0]);
        }
        cmd.args(&args[1..]).output().expect("run a postgres program")
    }

    pub async fn start() -> Self {
        Self::start_with(None).await
    }

    /// A server that also speaks TLS with this certificate and key (PEM).
    pub async fn start_tls(cert_pem: &std::path::Path, key_pem: &std::path::Path) -> Self {
        Self::start_with(Some((cert_pem, key_pem))).await
    }

    async fn start_with(tls: Option<(&std::path::Path, &std::path::Path)>) -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let _ = std::process::Command::new("chown").args(["postgres"]).arg(dir.path()).status();
        let port = std::net::TcpListener::bind("127.0.0.1:0").expect("port").local_addr().expect("addr").port();
        let data = dir.path().join("data");
        let out = Self::run(&[
            &Self::program("initdb"),
            "-D",
            data.to_str().expect("utf8"),
            "-U",
            "postgres",
            "--auth=trust",
            "-E",
            "UTF8",
        ]);
        assert!(out.status.success(), "initdb: {}", String::from_utf8_lossy(&out.stderr));
        let mut extra_options = String::new();
        if let Some((cert, key)) = tls {
            for (from, name) in [(cert, "server.crt"), (key, "server.key")] {
                let to = data.join(name);
                std::fs::copy(from, &to).expect("copy certificate");
                let _ = std::process::Command::new("chown").arg("postgres").arg(&to).status();
                use std::os::unix::fs::PermissionsExt as _;
                std::fs::set_permissions(&to, std::fs::Permissions::from_mode(0o600)).expect("chmod");
            }
            extra_options = " -c ssl=on -c ssl_cert_file=server.crt -c ssl_key_file=server.key".to_owned();
        }
        let pg = Self { port, dir, extra_options };
        pg.pg_ctl("start");
        pg
    }

    fn pg_ctl(&self, action: &str) {
        let data = self.dir.path().join("data");
        let opts = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off{}",
            self.port,
            self.dir.path().display(),
            self.extra_options
        );
        let log = self.dir.path().join("log");
        let mut args = vec![
            Self::program("pg_ctl"),
            "-D".into(),
            data.display().to_string(),
            "-w".into(),
            "-m".into(),
            "fast".into(),
        ];
        if action == "start" {
            args.extend(["-o".into(), opts, "-l".into(), log.display().to_string()]);
        }
        args.push(action.into());
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let out = Self::run(&refs);
        assert!(out.status.success(), "pg_ctl {action}: {}", String::from_utf8_lossy(&out.stderr));
    }

    pub fn stop(&self) {
        self.pg_ctl("stop");
    }

    pub fn restart(&self) {
        self.pg_ctl("start");
    }

    pub fn url(&self) -> String {
        format!("postgres://postgres@127.0.0.1:{}/postgres", self.port)
    }
}

impl Drop for PrivatePostgres {
    fn drop(&mut self) {
        let data = self.dir.path().join("data");
        let _ =
            Self::run(&[&Self::program("pg_ctl"), "-D", data.to_str().unwrap_or_default(), "-m", "immediate", "stop"]);
    }
}
