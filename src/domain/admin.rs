//! Administration: users, their sessions and devices, device trust, locks,
//! deletion, the audit log and the keyring. Only sessions of users with the
//! `admin` role pass [`Core::require_admin`], and only at aal2 when that
//! admin has TOTP on. The first admin is made with the CLI
//! (`latchkey admin grant USERNAME`): there are no default accounts.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::audit::events;
use super::core::{ClientInfo, Core};
use super::devices::DeviceRecord;
use super::keyring::{KeyringStatus, Owner, ReencryptReport, Sealed, SealedColumn};
use super::sessions::CurrentSession;
use super::sessions::SessionRecord;
use super::states::{Aal, Trust};
use super::username::Username;
use super::{Error, Result};
use crate::store::admin as store;
use crate::store::devices;
use crate::store::sessions::{self as session_store, RevokeScope};
use crate::store::users;

/// Handed up to the HTTP layer as the store reads it.
pub use crate::store::admin::{AuditFilter, UserSummary};

pub const ADMIN_ROLE: &str = "admin";

/// "Until an admin unlocks": the last second of year 9999.
fn forever() -> DateTime<Utc> {
    DateTime::from_timestamp(253_402_300_799, 0).unwrap_or_default()
}
pub const MAX_PAGE: u64 = 200;

/// One user with counts.
#[derive(Debug, Clone)]
pub struct UserDetail {
    pub summary: UserSummary,
    pub active_sessions: u64,
    pub devices: u64,
}

/// One audit row as an admin sees it (details opened).
#[derive(Debug, Clone)]
pub struct AuditEntry {
    pub id: i64,
    pub occurred_at: DateTime<Utc>,
    pub event: String,
    pub user_ref: Option<Uuid>,
    pub session_id: Option<Uuid>,
    pub device_id: Option<String>,
    pub ip: Option<String>,
    pub outcome: String,
    pub details: Option<serde_json::Value>,
}

impl Core {
    /// Refuses anyone but an admin (at aal2 when the admin has TOTP on).
    pub async fn require_admin(&self, current: &CurrentSession) -> Result<()> {
        if !users::roles(&self.db, current.user_id).await?.iter().any(|r| r == ADMIN_ROLE) {
            return Err(Error::Forbidden);
        }
        if current.aal < Aal::Aal2 && self.has_second_factor(current.user_id).await? {
            return Err(Error::Forbidden);
        }
        Ok(())
    }

    /// `latchkey admin grant|revoke USERNAME`.
    #[tracing::instrument(skip_all)]
    pub async fn set_admin(&self, username: &str, grant: bool, now: DateTime<Utc>) -> Result<bool> {
        let username = Username::parse(username)?;
        let user = users::find_by_username(&self.db, username.as_str()).await?.ok_or(Error::NotFound)?;
        let name = if grant { events::ADMIN_GRANT } else { events::ADMIN_REVOKE };
        let event = self
            .audit
            .event(name, &ClientInfo::default(), now)
            .user(user.id)
            .sealed(serde_json::json!({"role": ADMIN_ROLE, "by": "cli"}))
            .await?;
        Ok(store::set_role(&self.db, user.id, ADMIN_ROLE, grant, &[event]).await?)
    }

    /// A page of users; `prefix` (a username prefix, normalized like
    /// usernames) narrows it.
    pub async fn admin_list_users(
        &self,
        after: Option<Uuid>,
        limit: u64,
        prefix: Option<&str>,
    ) -> Result<Vec<UserSummary>> {
        let prefix = prefix.filter(|p| !p.is_empty()).map(Username::parse).transpose()?;
        let prefix = prefix.as_ref().map(Username::as_str);
        Ok(store::users_page(&self.db, after, limit.clamp(1, MAX_PAGE), prefix).await?)
    }

    /// The caller's own account: name, roles, second factor.
    pub async fn account_profile(&self, current: &CurrentSession) -> Result<UserSummary> {
        let user = users::find(&self.db, current.user_id).await?.ok_or(Error::Unauthorized)?;
        store::summarize(&self.db, vec![user]).await?.pop().ok_or(Error::Unauthorized)
    }

