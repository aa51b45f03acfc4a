//! Sessions.
//!
//! ```text
//!              login                      refresh (rotates both tokens)
//!  (none) ------------> active(token n) ----------------> active(token n+1)
//!                         |   |  \
//!   logout / revoke /     |   |   `-- reuse of a rotated refresh token --> revoked
//!   device removed -------'   |
//!                             `-- idle > idle_timeout, or age > absolute_lifetime --> expired
//! ```
//!
//! A session token lives `token_lifetime` (15 min); the refresh token lives
//! as long as the session and is single-use: presenting an already rotated
//! one means it was stolen or replayed, so the whole session is revoked.
//!
//! The database is the truth; Redis caches the session under the hash of
//! its current token, so whoami is one Redis GET. Revocation commits to the
//! database first and then evicts the cache entry; a cache refill re-checks
//! revocation after writing, so a refill racing a revocation cannot
//! resurrect the session. Flushing Redis loses nothing.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::audit::{self, events};
use super::core::{ClientInfo, Core};
use super::devices::DevicePlan;
use super::lockout::{self, Scope};
use super::ratelimit::Action;
use super::states::{Aal, Trust};
use super::tokens::{self, TokenKind};
use super::{Error, Result};
use crate::store::audit::NewAuditEvent;
use crate::store::devices::DeviceSighting;
use crate::store::sessions::{self as store, NewSession, RevokeScope, Rotation};

/// Handed up to the HTTP layer as the store reads it.
pub use crate::store::sessions::SessionRecord;

/// Last-seen is written at most this often per session, so whoami stays a
/// read.
const TOUCH_EVERY: Duration = Duration::from_secs(60);

/// The session behind a valid token: what whoami answers, and what the
/// cache holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CurrentSession {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub username: String,
    pub aal: Aal,
    // Integers, not RFC 3339 text: parsing four dates per whoami showed in
    // the profile.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub created_at: DateTime<Utc>,
    /// The last primary authentication (an OPAQUE login); a refresh keeps it.
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub auth_time: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub last_seen_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub token_expires_at: DateTime<Utc>,
    #[serde(with = "chrono::serde::ts_microseconds")]
    pub expires_at: DateTime<Utc>,
    pub device_id: Option<String>,
    pub device_name: Option<String>,
    /// Hash of the token this was looked up by (the cache key).
    pub token_hash: String,
}

impl From<SessionRecord> for CurrentSession {
    fn from(r: SessionRecord) -> Self {
        Self {
            session_id: r.id,
            user_id: r.user_id,
            username: r.username,
            aal: r.aal,
            created_at: r.created_at,
            auth_time: r.auth_time,
            last_seen_at: r.last_seen_at,
            token_expires_at: r.token_expires_at,
            expires_at: r.expires_at,
            device_id: r.device_id,
            device_name: r.device_name,
            token_hash: r.token_hash,
        }
    }
}

/// Tokens handed to the client at login or refresh.
pub struct IssuedSession {
    pub session_id: Uuid,
    pub user_id: Uuid,
    pub session_token: String,
    pub refresh_token: String,
    pub token_expires_at: DateTime<Utc>,
    pub session_expires_at: DateTime<Utc>,
    pub aal: Aal,
    /// The last primary authentication (an OPAQUE login).
    pub auth_time: DateTime<Utc>,
    pub device_id: Option<String>,
    /// True the first time this device logs in to this account.
    pub new_device: bool,
    /// The device credential, only when one was issued with this session.
    pub device_token: Option<String>,
}

impl std::fmt::Debug for IssuedSession {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IssuedSession").field("session_id", &self.session_id).finish_non_exhaustive()
    }
}

/// Who completed an authentication, ready for a session.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct Authenticated {
    pub user_id: Uuid,
    pub username: String,
    pub aal: Aal,
    pub device: DevicePlan,
    /// Where this login's attempt was counted.
    pub scope: Scope,
    /// The primary authentication (the OPAQUE login, also when a second
    /// factor follows).
    pub auth_time: DateTime<Utc>,
    /// The version of the record the password was checked against.
    pub credential_version: Option<DateTime<Utc>>,
}

