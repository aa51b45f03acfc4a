//! OPAQUE login.
//!
//! ```text
//! login/start  (username, KE1, device_token?) --> limits, lock decided, attempt counted
//!              --> server KE2 + login_id; state sealed in the fast store
//!              under hash(login_id), TTL 60 s
//! login/finish (login_id, KE3, device_token?) --> state read once (GETDEL) and opened
//!              --> session (or the MFA step), with a device credential for a new device
//! ```
//!
//! An unknown username gets a KE2 from `ServerLogin::start` without a record
//! (opaque-ke's fake): same size, same work, and the same 401 at finish, so
//! login never reveals whether an account exists. Every failure at finish
//! (unknown user, wrong password, expired or reused state) is one
//! `invalid_credentials`. A real client that got a KE2 for a wrong password
//! never sends finish: the attempt was counted at start (see `lockout`).
//!
//! The login state holds the server's `expected_mac`, which completes a
//! login for anyone who can read it; it is sealed (see `sealing`), so a
//! Redis reader gets nothing usable.

use std::time::Duration;

use chrono::{DateTime, Utc};
use opaque_ke::{CredentialFinalization, CredentialRequest, ServerLogin, ServerLoginParameters, ServerRegistration};
use serde::{Deserialize, Serialize};
use uuid::Uuid;
use zeroize::Zeroizing;

use super::audit::{self, events};
use super::core::{ClientInfo, Core};
use super::keyring::{Owner, Sealed, SealedColumn};
use super::lockout::{self, Scope};
use super::messages::{self, CREDENTIAL_FINALIZATION_LEN, CREDENTIAL_REQUEST_LEN};
use super::opaque::Suite;
use super::ratelimit::Action;
use super::sessions::{Authenticated, IssuedSession};
use super::states::{Aal, Trust};
use super::tokens::{self, TokenKind};
use super::username::Username;
use super::webauthn::FactorKind;
use super::{Error, Result};
use crate::store::{FastStore as _, users};

const LOGIN_STATE_TTL: Duration = Duration::from_secs(60);
pub const MAX_FINGERPRINT_CHARS: usize = 256;
pub const MAX_DEVICE_NAME_CHARS: usize = 128;

/// The device a login comes from, as the client describes it.
#[derive(Clone, Default)]
pub struct DeviceInput {
    pub fingerprint: Option<String>,
    pub name: Option<String>,
}

/// What login/finish produced.
pub enum LoginOutcome {
    Session(IssuedSession),
    /// The password was right; a second factor is on. The token is
    /// accepted only by `/v1/login/totp` and `/v1/login/webauthn/*`.
    MfaRequired {
        mfa_token: String,
        expires_at: DateTime<Utc>,
        /// The second factors the user can finish with.
        methods: Vec<FactorKind>,
    },
}

impl std::fmt::Debug for LoginOutcome {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Session(s) => f.debug_tuple("Session").field(s).finish(),
            Self::MfaRequired { expires_at, .. } => {
                f.debug_struct("MfaRequired").field("expires_at", expires_at).finish_non_exhaustive()
            }
        }
    }
}

/// Login state between start and finish (sealed in the fast store).
#[derive(Serialize, Deserialize)]
struct PendingLogin {
    user_id: Option<Uuid>,
    username: String,
    state: Vec<u8>,
    /// The device credential presented at start, when valid for this user.
    device_id: Option<String>,
    scope: Scope,
    /// The version of the record this login runs against: a password
    /// changed or reset meanwhile refuses it.
    credential_version: Option<DateTime<Utc>>,
    /// Inside the seal: a value re-planted in the fast store after its TTL
    /// is refused.
    expires_at: DateTime<Utc>,
}

