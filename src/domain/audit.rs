//! Audit events: one builder for every event the domain records.
//!
//! ```text
//! core.audit.event(SESSION_REVOKE, client, now)   // outcome "success"
//!     .user(user_id).session(session_id)          // optional parts
//!     .build()                                    // -> NewAuditEvent, appended in the change's transaction
//!     .sealed(json!({...})).await                 // or: with sealed details
//!     .append().await                             // or: appended on its own
//! ```
//!
//! The user appears under a pseudonym (a keyed hash of the id): the log never
//! names a person directly, survives account deletion unchanged (so the hash
//! chain stays intact), and can still be searched by anyone who knows the
//! user id. Details that name a person (an attempted username, say) are
//! sealed by the keyring before they are stored.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Result;
use super::core::ClientInfo;
use super::keyring::{Keyring, Owner, SealedColumn, Subkey};
use crate::store::audit::{self as store, NewAuditEvent};
use crate::store::db::Db;

/// Event names, stable for queries and alerting.
pub mod events {
    pub const REGISTRATION: &str = "registration";
    pub const LOGIN_SUCCESS: &str = "login.success";
    pub const LOGIN_FAILURE: &str = "login.failure";
    pub const SESSION_CREATE: &str = "session.create";
    pub const SESSION_REFRESH: &str = "session.refresh";
    pub const SESSION_REVOKE: &str = "session.revoke";
    pub const SESSION_EVICTED: &str = "session.evicted";
    pub const PASSWORD_CHANGE: &str = "password.change";
    pub const PASSWORD_RESET: &str = "password.reset";
    pub const RESET_ISSUED: &str = "password.reset_issued";
    pub const TOTP_REMOVED_BY_ADMIN: &str = "totp.removed_by_admin";
    pub const REFRESH_REUSE: &str = "refresh_token.reuse";
    pub const DEVICE_NEW: &str = "device.new";
    pub const DEVICE_REMOVE: &str = "device.remove";
    pub const DEVICE_MISMATCH: &str = "device.mismatch";
    pub const MFA_SUCCESS: &str = "mfa.success";
    pub const MFA_FAILURE: &str = "mfa.failure";
    pub const TOTP_ENROLL: &str = "totp.enroll";
    pub const TOTP_DISABLE: &str = "totp.disable";
    pub const RECOVERY_CODE_USED: &str = "recovery_code.used";
    pub const WEBAUTHN_REGISTER: &str = "webauthn.register";
    pub const WEBAUTHN_REMOVE: &str = "webauthn.remove";
    pub const WEBAUTHN_REMOVED_BY_ADMIN: &str = "webauthn.removed_by_admin";
    /// An assertion whose signature counter did not move forward: a cloned
    /// authenticator, or one assertion presented twice. Refused.
    pub const WEBAUTHN_COUNTER_REGRESSION: &str = "webauthn.counter_regression";
    /// A step-up: the session's authentication time moved to now.
    pub const SESSION_REAUTH: &str = "session.reauth";
    pub const ACCOUNT_LOCK: &str = "account.lock";
    pub const DEVICE_TRUST: &str = "device.trust";
    pub const ACCOUNT_UNLOCK: &str = "account.unlock";
    pub const ACCOUNT_DELETE: &str = "account.delete";
    pub const ADMIN_GRANT: &str = "admin.grant";
    pub const ADMIN_REVOKE: &str = "admin.revoke";
    pub const ADMIN_REVOKE_SESSIONS: &str = "admin.revoke_sessions";
    pub const KEY_ROTATE: &str = "key.rotate";
    pub const KEY_REENCRYPT: &str = "key.reencrypt";
}

pub const SUCCESS: &str = "success";
pub const FAILURE: &str = "failure";

/// Builds and appends audit events.
pub struct Auditor {
    db: Db,
    keyring: Arc<Keyring>,
    /// Keys the pseudonyms of users.
    pseudonym_key: Subkey,
}

impl Auditor {
    pub fn new(db: Db, keyring: Arc<Keyring>) -> Self {
        let pseudonym_key = keyring.subkey("audit-pseudonym");
        Self { db, keyring, pseudonym_key }
    }

    /// An event with outcome [`SUCCESS`]; add the parts that apply.
    pub fn event<'a>(&'a self, name: &'static str, client: &ClientInfo, now: DateTime<Utc>) -> Event<'a> {
        Event {
            auditor: self,
            row: NewAuditEvent {
                occurred_at: now,
                event: name,
                user_id: None,
                session_id: None,
                device_id: None,
                ip: client.ip_string(),
                outcome: SUCCESS,
                details: None,
            },
        }
    }

    /// One `session.revoke` event per revoked session id: what every
    /// revocation (logout, admin, device removal or block) records.
    pub fn revocations(
        &self,
        user_id: Uuid,
        device_id: Option<&str>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> impl Fn(&[Uuid]) -> Vec<NewAuditEvent> {
        let template = self.event(events::SESSION_REVOKE, client, now).user(user_id).device_opt(device_id).build();
        move |ids| ids.iter().map(|id| NewAuditEvent { session_id: Some(*id), ..template.clone() }).collect()
    }

    /// The pseudonymous user id audit rows carry.
    pub fn pseudonym(&self, user_id: Uuid) -> Uuid {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.pseudonym_key)
            .expect("HMAC takes keys of any length");
        mac.update(user_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }

    /// Appends events in a transaction of their own.
    pub async fn append(&self, events: &[NewAuditEvent]) -> Result<()> {
        store::append(&self.db, events).await?;
        Ok(())
    }
}

/// One event being built; see the module doc.
#[must_use = "an event is recorded only when built and appended"]
pub struct Event<'a> {
    auditor: &'a Auditor,
    row: NewAuditEvent,
}

impl Event<'_> {
    /// The user the event is about (stored as a pseudonym).
    pub fn user(mut self, user_id: Uuid) -> Self {
        self.row.user_id = Some(self.auditor.pseudonym(user_id));
        self
    }

    pub fn user_opt(self, user_id: Option<Uuid>) -> Self {
        match user_id {
            Some(id) => self.user(id),
            None => self,
        }
    }

    pub fn session(mut self, session_id: Uuid) -> Self {
        self.row.session_id = Some(session_id);
        self
    }

    pub fn session_opt(mut self, session_id: Option<Uuid>) -> Self {
        self.row.session_id = session_id;
        self
    }

    pub fn device(mut self, device_id: &str) -> Self {
        self.row.device_id = Some(device_id.to_owned());
        self
    }

    pub fn device_opt(self, device_id: Option<&str>) -> Self {
        match device_id {
            Some(id) => self.device(id),
            None => self,
        }
    }

    /// Any outcome but success (`failure`, `locked`, `blocked`, ...).
    pub fn outcome(mut self, outcome: &'static str) -> Self {
        self.row.outcome = outcome;
        self
    }

    /// The row, to append inside the transaction of the change it records.
    pub fn build(self) -> NewAuditEvent {
        self.row
    }

    /// The row with `details` (JSON) sealed by the keyring.
    pub async fn sealed(self, details: serde_json::Value) -> Result<NewAuditEvent> {
        let mut row = self.row;
        let now = row.occurred_at;
        let owner = row.user_id.map_or(Owner::System, Owner::User);
        let sealed =
            self.auditor.keyring.seal(SealedColumn::AuditDetails, owner, details.to_string().as_bytes(), now).await?;
        row.details = Some((sealed.key_id, sealed.ciphertext));
        Ok(row)
    }

    /// Appends the event on its own.
    pub async fn append(self) -> Result<()> {
        let auditor = self.auditor;
        auditor.append(&[self.build()]).await
    }
}
