//! OPAQUE login.
//!
//! ```text
//! login/start  (username, KE1) --> server KE2 + login_id
//!              state (128 B) kept in the fast store under hash(login_id), TTL 60 s
//! login/finish (login_id, KE3) --> state read once (GETDEL) --> session
//! ```
//!
//! An unknown username gets a KE2 from `ServerLogin::start` without a record
//! (opaque-ke's fake): same size, same work, and the same 401 at finish, so
//! login never reveals whether an account exists. Every failure at finish
//! (unknown user, wrong password, expired or reused state) is one
//! `invalid_credentials`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use hmac::Mac as _;
use opaque_ke::{CredentialFinalization, CredentialRequest, ServerLogin, ServerLoginParameters, ServerRegistration};
use uuid::Uuid;

use super::audit::{self, events};
use super::core::{ClientInfo, Core};
use super::keyring::{Owner, Sealed, SealedColumn};
use super::messages::{self, CREDENTIAL_FINALIZATION_LEN, CREDENTIAL_REQUEST_LEN};
use super::opaque::Suite;
use super::ratelimit::Action;
use super::sessions::IssuedSession;
use super::states::{Aal, Trust};
use super::tokens;
use super::username::Username;
use super::{Error, Result};
use crate::store::devices::DeviceSighting;
use crate::store::{FastStore as _, devices, users};

const LOGIN_STATE_TTL: Duration = Duration::from_secs(60);
const STATE_VERSION: u8 = 2;
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
    /// The password was right; TOTP is on. The token is accepted only by
    /// `/v1/login/totp`.
    MfaRequired {
        mfa_token: String,
        expires_at: DateTime<Utc>,
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

/// Login state between start and finish.
struct PendingLogin {
    user_id: Option<Uuid>,
    username: String,
    state: Vec<u8>,
}

impl PendingLogin {
    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(18 + self.username.len() + self.state.len());
        out.push(STATE_VERSION);
        out.extend_from_slice(self.user_id.unwrap_or_default().as_bytes());
        out.extend_from_slice(&u16::try_from(self.username.len()).unwrap_or(u16::MAX).to_be_bytes());
        out.extend_from_slice(self.username.as_bytes());
        out.extend_from_slice(&self.state);
        out
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let (&version, rest) = bytes.split_first()?;
        if version != STATE_VERSION || rest.len() < 18 {
            return None;
        }
        let user_id = Uuid::from_slice(&rest[..16]).ok().filter(|id| !id.is_nil());
        let name_len = usize::from(u16::from_be_bytes([rest[16], rest[17]]));
        let rest = &rest[18..];
        let username = std::str::from_utf8(rest.get(..name_len)?).ok()?.to_owned();
        Some(Self { user_id, username, state: rest.get(name_len..)?.to_vec() })
    }
}

impl Core {
    /// Answers KE1 with KE2; returns (login_id, KE2).
    #[tracing::instrument(skip_all)]
    pub async fn login_start(&self, username: &str, request: &str, client: &ClientInfo) -> Result<(String, String)> {
        let username = Username::parse(username)?;
        self.enforce(Action::LoginStart, client, Some(username.as_str())).await?;
        let bytes = messages::decode("credential_request", request, CREDENTIAL_REQUEST_LEN)?;
        let request = CredentialRequest::<Suite>::deserialize(&bytes)
            .map_err(|_| Error::InvalidRequest("credential_request is not a valid KE1 message".into()))?;

        let user = users::find_by_username(&self.db, username.as_str()).await?;
        let record = match &user {
            Some(user) => Some(self.registration_record(user.id).await?),
            None => {
                // The same database round trip a real user costs, so timing
                // does not tell unknown names apart.
                let _ = users::credential(&self.db, Uuid::nil()).await?;
                None
            }
        };
        let setup = self.setup.clone();
        let identifier = username.as_str().as_bytes().to_vec();
        // ~160 µs of curve arithmetic: keep it off the async executor (in
        // this operation's span).
        let span = tracing::Span::current();
        let start = tokio::task::spawn_blocking(move || {
            let _span = span.enter();
            ServerLogin::start(
                &mut rand::rngs::OsRng,
                &setup,
                record,
                request,
                &identifier,
                ServerLoginParameters::default(),
            )
        })
        .await
        .map_err(|e| Error::Internal(format!("login task failed: {e}")))?
        .map_err(|_| Error::InvalidRequest("credential_request was refused".into()))?;

        let login_id = tokens::random_id();
        let pending = PendingLogin {
            user_id: user.map(|u| u.id),
            username: username.as_str().to_owned(),
            state: start.state.serialize().to_vec(),
        };
        self.fast.set(&self.keys.login_state(&tokens::hash(&login_id)), &pending.encode(), LOGIN_STATE_TTL).await?;
        Ok((login_id, messages::encode(&start.message.serialize())))
    }

    async fn registration_record(&self, user_id: Uuid) -> Result<ServerRegistration<Suite>> {
        let (key_id, ciphertext) = users::credential(&self.db, user_id)
            .await?
            .ok_or_else(|| Error::Integrity(format!("user {user_id} has no OPAQUE credential")))?;
        let bytes = self
            .keyring
            .open_sealed(SealedColumn::OpaqueRecord, Owner::User(user_id), &Sealed { key_id, ciphertext })
            .await?;
        ServerRegistration::<Suite>::deserialize(&bytes)
            .map_err(|_| Error::Integrity(format!("the OPAQUE record of user {user_id} does not parse")))
    }

