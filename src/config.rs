//! Configuration: built-in defaults, then an optional TOML file
//! (`LATCHKEY_CONFIG`), then `LATCHKEY_*` environment variables. Nested keys
//! use a double underscore (`LATCHKEY_KEYRING__ROTATE_AFTER=30d`). Every
//! secret can also come from a file named by `<VAR>_FILE`, which is how
//! container secrets are mounted.
//!
//! Secrets are held as [`SecretString`], whose `Debug` prints a placeholder,
//! so a config dump in a log never shows them. Unknown keys in the TOML file
//! are an error (a typo must not silently fall back to a default); unknown
//! `LATCHKEY_*` variables only produce a warning, because the environment is
//! shared with other tooling.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use figment::Figment;
use figment::providers::{Format, Toml};
use ipnet::IpNet;
use secrecy::{ExposeSecret, SecretString};
use serde::{Deserialize, Deserializer};

use crate::domain::ratelimit::{EndpointLimits, Namespace, Rule};

/// Minimum PBKDF2 iterations accepted in production (OWASP 2023 for
/// PBKDF2-HMAC-SHA256).
pub const MIN_PRODUCTION_PBKDF2_ITERATIONS: u32 = 600_000;
/// Minimum master password length accepted in production.
pub const MIN_PRODUCTION_MASTER_PASSWORD_CHARS: usize = 16;

/// Secrets that may be given through `<NAME>_FILE`.
const SECRET_KEYS: &[&str] = &["master_password", "database_url", "redis_url", "service_tokens"];

/// Keys whose environment values are never parsed as numbers or arrays.
const VERBATIM_KEYS: &[&str] = &[
    "tls_cert_file",
    "tls_key_file",
    "redis.ca_file",
    "env",
    "bind",
    "data_dir",
    "database_url",
    "redis_url",
    "redis_prefix",
    "master_password",
    "service_tokens",
    "trusted_proxies",
    "log_level",
];

/// Environment variables read by the process but not configuration keys.
const NON_CONFIG_VARS: &[&str] = &["LATCHKEY_CONFIG", "LATCHKEY_LOG"];
/// Prefixes of variables that belong to other tools (the test suite).
const FOREIGN_PREFIXES: &[&str] = &["LATCHKEY_TEST_"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Environment {
    #[default]
    Development,
    Production,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub env: Environment,
    pub bind: SocketAddr,
    pub data_dir: PathBuf,
    /// Postgres (or SQLite) URL; `None` selects SQLite under `data_dir`.
    pub database_url: Option<SecretString>,
    /// Redis URL; `None` selects the in-process store.
    pub redis_url: Option<SecretString>,
    /// Prefix of every Redis key, so several deployments (or tests) can share
    /// one Redis.
    pub redis_prefix: String,
    pub master_password: Option<SecretString>,
    /// Bearer tokens of the services allowed to call the rate-limit API.
    #[serde(deserialize_with = "secret_list")]
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
    pub tls_cert_file: Option<PathBuf>,
    pub tls_key_file: Option<PathBuf>,
    pub database: DatabaseConfig,
    pub redis: RedisConfig,
    pub keyring: KeyringConfig,
    pub sessions: SessionsConfig,
    pub ratelimit: RateLimitConfig,
}

/// Abuse resistance. Defaults and their reasoning are in the README.
#[derive(Debug, Clone, Deserialize)]
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
    /// Consecutive failures before the first lock.
    pub lockout_threshold: u32,
    /// Failures at which the account is hard-locked.
    pub lockout_hard_limit: u32,
    /// How long a hard lock lasts (an admin can lift it sooner).
    #[serde(with = "humantime_serde")]
    pub hard_lock: Duration,
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
            lockout_threshold: 5,
            lockout_hard_limit: 100,
            hard_lock: Duration::from_secs(24 * 3600),
            namespaces: Vec::new(),
        }
    }
}

/// Session lifetimes (defaults: NIST SP 800-63B AAL2 reauthentication).
#[derive(Debug, Clone, Deserialize)]
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
}

