//! The environment as figment providers: `LATCHKEY_<KEY>` and
//! `LATCHKEY_<SECTION>__<KEY>`, secrets also from the file named by
//! `<VAR>_FILE`.

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::{ConfigError, LoadReport};

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

/// The keys settable from the environment, as lower-case `a__b` paths.
pub(super) const KNOWN_KEYS: &[&str] = &[
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

/// Splits the `LATCHKEY_*` variables into providers for the known keys (in
/// the order given), secrets read from files, and warnings for the rest.
pub(super) fn providers(env: &[(String, String)], report: &mut LoadReport) -> Result<Vec<EnvEntry>, ConfigError> {
    let is_set = |name: &str| env.iter().any(|(k, _)| k == name);
    let mut entries = Vec::new();
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("LATCHKEY_") else {
            continue;
        };
        if NON_CONFIG_VARS.contains(&name.as_str()) || FOREIGN_PREFIXES.iter().any(|p| name.starts_with(p)) {
            continue;
        }
        let key = rest.to_ascii_lowercase();
        if let Some(secret) = key.strip_suffix("_file").filter(|k| SECRET_KEYS.contains(k)) {
            let direct = format!("LATCHKEY_{}", secret.to_ascii_uppercase());
            if is_set(&direct) {
                return Err(ConfigError::Invalid(format!("both {direct} and {name} are set; set only one")));
            }
            let contents =
                std::fs::read_to_string(value).map_err(|source| ConfigError::Read { path: value.clone(), source })?;
            entries.push(EnvEntry::new(secret, contents.trim_end_matches(['\r', '\n'])));
        } else if KNOWN_KEYS.contains(&key.as_str()) {
            entries.push(EnvEntry::new(&key, value));
        } else {
            report.warnings.push(format!("ignoring unknown environment variable {name}"));
        }
    }
    Ok(entries)
}

/// One environment value as a figment provider, keyed by a dotted path.
pub(super) struct EnvEntry {
    path: String,
    value: String,
}

impl EnvEntry {
    fn new(key: &str, value: &str) -> Self {
        Self { path: key.replace("__", "."), value: value.to_owned() }
    }
}

impl Provider for EnvEntry {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable LATCHKEY_{}", self.path.replace('.', "__").to_uppercase()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        // Numbers and booleans are parsed like figment's own `Env` does;
        // free-form strings (secrets above all) are taken verbatim, so a
        // password that looks like a number or an array stays a string.
        let raw = &self.value;
        let value = if VERBATIM_KEYS.contains(&self.path.as_str()) {
            Value::from(raw.clone())
        } else {
            raw.parse::<Value>().unwrap_or_else(|_| Value::from(raw.clone()))
        };
        let mut parts: Vec<&str> = self.path.split('.').collect();
        let last = parts.pop().unwrap_or_default();
        let mut nested = Dict::new();
        nested.insert(last.to_owned(), value);
        while let Some(part) = parts.pop() {
            let mut outer = Dict::new();
            outer.insert(part.to_owned(), nested.into());
            nested = outer;
        }
        Ok(Profile::Default.collect(nested))
    }
}