    /// Checks KE3 and opens a session.
    #[tracing::instrument(skip_all, fields(user_id = tracing::field::Empty))]
    pub async fn login_finish(
        &self,
        login_id: &str,
        finalization: &str,
        device: DeviceInput,
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

        let stored = self.fast.get_del(&self.keys.login_state(&tokens::hash(login_id))).await?;
        let Some(pending) = stored.as_deref().and_then(PendingLogin::decode) else {
            // Expired, already used, or never issued.
            return Err(Error::InvalidCredentials);
        };
        self.enforce(Action::LoginFinish, client, Some(&pending.username)).await?;
        let verified = match pending.user_id {
            Some(user_id) => ServerLogin::<Suite>::deserialize(&pending.state)
                .ok()
                .and_then(|state| state.finish(finalization, ServerLoginParameters::default()).ok())
                .map(|_| user_id),
            None => None,
        };
        let Some(user_id) = verified else {
            self.audit_login_failure(pending.user_id, &pending.username, client, now).await?;
            return Err(Error::InvalidCredentials);
        };
        tracing::Span::current().record("user_id", tracing::field::display(user_id));

        let fingerprint = device_fingerprint(&device, client);
        let device_id = self.device_id(user_id, &fingerprint);
        let known = devices::find(&self.db, &device_id).await?;
        if known.as_ref().is_some_and(|d| d.trust == Trust::Blocked) {
            let event = self
                .audit
                .event(events::LOGIN_FAILURE, client, now)
                .outcome("blocked")
                .user(user_id)
                .device(&device_id)
                .build();
            self.audit.append(&[event]).await?;
            return Err(Error::DeviceBlocked);
        }
        let trusted = known.as_ref().is_some_and(|d| d.trust == Trust::Trusted);
        let user = match self.ensure_not_locked(user_id, trusted, now).await {
            Ok(user) => user,
            Err(e) => {
                let event = self
                    .audit
                    .event(events::LOGIN_FAILURE, client, now)
                    .outcome("locked")
                    .user(user_id)
                    .device(&device_id)
                    .build();
                self.audit.append(&[event]).await?;
                return Err(e);
            }
        };
        let sighting = DeviceSighting {
            id: device_id,
            user_id,
            name: device.name.clone(),
            ip: client.ip_string(),
            user_agent: client.user_agent.clone(),
            at: now,
        };
        if crate::store::totp::is_enabled(&self.db, user_id).await? {
            let (mfa_token, expires_at) =
                self.start_mfa(user_id, pending.username, Some(sighting), known.is_none(), now).await?;
            return Ok(LoginOutcome::MfaRequired { mfa_token, expires_at });
        }
        self.authentication_succeeded(&user).await?;
        let session = self
            .issue_session(
                user_id,
                pending.username,
                Aal::Aal1,
                Some(sighting),
                known.is_none(),
                Vec::new(),
                client,
                now,
            )
            .await?;
        Ok(LoginOutcome::Session(session))
    }

    async fn audit_login_failure(
        &self,
        user_id: Option<Uuid>,
        username: &str,
        client: &ClientInfo,
        now: DateTime<Utc>,
    ) -> Result<()> {
        if let Some(user_id) = user_id {
            self.authentication_failed(user_id, client, now).await?;
        }
        let event = self.audit.event(events::LOGIN_FAILURE, client, now).outcome(audit::FAILURE).user_opt(user_id);
        // The attempted name is personal data: sealed, and only kept when it
        // matched no account (otherwise the user id says it).
        let event = match user_id {
            Some(_) => event.build(),
            None => event.sealed(serde_json::json!({ "username": username })).await?,
        };
        self.audit.append(&[event]).await?;
        Ok(())
    }

    /// The device id: a keyed hash of (user, fingerprint), so ids are
    /// unlinkable across users and raw fingerprints are never stored.
    pub fn device_id(&self, user_id: Uuid, fingerprint: &str) -> String {
        let mut mac = <hmac::Hmac<sha2::Sha256> as hmac::Mac>::new_from_slice(&self.device_key)
            .expect("HMAC takes keys of any length");
        mac.update(user_id.as_bytes());
        mac.update(fingerprint.as_bytes());
        hex::encode(mac.finalize().into_bytes())
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_login_round_trips() {
        let p = PendingLogin { user_id: Some(Uuid::from_u128(9)), username: "alice".into(), state: vec![1; 128] };
        let d = PendingLogin::decode(&p.encode()).expect("decodes");
        assert_eq!((d.user_id, d.username.as_str(), d.state.len()), (p.user_id, "alice", 128));
        let unknown = PendingLogin { user_id: None, username: "x".into(), state: vec![2; 128] };
        assert_eq!(PendingLogin::decode(&unknown.encode()).expect("decodes").user_id, None);
        assert!(PendingLogin::decode(&[]).is_none());
        assert!(PendingLogin::decode(&[1, 2, 3]).is_none());
        assert!(PendingLogin::decode(&[9; 40]).is_none());
    }
}
