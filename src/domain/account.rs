//! The account lifecycle: password change, reset without email, the
//! user's own security timeline.
//!
//! ```text
//! change: session (step-up; aal2 with TOTP on)
//!   password/start  (registration_request) --> OPRF answer; marker sealed under the session
//!   password/finish (registration_record)  --> record replaced, other sessions revoked
//! reset: an admin issues lk_t_ (single use, reset_token_lifetime), handed over out of band
//!   reset/start  (reset_token, registration_request) --> OPRF answer; marker sealed under the token
//!   reset/finish (reset_token, registration_record)  --> token spent, record replaced,
//!                                                        every session revoked
//! ```
//!
//! Both run OPAQUE registration again under the same credential identifier
//! (the normalized username), so the new record is what login uses next.
//! The old password stops working the moment the record is replaced. A bad,
//! spent or expired reset token gets one answer whatever the cause.

use std::time::Duration;

use chrono::{DateTime, Utc};
use opaque_ke::{RegistrationRequest, RegistrationUpload, ServerRegistration};
use uuid::Uuid;

use super::audit::events;
use super::core::{ClientInfo, Core};
use super::keyring::{Owner, SealedColumn};
use super::messages::{self, REGISTRATION_RECORD_LEN, REGISTRATION_REQUEST_LEN};
use super::opaque::Suite;
use super::ratelimit::Action;
use super::sessions::CurrentSession;
use super::states::Aal;
use super::tokens::{self, TokenKind};
use super::{Error, Result};
use crate::store::FastStore as _;
use crate::store::account::{self as store, Replacement};
use crate::store::sessions::RevokeScope;
use crate::store::{totp, users};

/// How long a started change or reset may take to finish (the client runs
/// Argon2id in between).
const PENDING_TTL: Duration = Duration::from_secs(300);
pub const MAX_EVENTS_PAGE: u64 = 100;
/// Starts one reset token allows (a client that fails midway retries).
const MAX_RESET_STARTS: i64 = 5;

/// One entry of the user's security timeline.
#[derive(Debug, Clone)]
pub struct AccountEvent {
    pub id: i64,
    pub event: String,
    pub at: DateTime<Utc>,
    pub ip: Option<String>,
    pub device_id: Option<String>,
    pub outcome: String,
}

