//! [`Config`] and its sections, each with its defaults: the one description
//! of every key. The TOML file deserializes into these structs; the
//! environment variables, and how each is read, are derived from their
//! serialized defaults (see `env.rs`), which is why secrets and unset paths
//! serialize the way they do below.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::validate::MIN_PRODUCTION_PBKDF2_ITERATIONS;
use crate::domain::ratelimit::{EndpointLimits, Namespace, Rule};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Serialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub env: Environment,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// Postgres (or SQLite) URL; `None` selects SQLite under `data_dir`.
    #[serde(serialize_with = "redacted")]
    pub database_url: Option<SecretString>,
    /// Redis URL; `None` selects the in-process store.
    #[serde(serialize_with = "redacted")]
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key, so several deployments (or tests) can share
    /// one Redis.
    pub redis_prefix: String,
    #[serde(serialize_with = "redacted")]
    pub master_password: Option<SecretString>,
    /// Encrypts and decrypts `latchkey backup` files (else asked for).
    #[serde(serialize_with = "redacted")]
    pub backup_passphrase: Option<SecretString>,
    /// Bearer tokens of the services allowed to call the rate-limit API.
    #[serde(deserialize_with = "secret_list", serialize_with = "redacted")]
    pub service_tokens: Vec<SecretString>,
    /// Peers whose `X-Forwarded-For` header is believed.
    #[serde(deserialize_with = "ipnet_list")]
    pub trusted_proxies: Vec<IpNet>,
    /// Log filter (tracing `EnvFilter` syntax).
    pub log_level: String,
    /// Run migrations on `serve`. Defaults to on in development and off in
    /// production, where `serve --migrate` or `latchkey migrate up` is explicit.
    pub migrate_on_start: Option<bool>,
    /// Serve HTTPS with this certificate chain and key (PEM); both or
    /// neither. Without them latchkey speaks plain HTTP (behind a proxy).
    #[serde(serialize_with = "optional_text")]
    pub tls_cert_file: Option<PathBuf>,
    #[serde(serialize_with = "optional_text")]
    pub tls_key_file: Option<PathBuf>,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub keyring: KeyringConfig,
    pub maintenance: MaintenanceConfig,
    pub sessions: SessionsConfig,
    pub account: AccountConfig,
    pub tokens: TokensConfig,
    pub ui: UiConfig,
    pub webauthn: WebauthnConfig,
    pub ratelimit: RateLimitConfig,
}

/// Abuse resistance. Defaults and their reasoning are in the README.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RateLimitConfig {
    /// Per-instance pre-filter on the unauthenticated endpoints, per IP,
    /// before Redis is touched.
    pub prefilter_per_second: u32,
    pub prefilter_burst: u32,
    pub registration: EndpointLimits,
    pub login_start: EndpointLimits,
    pub login_finish: EndpointLimits,
    pub totp: EndpointLimits,
    pub refresh: EndpointLimits,
    /// Unknown or invalid session tokens per client IP on bearer routes,
    /// so random tokens cannot drive database load.
    pub bad_tokens: Rule,
    /// Consecutive failures before the first lock.
    pub lockout_threshold: u32,
    /// Failures at which the account is hard-locked.
    pub lockout_hard_limit: u32,
    /// How long a hard lock lasts (an admin can lift it sooner).
    #[serde(with = "humantime_serde")]
    pub hard_lock: Duration,
    /// The rate-limit API's namespaces. Like the per-endpoint rules above,
    /// set in the TOML file only.
    pub namespaces: Vec<Namespace>,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        let login = EndpointLimits {
            per_ip: Some(Rule::new(300, 300)),
            per_username: Some(Rule::new(30, 300)),
            per_ip_username: Some(Rule::new(10, 60)),
        };
        Self {
            prefilter_per_second: 20,
            prefilter_burst: 60,
            registration: EndpointLimits {
                per_ip: Some(Rule::new(20, 3600)),
                per_username: Some(Rule::new(5, 600)),
                per_ip_username: None,
            },
            login_start: login,
            login_finish: login,
            totp: EndpointLimits {
                per_ip: Some(Rule::new(100, 300)),
                per_username: Some(Rule::new(10, 60)),
                per_ip_username: Some(Rule::new(10, 60)),
            },
            refresh: EndpointLimits { per_ip: Some(Rule::new(600, 300)), per_username: None, per_ip_username: None },
            bad_tokens: Rule::new(60, 60),
            lockout_threshold: 5,
            lockout_hard_limit: 100,
            hard_lock: Duration::from_secs(24 * 3600),
            namespaces: Vec::new(),
        }
    }
}

