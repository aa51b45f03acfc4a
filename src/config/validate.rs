//! Checks that run after loading: values that deserialize but make no sense
//! together, and the production rules (a strong master password, PBKDF2 at
//! OWASP's iteration count).

use std::collections::HashSet;
use std::time::Duration;

use secrecy::ExposeSecret;

use super::{Config, ConfigError, Environment};

/// Minimum PBKDF2 iterations accepted in production (OWASP 2023 for
/// PBKDF2-HMAC-SHA256).
pub const MIN_PRODUCTION_PBKDF2_ITERATIONS: u32 = 600_000;
/// Minimum master password length accepted in production.
pub const MIN_PRODUCTION_MASTER_PASSWORD_CHARS: usize = 16;

impl Config {
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
        let m = &self.maintenance;
        if m.batch == 0 || m.batch > 100_000 || m.interval < Duration::from_secs(1) {
            return Err(ConfigError::Invalid(
                "maintenance: batch must be between 1 and 100000, interval at least 1 second".into(),
            ));
        }
        if m.session_retention < Duration::from_secs(3600) || m.device_retention < Duration::from_secs(86400) {
            return Err(ConfigError::Invalid(
                "maintenance: session_retention must be at least 1 hour, device_retention at least 1 day".into(),
            ));
        }
        const TEN_YEARS: Duration = Duration::from_secs(10 * 366 * 86400);
        if s.absolute_lifetime > TEN_YEARS || s.idle_timeout > TEN_YEARS {
            return Err(ConfigError::Invalid("sessions: lifetimes must be under ten years".into()));
        }
        if s.reauth_window.is_zero() || s.reauth_window > s.absolute_lifetime || s.max_per_user == 0 {
            return Err(ConfigError::Invalid(
                "sessions: reauth_window must be positive and at most absolute_lifetime, max_per_user positive".into(),
            ));
        }
        for origin in &self.ui.return_origins {
            if web_origin(origin).as_deref() != Some(origin.trim_end_matches('/')) {
                return Err(ConfigError::Invalid(format!(
                    "ui: return_origins takes origins only (scheme://host[:port]), not {origin:?}"
                )));
            }
        }
        let w = &self.webauthn;
        let rp_host = url::Url::parse(&w.rp_origin).ok().and_then(|u| u.host_str().map(str::to_owned));
        let scoped = rp_host.as_deref().is_some_and(|host| host == w.rp_id || host.ends_with(&format!(".{}", w.rp_id)));
        if web_origin(&w.rp_origin).as_deref() != Some(w.rp_origin.trim_end_matches('/'))
            || w.rp_id.is_empty()
            || !scoped
        {
            return Err(ConfigError::Invalid(format!(
                "webauthn: rp_origin must be an origin (scheme://host[:port]) whose host is rp_id or under it, not \
                 {:?} with rp_id {:?}",
                w.rp_origin, w.rp_id
            )));
        }
        if w.rp_name.is_empty() {
            return Err(ConfigError::Invalid("webauthn: rp_name must not be empty".into()));
        }
        let t = &self.tokens;
        if t.jwt_lifetime.is_zero() || t.jwt_lifetime > Duration::from_secs(15 * 60) {
            return Err(ConfigError::Invalid("tokens: jwt_lifetime must be positive and at most 15 minutes".into()));
        }
        if t.rotate_after < Duration::from_secs(3600) || t.issuer.is_empty() || t.audience.is_empty() {
            return Err(ConfigError::Invalid(
                "tokens: rotate_after must be at least 1 hour, issuer and audience non-empty".into(),
            ));
        }
        let lifetime = self.account.reset_token_lifetime;
        if lifetime < Duration::from_secs(60) || lifetime > Duration::from_secs(30 * 86400) {
            return Err(ConfigError::Invalid("account: reset_token_lifetime must be 1 minute to 30 days".into()));
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
        let mut names = HashSet::new();
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
}

/// The origin (`scheme://host[:port]`, the port only when not the scheme's
/// default) of an http(s) URL without credentials; `None` for anything else.
pub fn web_origin(url: &str) -> Option<String> {
    let url = url::Url::parse(url).ok()?;
    let web = matches!(url.scheme(), "http" | "https") && url.username().is_empty() && url.password().is_none();
    web.then(|| url.origin().ascii_serialization())
}
