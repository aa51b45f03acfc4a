//! Account lockout after consecutive failed authentications.
//!
//! ```text
//!            failure (password or second factor)
//!   open --------------------------------------> counting (n < threshold)
//!    ^                                              | n >= threshold
//!    | success (resets n, lifts an automatic lock)  v
//!    '------------------------------------- locked for d(n), growing:
//!                                           1 s, 5 s, 30 s, 1 min, 5 min, 15 min, 1 h, 1 h, ...
//!                                              | n >= hard limit (100)
//!                                              v
//!                                           hard-locked (24 h, or until an admin unlocks)
//! ```
//!
//! A lock is only revealed after a correct password (423 then), so it tells
//! a password guesser nothing; failures during a lock still count and
//! extend it, and a correct guess during a lock is useless. At most
//! `hard limit` consecutive failures are ever possible before a hard lock
//! (NIST SP 800-63B §5.2.2). A device the user or an admin marked trusted is
//! not locked out by an automatic lock, which someone else's guessing can
//! cause; an admin's lock applies to every device.

use std::time::Duration;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::audit::events;
use super::core::{ClientInfo, Core};
use super::{Error, Result};
use crate::store::users::{self, AUTOMATIC_LOCK, HARD_LOCK};

/// Lock lengths after the threshold, in seconds; the last repeats.
const STEPS: [u64; 7] = [1, 5, 30, 60, 300, 900, 3600];

#[derive(Debug, Clone, Copy)]
pub struct LockoutPolicy {
    pub threshold: u32,
    pub hard_limit: u32,
    pub hard_lock: Duration,
}

impl LockoutPolicy {
    /// How long `failures` consecutive failures lock the account.
    pub fn lock_for(&self, failures: u32) -> Option<Duration> {
        if failures >= self.hard_limit {
            return Some(self.hard_lock);
        }
        let over = failures.checked_sub(self.threshold)?;
        let step = STEPS[usize::try_from(over).unwrap_or(usize::MAX).min(STEPS.len() - 1)];
        Some(Duration::from_secs(step))
    }
}

impl Core {
    /// Records a failed authentication of a known user and locks when due.
    pub(crate) async fn authentication_failed(
        &self,
        user_id: Uuid,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let failures = u32::try_from(users::record_failure(&self.db, user_id, now).await?).unwrap_or(0);
        if let Some(duration) = self.lockout.lock_for(failures) {
            let until = now + chrono::Duration::from_std(duration).unwrap_or(chrono::Duration::MAX);
            let reason = if failures >= self.lockout.hard_limit { HARD_LOCK } else { AUTOMATIC_LOCK };
            users::lock(&self.db, user_id, until, reason).await?;
            let event = self
                .audit
                .event(events::ACCOUNT_LOCK, client, now)
                .outcome("locked")
                .user(user_id)
                .sealed(serde_json::json!({"failures": failures, "until": until, "reason": reason}))
                .await?;
            self.audit.append(&[event]).await?;
            if failures == self.lockout.hard_limit {
                tracing::warn!(user_id = %user_id, failures, "account hard-locked after consecutive failures");
            }
        }
        Ok(())
    }

    /// After a correct password or code: refuses a locked account, unless an
    /// automatic lock meets a trusted device.
    pub(crate) async fn ensure_not_locked(
        &self,
        user_id: Uuid,
        trusted_device: bool,
        now: DateTime<Utc>,
    ) -> Result<users::UserRecord> {
        let user = users::find(&self.db, user_id).await?.ok_or(Error::InvalidCredentials)?;
        match user.locked_until {
            Some(until) if until > now => {
                if trusted_device && user.lock_reason.as_deref() == Some(AUTOMATIC_LOCK) {
                    Ok(user)
                } else {
                    Err(Error::AccountLocked)
                }
            }
            _ => Ok(user),
        }
    }

    /// A success ends a run of failures (a database write only when there
    /// was one).
    pub(crate) async fn authentication_succeeded(&self, user: &users::UserRecord) -> Result<()> {
        if user.failed_attempts != 0 || matches!(user.lock_reason.as_deref(), Some(AUTOMATIC_LOCK | HARD_LOCK)) {
            users::reset_failures(&self.db, user.id).await?;
        }
        Ok(())
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
