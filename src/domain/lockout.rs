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
use crate::store::attempts::{Counted, LockPlan};
use crate::store::fast::{AttemptOutcome, AttemptPlan};
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

impl Core {
    /// login/start: refuses a locked scope (423 with Retry-After); otherwise
    /// counts this attempt as a failure until the login completes. Check
    /// and count are one atomic step in every scope.
    pub(super) async fn begin_attempt(
        &self,
        scope: &Scope,
        user: Option<&users::UserRecord>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        // An admin's lock applies to every scope.
        if let Some(user) = user
            && let Some(until) = user.locked_until.filter(|u| *u > now)
            && is_admin_lock(user.lock_reason.as_deref())
        {
            return Err(Error::AccountLocked { retry_after_secs: seconds_until(until, now) });
        }
        self.count_attempt(scope, true, client, now).await
    }

    /// The second factor of a login whose password was right: refused while
    /// an admin's lock or a hard lock is in force in its scope, so MFA
    /// tokens gathered before a lock give no further guesses after it.
    pub(super) async fn second_factor_admitted(&self, scope: &Scope, now: DateTime<Utc>) -> Result<()> {
        let until = match scope {
            Scope::Account(user_id) => users::find(&self.db, *user_id)
                .await?
                .filter(|u| u.lock_reason.as_deref() != Some(AUTOMATIC_LOCK))
                .and_then(|u| u.locked_until),
            Scope::Device { user_id, device_id } => {
                let admin = users::find(&self.db, *user_id)
                    .await?
                    .filter(|u| is_admin_lock(u.lock_reason.as_deref()))
                    .and_then(|u| u.locked_until);
                let hard = devices::find(&self.db, *user_id, device_id)
                    .await?
                    .filter(|d| d.failed_attempts >= i32::try_from(self.lockout.hard_limit).unwrap_or(i32::MAX))
                    .and_then(|d| d.locked_until);
                admin.max(hard)
            }
            Scope::Unknown(_) => None,
        };
        match until.filter(|u| *u > now) {
            Some(until) => Err(Error::AccountLocked { retry_after_secs: seconds_until(until, now) }),
            None => Ok(()),
        }
    }

    /// A bad second-factor code: one more failure in the scope (counted even
    /// while the scope is locked, so the lock grows).
    pub(super) async fn attempt_failed(&self, scope: &Scope, client: &ClientInfo, now: DateTime<Utc>) -> Result<()> {
        self.count_attempt(scope, false, client, now).await
    }

    async fn count_attempt(
        &self,
        scope: &Scope,
        only_if_unlocked: bool,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let plan = self.lock_plan(now);
        let (user_id, device_id, counted) = match scope {
            Scope::Account(user_id) => {
                (*user_id, None, users::count_failure(&self.db, *user_id, &plan, only_if_unlocked).await?)
            }
            Scope::Device { user_id, device_id } => (
                *user_id,
                Some(device_id.as_str()),
                devices::count_failure(&self.db, *user_id, device_id, &plan, only_if_unlocked).await?,
            ),
            Scope::Unknown(username) => {
                let key = self.keys.tagged("attempts", &self.name_hash(username));
                let fast_plan = AttemptPlan {
                    now_ms: now.timestamp_millis(),
                    threshold: self.lockout.threshold,
                    hard_limit: self.lockout.hard_limit,
                    step_ends_ms: plan.step_ends.iter().map(DateTime::timestamp_millis).collect(),
                    hard_end_ms: plan.hard_end.timestamp_millis(),
                    ttl: self.decay(),
                };
                return match self.fast.attempt(&key, &fast_plan).await? {
                    AttemptOutcome::Locked { until_ms } => {
                        let until = DateTime::from_timestamp_millis(until_ms).unwrap_or(now);
                        Err(Error::AccountLocked { retry_after_secs: seconds_until(until, now) })
                    }
                    AttemptOutcome::Counted { .. } => Ok(()),
                };
            }
        };
        match counted {
            Counted::Yes { failures, locked_until: Some(until), hard } => {
                if hard {
                    tracing::warn!(user_id = %user_id, failures, "hard-locked after consecutive failures");
                }
                self.audit_lock(user_id, device_id, failures, until, client, now).await
            }
            Counted::Yes { locked_until: None, .. } | Counted::Missing => Ok(()),
            Counted::Locked => {
                let until = match device_id {
                    None => users::find(&self.db, user_id).await?.and_then(|u| u.locked_until),
                    Some(id) => devices::find(&self.db, user_id, id).await?.and_then(|d| d.locked_until),
                };
                Err(Error::AccountLocked { retry_after_secs: until.map_or(1, |u| seconds_until(u, now)) })
            }
        }
    }

    /// The schedule at `now`, every possible lock end computed.
    fn lock_plan(&self, now: DateTime<Utc>) -> LockPlan {
        let to_i32 = |n: u32| i32::try_from(n).unwrap_or(i32::MAX);
        LockPlan {
            now,
            decay_before: now - chrono_duration(self.decay()),
            threshold: to_i32(self.lockout.threshold),
            hard_limit: to_i32(self.lockout.hard_limit),
            // The schedule of `lock_for`, one end per step (the last repeats).
            step_ends: (self.lockout.threshold..)
                .take(STEPS.len())
                .map(|n| now + chrono_duration(self.lockout.lock_for(n).unwrap_or(self.lockout.hard_lock)))
                .collect(),
            hard_end: now + chrono_duration(self.lockout.hard_lock),
        }
    }

    /// A run of failures whose last one is older than this starts again:
    /// the same for accounts, devices and unknown names (whose fast-store
    /// record expires after it), so no difference tells them apart.
    fn decay(&self) -> Duration {
        self.lockout.hard_lock.max(Duration::from_secs(86_400)) + Duration::from_secs(3600)
    }

    async fn audit_lock(
        &self,
        user_id: Uuid,
        device_id: Option<&str>,
        failures: i32,
        until: DateTime<Utc>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let hard = i64::from(failures) >= i64::from(self.lockout.hard_limit);
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
}