/// Session lifetimes (defaults: NIST SP 800-63B AAL2 reauthentication).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct SessionsConfig {
    /// Lifetime of a session token; a refresh gets a new one.
    #[serde(with = "humantime_serde")]
    pub token_lifetime: Duration,
    /// A session unused this long ends.
    #[serde(with = "humantime_serde")]
    pub idle_timeout: Duration,
    /// A session ends this long after login, however active.
    #[serde(with = "humantime_serde")]
    pub absolute_lifetime: Duration,
    /// Sensitive operations need a primary authentication this recent
    /// (step-up), else 401 `reauthentication_required`.
    #[serde(with = "humantime_serde")]
    pub reauth_window: Duration,
    /// Active sessions per user; a new login revokes the oldest.
    pub max_per_user: u32,
}

/// Signed tokens (JWT) for other services.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct TokensConfig {
    /// Lifetime of a JWT (at most 15 minutes).
    #[serde(with = "humantime_serde")]
    pub jwt_lifetime: Duration,
    /// The `iss` claim.
    pub issuer: String,
    /// The `aud` claim.
    pub audience: String,
    /// A new signing key after this long; the previous one stays published
    /// until every token it signed has expired.
    #[serde(with = "humantime_serde")]
    pub rotate_after: Duration,
}

impl Default for TokensConfig {
    fn default() -> Self {
        Self {
            jwt_lifetime: Duration::from_secs(5 * 60),
            issuer: "latchkey".into(),
            audience: "latchkey".into(),
            rotate_after: Duration::from_secs(30 * 86400),
        }
    }
}

/// The browser pages and cookie sessions.
#[derive(Debug, Clone, Deserialize, Serialize, Default)]
#[serde(default, deny_unknown_fields)]
pub struct UiConfig {
    /// Origins (`https://app.example.com`) the sign-in page may send a
    /// browser back to after a login (`/ui/return?to=`); paths on
    /// latchkey's own origin are always allowed, anything else goes to
    /// `/ui/` (no open redirect).
    #[serde(deserialize_with = "string_list")]
    pub return_origins: Vec<String>,
}

/// Passkeys (WebAuthn): the relying party the browser binds credentials to.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebauthnConfig {
    /// The relying-party id: the domain credentials are scoped to (the
    /// host of `rp_origin` or a registrable suffix of it).
    pub rp_id: String,
    /// The origin (`scheme://host[:port]`) the pages are served from; the
    /// browser reports it in every ceremony and it must match.
    pub rp_origin: String,
    /// The name authenticators show.
    pub rp_name: String,
}

impl Default for WebauthnConfig {
    fn default() -> Self {
        Self { rp_id: "localhost".into(), rp_origin: "http://localhost:8080".into(), rp_name: "latchkey".into() }
    }
}

/// The account lifecycle.
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct AccountConfig {
    /// How long an admin-issued password-reset token stays valid.
    #[serde(with = "humantime_serde")]
    pub reset_token_lifetime: Duration,
}

impl Default for AccountConfig {
    fn default() -> Self {
        Self { reset_token_lifetime: Duration::from_secs(24 * 3600) }
    }
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(15 * 60),
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_lifetime: Duration::from_secs(12 * 3600),
            reauth_window: Duration::from_secs(5 * 60),
            max_per_user: 100,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    pub max_connections: u32,
    pub min_connections: u32,
    #[serde(with = "humantime_serde")]
    pub acquire_timeout: Duration,
    /// Log every SQL statement (never honoured in production).
    pub log_statements: bool,
    /// Postgres `statement_timeout`: a statement running longer is
    /// cancelled (0 = no limit).
    #[serde(with = "humantime_serde")]
    pub statement_timeout: Duration,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub pool_size: usize,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM certificate authority that `rediss://` servers are verified
    /// against (default: the system's roots).
    #[serde(serialize_with = "optional_text")]
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct KeyringConfig {
    /// PBKDF2-HMAC-SHA256 iterations for a new keyring. An existing keyring
    /// keeps the count stored with its salt.
    pub pbkdf2_iterations: u32,
    /// Rotate the active data key once it is this old ...
    #[serde(with = "humantime_serde")]
    pub rotate_after: Duration,
    /// ... or once it has encrypted this many values.
    pub rotate_after_uses: u64,
    /// Rows moved per batch by the re-encryption job.
    pub reencrypt_batch: u64,
    /// How often the background job checks rotation and re-encrypts.
    #[serde(with = "humantime_serde")]
    pub maintenance_interval: Duration,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            env: Environment::Development,
            bind: SocketAddr::from(([127, 0, 0, 1], 8080)),
            data_dir: PathBuf::from("./data"),
            database_url: None,
            redis_url: None,
            redis_prefix: "lk".to_owned(),
            master_password: None,
            backup_passphrase: None,
            service_tokens: Vec::new(),
            trusted_proxies: Vec::new(),
            log_level: "info".to_owned(),
            migrate_on_start: None,
            tls_cert_file: None,
            tls_key_file: None,
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            keyring: KeyringConfig::default(),
            maintenance: MaintenanceConfig::default(),
            sessions: SessionsConfig::default(),
            account: AccountConfig::default(),
            webauthn: WebauthnConfig::default(),
            tokens: TokensConfig::default(),
            ui: UiConfig::default(),
            ratelimit: RateLimitConfig::default(),
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        Self {
            max_connections: 16,
            min_connections: 1,
            acquire_timeout: Duration::from_secs(5),
            log_statements: false,
            statement_timeout: Duration::from_secs(10),
        }
    }
}

