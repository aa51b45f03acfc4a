//! The environment as figment providers: `LATCHKEY_<KEY>` and
//! `LATCHKEY_<SECTION>__<KEY>`, secrets also from the file named by
//! `<VAR>_FILE`.
//!
//! The variables, which of them are secrets and how each value is read all
//! come from the serialized defaults ([`env_keys`]), not from a list kept by
//! hand: a new field is settable from the environment the moment it exists,
//! and the `.env.example` test asks for its documentation.

use std::collections::BTreeMap;

use figment::value::{Dict, Map, Value};
use figment::{Metadata, Profile, Provider};

use super::sections::REDACTED;
use super::{Config, ConfigError, LoadReport};

/// Environment variables read by the process but not configuration keys.
const NON_CONFIG_VARS: &[&str] = &["LATCHKEY_CONFIG", "LATCHKEY_LOG"];
/// Prefixes of variables that belong to other tools (the test suite).
const FOREIGN_PREFIXES: &[&str] = &["LATCHKEY_TEST_"];

/// Section keys set in the TOML file only although their default is not a
/// table: arrays of tables, which an empty default cannot reveal.
pub(super) const FILE_ONLY: &[&str] = &["ratelimit__namespaces"];

/// How a variable's value is read, decided by the key's default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    /// Numbers, booleans, durations and unset options: parsed as figment's
    /// `Env` parses values (`true` is a boolean, `"5s"` loses its quotes).
    Parsed,
    /// Free text, paths and comma-separated lists: taken verbatim.
    Verbatim,
    /// A secret: taken verbatim, or read from the file named by `<VAR>_FILE`.
    Secret,
}

/// The keys settable from the environment, in lower-case variable form
/// (`keyring__rotate_after`), from a walk of the serialized defaults.
///
/// A variable names a top-level key or a key of a section; tables inside a
/// section (the per-endpoint rate-limit rules) and [`FILE_ONLY`] keys are
/// set in the TOML file.
pub(super) fn env_keys() -> Result<BTreeMap<String, Kind>, ConfigError> {
    let defaults = Value::serialize(Config::default())
        .map_err(|e| ConfigError::Invalid(format!("cannot serialize the defaults: {e}")))?;
    let Value::Dict(_, top) = defaults else {
        return Err(ConfigError::Invalid("the defaults do not serialize as a table".into()));
    };
    let mut keys = BTreeMap::new();
    for (name, value) in top {
        let Value::Dict(_, section) = value else {
            keys.insert(name, kind_of(&value));
            continue;
        };
        for (key, value) in section {
            let var = format!("{name}__{key}");
            if !matches!(value, Value::Dict(..)) && !FILE_ONLY.contains(&var.as_str()) {
                keys.insert(var, kind_of(&value));
            }
        }
    }
    Ok(keys)
}

/// Secrets serialize as [`REDACTED`]; durations as humantime text (`5m`),
/// which is how they are told from free text; an unset option says nothing
/// of its type and is parsed, as figment's `Env` would (unset paths
/// serialize as empty text for that reason).
fn kind_of(default: &Value) -> Kind {
    match default {
        Value::String(_, s) if s == REDACTED => Kind::Secret,
        Value::String(_, s) if humantime_serde::re::humantime::parse_duration(s).is_err() => Kind::Verbatim,
        Value::Array(..) => Kind::Verbatim,
        _ => Kind::Parsed,
    }
}

/// Splits the `LATCHKEY_*` variables into providers for the known keys (in
/// the order given), secrets read from files, and warnings for the rest.
pub(super) fn providers(env: &[(String, String)], report: &mut LoadReport) -> Result<Vec<EnvEntry>, ConfigError> {
    let keys = env_keys()?;
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
        if let Some(secret) = key.strip_suffix("_file").filter(|k| keys.get(*k) == Some(&Kind::Secret)) {
            let direct = format!("LATCHKEY_{}", secret.to_ascii_uppercase());
            if is_set(&direct) {
                return Err(ConfigError::Invalid(format!("both {direct} and {name} are set; set only one")));
            }
            let contents =
                std::fs::read_to_string(value).map_err(|source| ConfigError::Read { path: value.clone(), source })?;
            entries.push(EnvEntry::new(secret, contents.trim_end_matches(['\r', '\n']), Kind::Secret));
        } else if let Some(&kind) = keys.get(&key) {
            entries.push(EnvEntry::new(&key, value, kind));
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
    kind: Kind,
}

impl EnvEntry {
    fn new(key: &str, value: &str, kind: Kind) -> Self {
        Self { path: key.replace("__", "."), value: value.to_owned(), kind }
    }
}

impl Provider for EnvEntry {
    fn metadata(&self) -> Metadata {
        Metadata::named(format!("environment variable LATCHKEY_{}", self.path.replace('.', "__").to_uppercase()))
    }

    fn data(&self) -> Result<Map<Profile, Dict>, figment::Error> {
        // Parsed like figment's own `Env`, or verbatim, so that a password
        // that looks like a number or an array stays a string.
        let raw = &self.value;
        let value = match self.kind {
            Kind::Parsed => raw.parse::<Value>().unwrap_or_else(|_| Value::from(raw.clone())),
            Kind::Verbatim | Kind::Secret => Value::from(raw.clone()),
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