impl Core {
    /// Answers KE1 with KE2; returns (login_id, KE2). Decides the lock for
    /// this caller's scope and counts the attempt.
    #[tracing::instrument(skip_all)]
    pub async fn login_start(
        &self,
        username: &str,
        request: &str,
        device_token: Option<&str>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<(String, String)> {
        let username = Username::parse(username)?;
        // Without a device credential the caller cannot be on a trusted
        // device: every rule applies, decided in one round trip. With one,
        // the per-IP rule now and the username rules once trust is known.
        if device_token.is_some() {
            self.enforce_ip(Action::LoginStart, client).await?;
        } else {
            self.enforce(Action::LoginStart, client, Some(username.as_str())).await?;
        }
        let bytes = messages::decode("credential_request", request, CREDENTIAL_REQUEST_LEN)?;
        let request = CredentialRequest::<Suite>::deserialize(&bytes)
            .map_err(|_| Error::InvalidRequest("credential_request is not a valid KE1 message".into()))?;

        // The user, its sealed record and the presented device in one
        // transaction (a made-up or foreign credential is no device).
        let device_hash = device_token.and_then(|t| tokens::verify_shape(TokenKind::Device, t));
        let (user, sealed_record, device) =
            match users::find_for_login(&self.db, username.as_str(), device_hash.as_deref()).await? {
                Some((user, credential, device)) => (Some(user), credential, device),
                None => (None, None, None),
            };
        if let (Some(user), Some(device)) = (&user, &device)
            && device.trust == Trust::Blocked
        {
            self.audit
                .event(events::LOGIN_FAILURE, client, now)
                .outcome("blocked")
                .user(user.id)
                .device(&device.id)
                .append()
                .await?;
            return Err(Error::DeviceBlocked);
        }
        let trusted = device.as_ref().filter(|d| d.trust == Trust::Trusted);
        // A trusted device is not limited per username by guessing from
        // elsewhere.
        if trusted.is_none() && device_token.is_some() {
            self.enforce_user(Action::LoginStart, client, username.as_str()).await?;
        }
        let scope = match (&user, trusted) {
            (Some(user), Some(device)) => Scope::Device { user_id: user.id, device_id: device.id.clone() },
            (Some(user), None) => Scope::Account(user.id),
            (None, _) => Scope::Unknown(username.as_str().to_owned()),
        };
        if let Err(e) = self.begin_attempt(&scope, user.as_ref(), client, now).await {
            if let (Error::AccountLocked { .. }, Some(user)) = (&e, &user) {
                self.audit
                    .event(events::LOGIN_FAILURE, client, now)
                    .outcome("locked")
                    .user(user.id)
                    .device_opt(device.as_ref().map(|d| d.id.as_str()))
                    .append()
                    .await?;
            }
            return Err(e);
        }

        // An unknown name cost the same reads as a real user (whose record
        // came with it; the device is looked up either way), so timing
        // does not tell them apart.
        let (record, credential_version) = match (&user, sealed_record) {
            (Some(user), Some((key_id, ciphertext, version))) => {
                (Some(self.open_record(user.id, key_id, ciphertext).await?), Some(version))
            }
            (Some(user), None) => {
                return Err(Error::Integrity(format!("user {} has no OPAQUE credential", user.id)));
            }
            (None, _) => (None, None),
        };
        // ~170 µs of curve arithmetic, run on the worker: a hop to the
        // blocking pool and back cost two thread wake-ups per login.
        let start = ServerLogin::start(
            &mut rand::rngs::OsRng,
            &self.setup,
            record,
            request,
            username.as_str().as_bytes(),
            ServerLoginParameters::default(),
        )
        .map_err(|_| Error::InvalidRequest("credential_request was refused".into()))?;

        let login_id = tokens::random_id();
        let pending = PendingLogin {
            user_id: user.map(|u| u.id),
            username: username.as_str().to_owned(),
            state: start.state.serialize().to_vec(),
            device_id: device.map(|d| d.id),
            scope,
            credential_version,
            expires_at: now + chrono::Duration::from_std(LOGIN_STATE_TTL).unwrap_or_default(),
        };
        let key = self.keys.login_state(&tokens::hash(&login_id));
        let plain = Zeroizing::new(serde_json::to_vec(&pending).map_err(|e| Error::Internal(e.to_string()))?);
        self.fast.set(&key, &self.seal.seal(&key, &plain), LOGIN_STATE_TTL).await?;
        Ok((login_id, messages::encode(&start.message.serialize())))
    }

    /// The user's OPAQUE record, opened.
    async fn open_record(&self, user_id: Uuid, key_id: Uuid, ciphertext: String) -> Result<ServerRegistration<Suite>> {
        let bytes = self
            .keyring
            .open_sealed(SealedColumn::OpaqueRecord, Owner::User(user_id), &Sealed { key_id, ciphertext })
            .await?;
        ServerRegistration::<Suite>::deserialize(&bytes)
            .map_err(|_| Error::Integrity(format!("the OPAQUE record of user {user_id} does not parse")))
    }

    /// Checks KE3 and opens a session (or the MFA step).
    #[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty))]
    pub async fn login_finish(
        &self,
        login_id: &str,
        finalization: &str,
        device: DeviceInput,
        device_token: Option<&str>,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<LoginOutcome> {
        let bytes = messages::decode("credential_finalization", finalization, CREDENTIAL_FINALIZATION_LEN)?;
        let finalization = CredentialFinalization::<Suite>::deserialize(&bytes)
            .map_err(|_| Error::InvalidRequest("credential_finalization is malformed".into()))?;
        validate_device(&device)?;
        if login_id.is_empty() || login_id.len() > 64 {
            return Err(Error::InvalidCredentials);
        }

        let key = self.keys.login_state(&tokens::hash(login_id));
        let stored = self.fast.get_del(&key).await?;
        let opened = stored.as_deref().and_then(|sealed| self.seal.open(&key, sealed));
        let Some(pending) = opened
            .as_deref()
            .and_then(|plain| serde_json::from_slice::<PendingLogin>(plain).ok())
            .filter(|p| p.expires_at > now)
        else {
            // Expired, already used, never issued, or not sealed by us.
            return Err(Error::InvalidCredentials);
        };
        let username_limited = !matches!(pending.scope, Scope::Device { .. });
        self.enforce(Action::LoginFinish, client, username_limited.then_some(pending.username.as_str())).await?;
        let verified = match pending.user_id {
            Some(user_id) => ServerLogin::<Suite>::deserialize(&pending.state)
                .ok()
                .and_then(|state| state.finish(finalization, ServerLoginParameters::default()).ok())
                .map(|_| user_id),
            None => None,
        };
        let Some(user_id) = verified else {
            // Counted at start already: a made-up KE3 is no second guess.
            self.audit_login_failure(pending.user_id, &pending.username, client, now).await?;
            return Err(Error::InvalidCredentials);
        };
        tracing::Span::current().record("user_id", tracing::field::display(user_id));

        // The device: the credential presented now, else the one
        // recognized at start; read with the user and its factors.
        let device_hash = device_token.and_then(|t| tokens::verify_shape(TokenKind::Device, t));
        let (user, totp_on, passkey_on, known) =
            users::find_for_finish(&self.db, user_id, device_hash.as_deref(), pending.device_id.as_deref())
                .await?
                .ok_or(Error::InvalidCredentials)?;
        if let Some(device) = known.as_ref().filter(|d| d.trust == Trust::Blocked) {
            let event = self
                .audit
                .event(events::LOGIN_FAILURE, client, now)
                .outcome("blocked")
                .user(user_id)
                .device(&device.id);
            event.append().await?;
            return Err(Error::DeviceBlocked);
        }
        if let Some(until) = user.locked_until.filter(|u| *u > now)
            && lockout::is_admin_lock(user.lock_reason.as_deref())
        {
            self.audit.event(events::LOGIN_FAILURE, client, now).outcome("locked").user(user_id).append().await?;
            let retry_after_secs = u64::try_from((until - now).num_seconds()).unwrap_or(0).max(1);
            return Err(Error::AccountLocked { retry_after_secs });
        }
        let fingerprint = device_fingerprint(&device, client);
        let plan = self.plan_device(user_id, known, &fingerprint, device.name, client, now).await?;
        let login = Authenticated {
            user_id,
            username: pending.username,
            aal: Aal::Aal1,
            device: plan,
            scope: pending.scope,
            auth_time: now,
            credential_version: pending.credential_version,
        };
        let mut methods = Vec::new();
        if totp_on {
            methods.push(FactorKind::Totp);
        }
        if passkey_on {
            methods.push(FactorKind::Webauthn);
        }
        if !methods.is_empty() {
            let (mfa_token, expires_at) = self.start_mfa(login, now).await?;
            return Ok(LoginOutcome::MfaRequired { mfa_token, expires_at, methods });
        }
        Ok(LoginOutcome::Session(self.issue_session(login, Vec::new(), client, now).await?))
    }

    async fn audit_login_failure(
        &self,
        user_id: Option<Uuid>,
        username: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        let event = self.audit.event(events::LOGIN_FAILURE, client, now).outcome(audit::FAILURE).user_opt(user_id);
        // The attempted name is personal data: sealed, and only kept when it
        // matched no account (otherwise the user id says it).
        let event = match user_id {
            Some(_) => event.build(),
            None => event.sealed(serde_json::json!({ "username": username })).await?,
        };
        self.audit.append(&[event]).await
    }
}

fn validate_device(device: &DeviceInput) -> Result<()> {
    if device.fingerprint.as_ref().is_some_and(|f| f.is_empty() || f.chars().count() > MAX_FINGERPRINT_CHARS) {
        return Err(Error::InvalidRequest(format!(
            "device.fingerprint must be 1 to {MAX_FINGERPRINT_CHARS} characters"
        )));
    }
    if device
        .name
        .as_ref()
        .is_some_and(|n| n.chars().count() > MAX_DEVICE_NAME_CHARS || n.chars().any(char::is_control))
    {
        return Err(Error::InvalidRequest(format!(
            "device.name must be at most {MAX_DEVICE_NAME_CHARS} printable characters"
        )));
    }
    Ok(())
}

/// The client's fingerprint, or one derived from its User-Agent.
fn device_fingerprint(device: &DeviceInput, client: &ClientInfo) -> String {
    match &device.fingerprint {
        Some(f) => format!("fp:{f}"),
        None => format!("ua:{}", client.user_agent.as_deref().unwrap_or("")),
    }
}
