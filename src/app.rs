//! Start-up: the composition root. Opens the stores, the keyring and the
//! OPAQUE server setup, then binds the HTTP server. Every failure here is a
//! clear error before the service listens.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use actix_web::{HttpServer, web};
use base64::Engine as _;
use rand::RngCore as _;
use secrecy::SecretString;
use sha2::Digest as _;

use crate::config::Config;
use crate::domain::core::{Core, Policies, SessionPolicy, TokenPolicy};
use crate::domain::keyring::{Keyring, RotationPolicy};
use crate::domain::lockout::LockoutPolicy;
use crate::domain::ratelimit::BuiltinLimits;
use crate::domain::{self, server_setup};
use crate::http::{self, AppState};
use crate::store::db::{Db, DbOptions};
use crate::store::fast::{MemoryStore, RedisStore};
use crate::store::{Fast, Keys, StoreError};
use crate::telemetry;

/// Name of the generated master password file in the data directory.
pub const GENERATED_MASTER_PASSWORD_FILE: &str = "master_password";

#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error(transparent)]
    Config(#[from] crate::config::ConfigError),
    #[error("database: {0}")]
    Database(StoreError),
    #[error("redis: {0}")]
    Redis(StoreError),
    #[error("{0}")]
    Domain(#[from] domain::Error),
    #[error("{0}")]
    Io(String),
}

/// Connects to the database, running migrations when asked.
pub async fn open_db(config: &Config, migrate: bool) -> Result<Db, StartupError> {
    let url = config.effective_database_url();
    let options = DbOptions {
        max_connections: config.database.max_connections,
        min_connections: config.database.min_connections,
        acquire_timeout: config.database.acquire_timeout,
        // Statement logging would put bound values in logs: never in production.
        log_statements: config.database.log_statements && !config.is_production(),
        statement_timeout: config.database.statement_timeout,
    };
    let db = Db::connect(&url, &options).await.map_err(StartupError::Database)?;
    if migrate {
        db.migrate_up().await.map_err(StartupError::Database)?;
    }
    Ok(db)
}

/// The fast-path store: Redis when configured, else in-process.
pub fn open_fast(config: &Config) -> Result<Fast, StartupError> {
    use secrecy::ExposeSecret as _;
    match &config.redis_url {
        Some(url) => {
            let ca = match &config.redis.ca_file {
                Some(path) => Some(
                    std::fs::read(path)
                        .map_err(|e| StartupError::Io(format!("cannot read redis.ca_file {}: {e}", path.display())))?,
                ),
                None => None,
            };
            RedisStore::connect_with_ca(
                url.expose_secret(),
                config.redis.pool_size,
                config.redis.timeout,
                ca.as_deref(),
            )
            .map(Fast::Redis)
            .map_err(StartupError::Redis)
        }
        None => {
            tracing::warn!(
                "no LATCHKEY_REDIS_URL: using the in-process store; this instance runs single-instance (no replicas)"
            );
            Ok(Fast::Memory(MemoryStore::new()))
        }
    }
}

/// The master password: configured, or (development only) generated once
/// into a 0600 file in the data directory.
pub fn master_password(config: &Config) -> Result<SecretString, StartupError> {
    if let Some(password) = &config.master_password {
        return Ok(password.clone());
    }
    if config.is_production() {
        return Err(StartupError::Io("production mode needs LATCHKEY_MASTER_PASSWORD".into()));
    }
    let path = config.data_dir.join(GENERATED_MASTER_PASSWORD_FILE);
    if path.is_file() {
        let text = std::fs::read_to_string(&path)
            .map_err(|e| StartupError::Io(format!("cannot read {}: {e}", path.display())))?;
        return Ok(SecretString::from(text.trim_end().to_owned()));
    }
    let password = generate_master_password(&path)?;
    tracing::warn!(
        path = %path.display(),
        "no master password configured: generated one into this file; back it up, since without it nothing encrypted can be read"
    );
    Ok(password)
}

fn generate_master_password(path: &Path) -> Result<SecretString, StartupError> {
    use std::os::unix::fs::OpenOptionsExt as _;
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| StartupError::Io(format!("cannot create {}: {e}", dir.display())))?;
    }
    let mut bytes = [0u8; 32];
    rand::rngs::OsRng.fill_bytes(&mut bytes);
    let password = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes);
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| StartupError::Io(format!("cannot create {}: {e}", path.display())))?;
    writeln!(file, "{password}").map_err(|e| StartupError::Io(format!("cannot write {}: {e}", path.display())))?;
    Ok(SecretString::from(password))
}