    pub async fn admin_get_user(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<UserDetail> {
        let user = users::find(&self.db, user_id).await?.ok_or(Error::NotFound)?;
        let summary = store::summarize(&self.db, vec![user]).await?.pop().ok_or(Error::NotFound)?;
        let (active_sessions, devices) = store::counts(&self.db, user_id, now).await?;
        Ok(UserDetail { summary, active_sessions, devices })
    }

    pub async fn admin_user_sessions(&self, user_id: Uuid, now: DateTime<Utc>) -> Result<Vec<SessionRecord>> {
        users::find(&self.db, user_id).await?.ok_or(Error::NotFound)?;
        Ok(session_store::list_active(&self.db, user_id, now).await?)
    }

    pub async fn admin_user_devices(&self, user_id: Uuid) -> Result<Vec<DeviceRecord>> {
        users::find(&self.db, user_id).await?.ok_or(Error::NotFound)?;
        Ok(devices::list(&self.db, user_id).await?)
    }

    /// Revokes every session of a user.
    #[tracing::instrument(skip_all, fields(admin_id = %admin.user_id))]
    pub async fn admin_revoke_sessions(
        &self,
        admin: &CurrentSession,
        user_id: Uuid,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        self.require_recent_auth(admin, now)?;
        users::find(&self.db, user_id).await?.ok_or(Error::NotFound)?;
        let by_admin = self.admin_event(events::ADMIN_REVOKE_SESSIONS, admin, Some(user_id), None, client, now).await?;
        self.revoke(RevokeScope::All { user_id }, "revoked_by_admin", vec![by_admin], client, now).await
    }

    /// Sets a device's trust; blocking revokes its sessions at once (and
    /// its logins are refused from then on).
    #[tracing::instrument(skip_all, fields(admin_id = %admin.user_id))]
    pub async fn admin_set_device_trust(
        &self,
        admin: &CurrentSession,
        device_id: &str,
        trust: Trust,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.require_recent_auth(admin, now)?;
        let device = devices::find_any(&self.db, device_id).await?.ok_or(Error::NotFound)?;
        let details = serde_json::json!({"from": device.trust, "to": trust, "by": "admin", "admin": self.audit.pseudonym(admin.user_id)});
        let event = self
            .audit
            .event(events::DEVICE_TRUST, client, now)
            .user(device.user_id)
            .session(admin.session_id)
            .device(device_id)
            .sealed(details)
            .await?;
        devices::set_trust(&self.db, device.user_id, device_id, trust, false, &[event]).await?;
        if trust == Trust::Blocked {
            let scope = RevokeScope::Device { user_id: device.user_id, device_id: device_id.to_owned() };
            self.revoke(scope, "device_blocked", Vec::new(), client, now).await?;
        }
        Ok(())
    }

    /// Locks an account (every device, trusted or not) and ends its sessions.
    #[tracing::instrument(skip_all, fields(admin_id = %admin.user_id))]
    pub async fn admin_lock(
        &self,
        admin: &CurrentSession,
        user_id: Uuid,
        reason: &str,
        until: Option<DateTime<Utc>>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.require_recent_auth(admin, now)?;
        if reason.trim().is_empty() || reason.chars().count() > 200 {
            return Err(Error::InvalidRequest("reason must be 1 to 200 characters".into()));
        }
        if until.is_some_and(|u| u <= now) {
            return Err(Error::InvalidRequest("until must be in the future".into()));
        }
        users::find(&self.db, user_id).await?.ok_or(Error::NotFound)?;
        // No end given: locked until an admin unlocks.
        let until = until.unwrap_or_else(forever);
        users::lock(&self.db, user_id, until, &format!("admin: {reason}")).await?;
        let event = self.admin_event(events::ACCOUNT_LOCK, admin, Some(user_id), Some(reason), client, now).await?;
        self.audit.append(&[event]).await?;
        self.admin_revoke_sessions(admin, user_id, client, now).await?;
        Ok(())
    }

    #[tracing::instrument(skip_all, fields(admin_id = %admin.user_id))]
    pub async fn admin_unlock(
        &self,
        admin: &CurrentSession,
        user_id: Uuid,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.require_recent_auth(admin, now)?;
        users::find(&self.db, user_id).await?.ok_or(Error::NotFound)?;
        let event = self.admin_event(events::ACCOUNT_UNLOCK, admin, Some(user_id), None, client, now).await?;
        store::unlock(&self.db, user_id, &[event]).await?;
        Ok(())
    }

    /// Deletes a user and every row and cache entry of theirs.
    #[tracing::instrument(skip_all, fields(admin_id = %admin.user_id))]
    pub async fn admin_delete_user(
        &self,
        admin: &CurrentSession,
        user_id: Uuid,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.require_recent_auth(admin, now)?;
        let event = self.admin_event(events::ACCOUNT_DELETE, admin, Some(user_id), None, client, now).await?;
        self.delete_user(user_id, event).await
    }

    /// The caller deletes their own account (aal2 when TOTP is on).
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn delete_own_account(
        &self,
        current: &CurrentSession,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.require_recent_auth(current, now)?;
        if current.aal < Aal::Aal2 && self.has_second_factor(current.user_id).await? {
            return Err(Error::Forbidden);
        }
        let event = self
            .audit
            .event(events::ACCOUNT_DELETE, client, now)
            .user(current.user_id)
            .session(current.session_id)
            .build();
        self.delete_user(current.user_id, event).await
    }

    async fn delete_user(&self, user_id: Uuid, event: crate::store::audit::NewAuditEvent) -> Result<()> {
        let sessions = store::delete_user(&self.db, user_id, &[event]).await?.ok_or(Error::NotFound)?;
        self.session_cache.revoked(&sessions).await;
        tracing::info!(user_id = %user_id, "deleted a user and all their data");
        Ok(())
    }

    /// An event an admin caused on `user_id`, the admin in sealed details.
    pub(super) async fn admin_event(
        &self,
        name: &'static str,
        admin: &CurrentSession,
        user_id: Option<Uuid>,
        reason: Option<&str>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<crate::store::audit::NewAuditEvent> {
        let details =
            serde_json::json!({"by": "admin", "admin": self.audit.pseudonym(admin.user_id), "reason": reason});
        self.audit.event(name, client, now).user_opt(user_id).session(admin.session_id).sealed(details).await
    }

    /// The audit log, newest first. `user_id` is the real id; rows hold its
    /// pseudonym.
    pub async fn admin_audit(
        &self,
        user_id: Option<Uuid>,
        mut filter: AuditFilter,
        limit: u64,
    ) -> Result<Vec<AuditEntry>> {
        filter.user_ref = user_id.map(|id| self.audit.pseudonym(id));
        let rows = store::audit_page(&self.db, &filter, limit.clamp(1, MAX_PAGE)).await?;
        let mut out = Vec::with_capacity(rows.len());
        for row in rows {
            let details = match (row.details_key_id, &row.details) {
                (Some(key_id), Some(ciphertext)) => {
                    let owner = row.user_id.map_or(Owner::System, Owner::User);
                    let sealed = Sealed { key_id, ciphertext: ciphertext.clone() };
                    match self.keyring.open_sealed(SealedColumn::AuditDetails, owner, &sealed).await {
                        Ok(plain) => serde_json::from_slice(&plain).ok(),
                        // One unreadable row must not hide the page.
                        Err(e) => {
                            tracing::error!(audit_id = row.id, error = %e, "audit details do not open");
                            Some(serde_json::json!({"unreadable": true}))
                        }
                    }
                }
                _ => None,
            };
            out.push(AuditEntry {
                id: row.id,
                occurred_at: row.occurred_at,
                event: row.event,
                user_ref: row.user_id,
                session_id: row.session_id,
                device_id: row.device_id,
                ip: row.ip,
                outcome: row.outcome,
                details,
            });
        }
        Ok(out)
    }

    pub async fn admin_keys(&self, now: DateTime<Utc>) -> Result<KeyringStatus> {
        self.keyring.status(now).await
    }

    #[tracing::instrument(skip_all, fields(admin_id = %admin.user_id))]
    pub async fn admin_rotate_keys(
        &self,
        admin: &CurrentSession,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<Uuid> {
        self.require_recent_auth(admin, now)?;
        let key_id = self.keyring.rotate(now).await?;
        let event = self.admin_event(events::KEY_ROTATE, admin, None, None, client, now).await?;
        self.audit.append(&[event]).await?;
        Ok(key_id)
    }
}

impl Core {
    /// A rotation asked for outside the admin API (the CLI), audited.
    #[tracing::instrument(skip_all)]
    pub async fn rotate_keys(&self, by: &'static str, now: DateTime<Utc>) -> Result<Uuid> {
        let key_id = self.keyring.rotate(now).await?;
        self.audit_key_event(events::KEY_ROTATE, serde_json::json!({"by": by, "key_id": key_id}), now).await?;
        Ok(key_id)
    }

    /// Moves rows onto the active key and retires unused keys, audited when
    /// anything moved.
    #[tracing::instrument(skip_all)]
    pub async fn reencrypt_keys(&self, batch: u64, by: &'static str, now: DateTime<Utc>) -> Result<ReencryptReport> {
        let report = self.keyring.reencrypt(batch, now).await?;
        if report.moved > 0 || report.failed > 0 || !report.retired.is_empty() {
            let details = serde_json::json!({
                "by": by, "moved": report.moved, "unreadable": report.failed, "retired": report.retired,
            });
            self.audit_key_event(events::KEY_REENCRYPT, details, now).await?;
        }
        Ok(report)
    }

    /// The background job: rotation when the policy says so, then
    /// re-encryption.
    #[tracing::instrument(skip_all)]
    pub async fn keyring_maintenance(&self, batch: u64, now: DateTime<Utc>) -> Result<()> {
        if let Err(e) = self.signing_key_maintenance(now).await {
            tracing::warn!(error = %e, "signing-key maintenance failed; it resumes on the next run");
        }
        if let Some(key_id) = self.keyring.rotate_if_due(now).await? {
            self.audit_key_event(events::KEY_ROTATE, serde_json::json!({"by": "policy", "key_id": key_id}), now)
                .await?;
        }
        self.reencrypt_keys(batch, "background job", now).await?;
        Ok(())
    }

    async fn audit_key_event(&self, name: &'static str, details: serde_json::Value, now: DateTime<Utc>) -> Result<()> {
        let event = self.audit.event(name, &ClientInfo::default(), now).sealed(details).await?;
        self.audit.append(&[event]).await?;
        Ok(())
    }
}
