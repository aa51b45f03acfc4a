//! Configuration: built-in defaults, then an optional TOML file
//! (`LATCHKEY_CONFIG`), then `LATCHKEY_*` environment variables. Nested keys
//! use a double underscore (`LATCHKEY_KEYRING__ROTATE_AFTER=30d`). Every
//! secret can also come from a file named by `<VAR>_FILE`, which is how
//! container secrets are mounted.
//!
//! Secrets are held as [`SecretString`](secrecy::SecretString), whose `Debug`
//! prints a placeholder, and serialize as a placeholder too, so a config dump
//! in a log never shows them. Unknown keys in the TOML file are an error (a typo
//! must not silently fall back to a default); unknown `LATCHKEY_*` variables
//! only produce a warning, because the environment is shared with other
//! tooling.
//!
//! The shape:
//! - `sections`: [`Config`] and its sections with their defaults, the one
//!   description of every key. The rate-limit rule types it holds belong to
//!   [`crate::domain::ratelimit`].
//! - `env`: the environment as figment providers. Which variables exist,
//!   which are secrets, and which are read verbatim is derived from the
//!   serialized defaults, so it cannot drift from the structs.
//! - `validate`: checks after loading, including the production rules.
//! - here: [`Config::load`], which stacks the three sources.

mod env;
mod sections;
mod validate;

#[cfg(test)]
mod tests;

use std::path::Path;

use figment::Figment;
use figment::providers::{Format, Toml};

pub use sections::{
    AccountConfig, Config, DatabaseConfig, Environment, KeyringConfig, MaintenanceConfig, RateLimitConfig, RedisConfig,
    SessionsConfig, TokensConfig, UiConfig, WebauthnConfig,
};
pub use validate::{MIN_PRODUCTION_MASTER_PASSWORD_CHARS, MIN_PRODUCTION_PBKDF2_ITERATIONS, web_origin};

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

        // Defaults come from `#[serde(default)]`, not from a figment layer of
        // serialized defaults, which would merge into the file's tables: an
        // endpoint's `[ratelimit.login_start]` with only `per_ip` sets just
        // that rule.
        let mut figment = Figment::new();
        if let Some((_, path)) = env.iter().find(|(k, _)| k == "LATCHKEY_CONFIG") {
            if !Path::new(path).is_file() {
                return Err(ConfigError::Invalid(format!("LATCHKEY_CONFIG names {path:?}, which is not a file")));
            }
            figment = figment.merge(Toml::file(path));
        }
        for entry in env::providers(&env, &mut report)? {
            figment = figment.merge(entry);
        }

        let config: Config = figment.extract().map_err(|e| ConfigError::Invalid(e.to_string()))?;
        config.validate()?;
        Ok((config, report))
    }
}