impl Default for SessionsConfig {
    fn default() -> Self {
        Self {
            token_lifetime: Duration::from_secs(15 * 60),
            idle_timeout: Duration::from_secs(30 * 60),
            absolute_lifetime: Duration::from_secs(12 * 3600),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
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

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RedisConfig {
    pub pool_size: usize,
    #[serde(with = "humantime_serde")]
    pub timeout: Duration,
    /// PEM certificate authority that `rediss://` servers are verified
    /// against (default: the system's roots).
    pub ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
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
            service_tokens: Vec::new(),
            trusted_proxies: Vec::new(),
            log_level: "info".to_owned(),
            migrate_on_start: None,
            tls_cert_file: None,
            tls_key_file: None,
            database: DatabaseConfig::default(),
            redis: RedisConfig::default(),
            keyring: KeyringConfig::default(),
            sessions: SessionsConfig::default(),
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

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("configuration: {0}")]
    Invalid(String),
    #[error("configuration: cannot read {path}: {source}")]
    Read { path: String, source: std::io::Error },
}

/// What loading produced besides the config: warnings to log once logging is
/// set up (logging itself depends on the config).
#[derive(Debug, Default)]
pub struct LoadReport {
    pub warnings: Vec<String>,
}

impl Config {
    /// Loads from the process environment.
    pub fn load() -> Result<(Self, LoadReport), ConfigError> {
        Self::load_from(std::env::vars().collect())
    }

    /// Loads from the given environment (tests pass their own).
    pub fn load_from(env: Vec<(String, String)>) -> Result<(Self, LoadReport), ConfigError> {
        let mut report = LoadReport::default();
        let lookup = |name: &str| env.iter().find(|(k, _)| k == name).map(|(_, v)| v.clone());

        let mut figment = Figment::new();
        if let Some(path) = lookup("LATCHKEY_CONFIG") {
            if !Path::new(&path).is_file() {
                return Err(ConfigError::Invalid(format!("LATCHKEY_CONFIG names {path:?}, which is not a file")));
            }
            figment = figment.merge(Toml::file(path));
        }

        // Environment: split into known keys, secrets-from-files, and unknown.
        let mut known: Vec<(String, String)> = Vec::new();
        for (name, value) in &env {
            let Some(rest) = name.strip_prefix("LATCHKEY_") else {
                continue;
            };
            if NON_CONFIG_VARS.contains(&name.as_str()) || FOREIGN_PREFIXES.iter().any(|p| name.starts_with(p)) {
                continue;
            }
            let key = rest.to_ascii_lowercase();
            if let Some(secret) = key.strip_suffix("_file").filter(|k| SECRET_KEYS.contains(k)) {
                if lookup(&format!("LATCHKEY_{}", secret.to_ascii_uppercase())).is_some() {
                    return Err(ConfigError::Invalid(format!(
                        "both LATCHKEY_{0} and {name} are set; set only one",
                        secret.to_ascii_uppercase()
                    )));
                }
                let contents = std::fs::read_to_string(value)
                    .map_err(|source| ConfigError::Read { path: value.clone(), source })?;
                known.push((secret.to_owned(), contents.trim_end_matches(['\r', '\n']).to_owned()));
            } else if is_known_key(&key) {
                known.push((key, value.clone()));
            } else {
                report.warnings.push(format!("ignoring unknown environment variable {name}"));
            }
        }
        for (key, value) in known {
            figment = figment.merge(EnvEntry { path: key.replace("__", "."), value });
        }

        let config: Config = figment.extract().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok((config, report))
    }

    /// Rejects settings that are unsafe in production.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.redis_prefix.is_empty() || self.redis_prefix.contains(['{', '}', ' ']) {
            return Err(ConfigError::Invalid("redis_prefix must be non-empty, without braces or spaces".into()));
        }
        let s = &self.sessions;
        if s.token_lifetime.is_zero() || s.token_lifetime > s.absolute_lifetime || s.idle_timeout.is_zero() {
            return Err(ConfigError::Invalid(
                "sessions: token_lifetime and idle_timeout must be positive, token_lifetime <= absolute_lifetime"
                    .into(),
            ));
        }
        if self.tls_cert_file.is_some() != self.tls_key_file.is_some() {
            return Err(ConfigError::Invalid("tls_cert_file and tls_key_file go together".into()));
        }
        let k = &self.keyring;
        if k.reencrypt_batch == 0 || k.rotate_after_uses == 0 || k.rotate_after < Duration::from_secs(60) {
            return Err(ConfigError::Invalid(
                "keyring: reencrypt_batch and rotate_after_uses must be positive, rotate_after at least 1 minute"
                    .into(),
            ));
        }
        const TEN_YEARS: Duration = Duration::from_secs(10 * 366 * 86400);
        if s.absolute_lifetime > TEN_YEARS || s.idle_timeout > TEN_YEARS {
            return Err(ConfigError::Invalid("sessions: lifetimes must be under ten years".into()));
        }
        let r = &self.ratelimit;
        if r.lockout_hard_limit <= r.lockout_threshold || r.lockout_hard_limit > 100 || r.hard_lock > TEN_YEARS {
            return Err(ConfigError::Invalid(
                "ratelimit: lockout_hard_limit must be above lockout_threshold and at most 100 (NIST SP 800-63B), \
                 hard_lock under ten years"
                    .into(),
            ));
        }
        if r.prefilter_per_second == 0 || r.prefilter_burst == 0 || r.lockout_threshold == 0 {
            return Err(ConfigError::Invalid(
                "ratelimit: prefilter rates and lockout_threshold must be positive".into(),
            ));
        }
        let mut names = std::collections::HashSet::new();
        for ns in &r.namespaces {
            if ns.name.is_empty() || ns.limit == 0 || ns.window.is_zero() || !names.insert(ns.name.as_str()) {
                return Err(ConfigError::Invalid(format!(
                    "ratelimit.namespaces: {:?} needs a unique non-empty name, a positive limit and window",
                    ns.name
                )));
            }
        }
        if self.env != Environment::Production {
            return Ok(());
        }
        let Some(password) = &self.master_password else {
            return Err(ConfigError::Invalid(
                "production mode needs a master password: set LATCHKEY_MASTER_PASSWORD or LATCHKEY_MASTER_PASSWORD_FILE".into(),
            ));
        };
        if password.expose_secret().chars().count() < MIN_PRODUCTION_MASTER_PASSWORD_CHARS {
            return Err(ConfigError::Invalid(format!(
                "production mode needs a master password of at least {MIN_PRODUCTION_MASTER_PASSWORD_CHARS} characters"
            )));
        }
        if self.keyring.pbkdf2_iterations < MIN_PRODUCTION_PBKDF2_ITERATIONS {
            return Err(ConfigError::Invalid(format!(
                "production mode needs keyring.pbkdf2_iterations >= {MIN_PRODUCTION_PBKDF2_ITERATIONS}"
            )));
        }
        Ok(())
    }

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

/// The keys settable from the environment, as lower-case `a__b` paths.
fn is_known_key(key: &str) -> bool {
    KNOWN_KEYS.contains(&key)
}

const KNOWN_KEYS: &[&str] = &[
    "env",
    "bind",
    "data_dir",
    "database_url",
    "redis_url",
    "redis_prefix",
    "master_password",
    "service_tokens",
    "trusted_proxies",
    "log_level",
    "migrate_on_start",
    "tls_cert_file",
    "tls_key_file",
    "database__max_connections",
    "database__min_connections",
    "database__acquire_timeout",
    "database__log_statements",
    "database__statement_timeout",
    "redis__pool_size",
    "redis__timeout",
    "redis__ca_file",
    "keyring__pbkdf2_iterations",
    "keyring__rotate_after",
    "keyring__rotate_after_uses",
    "keyring__reencrypt_batch",
    "keyring__maintenance_interval",
    "sessions__token_lifetime",
    "sessions__idle_timeout",
    "sessions__absolute_lifetime",
    "ratelimit__prefilter_per_second",
    "ratelimit__prefilter_burst",
    "ratelimit__lockout_threshold",
    "ratelimit__lockout_hard_limit",
    "ratelimit__hard_lock",
];

/// One environment value as a figment provider, keyed by a dotted path.
struct EnvEntry {
    path: String,
    value: String,
}

impl figment::Provider for EnvEntry {
    fn metadata(&self) -> figment::Metadata {
        figment::Metadata::named(format!(
            "environment variable LATCHKEY_{}",
            self.path.replace('.', "__").to_uppercase()
        ))
    }

