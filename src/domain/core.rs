//! [`Core`]: the domain services, holding the stores and secrets they need.
//! Built once at start-up; handlers call its methods.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};

use super::Result;
use super::audit::Auditor;
use super::health::{self, Readiness};
use super::keyring::{Keyring, KeyringStatus, Subkey};
use super::lockout::LockoutPolicy;
use super::opaque::ServerSetup;
use super::ratelimit::{BuiltinLimits, Limiter, Namespace};
use super::sealing::FastSeal;
use super::session_cache::SessionCache;
use crate::store::db::Db;
use crate::store::{Fast, Keys};

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub token_lifetime: Duration,
    pub idle_timeout: Duration,
    pub absolute_lifetime: Duration,
    pub reauth_window: Duration,
    pub max_per_user: u32,
    pub reset_token_lifetime: Duration,
}

/// Signed tokens for other services.
#[derive(Debug, Clone)]
pub struct TokenPolicy {
    pub jwt_lifetime: Duration,
    pub issuer: String,
    pub audience: String,
    pub rotate_after: Duration,
}

/// Who is calling, as the HTTP layer saw it.
#[derive(Debug, Clone, Default)]
pub struct ClientInfo {
    pub ip: Option<IpAddr>,
    pub user_agent: Option<String>,
}

impl ClientInfo {
    pub fn ip_string(&self) -> Option<String> {
        self.ip.map(|ip| ip.to_string())
    }
}

/// Policies the domain enforces, from configuration.
#[derive(Debug, Clone)]
pub struct Policies {
    pub sessions: SessionPolicy,
    pub limits: BuiltinLimits,
    pub lockout: LockoutPolicy,
    pub namespaces: Vec<Namespace>,
    pub tokens: TokenPolicy,
    /// The WebAuthn relying party (passkeys).
    pub webauthn: Arc<super::webauthn::Webauthn>,
}

/// The domain façade: every operation the HTTP layer and the CLI perform
/// is a method of `Core` (in the module named for its feature). Its parts
/// are private to the domain; the helpers every feature shares (the audit
/// builder, the session cache, the keyring, the limiter) are parts of it.
pub struct Core {
    pub(super) db: Db,
    pub(super) fast: Fast,
    pub(super) keys: Keys,
    pub(super) keyring: Arc<Keyring>,
    pub(super) setup: Arc<ServerSetup>,
    pub(super) audit: Auditor,
    pub(super) session_cache: SessionCache,
    /// Seals and tags what the fast store holds.
    pub(super) seal: Arc<FastSeal>,
    pub(super) limiter: Limiter,
    pub(super) sessions: SessionPolicy,
    pub(super) limits: BuiltinLimits,
    pub(super) lockout: LockoutPolicy,
    pub(super) namespaces: Vec<Namespace>,
    pub(super) tokens: TokenPolicy,
    pub(super) webauthn: Arc<super::webauthn::Webauthn>,
    /// JWT signing keys, loaded from the database.
    pub(super) signing: super::signing::KeyCache,
    /// Keys the per-user device id hash.
    pub(super) device_key: Subkey,
    /// Keys the per-user recovery code HMAC.
    pub(super) recovery_key: Subkey,
    /// Keys the names in fast-store keys (keyed once, cloned per use: every
    /// rate-limit decision hashes a name).
    pub(super) name_mac: hmac::Hmac<sha2::Sha256>,
}

impl Core {
    pub fn new(
        db: Db,
        fast: Fast,
        keys: Keys,
        keyring: Arc<Keyring>,
        setup: Arc<ServerSetup>,
        policies: Policies,
    ) -> Self {
        let seal = Arc::new(FastSeal::new(&keyring));
        Self {
            device_key: keyring.subkey("device-id"),
            recovery_key: keyring.subkey("recovery-code"),
            name_mac: <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&keyring.subkey("fast-store-names"))
                .expect("HMAC takes any key length"),
            audit: Auditor::new(db.clone(), keyring.clone()),
            seal: seal.clone(),
            session_cache: SessionCache::new(fast.clone(), keys.clone(), seal),
            limiter: Limiter::new(fast.clone()),
            db,
            fast,
            keys,
            keyring,
            setup,
            sessions: policies.sessions,
            limits: policies.limits,
            lockout: policies.lockout,
            namespaces: policies.namespaces,
            tokens: policies.tokens,
            webauthn: policies.webauthn,
            signing: super::signing::KeyCache::default(),
        }
    }

    /// The backends in use: (database, fast store), e.g. `("postgres", "redis")`.
    pub fn backends(&self) -> (&'static str, &'static str) {
        (self.db.backend_name(), self.fast.backend_name())
    }

    /// Whether each backend answers (`/readyz`).
    pub async fn readiness(&self) -> Readiness {
        health::readiness(&self.db, &self.fast).await
    }

    /// Whether rate-limit decisions are currently local because the fast
    /// store does not answer.
    pub fn limits_falling_back(&self) -> bool {
        self.limiter.is_falling_back()
    }

    /// A keyed hash of a name (a username, an address) for fast-store keys:
    /// a Redis reader cannot test a list of names against them.
    pub(super) fn name_hash(&self, name: &str) -> String {
        use hmac::Mac as _;
        let mut mac = self.name_mac.clone();
        mac.update(name.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Publishes the audit chain head when it moved (the background job).
    pub async fn publish_audit_head(&self, publisher: &mut super::audit_chain::HeadPublisher) -> Result<()> {
        publisher.publish(&self.db).await.map(drop)
    }

    /// The keyring's keys, their state, age, use count and rows.
    pub async fn keys_status(&self, now: DateTime<Utc>) -> Result<KeyringStatus> {
        self.keyring.status(now).await
    }
}