impl Default for RedisConfig {
    fn default() -> Self {
        Self { pool_size: 16, timeout: Duration::from_secs(2), ca_file: None }
    }
}

/// Cleanup of rows past their retention (never the audit log).
#[derive(Debug, Clone, Deserialize, Serialize)]
#[serde(default, deny_unknown_fields)]
pub struct MaintenanceConfig {
    /// How often the background job deletes what is past its retention.
    #[serde(with = "humantime_serde")]
    pub interval: Duration,
    /// Rows per DELETE statement.
    pub batch: u64,
    /// Revoked or expired sessions (with their refresh tokens), expired
    /// refresh tokens and spent or expired reset tokens are kept this long
    /// after they ended.
    #[serde(with = "humantime_serde")]
    pub session_retention: Duration,
    /// Devices without a session are kept this long after they were last
    /// seen. Blocked devices are always kept.
    #[serde(with = "humantime_serde")]
    pub device_retention: Duration,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        Self {
            interval: Duration::from_secs(3600),
            batch: 1000,
            session_retention: Duration::from_secs(30 * 86400),
            device_retention: Duration::from_secs(180 * 86400),
        }
    }
}

impl Default for KeyringConfig {
    fn default() -> Self {
        Self {
            pbkdf2_iterations: MIN_PRODUCTION_PBKDF2_ITERATIONS,
            rotate_after: Duration::from_secs(90 * 24 * 3600),
            rotate_after_uses: 1_000_000,
            reencrypt_batch: 500,
            maintenance_interval: Duration::from_secs(3600),
        }
    }
}

impl Config {
    pub fn is_production(&self) -> bool {
        self.env == Environment::Production
    }

    /// Whether `serve` runs migrations before listening.
    pub fn migrate_on_start(&self) -> bool {
        self.migrate_on_start.unwrap_or(!self.is_production())
    }

    /// Database URL in effect: the configured one, or SQLite in the data
    /// directory (created if missing).
    pub fn effective_database_url(&self) -> String {
        match &self.database_url {
            Some(url) => url.expose_secret().to_owned(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("latchkey.db").display()),
        }
    }
}

/// What a secret serializes as, set or not: serialized configuration never
/// holds a secret, and the environment reader knows secrets by it.
pub(super) const REDACTED: &str = "[redacted]";

fn redacted<T, S: Serializer>(_: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(REDACTED)
}

/// An unset optional path serializes as an empty string rather than as
/// nothing, so that its default says "text" (read verbatim from the
/// environment) rather than leaving the kind unknown.
fn optional_text<T: Serialize, S: Serializer>(value: &Option<T>, s: S) -> Result<S::Ok, S::Error> {
    match value {
        Some(value) => value.serialize(s),
        None => s.serialize_str(""),
    }
}

/// A list given either as a TOML array or as one comma-separated string (the
/// only form an environment variable can take).
fn string_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        One(String),
        Many(Vec<String>),
    }
    Ok(match OneOrMany::deserialize(d)? {
        OneOrMany::One(s) => s.split(',').map(str::trim).filter(|s| !s.is_empty()).map(str::to_owned).collect(),
        OneOrMany::Many(v) => v,
    })
}

fn secret_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<SecretString>, D::Error> {
    Ok(string_list(d)?.into_iter().map(SecretString::from).collect())
}

fn ipnet_list<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<IpNet>, D::Error> {
    string_list(d)?
        .into_iter()
        .map(|s| {
            // A bare address means a single host.
            s.parse::<IpNet>()
                .or_else(|_| s.parse::<std::net::IpAddr>().map(IpNet::from))
                .map_err(|_| serde::de::Error::custom(format!("{s:?} is not an IP address or CIDR network")))
        })
        .collect()
}