    fn data(&self) -> Result<figment::value::Map<figment::Profile, figment::value::Dict>, figment::Error> {
        // Numbers and booleans are parsed like figment's own `Env` does;
        // free-form strings (secrets above all) are taken verbatim, so a
        // password that looks like a number or an array stays a string.
        let raw = &self.value;
        let value = if VERBATIM_KEYS.contains(&self.path.as_str()) {
            figment::value::Value::from(raw.clone())
        } else {
            raw.parse::<figment::value::Value>().unwrap_or_else(|_| figment::value::Value::from(raw.clone()))
        };
        let mut dict = figment::value::Dict::new();
        let mut parts: Vec<&str> = self.path.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let mut leaf = figment::value::Dict::new();
        leaf.insert(last.to_owned(), value);
        let mut nested = leaf;
        while let Some(part) = parts.pop() {
            let mut outer = figment::value::Dict::new();
            outer.insert(part.to_owned(), nested.into());
            nested = outer;
        }
        dict.extend(nested);
        Ok(figment::Profile::Default.collect(dict))
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

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn defaults_without_anything() {
        let (c, report) = Config::load_from(vec![]).expect("defaults load");
        assert_eq!(c.bind.to_string(), "127.0.0.1:8080");
        assert_eq!(c.data_dir, PathBuf::from("./data"));
        assert!(c.database_url.is_none() && c.redis_url.is_none());
        assert_eq!(c.keyring.pbkdf2_iterations, 600_000);
        assert_eq!(c.keyring.rotate_after, Duration::from_secs(90 * 86400));
        assert!(c.migrate_on_start());
        assert!(report.warnings.is_empty());
        assert!(c.effective_database_url().starts_with("sqlite://"));
    }

    #[test]
    fn file_then_env_override() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("latchkey.toml");
        std::fs::write(
            &path,
            "bind = \"127.0.0.1:9000\"\nlog_level = \"debug\"\n[keyring]\nrotate_after = \"30d\"\npbkdf2_iterations = 700000\n",
        )
        .expect("write");
        let (c, _) = Config::load_from(env(&[
            ("LATCHKEY_CONFIG", path.to_str().expect("utf8")),
            ("LATCHKEY_BIND", "127.0.0.1:9100"),
            ("LATCHKEY_KEYRING__ROTATE_AFTER_USES", "42"),
            ("LATCHKEY_TRUSTED_PROXIES", "10.0.0.0/8, 127.0.0.1"),
        ]))
        .expect("load");
        assert_eq!(c.bind.port(), 9100, "env wins over file");
        assert_eq!(c.log_level, "debug", "file wins over default");
        assert_eq!(c.keyring.rotate_after, Duration::from_secs(30 * 86400));
        assert_eq!(c.keyring.pbkdf2_iterations, 700_000);
        assert_eq!(c.keyring.rotate_after_uses, 42);
        assert_eq!(c.trusted_proxies.len(), 2);
        assert!(c.trusted_proxies[1].contains(&"127.0.0.1".parse::<std::net::IpAddr>().expect("ip")));
    }

