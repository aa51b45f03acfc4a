//! Building audit events. Details that name a person (an attempted
//! username, say) are sealed by the keyring before they are stored.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::Result;
use super::core::{ClientInfo, Core};
use super::keyring::{Owner, SealedColumn};
use crate::store::audit::NewAuditEvent;

/// Event names, stable for queries and alerting.
pub mod events {
    pub const REGISTRATION: &str = "registration";
    pub const LOGIN_SUCCESS: &str = "login.success";
    pub const LOGIN_FAILURE: &str = "login.failure";
    pub const SESSION_CREATE: &str = "session.create";
    pub const SESSION_REFRESH: &str = "session.refresh";
    pub const SESSION_REVOKE: &str = "session.revoke";
    pub const REFRESH_REUSE: &str = "refresh_token.reuse";
    pub const DEVICE_NEW: &str = "device.new";
    pub const DEVICE_REMOVE: &str = "device.remove";
    pub const MFA_SUCCESS: &str = "mfa.success";
    pub const MFA_FAILURE: &str = "mfa.failure";
    pub const TOTP_ENROLL: &str = "totp.enroll";
    pub const TOTP_DISABLE: &str = "totp.disable";
    pub const RECOVERY_CODE_USED: &str = "recovery_code.used";
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

impl Core {
    /// An audit event. The user appears under a pseudonym (a keyed hash of
    /// the id): the log never names a person directly, survives account
    /// deletion unchanged (so the hash chain stays intact), and can still be
    /// searched by anyone who knows the user id.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn audit_event(
        &self,
        name: &'static str,
        outcome: &'static str,
        user_id: Option<Uuid>,
        session_id: Option<Uuid>,
        device_id: Option<&str>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> NewAuditEvent {
        NewAuditEvent {
            occurred_at: now,
            event: name,
            user_id: user_id.map(|id| self.pseudonym(id)),
            session_id,
            device_id: device_id.map(str::to_owned),
            ip: client.ip_string(),
            outcome,
            details: None,
        }
    }

    /// The pseudonymous user id audit rows carry.
    pub fn pseudonym(&self, user_id: Uuid) -> Uuid {
        use hmac::Mac as _;
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.audit_key)
            .expect("HMAC takes keys of any length");
        mac.update(user_id.as_bytes());
        let digest = mac.finalize().into_bytes();
        let mut bytes = [0u8; 16];
        bytes.copy_from_slice(&digest[..16]);
        uuid::Builder::from_custom_bytes(bytes).into_uuid()
    }

    /// Seals `details` (JSON) into the event.
    pub(crate) async fn with_details(
        &self,
        mut event: NewAuditEvent,
        details: serde_json::Value,
        now: DateTime<Utc>,
    ) -> Result<NewAuditEvent> {
        let owner = event.user_id.map_or(Owner::System, Owner::User);
        let sealed = self.keyring.seal(SealedColumn::AuditDetails, owner, details.to_string().as_bytes(), now).await?;
        event.details = Some((sealed.key_id, sealed.ciphertext));
        Ok(event)
    }
}