impl Core {
    /// Starts a password change: step-up, and aal2 when TOTP is on.
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn password_change_start(
        &self,
        current: &CurrentSession,
        request: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<String> {
        self.require_recent_auth(current, now)?;
        self.require_aal2_if_second_factor(current).await?;
        // Each start evaluates the OPRF under the user's key: a stolen session
        // must not get an unlimited offline oracle for the current password.
        self.enforce(Action::Registration, client, Some(&current.username)).await?;
        let response = self.evaluate(&current.username, request)?;
        let key = self.keys.tagged("pwchange", &current.session_id.to_string());
        self.put_marker(&key, now).await?;
        Ok(response)
    }

    /// Finishes a password change: the new record replaces the old one and
    /// every other session of the user is revoked (the calling one stays).
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn password_change_finish(
        &self,
        current: &CurrentSession,
        record: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.require_recent_auth(current, now)?;
        self.require_aal2_if_second_factor(current).await?;
        let record = parse_record(record)?;
        let key = self.keys.tagged("pwchange", &current.session_id.to_string());
        if !self.take_marker(&key, now).await? {
            return Err(Error::InvalidRequest("no password change was started in this session (or it expired)".into()));
        }
        let scope = RevokeScope::AllExcept { user_id: current.user_id, keep: current.session_id };
        let fresh_after = now - chrono::Duration::from_std(self.sessions.reauth_window).unwrap_or_default();
        let replacement = Replacement {
            user_id: current.user_id,
            sealed_record: Default::default(),
            scope: &scope,
            reset_token: None,
            caller: Some((current.session_id, fresh_after)),
            reason: "password_change",
        };
        let change = self
            .audit
            .event(events::PASSWORD_CHANGE, client, now)
            .user(current.user_id)
            .session(current.session_id)
            .device_opt(current.device_id.as_deref())
            .build();
        // Refused when this session was revoked (or went stale) while the
        // client worked: a reset or another change since wins.
        self.replace_credential(&record, replacement, change, client, now).await?.ok_or(Error::ReauthenticationRequired)
    }

    /// An admin issues a single-use reset token for a user (handed over out
    /// of band). Returns the token and when it expires.
    #[tracing::instrument(skip_all, fields(admin_id = %admin.user_id))]
    pub async fn admin_issue_reset(
        &self,
        admin: &CurrentSession,
        user_id: Uuid,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>)> {
        self.require_recent_auth(admin, now)?;
        users::find(&self.db, user_id).await?.ok_or(Error::NotFound)?;
        let event = self.admin_event(events::RESET_ISSUED, admin, Some(user_id), None, client, now).await?;
        self.issue_reset(user_id, event, now).await
    }

    /// `latchkey admin reset USERNAME`.
    pub async fn issue_reset_for(&self, username: &str, now: DateTime<Utc>) -> Result<(String, DateTime<Utc>)> {
        let username = super::username::Username::parse(username)?;
        let user = users::find_by_username(&self.db, username.as_str()).await?.ok_or(Error::NotFound)?;
        let event = self
            .audit
            .event(events::RESET_ISSUED, &ClientInfo::default(), now)
            .user(user.id)
            .sealed(serde_json::json!({"by": "cli"}))
            .await?;
        self.issue_reset(user.id, event, now).await
    }

    async fn issue_reset(
        &self,
        user_id: Uuid,
        event: crate::store::audit::NewAuditEvent,
        now: DateTime<Utc>,
    ) -> Result<(String, DateTime<Utc>)> {
        let token = tokens::generate(TokenKind::Reset);
        let expires_at = now + chrono::Duration::from_std(self.sessions.reset_token_lifetime).unwrap_or_default();
        store::issue_reset(&self.db, user_id, &token.hash, now, expires_at, &[event]).await?;
        Ok((token.value, expires_at))
    }

    /// Starts a reset with a reset token (no session).
    #[tracing::instrument(skip_all)]
    pub async fn reset_start(
        &self,
        reset_token: &str,
        request: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<String> {
        self.enforce(Action::Registration, client, None).await?;
        let (hash, _, user) = self.valid_reset(reset_token, now).await?;
        // Limited per user, and a token starts at most a few times: a
        // leaked token is no lasting oracle for the current password.
        self.enforce_user(Action::Registration, client, &user.username).await?;
        let starts =
            self.fast.incr(&self.keys.tagged("reset_starts", &hash), 1, self.sessions.reset_token_lifetime).await?;
        if starts > MAX_RESET_STARTS {
            return Err(Error::InvalidCredentials);
        }
        let response = self.evaluate(&user.username, request)?;
        self.put_marker(&self.keys.tagged("reset", &hash), now).await?;
        Ok(response)
    }

    /// Finishes a reset: the token is spent, the record replaced, every
    /// session of the user revoked.
    #[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty))]
    pub async fn reset_finish(
        &self,
        reset_token: &str,
        record: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.enforce(Action::Registration, client, None).await?;
        let record = parse_record(record)?;
        let (hash, token_id, user) = self.valid_reset(reset_token, now).await?;
        tracing::Span::current().record("user_id", tracing::field::display(user.id));
        if !self.take_marker(&self.keys.tagged("reset", &hash), now).await? {
            return Err(Error::InvalidRequest("no reset was started with this token (or it expired)".into()));
        }
        let reset = self.audit.event(events::PASSWORD_RESET, client, now).user(user.id).build();
        let scope = RevokeScope::All { user_id: user.id };
        let replacement = Replacement {
            user_id: user.id,
            sealed_record: Default::default(),
            scope: &scope,
            reset_token: Some(token_id),
            caller: None,
            reason: "password_reset",
        };
        self.replace_credential(&record, replacement, reset, client, now).await?.ok_or(Error::InvalidCredentials)
    }

    /// An admin removes a user's lost second factor.
    #[tracing::instrument(skip_all, fields(admin_id = %admin.user_id))]
    pub async fn admin_remove_totp(
        &self,
        admin: &CurrentSession,
        user_id: Uuid,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        self.require_recent_auth(admin, now)?;
        users::find(&self.db, user_id).await?.ok_or(Error::NotFound)?;
        if totp::find(&self.db, user_id).await?.is_none() {
            return Err(Error::NotFound);
        }
        let event = self.admin_event(events::TOTP_REMOVED_BY_ADMIN, admin, Some(user_id), None, client, now).await?;
        totp::disable(&self.db, user_id, &[event]).await?;
        Ok(())
    }

    /// The caller's own audit events, newest first, a page after `before`.
    pub async fn account_events(
        &self,
        current: &CurrentSession,
        before: Option<i64>,
        limit: u64,
    ) -> Result<Vec<AccountEvent>> {
        let filter = crate::store::admin::AuditFilter {
            user_ref: Some(self.audit.pseudonym(current.user_id)),
            event: None,
            since: None,
            until: None,
            before_id: before,
        };
        let rows = crate::store::admin::audit_page(&self.db, &filter, limit.clamp(1, MAX_EVENTS_PAGE)).await?;
        Ok(rows
            .into_iter()
            .map(|r| AccountEvent {
                id: r.id,
                event: r.event,
                at: r.occurred_at,
                ip: r.ip,
                device_id: r.device_id,
                outcome: r.outcome,
            })
            .collect())
    }

    /// A user with a second factor changes sensitive things only from a
    /// session that proved one (aal2).
    pub(super) async fn require_aal2_if_second_factor(&self, current: &CurrentSession) -> Result<()> {
        if current.aal < Aal::Aal2 && self.has_second_factor(current.user_id).await? {
            return Err(Error::Forbidden);
        }
        Ok(())
    }

    /// The OPRF answer to a registration request for `username` (the
    /// credential identifier login uses).
    fn evaluate(&self, username: &str, request: &str) -> Result<String> {
        let bytes = messages::decode("registration_request", request, REGISTRATION_REQUEST_LEN)?;
        let request = RegistrationRequest::<Suite>::deserialize(&bytes)
            .map_err(|_| Error::InvalidRequest("registration_request is not a valid group element".into()))?;
        let start = ServerRegistration::<Suite>::start(&self.setup, request, username.as_bytes())
            .map_err(|_| Error::InvalidRequest("registration_request was refused".into()))?;
        Ok(messages::encode(&start.message.serialize()))
    }

    async fn put_marker(&self, key: &str, now: DateTime<Utc>) -> Result<()> {
        let until = (now + chrono::Duration::from_std(PENDING_TTL).unwrap_or_default()).timestamp_millis();
        self.fast.set(key, &self.seal.seal(key, &until.to_be_bytes()), PENDING_TTL).await?;
        Ok(())
    }

    /// Takes the marker (once) if it is ours and unexpired.
    async fn take_marker(&self, key: &str, now: DateTime<Utc>) -> Result<bool> {
        Ok(self
            .fast
            .get_del(key)
            .await?
            .and_then(|sealed| self.seal.open(key, &sealed))
            .and_then(|plain| <[u8; 8]>::try_from(plain.as_slice()).ok())
            .is_some_and(|until| i64::from_be_bytes(until) > now.timestamp_millis()))
    }

    /// The reset token's hash, id and user; one answer for every fault.
    async fn valid_reset(&self, token: &str, now: DateTime<Utc>) -> Result<(String, Uuid, users::UserRecord)> {
        let hash = tokens::verify_shape(TokenKind::Reset, token).ok_or(Error::InvalidCredentials)?;
        let (id, user_id) = store::find_reset(&self.db, &hash, now).await?.ok_or(Error::InvalidCredentials)?;
        let user = users::find(&self.db, user_id).await?.ok_or(Error::InvalidCredentials)?;
        Ok((hash, id, user))
    }

    /// Seals the new record, replaces the old one and revokes what
    /// `replacement` names. `None` when the store refused it.
    async fn replace_credential(
        &self,
        record: &RegistrationUpload<Suite>,
        replacement: Replacement<'_>,
        event: crate::store::audit::NewAuditEvent,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<Option<()>> {
        let user_id = replacement.user_id;
        let record = ServerRegistration::<Suite>::finish(record.clone()).serialize();
        let sealed = self.keyring.seal(SealedColumn::OpaqueRecord, Owner::User(user_id), &record, now).await?;
        let replacement = Replacement { sealed_record: (sealed.key_id, sealed.ciphertext), ..replacement };
        let revocations = self.audit.revocations(user_id, None, client, now);
        let revoked = store::replace_credential(&self.db, &replacement, now, |ids| {
            let mut all = vec![event];
            all.extend(revocations(ids));
            all
        })
        .await?;
        let Some(revoked) = revoked else { return Ok(None) };
        self.session_cache.revoked(&revoked).await;
        tracing::info!(user_id = %user_id, revoked = revoked.len(), reason = replacement.reason, "OPAQUE record replaced");
        Ok(Some(()))
    }
}

fn parse_record(record: &str) -> Result<RegistrationUpload<Suite>> {
    let bytes = messages::decode("registration_record", record, REGISTRATION_RECORD_LEN)?;
    RegistrationUpload::<Suite>::deserialize(&bytes)
        .map_err(|_| Error::InvalidRequest("registration_record is malformed".into()))
}
