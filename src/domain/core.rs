//! [`Core`]: the domain services, holding the stores and secrets they need.
//! Built once at start-up; handlers call its methods.

use std::net::IpAddr;
use std::sync::Arc;
use std::time::Duration;

use super::keyring::Keyring;
use super::lockout::LockoutPolicy;
use super::opaque::ServerSetup;
use super::ratelimit::{BuiltinLimits, Limiter, Namespace};
use crate::store::db::Db;
use crate::store::{Fast, Keys};

/// Session lifetimes.
#[derive(Debug, Clone, Copy)]
pub struct SessionPolicy {
    pub token_lifetime: Duration,
    pub idle_timeout: Duration,
    pub absolute_lifetime: Duration,
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
}

pub struct Core {
    pub db: Db,
    pub fast: Fast,
    pub keys: Keys,
    pub keyring: Arc<Keyring>,
    pub setup: Arc<ServerSetup>,
    pub sessions: SessionPolicy,
    pub limiter: Limiter,
    pub(crate) limits: BuiltinLimits,
    pub(crate) lockout: LockoutPolicy,
    pub(crate) namespaces: Vec<Namespace>,
    /// Keys the per-user device id hash.
    pub(crate) device_key: [u8; 32],
    /// Keys the pseudonyms of users in the audit log.
    pub(crate) audit_key: [u8; 32],
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
        let device_key = keyring.subkey("device-id");
        let audit_key = keyring.subkey("audit-pseudonym");
        Self {
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
            device_key,
            audit_key,
        }
    }
}