pub async fn open_keyring(config: &Config, db: &Db) -> Result<Keyring, StartupError> {
    let password = master_password(config)?;
    let policy = RotationPolicy { max_age: config.keyring.rotate_after, max_uses: config.keyring.rotate_after_uses };
    let keyring =
        Keyring::open(db.clone(), &password, config.keyring.pbkdf2_iterations, policy, chrono::Utc::now()).await?;
    if config.is_production() && keyring.kdf_iterations() < crate::config::MIN_PRODUCTION_PBKDF2_ITERATIONS {
        return Err(StartupError::Io(format!(
            "this keyring was created with {} PBKDF2 iterations; production needs at least {}",
            keyring.kdf_iterations(),
            crate::config::MIN_PRODUCTION_PBKDF2_ITERATIONS
        )));
    }
    Ok(keyring)
}

/// The domain services on freshly opened stores (the CLI commands).
pub async fn open_core(config: &Config, migrate: bool) -> Result<Core, StartupError> {
    let db = open_db(config, migrate).await?;
    let fast = open_fast(config)?;
    core_on(config, db, fast).await
}

/// The domain services on these stores: the one place they are wired
/// together (the server and the CLI both come here).
async fn core_on(config: &Config, db: Db, fast: Fast) -> Result<Core, StartupError> {
    let keyring = Arc::new(open_keyring(config, &db).await?);
    domain::audit_chain::open(&db, &keyring, chrono::Utc::now()).await?;
    let setup = server_setup::load_or_create(&db, &keyring, chrono::Utc::now()).await?;
    Ok(Core::new(db, fast, Keys::new(config.redis_prefix.clone()), keyring, Arc::new(setup), policies(config)?))
}

fn policies(config: &Config) -> Result<Policies, StartupError> {
    let r = &config.ratelimit;
    let w = &config.webauthn;
    let webauthn = domain::webauthn::relying_party(&w.rp_id, &w.rp_origin, &w.rp_name)
        .map_err(|e| crate::config::ConfigError::Invalid(e.to_string()))?;
    Ok(Policies {
        sessions: SessionPolicy {
            token_lifetime: config.sessions.token_lifetime,
            idle_timeout: config.sessions.idle_timeout,
            absolute_lifetime: config.sessions.absolute_lifetime,
            reauth_window: config.sessions.reauth_window,
            max_per_user: config.sessions.max_per_user,
            reset_token_lifetime: config.account.reset_token_lifetime,
        },
        limits: BuiltinLimits {
            registration: r.registration,
            login_start: r.login_start,
            login_finish: r.login_finish,
            totp: r.totp,
            refresh: r.refresh,
            bad_tokens: r.bad_tokens,
        },
        lockout: LockoutPolicy {
            threshold: r.lockout_threshold,
            hard_limit: r.lockout_hard_limit,
            hard_lock: r.hard_lock,
        },
        namespaces: r.namespaces.clone(),
        tokens: TokenPolicy {
            jwt_lifetime: config.tokens.jwt_lifetime,
            issuer: config.tokens.issuer.clone(),
            audience: config.tokens.audience.clone(),
            rotate_after: config.tokens.rotate_after,
        },
        webauthn,
    })
}

/// A built, bound, not yet running server.
pub struct Application {
    server: actix_web::dev::Server,
    port: u16,
    state: web::Data<AppState>,
    stores: (Db, Fast),
    background: Vec<tokio::task::JoinHandle<()>>,
}

