//! Lockout: guesses are counted where they happen.
//!
//! A real OPAQUE client learns from KE2 alone that a password is wrong and
//! never sends login/finish, so every login/start is an attempt, counted as
//! a failure at once; a completed login (and second factor, when on) turns
//! it into a success, which ends the run. Bad TOTP and recovery codes count
//! too. The lock is decided at login/start, so no guess can be tested while
//! locked:
//!
//! ```text
//!            login/start (counted), bad code
//!   open --------------------------------------> counting (n < threshold)
//!    ^                                              | n >= threshold
//!    | login completed (resets n, lifts the lock)   v
//!    '------------------------------------- locked for d(n) after the n-th attempt:
//!                                           1 s, 5 s, 30 s, 1 min, 5 min, 15 min, 1 h, 1 h, ...
//!                                           login/start answers 423 + Retry-After
//!                                              | n >= hard limit (100)
//!                                              v
//!                                           hard-locked (24 h, or until an admin unlocks)
//! ```
//!
//! Failures are counted per [`Scope`]: callers without a trusted device
//! credential share the account's anonymous scope (in the database); each
//! trusted device has its own (its row); a name that matches no account is
//! counted in the fast store with the same schedule, so a lock says nothing
//! about whether the account exists. Guessing from elsewhere therefore never
//! locks a trusted device out, and its own failures lock only it. An admin's
//! lock applies to every scope. At most `hard limit` consecutive failures
//! are possible in a scope (NIST SP 800-63B §5.2.2).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::audit::events;
use super::core::{ClientInfo, Core};
use super::{Error, Result};
use crate::store::FastStore as _;
pub use crate::store::users::{AUTOMATIC_LOCK, HARD_LOCK};
use crate::store::{devices, users};

/// Lock lengths after the threshold, in seconds; the last repeats.
const STEPS: [u64; 7] = [1, 5, 30, 60, 300, 900, 3600];

#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    pub threshold: u32,
    pub hard_limit: u32,
    pub hard_lock: Duration,
}

impl LockoutPolicy {
    /// How long `failures` consecutive failures lock the scope.
    pub fn lock_for(&self, failures: u32) -> Option<Duration> {
        if failures >= self.hard_limit {
            return Some(self.hard_lock);
        }
        let over = failures.checked_sub(self.threshold)?;
        let step = STEPS[usize::try_from(over).unwrap_or(usize::MAX).min(STEPS.len() - 1)];
        Some(Duration::from_secs(step))
    }
}

/// Where an attempt's failures are counted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Scope {
    /// An account, from callers without a trusted device credential.
    Account(Uuid),
    /// A trusted device's own scope.
    Device { user_id: Uuid, device_id: String },
    /// A name that matches no account (normalized), counted in the fast store.
    Unknown(String),
}

/// Whether a lock was set by an admin (every scope honours it).
pub fn is_admin_lock(reason: Option<&str>) -> bool {
    !matches!(reason, None | Some(AUTOMATIC_LOCK | HARD_LOCK))
}

/// Seconds until `until`, at least 1.
fn seconds_until(until: DateTime<Utc>, now: DateTime<Utc>) -> u64 {
    u64::try_from((until - now).num_seconds()).unwrap_or(0).max(1)
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

/// The fast-store record of an unknown name: (attempts, locked until, ms).
fn decode_unknown(bytes: &[u8]) -> (u32, i64) {
    match <[u8; 12]>::try_from(bytes) {
        Ok(b) => (
            u32::from_be_bytes([b[0], b[1], b[2], b[3]]),
            i64::from_be_bytes([b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11]]),
        ),
        Err(_) => (0, 0),
    }
}

impl Core {
    /// login/start: refuses a locked scope (423 with Retry-After); otherwise
    /// counts this attempt as a failure until the login completes.
    pub(super) async fn begin_attempt(
        &self,
        scope: &Scope,
        user: Option<&users::UserRecord>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if let Some(user) = user
            && let Some(until) = user.locked_until.filter(|u| *u > now)
            && (is_admin_lock(user.lock_reason.as_deref()) || matches!(scope, Scope::Account(_)))
        {
            return Err(Error::AccountLocked { retry_after_secs: seconds_until(until, now) });
        }
        match scope {
            Scope::Account(_) => self.attempt_failed(scope, client, now).await,
            Scope::Device { device_id, .. } => {
                let device = devices::find(&self.db, device_id).await?;
                if let Some(until) = device.and_then(|d| d.locked_until).filter(|u| *u > now) {
                    return Err(Error::AccountLocked { retry_after_secs: seconds_until(until, now) });
                }
                self.attempt_failed(scope, client, now).await
            }
            Scope::Unknown(username) => {
                let key = self.keys.tagged("attempts", &super::tokens::hash(username));
                let (failures, locked_until_ms) =
                    self.fast.get(&key).await?.map_or((0, 0), |bytes| decode_unknown(&bytes));
                if locked_until_ms > now.timestamp_millis() {
                    let until = DateTime::from_timestamp_millis(locked_until_ms).unwrap_or(now);
                    return Err(Error::AccountLocked { retry_after_secs: seconds_until(until, now) });
                }
                let failures = failures.saturating_add(1);
                let until = self.due_lock(failures, now).map_or(0, |u| u.timestamp_millis());
                let mut record = Vec::with_capacity(12);
                record.extend_from_slice(&failures.to_be_bytes());
                record.extend_from_slice(&until.to_be_bytes());
                // Kept as long as the longest lock, so a hard lock lasts.
                let ttl = self.lockout.hard_lock.max(Duration::from_secs(86_400)) + Duration::from_secs(3600);
                self.fast.set(&key, &record, ttl).await?;
                Ok(())
            }
        }
    }