    #[test]
    fn unknown_file_key_is_an_error_and_unknown_env_a_warning() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(&path, "bnid = \"x\"\n").expect("write");
        let err = Config::load_from(env(&[("LATCHKEY_CONFIG", path.to_str().expect("utf8"))])).unwrap_err();
        assert!(err.to_string().contains("bnid"), "{err}");

        let (_, report) =
            Config::load_from(env(&[("LATCHKEY_BNID", "x"), ("LATCHKEY_TEST_DATABASE_URL", "y")])).expect("load");
        assert_eq!(report.warnings, vec!["ignoring unknown environment variable LATCHKEY_BNID".to_owned()]);
    }

    #[test]
    fn secrets_from_files_and_never_printed() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("mp");
        std::fs::write(&path, "correct horse battery staple\n").expect("write");
        let (c, _) =
            Config::load_from(env(&[("LATCHKEY_MASTER_PASSWORD_FILE", path.to_str().expect("utf8"))])).expect("load");
        let mp = c.master_password.as_ref().expect("password set");
        assert_eq!(mp.expose_secret(), "correct horse battery staple");
        assert!(!format!("{c:?}").contains("horse"), "Debug must not print secrets");

        let both = Config::load_from(env(&[
            ("LATCHKEY_MASTER_PASSWORD", "x"),
            ("LATCHKEY_MASTER_PASSWORD_FILE", path.to_str().expect("utf8")),
        ]));
        assert!(both.is_err());
    }

    /// Every secret can come from `<VAR>_FILE`; other keys cannot.
    #[test]
    fn each_secret_from_a_file() {
        let dir = tempfile::tempdir().expect("tempdir");
        let file = |name: &str, contents: &str| {
            let path = dir.path().join(name);
            std::fs::write(&path, contents).expect("write");
            path.to_str().expect("utf8").to_owned()
        };
        let (c, report) = Config::load_from(env(&[
            ("LATCHKEY_DATABASE_URL_FILE", &file("db", "postgres://u:p@db/lk\n")),
            ("LATCHKEY_REDIS_URL_FILE", &file("redis", "redis://:p@cache:6379")),
            ("LATCHKEY_SERVICE_TOKENS_FILE", &file("tokens", "t1, t2\n")),
        ]))
        .expect("load");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(
            c.database_url.as_ref().map(|s| s.expose_secret().to_owned()).as_deref(),
            Some("postgres://u:p@db/lk")
        );
        assert_eq!(
            c.redis_url.as_ref().map(|s| s.expose_secret().to_owned()).as_deref(),
            Some("redis://:p@cache:6379")
        );
        let tokens: Vec<&str> = c.service_tokens.iter().map(|t| t.expose_secret()).collect();
        assert_eq!(tokens, ["t1", "t2"]);

        let (_, report) =
            Config::load_from(env(&[("LATCHKEY_LOG_LEVEL_FILE", "x"), ("LATCHKEY_TLS_CERT_FILE_FILE", "x")]))
                .expect("load");
        assert_eq!(
            report.warnings,
            [
                "ignoring unknown environment variable LATCHKEY_LOG_LEVEL_FILE",
                "ignoring unknown environment variable LATCHKEY_TLS_CERT_FILE_FILE"
            ]
        );
    }

    /// Numbers, booleans and durations are parsed as figment's `Env` parses
    /// them (quotes and padding go); free text, paths, lists and secrets are
    /// taken verbatim, so a password that looks like a number stays a string.
    #[test]
    fn env_values_parsed_or_verbatim_by_kind() {
        let (c, report) = Config::load_from(env(&[
            ("LATCHKEY_MASTER_PASSWORD", "12345678901234567890"),
            ("LATCHKEY_REDIS_PREFIX", "[a,b]"),
            ("LATCHKEY_LOG_LEVEL", "\"debug\""),
            ("LATCHKEY_TLS_CERT_FILE", "123"),
            ("LATCHKEY_TLS_KEY_FILE", "true"),
            ("LATCHKEY_REDIS__CA_FILE", "42"),
            ("LATCHKEY_SERVICE_TOKENS", "[x, y]"),
            ("LATCHKEY_SESSIONS__IDLE_TIMEOUT", "\"45m\""),
            ("LATCHKEY_DATABASE__ACQUIRE_TIMEOUT", " 7s "),
            ("LATCHKEY_MIGRATE_ON_START", "false"),
            ("LATCHKEY_DATABASE__LOG_STATEMENTS", "true"),
            ("LATCHKEY_REDIS__POOL_SIZE", " 3 "),
        ]))
        .expect("load");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(c.master_password.as_ref().expect("set").expose_secret(), "12345678901234567890");
        assert_eq!(c.redis_prefix, "[a,b]");
        assert_eq!(c.log_level, "\"debug\"");
        assert_eq!(c.tls_cert_file, Some(PathBuf::from("123")));
        assert_eq!(c.tls_key_file, Some(PathBuf::from("true")));
        assert_eq!(c.redis.ca_file, Some(PathBuf::from("42")));
        let tokens: Vec<&str> = c.service_tokens.iter().map(|t| t.expose_secret()).collect();
        assert_eq!(tokens, ["[x", "y]"]);
        assert_eq!(c.sessions.idle_timeout, Duration::from_secs(45 * 60));
        assert_eq!(c.database.acquire_timeout, Duration::from_secs(7));
        assert!(!c.migrate_on_start());
        assert!(c.database.log_statements);
        assert_eq!(c.redis.pool_size, 3);
    }

    /// Environment variables reach top-level keys and `SECTION__KEY`; the
    /// per-endpoint rules and the namespaces are set in the TOML file only.
    #[test]
    fn rules_and_namespaces_not_from_env() {
        let (c, report) = Config::load_from(env(&[
            ("LATCHKEY_RATELIMIT__LOGIN_START__PER_IP__LIMIT", "5"),
            ("LATCHKEY_RATELIMIT__LOGIN_START", "{per_ip = {limit = 5, window = \"1m\"}}"),
            ("LATCHKEY_RATELIMIT__NAMESPACES", "[{name = \"api\", limit = 1, window = \"1s\"}]"),
        ]))
        .expect("load");
        assert_eq!(report.warnings.len(), 3, "{:?}", report.warnings);
        assert!(c.ratelimit.namespaces.is_empty());
        assert_eq!(c.ratelimit.login_start.per_ip, Some(Rule::new(300, 300)));
    }

    #[test]
    fn production_refuses_weak_settings() {
        let no_password = Config::load_from(env(&[("LATCHKEY_ENV", "production")])).unwrap_err();
        assert!(no_password.to_string().contains("master password"), "{no_password}");

        let weak = Config::load_from(env(&[("LATCHKEY_ENV", "production"), ("LATCHKEY_MASTER_PASSWORD", "short")]))
            .unwrap_err();
        assert!(weak.to_string().contains("16"), "{weak}");

        let few = Config::load_from(env(&[
            ("LATCHKEY_ENV", "production"),
            ("LATCHKEY_MASTER_PASSWORD", "a long enough master password"),
            ("LATCHKEY_KEYRING__PBKDF2_ITERATIONS", "1000"),
        ]))
        .unwrap_err();
        assert!(few.to_string().contains("600000"), "{few}");

        let (ok, _) = Config::load_from(env(&[
            ("LATCHKEY_ENV", "production"),
            ("LATCHKEY_MASTER_PASSWORD", "a long enough master password"),
        ]))
        .expect("valid production config");
        assert!(!ok.migrate_on_start(), "production migrates only when asked");
    }

    /// `.env.example` documents every variable, and its values load as-is.
    #[test]
    fn env_example_lists_every_variable_and_loads() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/.env.example")).expect("read");
        let mut listed = Vec::new();
        let mut active = Vec::new();
        for line in text.lines() {
            let (commented, body) = match line.strip_prefix("# ") {
                Some(rest) => (true, rest),
                None => (false, line),
            };
            let Some((name, value)) = body.split_once('=') else {
                continue;
            };
            let Some(key) = name.strip_prefix("LATCHKEY_") else {
                continue;
            };
            if name.contains(' ') {
                continue;
            }
            listed.push(key.to_ascii_lowercase());
            if !commented {
                active.push((name.to_owned(), value.to_owned()));
            }
        }
        for key in KNOWN_KEYS {
            assert!(listed.iter().any(|l| l == key), ".env.example lacks LATCHKEY_{}", key.to_uppercase());
        }
        let (config, report) = Config::load_from(active).expect(".env.example loads");
        assert!(report.warnings.is_empty(), "{:?}", report.warnings);
        assert_eq!(config.keyring.rotate_after, Duration::from_secs(90 * 86400));
    }

    #[test]
    fn ratelimit_namespaces_from_toml() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c.toml");
        std::fs::write(
            &path,
            "[[ratelimit.namespaces]]\nname = \"api\"\nlimit = 100\nwindow = \"60s\"\n\n\
             [ratelimit.login_start]\nper_ip = { limit = 7, window = \"1m\" }\n",
        )
        .expect("write");
        let (c, _) = Config::load_from(env(&[("LATCHKEY_CONFIG", path.to_str().expect("utf8"))])).expect("load");
        assert_eq!(c.ratelimit.namespaces.len(), 1);
        assert_eq!(c.ratelimit.namespaces[0].window, Duration::from_secs(60));
        assert_eq!(c.ratelimit.login_start.per_ip, Some(Rule::new(7, 60)));
        assert_eq!(c.ratelimit.login_start.per_username, None, "a section replaces the defaults it names");

        std::fs::write(&path, "[[ratelimit.namespaces]]\nname = \"api\"\nlimit = 0\nwindow = \"60s\"\n")
            .expect("write");
        assert!(Config::load_from(env(&[("LATCHKEY_CONFIG", path.to_str().expect("utf8"))])).is_err());
    }

    #[test]
    fn bad_values_are_clear_errors() {
        let err = Config::load_from(env(&[("LATCHKEY_TRUSTED_PROXIES", "not-a-net")])).unwrap_err();
        assert!(err.to_string().contains("not-a-net"), "{err}");
        let err = Config::load_from(env(&[("LATCHKEY_ENV", "staging")])).unwrap_err();
        assert!(err.to_string().contains("staging"), "{err}");
    }
}