impl Application {
    /// Opens everything and binds `config.bind` (port 0 picks a free port).
    pub async fn build(config: Config, migrate: bool) -> Result<Self, StartupError> {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let metrics = telemetry::metrics_handle();
        let db = open_db(&config, migrate || config.migrate_on_start()).await?;
        let fast = open_fast(&config)?;
        let stores = (db.clone(), fast.clone());
        let core = Arc::new(core_on(&config, db, fast).await?);
        // A signing key before the first JWT is asked for.
        core.signing_key_maintenance(chrono::Utc::now()).await?;
        let openapi_json = serde_json::to_vec(&http::openapi())
            .map_err(|e| StartupError::Io(format!("cannot render the OpenAPI document: {e}")))?;

        let listener = TcpListener::bind(config.bind)
            .map_err(|e| StartupError::Io(format!("cannot listen on {}: {e}", config.bind)))?;
        let port = listener.local_addr().map_err(|e| StartupError::Io(e.to_string()))?.port();

        let config = Arc::new(config);
        let state = web::Data::new(AppState {
            config: config.clone(),
            core,
            metrics: metrics.clone(),
            service_token_hashes: config
                .service_tokens
                .iter()
                .map(|t| sha2::Sha256::digest(secrecy::ExposeSecret::expose_secret(t).as_bytes()).into())
                .collect(),
            prefilter: Arc::new(http::middleware::new_prefilter(
                config.ratelimit.prefilter_per_second,
                config.ratelimit.prefilter_burst,
            )),
            openapi_json: openapi_json.into(),
        });
        let app_state = state.clone();
        let server = HttpServer::new(move || http::app(app_state.clone())).shutdown_timeout(30);
        let server = match (&config.tls_cert_file, &config.tls_key_file) {
            (Some(cert), Some(key)) => server.listen_rustls_0_23(listener, tls_config(cert, key)?),
            _ => server.listen(listener),
        }
        .map_err(|e| StartupError::Io(e.to_string()))?
        .run();
        let (database, fast_store) = state.core.backends();
        tracing::info!(address = %config.bind.ip(), port, database, fast_store, "latchkey listening");

        let prefilter = state.prefilter.clone();
        let background = vec![
            tokio::spawn(keyring_maintenance(
                state.core.clone(),
                config.keyring.maintenance_interval,
                config.keyring.reencrypt_batch,
            )),
            tokio::spawn(cleanup(state.core.clone(), config.maintenance.interval, retention(&config))),
            tokio::spawn(audit_head_publication(state.core.clone(), domain::audit_chain::HEAD_PUBLICATION_INTERVAL)),
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(5));
                loop {
                    tick.tick().await;
                    metrics.run_upkeep();
                    prefilter.retain_recent();
                    prefilter.shrink_to_fit();
                }
            }),
        ];
        Ok(Self { server, port, state, stores, background })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// The stores the service runs on, for tests that look behind its back
    /// (the in-process store exists only inside this process).
    pub fn stores(&self) -> (Db, Fast) {
        self.stores.clone()
    }

    /// A handle to stop the server (tests, signal handling).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Serves until SIGINT/SIGTERM (graceful: in-flight requests finish).
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let result = self.server.await;
        for task in self.background {
            task.abort();
        }
        result
    }
}

/// The HTTPS listener's configuration from PEM files.
fn tls_config(cert: &Path, key: &Path) -> Result<rustls::ServerConfig, StartupError> {
    use rustls::pki_types::pem::PemObject as _;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| StartupError::Io(format!("cannot read tls_cert_file {}: {e}", cert.display())))?;
    let key = PrivateKeyDer::from_pem_file(key)
        .map_err(|e| StartupError::Io(format!("cannot read tls_key_file {}: {e}", key.display())))?;
    rustls::ServerConfig::builder()
        .with_no_client_auth()
        .with_single_cert(chain, key)
        .map_err(|e| StartupError::Io(format!("the TLS certificate and key do not fit: {e}")))
}

/// Rotates the data key when due and moves rows onto the active key.
async fn keyring_maintenance(core: Arc<Core>, every: Duration, batch: u64) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        if let Err(e) = core.keyring_maintenance(batch, chrono::Utc::now()).await {
            tracing::warn!(error = %e, "key maintenance failed; it resumes on the next run");
        }
    }
}

/// The retention settings the cleanup runs with.
pub fn retention(config: &Config) -> domain::cleanup::Retention {
    let m = &config.maintenance;
    domain::cleanup::Retention { sessions: m.session_retention, devices: m.device_retention, batch: m.batch }
}

/// Deletes rows past their retention (replicas may overlap: every delete
/// is idempotent).
async fn cleanup(core: Arc<Core>, every: Duration, retention: domain::cleanup::Retention) {
    let mut tick = tokio::time::interval(every.max(Duration::from_secs(1)));
    loop {
        tick.tick().await;
        if let Err(e) = core.cleanup(&retention, chrono::Utc::now()).await {
            tracing::warn!(error = %e, "cleanup failed; it resumes on the next run");
        }
    }
}

/// Publishes the audit chain head (a log line when it moves, a gauge), so
/// that deleting the newest audit rows can be detected later.
async fn audit_head_publication(core: Arc<Core>, every: Duration) {
    let mut publisher = domain::audit_chain::HeadPublisher::default();
    let mut tick = tokio::time::interval(every);
    loop {
        tick.tick().await;
        if let Err(e) = core.publish_audit_head(&mut publisher).await {
            tracing::warn!(error = %e, "publishing the audit chain head failed; it is retried on the next run");
        }
    }
}