/// One entry of the caller's session list.
#[derive(Debug, Clone)]
pub struct SessionSummary {
    pub record: SessionRecord,
    pub current: bool,
}

fn chrono_duration(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Core {
    /// Creates a session after a completed authentication: records the
    /// device (issuing its credential when it is new), ends the run of
    /// failures in the login's scope, and caches the session. An admin's
    /// lock or a block that committed meanwhile is seen under row locks in
    /// the same transaction, so no session outlives one.
    #[tracing::instrument(skip_all, fields(user_id = %login.user_id))]
    pub(super) async fn issue_session(
        &self,
        login: Authenticated,
        extra_events: Vec<NewAuditEvent>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<IssuedSession> {
        let Authenticated { user_id, username, aal, device, scope, auth_time, credential_version } = login;
        // As stored (microseconds), so the answer, whoami and a refresh agree.
        let auth_time = chrono::SubsecRound::trunc_subsecs(auth_time, 6);
        let session_token = tokens::generate(TokenKind::Session);
        let refresh_token = tokens::generate(TokenKind::Refresh);
        let expires_at = now + chrono_duration(self.sessions.absolute_lifetime);
        let token_expires_at = (now + chrono_duration(self.sessions.token_lifetime)).min(expires_at);
        let session_id = Uuid::now_v7();
        let (device_id, device_name, new_credential, device_token) = match device {
            DevicePlan::Known { id, name } => (id, name, None, None),
            DevicePlan::New { name, fingerprint_hash } => {
                let token = tokens::generate(TokenKind::Device);
                (tokens::random_id(), name, Some((token.hash, Some(fingerprint_hash))), Some(token.value))
            }
        };
        let new_device = device_token.is_some();
        let mut names = vec![events::LOGIN_SUCCESS, events::SESSION_CREATE];
        if new_device {
            names.push(events::DEVICE_NEW);
        }
        let mut events = extra_events;
        events.extend(names.into_iter().map(|name| {
            self.audit.event(name, client, now).user(user_id).session(session_id).device(&device_id).build()
        }));
        let new = NewSession {
            id: session_id,
            user_id,
            aal,
            token_hash: session_token.hash.clone(),
            ip: client.ip_string(),
            user_agent: client.user_agent.clone(),
            created_at: now,
            token_expires_at,
            expires_at,
            refresh_token_hash: refresh_token.hash.clone(),
            auth_time,
            device: Some(DeviceSighting {
                id: device_id.clone(),
                user_id,
                name: device_name.clone(),
                ip: client.ip_string(),
                user_agent: client.user_agent.clone(),
                at: now,
                new_credential,
            }),
            ends_failures: match &scope {
                Scope::Account(id) => Some(store::FailureScope::Account(*id)),
                Scope::Device { device_id, .. } => Some(store::FailureScope::Device(device_id.clone())),
                Scope::Unknown(_) => None,
            },
        };
        let current = CurrentSession {
            session_id,
            user_id,
            username,
            aal,
            created_at: now,
            auth_time,
            last_seen_at: now,
            token_expires_at,
            expires_at,
            device_id: Some(device_id.clone()),
            device_name,
            token_hash: session_token.hash,
        };
        // The cache entry goes in before the commit: nobody holds the token
        // yet, and a revocation can only find the session after the commit,
        // so its eviction comes after this write (no re-read needed). On a
        // refusal or an error the entry is removed.
        let cached = self.session_cache.put(&current, now).await;
        let mut refusal = None;
        let evicted_event = self.audit.event(events::SESSION_EVICTED, client, now).user(user_id).build();
        let evicted_events = |ids: &[Uuid]| {
            ids.iter().map(|id| NewAuditEvent { session_id: Some(*id), ..evicted_event.clone() }).collect()
        };
        let max_active = self.sessions.max_per_user;
        let created = store::create(
            &self.db,
            &new,
            &events,
            |gate| {
                refusal = match gate.locked_until.filter(|until| *until > now) {
                    Some(until) if lockout::is_admin_lock(gate.lock_reason.as_deref()) => {
                        let secs = u64::try_from((until - now).num_seconds()).unwrap_or(0).max(1);
                        Some(Error::AccountLocked { retry_after_secs: secs })
                    }
                    _ if gate.device_trust == Some(Trust::Blocked) => Some(Error::DeviceBlocked),
                    // The password was changed or reset since it was checked.
                    _ if credential_version.is_some() && gate.credential_version != credential_version => {
                        Some(Error::InvalidCredentials)
                    }
                    _ => None,
                };
                refusal.is_none()
            },
            max_active,
            evicted_events,
        )
        .await;
        let evicted = match created {
            Ok(Some(evicted)) => evicted,
            other => {
                if cached {
                    self.session_cache.remove(&current.token_hash).await;
                }
                return Err(match other {
                    Err(e) => e.into(),
                    Ok(_) => refusal.unwrap_or(Error::InvalidCredentials),
                });
            }
        };
        self.session_cache.revoked(&evicted).await;
        Ok(IssuedSession {
            session_id,
            user_id,
            session_token: session_token.value,
            refresh_token: refresh_token.value,
            token_expires_at,
            session_expires_at: expires_at,
            aal,
            auth_time,
            device_id: Some(device_id),
            new_device,
            device_token,
        })
    }

    /// Resolves a session token: whoami and every authenticated call.
    /// One Redis GET on a hit; the database on a miss (or with Redis down).
    ///
    /// Unknown and invalid tokens are counted per client address; over the
    /// budget the client gets 429 before any lookup reaches the database.
    pub async fn authenticate(&self, token: &str, client: &ClientInfo, now: DateTime<Utc>) -> Result<CurrentSession> {
        let Some(hash) = tokens::verify_shape(TokenKind::Session, token) else {
            return Err(self.bad_token(client).await);
        };
        let mut session = match self.session_cache.get(&hash).await {
            Some(session) => session,
            None => {
                self.refuse_token_flood(client).await?;
                match self.load_session(&hash, now).await {
                    Err(Error::Unauthorized) => return Err(self.bad_token(client).await),
                    other => other?,
                }
            }
        };
        if !self.is_live(&session, now) {
            return Err(Error::Unauthorized);
        }
        if now - session.last_seen_at >= chrono_duration(TOUCH_EVERY) {
            // Best effort: with Postgres down, a cached session keeps
            // working for the rest of its token's life.
            match store::touch(&self.db, session.user_id, session.session_id, &session.token_hash, now).await {
                Ok(true) => {
                    session.last_seen_at = now;
                    self.session_cache.put(&session, now).await;
                }
                // Revoked or refreshed since the cache entry was read.
                Ok(false) => {
                    self.session_cache.remove(&session.token_hash).await;
                    return Err(Error::Unauthorized);
                }
                Err(e) => tracing::warn!(error = %e, "could not record session activity"),
            }
        }
        Ok(session)
    }

    pub(super) fn is_live(&self, s: &CurrentSession, now: DateTime<Utc>) -> bool {
        now < s.token_expires_at
            && now < s.expires_at
            && now - s.last_seen_at < chrono_duration(self.sessions.idle_timeout)
    }

    /// Cache miss: the database decides, and refills the cache.
    async fn load_session(&self, hash: &str, now: DateTime<Utc>) -> Result<CurrentSession> {
        let record = store::find_by_token_hash(&self.db, hash).await?.ok_or(Error::Unauthorized)?;
        if record.revoked_at.is_some() {
            return Err(Error::Unauthorized);
        }
        let session = CurrentSession::from(record);
        if self.is_live(&session, now) && self.session_cache.put(&session, now).await {
            // A revocation may have committed between our read and our
            // write; if so, its eviction may have run before our write.
            if !store::is_current(&self.db, session.session_id, hash).await? {
                self.session_cache.remove(hash).await;
                return Err(Error::Unauthorized);
            }
        }
        Ok(session)
    }

    /// Revokes the sessions in `scope`, recording `extra` and one
    /// `session.revoke` per session in the same transaction, then evicts
    /// them from the cache. Returns how many were revoked.
    pub(super) async fn revoke(
        &self,
        scope: RevokeScope,
        reason: &'static str,
        extra: Vec<NewAuditEvent>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let revocations = self.audit.revocations(scope.user_id(), scope.device_id(), client, now);
        let revoked = store::revoke(&self.db, &scope, reason, now, |ids| {
            let mut events = extra;
            events.extend(revocations(ids));
            events
        })
        .await?;
        self.session_cache.revoked(&revoked).await;
        Ok(revoked.len() as u64)
    }

    /// Step-up: refuses a session whose last primary authentication is
    /// older than the reauthentication window (sensitive operations).
    pub(super) fn require_recent_auth(&self, current: &CurrentSession, now: DateTime<Utc>) -> Result<()> {
        if now - current.auth_time > chrono_duration(self.sessions.reauth_window) {
            return Err(Error::ReauthenticationRequired);
        }
        Ok(())
    }

    /// Freshness for gateways (`GET /v1/sessions/current?max_age=&aal=`):
    /// `reauthentication_required` when the last primary authentication is
    /// older than `max_age`, `mfa_required` below the asked assurance.
    pub fn check_freshness(
        &self,
        current: &CurrentSession,
        max_age: Option<Duration>,
        aal: Option<Aal>,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if aal.is_some_and(|wanted| current.aal < wanted) {
            return Err(Error::MfaRequired);
        }
        if max_age.is_some_and(|age| now - current.auth_time > chrono_duration(age)) {
            return Err(Error::ReauthenticationRequired);
        }
        Ok(())
    }

    /// Active sessions of the caller.
    pub async fn list_sessions(&self, current: &CurrentSession, now: DateTime<Utc>) -> Result<Vec<SessionSummary>> {
        let records = store::list_active(&self.db, current.user_id, now).await?;
        Ok(records
            .into_iter()
            .filter(|r| now - r.last_seen_at < chrono_duration(self.sessions.idle_timeout))
            .map(|record| SessionSummary { current: record.id == current.session_id, record })
            .collect())
    }

    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn logout(&self, current: &CurrentSession, client: &ClientInfo, now: DateTime<Utc>) -> Result<()> {
        let scope = RevokeScope::One { user_id: current.user_id, session_id: current.session_id };
        self.revoke(scope, "logout", Vec::new(), client, now).await?;
        Ok(())
    }

    /// Logout by refresh token, for a browser whose session token expired
    /// (its refresh cookie still names the session). A spent, unknown or
    /// malformed token ends nothing and is no error: the caller clears its
    /// cookies either way.
    #[tracing::instrument(skip_all)]
    pub async fn logout_by_refresh(&self, refresh_token: &str, client: &ClientInfo, now: DateTime<Utc>) -> Result<()> {
        let Some(hash) = tokens::verify_shape(TokenKind::Refresh, refresh_token) else { return Ok(()) };
        let Some(refresh) = store::find_refresh(&self.db, &hash).await? else { return Ok(()) };
        if refresh.rotated_at.is_some() {
            return Ok(());
        }
        let Some(session) = store::find(&self.db, refresh.user_id, refresh.session_id).await? else { return Ok(()) };
        if session.revoked_at.is_none() {
            let scope = RevokeScope::One { user_id: session.user_id, session_id: session.id };
            self.revoke(scope, "logout", Vec::new(), client, now).await?;
        }
        Ok(())
    }

    /// Revokes one of the caller's sessions; `NotFound` if it is not theirs
    /// (or not active).
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn revoke_session(
        &self,
        current: &CurrentSession,
        session_id: Uuid,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let scope = RevokeScope::One { user_id: current.user_id, session_id };
        match self.revoke(scope, "revoked_by_user", Vec::new(), client, now).await? {
            0 => Err(Error::NotFound),
            _ => Ok(()),
        }
    }

    /// Revokes every other session of the caller; returns how many.
    #[tracing::instrument(skip_all, fields(user_id = %current.user_id))]
    pub async fn revoke_other_sessions(
        &self,
        current: &CurrentSession,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<u64> {
        let scope = RevokeScope::AllExcept { user_id: current.user_id, keep: current.session_id };
        self.revoke(scope, "revoked_by_user", Vec::new(), client, now).await
    }

    /// Exchanges a refresh token for a new session token and refresh token.
    #[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty))]
    pub async fn refresh(&self, refresh_token: &str, client: &ClientInfo, now: DateTime<Utc>) -> Result<IssuedSession> {
        self.enforce(Action::Refresh, client, None).await?;
        let hash = tokens::verify_shape(TokenKind::Refresh, refresh_token).ok_or(Error::Unauthorized)?;
        let refresh = store::find_refresh(&self.db, &hash).await?.ok_or(Error::Unauthorized)?;
        let session = store::find(&self.db, refresh.user_id, refresh.session_id).await?.ok_or(Error::Unauthorized)?;
        tracing::Span::current().record("user_id", tracing::field::display(session.user_id));
        if refresh.rotated_at.is_some() {
            self.refresh_reused(&session, client, now).await?;
            return Err(Error::Unauthorized);
        }
        if session.revoked_at.is_some()
            || refresh.expires_at <= now
            || session.expires_at <= now
            || now - session.last_seen_at >= chrono_duration(self.sessions.idle_timeout)
        {
            return Err(Error::Unauthorized);
        }
        let session_token = tokens::generate(TokenKind::Session);
        let new_refresh = tokens::generate(TokenKind::Refresh);
        let token_expires_at = (now + chrono_duration(self.sessions.token_lifetime)).min(session.expires_at);
        let event = self
            .audit
            .event(events::SESSION_REFRESH, client, now)
            .user(session.user_id)
            .session(session.id)
            .device_opt(session.device_id.as_deref())
            .build();
        let rotation =
            store::rotate(&self.db, &refresh, &session_token.hash, token_expires_at, &new_refresh.hash, now, &[event])
                .await?;
        match rotation {
            Rotation::Rotated => {}
            Rotation::Reused => {
                self.refresh_reused(&session, client, now).await?;
                return Err(Error::Unauthorized);
            }
            Rotation::SessionGone => return Err(Error::Unauthorized),
        }
        // The old token is dead: evict it, cache the new one, then make sure
        // no revocation slipped in between.
        self.session_cache.evict(&[(session.id, session.token_hash.clone())]).await;
        let current = CurrentSession {
            last_seen_at: now,
            token_expires_at,
            token_hash: session_token.hash.clone(),
            ..CurrentSession::from(session.clone())
        };
        if self.session_cache.put(&current, now).await
            && !store::is_current(&self.db, session.id, &session_token.hash).await?
        {
            self.session_cache.evict(&[(session.id, session_token.hash)]).await;
            return Err(Error::Unauthorized);
        }
        Ok(IssuedSession {
            session_id: session.id,
            user_id: session.user_id,
            session_token: session_token.value,
            refresh_token: new_refresh.value,
            token_expires_at,
            session_expires_at: session.expires_at,
            aal: session.aal,
            auth_time: session.auth_time,
            device_id: session.device_id,
            new_device: false,
            device_token: None,
        })
    }

    /// A rotated refresh token came back: someone holds a copy. Revoke the
    /// whole session.
    async fn refresh_reused(&self, session: &SessionRecord, client: &ClientInfo, now: DateTime<Utc>) -> Result<()> {
        tracing::warn!(session_id = %session.id, user_id = %session.user_id, "refresh token reused; revoking the session");
        let event = self
            .audit
            .event(events::REFRESH_REUSE, client, now)
            .outcome(audit::FAILURE)
            .user(session.user_id)
            .session(session.id)
            .device_opt(session.device_id.as_deref())
            .build();
        let scope = RevokeScope::One { user_id: session.user_id, session_id: session.id };
        // The reuse is recorded even when the session was revoked already.
        self.revoke(scope, "refresh_token_reuse", vec![event], client, now).await?;
        Ok(())
    }
}