    /// One more failure in a known scope (a login/start, a bad code), and
    /// the lock it makes due.
    pub(super) async fn attempt_failed(&self, scope: &Scope, client: &ClientInfo, now: DateTime<Utc>) -> Result<()> {
        let (user_id, device_id, failures) = match scope {
            Scope::Account(user_id) => (*user_id, None, users::record_failure(&self.db, *user_id, now).await?),
            Scope::Device { user_id, device_id } => {
                (*user_id, Some(device_id.as_str()), devices::record_failure(&self.db, device_id).await?)
            }
            Scope::Unknown(_) => return Ok(()),
        };
        let failures = u32::try_from(failures).unwrap_or(0);
        let Some(until) = self.due_lock(failures, now) else { return Ok(()) };
        match device_id {
            None => {
                let reason = if failures >= self.lockout.hard_limit { HARD_LOCK } else { AUTOMATIC_LOCK };
                users::lock(&self.db, user_id, until, reason).await?;
            }
            Some(device_id) => devices::lock(&self.db, device_id, until).await?,
        }
        self.audit_lock(user_id, device_id, failures, until, client, now).await
    }

    /// A completed login ends the run of failures in its scope and lifts an
    /// automatic lock there (never an admin's).
    pub(super) async fn attempt_succeeded(&self, scope: &Scope) -> Result<()> {
        match scope {
            Scope::Account(user_id) => users::reset_failures(&self.db, *user_id).await?,
            Scope::Device { device_id, .. } => devices::reset_failures(&self.db, device_id).await?,
            Scope::Unknown(_) => {}
        }
        Ok(())
    }

    fn due_lock(&self, failures: u32, now: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.lockout.lock_for(failures).map(|d| now + chrono_duration(d))
    }

    async fn audit_lock(
        &self,
        user_id: Uuid,
        device_id: Option<&str>,
        failures: u32,
        until: DateTime<Utc>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let hard = failures >= self.lockout.hard_limit;
        if hard {
            tracing::warn!(user_id = %user_id, failures, "hard-locked after consecutive failures");
        }
        let reason = if hard { HARD_LOCK } else { AUTOMATIC_LOCK };
        let details = serde_json::json!({"failures": failures, "until": until, "reason": reason, "scope": if device_id.is_some() { "device" } else { "account" }});
        let event = self
            .audit
            .event(events::ACCOUNT_LOCK, client, now)
            .outcome("locked")
            .user(user_id)
            .device_opt(device_id)
            .sealed(details)
            .await?;
        self.audit.append(&[event]).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn locks_grow_and_cap() {
        let p = LockoutPolicy { threshold: 5, hard_limit: 100, hard_lock: Duration::from_secs(86400) };
        assert_eq!(p.lock_for(4), None);
        assert_eq!(p.lock_for(5), Some(Duration::from_secs(1)));
        assert_eq!(p.lock_for(6), Some(Duration::from_secs(5)));
        assert_eq!(p.lock_for(7), Some(Duration::from_secs(30)));
        assert_eq!(p.lock_for(11), Some(Duration::from_secs(3600)));
        assert_eq!(p.lock_for(99), Some(Duration::from_secs(3600)));
        assert_eq!(p.lock_for(100), Some(Duration::from_secs(86400)));
        assert_eq!(p.lock_for(1000), Some(Duration::from_secs(86400)));
    }

    #[test]
    fn unknown_name_record_decodes() {
        let mut b = 7u32.to_be_bytes().to_vec();
        b.extend_from_slice(&1234i64.to_be_bytes());
        assert_eq!(decode_unknown(&b), (7, 1234));
        assert_eq!(decode_unknown(b"junk"), (0, 0));
    }
}
